//! Behaviour of the decap/encap pipeline: drop classification, replay,
//! handoff, SD-WAN peer qualification, accounting over arbitrary input.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proptest::prelude::*;

use crate::crypto::{
    AesKeySize, CIPHERTEXT_OFFSET, Cipher, EspCipher, ICV_LEN, Integrity, sealed_len,
};
use crate::drop::DropReason;
use crate::events::DropEvent;
use crate::events::InnerFlow;
use crate::pipeline::{MAX_BATCH, PassReason, Verdict, decap_batch, encap};
use crate::sa::{
    AddrSet, EthernetHeader, LocalEndpoint, OutboundSaConfig, OuterHeader, PeerKey, Prefix,
    SaChange, SaId, SaTable, Selectors,
};
use crate::testutil::*;
use crate::worker::{WorkerState, sa_counters};

const KEY: [u8; 36] = [0x11; 36];
const TUNNEL: u32 = 10001;

/// A copy of `frame` with the given bytes overwritten.
fn patch(frame: &[u8], bytes: &[(usize, u8)]) -> Vec<u8> {
    let mut f = frame.to_vec();
    for &(i, v) in bytes {
        f[i] = v;
    }
    f
}

/// Recompute the header checksum of the outer IPv4 header (at offset 14).
fn fix_v4(mut frame: Vec<u8>) -> Vec<u8> {
    let hl = usize::from(frame[14] & 0x0f) * 4;
    crate::wire::ipv4::Packet::new_unchecked(&mut frame[14..14 + hl]).fill_checksum();
    frame
}

fn inner_v4(len: usize) -> Vec<u8> {
    let mut p = hex("4500000000010000 3f11 0000 c0a80101 c0a80201");
    p.resize(len.max(20), 0x5a);
    let l = p.len() as u16;
    p[2..4].copy_from_slice(&l.to_be_bytes());
    p
}

fn inner_v6(len: usize) -> Vec<u8> {
    let mut p =
        hex("6000000000003b3f fd000001000000000000000000000001 fd000002000000000000000000000001");
    p.resize(len.max(40), 0x6b);
    let l = (p.len() - 40) as u16;
    p[4..6].copy_from_slice(&l.to_be_bytes());
    p
}

fn outer(v6: bool, udp: bool) -> OuterHeader {
    let (src, dst) = if v6 {
        (ip("2001:db8::1"), ip("2001:db8::2"))
    } else {
        (ip("10.40.40.1"), ip("10.30.30.1"))
    };
    OuterHeader {
        src,
        dst,
        udp: udp.then_some((12346, 12346)),
        ethernet: Some(EthernetHeader {
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 2],
        }),
        ttl: 64,
    }
}

/// A table whose tunnel sends with SPI 0x215EBFF1 and receives on it too
/// (loopback), so encap output feeds decap.
fn loopback(cipher: Cipher, esn: bool, v6: bool, udp: bool, window: u32) -> (SaTable, SaId) {
    let key = &KEY[..cipher.key_material_len()];
    let mut t = SaTable::new();
    let ids = t
        .apply(
            vec![
                SaChange::SetOutbound(outbound_cfg(
                    0x215EBFF1,
                    TUNNEL,
                    cipher,
                    key,
                    esn,
                    outer(v6, udp),
                    0,
                )),
                SaChange::AddInbound(inbound_cfg(0x215EBFF1, cipher, key, esn, window, TUNNEL)),
                SaChange::SetUdpPorts(vec![12346..=12445, 4500..=4500]),
            ],
            Duration::ZERO,
        )
        .unwrap();
    (t, ids[1])
}

fn encap_frame(ws: &mut WorkerState, t: &SaTable, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let e = encap(ws, &t.snapshot(), TUNNEL, inner, &mut out).unwrap();
    out.truncate(e.len);
    out
}

#[test]
fn round_trip_every_combination() {
    for cipher in [
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
        Cipher::ChaCha20Poly1305,
    ] {
        for esn in [false, true] {
            for v6 in [false, true] {
                for udp in [false, true] {
                    let (t, id) = loopback(cipher, esn, v6, udp, 64);
                    let mut ws = WorkerState::new(0);
                    for (i, inner) in [inner_v4(20), inner_v6(61), inner_v4(1400), inner_v6(40)]
                        .iter()
                        .enumerate()
                    {
                        let frame = encap_frame(&mut ws, &t, inner);
                        let (v, out) = decap_one(&mut ws, &t.snapshot(), &frame, Duration::ZERO);
                        let Verdict::Deliver { tunnel, inner: r } = v else {
                            panic!("{cipher:?} esn={esn} v6={v6} udp={udp} #{i}: {v:?}")
                        };
                        assert_eq!(tunnel, TUNNEL);
                        assert_eq!(&out[r], &inner[..]);
                    }
                    let c = sa_counters(&[ws.shared()], id);
                    assert_eq!(c.decaps, 4);
                    assert_eq!(ws.shared().drops.total(), 0);
                }
            }
        }
    }
}

#[test]
fn unknown_and_recently_deleted_spi() {
    let (mut t, id) = loopback(Cipher::Aes256Gcm, false, false, true, 64);
    t.apply(
        vec![SaChange::SetEndpoints(vec![LocalEndpoint {
            addr: ip("10.30.30.1"),
            udp_port: Some(12346),
            tunnel: TUNNEL,
        }])],
        Duration::ZERO,
    )
    .unwrap();
    let mut ws = WorkerState::new(0);
    let frame = encap_frame(&mut ws, &t, &inner_v4(100));
    // Delete the inbound SA at t=10 s: for 120 s its SPI is "invalid SA".
    t.apply(vec![SaChange::RemoveInbound(id)], Duration::from_secs(10))
        .unwrap();
    let (v, _) = decap_one(&mut ws, &t.snapshot(), &frame, Duration::from_secs(20));
    assert_eq!(v, Verdict::Drop(DropReason::InV4HitInvalidSa));
    let (v, _) = decap_one(&mut ws, &t.snapshot(), &frame, Duration::from_secs(200));
    assert_eq!(v, Verdict::Drop(DropReason::InV4SaNotFoundSpi));
    let ev = ws.shared().events.drain(10);
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[0],
        DropEvent {
            reason: DropReason::InV4HitInvalidSa,
            spi: 0x215EBFF1,
            src: ip("10.40.40.1"),
            dst: ip("10.30.30.1"),
            tunnel: Some(TUNNEL),
            sa: None,
            inner: None,
        }
    );
    // Never-known SPI: tunnel from the local endpoint it arrived on.
    assert_eq!(ev[1].tunnel, Some(TUNNEL));
    let line = crate::ioslog::format_event(&ev[1], Some("Tunnel10001")).unwrap();
    assert!(
        line.contains("spi=0x215EBFF1(559857649), srcaddr=10.40.40.1, input interface=Tunnel10001"),
        "{line}"
    );
    // IPv6 forms.
    let (t6, id6) = loopback(Cipher::Aes128Gcm, false, true, false, 64);
    let mut t6 = t6;
    let frame6 = encap_frame(&mut ws, &t6, &inner_v6(60));
    t6.apply(vec![SaChange::RemoveInbound(id6)], Duration::ZERO)
        .unwrap();
    assert_eq!(
        decap_one(&mut ws, &t6.snapshot(), &frame6, Duration::ZERO).0,
        Verdict::Drop(DropReason::InV6HitInvalidSa)
    );
    assert_eq!(
        decap_one(&mut ws, &t6.snapshot(), &frame6, Duration::from_secs(121)).0,
        Verdict::Drop(DropReason::InV6SaNotFoundSpi)
    );
}

#[test]
fn replay_in_one_batch_and_across_batches() {
    let (t, id) = loopback(Cipher::Aes256Gcm, false, false, false, 64);
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let f1 = encap_frame(&mut ws, &t, &inner_v4(64));
    let f2 = encap_frame(&mut ws, &t, &inner_v4(64));
    // One batch carrying s, s+1, s+1: both copies of s+1 pass the pre-check,
    // only the re-check after decryption catches the second.
    let mut frames = vec![f1.clone(), f2.clone(), f2.clone()];
    let mut out = vec![Verdict::Handoff(9); 3];
    decap_batch(&mut ws, &snap, &mut frames, &mut out, Duration::ZERO);
    assert!(matches!(out[0], Verdict::Deliver { .. }));
    assert!(matches!(out[1], Verdict::Deliver { .. }));
    assert_eq!(out[2], Verdict::Drop(DropReason::InAntiReplayFail));
    // Next batch: pre-check rejects (duplicate).
    assert_eq!(
        decap_one(&mut ws, &snap, &f1, Duration::ZERO).0,
        Verdict::Drop(DropReason::InAntiReplayFail)
    );
    // Push the window 100 ahead: s is now too old.
    let mut last = Vec::new();
    for _ in 0..100 {
        last = encap_frame(&mut ws, &t, &inner_v4(30));
    }
    assert!(matches!(
        decap_one(&mut ws, &snap, &last, Duration::ZERO).0,
        Verdict::Deliver { .. }
    ));
    assert_eq!(
        decap_one(&mut ws, &snap, &f2, Duration::ZERO).0,
        Verdict::Drop(DropReason::InAntiReplayFail)
    );
    let c = sa_counters(&[ws.shared()], id);
    assert_eq!((c.replay_duplicate, c.replay_too_old, c.decaps), (2, 1, 3));
    assert_eq!(ws.shared().drops.get(DropReason::InAntiReplayFail), 3);
    let ev = ws.shared().events.drain(10);
    assert!(
        ev.iter()
            .all(|e| e.reason == DropReason::InAntiReplayFail && e.sa == Some(id))
    );
}

/// A table of more than `PREFETCH_MIN_SAS` inbound SAs gets pass 1 in
/// prefetching stages: the same verdicts and counters as frame by frame,
/// including two copies of one sequence number in one batch, an unknown
/// SPI and a frame that is not IP between them.
#[test]
fn many_sas_take_the_staged_pass_1() {
    let _forced = crate::pipeline::tests_force_staged::set(None);
    let (mut t, id) = loopback(Cipher::Aes256Gcm, false, false, false, 64);
    let small = t.snapshot();
    assert!(!crate::pipeline::prefetches(&small));
    let more: Vec<SaChange> = (0..5000u32)
        .map(|i| {
            let cfg = inbound_cfg(0x1000 + i, Cipher::Aes128Gcm, &KEY[..20], false, 64, i);
            SaChange::AddInbound(cfg)
        })
        .collect();
    t.apply(more, Duration::ZERO).unwrap();
    let snap = t.snapshot();
    assert!(crate::pipeline::prefetches(&snap));
    let mut ws = WorkerState::new(0);
    let f1 = encap_frame(&mut ws, &t, &inner_v4(64));
    let f2 = encap_frame(&mut ws, &t, &inner_v4(64));
    // ESP starts after Ethernet (14) and IPv4 (20): an SPI nobody has.
    let unknown = patch(&f1, &[(34, 0xde), (35, 0xad), (36, 0xbe), (37, 0xef)]);
    let not_ip = patch(&f1, &[(12, 0x08), (13, 0x06)]);
    let mut frames = vec![f1, unknown, f2.clone(), not_ip, f2];
    let mut out = vec![Verdict::Handoff(9); frames.len()];
    decap_batch(&mut ws, &snap, &mut frames, &mut out, Duration::ZERO);
    assert!(
        matches!(out[0], Verdict::Deliver { tunnel: TUNNEL, .. }),
        "{out:?}"
    );
    assert_eq!(out[1], Verdict::Drop(DropReason::InV4SaNotFoundSpi));
    assert!(
        matches!(out[2], Verdict::Deliver { tunnel: TUNNEL, .. }),
        "{out:?}"
    );
    assert_eq!(out[3], Verdict::Pass(PassReason::NotIp));
    assert_eq!(out[4], Verdict::Drop(DropReason::InAntiReplayFail));
    let c = sa_counters(&[ws.shared()], id);
    assert_eq!((c.decaps, c.replay_duplicate), (2, 1));
    assert_eq!(ws.shared().drops.total(), 2);
    assert_eq!(ws.shared().classes.snapshot().iter().sum::<u64>(), 5);
}

