//! `xdpsec controller` in a namespace, with fake edges: `xdpsec_omp::Edge`
//! cores driven over real TLS (the omp crate's `tls::Link`, certificates
//! from `xdpsec pki`) from the other namespace by a small shell in this
//! file. The controller's shows list the edges' connections, TLOCs and
//! peers (`--json`), Cisco's genieparser reads the text into the same
//! values, an edge whose serial is not allowed is refused with a log line,
//! and a stopped edge's routes are held for the graceful-restart time and
//! then withdrawn.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use xdpsec_e2e::{Lab, controller::Controller, genie_parse, settle_for};
use xdpsec_omp::{
    Prefix, TlocId,
    edge::{Action, Edge, EdgeConfig, Input, TlocConfig},
    tls::{Link, TlsFiles, error_codes},
};

const ORG: &str = "controller-test";

/// A CA, the controller's certificate and edges 1-9's (serial `E00n`),
/// edges 1-8 allowed, under a fresh directory removed on drop.
struct Pki(PathBuf);

impl Pki {
    fn new() -> Pki {
        let n = std::process::id();
        let t = Instant::now().elapsed().as_nanos();
        let dir = std::env::temp_dir().join(format!("xdpsec-ctltest-{n}-{t}-{:p}", &n));
        let d = |p: PathBuf| p.display().to_string();
        let ca = d(dir.join("ca"));
        pki(&["ca", "--organization", ORG, "--out", &ca]);
        let device = |serial: &str, ip: &str, role: &str, out: PathBuf| {
            let out = d(out);
            pki(&[
                "device",
                "--ca",
                &ca,
                "--organization",
                ORG,
                "--serial",
                serial,
                "--system-ip",
                ip,
                "--role",
                role,
                "--out",
                &out,
            ]);
        };
        device("C0", "198.51.100.10", "controller", dir.join("vsmart"));
        for i in 1..=9u8 {
            let ip = format!("192.0.2.{i}");
            let serial = format!("E{i:03}");
            device(&serial, &ip, "edge", dir.join(format!("edge{i}")));
            if i != 9 {
                let allowed = d(dir.join("allowed.toml"));
                pki(&[
                    "allow",
                    "--serial",
                    &serial,
                    "--system-ip",
                    &ip,
                    "--out",
                    &allowed,
                ]);
            }
        }
        Pki(dir)
    }

    /// Edge `n`'s TLS files.
    fn edge(&self, n: u8) -> TlsFiles {
        let r = |p: &str| std::fs::read(self.0.join(p)).unwrap();
        TlsFiles {
            ca_pem: r("ca/ca.crt"),
            cert_pem: r(&format!("edge{n}/device.crt")),
            key_pem: r(&format!("edge{n}/device.key")).into(),
        }
    }

    fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pki(args: &[&str]) {
    let out = std::process::Command::new(xdpsec_e2e::xdpsec_bin())
        .arg("pki")
        .args(args)
        .output()
        .expect("xdpsec pki");
    assert!(
        out.status.success(),
        "xdpsec pki {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
const PORT: u16 = 23456;

/// What a fake edge's shell saw, shared with the test thread.
#[derive(Default)]
struct Seen {
    /// SA pairs installed: (local color, remote TLOC).
    sas: BTreeSet<(String, TlocId)>,
    /// Inbound SPI of each local color.
    spis: BTreeMap<String, u32>,
    /// TLOC ports announced.
    ports: BTreeMap<String, u16>,
    logs: Vec<String>,
}

/// An edge core in a thread inside a namespace, connected to the
/// controller over TCP; its connections close when it is stopped.
struct FakeEdge {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeEdge {
    fn start(ns: &str, controller: SocketAddr, n: u8, colors: &[&str], pki: &Pki) -> FakeEdge {
        let tlocs = colors
            .iter()
            .enumerate()
            .map(|(i, c)| TlocConfig {
                color: (*c).into(),
                address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20 + n * 2 + i as u8)),
                port_offset: 0,
            })
            .collect();
        let mut cfg = EdgeConfig::new(Ipv4Addr::new(192, 0, 2, n), n as u32 * 100, ORG, tlocs);
        let tls = pki.edge(n).client_config().expect("edge TLS config");
        cfg.service_prefixes =
            vec![Prefix::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)), 32).unwrap()];
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop2, seen2, ns) = (Arc::clone(&stop), Arc::clone(&seen), ns.to_string());
        let thread = std::thread::spawn(move || {
            Lab::in_ns(&ns, || edge_loop(cfg, tls, controller, &stop2, &seen2))
                .expect("entering the edge namespace");
        });
        FakeEdge {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stop the core and close its connections (no Goodbye: as a crash).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeEdge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The edge shell: blocking sockets with a short read timeout, bounded to
/// 120 s in all.
fn edge_loop(
    cfg: EdgeConfig,
    tls: Arc<xdpsec_omp::tls::rustls::ClientConfig>,
    controller: SocketAddr,
    stop: &AtomicBool,
    seen: &Mutex<Seen>,
) {
    let colors: Vec<String> = cfg.tlocs.iter().map(|t| t.color.clone()).collect();
    let start = Instant::now();
    let mut edge = Edge::new(cfg, start);
    // Each connection: the socket, its TLS, whether the handshake is done.
    let mut conns: BTreeMap<String, (TcpStream, Link, bool)> = BTreeMap::new();
    let mut pending = edge.handle(start, Input::Timer);
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(120) {
        while !pending.is_empty() {
            let now = Instant::now();
            let mut next = Vec::new();
            for a in pending.drain(..) {
                match a {
                    Action::Connect { color } => {
                        match TcpStream::connect_timeout(&controller, Duration::from_secs(2)) {
                            Ok(mut s) => {
                                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                                let mut link =
                                    Link::client(Arc::clone(&tls), controller.ip()).unwrap();
                                let mut out = Vec::new();
                                link.pull(&mut out);
                                let _ = s.write_all(&out);
                                conns.insert(color.clone(), (s, link, false));
                            }
                            Err(_) => {
                                next.extend(edge.handle(now, Input::Closed { color: &color }))
                            }
                        }
                    }
                    Action::Send { color, data } => {
                        let failed = match conns.get_mut(&color) {
                            Some((s, link, _)) => {
                                link.send(&data);
                                let mut out = Vec::new();
                                link.pull(&mut out);
                                s.write_all(&out).is_err()
                            }
                            None => false,
                        };
                        if failed {
                            conns.remove(&color);
                            next.extend(edge.handle(now, Input::Closed { color: &color }));
                        }
                    }
                    Action::Close { color } => {
                        if let Some((mut s, mut link, _)) = conns.remove(&color) {
                            link.close();
                            let mut out = Vec::new();
                            link.pull(&mut out);
                            let _ = s.write_all(&out);
                        }
                    }
                    Action::TlocPort { color, port, .. } => {
                        seen.lock().unwrap().ports.insert(color, port);
                    }
                    Action::SaInstall(sa) => {
                        seen.lock().unwrap().sas.insert((sa.local_color, sa.remote));
                    }
                    Action::SaRemove {
                        local_color,
                        remote,
                    } => {
                        seen.lock().unwrap().sas.remove(&(local_color, remote));
                    }
                    Action::Log(l) => seen.lock().unwrap().logs.push(l),
                    _ => {}
                }
            }
            pending = next;
        }
        {
            let mut s = seen.lock().unwrap();
            for c in &colors {
                if let Some(spi) = edge.local_spi(c) {
                    s.spis.insert(c.clone(), spi);
                }
            }
        }
        // Read each connection for up to its 10 ms timeout.
        let names: Vec<String> = conns.keys().cloned().collect();
        for color in names {
            let now = Instant::now();
            let r = conns.get_mut(&color).map(|(s, _, _)| s.read(&mut buf));
            let n = match r {
                None => continue,
                Some(Ok(n)) if n > 0 => n,
                Some(Err(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                // EOF or a reset.
                Some(_) => {
                    conns.remove(&color);
                    pending.extend(edge.handle(now, Input::Closed { color: &color }));
                    continue;
                }
            };
            let Some((s, link, up)) = conns.get_mut(&color) else {
                continue;
            };
            let got = link.receive(&buf[..n]);
            let mut out = Vec::new();
            link.pull(&mut out);
            let _ = s.write_all(&out);
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    let (local, remote_error) = error_codes(&e);
                    conns.remove(&color);
                    let detail = e.to_string();
                    pending.extend(edge.handle(
                        now,
                        Input::Failed {
                            color: &color,
                            local,
                            remote_error,
                            detail: &detail,
                        },
                    ));
                    continue;
                }
            };
            if !*up && !link.is_handshaking() {
                *up = true;
                let peer = link.peer().expect("controller certificate");
                pending.extend(edge.handle(
                    now,
                    Input::Connected {
                        color: &color,
                        peer: &peer,
                    },
                ));
            }
            if !got.plain.is_empty() {
                pending.extend(edge.handle(
                    now,
                    Input::Bytes {
                        color: &color,
                        data: &got.plain,
                    },
                ));
            }
            if got.closed {
                conns.remove(&color);
                pending.extend(edge.handle(now, Input::Closed { color: &color }));
            }
        }
        if conns.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let now = Instant::now();
        if edge.next_timeout().is_some_and(|t| t <= now) {
            pending.extend(edge.handle(now, Input::Timer));
        }
    }
    // Dropping `conns` closes the TCP connections.
}

fn controller_config(listen: &str, gr: Option<u64>, pki: &Pki) -> String {
    let p = pki.dir().display();
    let mut c = format!(
        "node = \"vsmart1\"\nsocket = \"{{socket}}\"\nlisten = \"{listen}\"\n\
         ca_file = \"{p}/ca/ca.crt\"\ncert_file = \"{p}/vsmart/device.crt\"\nkey_file = \"{p}/vsmart/device.key\"\n\
         organization = \"{ORG}\"\nallowed_edges_file = \"{p}/allowed.toml\"\n"
    );
    if let Some(g) = gr {
        c.push_str(&format!("graceful_restart_seconds = {g}\n"));
    }
    c
}

/// (system_ip, color, state) of the connections in `show sdwan control connections --json`.
fn conn_rows(c: &Controller) -> BTreeSet<(String, String, String)> {
    let v = c.cli_json("show sdwan control connections").unwrap();
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["system_ip"].as_str().unwrap_or("-").to_string(),
                r["color"].as_str().unwrap_or("-").to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn up(sys: &str, color: &str) -> (String, String, String) {
    (sys.into(), color.into(), "up".into())
}

/// Note in `diff` when genie's value differs from `--json`'s.
fn check(diff: &mut Vec<String>, what: String, got: &Value, want: Value) {
    if *got != want {
        diff.push(format!("{what}: genie read {got}, --json says {want}"));
    }
}

#[test]
fn controller_reflects_edges_and_genie_reads_its_shows() {
    let lab = Lab::unique().up(1).expect("lab");
    let addr = SocketAddr::new(lab.v4[0], PORT);
    let pki = Pki::new();
    let ctrl = Controller::start(&lab.ns1, &controller_config(&addr.to_string(), None, &pki))
        .expect("controller");
    let e1 = FakeEdge::start(&lab.ns2, addr, 1, &["biz-internet", "mpls"], &pki);
    let e2 = FakeEdge::start(&lab.ns2, addr, 2, &["biz-internet"], &pki);
    let e3 = FakeEdge::start(&lab.ns2, addr, 3, &["mpls"], &pki);

    let want: BTreeSet<_> = [
        up("192.0.2.1", "biz-internet"),
        up("192.0.2.1", "mpls"),
        up("192.0.2.2", "biz-internet"),
        up("192.0.2.3", "mpls"),
    ]
    .into();
    let got = settle_for(
        want.clone(),
        Duration::from_millis(300),
        Duration::from_secs(15),
        || conn_rows(&ctrl),
    );
    assert_eq!(got, want, "control connections");

    // Every TLOC, with the SPI and port the edge core chose; reflected to
    // every other edge (all colors: no restrict).
    let tloc_count = || {
        ctrl.cli_json("show sdwan omp tlocs").unwrap()["tlocs"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(
        settle_for(
            4,
            Duration::from_millis(300),
            Duration::from_secs(10),
            tloc_count
        ),
        4
    );
    let tlocs = ctrl.cli_json("show sdwan omp tlocs").unwrap();
    for (e, n, colors) in [
        (&e1, 1, vec!["biz-internet", "mpls"]),
        (&e2, 2, vec!["biz-internet"]),
        (&e3, 3, vec!["mpls"]),
    ] {
        let s = e.seen.lock().unwrap();
        for (i, color) in colors.iter().enumerate() {
            let row = tlocs["tlocs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["system_ip"] == format!("192.0.2.{n}") && r["color"] == *color)
                .unwrap_or_else(|| panic!("no TLOC 192.0.2.{n}/{color} in {tlocs}"));
            assert_eq!(row["spi"], json!(s.spis[*color]), "{row}");
            assert_eq!(row["public_port"], json!(s.ports[*color]), "{row}");
            assert_eq!(
                row["public_ip"],
                json!(format!("198.51.100.{}", 20 + n * 2 + i as u8))
            );
            assert_eq!(row["encap"], "ipsec");
            assert_eq!(row["status"], "C,R");
            let keys: BTreeSet<&str> = row
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(
                keys,
                [
                    "color",
                    "encap",
                    "public_ip",
                    "public_port",
                    "spi",
                    "status",
                    "system_ip"
                ]
                .into(),
                "a TLOC row carries exactly the contract's fields (never a key)"
            );
        }
    }
    let sa_count = |e: &FakeEdge| e.seen.lock().unwrap().sas.len();
    // edge1: 2 local colors x 2 remote TLOCs; edge2 and edge3: 1 x 3.
    for (e, want) in [(&e1, 4), (&e2, 3), (&e3, 3)] {
        assert_eq!(
            settle_for(
                want,
                Duration::from_millis(200),
                Duration::from_secs(10),
                || sa_count(e)
            ),
            want,
            "SA pairs learned through the controller"
        );
    }
    let peers = ctrl.cli_json("show sdwan omp peers").unwrap();
    let rows = peers["peers"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{peers}");
    for r in rows {
        assert_eq!(r["state"], "up", "{r}");
    }

    // Service routes, each resolving through its originator's TLOC colors.
    let routes = ctrl.cli_json("show sdwan omp routes").unwrap();
    let got: BTreeSet<(String, String, String)> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["prefix"].as_str().unwrap().to_string(),
                r["originator"].as_str().unwrap().to_string(),
                r["tloc_colors"].to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = [
        ("203.0.113.1/32", "192.0.2.1", r#"["biz-internet","mpls"]"#),
        ("203.0.113.2/32", "192.0.2.2", r#"["biz-internet"]"#),
        ("203.0.113.3/32", "192.0.2.3", r#"["mpls"]"#),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{routes}");

    // genieparser reads the text into the values --json gives.
    let texts = json!([{
        "omp_tlocs": ctrl.cli("show sdwan omp tlocs").unwrap(),
        "omp_peers": ctrl.cli("sh sdwan omp peers").unwrap(),
        "control_connections": ctrl.cli("show sdwan control connections").unwrap(),
    }]);
    let tlocs = ctrl.cli_json("show sdwan omp tlocs").unwrap();
    let peers = ctrl.cli_json("show sdwan omp peers").unwrap();
    let conns = ctrl.cli_json("show sdwan control connections").unwrap();
    let g = genie_parse(&texts).expect("genie");
    let g = &g[0];
    let mut diff = Vec::new();
    let gt = &g["omp_tlocs"]["parsed"]["tloc_data"];
    assert!(gt.is_object(), "ShowSdwanOmpTlocs: {}", g["omp_tlocs"]);
    let mut n = 0;
    for r in tlocs["tlocs"].as_array().unwrap() {
        let t = &gt[r["system_ip"].as_str().unwrap()]["tloc"][r["color"].as_str().unwrap()];
        let a = &t["received_from"]["attributes"];
        check(
            &mut diff,
            format!("{r} transport"),
            &t["transport"],
            r["encap"].clone(),
        );
        check(
            &mut diff,
            format!("{r} encap_spi"),
            &a["encap_spi"],
            r["spi"].clone(),
        );
        check(
            &mut diff,
            format!("{r} public_ip"),
            &a["public_ip"],
            r["public_ip"].clone(),
        );
        check(
            &mut diff,
            format!("{r} public_port"),
            &a["public_port"],
            r["public_port"].clone(),
        );
        let status: Vec<&str> = r["status"].as_str().unwrap().split(',').collect();
        check(
            &mut diff,
            format!("{r} status"),
            &t["received_from"]["status"],
            json!(status),
        );
        n += 1;
    }
    assert_eq!(n, 4);
    let gp = &g["omp_peers"]["parsed"]["peer"];
    assert!(gp.is_object(), "ShowSdwanOmpPeers: {}", g["omp_peers"]);
    for r in peers["peers"].as_array().unwrap() {
        let p = &gp[r["system_ip"].as_str().unwrap()];
        check(
            &mut diff,
            format!("{r} type"),
            &p["type"],
            r["peer_type"].clone(),
        );
        check(
            &mut diff,
            format!("{r} site_id"),
            &p["site_id"],
            r["site_id"].clone(),
        );
        check(
            &mut diff,
            format!("{r} state"),
            &p["state"],
            r["state"].clone(),
        );
        check(
            &mut diff,
            format!("{r} recv"),
            &p["route"]["recv"],
            r["received"].clone(),
        );
        check(
            &mut diff,
            format!("{r} sent"),
            &p["route"]["sent"],
            r["sent"].clone(),
        );
    }
    let gc = &g["control_connections"]["parsed"]["local_color"];
    assert!(
        gc.is_object(),
        "ShowSdwanControlConnections: {}",
        g["control_connections"]
    );
    for r in conns["connections"].as_array().unwrap() {
        let c =
            &gc[r["color"].as_str().unwrap()]["peer_system_ip"][r["system_ip"].as_str().unwrap()];
        check(
            &mut diff,
            format!("{r} peer_type"),
            &c["peer_type"],
            r["peer_type"].clone(),
        );
        check(
            &mut diff,
            format!("{r} site_id"),
            &c["site_id"],
            json!(r["site_id"].to_string()),
        );
        check(
            &mut diff,
            format!("{r} state"),
            &c["state"],
            r["state"].clone(),
        );
    }
    assert!(
        diff.is_empty(),
        "genie and --json differ:\n{}",
        diff.join("\n")
    );

    // A serial not in the allowed list: refused, with a clear log line
    // naming the edge and Cisco's code.
    let mut bad = FakeEdge::start(&lab.ns2, addr, 9, &["lte"], &pki);
    let refused = || {
        ctrl.cli("show logging").unwrap().lines().any(|l| {
            l.contains("%SDWAN-3-SERIAL_NOT_PRESENT")
                && l.contains("192.0.2.9")
                && l.contains("SERNTPRES")
        })
    };
    assert!(
        settle_for(true, Duration::ZERO, Duration::from_secs(10), refused),
        "no auth failure logged:\n{}",
        ctrl.cli("show logging").unwrap()
    );
    // The edge was told why (Cisco's code inside TLS) and logged it.
    let edge_told = || {
        bad.seen
            .lock()
            .unwrap()
            .logs
            .iter()
            .any(|l| l.starts_with("%SDWAN-3-") && l.contains("SERNTPRES"))
    };
    assert!(
        settle_for(true, Duration::ZERO, Duration::from_secs(10), edge_told),
        "the refused edge logged no SERNTPRES"
    );
    bad.stop();
    assert!(
        !conn_rows(&ctrl)
            .iter()
            .any(|(s, _, st)| s == "192.0.2.9" && st == "up"),
        "the refused edge must never be up"
    );
    assert!(
        bad.seen.lock().unwrap().sas.is_empty(),
        "the refused edge learned routes"
    );
    let tlocs = ctrl.cli_json("show sdwan omp tlocs").unwrap();
    assert_eq!(tlocs["tlocs"].as_array().unwrap().len(), 4, "{tlocs}");
    // Keys never in the log.
    assert!(!ctrl.log_text().contains("PRIVATE KEY"));
}

#[test]
fn controller_holds_routes_for_graceful_restart_then_withdraws() {
    let lab = Lab::unique().up(1).expect("lab");
    let addr = SocketAddr::new(lab.v4[0], PORT);
    let pki = Pki::new();
    let ctrl = Controller::start(
        &lab.ns1,
        &controller_config(&addr.to_string(), Some(3), &pki),
    )
    .expect("controller");
    let mut e1 = FakeEdge::start(&lab.ns2, addr, 1, &["biz-internet"], &pki);
    let e2 = FakeEdge::start(&lab.ns2, addr, 2, &["biz-internet"], &pki);
    let sas = |e: &FakeEdge| e.seen.lock().unwrap().sas.len();
    assert_eq!(
        settle_for(
            1,
            Duration::from_millis(200),
            Duration::from_secs(15),
            || sas(&e2)
        ),
        1
    );

    // A frame longer than the core's limit: the connection is closed, the
    // controller carries on.
    let closed = Lab::in_ns(&lab.ns2, || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let mut b = [0u8; 256];
        // Whatever the controller says (a Goodbye), then EOF or a reset.
        loop {
            match s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return e.kind() == ErrorKind::ConnectionReset,
            }
        }
    })
    .unwrap();
    assert!(closed, "an oversized frame must close the connection");
    assert!(ctrl.cli("show version").is_ok());

    // Edge 1 goes away without a Goodbye.
    e1.stop();
    let state_of = |sys: &str| -> (String, String) {
        let t = ctrl.cli_json("show sdwan omp tlocs").unwrap();
        let p = ctrl.cli_json("show sdwan omp peers").unwrap();
        let ts = t["tlocs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["system_ip"] == sys)
            .map_or("gone".into(), |r| r["status"].as_str().unwrap().to_string());
        let ps = p["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["system_ip"] == sys)
            .map_or("gone".into(), |r| r["state"].as_str().unwrap().to_string());
        (ts, ps)
    };
    // Until the graceful-restart timer expires (its log line, read after
    // each sample: a sample followed by a log without it was taken before
    // the expiry), edge 1's TLOC and session are never gone and edge 2
    // keeps its SA to edge 1; the routes are seen held (stale, peer down).
    // Then both go. Judged by that order, not by the test's own clock.
    let held = ("C,R,Stale".to_string(), "down".to_string());
    let gone = ("gone".to_string(), "gone".to_string());
    let expired = || {
        ctrl.cli("show logging")
            .unwrap()
            .contains("%SDWAN-5-OMP_GR_EXPIRED: OMP peer 192.0.2.1")
    };
    let mut held_seen = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, n) = (state_of("192.0.2.1"), sas(&e2));
        if !expired() {
            assert!(
                st.0 != "gone" && st.1 != "gone",
                "withdrawn before the graceful-restart time expired: {st:?}"
            );
            assert_eq!(
                n, 1,
                "edge 2 keeps its SA to edge 1 during graceful restart"
            );
            held_seen |= st == held;
        } else if st == gone && n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edge 1 not withdrawn (controller, edge 2's SAs): {st:?} {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        held_seen,
        "routes held (stale) while the graceful-restart time ran"
    );
    // The hold lasted the configured 3 s, by the controller's own stamps.
    let log = ctrl.cli("show logging").unwrap();
    let gr = xdpsec_e2e::log_interval(
        &log,
        "%SDWAN-5-OMP_PEER_DOWN: OMP peer 192.0.2.1",
        "%SDWAN-5-OMP_GR_EXPIRED: OMP peer 192.0.2.1",
    )
    .unwrap_or_else(|| panic!("no PEER_DOWN and GR_EXPIRED lines for 192.0.2.1: {log}"));
    assert!(
        gr + Duration::from_millis(50) >= Duration::from_secs(3),
        "withdrawn {gr:?} after the peer went down, before the graceful-restart time"
    );
    // Edge 2 is untouched.
    assert_eq!(state_of("192.0.2.2"), ("C,R".to_string(), "up".to_string()));
}
