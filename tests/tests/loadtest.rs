//! `xdpsec loadtest ike`: 50 emulated IKEv2 peers, each with its own source
//! address, against one gateway: strongSwan's charon (one connection for
//! any peer of the range) and an xdpsec responder (one `kind = "ike"`
//! tunnel per peer). The JSON must say all 50 up, none failed, and charon's
//! own `swanctl --list-sas` (or xdpsec's `show crypto ikev2 sa`) must show
//! the 50 SAs while the load tester holds them, and none after it deleted
//! them; the source addresses must be gone from the interface after the run.
//!
//! Needs root and strongSwan 5.9.8 (`cargo xtask setup`).
use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use xdpsec_e2e::{
    Daemon, Lab, scratch_dir,
    strongswan::{Charon, CharonOpts},
    write_file, xdpsec_bin,
};

const PSK: &str = "xdpsec load test key";
const TUNNELS: usize = 50;
/// The peers' source addresses: inside the lab's underlay /64.
const SOURCE_RANGE: &str = "2001:db8:100::1000/116";
const INSIDE_RANGE: &str = "2001:db8:1::/64";
const GATEWAY_SUBNET: &str = "2001:db8:2::/64";
/// How long the load tester holds the tunnels once all are up (the checks
/// poll meanwhile, up to 20 s from its start: setup may be slow on a loaded machine).
const HOLD_S: u32 = 4;

