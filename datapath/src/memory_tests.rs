//! Memory of the SA table and a worker's per-SA state together (beside
//! `sa` and `worker`, which it measures both of).
use std::time::Duration;

use crate::{
    crypto::{Cipher, KeyMaterial},
    replay::ReplayWindow,
    sa::{InboundFootprint, InboundSaConfig, SaChange, SaTable, Selectors},
    worker::WorkerState,
};

/// RSS per inbound SA of a table of `XDPSEC_MEMORY_SAS` (default
/// 100,000) AES-256-GCM SAs at replay window 1024, each with its replay
/// window allocated on one worker (as after its first packet): what
/// `cargo xtask bench --memory` prints, one process per size. Installed
/// in batches of 10,000 as control does at start-up, so the transient
/// configs reuse each other's memory.
#[test]
#[ignore = "measures this process's RSS; `cargo xtask bench --memory` runs it in release"]
fn rss_per_inbound_sa() {
    let n: u32 = std::env::var("XDPSEC_MEMORY_SAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    const WINDOW: u32 = 1024;
    let rss = || -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/self/status");
        kb * 1024
    };
    let before = rss();
    let mut t = SaTable::new();
    let mut spi = 1u32;
    while spi <= n {
        let end = (spi + 10_000).min(n + 1);
        let changes = (spi..end)
            .map(|spi| {
                let mut key = vec![0x5c; 36];
                key[..4].copy_from_slice(&spi.to_be_bytes());
                SaChange::AddInbound(InboundSaConfig {
                    spi,
                    peer: None,
                    tunnel: spi,
                    owner: 0,
                    cipher: Cipher::Aes256Gcm,
                    key: KeyMaterial::new(key),
                    esn: false,
                    window: WINDOW,
                    selectors: Selectors::any(),
                    name: format!("Tunnel{spi}"),
                })
            })
            .collect();
        t.apply(changes, Duration::ZERO).unwrap();
        spi = end;
    }
    let snap = t.snapshot();
    let mut ws = WorkerState::new(0);
    ws.sync(&snap);
    for sa in snap.inbound_sas() {
        let slot = ws.slot(sa.id).unwrap();
        slot.window = Some(ReplayWindow::new(sa.window).unwrap());
    }
    let grown = rss().saturating_sub(before);
    let parts = InboundFootprint::of(Cipher::Aes256Gcm, WINDOW);
    println!(
        "rss_per_inbound_sa: {n} SAs, window {WINDOW}, AES-256-GCM, 1 worker: RSS +{:.1} MB = {:.0} bytes per SA (parts by size: {} bytes)",
        grown as f64 / 1e6,
        grown as f64 / f64::from(n),
        parts.total()
    );
    assert_eq!(snap.inbound_len(), n as usize);
    drop((ws, snap, t));
}
