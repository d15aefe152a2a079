//! ESP that reaches the kernel: reassembled fragments (RFC 4303 section
//! 3.4.1) and UDP datagrams on the ESP-in-UDP ports.
//!
//! The XDP program passes IPv4/IPv6 fragments of ESP and of UDP to the
//! kernel, which reassembles them (bounded by its `ipfrag_*` limits). This
//! platform shell owns the kernel sockets that receive the result: a raw
//! ESP socket per address family and one UDP socket per ESP-in-UDP port and
//! family (the control side's socket for that port; IKE will share it:
//! datagrams with the non-ESP marker are IKE, the rest ESP). Each datagram
//! is given back its outer headers (behind a placeholder Ethernet header)
//! and handed to worker 0 through its handoff queue, so it runs through
//! the same datapath core as a frame from AF_XDP (the core hands it on to
//! the SA's owner worker when that is another one).
//!
//! Bounded: one datagram in flight here, the handoff queue's preallocated
//! buffers behind it (full: drop 110, counted once); a reassembled datagram
//! larger than a frame buffer is dropped as 70 IN_V4_PKT_FRAG_ERR.
use std::{
    collections::BTreeMap,
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use crossbeam::channel::Receiver;
use tracing::{debug, warn};
use xdpsec_afxdp::add_single_writer;
use xdpsec_datapath::{DropCounters, DropReason};

use xdpsec_worker::handoff::{EventFd, HANDOFF_FRAME, HandoffQueue};

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const IPPROTO_ESP: i32 = 50;
/// Linux `UDP_NO_CHECK6_RX` (include/uapi/linux/udp.h): accept UDP/IPv6
/// with a zero checksum, as RFC 6936 allows for tunnels; older peers
/// (and RFC 3948 senders) leave the checksum 0.
const UDP_NO_CHECK6_RX: i32 = 102;

/// What the shell received (single writer: its thread).
#[derive(Debug, Default)]
pub struct KernelRxStats {
    /// ESP over IPv4 from the raw socket (reassembled, or passed by XDP).
    pub esp_v4: AtomicU64,
    /// ESP over IPv6 from the raw socket.
    pub esp_v6: AtomicU64,
    /// ESP in UDP over IPv4 from the port sockets.
    pub udp_esp_v4: AtomicU64,
    /// ESP in UDP over IPv6 from the port sockets.
    pub udp_esp_v6: AtomicU64,
    /// IKE messages received (on 500, or with the non-ESP marker on a
    /// NAT-T port).
    pub ike: AtomicU64,
    /// IKE messages sent.
    pub ike_sent: AtomicU64,
    /// IKE messages not handed on (no IKE tunnel, or the owner's queue full).
    pub ike_dropped: AtomicU64,
    /// NAT keepalives (one 0xFF byte), discarded as RFC 3948 says.
    pub keepalive: AtomicU64,
    /// Datagrams larger than a frame buffer (counted as drop 70 too).
    pub too_big: AtomicU64,
}

impl KernelRxStats {
    /// `(name, value)` pairs in display order; the names are `--json` fields.
    pub fn values(&self) -> [(&'static str, u64); 9] {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("kernel_esp_v4", r(&self.esp_v4)),
            ("kernel_esp_v6", r(&self.esp_v6)),
            ("kernel_udp_esp_v4", r(&self.udp_esp_v4)),
            ("kernel_udp_esp_v6", r(&self.udp_esp_v6)),
            ("kernel_ike", r(&self.ike)),
            ("kernel_ike_sent", r(&self.ike_sent)),
            ("kernel_ike_dropped", r(&self.ike_dropped)),
            ("kernel_nat_keepalive", r(&self.keepalive)),
            ("kernel_too_big", r(&self.too_big)),
        ]
    }
}

/// An IKE message received or to send (on a NAT-T port without the
/// 4-byte non-ESP marker: the shell removes and adds it).
#[derive(Debug, Clone)]
pub struct IkeDatagram {
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// The IKE message.
    pub data: Vec<u8>,
}

/// Messages from the owner.
pub enum Ctl {
    /// The ESP-in-UDP ports changed: open and close sockets to match.
    SetPorts(Vec<u16>),
    /// Send an IKE message.
    Send(IkeDatagram),
}

/// How the owner reaches the shell: the channel, and an eventfd that wakes
/// its `poll` so a message goes out at once.
#[derive(Clone)]
pub struct CtlHandle {
    tx: crossbeam::channel::Sender<Ctl>,
    wake: Arc<EventFd>,
}

impl CtlHandle {
    /// A handle and the receiving end for [`spawn`].
    pub fn new() -> io::Result<(CtlHandle, Receiver<Ctl>, Arc<EventFd>)> {
        let wake = Arc::new(EventFd::new()?);
        let (tx, rx) = crossbeam::channel::unbounded();
        Ok((
            CtlHandle {
                tx,
                wake: Arc::clone(&wake),
            },
            rx,
            wake,
        ))
    }

    /// Send a message and wake the shell.
    pub fn send(&self, m: Ctl) {
        if self.tx.send(m).is_ok() {
            self.wake.notify();
        }
    }
}

fn check(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(rc)
}

fn socket(family: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = check(
        unsafe { libc::socket(family, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) },
        "socket",
    )?;
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int(fd: &OwnedFd, level: i32, name: i32, v: i32, what: &str) -> io::Result<()> {
    // SAFETY: an int option on a socket we own.
    check(
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&v as *const i32).cast(),
                size_of::<i32>() as libc::socklen_t,
            )
        },
        what,
    )
    .map(|_| ())
}

