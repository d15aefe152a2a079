//! Commands and gauges end to end, each read back by something that is not
//! xdpsec (issue 16 item 4): `clear crypto ikev2 sa [remote ADDR]` and
//! `clear crypto session [remote ADDR]` against strongSwan (charon's own
//! view of the DELETE and of the new SAs), the `xdpsec_ike_sa_up` and
//! `xdpsec_bfd_session_up` gauges going down and up again, `/metrics`
//! counters that no `clear` resets, RFC 5424 syslog read by a PyPI parser,
//! and the drop capture read by tshark with its `limit`.
use std::{
    collections::BTreeMap,
    net::UdpSocket,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;
use xdpsec_e2e::{
    Daemon, Lab, drop_rows, ike, metric, py_script, scapy_peer, scrape_metrics, scratch_dir,
    sdwan::{EdgeSpec, Fabric, Timers},
    settle,
    strongswan::{Charon, CharonOpts, Conn, GCM_X25519, IkeSa},
    tunnel::{BASE, scapy_peer_config, tunnel_config},
};

/// Poll `f` every 100 ms until it returns Some, for at most `within`.
fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `[logging] format = "rfc5424"`: every line of the log buffer reaches
/// the collector as RFC 5424, and an RFC 5424 parser from PyPI
/// (syslog-rfc5424-parser) reads each: version 1, facility local7, the
/// line's severity, host, app, MSGID (the mnemonic, at most 32
/// characters), and the message as `show logging` has it.
#[test]
fn rfc5424_syslog_is_read_back_by_an_independent_parser() {
    let lab = Lab::unique().up(1).unwrap();
    let collector = Lab::in_ns(&lab.ns2, || {
        let s = UdpSocket::bind(("198.51.100.2", 5514)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    })
    .unwrap();
    let cfg = format!(
        "{}[logging]\nhost = \"{}:5514\"\nformat = \"rfc5424\"\n",
        tunnel_config(&lab, 0, &BASE),
        lab.v4[1]
    );
    let d = Daemon::start(&lab.ns1, &cfg).unwrap();
    // One of each kind of line the datapath logs.
    let mut peer = scapy_peer_config(&lab, &BASE).unwrap();
    peer["packets"] = json!([
        {"seq": 1},
        {"seq": 1},                      // %IPSEC-3-REPLAY_ERROR
        {"seq": 2, "tamper": true},      // %IPSEC-3-HMAC_ERROR
        {"seq": 1, "spi": 0xBEEF},       // %CRYPTO-4-RECVD_PKT_INV_SPI
        {"seq": 3, "inner_src": "203.0.113.77"}, // %CRYPTO-4-RECVD_PKT_INV_IDENTITY_ACL
    ]);
    scapy_peer(&lab.ns2, &peer).unwrap();
    let lines = || -> Vec<String> {
        d.cli_json("show logging").unwrap()["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    };
    // The owner turns the workers' events into lines every 100 ms tick; the
    // drain ends with an idle poll as long, begun after the 4th line.
    assert_eq!(settle(&d, 4, || lines().len()), 4, "{:?}", lines());
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 4 {
        let (n, _) = collector
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{e}: only {got:?}"));
        got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    let dir = scratch_dir("syslog");
    let file = dir.join("datagrams.json");
    std::fs::write(&file, serde_json::to_string(&got).unwrap()).unwrap();
    let parsed = py_script(&lab.ns2, "syslog5424_parse.py", file.to_str().unwrap(), 60)
        .unwrap_or_else(|e| panic!("{e:#}\n{got:#?}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut seen: Vec<String> = Vec::new();
    for (m, raw) in parsed.as_array().unwrap().iter().zip(&got) {
        let msg = m["msg"].as_str().unwrap().to_string();
        let mnemonic = msg.trim_start_matches('%').split(':').next().unwrap();
        let sev = match mnemonic.split('-').nth(1) {
            Some("3") => "err",
            Some("4") => "warning",
            other => panic!("severity {other:?} in {raw}"),
        };
        assert_eq!(
            (
                m["version"].as_u64(),
                m["facility"].as_str(),
                m["severity"].as_str(),
                m["hostname"].as_str(),
                m["appname"].as_str(),
                m["msgid"].as_str(),
            ),
            (
                Some(1),
                Some("local7"),
                Some(sev),
                Some("edge1"),
                Some("xdpsec"),
                Some(&mnemonic[..mnemonic.len().min(32)]),
            ),
            "{raw}"
        );
        assert!(m["timestamp"].as_str().unwrap().starts_with("20"), "{raw}");
        seen.push(msg);
    }
    // The same messages as the log buffer's lines (after their timestamp).
    let mut want: Vec<String> = lines()
        .iter()
        .map(|l| l[l.find('%').unwrap()..].to_string())
        .collect();
    want.sort();
    seen.sort();
    assert_eq!(seen, want);
    assert!(
        seen.iter()
            .any(|m| m.starts_with("%CRYPTO-4-RECVD_PKT_INV_IDENTITY_ACL")),
        "{seen:?}"
    );
}

/// A metric, labels it must have, and the value expected.
type Probe = (&'static str, Vec<(&'static str, &'static str)>, f64);

/// `/metrics` counters are totals since start: `clear ... drops`, `clear
/// crypto sa counters` and `clear platform hardware qfp active statistics`
/// zero what the shows print, not what Prometheus scrapes.
#[test]
fn metrics_counters_are_not_reset_by_clear_commands() {
    let lab = Lab::unique().up(1).unwrap();
    let listen = format!("{}:9273", lab.v4[0]);
    let cfg = format!(
        "{}[metrics]\nlisten = \"{listen}\"\n",
        tunnel_config(&lab, 0, &BASE)
    );
    let d = Daemon::start(&lab.ns1, &cfg).unwrap();
    let mut peer = scapy_peer_config(&lab, &BASE).unwrap();
    peer["packets"] = json!([
        {"seq": 1}, {"seq": 2}, {"seq": 3},
        {"seq": 3},
        {"seq": 4, "tamper": true},
        {"seq": 1, "spi": 0xBEEF}, {"seq": 2, "spi": 0xBEEF},
    ]);
    scapy_peer(&lab.ns2, &peer).unwrap();
    let want: BTreeMap<u64, u64> = [(4, 2), (19, 1), (62, 1)].into_iter().collect();
    assert_eq!(settle(&d, want.clone(), || drop_rows(&d)), want);
    let probes: [Probe; 6] = [
        ("xdpsec_qfp_drops_total", vec![("id", "4")], 2.0),
        ("xdpsec_qfp_drops_total", vec![("id", "19")], 1.0),
        ("xdpsec_qfp_drops_total", vec![("id", "62")], 1.0),
        (
            "xdpsec_sa_packets_total",
            vec![("tunnel", "Tunnel1"), ("direction", "inbound")],
            3.0,
        ),
        (
            "xdpsec_afxdp_total",
            vec![("queue", "0"), ("counter", "rx_frames")],
            5.0,
        ),
        (
            "xdpsec_xdp_steering_total",
            vec![("counter", "drop_unknown_spi_v4")],
            2.0,
        ),
    ];
    let read = || -> Vec<Option<f64>> {
        let s = scrape_metrics(&lab.ns2, &listen).unwrap();
        probes.iter().map(|(n, l, _)| metric(&s, n, l)).collect()
    };
    let want: Vec<Option<f64>> = probes.iter().map(|p| Some(p.2)).collect();
    assert_eq!(read(), want, "before the clears");
    for c in [
        "clear platform hardware qfp active feature ipsec datapath drops",
        "clear crypto sa counters",
        "clear platform hardware qfp active statistics",
    ] {
        d.cli(c).unwrap();
    }
    // The shows restart from 0 ...
    assert!(drop_rows(&d).is_empty(), "{:?}", drop_rows(&d));
    let sa = d.cli_json("show crypto ipsec sa").unwrap();
    assert_eq!(sa["sas"][0]["pkts_decaps"], 0, "{sa}");
    let st = d
        .cli_json("show platform hardware qfp active statistics")
        .unwrap();
    assert_eq!(
        (
            &st["queues"][0]["rx_frames"],
            &st["xdp"]["drop_unknown_spi_v4"]
        ),
        (&json!(0), &json!(0)),
        "{st}"
    );
    // ... /metrics does not.
    assert_eq!(read(), want, "after the clears");
    // Next-hop refresh passes: a total since start in both, never behind
    // the show read before the scrape.
    let passes = st["next_hop_refreshes"]
        .as_u64()
        .expect("next_hop_refreshes");
    assert!(passes >= 1, "{st}");
    let s = scrape_metrics(&lab.ns2, &listen).unwrap();
    let scraped = metric(&s, "xdpsec_next_hop_refreshes_total", &[]);
    assert!(
        scraped.is_some_and(|v| v >= passes as f64),
        "{scraped:?} < {passes}"
    );
    // Frames held for a next hop's MAC and sent: in both, the same total.
    let held = st["next_hop_held_sent"]
        .as_u64()
        .expect("next_hop_held_sent");
    let scraped = metric(&s, "xdpsec_next_hop_held_sent_total", &[]);
    assert!(
        scraped.is_some_and(|v| v >= held as f64),
        "{scraped:?} < {held}"
    );
}

/// `monitor capture drops start file F limit N`: the pcapng file holds the
/// first N dropped frames only, and tshark (Wireshark's own reader) gives
/// each frame's drop reason from its packet comment.
#[test]
fn tshark_reads_each_captured_frames_drop_reason_and_the_limit_holds() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    let dir = scratch_dir("capture");
    let pcap = dir.join("drops.pcapng");
    let out = d
        .cli_json(&format!(
            "monitor capture drops start file {} limit 4",
            pcap.display()
        ))
        .unwrap();
    assert_eq!(out["limit"], 4, "{out}");
    let mut peer = scapy_peer_config(&lab, &BASE).unwrap();
    // One queue, one worker: dropped in this order.
    peer["packets"] = json!([
        {"seq": 1},
        {"seq": 2, "tamper": true},
        {"seq": 1},
        {"seq": 7, "spi": 0xBEEF},
        {"seq": 3, "pad": "0000"},
        {"seq": 4, "tamper": true},
        {"seq": 8, "spi": 0xBEEF},
    ]);
    scapy_peer(&lab.ns2, &peer).unwrap();
    let want: BTreeMap<u64, u64> = [(4, 2), (19, 1), (23, 1), (62, 2)].into_iter().collect();
    assert_eq!(settle(&d, want.clone(), || drop_rows(&d)), want);
    let stop = d.cli_json("monitor capture drops stop").unwrap();
    assert_eq!(
        (&stop["written"], &stop["lost"]),
        (&json!(4), &json!(0)),
        "{stop}"
    );
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-E", "separator=,"])
        .args(["-e", "frame.comment", "-e", "esp.spi", "-e", "esp.sequence"])
        .output()
        .expect("tshark (Debian tshark; xtask/setup.sh installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows,
        [
            "drop 62 IN_OCT_MAC_EXCEPTION,0x00001001,2",
            "drop 19 IN_OCT_ANTI_REPLAY_FAIL,0x00001001,1",
            "drop 4 IN_US_V4_PKT_SA_NOT_FOUND_SPI,0x0000beef,7",
            "drop 23 IN_PKT_HEADPAD_LEN_ERR,0x00001001,3",
        ],
        "the first 4 of 6 drops, each with its reason"
    );
}

const PSK: &str = "xdpsec ikev2 test key";

/// The IKE SA of `conn` in charon's `swanctl --list-sas`.
fn charon_ike(c: &Charon) -> Option<IkeSa> {
    c.list_sas()
        .ok()?
        .into_iter()
        .find(|s| s.name == "xs" && s.state == "ESTABLISHED" && !s.children.is_empty())
}

/// `xdpsec_ike_sa_up` for `tunnel` and its `peer` (None: no such series).
fn ike_up(ns: &str, listen: &str, tunnel: &str, peer: &str) -> Option<f64> {
    let s = scrape_metrics(ns, listen).unwrap();
    metric(
        &s,
        "xdpsec_ike_sa_up",
        &[("tunnel", tunnel), ("peer", peer)],
    )
}

/// `clear crypto ikev2 sa [remote ADDR]` and `clear crypto session [remote
/// ADDR]` against strongSwan: charon logs the DELETE of its IKE SA, both
/// sides hold a new IKE SA and child SA (new SPIs on both), and pings pass
/// again. Then `xdpsec_ike_sa_up` follows the IKE SA down (charon stopped,
/// the SA cleared: 0, not a vanished series) and up again (charon back).
#[test]
fn clear_ikev2_sa_and_clear_session_renegotiate_with_strongswan_and_the_gauge_follows() {
    let lab = Lab::unique().up(1).unwrap();
    let inner = ike::INNER;
    let out = Lab::exec(
        &lab.ns2,
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/32", inner[1]),
            "dev",
            "lo",
        ],
    )
    .unwrap();
    assert!(out.status.success());
    let conn = Conn::psk(
        "xs",
        lab.v4[1],
        lab.v4[0],
        &format!("{}/32", inner[1]),
        &format!("{}/32", inner[0]),
        PSK,
    );
    let mut charon = Charon::start(&lab.ns2, &CharonOpts::default()).unwrap();
    charon.load_conn(&conn.to_swanctl()).unwrap();
    let listen = format!("{}:9273", lab.v4[0]);
    // Tunnel3 waits for a peer that never comes: no IKE SA ever.
    let cfg = format!(
        "{}[[tunnel]]\nname = \"Tunnel3\"\nkind = \"ike\"\npeer = \"198.51.100.3\"\nencap = \"udp\"\npsk = \"{PSK}\"\ninitiate = false\nlocal_subnets = [\"{}/32\"]\nremote_subnets = [\"203.0.113.3/32\"]\n[metrics]\nlisten = \"{listen}\"\n",
        ike::ike_config(&lab, 0, PSK, true, &GCM_X25519, ""),
        inner[0]
    );
    let d = Daemon::start(&lab.ns1, &cfg).unwrap();
    let peer = lab.v4[1].to_string();
    ike::wait_ready(&d, Duration::from_secs(15)).unwrap();
    let mut sa = wait_for(Duration::from_secs(10), "charon's IKE SA", || {
        charon_ike(&charon)
    });
    let ping_ok = || xdpsec_e2e::ping(&lab.ns1, inner[0], inner[1], 2, "0.2").1 == 2;
    assert!(ping_ok(), "{}", charon.log_text());
    assert_eq!(ike_up(&lab.ns2, &listen, "Tunnel2", &peer), Some(1.0));
    // A tunnel without any IKE SA reads 0; its series is there.
    assert_eq!(
        ike_up(&lab.ns2, &listen, "Tunnel3", "198.51.100.3"),
        Some(0.0)
    );

    for command in [
        format!("clear crypto ikev2 sa remote {peer}"),
        "clear crypto ikev2 sa".to_string(),
        format!("clear crypto session remote {peer}"),
        "clear crypto session".to_string(),
    ] {
        let deletes = charon
            .log_text()
            .matches("received DELETE for IKE_SA")
            .count();
        let (x_out, x_in) = ike::spis(&d).unwrap();
        d.cli(&command).unwrap_or_else(|e| panic!("{command}: {e}"));
        // charon saw the DELETE and holds a new IKE SA with a new child.
        let new = wait_for(
            Duration::from_secs(15),
            &format!("{command}: a new IKE SA in charon\n{}", charon.log_text()),
            || {
                let log = charon.log_text();
                let s = charon_ike(&charon)?;
                (log.matches("received DELETE for IKE_SA").count() > deletes
                    && s.uniqueid != sa.uniqueid)
                    .then_some(s)
            },
        );
        assert_ne!(
            (&new.initiator_spi, &new.responder_spi),
            (&sa.initiator_spi, &sa.responder_spi),
            "{command}"
        );
        assert!(
            !new.initiator,
            "xdpsec initiates again, not charon: {command}"
        );
        assert_eq!(
            charon.list_sas().unwrap().len(),
            1,
            "{command}: the old IKE SA is gone"
        );
        let (c_old, c_new) = (&sa.children[0], &new.children[0]);
        assert!(
            c_new.spi_in != c_old.spi_in && c_new.spi_out != c_old.spi_out,
            "{command}: new child SPIs in charon {c_old:?} -> {c_new:?}"
        );
        // xdpsec's side: new SPIs, mirroring charon's.
        let (o, i) = wait_for(Duration::from_secs(10), "xdpsec's new child", || {
            let (o, i) = ike::spis(&d).ok()?;
            (o == u64::from(c_new.spi_in) && i == [u64::from(c_new.spi_out)]).then_some((o, i))
        });
        assert!(o != x_out && i != x_in, "{command}");
        let v = ike::wait_ready(&d, Duration::from_secs(10)).unwrap();
        assert_eq!(v["ike_sas"].as_array().unwrap().len(), 1, "{command}: {v}");
        wait_for(Duration::from_secs(10), "pings on the new SAs", || {
            ping_ok().then_some(())
        });
        sa = new;
    }

    // The gauge: down with the peer gone, up again when it is back.
    charon.stop();
    d.cli(&format!("clear crypto ikev2 sa remote {peer}"))
        .unwrap();
    wait_for(Duration::from_secs(10), "xdpsec_ike_sa_up 0", || {
        (ike_up(&lab.ns2, &listen, "Tunnel2", &peer) == Some(0.0)).then_some(())
    });
    // It stays 0 (not absent) while no IKE SA exists at all: after the
    // retransmissions give up and before the next try.
    let mut c2 = Charon::start(&lab.ns2, &CharonOpts::default()).unwrap();
    c2.load_conn(&conn.to_swanctl()).unwrap();
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(60), "xdpsec_ike_sa_up 1 again", || {
        let v = ike_up(&lab.ns2, &listen, "Tunnel2", &peer);
        seen.push(v);
        (v == Some(1.0)).then_some(())
    });
    assert!(
        seen.iter().all(|v| v.is_some()),
        "the series never vanishes: {seen:?}"
    );
    assert!(ping_ok(), "{}", c2.log_text());
    c2.stop();
}

/// `xdpsec_bfd_session_up` follows the BFD session: 1 when up, 0 once
/// `forget-sa` cut the peer's packets off, 1 again after `ipsec-rekey`.
#[test]
fn bfd_session_gauge_goes_down_with_forget_sa_and_up_after_ipsec_rekey() {
    let mut f = Fabric::unique(
        vec![
            EdgeSpec::new(&["biz-internet"]),
            EdgeSpec::new(&["biz-internet"]),
        ],
        Timers::fast(),
    )
    .up()
    .unwrap();
    f.start_controller().unwrap();
    let listen = format!("{}:9273", f.tloc_ip(1, 0));
    let cfg = format!("{}[metrics]\nlisten = \"{listen}\"\n", f.edge_config(1));
    f.edges[0] = Some(Daemon::start(&f.edge_ns[0], &cfg).unwrap());
    f.start_edge(2).unwrap();
    f.wait_converged(&[1, 2], Duration::from_secs(20)).unwrap();
    let ns = f.edge_ns[0].clone();
    let dest = format!("{}:{}", f.tloc_ip(2, 0), Fabric::tloc_port(0));
    let up = || {
        let s = scrape_metrics(&ns, &listen).unwrap();
        metric(
            &s,
            "xdpsec_bfd_session_up",
            &[
                ("system_ip", &Fabric::system_ip(2)),
                ("local_color", "biz-internet"),
                ("remote_color", "biz-internet"),
                ("destination", &dest),
            ],
        )
    };
    assert_eq!(up(), Some(1.0));
    f.edge(1)
        .cli(&format!(
            "request platform software xdpsec fault forget-sa peer {}",
            f.tloc_ip(2, 0)
        ))
        .unwrap();
    wait_for(Duration::from_secs(10), "xdpsec_bfd_session_up 0", || {
        (up() == Some(0.0)).then_some(())
    });
    assert!(
        f.bfd_state(1).iter().all(|(_, s)| s == "down"),
        "{:?}",
        f.bfd_state(1)
    );
    f.edge(1)
        .cli("request platform software sdwan security ipsec-rekey")
        .unwrap();
    wait_for(
        Duration::from_secs(15),
        "xdpsec_bfd_session_up 1 again",
        || (up() == Some(1.0)).then_some(()),
    );
    assert!(
        f.bfd_state(1).iter().all(|(_, s)| s == "up"),
        "{:?}",
        f.bfd_state(1)
    );
}