#[test]
fn forged_packet_does_not_move_window() {
    let (t, id) = loopback(Cipher::Aes128Gcm, false, false, false, 64);
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let good = encap_frame(&mut ws, &t, &inner_v4(80));
    let mut forged = good.clone();
    let n = forged.len();
    forged[n - 20] ^= 0x01; // inside the ciphertext
    assert_eq!(
        decap_one(&mut ws, &snap, &forged, Duration::ZERO).0,
        Verdict::Drop(DropReason::InMacException)
    );
    assert!(matches!(
        decap_one(&mut ws, &snap, &good, Duration::ZERO).0,
        Verdict::Deliver { .. }
    ));
    let c = sa_counters(&[ws.shared()], id);
    assert_eq!((c.verify_failed, c.decaps), (1, 1));
    let ev = ws.shared().events.pop().unwrap();
    assert_eq!((ev.reason, ev.sa), (DropReason::InMacException, Some(id)));
}

/// Build an authentic ESP-in-IPv4 frame whose plaintext is given verbatim
/// (payload, padding, pad length, next header): for trailer tests.
fn frame_with_plaintext(plain: &[u8], seq: u32) -> Vec<u8> {
    let c = EspCipher::new(Cipher::Aes256Gcm, &KEY).unwrap();
    let mut esp = vec![0u8; CIPHERTEXT_OFFSET + plain.len() + ICV_LEN];
    esp[..4].copy_from_slice(&0x215EBFF1u32.to_be_bytes());
    esp[4..8].copy_from_slice(&seq.to_be_bytes());
    esp[8..16].copy_from_slice(&u64::from(seq).to_be_bytes());
    esp[16..16 + plain.len()].copy_from_slice(plain);
    c.seal_prepared(&mut esp, 0x215EBFF1, u64::from(seq), false);
    let mut ipb = hex("4500000000000000403200000a2828010a1e1e01");
    let total = (20 + esp.len()) as u16;
    ipb[2..4].copy_from_slice(&total.to_be_bytes());
    ipb.extend(esp);
    let mut p = crate::wire::ipv4::Packet::new_unchecked(&mut ipb[..]);
    p.fill_checksum();
    eth(&ipb)
}

#[test]
fn trailer_and_next_header_checks() {
    let (t, id) = loopback(Cipher::Aes256Gcm, false, false, false, 64);
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let mut good = inner_v4(22);
    good.extend([1, 2, 2, 4]);
    assert!(matches!(
        decap_one(
            &mut ws,
            &snap,
            &frame_with_plaintext(&good, 1),
            Duration::ZERO
        )
        .0,
        Verdict::Deliver { .. }
    ));
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (
            [inner_v4(22), vec![1, 3, 2, 4]].concat(),
            DropReason::InHeadPadLenErr,
        ), // bad pad byte
        (
            [inner_v4(20), vec![0xff, 4]].concat(),
            DropReason::InHeadPadLenErr,
        ), // pad longer than plaintext
        (
            [inner_v4(22), vec![1, 2, 2, 41]].concat(),
            DropReason::InNhMismatch,
        ), // says IPv6, is IPv4
        (
            [inner_v6(42), vec![1, 2, 2, 4]].concat(),
            DropReason::InNhMismatch,
        ), // says IPv4, is IPv6
        (
            [inner_v4(22), vec![1, 2, 2, 17]].concat(),
            DropReason::InNhMismatch,
        ), // transport mode
        (vec![0x45, 0, 4], DropReason::InNhMismatch), // IPv4 shorter than a header
    ];
    for (i, (plain, want)) in cases.into_iter().enumerate() {
        let (v, _) = decap_one(
            &mut ws,
            &snap,
            &frame_with_plaintext(&plain, 2 + i as u32),
            Duration::ZERO,
        );
        assert_eq!(v, Verdict::Drop(want), "case {i}");
    }
    assert_eq!(sa_counters(&[ws.shared()], id).recv_errors, 6);
    // Dummy packets (next header 59, RFC 4303 2.6): discarded silently,
    // counted apart, not a drop and not a receive error.
    let drops = ws.shared().drops.total();
    for (k, plain) in [
        [inner_v4(22), vec![1, 2, 2, 59]].concat(),
        vec![0xde, 0xad, 0, 59],
    ]
    .into_iter()
    .enumerate()
    {
        let f = frame_with_plaintext(&plain, 100 + k as u32);
        assert_eq!(
            decap_one(&mut ws, &snap, &f, Duration::ZERO).0,
            Verdict::Dummy
        );
    }
    assert_eq!(ws.shared().dummy_packets.load(Ordering::Relaxed), 2);
    assert_eq!(ws.shared().drops.total(), drops);
    let c = sa_counters(&[ws.shared()], id);
    assert_eq!((c.recv_errors, c.decaps), (6, 1));
}

#[test]
fn outer_header_drops_and_passes() {
    let (t, _) = loopback(Cipher::Aes256Gcm, false, false, true, 64);
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let good = encap_frame(&mut ws, &t, &inner_v4(60));
    let cases: Vec<(Vec<u8>, Verdict)> = vec![
        (
            good[..10].to_vec(),
            Verdict::Drop(DropReason::InHeadPadLenErr),
        ),
        (
            good[..14].to_vec(),
            Verdict::Drop(DropReason::InHeadPadLenErr),
        ),
        (
            good[..40].to_vec(),
            Verdict::Drop(DropReason::InHeadPadLenErr),
        ),
        (
            patch(&good, &[(14, 0x65)]),
            Verdict::Drop(DropReason::InIpVerInvalid),
        ),
        (
            fix_v4(patch(&good, &[(20, 0x20)])),
            Verdict::Drop(DropReason::InV4FragErr),
        ),
        // Header checksum wrong (TTL changed without fixing it).
        (
            patch(&good, &[(22, 0x3f)]),
            Verdict::Drop(DropReason::InV4ChecksumErr),
        ),
        (
            patch(&good, &[(12, 0x08), (13, 0x06)]),
            Verdict::Pass(PassReason::NotIp),
        ),
        (
            fix_v4(patch(&good, &[(23, 6)])),
            Verdict::Pass(PassReason::NotEsp),
        ),
        (
            patch(&good, &[(36, 0x01), (37, 0xf4)]),
            Verdict::Pass(PassReason::NotEsp),
        ), // dport 500
        (
            {
                let mut f = good.clone();
                f[42..46].copy_from_slice(&[0; 4]);
                f
            },
            Verdict::Pass(PassReason::IkeMarker),
        ),
        (
            {
                let mut f = good[..43].to_vec();
                f[42] = 0xff;
                f[16..18].copy_from_slice(&29u16.to_be_bytes());
                f[38..40].copy_from_slice(&9u16.to_be_bytes());
                fix_v4(f)
            },
            Verdict::Pass(PassReason::NatKeepalive),
        ),
        (
            {
                let mut f = good[..60].to_vec();
                f[16..18].copy_from_slice(&46u16.to_be_bytes());
                f[38..40].copy_from_slice(&26u16.to_be_bytes());
                fix_v4(f)
            },
            Verdict::Drop(DropReason::InHeadPadLenErr),
        ),
    ];
    for (i, (frame, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            decap_one(&mut ws, &snap, &frame, Duration::ZERO).0,
            want,
            "case {i}"
        );
    }
    assert_eq!(ws.shared().passed.load(Ordering::Relaxed), 5);
    // IPv6 fragment header in front of ESP.
    let (t6, _) = loopback(Cipher::Aes256Gcm, false, true, false, 64);
    let f6 = encap_frame(&mut ws, &t6, &inner_v4(60));
    let mut frag = f6[..54].to_vec();
    frag[20] = 44; // next header: Fragment
    frag.extend(hex("3200 0008 00000001")); // offset 1, next header ESP
    frag.extend(&f6[54..]);
    let pl = u16::from_be_bytes([frag[18], frag[19]]) + 8;
    frag[18..20].copy_from_slice(&pl.to_be_bytes());
    assert_eq!(
        decap_one(&mut ws, &t6.snapshot(), &frag, Duration::ZERO).0,
        Verdict::Drop(DropReason::InV4FragErr)
    );
    // The same with an atomic fragment header decapsulates fine.
    frag[56..58].copy_from_slice(&[0, 0]);
    assert!(matches!(
        decap_one(&mut ws, &t6.snapshot(), &frag, Duration::ZERO).0,
        Verdict::Deliver { .. }
    ));
}

#[test]
fn sdwan_shared_spi_qualified_by_peer() {
    // Two peers encrypt to the same SPI with different keys (pairwise keys).
    let k1 = [0x21u8; 36];
    let k2 = [0x42u8; 36];
    let p1 = PeerKey {
        addr: ip("10.20.20.1"),
        port: 12346,
    };
    let p2 = PeerKey {
        addr: ip("10.20.20.2"),
        port: 12366,
    };
    let mut rx = SaTable::new();
    let ids = rx
        .apply(
            vec![
                inbound_peer(
                    inbound_cfg(0x3000, Cipher::Aes256Gcm, &k1, false, 512, 1),
                    p1,
                ),
                inbound_peer(
                    inbound_cfg(0x3000, Cipher::Aes256Gcm, &k2, false, 512, 2),
                    p2,
                ),
                SaChange::SetUdpPorts(vec![12346..=12445]),
            ],
            Duration::ZERO,
        )
        .unwrap();
    let mut senders = Vec::new();
    for (k, p) in [(k1, p1), (k2, p2)] {
        let mut tx = SaTable::new();
        let o = OuterHeader {
            src: p.addr,
            dst: ip("10.10.10.1"),
            udp: Some((p.port, 12346)),
            ethernet: Some(EthernetHeader {
                src: [1; 6],
                dst: [2; 6],
            }),
            ttl: 64,
        };
        tx.apply(
            vec![SaChange::SetOutbound(outbound_cfg(
                0x3000,
                TUNNEL,
                Cipher::Aes256Gcm,
                &k,
                false,
                o,
                0,
            ))],
            Duration::ZERO,
        )
        .unwrap();
        senders.push(tx);
    }
    let mut ws = WorkerState::new(0);
    // The senders' own worker: worker state (counters, replay windows) is
    // per SA table, and the senders' SA ids overlap the receiver's.
    let mut tx_ws = WorkerState::new(0);
    let snap = rx.snapshot();
    for (i, tx) in senders.iter().enumerate() {
        let f = encap_frame(&mut tx_ws, tx, &inner_v4(50));
        let (v, _) = decap_one(&mut ws, &snap, &f, Duration::ZERO);
        assert!(
            matches!(v, Verdict::Deliver { tunnel, .. } if tunnel == i as u32 + 1),
            "{v:?}"
        );
    }
    // Peer 2's packet from peer 1's address matches peer 1's SA: ICV fails.
    let mut f = encap_frame(&mut tx_ws, &senders[1], &inner_v4(50));
    f[26..30].copy_from_slice(&[10, 20, 20, 1]);
    f[34..36].copy_from_slice(&12346u16.to_be_bytes());
    let mut p = crate::wire::ipv4::Packet::new_unchecked(&mut f[14..]);
    p.fill_checksum();
    assert_eq!(
        decap_one(&mut ws, &snap, &f, Duration::ZERO).0,
        Verdict::Drop(DropReason::InMacException)
    );
    // From an unlisted peer: no SA.
    f[29] = 9;
    let f = fix_v4(f);
    assert_eq!(
        decap_one(&mut ws, &snap, &f, Duration::ZERO).0,
        Verdict::Drop(DropReason::InV4SaNotFoundSpi)
    );
    let w = [ws.shared()];
    assert_eq!(
        (
            sa_counters(&w, ids[0]).decaps,
            sa_counters(&w, ids[0]).verify_failed
        ),
        (1, 1)
    );
    assert_eq!(sa_counters(&w, ids[1]).decaps, 1);
}