/// A UDP socket bound to `port` on every address of `family`.
fn udp_socket(family: i32, port: u16) -> io::Result<OwnedFd> {
    let fd = socket(family, libc::SOCK_DGRAM, 0)?;
    if family == libc::AF_INET {
        set_int(&fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1, "IP_PKTINFO")?;
        // SAFETY: zeroed sockaddr_in is valid; filled below.
        let mut sa: libc::sockaddr_in = unsafe { zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        // SAFETY: binding our socket to a valid sockaddr_in.
        check(
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            },
            "bind",
        )?;
    } else {
        set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1, "IPV6_V6ONLY")?;
        set_int(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            1,
            "IPV6_RECVPKTINFO",
        )?;
        set_int(
            &fd,
            libc::IPPROTO_UDP,
            UDP_NO_CHECK6_RX,
            1,
            "UDP_NO_CHECK6_RX",
        )?;
        // SAFETY: zeroed sockaddr_in6 is the unspecified address.
        let mut sa: libc::sockaddr_in6 = unsafe { zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        // SAFETY: binding our socket to a valid sockaddr_in6.
        check(
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            },
            "bind",
        )?;
    }
    Ok(fd)
}

/// What one `recvmsg` gave.
struct Datagram {
    len: usize,
    truncated: bool,
    src: IpAddr,
    src_port: u16,
    /// Local destination address (from the packet-info control message).
    dst: Option<IpAddr>,
}

/// Receive one datagram into `buf` (non-blocking): None when there is none.
fn recv(fd: RawFd, buf: &mut [u8]) -> Option<Datagram> {
    // SAFETY: zeroed storage is a valid (empty) address.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let mut cmsg = [0u64; 16]; // 128 bytes, aligned for cmsghdr
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: zeroed msghdr, then every pointer set to live buffers.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: msg points at buffers that outlive the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        return None;
    }
    let (src, src_port) = match addr.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            (
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                u16::from_be(a.sin_port),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            (
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            )
        }
        _ => return None,
    };
    let mut dst = None;
    // SAFETY: walking the control messages the kernel wrote into `cmsg`
    // with the libc CMSG macros, bounded by msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_PKTINFO {
                let p = &*(libc::CMSG_DATA(c) as *const libc::in_pktinfo);
                dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
            } else if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                let p = &*(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                dst = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some(Datagram {
        len: n as usize,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0 || n as usize > buf.len(),
        src,
        src_port,
        dst,
    })
}

