//! An SD-WAN fabric in network namespaces, for the SD-WAN tests and
//! `cargo xtask lab up --sdwan`: a Linux bridge in its own namespace (the
//! shared underlay, 198.51.100.0/24), the controller's namespace
//! (198.51.100.10) and one namespace per edge, each joined to the bridge by
//! a veth pair whose node end is `e0` (one rx/tx queue).
//!
//! Edge `i` (1-based) is system-ip 192.0.2.i, site-id 100 + i, inside
//! address 203.0.113.i/32 on the TUN `xs0`; its TLOC `k` (0-based, in the
//! order of its colors) is on 198.51.100.(20 k + i) with port offset `k`
//! (port 12346 + k), the local tunnel Tunnel(10001 + k).
//!
//! The fabric makes its own PKI with `xdpsec pki` when it comes up: an
//! enterprise root CA of [`ORGANIZATION`], the controller's certificate
//! (serial [`CONTROLLER_SERIAL`]), one certificate per edge (serial
//! `E00i`, its system-ip) and the controller's allowed edge list; an
//! [`EdgeSpec`]'s [`Cert`] makes a deliberately wrong certificate instead.
//!
//! Everything is removed on drop, also when a test panics: the edges and
//! the controller are stopped first, then every process left in the
//! fabric's namespaces, then the namespaces (the veths and the bridge go
//! with them).
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{Daemon, SEQ, controller::Controller, ip, settle_for, xdpsec_bin};

/// The controller's underlay address.
pub const CONTROLLER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The controller's TCP port.
pub const CONTROLLER_PORT: u16 = 23456;
/// The organization of the fabric's CA and certificates.
pub const ORGANIZATION: &str = "xdpsec-lab";
/// The controller certificate's serial.
pub const CONTROLLER_SERIAL: &str = "C0FFEE";
/// A TLOC's UDP port without offset (Cisco SD-WAN's 12346).
pub const TLOC_BASE_PORT: u16 = 12346;
/// The edges' end of their veth pair.
pub const EDGE_IF: &str = "e0";
/// Most edges a fabric has (addresses .1-.9; the controller is .10).
pub const MAX_EDGES: usize = 9;
/// Most colors an edge has (TLOC addresses .i, .2i, .4i).
pub const MAX_COLORS: usize = 3;

/// One edge of a fabric.
#[derive(Clone, Debug)]
pub struct EdgeSpec {
    /// Its TLOCs' colors, in port-offset order.
    pub colors: Vec<String>,
    /// Its certificate.
    pub cert: Cert,
}

/// Which certificate an edge gets (each wrong one for a refusal test).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cert {
    /// From the fabric's CA, in the allowed list: accepted.
    Good,
    /// From another CA of the same organization (CRTVERFL).
    ForeignCa,
    /// From the fabric's CA but expired (CERTEXPRD).
    Expired,
    /// From the fabric's CA with another organization (CTORGNMMIS).
    OtherOrganization,
    /// From the fabric's CA, its serial not in the allowed list (SERNTPRES).
    NotAllowed,
    /// From the fabric's CA, allowed, but the edge claims edge `n`'s
    /// system-ip in its config and certificate (DUPSYSIPDEL).
    ClaimsSystemIpOf(usize),
    /// From the fabric's CA, allowed with its own system-ip, but the edge
    /// now claims [`CHANGED_SYSTEM_IP`] (bound to no serial) in its config
    /// and certificate (SYSIPCHNG).
    SystemIpChanged,
}

/// The system-ip a [`Cert::SystemIpChanged`] edge claims.
pub const CHANGED_SYSTEM_IP: &str = "192.0.2.200";

impl Cert {
    /// The system-ip edge `i` with this certificate claims (in its config
    /// and its certificate).
    pub fn claimed_system_ip(&self, i: usize) -> String {
        match self {
            Cert::ClaimsSystemIpOf(n) => Fabric::system_ip(*n),
            Cert::SystemIpChanged => CHANGED_SYSTEM_IP.to_string(),
            _ => Fabric::system_ip(i),
        }
    }
}

impl EdgeSpec {
    /// An edge with these colors and the fabric's PSK.
    pub fn new(colors: &[&str]) -> EdgeSpec {
        EdgeSpec {
            colors: colors.iter().map(|c| c.to_string()).collect(),
            cert: Cert::Good,
        }
    }