#[test]
fn handoff_to_owner() {
    let key = &KEY[..];
    let mut t = SaTable::new();
    let mut cfg = inbound_cfg(0x77, Cipher::Aes256Gcm, key, false, 64, 1);
    cfg.owner = 1;
    t.apply(
        vec![
            SaChange::AddInbound(cfg),
            SaChange::SetOutbound(outbound_cfg(
                0x77,
                1,
                Cipher::Aes256Gcm,
                key,
                false,
                outer(false, false),
                0,
            )),
        ],
        Duration::ZERO,
    )
    .unwrap();
    let snap = t.snapshot();
    let mut w0 = WorkerState::new(0);
    let mut w1 = WorkerState::new(1);
    let mut out = vec![0u8; 512];
    let n = encap(&mut w0, &snap, 1, &inner_v4(40), &mut out)
        .unwrap()
        .len;
    let frame = &out[..n];
    let (v, untouched) = decap_one(&mut w0, &snap, frame, Duration::ZERO);
    assert_eq!(v, Verdict::Handoff(1));
    assert_eq!(untouched, frame);
    assert_eq!(w0.shared().drops.total(), 0);
    assert!(matches!(
        decap_one(&mut w1, &snap, &untouched, Duration::ZERO).0,
        Verdict::Deliver { .. }
    ));
}

#[test]
fn encap_drops() {
    let (mut t, _) = loopback(Cipher::Aes128Gcm, false, false, false, 64);
    let mut ws = WorkerState::new(0);
    let mut out = vec![0u8; 2048];
    let snap = t.snapshot();
    assert_eq!(
        encap(&mut ws, &snap, 999, &inner_v4(40), &mut out),
        Err(DropReason::OutIpv4SaNotFound)
    );
    assert_eq!(
        encap(&mut ws, &snap, 999, &inner_v6(40), &mut out),
        Err(DropReason::OutIpv6SaNotFound)
    );
    assert_eq!(
        encap(&mut ws, &snap, TUNNEL, &[0x15, 0, 0], &mut out),
        Err(DropReason::InIpVerInvalid)
    );
    assert_eq!(
        encap(&mut ws, &snap, TUNNEL, &[], &mut out),
        Err(DropReason::InIpVerInvalid)
    );
    let need = 14 + 20 + sealed_len(40);
    assert_eq!(
        encap(&mut ws, &snap, TUNNEL, &inner_v4(40), &mut out[..need - 1]),
        Err(DropReason::PktBufferUnavailable)
    );
    let e = encap(&mut ws, &snap, TUNNEL, &inner_v4(40), &mut out[..need]).unwrap();
    // The failed attempt did not use up a sequence number.
    assert_eq!((e.len, e.seq), (need, 1));
    t.apply(
        vec![SaChange::RemoveOutbound {
            tunnel: TUNNEL,
            keep_invalid: true,
        }],
        Duration::ZERO,
    )
    .unwrap();
    let snap = t.snapshot();
    assert_eq!(
        encap(&mut ws, &snap, TUNNEL, &inner_v4(40), &mut out),
        Err(DropReason::OutV4HitInvalidSa)
    );
    assert_eq!(
        encap(&mut ws, &snap, TUNNEL, &inner_v6(40), &mut out),
        Err(DropReason::OutV6HitInvalidSa)
    );
    // Sequence exhaustion: stop, never wrap.
    let ids = t
        .apply(
            vec![SaChange::SetOutbound(outbound_cfg(
                0x99,
                5,
                Cipher::Aes128Gcm,
                &KEY[..20],
                false,
                outer(false, false),
                u64::from(u32::MAX) - 1,
            ))],
            Duration::ZERO,
        )
        .unwrap();
    let snap = t.snapshot();
    assert_eq!(
        encap(&mut ws, &snap, 5, &inner_v4(40), &mut out)
            .unwrap()
            .seq,
        u64::from(u32::MAX)
    );
    assert_eq!(
        encap(&mut ws, &snap, 5, &inner_v4(40), &mut out),
        Err(DropReason::OutSeqOverflow)
    );
    assert_eq!(
        encap(&mut ws, &snap, 5, &inner_v4(40), &mut out),
        Err(DropReason::OutSeqOverflow)
    );
    let d = ws.shared().drops.snapshot();
    for (r, n) in [
        (DropReason::OutIpv4SaNotFound, 1),
        (DropReason::OutIpv6SaNotFound, 1),
        (DropReason::InIpVerInvalid, 2),
        (DropReason::PktBufferUnavailable, 1),
        (DropReason::OutV4HitInvalidSa, 1),
        (DropReason::OutV6HitInvalidSa, 1),
        (DropReason::OutSeqOverflow, 2),
    ] {
        assert_eq!(d[r.index()], n, "{r}");
    }
    assert_eq!(ws.shared().drops.total(), 9);
    let c = sa_counters(&[ws.shared()], ids[0]);
    assert_eq!((c.encaps, c.send_errors), (1, 2));
}

#[test]
fn large_batches_are_chunked() {
    let (t, id) = loopback(Cipher::Aes256Gcm, false, false, true, 1024);
    let mut ws = WorkerState::new(0);
    let mut frames: Vec<Vec<u8>> = (0..3 * MAX_BATCH + 5)
        .map(|i| encap_frame(&mut ws, &t, &inner_v4(40 + i)))
        .collect();
    frames.reverse(); // out of order, within the window
    let mut out = vec![Verdict::Handoff(0); frames.len()];
    assert_eq!(
        decap_batch(
            &mut ws,
            &t.snapshot(),
            &mut frames,
            &mut out,
            Duration::ZERO
        ),
        frames.len()
    );
    assert!(out.iter().all(|v| matches!(v, Verdict::Deliver { .. })));
    assert_eq!(sa_counters(&[ws.shared()], id).decaps, frames.len() as u64);
    // Output shorter than input: only that many are processed.
    let mut out = vec![Verdict::Handoff(0); 2];
    assert_eq!(
        decap_batch(
            &mut ws,
            &t.snapshot(),
            &mut frames,
            &mut out,
            Duration::ZERO
        ),
        2
    );
}

// ---- The accounting rule over real frame variety ---------------------------
//
// proptest generates (and shrinks) a list of `FrameSpec`s: which SA (cipher,
// ESN, window, owning worker) or an unknown or recently deleted SPI; the
// sequence number (next, jump, replayed, too old, 0); outer IPv4 or IPv6,
// plain ESP or UDP on an ESP port; inner packet and trailer (padding, pad
// length, next header); and one damage (a cut inside each header, bit
// flips, IP version, fragments, not ESP, keepalive, IKE marker, random
// bytes). A model beside the pipeline says which verdict each frame must
// get, chunk by chunk as the three passes see it (pass 1 against the window
// as the chunk found it, pass 3 in order), so the accounting is checked
// against the right outcome and not only against itself.

/// The property's inbound SAs: (SPI, cipher, ESN, replay window, owner).
const PROP_SAS: [(u32, Cipher, bool, u32, u16); 5] = [
    (0x1001, Cipher::Aes256Gcm, false, 64, 0),
    (0x1002, Cipher::ChaCha20Poly1305, true, 64, 0),
    (0x1003, Cipher::Aes128Gcm, true, 128, 0),
    (0x1004, Cipher::Aes256Gcm, false, 0, 0), // replay check off
    (0x1005, Cipher::Aes256Gcm, false, 64, 1), // another worker's: handed off
];
/// An SPI whose SA was deleted just before the batch (1/9 HIT_INVALID_SA).
const PROP_DELETED_SPI: u32 = 0x2001;

#[derive(Debug, Clone)]
enum SpiPick {
    Known(usize),
    Unknown(u32),
    Deleted,
}

#[derive(Debug, Clone)]
enum SeqPick {
    /// Highest accepted + 1..=4.
    Next(u8),
    /// Highest accepted + window + n.
    Jump(u16),
    /// One already accepted (the first when none was).
    Replay(usize),
    /// Highest accepted - window - n (saturating).
    Old(u16),
    Zero,
}

#[derive(Debug, Clone)]
enum Trail {
    /// Padding 1, 2, ..; next header 4 or 41 as the inner packet is.
    Good,
    NextHeader(u8),
    /// One padding byte wrong.
    BadPadByte(u8),
    /// Pad length beyond the plaintext.
    PadTooLong,
    /// Next header 4 before fewer bytes than an IPv4 header.
    ShortInner(u8),
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    /// XOR into the IV, ciphertext or ICV.
    Flip(u16, u8),
    /// Frame cut short (the IP length still claims the rest).
    RawCut(u16),
    /// ESP cut short, IP and UDP lengths fixed up to match.
    EspCut(u16),
    IpVersion,
    /// A first (true) or later (false) fragment.
    Fragment(bool),
    /// IPv6 fragment header with offset 0 and M clear (IPv4: DF set): not a fragment.
    AtomicFragment,
    NotIp,
    OtherProto,
    OtherUdpPort,
    Keepalive,
    IkeMarker,
    Random(Vec<u8>),
}

#[derive(Debug, Clone)]
struct FrameSpec {
    spi: SpiPick,
    seq: SeqPick,
    v6_outer: bool,
    udp: Option<u16>,
    inner_v6: bool,
    inner_extra: u8,
    pad: u8,
    trail: Trail,
    damage: Damage,
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    let known = [0x1001u32, 0x1002, 0x1003, 0x1004, 0x1005, PROP_DELETED_SPI];
    let spi = prop_oneof![
        8 => (0..PROP_SAS.len()).prop_map(SpiPick::Known),
        1 => (256u32..).prop_filter("not a configured SPI", move |s| !known.contains(s)).prop_map(SpiPick::Unknown),
        1 => Just(SpiPick::Deleted),
    ];
    let seq = prop_oneof![
        6 => (1u8..=4).prop_map(SeqPick::Next),
        1 => (0u16..400).prop_map(SeqPick::Jump),
        2 => any::<usize>().prop_map(SeqPick::Replay),
        1 => (0u16..200).prop_map(SeqPick::Old),
        1 => Just(SeqPick::Zero),
    ];
    let udp = prop_oneof![
        Just(None),
        Just(Some(4500u16)),
        Just(Some(12346)),
        Just(Some(12445))
    ];
    let trail = prop_oneof![
        6 => Just(Trail::Good),
        2 => prop_oneof![Just(4u8), Just(41), Just(59), Just(17), Just(50), any::<u8>()].prop_map(Trail::NextHeader),
        1 => any::<u8>().prop_map(Trail::BadPadByte),
        1 => Just(Trail::PadTooLong),
        1 => (0u8..20).prop_map(Trail::ShortInner),
    ];
    let damage = prop_oneof![
        12 => Just(Damage::None),
        2 => (any::<u16>(), 1u8..=255).prop_map(|(p, x)| Damage::Flip(p, x)),
        2 => any::<u16>().prop_map(Damage::RawCut),
        2 => any::<u16>().prop_map(Damage::EspCut),
        1 => Just(Damage::IpVersion),
        1 => any::<bool>().prop_map(Damage::Fragment),
        1 => Just(Damage::AtomicFragment),
        1 => Just(Damage::NotIp),
        1 => Just(Damage::OtherProto),
        1 => Just(Damage::OtherUdpPort),
        1 => Just(Damage::Keepalive),
        1 => Just(Damage::IkeMarker),
        1 => proptest::collection::vec(any::<u8>(), 0..120).prop_map(Damage::Random),
    ];
    (
        spi,
        seq,
        any::<bool>(),
        udp,
        any::<bool>(),
        0u8..=200,
        0u8..16,
        trail,
        damage,
    )
        .prop_map(
            |(spi, seq, v6_outer, udp, inner_v6, inner_extra, pad, trail, damage)| FrameSpec {
                spi,
                seq,
                v6_outer,
                udp,
                inner_v6,
                inner_extra,
                pad,
                trail,
                damage,
            },
        )
}

