//! The handler on a loopback tunnel: punt, trace and capture, inject.
use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use xdpsec_datapath::SaTable;
use xdpsec_datapath::crypto::{Cipher, KeyMaterial};
use xdpsec_datapath::sa::{InboundSaConfig, OutboundSaConfig, OuterHeader, SaChange, Selectors};

const LOCAL: &str = "198.51.100.2";

/// A loopback tunnel 0 (outbound and inbound SPI 0x2001, owner worker
/// 0) from 198.51.100.1 to [`LOCAL`], without an Ethernet header in the
/// SA (the worker adds it, as the daemon's SAs), and a handler for
/// worker 0 with a sink inside.
fn setup() -> (SaTable, DatapathHandler, Arc<PuntHub>) {
    let (t, h, pool) = setup_owned(0, 1);
    (t, h, pool.punt())
}

/// [`setup`] with `workers` workers and the inbound SA owned by worker
/// `owner` (the handler is worker 0's, which encrypts).
fn setup_owned(owner: u16, workers: usize) -> (SaTable, DatapathHandler, crate::Workers) {
    let key = KeyMaterial::new(vec![0x33; 36]);
    let mut t = SaTable::new();
    t.apply(
        vec![
            SaChange::SetOutbound(OutboundSaConfig {
                spi: 0x2001,
                tunnel: 0,
                owner: 0,
                cipher: Cipher::Aes256Gcm,
                key: key.clone(),
                esn: false,
                outer: OuterHeader {
                    src: "198.51.100.1".parse().unwrap(),
                    dst: LOCAL.parse().unwrap(),
                    udp: Some((12346, 12346)),
                    ethernet: None,
                    ttl: 64,
                },
                last_seq: 0,
                seq_limit: u64::MAX,
                name: "out".into(),
            }),
            SaChange::AddInbound(InboundSaConfig {
                spi: 0x2001,
                peer: None,
                tunnel: 0,
                owner,
                cipher: Cipher::Aes256Gcm,
                key,
                esn: false,
                window: 64,
                selectors: Selectors::any(),
                name: "in".into(),
            }),
            SaChange::SetUdpPorts(vec![12346..=12346]),
        ],
        std::time::Duration::ZERO,
    )
    .unwrap();
    let pool = crate::Workers::new(workers).unwrap();
    let next_hops = NextHopMacs::new(1);
    next_hops.get(0).unwrap().set(Some([2, 0, 0, 0, 0, 0xb]));
    let published = Published {
        snap: t.shared(),
        routes: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
        next_hops: Arc::new(next_hops),
        local_mac: [2, 0, 0, 0, 0, 0xa],
        epoch: Instant::now(),
    };
    let h = pool.handler(WorkerState::new(0), &published, InsideIo::Sink);
    (t, h, pool)
}

/// An inner IPv4 UDP packet from 203.0.113.1 to `dst`, port `dport`.
fn udp(dst: &str, dport: u16) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 52, 0, 1, 0, 0, 64, 17, 0, 0, 203, 0, 113, 1];
    p.extend_from_slice(&dst.parse::<std::net::Ipv4Addr>().unwrap().octets());
    p.extend_from_slice(&49152u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 32, 0, 0]);
    p.resize(52, 0x20);
    p
}

