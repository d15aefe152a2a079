//! The load tester's I/O: UDP sockets bound to any address that send from
//! a chosen source (IP_PKTINFO / IPV6_PKTINFO) and say which of our
//! addresses a datagram came to, the source addresses added to the
//! underlay interface for the run (and removed after, also on failure or
//! Ctrl-C), and the stop flag SIGINT/SIGTERM set.
#![allow(unsafe_code)]

use std::{
    io::{self, Write},
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};

/// A UDP socket bound to every address of one family on one port.
pub struct Socket {
    fd: OwnedFd,
    /// The port.
    pub port: u16,
}

fn setopt(fd: RawFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: an int option on our own socket.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Socket {
    /// Bind `port` on every address of `v6`'s family, non-blocking.
    pub fn bind(v6: bool, port: u16) -> Result<Socket> {
        let any = if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        Self::bind_on(SocketAddr::new(any, port))
    }

    /// Bind `at` (an address of ours, or the unspecified address), non-blocking.
    pub fn bind_on(at: SocketAddr) -> Result<Socket> {
        let (v6, port) = (at.is_ipv6(), at.port());
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                family,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("socket");
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let f = fd.as_raw_fd();
        // Room for the answers of thousands of exchanges in a burst.
        let _ = setopt(f, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20);
        let _ = setopt(f, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
        let r = if v6 {
            setopt(f, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1).context("IPV6_V6ONLY")?;
            setopt(f, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1).context("IPV6_RECVPKTINFO")?;
            // SAFETY: zeroed sockaddr_in6 is the unspecified address.
            let mut sa: libc::sockaddr_in6 = unsafe { zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = port.to_be();
            if let IpAddr::V6(a) = at.ip() {
                sa.sin6_addr.s6_addr = a.octets();
            }
            // SAFETY: bind to a valid sockaddr_in6.
            unsafe {
                libc::bind(
                    f,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as u32,
                )
            }
        } else {
            setopt(f, libc::IPPROTO_IP, libc::IP_PKTINFO, 1).context("IP_PKTINFO")?;
            // SAFETY: zeroed sockaddr_in is INADDR_ANY.
            let mut sa: libc::sockaddr_in = unsafe { zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = port.to_be();
            if let IpAddr::V4(a) = at.ip() {
                sa.sin_addr.s_addr = u32::from(a).to_be();
            }
            // SAFETY: bind to a valid sockaddr_in.
            unsafe {
                libc::bind(
                    f,
                    (&sa as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as u32,
                )
            }
        };
        if r < 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("binding UDP {at}"));
        }
        Ok(Socket { fd, port })
    }

    /// The descriptor, for poll.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Send `data` (after `prefix`) from `src` to `dst`.
    pub fn send(&self, src: IpAddr, dst: SocketAddr, prefix: &[u8], data: &[u8]) -> io::Result<()> {
        let mut iov = [
            libc::iovec {
                iov_base: prefix.as_ptr() as *mut libc::c_void,
                iov_len: prefix.len(),
            },
            libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            },
        ];
        let mut cbuf = [0u64; 8];
        // SAFETY: zeroed storage, filled below as the family's sockaddr.
        let mut name: libc::sockaddr_storage = unsafe { zeroed() };
        // SAFETY: zeroed msghdr; pointers set to live buffers below.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = 2;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        // SAFETY: CMSG macros on our own control buffer (room for one
        // in6_pktinfo); `name` written as the matching sockaddr.
        unsafe {
            match (src, dst) {
                (IpAddr::V6(s), SocketAddr::V6(d)) => {
                    let a = &mut *msg.msg_name.cast::<libc::sockaddr_in6>();
                    a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    a.sin6_port = d.port().to_be();
                    a.sin6_addr.s6_addr = d.ip().octets();
                    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
                    msg.msg_controllen =
                        libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                    let c = libc::CMSG_FIRSTHDR(&msg);
                    (*c).cmsg_level = libc::IPPROTO_IPV6;
                    (*c).cmsg_type = libc::IPV6_PKTINFO;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
                    (*libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>())
                        .ipi6_addr
                        .s6_addr = s.octets();
                }
                (IpAddr::V4(s), SocketAddr::V4(d)) => {
                    let a = &mut *msg.msg_name.cast::<libc::sockaddr_in>();
                    a.sin_family = libc::AF_INET as libc::sa_family_t;
                    a.sin_port = d.port().to_be();
                    a.sin_addr.s_addr = u32::from(*d.ip()).to_be();
                    msg.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                    msg.msg_controllen =
                        libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                    let c = libc::CMSG_FIRSTHDR(&msg);
                    (*c).cmsg_level = libc::IPPROTO_IP;
                    (*c).cmsg_type = libc::IP_PKTINFO;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
                    (*libc::CMSG_DATA(c).cast::<libc::in_pktinfo>())
                        .ipi_spec_dst
                        .s_addr = u32::from(s).to_be();
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "address families differ",
                    ));
                }
            }
            if libc::sendmsg(self.raw(), &msg, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// One datagram if there is one: its length, sender and the local
    /// address it came to. Truncated datagrams are skipped.
    pub fn recv(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr, IpAddr)> {
        loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut cbuf = [0u64; 16];
            // SAFETY: zeroed storage for the sender's address.
            let mut name: libc::sockaddr_storage = unsafe { zeroed() };
            // SAFETY: zeroed msghdr, pointers to live buffers.
            let mut msg: libc::msghdr = unsafe { zeroed() };
            msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 16]>();
            // SAFETY: msg points at buffers that outlive the call.
            let n = unsafe { libc::recvmsg(self.raw(), &mut msg, 0) };
            if n < 0 {
                return None;
            }
            if msg.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            // SAFETY: the kernel wrote the sockaddr of ss_family.
            let from = unsafe {
                match name.ss_family as i32 {
                    libc::AF_INET6 => {
                        let a =
                            &*(&name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                        SocketAddr::new(
                            IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                            u16::from_be(a.sin6_port),
                        )
                    }
                    libc::AF_INET => {
                        let a =
                            &*(&name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                        SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                            u16::from_be(a.sin_port),
                        )
                    }
                    _ => continue,
                }
            };
            let mut to = None;
            // SAFETY: walking the control messages the kernel wrote, with the CMSG macros.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_PKTINFO
                    {
                        let p = &*libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>();
                        to = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
                    } else if (*c).cmsg_level == libc::IPPROTO_IP
                        && (*c).cmsg_type == libc::IP_PKTINFO
                    {
                        let p = &*libc::CMSG_DATA(c).cast::<libc::in_pktinfo>();
                        to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            if let Some(to) = to {
                return Some((n as usize, from, to));
            }
        }
    }
}

/// Room for `n` more descriptors: the soft limit on open files raised
/// (up to the hard limit) if it is lower.
pub fn room_for_files(n: u64) -> Result<()> {
    // SAFETY: getrlimit/setrlimit on a zeroed struct we own.
    unsafe {
        let mut r: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return Err(io::Error::last_os_error()).context("getrlimit");
        }
        let want = n.saturating_add(64);
        if r.rlim_cur >= want {
            return Ok(());
        }
        if r.rlim_max < want {
            bail!(
                "{n} sockets need {want} open files; the hard limit is {} (ulimit -Hn)",
                r.rlim_max
            );
        }
        r.rlim_cur = want;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            return Err(io::Error::last_os_error()).context("setrlimit");
        }
    }
    Ok(())
}

/// Wait until one of `fds` is readable or `timeout_ms` passes; which are readable.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: poll over our own pollfd array.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    p.iter()
        .map(|x| n > 0 && x.revents & libc::POLLIN != 0)
        .collect()
}

