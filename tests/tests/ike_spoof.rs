//! IKEv2 against spoofed packets, with strongSwan 5.9.8 as the peer
//! (issue 19): IKE_SA_INITs forged with strongSwan's address while it is
//! stopped (a bare header, then well-formed ones every few seconds, past
//! the end of xdpsec's first attempt) never keep xdpsec from bringing the
//! tunnel up once charon starts; a retransmission
//! of charon's last request sent from another address gets no answer
//! there (no reflection); and when xdpsec stops, charon hears a DELETE at
//! once (not by DPD).
//!
//! xdpsec runs on node 2 (198.51.100.2): the higher address, the side the
//! old simultaneous-initiation rule made give its own exchange up.
use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::json;
use xdpsec_e2e::{
    Daemon, Lab,
    ike::{INNER, ike_config},
    ping, py_tool,
    strongswan::{Charon, CharonOpts, Conn, GCM_X25519},
};

const PSK: &str = "xdpsec spoof test key";
/// Another address of node 1 (strongSwan's), a spoofed source.
const SPOOFED: &str = "198.51.100.3";

/// A Python tool under `timeout`, stopped (SIGTERM, which `timeout`
/// passes on) and waited for when dropped, also when a test fails.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Wait (bounded) until `f` holds; panics with `what` and `ctx()` if not.
fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool, ctx: impl Fn() -> String) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "{what}:\n{}", ctx());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn spoofed_inits_never_keep_xdpsec_from_strongswan_and_nothing_is_reflected() {
    xdpsec_e2e::strongswan::require_5_9_8();
    let t0 = Instant::now();
    let lab = Lab::unique().up(1).unwrap();
    let (ss, xs) = (lab.v4[0].to_string(), lab.v4[1].to_string());
    for cmd in [
        vec![
            "ip",
            "addr",
            "add",
            &format!("{}/32", INNER[0]),
            "dev",
            "lo",
        ],
        vec![
            "ip",
            "addr",
            "add",
            &format!("{SPOOFED}/24"),
            "dev",
            &lab.if1,
        ],
    ] {
        let out = Lab::exec(&lab.ns1, &cmd).unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // xdpsec initiates; nothing answers on node 1 yet.
    let mut d = Daemon::start(&lab.ns2, &ike_config(&lab, 1, PSK, true, &GCM_X25519, "")).unwrap();
    wait_for(
        Duration::from_secs(10),
        "xdpsec did not initiate",
        || d.log_text().contains("initiating IKE SA"),
        || d.log_text(),
    );

    // Forged with strongSwan's address: a bare header, then well-formed
    // IKE_SA_INITs (each a new SPI) every 0.5 s.
    for (kind, count) in [("header", 3), ("full", 6)] {
        let r = py_tool(
            &lab.ns1,
            "ike_spoof.py",
            &json!({"cmd": "init", "src": ss, "dst": xs, "kind": kind, "count": count, "interval": 0.5}),
        )
        .unwrap();
        assert_eq!(r["sent"], count, "{r}");
        // The well-formed ones are answered (fully or with a COOKIE).
        let answered = if kind == "full" { count } else { 0 };
        assert_eq!(r["answers"], answered, "{r}\n{}", d.log_text());
    }
    wait_for(
        Duration::from_secs(5),
        "the header-only IKE_SA_INIT did not reach xdpsec",
        || d.log_text().contains("IKE_SA_INIT without SA, KE or Nonce"),
        || d.log_text(),
    );

    // The forging goes on, one every 4 s (from another port, so that
    // charon can have 500 later), past the end of xdpsec's first attempt
    // (31 s of retransmissions): half-open state, which the forged
    // IKE_SA_INITs keep alive, never holds its next attempts back (it did:
    // one forged packet every 25 s kept the tunnel down).
    let forger = xdpsec_e2e::py_command(
        &lab.ns1,
        "ike_spoof.py",
        &json!({"cmd": "init", "src": ss, "dst": xs, "kind": "full", "count": 20,
                "interval": 4, "sport": 0}),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .map(Stopped)
    .unwrap();
    wait_for(
        Duration::from_secs(45),
        "xdpsec's first attempt did not end",
        || {
            d.log_text()
                .contains("no answer to IKE_SA_INIT after 4 retransmissions")
        },
        || d.log_text(),
    );

    // charon starts (responder only): xdpsec's own attempts bring the
    // tunnel up, within one retransmission gap and backoff (16 + 20 s;
    // its next attempt comes 5 s after the first ended).
    let charon = Charon::start(&lab.ns1, &CharonOpts::default()).unwrap();
    let mut conn = Conn::psk(
        "xs",
        lab.v4[0],
        lab.v4[1],
        &format!("{}/32", INNER[0]),
        &format!("{}/32", INNER[1]),
        PSK,
    );
    conn.proposals = GCM_X25519;
    charon.load_conn(&conn.to_swanctl()).unwrap();
    let started = Instant::now();
    let (ike, _) = charon
        .wait_installed("xs", Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("{e:#}\nxdpsec:\n{}", d.log_text()));
    eprintln!("tunnel up {:?} after charon started", started.elapsed());
    drop(forger);
    assert!(!ike.initiator, "xdpsec initiated: {ike:?}");
    // xdpsec's view: one READY IKE SA with a child (the forged half-open
    // ones may still be listed, IN-NEG).
    wait_for(
        Duration::from_secs(10),
        "xdpsec has no READY IKE SA with a child",
        || {
            let v = d.cli_json("show crypto ikev2 sa").unwrap();
            let sas = v["ike_sas"].as_array().cloned().unwrap_or_default();
            sas.iter()
                .filter(|s| s["status"] == "READY" && s["child_sas"][0].is_object())
                .count()
                == 1
        },
        || d.log_text(),
    );
    assert_eq!(ping(&lab.ns2, INNER[1], INNER[0], 5, "0.1"), (5, 5));

    // Reflection: charon's first INFORMATIONAL request (the DELETE of a
    // child it rekeys), once xdpsec answered it, sent again byte for byte
    // from another address of node 1.
    let mut replay = xdpsec_e2e::py_command(
        &lab.ns1,
        "ike_spoof.py",
        &json!({"cmd": "replay", "iface": lab.if1, "src": ss, "dst": xs, "port": 4500,
                "spoof": SPOOFED, "wait": 2, "timeout": 20}),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut err = BufReader::new(replay.stderr.take().unwrap());
    let mut line = String::new();
    assert!(err.read_line(&mut line).unwrap() > 0, "ike_spoof.py ended");
    if line.trim() != "listening" {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        panic!("ike_spoof.py: {line}{rest}");
    }
    charon.rekey_child("xs").unwrap();
    let out = replay.wait_with_output().unwrap();
    let r = xdpsec_e2e::py_report("ike_spoof.py", out).unwrap();
    assert_eq!(r["sent"], 1, "{r}");
    assert_eq!(r["received"], 0, "xdpsec answered a spoofed source: {r}");
    assert_eq!(ping(&lab.ns2, INNER[1], INNER[0], 3, "0.1"), (3, 3));

    // xdpsec stops: charon deletes the IKE SA at once (no DPD here).
    let stopped = Instant::now();
    d.stop();
    wait_for(
        Duration::from_secs(3),
        "charon kept its IKE SA after xdpsec stopped",
        || charon.list_sas().unwrap().is_empty(),
        || charon.log_text(),
    );
    assert!(
        charon.log_text().contains("received DELETE for IKE_SA xs"),
        "{}",
        charon.log_text()
    );
    eprintln!(
        "IKE SA gone at charon {:?} after the stop; test took {:?}",
        stopped.elapsed(),
        t0.elapsed()
    );
}