/// The table the property runs against: [`PROP_SAS`], plus one deleted SA.
fn prop_table() -> (SaTable, Vec<SaId>) {
    let mut changes: Vec<SaChange> = PROP_SAS
        .iter()
        .enumerate()
        .map(|(i, &(spi, c, esn, window, owner))| {
            let cfg = inbound_cfg(
                spi,
                c,
                &KEY[..c.key_material_len()],
                esn,
                window,
                TUNNEL + i as u32,
            );
            SaChange::AddInbound(crate::sa::InboundSaConfig { owner, ..cfg })
        })
        .collect();
    changes.push(SaChange::AddInbound(inbound_cfg(
        PROP_DELETED_SPI,
        Cipher::Aes256Gcm,
        &KEY,
        false,
        64,
        TUNNEL + 9,
    )));
    changes.push(SaChange::SetUdpPorts(vec![12346..=12445, 4500..=4500]));
    let mut t = SaTable::new();
    let ids = t.apply(changes, Duration::ZERO).unwrap();
    t.apply(
        vec![SaChange::RemoveInbound(ids[PROP_SAS.len()])],
        Duration::ZERO,
    )
    .unwrap();
    (t, ids[..PROP_SAS.len()].to_vec())
}

/// The model's replay state of one SA: highest accepted and every accepted number.
#[derive(Debug, Clone, Default)]
struct ModelWindow {
    top: u64,
    seen: std::collections::BTreeSet<u64>,
}

impl ModelWindow {
    fn check(&self, size: u32, s: u64) -> Result<(), crate::replay::ReplayError> {
        use crate::replay::ReplayError::*;
        if size == 0 {
            Ok(())
        } else if s == 0 || (s <= self.top && self.top - s >= u64::from(size)) {
            Err(TooOld)
        } else if self.seen.contains(&s) {
            Err(Duplicate)
        } else {
            Ok(())
        }
    }
    fn accept(&mut self, s: u64) {
        self.seen.insert(s);
        self.top = self.top.max(s);
    }
    /// RFC 4303 Appendix A2.1 (a window of 0 counts as 2^31).
    fn infer(&self, size: u32, lo: u32) -> u64 {
        let w = if size == 0 {
            1u64 << 31
        } else {
            u64::from(size)
        };
        let (th, tl) = (self.top >> 32, self.top & 0xffff_ffff);
        let lo64 = u64::from(lo);
        let hi = if tl + 1 >= w {
            if lo64 + w > tl { th } else { th + 1 }
        } else if lo64 >= (tl + (1 << 32) - (w - 1)) & 0xffff_ffff {
            th.saturating_sub(1)
        } else {
            th
        };
        (hi << 32) | lo64
    }
}

/// What the model says a frame must get.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    /// Delivered on this tunnel with exactly these inner bytes.
    Deliver(u32, Vec<u8>),
    Drop(DropReason),
    Pass(PassReason),
    Handoff(u16),
    /// A dummy packet (next header 59), discarded silently.
    Dummy,
    /// Random bytes: any one verdict.
    Any,
}

/// Per-SA counters the model expects (index as [`PROP_SAS`]).
#[derive(Debug, Clone, Default, PartialEq)]
struct ModelCounters {
    decaps: u64,
    verify_failed: u64,
    too_old: u64,
    duplicate: u64,
    recv_errors: u64,
}

