//! Packet trace (`debug platform packet-trace`), drop capture to pcapng
//! (`monitor capture drops`) and the Wireshark key export (`show crypto
//! ipsec sa export wireshark`), read back: the trace by its show commands,
//! the capture with the `pcap-file` crate, the export by tshark decrypting a
//! capture taken on the lab.
use std::{collections::BTreeMap, path::Path, process::Command};

use pcap_file::pcapng::{Block, PcapNgReader, blocks::enhanced_packet::EnhancedPacketOption};
use serde_json::{Value, json};
use xdpsec_e2e::{
    Daemon, Lab, scapy_peer, scratch_dir, settle,
    tunnel::{BASE, scapy_peer_config, tunnel_config},
};

use xdpsec_e2e::drop_rows as drops;

/// (comment, frame length) of every packet in a pcapng file.
fn read_pcapng(path: &Path) -> Vec<(String, usize)> {
    let f = std::fs::File::open(path).unwrap();
    let mut r = PcapNgReader::new(f).unwrap();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        if let Block::EnhancedPacket(p) = b.unwrap() {
            let comment = p
                .options
                .iter()
                .find_map(|o| match o {
                    EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                    _ => None,
                })
                .unwrap_or_default();
            out.push((comment, p.data.len()));
        }
    }
    out
}

