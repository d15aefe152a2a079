//! The control plane under concurrent use: one owner of control state
//! answers every request from many clients at once, while reloads (by
//! command and by SIGHUP), clears and shows interleave; and the control
//! socket refuses malformed requests with an error reply.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use xdpsec_e2e::{
    Daemon, Lab,
    tunnel::{BASE, tunnel_config},
};

/// Commands the clients cycle through: shows, clears, reloads, port changes.
const MIX: &[&str] = &[
    "show crypto ipsec sa",
    "show logging",
    "request platform software xdpsec reload",
    "clear logging",
    "show platform hardware qfp active feature ipsec datapath drops all",
    "clear crypto sa counters",
    "show platform hardware qfp active statistics",
    "clear platform hardware qfp active feature ipsec datapath drops",
    "request platform software xdpsec udp-port add 4789",
    "show platform software xdpsec udp-ports",
    "request platform software xdpsec udp-port remove 4789",
    "clear platform hardware qfp active statistics",
    "show version",
];

#[test]
fn every_request_is_answered_under_concurrent_shows_reloads_and_clears() {
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 2; // each client runs MIX this many times
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    // A reload that changes an SA, so reloads really swap SAs while shows
    // read them: the config flips between two inbound SPIs.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let other = text.replace("spi = 0x1001", "spi = 0x1003");
    let answered = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (d, answered) = (&d, &answered);
            s.spawn(move || {
                for r in 0..ROUNDS {
                    for i in 0..MIX.len() {
                        // Rotate so the clients are at different commands.
                        let cmd = MIX[(i + c * 3) % MIX.len()];
                        let json = (c + r + i) % 2 == 0;
                        let out = if json {
                            d.cli_json(cmd)
                                .map(|v| v.to_string())
                                .map_err(|e| e.to_string())
                        } else {
                            d.cli(cmd)
                        };
                        match out {
                            Ok(_) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("client {c}: `{cmd}` failed: {e}"),
                        }
                    }
                }
            });
        }
        // Meanwhile: SIGHUP reloads, and the config file changing under them.
        s.spawn(|| {
            for k in 0..10 {
                let cfg = if k % 2 == 0 { &other } else { &text };
                // Replaced whole (written aside, renamed over it): a reload
                // that read a file being written in place would find it
                // cut short and be refused, rightly, as the clients' own
                // `reload` requests were when this wrote in place.
                let tmp = d.config.with_extension("toml.new");
                std::fs::write(&tmp, cfg).unwrap();
                std::fs::rename(&tmp, &d.config).unwrap();
                d.signal(libc::SIGHUP);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    });
    let n = answered.load(Ordering::Relaxed);
    assert_eq!(n, CLIENTS * ROUNDS * MIX.len(), "every request answered");
    // Bounded: a lock-order deadlock would hang clients until their timeout.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    // Still serving, with one consistent SA set.
    let v = d.cli_json("show crypto ipsec sa").unwrap();
    let spis = v["sas"][0]["inbound_spis"].clone();
    assert!(
        spis == serde_json::json!([0x1001]) || spis == serde_json::json!([0x1003]),
        "{v}"
    );
    assert!(
        d.log_text().contains("SIGHUP: Reloaded"),
        "{}",
        d.log_text()
    );
}

/// Send raw bytes as a request; return the reply line.
fn raw_request(socket: &std::path::Path, bytes: &[u8]) -> serde_json::Value {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The daemon may answer before reading everything (too long): ignore
    // a broken pipe while writing.
    let _ = s.write_all(bytes);
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn malformed_control_requests_get_an_error_reply() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    // Not UTF-8.
    let r = raw_request(&d.socket, b"{\"command\":\"show \xff\xfe\"}\n");
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["output"].as_str().unwrap().contains("not UTF-8"), "{r}");
    // Longer than the limit (64 KiB).
    let mut long = b"{\"command\":\"".to_vec();
    long.extend(std::iter::repeat_n(b'a', 100_000));
    long.extend_from_slice(b"\"}\n");
    let r = raw_request(&d.socket, &long);
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["output"].as_str().unwrap().contains("longer than"), "{r}");
    // Not JSON.
    let r = raw_request(&d.socket, b"show version\n");
    assert_eq!(r["ok"], false, "{r}");
    // A well-formed request still works afterwards.
    let r = raw_request(&d.socket, b"{\"command\":\"show version\",\"json\":true}\n");
    assert_eq!(r["ok"], true, "{r}");
}