fn csum_add(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + outer IPv4/IPv6 (+ fragment header) (+ UDP) around `l4`.
fn outer_frame(s: &FrameSpec, proto: u8, l4: &[u8]) -> Vec<u8> {
    let (mut ip, ethertype) = if s.v6_outer {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let frag = match s.damage {
            Damage::Fragment(true) => Some(0x0001u16), // offset 0, more fragments
            Damage::Fragment(false) => Some(5 << 3),   // offset 40, last
            Damage::AtomicFragment => Some(0),
            _ => None,
        };
        let mut body = Vec::new();
        if let Some(f) = frag {
            body.extend([proto, 0]);
            body.extend(f.to_be_bytes());
            body.extend([0, 0, 0x12, 0x34]);
        }
        body.extend(l4);
        let mut h = vec![0x60, 0, 0, 0];
        h.extend((body.len() as u16).to_be_bytes());
        h.push(if frag.is_some() { 44 } else { proto });
        h.push(64);
        h.extend(src);
        h.extend(dst);
        h.extend(body);
        (h, [0x86, 0xdd])
    } else {
        let flags: u16 = match s.damage {
            Damage::Fragment(true) => 0x2000,
            Damage::Fragment(false) => 0x0005,
            Damage::AtomicFragment => 0x4000, // DF
            _ => 0,
        };
        // Version 6 behind the IPv4 ethertype: the checksum still matches.
        let version = if matches!(s.damage, Damage::IpVersion) {
            0x65
        } else {
            0x45
        };
        let mut h = vec![version, 0];
        h.extend(((20 + l4.len()) as u16).to_be_bytes());
        h.extend([0x12, 0x34]);
        h.extend(flags.to_be_bytes());
        h.extend([64, proto, 0, 0, 198, 51, 100, 2, 198, 51, 100, 1]);
        let c = csum_fold(csum_add(&h, 0));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend(l4);
        (h, [0x08, 0x00])
    };
    if s.v6_outer && matches!(s.damage, Damage::IpVersion) {
        ip[0] = 0x45;
    }
    let mut f = vec![0xf1; 6];
    f.extend([0xf2; 6]);
    f.extend(if matches!(s.damage, Damage::NotIp) {
        [0x88, 0xb5]
    } else {
        ethertype
    });
    f.extend(ip);
    f
}

/// UDP header and payload with a correct checksum for the spec's outer addresses.
fn udp_datagram(s: &FrameSpec, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = Vec::new();
    u.extend(4500u16.to_be_bytes());
    u.extend(dport.to_be_bytes());
    u.extend(len.to_be_bytes());
    u.extend([0, 0]);
    u.extend(payload);
    let pseudo: Vec<u8> = if s.v6_outer {
        let mut p = hex("20010db8000000000000000000000002 20010db8000000000000000000000001");
        p.extend(u32::from(len).to_be_bytes());
        p.extend([0, 0, 0, 17]);
        p
    } else {
        let mut p = vec![198, 51, 100, 2, 198, 51, 100, 1, 0, 17];
        p.extend(len.to_be_bytes());
        p
    };
    let mut c = csum_fold(csum_add(&u, csum_add(&pseudo, 0)));
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// Build each spec's frame and the verdict the model wants for it.
fn build_and_model(specs: &[FrameSpec]) -> (Vec<Vec<u8>>, Vec<Want>, Vec<ModelCounters>) {
    let mut running = vec![ModelWindow::default(); PROP_SAS.len()];
    let mut counters = vec![ModelCounters::default(); PROP_SAS.len()];
    let (mut frames, mut wants) = (Vec::new(), Vec::new());
    for chunk in specs.chunks(MAX_BATCH) {
        // Pass 1 sees the windows as they were when the chunk started.
        let start = running.clone();
        for s in chunk {
            let (f, w) = build_one(s, &start, &mut running, &mut counters);
            frames.push(f);
            wants.push(w);
        }
    }
    (frames, wants, counters)
}

fn build_one(
    s: &FrameSpec,
    start: &[ModelWindow],
    running: &mut [ModelWindow],
    counters: &mut [ModelCounters],
) -> (Vec<u8>, Want) {
    let (spi, sa) = match s.spi {
        SpiPick::Known(k) => (PROP_SAS[k].0, Some(k)),
        SpiPick::Unknown(spi) => (spi, None),
        SpiPick::Deleted => (PROP_DELETED_SPI, None),
    };
    let (cipher, esn, size) = sa.map_or((Cipher::Aes256Gcm, false, 64), |k| {
        (PROP_SAS[k].1, PROP_SAS[k].2, PROP_SAS[k].3)
    });
    let win = sa.map(|k| running[k].clone()).unwrap_or_default();
    let span = u64::from(size.max(64));
    let seq: u64 = match s.seq {
        SeqPick::Next(n) => win.top + u64::from(n),
        SeqPick::Jump(n) => win.top + span + u64::from(n),
        SeqPick::Replay(i) => win
            .seen
            .iter()
            .nth(i % win.seen.len().max(1))
            .copied()
            .unwrap_or(1),
        SeqPick::Old(n) => win.top.saturating_sub(span + u64::from(n)),
        SeqPick::Zero => 0,
    };

    // Plaintext: inner packet, padding, pad length, next header.
    let inner = match s.trail {
        Trail::ShortInner(n) => {
            let mut b = vec![0x45u8; usize::from(n)];
            b.iter_mut().skip(1).for_each(|x| *x = 0x11);
            b
        }
        _ if s.inner_v6 => inner_v6(40 + usize::from(s.inner_extra)),
        _ => inner_v4(20 + usize::from(s.inner_extra)),
    };
    let pad = match s.trail {
        Trail::BadPadByte(_) => s.pad.max(1),
        _ => s.pad,
    };
    let mut padding: Vec<u8> = (1..=pad).collect();
    if let Trail::BadPadByte(j) = s.trail {
        padding[usize::from(j % pad)] ^= 0x80;
    }
    let inner_nh = if s.inner_v6 { 41 } else { 4 };
    let (pad_len, nh) = match s.trail {
        Trail::NextHeader(nh) => (pad, nh),
        Trail::PadTooLong => (255, inner_nh),
        Trail::ShortInner(_) => (pad, 4),
        _ => (pad, inner_nh),
    };
    let plain_len = inner.len() + padding.len() + 2;
    let trailer_verdict = match s.trail {
        Trail::BadPadByte(_) => Err(DropReason::InHeadPadLenErr),
        // 255 is beyond every plaintext here, or else (pad < 16) the bytes
        // before the trailer are not 1, 2, ...
        Trail::PadTooLong => Err(DropReason::InHeadPadLenErr),
        Trail::ShortInner(_) => Err(DropReason::InNhMismatch),
        // RFC 4303 2.6: a dummy packet is discarded silently, not a drop.
        Trail::NextHeader(59) => Ok(true),
        // Every other next header is 65.
        Trail::NextHeader(n) if n != inner_nh => Err(DropReason::InNhMismatch),
        _ => Ok(false),
    };

    // ESP: SPI, sequence number, IV (the 64-bit number), plaintext, ICV.
    let mut esp = Vec::with_capacity(CIPHERTEXT_OFFSET + plain_len + ICV_LEN);
    esp.extend(spi.to_be_bytes());
    esp.extend((seq as u32).to_be_bytes());
    esp.extend(seq.to_be_bytes());
    esp.extend(&inner);
    esp.extend(&padding);
    esp.extend([pad_len, nh]);
    esp.extend([0; ICV_LEN]);
    EspCipher::new(cipher, &KEY[..cipher.key_material_len()])
        .unwrap()
        .seal_prepared(&mut esp, spi, seq, esn);
    let full_len = esp.len();
    match s.damage {
        Damage::Flip(at, x) => {
            let i = 8 + usize::from(at) % (esp.len() - 8);
            esp[i] ^= x;
        }
        Damage::EspCut(n) => esp.truncate(usize::from(n) % full_len),
        _ => {}
    }

    // Outer headers.
    let (proto, l4) = match (&s.damage, s.udp) {
        (Damage::OtherProto, _) => (6, esp.clone()),
        (Damage::OtherUdpPort, _) => (17, udp_datagram(s, 500, &esp)),
        (Damage::Keepalive, _) => (17, udp_datagram(s, 4500, &[0xff])),
        (Damage::IkeMarker, _) => (
            17,
            udp_datagram(s, 4500, &[[0u8; 4].as_slice(), &esp].concat()),
        ),
        (_, Some(port)) => (17, udp_datagram(s, port, &esp)),
        (_, None) => (50, esp.clone()),
    };
    let mut frame = outer_frame(s, proto, &l4);
    if let Damage::RawCut(n) = s.damage {
        frame.truncate(usize::from(n) % frame.len());
    }
    if let Damage::Random(bytes) = &s.damage {
        return (bytes.clone(), Want::Any);
    }

    // The verdict, in the pipeline's order.
    let v6 = s.v6_outer;
    let early = match s.damage {
        Damage::RawCut(_) => Some(Want::Drop(DropReason::InHeadPadLenErr)),
        Damage::IpVersion => Some(Want::Drop(DropReason::InIpVerInvalid)),
        Damage::Fragment(_) => Some(Want::Drop(DropReason::InV4FragErr)),
        Damage::NotIp => Some(Want::Pass(PassReason::NotIp)),
        Damage::OtherProto | Damage::OtherUdpPort => Some(Want::Pass(PassReason::NotEsp)),
        Damage::Keepalive => Some(Want::Pass(PassReason::NatKeepalive)),
        Damage::IkeMarker => Some(Want::Pass(PassReason::IkeMarker)),
        _ if s.udp.is_some() && esp.len() == 1 && spi >> 24 == 0xff => {
            Some(Want::Pass(PassReason::NatKeepalive))
        }
        _ if esp.len() < 8 => Some(Want::Drop(DropReason::InHeadPadLenErr)),
        _ => None,
    };
    if let Some(w) = early {
        return (frame, w);
    }
    let Some(k) = sa else {
        let r = match (&s.spi, v6) {
            (SpiPick::Deleted, false) => DropReason::InV4HitInvalidSa,
            (SpiPick::Deleted, true) => DropReason::InV6HitInvalidSa,
            (_, false) => DropReason::InV4SaNotFoundSpi,
            (_, true) => DropReason::InV6SaNotFoundSpi,
        };
        return (frame, Want::Drop(r));
    };
    if PROP_SAS[k].4 != 0 {
        return (frame, Want::Handoff(PROP_SAS[k].4));
    }
    let c = &mut counters[k];
    if esp.len() < crate::crypto::MIN_ESP_LEN {
        c.recv_errors += 1;
        return (frame, Want::Drop(DropReason::InHeadPadLenErr));
    }
    let seq_full = if esn {
        start[k].infer(size, seq as u32)
    } else {
        seq & 0xffff_ffff
    };
    let replay = |e: crate::replay::ReplayError, c: &mut ModelCounters| {
        match e {
            crate::replay::ReplayError::TooOld => c.too_old += 1,
            crate::replay::ReplayError::Duplicate => c.duplicate += 1,
        }
        Want::Drop(DropReason::InAntiReplayFail)
    };
    if let Err(e) = start[k].check(size, seq_full) {
        return (frame, replay(e, c));
    }
    let authentic = matches!(s.damage, Damage::None | Damage::AtomicFragment) && seq_full == seq;
    if !authentic {
        c.verify_failed += 1;
        return (frame, Want::Drop(DropReason::InMacException));
    }
    if let Err(e) = running[k].check(size, seq_full) {
        return (frame, replay(e, c));
    }
    running[k].accept(seq_full);
    match trailer_verdict {
        Err(r) => {
            c.recv_errors += 1;
            (frame, Want::Drop(r))
        }
        Ok(true) => (frame, Want::Dummy),
        Ok(false) => {
            c.decaps += 1;
            (frame, Want::Deliver(TUNNEL + k as u32, inner))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every frame gets exactly the verdict the model expects, every drop
    /// bumps exactly one counter, and drops + delivered + passed + handed
    /// off == frames, per reason and per SA too; with pass 1 frame by frame
    /// and in prefetching stages (what tables of many SAs get).
    #[test]
    fn every_frame_accounted_once(specs in proptest::collection::vec(frame_spec(), 1..200), staged in any::<bool>()) {
        let _forced = crate::pipeline::tests_force_staged::set(Some(staged));
        let (t, ids) = prop_table();
        let mut ws = WorkerState::new(0);
        let (mut frames, wants, model) = build_and_model(&specs);
        let n = frames.len();
        let before = ws.shared().drops.snapshot();
        let mut out = vec![Verdict::Handoff(u16::MAX); n];
        prop_assert_eq!(decap_batch(&mut ws, &t.snapshot(), &mut frames, &mut out, Duration::ZERO), n);
        let after = ws.shared().drops.snapshot();
        let mut by_reason = [0u64; DropReason::COUNT];
        let (mut delivered, mut passed, mut handoff, mut dummy) = (0u64, 0u64, 0u64, 0u64);
        for (i, v) in out.iter().enumerate() {
            match v {
                Verdict::Deliver { inner, .. } => { delivered += 1; prop_assert!(inner.end <= frames[i].len()); }
                Verdict::Drop(r) => by_reason[r.index()] += 1,
                Verdict::Pass(_) => passed += 1,
                Verdict::Handoff(_) => handoff += 1,
                Verdict::Dummy => dummy += 1,
                Verdict::Punt { .. } => prop_assert!(false, "nothing in the model is for the node"),
            }
            let ok = match (&wants[i], v) {
                (Want::Any, _) => true,
                (Want::Deliver(t, bytes), Verdict::Deliver { tunnel, inner }) => {
                    tunnel == t && &frames[i][inner.clone()] == bytes.as_slice()
                }
                (Want::Drop(a), Verdict::Drop(b)) => a == b,
                (Want::Pass(a), Verdict::Pass(b)) => a == b,
                (Want::Handoff(a), Verdict::Handoff(b)) => a == b,
                (Want::Dummy, Verdict::Dummy) => true,
                _ => false,
            };
            prop_assert!(ok, "frame {}: {:?}\nwant {:?}\ngot {:?}", i, specs[i], wants[i], v);
        }
        for r in DropReason::ALL {
            prop_assert_eq!(after[r.index()] - before[r.index()], by_reason[r.index()], "{}", r);
        }
        let drops: u64 = by_reason.iter().sum();
        prop_assert_eq!(drops + delivered + passed + handoff + dummy, n as u64);
        // Every frame classified once, by the one parser (a frame handed
        // to its owner worker is counted there, not here).
        prop_assert_eq!(ws.shared().classes.snapshot().iter().sum::<u64>(), n as u64 - handoff);
        prop_assert_eq!(ws.shared().delivered.load(Ordering::Relaxed), delivered);
        prop_assert_eq!(ws.shared().passed.load(Ordering::Relaxed), passed);
        for (k, id) in ids.iter().enumerate() {
            let c = sa_counters(&[ws.shared()], *id);
            let got = ModelCounters {
                decaps: c.decaps,
                verify_failed: c.verify_failed,
                too_old: c.replay_too_old,
                duplicate: c.replay_duplicate,
                recv_errors: c.recv_errors,
            };
            prop_assert_eq!(&got, &model[k], "SA {:#x}", PROP_SAS[k].0);
        }
    }

    /// Arbitrary bytes never panic the pipeline (the fuzz target does more),
    /// either way pass 1 runs.
    #[test]
    fn arbitrary_bytes_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..80), staged in any::<bool>()) {
        let _forced = crate::pipeline::tests_force_staged::set(Some(staged));
        let (t, _) = loopback(Cipher::ChaCha20Poly1305, false, true, true, 128);
        let mut ws = WorkerState::new(0);
        let mut frames = frames;
        let mut out = vec![Verdict::Handoff(0); frames.len()];
        decap_batch(&mut ws, &t.snapshot(), &mut frames, &mut out, Duration::ZERO);
        let total = ws.shared().drops.total() + ws.shared().passed.load(Ordering::Relaxed) + ws.shared().delivered.load(Ordering::Relaxed) + ws.shared().dummy_packets.load(Ordering::Relaxed) + ws.shared().punted.load(Ordering::Relaxed);
        prop_assert_eq!(total, frames.len() as u64);
        prop_assert_eq!(ws.shared().classes.snapshot().iter().sum::<u64>(), frames.len() as u64);
    }
}

#[test]
fn event_ring_overflow_counts_lost() {
    let (t, _) = loopback(Cipher::Aes256Gcm, false, false, false, 64);
    let mut ws = WorkerState::with_event_capacity(0, 4);
    let mut f = encap_frame(&mut ws, &t, &inner_v4(40));
    f[34] ^= 0xff; // SPI byte: unknown SPI
    let mut frames = vec![f; 10];
    let mut out = vec![Verdict::Handoff(0); 10];
    decap_batch(
        &mut ws,
        &t.snapshot(),
        &mut frames,
        &mut out,
        Duration::ZERO,
    );
    assert_eq!(ws.shared().drops.get(DropReason::InV4SaNotFoundSpi), 10);
    assert_eq!(ws.shared().events.len(), 4);
    assert_eq!(ws.shared().events.lost(), 6);
    let _: IpAddr = ws.shared().events.pop().unwrap().src;
}

/// A loopback table whose inbound SA allows inner packets from
/// 192.168.1.0/24 or fd00:1::/64 to 192.168.2.1 or fd00:2::/64 (the
/// addresses `inner_v4` / `inner_v6` use).
fn loopback_with_selectors() -> (SaTable, SaId) {
    let p = |s: &str, l| Prefix::new(ip(s), l).unwrap();
    let mut cfg = inbound_cfg(0x215EBFF1, Cipher::Aes256Gcm, &KEY, false, 64, TUNNEL);
    cfg.selectors = std::sync::Arc::new(Selectors {
        local: AddrSet::from_prefixes([p("192.168.2.1", 32), p("fd00:2::", 64)]),
        remote: AddrSet::from_prefixes([p("192.168.1.0", 24), p("fd00:1::", 64)]),
    });
    let mut t = SaTable::new();
    let ids = t
        .apply(
            vec![
                SaChange::SetOutbound(outbound_cfg(
                    0x215EBFF1,
                    TUNNEL,
                    Cipher::Aes256Gcm,
                    &KEY,
                    false,
                    outer(false, true),
                    0,
                )),
                SaChange::AddInbound(cfg),
                SaChange::SetUdpPorts(vec![12346..=12346]),
            ],
            Duration::ZERO,
        )
        .unwrap();
    (t, ids[1])
}

#[test]
fn inbound_policy_check_drops_inner_packets_outside_the_selectors() {
    let (t, id) = loopback_with_selectors();
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    // inner_v4: 192.168.1.1 -> 192.168.2.1 (bytes 12..16 src, 16..20 dst);
    // inner_v6: fd00:1::1 -> fd00:2::1 (bytes 8..24 src, 24..40 dst).
    let v4_src_out = patch(&inner_v4(60), &[(14, 9)]); // 192.168.9.1
    let v4_dst_out = patch(&inner_v4(60), &[(19, 2)]); // 192.168.2.2
    let v6_src_out = patch(&inner_v6(60), &[(10, 0x99)]); // fd00:9901::1
    let v6_dst_out = patch(&inner_v6(60), &[(26, 0x77)]); // fd00:7702::1
    let cases: [(&[u8], Option<DropReason>); 6] = [
        (&inner_v4(60), None),
        (&v4_src_out, Some(DropReason::InV4PostInputPolicyFail)),
        (&v4_dst_out, Some(DropReason::InV4PostInputPolicyFail)),
        (&inner_v6(60), None),
        (&v6_src_out, Some(DropReason::InV6PostInputPolicyFail)),
        (&v6_dst_out, Some(DropReason::InV6PostInputPolicyFail)),
    ];
    let mut frames = Vec::new();
    for (i, (inner, want)) in cases.iter().enumerate() {
        let frame = encap_frame(&mut ws, &t, inner);
        let (v, out) = decap_one(&mut ws, &snap, &frame, Duration::ZERO);
        match want {
            None => {
                let Verdict::Deliver { tunnel, inner: r } = v else {
                    panic!("#{i}: {v:?}")
                };
                assert_eq!((tunnel, &out[r]), (TUNNEL, &inner[..]), "#{i}");
            }
            Some(r) => assert_eq!(v, Verdict::Drop(*r), "#{i}"),
        }
        frames.push(frame);
    }
    // Exactly one drop counter per refused packet, nothing else.
    let d = ws.shared().drops.snapshot();
    assert_eq!(d[DropReason::InV4PostInputPolicyFail.index()], 2);
    assert_eq!(d[DropReason::InV6PostInputPolicyFail.index()], 2);
    assert_eq!(ws.shared().drops.total(), 4);
    let c = sa_counters(&[ws.shared()], id);
    assert_eq!((c.decaps, c.recv_errors, c.replay_failed()), (2, 4, 0));
    assert_eq!(ws.shared().delivered.load(Ordering::Relaxed), 2);
    // One event each, with the inner flow for the log line.
    let ev = ws.shared().events.drain(10);
    assert_eq!(ev.len(), 4);
    assert_eq!(
        ev[0],
        DropEvent {
            reason: DropReason::InV4PostInputPolicyFail,
            spi: 0x215EBFF1,
            src: ip("10.40.40.1"),
            dst: ip("10.30.30.1"),
            tunnel: Some(TUNNEL),
            sa: Some(id),
            inner: Some(InnerFlow {
                src: ip("192.168.9.1"),
                dst: ip("192.168.2.1"),
                protocol: 17,
            }),
        }
    );
    assert_eq!(ev[3].inner.unwrap().dst, ip("fd00:7702::1"));
    assert!(
        crate::ioslog::format_event(&ev[2], Some("Tunnel10001"))
            .unwrap()
            .ends_with("dest_addr= /fd00:2::1, src_addr= fd00:9901::1, prot= 59"),
    );
    // The refused packets were authentic: their sequence numbers are spent
    // (the window advanced), so a replay of one is a duplicate (19).
    let (v, _) = decap_one(&mut ws, &snap, &frames[1], Duration::ZERO);
    assert_eq!(v, Verdict::Drop(DropReason::InAntiReplayFail));
    assert_eq!(sa_counters(&[ws.shared()], id).replay_duplicate, 1);
}

#[test]
fn any_selectors_deliver_every_inner_address() {
    // The default loopback SA has "any" selectors: the same packets pass.
    let (t, id) = loopback(Cipher::Aes256Gcm, false, false, false, 64);
    let mut ws = WorkerState::new(0);
    for inner in [
        patch(&inner_v4(60), &[(14, 9)]),
        patch(&inner_v6(60), &[(26, 0x77)]),
    ] {
        let frame = encap_frame(&mut ws, &t, &inner);
        let (v, _) = decap_one(&mut ws, &t.snapshot(), &frame, Duration::ZERO);
        assert!(matches!(v, Verdict::Deliver { .. }), "{v:?}");
    }
    assert_eq!(sa_counters(&[ws.shared()], id).decaps, 2);
    assert_eq!(ws.shared().drops.total(), 0);
}

#[test]
fn deliveries_carry_the_sa_tunnel_and_count_per_sa() {
    // Two tunnels in one batch: each Deliver names its SA's tunnel and each
    // SA's decaps counter counts exactly its tunnel's deliveries.
    let mut t = SaTable::new();
    let mut changes = Vec::new();
    for (spi, tunnel) in [(0x501u32, 1u32), (0x502, 2)] {
        changes.push(SaChange::SetOutbound(outbound_cfg(
            spi,
            tunnel,
            Cipher::Aes256Gcm,
            &KEY,
            false,
            outer(false, false),
            0,
        )));
        changes.push(SaChange::AddInbound(inbound_cfg(
            spi,
            Cipher::Aes256Gcm,
            &KEY,
            false,
            64,
            tunnel,
        )));
    }
    let ids = t.apply(changes, Duration::ZERO).unwrap();
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let mut out = vec![0u8; 512];
    let mut frames = Vec::new();
    for tunnel in [1u32, 2, 2, 1, 2] {
        let n = encap(&mut ws, &snap, tunnel, &inner_v4(40), &mut out)
            .unwrap()
            .len;
        frames.push(out[..n].to_vec());
    }
    let mut verdicts = vec![Verdict::Handoff(9); frames.len()];
    decap_batch(&mut ws, &snap, &mut frames, &mut verdicts, Duration::ZERO);
    let tunnels: Vec<u32> = verdicts
        .iter()
        .map(|v| match v {
            Verdict::Deliver { tunnel, .. } => *tunnel,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(tunnels, vec![1, 2, 2, 1, 2]);
    let w = [ws.shared()];
    assert_eq!(sa_counters(&w, ids[1]).decaps, 2);
    assert_eq!(sa_counters(&w, ids[3]).decaps, 3);
}

#[test]
fn only_the_owner_worker_encapsulates() {
    let mut t = SaTable::new();
    let ids = t
        .apply(
            vec![SaChange::SetOutbound(OutboundSaConfig {
                owner: 1,
                ..outbound_cfg(
                    0x88,
                    7,
                    Cipher::Aes128Gcm,
                    &KEY[..20],
                    false,
                    outer(false, false),
                    0,
                )
            })],
            Duration::ZERO,
        )
        .unwrap();
    let snap = t.snapshot();
    assert_eq!(snap.outbound_owner(7), Some(1));
    assert_eq!(snap.outbound_owner(8), None);
    let mut w0 = WorkerState::new(0);
    let mut w1 = WorkerState::new(1);
    let mut out = vec![0u8; 512];
    // Worker 0 must hand the packet over; it never touches the sequence.
    assert_eq!(
        encap(&mut w0, &snap, 7, &inner_v4(40), &mut out),
        Err(DropReason::OutUnexpException)
    );
    let Some(crate::sa::OutboundEntry::Active(sa)) = snap.outbound(7) else {
        panic!()
    };
    assert_eq!(sa.last_seq(), 0);
    let seqs: Vec<u64> = (0..3)
        .map(|_| {
            encap(&mut w1, &snap, 7, &inner_v4(40), &mut out)
                .unwrap()
                .seq
        })
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(w0.shared().drops.get(DropReason::OutUnexpException), 1);
    assert_eq!(w0.shared().drops.total(), 1);
    assert_eq!(w1.shared().drops.total(), 0);
    let c = sa_counters(&[w0.shared(), w1.shared()], ids[0]);
    assert_eq!((c.encaps, c.send_errors), (3, 1));
}

#[test]
fn encap_stops_at_the_sequence_reservation() {
    let mut t = SaTable::new();
    let ids = t
        .apply(
            vec![SaChange::SetOutbound(OutboundSaConfig {
                seq_limit: 2,
                ..outbound_cfg(
                    0x89,
                    3,
                    Cipher::Aes256Gcm,
                    &KEY,
                    false,
                    outer(false, true),
                    0,
                )
            })],
            Duration::ZERO,
        )
        .unwrap();
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let mut out = vec![0u8; 512];
    let mut send =
        |ws: &mut WorkerState| encap(ws, &snap, 3, &inner_v6(40), &mut out).map(|e| e.seq);
    assert_eq!(send(&mut ws), Ok(1));
    assert_eq!(send(&mut ws), Ok(2));
    assert_eq!(send(&mut ws), Err(DropReason::OutUnexpException));
    assert_eq!(send(&mut ws), Err(DropReason::OutUnexpException));
    let Some(crate::sa::OutboundEntry::Active(sa)) = snap.outbound(3) else {
        panic!()
    };
    sa.raise_limit(3);
    assert_eq!(send(&mut ws), Ok(3));
    assert_eq!(send(&mut ws), Err(DropReason::OutUnexpException));
    let d = ws.shared().drops.snapshot();
    assert_eq!(d[DropReason::OutUnexpException.index()], 3);
    assert_eq!(d[DropReason::OutSeqOverflow.index()], 0);
    assert_eq!(ws.shared().drops.total(), 3);
    let c = sa_counters(&[ws.shared()], ids[0]);
    assert_eq!((c.encaps, c.send_errors), (3, 3));
}

/// The outer header of an encapsulated frame: DSCP and ECN copied from the
/// inner packet, IPv4 ident from the sequence number, UDP/IPv6 checksum.
#[test]
fn encap_outer_header_fields() {
    use crate::wire::{ipv4, ipv6, udp};
    let mut ws = WorkerState::new(0);
    // IPv4 outer, inner IPv4 TOS 0xb9 (DSCP EF, ECT(1)) and inner IPv6 TC 0x2a.
    let (t, _) = loopback(Cipher::Aes256Gcm, false, false, true, 64);
    let mut v4 = inner_v4(40);
    v4[1] = 0xb9;
    let mut v6 = inner_v6(41);
    v6[0] = 0x62;
    v6[1] = 0xa0; // traffic class 0x2a
    for (seq, (inner, tos)) in [(&v4, 0xb9u8), (&v6, 0x2a), (&v4, 0xb9)]
        .into_iter()
        .enumerate()
    {
        let f = encap_frame(&mut ws, &t, inner);
        let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.dscp_ecn(), tos);
        assert_eq!(ip.ident(), seq as u16 + 1);
        assert!(ip.verify_checksum() && !ip.dont_frag());
        // RFC 3948: no UDP checksum over IPv4.
        assert_eq!(
            udp::Packet::new_checked(ip.payload()).unwrap().checksum(),
            0
        );
    }
    // IPv6 outer: traffic class copied, UDP checksum valid for odd and even
    // lengths (checked against scapy in kat.rs and wire::udp).
    let (t6, _) = loopback(Cipher::ChaCha20Poly1305, false, true, true, 64);
    for (inner, tc) in [
        (&v4, 0xb9u8),
        (&v6, 0x2a),
        (&inner_v4(21), 0),
        (&inner_v6(77), 0),
    ] {
        let f = encap_frame(&mut ws, &t6, inner);
        let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.traffic_class(), tc);
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert_ne!(u.checksum(), 0);
        assert!(u.verify_checksum_v6(&ip.src_addr(), &ip.dst_addr()));
        let (v, _) = decap_one(&mut ws, &t6.snapshot(), &f, Duration::ZERO);
        assert!(matches!(v, Verdict::Deliver { .. }), "{v:?}");
    }
}

/// RFC 6040 section 4.2 on decap: outer CE marks an ECN-capable inner
/// packet, is dropped on a Not-ECT one; the inner IPv4 checksum stays right.
#[test]
fn decap_ecn_combination() {
    let (t, id) = loopback(Cipher::Aes256Gcm, false, false, false, 64);
    let (t6, _) = loopback(Cipher::Aes256Gcm, false, true, false, 64);
    // One worker per table: the loopback tables share SA indexes.
    let (mut ws, mut ws6) = (WorkerState::new(0), WorkerState::new(0));
    // (outer v6?, inner ECN, outer ECN forced, expected inner ECN or None = drop)
    let cases = [
        (false, 0b10, 0b11, Some(0b11)),
        (false, 0b01, 0b11, Some(0b11)),
        (false, 0b10, 0b01, Some(0b01)),
        (false, 0b00, 0b10, Some(0b00)),
        (false, 0b00, 0b11, None),
        (true, 0b01, 0b11, Some(0b11)),
        (true, 0b00, 0b11, None),
        (true, 0b11, 0b00, Some(0b11)),
    ];
    for (k, (v6, inner_ecn, outer_ecn, want)) in cases.into_iter().enumerate() {
        let mut inner = inner_v4(48);
        inner[1] = 0xb8 | inner_ecn;
        crate::wire::ipv4::Packet::new_unchecked(&mut inner[..]).fill_checksum();
        let (table, ws) = if v6 { (&t6, &mut ws6) } else { (&t, &mut ws) };
        let mut f = encap_frame(ws, table, &inner);
        if v6 {
            // Traffic class low bits: byte 1, bits 4-5 of the IPv6 header.
            f[15] = (f[15] & !0x30) | (outer_ecn << 4);
        } else {
            f[15] = (f[15] & !3) | outer_ecn;
            f = fix_v4(f);
        }
        let (v, out) = decap_one(ws, &table.snapshot(), &f, Duration::ZERO);
        match want {
            Some(e) => {
                let Verdict::Deliver { inner: r, .. } = v else {
                    panic!("case {k}: {v:?}")
                };
                let got = crate::wire::ipv4::Packet::new_checked(&out[r]).unwrap();
                assert_eq!(got.dscp_ecn(), 0xb8 | e, "case {k}");
                assert!(got.verify_checksum(), "case {k}");
            }
            None => assert_eq!(v, Verdict::Drop(DropReason::InEcnCeNotEct), "case {k}"),
        }
    }
    // Inner IPv6: ECN in the traffic class (byte 1, bits 4-5), ECT(0) + CE.
    let mut inner = inner_v6(50);
    inner[0] = 0x6b;
    inner[1] = 0xa0; // traffic class 0xba: DSCP EF, ECT(0)
    let mut f = encap_frame(&mut ws, &t, &inner);
    assert_eq!(f[15], 0xba, "outer TOS = inner traffic class");
    f[15] |= 0b11;
    let (v, out) = decap_one(&mut ws, &t.snapshot(), &fix_v4(f), Duration::ZERO);
    let Verdict::Deliver { inner: r, .. } = v else {
        panic!("{v:?}")
    };
    let got = crate::wire::ipv6::Packet::new_checked(&out[r]).unwrap();
    assert_eq!(got.traffic_class(), 0xbb);
    assert_eq!(got.flow_label(), 0);
    assert_eq!(ws.shared().drops.get(DropReason::InEcnCeNotEct), 1);
    assert_eq!(ws6.shared().drops.get(DropReason::InEcnCeNotEct), 1);
    assert_eq!(sa_counters(&[ws.shared()], id).recv_errors, 1);
}

/// The per-worker class counters come from the core's own parse, IPv6 AH
/// included (AH length in 4-octet units, RFC 4302), and a frame handed to
/// another worker is counted by that worker only.
#[test]
fn class_counters_from_the_one_parser() {
    use crate::worker::FrameClass;
    let mut ws = WorkerState::new(0);
    let (t4, _) = loopback(Cipher::Aes256Gcm, false, false, false, 64);
    let (t4u, _) = loopback(Cipher::Aes256Gcm, false, false, true, 64);
    let (t6, _) = loopback(Cipher::Aes256Gcm, false, true, false, 64);
    let (t6u, _) = loopback(Cipher::Aes256Gcm, false, true, true, 64);
    let e4 = encap_frame(&mut ws, &t4, &inner_v4(60));
    let u4 = encap_frame(&mut ws, &t4u, &inner_v4(60));
    let e6 = encap_frame(&mut ws, &t6, &inner_v4(60));
    let u6 = encap_frame(&mut ws, &t6u, &inner_v4(60));
    // ESP behind a 24-byte AH (next header 51, payload length 4).
    let mut ah = e6[..54].to_vec();
    ah[20] = 51;
    ah.extend(hex("3204 0000 00000100 00000001 aaaaaaaaaaaaaaaaaaaaaaaa"));
    ah.extend(&e6[54..]);
    let pl = u16::from_be_bytes([ah[18], ah[19]]) + 24;
    ah[18..20].copy_from_slice(&pl.to_be_bytes());
    // A fresh worker per frame (the loopback tables share SA indexes).
    let mut d = [0u64; FrameClass::COUNT];
    let arp = patch(&e4, &[(12, 0x08), (13, 0x06)]);
    for (k, (f, t)) in [
        (&e4, &t4),
        (&u4, &t4u),
        (&e6, &t6),
        (&u6, &t6u),
        (&ah, &t6),
        (&arp, &t4),
    ]
    .into_iter()
    .enumerate()
    {
        let mut w = WorkerState::new(0);
        let (v, out) = decap_one(&mut w, &t.snapshot(), f, Duration::ZERO);
        if k < 5 {
            let Verdict::Deliver { inner, .. } = v else {
                panic!("frame {k}: {v:?}")
            };
            assert_eq!(&out[inner], &inner_v4(60)[..]);
        }
        for (a, b) in d.iter_mut().zip(w.shared().classes.snapshot()) {
            *a += b;
        }
    }
    assert_eq!(
        d,
        [1, 2, 1, 1, 1],
        "{:?}",
        FrameClass::ALL.map(FrameClass::name)
    );
    let c = ws.shared().classes.snapshot();
    // Owned by worker 1: not counted by worker 0, which hands it over.
    let mut t_other = SaTable::new();
    t_other
        .apply(
            vec![SaChange::AddInbound({
                let mut c = inbound_cfg(0x215EBFF1, Cipher::Aes256Gcm, &KEY, false, 64, TUNNEL);
                c.owner = 1;
                c
            })],
            Duration::ZERO,
        )
        .unwrap();
    let (v, _) = decap_one(&mut ws, &t_other.snapshot(), &e4, Duration::ZERO);
    assert_eq!(v, Verdict::Handoff(1));
    assert_eq!(ws.shared().classes.snapshot(), c);
}

// ---------------------------------------------------------------- AES-CBC + HMAC

const CBC_KEY: [u8; 96] = [0x22; 96];
const CBC_SPI: u32 = 0x3C0C_0001;

/// A CBC loopback table (SPI [`CBC_SPI`] both ways), as [`loopback`].
fn loopback_cbc(cipher: Cipher, esn: bool, v6: bool, udp: bool) -> (SaTable, SaId) {
    let key = &CBC_KEY[..cipher.key_material_len()];
    let mut t = SaTable::new();
    let ids = t
        .apply(
            vec![
                SaChange::SetOutbound(outbound_cfg(
                    CBC_SPI,
                    TUNNEL,
                    cipher,
                    key,
                    esn,
                    outer(v6, udp),
                    0,
                )),
                SaChange::AddInbound(inbound_cfg(CBC_SPI, cipher, key, esn, 64, TUNNEL)),
                SaChange::SetUdpPorts(vec![12346..=12445, 4500..=4500]),
            ],
            Duration::ZERO,
        )
        .unwrap();
    (t, ids[1])
}

fn cbc_sha256() -> Cipher {
    Cipher::AesCbc(AesKeySize::Aes256, Integrity::HmacSha256_128)
}

/// An ESP-in-IPv4 frame for [`CBC_SPI`] with a valid ICV whose plaintext is
/// `plain` verbatim (payload, padding, pad length, next header). A `plain`
/// that is not whole blocks leaves its tail unencrypted: the ciphertext is
/// then not a multiple of 16, yet authentic.
fn cbc_frame(cipher: Cipher, plain: &[u8], seq: u32) -> Vec<u8> {
    let c = EspCipher::new(cipher, &CBC_KEY[..cipher.key_material_len()]).unwrap();
    let mut esp = CBC_SPI.to_be_bytes().to_vec();
    esp.extend(seq.to_be_bytes());
    esp.extend([0x0f ^ seq as u8; 16]); // IV
    esp.extend(plain);
    esp.extend(vec![0; cipher.icv_len()]);
    c.seal_prepared(&mut esp, CBC_SPI, u64::from(seq), false);
    let mut ipb = hex("4500000000000000403200000a2828010a1e1e01");
    let total = (20 + esp.len()) as u16;
    ipb[2..4].copy_from_slice(&total.to_be_bytes());
    ipb.extend(esp);
    crate::wire::ipv4::Packet::new_unchecked(&mut ipb[..]).fill_checksum();
    eth(&ipb)
}

#[test]
fn cbc_round_trip_every_combination() {
    for cipher in Cipher::ALL {
        if !matches!(cipher, Cipher::AesCbc(..)) {
            continue;
        }
        for esn in [false, true] {
            for v6 in [false, true] {
                for udp in [false, true] {
                    let (t, id) = loopback_cbc(cipher, esn, v6, udp);
                    let mut ws = WorkerState::new(0);
                    for (i, inner) in [inner_v4(20), inner_v6(61), inner_v4(1400), inner_v6(40)]
                        .iter()
                        .enumerate()
                    {
                        let frame = encap_frame(&mut ws, &t, inner);
                        let (v, out) = decap_one(&mut ws, &t.snapshot(), &frame, Duration::ZERO);
                        let Verdict::Deliver { tunnel, inner: r } = v else {
                            panic!("{cipher} esn={esn} v6={v6} udp={udp} #{i}: {v:?}")
                        };
                        assert_eq!(tunnel, TUNNEL);
                        assert_eq!(&out[r], &inner[..]);
                    }
                    let c = sa_counters(&[ws.shared()], id);
                    assert_eq!(c.decaps, 4);
                    assert_eq!(ws.shared().drops.total(), 0);
                }
            }
        }
    }
}

/// A bad ICV is 62 IN_OCT_MAC_EXCEPTION, counted once, with the SA's
/// `verify failed`, and the replay window does not move: the authentic
/// packets with the same and with lower sequence numbers still deliver.
#[test]
fn cbc_bad_icv_is_62_and_window_not_advanced() {
    let cipher = cbc_sha256();
    let (t, id) = loopback_cbc(cipher, false, false, false);
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|_| encap_frame(&mut ws, &t, &inner_v4(80)))
        .collect();
    // Forge the highest (seq 3): one flipped bit in the ciphertext, in the
    // IV, and in the ICV.
    let n = frames[2].len();
    for at in [n - 30, 14 + 20 + 8 + 3, n - 1] {
        let mut forged = frames[2].clone();
        forged[at] ^= 0x01;
        assert_eq!(
            decap_one(&mut ws, &snap, &forged, Duration::ZERO).0,
            Verdict::Drop(DropReason::InMacException),
            "flip at {at}"
        );
    }
    for f in [&frames[2], &frames[0], &frames[1]] {
        assert!(matches!(
            decap_one(&mut ws, &snap, f, Duration::ZERO).0,
            Verdict::Deliver { .. }
        ));
    }
    let c = sa_counters(&[ws.shared()], id);
    assert_eq!((c.verify_failed, c.decaps, c.recv_errors), (3, 3, 0));
    let d = &ws.shared().drops;
    assert_eq!(d.get(DropReason::InMacException), 3);
    assert_eq!(d.total(), 3);
    let ev = ws.shared().events.pop().unwrap();
    assert_eq!((ev.reason, ev.sa), (DropReason::InMacException, Some(id)));
}

/// The ICV is checked first: a forged packet is 62 even when its padding
/// or length is wrong too (nothing of it is decrypted or parsed).
#[test]
fn cbc_icv_is_checked_before_padding_and_length() {
    let cipher = cbc_sha256();
    let (t, id) = loopback_cbc(cipher, false, false, false);
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let bad_pad = [inner_v4(24), vec![1, 2, 9, 4, 5, 6, 6, 4]].concat();
    let short_block = [inner_v4(20), vec![1, 2, 2, 4]].concat();
    for (i, plain) in [bad_pad, short_block].iter().enumerate() {
        let mut f = cbc_frame(cipher, plain, 1 + i as u32);
        let n = f.len();
        f[n - 3] ^= 0x40; // in the ICV
        assert_eq!(
            decap_one(&mut ws, &snap, &f, Duration::ZERO).0,
            Verdict::Drop(DropReason::InMacException)
        );
    }
    let c = sa_counters(&[ws.shared()], id);
    assert_eq!((c.verify_failed, c.recv_errors), (2, 0));
}

/// Authentic packets with bad padding are 23 IN_PKT_HEADPAD_LEN_ERR, one
/// counter each, the SA's receive errors: padding bytes not 1, 2, 3, ...;
/// a pad length beyond the payload; a ciphertext that is not whole blocks.
/// They were authentic, so their sequence numbers are spent.
#[test]
fn cbc_padding_faults_are_23() {
    for cipher in [
        cbc_sha256(),
        Cipher::AesCbc(AesKeySize::Aes128, Integrity::HmacSha1_96),
    ] {
        let (t, id) = loopback_cbc(cipher, false, false, false);
        let snap = t.snapshot();
        let mut ws = WorkerState::new(0);
        // 40-byte inner + 6 padding + 2 = 48: whole blocks.
        let good = [inner_v4(40), vec![1, 2, 3, 4, 5, 6, 6, 4]].concat();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "padding byte not 4",
                [inner_v4(40), vec![1, 2, 3, 5, 5, 6, 6, 4]].concat(),
            ),
            (
                "padding starts at 0",
                [inner_v4(40), vec![0, 1, 2, 3, 4, 5, 6, 4]].concat(),
            ),
            (
                "pad length beyond the payload",
                [inner_v4(46), vec![200, 4]].concat(),
            ),
            (
                "pad length = all of the plaintext",
                [vec![1u8; 46], vec![46, 4]].concat(),
            ),
            (
                "ciphertext 52 bytes, not whole blocks",
                [inner_v4(44), vec![1, 2, 3, 4, 5, 6, 6, 4]].concat(),
            ),
            (
                "ciphertext 40 bytes, not whole blocks",
                [inner_v4(38), vec![4]].concat(),
            ),
        ];
        assert!(matches!(
            decap_one(&mut ws, &snap, &cbc_frame(cipher, &good, 1), Duration::ZERO).0,
            Verdict::Deliver { .. }
        ));
        for (i, (what, plain)) in cases.iter().enumerate() {
            let seq = 2 + i as u32;
            let f = cbc_frame(cipher, plain, seq);
            assert_eq!(
                decap_one(&mut ws, &snap, &f, Duration::ZERO).0,
                Verdict::Drop(DropReason::InHeadPadLenErr),
                "{cipher} {what}"
            );
            // Authentic: the window advanced, the same packet is a replay.
            assert_eq!(
                decap_one(&mut ws, &snap, &f, Duration::ZERO).0,
                Verdict::Drop(DropReason::InAntiReplayFail),
                "{cipher} {what} again"
            );
        }
        let n = cases.len() as u64;
        let c = sa_counters(&[ws.shared()], id);
        assert_eq!(
            (c.decaps, c.recv_errors, c.replay_duplicate, c.verify_failed),
            (1, n, n, 0),
            "{cipher}"
        );
        let d = &ws.shared().drops;
        assert_eq!(d.get(DropReason::InHeadPadLenErr), n);
        assert_eq!(d.get(DropReason::InAntiReplayFail), n);
        assert_eq!(d.total(), 2 * n);
    }
}