/// Encrypt `inner` on tunnel 0 through the workers' encap path.
fn frame(h: &mut DatapathHandler, t: &SaTable, inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let macs = [[2, 0, 0, 0, 0, 0xb], h.ctx.published.local_mac];
    let n = encap_frame(&mut h.ws, &t.snapshot(), 0, inner, macs, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn bfd_goes_to_control_never_inside_and_a_full_ring_counts() {
    let (t, mut h, punt) = setup();
    let bfd = udp(LOCAL, 3784);
    let other = udp("203.0.113.2", 3784);
    let mut frames = vec![frame(&mut h, &t, &bfd), frame(&mut h, &t, &other)];
    h.decap_and_deliver(&mut frames, Input::Xdp(0));
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    // One punted to control, one delivered inside (the sink).
    assert_eq!(r(&h.shared.punted), 1);
    assert_eq!(r(&h.io.sink), 1);
    assert_eq!(r(&h.io.punt_dropped), 0);
    let mut got = Vec::new();
    punt.drain(&mut got);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].worker, got[0].tunnel), (0, 0));
    assert_eq!(got[0].packet, bfd);
    // Nobody drains: the ring fills, then each extra punt counts once.
    let extra = 5;
    let n = crate::punt::PUNT_BUFFERS + extra;
    let mut frames: Vec<_> = (0..n).map(|_| frame(&mut h, &t, &bfd)).collect();
    for chunk in frames.chunks_mut(BATCH_SIZE) {
        h.decap_and_deliver(chunk, Input::Xdp(0));
    }
    assert_eq!(r(&h.shared.punted), 1 + n as u64);
    assert_eq!(r(&h.io.punt_dropped), extra as u64);
    assert_eq!(r(&h.io.sink), 1, "never to the inside");
    assert_eq!(h.shared.drops.total(), 0, "not a QFP drop");
    got.clear();
    punt.drain(&mut got);
    assert_eq!(got.len(), crate::punt::PUNT_BUFFERS);
}

