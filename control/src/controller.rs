//! `xdpsec controller`: a thin shell around the OMP controller core
//! ([`xdpsec_omp::controller::Controller`]).
//!
//! One thread owns the core and every TCP connection: a non-blocking
//! listener and non-blocking streams under poll(2), feeding the core
//! `Accepted`/`Bytes`/`Closed`/`Timer` and carrying out its
//! `Send`/`Close`/`Log` actions. The control socket's threads never touch
//! the core: they pass each request to the owner thread over a channel and
//! wake it through a socket pair, so the core stays single-owner.
mod config;
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
use xdpsec_omp::controller::{self as core, Action, ConnId, Controller, Input};
use zeroize::Zeroizing;

use crate::{
    cli::{self, CommandSpec},
    ctlsock::{ControlSocket, Reply, Request},
    state::{LogBuffer, ios_timestamp},
};

/// Edge control connections served at once; more are refused (logged).
pub const MAX_CONNECTIONS: usize = 1024;
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
    /// Bytes not yet written (frames may carry key material).
    out: Zeroizing<Vec<u8>>,
}

/// The owner thread's state: the core, the connections, the log.
struct Shell {
    core: Controller,
    conns: BTreeMap<ConnId, Conn>,
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
    let mut core_cfg = core::ControllerConfig::new(system_ip, &cfg.psk);
    core_cfg.graceful_restart = cfg.graceful_restart;
    let mut shell = Shell {
        core: Controller::new(core_cfg),
        conns: BTreeMap::new(),
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
            for fd in [wake.as_raw_fd(), listener.as_raw_fd()] {
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
            let now = Instant::now();
            let wait = self
                .core
                .next_timeout()
                .map_or(MAX_POLL_WAIT, |t| t.saturating_duration_since(now))
                .min(MAX_POLL_WAIT);
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
            if fds[1].revents != 0 {
                self.accept(now, listener);
            }
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
                    if self.conns.len() >= MAX_CONNECTIONS {
                        self.log_line(format!(
                            "%SDWAN-4-CONTROL_CONN_LIMIT: control connection from {remote} refused: {MAX_CONNECTIONS} connections already"
                        ));
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        warn!(%remote, error = %e, "control connection: cannot make it non-blocking");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let conn = self.next_id;
                    self.next_id += 1;
                    self.conns.insert(
                        conn,
                        Conn {
                            stream,
                            out: Zeroizing::new(Vec::new()),
                        },
                    );
                    let a = self.core.handle(now, Input::Accepted { conn, remote });
                    self.apply(now, a);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: try again on the next round.
                    warn!(error = %e, "control connection accept failed");
                    return;
                }
            }
        }
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
                    let a = self.core.handle(
                        now,
                        Input::Bytes {
                            conn: id,
                            data: &buf[..n],
                        },
                    );
                    self.apply(now, a);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.lost(now, id),
            }
        }
    }

    /// The connection failed or the peer closed it: tell the core.
    fn lost(&mut self, now: Instant, id: ConnId) {
        if self.conns.remove(&id).is_some() {
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
                        let remote = c.stream.peer_addr().map_or("?".into(), |a| a.to_string());
                        self.conns.remove(&conn);
                        self.log_line(format!(
                            "%SDWAN-4-CONTROL_CONN_SLOW: control connection from {remote} dropped: more than {MAX_PENDING_OUT} bytes queued (the edge does not read)"
                        ));
                        queue.extend(self.core.handle(now, Input::Closed { conn }));
                        continue;
                    }
                    c.out.extend_from_slice(&data);
                    if write_some(c).is_err() {
                        self.conns.remove(&conn);
                        queue.extend(self.core.handle(now, Input::Closed { conn }));
                    }
                }
                Action::Close { conn } => {
                    if let Some(mut c) = self.conns.remove(&conn) {
                        // A Goodbye queued just before: best effort.
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
            Cmd::ShowLogging => self.show_logging(),
            Cmd::ClearLogging => {
                self.log.clear();
                (String::new(), json!({}))
            }
            Cmd::ShowVersion => self.show_version(now),
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

    fn show_logging(&self) -> (String, Value) {
        let lines: Vec<&String> = self.log.lines().collect();
        let mut text = format!(
            "Syslog logging: enabled ({} messages logged)\n\nLog Buffer ({} lines):\n",
            self.log.logged,
            lines.len()
        );
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        (text, json!({ "lines": lines, "logged": self.log.logged }))
    }

    fn show_version(&self, now: Instant) -> (String, Value) {
        let up = now.saturating_duration_since(self.started).as_secs();
        let version = env!("CARGO_PKG_VERSION");
        let text = format!(
            "xdpsec controller, Version {version}\n{} uptime is {}\nOMP control connections on tcp {}\n",
            self.node,
            show::uptime(up),
            self.listen
        );
        let value = json!({
            "node": self.node,
            "version": version,
            "role": "controller",
            "uptime_seconds": up,
            "listen": self.listen.to_string(),
        });
        (text, value)
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
        let p = cli::parse(COMMANDS, "sh sdwan con conn").unwrap();
        assert_eq!(p.id, Cmd::ShowControlConnections);
        assert!(cli::parse(COMMANDS, "show sdwan omp").is_err());
    }
}