    /// The same edge with another certificate.
    pub fn with_cert(mut self, cert: Cert) -> EdgeSpec {
        self.cert = cert;
        self
    }
}

/// Timers written into the edges' and the controller's configs.
#[derive(Clone, Debug)]
pub struct Timers {
    /// `[sdwan] bfd_hello_ms`.
    pub bfd_hello_ms: u64,
    /// `[sdwan] bfd_multiplier`.
    pub bfd_multiplier: u64,
    /// `[sdwan] rekey_seconds`.
    pub rekey_seconds: u64,
    /// `[sdwan] rekey_grace_seconds`.
    pub rekey_grace_seconds: u64,
    /// The edges' `[sdwan] graceful_restart_seconds`.
    pub edge_graceful_restart_seconds: u64,
    /// The controller's `graceful_restart_seconds`.
    pub controller_graceful_restart_seconds: u64,
}

impl Timers {
    /// The defaults of the issue (what a lab shows).
    pub fn defaults() -> Timers {
        Timers {
            bfd_hello_ms: 1000,
            bfd_multiplier: 7,
            rekey_seconds: 86_400,
            rekey_grace_seconds: 60,
            edge_graceful_restart_seconds: 43_200,
            controller_graceful_restart_seconds: 43_200,
        }
    }

    /// Short BFD timers (200 ms x 3) for tests; the rest as [`Timers::defaults`].
    pub fn fast() -> Timers {
        Timers {
            bfd_hello_ms: 200,
            bfd_multiplier: 3,
            ..Timers::defaults()
        }
    }
}

/// One expected or shown BFD session: (remote system-ip, remote site-id,
/// source color, remote color, source ip, destination ip, destination port,
/// encap).
pub type BfdKey = (String, u64, String, String, String, String, u64, String);

/// A controller and edges on a shared bridge; see the module doc.
pub struct Fabric {
    /// Namespace holding the bridge `br0`.
    pub bridge_ns: String,
    /// The controller's namespace.
    pub controller_ns: String,
    /// Edge `i`'s namespace is `edge_ns[i - 1]`.
    pub edge_ns: Vec<String>,
    /// Edge `i` is `specs[i - 1]`.
    pub specs: Vec<EdgeSpec>,
    /// The timers in the configs.
    pub timers: Timers,
    /// The running controller.
    pub controller: Option<Controller>,
    /// Edge `i`'s daemon is `edges[i - 1]` while it runs.
    pub edges: Vec<Option<Daemon>>,
    up: bool,
    /// The fabric's CA, certificates and allowed list.
    pki: PathBuf,
}

fn netns_del(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// The pids of the processes in namespace `ns` (`ip netns pids`).
fn netns_pids(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Stop every process in `nss` (SIGINT, SIGKILL after 10 s), by the pids
/// `ip netns pids` gives, then remove the namespaces. Never fails.
fn remove_namespaces(nss: &[String]) {
    let pids: Vec<i32> = nss.iter().flat_map(|ns| netns_pids(ns)).collect();
    for &p in &pids {
        // SAFETY: signalling a process found in our own namespaces by its pid.
        unsafe { libc::kill(p, libc::SIGINT) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    // A zombie has exited: its parent (a test that started the lab) has
    // just not reaped it yet.
    let alive = |p: &i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, r)| !r.starts_with('Z'))
        })
    };
    while pids.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in pids.iter().filter(|p| alive(p)) {
        // SAFETY: as above.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    for ns in nss.iter().rev() {
        netns_del(ns);
    }
}

impl Fabric {
    /// A fabric with names unique to this process and call (tests run in parallel).
    pub fn unique(specs: Vec<EdgeSpec>, timers: Timers) -> Fabric {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Fabric::named(
            &format!("xsf{:x}{n}", std::process::id() % 0xffff),
            specs,
            timers,
        )
    }

