//! The edge core: one control connection per local TLOC, TLOC and service
//! route advertisement, SA pairs and routes towards learned TLOCs, rekey.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::consts::*;
use crate::escape;
use crate::history::{ErrorCode, History, HistoryRow};
use crate::tls::PeerCert;
use crate::wire::{
    FrameReader, GoodbyeReason, Message, Role, ServiceRoute, TlocRoute, message_name, read_frames,
};
use crate::{KeyMaterial, Prefix, SOFTWARE_VERSION, SaParams, SdwanSa, TlocId, pairwise_key};

pub use crate::edge_types::{Action, ConnectionView, EdgeConfig, Input, TlocConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Waiting to (re)connect at this time.
    Idle { retry_at: Instant },
    /// Connect asked for (TCP and TLS); Hello sent once connected.
    Connecting { deadline: Instant },
    /// Hello sent, waiting for the controller's Hello and AuthOk.
    Handshake { deadline: Instant },
    /// Up since.
    Up { since: Instant },
}

struct Conn {
    state: ConnState,
    backoff: Duration,
    frames: FrameReader,
    controller: Option<(Ipv4Addr, u32)>,
    /// The controller's certificate, once the TLS handshake is done.
    peer: Option<PeerCert>,
    last_rx: Instant,
    next_keepalive: Instant,
}

struct Inbound {
    spi: u32,
    key: KeyMaterial,
}

struct LocalTloc {
    cfg: TlocConfig,
    hop: u16,
    current: Inbound,
    /// Old inbound keys kept until the given time; `None` while the new
    /// key has not reached any controller yet (the grace starts when it does).
    old: Vec<(Inbound, Option<Instant>)>,
    next_rekey: Instant,
    conn: Conn,
}

impl LocalTloc {
    fn port(&self) -> u16 {
        TLOC_BASE_PORT
            .wrapping_add(self.hop * PORT_HOP_STEP)
            .wrapping_add(self.cfg.port_offset)
    }
    fn id(&self, system_ip: Ipv4Addr) -> TlocId {
        TlocId {
            system_ip,
            color: self.cfg.color.clone(),
        }
    }
}

struct Learned<T> {
    route: T,
    /// Colors of the connections it was received on (and not withdrawn).
    sources: BTreeSet<String>,
    /// Set when no connection carries it any more: removed at this time.
    stale_until: Option<Instant>,
}

/// A TLOC as `show sdwan omp tlocs` lists it: the controller's view type.
pub use crate::controller::TlocView;

/// The SD-WAN edge protocol core.
pub struct Edge {
    cfg: EdgeConfig,
    rng: SystemRandom,
    locals: Vec<LocalTloc>,
    tlocs: BTreeMap<TlocId, Learned<TlocRoute>>,
    routes: BTreeMap<(Prefix, Ipv4Addr), Learned<ServiceRoute>>,
    started: bool,
    history: History,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Edge {{ system_ip: {} }}", self.cfg.system_ip)
    }
}

fn random_spi(rng: &SystemRandom, avoid: &BTreeSet<u32>) -> u32 {
    loop {
        let mut b = [0u8; 4];
        rng.fill(&mut b).expect("system random source failed");
        let spi = u32::from_be_bytes(b);
        if spi >= MIN_SPI && !avoid.contains(&spi) {
            return spi;
        }
    }
}

impl Edge {
    /// A new edge core; nothing happens until the first `handle` (any
    /// input, e.g. `Timer`), which asks for every control connection and
    /// announces every TLOC port.
    pub fn new(cfg: EdgeConfig, now: Instant) -> Edge {
        let rng = SystemRandom::new();
        let mut used = BTreeSet::new();
        let mut locals = Vec::new();
        for t in &cfg.tlocs {
            let spi = random_spi(&rng, &used);
            used.insert(spi);
            locals.push(LocalTloc {
                cfg: t.clone(),
                hop: 0,
                current: Inbound {
                    spi,
                    key: KeyMaterial::random(&rng),
                },
                old: Vec::new(),
                next_rekey: now + cfg.rekey,
                conn: Conn {
                    state: ConnState::Idle { retry_at: now },
                    backoff: RECONNECT_INITIAL,
                    frames: FrameReader::default(),
                    controller: None,
                    peer: None,
                    last_rx: now,
                    next_keepalive: now,
                },
            });
        }
        Edge {
            cfg,
            rng,
            locals,
            tlocs: BTreeMap::new(),
            routes: BTreeMap::new(),
            started: false,
            history: History::default(),
        }
    }