fn loadtest_config(lab: &Lab, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("loadtest.toml");
    let text = format!(
        r#"node = "lt"
state_dir = "{state}"
[underlay]
interface = "{iface}"
address = "{local}"
[loadtest]
gateway = "{gw}"
source_range = "{SOURCE_RANGE}"
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

/// Exchanges in flight: all 50 at once, above charon's `cookie_threshold`
/// (10 half-open IKE SAs) and xdpsec's (30), so gateways ask for COOKIEs.
/// On a loaded machine a 1 s retransmission of an IKE_SA_INIT can cross the
/// gateway's COOKIE and be the request the gateway answers, which the
/// answer does not tell; so an initiator that gets a COOKIE after a
/// retransmission starts over once with a new SPI (pair test
/// `retransmission_crossing_a_cookie_signs_the_request_answered`).
const CONCURRENCY: &str = "50";

/// Start the load tester in node 1 (bounded by `timeout`), `extra` arguments added.
fn spawn_loadtest(lab: &Lab, config: &Path, extra: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &lab.ns1, "timeout", "60"])
        .arg(xdpsec_bin())
        .args(["loadtest", "ike", "--config"])
        .arg(config)
        .args([
            "--tunnels",
            &TUNNELS.to_string(),
            "--concurrency",
            CONCURRENCY,
        ])
        .args(["--duration", &HOLD_S.to_string(), "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The load tester's JSON, after it exited (`gw_log`: the gateway's log, for a failure).
fn loadtest_json(child: Child, gw_log: impl FnOnce() -> String) -> Value {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadtest: {}\n{stdout}\n{}\ngateway's log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        gw_log()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// All up, none failed, and the accounting adds up; `ttfp_ms` with `--traffic` only.
fn check_json(v: &Value, traffic: bool) {
    assert_eq!(v["tunnels"], TUNNELS, "{v}");
    assert_eq!(v["attempts"], TUNNELS, "{v}");
    assert_eq!(v["up"], TUNNELS, "{v}");
    let failed = v["failed"].as_object().expect("failed is an object");
    assert!(failed.is_empty(), "{v}");
    let sum: u64 = failed.values().map(|x| x.as_u64().unwrap()).sum();
    assert_eq!(
        v["up"].as_u64().unwrap() + sum,
        v["attempts"].as_u64().unwrap()
    );
    let tps = v["tunnels_per_second"].as_f64().unwrap();
    let secs = v["seconds"].as_f64().unwrap();
    assert!(tps > 0.0 && secs > 0.0, "{v}");
    // tunnels_per_second is up / seconds (seconds rounded to 3 decimals:
    // off by 0.0005 s at most).
    assert!(
        (tps * secs - TUNNELS as f64).abs() <= tps * 0.0005 + 0.01,
        "{v}"
    );
    assert!(v["peak_tunnels_per_second"].as_f64().unwrap() >= tps, "{v}");
    assert!(v["cpu_seconds"].as_f64().unwrap() > 0.0, "{v}");
    if traffic {
        let q = &v["ttfp_ms"];
        let p: Vec<f64> = ["p50", "p90", "p99", "max"]
            .iter()
            .map(|k| q[k].as_f64().unwrap_or_else(|| panic!("ttfp_ms.{k}: {v}")))
            .collect();
        assert!(p[0] > 0.0 && p.windows(2).all(|w| w[0] <= w[1]), "{v}");
    } else {
        assert!(v.get("ttfp_ms").is_none(), "no --traffic, no ttfp_ms: {v}");
    }
}

/// Poll `count` (at most `within`) until it returns `want`; the last value.
fn poll(within: Duration, want: usize, mut count: impl FnMut() -> usize) -> usize {
    let end = Instant::now() + within;
    loop {
        let n = count();
        if n == want || Instant::now() >= end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The addresses of `SOURCE_RANGE` on node 1's interface.
fn source_addrs_left(lab: &Lab) -> usize {
    let out = Lab::exec(&lab.ns1, &["ip", "-o", "addr", "show", "dev", &lab.if1]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("2001:db8:100::1"))
        .filter(|l| !l.contains(&format!("{}/", lab.v6[0])))
        .count()
}

#[test]
fn fifty_tunnels_against_charon() {
    xdpsec_e2e::strongswan::require_5_9_8();
    let lab = Lab::unique().up(1).unwrap();
    let opts = CharonOpts {
        log_levels: vec![("default", 1), ("ike", 1), ("cfg", 1)],
        ..CharonOpts::default()
    };
    // charon (kernel-netlink) routes the peers' inside addresses with a
    // source inside its local_ts: it needs one on the namespace.
    let out = Lab::exec(
        &lab.ns2,
        &["ip", "addr", "add", "2001:db8:2::1/128", "dev", "lo"],
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let charon = Charon::start(&lab.ns2, &opts).unwrap();
    // One connection for any peer of the range, any identity.
    let conf = format!(
        "connections {{\n  lt {{\n    version = 2\n    local_addrs = {gw}\n    remote_addrs = {SOURCE_RANGE}\n    encap = yes\n    proposals = aes256gcm16-prfsha256-x25519\n    local {{\n      auth = psk\n      id = {gw}\n    }}\n    remote {{\n      auth = psk\n      id = %any\n    }}\n    children {{\n      lt {{\n        local_ts = {GATEWAY_SUBNET}\n        remote_ts = {INSIDE_RANGE}\n        esp_proposals = aes256gcm16\n      }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-lt {{\n    secret = \"{PSK}\"\n  }}\n}}\n",
        gw = lab.v6[1]
    );
    charon.load_conn(&conf).unwrap();
    let dir = scratch_dir("loadtest");
    let config = loadtest_config(&lab, &dir);
    let report = dir.join("report.html");
    let child = spawn_loadtest(
        &lab,
        &config,
        &["--traffic", "10", "--report", report.to_str().unwrap()],
    );
    // While it holds them: charon has 50 established IKE SAs from 50
    // distinct source addresses, each with its child installed and ESP
    // counted both ways by charon (the echo requests in, the replies out).
    let mut peers = BTreeSet::new();
    let up = poll(Duration::from_secs(20), TUNNELS, || {
        let sas = charon.list_sas().unwrap_or_default();
        peers = sas
            .iter()
            .filter(|s| {
                s.state == "ESTABLISHED"
                    && s.children
                        .iter()
                        .any(|c| c.state == "INSTALLED" && c.packets_in > 0 && c.packets_out > 0)
            })
            .map(|s| s.remote_host.parse::<IpAddr>().unwrap())
            .collect();
        peers.len()
    });
    let v = loadtest_json(child, || charon.log_text());
    assert_eq!(up, TUNNELS, "charon's SAs: {:#?}", charon.list_sas());
    check_json(&v, true);
    // The report's embedded figures and its table are the JSON's; three plots.
    let page = std::fs::read_to_string(&report).unwrap();
    let embedded = page
        .split("<script type=\"application/json\" id=\"summary\">")
        .nth(1)
        .and_then(|r| r.split("</script>").next())
        .expect("the report embeds its figures");
    let figures: Value = serde_json::from_str(embedded).unwrap();
    assert_eq!(figures, v);
    for k in ["up", "attempts", "tunnels_per_second", "seconds"] {
        assert!(
            page.contains(&format!("<td id=\"{k}\">{}</td>", v[k])),
            "{k}"
        );
    }
    assert_eq!(page.matches("<svg").count(), 3);
    // The load tester's DELETEs: charon has none left but half-open ones
    // (CONNECTING): where a retransmitted IKE_SA_INIT crossed charon's
    // COOKIE, charon answered both it and the one with the cookie, and the
    // IKE SA of the one the load tester did not take up times out on its
    // own (charon's half_open_timeout, 30 s).
    let left = poll(Duration::from_secs(5), 0, || {
        charon.list_sas().map_or(usize::MAX, |s| {
            s.iter().filter(|s| s.state != "CONNECTING").count()
        })
    });
    assert_eq!(left, 0, "{:#?}", charon.list_sas());
    assert_eq!(
        source_addrs_left(&lab),
        0,
        "source addresses left on {}",
        lab.if1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fifty_tunnels_against_xdpsec() {
    let lab = Lab::unique().up(1).unwrap();
    // One kind = "ike" responder tunnel per emulated peer.
    let mut conf = format!(
        "node = \"gw\"\nsocket = \"{{socket}}\"\n[underlay]\ninterface = \"{}\"\naddress = \"{}\"\n[inside]\nmode = \"tun\"\nname = \"xsltgw\"\naddress = \"2001:db8:2::1/128\"\n",
        lab.if2, lab.v6[1]
    );
    for k in 1..=TUNNELS {
        conf.push_str(&format!(
            "[[tunnel]]\nname = \"Tunnel{k}\"\nkind = \"ike\"\npeer = \"2001:db8:100::{:x}\"\nencap = \"udp\"\npsk = \"{PSK}\"\nike_proposals = [\"aes256gcm16-prfsha256-x25519\"]\nesp_proposals = [\"aes256gcm16\"]\ninitiate = false\nlocal_subnets = [\"{GATEWAY_SUBNET}\"]\nremote_subnets = [\"2001:db8:1::{k:x}/128\"]\n",
            0x1000 + k
        ));
    }
    let d = Daemon::start(&lab.ns2, &conf).unwrap();
    let dir = scratch_dir("loadtest");
    let config = loadtest_config(&lab, &dir);
    let child = spawn_loadtest(&lab, &config, &[]);
    let ready = |d: &Daemon| {
        d.cli_json("show crypto ikev2 sa").map_or(0, |v| {
            v["ike_sas"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|s| s["status"] == "READY").count())
        })
    };
    let up = poll(Duration::from_secs(20), TUNNELS, || ready(&d));
    let v = loadtest_json(child, || d.log_text());
    assert_eq!(up, TUNNELS, "{}", d.log_text());
    check_json(&v, false);
    let left = poll(Duration::from_secs(5), 0, || ready(&d));
    assert_eq!(left, 0, "{}", d.log_text());
    assert_eq!(
        source_addrs_left(&lab),
        0,
        "source addresses left on {}",
        lab.if1
    );
    let _ = std::fs::remove_dir_all(&dir);
}