    /// A fabric whose namespaces are `{prefix}-br`, `{prefix}-vsmart` and
    /// `{prefix}-edge{i}`.
    pub fn named(prefix: &str, specs: Vec<EdgeSpec>, timers: Timers) -> Fabric {
        assert!(
            (1..=MAX_EDGES).contains(&specs.len()),
            "1 to {MAX_EDGES} edges"
        );
        assert!(
            specs
                .iter()
                .all(|s| (1..=MAX_COLORS).contains(&s.colors.len())),
            "1 to {MAX_COLORS} colors per edge"
        );
        Fabric {
            bridge_ns: format!("{prefix}-br"),
            controller_ns: format!("{prefix}-vsmart"),
            edge_ns: (1..=specs.len())
                .map(|i| format!("{prefix}-edge{i}"))
                .collect(),
            edges: specs.iter().map(|_| None).collect(),
            specs,
            timers,
            controller: None,
            up: false,
            pki: std::env::temp_dir().join(format!("{prefix}-pki")),
        }
    }

    /// Edge `i`'s certificate serial.
    pub fn serial(i: usize) -> String {
        format!("E{i:03}")
    }

    /// Where edge `i`'s certificate and key are.
    pub fn edge_pki(&self, i: usize) -> PathBuf {
        self.pki.join(format!("edge{i}"))
    }

    /// The fabric's PKI directory (CA in `ca/`, controller in `vsmart/`,
    /// edge `i` in `edge{i}/`, the allowed list in `allowed-edges.toml`).
    pub fn pki_dir(&self) -> &Path {
        &self.pki
    }

