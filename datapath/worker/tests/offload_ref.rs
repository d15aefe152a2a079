//! The TUN offloads against an independent implementation: scapy builds
//! the super-packets and segments, xdpsec's `offload` cuts and coalesces
//! them, scapy parses the results (lengths, IPv4 IDs, sequence numbers,
//! flags, payloads) and recomputes every checksum. Without the venv:
//! ignored, or a failure under `cargo xtask test` and CI (`xdpsec_testenv`).
use std::path::PathBuf;

use serde_json::{Value, json};
use xdpsec_testenv::hex;
use xdpsec_worker::offload::{
    F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VnetHdr, complete_checksum, gro, segment,
};

fn scapy(reqs: Vec<Value>) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/offload_ref.py");
    let out = xdpsec_testenv::venv_script(&script, Value::from(reqs).to_string().as_bytes());
    serde_json::from_slice::<Vec<Value>>(&out).unwrap()
}

fn unhex(s: &Value) -> Vec<u8> {
    xdpsec_testenv::unhex(s.as_str().unwrap())
}

fn built(reqs: Vec<Value>) -> Vec<Vec<u8>> {
    scapy(reqs).iter().map(unhex).collect()
}

fn checked(pkts: &[Vec<u8>]) -> Vec<Value> {
    scapy(
        pkts.iter()
            .map(|p| json!({"op": "check", "hex": hex(p)}))
            .collect(),
    )
}

const FIN: u64 = 0x01;
const PSH: u64 = 0x08;
const ACK: u64 = 0x10;

fn tcp_segmentation_matches_scapy() {
    for v6 in [false, true] {
        let (l4, len): (usize, usize) = (if v6 { 40 } else { 20 }, 5000);
        let mss = 1376 - l4 - 32;
        let sup = &built(vec![json!({"op": "build", "v6": v6, "proto": "tcp",
            "seq": 4_294_965_000u32, "flags": "FPA", "ts": [7, 9], "len": len})])[0];
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (l4 + 32) as u16,
            gso_size: mss as u16,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        let mut segs = Vec::new();
        let mut scratch = vec![0u8; 2048];
        segment(&hdr, sup, 1376, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.len(), len.div_ceil(mss));
        let got = checked(&segs);
        let whole = checked(std::slice::from_ref(sup)).remove(0);
        let mut payload = String::new();
        for (i, (s, g)) in segs.iter().zip(&got).enumerate() {
            let last = i + 1 == segs.len();
            assert!(s.len() <= 1376);
            assert_eq!(
                g["ip_chksum_ok"], true,
                "IPv4 header checksum of {i} (v6 {v6})"
            );
            assert_eq!(g["l4_chksum_ok"], true, "TCP checksum of {i} (v6 {v6})");
            let seq = 4_294_965_000u32.wrapping_add((i * mss) as u32);
            assert_eq!(g["seq"], u64::from(seq), "sequence number of {i}");
            let flags = if last { FIN | PSH | ACK } else { ACK };
            assert_eq!(g["flags"], flags, "flags of {i}");
            assert_eq!(g["options"], whole["options"], "options of {i}");
            let ip_len = if v6 { s.len() - 40 } else { s.len() };
            assert_eq!(g["ip_len"], ip_len, "IP length of {i}");
            if !v6 {
                assert_eq!(g["id"], 0x1234 + i, "IPv4 ID of {i}");
            }
            payload.push_str(g["payload"].as_str().unwrap());
        }
        assert_eq!(payload, whole["payload"].as_str().unwrap());
    }
}

fn udp_segmentation_matches_scapy() {
    for v6 in [false, true] {
        let l4 = if v6 { 40 } else { 20 };
        let sup = &built(vec![
            json!({"op": "build", "v6": v6, "proto": "udp", "len": 4000, "seed": 11}),
        ])[0];
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (l4 + 8) as u16,
            gso_size: 1300,
            csum_start: l4 as u16,
            csum_offset: 6,
        };
        let mut segs = Vec::new();
        let mut scratch = vec![0u8; 2048];
        segment(&hdr, sup, 1376, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.len(), 4);
        let whole = checked(std::slice::from_ref(sup)).remove(0);
        let mut payload = String::new();
        for (s, g) in segs.iter().zip(checked(&segs)) {
            assert_eq!(g["proto"], "udp");
            assert_eq!(g["l4_chksum_ok"], true);
            assert_eq!(g["ip_chksum_ok"], true);
            assert_eq!(g["udp_len"], s.len() - l4);
            payload.push_str(g["payload"].as_str().unwrap());
        }
        assert_eq!(payload, whole["payload"].as_str().unwrap());
    }
}

