//! The SD-WAN edge in `xdpsec run`: the OMP edge core and the BFD core
//! driven by the owner of control state (in `owner/sdwan.rs`, its shows in
//! `owner/sdwan_show.rs`); here the edge's state and what needs no owner.
//!
//! - Each local TLOC (`[[sdwan.tloc]]`) is a tunnel interface
//!   `TunnelNNNNN` (from 10001, as in the seed) listening on its TLOC port
//!   (12346 + offset, moved by port hops); the XDP port map follows.
//! - Each remote TLOC learned through the controller becomes a *peer* under
//!   every local TLOC: an entry of the owner's tunnel registry (one datapath
//!   tunnel index with an outbound SA to the remote's SPI, pairwise key, and
//!   inbound SAs qualified by the peer's address and port: all peers share
//!   the TLOC's SPI), and here its OMP parameters and a BFD session (whose
//!   id is the entry's tunnel index), under the same key.
//! - BFD runs inside the tunnels (RFC 5881: inner IPv4/UDP 3784, TTL 255,
//!   from the sending TLOC's address to the receiving TLOC's): the workers
//!   punt what they decrypt; hellos are injected on the peer's tunnel.
//! - Service routes go through the peers whose BFD session is up: into the
//!   datapath's route table and, in tun mode, into the kernel (via the TUN).
//!
//! Outbound sequence numbers of SD-WAN SAs are reserved in `state_dir`
//! under the pairwise key's fingerprint, as for manual keys: a restart
//! resumes above them, so a key the remote still advertises never sees a
//! nonce twice (and the remote's replay window keeps accepting).
pub mod io;
pub mod render;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use xdpsec_bfd::{Bfd, State as BfdState};
use xdpsec_datapath::sa::LocalEndpoint;
use xdpsec_omp::{
    SdwanSa, TlocId,
    edge::{Edge, EdgeConfig, TlocConfig},
};

use crate::config::{Cidr, sdwan::SdwanConfig};

/// The first local TLOC's tunnel interface number (`Tunnel10001`).
pub const TUNNEL_IF_BASE: u32 = 10_001;
/// SD-WAN peers (local TLOC x remote TLOC) a node holds at most.
pub const MAX_PEERS: u32 = 4096;
/// BFD's UDP port (RFC 5881).
const BFD_PORT: u16 = 3784;
/// BFD packets are sent and accepted with this TTL only (RFC 5881 5).
const BFD_TTL: u8 = 255;

/// An SD-WAN peer's name: (local color, remote TLOC), as its registry key
/// (`owner::Key::Sdwan`) holds it.
pub type PeerName = (String, TlocId);

/// A local TLOC as a tunnel interface.
#[derive(Debug, Clone)]
pub struct TlocIf {
    /// Color.
    pub color: String,
    /// Its underlay address.
    pub address: IpAddr,
    /// Current port (12346 + hop * 20 + offset).
    pub port: u16,
    /// `TunnelNNNNN`.
    pub name: String,
    /// Datapath tunnel index naming it (ESP with an unknown SPI to it).
    pub index: u32,
}

/// One SD-WAN peer's OMP and BFD state: a remote TLOC under a local TLOC.
/// Its tunnel (datapath index, which is also its BFD session's id, and
/// SAs) is the owner's registry entry under the same name.
#[derive(Debug)]
pub struct Peer {
    /// The SA pair's parameters as OMP gave them (keys included: zeroized on drop).
    pub sa: SdwanSa,
    /// BFD: up since (routes use the peer only then).
    pub up_since: Option<Instant>,
    /// `clear crypto sa` deleted its SAs: nothing re-creates them (OMP
    /// updates are ignored) until the peer is rebuilt by `clear sdwan omp
    /// all`, a port hop of its color or `clear sdwan control connections`
    /// (the seed's scenario 2).
    pub cleared: bool,
}

