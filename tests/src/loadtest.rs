//! `xdpsec loadtest ike` in the lab: the gateways (strongSwan's charon with
//! one connection for any peer of the range, or an xdpsec responder with
//! one `kind = "ike"` tunnel per peer), the load tester's config, and
//! [`measure`]: one run with both processes' CPU, for `cargo xtask
//! loadtest` (the README's figures) and the e2e tests.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    Daemon, Lab, scratch_dir,
    strongswan::{Charon, CharonCreds, CharonOpts},
    write_file, xdpsec_bin,
};

/// The pre-shared key of every tunnel.
pub const PSK: &str = "xdpsec load test key";
/// The peers' source addresses: inside the lab's underlay /64.
pub const SOURCE_RANGE: &str = "2001:db8:100::1000/116";
/// The peers' inside addresses.
pub const INSIDE_RANGE: &str = "2001:db8:1::/64";
/// The gateway's inside prefix (its first address answers the probes).
pub const GATEWAY_SUBNET: &str = "2001:db8:2::/64";

/// How the peers and the gateway authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The pre-shared key [`PSK`].
    Psk,
    /// Certificates ([`CertPki`]): one device certificate for every
    /// emulated peer, the gateway its own; `remote.auth = pubkey`.
    Cert,
}

/// The organization of the certificates (no spaces: swanctl's raw output
/// of identities is split at spaces).
pub const ORG: &str = "xdpsec-lt";
/// The serial of the gateway's certificate.
pub const GATEWAY_SERIAL: &str = "2B0001";
/// The serial of the one certificate of another CA (`stranger/`).
pub const STRANGER_SERIAL: &str = "3C0001";

/// The serial of peer `n`'s own certificate.
pub fn peer_serial(n: usize) -> String {
    format!("1A{n:04X}")
}

/// The subject of `xdpsec pki device --serial SERIAL --organization ORG`.
pub fn device_dn(serial: &str) -> String {
    format!("O={ORG}, OU=edge, CN=edge-{serial}, serialNumber={serial}")
}

/// Run a command; Err with its output unless it succeeded.
fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The certificates of a run with [`Auth::Cert`], made by `xdpsec pki`
/// (ECDSA P-256): CA `ca` and, signed by it, each peer's own device
/// certificate (`peers/N/`, serial [`peer_serial`]`(N)`: the load
/// tester's `cert_file = ".../peers/{n}/device.crt"`) and the gateway's
/// (`gw/`, [`GATEWAY_SERIAL`]); a second CA `other` of the same
/// organization and one certificate it signed (`stranger/`,
/// [`STRANGER_SERIAL`]) for failures. Removed on drop.
pub struct CertPki {
    /// Where the files are.
    pub dir: PathBuf,
}

impl CertPki {
    /// Make them, for `peers` peers, in a scratch directory (`xdpsec pki
    /// device` takes about 40 ms each here).
    pub fn new(peers: usize) -> Result<CertPki> {
        let dir = scratch_dir("lt-pki");
        let pki = CertPki { dir };
        for ca in ["ca", "other"] {
            run_ok(
                Command::new(xdpsec_bin())
                    .args(["pki", "ca", "--organization", ORG, "--out"])
                    .arg(pki.dir.join(ca)),
            )?;
        }
        let devices = [
            ("ca", "gw".to_string(), GATEWAY_SERIAL.to_string()),
            ("other", "stranger".into(), STRANGER_SERIAL.into()),
        ]
        .into_iter()
        .chain((0..peers).map(|n| ("ca", format!("peers/{n}"), peer_serial(n))));
        for (ca, out, serial) in devices {
            run_ok(
                Command::new(xdpsec_bin())
                    .args(["pki", "device", "--ca"])
                    .arg(pki.dir.join(ca))
                    .args(["--organization", ORG, "--serial", &serial])
                    .args(["--system-ip", "10.255.0.1", "--role", "edge"])
                    .args(["--key-type", "ecdsa-p256", "--out"])
                    .arg(pki.dir.join(out)),
            )?;
        }
        Ok(pki)
    }

    /// The load tester's `[loadtest]` lines: `auth = "cert"`, each peer
    /// its own certificate (`device` = `peers/{n}`) or one for all
    /// (`stranger`), the CA `ca`, the gateway's DN as `remote_id`.
    pub fn loadtest_lines(&self, device: &str) -> String {
        let d = self.dir.display();
        format!(
            "auth = \"cert\"\ncert_file = \"{d}/{device}/device.crt\"\nkey_file = \"{d}/{device}/device.key\"\nca_file = \"{d}/ca/ca.crt\"\nremote_id = \"{}\"",
            device_dn(GATEWAY_SERIAL)
        )
    }

