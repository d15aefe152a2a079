//! Segmentation and coalescing on built frames (scapy checks the same
//! frames independently in `tests/offload_ref.rs`).
use super::{gro::*, *};

/// A TCP packet (IPv4 or IPv6) from 198.51.100.1:40000 to
/// 198.51.100.2:5201 (2001:db8::1 to 2001:db8::2), with valid checksums.
pub(crate) fn tcp(v6: bool, seq: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let doff = 20 + options.len();
    let mut t = vec![0x9c, 0x40, 0x14, 0x51];
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0x1122_3344u32.to_be_bytes());
    t.push(((doff / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 0]);
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    ip(v6, TCP, &t, 16)
}

/// A UDP packet between the same addresses.
pub(crate) fn udp(v6: bool, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0x9c, 0x40, 0x14, 0x51];
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ip(v6, UDP, &u, 6)
}

fn ip(v6: bool, proto: u8, l4: &[u8], csum_at: usize) -> Vec<u8> {
    let mut p = if v6 {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        h.extend_from_slice(&[proto, 64]);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        h
    } else {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        h.extend_from_slice(&[198, 51, 100, 1, 198, 51, 100, 2]);
        h
    };
    let l = l3(&p).unwrap().l4;
    p.extend_from_slice(l4);
    if !v6 {
        ipv4_header_checksum(&mut p, 20);
    }
    l4_checksum(&mut p, L3 { v6, l4: l, proto }, csum_at);
    p
}

/// The checksum over pseudo-header and L4 adds up (all ones).
pub(crate) fn l4_ok(p: &[u8]) -> bool {
    let l = l3(p).unwrap();
    fold(sum_words(
        &p[l.l4..],
        pseudo_sum(p, l.v6, l.proto, p.len() - l.l4),
    )) == 0xffff
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// A super-packet as the kernel hands it over: the TCP checksum field
/// holds the pseudo-header sum only.
fn gso_tcp(v6: bool, flags: u8, options: &[u8], data: &[u8], mss: u16) -> (VnetHdr, Vec<u8>) {
    let mut p = tcp(v6, 1000, flags, options, data);
    let l = l3(&p).unwrap();
    let partial = fold(pseudo_sum(&p, v6, TCP, p.len() - l.l4));
    p[l.l4 + 16..l.l4 + 18].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: (l.l4 + 20 + options.len()) as u16,
        gso_size: mss,
        csum_start: l.l4 as u16,
        csum_offset: 16,
    };
    (hdr, p)
}

fn segments(hdr: &VnetHdr, p: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut scratch = vec![0u8; 70000];
    let mut out = Vec::new();
    let s = segment(hdr, p, max, &mut scratch, |s| out.push(s.to_vec())).unwrap();
    assert_eq!(s.segments as usize, out.len());
    out
}

fn seq(p: &[u8]) -> u32 {
    let l = l3(p).unwrap().l4;
    u32::from_be_bytes(p[l + 4..l + 8].try_into().unwrap())
}

fn tcp_flags(p: &[u8]) -> u8 {
    p[l3(p).unwrap().l4 + 13]
}

#[test]
fn vnet_header_round_trips() {
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV6 | GSO_ECN,
        hdr_len: 72,
        gso_size: 1316,
        csum_start: 40,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::parse(&h.emit()), Some(h));
    assert_eq!(h.gso(), GSO_TCPV6);
    assert_eq!(VnetHdr::parse(&[0; 9]), None);
}

#[test]
fn tcp_super_packets_are_cut_into_mss_segments_v4_and_v6() {
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
    for v6 in [false, true] {
        let data = payload(5000);
        let hl = if v6 { 72 } else { 52 };
        let mss = 1376 - hl;
        let (hdr, p) = gso_tcp(v6, 0x18 | TCP_FIN, &opts, &data, mss as u16);
        let segs = segments(&hdr, &p, 1376);
        assert_eq!(segs.len(), 4, "5000 bytes in {mss}-byte segments");
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let last = i == segs.len() - 1;
            assert!(s.len() <= 1376);
            assert_eq!(s.len() - hl, if last { 5000 - 3 * mss } else { mss });
            assert_eq!(seq(s), 1000 + (i * mss) as u32, "sequence number of {i}");
            // PSH and FIN only on the last; ACK on all.
            assert_eq!(tcp_flags(s), if last { 0x19 } else { 0x10 }, "flags of {i}");
            assert!(l4_ok(s), "TCP checksum of segment {i}");
            if v6 {
                assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
            } else {
                assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
                assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16, "IP ID");
                assert_eq!(fold(sum_words(&s[..20], 0)), 0xffff, "IPv4 header checksum");
            }
            assert_eq!(&s[l3(s).unwrap().l4 + 20..hl], &opts, "options copied");
            joined.extend_from_slice(&s[hl..]);
        }
        assert_eq!(joined, data);
    }
}