/// Every CBC frame of one batch ends in exactly one verdict and every drop
/// in exactly one counter: good, forged, replayed in the batch, bad padding,
/// partial block, too short, unknown SPI.
#[test]
fn cbc_accounting_one_counter_per_frame() {
    let cipher = Cipher::AesCbc(AesKeySize::Aes128, Integrity::HmacSha512_256);
    let (t, id) = loopback_cbc(cipher, false, false, false);
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let good = |seq| {
        cbc_frame(
            cipher,
            &[inner_v4(40), vec![1, 2, 3, 4, 5, 6, 6, 4]].concat(),
            seq,
        )
    };
    let mut forged = good(3);
    let fl = forged.len();
    forged[fl - 40] ^= 2;
    let mut short = good(9);
    let cut = 14 + 20 + 8 + 16 + 16 + cipher.icv_len() - 1;
    short.truncate(cut);
    let total = (short.len() - 14) as u16;
    short[16..18].copy_from_slice(&total.to_be_bytes());
    let short = fix_v4(short);
    let mut unknown = good(10);
    unknown[14 + 20] ^= 0x80;
    let frames = vec![
        good(1),
        good(2),
        forged,
        good(2), // duplicate in the same batch
        cbc_frame(
            cipher,
            &[inner_v4(40), vec![1, 2, 3, 9, 5, 6, 6, 4]].concat(),
            4,
        ),
        cbc_frame(
            cipher,
            &[inner_v4(41), vec![1, 2, 3, 4, 5, 6, 6, 4]].concat(),
            5,
        ),
        short,
        unknown,
        good(3),
    ];
    let mut batch = frames.clone();
    let mut out = vec![Verdict::Drop(DropReason::PktBufferUnavailable); batch.len()];
    decap_batch(&mut ws, &snap, &mut batch, &mut out, Duration::ZERO);
    let want = [
        None,
        None,
        Some(DropReason::InMacException),
        Some(DropReason::InAntiReplayFail),
        Some(DropReason::InHeadPadLenErr),
        Some(DropReason::InHeadPadLenErr),
        Some(DropReason::InHeadPadLenErr),
        Some(DropReason::InV4SaNotFoundSpi),
        None,
    ];
    for (i, (v, w)) in out.iter().zip(want).enumerate() {
        match w {
            None => assert!(matches!(v, Verdict::Deliver { .. }), "#{i}: {v:?}"),
            Some(r) => assert_eq!(*v, Verdict::Drop(r), "#{i}"),
        }
    }
    let shared = ws.shared();
    let drops = want.iter().filter(|w| w.is_some()).count() as u64;
    assert_eq!(shared.drops.total(), drops);
    assert_eq!(shared.delivered.load(Ordering::Relaxed), 3);
    assert_eq!(shared.drops.get(DropReason::InHeadPadLenErr), 3);
    let c = sa_counters(std::slice::from_ref(&shared), id);
    assert_eq!(
        (c.decaps, c.verify_failed, c.replay_duplicate, c.recv_errors),
        (3, 1, 1, 3)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary damage to CBC frames (cuts, flips, junk tails) never panics
    /// and every frame bumps exactly one counter or is delivered.
    #[test]
    fn cbc_damaged_frames_count_once(
        damage in prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..MAX_BATCH)
    ) {
        let cipher = Cipher::AesCbc(AesKeySize::Aes192, Integrity::HmacSha384_192);
        let (t, _) = loopback_cbc(cipher, true, false, false);
        let snap = t.snapshot();
        let mut ws = WorkerState::new(0);
        let mut frames: Vec<Vec<u8>> = damage
            .iter()
            .map(|&(at, x, kind)| {
                let mut f = encap_frame(&mut ws, &t, &inner_v4(60));
                let n = f.len();
                match kind {
                    0 => f[14 + usize::from(at) % (n - 14)] ^= x | 1,
                    1 => f.truncate(14 + usize::from(at) % (n - 14)),
                    _ => f.extend(vec![x; usize::from(at % 40)]),
                }
                f
            })
            .collect();
        let mut out = vec![Verdict::Drop(DropReason::PktBufferUnavailable); frames.len()];
        decap_batch(&mut ws, &snap, &mut frames, &mut out, Duration::ZERO);
        let s = ws.shared();
        let delivered = s.delivered.load(Ordering::Relaxed);
        let passed = s.passed.load(Ordering::Relaxed);
        let dummies = s.dummy_packets.load(Ordering::Relaxed);
        prop_assert_eq!(s.drops.total() + delivered + passed + dummies, frames.len() as u64);
        let drops = out.iter().filter(|v| matches!(v, Verdict::Drop(_))).count() as u64;
        prop_assert_eq!(drops, s.drops.total());
    }
}