    /// An xdpsec gateway tunnel's lines for peer `n`: its certificate,
    /// the CA, the peer's DN as `remote_id`.
    pub fn gateway_lines(&self, n: usize) -> String {
        let d = self.dir.display();
        format!(
            "auth = \"cert\"\ncert_file = \"{d}/gw/device.crt\"\nkey_file = \"{d}/gw/device.key\"\nca_file = \"{d}/ca/ca.crt\"\nremote_id = \"{}\"\n",
            device_dn(&peer_serial(n))
        )
    }

    /// An xdpsec responder template's lines: the gateway's certificate,
    /// the CA, no `remote_id` (any peer whose certificate leads to the CA).
    pub fn template_lines(&self) -> String {
        let d = self.dir.display();
        format!(
            "auth = \"cert\"\ncert_file = \"{d}/gw/device.crt\"\nkey_file = \"{d}/gw/device.key\"\nca_file = \"{d}/ca/ca.crt\"\n"
        )
    }

    /// charon's credentials: the gateway's certificate and key, the CA.
    pub fn charon_creds(&self) -> CharonCreds {
        CharonCreds {
            cert: self.dir.join("gw/device.crt"),
            key: self.dir.join("gw/device.key"),
            ca: self.dir.join("ca/ca.crt"),
        }
    }
}

impl Drop for CertPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The load tester's config in `dir` for node 1 against node 2, `sources`
/// its `source_range` or `source_port_range` line(s), with the PSK.
pub fn config(lab: &Lab, dir: &Path, sources: &str) -> PathBuf {
    config_auth(lab, dir, sources, &format!("psk = \"{PSK}\""))
}

/// [`config`] with these authentication lines (`psk = ...` or
/// [`CertPki::loadtest_lines`]).
pub fn config_auth(lab: &Lab, dir: &Path, sources: &str, auth: &str) -> PathBuf {
    let path = dir.join("loadtest.toml");
    let text = format!(
        r#"node = "lt"
state_dir = "{state}"
[underlay]
interface = "{iface}"
address = "{local}"
[loadtest]
gateway = "{gw}"
{sources}
inside_range = "{INSIDE_RANGE}"
gateway_subnets = ["{GATEWAY_SUBNET}"]
{auth}
ike_proposals = ["aes256gcm16-prfsha256-x25519"]
esp_proposals = ["aes256gcm16"]
encap = "udp"
"#,
        state = dir.join("state").display(),
        iface = lab.if1,
        local = lab.v6[0],
        gw = lab.v6[1],
    );
    write_file(&path, text.as_bytes()).unwrap();
    path
}

/// The `source_range` line of the usual config.
pub fn source_range_line() -> String {
    format!("source_range = \"{SOURCE_RANGE}\"")
}

/// How a gateway charon is set up ([`charon_gateway`]); the default: the
/// PSK, no DPD, charon's default `unique` policy.
#[derive(Clone, Copy, Default)]
pub struct CharonGateway<'a> {
    /// Its `dpd_delay` (e.g. `"2s"`).
    pub dpd: Option<&'a str>,
    /// Certificates instead of the PSK: charon's own (`local.auth =
    /// pubkey`), and any peer whose certificate leads to the CA
    /// (`remote.auth = pubkey`, `id = %any`).
    pub pki: Option<&'a CertPki>,
    /// The connection's `unique` policy (`never`, `no`, `replace`, `keep`;
    /// `None`: charon's default, `no`).
    pub unique: Option<&'a str>,
}