#[test]
fn segments_fit_the_largest_inner_packet_even_with_a_larger_gso_size() {
    let (hdr, p) = gso_tcp(false, 0x10, &[], &payload(4000), 8000);
    for s in segments(&hdr, &p, 1376) {
        assert!(s.len() <= 1376 && l4_ok(&s));
    }
}

#[test]
fn cwr_stays_on_the_first_segment_only() {
    let (mut hdr, p) = gso_tcp(false, 0x90, &[], &payload(3000), 1000);
    hdr.gso_type |= GSO_ECN;
    let segs = segments(&hdr, &p, 1376);
    let flags: Vec<u8> = segs.iter().map(|s| tcp_flags(s)).collect();
    assert_eq!(flags, [0x90, 0x10, 0x10]);
}

#[test]
fn udp_gso_makes_one_datagram_per_segment() {
    for v6 in [false, true] {
        let data = payload(3000);
        let p = udp(v6, &data);
        let l = l3(&p).unwrap().l4;
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (l + 8) as u16,
            gso_size: 1200,
            csum_start: l as u16,
            csum_offset: 6,
        };
        let segs = segments(&hdr, &p, 1376);
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for s in &segs {
            assert_eq!(
                usize::from(u16::from_be_bytes([s[l + 4], s[l + 5]])),
                s.len() - l
            );
            assert!(l4_ok(s));
            joined.extend_from_slice(&s[l + 8..]);
        }
        assert_eq!(joined, data);
    }
}

#[test]
fn bad_super_packets_are_refused_not_panicked_on() {
    let (hdr, p) = gso_tcp(false, 0x10, &[], &payload(3000), 1000);
    let mut scratch = vec![0u8; 2000];
    let mut n = 0;
    let mut run = |h: &VnetHdr, p: &[u8]| segment(h, p, 1376, &mut scratch, |_| n += 1);
    assert_eq!(
        run(&VnetHdr { gso_size: 0, ..hdr }, &p),
        Err(OffloadError::BadSegmentSize)
    );
    assert_eq!(
        run(
            &VnetHdr {
                gso_type: GSO_UDP,
                ..hdr
            },
            &p
        ),
        Err(OffloadError::Unsupported)
    );
    assert_eq!(
        run(
            &VnetHdr {
                gso_type: GSO_TCPV6,
                ..hdr
            },
            &p
        ),
        Err(OffloadError::Unsupported)
    );
    for cut in [0, 10, 21, 39] {
        assert!(run(&hdr, &p[..cut]).is_err(), "truncated to {cut}");
    }
    let mut short = p.clone();
    short[32] = 0x10; // doff 4 (16 bytes)
    assert_eq!(run(&hdr, &short), Err(OffloadError::Malformed));
    let mut bad = p.clone();
    let h = VnetHdr {
        gso_type: GSO_NONE,
        csum_offset: 60000,
        ..hdr
    };
    assert_eq!(
        complete_checksum(&h, &mut bad),
        Err(OffloadError::BadChecksumOffsets)
    );
}

#[test]
fn partial_checksums_are_completed() {
    for v6 in [false, true] {
        let (mut hdr, mut p) = gso_tcp(v6, 0x18, &[], &payload(777), 1300);
        hdr.gso_type = GSO_NONE;
        assert!(!l4_ok(&p));
        complete_checksum(&hdr, &mut p).unwrap();
        assert!(l4_ok(&p));
        let want = tcp(v6, 1000, 0x18, &[], &payload(777));
        assert_eq!(p, want);
    }
}

