//! `xdpsec controller`: a thin shell around the OMP controller core
//! ([`xdpsec_omp::controller::Controller`]).
//!
//! One thread owns the core and every connection: a non-blocking listener
//! and non-blocking streams under poll(2), each with its TLS state
//! ([`Link`]; every OMP frame travels inside TLS 1.3). A connection reaches
//! the core once its TLS handshake is done (`Accepted` with the edge's
//! certificate); failed handshakes reach it as `Failed` (history, log).
//! Connections still in the handshake are bounded apart from authorized
//! ones ([`MAX_HANDSHAKING`], [`MAX_HANDSHAKING_PER_SOURCE`], the core's
//! handshake timeout), and a failing `accept()` (EMFILE, ENFILE) pauses the
//! listener instead of spinning. The control socket's threads never touch
//! the core: they pass each request to the owner thread over a channel and
//! wake it through a socket pair, so the core stays single-owner.
pub(crate) mod config;
pub(crate) mod show;

pub use config::ControllerConfig;

use std::{
    collections::{BTreeMap, VecDeque},
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::net::UnixStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tracing::{info, warn};
use xdpsec_omp::{
    consts::HANDSHAKE_TIMEOUT,
    controller::{self as core, Action, ConnId, Controller, Input, escape},
    history::ErrorCode,
    loglimit::LogLimiter,
    tls::{Link, rustls::ServerConfig},
};
use zeroize::Zeroizing;

use crate::{
    cli::{self, CommandSpec},
    ctlsock::{ControlSocket, Reply, Request},
    show::system::{self, ControllerVersion, Logging},
    state::{LogBuffer, ios_timestamp},
};

/// Edge control connections served at once; more are refused (logged).
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections still in their TLS handshake at once (ours: far more than
/// a fabric's edges reconnecting together; anything beyond is closed at
/// accept).
pub const MAX_HANDSHAKING: usize = 64;
/// Connections in their TLS handshake from one source address (ours: an
/// edge has one connection per color, at most a few colors).
pub const MAX_HANDSHAKING_PER_SOURCE: usize = 8;
/// How long the listener pauses after `accept()` failed for lack of file
/// descriptors (EMFILE, ENFILE) instead of retrying at once.
const ACCEPT_PAUSE: Duration = Duration::from_millis(250);
/// Bytes queued for one slow connection before it is dropped (ours: a full
/// route table of a large lab is well under this).
pub const MAX_PENDING_OUT: usize = 1 << 20;
/// Bytes read from one connection per poll round, so one busy edge cannot
/// starve the others (ours).
const READ_BUDGET: usize = 256 * 1024;
/// How long a control-socket request waits for the owner thread.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// Longest poll(2) sleep: the stop flag is also checked this often.
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);

/// Commands of the controller's control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    ShowOmpPeers,
    ShowOmpTlocs,
    ShowOmpRoutes,
    ShowControlConnections,
    ShowConnectionHistory,
    ClearConnectionHistory,
    ShowLogging,
    ClearLogging,
    ShowVersion,
    Help,
}

/// The controller's command table (keywords match by unique prefix).
const COMMANDS: &[CommandSpec<Cmd>] = &[
    CommandSpec {
        pattern: "show sdwan omp peers",
        id: Cmd::ShowOmpPeers,
        help: "OMP peers (edges): state, uptime, routes received/installed/sent",
    },
    CommandSpec {
        pattern: "show sdwan omp tlocs",
        id: Cmd::ShowOmpTlocs,
        help: "TLOC routes the edges advertise (address, port, SPI; never a key)",
    },
    CommandSpec {
        pattern: "show sdwan omp routes",
        id: Cmd::ShowOmpRoutes,
        help: "service routes the edges advertise, with the TLOCs they resolve through",
    },
    CommandSpec {
        pattern: "show sdwan control connections",
        id: Cmd::ShowControlConnections,
        help: "edge control connections (one per edge TLOC color)",
    },
    CommandSpec {
        pattern: "show sdwan control connection-history",
        id: Cmd::ShowConnectionHistory,
        help: "refused and failed control connections, with Cisco's error codes",
    },
    CommandSpec {
        pattern: "clear sdwan control connection-history",
        id: Cmd::ClearConnectionHistory,
        help: "empty the control connection history",
    },
    CommandSpec {
        pattern: "show logging",
        id: Cmd::ShowLogging,
        help: "the log buffer (%SDWAN- messages)",
    },
    CommandSpec {
        pattern: "clear logging",
        id: Cmd::ClearLogging,
        help: "empty the log buffer",
    },
    CommandSpec {
        pattern: "show version",
        id: Cmd::ShowVersion,
        help: "software version, node name, uptime",
    },
    CommandSpec {
        pattern: "help",
        id: Cmd::Help,
        help: "this list",
    },
];

