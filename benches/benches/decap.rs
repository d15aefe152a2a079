//! Decap pipeline vs bare `ring` AEAD open on the same bytes, in one run, so
//! hot-path changes show up as a ratio rather than an absolute rate (the
//! machine is small and shared): AES-256-GCM, AES-128-GCM and
//! ChaCha20-Poly1305 at 64, 512 and 1400 payload bytes with 1 SA, and
//! AES-256-GCM with 1,000,000 SAs (`decap_batch64`, cases
//! `CIPHER_SIZE_SAS`). The AES-256-CBC + HMAC-SHA-256-128 case
//! (`decap_aes256cbc_sha256_batch64`, 64, 512 and 1400 bytes) runs beside a bare `cbc` + `ring::hmac`
//! verify-then-decrypt of the same bytes.
//!
//! Each iteration copies a template batch of 64 frames (decap works in
//! place), for the pipeline and for the ring baseline alike. The bench SAs
//! have the replay window off (size 0): the same template frames are fed
//! again every iteration and would otherwise all be replays after the first.

use std::hint::black_box;
use std::time::Duration;

use aes::cipher::array::Array;
use aes::cipher::{BlockModeDecrypt, InnerIvInit, KeyInit};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use xdpsec_benches::{ESP_OFFSET, KEY, table_for, templates};
use xdpsec_datapath::crypto::{AesKeySize, Cipher, Integrity};
use xdpsec_datapath::sa::SaTable;
use xdpsec_datapath::{MAX_BATCH, Verdict, WorkerState, decap_batch};

/// AES-128-GCM's key and salt.
const KEY20: [u8; 20] = [0x5c; 20];

/// An AEAD under test: our cipher, its ESP key (key || 4-byte salt) and
/// ring's algorithm for the bare baseline.
#[derive(Clone, Copy)]
struct Aead {
    name: &'static str,
    cipher: Cipher,
    key: &'static [u8],
    ring: &'static ring::aead::Algorithm,
}

const AES256GCM: Aead = Aead {
    name: "aes256gcm",
    cipher: Cipher::Aes256Gcm,
    key: &KEY,
    ring: &AES_256_GCM,
};
const AES128GCM: Aead = Aead {
    name: "aes128gcm",
    cipher: Cipher::Aes128Gcm,
    key: &KEY20,
    ring: &ring::aead::AES_128_GCM,
};
const CHACHA: Aead = Aead {
    name: "chacha20poly1305",
    cipher: Cipher::ChaCha20Poly1305,
    key: &KEY,
    ring: &ring::aead::CHACHA20_POLY1305,
};

/// A table of `n_sas` SAs of `cipher` under `key` and one template batch
/// whose frames go to 64 SPIs spread over the table (all of them the same
/// SA when `n_sas` is 1).
fn setup(n_sas: u32, payload: usize, cipher: Cipher, key: &[u8]) -> (SaTable, Vec<Vec<u8>>) {
    let t = table_for(n_sas, MAX_BATCH, cipher, key);
    let frames = templates(&t, payload, 1).remove(0);
    (t, frames)
}

/// The `pipeline` bench of `label`: `template` (copied first, as decap
/// works in place) through `decap_batch`, after checking every frame of
/// it decapsulates.
fn bench_pipeline(
    group: &mut BenchmarkGroup<'_, WallTime>,
    label: &str,
    table: &SaTable,
    template: &[Vec<u8>],
) {
    let snap = table.snapshot();
    let mut ws = WorkerState::new(0);
    let mut frames = template.to_vec();
    let mut out = vec![Verdict::Handoff(0); MAX_BATCH];
    decap_batch(&mut ws, &snap, &mut frames, &mut out, Duration::ZERO);
    assert!(
        out.iter().all(|v| matches!(v, Verdict::Deliver { .. })),
        "{:?}",
        out[0]
    );
    group.bench_function(BenchmarkId::new("pipeline", label), |b| {
        b.iter(|| {
            for (f, t) in frames.iter_mut().zip(template) {
                f.copy_from_slice(t);
            }
            decap_batch(&mut ws, &snap, &mut frames, &mut out, Duration::ZERO);
            black_box(&out);
        })
    });
}

