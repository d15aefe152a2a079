//! Benchmarks for `xdpsec-datapath` live in `benches/` (criterion: `cargo
//! bench -p xdpsec-benches`) and `src/bin/decap_cost.rs` (instructions per
//! packet under callgrind, and a min-of-N timing that machine noise moves
//! less: `cargo xtask bench --callgrind`). This library holds what both set
//! up: SA tables and template batches of ESP frames.

use std::time::Duration;

use xdpsec_datapath::crypto::{Cipher, KeyMaterial};
use xdpsec_datapath::sa::{
    EthernetHeader, InboundSaConfig, OutboundSaConfig, OuterHeader, SaChange, SaTable, Selectors,
};
use xdpsec_datapath::{MAX_BATCH, WorkerState, encap};

/// AES-256-GCM key || salt of every benchmark SA.
pub const KEY: [u8; 36] = [0x5c; 36];

/// Ethernet (14) + IPv4 (20) + UDP (8): where ESP starts in the frames.
pub const ESP_OFFSET: usize = 14 + 20 + 8;

/// An inbound AES-256-GCM SA with the replay window off: the benchmarks
/// feed the same frames again and again, which would all be replays.
pub fn inbound(spi: u32) -> SaChange {
    inbound_sa(spi, Cipher::Aes256Gcm, &KEY)
}

/// [`inbound`] with another transform and its key.
pub fn inbound_sa(spi: u32, cipher: Cipher, key: &[u8]) -> SaChange {
    SaChange::AddInbound(InboundSaConfig {
        spi,
        peer: None,
        tunnel: spi,
        owner: 0,
        cipher,
        key: KeyMaterial::new(key.to_vec()),
        esn: false,
        window: 0,
        selectors: Selectors::any(),
        name: String::new(),
    })
}

/// The outbound twin of [`inbound`] on `tunnel` (it builds the frames).
pub fn outbound(spi: u32, tunnel: u32) -> SaChange {
    outbound_sa(spi, tunnel, Cipher::Aes256Gcm, &KEY)
}

/// [`outbound`] with another transform and its key.
pub fn outbound_sa(spi: u32, tunnel: u32, cipher: Cipher, key: &[u8]) -> SaChange {
    SaChange::SetOutbound(OutboundSaConfig {
        spi,
        tunnel,
        owner: 0,
        cipher,
        key: KeyMaterial::new(key.to_vec()),
        esn: false,
        outer: OuterHeader {
            src: "198.51.100.2".parse().unwrap(),
            dst: "198.51.100.1".parse().unwrap(),
            udp: Some((12346, 12346)),
            ethernet: Some(EthernetHeader {
                src: [2, 0, 0, 0, 0, 1],
                dst: [2, 0, 0, 0, 0, 2],
            }),
            ttl: 64,
        },
        last_seq: 0,
        seq_limit: u64::MAX,
        name: String::new(),
    })
}

/// An inner IPv4 packet with `payload` bytes after its header.
pub fn inner_packet(payload: usize) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 0, 0, 1, 0, 0, 63, 17, 0, 0, 203, 0, 113, 1, 203, 0, 113, 2,
    ];
    p.resize(20 + payload, 0xab);
    let l = p.len() as u16;
    p[2..4].copy_from_slice(&l.to_be_bytes());
    p
}

/// SPI of the `k`-th frame of [`templates`] in a table of `n_sas`: spread
/// over the table, all the same when `n_sas` is 1.
pub fn target_spi(n_sas: u32, k: u32) -> u32 {
    1 + (k.wrapping_mul(2_654_435_761) % n_sas)
}

/// A table with `n_sas` inbound SAs (SPIs 1..=n_sas) and outbound SAs on
/// tunnels 0..`n_frames`, tunnel k's to [`target_spi`]`(n_sas, k)`.
pub fn table(n_sas: u32, n_frames: usize) -> SaTable {
    table_for(n_sas, n_frames, Cipher::Aes256Gcm, &KEY)
}

/// [`table`] with another transform and its key for every SA.
pub fn table_for(n_sas: u32, n_frames: usize, cipher: Cipher, key: &[u8]) -> SaTable {
    let mut t = SaTable::new();
    t.apply(
        (1..=n_sas)
            .map(|spi| inbound_sa(spi, cipher, key))
            .collect(),
        Duration::ZERO,
    )
    .unwrap();
    let mut changes: Vec<SaChange> = (0..n_frames as u32)
        .map(|k| outbound_sa(target_spi(n_sas, k), k, cipher, key))
        .collect();
    changes.push(SaChange::SetUdpPorts(vec![12346..=12445]));
    t.apply(changes, Duration::ZERO).unwrap();
    t
}

/// `n_batches` template batches of [`MAX_BATCH`] frames with `payload`
/// bytes of inner payload from `table`'s outbound SAs: frame k of all of
/// them on tunnel k.
pub fn templates(table: &SaTable, payload: usize, n_batches: usize) -> Vec<Vec<Vec<u8>>> {
    let snap = table.snapshot();
    let mut ws = WorkerState::new(0);
    let inner = inner_packet(payload);
    (0..n_batches)
        .map(|b| {
            (0..MAX_BATCH)
                .map(|j| {
                    let mut out = vec![0u8; 2048];
                    let k = (b * MAX_BATCH + j) as u32;
                    let e = encap(&mut ws, &snap, k, &inner, &mut out).unwrap();
                    out.truncate(e.len);
                    out
                })
                .collect()
        })
        .collect()
}