/// A control-socket request on its way to the owner thread.
struct CtlRequest {
    req: Request,
    reply: mpsc::Sender<Reply>,
}

/// One edge control connection.
struct Conn {
    stream: TcpStream,
    remote: std::net::SocketAddr,
    /// Its TLS state.
    link: Link,
    /// The handshake is done and the core knows the connection.
    accepted: bool,
    /// When it was accepted (the handshake timeout runs from here).
    since: Instant,
    /// TLS records not yet written.
    out: Zeroizing<Vec<u8>>,
}

/// The owner thread's state: the core, the connections, the log.
struct Shell {
    core: Controller,
    tls: Arc<ServerConfig>,
    conns: BTreeMap<ConnId, Conn>,
    /// The listener is not polled until then (accept failed: EMFILE).
    accept_paused_until: Option<Instant>,
    /// Per-source limit of the shell's own lines (connections refused at
    /// accept, accept failures); the core limits its lines itself.
    limits: LogLimiter,
    next_id: ConnId,
    log: LogBuffer,
    node: String,
    listen: std::net::SocketAddr,
    started: Instant,
}

/// Block SIGINT and SIGTERM in this thread and every thread it spawns, so
/// only `sigwait` sees them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Run the controller in the foreground until SIGINT or SIGTERM.
pub fn run(cfg: ControllerConfig) -> Result<()> {
    let sigset = block_signals();
    let listener = TcpListener::bind(cfg.listen)
        .with_context(|| format!("listening on {} (field `listen`)", cfg.listen))?;
    listener.set_nonblocking(true)?;
    let ctl = ControlSocket::bind(&cfg.socket)?;
    let (wake_rx, wake_tx) = UnixStream::pair().context("creating the wake-up socket pair")?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (req_tx, req_rx) = mpsc::channel::<CtlRequest>();

    // The core's own system-ip is only sent in its Hello: the listen
    // address when it is IPv4 (no config key for it in the contract).
    let system_ip = match cfg.listen.ip() {
        IpAddr::V4(a) if !a.is_unspecified() => a,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let mut core_cfg =
        core::ControllerConfig::new(system_ip, &cfg.tls.organization, cfg.allowed_edges.clone());
    core_cfg.graceful_restart = cfg.graceful_restart;
    let tls = cfg
        .tls
        .server()
        .context("the TLS files (ca_file, cert_file, key_file) are no longer usable")?;
    let mut shell = Shell {
        core: Controller::new(core_cfg),
        tls,
        conns: BTreeMap::new(),
        accept_paused_until: None,
        limits: LogLimiter::default(),
        next_id: 1,
        log: LogBuffer::default(),
        node: cfg.node.clone(),
        listen: cfg.listen,
        started: Instant::now(),
    };
    info!(
        node = %cfg.node,
        listen = %cfg.listen,
        socket = %cfg.socket.display(),
        organization = %cfg.tls.organization,
        allowed_edges = cfg.allowed_edges.len(),
        allowed_edges_file = %cfg.allowed_edges_file.display(),
        graceful_restart_seconds = cfg.graceful_restart.as_secs(),
        "xdpsec controller running; SIGINT or SIGTERM stops it"
    );

    std::thread::scope(|s| -> Result<()> {
        let wake_sig = wake_tx.try_clone()?;
        let stop_sig = Arc::clone(&stop);
        // The signal thread also ends when the owner loop stops on its own
        // (an error): it is woken by a SIGTERM to ourselves then.
        let sig_thread = s.spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigset holds SIGINT and SIGTERM, blocked in every thread.
            unsafe { libc::sigwait(&sigset, &mut sig) };
            info!(signal = sig, "stopping");
            stop_sig.store(true, Ordering::Release);
            let _ = (&wake_sig).write(&[1]);
        });
        let stop_ctl = Arc::clone(&stop);
        let wake_ctl = wake_tx.try_clone()?;
        let ctl_ref = &ctl;
        s.spawn(move || {
            ctl_ref.serve(
                || stop_ctl.load(Ordering::Acquire),
                move |req| {
                    let (tx, rx) = mpsc::channel();
                    if req_tx.send(CtlRequest { req, reply: tx }).is_err() {
                        return Reply::error("% The controller is stopping");
                    }
                    let _ = (&wake_ctl).write(&[1]);
                    rx.recv_timeout(REQUEST_WAIT)
                        .unwrap_or_else(|_| Reply::error("% The controller did not answer"))
                },
            )
        });
        let res = shell.run_loop(&listener, &wake_rx, &req_rx, &stop);
        if res.is_err() && !stop.load(Ordering::Acquire) {
            stop.store(true, Ordering::Release);
            // SAFETY: signalling our own process to end the sigwait thread.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        }
        let _ = sig_thread.join();
        res
    })?;
    shell.close_all();
    Ok(())
}

