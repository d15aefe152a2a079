//! The ESP datapath end to end: interop with scapy (an independent ESP
//! implementation) in both directions, exact drop accounting on bad input,
//! IOS log lines, and two xdpsec nodes pinging across a manual tunnel.
use std::net::IpAddr;

use serde_json::{Value, json};
use xdpsec_e2e::{
    Daemon, Lab, queue_counter, scapy_peer, settle,
    tunnel::{BASE, Case, KEY_A, KEY_B, inner_addrs, tunnel_config},
};

/// The scapy peer's config: it is node 1 of the lab, talking to xdpsec on node 0.
fn peer_cfg(lab: &Lab, c: &Case) -> Value {
    xdpsec_e2e::tunnel::scapy_peer_config(lab, c).unwrap()
}

fn sa(d: &Daemon) -> Value {
    let v = d.cli_json("show crypto ipsec sa").unwrap();
    v["sas"][0].clone()
}

use xdpsec_e2e::drop_rows as drops;

fn interop(c: Case, first_seq: u64) {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &c)).unwrap();
    let mut cfg = peer_cfg(&lab, &c);
    cfg["tx"]["seq"] = json!(first_seq);
    check_interop(&lab, &d, &c, &cfg);
}

/// Five echo requests from scapy through xdpsec and back, decrypted by
/// scapy; the sequence numbers, outer headers, SA counters and drops as
/// [`interop`] expects them.
fn check_interop(lab: &Lab, d: &Daemon, c: &Case, cfg: &Value) {
    let r = scapy_peer(&lab.ns2, cfg).unwrap();
    assert_eq!(r["sent"], 5, "{c:?}: {r}");
    assert_eq!(
        r["errors"],
        json!([]),
        "{c:?}: scapy could not decrypt xdpsec's ESP: {r}"
    );
    assert_eq!(
        r["matched"],
        json!([0, 1, 2, 3, 4]),
        "{c:?}: echo replies through xdpsec: {r}"
    );
    // xdpsec's outbound sequence numbers start at 1 and increase by one.
    assert_eq!(r["reply_seqs"], json!([1, 2, 3, 4, 5]), "{c:?}: {r}");
    // Outer headers checked by scapy: the UDP checksum is computed over IPv6
    // (RFC 8200 8.1; zero is invalid there) and may be 0 over IPv4 (RFC
    // 3948); the IPv4 ident does not repeat (RFC 6864: the low 16 bits of
    // the sequence number).
    let sums = r["udp_chksums"].as_array().unwrap();
    assert_eq!(sums.len(), if c.udp.is_some() { 5 } else { 0 }, "{r}");
    for pair in sums {
        let (got, want) = (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap());
        if c.v6_outer {
            assert!(got != 0 && got == want, "{c:?}: UDP/IPv6 checksum {pair}");
        } else {
            assert!(got == 0 || got == want, "{c:?}: UDP/IPv4 checksum {pair}");
        }
    }
    if !c.v6_outer {
        assert_eq!(r["ipv4_ids"], json!([1, 2, 3, 4, 5]), "{c:?}: {r}");
    }
    let s = sa(d);
    assert_eq!(
        (s["pkts_decaps"].as_u64(), s["pkts_encaps"].as_u64()),
        (Some(5), Some(5)),
        "{c:?}: {s}"
    );
    assert_eq!(s["recv_errors"], 0, "{c:?}: {s}");
    let none = std::collections::BTreeMap::new();
    assert_eq!(settle(d, none.clone(), || drops(d)), none, "{c:?}");
}

/// An AES-CBC + HMAC transform for [`interop_cbc`]: xdpsec's cipher name,
/// key lengths, scapy's `auth_algo`, IOS's transform.
struct CbcTransform {
    enc_len: usize,
    integ_len: usize,
    scapy_auth: &'static str,
    ios: &'static str,
}

/// `n` key bytes from `start` up, as hex.
fn key_hex(start: u8, n: usize) -> String {
    (0..n)
        .map(|i| format!("{:02x}", start.wrapping_add(i as u8)))
        .collect()
}

/// [`interop`] with an AES-CBC + HMAC transform: xdpsec's keys are
/// encryption key || integrity key, scapy gets them apart
/// (`crypt_algo='AES-CBC'`, `auth_algo`, `crypt_key` = the encryption key
/// alone). Also checks the IOS transform in `show crypto ipsec sa`.
fn interop_cbc(c: Case, t: CbcTransform, first_seq: u64) {
    let lab = Lab::unique().up(1).unwrap();
    let (enc_a, auth_a) = (key_hex(0x10, t.enc_len), key_hex(0x40, t.integ_len));
    let (enc_b, auth_b) = (key_hex(0x90, t.enc_len), key_hex(0xc0, t.integ_len));
    // tunnel_config writes KEY_A (inbound) and KEY_B (outbound) for any
    // cipher but aes128-gcm: put the CBC key material in their place.
    let config = tunnel_config(&lab, 0, &c)
        .replace(KEY_A, &format!("{enc_a}{auth_a}"))
        .replace(KEY_B, &format!("{enc_b}{auth_b}"));
    let d = Daemon::start(&lab.ns1, &config).unwrap();
    let mut cfg = peer_cfg(&lab, &c);
    cfg["cipher"] = json!("AES-CBC");
    cfg["auth_algo"] = json!(t.scapy_auth);
    cfg["tx"] = json!({"spi": 0x1001, "key": enc_a, "auth_key": auth_a, "seq": first_seq});
    cfg["rx"] = json!({"spi": 0x1002, "key": enc_b, "auth_key": auth_b});
    check_interop(&lab, &d, &c, &cfg);
    let text = d.cli("show crypto ipsec sa").unwrap();
    assert!(
        text.contains(&format!("transform: {} ,", t.ios)),
        "{c:?}: {text}"
    );
}

