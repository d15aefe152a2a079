//! The SD-WAN edge in `xdpsec run`: the OMP edge core and the BFD core
//! driven by the owner of control state.
//!
//! - Each local TLOC (`[[sdwan.tloc]]`) is a tunnel interface
//!   `TunnelNNNNN` (from 10001, as in the seed) listening on its TLOC port
//!   (12346 + offset, moved by port hops); the XDP port map follows.
//! - Each remote TLOC learned through the controller becomes a *peer* under
//!   every local TLOC: one datapath tunnel index with an outbound SA to the
//!   remote's SPI (pairwise key) and inbound SAs qualified by the peer's
//!   address and port (all peers share the TLOC's SPI), and a BFD session.
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
pub mod history;
pub mod io;
pub mod render;
pub mod show;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Instant,
};

use tracing::{error, info, warn};
use xdpsec_bfd::{Bfd, SessionConfig, State as BfdState};
use xdpsec_datapath::{
    crypto::{Cipher, KeyMaterial as DpKey},
    sa::{
        InboundSaConfig, LocalEndpoint, OutboundEntry, OutboundSaConfig, OuterHeader, PeerKey,
        SaChange, SaId, Selectors,
    },
};
use xdpsec_omp::{
    SdwanSa, TlocId,
    edge::{Action as OmpAction, Edge, EdgeConfig, Input as OmpInput, TlocConfig},
};

use xdpsec_worker::punt::Punted;

use crate::config::sdwan::SdwanConfig;
use crate::{
    config::Cidr,
    owner::{Key, Kind, Owner, SaSlot, Send, ShellOp, TunnelEntry},
    seqstore::{self, KeyId},
};
use io::{IoCmd, IoEvent};

/// The first local TLOC's tunnel interface number (`Tunnel10001`).
pub const TUNNEL_IF_BASE: u32 = 10_001;
/// SD-WAN peers (local TLOC x remote TLOC) a node holds at most.
pub const MAX_PEERS: u32 = 4096;
/// BFD's UDP port (RFC 5881).
const BFD_PORT: u16 = 3784;
/// BFD packets are sent and accepted with this TTL only (RFC 5881 5).
const BFD_TTL: u8 = 255;

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

/// One SD-WAN peer: a remote TLOC under a local TLOC.
#[derive(Debug)]
pub struct Peer {
    /// Datapath tunnel index (BFD session id; its SAs are in the owner's
    /// registry under the same index).
    pub index: u32,
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
    /// Peers by (local color, remote TLOC).
    pub peers: BTreeMap<(String, TlocId), Peer>,
    /// Service routes learned: prefix -> remote TLOCs it resolves through.
    pub routes: BTreeMap<xdpsec_omp::Prefix, BTreeSet<TlocId>>,
    /// Prefixes routed into the TUN device now.
    kernel_routes: BTreeSet<Cidr>,
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
    pub bfd_transitions_before: BTreeMap<(String, TlocId), u64>,
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

    /// The peer with tunnel index `index`.
    pub fn peer_by_index(&self, index: u32) -> Option<&Peer> {
        self.peers.values().find(|p| p.index == index)
    }

