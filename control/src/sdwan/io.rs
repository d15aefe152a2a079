//! The SD-WAN edge's I/O shell: one thread owns the TLS control
//! connections to the controller (one per TLOC color, each from its TLOC's
//! address; rustls through [`Link`], every OMP frame inside TLS) and waits
//! on the punt rings' wake-up. It never touches the
//! protocol cores: it carries out the owner's [`IoCmd`]s and reports
//! [`IoEvent`]s back over a bounded channel (poll(2) on non-blocking sockets,
//! as the controller's shell).
use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::{AsRawFd, FromRawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};
use crossbeam::channel::{Receiver, Sender};
use tracing::{debug, warn};
use zeroize::Zeroizing;

use xdpsec_omp::tls::{Link, PeerCert, rustls::ClientConfig};
use xdpsec_worker::{
    handoff::EventFd,
    punt::{PuntHub, Punted},
};

/// Bytes queued for a control connection before it is dropped.
const MAX_PENDING_OUT: usize = 1 << 20;
/// Longest poll(2) sleep: the stop flag is checked this often.
const MAX_POLL_WAIT: Duration = Duration::from_millis(200);
/// Events queued for the owner.
pub const EVENT_QUEUE: usize = 4096;

/// What the owner asks of the shell.
pub enum IoCmd {
    /// Open the control connection of `color` from `local` to `remote`.
    Connect {
        /// TLOC color.
        color: String,
        /// The TLOC's address (bound before connecting).
        local: IpAddr,
        /// The controller.
        remote: SocketAddr,
        /// The TLS configuration (`None`: unusable, the connection fails).
        tls: Option<Arc<ClientConfig>>,
    },
    /// Write to that connection (frames may carry keys: zeroized).
    Send {
        /// TLOC color.
        color: String,
        /// Bytes.
        data: Zeroizing<Vec<u8>>,
    },
    /// Close that connection (no `Closed` event follows).
    Close {
        /// TLOC color.
        color: String,
    },
}

/// What the shell reports to the owner.
pub enum IoEvent {
    /// The connection of `color` completed its TLS handshake.
    Connected(String, PeerCert),
    /// Its TLS handshake failed (the connection is closed).
    Failed(String, TlsFailure),
    /// It failed or was closed by the peer.
    Closed(String),
    /// Bytes arrived on it (decrypted; frames may carry keys: zeroized).
    Bytes(String, Zeroizing<Vec<u8>>),
    /// Packets the workers punted (BFD inside the tunnels).
    Punted(Vec<Punted>),
}

pub use xdpsec_omp::tls::TlsFailure;

/// The owner's side: commands in, a wake-up for the thread.
pub struct IoHandle {
    tx: Sender<IoCmd>,
    wake: Arc<EventFd>,
}

impl IoHandle {
    /// Queue a command for the shell.
    pub fn send(&self, c: IoCmd) {
        if self.tx.send(c).is_ok() {
            self.wake.notify();
        }
    }
}

struct Conn {
    stream: TcpStream,
    /// TCP connect in progress.
    connecting: bool,
    link: Link,
    /// TLS records to write.
    out: Vec<u8>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Control frames may carry TLOC keys.
        zeroize::Zeroize::zeroize(&mut self.out);
    }
}

/// Start the shell thread.
pub fn spawn(
    punt: Arc<PuntHub>,
    events: Sender<IoEvent>,
    stop: Arc<AtomicBool>,
) -> Result<(IoHandle, JoinHandle<()>)> {
    let (tx, rx) = crossbeam::channel::unbounded();
    let wake = Arc::new(EventFd::new().context("creating the SD-WAN shell's wake-up")?);
    let w = Arc::clone(&wake);
    let h = std::thread::Builder::new()
        .name("xdpsec-sdwan".into())
        .spawn(move || run(&rx, &w, &punt, &events, &stop))
        .context("spawning the SD-WAN shell thread")?;
    Ok((IoHandle { tx, wake }, h))
}

/// A non-blocking TCP socket bound to `local`, connecting to `remote`.
fn connect_from(local: IpAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let family = if remote.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket creation; the fd is owned by the TcpStream below.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (l, ll) = sockaddr(SocketAddr::new(local, 0));
    // SAFETY: l is a valid sockaddr of length ll.
    if unsafe { libc::bind(fd, (&raw const l).cast(), ll) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (r, rl) = sockaddr(remote);
    // SAFETY: r is a valid sockaddr of length rl.
    if unsafe { libc::connect(fd, (&raw const r).cast(), rl) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            (ss, std::mem::size_of::<libc::sockaddr_in>() as _)
        }
        SocketAddr::V6(v) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v.ip().octets(),
                },
                sin6_scope_id: v.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as _)
        }
    }
}