#[test]
fn scapy_interop_aes256_gcm_esp_ipv4() {
    interop(BASE, 1);
}

#[test]
fn scapy_interop_aes128_gcm_udp4500_ipv4() {
    interop(
        Case {
            cipher: "aes128-gcm",
            udp: Some(4500),
            ..BASE
        },
        1,
    );
}

#[test]
fn scapy_interop_chacha20_poly1305_udp12346_ipv4() {
    interop(
        Case {
            cipher: "chacha20-poly1305",
            udp: Some(12346),
            window: 512,
            ..BASE
        },
        1,
    );
}

#[test]
fn scapy_interop_aes256_gcm_esp_ipv6_outer_and_inner() {
    interop(
        Case {
            v6_outer: true,
            v6_inner: true,
            ..BASE
        },
        1,
    );
}

#[test]
fn scapy_interop_udp_ipv6_outer_ipv4_inner() {
    interop(
        Case {
            v6_outer: true,
            udp: Some(4500),
            ..BASE
        },
        1,
    );
}

#[test]
fn scapy_interop_esn_across_2_pow_32() {
    // Five packets with 64-bit sequence numbers 2^32-3 .. 2^32+1: the high
    // half is never on the wire, xdpsec infers it (RFC 4303 A2.1).
    interop(Case { esn: true, ..BASE }, (1u64 << 32) - 3);
}

#[test]
fn scapy_interop_esn_chacha_udp_ipv6() {
    interop(
        Case {
            esn: true,
            cipher: "chacha20-poly1305",
            udp: Some(12346),
            v6_outer: true,
            ..BASE
        },
        7,
    );
}

#[test]
fn scapy_interop_aes256_cbc_sha256_esp_ipv4() {
    // IOS `esp-aes 256 esp-sha256-hmac`.
    interop_cbc(
        Case {
            cipher: "aes256-sha256",
            ..BASE
        },
        CbcTransform {
            enc_len: 32,
            integ_len: 32,
            scapy_auth: "SHA2-256-128",
            ios: "esp-256-aes esp-sha256-hmac",
        },
        1,
    );
}

#[test]
fn scapy_interop_aes128_cbc_sha1_udp4500_ipv4() {
    // IOS's default transform set, `esp-aes esp-sha-hmac`, over NAT-T.
    interop_cbc(
        Case {
            cipher: "aes128-sha1",
            udp: Some(4500),
            ..BASE
        },
        CbcTransform {
            enc_len: 16,
            integ_len: 20,
            scapy_auth: "HMAC-SHA1-96",
            ios: "esp-aes esp-sha-hmac",
        },
        1,
    );
}

#[test]
fn scapy_interop_aes256_cbc_sha512_esn_ipv6() {
    // ESN across 2^32: the high half is in the ICV, never on the wire.
    interop_cbc(
        Case {
            cipher: "aes256-sha512",
            esn: true,
            v6_outer: true,
            v6_inner: true,
            ..BASE
        },
        CbcTransform {
            enc_len: 32,
            integ_len: 64,
            scapy_auth: "SHA2-512-256",
            ios: "esp-256-aes esp-sha512-hmac",
        },
        (1u64 << 32) - 3,
    );
}

#[test]
fn scapy_interop_aes128_cbc_sha384_udp_ipv6() {
    interop_cbc(
        Case {
            cipher: "aes128-sha384",
            udp: Some(12346),
            v6_outer: true,
            ..BASE
        },
        CbcTransform {
            enc_len: 16,
            integ_len: 48,
            scapy_auth: "SHA2-384-192",
            ios: "esp-aes esp-sha384-hmac",
        },
        1,
    );
}