/// RFC 791 header checksum of `h` (checksum field zero).
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Write Ethernet (placeholder addresses) + outer IP header for a payload
/// of `l4_len` bytes of `proto` into `f`; returns the header length.
fn outer_headers(f: &mut [u8], src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> usize {
    f[..12].fill(0);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let h = &mut f[ETH_LEN..ETH_LEN + IPV4_LEN];
            h.fill(0);
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((IPV4_LEN + l4_len) as u16).to_be_bytes());
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = ipv4_checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            ETH_LEN + IPV4_LEN
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let h = &mut f[ETH_LEN..ETH_LEN + IPV6_LEN];
            h.fill(0);
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            ETH_LEN + IPV6_LEN
        }
        _ => 0,
    }
}

/// The shell: kernel sockets, the frame being built, where frames go.
struct Shell {
    raw4: Option<OwnedFd>,
    raw6: Option<OwnedFd>,
    /// Per port: the IPv4 and IPv6 socket (None where the bind failed).
    udp: BTreeMap<u16, [Option<OwnedFd>; 2]>,
    /// IKE's own port 500, IPv4 and IPv6 (open only with IKE tunnels).
    ike500: [Option<OwnedFd>; 2],
    /// Receive buffer for port 500 (an IKE message may exceed a frame).
    ike_buf: Box<[u8]>,
    frame: Box<[u8]>,
    target: Arc<HandoffQueue>,
    drops: Arc<DropCounters>,
    stats: Arc<KernelRxStats>,
    /// Where received IKE messages go (the owner); None: no IKE tunnels.
    ike_tx: Option<crossbeam::channel::Sender<IkeDatagram>>,
    /// Wakes `poll` when the owner sent a `Ctl`.
    wake: Arc<EventFd>,
}