/// BFD packets the shell discarded before the core (each counted once).
#[derive(Debug, Default, Clone, Copy)]
pub struct BfdShellDrops {
    /// Not IPv4/UDP to port 3784 (cannot happen after the datapath's punt check).
    pub malformed: u64,
    /// TTL not 255 (RFC 5881 5).
    pub bad_ttl: u64,
    /// Arrived on a tunnel that has no peer any more.
    pub no_peer: u64,
    /// Hellos not injected: no outbound SA yet (a full inject queue is
    /// counted by the worker).
    pub tx_failed: u64,
}

/// The edge's state, held by the owner.
pub struct Sdwan {
    /// The `[sdwan]` config.
    pub cfg: SdwanConfig,
    /// The OMP edge core.
    pub edge: Edge,
    /// The BFD core (a session per peer).
    pub bfd: Bfd,
    /// Local TLOCs, config order.
    pub tlocs: Vec<TlocIf>,
    /// Peers' OMP and BFD state by (local color, remote TLOC), the key of
    /// their registry entries.
    pub peers: BTreeMap<PeerName, Peer>,
    /// Service routes learned: prefix -> remote TLOCs it resolves through.
    pub routes: BTreeMap<xdpsec_omp::Prefix, BTreeSet<TlocId>>,
    /// Prefixes routed into the TUN device now.
    pub(crate) kernel_routes: BTreeSet<Cidr>,
    /// First and one-past-last peer index.
    peer_range: (u32, u32),
    /// Next peer index to try (indices are reused only after a full round,
    /// so a removed session's last AdminDown packets never meet a new one).
    next_index: u32,
    /// Shell-side BFD discards.
    pub bfd_drops: BfdShellDrops,
    /// When a TLOC last moved port (`port_hop`).
    pub last_port_hop: Option<Instant>,
    /// BFD transitions of removed sessions, by (local color, remote TLOC):
    /// a peer rebuilt by `clear sdwan omp all`, a port hop or `clear sdwan
    /// control connections` gets a new session, and its count carries on
    /// from these (the removal counted as the down transition), so the
    /// flap shows in `show sdwan bfd sessions` as on a router.
    pub bfd_transitions_before: BTreeMap<PeerName, u64>,
}

impl Sdwan {
    /// The edge for `cfg`. Local TLOC `i` is named `Tunnel{10001+i}` and
    /// gets tunnel index `first_index + i`; peers take the `MAX_PEERS`
    /// indices after those.
    pub fn new(cfg: SdwanConfig, first_index: u32, now: Instant) -> Sdwan {
        let tlocs: Vec<TlocIf> = cfg
            .tlocs
            .iter()
            .enumerate()
            .map(|(i, t)| TlocIf {
                color: t.color.clone(),
                address: t.address,
                port: 0,
                name: format!("Tunnel{}", TUNNEL_IF_BASE + i as u32),
                index: first_index + i as u32,
            })
            .collect();
        let mut ec = EdgeConfig::new(
            cfg.system_ip,
            cfg.site_id,
            &cfg.tls.organization,
            cfg.tlocs
                .iter()
                .map(|t| TlocConfig {
                    color: t.color.clone(),
                    address: t.address,
                    port_offset: t.port_offset,
                })
                .collect(),
        );
        ec.service_prefixes = cfg
            .service_prefixes
            .iter()
            .filter_map(|c| xdpsec_omp::Prefix::new(c.addr, c.len))
            .collect();
        ec.controller = Some(cfg.controller);
        ec.rekey = cfg.rekey;
        ec.rekey_grace = cfg.rekey_grace;
        ec.graceful_restart = cfg.graceful_restart;
        let mut seed = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .expect("system random source failed");
        let start = first_index + tlocs.len() as u32;
        Sdwan {
            edge: Edge::new(ec, now),
            bfd: Bfd::new(u64::from_le_bytes(seed)),
            tlocs,
            peers: BTreeMap::new(),
            routes: BTreeMap::new(),
            kernel_routes: BTreeSet::new(),
            peer_range: (start, start + MAX_PEERS),
            next_index: start,
            bfd_drops: BfdShellDrops::default(),
            last_port_hop: None,
            bfd_transitions_before: BTreeMap::new(),
            cfg,
        }
    }