/// CBC faults on the wire, from scapy: a bad ICV is 62 and leaves the
/// window where it was (the authentic packet with the same sequence number
/// still delivers), bad padding bytes in an authentic packet are 23.
#[test]
fn cbc_bad_icv_and_padding_counted_exactly() {
    let lab = Lab::unique().up(1).unwrap();
    let c = Case {
        cipher: "aes256-sha256",
        ..BASE
    };
    let (enc_a, auth_a) = (key_hex(0x10, 32), key_hex(0x40, 32));
    let config = tunnel_config(&lab, 0, &c)
        .replace(KEY_A, &format!("{enc_a}{auth_a}"))
        .replace(
            KEY_B,
            &format!("{}{}", key_hex(0x90, 32), key_hex(0xc0, 32)),
        );
    let d = Daemon::start(&lab.ns1, &config).unwrap();
    let mut cfg = peer_cfg(&lab, &c);
    cfg["cipher"] = json!("AES-CBC");
    cfg["auth_algo"] = json!("SHA2-256-128");
    cfg["tx"] = json!({"spi": 0x1001, "key": enc_a, "auth_key": auth_a});
    cfg["rx"] = json!({"spi": 0x1002, "key": key_hex(0x90, 32), "auth_key": key_hex(0xc0, 32)});
    // The ICMP echo is 84 bytes: 84 + 2 trailer bytes pad to 96 with 10.
    cfg["packets"] = json!([
        {"seq": 1},
        {"seq": 2, "tamper": true},
        {"seq": 2},
        {"seq": 3, "pad": "0102030405060708090b"},
        {"seq": 4, "pad": "0102030405060708090a"},
    ]);
    let r = scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(r["sent"], 5);
    let want: std::collections::BTreeMap<u64, u64> = [(23, 1), (62, 1)].into_iter().collect();
    assert_eq!(
        settle(&d, want.clone(), || drops(&d)),
        want,
        "drop counters"
    );
    let s = sa(&d);
    assert_eq!(s["pkts_decaps"], 3, "{s}");
    assert_eq!(s["pkts_verify_failed"], 1, "{s}");
    // IOS's `#recv errors` counts the ICV failure too: 1 + the padding one.
    assert_eq!(s["recv_errors"], 2, "{s}");
    assert_eq!(s["pkts_replay_failed"], 0, "{s}");
    let log = d.cli("show logging").unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("%IPSEC-3-HMAC_ERROR"))
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn bad_packets_are_dropped_and_counted_exactly() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    let mut cfg = peer_cfg(&lab, &BASE);
    let p = |seq: u64| json!({"seq": seq});
    let mut packets: Vec<Value> = (1..=5).map(p).collect();
    packets.push(p(3)); // duplicate
    packets.push(p(100)); // moves the window to 37..100
    packets.push(p(10)); // too old for a 64-packet window
    packets.push(json!({"seq": 101, "tamper": true})); // ICV fails
    packets.push(p(101)); // accepted: the tampered copy did not advance the window
    for _ in 0..3 {
        packets.push(json!({"seq": 1, "spi": 0xBEEF})); // unknown SPI
    }
    packets.push(json!({"seq": 102, "truncate": 10})); // shorter than IV + ICV
    packets.push(json!({"seq": 103, "pad": "0000"})); // padding not 1, 2, ...
    packets.push(json!({"seq": 104, "nh": 17})); // next header neither 4 nor 41
    // (Outer fragments are reassembled by the kernel first: see
    // `fragmented_esp_is_reassembled_and_decrypted`.)
    packets.push(json!({"seq": 106, "nh": 59})); // dummy packet: not a drop
    packets.push(json!({"seq": 107, "chksum": 0x1234})); // bad outer IPv4 checksum
    // Outer CE over a Not-ECT inner packet: RFC 6040 4.2 says drop.
    packets.push(json!({"seq": 108, "tos": 3}));
    cfg["packets"] = json!(packets);
    let r = scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(r["sent"], 19);

    let want: std::collections::BTreeMap<u64, u64> = [
        (4, 3),
        (19, 2),
        (23, 2),
        (62, 1),
        (65, 1),
        (120, 1),
        (121, 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        settle(&d, want.clone(), || drops(&d)),
        want,
        "drop counters"
    );
    let s = sa(&d);
    assert_eq!(s["pkts_decaps"], 7, "{s}");
    assert_eq!(s["pkts_verify_failed"], 1, "{s}");
    assert_eq!(s["pkts_replay_failed"], 2, "{s}");
    assert_eq!(s["pkts_replay_too_old"], 1, "{s}");
    assert_eq!(s["pkts_replay_duplicate"], 1, "{s}");
    let st = d
        .cli_json("show platform hardware qfp active statistics")
        .unwrap();
    assert_eq!(st["dummy_packets"], 1, "{st}");

    // IOS text layout: only non-zero rows without `all`, every row with it.
    let text = d
        .cli("show platform hardware qfp active feature ipsec datapath drops")
        .unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(char::is_numeric))
        .collect();
    assert_eq!(rows.len(), 7, "{text}");
    assert!(
        rows.contains(&format!("4 IN_US_V4_PKT_SA_NOT_FOUND_SPI{:>41}", 3).as_str()),
        "{text}"
    );
    assert!(text.lines().all(|l| l.len() <= 72), "{text}");
    let all = d
        .cli("show platform hardware qfp active feature ipsec datapath drops all")
        .unwrap();
    let json_rows = d
        .cli_json("show platform hardware qfp active feature ipsec datapath drops")
        .unwrap();
    assert_eq!(
        all.lines()
            .filter(|l| l.starts_with(char::is_numeric))
            .count(),
        json_rows["drops"].as_array().unwrap().len()
    );

    // IOS log lines: one of each kind (rate-limited to one a minute).
    let log = d.cli("show logging").unwrap();
    let inv: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("%CRYPTO-4-RECVD_PKT_INV_SPI"))
        .collect();
    assert_eq!(inv.len(), 1, "{log}");
    assert!(
        inv[0].contains(&format!(
            "%CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd IPSEC packet has invalid spi for destaddr={}, prot=50, spi=0x0000BEEF(48879), srcaddr={}",
            lab.v4[0], lab.v4[1]
        )),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("%IPSEC-3-REPLAY_ERROR"))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("%IPSEC-3-HMAC_ERROR"))
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("2 messages rate-limited") || log.contains("rate-limited"),
        "{log}"
    );
    // Keys never appear in logs.
    let daemon_log = d.log_text();
    for k in [KEY_A, KEY_B, &KEY_A[..16], &KEY_B[..16]] {
        assert!(
            !log.contains(k) && !daemon_log.contains(k),
            "key material in a log"
        );
    }

    // `clear` zeroes the drop counters.
    d.cli("clear platform hardware qfp active feature ipsec datapath drops")
        .unwrap();
    assert!(drops(&d).is_empty());
}