fn run(
    rx: &Receiver<IoCmd>,
    wake: &EventFd,
    punt: &PuntHub,
    events: &Sender<IoEvent>,
    stop: &AtomicBool,
) {
    let mut conns: BTreeMap<String, Conn> = BTreeMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut punted = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // Commands first.
        wake.clear();
        while let Ok(c) = rx.try_recv() {
            match c {
                IoCmd::Connect {
                    color,
                    local,
                    remote,
                    tls,
                } => match tls
                    .ok_or_else(|| std::io::Error::other("TLS configuration unusable"))
                    .and_then(|t| Link::client(t, remote.ip()).map_err(std::io::Error::other))
                    .and_then(|link| connect_from(local, remote).map(|s| (s, link)))
                {
                    Ok((stream, link)) => {
                        conns.insert(
                            color,
                            Conn {
                                stream,
                                connecting: true,
                                link,
                                out: Vec::new(),
                            },
                        );
                    }
                    Err(e) => {
                        debug!(%color, %local, %remote, error = %e, "control connection failed");
                        let _ = events.send(IoEvent::Closed(color));
                    }
                },
                IoCmd::Send { color, data } => {
                    if let Some(c) = conns.get_mut(&color) {
                        if c.out.len() + data.len() > MAX_PENDING_OUT {
                            warn!(%color, "control connection not draining: closed");
                            conns.remove(&color);
                            let _ = events.send(IoEvent::Closed(color));
                        } else {
                            // Encrypted now (or once the handshake allows).
                            c.link.send(&data);
                            c.link.pull(&mut c.out);
                        }
                    }
                }
                IoCmd::Close { color } => {
                    // What the core queued before the close (a Goodbye
                    // saying why) still goes out, best effort: dropping it
                    // would leave the controller without the reason.
                    if let Some(mut c) = conns.remove(&color)
                        && !c.connecting
                    {
                        c.link.close();
                        c.link.pull(&mut c.out);
                        let _ = flush(&mut c);
                    }
                }
            }
        }
        // Try to flush what is queued before sleeping.
        let mut closed = Vec::new();
        for (color, c) in conns.iter_mut() {
            if !c.connecting && !c.out.is_empty() && flush(c).is_err() {
                closed.push(color.clone());
            }
        }
        for color in closed.drain(..) {
            conns.remove(&color);
            let _ = events.send(IoEvent::Closed(color));
        }

        let mut fds = vec![
            libc::pollfd {
                fd: wake.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: punt.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let colors: Vec<String> = conns.keys().cloned().collect();
        for color in &colors {
            let c = &conns[color];
            let mut ev = libc::POLLIN;
            if c.connecting || !c.out.is_empty() {
                ev |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: ev,
                revents: 0,
            });
        }
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                MAX_POLL_WAIT.as_millis() as i32,
            )
        };
        if n <= 0 {
            continue;
        }
        if fds[1].revents != 0 {
            punt.drain(&mut punted);
            if !punted.is_empty() {
                // BFD packets: lost (and counted by the BFD core's timers)
                // rather than block the shell when the owner is behind.
                let _ = events.try_send(IoEvent::Punted(std::mem::take(&mut punted)));
            }
        }
        for (i, color) in colors.iter().enumerate() {
            let re = fds[i + 2].revents;
            if re == 0 {
                continue;
            }
            let Some(c) = conns.get_mut(color) else {
                continue;
            };
            if c.connecting {
                if re & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) == 0 {
                    continue;
                }
                match c.stream.take_error() {
                    Ok(None) if re & (libc::POLLERR | libc::POLLHUP) == 0 => {
                        // TCP is up: the TLS ClientHello goes out.
                        c.connecting = false;
                        c.link.pull(&mut c.out);
                        if flush(c).is_err() {
                            closed.push(color.clone());
                        }
                    }
                    r => {
                        debug!(%color, result = ?r, "control connection refused or unreachable");
                        closed.push(color.clone());
                    }
                }
                continue;
            }
            if re & libc::POLLOUT != 0 && flush(c).is_err() {
                closed.push(color.clone());
                continue;
            }
            if re & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match c.stream.read(&mut buf) {
                    Ok(0) => closed.push(color.clone()),
                    Ok(n) => match c.link.input(&buf[..n], &mut c.out) {
                        Ok(got) => {
                            if let Some(p) = got.up {
                                let _ = events.send(IoEvent::Connected(color.clone(), p));
                            }
                            if !got.plain.is_empty() {
                                let _ = events.send(IoEvent::Bytes(color.clone(), got.plain));
                            }
                            if got.closed || flush(c).is_err() {
                                closed.push(color.clone());
                            }
                        }
                        Err(f) => {
                            // The alert saying why goes out, best effort.
                            let _ = flush(c);
                            debug!(%color, detail = %f.detail, "control connection TLS failure");
                            conns.remove(color);
                            let _ = events.send(IoEvent::Failed(color.clone(), f));
                        }
                    },
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => closed.push(color.clone()),
                }
            }
        }
        for color in closed.drain(..) {
            conns.remove(&color);
            let _ = events.send(IoEvent::Closed(color));
        }
    }
}

/// Write what is queued; Err when the connection is broken.
fn flush(c: &mut Conn) -> std::io::Result<()> {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                // Zeroize what leaves the buffer (frames may carry keys).
                zeroize::Zeroize::zeroize(&mut c.out[..n]);
                c.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
