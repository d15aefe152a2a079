//! Fuzz the whole receive path: arbitrary frames (raw, or valid ESP frames
//! with fuzzer-chosen mutations) through `decap_batch` with a few SAs
//! installed (AES-GCM / ChaCha20-Poly1305, IPv4 / IPv6 outer, plain / UDP,
//! ESN on / off). Checks that nothing panics and that every frame gets
//! exactly one outcome, every drop exactly one counter.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use xdpsec_datapath::crypto::{Cipher, KeyMaterial};
use xdpsec_datapath::sa::{
    AddrSet, EthernetHeader, InboundSaConfig, OutboundSaConfig, OuterHeader, Prefix, SaChange,
    SaSnapshot, SaTable, Selectors,
};
use xdpsec_datapath::{Verdict, WorkerState, decap_batch, encap};

struct Setup {
    snap: Arc<SaSnapshot>,
    templates: Vec<Vec<u8>>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let mut t = SaTable::new();
        let combos = [
            (Cipher::Aes256Gcm, false, false, true, 64u32),
            (Cipher::Aes128Gcm, true, false, false, 128),
            (Cipher::ChaCha20Poly1305, false, true, true, 0),
            (Cipher::Aes256Gcm, true, true, false, 8192),
        ];
        let mut changes = vec![SaChange::SetUdpPorts(vec![4500..=4500, 12346..=12445])];
        for (i, &(cipher, esn, v6, udp, window)) in combos.iter().enumerate() {
            let spi = 0x1000 + i as u32;
            let key = vec![i as u8 + 1; cipher.key_material_len()];
            let (src, dst): (std::net::IpAddr, std::net::IpAddr) = if v6 {
                (
                    "2001:db8::1".parse().unwrap(),
                    "2001:db8::2".parse().unwrap(),
                )
            } else {
                ("10.40.40.1".parse().unwrap(), "10.30.30.1".parse().unwrap())
            };
            changes.push(SaChange::AddInbound(InboundSaConfig {
                spi,
                peer: None,
                tunnel: i as u32,
                owner: 0,
                cipher,
                key: KeyMaterial::new(key.clone()),
                esn,
                window,
                // Every other SA checks the inner addresses (drops 30/31).
                selectors: if i % 2 == 1 {
                    Arc::new(Selectors {
                        local: AddrSet::from_prefixes(Prefix::new(dst, 24)),
                        remote: AddrSet::from_prefixes(Prefix::new(src, 64)),
                    })
                } else {
                    Selectors::any()
                },
                name: String::new(),
            }));
            changes.push(SaChange::SetOutbound(OutboundSaConfig {
                spi,
                tunnel: i as u32,
                owner: 0,
                cipher,
                key: KeyMaterial::new(key),
                esn,
                outer: OuterHeader {
                    src,
                    dst,
                    udp: udp.then_some((4500, 4500)),
                    ethernet: Some(EthernetHeader {
                        src: [2; 6],
                        dst: [4; 6],
                    }),
                    ttl: 64,
                },
                last_seq: 0,
                seq_limit: u64::MAX,
                name: String::new(),
            }));
        }
        t.apply(changes, Duration::ZERO).expect("fuzz SAs");
        let snap = t.snapshot();
        let mut ws = WorkerState::new(0);
        let mut templates = Vec::new();
        for tunnel in 0..combos.len() as u32 {
            for inner in [
                &[
                    0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
                ][..],
                &[0x60; 48][..],
            ] {
                let mut out = vec![0u8; 512];
                let e = encap(&mut ws, &snap, tunnel, inner, &mut out).expect("template");
                out.truncate(e.len);
                templates.push(out);
            }
        }
        Setup { snap, templates }
    })
}

/// The decap target: frames built from `data` through `decap_batch`.
pub fn decap(data: &[u8]) {
    let s = setup();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut rest = data;
    // Each frame: a control byte, then either a raw frame (length byte +
    // bytes) or a template index plus up to 4 (offset, xor) mutations and a
    // truncation.
    while let Some((&ctl, tail)) = rest.split_first() {
        rest = tail;
        if ctl & 1 == 0 {
            let Some((&len, tail)) = rest.split_first() else {
                break;
            };
            let n = usize::from(len).min(tail.len());
            frames.push(tail[..n].to_vec());
            rest = &tail[n..];
        } else {
            let mut f = s.templates[usize::from(ctl >> 1) % s.templates.len()].clone();
            let muts = usize::from((ctl >> 5) & 3);
            for _ in 0..muts {
                if rest.len() < 2 {
                    break;
                }
                let at = usize::from(rest[0]) * 7 % f.len();
                f[at] ^= rest[1];
                rest = &rest[2..];
            }
            if ctl & 0x80 != 0
                && let Some((&cut, tail)) = rest.split_first()
            {
                let l = f.len();
                f.truncate(l - usize::from(cut) % l);
                rest = tail;
            }
            frames.push(f);
        }
        if frames.len() >= 200 {
            break;
        }
    }
    if frames.is_empty() {
        return;
    }
    let mut ws = WorkerState::new(0);
    let mut out = vec![Verdict::Handoff(u16::MAX); frames.len()];
    let n = decap_batch(
        &mut ws,
        &s.snap,
        &mut frames,
        &mut out,
        Duration::from_secs(1),
    );
    assert_eq!(n, frames.len());
    let sh = ws.shared();
    let mut drops = 0u64;
    for (i, v) in out.iter().enumerate() {
        match v {
            Verdict::Deliver { inner, .. } | Verdict::Punt { inner, .. } => {
                assert!(inner.end <= frames[i].len())
            }
            Verdict::Drop(_) => drops += 1,
            Verdict::Pass(_) | Verdict::Dummy => {}
            Verdict::Handoff(_) => panic!("single worker owns every SA"),
        }
    }
    assert_eq!(sh.drops.total(), drops);
    assert_eq!(
        drops
            + sh.passed.load(Ordering::Relaxed)
            + sh.delivered.load(Ordering::Relaxed)
            + sh.dummy_packets.load(Ordering::Relaxed)
            + sh.punted.load(Ordering::Relaxed),
        frames.len() as u64
    );
    assert_eq!(
        sh.classes.snapshot().iter().sum::<u64>(),
        frames.len() as u64
    );
}