#[test]
fn two_xdpsec_nodes_ping_across_manual_tunnels() {
    for c in [
        Case {
            udp: Some(4500),
            ..BASE
        },
        Case {
            v6_outer: true,
            v6_inner: true,
            cipher: "chacha20-poly1305",
            esn: true,
            ..BASE
        },
    ] {
        let lab = Lab::unique().up(1).unwrap();
        let d1 = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &c)).unwrap();
        let d2 = Daemon::start(&lab.ns2, &tunnel_config(&lab, 1, &c)).unwrap();
        let inner = inner_addrs(c.v6_inner);
        let out = Lab::exec(
            &lab.ns1,
            &[
                "ping", "-c", "4", "-i", "0.2", "-W", "2", "-I", inner[0], inner[1],
            ],
        )
        .unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for d in [&d1, &d2] {
            let s = sa(d);
            assert_eq!(
                (s["pkts_encaps"].as_u64(), s["pkts_decaps"].as_u64()),
                (Some(4), Some(4)),
                "{c:?}: {s}"
            );
            let none = std::collections::BTreeMap::new();
            assert_eq!(settle(d, none.clone(), || drops(d)), none, "{c:?}");
        }
        let peer: IpAddr = if c.v6_outer { lab.v6[1] } else { lab.v4[1] };
        let text = d1
            .cli(&format!("show crypto ipsec sa peer {peer}"))
            .unwrap();
        assert!(text.contains("interface: Tunnel1"), "{text}");
        assert!(
            text.contains(&format!("current_peer {peer} port")),
            "{text}"
        );
        assert!(
            text.contains("#pkts encaps: 4, #pkts encrypt: 4, #pkts digest: 4"),
            "{text}"
        );
        assert!(
            text.contains("#pkts decaps: 4, #pkts decrypt: 4, #pkts verify: 4"),
            "{text}"
        );
        assert!(
            text.contains("current outbound spi: 0x1002(4098)"),
            "{text}"
        );
        assert!(text.contains("spi: 0x1001(4097)"), "{text}");
        assert!(text.contains("Status: ACTIVE(ACTIVE)"), "{text}");
        // Another peer: nothing.
        let none = d1.cli("show crypto ipsec sa peer 198.51.100.99").unwrap();
        assert!(!none.contains("interface:"), "{none}");
        // `clear crypto sa counters` zeroes them; new traffic counts from zero.
        d1.cli("clear crypto sa counters").unwrap();
        assert_eq!(sa(&d1)["pkts_encaps"], 0);
        let out = Lab::exec(
            &lab.ns1,
            &["ping", "-c", "1", "-W", "2", "-I", inner[0], inner[1]],
        )
        .unwrap();
        assert!(out.status.success());
        let s = sa(&d1);
        assert_eq!(
            (s["pkts_encaps"].as_u64(), s["pkts_decaps"].as_u64()),
            (Some(1), Some(1)),
            "{s}"
        );
    }
}

#[test]
fn reload_rekeys_manual_sas_and_the_old_spi_counts_as_invalid_sa() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    let mut cfg = peer_cfg(&lab, &BASE);
    cfg["packets"] = json!([{"seq": 1}]);
    scapy_peer(&lab.ns2, &cfg).unwrap();

    // A change that needs a restart is refused, naming the field; nothing changes.
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, text.replace("queues = 1", "queues = 2")).unwrap();
    let err = d
        .cli("request platform software xdpsec reload")
        .unwrap_err();
    assert!(err.contains("underlay") && err.contains("restart"), "{err}");
    // A bad key is refused with its line; nothing changes.
    std::fs::write(
        &d.config,
        text.replace("spi = 0x1001", "spi = 0x1003")
            .replace(KEY_A, "00"),
    )
    .unwrap();
    let err = d
        .cli("request platform software xdpsec reload")
        .unwrap_err();
    assert!(
        err.contains("tunnel.inbound.key") && err.contains("line"),
        "{err}"
    );
    assert_eq!(sa(&d)["inbound_spis"], json!([0x1001]));

    // New inbound SPI: the old SA goes, its SPI is remembered as invalid.
    std::fs::write(&d.config, text.replace("spi = 0x1001", "spi = 0x1003")).unwrap();
    let out = d.cli("request platform software xdpsec reload").unwrap();
    assert!(out.contains("inbound SA 0x1001 -> 0x1003"), "{out}");
    assert_eq!(sa(&d)["inbound_spis"], json!([0x1003]));

    cfg["packets"] = json!([{"seq": 2}, {"seq": 3}]); // still to 0x1001
    scapy_peer(&lab.ns2, &cfg).unwrap();
    cfg["tx"]["spi"] = json!(0x1003);
    cfg["packets"] = json!([{"seq": 1}, {"seq": 2}]);
    scapy_peer(&lab.ns2, &cfg).unwrap();

    let want: std::collections::BTreeMap<u64, u64> = [(1, 2)].into_iter().collect();
    assert_eq!(
        settle(&d, want.clone(), || drops(&d)),
        want,
        "IN_V4_PKT_HIT_INVALID_SA for the old SPI"
    );
    assert_eq!(sa(&d)["pkts_decaps"], 2, "the new SA decrypts");
    let log = d.cli("show logging").unwrap();
    let line = format!(
        "%CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd IPSEC packet has invalid spi for destaddr={}, prot=50, spi=0x00001001(4097), srcaddr={}, input interface=Tunnel1",
        lab.v4[0], lab.v4[1]
    );
    assert_eq!(
        log.lines().filter(|l| l.ends_with(&line)).count(),
        1,
        "{log}"
    );
}