/// Every AEAD at 64, 512 and 1400 payload bytes with 1 SA, and AES-256-GCM
/// with 1,000,000 SAs too, each beside ring's bare open of the same bytes.
fn bench_decap(c: &mut Criterion) {
    let mut cases: Vec<(Aead, u32, usize)> = Vec::new();
    for a in [AES256GCM, AES128GCM, CHACHA] {
        for payload in [64usize, 512, 1400] {
            cases.push((a, 1, payload));
        }
    }
    for payload in [64usize, 512, 1400] {
        cases.push((AES256GCM, 1_000_000, payload));
    }
    let mut group = c.benchmark_group("decap_batch64");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10);
    group.throughput(Throughput::Elements(MAX_BATCH as u64));
    for (a, n_sas, payload) in cases {
        let ring_key =
            LessSafeKey::new(UnboundKey::new(a.ring, &a.key[..a.key.len() - 4]).unwrap());
        let salt = &a.key[a.key.len() - 4..];
        let (table, template) = setup(n_sas, payload, a.cipher, a.key);
        let label = format!("{}_{payload}B_{n_sas}sa", a.name);
        bench_pipeline(&mut group, &label, &table, &template);
        let mut frames = template.clone();
        // Bare ring on the same bytes.
        group.bench_function(BenchmarkId::new("ring_open_in_place", &label), |b| {
            b.iter(|| {
                for (f, t) in frames.iter_mut().zip(&template) {
                    f.copy_from_slice(t);
                    let (hdr, rest) = f[ESP_OFFSET..].split_at_mut(16);
                    let mut nonce = [0u8; 12];
                    nonce[..4].copy_from_slice(salt);
                    nonce[4..].copy_from_slice(&hdr[8..16]);
                    let r = ring_key.open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&hdr[..8]),
                        rest,
                    );
                    black_box(r.is_ok());
                }
            })
        });
    }
    group.finish();
}

const CBC: Cipher = Cipher::AesCbc(AesKeySize::Aes256, Integrity::HmacSha256_128);
/// AES-256 key || HMAC-SHA-256 key.
const CBC_KEY: [u8; 64] = [0x3c; 64];

fn bench_decap_cbc(c: &mut Criterion) {
    let mut group = c.benchmark_group("decap_aes256cbc_sha256_batch64");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10);
    group.throughput(Throughput::Elements(MAX_BATCH as u64));
    let aes = aes::Aes256::new_from_slice(&CBC_KEY[..32]).unwrap();
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &CBC_KEY[32..]);
    for payload in [64usize, 512, 1400] {
        let (table, template) = setup(1, payload, CBC, &CBC_KEY);
        let label = format!("{payload}B/1sa");
        bench_pipeline(&mut group, &label, &table, &template);
        let mut frames = template.clone();
        // Bare verify-then-decrypt of the same bytes: HMAC over SPI .. end
        // of ciphertext, compare the 16-byte ICV, CBC-decrypt in place.
        group.bench_function(BenchmarkId::new("cbc_hmac_bare", &label), |b| {
            b.iter(|| {
                for (f, t) in frames.iter_mut().zip(&template) {
                    f.copy_from_slice(t);
                    let esp = &mut f[ESP_OFFSET..];
                    let icv_at = esp.len() - 16;
                    let tag = hmac::sign(&mac_key, &esp[..icv_at]);
                    let ok = tag.as_ref()[..16] == esp[icv_at..];
                    let iv = Array::try_from(&esp[8..24]).unwrap();
                    let (blocks, _) = Array::slice_as_chunks_mut(&mut esp[24..icv_at]);
                    cbc::Decryptor::<&aes::Aes256>::inner_iv_init(&aes, &iv).decrypt_blocks(blocks);
                    black_box(ok);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decap, bench_decap_cbc);
criterion_main!(benches);
