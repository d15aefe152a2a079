//! The SD-WAN edge on the owner: the OMP edge core's and the BFD core's
//! actions carried out, SD-WAN peers installed into and removed from the
//! one [`Registry`] (their OMP and BFD state in [`Sdwan::peers`] under the
//! same key), routes published. The types and the runtime that need no
//! owner are in [`crate::sdwan`].
use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

use tracing::{error, info, warn};
use xdpsec_bfd::{SessionConfig, State as BfdState};
use xdpsec_datapath::{
    crypto::{Cipher, KeyMaterial as DpKey},
    sa::{
        InboundSaConfig, LocalEndpoint, OutboundEntry, OutboundSaConfig, OuterHeader, PeerKey,
        SaChange, SaId, Selectors,
    },
};
use xdpsec_omp::{
    SdwanSa, TlocId,
    edge::{Action as OmpAction, Input as OmpInput},
};
use xdpsec_worker::punt::Punted;

use super::{Key, Kind, Owner, SaSlot, Send, ShellOp, TunnelEntry};
use crate::{
    config::Cidr,
    sdwan::{
        MAX_PEERS, Peer, PeerName, TlocIf, bfd_packet, bfd_payload, bfd_state_name,
        io::{IoCmd, IoEvent},
    },
    seqstore::{self, KeyId},
};

/// The name of the SD-WAN peer registered as `e` (none for a configured
/// tunnel): its key in [`crate::sdwan::Sdwan::peers`].
pub(crate) fn peer_name(e: &TunnelEntry) -> Option<PeerName> {
    match &e.kind {
        Kind::Sdwan {
            local_color,
            remote,
        } => Some((local_color.clone(), remote.clone())),
        Kind::Manual | Kind::Ike => None,
    }
}

impl Owner {
    /// The SD-WAN peers in registry order: each one's name, registry entry
    /// (tunnel index, which is also its BFD session's id, and SAs) and OMP
    /// and BFD state.
    pub(crate) fn sdwan_peers(&self) -> impl Iterator<Item = (PeerName, &TunnelEntry, &Peer)> {
        let s = self.sdwan.as_ref();
        self.registry.iter().filter_map(move |e| {
            let name = peer_name(e)?;
            let p = s?.peers.get(&name)?;
            Some((name, e, p))
        })
    }

    /// The OMP and BFD state of the SD-WAN peer registered as `e`.
    pub(crate) fn sdwan_peer(&self, e: &TunnelEntry) -> Option<&Peer> {
        self.sdwan.as_ref()?.peers.get(&peer_name(e)?)
    }

    /// Datapath routes for the learned service prefixes: through every
    /// peer (any local and remote color) whose BFD session is up, at equal
    /// cost, in registry order; prefixes without one are not routed.
    pub(crate) fn sdwan_datapath_routes(&self) -> Vec<(Cidr, Vec<u32>)> {
        let Some(s) = &self.sdwan else {
            return Vec::new();
        };
        let up: Vec<(TlocId, u32)> = self
            .sdwan_peers()
            .filter(|(_, _, p)| p.up_since.is_some())
            .map(|((_, remote), e, _)| (remote, e.index))
            .collect();
        let mut out = Vec::new();
        for (prefix, via) in &s.routes {
            let up: Vec<u32> = up
                .iter()
                .filter(|(remote, _)| via.contains(remote))
                .map(|&(_, index)| index)
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
            let registry = &self.registry;
            let Some(index) = s.alloc_index(|i| registry.by_index(i).is_some()) else {
                error!(
                    "SD-WAN: {MAX_PEERS} peers in use: {} via {} not installed",
                    sa.remote, sa.local_color
                );
                return;
            };
            s.peers.insert(
                key.clone(),
                Peer {
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
                instance: None,
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
        let Some(entry) = self.registry.get(&Key::Sdwan(key.0.clone(), key.1.clone())) else {
            return;
        };
        let index = entry.index;
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
        let mut staged = None;
        if !out_same {
            // Resume above every number ever reserved under this key; no
            // number usable until the reservation is on disk (`reserve`).
            let (last, limit) = seqstore::start(&mut self.seq, out_key);
            staged = Some(limit);
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
                seq_limit: last,
                name: tloc.name.clone(),
            }));
        }
        changes.extend(remove.iter().map(|&id| SaChange::RemoveInbound(id)));
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
        if let Some(limit) = staged {
            self.stage_outbound(index, limit);
        }
    }

    /// Remove a peer: its SAs, its BFD session, its routes.
    pub fn sdwan_remove_peer(&mut self, name: &PeerName) {
        self.sdwan_remove_peers(std::slice::from_ref(name));
    }