/// An inner IPv4 UDP packet from 192.168.1.1 to `dst`, destination port
/// `dport`, with a 24-byte BFD-like payload (RFC 5880 control packet size).
fn inner_udp(dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut p = hex("45000034 00010000 4011 0000 c0a80101");
    p.extend_from_slice(&dst);
    p.extend_from_slice(&49152u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&hex("0020 0000"));
    p.extend_from_slice(&hex(
        "20c00318 00000001 00000000 000f4240 000f4240 00000000",
    ));
    crate::wire::ipv4::Packet::new_unchecked(&mut p[..20]).fill_checksum();
    p
}

#[test]
fn bfd_to_the_local_tunnel_address_is_punted_before_the_policy_check() {
    // Selectors allow 192.168.1.0/24 -> 192.168.2.1 only; the outer
    // destination (the local tunnel address) is 10.30.30.1.
    let (t, id) = loopback_with_selectors();
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    let local = [10, 30, 30, 1];
    let bfd = inner_udp(local, crate::pipeline::BFD_CONTROL_PORT);
    let frame = encap_frame(&mut ws, &t, &bfd);
    let (v, out) = decap_one(&mut ws, &snap, &frame, Duration::ZERO);
    let Verdict::Punt { tunnel, inner } = v else {
        panic!("{v:?}")
    };
    assert_eq!((tunnel, &out[inner]), (TUNNEL, &bfd[..]));
    let sh = ws.shared();
    assert_eq!(sh.punted.load(Ordering::Relaxed), 1);
    assert_eq!(sh.delivered.load(Ordering::Relaxed), 0);
    assert_eq!(sh.drops.total(), 0, "a punt is not a drop");
    assert!(sh.events.drain(10).is_empty());
    assert_eq!(sa_counters(std::slice::from_ref(&sh), id).decaps, 1);

    // Not for the node: policy-checked as before.
    let cases: [(Vec<u8>, Option<DropReason>); 4] = [
        // BFD port, but to an inside address the selectors allow: delivered.
        (inner_udp([192, 168, 2, 1], 3784), None),
        // The local address, another UDP port: refused by the policy.
        (
            inner_udp(local, 3785),
            Some(DropReason::InV4PostInputPolicyFail),
        ),
        // BFD port to another address outside the selectors: refused.
        (
            inner_udp([10, 30, 30, 2], 3784),
            Some(DropReason::InV4PostInputPolicyFail),
        ),
        // A fragment of a BFD packet (more fragments set): not punted.
        (
            {
                let mut p = inner_udp(local, 3784);
                p[6] = 0x20;
                crate::wire::ipv4::Packet::new_unchecked(&mut p[..20]).fill_checksum();
                p
            },
            Some(DropReason::InV4PostInputPolicyFail),
        ),
    ];
    for (i, (inner, want)) in cases.iter().enumerate() {
        let frame = encap_frame(&mut ws, &t, inner);
        let (v, out) = decap_one(&mut ws, &snap, &frame, Duration::ZERO);
        match want {
            None => {
                let Verdict::Deliver { tunnel, inner: r } = v else {
                    panic!("#{i}: {v:?}")
                };
                assert_eq!((tunnel, &out[r]), (TUNNEL, &inner[..]), "#{i}");
            }
            Some(r) => assert_eq!(v, Verdict::Drop(*r), "#{i}"),
        }
    }
    // Accounting: every frame once (1 punted, 1 delivered, 3 dropped).
    assert_eq!(sh.punted.load(Ordering::Relaxed), 1);
    assert_eq!(sh.delivered.load(Ordering::Relaxed), 1);
    assert_eq!(sh.drops.total(), 3);
    assert_eq!(
        sh.drops.get(DropReason::InV4PostInputPolicyFail),
        3,
        "one counter each"
    );
    let c = sa_counters(&[sh], id);
    assert_eq!((c.decaps, c.recv_errors), (2, 3));
}

