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
    strongswan::{Charon, CharonOpts},
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

/// The load tester's config in `dir` for node 1 against node 2, `sources`
/// its `source_range` or `source_port_range` line(s).
pub fn config(lab: &Lab, dir: &Path, sources: &str) -> PathBuf {
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
psk = "{PSK}"
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

/// charon in node 2 for the peers at `remote_addrs` (any identity, the
/// PSK), kernel-libipsec; `dpd`: its `dpd_delay` (e.g. `"2s"`).
pub fn charon_gateway(lab: &Lab, remote_addrs: &str, dpd: Option<&str>) -> Result<Charon> {
    let opts = CharonOpts {
        log_levels: vec![("default", 1), ("ike", 1), ("cfg", 1)],
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
    let conf = format!(
        "connections {{\n  lt {{\n    version = 2\n    local_addrs = {gw}\n    remote_addrs = {remote_addrs}\n    encap = yes\n{dpd}    proposals = aes256gcm16-prfsha256-x25519\n    local {{\n      auth = psk\n      id = {gw}\n    }}\n    remote {{\n      auth = psk\n      id = %any\n    }}\n    children {{\n      lt {{\n        local_ts = {GATEWAY_SUBNET}\n        remote_ts = {INSIDE_RANGE}\n        esp_proposals = aes256gcm16\n      }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-lt {{\n    secret = \"{PSK}\"\n  }}\n}}\n",
        gw = lab.v6[1],
        dpd = dpd.map_or(String::new(), |d| format!("    dpd_delay = {d}\n")),
    );
    charon.load_conn(&conf)?;
    Ok(charon)
}

/// An xdpsec responder in node 2: one `kind = "ike"` tunnel for each of
/// the first `tunnels` peers of [`SOURCE_RANGE`], `extra` lines added to each.
pub fn xdpsec_gateway(lab: &Lab, tunnels: usize, extra: &str) -> Result<Daemon> {
    let mut conf = format!(
        "node = \"gw\"\nsocket = \"{{socket}}\"\n[underlay]\ninterface = \"{}\"\naddress = \"{}\"\n[inside]\nmode = \"tun\"\nname = \"xsltgw\"\naddress = \"2001:db8:2::1/128\"\n",
        lab.if2, lab.v6[1]
    );
    for k in 1..=tunnels {
        conf.push_str(&format!(
            "[[tunnel]]\nname = \"Tunnel{k}\"\nkind = \"ike\"\npeer = \"2001:db8:100::{:x}\"\nencap = \"udp\"\npsk = \"{PSK}\"\nike_proposals = [\"aes256gcm16-prfsha256-x25519\"]\nesp_proposals = [\"aes256gcm16\"]\ninitiate = false\nlocal_subnets = [\"{GATEWAY_SUBNET}\"]\nremote_subnets = [\"2001:db8:1::{k:x}/128\"]\n",
            0x1000 + k
        ));
        conf.push_str(extra);
    }
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
/// --tunnels N --concurrency C --json` (plus `extra`) in node 1; its JSON
/// and the gateway's CPU over the run. The lab goes when it returns.
pub fn measure(
    gw: Gateway,
    tunnels: usize,
    concurrency: usize,
    extra: &[&str],
) -> Result<Measurement> {
    let lab = Lab::unique().up(1)?;
    let dir = scratch_dir("loadtest");
    let cfg = config(&lab, &dir, &source_range_line());
    let (charon, daemon) = match gw {
        Gateway::Charon => (Some(charon_gateway(&lab, SOURCE_RANGE, None)?), None),
        Gateway::Xdpsec => (None, Some(xdpsec_gateway(&lab, tunnels, "")?)),
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