impl Shell {
    fn set_ports(&mut self, ports: &[u16]) {
        self.udp.retain(|p, _| ports.contains(p));
        for &p in ports {
            if self.udp.contains_key(&p) {
                continue;
            }
            let open = |family, name| match udp_socket(family, p) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    warn!(
                        port = p,
                        "UDP {name} port {p} not opened ({e}): ESP in UDP to it that the kernel reassembles from fragments is not received"
                    );
                    None
                }
            };
            self.udp.insert(
                p,
                [open(libc::AF_INET, "IPv4"), open(libc::AF_INET6, "IPv6")],
            );
        }
    }

    /// Hand the frame `self.frame[..len]` to the datapath.
    fn deliver(&mut self, len: usize) {
        if self.target.push(&self.frame[..len]) {
            self.target.notify();
        } else {
            self.drops.bump(DropReason::PktBufferUnavailable);
        }
    }

    fn too_big(&mut self) {
        add_single_writer(&self.stats.too_big, 1);
        self.drops.bump(DropReason::InV4FragErr);
    }

    /// Drain the raw ESP socket of `v6`.
    fn read_raw(&mut self, v6: bool) {
        let Some(fd) = (if v6 { &self.raw6 } else { &self.raw4 })
            .as_ref()
            .map(|f| f.as_raw_fd())
        else {
            return;
        };
        for _ in 0..64 {
            // IPv4 raw sockets deliver the IP header too; IPv6 ones only the
            // payload, so room is left for the header built here.
            let at = if v6 { ETH_LEN + IPV6_LEN } else { ETH_LEN };
            let Some(d) = recv(fd, &mut self.frame[at..]) else {
                return;
            };
            if d.truncated || at + d.len > HANDOFF_FRAME {
                self.too_big();
                continue;
            }
            if v6 {
                add_single_writer(&self.stats.esp_v6, 1);
                let Some(dst) = d.dst else { continue };
                outer_headers(&mut self.frame, d.src, dst, IPPROTO_ESP as u8, d.len);
                self.deliver(at + d.len);
            } else {
                add_single_writer(&self.stats.esp_v4, 1);
                self.frame[..12].fill(0);
                self.frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                self.deliver(at + d.len);
            }
        }
    }

    /// Drain the UDP socket of `port`, family `v6`.
    fn read_udp(&mut self, port: u16, v6: bool) {
        let Some(fd) = self
            .udp
            .get(&port)
            .and_then(|s| s[v6 as usize].as_ref())
            .map(|f| f.as_raw_fd())
        else {
            return;
        };
        let at = ETH_LEN + if v6 { IPV6_LEN } else { IPV4_LEN } + UDP_LEN;
        for _ in 0..64 {
            let Some(d) = recv(fd, &mut self.frame[at..]) else {
                return;
            };
            let payload = &self.frame[at..at + d.len.min(self.frame.len() - at)];
            // RFC 3948 section 2.2: keepalives and the non-ESP marker.
            if d.len == 1 && payload[0] == 0xff {
                add_single_writer(&self.stats.keepalive, 1);
                continue;
            }
            if d.len >= 4 && payload[..4] == [0; 4] {
                // IKE on the NAT-T port (RFC 3948 2.2): to the owner, without the marker.
                let data = payload[4..].to_vec();
                self.hand_to_ike(&d, port, data);
                continue;
            }
            if d.truncated || at + d.len > HANDOFF_FRAME {
                self.too_big();
                continue;
            }
            add_single_writer(
                if v6 {
                    &self.stats.udp_esp_v6
                } else {
                    &self.stats.udp_esp_v4
                },
                1,
            );
            let Some(dst) = d.dst else { continue };
            let hl = outer_headers(
                &mut self.frame,
                d.src,
                dst,
                libc::IPPROTO_UDP as u8,
                UDP_LEN + d.len,
            );
            let u = &mut self.frame[hl..hl + UDP_LEN];
            u[0..2].copy_from_slice(&d.src_port.to_be_bytes());
            u[2..4].copy_from_slice(&port.to_be_bytes());
            u[4..6].copy_from_slice(&((UDP_LEN + d.len) as u16).to_be_bytes());
            // Checksum 0: the kernel verified it already (RFC 3948 allows 0).
            u[6..8].fill(0);
            self.deliver(at + d.len);
        }
    }

    /// Hand an IKE message to the owner.
    fn hand_to_ike(&mut self, d: &Datagram, port: u16, data: Vec<u8>) {
        add_single_writer(&self.stats.ike, 1);
        let (Some(tx), Some(dst)) = (&self.ike_tx, d.dst) else {
            add_single_writer(&self.stats.ike_dropped, 1);
            return;
        };
        let m = IkeDatagram {
            local: SocketAddr::new(dst, port),
            remote: SocketAddr::new(d.src, d.src_port),
            data,
        };
        if tx.try_send(m).is_err() {
            add_single_writer(&self.stats.ike_dropped, 1);
        }
    }

    /// Drain port 500's socket of family `v6`: every datagram is IKE.
    fn read_ike500(&mut self, v6: bool) {
        let Some(fd) = self.ike500[v6 as usize].as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        for _ in 0..64 {
            let Some(d) = recv(fd, &mut self.ike_buf) else {
                return;
            };
            if d.truncated {
                add_single_writer(&self.stats.ike_dropped, 1);
                continue;
            }
            let data = self.ike_buf[..d.len].to_vec();
            self.hand_to_ike(&d, xdpsec_ike::IKE_PORT, data);
        }
    }

    /// Send an IKE message from its local address and port (adding the
    /// non-ESP marker on a NAT-T port).
    fn send_ike(&mut self, m: &IkeDatagram) {
        let v6 = m.local.is_ipv6();
        let fd = if m.local.port() == xdpsec_ike::IKE_PORT {
            self.ike500[v6 as usize].as_ref()
        } else {
            self.udp
                .get(&m.local.port())
                .and_then(|s| s[v6 as usize].as_ref())
        };
        let Some(fd) = fd.map(|f| f.as_raw_fd()) else {
            warn!(
                "IKE message to {} not sent: no socket on UDP port {}",
                m.remote,
                m.local.port()
            );
            return;
        };
        let marker: &[u8] = if m.local.port() == xdpsec_ike::IKE_PORT {
            &[]
        } else {
            &[0, 0, 0, 0]
        };
        match send_from(fd, m.local.ip(), m.remote, &[marker, &m.data]) {
            Ok(()) => add_single_writer(&self.stats.ike_sent, 1),
            Err(e) => warn!("sending an IKE message to {}: {e}", m.remote),
        }
    }

    fn run(&mut self, ctl: &Receiver<Ctl>, stop: &AtomicBool) {
        self.serve(ctl, stop);
        // What was queued before the stop still goes out (the IKE DELETEs
        // of a daemon that stops).
        while let Ok(m) = ctl.try_recv() {
            if let Ctl::Send(d) = m {
                self.send_ike(&d);
            }
        }
    }

    fn serve(&mut self, ctl: &Receiver<Ctl>, stop: &AtomicBool) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut who: Vec<Who> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            self.wake.clear();
            while let Ok(m) = ctl.try_recv() {
                match m {
                    Ctl::SetPorts(p) => self.set_ports(&p),
                    Ctl::Send(d) => self.send_ike(&d),
                }
            }
            fds.clear();
            who.clear();
            // The wake-up first: (None, None) below.
            fds.push(libc::pollfd {
                fd: self.wake.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            who.push(Who::Wake);
            for (v6, fd) in self.ike500.iter().enumerate() {
                if let Some(fd) = fd {
                    fds.push(libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    who.push(Who::Ike500(v6 == 1));
                }
            }
            for (v6, fd) in [(false, &self.raw4), (true, &self.raw6)] {
                if let Some(fd) = fd {
                    fds.push(libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    who.push(Who::Raw(v6));
                }
            }
            for (&port, s) in &self.udp {
                for (v6, fd) in s.iter().enumerate() {
                    if let Some(fd) = fd {
                        fds.push(libc::pollfd {
                            fd: fd.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        who.push(Who::Udp(port, v6 == 1));
                    }
                }
            }
            // SAFETY: `fds` is a valid array of pollfds for the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            if rc <= 0 {
                continue;
            }
            for i in 0..fds.len() {
                if fds[i].revents & libc::POLLIN == 0 {
                    continue;
                }
                match who[i] {
                    Who::Wake => {}
                    Who::Ike500(v6) => self.read_ike500(v6),
                    Who::Raw(v6) => self.read_raw(v6),
                    Who::Udp(port, v6) => self.read_udp(port, v6),
                }
            }
        }
    }
}

/// Which socket a pollfd is.
#[derive(Clone, Copy)]
enum Who {
    Wake,
    Ike500(bool),
    Raw(bool),
    Udp(u16, bool),
}

/// Send `parts` as one datagram to `remote` from `local` (IP_PKTINFO /
/// IPV6_PKTINFO pick the source address on a socket bound to any).
fn send_from(fd: RawFd, local: IpAddr, remote: SocketAddr, parts: &[&[u8]]) -> io::Result<()> {
    let mut iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut cmsg = [0u64; 8];
    // SAFETY: zeroed storage, then filled as the family's sockaddr.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    // SAFETY: zeroed msghdr; every pointer set to live buffers below.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    msg.msg_control = cmsg.as_mut_ptr().cast();
    // SAFETY: the CMSG macros on our own control buffer, sized for one
    // in_pktinfo / in6_pktinfo; addr is written as the matching sockaddr.
    unsafe {
        match (local, remote) {
            (IpAddr::V4(l), SocketAddr::V4(r)) => {
                let a =
                    &mut *(&mut addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_port = r.port().to_be();
                a.sin_addr.s_addr = u32::from(*r.ip()).to_be();
                msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                msg.msg_controllen =
                    libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
                let p = libc::CMSG_DATA(c) as *mut libc::in_pktinfo;
                (*p).ipi_spec_dst.s_addr = u32::from(l).to_be();
            }
            (IpAddr::V6(l), SocketAddr::V6(r)) => {
                let a =
                    &mut *(&mut addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                a.sin6_port = r.port().to_be();
                a.sin6_addr.s6_addr = r.ip().octets();
                msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                msg.msg_controllen =
                    libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let p = libc::CMSG_DATA(c) as *mut libc::in6_pktinfo;
                (*p).ipi6_addr.s6_addr = l.octets();
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "local and remote address families differ",
                ));
            }
        }
        msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
        if libc::sendmsg(fd, &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Open the raw ESP sockets, the UDP sockets for `ports` and, with IKE
/// tunnels (`ike_tx`), IKE's port 500; serve them on a thread until
/// `stop`. ESP frames go to `target` (worker 0's handoff queue), IKE
/// messages to `ike_tx`; drops are counted in `drops` (summed with the
/// workers').
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    ports: &[u16],
    target: Arc<HandoffQueue>,
    drops: Arc<DropCounters>,
    stats: Arc<KernelRxStats>,
    ctl: Receiver<Ctl>,
    wake: Arc<EventFd>,
    ike_tx: Option<crossbeam::channel::Sender<IkeDatagram>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let raw = |family| match socket(family, libc::SOCK_RAW, IPPROTO_ESP) {
        Ok(fd) => {
            if family == libc::AF_INET6 {
                let _ = set_int(
                    &fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_RECVPKTINFO,
                    1,
                    "IPV6_RECVPKTINFO",
                );
            }
            Some(fd)
        }
        Err(e) => {
            warn!("raw ESP socket not opened ({e}): fragmented ESP is not received");
            None
        }
    };
    let mut shell = Shell {
        raw4: raw(libc::AF_INET),
        raw6: raw(libc::AF_INET6),
        udp: BTreeMap::new(),
        ike500: [None, None],
        ike_buf: vec![0u8; 65536].into_boxed_slice(),
        // Room for a whole frame buffer plus one byte to detect truncation.
        frame: vec![0u8; HANDOFF_FRAME + 1].into_boxed_slice(),
        target,
        drops,
        stats,
        ike_tx,
        wake,
    };
    if shell.ike_tx.is_some() {
        // IKE tunnels need port 500 (RFC 7296 2.): a failure is fatal.
        shell.ike500 = [
            Some(
                udp_socket(libc::AF_INET, xdpsec_ike::IKE_PORT)
                    .map_err(|e| anyhow::anyhow!("binding UDP port 500 for IKE (IPv4): {e}"))?,
            ),
            Some(
                udp_socket(libc::AF_INET6, xdpsec_ike::IKE_PORT)
                    .map_err(|e| anyhow::anyhow!("binding UDP port 500 for IKE (IPv6): {e}"))?,
            ),
        ];
    }
    shell.set_ports(ports);
    debug!(ports = ?ports, "kernel ESP sockets open");
    Ok(std::thread::Builder::new()
        .name("xdpsec-kernel-rx".into())
        .spawn(move || shell.run(&ctl, &stop))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksum_matches_a_known_header() {
        // RFC 1071-style example: a captured header with checksum 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(ipv4_checksum(&h), 0);
    }

    #[test]
    fn outer_headers_describe_the_payload() {
        let mut f = [0u8; 128];
        let s: IpAddr = "198.51.100.2".parse().unwrap();
        let d: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(outer_headers(&mut f, s, d, 17, 60), 34);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 80);
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
        let s: IpAddr = "2001:db8::2".parse().unwrap();
        let d: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(outer_headers(&mut f, s, d, 50, 60), 54);
        assert_eq!(
            (f[14] >> 4, f[20], u16::from_be_bytes([f[18], f[19]])),
            (6, 50, 60)
        );
    }
}
