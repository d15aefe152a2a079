//! The controller core (vSmart-like): authorizes edge connections (their
//! TLS certificate: organization, serial in the allowed list, the system-ip
//! bound to that serial) and
//! reflects each edge's TLOC and service routes to the other edges, holding
//! the routes of an edge whose connections dropped for the graceful-restart
//! time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::consts::*;
use crate::edge::message_name;
use crate::history::{ErrorCode, History, HistoryRow};
use crate::loglimit::LogLimiter;
use crate::tls::PeerCert;
use crate::wire::{FrameReader, GoodbyeReason, Message, Role, ServiceRoute, TlocRoute};
use crate::{Prefix, SOFTWARE_VERSION};

/// A connection as the shell numbers it (unique while the core runs).
pub type ConnId = u64;

/// The controller core's configuration.
#[derive(Clone)]
pub struct ControllerConfig {
    /// The controller's own system-ip (sent in Hello).
    pub system_ip: Ipv4Addr,
    /// The organization every edge certificate must carry (subject O).
    pub organization: String,
    /// Authorized edges: certificate serial (upper-case hex) -> the
    /// system-ip bound to it.
    pub allowed: BTreeMap<String, Ipv4Addr>,
    /// Routes of an edge with no connection left are withdrawn after this.
    pub graceful_restart: Duration,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// No message for this long: the connection is down.
    pub hold: Duration,
}

