//! Inner routes into tunnels: the prefixes (`Cidr`) and the table the
//! workers look each packet to encrypt up in.
use std::{collections::HashMap, net::IpAddr};

/// An address with a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Cidr {
    type Err = ();
    fn from_str(s: &str) -> Result<Cidr, ()> {
        let (a, l) = s.split_once('/').ok_or(())?;
        let addr: IpAddr = a.parse().map_err(|_| ())?;
        let len: u8 = l.parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(());
        }
        Ok(Cidr { addr, len })
    }
}

/// Inner destination prefixes routed into tunnels. Longest-prefix match
/// with one hash table per prefix length in use, longest first: a lookup
/// costs one hash probe per distinct length (typically one or two), not
/// one comparison per tunnel, so thousands of tunnels cost no more per
/// packet than one. Built once at start-up (no allocation per packet).
///
/// A prefix may route into several tunnels at equal cost (SD-WAN: one per
/// BFD-up path, across colors): each flow (addresses, protocol, ports)
/// sticks to one of them, so its packets stay in order.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// (prefix length, masked address -> target), IPv4 then IPv6 keys as
    /// u128 (IPv4 in the low 32 bits), longest length first per family.
    /// A target is a tunnel, or with [`ECMP`] set an index into `groups`.
    v4: Vec<(u8, HashMap<u128, u32>)>,
    v6: Vec<(u8, HashMap<u128, u32>)>,
    /// Equal-cost tunnel sets.
    groups: Vec<Box<[u32]>>,
}

/// A route target with this bit set is an equal-cost group.
const ECMP: u32 = 1 << 31;

/// `addr` with the bits beyond `len` cleared, as a u128 (IPv4 in the low 32).
pub(crate) fn masked(addr: IpAddr, len: u8) -> u128 {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            u128::from(u32::from(a) & m)
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            u128::from(a) & m
        }
    }
}

impl RouteTable {
    /// Build from `(prefix, tunnel index)` pairs (the first tunnel given a
    /// prefix keeps it).
    pub fn new(routes: Vec<(Cidr, u32)>) -> RouteTable {
        RouteTable::with_ecmp(routes.into_iter().map(|(c, t)| (c, vec![t])).collect())
    }

    /// Build from `(prefix, tunnels)` pairs: several tunnels share the
    /// prefix's flows at equal cost (the first pair given a prefix keeps it;
    /// an empty list routes nothing).
    pub fn with_ecmp(routes: Vec<(Cidr, Vec<u32>)>) -> RouteTable {
        let mut t = RouteTable::default();
        for (c, tunnels) in routes {
            let tunnel = match tunnels.as_slice() {
                [] => continue,
                [one] => *one,
                many => {
                    t.groups.push(many.into());
                    ECMP | (t.groups.len() - 1) as u32
                }
            };
            let list = if c.addr.is_ipv4() {
                &mut t.v4
            } else {
                &mut t.v6
            };
            let pos = match list.iter().position(|(l, _)| *l == c.len) {
                Some(p) => p,
                None => {
                    list.push((c.len, HashMap::new()));
                    list.len() - 1
                }
            };
            list[pos].1.entry(masked(c.addr, c.len)).or_insert(tunnel);
        }
        t.v4.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
        t.v6.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
        t
    }

    /// The route target for inner destination `dst` (longest prefix wins).
    fn target(&self, dst: IpAddr) -> Option<u32> {
        let list = if dst.is_ipv4() { &self.v4 } else { &self.v6 };
        list.iter()
            .find_map(|(len, m)| m.get(&masked(dst, *len)).copied())
    }

    /// The tunnel for inner destination `dst` (longest prefix wins; of an
    /// equal-cost set, the first).
    #[cfg(test)]
    pub fn lookup(&self, dst: IpAddr) -> Option<u32> {
        let t = self.target(dst)?;
        if t & ECMP == 0 {
            return Some(t);
        }
        self.groups.get((t & !ECMP) as usize)?.first().copied()
    }

    /// The tunnel for the inner IP packet `pkt`: by its destination, and
    /// within an equal-cost set by a hash of its flow (addresses, protocol,
    /// ports), so a flow always takes the same tunnel.
    pub fn lookup_packet(&self, pkt: &[u8]) -> Option<u32> {
        let t = self.target(inner_dst(pkt)?)?;
        if t & ECMP == 0 {
            return Some(t);
        }
        let g = self.groups.get((t & !ECMP) as usize)?;
        let h = flow_hash(pkt);
        g.get((h % g.len() as u64) as usize).copied()
    }
}

