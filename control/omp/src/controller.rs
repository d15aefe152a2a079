//! The controller core (vSmart-like): authenticates edge connections and
//! reflects each edge's TLOC and service routes to the other edges, holding
//! the routes of an edge whose connections dropped for the graceful-restart
//! time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::consts::*;
use crate::edge::message_name;
use crate::wire::{
    FrameReader, GoodbyeReason, Message, Role, ServiceRoute, TlocRoute, auth_check, auth_mac,
};
use crate::{Prefix, SOFTWARE_VERSION};

/// A connection as the shell numbers it (unique while the core runs).
pub type ConnId = u64;

/// The controller core's configuration.
#[derive(Clone)]
pub struct ControllerConfig {
    /// The controller's own system-ip (sent in Hello).
    pub system_ip: Ipv4Addr,
    /// Pre-shared key of the control connections.
    pub psk: Zeroizing<Vec<u8>>,
    /// Routes of an edge with no connection left are withdrawn after this.
    pub graceful_restart: Duration,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// No message for this long: the connection is down.
    pub hold: Duration,
}

impl ControllerConfig {
    /// A configuration with the default timers.
    pub fn new(system_ip: Ipv4Addr, psk: &[u8]) -> Self {
        ControllerConfig {
            system_ip,
            psk: Zeroizing::new(psk.to_vec()),
            graceful_restart: GRACEFUL_RESTART,
            keepalive: KEEPALIVE_INTERVAL,
            hold: KEEPALIVE_HOLD,
        }
    }
}

impl std::fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerConfig")
            .field("system_ip", &self.system_ip)
            .field("psk", &"<redacted>")
            .field("graceful_restart", &self.graceful_restart)
            .finish()
    }
}

/// What the shell tells the controller core.
#[derive(Debug)]
pub enum Input<'a> {
    /// A TCP connection was accepted.
    Accepted {
        /// The shell's number for it.
        conn: ConnId,
        /// The edge's address and port.
        remote: SocketAddr,
    },
    /// Bytes arrived on it.
    Bytes {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: &'a [u8],
    },
    /// The peer closed it (or it failed).
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// `next_timeout()` has passed.
    Timer,
}

/// What the controller core asks the shell to do, in order.
pub enum Action {
    /// Write bytes to a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// One or more frames (may carry key material: zeroized on drop).
        data: Zeroizing<Vec<u8>>,
    },
    /// Close a connection (no `Closed` input is expected after it).
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// A log line (IOS-style, never a key).
    Log(String),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Frames may carry key material: only their length is shown.
            Action::Send { conn, data } => {
                write!(f, "Send {{ conn: {conn}, data: <{} bytes> }}", data.len())
            }
            Action::Close { conn } => write!(f, "Close {{ conn: {conn} }}"),
            Action::Log(l) => write!(f, "Log({l:?})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CState {
    /// Waiting for the edge's Hello.
    Hello,
    /// Our Hello and Auth sent; waiting for the edge's Auth.
    Challenge {
        system_ip: Ipv4Addr,
        site_id: u32,
        color: String,
        edge_nonce: [u8; NONCE_LEN],
        our_nonce: [u8; NONCE_LEN],
    },
    /// Authenticated.
    Up {
        system_ip: Ipv4Addr,
        site_id: u32,
        color: String,
        since: Instant,
    },
}

struct CConn {
    remote: SocketAddr,
    state: CState,
    frames: FrameReader,
    accepted: Instant,
    last_rx: Instant,
    next_keepalive: Instant,
}

struct EdgeState {
    site_id: u32,
    tlocs: BTreeMap<String, TlocRoute>,
    services: BTreeMap<Prefix, ServiceRoute>,
    conns: BTreeSet<ConnId>,
    /// Set while no connection of the edge is up: withdrawn at this time.
    stale_until: Option<Instant>,
    since: Instant,
}

/// `show sdwan omp peers` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Edge system-ip.
    pub system_ip: Ipv4Addr,
    /// Edge site-id.
    pub site_id: u32,
    /// Always `vedge`.
    pub peer_type: &'static str,
    /// `up`, or `down` while held by graceful restart (IOS shows `down`
    /// there too; its routes are marked stale).
    pub state: &'static str,
    /// Seconds since the edge's first connection came up.
    pub uptime_seconds: u64,
    /// Routes (TLOC + service) received from it.
    pub received: usize,
    /// Routes (TLOC + service) of other edges reflected to it.
    pub sent: usize,
}