impl Shell {
    fn run_loop(
        &mut self,
        listener: &TcpListener,
        wake: &UnixStream,
        requests: &mpsc::Receiver<CtlRequest>,
        stop: &AtomicBool,
    ) -> Result<()> {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut ids: Vec<ConnId> = Vec::new();
        while !stop.load(Ordering::Acquire) {
            fds.clear();
            ids.clear();
            let now = Instant::now();
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
            }
            // A paused listener is left out of the poll (fd -1 is ignored).
            let lfd = if self.accept_paused_until.is_some() {
                -1
            } else {
                listener.as_raw_fd()
            };
            for fd in [wake.as_raw_fd(), lfd] {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            for (id, c) in &self.conns {
                let mut events = libc::POLLIN;
                if !c.out.is_empty() {
                    events |= libc::POLLOUT;
                }
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events,
                    revents: 0,
                });
                ids.push(*id);
            }
            let mut wait = self
                .core
                .next_timeout()
                .map_or(MAX_POLL_WAIT, |t| t.saturating_duration_since(now))
                .min(MAX_POLL_WAIT);
            if let Some(t) = self.accept_paused_until {
                wait = wait.min(t.saturating_duration_since(now));
            }
            // The handshake timeouts are kept to the millisecond.
            if let Some(t) = self
                .conns
                .values()
                .filter(|c| !c.accepted)
                .map(|c| c.since + HANDSHAKE_TIMEOUT)
                .min()
            {
                wait = wait.min(t.saturating_duration_since(now));
            }
            // Round up so a timer a fraction of a millisecond away does
            // not spin.
            let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
            // SAFETY: fds is a valid array of fds.len() pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("poll");
            }
            let now = Instant::now();
            if fds[0].revents != 0 {
                let mut b = [0u8; 64];
                while matches!((&*wake).read(&mut b), Ok(n) if n > 0) {}
            }
            while let Ok(r) = requests.try_recv() {
                let reply = self.answer(&r.req);
                let _ = r.reply.send(reply);
            }
            for (i, id) in ids.iter().enumerate() {
                let rev = fds[i + 2].revents;
                if rev == 0 {
                    continue;
                }
                if rev & libc::POLLOUT != 0 {
                    self.flush(now, *id);
                }
                if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read_conn(now, *id);
                }
            }
            if fds[1].fd >= 0 && fds[1].revents != 0 {
                self.accept(now, listener);
            }
            self.handshake_timeouts(now);
            if self.core.next_timeout().is_some_and(|t| t <= now) {
                let a = self.core.handle(now, Input::Timer);
                self.apply(now, a);
            }
        }
        Ok(())
    }

    fn accept(&mut self, now: Instant, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((stream, remote)) => {
                    let handshaking: Vec<IpAddr> = self
                        .conns
                        .values()
                        .filter(|c| !c.accepted)
                        .map(|c| c.remote.ip())
                        .collect();
                    let from_source = handshaking.iter().filter(|ip| **ip == remote.ip()).count();
                    let refuse = if self.conns.len() >= MAX_CONNECTIONS {
                        Some(format!("{MAX_CONNECTIONS} connections already"))
                    } else if handshaking.len() >= MAX_HANDSHAKING {
                        Some(format!(
                            "{MAX_HANDSHAKING} connections already in their TLS handshake"
                        ))
                    } else if from_source >= MAX_HANDSHAKING_PER_SOURCE {
                        Some(format!(
                            "{MAX_HANDSHAKING_PER_SOURCE} connections from {} already in their TLS handshake",
                            remote.ip()
                        ))
                    } else {
                        None
                    };
                    if let Some(why) = refuse {
                        drop(stream);
                        self.limited_log(now, remote.ip(), |n| {
                            format!("%SDWAN-4-CONTROL_CONN_LIMIT: control connection from {remote} refused: {why}{n}")
                        });
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        warn!(%remote, error = %e, "control connection: cannot make it non-blocking");
                        continue;
                    }
                    let link = match Link::server(Arc::clone(&self.tls)) {
                        Ok(l) => l,
                        Err(e) => {
                            warn!(%remote, error = %e, "control connection: TLS state");
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let conn = self.next_id;
                    self.next_id += 1;
                    self.conns.insert(
                        conn,
                        Conn {
                            stream,
                            remote,
                            link,
                            accepted: false,
                            since: now,
                            out: Zeroizing::new(Vec::new()),
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: the pending connection stays
                    // in the backlog; pause the listener rather than spin.
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    let ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
                    self.limited_log(now, ip, |n| {
                        format!("%SDWAN-4-CONTROL_ACCEPT_FAIL: accepting control connections failed ({e}): listener paused {} ms{n}", ACCEPT_PAUSE.as_millis())
                    });
                    return;
                }
            }
        }
    }

    /// A log line about `source`, at most one per [`LOG_INTERVAL`]; `line`
    /// gets the count of lines suppressed before it (or "").
    fn limited_log(&mut self, now: Instant, source: IpAddr, line: impl FnOnce(String) -> String) {
        if let Some(n) = self.limits.allow(now, source) {
            self.log_line(line(n));
        }
    }

    /// Connections whose TLS handshake takes too long are closed.
    fn handshake_timeouts(&mut self, now: Instant) {
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.accepted && c.since + HANDSHAKE_TIMEOUT <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(c) = self.conns.remove(&id) {
                let _ = c.stream.shutdown(Shutdown::Both);
                self.failed(
                    now,
                    c.remote,
                    ErrorCode::DhsTmo,
                    ErrorCode::NoErr,
                    "TLS handshake timeout".into(),
                );
            }
        }
    }

    /// A connection that never reached the core: its history row and its
    /// log line (rate-limited per source) come from the core.
    fn failed(
        &mut self,
        now: Instant,
        remote: std::net::SocketAddr,
        local: ErrorCode,
        remote_error: ErrorCode,
        detail: String,
    ) {
        let a = self.core.handle(
            now,
            Input::Failed {
                remote,
                local,
                remote_error,
                detail: escape(&detail),
            },
        );
        self.apply(now, a);
    }

    /// Read what `id` has (up to [`READ_BUDGET`]) and feed it to the core.
    fn read_conn(&mut self, now: Instant, id: ConnId) {
        // Frames may carry key material: the buffer is zeroized.
        let mut buf = Zeroizing::new(vec![0u8; 16 * 1024]);
        let mut total = 0;
        while total < READ_BUDGET {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            match c.stream.read(&mut buf) {
                Ok(0) => return self.lost(now, id),
                Ok(n) => {
                    total += n;
                    let got = match c.link.input(&buf[..n], &mut c.out) {
                        Ok(g) => g,
                        Err(f) => {
                            // The alert that says why goes out, best effort.
                            let _ = write_some(c);
                            if c.accepted {
                                return self.lost(now, id);
                            }
                            let Some(c) = self.conns.remove(&id) else {
                                return;
                            };
                            let _ = c.stream.shutdown(Shutdown::Both);
                            return self.failed(now, c.remote, f.local, f.remote, f.detail);
                        }
                    };
                    if write_some(c).is_err() {
                        return self.lost(now, id);
                    }
                    if let Some(peer) = got.up {
                        c.accepted = true;
                        let remote = c.remote;
                        let a = self.core.handle(
                            now,
                            Input::Accepted {
                                conn: id,
                                remote,
                                peer,
                            },
                        );
                        self.apply(now, a);
                    }
                    if !got.plain.is_empty() && self.conns.get(&id).is_some_and(|c| c.accepted) {
                        let a = self.core.handle(
                            now,
                            Input::Bytes {
                                conn: id,
                                data: &got.plain,
                            },
                        );
                        self.apply(now, a);
                    }
                    if got.closed {
                        return self.lost(now, id);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.lost(now, id),
            }
        }
    }

    /// The connection failed or the peer closed it: tell the core.
    fn lost(&mut self, now: Instant, id: ConnId) {
        if let Some(c) = self.conns.remove(&id)
            && c.accepted
        {
            let a = self.core.handle(now, Input::Closed { conn: id });
            self.apply(now, a);
        }
    }

    /// Write what is queued for `id`; a write error loses the connection.
    fn flush(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match write_some(c) {
            Ok(()) => {}
            Err(_) => self.lost(now, id),
        }
    }

    fn apply(&mut self, now: Instant, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Send { conn, data } => {
                    let Some(c) = self.conns.get_mut(&conn) else {
                        continue;
                    };
                    if c.out.len() + data.len() > MAX_PENDING_OUT {
                        let remote = c.remote;
                        self.conns.remove(&conn);
                        self.log_line(format!(
                            "%SDWAN-4-CONTROL_CONN_SLOW: control connection from {remote} dropped: more than {MAX_PENDING_OUT} bytes queued (the edge does not read)"
                        ));
                        queue.extend(self.core.handle(now, Input::Closed { conn }));
                        continue;
                    }
                    c.link.send(&data);
                    c.link.pull(&mut c.out);
                    if write_some(c).is_err() {
                        self.conns.remove(&conn);
                        queue.extend(self.core.handle(now, Input::Closed { conn }));
                    }
                }
                Action::Close { conn } => {
                    if let Some(mut c) = self.conns.remove(&conn) {
                        // A Goodbye or Refuse queued just before: best effort.
                        c.link.close();
                        c.link.pull(&mut c.out);
                        let _ = write_some(&mut c);
                        let _ = c.stream.shutdown(Shutdown::Both);
                    }
                }
                Action::Log(line) => self.log_line(line),
            }
        }
    }

    fn log_line(&mut self, line: String) {
        info!(target: "omp", "{line}");
        self.log
            .push(format!("{}{line}", ios_timestamp(SystemTime::now())));
    }

    fn close_all(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.conns) {
            c.link.close();
            c.link.pull(&mut c.out);
            let _ = write_some(&mut c);
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// One control-socket request, answered on the owner thread.
    fn answer(&mut self, req: &Request) -> Reply {
        let parsed = match cli::parse(COMMANDS, &req.command) {
            Ok(p) => p,
            Err(e) => return Reply::error(e.0),
        };
        let now = Instant::now();
        let (text, value) = match parsed.id {
            Cmd::ShowOmpPeers => show::omp_peers(&self.core.peers(now)),
            Cmd::ShowOmpTlocs => show::omp_tlocs(&self.core.tlocs()),
            Cmd::ShowOmpRoutes => show::omp_routes(&self.core.routes()),
            Cmd::ShowControlConnections => {
                show::control_connections(&self.core.control_connections(now))
            }
            Cmd::ShowConnectionHistory => {
                crate::sdwan::history::render(&self.core.history(), now, SystemTime::now())
            }
            Cmd::ClearConnectionHistory => {
                self.core.clear_history();
                (String::new(), json!({}))
            }
            Cmd::ShowLogging => crate::show::reply(&self.logging(), system::render_logging),
            Cmd::ClearLogging => {
                self.log.clear();
                (String::new(), json!({}))
            }
            Cmd::ShowVersion => {
                crate::show::reply(&self.version(now), system::render_controller_version)
            }
            Cmd::Help => {
                let text: String = COMMANDS
                    .iter()
                    .map(|c| format!("  {:<34} {}\n", c.pattern, c.help))
                    .collect();
                let list: Vec<Value> = COMMANDS
                    .iter()
                    .map(|c| json!({"command": c.pattern, "help": c.help}))
                    .collect();
                (text, json!({ "commands": list }))
            }
        };
        Reply {
            ok: true,
            output: if req.json {
                serde_json::to_string(&value).unwrap_or_default()
            } else {
                text
            },
        }
    }

    /// `show logging`: the log buffer (no rate limit or event rings here).
    fn logging(&self) -> Logging {
        Logging {
            lines: self.log.lines().cloned().collect(),
            limits: None,
            logged: self.log.logged,
        }
    }

    /// `show version`.
    fn version(&self, now: Instant) -> ControllerVersion {
        ControllerVersion {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION"),
            role: "controller",
            uptime_seconds: now.saturating_duration_since(self.started).as_secs(),
            listen: self.listen,
        }
    }
}

/// Write as much of `c.out` as the socket takes now.
fn write_some(c: &mut Conn) -> std::io::Result<()> {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_abbreviated() {
        let p = cli::parse(COMMANDS, "sh sd omp tl").unwrap();
        assert_eq!(p.id, Cmd::ShowOmpTlocs);
        let p = cli::parse(COMMANDS, "sh sdwan con connections").unwrap();
        assert_eq!(p.id, Cmd::ShowControlConnections);
        // `conn` alone is ambiguous now, as on IOS XE.
        let p = cli::parse(COMMANDS, "sh sdwan con connection-h").unwrap();
        assert_eq!(p.id, Cmd::ShowConnectionHistory);
        assert!(cli::parse(COMMANDS, "show sdwan omp").is_err());
    }

    /// The client parses every line with the shared grammar before it
    /// asks any daemon, so each controller command must be in it too.
    #[test]
    fn the_client_grammar_takes_every_controller_command() {
        for c in COMMANDS {
            let typed = crate::grammar::parse(c.pattern);
            assert!(typed.is_ok(), "{}: {:?}", c.pattern, typed.err());
        }
    }
}