    /// When the cores next want a `Timer`.
    pub fn next_timeout(&self) -> Option<Instant> {
        match (self.edge.next_timeout(), self.bfd.next_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The local TLOC of `color`.
    pub fn tloc(&self, color: &str) -> Option<&TlocIf> {
        self.tlocs.iter().find(|t| t.color == color)
    }

    /// A tunnel index for a new peer: the next one of the peers' range
    /// that is not `used`.
    pub(crate) fn alloc_index(&mut self, used: impl Fn(u32) -> bool) -> Option<u32> {
        let (lo, hi) = self.peer_range;
        for _ in 0..MAX_PEERS {
            let i = self.next_index;
            self.next_index = if i + 1 >= hi { lo } else { i + 1 };
            if !used(i) {
                return Some(i);
            }
        }
        None
    }

    /// The local TLOCs as datapath endpoints (naming them in logs).
    pub fn endpoints(&self) -> Vec<LocalEndpoint> {
        self.tlocs
            .iter()
            .filter(|t| t.port != 0)
            .map(|t| LocalEndpoint {
                addr: t.address,
                udp_port: Some(t.port),
                tunnel: t.index,
            })
            .collect()
    }
}

/// An inner IPv4/UDP BFD packet from `src` to `dst` (RFC 5881: TTL 255,
/// destination port 3784, a source port fixed per session).
pub(crate) fn bfd_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, payload: &[u8]) -> Vec<u8> {
    // DSCP CS6: network control.
    xdpsec_datapath::wire::build_udp_v4(src, dst, 0xc0, BFD_TTL, sport, BFD_PORT, payload)
}

/// The UDP payload of a punted BFD packet, or why it is discarded.
pub(crate) fn bfd_payload(pkt: &[u8]) -> Result<&[u8], bool /* bad ttl */> {
    if pkt.len() < 28 || pkt[0] >> 4 != 4 || pkt[9] != 17 {
        return Err(false);
    }
    let ihl = usize::from(pkt[0] & 0xf) * 4;
    if ihl < 20 || pkt.len() < ihl + 8 {
        return Err(false);
    }
    if pkt[8] != BFD_TTL {
        return Err(true);
    }
    let udp = &pkt[ihl..];
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if u16::from_be_bytes([udp[2], udp[3]]) != BFD_PORT || ulen < 8 || ulen > udp.len() {
        return Err(false);
    }
    Ok(&udp[8..ulen])
}

/// IOS spelling of a BFD state.
pub fn bfd_state_name(s: BfdState) -> &'static str {
    match s {
        BfdState::Up => "up",
        BfdState::Down => "down",
        BfdState::Init => "init",
        BfdState::AdminDown => "admin-down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xdpsec_datapath::wire::checksum as cks;

    #[test]
    fn bfd_packets_round_trip_with_valid_checksums() {
        let p = bfd_packet(
            "198.51.100.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
            49153,
            &[1, 2, 3, 4, 5],
        );
        assert_eq!(p.len(), 33);
        assert_eq!(cks::compute(&p[..20]), 0, "IPv4 header checksum");
        let pseudo = cks::pseudo_header_v4(
            &"198.51.100.1".parse().unwrap(),
            &"198.51.100.2".parse().unwrap(),
            13,
            17,
        );
        assert_eq!(!cks::combine(pseudo, cks::sum(&p[20..])), 0, "UDP checksum");
        assert_eq!(p[8], 255);
        assert_eq!(bfd_payload(&p), Ok(&[1u8, 2, 3, 4, 5][..]));
        let mut low = p.clone();
        low[8] = 254;
        assert_eq!(bfd_payload(&low), Err(true));
        assert_eq!(bfd_payload(&p[..20]), Err(false));
    }
}
