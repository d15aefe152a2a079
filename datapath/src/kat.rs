//! Known-answer tests. Every vector here was checked with scapy 2.8.0
//! (`datapath/tests/vectors/check_vectors.py` re-verifies them and
//! regenerates the `GEN_*` frames); the tests themselves need no Python.
//!
//! Sources: draft-mcgrew-gcm-test-01 "GCM Test Vectors for ESP" (pages 7, 8,
//! 10 and 13); OpenDataPlane test/validation/api/ipsec/test_vectors.h
//! (whole frames of draft cases 2 and 3 with next header 4, and the RFC 7634
//! Appendix A ChaCha20-Poly1305 frame); frames scapy built with IV = seq.

use std::time::Duration;

use crate::crypto::{Cipher, EspCipher};
use crate::pipeline::{Verdict, encap};
use crate::replay::ReplayWindow;
use crate::sa::{OuterHeader, SaChange, SaTable};
use crate::testutil::*;
use crate::worker::WorkerState;

struct EspVector {
    name: &'static str,
    cipher: Cipher,
    key_salt: &'static str,
    spi: u32,
    seq_hi: Option<u32>,
    seq_lo: u32,
    iv: &'static str,
    plaintext: &'static str,
    ciphertext: &'static str,
    tag: &'static str,
}

// Draft plaintexts end with next header 1 (not tunnel mode), so these are
// checked at the ESP layer: ICV, decryption, trailer.
const DRAFT: &[EspVector] = &[
    EspVector {
        name: "draft p7 AES-128-GCM",
        cipher: Cipher::Aes128Gcm,
        key_salt: "feffe9928665731c6d6a8f9467308308 cafebabe",
        spi: 0x0000a5f8,
        seq_hi: None,
        seq_lo: 0x0a,
        iv: "facedbaddecaf888",
        plaintext: "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d00100
                    00010000000000000373697009637962 65726369747902646b00000100010001",
        ciphertext: "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c
                     3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd1",
        tag: "83b70d3aa8bc6ee4c309e9d85a41ad4a",
    },
    EspVector {
        name: "draft p8 AES-256-GCM",
        cipher: Cipher::Aes256Gcm,
        key_salt: "abbccddef00112233445566778899aababbccddef00112233445566778899aab 11223344",
        spi: 0x4a2cbfe3,
        seq_hi: None,
        seq_lo: 2,
        iv: "0102030405060708",
        plaintext: "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000
                    7002400020bf0000020405b40101040201020201",
        ciphertext: "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763
                     748a637985771d347f0545659f14e99def842d8e",
        tag: "b335f4eecfdbf831824b4c4915956c96",
    },
    EspVector {
        name: "draft p10 AES-128-GCM ESN (SPI 0x42f67e3f, seq 0x1010101010101010)",
        cipher: Cipher::Aes128Gcm,
        key_salt: "3de09874b388e6491988d0c3607eae1f 57690e43",
        spi: 0x42f67e3f,
        seq_hi: Some(0x10101010),
        seq_lo: 0x10101010,
        iv: "4e280000a2fca1a3",
        plaintext: "4500003c99c3000080 01cb7c40679318010101010800085c0200430061626364
                    65666768696a6b6c6d6e6f70717273747576776162636465666768690102 0201",
        ciphertext: "fba2caa4853cf9f0f22cb10d86dd83b0fec75691cf1a04b00d1138ec9c357917
                     65acbd8701ad79845bf9fe3fba487bc91755e6662b4c8d0d1f5e22739530320a",
        tag: "e0d731cc978ecafaeae88f00e80d6e48",
    },
    EspVector {
        name: "draft p13 AES-256-GCM ESN",
        cipher: Cipher::Aes256Gcm,
        key_salt: "abbccddef00112233445566778899aababbccddef00112233445566778899aab 73616c74",
        spi: 0x17405e67,
        seq_hi: Some(0x156f3126),
        seq_lo: 0xdd0db99b,
        iv: "616e640169766563",
        // Plaintext as scapy decrypts it (the draft's own listing).
        plaintext: "45080028732c00004006e9f90a0106120a01038f06b88023dd6bafbecb712602
                    50101f646d540001",
        ciphertext: "f2d69ecdbd5a0d5b8d5ef38bad4da58d1f278fde98ef67549d524a3018d9a57f
                     f4d3a31ce673119e",
        tag: "451626c2415771e3b7eebca614c89b35",
    },
];