/// Segments scapy built: `n` of `len` bytes from `seq`, the last with PSH.
fn scapy_segments(v6: bool, n: usize, len: usize) -> Vec<Vec<u8>> {
    built(
        (0..n)
            .map(|i| {
                json!({"op": "build", "v6": v6, "proto": "tcp", "seq": 1000 + i * len,
                    "flags": if i + 1 == n { "PA" } else { "A" }, "ts": [5, 6], "len": len,
                    "seed": i * len * 7 + 3, "id": 0x1234 + i})
            })
            .collect(),
    )
}

/// What `g` writes for `pkts` pushed with a batch end after each index
/// in `ends`, then flushed: each written packet's header, bytes, and
/// number of packets.
fn coalesced(pkts: &[Vec<u8>], ends: &[usize]) -> Vec<(VnetHdr, Vec<u8>, usize)> {
    let mut g = gro::Gro::default();
    let mut out = Vec::new();
    let mut w = |o: gro::GroOut<'_>| out.push((o.hdr, o.pkt.to_vec(), o.tags.len()));
    for (i, p) in pkts.iter().enumerate() {
        g.push(p, i as u32, &mut w);
        if ends.contains(&i) {
            g.end_batch(&mut w);
        }
    }
    g.flush(&mut w);
    out
}

fn coalesced_super_packets_match_scapy() {
    // In one batch, and over three (the group stays open between them).
    for (v6, ends) in [(false, &[][..]), (true, &[][..]), (false, &[6, 13][..])] {
        let segs = scapy_segments(v6, 20, 1300);
        let mut outs = coalesced(&segs, ends);
        assert_eq!(outs.len(), 1, "one group");
        let (hdr, buf, n) = outs.remove(0);
        assert_eq!(n, 20);
        let len = buf.len();
        assert_eq!(hdr.gso_size, 1300);
        assert_eq!(hdr.gso(), if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        let mut sup = buf;
        // What the kernel does with NEEDS_CSUM: complete the checksum.
        complete_checksum(&hdr, &mut sup).unwrap();
        let got = checked(std::slice::from_ref(&sup)).remove(0);
        let parts = checked(&segs);
        assert_eq!(got["l4_chksum_ok"], true, "TCP checksum (v6 {v6})");
        assert_eq!(got["ip_chksum_ok"], true, "IPv4 header checksum");
        assert_eq!(got["seq"], 1000);
        assert_eq!(got["flags"], PSH | ACK);
        assert_eq!(got["options"], parts[0]["options"]);
        assert_eq!(got["ip_len"], if v6 { len - 40 } else { len });
        let payload: String = parts
            .iter()
            .map(|p| p["payload"].as_str().unwrap())
            .collect();
        assert_eq!(got["payload"].as_str().unwrap(), payload);
    }
}

fn segments_scapy_built_out_of_order_or_changed_stay_apart() {
    let tcp = |seq: usize, flags: &str, ts: [u32; 2]| {
        json!({"op": "build", "v6": false, "proto": "tcp", "seq": seq, "flags": flags,
            "ts": ts, "len": 500})
    };
    let cases = [
        (
            "out of order",
            vec![
                tcp(1000, "A", [1, 2]),
                tcp(2000, "A", [1, 2]),
                tcp(1500, "A", [1, 2]),
            ],
            3,
        ),
        (
            "different flags",
            vec![tcp(1000, "A", [1, 2]), tcp(1500, "FA", [1, 2])],
            2,
        ),
        (
            "URG",
            vec![tcp(1000, "A", [1, 2]), tcp(1500, "UA", [1, 2])],
            2,
        ),
        (
            "options changed",
            vec![tcp(1000, "A", [1, 2]), tcp(1500, "A", [3, 2])],
            2,
        ),
        (
            "in order",
            vec![tcp(1000, "A", [1, 2]), tcp(1500, "A", [1, 2])],
            1,
        ),
    ];
    for (what, reqs, groups) in cases {
        let pkts = built(reqs);
        assert_eq!(coalesced(&pkts, &[]).len(), groups, "{what}");
    }
}

fn main() {
    use xdpsec_testenv::{Need, trial};
    xdpsec_testenv::main(vec![
        trial(
            "tcp_segmentation_matches_scapy",
            &[Need::Venv],
            tcp_segmentation_matches_scapy,
        ),
        trial(
            "udp_segmentation_matches_scapy",
            &[Need::Venv],
            udp_segmentation_matches_scapy,
        ),
        trial(
            "coalesced_super_packets_match_scapy",
            &[Need::Venv],
            coalesced_super_packets_match_scapy,
        ),
        trial(
            "segments_scapy_built_out_of_order_or_changed_stay_apart",
            &[Need::Venv],
            segments_scapy_built_out_of_order_or_changed_stay_apart,
        ),
    ]);
}