/// `show sdwan omp tlocs` row (never a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlocView {
    /// Originator.
    pub system_ip: Ipv4Addr,
    /// Color.
    pub color: String,
    /// Always `ipsec`.
    pub encap: &'static str,
    /// Public address.
    pub public_ip: IpAddr,
    /// Public port.
    pub public_port: u16,
    /// Inbound SPI.
    pub spi: u32,
    /// `C,R` (chosen, resolved), `C,R,Stale` under graceful restart.
    pub status: &'static str,
}

/// `show sdwan omp routes` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    /// The prefix.
    pub prefix: Prefix,
    /// Originating edge.
    pub originator: Ipv4Addr,
    /// Its site-id.
    pub site_id: u32,
    /// Colors of the originator's TLOCs the route resolves through.
    pub tloc_colors: Vec<String>,
    /// `C,R` or `C,R,Stale`.
    pub status: &'static str,
}

/// `show sdwan control connections` row on the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionView {
    /// Always `vedge`.
    pub peer_type: &'static str,
    /// Edge system-ip (once its Hello arrived).
    pub system_ip: Option<Ipv4Addr>,
    /// Edge site-id.
    pub site_id: Option<u32>,
    /// The connection's TLOC color.
    pub color: Option<String>,
    /// The edge's TCP address.
    pub remote: SocketAddr,
    /// `up` or `challenge`.
    pub state: &'static str,
    /// Seconds up (0 unless up).
    pub uptime_seconds: u64,
}

/// The controller protocol core.
pub struct Controller {
    cfg: ControllerConfig,
    rng: SystemRandom,
    conns: BTreeMap<ConnId, CConn>,
    edges: BTreeMap<Ipv4Addr, EdgeState>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Controller {{ {} connections, {} edges }}",
            self.conns.len(),
            self.edges.len()
        )
    }
}

impl Controller {
    /// A controller with no connections and no routes.
    pub fn new(cfg: ControllerConfig) -> Controller {
        Controller {
            cfg,
            rng: SystemRandom::new(),
            conns: BTreeMap::new(),
            edges: BTreeMap::new(),
        }
    }