#[test]
fn draft_vectors_open() {
    for v in DRAFT {
        let c = EspCipher::new(v.cipher, &hex(v.key_salt)).unwrap();
        let mut esp = v.spi.to_be_bytes().to_vec();
        esp.extend_from_slice(&v.seq_lo.to_be_bytes());
        esp.extend(hex(v.iv));
        esp.extend(hex(v.ciphertext));
        esp.extend(hex(v.tag));
        let mut bad = esp.clone();
        let opened = c
            .open_in_place(&mut esp, v.seq_hi)
            .unwrap_or_else(|e| panic!("{}: {e:?}", v.name));
        let pt = hex(v.plaintext);
        assert_eq!(opened.trailer.next_header, 1, "{}", v.name);
        assert_eq!(&esp[16..16 + pt.len()], &pt[..], "{}", v.name);
        assert_eq!(
            opened.payload.len(),
            pt.len() - 2 - usize::from(opened.trailer.pad_len),
            "{}",
            v.name
        );
        // The 12-byte ESN AAD matters: without the high half the ICV fails,
        // and a wrong high half fails too.
        let wrong_hi = match v.seq_hi {
            Some(h) => [None, Some(h ^ 1)],
            None => [Some(0), Some(1)],
        };
        for hi in wrong_hi {
            let mut b = bad.clone();
            assert!(
                c.open_in_place(&mut b, hi).is_err(),
                "{} with hi {hi:?}",
                v.name
            );
        }
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        assert!(c.open_in_place(&mut bad, v.seq_hi).is_err(), "{}", v.name);
    }
}

struct FrameVector {
    name: &'static str,
    cipher: Cipher,
    key_salt: &'static str,
    spi: u32,
    frame: &'static str,
    inner: &'static str,
}

const FRAMES: &[FrameVector] = &[
    FrameVector {
        name: "ODP mcgrew case 2 (AES-128-GCM)",
        cipher: Cipher::Aes128Gcm,
        key_salt: "feffe9928665731c6d6a8f9467308308 cafebabe",
        spi: 0xa5f8,
        frame: "f1f1f1f1f1f1f2f2f2f2f2f20800 45000074698f000080324d75c0a80102c0a80101
                0000a5f80000000a facedbaddecaf888
                deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c
                3de81827c10e9a4f51330d0eec416642cfbb85a5b47e48a4ec3b9ba95d918bd4
                26f8391b9927d0fcc984561bbbce9fc0",
        inner: "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d00100
                00010000000000000373697009637962 65726369747902646b0000010001",
    },
    FrameVector {
        name: "ODP mcgrew case 3 (AES-256-GCM)",
        cipher: Cipher::Aes256Gcm,
        key_salt: "abbccddef00112233445566778899aababbccddef00112233445566778899aab 11223344",
        spi: 0x4a2cbfe3,
        frame: "f1f1f1f1f1f1f2f2f2f2f2f20800 45000068698f000080324d81c0a80102c0a80101
                4a2cbfe300000002 0102030405060708
                ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763
                748a637985771d347f0545659f14e99def842d8b42f564f52dfdd6eef4f92ead
                bac23990",
        inner: "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000
                7002400020bf0000020405b401010402",
    },
    FrameVector {
        name: "ODP RFC 7634 A (ChaCha20-Poly1305)",
        cipher: Cipher::ChaCha20Poly1305,
        key_salt: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f a0a1a2a3",
        spi: 0x01020304,
        frame: "f1f1f1f1f1f1f2f2f2f2f2f20800 4500008c234500004032de5bcb007199cb007105
                0102030400000005 1011121314151617
                24039428b97f417e3c13753a4f05087b67c352e6a7fab1b982d466ef407ae5c6
                14ee8099d52844eb61aa95dfab4c02f72aa71e7c4c4f64c9befe2facc638e8f3
                cbec163fac469b502773f6fb94e664da9165b82829f641e076aaa8266b7fb0f7
                b11b369907e1ad43",
        inner: "45000054a6f200004001e778c6336405c000020508005b7a3a080000553bec10
                0007362708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223
                2425262728292a2b2c2d2e2f3031323334353637",
    },
];