    fn alloc_index(&mut self) -> Option<u32> {
        let (lo, hi) = self.peer_range;
        let used: BTreeSet<u32> = self.peers.values().map(|p| p.index).collect();
        for _ in 0..MAX_PEERS {
            let i = self.next_index;
            self.next_index = if i + 1 >= hi { lo } else { i + 1 };
            if !used.contains(&i) {
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

    /// Datapath routes for the learned service prefixes: through every
    /// peer (any local and remote color) whose BFD session is up, at equal
    /// cost; prefixes without one are not routed.
    pub fn datapath_routes(&self) -> Vec<(Cidr, Vec<u32>)> {
        let mut out = Vec::new();
        for (prefix, via) in &self.routes {
            let up: Vec<u32> = self
                .peers
                .iter()
                .filter(|((_, remote), p)| via.contains(remote) && p.up_since.is_some())
                .map(|(_, p)| p.index)
                .collect();
            if !up.is_empty() {
                out.push((
                    Cidr {
                        addr: prefix.addr,
                        len: prefix.len,
                    },
                    up,
                ));
            }
        }
        out
    }
}

/// An inner IPv4/UDP BFD packet from `src` to `dst` (RFC 5881: TTL 255,
/// destination port 3784, a source port fixed per session).
fn bfd_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, payload: &[u8]) -> Vec<u8> {
    // DSCP CS6: network control.
    xdpsec_datapath::wire::build_udp_v4(src, dst, 0xc0, BFD_TTL, sport, BFD_PORT, payload)
}

/// The UDP payload of a punted BFD packet, or why it is discarded.
fn bfd_payload(pkt: &[u8]) -> Result<&[u8], bool /* bad ttl */> {
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

impl Owner {
    /// Feed the edge core one input and carry out what it returns.
    pub fn sdwan_omp(&mut self, input: OmpInput<'_>) {
        let Some(s) = self.sdwan.as_mut() else {
            return;
        };
        let actions = s.edge.handle(self.now, input);
        self.sdwan_omp_actions(actions);
    }

    /// Carry out edge-core actions (also those of commands).
    pub fn sdwan_omp_actions(&mut self, actions: Vec<OmpAction>) {
        let mut routes_changed = false;
        for a in actions {
            routes_changed |= self.sdwan_omp_action(a);
        }
        if routes_changed {
            self.sdwan_publish_routes();
        }
    }

    /// One edge-core action; true when routing may have changed.
    fn sdwan_omp_action(&mut self, a: OmpAction) -> bool {
        let Some(s) = self.sdwan.as_mut() else {
            return false;
        };
        match a {
            OmpAction::Connect { color } => {
                if let Some(t) = s.tloc(&color) {
                    let (local, remote) = (t.address, s.cfg.controller);
                    self.fx.sends.push(Send::Omp(IoCmd::Connect {
                        color,
                        local,
                        remote,
                        tls: s.cfg.tls.client(),
                    }));
                }
                false
            }
            OmpAction::Send { color, data } => {
                self.fx.sends.push(Send::Omp(IoCmd::Send { color, data }));
                false
            }
            OmpAction::Close { color } => {
                self.fx.sends.push(Send::Omp(IoCmd::Close { color }));
                false
            }
            OmpAction::Log(line) => {
                info!(target: "sdwan", "{line}");
                self.log.push(format!(
                    "{}{line}",
                    crate::state::ios_timestamp(std::time::SystemTime::now())
                ));
                false
            }
            OmpAction::TlocPort {
                color,
                address,
                port,
                old_port,
            } => {
                let Some(t) = s.tlocs.iter_mut().find(|t| t.color == color) else {
                    return false;
                };
                t.port = port;
                let still_used = |p: u16, tl: &[TlocIf]| tl.iter().any(|t| t.port == p);
                let old = old_port.filter(|p| !still_used(*p, &s.tlocs));
                info!("{color} TLOC {address} now on UDP port {port}");
                let old = old.filter(|p| !self.config.underlay.udp_ports.contains(p));
                // XDP's map is changed by the shell, off this thread: a
                // port hop once blocked it ~450 ms reading the map back,
                // long enough for other colors' BFD sessions to flap.
                let remove: Vec<u16> = old.into_iter().filter(|&o| o != port).collect();
                if let Err(e) = self.steer_udp_ports(&[port], &remove) {
                    error!("steering TLOC port {port} (from {old:?}): {e:#}");
                }
                self.publish_endpoints();
                false
            }
            OmpAction::SaInstall(sa) => {
                self.sdwan_install(sa);
                true
            }
            OmpAction::SaRemove {
                local_color,
                remote,
            } => {
                self.sdwan_remove_peer(&(local_color, remote));
                true
            }
            OmpAction::RouteAdd { prefix, via } => {
                s.routes.entry(prefix).or_default().insert(via);
                true
            }
            OmpAction::RouteRemove { prefix, via } => {
                if let Some(v) = s.routes.get_mut(&prefix) {
                    v.remove(&via);
                    if v.is_empty() {
                        s.routes.remove(&prefix);
                    }
                }
                true
            }
        }
    }

    /// Endpoints of the configured tunnels and the local TLOCs, published.
    pub fn publish_endpoints(&mut self) {
        let mut eps: Vec<LocalEndpoint> = (0..self.config.tunnels.len())
            .map(|i| crate::state::tunnel_endpoint(&self.config, i as u32))
            .collect();
        if let Some(s) = &self.sdwan {
            eps.extend(s.endpoints());
        }
        if let Err(e) = self.table.apply(
            vec![SaChange::SetEndpoints(eps)],
            self.now.duration_since(self.epoch),
        ) {
            error!("publishing tunnel endpoints: {e}");
        }
    }

    /// Install or update the SA pair of an SD-WAN peer: new inbound SAs
    /// first, then the outbound SA, then inbound SAs no longer listed.
    fn sdwan_install(&mut self, sa: SdwanSa) {
        let now = self.now.duration_since(self.epoch);
        let queues = self.queues.len().max(1) as u32;
        let Some(s) = self.sdwan.as_mut() else {
            return;
        };
        let key = (sa.local_color.clone(), sa.remote.clone());
        let Some(tloc) = s.tloc(&sa.local_color).cloned() else {
            return;
        };
        if !s.peers.contains_key(&key) {
            let Some(index) = s.alloc_index() else {
                error!(
                    "SD-WAN: {MAX_PEERS} peers in use: {} via {} not installed",
                    sa.remote, sa.local_color
                );
                return;
            };
            s.peers.insert(
                key.clone(),
                Peer {
                    index,
                    sa: sa.clone(),
                    up_since: None,
                    cleared: false,
                },
            );
            self.registry.insert(TunnelEntry {
                index,
                kind: Kind::Sdwan {
                    local_color: key.0.clone(),
                    remote: key.1.clone(),
                },
                name: tloc.name.clone(),
                local: sa.local_ip,
                peer: sa.remote_ip,
                peer_port: Some(sa.remote_port),
                worker: (index % queues) as u16,
                inbound: Vec::new(),
                outbound: None,
                out_key: None,
            });
            let cfg = SessionConfig {
                hello: s.cfg.bfd_hello,
                multiplier: s.cfg.bfd_multiplier,
            };
            let acts = s.bfd.handle(
                self.now,
                xdpsec_bfd::Input::Command(xdpsec_bfd::Command::Add {
                    session: u64::from(index),
                    config: cfg,
                }),
            );
            self.events.set_name(index, tloc.name.clone());
            self.next_hops.set_peer(index as usize, Some(sa.remote_ip));
            info!(
                "{}: peer {} {} ({}:{}) added",
                tloc.name, sa.remote.system_ip, sa.remote.color, sa.remote_ip, sa.remote_port
            );
            self.sdwan_bfd_actions(acts);
        }
        let s = self.sdwan.as_mut().expect("checked above");
        let window = s.cfg.replay_window;
        let peer = s.peers.get_mut(&key).expect("inserted above");
        if peer.cleared {
            // Scenario 2: OMP (not IKE) drives SAs, and this peer's were
            // cleared: a new route or rekey does not bring them back.
            tracing::debug!(
                "{}: peer {} was cleared (clear crypto sa): OMP update not installed",
                tloc.name,
                sa.remote
            );
            return;
        }
        let index = peer.index;
        let Some(entry) = self.registry.by_index(index) else {
            return;
        };
        let owner = entry.worker;
        let moved = peer.sa.remote_ip != sa.remote_ip || peer.sa.remote_port != sa.remote_port;
        if moved {
            self.next_hops.set_peer(index as usize, Some(sa.remote_ip));
        }
        let peer_key = PeerKey {
            addr: sa.remote_ip,
            port: sa.remote_port,
        };
        let mut changes = Vec::new();
        // Inbound: SAs for SPIs not installed yet (all of them again when
        // the peer moved: they are found by its address and port).
        let mut keep: Vec<SaSlot> = Vec::new();
        let mut remove: Vec<SaId> = Vec::new();
        for s in &entry.inbound {
            if !moved && sa.inbound.iter().any(|p| p.spi == s.spi) {
                keep.push(*s);
            } else {
                remove.push(s.id);
            }
        }
        let mut added_spis = Vec::new();
        for p in &sa.inbound {
            if keep.iter().any(|s| s.spi == p.spi) {
                continue;
            }
            added_spis.push(p.spi);
            changes.push(SaChange::AddInbound(InboundSaConfig {
                spi: p.spi,
                peer: Some(peer_key),
                tunnel: index,
                owner,
                cipher: Cipher::Aes256Gcm,
                key: DpKey::new(p.key.bytes().to_vec()),
                esn: false,
                window,
                selectors: Selectors::any(),
                name: tloc.name.clone(),
            }));
        }
        // Outbound: a new SA when the SPI, key or addressing changed.
        let out_key = KeyId::of(sa.outbound.key.bytes());
        let outer_same = peer.sa.local_port == sa.local_port && !moved;
        let out_same = entry.outbound.is_some_and(|o| o.spi == sa.outbound.spi)
            && entry.out_key == Some(out_key)
            && outer_same;
        if !out_same {
            // Resume above every number ever reserved under this key
            // (durable before the SA can send).
            let (last, limit) = seqstore::start(&mut self.seq, out_key);
            // Derived from the peer's random TLOC key: prunable once unused.
            self.seq.mark_ephemeral(out_key);
            changes.push(SaChange::SetOutbound(OutboundSaConfig {
                spi: sa.outbound.spi,
                tunnel: index,
                owner,
                cipher: Cipher::Aes256Gcm,
                key: DpKey::new(sa.outbound.key.bytes().to_vec()),
                esn: false,
                outer: OuterHeader {
                    src: sa.local_ip,
                    dst: sa.remote_ip,
                    udp: Some((sa.local_port, sa.remote_port)),
                    ethernet: None,
                    ttl: 64,
                },
                last_seq: last,
                seq_limit: limit,
                name: tloc.name.clone(),
            }));
        }
        changes.extend(remove.iter().map(|&id| SaChange::RemoveInbound(id)));
        if !out_same && let Err(e) = self.seq.commit() {
            error!(
                "{}: cannot record sequence reservations: {e:#}; peer {} not installed",
                tloc.name, sa.remote
            );
            return;
        }
        let ids = match self.table.apply(changes, now) {
            Ok(ids) => ids,
            Err(e) => {
                error!("{}: installing SAs of peer {}: {e}", tloc.name, sa.remote);
                return;
            }
        };
        // `apply` returns added SAs in change order: inbound, then outbound.
        let mut ids = ids.into_iter();
        for id in remove {
            self.registry.forget(id);
        }
        let entry = self.registry.by_index_mut(index).expect("checked above");
        let mut inbound: Vec<SaSlot> = added_spis
            .into_iter()
            .map(|spi| SaSlot {
                spi,
                id: ids.next().expect("one id per added SA"),
            })
            .collect();
        inbound.extend(keep);
        // Newest first, as OMP lists them.
        inbound.sort_by_key(|s| sa.inbound.iter().position(|p| p.spi == s.spi));
        entry.inbound = inbound;
        if !out_same {
            let id = ids.next().expect("one id per added SA");
            entry.outbound = Some(SaSlot {
                spi: sa.outbound.spi,
                id,
            });
            entry.out_key = Some(out_key);
        }
        (entry.local, entry.peer, entry.peer_port) =
            (sa.local_ip, sa.remote_ip, Some(sa.remote_port));
        let s = self.sdwan.as_mut().expect("checked above");
        let peer = s.peers.get_mut(&key).expect("inserted above");
        peer.sa = sa;
    }

    /// Remove a peer: its SAs, its BFD session, its routes.
    pub fn sdwan_remove_peer(&mut self, key: &(String, TlocId)) {
        let Some(s) = self.sdwan.as_mut() else {
            return;
        };
        let Some(peer) = s.peers.remove(key) else {
            return;
        };
        if let Some(v) = s.bfd.session(self.now, u64::from(peer.index)) {
            // Removing an up session takes it down: one transition more.
            let ended = u64::from(v.transitions) + u64::from(v.state == BfdState::Up);
            *s.bfd_transitions_before.entry(key.clone()).or_default() += ended;
        }
        let acts = s.bfd.handle(
            self.now,
            xdpsec_bfd::Input::Command(xdpsec_bfd::Command::Remove {
                session: u64::from(peer.index),
            }),
        );
        let entry = self
            .registry
            .remove(&Key::Sdwan(key.0.clone(), key.1.clone()));
        let mut changes: Vec<SaChange> = entry
            .iter()
            .flat_map(|e| &e.inbound)
            .map(|s| SaChange::RemoveInbound(s.id))
            .collect();
        changes.push(SaChange::RemoveOutbound {
            tunnel: peer.index,
            keep_invalid: false,
        });
        if let Err(e) = self
            .table
            .apply(changes, self.now.duration_since(self.epoch))
        {
            error!("removing the SAs of SD-WAN peer {}: {e}", key.1);
        }
        self.next_hops.set_peer(peer.index as usize, None);
        info!("{}: peer {} removed", key.0, key.1);
        // The session is gone: its AdminDown packets have no tunnel left.
        self.sdwan_bfd_actions(acts);
    }

    /// `clear crypto sa` deleted the SAs of the peer under `key` (on
    /// interface `name`): nothing re-creates them (OMP updates for it are
    /// ignored from now on). The command's line for it.
    pub(crate) fn sdwan_peer_cleared(&mut self, key: &(String, TlocId), name: &str) -> String {
        let Some(p) = self.sdwan.as_mut().and_then(|s| s.peers.get_mut(key)) else {
            return String::new();
        };
        p.cleared = true;
        format!(
            "{name}: SAs with peer {} ({} {}:{}) deleted; SD-WAN has no IKE: nothing negotiates new ones\n",
            p.sa.remote.system_ip, p.sa.remote.color, p.sa.remote_ip, p.sa.remote_port
        )
    }

    /// Rebuild peers (all, or those under local TLOC `color`): their SAs
    /// and BFD sessions go now, and OMP's next install creates them fresh
    /// (a cleared peer comes back this way).
    pub(crate) fn sdwan_flap_peers(&mut self, color: Option<&str>) {
        let Some(s) = self.sdwan.as_ref() else {
            return;
        };
        let keys: Vec<(String, TlocId)> = s
            .peers
            .keys()
            .filter(|(c, _)| color.is_none_or(|x| x == c))
            .cloned()
            .collect();
        for k in &keys {
            self.sdwan_remove_peer(k);
        }
        self.sdwan_publish_routes();
    }

    /// Feed the BFD core one input and carry out what it returns.
    pub fn sdwan_bfd(&mut self, input: xdpsec_bfd::Input<'_>) {
        let Some(s) = self.sdwan.as_mut() else {
            return;
        };
        let acts = s.bfd.handle(self.now, input);
        self.sdwan_bfd_actions(acts);
    }

    fn sdwan_bfd_actions(&mut self, acts: Vec<xdpsec_bfd::Action>) {
        let mut routes_changed = false;
        let snap = self.table.snapshot();
        let Some(s) = self.sdwan.as_mut() else {
            return;
        };
        for a in acts {
            match a {
                xdpsec_bfd::Action::Send { session, data } => {
                    let Some(p) = s.peers.values().find(|p| u64::from(p.index) == session) else {
                        continue;
                    };
                    let (IpAddr::V4(src), IpAddr::V4(dst)) = (p.sa.local_ip, p.sa.remote_ip) else {
                        continue;
                    };
                    if !matches!(snap.outbound(p.index), Some(OutboundEntry::Active(_))) {
                        s.bfd_drops.tx_failed += 1;
                        continue;
                    }
                    let sport = 49152 + (p.index % 16384) as u16;
                    // A full inject queue is counted by the worker.
                    self.fx.sends.push(Send::Inject {
                        tunnel: p.index,
                        packet: bfd_packet(src, dst, sport, &data),
                    });
                }
                xdpsec_bfd::Action::StateChange {
                    session,
                    old,
                    new,
                    diag,
                } => {
                    let Some(p) = s.peers.values_mut().find(|p| u64::from(p.index) == session)
                    else {
                        continue;
                    };
                    let was_up = p.up_since.is_some();
                    p.up_since = (new == BfdState::Up).then_some(self.now);
                    routes_changed |= was_up != p.up_since.is_some();
                    let name = s
                        .tlocs
                        .iter()
                        .find(|t| t.color == p.sa.local_color)
                        .map_or("", |t| t.name.as_str());
                    let line = format!(
                        "%SDWAN-5-BFD_STATE_CHANGE: BFD session {name} to system-ip {} color {} ({}:{}) from color {}: {} -> {} ({diag:?})",
                        p.sa.remote.system_ip,
                        p.sa.remote.color,
                        p.sa.remote_ip,
                        p.sa.remote_port,
                        p.sa.local_color,
                        bfd_state_name(old),
                        bfd_state_name(new),
                    );
                    if new == BfdState::Up {
                        info!(target: "sdwan", "{line}");
                    } else {
                        warn!(target: "sdwan", "{line}");
                    }
                    self.log.push(format!(
                        "{}{line}",
                        crate::state::ios_timestamp(std::time::SystemTime::now())
                    ));
                }
            }
        }
        if routes_changed {
            self.sdwan_publish_routes();
        }
    }

    /// Punted packets: BFD control packets into the core.
    pub fn sdwan_punted(&mut self, punted: Vec<Punted>) {
        for p in punted {
            let Some(s) = self.sdwan.as_mut() else {
                return;
            };
            if s.peer_by_index(p.tunnel).is_none() {
                s.bfd_drops.no_peer += 1;
                continue;
            }
            match bfd_payload(&p.packet) {
                Ok(data) => {
                    let data = data.to_vec();
                    self.sdwan_bfd(xdpsec_bfd::Input::Packet {
                        session: u64::from(p.tunnel),
                        data: &data,
                    });
                }
                Err(true) => s.bfd_drops.bad_ttl += 1,
                Err(false) => s.bfd_drops.malformed += 1,
            }
        }
    }

    /// An event of the I/O shell.
    pub fn sdwan_io(&mut self, ev: IoEvent) {
        match ev {
            IoEvent::Connected(c, peer) => self.sdwan_omp(OmpInput::Connected {
                color: &c,
                peer: &peer,
            }),
            IoEvent::Failed(c, f) => self.sdwan_omp(OmpInput::Failed {
                color: &c,
                local: f.local,
                remote_error: f.remote,
                detail: &f.detail,
            }),
            IoEvent::Closed(c) => self.sdwan_omp(OmpInput::Closed { color: &c }),
            IoEvent::Bytes(c, data) => self.sdwan_omp(OmpInput::Bytes {
                color: &c,
                data: &data,
            }),
            IoEvent::Punted(p) => self.sdwan_punted(p),
        }
    }

    /// Timers of both cores.
    pub fn sdwan_timers(&mut self) {
        let now = self.now;
        let Some(s) = self.sdwan.as_ref() else {
            return;
        };
        if s.edge.next_timeout().is_some_and(|t| t <= now) {
            self.sdwan_omp(OmpInput::Timer);
        }
        let Some(s) = self.sdwan.as_ref() else {
            return;
        };
        if s.bfd.next_timeout().is_some_and(|t| t <= now) {
            self.sdwan_bfd(xdpsec_bfd::Input::Timer);
        }
    }

    /// Republish the datapath's route table (configured tunnels' routes,
    /// then SD-WAN routes over BFD-up peers) and follow in the kernel.
    pub fn sdwan_publish_routes(&mut self) {
        let Some(s) = self.sdwan.as_mut() else {
            return;
        };
        let dyn_routes = s.datapath_routes();
        let wanted: BTreeSet<Cidr> = dyn_routes.iter().map(|(c, _)| *c).collect();
        let mut all: Vec<(Cidr, Vec<u32>)> = self
            .static_routes
            .iter()
            .map(|(c, t)| (*c, vec![*t]))
            .collect();
        all.extend(dyn_routes);
        self.routes
            .store(Arc::new(xdpsec_worker::routes::RouteTable::with_ecmp(all)));
        let crate::config::Inside::Tun { name, .. } = &self.config.inside else {
            // Gateway mode: the inside XDP program steers exactly the
            // prefixes the datapath routes (configured and SD-WAN).
            // The shell writes the map (after this input's routes are published).
            if matches!(self.config.inside, crate::config::Inside::Xdp { .. }) {
                let mut prefixes: BTreeSet<Cidr> =
                    self.static_routes.iter().map(|(c, _)| *c).collect();
                prefixes.extend(wanted.iter().copied());
                self.fx.shell.push(ShellOp::InsideRoutes(prefixes));
            }
            s.kernel_routes = wanted;
            return;
        };
        let statics: BTreeSet<Cidr> = self.static_routes.iter().map(|(c, _)| *c).collect();
        let add: Vec<Cidr> = wanted
            .difference(&s.kernel_routes)
            .filter(|c| !statics.contains(c))
            .copied()
            .collect();
        let del: Vec<Cidr> = s
            .kernel_routes
            .difference(&wanted)
            .filter(|c| !statics.contains(c))
            .copied()
            .collect();
        // Over netlink, by the shell.
        let route = |prefix: &Cidr, add| ShellOp::Route {
            dev: name.clone(),
            prefix: *prefix,
            add,
        };
        self.fx.shell.extend(add.iter().map(|c| route(c, true)));
        self.fx.shell.extend(del.iter().map(|c| route(c, false)));
        s.kernel_routes = wanted;
    }

    /// Stop: routes out of the kernel, BFD and OMP told (best effort).
    pub fn sdwan_shutdown(&mut self) {
        let Some(s) = self.sdwan.as_mut() else {
            return;
        };
        s.routes.clear();
        self.sdwan_publish_routes();
    }
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
