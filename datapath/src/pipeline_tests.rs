//! Behaviour of the decap/encap pipeline: drop classification, replay,
//! handoff, SD-WAN peer qualification, accounting over arbitrary input.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use crate::crypto::{CIPHERTEXT_OFFSET, Cipher, EspCipher, ICV_LEN, sealed_len};
use crate::drop::DropReason;
use crate::events::DropEvent;
use crate::pipeline::{MAX_BATCH, PassReason, Verdict, decap_batch, encap};
use crate::sa::{EthernetHeader, LocalEndpoint, OuterHeader, PeerKey, SaChange, SaId, SaTable};
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
            sa: None
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
    let snap = rx.snapshot();
    for (i, tx) in senders.iter().enumerate() {
        let f = encap_frame(&mut ws, tx, &inner_v4(50));
        let (v, _) = decap_one(&mut ws, &snap, &f, Duration::ZERO);
        assert!(
            matches!(v, Verdict::Deliver { tunnel, .. } if tunnel == i as u32 + 1),
            "{v:?}"
        );
    }
    // Peer 2's packet from peer 1's address matches peer 1's SA: ICV fails.
    let mut f = encap_frame(&mut ws, &senders[1], &inner_v4(50));
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

/// Frames that are valid, replayed, truncated, bit-flipped or random.
fn frame_strategy(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    prop_oneof![
        (0..n).prop_map({ let v = valid.clone(); move |i| v[i].clone() }),
        (0..n, any::<usize>()).prop_map({ let v = valid.clone(); move |(i, cut)| v[i][..cut % (v[i].len() + 1)].to_vec() }),
        (0..n, any::<usize>(), any::<u8>()).prop_map({
            let v = valid.clone();
            move |(i, at, x)| {
                let mut f = v[i].clone();
                let l = f.len();
                f[at % l] ^= x | 1;
                f
            }
        }),
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(|tail| {
            let mut f = hex("f1f1f1f1f1f1f2f2f2f2f2f20800 4500 0000 0000 0000 4032 0000 0a282801 0a1e1e01 215ebff1");
            f.extend(tail);
            let l = (f.len() - 14) as u16;
            f[16..18].copy_from_slice(&l.to_be_bytes());
            fix_v4(f)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every frame gets exactly one outcome, every drop exactly one counter:
    /// drops + delivered + passed + handoffs == frames, per reason too.
    #[test]
    fn every_frame_accounted_once(seed_frames in 1usize..6, picks in proptest::collection::vec(any::<proptest::sample::Index>(), 1..150)) {
        let (t, _) = loopback(Cipher::Aes256Gcm, true, false, true, 64);
        let mut ws = WorkerState::new(0);
        let mut valid: Vec<Vec<u8>> = (0..seed_frames).map(|i| encap_frame(&mut ws, &t, &inner_v4(30 + 7 * i))).collect();
        valid.push(encap_frame(&mut ws, &t, &inner_v6(70)));
        let strat = frame_strategy(valid);
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut frames: Vec<Vec<u8>> = picks.iter().map(|_| strat.new_tree(&mut runner).unwrap().current()).collect();
        let n = frames.len();
        let before = ws.shared().drops.snapshot();
        let mut out = vec![Verdict::Handoff(u16::MAX); n];
        prop_assert_eq!(decap_batch(&mut ws, &t.snapshot(), &mut frames, &mut out, Duration::ZERO), n);
        let after = ws.shared().drops.snapshot();
        let mut by_reason = [0u64; DropReason::COUNT];
        let (mut delivered, mut passed, mut handoff, mut dummy) = (0u64, 0u64, 0u64, 0u64);
        for v in &out {
            match v {
                Verdict::Deliver { inner, .. } => { delivered += 1; prop_assert!(inner.end <= 4096); }
                Verdict::Drop(r) => by_reason[r.index()] += 1,
                Verdict::Pass(_) => passed += 1,
                Verdict::Handoff(_) => handoff += 1,
                Verdict::Dummy => dummy += 1,
            }
        }
        for r in DropReason::ALL {
            prop_assert_eq!(after[r.index()] - before[r.index()], by_reason[r.index()], "{}", r);
        }
        let drops: u64 = by_reason.iter().sum();
        prop_assert_eq!(handoff, 0);
        prop_assert_eq!(drops + delivered + passed + dummy, n as u64);
        // Every frame classified once, by the one parser.
        prop_assert_eq!(ws.shared().classes.snapshot().iter().sum::<u64>(), n as u64);
        prop_assert_eq!(ws.shared().delivered.load(Ordering::Relaxed), delivered);
    }

    /// Arbitrary bytes never panic the pipeline (the fuzz target does more).
    #[test]
    fn arbitrary_bytes_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..80)) {
        let (t, _) = loopback(Cipher::ChaCha20Poly1305, false, true, true, 128);
        let mut ws = WorkerState::new(0);
        let mut frames = frames;
        let mut out = vec![Verdict::Handoff(0); frames.len()];
        decap_batch(&mut ws, &t.snapshot(), &mut frames, &mut out, Duration::ZERO);
        let total = ws.shared().drops.total() + ws.shared().passed.load(Ordering::Relaxed) + ws.shared().delivered.load(Ordering::Relaxed) + ws.shared().dummy_packets.load(Ordering::Relaxed);
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