#[test]
fn odp_frames_decap_through_pipeline() {
    for v in FRAMES {
        let mut t = SaTable::new();
        t.apply(
            vec![SaChange::AddInbound(inbound_cfg(
                v.spi,
                v.cipher,
                &hex(v.key_salt),
                false,
                64,
                7,
            ))],
            Duration::ZERO,
        )
        .unwrap();
        let snap = t.snapshot();
        let mut ws = WorkerState::new(0);
        let frame = hex(v.frame);
        let (verdict, out) = decap_one(&mut ws, &snap, &frame, Duration::ZERO);
        let Verdict::Deliver { tunnel, inner } = verdict else {
            panic!("{}: {verdict:?}", v.name)
        };
        assert_eq!(tunnel, 7);
        assert_eq!(&out[inner], &hex(v.inner)[..], "{}", v.name);
        // The same frame again is a replay.
        let (again, _) = decap_one(&mut ws, &snap, &frame, Duration::ZERO);
        assert_eq!(
            again,
            Verdict::Drop(crate::DropReason::InAntiReplayFail),
            "{}",
            v.name
        );
    }
}

struct GenVector {
    name: &'static str,
    cipher: Cipher,
    key_salt: Vec<u8>,
    spi: u32,
    seq: u64,
    esn: bool,
    outer: OuterHeader,
    inner: &'static str,
    packet: &'static str,
}

fn gen_vectors() -> Vec<GenVector> {
    let inner_v4 =
        "45000028000100003f11f771c0a80101c0a8020104d2162e0014ce4568656c6c6f20786470736563";
    let inner_v6 = "600000000018113ffd000001000000000000000000000001fd000002000000000000000000000001\
                    04d2162e001801f368656c6c6f2078647073656320763621";
    let key = |range: core::ops::Range<u8>, salt: &str| {
        let mut k: Vec<u8> = range.collect();
        k.extend(hex(salt));
        k
    };
    vec![
        GenVector {
            name: "AES-256-GCM, IPv4 + UDP 12346",
            cipher: Cipher::Aes256Gcm,
            key_salt: key(1..33, "deadbeef"),
            spi: 0x215EBFF1,
            seq: 5,
            esn: false,
            outer: OuterHeader {
                src: ip("10.40.40.1"),
                dst: ip("10.30.30.1"),
                udp: Some((12346, 12346)),
                ethernet: None,
                ttl: 64,
            },
            inner: inner_v4,
            packet: "4500006800050000401120390a2828010a1e1e01303a303a00540000215ebff1\
                     000000050000000000000005f976b556e747bcc782d6fb1771ab3e65d99fcdbf\
                     373111b2115613022f195648c3611222eeb7de8b381ddf0e86a323098e43c933\
                     43805ce9da040044",
        },
        GenVector {
            name: "AES-128-GCM ESN seq 2^32+7, IPv6",
            cipher: Cipher::Aes128Gcm,
            key_salt: key(0x40..0x50, "01020304"),
            spi: 0x241BBFF1,
            seq: (1 << 32) + 7,
            esn: true,
            outer: OuterHeader {
                src: ip("2001:db8::1"),
                dst: ip("2001:db8::2"),
                udp: None,
                ethernet: None,
                ttl: 64,
            },
            inner: inner_v6,
            packet: "600000000064324020010db800000000000000000000000120010db800000000\
                     0000000000000002241bbff100000007000000010000000788932f1ad2278e67\
                     48f411eb68fa7f5efa69ff722c45397da15bae3bc53608ff8d4df301cbc3923e\
                     8601b731a8a15556b1acae6522b3c297513068b74295e47a5516e8ce53438dac\
                     1c4a0e0f6a0a329bac384014",
        },
        GenVector {
            name: "ChaCha20-Poly1305, IPv4, inner IPv6",
            cipher: Cipher::ChaCha20Poly1305,
            key_salt: key(0x80..0xa0, "a0a1a2a3"),
            spi: 0x1000,
            seq: 1,
            esn: false,
            outer: OuterHeader {
                src: ip("10.40.40.1"),
                dst: ip("10.30.30.1"),
                udp: None,
                ethernet: None,
                ttl: 64,
            },
            inner: inner_v6,
            packet: "45000078000100004032200c0a2828010a1e1e01000010000000000100000000\
                     00000001fa63ec05d8b6fb7c01d44e0427ea696460e0d7f81781bb432267aa18\
                     dc3ffe4829c5938bd9066343ccddaedccdf7134c90aadc2ea6653ac0fc2b3ddc\
                     d3559161f9b9c8528656554189be1c8ab0d9d92eb60cd619",
        },
        GenVector {
            // UDP checksum over IPv6 and the copied traffic class as scapy
            // computes them (check_vectors.py: gen_gcm256_v6_udp).
            name: "AES-256-GCM, IPv6 + UDP 4500, inner DSCP EF + ECT(1)",
            cipher: Cipher::Aes256Gcm,
            key_salt: key(1..33, "deadbeef"),
            spi: 0x215EBFF2,
            seq: 9,
            esn: false,
            outer: OuterHeader {
                src: ip("2001:db8::1"),
                dst: ip("2001:db8::2"),
                udp: Some((4500, 4500)),
                ethernet: None,
                ttl: 64,
            },
            inner: "45b9002b000200003f11f6b4c0a80101c0a8020104d2162e001767fa68656c6c6f20786470736563204546",
            packet: "6b9000000058114020010db800000000000000000000000120010db800000000\
                     000000000000000211941194005873ce215ebff2000000090000000000000009\
                     a9d8efad0bc0b8b8c6be7e35f51852e6ed548b5b4d0ae53e0144305e50675d2f\
                     e604f7ce8a1a5c1fbcf423326d497e3aa44d747d57cf3a13ea98af897fb3620e",
        },
    ]
}

