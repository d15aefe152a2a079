//! Hand-built frames and the sockets that send and receive them.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::Lab;

/// Internet checksum over `data`, starting from `sum`.
pub fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            (c[0] as u16) << 8
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet with `options` (padded to 4 bytes) and flags/fragment offset `frag`.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0); // end of option list
    }
    let hl = 20 + opts.len();
    let total = (hl + payload.len()) as u16;
    let mut h = vec![0u8; 20];
    h[0] = 0x40 | (hl / 4) as u8;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h.extend_from_slice(&opts);
    let c = checksum(&h, 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 packet whose extension headers `ext` (each: its next-header
/// number and its bytes, the first byte of which this function fills in)
/// come before the upper-layer `proto`.
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ext: &[(u8, Vec<u8>)],
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, bytes)) in ext.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = ext.get(i + 1).map(|e| e.0).unwrap_or(proto);
        body.extend_from_slice(&b);
    }
    body.extend_from_slice(payload);
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    h[6] = ext.first().map(|e| e.0).unwrap_or(proto);
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(&body);
    h
}

/// A UDP datagram; the checksum is computed (IPv6 needs one), with the pseudo-header of `src`/`dst`.
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = Vec::with_capacity(len as usize);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&len.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
        }
        _ => panic!("mixed address families"),
    }
    let mut sum = 0u32;
    for c in pseudo.chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    let mut c = checksum(&u, sum);
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// An ESP packet: SPI, sequence number, then `body` (opaque here).
pub fn esp(spi: u32, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(8 + body.len());
    e.extend_from_slice(&spi.to_be_bytes());
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(body);
    e
}

/// The MAC address of `ifname` in `ns`.
pub fn mac_of(ns: &str, ifname: &str) -> Result<[u8; 6]> {
    let out = Lab::exec(ns, &["cat", &format!("/sys/class/net/{ifname}/address")])?;
    let s = String::from_utf8_lossy(&out.stdout);
    let bytes: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("MAC of {ifname} in {ns}: {s:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC of {ifname}: {s:?}"))
}

/// An AF_PACKET socket bound to one interface: sends whole Ethernet frames.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    /// MAC of the interface the socket sends from.
    pub src_mac: [u8; 6],
    /// MAC of the veth peer (the frames' destination).
    pub dst_mac: [u8; 6],
}

impl PacketSocket {
    /// Open on `ifname` in `ns`, addressing frames to `peer_if` in `peer_ns`.
    pub fn open(ns: &str, ifname: &str, peer_ns: &str, peer_if: &str) -> Result<PacketSocket> {
        let name = ifname.to_string();
        let (fd, ifindex) = Lab::in_ns(ns, move || -> Result<(OwnedFd, i32)> {
            // SAFETY: plain socket creation; the fd is owned below.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                )
            };
            if raw < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: raw is a fresh fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let c = std::ffi::CString::new(name.clone())?;
            // SAFETY: valid C string.
            let idx = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
            if idx == 0 {
                bail!("no interface {name}");
            }
            Ok((fd, idx))
        })??;
        Ok(PacketSocket {
            fd,
            ifindex,
            src_mac: mac_of(ns, ifname)?,
            dst_mac: mac_of(peer_ns, peer_if)?,
        })
    }

    /// Send one Ethernet frame as given.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and sll are valid for the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            bail!("sendto AF_PACKET: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wrap an IPv4 packet in Ethernet and send it.
    pub fn send_v4(&self, packet: &[u8]) -> Result<()> {
        self.send(&eth(self.dst_mac, self.src_mac, 0x0800, packet))
    }

    /// Wrap an IPv6 packet in Ethernet and send it.
    pub fn send_v6(&self, packet: &[u8]) -> Result<()> {
        self.send(&eth(self.dst_mac, self.src_mac, 0x86dd, packet))
    }
}

/// A raw IP socket for one protocol (e.g. 50, ESP) in a namespace: sees what the kernel receives.
pub struct RawListener {
    fd: OwnedFd,
}

impl RawListener {
    /// Open for `proto` over IPv4 (`v6 = false`) or IPv6 in `ns`.
    pub fn open(ns: &str, proto: i32, v6: bool) -> Result<RawListener> {
        let fd = Lab::in_ns(ns, move || -> Result<OwnedFd> {
            let fam = if v6 { libc::AF_INET6 } else { libc::AF_INET };
            // SAFETY: plain socket creation.
            let raw = unsafe { libc::socket(fam, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto) };
            if raw < 0 {
                bail!(
                    "raw socket proto {proto}: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: fresh fd.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        })??;
        Ok(RawListener { fd })
    }

    /// Count packets arriving within `wait`.
    pub fn count(&self, wait: Duration) -> usize {
        drain(self.fd.as_raw_fd(), wait)
    }
}

/// Count datagrams readable on `fd`: those queued now, plus those arriving within `wait`.
fn drain(fd: i32, wait: Duration) -> usize {
    let deadline = Instant::now() + wait;
    let mut n = 0;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is valid for writing.
        let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if got >= 0 {
            n += 1;
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return n;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
    }
}

/// Bind a UDP socket on `addr:port` inside `ns`.
pub fn udp_listener(ns: &str, addr: IpAddr, port: u16) -> Result<UdpSocket> {
    let s = Lab::in_ns(ns, move || UdpSocket::bind((addr, port)))??;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Count datagrams arriving on `sock` within `wait`.
pub fn udp_count(sock: &UdpSocket, wait: Duration) -> usize {
    drain(sock.as_raw_fd(), wait)
}