impl ControllerConfig {
    /// A configuration with the default timers.
    pub fn new(
        system_ip: Ipv4Addr,
        organization: &str,
        allowed: BTreeMap<String, Ipv4Addr>,
    ) -> Self {
        ControllerConfig {
            system_ip,
            organization: organization.to_owned(),
            allowed,
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
            .field("organization", &self.organization)
            .field("allowed", &self.allowed.len())
            .field("graceful_restart", &self.graceful_restart)
            .finish()
    }
}

/// What the shell tells the controller core.
#[derive(Debug)]
pub enum Input<'a> {
    /// A connection completed its TLS handshake: the edge's certificate
    /// chains to the CA (the shell checked that); the core checks the rest.
    Accepted {
        /// The shell's number for it.
        conn: ConnId,
        /// The edge's address and port.
        remote: SocketAddr,
        /// What its certificate says.
        peer: PeerCert,
    },
    /// A connection failed before it was accepted (TLS handshake refused by
    /// either side, or timed out): for the history and the log.
    Failed {
        /// The edge's address and port.
        remote: SocketAddr,
        /// What we found wrong.
        local: ErrorCode,
        /// What the edge told us it found wrong.
        remote_error: ErrorCode,
        /// A short reason (escaped by the caller).
        detail: String,
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
    /// Certificate accepted; waiting for the edge's Hello, which must
    /// claim the system-ip bound to the certificate's serial.
    Hello { bound: Ipv4Addr },
    /// Authorized.
    Up {
        system_ip: Ipv4Addr,
        site_id: u32,
        color: String,
        since: Instant,
    },
}

struct CConn {
    remote: SocketAddr,
    peer: PeerCert,
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
    /// A bound was hit and logged (once until the edge's next connection).
    over_logged: bool,
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
    conns: BTreeMap<ConnId, CConn>,
    history: History,
    edges: BTreeMap<Ipv4Addr, EdgeState>,
    /// Lines about what a peer did (refusals, failures, bounds hit) are
    /// rate-limited per source address: a peer looping reconnects, with a
    /// valid certificate or none, cannot flood the log.
    limiter: LogLimiter,
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
            conns: BTreeMap::new(),
            history: History::default(),
            edges: BTreeMap::new(),
            limiter: LogLimiter::default(),
        }
    }

    /// Feeds one input; returns the actions to carry out in order.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Accepted { conn, remote, peer } => {
                self.accepted(now, conn, remote, peer, &mut out)
            }
            Input::Failed {
                remote,
                local,
                remote_error,
                detail,
            } => {
                let line = format!(
                    "%SDWAN-3-{}: control connection from {remote} failed: local error {local} ({}), remote error {remote_error} ({}): {detail}",
                    if local != ErrorCode::NoErr {
                        local.mnemonic()
                    } else {
                        remote_error.mnemonic()
                    },
                    local.description(),
                    remote_error.description(),
                );
                self.peer_log(now, remote.ip(), line, &mut out);
                self.history.push(HistoryRow {
                    peer_type: "vedge",
                    system_ip: None,
                    site_id: 0,
                    peer_ip: Some(remote.ip()),
                    peer_port: remote.port(),
                    color: "default".into(),
                    state: "challenge",
                    local_error: local,
                    remote_error,
                    repeat_count: 0,
                    organization: String::new(),
                    downtime: now,
                });
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
                    CState::Hello { .. } => (c.peer.system_ip, None, None, "challenge", 0),
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
            (state, Message::Goodbye(_)) => {
                let why = if matches!(state, CState::Up { .. }) {
                    "peer said goodbye"
                } else {
                    "peer said goodbye before it was up"
                };
                self.drop_conn(now, conn, why, true, out);
            }
            (CState::Up { .. } | CState::Hello { .. }, Message::Refuse(code)) => {
                let line = format!(
                    "%SDWAN-3-{}: control connection from {} refused by the edge: {code} ({})",
                    code.mnemonic(),
                    self.who(conn),
                    code.description()
                );
                self.peer_log(now, remote.ip(), line, out);
                self.record(now, conn, ErrorCode::NoErr, code);
                self.drop_conn(now, conn, "refused by the edge", true, out);
            }
            (
                CState::Hello { bound },
                Message::Hello {
                    role: Role::Edge,
                    system_ip,
                    site_id,
                    color,
                    ..
                },
            ) => {
                let color = sanitize_color(&color);
                let Some(cert_ip) = self.conns.get(&conn).and_then(|c| c.peer.system_ip) else {
                    let detail = "the certificate carries no system-ip";
                    return self.refuse(now, conn, ErrorCode::CrtVerFl, Some(&color), detail, out);
                };
                if system_ip != bound || cert_ip != bound {
                    let claimed = if system_ip != bound {
                        system_ip
                    } else {
                        cert_ip
                    };
                    let other = self
                        .cfg
                        .allowed
                        .iter()
                        .find(|(_, ip)| **ip == claimed)
                        .map(|(s, _)| s.clone());
                    let (code, detail) = match other {
                        Some(other) => (
                            ErrorCode::DupSysIpDel,
                            format!(
                                "system-ip {claimed} is bound to serial {other}, not to this certificate's"
                            ),
                        ),
                        None => (
                            ErrorCode::SysIpChng,
                            format!(
                                "system-ip {claimed} is not the one bound to this serial ({bound})"
                            ),
                        ),
                    };
                    return self.refuse(now, conn, code, Some(&color), &detail, out);
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
                if !e.tlocs.contains_key(&t.color) && e.tlocs.len() >= MAX_TLOCS_PER_EDGE {
                    if !std::mem::replace(&mut e.over_logged, true) {
                        let line = format!(
                            "%SDWAN-4-OMP_LIMIT: vedge {system_ip}: TLOC color {} refused: {MAX_TLOCS_PER_EDGE} TLOCs already",
                            escape(&t.color)
                        );
                        self.peer_log(now, remote.ip(), line, out);
                    }
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
                if !e.services.contains_key(&r.prefix) && e.services.len() >= MAX_PREFIXES_PER_EDGE
                {
                    if !std::mem::replace(&mut e.over_logged, true) {
                        let line = format!(
                            "%SDWAN-4-OMP_LIMIT: vedge {system_ip}: service route {} refused: {MAX_PREFIXES_PER_EDGE} routes already",
                            r.prefix
                        );
                        self.peer_log(now, remote.ip(), line, out);
                    }
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

    /// A TLS-authenticated connection: the certificate's organization and
    /// serial decide whether it may speak at all.
    fn accepted(
        &mut self,
        now: Instant,
        conn: ConnId,
        remote: SocketAddr,
        peer: PeerCert,
        out: &mut Vec<Action>,
    ) {
        let bound = self.cfg.allowed.get(&peer.serial).copied();
        let org_ok = peer.organization == self.cfg.organization;
        let role_ok = peer.role == "edge";
        self.conns.insert(
            conn,
            CConn {
                remote,
                peer: peer.clone(),
                state: CState::Hello {
                    bound: bound.unwrap_or(Ipv4Addr::UNSPECIFIED),
                },
                frames: FrameReader::default(),
                accepted: now,
                last_rx: now,
                next_keepalive: now + self.cfg.keepalive,
            },
        );
        let (code, detail) = if !org_ok {
            (
                ErrorCode::CtOrgNmMis,
                format!(
                    "certificate organization {:?}, expected {:?}",
                    escape(&peer.organization),
                    self.cfg.organization
                ),
            )
        } else if !role_ok {
            (
                ErrorCode::CrtVerFl,
                format!(
                    "certificate role {:?}, expected \"edge\"",
                    escape(&peer.role)
                ),
            )
        } else if bound.is_none() {
            (
                ErrorCode::SerNtPres,
                format!(
                    "serial {} is not in the allowed edge list",
                    escape(&peer.serial)
                ),
            )
        } else {
            return;
        };
        self.refuse(now, conn, code, None, &detail, out);
    }

    /// `vedge SYSTEM-IP color COLOR (ADDR:PORT)` as far as known.
    fn who(&self, conn: ConnId) -> String {
        let Some(c) = self.conns.get(&conn) else {
            return "?".into();
        };
        match (&c.state, c.peer.system_ip) {
            (
                CState::Up {
                    system_ip, color, ..
                },
                _,
            ) => {
                format!("vedge {system_ip} color {color} ({})", c.remote)
            }
            (_, Some(ip)) => format!(
                "vedge {ip} serial {} ({})",
                escape(&c.peer.serial),
                c.remote
            ),
            _ => format!("{}", c.remote),
        }
    }

    fn record(&mut self, now: Instant, conn: ConnId, local: ErrorCode, remote: ErrorCode) {
        self.record_color(now, conn, None, local, remote);
    }

    fn record_color(
        &mut self,
        now: Instant,
        conn: ConnId,
        color: Option<&str>,
        local: ErrorCode,
        remote: ErrorCode,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let (system_ip, site_id, color, state) = match &c.state {
            CState::Up {
                system_ip,
                site_id,
                color,
                ..
            } => (Some(*system_ip), *site_id, color.clone(), "up"),
            CState::Hello { .. } => (
                c.peer.system_ip,
                0,
                color.unwrap_or("default").to_owned(),
                "challenge",
            ),
        };
        self.history.push(HistoryRow {
            peer_type: "vedge",
            system_ip,
            site_id,
            peer_ip: Some(c.remote.ip()),
            peer_port: c.remote.port(),
            color,
            state,
            local_error: local,
            remote_error: remote,
            repeat_count: 0,
            organization: escape(&c.peer.organization),
            downtime: now,
        });
    }

    /// Refuses `conn` with Cisco's code: a `Refuse` to the edge (inside
    /// TLS), a log line, a history row, and the connection closed.
    fn refuse(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: ErrorCode,
        color: Option<&str>,
        detail: &str,
        out: &mut Vec<Action>,
    ) {
        let line = format!(
            "%SDWAN-3-{}: control connection from {} refused: {code} ({}): {detail}",
            code.mnemonic(),
            self.who(conn),
            code.description()
        );
        if let Some(c) = self.conns.get(&conn) {
            self.peer_log(now, c.remote.ip(), line, out);
        }
        self.record_color(now, conn, color, code, ErrorCode::NoErr);
        self.send(conn, &Message::Refuse(code), out);
        self.drop_conn(now, conn, code.description(), true, out);
    }

    /// A log line about what the peer at `source` did, at most one per
    /// source per [`crate::loglimit::LOG_INTERVAL`] (the suppressed count
    /// goes in the next one).
    fn peer_log(&mut self, now: Instant, source: IpAddr, line: String, out: &mut Vec<Action>) {
        if let Some(suffix) = self.limiter.allow(now, source) {
            out.push(Action::Log(line + &suffix));
        }
    }

    /// `show sdwan control connection-history`, newest first.
    pub fn history(&self) -> Vec<HistoryRow> {
        self.history.rows().cloned().collect()
    }

    /// `clear sdwan control connection-history`.
    pub fn clear_history(&mut self) {
        self.history.clear();
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
            over_logged: false,
        });
        if e.conns.is_empty() && e.stale_until.is_none() {
            e.since = now;
        }
        if e.stale_until.take().is_some() {
            e.since = now;
        }
        e.site_id = site_id;
        e.over_logged = false;
        e.conns.insert(conn);
        out.push(Action::Log(format!(
            "%SDWAN-5-CONTROL_CONN_UP: control connection from vedge {system_ip} site-id {site_id} color {color} ({remote}) up"
        )));
        // Hello, AuthOk, then every other edge's routes (held ones too: graceful
        // restart keeps them usable).
        let mut data = Message::Hello {
            role: Role::Controller,
            system_ip: self.cfg.system_ip,
            site_id: 0,
            color: String::new(),
            version: SOFTWARE_VERSION.to_owned(),
        }
        .encode();
        crate::zbuf::extend(&mut data, &Message::AuthOk.encode());
        for (ip, e) in &self.edges {
            if *ip == system_ip {
                continue;
            }
            for t in e.tlocs.values() {
                crate::zbuf::extend(&mut data, &Message::TlocAdvertise(t.clone()).encode());
            }
            for s in e.services.values() {
                crate::zbuf::extend(&mut data, &Message::RouteAdvertise(s.clone()).encode());
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
                        let source = c.remote.ip();
                        let code = ErrorCode::DhsTmo;
                        let line = format!(
                            "%SDWAN-3-{}: control connection from {} closed: {code} ({}): no Hello {} s after the TLS handshake",
                            code.mnemonic(),
                            self.who(id),
                            code.description(),
                            HANDSHAKE_TIMEOUT.as_secs()
                        );
                        self.peer_log(now, source, line, out);
                        self.record(now, id, code, ErrorCode::NoErr);
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

/// A peer-sent string made safe for a log line or a show: control and
/// non-ASCII characters escaped, at most 64 characters kept.
pub fn escape(s: &str) -> String {
    let mut o = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i == 64 {
            o.push_str("...");
            break;
        }
        if ch.is_ascii_graphic() || ch == ' ' {
            o.push(ch);
        } else {
            o.extend(ch.escape_default());
        }
    }
    o
}

/// A color as the edge sent it, made safe for logs and shows (see
/// [`escape`]).
fn sanitize_color(c: &str) -> String {
    escape(c)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn peer_strings_are_escaped_and_bounded() {
        assert_eq!(escape("biz-internet"), "biz-internet");
        assert_eq!(escape("a\nb\u{1b}[2J\r"), "a\\nb\\u{1b}[2J\\r");
        assert_eq!(escape("é"), "\\u{e9}");
        let long = "x".repeat(100);
        assert_eq!(escape(&long), format!("{}...", "x".repeat(64)));
    }
}