/// Our encap output equals scapy's byte for byte (IV = sequence number),
/// and our decap opens scapy's frames.
#[test]
fn encap_matches_scapy_and_decap_opens_it() {
    for v in gen_vectors() {
        let mut t = SaTable::new();
        let mut changes = vec![SaChange::SetOutbound(outbound_cfg(
            v.spi,
            3,
            v.cipher,
            &v.key_salt,
            v.esn,
            v.outer,
            v.seq - 1,
        ))];
        changes.push(SaChange::AddInbound(inbound_cfg(
            v.spi,
            v.cipher,
            &v.key_salt,
            v.esn,
            1024,
            3,
        )));
        changes.push(SaChange::SetUdpPorts(vec![12346..=12445, 4500..=4500]));
        let ids = t.apply(changes, Duration::ZERO).unwrap();
        let snap = t.snapshot();
        let mut ws = WorkerState::new(0);
        let inner = hex(v.inner);
        let mut out = vec![0u8; 2048];
        let e = encap(&mut ws, &snap, 3, &inner, &mut out).unwrap();
        assert_eq!(e.seq, v.seq);
        assert_eq!(&out[..e.len], &hex(v.packet)[..], "{}", v.name);
        if v.esn {
            // A receiver that already saw 2^32 + 1 infers the high half.
            let slot = ws.slot(ids[1]).unwrap();
            let mut w = ReplayWindow::new(1024).unwrap();
            w.check_and_advance((1 << 32) + 1).unwrap();
            slot.window = Some(Box::new(w));
        }
        let (verdict, frame) = decap_one(&mut ws, &snap, &eth(&hex(v.packet)), Duration::ZERO);
        let Verdict::Deliver {
            tunnel: 3,
            inner: r,
        } = verdict
        else {
            panic!("{}: {verdict:?}", v.name)
        };
        assert_eq!(&frame[r], &inner[..], "{}", v.name);
    }
}