/// charon in node 2 for the peers at `remote_addrs` (any identity),
/// kernel-libipsec, set up as `o` says.
pub fn charon_gateway(lab: &Lab, remote_addrs: &str, o: CharonGateway) -> Result<Charon> {
    let CharonGateway { dpd, pki, unique } = o;
    let opts = CharonOpts {
        log_levels: vec![("default", 1), ("ike", 1), ("cfg", 1)],
        creds: pki.map(CertPki::charon_creds),
        ..CharonOpts::default()
    };
    // charon (kernel-netlink) routes the peers' inside addresses with a
    // source inside its local_ts: it needs one on the namespace.
    let out = Lab::exec(
        &lab.ns2,
        &["ip", "addr", "add", "2001:db8:2::1/128", "dev", "lo"],
    )?;
    if !out.status.success() {
        bail!("adding 2001:db8:2::1 in {}: {out:?}", lab.ns2);
    }
    let charon = Charon::start(&lab.ns2, &opts)?;
    // One connection for any peer of the range, any identity.
    let (local, remote, secrets) = if pki.is_some() {
        // Its identity: its certificate's subject.
        (
            "auth = pubkey\n      certs = local.crt".to_string(),
            "auth = pubkey",
            String::new(),
        )
    } else {
        (
            format!("auth = psk\n      id = {}", lab.v6[1]),
            "auth = psk",
            format!("secrets {{\n  ike-lt {{\n    secret = \"{PSK}\"\n  }}\n}}\n"),
        )
    };
    let conf = format!(
        "connections {{\n  lt {{\n    version = 2\n    local_addrs = {gw}\n    remote_addrs = {remote_addrs}\n    encap = yes\n{dpd}{unique}    proposals = aes256gcm16-prfsha256-x25519\n    local {{\n      {local}\n    }}\n    remote {{\n      {remote}\n      id = %any\n    }}\n    children {{\n      lt {{\n        local_ts = {GATEWAY_SUBNET}\n        remote_ts = {INSIDE_RANGE}\n        esp_proposals = aes256gcm16\n      }}\n    }}\n  }}\n}}\n{secrets}",
        gw = lab.v6[1],
        dpd = dpd.map_or(String::new(), |d| format!("    dpd_delay = {d}\n")),
        unique = unique.map_or(String::new(), |u| format!("    unique = {u}\n")),
    );
    charon.load_conn(&conf)?;
    Ok(charon)
}

/// How a gateway xdpsec is set up ([`xdpsec_gateway`]); the default: the
/// PSK, ESP in UDP, nothing added.
#[derive(Clone, Copy)]
pub struct XdpsecGateway<'a> {
    /// Lines added to each tunnel.
    pub extra: &'a str,
    /// Certificates ([`CertPki::gateway_lines`]) instead of the PSK.
    pub pki: Option<&'a CertPki>,
    /// The tunnels' `encap` (`"udp"` or `"esp"`).
    pub encap: &'a str,
}

impl Default for XdpsecGateway<'_> {
    fn default() -> Self {
        XdpsecGateway {
            extra: "",
            pki: None,
            encap: "udp",
        }
    }
}

/// An xdpsec responder in node 2: one `kind = "ike"` tunnel for each of
/// the first `tunnels` peers of [`SOURCE_RANGE`], set up as `o` says.
pub fn xdpsec_gateway(lab: &Lab, tunnels: usize, o: XdpsecGateway) -> Result<Daemon> {
    let XdpsecGateway { extra, pki, encap } = o;
    let auth = |k: usize| pki.map_or(format!("psk = \"{PSK}\"\n"), |p| p.gateway_lines(k - 1));
    let mut conf = format!(
        "node = \"gw\"\nsocket = \"{{socket}}\"\n[underlay]\ninterface = \"{}\"\naddress = \"{}\"\n[inside]\nmode = \"tun\"\nname = \"xsltgw\"\naddress = \"2001:db8:2::1/128\"\n",
        lab.if2, lab.v6[1]
    );
    for k in 1..=tunnels {
        conf.push_str(&format!(
            "[[tunnel]]\nname = \"Tunnel{k}\"\nkind = \"ike\"\npeer = \"2001:db8:100::{:x}\"\nencap = \"{encap}\"\n{}ike_proposals = [\"aes256gcm16-prfsha256-x25519\"]\nesp_proposals = [\"aes256gcm16\"]\ninitiate = false\nlocal_subnets = [\"{GATEWAY_SUBNET}\"]\nremote_subnets = [\"2001:db8:1::{k:x}/128\"]\n",
            0x1000 + k,
            auth(k)
        ));
        conf.push_str(extra);
    }
    Daemon::start(&lab.ns2, &conf)
}