#[test]
fn frames_on_another_queue_are_handed_to_the_sa_owner() {
    let lab = Lab::unique().up(2).unwrap();
    let mut handed_total = 0;
    for worker in [0u64, 1] {
        let cfg_text = tunnel_config(&lab, 0, &BASE)
            .replace("queues = 1", "queues = 2")
            .replace(
                "kind = \"manual\"",
                &format!("kind = \"manual\"\nworker = {worker}"),
            );
        let d = Daemon::start(&lab.ns1, &cfg_text).unwrap();
        let r = scapy_peer(&lab.ns2, &peer_cfg(&lab, &BASE)).unwrap();
        assert_eq!(r["matched"], json!([0, 1, 2, 3, 4]), "worker {worker}: {r}");
        // Replies are encrypted by the tunnel's owner worker only, whichever
        // TUN queue they were read on: sequence numbers leave in order.
        assert_eq!(
            r["reply_seqs"],
            json!([1, 2, 3, 4, 5]),
            "worker {worker}: {r}"
        );
        assert_eq!(sa(&d)["pkts_decaps"], 5);
        let none = std::collections::BTreeMap::new();
        assert_eq!(settle(&d, none.clone(), || drops(&d)), none);
        let v = d
            .cli_json("show platform hardware qfp active statistics")
            .unwrap();
        for q in v["queues"].as_array().unwrap() {
            if q["queue"] != worker {
                // Every ESP frame received on a queue that does not own the SA is handed over.
                assert_eq!(q["rx_frames"], q["handoff"], "worker {worker}: {v}");
                handed_total += q["handoff"].as_u64().unwrap();
            } else {
                assert_eq!(q["handoff"], 0, "{v}");
            }
        }
    }
    assert!(
        handed_total > 0,
        "no frame took the handoff path in either run"
    );
}

#[test]
fn packets_to_a_peer_without_a_next_hop_mac_are_counted() {
    let lab = Lab::unique().up(1).unwrap();
    // 198.51.100.77 is on the link but nobody answers ARP for it.
    let cfg = tunnel_config(&lab, 0, &BASE).replace(
        &format!("peer = \"{}\"", lab.v4[1]),
        "peer = \"198.51.100.77\"",
    );
    let d = Daemon::start(&lab.ns1, &cfg).unwrap();
    let [a, b] = inner_addrs(false);
    let out = Lab::exec(
        &lab.ns1,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", a, b],
    )
    .unwrap();
    assert!(!out.status.success());
    let want: std::collections::BTreeMap<u64, u64> = [(55, 3)].into_iter().collect();
    assert_eq!(
        settle(&d, want.clone(), || drops(&d)),
        want,
        "OUT_SETTING_WRONG_L2_HDR"
    );
    // A destination routed into the TUN that no tunnel claims: no SA (111).
    Lab::exec(
        &lab.ns1,
        &["ip", "route", "add", "203.0.113.99/32", "dev", "xs1"],
    )
    .unwrap();
    let _ = Lab::exec(
        &lab.ns1,
        &[
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            a,
            "203.0.113.99",
        ],
    )
    .unwrap();
    let want: std::collections::BTreeMap<u64, u64> = [(55, 3), (111, 2)].into_iter().collect();
    assert_eq!(settle(&d, want.clone(), || drops(&d)), want);
}