    /// Make the CA, the certificates and the allowed list with `xdpsec pki`.
    fn make_pki(&self) -> Result<()> {
        let _ = std::fs::remove_dir_all(&self.pki);
        let d = |p: &Path| p.display().to_string();
        let ca = self.pki.join("ca");
        pki(&["ca", "--organization", ORGANIZATION, "--out", &d(&ca)])?;
        pki(&[
            "device",
            "--ca",
            &d(&ca),
            "--organization",
            ORGANIZATION,
            "--serial",
            CONTROLLER_SERIAL,
            "--system-ip",
            &CONTROLLER_IP.to_string(),
            "--role",
            "controller",
            "--out",
            &d(&self.pki.join("vsmart")),
        ])?;
        let allowed = self.pki.join("allowed-edges.toml");
        std::fs::write(&allowed, "")?;
        let other_ca = self.pki.join("other-ca");
        for i in 1..=self.len() {
            let spec = &self.specs[i - 1];
            let serial = Fabric::serial(i);
            let sys = spec.cert.claimed_system_ip(i);
            let mut args: Vec<String> = [
                "device",
                "--serial",
                &serial,
                "--system-ip",
                &sys,
                "--role",
                "edge",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let (ca_dir, org) = match spec.cert {
                Cert::ForeignCa => {
                    if !other_ca.exists() {
                        pki(&["ca", "--organization", ORGANIZATION, "--out", &d(&other_ca)])?;
                    }
                    (other_ca.clone(), ORGANIZATION)
                }
                Cert::OtherOrganization => (ca.clone(), "another-org"),
                _ => (ca.clone(), ORGANIZATION),
            };
            args.extend([
                "--ca".into(),
                d(&ca_dir),
                "--organization".into(),
                org.into(),
            ]);
            if spec.cert == Cert::Expired {
                args.extend([
                    "--not-before".into(),
                    "2020-01-01T00:00:00Z".into(),
                    "--not-after".into(),
                    "2021-01-01T00:00:00Z".into(),
                ]);
            }
            args.extend(["--out".into(), d(&self.edge_pki(i))]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            pki(&refs)?;
            if spec.cert != Cert::NotAllowed {
                // A hijacker's serial is allowed with its own system-ip.
                pki(&[
                    "allow",
                    "--serial",
                    &serial,
                    "--system-ip",
                    &Fabric::system_ip(i),
                    "--out",
                    &d(&allowed),
                ])?;
            }
        }
        Ok(())
    }

    /// Every namespace of the fabric.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.bridge_ns.clone(), self.controller_ns.clone()];
        v.extend(self.edge_ns.iter().cloned());
        v
    }

    /// Create the namespaces, the bridge, the veth pairs and the addresses
    /// (removing a fabric of the same names first).
    pub fn up(mut self) -> Result<Fabric> {
        self.down();
        self.up = true; // from here on, Drop cleans up whatever exists
        self.make_pki()?;
        let br = self.bridge_ns.clone();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let mut nodes = vec![(
            self.controller_ns.clone(),
            "c0".to_string(),
            vec![CONTROLLER_IP],
        )];
        for i in 1..=self.edge_ns.len() {
            let addrs = (0..self.specs[i - 1].colors.len())
                .map(|k| self.tloc_ip(i, k))
                .collect();
            nodes.push((self.edge_ns[i - 1].clone(), format!("p{i}"), addrs));
        }
        for (ns, port, addrs) in nodes {
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // Created straight in their namespaces, so every node's end
            // can be `e0`.
            ip(&[
                "link",
                "add",
                EDGE_IF,
                "netns",
                &ns,
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
                "type",
                "veth",
                "peer",
                &port,
                "netns",
                &br,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            for a in addrs {
                ip(&["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", EDGE_IF])?;
            }
            ip(&["-n", &ns, "link", "set", EDGE_IF, "up"])?;
        }
        Ok(self)
    }

    /// Stop every process in the fabric's namespaces (SIGINT, SIGKILL after
    /// 10 s) and remove the namespaces. Never fails.
    pub fn down(&self) {
        remove_namespaces(&self.namespaces());
        let _ = std::fs::remove_dir_all(&self.pki);
    }

    /// Number of edges.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether the fabric has no edges (never: [`Fabric::named`] wants one).
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Edge `i`'s system-ip.
    pub fn system_ip(i: usize) -> String {
        format!("192.0.2.{i}")
    }

    /// Edge `i`'s site-id.
    pub fn site_id(i: usize) -> u64 {
        100 + i as u64
    }

    /// Edge `i`'s inside address (no prefix length).
    pub fn inside_ip(i: usize) -> String {
        format!("203.0.113.{i}")
    }

    /// Edge `i`'s TLOC `k` address.
    pub fn tloc_ip(&self, i: usize, k: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, (20 * k + i) as u8)
    }

    /// TLOC `k`'s UDP port (12346 + port offset `k`).
    pub fn tloc_port(k: usize) -> u64 {
        u64::from(TLOC_BASE_PORT) + k as u64
    }

    /// The local tunnel interface of TLOC `k`: Tunnel10001, Tunnel10002, ...
    pub fn tunnel_name(k: usize) -> String {
        format!("Tunnel{}", 10001 + k)
    }

    /// Edge `i`'s colors.
    pub fn colors(&self, i: usize) -> &[String] {
        &self.specs[i - 1].colors
    }

    /// The controller's config.
    pub fn controller_config(&self) -> String {
        let p = self.pki.display();
        format!(
            "node = \"vsmart\"\nsocket = \"{{socket}}\"\nlisten = \"{CONTROLLER_IP}:{CONTROLLER_PORT}\"\n\
             ca_file = \"{p}/ca/ca.crt\"\ncert_file = \"{p}/vsmart/device.crt\"\nkey_file = \"{p}/vsmart/device.key\"\n\
             organization = \"{ORGANIZATION}\"\nallowed_edges_file = \"{p}/allowed-edges.toml\"\n\
             graceful_restart_seconds = {}\n",
            self.timers.controller_graceful_restart_seconds
        )
    }

    /// Edge `i`'s config (`{socket}` for [`Daemon::start`] to fill in).
    pub fn edge_config(&self, i: usize) -> String {
        let spec = &self.specs[i - 1];
        let t = &self.timers;
        let mut c = format!(
            "node = \"edge{i}\"\nsocket = \"{{socket}}\"\n\
             [underlay]\ninterface = \"{EDGE_IF}\"\naddress = \"{}\"\nqueues = 1\n\
             [inside]\nmode = \"tun\"\nname = \"xs0\"\naddress = \"{}/32\"\n\
             [sdwan]\nsystem_ip = \"{}\"\nsite_id = {}\ncontroller = \"{CONTROLLER_IP}:{CONTROLLER_PORT}\"\n\
             ca_file = \"{}/ca/ca.crt\"\ncert_file = \"{e}/device.crt\"\nkey_file = \"{e}/device.key\"\n\
             organization = \"{ORGANIZATION}\"\nrekey_seconds = {}\nrekey_grace_seconds = {}\nreplay_window = 512\n\
             bfd_hello_ms = {}\nbfd_multiplier = {}\ngraceful_restart_seconds = {}\n",
            self.tloc_ip(i, 0),
            Fabric::inside_ip(i),
            spec.cert.claimed_system_ip(i),
            Fabric::site_id(i),
            self.pki.display(),
            t.rekey_seconds,
            t.rekey_grace_seconds,
            t.bfd_hello_ms,
            t.bfd_multiplier,
            t.edge_graceful_restart_seconds,
            e = self.edge_pki(i).display(),
        );
        for (k, color) in spec.colors.iter().enumerate() {
            c.push_str(&format!(
                "[[sdwan.tloc]]\ncolor = \"{color}\"\naddress = \"{}\"\nport_offset = {k}\n",
                self.tloc_ip(i, k)
            ));
        }
        c
    }

    /// Start the controller (again, after [`Fabric::stop_controller`]).
    pub fn start_controller(&mut self) -> Result<()> {
        if self.controller.is_none() {
            self.controller = Some(Controller::start(
                &self.controller_ns,
                &self.controller_config(),
            )?);
        }
        Ok(())
    }

    /// Stop the controller (SIGINT, as an operator would).
    pub fn stop_controller(&mut self) {
        self.controller = None;
    }

    /// Start edge `i` (again).
    pub fn start_edge(&mut self, i: usize) -> Result<()> {
        if self.edges[i - 1].is_none() {
            let d = Daemon::start(&self.edge_ns[i - 1], &self.edge_config(i))
                .with_context(|| format!("starting edge {i}"))?;
            self.edges[i - 1] = Some(d);
        }
        Ok(())
    }

    /// Stop edge `i` (SIGINT); its log is printed when the test is panicking.
    pub fn stop_edge(&mut self, i: usize) {
        self.edges[i - 1] = None;
    }

    /// Start the controller, then every edge (in parallel: each start waits
    /// for its control socket).
    pub fn start(&mut self) -> Result<()> {
        self.start_controller()?;
        let started: Vec<Result<Daemon>> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..=self.len())
                .map(|i| {
                    let (ns, cfg) = (self.edge_ns[i - 1].clone(), self.edge_config(i));
                    s.spawn(move || {
                        Daemon::start(&ns, &cfg).with_context(|| format!("starting edge {i}"))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("start thread panicked")))
                })
                .collect()
        });
        for (i, d) in started.into_iter().enumerate() {
            self.edges[i] = Some(d?);
        }
        Ok(())
    }

    /// Edge `i`'s daemon (panics when it is stopped).
    pub fn edge(&self, i: usize) -> &Daemon {
        self.edges[i - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("edge {i} is not running"))
    }

    /// The running controller (panics when it is stopped).
    pub fn ctrl(&self) -> &Controller {
        self.controller.as_ref().expect("the controller is stopped")
    }

    /// `command --json` on edge `i`: the array under `key` (empty when the
    /// command fails, for waits that poll during start-up).
    pub fn rows(&self, i: usize, command: &str, key: &str) -> Vec<Value> {
        match self.edge(i).cli_json(command) {
            Ok(v) => v[key].as_array().cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// `show sdwan bfd sessions --json` rows of edge `i`.
    pub fn bfd_sessions(&self, i: usize) -> Vec<Value> {
        self.rows(i, "show sdwan bfd sessions", "sessions")
    }

    /// `show sdwan control connections --json` rows of edge `i`.
    pub fn control_connections(&self, i: usize) -> Vec<Value> {
        self.rows(i, "show sdwan control connections", "connections")
    }

    /// `show sdwan omp tlocs --json` rows of edge `i`.
    pub fn omp_tlocs(&self, i: usize) -> Vec<Value> {
        self.rows(i, "show sdwan omp tlocs", "tlocs")
    }

    /// `show sdwan omp routes --json` rows of edge `i`.
    pub fn omp_routes(&self, i: usize) -> Vec<Value> {
        self.rows(i, "show sdwan omp routes", "routes")
    }

    /// `show crypto ipsec sa --json` rows of edge `i`.
    pub fn ipsec_sas(&self, i: usize) -> Vec<Value> {
        self.rows(i, "show crypto ipsec sa", "sas")
    }

    /// The BFD sessions edge `i` should have with the edges in `peers`
    /// (every local TLOC with every remote TLOC; `i` itself is skipped).
    pub fn expected_bfd(&self, i: usize, peers: &[usize]) -> BTreeSet<BfdKey> {
        let mut want = BTreeSet::new();
        for (k, lc) in self.colors(i).iter().enumerate() {
            for &j in peers.iter().filter(|&&j| j != i) {
                for (m, rc) in self.colors(j).iter().enumerate() {
                    want.insert((
                        Fabric::system_ip(j),
                        Fabric::site_id(j),
                        lc.clone(),
                        rc.clone(),
                        self.tloc_ip(i, k).to_string(),
                        self.tloc_ip(j, m).to_string(),
                        Fabric::tloc_port(m),
                        "ipsec".to_string(),
                    ));
                }
            }
        }
        want
    }

    /// Edge `i`'s BFD sessions as keys with their state, sorted (a
    /// duplicate row shows).
    pub fn bfd_state(&self, i: usize) -> Vec<(BfdKey, String)> {
        let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
        let mut rows: Vec<_> = self
            .bfd_sessions(i)
            .iter()
            .map(|r| {
                (
                    (
                        s(&r["system_ip"]),
                        r["site_id"].as_u64().unwrap_or(u64::MAX),
                        s(&r["source_color"]),
                        s(&r["remote_color"]),
                        s(&r["source_ip"]),
                        s(&r["destination_ip"]),
                        r["destination_port"].as_u64().unwrap_or(u64::MAX),
                        s(&r["encap"]),
                    ),
                    s(&r["state"]),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// Edge `i`'s (color, peer_type, state) of its control connections, sorted.
    pub fn control_state(&self, i: usize) -> Vec<(String, String, String)> {
        let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
        let mut rows: Vec<_> = self
            .control_connections(i)
            .iter()
            .map(|r| (s(&r["color"]), s(&r["peer_type"]), s(&r["state"])))
            .collect();
        rows.sort();
        rows
    }

    /// Wait (up to `within`) until each edge in `members` has one control
    /// connection up per local color, and exactly the BFD sessions to the
    /// other members, all up, and that holds for 300 ms. The error shows
    /// what each edge had.
    pub fn wait_converged(&self, members: &[usize], within: Duration) -> Result<()> {
        let want: Vec<_> = members
            .iter()
            .map(|&i| {
                let mut conns: Vec<_> = self
                    .colors(i)
                    .iter()
                    .map(|c| (c.clone(), "vsmart".to_string(), "up".to_string()))
                    .collect();
                conns.sort();
                // From a set, so already sorted.
                let bfd: Vec<_> = self
                    .expected_bfd(i, members)
                    .into_iter()
                    .map(|k| (k, "up".to_string()))
                    .collect();
                (conns, bfd)
            })
            .collect();
        // Protocol states, not frame counts: the 300 ms hold only keeps a
        // session passing through "up" on its way down from counting as up.
        let got = settle_for(want.clone(), Duration::from_millis(300), within, || {
            members
                .iter()
                .map(|&i| (self.control_state(i), self.bfd_state(i)))
                .collect::<Vec<_>>()
        });
        if got != want {
            let mut msg = String::new();
            for ((&i, g), w) in members.iter().zip(&got).zip(&want) {
                if g != w {
                    msg.push_str(&format!(
                        "edge {i}:\n  control connections {:?}\n  want {:?}\n  bfd sessions {:?}\n  want {:?}\n",
                        g.0, w.0, g.1, w.1
                    ));
                }
            }
            bail!("the fabric did not converge in {within:?}:\n{msg}");
        }
        Ok(())
    }

    /// Ping edge `j`'s inside address from edge `i`'s (bounded to 40 s):
    /// (transmitted, received).
    pub fn ping(&self, i: usize, j: usize, count: u32, interval: &str) -> (u32, u32) {
        crate::ping(
            &self.edge_ns[i - 1],
            &Fabric::inside_ip(i),
            &Fabric::inside_ip(j),
            count,
            interval,
        )
    }

    /// How to reach each node (what `cargo xtask lab up --sdwan` prints).
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let bin = crate::xdpsec_bin();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "bridge br0 in namespace {} (underlay 198.51.100.0/24)",
            self.bridge_ns
        );
        if let Some(c) = &self.controller {
            let _ = writeln!(
                out,
                "controller vsmart: namespace {}, {CONTROLLER_IP}:{CONTROLLER_PORT}\n  {} cli --socket {}",
                self.controller_ns,
                bin.display(),
                c.socket.display()
            );
        }
        for i in 1..=self.len() {
            let tlocs: Vec<String> = self
                .colors(i)
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    format!(
                        "{} {c} {}:{}",
                        Fabric::tunnel_name(k),
                        self.tloc_ip(i, k),
                        Fabric::tloc_port(k)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "edge{i}: namespace {}, system-ip {}, site-id {}, inside {} on xs0, TLOCs {}",
                self.edge_ns[i - 1],
                Fabric::system_ip(i),
                Fabric::site_id(i),
                Fabric::inside_ip(i),
                tlocs.join(", ")
            );
            if let Some(d) = &self.edges[i - 1] {
                let _ = writeln!(
                    out,
                    "  {} cli --socket {} \"show sdwan bfd sessions\"",
                    bin.display(),
                    d.socket.display()
                );
            }
        }
        let _ = writeln!(
            out,
            "a ping between inside addresses:\n  ip netns exec {} ping -I {} {}",
            self.edge_ns[0],
            Fabric::inside_ip(1),
            Fabric::inside_ip(self.len())
        );
        out
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // The daemons first (their Drop prints the log when panicking),
        // then whatever else runs in the namespaces, then the namespaces.
        for e in &mut self.edges {
            e.take();
        }
        self.controller.take();
        if self.up {
            self.down();
        }
    }
}

/// `xdpsec pki ARGS` (the binary under test).
pub fn pki(args: &[&str]) -> Result<()> {
    let out = Command::new(xdpsec_bin())
        .arg("pki")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running xdpsec pki")?;
    if !out.status.success() {
        bail!(
            "xdpsec pki {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The edges of `cargo xtask lab up --sdwan` (the tests' three-edge fabric):
/// edges 1 and 2 on biz-internet, edge 3 on biz-internet and mpls.
pub fn lab_edges() -> Vec<EdgeSpec> {
    vec![
        EdgeSpec::new(&["biz-internet"]),
        EdgeSpec::new(&["biz-internet"]),
        EdgeSpec::new(&["biz-internet", "mpls"]),
    ]
}

/// Where a lab left running records its daemons' scratch directories.
fn lab_state_file(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{prefix}-lab.json"))
}

/// `cargo xtask lab up --sdwan`: build the fabric `prefix` with the lab's
/// edges, start the controller and the edges, wait until it converged
/// (BFD up everywhere, within `within`), print how to reach each node, and
/// leave it running (until [`lab_down`]).
pub fn lab_up(prefix: &str, timers: Timers, within: Duration) -> Result<()> {
    lab_down(prefix);
    let mut f = Fabric::named(prefix, lab_edges(), timers).up()?;
    f.start()?;
    let all: Vec<usize> = (1..=f.len()).collect();
    f.wait_converged(&all, within)?;
    let mut dirs: Vec<String> = f
        .edges
        .iter()
        .flatten()
        .map(|d| d.socket.clone())
        .chain(f.controller.iter().map(|c| c.socket.clone()))
        .filter_map(|s| Some(s.parent()?.display().to_string()))
        .collect();
    dirs.sort();
    let info = f.describe();
    std::fs::write(
        lab_state_file(prefix),
        serde_json::json!({ "dirs": dirs, "info": info }).to_string(),
    )?;
    print!("{info}");
    // Keep it up after we return: the processes, the namespaces and the
    // daemons' directories stay until `lab_down`.
    std::mem::forget(f);
    Ok(())
}

/// `cargo xtask lab show --sdwan`: what [`lab_up`] printed, while the lab runs.
pub fn lab_show(prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(lab_state_file(prefix)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["info"].as_str().map(String::from)
}

/// `cargo xtask lab down`: stop every process in the namespaces of the
/// fabric `prefix` (`{prefix}-br`, `{prefix}-vsmart`, `{prefix}-edge<N>`),
/// remove them and the daemons' directories. Never fails; nothing to do
/// when no such lab runs.
pub fn lab_down(prefix: &str) {
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("{prefix}-pki")));
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ours = |name: &str| {
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
            return false;
        };
        rest == "br"
            || rest == "vsmart"
            || rest
                .strip_prefix("edge")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let nss: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| ours(n))
        .map(String::from)
        .collect();
    remove_namespaces(&nss);
    let state = lab_state_file(prefix);
    if let Ok(text) = std::fs::read_to_string(&state) {
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        for d in v["dirs"].as_array().into_iter().flatten() {
            if let Some(d) = d.as_str() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        let _ = std::fs::remove_file(state);
    }
}