/// An xdpsec responder in node 2 with ONE `kind = "ike"` tunnel for all
/// peers: a responder template (`peer_range` [`SOURCE_RANGE`], up to
/// `max_peers` instances, the PSK or, given `pki`, certificates:
/// [`CertPki::template_lines`]), each peer's child SA narrowed to its own
/// inside address within `remote_subnets` ([`INSIDE_RANGE`]).
pub fn xdpsec_template_gateway(
    lab: &Lab,
    max_peers: usize,
    pki: Option<&CertPki>,
) -> Result<Daemon> {
    let auth = pki.map_or(format!("psk = \"{PSK}\"\n"), CertPki::template_lines);
    let conf = format!(
        "node = \"gw\"\nsocket = \"{{socket}}\"\n[underlay]\ninterface = \"{}\"\naddress = \"{}\"\n[inside]\nmode = \"tun\"\nname = \"xsltgw\"\naddress = \"2001:db8:2::1/128\"\n[[tunnel]]\nname = \"Tunnel1\"\nkind = \"ike\"\npeer_range = \"{SOURCE_RANGE}\"\nmax_peers = {max_peers}\nencap = \"udp\"\n{auth}ike_proposals = [\"aes256gcm16-prfsha256-x25519\"]\nesp_proposals = [\"aes256gcm16\"]\ninitiate = false\nlocal_subnets = [\"{GATEWAY_SUBNET}\"]\nremote_subnets = [\"{INSIDE_RANGE}\"]\n",
        lab.if2, lab.v6[1],
    );
    Daemon::start(&lab.ns2, &conf)
}

/// User + system CPU seconds of process `pid` so far (/proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // After the command name's closing parenthesis: field 3 on; utime and
    // stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |k: usize| f.get(k - 3).and_then(|x| x.parse::<u64>().ok());
    let (Some(u), Some(s)) = (ticks(14), ticks(15)) else {
        bail!("/proc/{pid}/stat: no utime/stime");
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((u + s) as f64 / hz)
}

/// The gateway of a [`measure`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    /// strongSwan 5.9.8's charon, kernel-libipsec.
    Charon,
    /// `xdpsec run` with one `kind = "ike"` tunnel per peer.
    Xdpsec,
    /// `xdpsec run` with ONE `kind = "ike"` tunnel for all peers, a
    /// responder template ([`xdpsec_template_gateway`]).
    XdpsecTemplate,
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The load tester's `--json`.
    pub json: Value,
    /// The gateway's CPU seconds over the run.
    pub gateway_cpu: f64,
}

/// Set up a lab, start `gw` in node 2 and run `xdpsec loadtest ike
/// --tunnels N --concurrency C --json` (plus `extra`) in node 1, both
/// authenticating with `auth`; its JSON and the gateway's CPU over the
/// run. The lab goes when it returns.
pub fn measure(
    gw: Gateway,
    auth: Auth,
    tunnels: usize,
    concurrency: usize,
    extra: &[&str],
) -> Result<Measurement> {
    let lab = Lab::unique().up(1)?;
    let dir = scratch_dir("loadtest");
    let pki = match auth {
        Auth::Psk => None,
        Auth::Cert => Some(CertPki::new(tunnels)?),
    };
    let cfg = match &pki {
        None => config(&lab, &dir, &source_range_line()),
        Some(p) => config_auth(
            &lab,
            &dir,
            &source_range_line(),
            &p.loadtest_lines("peers/{n}"),
        ),
    };
    let (charon, daemon) = match gw {
        Gateway::Charon => (
            Some(charon_gateway(
                &lab,
                SOURCE_RANGE,
                CharonGateway {
                    pki: pki.as_ref(),
                    ..Default::default()
                },
            )?),
            None,
        ),
        Gateway::Xdpsec => (
            None,
            Some(xdpsec_gateway(
                &lab,
                tunnels,
                XdpsecGateway {
                    pki: pki.as_ref(),
                    ..Default::default()
                },
            )?),
        ),
        Gateway::XdpsecTemplate => (
            None,
            Some(xdpsec_template_gateway(&lab, tunnels, pki.as_ref())?),
        ),
    };
    let pid = charon
        .as_ref()
        .and_then(Charon::pid)
        .or_else(|| daemon.as_ref().and_then(Daemon::pid))
        .context("the gateway's process id")?;
    let before = cpu_seconds(pid)?;
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns1, "timeout", "600"])
        .arg(xdpsec_bin())
        .args(["loadtest", "ike", "--config"])
        .arg(&cfg)
        .args(["--tunnels", &tunnels.to_string()])
        .args(["--concurrency", &concurrency.to_string(), "--json"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .context("running xdpsec loadtest")?;
    let gateway_cpu = cpu_seconds(pid)? - before;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "xdpsec loadtest ({}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Measurement { json, gateway_cpu })
}
