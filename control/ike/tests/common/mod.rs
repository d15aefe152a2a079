//! What the in-memory IKE tests share: the two underlay addresses and a
//! PSK peer configuration between them.
#![allow(dead_code)]

use std::{net::IpAddr, time::Duration};

use xdpsec_ike::{EspProposal, Identity, IkeOffer, PeerConfig, Prefix};
use zeroize::Zeroizing;

/// Node A's underlay address.
pub const A: &str = "198.51.100.1";
/// Node B's underlay address.
pub const B: &str = "198.51.100.2";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn pfx(s: &str) -> Prefix {
    let (a, l) = s.split_once('/').unwrap();
    Prefix {
        addr: ip(a),
        len: l.parse().unwrap(),
    }
}

/// Tunnel2 from `local` to `remote` (A or B) with a PSK, one /32 selector
/// each side, the proposals given, fragmentation on at the default size.
pub fn cfg(local: &str, remote: &str, ike: &[&str], esp: &[&str], initiate: bool) -> PeerConfig {
    let (lts, rts) = if local == A {
        ("203.0.113.1/32", "203.0.113.2/32")
    } else {
        ("203.0.113.2/32", "203.0.113.1/32")
    };
    PeerConfig {
        tunnel: "Tunnel2".into(),
        tunnel_index: 7,
        local: ip(local),
        remote: ip(remote),
        psk: Zeroizing::new(b"an example psk".to_vec()),
        cert: None,
        local_id: Identity::Addr(ip(local)),
        remote_id: Identity::Addr(ip(remote)),
        ike_proposals: ike
            .iter()
            .flat_map(|s| IkeOffer::parse(s).unwrap().expand())
            .collect(),
        esp_proposals: esp.iter().map(|s| EspProposal::parse(s).unwrap()).collect(),
        ike_lifetime: Duration::from_secs(86400),
        child_lifetime: Duration::from_secs(3600),
        dpd: None,
        dpd_retry: None,
        initiate,
        force_encap: false,
        nat_t_port: 4500,
        local_ts: vec![pfx(lts)],
        remote_ts: vec![pfx(rts)],
        replay_window: 64,
        invalid_spi_recovery: false,
        fragmentation: true,
        fragment_size: xdpsec_ike::frag::DEFAULT_FRAGMENT_SIZE,
    }
}