    /// Feeds one input; returns the actions to carry out in order.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Accepted { conn, remote } => {
                self.conns.insert(
                    conn,
                    CConn {
                        remote,
                        state: CState::Hello,
                        frames: FrameReader::default(),
                        accepted: now,
                        last_rx: now,
                        next_keepalive: now + self.cfg.keepalive,
                    },
                );
            }
            Input::Closed { conn } => {
                if self.conns.contains_key(&conn) {
                    self.drop_conn(now, conn, "connection closed by peer", false, &mut out);
                }
            }
            Input::Bytes { conn, data } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.frames.push(data);
                    c.last_rx = now;
                    // The connection may be dropped by a message: stop then.
                    while let Some(c) = self.conns.get_mut(&conn) {
                        match c.frames.next_message() {
                            Ok(Some(m)) => self.on_message(now, conn, m, &mut out),
                            Ok(None) => break,
                            Err(e) => {
                                let why = format!("protocol error: {e}");
                                self.goodbye(conn, GoodbyeReason::ProtocolError, &mut out);
                                self.drop_conn(now, conn, &why, true, &mut out);
                                break;
                            }
                        }
                    }
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
        for c in self.conns.values() {
            match c.state {
                CState::Up { .. } => {
                    min(c.next_keepalive);
                    min(c.last_rx + self.cfg.hold);
                }
                _ => min(c.accepted + HANDSHAKE_TIMEOUT),
            }
        }
        for e in self.edges.values() {
            if let Some(s) = e.stale_until {
                min(s);
            }
        }
        t
    }

    /// `show sdwan omp peers`.
    pub fn peers(&self, now: Instant) -> Vec<PeerView> {
        let total: usize = self
            .edges
            .values()
            .map(|e| e.tlocs.len() + e.services.len())
            .sum();
        self.edges
            .iter()
            .map(|(ip, e)| {
                let received = e.tlocs.len() + e.services.len();
                PeerView {
                    system_ip: *ip,
                    site_id: e.site_id,
                    peer_type: "vedge",
                    state: if e.stale_until.is_some() {
                        "down"
                    } else {
                        "up"
                    },
                    uptime_seconds: if e.stale_until.is_some() {
                        0
                    } else {
                        now.saturating_duration_since(e.since).as_secs()
                    },
                    received,
                    sent: if e.stale_until.is_some() {
                        0
                    } else {
                        total - received
                    },
                }
            })
            .collect()
    }

    /// `show sdwan omp tlocs`.
    pub fn tlocs(&self) -> Vec<TlocView> {
        let mut v = Vec::new();
        for e in self.edges.values() {
            for t in e.tlocs.values() {
                v.push(TlocView {
                    system_ip: t.system_ip,
                    color: t.color.clone(),
                    encap: "ipsec",
                    public_ip: t.public_ip,
                    public_port: t.public_port,
                    spi: t.spi,
                    status: if e.stale_until.is_some() {
                        "C,R,Stale"
                    } else {
                        "C,R"
                    },
                });
            }
        }
        v
    }

    /// `show sdwan omp routes`.
    pub fn routes(&self) -> Vec<RouteView> {
        let mut v = Vec::new();
        for (ip, e) in &self.edges {
            for s in e.services.values() {
                v.push(RouteView {
                    prefix: s.prefix,
                    originator: *ip,
                    site_id: s.site_id,
                    tloc_colors: e.tlocs.keys().cloned().collect(),
                    status: if e.stale_until.is_some() {
                        "C,R,Stale"
                    } else {
                        "C,R"
                    },
                });
            }
        }
        v
    }

    /// `show sdwan control connections` on the controller.
    pub fn control_connections(&self, now: Instant) -> Vec<ConnectionView> {
        self.conns
            .values()
            .map(|c| {
                let (system_ip, site_id, color, state, up) = match &c.state {
                    CState::Hello => (None, None, None, "challenge", 0),
                    CState::Challenge {
                        system_ip,
                        site_id,
                        color,
                        ..
                    } => (
                        Some(*system_ip),
                        Some(*site_id),
                        Some(color.clone()),
                        "challenge",
                        0,
                    ),
                    CState::Up {
                        system_ip,
                        site_id,
                        color,
                        since,
                    } => (
                        Some(*system_ip),
                        Some(*site_id),
                        Some(color.clone()),
                        "up",
                        now.saturating_duration_since(*since).as_secs(),
                    ),
                };
                ConnectionView {
                    peer_type: "vedge",
                    system_ip,
                    site_id,
                    color,
                    remote: c.remote,
                    state,
                    uptime_seconds: up,
                }
            })
            .collect()
    }

    fn send(&self, conn: ConnId, m: &Message, out: &mut Vec<Action>) {
        out.push(Action::Send {
            conn,
            data: m.encode(),
        });
    }

    fn goodbye(&self, conn: ConnId, r: GoodbyeReason, out: &mut Vec<Action>) {
        self.send(conn, &Message::Goodbye(r), out);
    }

    /// Sends `m` to every up connection of edges other than `origin`.
    fn reflect(&self, origin: Ipv4Addr, m: &Message, out: &mut Vec<Action>) {
        let data = m.encode();
        for (id, c) in &self.conns {
            if let CState::Up { system_ip, .. } = c.state
                && system_ip != origin
            {
                out.push(Action::Send {
                    conn: *id,
                    data: data.clone(),
                });
            }
        }
    }

    fn drop_conn(
        &mut self,
        now: Instant,
        conn: ConnId,
        why: &str,
        close: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if close {
            out.push(Action::Close { conn });
        }
        if let CState::Up {
            system_ip, color, ..
        } = c.state
        {
            out.push(Action::Log(format!(
                "%SDWAN-5-CONTROL_CONN_DOWN: control connection from vedge {system_ip} color {color} ({}) down: {why}",
                c.remote
            )));
            if let Some(e) = self.edges.get_mut(&system_ip) {
                e.conns.remove(&conn);
                if e.conns.is_empty() {
                    e.stale_until = Some(now + self.cfg.graceful_restart);
                    out.push(Action::Log(format!(
                        "%SDWAN-5-OMP_PEER_DOWN: OMP peer {system_ip} down: routes held for graceful restart ({} s)",
                        self.cfg.graceful_restart.as_secs()
                    )));
                }
            }
        }
    }

    fn on_message(&mut self, now: Instant, conn: ConnId, m: Message, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let remote = c.remote;
        match (c.state.clone(), m) {
            (state, Message::Goodbye(r)) => {
                let why = match r {
                    GoodbyeReason::AuthFailed => {
                        let who = match &state {
                            CState::Challenge {
                                system_ip, color, ..
                            } => format!("vedge {system_ip} color {color} ({remote})"),
                            _ => format!("{remote}"),
                        };
                        out.push(Action::Log(format!(
                            "%SDWAN-3-CONTROL_AUTH_FAIL: control connection from {who} refused: PSK authentication failed (the edge rejected our challenge response; the PSKs differ)"
                        )));
                        "authentication failed"
                    }
                    _ => "peer said goodbye",
                };
                self.drop_conn(now, conn, why, true, out);
            }
            (
                CState::Hello,
                Message::Hello {
                    role: Role::Edge,
                    system_ip,
                    site_id,
                    color,
                    nonce,
                    ..
                },
            ) => {
                let mut our_nonce = [0u8; NONCE_LEN];
                self.rng
                    .fill(&mut our_nonce)
                    .expect("system random source failed");
                let mac = auth_mac(
                    &self.cfg.psk,
                    Role::Controller,
                    &nonce,
                    &our_nonce,
                    system_ip,
                    &color,
                );
                let mut data = Message::Hello {
                    role: Role::Controller,
                    system_ip: self.cfg.system_ip,
                    site_id: 0,
                    color: String::new(),
                    version: SOFTWARE_VERSION.to_owned(),
                    nonce: our_nonce,
                }
                .encode();
                data.extend_from_slice(&Message::Auth { mac }.encode());
                out.push(Action::Send { conn, data });
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.state = CState::Challenge {
                        system_ip,
                        site_id,
                        color,
                        edge_nonce: nonce,
                        our_nonce,
                    };
                }
            }
            (
                CState::Challenge {
                    system_ip,
                    site_id,
                    color,
                    edge_nonce,
                    our_nonce,
                },
                Message::Auth { mac },
            ) => {
                let ok = auth_check(
                    &self.cfg.psk,
                    Role::Edge,
                    &edge_nonce,
                    &our_nonce,
                    system_ip,
                    &color,
                    &mac,
                );
                if !ok {
                    out.push(Action::Log(format!(
                        "%SDWAN-3-CONTROL_AUTH_FAIL: control connection from vedge {system_ip} color {color} ({remote}) refused: PSK authentication failed (challenge-response mismatch)"
                    )));
                    self.goodbye(conn, GoodbyeReason::AuthFailed, out);
                    return self.drop_conn(now, conn, "authentication failed", true, out);
                }
                self.conn_up(now, conn, system_ip, site_id, color, out);
            }
            (CState::Up { .. }, Message::Keepalive) => {}
            (CState::Up { system_ip, .. }, Message::TlocAdvertise(t)) => {
                if t.system_ip != system_ip {
                    return self.protocol_error(now, conn, "TLOC of another system-ip", out);
                }
                let Some(e) = self.edges.get_mut(&system_ip) else {
                    return;
                };
                if e.tlocs.get(&t.color) == Some(&t) {
                    return;
                }
                e.tlocs.insert(t.color.clone(), t.clone());
                self.reflect(system_ip, &Message::TlocAdvertise(t), out);
            }
            (
                CState::Up { system_ip, .. },
                Message::TlocWithdraw {
                    system_ip: s,
                    color,
                },
            ) => {
                if s != system_ip {
                    return self.protocol_error(now, conn, "withdraw of another system-ip", out);
                }
                let Some(e) = self.edges.get_mut(&system_ip) else {
                    return;
                };
                if e.tlocs.remove(&color).is_some() {
                    self.reflect(system_ip, &Message::TlocWithdraw { system_ip, color }, out);
                }
            }
            (CState::Up { system_ip, .. }, Message::RouteAdvertise(r)) => {
                if r.system_ip != system_ip {
                    return self.protocol_error(now, conn, "route of another system-ip", out);
                }
                let Some(e) = self.edges.get_mut(&system_ip) else {
                    return;
                };
                if e.services.get(&r.prefix) == Some(&r) {
                    return;
                }
                e.services.insert(r.prefix, r.clone());
                self.reflect(system_ip, &Message::RouteAdvertise(r), out);
            }
            (
                CState::Up { system_ip, .. },
                Message::RouteWithdraw {
                    prefix,
                    system_ip: s,
                },
            ) => {
                if s != system_ip {
                    return self.protocol_error(now, conn, "withdraw of another system-ip", out);
                }
                let Some(e) = self.edges.get_mut(&system_ip) else {
                    return;
                };
                if e.services.remove(&prefix).is_some() {
                    self.reflect(
                        system_ip,
                        &Message::RouteWithdraw { prefix, system_ip },
                        out,
                    );
                }
            }
            (_, m) => {
                let why = format!("unexpected message {}", message_name(&m));
                self.protocol_error(now, conn, &why, out);
            }
        }
    }

    fn protocol_error(&mut self, now: Instant, conn: ConnId, why: &str, out: &mut Vec<Action>) {
        self.goodbye(conn, GoodbyeReason::ProtocolError, out);
        self.drop_conn(now, conn, &format!("protocol error: {why}"), true, out);
    }

    fn conn_up(
        &mut self,
        now: Instant,
        conn: ConnId,
        system_ip: Ipv4Addr,
        site_id: u32,
        color: String,
        out: &mut Vec<Action>,
    ) {
        // A newer connection of the same edge and color replaces the old
        // one (the edge reconnected before we saw the old one die).
        let old: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(id, c)| {
                **id != conn
                    && matches!(&c.state, CState::Up { system_ip: s, color: k, .. } if *s == system_ip && *k == color)
            })
            .map(|(id, _)| *id)
            .collect();
        for o in old {
            self.goodbye(o, GoodbyeReason::Replaced, out);
            self.drop_conn(now, o, "replaced by a newer connection", true, out);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let remote = c.remote;
        c.state = CState::Up {
            system_ip,
            site_id,
            color: color.clone(),
            since: now,
        };
        c.next_keepalive = now + self.cfg.keepalive;
        let e = self.edges.entry(system_ip).or_insert_with(|| EdgeState {
            site_id,
            tlocs: BTreeMap::new(),
            services: BTreeMap::new(),
            conns: BTreeSet::new(),
            stale_until: None,
            since: now,
        });
        if e.conns.is_empty() && e.stale_until.is_none() {
            e.since = now;
        }
        if e.stale_until.take().is_some() {
            e.since = now;
        }
        e.site_id = site_id;
        e.conns.insert(conn);
        out.push(Action::Log(format!(
            "%SDWAN-5-CONTROL_CONN_UP: control connection from vedge {system_ip} site-id {site_id} color {color} ({remote}) up"
        )));
        // AuthOk, then every other edge's routes (held ones too: graceful
        // restart keeps them usable).
        let mut data = Message::AuthOk.encode();
        for (ip, e) in &self.edges {
            if *ip == system_ip {
                continue;
            }
            for t in e.tlocs.values() {
                data.extend_from_slice(&Message::TlocAdvertise(t.clone()).encode());
            }
            for s in e.services.values() {
                data.extend_from_slice(&Message::RouteAdvertise(s.clone()).encode());
            }
        }
        out.push(Action::Send { conn, data });
    }

    fn on_timers(&mut self, now: Instant, out: &mut Vec<Action>) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            match c.state {
                CState::Up { .. } => {
                    if c.last_rx + self.cfg.hold <= now {
                        self.drop_conn(now, id, "hold time expired", true, out);
                    } else if c.next_keepalive <= now {
                        c.next_keepalive = now + self.cfg.keepalive;
                        self.send(id, &Message::Keepalive, out);
                    }
                }
                _ => {
                    if c.accepted + HANDSHAKE_TIMEOUT <= now {
                        self.drop_conn(now, id, "handshake timeout", true, out);
                    }
                }
            }
        }
        let expired: Vec<Ipv4Addr> = self
            .edges
            .iter()
            .filter(|(_, e)| e.stale_until.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for ip in expired {
            let Some(e) = self.edges.remove(&ip) else {
                continue;
            };
            out.push(Action::Log(format!(
                "%SDWAN-5-OMP_GR_EXPIRED: OMP peer {ip}: graceful-restart time expired, {} TLOC and {} service routes withdrawn",
                e.tlocs.len(),
                e.services.len()
            )));
            for color in e.tlocs.into_keys() {
                self.reflect(
                    ip,
                    &Message::TlocWithdraw {
                        system_ip: ip,
                        color,
                    },
                    out,
                );
            }
            for prefix in e.services.into_keys() {
                self.reflect(
                    ip,
                    &Message::RouteWithdraw {
                        prefix,
                        system_ip: ip,
                    },
                    out,
                );
            }
        }
    }
}