#[test]
fn packet_trace_shows_each_frames_path_and_the_capture_holds_each_drop() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    let dir = scratch_dir("trace");
    let pcap = dir.join("drops.pcapng");
    d.cli("debug platform packet-trace packet 16").unwrap();
    d.cli(&format!(
        "monitor capture drops start file {}",
        pcap.display()
    ))
    .unwrap();
    // Nothing traced yet.
    let s = d.cli_json("show platform packet-trace summary").unwrap();
    assert_eq!(s["packets"], json!([]), "{s}");
    let before = drops(&d);
    // One frame of each kind, in this order (one queue: one worker, in
    // order): valid, forged ICV, a replay of the first, an unknown SPI,
    // valid again.
    let mut cfg = scapy_peer_config(&lab, &BASE).unwrap();
    cfg["packets"] = json!([
        {"seq": 1},
        {"seq": 2, "tamper": true},
        {"seq": 1},
        {"seq": 1, "spi": 0xBEEF},
        {"seq": 3},
    ]);
    let r = scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(r["sent"], 5, "{r}");
    let want: BTreeMap<u64, u64> = [(4, 1), (19, 1), (62, 1)].into_iter().collect();
    assert_eq!(
        settle(&d, want.clone(), || drops(&d)),
        want,
        "drop counters"
    );
    assert!(before.is_empty(), "{before:?}");

    let s = d.cli_json("show platform packet-trace summary").unwrap();
    let pk = s["packets"].as_array().unwrap();
    assert_eq!(pk.len(), 5, "{s}");
    assert_eq!(s["remaining"], 11, "{s}");
    let path = |p: &Value| {
        (
            p["state"].as_str().unwrap().to_string(),
            p["drop"]["id"].as_u64(),
            p["sa"].as_str().unwrap().to_string(),
            p["replay"].as_str().unwrap().to_string(),
            p["icv"].as_str().unwrap().to_string(),
            p["spi"].as_u64(),
        )
    };
    let row = |st: &str, drop: Option<u64>, sa: &str, rp: &str, icv: &str, spi: u64| {
        (
            st.to_string(),
            drop,
            sa.to_string(),
            rp.to_string(),
            icv.to_string(),
            Some(spi),
        )
    };
    let got: Vec<_> = pk.iter().map(path).collect();
    assert_eq!(
        got,
        vec![
            row("FWD", None, "pass", "pass", "pass", 0x1001),
            row("DROP", Some(62), "pass", "pass", "fail", 0x1001),
            row("DROP", Some(19), "pass", "fail", "not_reached", 0x1001),
            row(
                "DROP",
                Some(4),
                "fail",
                "not_reached",
                "not_reached",
                0xBEEF
            ),
            row("FWD", None, "pass", "pass", "pass", 0x1001),
        ],
        "{s}"
    );
    for (i, p) in pk.iter().enumerate() {
        assert_eq!(p["pkt"], i, "{p}");
        assert_eq!(p["xdp_verdict"], "XDP_REDIRECT", "{p}");
        assert_eq!(p["queue"], 0, "{p}");
        assert_eq!(p["outer"]["src"], lab.v4[1].to_string(), "{p}");
        assert_eq!(p["outer"]["dst"], lab.v4[0].to_string(), "{p}");
        assert_eq!(p["outer"]["protocol"], 50, "{p}");
    }
    assert_eq!(pk[0]["output"], "Tunnel1", "{s}");
    assert_eq!(pk[3]["output"], "<none>", "{s}");
    // The IOS layout: columns, and the drop reason as `NN (NAME)`.
    let text = d.cli("show platform packet-trace summary").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("Pkt") && lines[0].contains("Input") && lines[0].ends_with("Reason"),
        "{text}"
    );
    assert!(
        lines[2].contains("DROP") && lines[2].ends_with("62 (IN_OCT_MAC_EXCEPTION)"),
        "{text}"
    );
    assert!(
        lines[4].ends_with("4 (IN_US_V4_PKT_SA_NOT_FOUND_SPI)"),
        "{text}"
    );
    let one = d.cli("show platform packet-trace packet 1").unwrap();
    for want in [
        "Packet: 1",
        "State     : DROP 62 (IN_OCT_MAC_EXCEPTION)",
        "Feature: XDP",
        "XDP_REDIRECT to AF_XDP queue 0",
        &format!("Source      : {}", lab.v4[1]),
        "Protocol    : 50 (ESP)",
        "SPI         : 0x00001001",
        "Sequence    : 2",
        "SA          : FOUND (tunnel 0)",
        "Anti-replay : PASS",
        "ICV         : FAIL",
    ] {
        assert!(one.contains(want), "{want:?} in:\n{one}");
    }
    assert!(d.cli("show platform packet-trace packet 9").is_err());

    // drops-only: the next frames traced are the dropped ones only.
    d.cli("debug platform packet-trace packet 2 drops-only")
        .unwrap();
    cfg["packets"] = json!([{"seq": 10}, {"seq": 11, "spi": 0xBEEF}, {"seq": 12}, {"seq": 10}]);
    scapy_peer(&lab.ns2, &cfg).unwrap();
    let want: BTreeMap<u64, u64> = [(4, 2), (19, 2), (62, 1)].into_iter().collect();
    assert_eq!(
        settle(&d, want.clone(), || drops(&d)),
        want,
        "drop counters"
    );
    let s = d.cli_json("show platform packet-trace summary").unwrap();
    let ids: Vec<_> = s["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["drop"]["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![Some(4), Some(19)], "{s}");

    // The capture: one frame per drop counted, each named in its comment.
    let stop = d.cli_json("monitor capture drops stop").unwrap();
    let frames = read_pcapng(&pcap);
    let total: u64 = drops(&d).values().sum();
    assert_eq!(frames.len() as u64, total, "{frames:?}");
    assert_eq!(stop["written"], total, "{stop}");
    assert_eq!(stop["lost"], 0, "{stop}");
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for (c, len) in &frames {
        *by.entry(c.clone()).or_default() += 1;
        assert!(*len > 14 + 20 + 8, "whole frames: {frames:?}");
    }
    let want: BTreeMap<String, u64> = [
        ("drop 4 IN_US_V4_PKT_SA_NOT_FOUND_SPI".to_string(), 2),
        ("drop 19 IN_OCT_ANTI_REPLAY_FAIL".to_string(), 2),
        ("drop 62 IN_OCT_MAC_EXCEPTION".to_string(), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(by, want);
    assert!(d.cli("monitor capture drops stop").is_err(), "not running");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tshark_decrypts_a_lab_capture_with_the_exported_sas() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    let dir = scratch_dir("wireshark");
    let uat_dir = dir.join("config/wireshark");
    std::fs::create_dir_all(&uat_dir).unwrap();
    let esp_sa = uat_dir.join("esp_sa");
    let out = d
        .cli_json(&format!(
            "show crypto ipsec sa export wireshark {}",
            esp_sa.display()
        ))
        .unwrap();
    assert_eq!(out["written"], 2, "both directions: {out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&esp_sa).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The keys are in the file, never in the reply or the log.
    let text = std::fs::read_to_string(&esp_sa).unwrap();
    let key_a = xdpsec_e2e::tunnel::KEY_A;
    assert!(text.contains(&format!("\"0x{key_a}\"")), "{text}");
    assert!(!out.to_string().contains(&key_a[..16]));
    assert!(!d.log_text().contains(&key_a[..16]));

    // tshark on the peer's side of the veth while scapy pings through
    // xdpsec: scapy's ESP leaves there (SPI 0x1001), xdpsec's arrives there
    // (0x1002; no XDP on the peer's side).
    let cap = dir.join("lab.pcapng");
    // Stops by itself after the 10 ESP packets of the exchange below.
    let mut child = xdpsec_e2e::start_tshark(
        &lab.ns2,
        &["-i", &lab.if2, "-f", "ip proto 50", "-c", "10"],
        &cap,
        30,
    );
    let cfg = scapy_peer_config(&lab, &BASE).unwrap();
    let r = scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(r["matched"], json!([0, 1, 2, 3, 4]), "{r}");
    // 5 echo requests and 5 replies: tshark exits once it has them all
    // (`timeout` would stop it after 30 s, exiting 124).
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "tshark did not capture the 10 ESP packets: {status}"
    );
    // tshark with the exported table as its esp_sa UAT file.
    let out = Command::new("tshark")
        .env("HOME", &dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .args(["-o", "esp.enable_encryption_decode:TRUE", "-r"])
        .arg(&cap)
        .args(["-Y", "esp && icmp", "-T", "fields"])
        .args([
            "-e",
            "esp.spi",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "icmp.type",
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    let rows: Vec<Vec<&str>> = shown.lines().map(|l| l.split('\t').collect()).collect();
    let requests = rows
        .iter()
        .filter(|r| r[0] == "0x00001001" && r[1].ends_with("203.0.113.2") && r[3] == "8")
        .count();
    let replies = rows
        .iter()
        .filter(|r| r[0] == "0x00001002" && r[1].ends_with("203.0.113.1") && r[3] == "0")
        .count();
    assert_eq!(
        (requests, replies),
        (5, 5),
        "decrypted echo requests and replies in tshark:\n{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