/// A hash of an inner packet's flow: source and destination addresses,
/// protocol, and the first four bytes after the IPv4 header (ports for TCP,
/// UDP, SCTP; type and code for ICMP) or after the fixed IPv6 header.
fn flow_hash(pkt: &[u8]) -> u64 {
    let (addrs, proto, l4) = match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            let ihl = usize::from(pkt[0] & 0xf) * 4;
            (&pkt[12..20], pkt[9], pkt.get(ihl..ihl + 4))
        }
        Some(6) if pkt.len() >= 40 => (&pkt[8..40], pkt[6], pkt.get(40..44)),
        _ => return 0,
    };
    // FNV-1a: cheap, and good enough to spread flows over a few tunnels.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in addrs
        .iter()
        .chain(std::iter::once(&proto))
        .chain(l4.unwrap_or(&[]))
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Inner destination address of an IP packet.
pub(crate) fn inner_dst(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&pkt[16..20]).ok()?)),
        6 if pkt.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&pkt[24..40]).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::udp4;

    #[test]
    fn equal_cost_tunnels_share_flows_and_each_flow_sticks() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let t = RouteTable::with_ecmp(vec![
            (c("203.0.113.3/32"), vec![7, 8]),
            (c("203.0.113.0/24"), vec![5]),
            (c("203.0.113.9/32"), vec![]),
        ]);
        let mut seen = std::collections::BTreeMap::new();
        for port in 1000..1064u16 {
            let p = udp4([203, 0, 113, 1], port, [203, 0, 113, 3]);
            let a = t.lookup_packet(&p).unwrap();
            // The same flow always takes the same tunnel.
            assert_eq!(t.lookup_packet(&p), Some(a));
            *seen.entry(a).or_insert(0) += 1;
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            vec![7, 8],
            "{seen:?}"
        );
        assert!(seen.values().all(|&n| n >= 16), "64 flows spread: {seen:?}");
        // A single tunnel, and a prefix with none (falls to the /24).
        let p = udp4([203, 0, 113, 1], 1, [203, 0, 113, 4]);
        assert_eq!(t.lookup_packet(&p), Some(5));
        let p = udp4([203, 0, 113, 1], 1, [203, 0, 113, 9]);
        assert_eq!(t.lookup_packet(&p), Some(5));
        assert_eq!(t.lookup("203.0.113.3".parse().unwrap()), Some(7));
        assert_eq!(t.lookup_packet(&[0x45, 0]), None);
    }

    #[test]
    fn longest_prefix_wins() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let t = RouteTable::new(vec![
            (c("203.0.113.0/24"), 1),
            (c("203.0.113.1/32"), 2),
            (c("2001:db8::/32"), 3),
        ]);
        assert_eq!(t.lookup("203.0.113.1".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("203.0.113.9".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("198.51.100.1".parse().unwrap()), None);
        assert_eq!(t.lookup("2001:db8:5::1".parse().unwrap()), Some(3));
        assert_eq!(t.lookup("2001:db9::1".parse().unwrap()), None);
        // A default route, and thousands of host routes: still exact.
        let mut routes = vec![(c("0.0.0.0/0"), 9)];
        for i in 0..5000u32 {
            let a = std::net::Ipv4Addr::from(0xcb00_7100u32 + i); // from 203.0.113.0
            routes.push((
                Cidr {
                    addr: a.into(),
                    len: 32,
                },
                100 + i,
            ));
        }
        let t = RouteTable::new(routes);
        assert_eq!(t.lookup("203.0.113.5".parse().unwrap()), Some(105));
        assert_eq!(
            t.lookup(std::net::Ipv4Addr::from(0xcb00_7100u32 + 4999).into()),
            Some(5099)
        );
        assert_eq!(t.lookup("198.51.100.1".parse().unwrap()), Some(9));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), None);
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(masked(ip("203.0.113.130"), 25), u128::from(0xcb00_7180u32));
        assert_eq!(masked(ip("203.0.113.130"), 0), 0);
        assert_eq!(masked(ip("203.0.113.130"), 32), u128::from(0xcb00_7182u32));
        assert_eq!(masked(ip("203.0.113.130"), 99), u128::from(0xcb00_7182u32));
        assert_eq!(
            masked(ip("2001:db8::1"), 128),
            u128::from(ip6("2001:db8::1"))
        );
        assert_eq!(masked(ip("2001:db8::1"), 32), u128::from(ip6("2001:db8::")));
        assert_eq!(masked(ip("2001:db8::1"), 0), 0);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ip6(s: &str) -> std::net::Ipv6Addr {
        s.parse().unwrap()
    }
}