#[test]
fn ipv6_outer_drops_use_the_ipv6_drop_types() {
    let c = Case {
        v6_outer: true,
        v6_inner: true,
        ..BASE
    };
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &c)).unwrap();
    let mut cfg = peer_cfg(&lab, &c);
    cfg["packets"] = json!([
        {"seq": 1},
        {"seq": 1, "spi": 0xBEEF},
        {"seq": 2, "spi": 0xBEEF},
        {"seq": 2, "tamper": true},
        {"seq": 1},
    ]);
    scapy_peer(&lab.ns2, &cfg).unwrap();
    let want: std::collections::BTreeMap<u64, u64> =
        [(12, 2), (19, 1), (62, 1)].into_iter().collect();
    assert_eq!(
        settle(&d, want.clone(), || drops(&d)),
        want,
        "IN_US_V6_PKT_SA_NOT_FOUND_SPI, replay, ICV"
    );
    assert_eq!(sa(&d)["pkts_decaps"], 1);
    let log = d.cli("show logging").unwrap();
    let line = format!(
        "%CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd IPSEC packet has invalid spi for destaddr={}, prot=50, spi=0x0000BEEF(48879), srcaddr={}",
        lab.v6[0], lab.v6[1]
    );
    assert_eq!(
        log.lines().filter(|l| l.contains(&line)).count(),
        1,
        "{log}"
    );
}

/// Nonce safety across restarts: xdpsec's outbound sequence numbers (the
/// AEAD IVs) continue above the reservation recorded in `state_dir`, so a
/// restarted daemon never sends a sequence number twice under its key.
#[test]
fn outbound_sequence_numbers_resume_above_the_reservation_after_a_restart() {
    const BLOCK: u64 = 1 << 20; // control/src/seqstore.rs
    let lab = Lab::unique().up(1).unwrap();
    let state = xdpsec_e2e::scratch_dir("state");
    let dir = state.join("edge1");
    let config = format!(
        "state_dir = \"{}\"\n{}",
        dir.display(),
        tunnel_config(&lab, 0, &BASE)
    );
    let mut cfg = peer_cfg(&lab, &BASE);
    cfg["count"] = json!(2);
    let first = {
        let _d = Daemon::start(&lab.ns1, &config).unwrap();
        scapy_peer(&lab.ns2, &cfg).unwrap()
    };
    assert_eq!(first["reply_seqs"], json!([1, 2]), "{first}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "state_dir mode {mode:o}");
        let text = std::fs::read_to_string(dir.join("sequences")).unwrap();
        assert!(text.contains(&format!(" {BLOCK}\n")), "{text}");
        assert!(!text.contains(&KEY_B[..16]) && !text.contains(&KEY_A[..16]));
    }
    // Restarted: the first reply carries the first number above the reservation.
    let _d = Daemon::start(&lab.ns1, &config).unwrap();
    cfg["tx"]["seq"] = json!(3);
    let second = scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(
        second["reply_seqs"],
        json!([BLOCK + 1, BLOCK + 2]),
        "{second}"
    );
    assert_eq!(second["decrypted"], 2, "{second}");
    let _ = std::fs::remove_dir_all(&state);
}

/// A reload that would reuse nonces or forget replay state is refused,
/// naming the field; the same change with a new key is applied.
#[test]
fn reload_refuses_changes_that_would_reuse_nonces_or_replay_state() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    let text = std::fs::read_to_string(&d.config).unwrap();
    let reload = |cfg: String| {
        std::fs::write(&d.config, cfg).unwrap();
        d.cli("request platform software xdpsec reload")
    };
    let out_sa = format!("spi = 0x1002\nkey = \"{KEY_B}\"");
    assert!(text.contains(&out_sa), "{text}");
    // New outbound SPI, same key: the peer would see sequence numbers restart.
    let err =
        reload(text.replace(&out_sa, &format!("spi = 0x1004\nkey = \"{KEY_B}\""))).unwrap_err();
    assert!(err.contains("tunnel.outbound.spi"), "{err}");
    // Replay window resized under the same inbound key: state would be lost.
    let err = reload(text.replace("replay_window = 64", "replay_window = 128")).unwrap_err();
    assert!(err.contains("tunnel.replay_window"), "{err}");
    // One key for both directions is refused at load, with its line.
    let err = reload(text.replace(KEY_B, KEY_A)).unwrap_err();
    assert!(
        err.contains("tunnel.outbound.key") && err.contains("line"),
        "{err}"
    );
    assert_eq!(sa(&d)["outbound_spi"], json!(0x1002), "nothing applied");
    // The SPI change with a new key goes through.
    let out = reload(text.replace(
        &out_sa,
        &format!("spi = 0x1004\nkey = \"{}\"", xdpsec_e2e::tunnel::KEY_C),
    ))
    .unwrap();
    assert!(out.contains("outbound SA 0x1002 -> 0x1004"), "{out}");
    assert_eq!(sa(&d)["outbound_spi"], json!(0x1004));
}

