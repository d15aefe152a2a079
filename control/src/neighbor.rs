//! Next-hop MAC addresses for the underlay, from the kernel.
//!
//! The control thread resolves each tunnel peer's next hop through the
//! kernel (route lookup, then the neighbour table; when the entry is missing
//! it makes the kernel resolve it by sending it one empty UDP datagram to the
//! discard port) and publishes the MAC in an atomic the workers read per
//! packet. Workers never wait on this.
use std::{
    net::{IpAddr, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
};

/// A MAC address published by control, read by workers (0 = unknown).
#[derive(Debug, Default)]
pub struct SharedMac(AtomicU64);

impl SharedMac {
    /// Publish `mac`.
    pub fn set(&self, mac: Option<[u8; 6]>) {
        let v = mac.map(|m| {
            let mut b = [0u8; 8];
            b[..6].copy_from_slice(&m);
            u64::from_le_bytes(b) | (1 << 63)
        });
        self.0.store(v.unwrap_or(0), Ordering::Relaxed);
    }

    /// The current MAC, if known.
    #[inline]
    pub fn get(&self) -> Option<[u8; 6]> {
        let v = self.0.load(Ordering::Relaxed);
        if v == 0 {
            return None;
        }
        let b = v.to_le_bytes();
        Some([b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

fn ip_json(args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new("ip").arg("-j").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The next hop towards `peer` on `ifname`: a gateway, or the peer itself when on-link.
pub fn next_hop(peer: IpAddr, ifname: &str) -> IpAddr {
    let p = peer.to_string();
    ip_json(&["route", "get", &p, "oif", ifname])
        .and_then(|v| v.get(0)?.get("gateway")?.as_str()?.parse().ok())
        .unwrap_or(peer)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// Look `hop` up in the kernel's neighbour table on `ifname`.
pub fn lookup(hop: IpAddr, ifname: &str) -> Option<[u8; 6]> {
    let h = hop.to_string();
    let v = ip_json(&["neigh", "show", "to", &h, "dev", ifname])?;
    for e in v.as_array()? {
        let failed = e
            .get("state")
            .and_then(|s| s.as_array())
            .is_some_and(|s| s.iter().any(|x| x == "FAILED" || x == "INCOMPLETE"));
        if failed {
            continue;
        }
        if let Some(mac) = e.get("lladdr").and_then(|m| m.as_str()).and_then(parse_mac) {
            return Some(mac);
        }
    }
    None
}

/// Make the kernel resolve `hop`: one empty UDP datagram to its discard port.
pub fn solicit(hop: IpAddr) {
    let bind: IpAddr = if hop.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    };
    if let Ok(s) = UdpSocket::bind((bind, 0)) {
        let _ = s.send_to(&[], (hop, 9));
    }
}

/// The MAC address of `ifname`.
pub fn interface_mac(ifname: &str) -> Option<[u8; 6]> {
    let s = UdpSocket::bind("0.0.0.0:0")
        .or_else(|_| UdpSocket::bind("[::]:0"))
        .ok()?;
    // SAFETY: zeroed ifreq is valid; the name is copied in below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(ifname.as_bytes()) {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return None;
    }
    // SAFETY: the union holds ifru_hwaddr after SIOCGIFHWADDR.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_mac_round_trips() {
        let m = SharedMac::default();
        assert_eq!(m.get(), None);
        m.set(Some([0, 0, 0, 0, 0, 0]));
        assert_eq!(m.get(), Some([0; 6]));
        m.set(Some([0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]));
        assert_eq!(m.get(), Some([0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]));
        m.set(None);
        assert_eq!(m.get(), None);
        assert_eq!(
            parse_mac("0a:1b:2c:3d:4e:5f"),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        assert_eq!(parse_mac("0a:1b"), None);
    }
}
