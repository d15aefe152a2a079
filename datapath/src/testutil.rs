//! Helpers shared by the crate's tests.

use std::net::IpAddr;
use std::time::Duration;

use crate::crypto::{Cipher, KeyMaterial};
use crate::pipeline::{Verdict, decap_batch};
use crate::sa::{
    InboundSaConfig, OutboundSaConfig, OuterHeader, PeerKey, SaChange, SaSnapshot, Selectors,
};
use crate::worker::WorkerState;

pub(crate) use crate::wire::hex;

pub(crate) fn inbound_cfg(
    spi: u32,
    cipher: Cipher,
    key: &[u8],
    esn: bool,
    window: u32,
    tunnel: u32,
) -> InboundSaConfig {
    InboundSaConfig {
        spi,
        peer: None,
        tunnel,
        owner: 0,
        cipher,
        key: KeyMaterial::new(key.to_vec()),
        esn,
        window,
        selectors: Selectors::any(),
        name: format!("in-{spi:x}"),
    }
}

pub(crate) fn inbound_peer(cfg: InboundSaConfig, peer: PeerKey) -> SaChange {
    SaChange::AddInbound(InboundSaConfig {
        peer: Some(peer),
        ..cfg
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn outbound_cfg(
    spi: u32,
    tunnel: u32,
    cipher: Cipher,
    key: &[u8],
    esn: bool,
    outer: OuterHeader,
    last_seq: u64,
) -> OutboundSaConfig {
    OutboundSaConfig {
        spi,
        tunnel,
        owner: 0,
        cipher,
        key: KeyMaterial::new(key.to_vec()),
        esn,
        outer,
        last_seq,
        seq_limit: u64::MAX,
        name: format!("out-{spi:x}"),
    }
}

/// Decap one frame (copied) with a fresh batch, returning verdict and frame.
pub(crate) fn decap_one(
    ws: &mut WorkerState,
    snap: &SaSnapshot,
    frame: &[u8],
    now: Duration,
) -> (Verdict, Vec<u8>) {
    let mut frames = [frame.to_vec()];
    let mut out = [Verdict::Drop(crate::DropReason::PktBufferUnavailable)];
    decap_batch(ws, snap, &mut frames, &mut out, now);
    let [f] = frames;
    let [v] = out;
    (v, f)
}

/// Prefix an IP packet with an Ethernet header (f1.. <- f2..).
pub(crate) fn eth(ip: &[u8]) -> Vec<u8> {
    let ethertype: &[u8] = if ip.first().map(|b| b >> 4) == Some(6) {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    };
    let mut f = vec![0xf1; 6];
    f.extend_from_slice(&[0xf2; 6]);
    f.extend_from_slice(ethertype);
    f.extend_from_slice(ip);
    f
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