#[test]
fn gateway_completes_partial_checksums_only() {
    for v6 in [false, true] {
        // TCP in the partial form a host with tx checksum offload leaves.
        let (_, mut p) = gso_tcp(v6, 0x18, &[], &payload(777), 1300);
        assert!(!l4_ok(&p));
        assert!(complete_partial(&mut p));
        assert!(l4_ok(&p));
        assert_eq!(p, tcp(v6, 1000, 0x18, &[], &payload(777)));
        // Already complete: untouched.
        assert!(!complete_partial(&mut p));
        assert_eq!(p, tcp(v6, 1000, 0x18, &[], &payload(777)));
        // Wrong in another way: untouched (the receiver drops it).
        let mut bad = p.clone();
        let l = l3(&bad).unwrap().l4;
        bad[l + 16] ^= 0x55;
        let before = bad.clone();
        assert!(!complete_partial(&mut bad));
        assert_eq!(bad, before);
        // UDP the same way.
        let mut u = udp(v6, &payload(333));
        let want = u.clone();
        let partial = fold(pseudo_sum(&u, v6, UDP, u.len() - l));
        u[l + 6..l + 8].copy_from_slice(&partial.to_be_bytes());
        assert!(complete_partial(&mut u));
        assert_eq!(u, want);
    }
    // Truncated or not IP: nothing, no panic.
    for n in 0..60 {
        let mut p = tcp(false, 1, 0x10, &[], &payload(20));
        p.truncate(n);
        let _ = complete_partial(&mut p);
    }
}

/// What the coalescer writes, in order: header, packet, tags.
type Written = Vec<(VnetHdr, Vec<u8>, Vec<u16>)>;

/// Push `pkts` (tagged with their indices) into `g`, the batches ending
/// after the indices in `ends`, and collect what is written.
fn push_batches(g: &mut Gro, pkts: &[Vec<u8>], ends: &[usize], out: &mut Written) {
    let mut w = |o: GroOut<'_>| record(out, o);
    for (i, p) in pkts.iter().enumerate() {
        g.push(p, i as u32, &mut w);
        if ends.contains(&i) {
            g.end_batch(&mut w);
        }
    }
}

fn record(out: &mut Written, o: GroOut<'_>) {
    out.push((
        o.hdr,
        o.pkt.to_vec(),
        o.tags.iter().map(|&t| t as u16).collect(),
    ))
}

/// Everything written for `pkts` pushed as one batch and flushed.
fn written(pkts: &[Vec<u8>]) -> Written {
    let mut g = Gro::default();
    let mut out = Vec::new();
    push_batches(&mut g, pkts, &[pkts.len()], &mut out);
    g.flush(&mut |o| record(&mut out, o));
    assert!(g.is_empty());
    out
}

/// The packets (indices) of each packet written for `pkts`, checking
/// that each is written once and a packet written alone is unchanged.
fn plan(pkts: &[Vec<u8>]) -> Vec<Vec<u16>> {
    let out = written(pkts);
    let groups: Vec<Vec<u16>> = out.iter().map(|(_, _, t)| t.clone()).collect();
    let mut all: Vec<u16> = groups.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(
        all,
        (0..pkts.len() as u16).collect::<Vec<_>>(),
        "each packet once"
    );
    for (h, p, t) in &out {
        if let [one] = t[..] {
            assert_eq!((h, p), (&VnetHdr::DATA_VALID, &pkts[usize::from(one)]));
        }
    }
    groups
}

/// The one super-packet the packets `members` of `pkts` make.
fn coalesce(pkts: &[Vec<u8>], members: &[u16]) -> (VnetHdr, Vec<u8>) {
    let sel: Vec<Vec<u8>> = members
        .iter()
        .map(|&i| pkts[usize::from(i)].clone())
        .collect();
    let mut out = written(&sel);
    assert_eq!(out.len(), 1);
    let (h, p, _) = out.remove(0);
    (h, p)
}