/// How long the source addresses may take to become usable.
const USABLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Addresses added to an interface for the run: removed on drop (also on
/// a panic or after Ctrl-C). Addresses the interface had before are
/// used, not added, and stay.
pub struct AddedAddrs {
    interface: String,
    added: Vec<IpAddr>,
}

fn ip_batch(lines: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip (iproute2)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(lines.as_bytes())
        .context("writing to ip -batch")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("ip -batch: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl AddedAddrs {
    /// Put `addrs` on `interface` (host prefixes, no duplicate address detection).
    pub fn add(interface: &str, addrs: &[IpAddr]) -> Result<AddedAddrs> {
        let out = Command::new("ip")
            .args(["-o", "addr", "show", "dev", interface])
            .output()
            .context("running ip (iproute2)")?;
        if !out.status.success() {
            bail!(
                "interface {interface}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let have: std::collections::HashSet<IpAddr> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|x| *x == "inet" || *x == "inet6")?;
                w.next()?.split('/').next()?.parse().ok()
            })
            .collect();
        let mut me = AddedAddrs {
            interface: interface.to_string(),
            added: addrs
                .iter()
                .copied()
                .filter(|a| !have.contains(a))
                .collect(),
        };
        let mut lines = String::new();
        for a in &me.added {
            let (len, opt) = if a.is_ipv4() {
                (32, "")
            } else {
                (128, " nodad")
            };
            lines.push_str(&format!("address add {a}/{len} dev {interface}{opt}\n"));
        }
        if let Err(e) = ip_batch(&lines) {
            // Whatever went on comes off again (drop).
            return Err(e.context(format!("adding source addresses to {interface}")));
        }
        me.added.shrink_to_fit();
        me.wait_usable()?;
        Ok(me)
    }

    /// Wait (up to [`USABLE_WITHIN`]) until every IPv6 address added has
    /// its local route. Linux makes an address without duplicate address
    /// detection a source at once, but inserts the route that makes it
    /// accept packets to it later, from its address-configuration worker
    /// (the end of "DAD"); on a busy machine that took long enough for the
    /// gateway's first answers (its Neighbour Advertisement, its
    /// IKE_SA_INIT response) to be dropped as not ours (`kfree_skb`
    /// `IP_INADDRERRORS` in `ip6_forward`) and every first exchange to
    /// cost the core's 1 s retransmission.
    fn wait_usable(&self) -> Result<()> {
        let want: Vec<IpAddr> = self.added.iter().copied().filter(IpAddr::is_ipv6).collect();
        if want.is_empty() {
            return Ok(());
        }
        let ifindex = xdpsec_platform::ifindex(&self.interface)
            .with_context(|| format!("interface {}", self.interface))?;
        let mut rtnl = xdpsec_platform::neighbor::netlink::Rtnl::open()
            .context("opening a route netlink socket")?;
        let deadline = std::time::Instant::now() + USABLE_WITHIN;
        loop {
            // One route dump (no process started): the local routes.
            let dump = rtnl.dump_routes().context("dumping routes")?;
            let routed = xdpsec_platform::neighbor::local_addresses(&dump.messages, ifindex);
            let missing = want.iter().filter(|a| !routed.contains(a)).count();
            if missing == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "{missing} of the {} source addresses added to {} have no local route after {} s",
                    want.len(),
                    self.interface,
                    USABLE_WITHIN.as_secs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// How many were added (not there before).
    pub fn added(&self) -> usize {
        self.added.len()
    }
}

impl Drop for AddedAddrs {
    fn drop(&mut self) {
        let mut lines = String::new();
        for a in &self.added {
            let len = if a.is_ipv4() { 32 } else { 128 };
            lines.push_str(&format!("address del {a}/{len} dev {}\n", self.interface));
        }
        if !lines.is_empty()
            && let Err(e) = ip_batch(&lines)
        {
            eprintln!(
                "xdpsec loadtest: removing the source addresses from {}: {e:#}",
                self.interface
            );
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Make SIGINT and SIGTERM set the stop flag instead of ending the process.
pub fn catch_stop_signals() {
    for s in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing an async-signal-safe handler (one atomic store).
        unsafe { libc::signal(s, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether SIGINT or SIGTERM came.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}