/// Outer IPv4 and IPv6 fragments of ESP and of UDP-ESP are reassembled
/// (by the kernel, after XDP passed them) before ESP processing, RFC 4303
/// section 3.4.1, and decrypted like whole packets.
#[test]
fn fragmented_esp_is_reassembled_and_decrypted() {
    let cases = [
        (BASE, "kernel_esp_v4"),
        (
            Case {
                udp: Some(4500),
                ..BASE
            },
            "kernel_udp_esp_v4",
        ),
        (
            Case {
                v6_outer: true,
                ..BASE
            },
            "kernel_esp_v6",
        ),
        (
            Case {
                udp: Some(12346),
                v6_outer: true,
                v6_inner: true,
                ..BASE
            },
            "kernel_udp_esp_v6",
        ),
    ];
    for (c, counter) in cases {
        let lab = Lab::unique().up(1).unwrap();
        let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &c)).unwrap();
        let mut cfg = peer_cfg(&lab, &c);
        cfg["payload"] = json!(1000);
        cfg["fragsize"] = json!(400);
        let r = scapy_peer(&lab.ns2, &cfg).unwrap();
        assert_eq!(r["errors"], json!([]), "{c:?}: {r}");
        assert_eq!(r["matched"], json!([0, 1, 2, 3, 4]), "{c:?}: {r}");
        let s = sa(&d);
        assert_eq!(s["pkts_decaps"], 5, "{c:?}: {s}");
        assert!(drops(&d).is_empty(), "{c:?}: {:?}", drops(&d));
        let st = d
            .cli_json("show platform hardware qfp active statistics")
            .unwrap();
        assert_eq!(st["kernel"][counter], 5, "{c:?}: {st}");
        assert!(
            st["xdp"]["pass_fragment"].as_u64().unwrap() >= 10,
            "{c:?}: {st}"
        );
    }
}

#[test]
fn inner_packets_outside_the_tunnel_policy_are_dropped_and_logged() {
    for c in [
        BASE,
        Case {
            v6_outer: true,
            v6_inner: true,
            ..BASE
        },
    ] {
        let lab = Lab::unique().up(1).unwrap();
        let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &c)).unwrap();
        let mut cfg = peer_cfg(&lab, &c);
        // The tunnel allows sources in remote_subnets (the peer's inner
        // address) to the [inside] address (the default local_subnets).
        let (bad_src, bad_dst, code) = if c.v6_inner {
            ("2001:db8:200::77", "2001:db8:200::50", 31)
        } else {
            ("203.0.113.77", "203.0.113.50", 30)
        };
        cfg["packets"] = json!([
            {"seq": 1},
            {"seq": 2, "inner_src": bad_src}, // source outside remote_subnets
            {"seq": 3, "inner_dst": bad_dst}, // destination outside local_subnets
            {"seq": 2}, // authentic but refused packets still used their sequence numbers
            {"seq": 4},
        ]);
        let r = scapy_peer(&lab.ns2, &cfg).unwrap();
        assert_eq!(r["sent"], 5, "{c:?}: {r}");
        let want: std::collections::BTreeMap<u64, u64> = [(code, 2), (19, 1)].into_iter().collect();
        assert_eq!(
            settle(&d, want.clone(), || drops(&d)),
            want,
            "{c:?}: POST_INPUT_POLICY_FAIL and the replay of a refused packet"
        );
        let s = sa(&d);
        assert_eq!(s["pkts_decaps"], 2, "{c:?}: {s}");
        // recv errors: 2 policy + 1 replay.
        assert_eq!(s["recv_errors"], 3, "{c:?}: {s}");
        let log = d.cli("show logging").unwrap();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("%CRYPTO-4-RECVD_PKT_INV_IDENTITY_ACL"))
            .collect();
        // One a minute: the second refused packet is rate-limited.
        assert_eq!(lines.len(), 1, "{c:?}: {log}");
        let inner = inner_addrs(c.v6_inner);
        let prot = if c.v6_inner { 58 } else { 1 };
        assert!(
            lines[0].ends_with(&format!(
                "%CRYPTO-4-RECVD_PKT_INV_IDENTITY_ACL: ipsec check access: identity not allowed by ACL. ip vrf/dest_addr= /{}, src_addr= {bad_src}, prot= {prot}",
                inner[0]
            )),
            "{c:?}: {log}"
        );
    }
}

/// The seed's fault on demand: `forget-sa` makes the datapath lose the
/// peer's inbound SA while the control plane keeps it; the peer's packets
/// count as unknown SPI (4, never 1) with the IOS log line; `show crypto
/// ipsec sa` still lists the SA. `clear crypto sa peer` re-installs the
/// manual SA (the same one: its replay window carries on).
#[test]
fn forget_sa_reproduces_the_invalid_spi_fault_and_clear_crypto_sa_peer_recovers() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    let mut cfg = peer_cfg(&lab, &BASE);
    cfg["packets"] = json!([{"seq": 1}, {"seq": 2}]);
    scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(settle(&d, json!(2), || sa(&d)["pkts_decaps"].clone()), 2);

    let peer = lab.v4[1].to_string();
    let out = d
        .cli(&format!(
            "request platform software xdpsec fault forget-sa peer {peer}"
        ))
        .unwrap();
    assert!(
        out.contains("0x00001001") && out.contains("Tunnel1"),
        "{out}"
    );
    cfg["packets"] = json!([{"seq": 3}, {"seq": 4}]);
    scapy_peer(&lab.ns2, &cfg).unwrap();
    let want: std::collections::BTreeMap<u64, u64> = [(4, 2)].into_iter().collect();
    assert_eq!(
        settle(&d, want.clone(), || drops(&d)),
        want,
        "SA_NOT_FOUND_SPI, not HIT_INVALID_SA"
    );
    let log = d.cli("show logging").unwrap();
    assert!(
        log.contains(&format!(
            "%CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd IPSEC packet has invalid spi for destaddr={}, prot=50, spi=0x00001001(4097), srcaddr={peer}, input interface=Tunnel1",
            lab.v4[0]
        )),
        "{log}"
    );
    // The control plane still has the SA, as the router does.
    assert_eq!(sa(&d)["inbound_spis"], json!([0x1001]));
    let text = d.cli(&format!("show crypto ipsec sa peer {peer}")).unwrap();
    assert!(text.contains("spi: 0x1001(4097)"), "{text}");

    // Recovery: the SA is back, counters restart, the replay window carried on.
    let out = d.cli(&format!("clear crypto sa peer {peer}")).unwrap();
    assert!(out.contains("Tunnel1"), "{out}");
    assert_eq!(sa(&d)["pkts_decaps"], 0, "counters restart after the clear");
    cfg["packets"] = json!([{"seq": 5}, {"seq": 2}]);
    scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(settle(&d, json!(1), || sa(&d)["pkts_decaps"].clone()), 1);
    let want: std::collections::BTreeMap<u64, u64> = [(4, 2), (19, 1)].into_iter().collect();
    assert_eq!(
        settle(&d, want.clone(), || drops(&d)),
        want,
        "seq 2 is still a replay"
    );
    // A peer without tunnels is an error naming it.
    let err = d.cli("clear crypto sa peer 198.51.100.77").unwrap_err();
    assert!(err.contains("198.51.100.77"), "{err}");
}