#[test]
fn in_order_segments_coalesce_into_the_super_packet_they_were_cut_from() {
    for v6 in [false, true] {
        let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let data = payload(6000);
        let (hdr, p) = gso_tcp(v6, 0x18, &opts, &data, 1200);
        let segs = segments(&hdr, &p, 1376);
        assert_eq!(
            plan(&segs),
            vec![(0..segs.len() as u16).collect::<Vec<_>>()]
        );
        let (h, mut sup) = coalesce(&segs, &(0..segs.len() as u16).collect::<Vec<_>>());
        assert_eq!(h.gso_size, 1200);
        assert_eq!(h.gso(), if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert_eq!(usize::from(h.hdr_len), l3(&p).unwrap().l4 + 32);
        complete_checksum(&h, &mut sup).unwrap();
        let mut want = tcp(v6, 1000, 0x18, &opts, &data);
        if !v6 {
            // The IP ID of the first segment, as GRO keeps it.
            want[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        }
        assert_eq!(sup, want);
    }
}

#[test]
fn segments_that_must_not_coalesce_stay_apart() {
    let seg =
        |seq: u32, flags: u8, opts: &[u8], n: usize| tcp(false, seq, flags, opts, &payload(n));
    let ts = |v: u8| [1, 1, 8, 10, 0, 0, 0, v, 0, 0, 0, 2];
    // Out of order.
    let p = vec![
        seg(1000, 0x10, &[], 100),
        seg(1200, 0x10, &[], 100),
        seg(1100, 0x10, &[], 100),
    ];
    assert_eq!(plan(&p), vec![vec![0], vec![1], vec![2]]);
    // A retransmission (same sequence number).
    let p = vec![seg(1000, 0x10, &[], 100), seg(1000, 0x10, &[], 100)];
    assert_eq!(plan(&p), vec![vec![0], vec![1]]);
    // Different flags: FIN, SYN, URG do not coalesce; PSH ends a group.
    let p = vec![
        seg(1000, 0x10, &[], 100),
        seg(1100, 0x11, &[], 100),
        seg(1200, 0x10, &[], 100),
    ];
    assert_eq!(plan(&p), vec![vec![0], vec![1], vec![2]]);
    let p = vec![seg(1000, 0x18, &[], 100), seg(1100, 0x10, &[], 100)];
    assert_eq!(plan(&p), vec![vec![0], vec![1]]);
    let p = vec![
        seg(1000, 0x10, &[], 100),
        seg(1100, 0x18, &[], 100),
        seg(1200, 0x10, &[], 100),
    ];
    assert_eq!(plan(&p), vec![vec![0, 1], vec![2]]);
    // Options changed (a new timestamp).
    let p = vec![seg(1000, 0x10, &ts(1), 100), seg(1100, 0x10, &ts(2), 100)];
    assert_eq!(plan(&p), vec![vec![0], vec![1]]);
    // A larger segment after a smaller one (and nothing after a short one).
    let p = vec![
        seg(1000, 0x10, &[], 100),
        seg(1100, 0x10, &[], 50),
        seg(1150, 0x10, &[], 50),
    ];
    assert_eq!(plan(&p), vec![vec![0, 1], vec![2]]);
    let p = vec![seg(1000, 0x10, &[], 50), seg(1050, 0x10, &[], 100)];
    assert_eq!(plan(&p), vec![vec![0], vec![1]]);
    // A different ACK number or window.
    let mut other = seg(1100, 0x10, &[], 100);
    other[28] ^= 1;
    let p = vec![seg(1000, 0x10, &[], 100), other];
    assert_eq!(plan(&p), vec![vec![0], vec![1]]);
    // IPv4 TTL differs, and an IPv4 fragment.
    let mut ttl = seg(1100, 0x10, &[], 100);
    ttl[8] = 63;
    let p = vec![seg(1000, 0x10, &[], 100), ttl];
    assert_eq!(plan(&p), vec![vec![0], vec![1]]);
    let mut frag = seg(1100, 0x10, &[], 100);
    frag[6] = 0x20;
    let p = vec![seg(1000, 0x10, &[], 100), frag];
    assert_eq!(plan(&p), vec![vec![0], vec![1]]);
    // No payload (a pure ACK) and UDP are written alone.
    let p = vec![seg(1000, 0x10, &[], 0), udp(false, &[1, 2, 3])];
    assert_eq!(plan(&p), vec![vec![0], vec![1]]);
}

#[test]
fn flows_coalesce_separately_and_keep_their_order() {
    let mut b = tcp(false, 5000, 0x10, &[], &payload(100));
    b[21] ^= 1; // another source port
    let a = |s: u32| tcp(false, s, 0x10, &[], &payload(100));
    let mut b2 = tcp(false, 5100, 0x10, &[], &payload(100));
    b2[21] ^= 1;
    let fin = tcp(false, 1200, 0x11, &[], &[]);
    let p = vec![a(1000), b, a(1100), b2, fin, a(1200)];
    // a's group is written before its FIN; b's at the end.
    assert_eq!(plan(&p), vec![vec![0, 2], vec![4], vec![1, 3], vec![5]]);
}

#[test]
fn super_packets_stay_within_64k() {
    let p: Vec<Vec<u8>> = (0..60)
        .map(|i| tcp(false, 1000 + i * 1300, 0x10, &[], &payload(1300)))
        .collect();
    let groups = plan(&p);
    assert!(groups.len() > 1);
    for g in &groups {
        let (_, sup) = coalesce(&p, g);
        assert!(sup.len() <= 65535);
    }
    assert_eq!(groups[0].len(), (65535 - 40) / 1300);
}

#[test]
fn groups_stay_open_across_batches_until_flushed() {
    for v6 in [false, true] {
        let data = payload(9000);
        let (hdr, p) = gso_tcp(v6, 0x10, &[], &data, 1000);
        let segs = segments(&hdr, &p, 1376);
        assert_eq!(segs.len(), 9);
        let mut g = Gro::default();
        let mut out = Vec::new();
        // Three batches: nothing is written at their ends.
        push_batches(&mut g, &segs, &[2, 5, 8], &mut out);
        assert!(out.is_empty() && !g.is_empty());
        // The receive ring is empty: one super-packet of all nine.
        g.flush(&mut |o| record(&mut out, o));
        assert_eq!(out.len(), 1);
        let (h, mut sup, tags) = out.remove(0);
        assert_eq!(tags, (0..9).collect::<Vec<u16>>());
        assert_eq!((h.gso_size, h.flags), (1000, F_NEEDS_CSUM));
        complete_checksum(&h, &mut sup).unwrap();
        let mut want = tcp(v6, 1000, 0x10, &[], &data);
        if !v6 {
            want[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        }
        assert_eq!(sup, want);
    }
}

#[test]
fn a_group_is_written_when_it_closes_or_grows_old() {
    let seg = |seq: u32, flags: u8| tcp(false, seq, flags, &[], &payload(100));
    // PSH closes the group: written at once, before any flush.
    let mut g = Gro::default();
    let mut out = Vec::new();
    let p = vec![seg(1000, 0x10), seg(1100, 0x10), seg(1200, 0x18)];
    push_batches(&mut g, &p, &[], &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].2, vec![0, 1, 2]);
    assert!(g.is_empty());
    // An open group is written after MAX_AGE batch ends, not before.
    let mut out = Vec::new();
    push_batches(&mut g, &p[..1], &[], &mut out);
    for _ in 1..MAX_AGE {
        g.end_batch(&mut |_| panic!("written too early"));
    }
    g.end_batch(&mut |o| record(&mut out, o));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, &out[0].1), (VnetHdr::DATA_VALID, &p[0]));
    // One flow more than MAX_GROUPS: the oldest group is written.
    let flows: Vec<Vec<u8>> = (0..=MAX_GROUPS)
        .map(|i| {
            let mut s = seg(1000, 0x10);
            s[21] = i as u8; // the source port
            s
        })
        .collect();
    let mut out = Vec::new();
    push_batches(&mut g, &flows, &[], &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].2, vec![0]);
}