#[test]
fn trace_and_capture_see_each_frame_only_while_armed() {
    use crate::taps::{Capture, Fate, Step};
    let (t, mut h, _punt) = setup();
    let taps = Arc::clone(&h.ctx.taps);
    let inner = udp("203.0.113.2", 9);
    let valid = frame(&mut h, &t, &inner);
    let mut forged = frame(&mut h, &t, &inner);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    // Off: nothing recorded.
    h.decap_and_deliver(&mut [valid.clone()], Input::Xdp(0));
    assert!(taps.trace_records().is_empty());
    let dir = std::env::temp_dir().join(format!("xdpsec-taps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("d.pcapng");
    let cap = Capture::start(&taps, &pcap, Some(1)).unwrap();
    taps.arm_trace(3, false);
    let mut frames = vec![frame(&mut h, &t, &inner), forged.clone(), forged.clone()];
    let sent_forged = forged.clone();
    h.decap_and_deliver(&mut frames, Input::Xdp(0));
    let recs = taps.trace_records();
    let got: Vec<_> = recs
        .iter()
        .map(|r| (r.pkt, r.fate, r.drop, r.sa, r.replay, r.icv, r.spi))
        .collect();
    let ok = (Step::Pass, Step::Pass, Step::Pass, Some(0x2001));
    let bad = (Step::Pass, Step::Pass, Step::Fail, Some(0x2001));
    let mac = Some(DropReason::InMacException);
    assert_eq!(
        got,
        vec![
            (0, Fate::Delivered(0), None, ok.0, ok.1, ok.2, ok.3),
            (1, Fate::Dropped, mac, bad.0, bad.1, bad.2, bad.3),
            (2, Fate::Dropped, mac, bad.0, bad.1, bad.2, bad.3),
        ]
    );
    // The trace is full: later frames are not traced.
    h.decap_and_deliver(&mut [forged.clone()], Input::Xdp(0));
    assert_eq!(taps.trace_records().len(), 3);
    // Limit 1: only the first drop, as received (not decrypted).
    assert_eq!(cap.stop(&taps).unwrap(), (1, 0));
    let mut r = pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(&pcap).unwrap()).unwrap();
    let mut got = Vec::new();
    while let Some(b) = r.next_block() {
        if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
            got.push((p.data.to_vec(), format!("{:?}", p.options)));
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, sent_forged);
    assert!(
        got[0].1.contains("drop 62 IN_OCT_MAC_EXCEPTION"),
        "{}",
        got[0].1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the taps cost a worker: ns per frame through the handler with
/// nothing armed, with an exhausted trace armed, and with the capture
/// armed (frames dropped as replays: the cheapest path, where a fixed
/// per-batch cost shows most). `cargo test --release -p
/// xdpsec-worker taps_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn taps_cost() {
    use crate::taps::Capture;
    let (t, mut h, _punt) = setup();
    let taps = Arc::clone(&h.ctx.taps);
    let one = frame(&mut h, &t, &udp("203.0.113.2", 9));
    let mut frames = vec![one.clone(); BATCH_SIZE];
    let rounds = 20_000;
    let mut run = |h: &mut DatapathHandler| {
        let start = Instant::now();
        for _ in 0..rounds {
            for f in frames.iter_mut() {
                f.copy_from_slice(&one);
            }
            h.decap_and_deliver(&mut frames, Input::Xdp(0));
        }
        start.elapsed().as_nanos() as f64 / (rounds * BATCH_SIZE) as f64
    };
    let _warm_up = run(&mut h);
    let off = run(&mut h);
    taps.arm_trace(1, false);
    let traced = run(&mut h);
    taps.clear_trace();
    let off2 = run(&mut h);
    let pcap = std::env::temp_dir().join(format!("xdpsec-cost-{}.pcapng", std::process::id()));
    let cap = Capture::start(&taps, &pcap, None).unwrap();
    let captured = run(&mut h);
    let (written, lost) = cap.stop(&taps).unwrap();
    let _ = std::fs::remove_file(&pcap);
    println!(
        "ns/frame: off {off:.1} / {off2:.1}, trace armed (full) {traced:.1}, capture {captured:.1} ({written} written, {lost} lost)"
    );
}

#[test]
fn injected_packets_are_encrypted_on_the_tunnel_by_the_owner() {
    let (t, mut h, punt) = setup();
    let hello = udp("198.51.100.1", 3784);
    assert!(punt.inject(&t.snapshot(), 0, &hello));
    // What the worker's poll_handoff does with the inject queue, minus
    // the AF_XDP TX ring: take, encapsulate on the given tunnel.
    let q = Arc::clone(&h.handoff[0]);
    let mut slots = Vec::new();
    q.take_inject(&mut slots, BATCH_SIZE);
    assert_eq!(slots.len(), 1);
    let snap = t.snapshot();
    let mut buf = vec![0u8; 2048];
    let macs = [[2, 0, 0, 0, 0, 0xb], h.ctx.published.local_mac];
    let n = encap_frame(
        &mut h.ws,
        &snap,
        slots[0].tunnel(),
        slots[0].bytes(),
        macs,
        &mut buf,
    )
    .unwrap();
    q.recycle_inject(&mut slots);
    let out = buf[..n].to_vec();
    // Ethernet to the next hop, UDP-ESP with the tunnel's SPI, and the
    // plaintext nowhere in the frame.
    assert_eq!(&out[..12], &[2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa]);
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    assert_eq!(out[14 + 9], 17);
    assert_eq!(&out[42..46], &0x2001u32.to_be_bytes());
    assert!(!out.windows(hello.len()).any(|w| w == hello));
    // It decrypts back to the packet (loopback SA).
    assert_eq!(decrypt(&mut h, &snap, out), hello);
}

/// The inner packet of `frame`, a frame on the loopback tunnel 0.
fn decrypt(h: &mut DatapathHandler, snap: &SaSnapshot, mut frame: Vec<u8>) -> Vec<u8> {
    let mut v = [Verdict::Drop(DropReason::PktBufferUnavailable)];
    decap_batch(
        &mut h.ws,
        snap,
        std::slice::from_mut(&mut frame),
        &mut v,
        std::time::Duration::ZERO,
    );
    let Verdict::Deliver { tunnel: 0, inner } = v[0].clone() else {
        panic!("{:?}", v[0])
    };
    frame[inner].to_vec()
}

#[test]
fn a_full_handoff_queue_drops_each_frame_once_as_110_and_the_trace_sees_it() {
    use crate::handoff::HANDOFF_BUFFERS;
    use crate::taps::Fate;
    // Worker 1 owns the inbound SA: worker 0 hands its frames over.
    let (t, mut h, pool) = setup_owned(1, 2);
    let inner = udp("203.0.113.2", 9);
    let one = frame(&mut h, &t, &inner);
    let mut frames = vec![one.clone(); BATCH_SIZE];
    let mut handed = 0;
    while handed < HANDOFF_BUFFERS {
        let n = (HANDOFF_BUFFERS - handed).min(BATCH_SIZE);
        h.decap_and_deliver(&mut frames[..n], Input::Xdp(0));
        handed += n;
    }
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!(r(&h.io.handoff), HANDOFF_BUFFERS as u64);
    assert_eq!(h.shared.drops.total(), 0);
    // Full: each further frame is one 110, in its verdict too.
    let taps = pool.taps();
    taps.arm_trace(3, false);
    h.decap_and_deliver(&mut frames[..3], Input::Xdp(0));
    assert_eq!(r(&h.io.handoff), HANDOFF_BUFFERS as u64);
    assert_eq!(h.shared.drops.get(DropReason::PktBufferUnavailable), 3);
    assert_eq!(h.shared.drops.total(), 3);
    assert!(
        h.verdicts[..3]
            .iter()
            .all(|v| *v == Verdict::Drop(DropReason::PktBufferUnavailable))
    );
    let recs = taps.trace_records();
    assert_eq!(recs.len(), 3);
    for rec in &recs {
        assert_eq!(
            (rec.fate, rec.drop, rec.state),
            (
                Fate::Dropped,
                Some(DropReason::PktBufferUnavailable),
                "DROP"
            )
        );
    }
}

#[test]
fn frames_without_a_next_hop_mac_are_held_in_sequence_up_to_a_bound() {
    use crate::neighbors::HELD_PER_TUNNEL;
    let (t, mut h, _punt) = setup();
    let nh = Arc::clone(&h.ctx.published.next_hops);
    nh.get(0).unwrap().set(None);
    let snap = t.snapshot();
    let hello = udp("198.51.100.1", 7);
    let extra = 3;
    let sent: Vec<Sent> = (0..HELD_PER_TUNNEL as usize + extra)
        .map(|_| hold_for_next_hop(&mut h.ws, &h.shared, &h.ctx, &snap, 0, &hello))
        .collect();
    let held = HELD_PER_TUNNEL as usize;
    assert!(sent[..held].iter().all(|s| *s == Sent::Held), "{sent:?}");
    assert!(sent[held..].iter().all(|s| *s == Sent::Dropped), "{sent:?}");
    // Each frame past the tunnel's share: one OUT_SETTING_WRONG_L2_HDR.
    assert_eq!(
        h.shared.drops.get(DropReason::OutSettingWrongL2Hdr),
        extra as u64
    );
    assert_eq!(h.shared.drops.total(), extra as u64);
    let frames: Vec<_> = nh.held().try_iter().collect();
    assert_eq!(frames.len(), held);
    for (i, f) in frames.into_iter().enumerate() {
        assert_eq!(f.tunnel, 0);
        let out = f.frame;
        // No destination MAC yet; from the underlay's MAC; UDP-ESP with the
        // tunnel's SPI and sequence numbers in order.
        assert_eq!(&out[..12], &[0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0xa]);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(&out[42..46], &0x2001u32.to_be_bytes());
        assert_eq!(&out[46..50], &(i as u32 + 1).to_be_bytes());
        assert_eq!(decrypt(&mut h, &snap, out), hello);
        nh.release(0);
    }
    // Released: the tunnel may hold frames again.
    assert_eq!(
        hold_for_next_hop(&mut h.ws, &h.shared, &h.ctx, &snap, 0, &hello),
        Sent::Held
    );
    assert_eq!(h.shared.drops.total(), extra as u64);
}