    /// Remove peers: their BFD sessions, registry entries and OMP state,
    /// their SAs in one batch.
    fn sdwan_remove_peers(&mut self, names: &[PeerName]) {
        let Some(s) = self.sdwan.as_mut() else {
            return;
        };
        let mut acts = Vec::new();
        // Each peer's SA changes (one batch for all of them).
        let mut batches: Vec<(&TlocId, Vec<SaChange>)> = Vec::new();
        for name in names {
            if s.peers.remove(name).is_none() {
                continue;
            }
            let Some(entry) = self
                .registry
                .remove(&Key::Sdwan(name.0.clone(), name.1.clone()))
            else {
                error!("{}: peer {} had no tunnel", name.0, name.1);
                continue;
            };
            let session = u64::from(entry.index);
            if let Some(v) = s.bfd.session(self.now, session) {
                // Removing an up session takes it down: one transition more.
                let ended = u64::from(v.transitions) + u64::from(v.state == BfdState::Up);
                *s.bfd_transitions_before.entry(name.clone()).or_default() += ended;
            }
            acts.extend(s.bfd.handle(
                self.now,
                xdpsec_bfd::Input::Command(xdpsec_bfd::Command::Remove { session }),
            ));
            let mut changes: Vec<SaChange> = entry
                .inbound
                .iter()
                .map(|s| SaChange::RemoveInbound(s.id))
                .collect();
            changes.push(SaChange::RemoveOutbound {
                tunnel: entry.index,
                keep_invalid: false,
            });
            batches.push((&name.1, changes));
            self.next_hops.set_peer(entry.index as usize, None);
            info!("{}: peer {} removed", name.0, name.1);
        }
        let now = self.now.duration_since(self.epoch);
        let all: Vec<SaChange> = batches.iter().flat_map(|(_, c)| c.clone()).collect();
        if !all.is_empty() && self.table.apply(all, now).is_err() {
            // One peer's bookkeeping is off: the others' SAs go all the same.
            for (remote, changes) in batches {
                if let Err(e) = self.table.apply(changes, now) {
                    error!("removing the SAs of SD-WAN peer {remote}: {e}");
                }
            }
        }
        // The sessions are gone: their AdminDown packets have no tunnel left.
        self.sdwan_bfd_actions(acts);
    }

    /// `clear crypto sa` deleted the SAs of the peer `name` (on interface
    /// `tunnel`): nothing re-creates them (OMP updates for it are ignored
    /// from now on). The command's line for it.
    pub(crate) fn sdwan_peer_cleared(&mut self, name: &PeerName, tunnel: &str) -> String {
        let Some(p) = self.sdwan.as_mut().and_then(|s| s.peers.get_mut(name)) else {
            return String::new();
        };
        p.cleared = true;
        format!(
            "{tunnel}: SAs with peer {} ({} {}:{}) deleted; SD-WAN has no IKE: nothing negotiates new ones\n",
            p.sa.remote.system_ip, p.sa.remote.color, p.sa.remote_ip, p.sa.remote_port
        )
    }

    /// Rebuild peers (all, or those under local TLOC `color`), found in
    /// one walk of the registry: their SAs (one batch) and BFD sessions go
    /// now, and OMP's next install creates them fresh (a cleared peer comes
    /// back this way). How many went.
    pub(crate) fn sdwan_flap_peers(&mut self, color: Option<&str>) -> usize {
        if self.sdwan.is_none() {
            return 0;
        }
        let names: Vec<PeerName> = self
            .registry
            .iter()
            .filter_map(peer_name)
            .filter(|(c, _)| color.is_none_or(|x| x == c))
            .collect();
        self.sdwan_remove_peers(&names);
        self.sdwan_publish_routes();
        names.len()
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
        // A session's id is its peer's tunnel index: the registry names it.
        let registry = &self.registry;
        let peer_of = |session: u64| {
            let e = registry.by_index(u32::try_from(session).ok()?)?;
            Some((peer_name(e)?, e.index))
        };
        for a in acts {
            match a {
                xdpsec_bfd::Action::Send { session, data } => {
                    let Some((p, index)) =
                        peer_of(session).and_then(|(n, i)| Some((s.peers.get(&n)?, i)))
                    else {
                        continue;
                    };
                    let (IpAddr::V4(src), IpAddr::V4(dst)) = (p.sa.local_ip, p.sa.remote_ip) else {
                        continue;
                    };
                    if !matches!(snap.outbound(index), Some(OutboundEntry::Active(_))) {
                        s.bfd_drops.tx_failed += 1;
                        continue;
                    }
                    let sport = 49152 + (index % 16384) as u16;
                    // A full inject queue is counted by the worker.
                    self.fx.sends.push(Send::Inject {
                        tunnel: index,
                        packet: bfd_packet(src, dst, sport, &data),
                    });
                }
                xdpsec_bfd::Action::StateChange {
                    session,
                    old,
                    new,
                    diag,
                } => {
                    let Some(p) = peer_of(session).and_then(|(n, _)| s.peers.get_mut(&n)) else {
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
            let peer = self.registry.by_index(p.tunnel).and_then(peer_name);
            if !peer.is_some_and(|n| s.peers.contains_key(&n)) {
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

    /// Republish the datapath's route table (the templates' instances'
    /// routes, configured tunnels' routes, then SD-WAN routes over BFD-up
    /// peers) and follow in the kernel (SD-WAN routes; an instance's are
    /// within its template's `remote_subnets`, routed into the TUN or
    /// steered already).
    pub fn sdwan_publish_routes(&mut self) {
        let dyn_routes = self.sdwan_datapath_routes();
        // Instances first: one may hold its template's whole prefix.
        let mut all: Vec<(Cidr, Vec<u32>)> = self.instance_routes();
        all.extend(self.static_routes.iter().map(|(c, t)| (*c, vec![*t])));
        let wanted: BTreeSet<Cidr> = dyn_routes.iter().map(|(c, _)| *c).collect();
        all.extend(dyn_routes);
        self.routes
            .store(Arc::new(xdpsec_worker::routes::RouteTable::with_ecmp(all)));
        let Some(s) = self.sdwan.as_mut() else {
            return;
        };
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