/// BFD inside the tunnel (issue 8): an ESP packet from scapy carrying an
/// inner UDP datagram to port 3784 addressed to xdpsec's own tunnel
/// address is handed to control (`punted`), never written to the TUN
/// device, and is no drop, although that address is outside the tunnel's
/// policy; the same datagram to another port is refused by the policy as
/// before, and an ordinary packet still reaches the TUN.
#[test]
fn bfd_inside_the_tunnel_is_punted_to_control_not_the_inside() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    let mut cfg = peer_cfg(&lab, &BASE);
    let local = cfg["outer_dst"].clone();
    cfg["packets"] = json!([
        {"seq": 1, "inner_dst": local, "inner_udp_dport": 3784},
        {"seq": 2, "inner_dst": local, "inner_udp_dport": 3785},
        {"seq": 3},
    ]);
    let r = scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(r["sent"], 3, "{r}");
    assert_eq!(settle(&d, 1, || queue_counter(&d, "punted")), 1);
    assert_eq!(
        settle(&d, 1, || queue_counter(&d, "tun_tx")),
        1,
        "the echo only"
    );
    assert_eq!(queue_counter(&d, "punt_dropped"), 0);
    // Only the UDP/3785 datagram is a drop: POST_INPUT_POLICY_FAIL (30).
    let want: std::collections::BTreeMap<u64, u64> = [(30, 1)].into_iter().collect();
    assert_eq!(settle(&d, want.clone(), || drops(&d)), want);
    // The punted packet was decrypted: a decap of the SA.
    let s = sa(&d);
    assert_eq!(s["pkts_decaps"], 2, "{s}");
    assert_eq!(s["recv_errors"], 1, "{s}");
    let text = d
        .cli("show platform hardware qfp active statistics")
        .unwrap();
    assert!(
        text.contains("punted 1, punt_dropped 0, injected 0, inject_dropped 0"),
        "{text}"
    );
}

/// `underlay.busy_poll_us`: the daemon's AF_XDP sockets carry the busy-poll
/// options (read back from the kernel per queue), the busy-polling worker
/// still serves both directions (pings across a manual tunnel whose other
/// end does not busy-poll), and nothing is dropped.
#[test]
fn busy_polling_sockets_carry_the_option_and_traffic_flows() {
    let lab = Lab::unique().up(1).unwrap();
    let c = Case {
        udp: Some(4500),
        ..BASE
    };
    let cfg = tunnel_config(&lab, 0, &c).replace("queues = 1", "queues = 1\nbusy_poll_us = 50");
    assert!(cfg.contains("busy_poll_us = 50"), "{cfg}");
    let d1 = Daemon::start(&lab.ns1, &cfg).unwrap();
    let d2 = Daemon::start(&lab.ns2, &tunnel_config(&lab, 1, &c)).unwrap();
    let stats = |d: &Daemon| {
        d.cli_json("show platform hardware qfp active statistics")
            .unwrap()
    };
    let q1 = &stats(&d1)["queues"][0];
    assert_eq!(q1["busy_poll_us"], 50, "{q1}");
    assert_eq!(stats(&d2)["queues"][0]["busy_poll_us"], 0);
    let text = d1
        .cli("show platform hardware qfp active statistics")
        .unwrap();
    assert!(text.contains("busy polling 50 us"), "{text}");
    let inner = inner_addrs(false);
    assert_eq!(
        xdpsec_e2e::ping(&lab.ns1, inner[0], inner[1], 10, "0.1"),
        (10, 10)
    );
    let s = sa(&d1);
    assert_eq!(
        (s["pkts_encaps"].as_u64(), s["pkts_decaps"].as_u64()),
        (Some(10), Some(10)),
        "{s}"
    );
    let none = std::collections::BTreeMap::new();
    assert_eq!(settle(&d1, none.clone(), || drops(&d1)), none);
}