#[test]
fn garbage_never_panics() {
    let mut g = Gro::default();
    let mut scratch = vec![0u8; 4000];
    let mut x = 0x1234_5678u32;
    for n in 0..2000 {
        let len = n % 120;
        let mut p: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        if let Some(b) = p.first_mut() {
            *b = if n % 2 == 0 { 0x45 } else { 0x60 };
        }
        let mut n_out = 0;
        g.push(&p, 0, &mut |_| n_out += 1);
        g.push(&p, 1, &mut |_| n_out += 1);
        g.end_batch(&mut |_| n_out += 1);
        if n % 3 == 0 {
            g.flush(&mut |_| n_out += 1);
        }
        for t in [GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, GSO_NONE] {
            let h = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: t,
                hdr_len: 0,
                gso_size: (x % 1500) as u16,
                csum_start: (x % 64) as u16,
                csum_offset: (x % 20) as u16,
            };
            let _ = prepare(&h, &mut p, 1376, &mut scratch, |_| {});
        }
    }
}

#[test]
fn gateway_cuts_oversized_tcp_but_not_other_packets() {
    let big = tcp(false, 77, 0x18, &[], &payload(1460));
    let h = tso_header(&big, 1376).unwrap();
    let segs = segments(&h, &big, 1376);
    assert_eq!(segs.len(), 2);
    assert!(segs.iter().all(|s| s.len() <= 1376 && l4_ok(s)));
    assert_eq!(seq(&segs[1]), 77 + 1336);
    assert_eq!(tcp_flags(&segs[0]), 0x10);
    assert_eq!(tcp_flags(&segs[1]), 0x18);
    assert_eq!(tso_header(&udp(false, &payload(1460)), 1376), None);
    let mut frag = big.clone();
    frag[6] |= 0x20;
    assert_eq!(tso_header(&frag, 1376), None);
    assert_eq!(tso_header(&big[..30], 1376), None);
}
