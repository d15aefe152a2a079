//! The load tester's AF_XDP frames against an independent implementation:
//! scapy parses the probes xdpsec frames (Ethernet, IPv4/IPv6, UDP to the
//! NAT-T port or plain ESP) and recomputes every checksum; scapy builds
//! the replies xdpsec locates (SPI, destination, port, ESP bytes).
//! Without the venv: ignored, or a failure under `cargo xtask test` and
//! CI (`xdpsec_testenv`).
use std::{net::IpAddr, path::PathBuf};

use serde_json::{Value, json};
use xdpsec_loadtest::frames::{PROBE_TTL, probe_frame, probe_outer, reply_esp};
use xdpsec_testenv::{Need, hex, trial, unhex};

fn scapy(reqs: Vec<Value>) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/frames_ref.py");
    let out = xdpsec_testenv::venv_script(&script, Value::from(reqs).to_string().as_bytes());
    serde_json::from_slice::<Vec<Value>>(&out).unwrap()
}

/// Source, destination, UDP ports (none: plain ESP).
type Case = (&'static str, &'static str, Option<(u16, u16)>);

const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 0x11], [2, 0, 0, 0, 0, 0x22]];

/// An ESP packet's bytes as the seal leaves them: SPI, sequence, the rest.
fn esp(spi: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut e = spi.to_be_bytes().to_vec();
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend((0..len - 8).map(|i| (i * 7 + 3) as u8));
    e
}

/// Probes over IPv4 and IPv6, in UDP (from 4500 and from a peer's own
/// port) and plain: every field and checksum as scapy reads them.
fn probes_parse_in_scapy() {
    let cases: [Case; 4] = [
        ("2001:db8::1000", "2001:db8::1", Some((4500, 4500))),
        ("2001:db8::2", "2001:db8::1", Some((20001, 4500))),
        ("2001:db8::1000", "2001:db8::1", None),
        ("198.51.100.10", "198.51.100.1", Some((4500, 4500))),
    ];
    let mut frames = Vec::new();
    let mut reqs = Vec::new();
    for (k, (src, dst, udp)) in cases.iter().enumerate() {
        let e = esp(
            0x0100_0000 + k as u32,
            0x0001_0000 + k as u32 * 0x111,
            61 + k,
        );
        let o = probe_outer(src.parse().unwrap(), dst.parse().unwrap(), *udp, MACS);
        let mut buf = [0u8; 512];
        let n = probe_frame(&mut buf, &o, &e).unwrap();
        reqs.push(json!({"op": "parse", "hex": hex(&buf[..n])}));
        frames.push(e);
    }
    let mut v4plain = Vec::new();
    {
        let e = esp(0x0100_0009, 0x0002_abcd, 70);
        let o = probe_outer(
            "198.51.100.10".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            None,
            MACS,
        );
        let mut buf = [0u8; 512];
        let n = probe_frame(&mut buf, &o, &e).unwrap();
        reqs.push(json!({"op": "parse", "hex": hex(&buf[..n])}));
        v4plain.push(e);
    }
    let got = scapy(reqs);
    for (k, (src, dst, udp)) in cases.iter().enumerate() {
        let g = &got[k];
        let e = &frames[k];
        let v6 = src.contains(':');
        assert_eq!(g["eth_dst"], "02:00:00:00:00:11", "{g}");
        assert_eq!(g["eth_src"], "02:00:00:00:00:22", "{g}");
        assert_eq!(g["type"], if v6 { 0x86dd } else { 0x0800 }, "{g}");
        assert_eq!(g["src"], *src, "{g}");
        assert_eq!(g["dst"], *dst, "{g}");
        assert_eq!(g["ttl"], PROBE_TTL, "{g}");
        assert_eq!(g["ip_ok"], true, "{g}");
        let udp_len = if udp.is_some() { 8 } else { 0 };
        let ip_len = e.len() + udp_len + if v6 { 0 } else { 20 };
        assert_eq!(g["ip_len"], ip_len, "{g}");
        match udp {
            Some((s, d)) => {
                assert_eq!(g["proto"], 17, "{g}");
                assert_eq!(
                    (g["sport"].as_u64(), g["dport"].as_u64()),
                    (Some(u64::from(*s)), Some(u64::from(*d))),
                    "{g}"
                );
                assert_eq!(g["udp_len"], e.len() + 8, "{g}");
                if v6 {
                    assert_eq!(g["udp_ok"], true, "{g}");
                } else {
                    // RFC 3948 2.1: zero over IPv4.
                    assert_eq!(g["udp_chksum"], 0, "{g}");
                }
            }
            None => assert_eq!(g["proto"], 50, "{g}"),
        }
        assert_eq!(g["esp"], hex(e), "{g}");
    }
    let g = &got[4];
    assert_eq!(
        (g["proto"].as_u64(), g["ip_ok"].as_bool()),
        (Some(50), Some(true)),
        "{g}"
    );
    // The datapath's rule: identification = the sequence number's low half, no DF.
    assert_eq!(
        (g["ident"].as_u64(), g["df"].as_bool()),
        (Some(0xabcd), Some(false)),
        "{g}"
    );
    assert_eq!(g["esp"], hex(&v4plain[0]), "{g}");
}

/// Replies scapy built (IPv4/IPv6, in UDP and plain ESP): located with
/// their SPI, destination, port and ESP bytes.
fn replies_scapy_built_are_located() {
    let cases: [(&str, &str, Option<u16>); 4] = [
        ("2001:db8::1", "2001:db8::1000", Some(4500)),
        ("2001:db8::1", "2001:db8::2", Some(20001)),
        ("2001:db8::1", "2001:db8::1000", None),
        ("198.51.100.1", "198.51.100.10", None),
    ];
    let reqs: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(k, (s, d, p))| {
            json!({"op": "build", "src": s, "dst": d, "dport": p, "spi": 0xc000_0000u32 + k as u32,
                   "seq": 7 + k, "data": hex(&esp(0, 0, 48 + k)[8..])})
        })
        .collect();
    for (k, (g, (s, d, p))) in scapy(reqs).iter().zip(cases).enumerate() {
        let f = unhex(g.as_str().unwrap());
        let r = reply_esp(&f, |x| x == 4500 || x == 20001).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(r.spi, 0xc000_0000 + k as u32);
        assert_eq!(r.src, s.parse::<IpAddr>().unwrap());
        assert_eq!(r.dst, d.parse::<IpAddr>().unwrap());
        assert_eq!(r.dport, p);
        assert_eq!(r.sport, p.map(|_| 4500));
        let e = &f[r.esp.clone()];
        assert_eq!(e.len(), 48 + k);
        assert_eq!(&e[4..8], &(7 + k as u32).to_be_bytes());
        // A port not steered: not a reply.
        if p.is_some() {
            assert_eq!(reply_esp(&f, |_| false), Err("not_esp"));
        }
    }
}

fn main() {
    xdpsec_testenv::main(vec![
        trial(
            "probes_parse_in_scapy",
            &[Need::Venv],
            probes_parse_in_scapy,
        ),
        trial(
            "replies_scapy_built_are_located",
            &[Need::Venv],
            replies_scapy_built_are_located,
        ),
    ]);
}