    /// Feeds one input; returns the actions to carry out in order.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            for l in &self.locals {
                out.push(Action::TlocPort {
                    color: l.cfg.color.clone(),
                    address: l.cfg.address,
                    port: l.port(),
                    old_port: None,
                });
            }
        }
        match input {
            Input::Failed {
                color,
                local,
                remote_error,
                detail,
            } => {
                if let Some(i) = self.local_index(color)
                    && !matches!(self.locals[i].conn.state, ConnState::Idle { .. })
                {
                    out.push(Action::Log(format!(
                        "%SDWAN-3-{}: control connection color {color} to vsmart failed: local error {local} ({}), remote error {remote_error} ({}): {}",
                        if local != ErrorCode::NoErr { local.mnemonic() } else { remote_error.mnemonic() },
                        local.description(),
                        remote_error.description(),
                        escape(detail),
                    )));
                    self.record(now, i, "connect", local, remote_error);
                    self.conn_down(now, i, "TLS handshake failed", false, &mut out);
                }
            }
            Input::Connected { color, peer } => {
                if let Some(i) = self.local_index(color)
                    && matches!(self.locals[i].conn.state, ConnState::Connecting { .. })
                {
                    let l = &mut self.locals[i];
                    l.conn.peer = Some(peer.clone());
                    l.conn.controller = peer.system_ip.map(|ip| (ip, 0));
                    l.conn.frames = FrameReader::default();
                    l.conn.last_rx = now;
                    l.conn.state = ConnState::Handshake {
                        deadline: now + HANDSHAKE_TIMEOUT,
                    };
                    let hello = Message::Hello {
                        role: Role::Edge,
                        system_ip: self.cfg.system_ip,
                        site_id: self.cfg.site_id,
                        color: color.to_owned(),
                        version: SOFTWARE_VERSION.to_owned(),
                    };
                    let refusal = if peer.organization != self.cfg.organization {
                        Some((
                            ErrorCode::CtOrgNmMis,
                            format!(
                                "certificate organization {:?}, expected {:?}",
                                escape(&peer.organization),
                                self.cfg.organization
                            ),
                        ))
                    } else if peer.role != "controller" {
                        Some((
                            ErrorCode::CrtVerFl,
                            format!(
                                "certificate role {:?}, expected \"controller\"",
                                escape(&peer.role)
                            ),
                        ))
                    } else {
                        None
                    };
                    match refusal {
                        Some((code, detail)) => self.refuse(now, i, code, &detail, &mut out),
                        None => out.push(Action::Send {
                            color: color.to_owned(),
                            data: hello.encode(),
                        }),
                    }
                }
            }
            Input::Closed { color } => {
                if let Some(i) = self.local_index(color)
                    && !matches!(self.locals[i].conn.state, ConnState::Idle { .. })
                {
                    self.conn_down(now, i, "connection closed by peer", false, &mut out);
                }
            }
            Input::Bytes { color, data } => {
                if let Some(i) = self.local_index(color)
                    && !matches!(self.locals[i].conn.state, ConnState::Idle { .. })
                {
                    self.locals[i].conn.last_rx = now;
                    // A message may take the connection down: stop then.
                    read_frames(
                        self,
                        &mut out,
                        data,
                        |s| {
                            let c = &mut s.locals[i].conn;
                            (!matches!(c.state, ConnState::Idle { .. })).then_some(&mut c.frames)
                        },
                        |s, out, m| s.on_message(now, i, m, out),
                        |s, out, e| {
                            let why = format!("protocol error: {e}");
                            s.send(i, &Message::Goodbye(GoodbyeReason::ProtocolError), out);
                            s.conn_down(now, i, &why, true, out);
                        },
                    );
                }
            }
            Input::Timer => {}
        }
        self.on_timers(now, &mut out);
        out
    }

    /// When `handle(now, Input::Timer)` is next due.
    pub fn next_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut min = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        for l in &self.locals {
            min(l.next_rekey);
            for (_, at) in &l.old {
                if let Some(at) = at {
                    min(*at);
                }
            }
            match l.conn.state {
                ConnState::Idle { retry_at } => min(retry_at),
                ConnState::Connecting { deadline } | ConnState::Handshake { deadline } => {
                    min(deadline)
                }
                ConnState::Up { .. } => {
                    min(l.conn.next_keepalive);
                    min(l.conn.last_rx + self.cfg.hold);
                }
            }
        }
        for r in self.tlocs.values() {
            if let Some(s) = r.stale_until {
                min(s);
            }
        }
        for r in self.routes.values() {
            if let Some(s) = r.stale_until {
                min(s);
            }
        }
        t
    }

    /// `request platform software sdwan security ipsec-rekey`: new inbound
    /// SPI and key for every local TLOC now (old ones kept for the grace).
    pub fn ipsec_rekey(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for i in 0..self.locals.len() {
            self.rekey(now, i, &mut out);
        }
        out
    }

    /// `clear sdwan omp all`: withdraw our routes, forget every learned
    /// route (SAs and routes removed), and relearn over fresh connections.
    pub fn clear_omp(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for i in 0..self.locals.len() {
            if matches!(self.locals[i].conn.state, ConnState::Up { .. }) {
                let mut data = Zeroizing::new(Vec::new());
                for l in &self.locals {
                    crate::zbuf::extend(
                        &mut data,
                        &Message::TlocWithdraw {
                            system_ip: self.cfg.system_ip,
                            color: l.cfg.color.clone(),
                        }
                        .encode(),
                    );
                }
                for p in &self.cfg.service_prefixes {
                    crate::zbuf::extend(
                        &mut data,
                        &Message::RouteWithdraw {
                            prefix: *p,
                            system_ip: self.cfg.system_ip,
                        }
                        .encode(),
                    );
                }
                out.push(Action::Send {
                    color: self.locals[i].cfg.color.clone(),
                    data,
                });
            }
        }
        let ids: Vec<TlocId> = self.tlocs.keys().cloned().collect();
        for id in ids {
            self.remove_tloc(&id, &mut out);
        }
        let keys: Vec<_> = self.routes.keys().cloned().collect();
        for k in keys {
            self.remove_route(&k, &mut out);
        }
        for i in 0..self.locals.len() {
            self.flap(now, i, "cleared (clear sdwan omp all)", &mut out);
        }
        out
    }

    /// `request platform software sdwan port_hop COLOR`: the TLOC moves to
    /// its next port; only that color's control connection flaps. `None`
    /// if there is no such color.
    pub fn port_hop(&mut self, now: Instant, color: &str) -> Option<Vec<Action>> {
        let i = self.local_index(color)?;
        let mut out = Vec::new();
        let old = self.locals[i].port();
        self.locals[i].hop = (self.locals[i].hop + 1) % PORT_HOP_COUNT;
        let l = &self.locals[i];
        out.push(Action::TlocPort {
            color: l.cfg.color.clone(),
            address: l.cfg.address,
            port: l.port(),
            old_port: Some(old),
        });
        out.push(Action::Log(format!(
            "%SDWAN-5-PORT_HOP: TLOC color {} moved from port {} to port {}",
            color,
            old,
            l.port()
        )));
        self.refresh_local_sas(i, &mut out);
        self.advertise_tloc_everywhere(i, Some(i), &mut out);
        self.flap(now, i, "port hop", &mut out);
        Some(out)
    }

    /// `clear sdwan control connections`: every control connection flaps
    /// (learned routes are held by graceful restart and refreshed).
    pub fn clear_control_connections(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for i in 0..self.locals.len() {
            self.flap(
                now,
                i,
                "cleared (clear sdwan control connections)",
                &mut out,
            );
        }
        out
    }

    /// `show sdwan control connections` on the edge.
    pub fn control_connections(&self, now: Instant) -> Vec<ConnectionView> {
        self.locals
            .iter()
            .map(|l| {
                let (state, up) = match l.conn.state {
                    ConnState::Up { since } => {
                        ("up", now.saturating_duration_since(since).as_secs())
                    }
                    ConnState::Connecting { .. } => ("connect", 0),
                    ConnState::Handshake { .. } => ("challenge", 0),
                    ConnState::Idle { .. } => ("down", 0),
                };
                ConnectionView {
                    peer_type: "vsmart",
                    system_ip: l.conn.controller.map(|c| c.0),
                    site_id: l.conn.controller.map(|c| c.1),
                    color: l.cfg.color.clone(),
                    state,
                    uptime_seconds: up,
                }
            })
            .collect()
    }

    /// `show sdwan omp tlocs` on the edge: local TLOCs, then learned ones.
    pub fn tlocs(&self) -> Vec<TlocView> {
        let mut v: Vec<TlocView> = self
            .locals
            .iter()
            .map(|l| TlocView {
                system_ip: self.cfg.system_ip,
                color: l.cfg.color.clone(),
                encap: "ipsec",
                public_ip: l.cfg.address,
                public_port: l.port(),
                spi: l.current.spi,
                status: "C,Red,R",
            })
            .collect();
        v.extend(self.tlocs.values().map(|r| TlocView {
            system_ip: r.route.system_ip,
            color: r.route.color.clone(),
            encap: "ipsec",
            public_ip: r.route.public_ip,
            public_port: r.route.public_port,
            spi: r.route.spi,
            status: if r.stale_until.is_some() {
                "C,I,R,Stale"
            } else {
                "C,I,R"
            },
        }));
        v
    }

    /// Learned service routes: (prefix, originating system-ip, site-id).
    pub fn routes(&self) -> Vec<ServiceRoute> {
        self.routes.values().map(|r| r.route.clone()).collect()
    }

    /// The current inbound SPI of a local TLOC.
    pub fn local_spi(&self, color: &str) -> Option<u32> {
        self.local_index(color).map(|i| self.locals[i].current.spi)
    }

    /// A local TLOC's inbound SPIs and keys, current first, then those
    /// kept for the grace time (for `show sdwan ipsec local-sa`; show only
    /// a hash of a key).
    pub fn local_sas(&self, color: &str) -> Vec<(u32, &KeyMaterial)> {
        let Some(i) = self.local_index(color) else {
            return Vec::new();
        };
        let l = &self.locals[i];
        std::iter::once((l.current.spi, &l.current.key))
            .chain(l.old.iter().rev().map(|(o, _)| (o.spi, &o.key)))
            .collect()
    }

    /// When a local TLOC's key is next replaced.
    pub fn next_rekey(&self, color: &str) -> Option<Instant> {
        self.local_index(color).map(|i| self.locals[i].next_rekey)
    }

    /// The current port of a local TLOC.
    pub fn local_port(&self, color: &str) -> Option<u16> {
        self.local_index(color).map(|i| self.locals[i].port())
    }

    fn local_index(&self, color: &str) -> Option<usize> {
        self.locals.iter().position(|l| l.cfg.color == color)
    }

    fn send(&self, i: usize, m: &Message, out: &mut Vec<Action>) {
        out.push(Action::Send {
            color: self.locals[i].cfg.color.clone(),
            data: m.encode(),
        });
    }

    fn tloc_route(&self, i: usize) -> TlocRoute {
        let l = &self.locals[i];
        TlocRoute {
            system_ip: self.cfg.system_ip,
            site_id: self.cfg.site_id,
            color: l.cfg.color.clone(),
            public_ip: l.cfg.address,
            public_port: l.port(),
            spi: l.current.spi,
            key: l.current.key.clone(),
        }
    }

    /// Advertises local TLOC `i` on every up connection (except `skip`).
    fn advertise_tloc_everywhere(&self, i: usize, skip: Option<usize>, out: &mut Vec<Action>) {
        let m = Message::TlocAdvertise(self.tloc_route(i));
        for (j, l) in self.locals.iter().enumerate() {
            if Some(j) != skip && matches!(l.conn.state, ConnState::Up { .. }) {
                self.send(j, &m, out);
            }
        }
    }

    /// Closes connection `i` and reconnects at once (operator action).
    fn flap(&mut self, now: Instant, i: usize, why: &str, out: &mut Vec<Action>) {
        let state = &self.locals[i].conn.state;
        if !matches!(state, ConnState::Idle { .. }) {
            // A Goodbye only where TCP is connected: a connect still in
            // progress has nobody to read it (the shell would queue it).
            if !matches!(state, ConnState::Connecting { .. }) {
                self.send(i, &Message::Goodbye(GoodbyeReason::Shutdown), out);
            }
            self.conn_down(now, i, why, true, out);
        }
        // An operator flap reconnects at once, without backoff.
        let l = &mut self.locals[i];
        l.conn.backoff = RECONNECT_INITIAL;
        l.conn.state = ConnState::Connecting {
            deadline: now + HANDSHAKE_TIMEOUT,
        };
        out.push(Action::Connect {
            color: l.cfg.color.clone(),
        });
    }

    /// Connection `i` is gone: routes only it carried become stale
    /// (graceful restart); reconnect after the backoff.
    fn conn_down(&mut self, now: Instant, i: usize, why: &str, close: bool, out: &mut Vec<Action>) {
        let color = self.locals[i].cfg.color.clone();
        if close {
            out.push(Action::Close {
                color: color.clone(),
            });
        }
        let was_up = matches!(self.locals[i].conn.state, ConnState::Up { .. });
        let c = &mut self.locals[i].conn;
        c.state = ConnState::Idle {
            retry_at: now + c.backoff,
        };
        c.backoff = (c.backoff * 2).min(RECONNECT_MAX);
        c.frames = FrameReader::default();
        c.peer = None;
        if was_up {
            out.push(Action::Log(format!(
                "%SDWAN-5-CONTROL_CONN_DOWN: control connection to vsmart color {color} down: {why}"
            )));
        }
        let gr = now + self.cfg.graceful_restart;
        for r in self.tlocs.values_mut() {
            if r.sources.remove(&color) && r.sources.is_empty() {
                r.stale_until = Some(gr);
            }
        }
        for r in self.routes.values_mut() {
            if r.sources.remove(&color) && r.sources.is_empty() {
                r.stale_until = Some(gr);
            }
        }
    }

    fn on_message(&mut self, now: Instant, i: usize, m: Message, out: &mut Vec<Action>) {
        let color = self.locals[i].cfg.color.clone();
        match (self.locals[i].conn.state, m) {
            (_, Message::Goodbye(reason)) => {
                let why = match reason {
                    GoodbyeReason::AuthFailed => "authentication failed",
                    GoodbyeReason::Replaced => "replaced by a newer connection",
                    GoodbyeReason::ProtocolError => "protocol error reported by peer",
                    GoodbyeReason::Shutdown => "peer shut down",
                };
                self.conn_down(now, i, why, true, out);
            }
            (_, Message::Refuse(code)) => {
                out.push(Action::Log(format!(
                    "%SDWAN-3-{}: control connection color {color} refused by vsmart: {code} ({})",
                    code.mnemonic(),
                    code.description()
                )));
                let state = match self.locals[i].conn.state {
                    ConnState::Up { .. } => "up",
                    _ => "challenge",
                };
                self.record(now, i, state, ErrorCode::NoErr, code);
                self.conn_down(now, i, "refused by vsmart", true, out);
            }
            (
                ConnState::Handshake { deadline },
                Message::Hello {
                    role: Role::Controller,
                    system_ip,
                    site_id,
                    ..
                },
            ) => {
                let c = &mut self.locals[i].conn;
                c.controller = Some((system_ip, site_id));
                c.state = ConnState::Handshake { deadline };
            }
            (ConnState::Handshake { .. }, Message::AuthOk) => {
                let grace = now + self.cfg.rekey_grace;
                for l in &mut self.locals {
                    for (_, at) in &mut l.old {
                        at.get_or_insert(grace);
                    }
                }
                let c = &mut self.locals[i].conn;
                c.state = ConnState::Up { since: now };
                c.backoff = RECONNECT_INITIAL;
                c.next_keepalive = now + self.cfg.keepalive;
                let ctrl = c.controller.map(|c| c.0.to_string()).unwrap_or_default();
                out.push(Action::Log(format!(
                    "%SDWAN-5-CONTROL_CONN_UP: control connection to vsmart {ctrl} color {color} up"
                )));
                // Our TLOCs (all colors) and service routes on every
                // connection, as each is an OMP session of its own here.
                let mut data = Zeroizing::new(Vec::new());
                for j in 0..self.locals.len() {
                    crate::zbuf::extend(
                        &mut data,
                        &Message::TlocAdvertise(self.tloc_route(j)).encode(),
                    );
                }
                for p in &self.cfg.service_prefixes {
                    crate::zbuf::extend(
                        &mut data,
                        &Message::RouteAdvertise(ServiceRoute {
                            prefix: *p,
                            system_ip: self.cfg.system_ip,
                            site_id: self.cfg.site_id,
                        })
                        .encode(),
                    );
                }
                out.push(Action::Send { color, data });
            }
            (ConnState::Up { .. }, Message::Keepalive) => {}
            (ConnState::Up { .. }, Message::TlocAdvertise(t)) => self.learn_tloc(&color, t, out),
            (
                ConnState::Up { .. },
                Message::TlocWithdraw {
                    system_ip,
                    color: c,
                },
            ) => {
                let id = TlocId {
                    system_ip,
                    color: c,
                };
                if let Some(r) = self.tlocs.get_mut(&id) {
                    r.sources.remove(&color);
                    // A withdraw from the controller is authoritative: the
                    // route goes now, whichever connections still carry it.
                    self.remove_tloc(&id, out);
                }
            }
            (ConnState::Up { .. }, Message::RouteAdvertise(r)) => self.learn_route(&color, r, out),
            (ConnState::Up { .. }, Message::RouteWithdraw { prefix, system_ip }) => {
                self.remove_route(&(prefix, system_ip), out);
            }
            (_, m) => {
                let why = format!("unexpected message {}", message_name(&m));
                self.protocol_error(now, i, &why, out);
            }
        }
    }

    /// Refuses the controller of connection `i` with Cisco's code: a
    /// `Refuse` to it (inside TLS), a log line, a history row, closed.
    fn refuse(
        &mut self,
        now: Instant,
        i: usize,
        code: ErrorCode,
        detail: &str,
        out: &mut Vec<Action>,
    ) {
        let color = self.locals[i].cfg.color.clone();
        out.push(Action::Log(format!(
            "%SDWAN-3-{}: control connection color {color} to vsmart refused: {code} ({}): {detail}",
            code.mnemonic(),
            code.description()
        )));
        self.record(now, i, "challenge", code, ErrorCode::NoErr);
        self.send(i, &Message::Refuse(code), out);
        self.conn_down(now, i, code.description(), true, out);
    }

    fn record(
        &mut self,
        now: Instant,
        i: usize,
        state: &'static str,
        local: ErrorCode,
        remote: ErrorCode,
    ) {
        let c = &self.locals[i].conn;
        let row = HistoryRow {
            peer_type: "vsmart",
            system_ip: c.controller.map(|c| c.0),
            site_id: c.controller.map_or(0, |c| c.1),
            peer_ip: self.cfg.controller.map(|a| a.ip()),
            peer_port: self.cfg.controller.map_or(0, |a| a.port()),
            color: self.locals[i].cfg.color.clone(),
            state,
            local_error: local,
            remote_error: remote,
            repeat_count: 0,
            organization: c
                .peer
                .as_ref()
                .map_or_else(String::new, |p| escape(&p.organization)),
            downtime: now,
        };
        self.history.push(row);
    }

    /// `show sdwan control connection-history`, newest first.
    pub fn history(&self) -> Vec<HistoryRow> {
        self.history.rows().cloned().collect()
    }

    /// `clear sdwan control connection-history`.
    pub fn clear_history(&mut self) {
        self.history.clear();
    }

    fn protocol_error(&mut self, now: Instant, i: usize, why: &str, out: &mut Vec<Action>) {
        self.send(i, &Message::Goodbye(GoodbyeReason::ProtocolError), out);
        self.conn_down(now, i, &format!("protocol error: {why}"), true, out);
    }

    fn learn_tloc(&mut self, from: &str, t: TlocRoute, out: &mut Vec<Action>) {
        if t.system_ip == self.cfg.system_ip {
            return;
        }
        let id = TlocId {
            system_ip: t.system_ip,
            color: t.color.clone(),
        };
        let (changed, new) = match self.tlocs.get_mut(&id) {
            Some(r) => {
                let changed = r.route != t;
                // Re-announced on a connection that did not carry it (after
                // a reconnect): install again, so a datapath that lost the
                // SA (clear crypto sa) gets it back.
                let refreshed = r.sources.insert(from.to_owned());
                r.stale_until = None;
                r.route = t;
                (changed || refreshed, false)
            }
            None => {
                self.tlocs.insert(
                    id.clone(),
                    Learned {
                        route: t,
                        sources: BTreeSet::from([from.to_owned()]),
                        stale_until: None,
                    },
                );
                (true, true)
            }
        };
        if changed {
            for i in 0..self.locals.len() {
                let sa = self.sa_for(i, &id);
                out.push(Action::SaInstall(sa));
            }
        }
        if new {
            for (p, sys) in self.routes.keys() {
                if *sys == id.system_ip {
                    out.push(Action::RouteAdd {
                        prefix: *p,
                        via: id.clone(),
                    });
                }
            }
        }
    }

    fn learn_route(&mut self, from: &str, r: ServiceRoute, out: &mut Vec<Action>) {
        if r.system_ip == self.cfg.system_ip {
            return;
        }
        let k = (r.prefix, r.system_ip);
        if let Some(l) = self.routes.get_mut(&k) {
            l.sources.insert(from.to_owned());
            l.stale_until = None;
            l.route = r;
            return;
        }
        for id in self.tlocs.keys() {
            if id.system_ip == r.system_ip {
                out.push(Action::RouteAdd {
                    prefix: r.prefix,
                    via: id.clone(),
                });
            }
        }
        self.routes.insert(
            k,
            Learned {
                route: r,
                sources: BTreeSet::from([from.to_owned()]),
                stale_until: None,
            },
        );
    }

    fn remove_tloc(&mut self, id: &TlocId, out: &mut Vec<Action>) {
        if self.tlocs.remove(id).is_none() {
            return;
        }
        for (p, sys) in self.routes.keys() {
            if *sys == id.system_ip {
                out.push(Action::RouteRemove {
                    prefix: *p,
                    via: id.clone(),
                });
            }
        }
        for l in &self.locals {
            out.push(Action::SaRemove {
                local_color: l.cfg.color.clone(),
                remote: id.clone(),
            });
        }
    }

    fn remove_route(&mut self, k: &(Prefix, Ipv4Addr), out: &mut Vec<Action>) {
        if self.routes.remove(k).is_none() {
            return;
        }
        for id in self.tlocs.keys() {
            if id.system_ip == k.1 {
                out.push(Action::RouteRemove {
                    prefix: k.0,
                    via: id.clone(),
                });
            }
        }
    }

    /// The SA pair between local TLOC `i` and learned TLOC `id`.
    fn sa_for(&self, i: usize, id: &TlocId) -> SdwanSa {
        let l = &self.locals[i];
        let me = l.id(self.cfg.system_ip);
        let r = &self.tlocs[id].route;
        let mut inbound = vec![SaParams {
            spi: l.current.spi,
            key: pairwise_key(&l.current.key, id, &me, l.current.spi),
        }];
        for (old, _) in l.old.iter().rev() {
            inbound.push(SaParams {
                spi: old.spi,
                key: pairwise_key(&old.key, id, &me, old.spi),
            });
        }
        SdwanSa {
            local_color: l.cfg.color.clone(),
            local_ip: l.cfg.address,
            local_port: l.port(),
            remote: id.clone(),
            remote_site_id: r.site_id,
            remote_ip: r.public_ip,
            remote_port: r.public_port,
            inbound,
            outbound: SaParams {
                spi: r.spi,
                key: pairwise_key(&r.key, &me, id, r.spi),
            },
        }
    }

    fn refresh_local_sas(&self, i: usize, out: &mut Vec<Action>) {
        for id in self.tlocs.keys() {
            out.push(Action::SaInstall(self.sa_for(i, id)));
        }
    }

    fn rekey(&mut self, now: Instant, i: usize, out: &mut Vec<Action>) {
        let mut used = BTreeSet::new();
        for l in &self.locals {
            used.insert(l.current.spi);
            used.extend(l.old.iter().map(|(o, _)| o.spi));
        }
        let spi = random_spi(&self.rng, &used);
        let key = KeyMaterial::random(&self.rng);
        // Peers can only move once the new route reached the controller:
        // with no connection up the grace starts when one comes up.
        let any_up = self
            .locals
            .iter()
            .any(|l| matches!(l.conn.state, ConnState::Up { .. }));
        let grace = any_up.then(|| now + self.cfg.rekey_grace);
        let l = &mut self.locals[i];
        let old = std::mem::replace(&mut l.current, Inbound { spi, key });
        let old_spi = old.spi;
        l.old.push((old, grace));
        l.next_rekey = now + self.cfg.rekey;
        out.push(Action::Log(format!(
            "%SDWAN-5-IPSEC_REKEY: TLOC color {} new inbound SPI {:#010x}, old SPI {:#010x} kept {} s",
            l.cfg.color,
            spi,
            old_spi,
            self.cfg.rekey_grace.as_secs()
        )));
        // Make before break: the new inbound SAs first, then the advertisement.
        self.refresh_local_sas(i, out);
        self.advertise_tloc_everywhere(i, None, out);
    }

    fn on_timers(&mut self, now: Instant, out: &mut Vec<Action>) {
        for i in 0..self.locals.len() {
            if self.locals[i].next_rekey <= now {
                self.rekey(now, i, out);
            }
            let before = self.locals[i].old.len();
            let old = &mut self.locals[i].old;
            old.retain(|(_, at)| at.is_none_or(|at| at > now));
            // `retain` moved the kept entries down: the slots past the new
            // length still hold their bytes (keys included).
            old.spare_capacity_mut().zeroize();
            if self.locals[i].old.len() != before {
                self.refresh_local_sas(i, out);
            }
            let color = self.locals[i].cfg.color.clone();
            match self.locals[i].conn.state {
                ConnState::Idle { retry_at } if retry_at <= now => {
                    self.locals[i].conn.state = ConnState::Connecting {
                        deadline: now + HANDSHAKE_TIMEOUT,
                    };
                    out.push(Action::Connect { color });
                }
                ConnState::Connecting { deadline } | ConnState::Handshake { deadline }
                    if deadline <= now =>
                {
                    let state = match self.locals[i].conn.state {
                        ConnState::Connecting { .. } => "connect",
                        _ => "challenge",
                    };
                    self.record(now, i, state, ErrorCode::DhsTmo, ErrorCode::NoErr);
                    self.conn_down(now, i, "handshake timeout", true, out);
                }
                ConnState::Up { .. } => {
                    if self.locals[i].conn.last_rx + self.cfg.hold <= now {
                        self.conn_down(now, i, "hold time expired", true, out);
                    } else if self.locals[i].conn.next_keepalive <= now {
                        self.locals[i].conn.next_keepalive = now + self.cfg.keepalive;
                        self.send(i, &Message::Keepalive, out);
                    }
                }
                _ => {}
            }
        }
        let expired: Vec<TlocId> = self
            .tlocs
            .iter()
            .filter(|(_, r)| r.stale_until.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for id in expired {
            out.push(Action::Log(format!(
                "%SDWAN-5-OMP_GR_EXPIRED: TLOC {id} withdrawn: graceful-restart time expired"
            )));
            self.remove_tloc(&id, out);
        }
        let expired: Vec<_> = self
            .routes
            .iter()
            .filter(|(_, r)| r.stale_until.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.remove_route(&k, out);
        }
    }
}