#[test]
fn punt_classification_checks_every_length() {
    use crate::pipeline::is_punt;
    let local = ip("10.30.30.1");
    let bfd = inner_udp([10, 30, 30, 1], 3784);
    assert!(is_punt(&bfd, local));
    // Outer IPv6 (no IPv4 local address) or another local address.
    assert!(!is_punt(&bfd, ip("2001:db8::2")));
    assert!(!is_punt(&bfd, ip("10.30.30.9")));
    // Not UDP.
    assert!(!is_punt(&patch(&bfd, &[(9, 6)]), local));
    // Every truncation, and a total length cutting the UDP header: never
    // a punt, never a panic.
    for n in 0..bfd.len() {
        assert!(!is_punt(&bfd[..n], local), "{n}");
    }
    assert!(!is_punt(&patch(&bfd, &[(2, 0), (3, 24)]), local));
    // Options move the UDP header; IHL 6 with a 4-byte option.
    let mut opt = bfd[..20].to_vec();
    opt[0] = 0x46;
    opt.extend_from_slice(&[1, 1, 1, 0]);
    opt.extend_from_slice(&bfd[20..]);
    opt[3] += 4;
    assert!(is_punt(&opt, local));
    // An IPv6 inner packet never is (RFC 5881 over IPv6 is not used here).
    assert!(!is_punt(&inner_v6(60), local));
}
