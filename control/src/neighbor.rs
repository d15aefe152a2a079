//! Next-hop MAC addresses for the underlay, from the kernel over rtnetlink.
//!
//! The housekeeping thread resolves every tunnel peer's next hop with one
//! route dump and one neighbour dump for all tunnels together: the longest
//! matching route out of the underlay interface gives the gateway (or the
//! peer itself when on-link), the neighbour table of that interface (by
//! interface index, so IPv6 link-local gateways work) gives the MAC. A
//! missing entry is resolved by the kernel when an empty UDP datagram to
//! the next hop's discard port leaves through the interface. The MAC is published in an atomic the workers read per
//! packet; workers never wait on this.
use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};
use tracing::{debug, warn};

pub mod netlink;

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

/// The main routing table (`RT_TABLE_MAIN`).
const TABLE_MAIN: u32 = 254;
/// The default routing table (`RT_TABLE_DEFAULT`), looked up after main.
const TABLE_DEFAULT: u32 = 253;

/// One way out of a unicast route: traffic to `dst/prefix_len` leaves through
/// interface `oif`, to `gateway` or (None) directly to the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Routing table id.
    pub table: u32,
    /// Destination prefix.
    pub dst: IpAddr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Route metric (lower wins among equal prefixes).
    pub metric: u32,
    /// Output interface index.
    pub oif: u32,
    /// Gateway (`via`), None when the destination is on-link.
    pub gateway: Option<IpAddr>,
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn via_addr(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(a) => Some(IpAddr::V4(*a)),
        RouteVia::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The gateway among a route's (or a multipath hop's) attributes: RTA_GATEWAY, or RTA_VIA
/// (an IPv6 gateway for an IPv4 route, RFC 5549).
fn gateway_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_addr(g),
        RouteAttribute::Via(v) => via_addr(v),
        _ => None,
    })
}

/// The ways out of one route message: one entry, or one per multipath hop.
/// Only unicast IPv4/IPv6 routes count; local, broadcast, blackhole and the
/// like never name a next hop.
pub fn route_entries(m: &RouteMessage) -> Vec<RouteEntry> {
    if m.header.kind != RouteType::Unicast {
        return Vec::new();
    }
    let (table, dst, metric, oif) = m.attributes.iter().fold(
        (u32::from(m.header.table), None, 0, None),
        |(t, d, p, o), a| match a {
            RouteAttribute::Table(t) => (*t, d, p, o),
            RouteAttribute::Destination(x) => (t, route_addr(x), p, o),
            RouteAttribute::Priority(p) => (t, d, *p, o),
            RouteAttribute::Oif(o) => (t, d, p, Some(*o)),
            _ => (t, d, p, o),
        },
    );
    let dst = match (dst, m.header.address_family) {
        (Some(d), _) => d,
        // A default route carries no RTA_DST.
        (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
        (None, AddressFamily::Inet6) => IpAddr::from([0u16; 8]),
        (None, _) => return Vec::new(),
    };
    let entry = |oif, gateway| RouteEntry {
        table,
        dst,
        prefix_len: m.header.destination_prefix_length,
        metric,
        oif,
        gateway,
    };
    let mut out = Vec::new();
    if let Some(o) = oif {
        out.push(entry(o, gateway_of(&m.attributes)));
    }
    for a in &m.attributes {
        if let RouteAttribute::MultiPath(hops) = a {
            out.extend(
                hops.iter()
                    .map(|h| entry(h.interface_index, gateway_of(&h.attributes))),
            );
        }
    }
    out
}

/// An address as a 128-bit number, IPv4 in the low 32 bits, and its width.
fn addr_bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// `a` with all but its first `len` bits cleared.
fn masked(a: IpAddr, len: u8) -> u128 {
    let (bits, width) = addr_bits(a);
    let keep = u32::from(len.min(width));
    let clear = u32::from(width) - keep;
    bits.checked_shr(clear)
        .and_then(|b| b.checked_shl(clear))
        .unwrap_or(0)
}

/// Key of a prefix: (table rank, IPv6?, prefix length, masked address).
type PrefixKey = (u8, bool, u8, u128);

/// Routes out of one interface, indexed for longest-prefix match, so that
/// each lookup costs one hash probe per distinct prefix length in use.
#[derive(Debug, Default)]
pub struct NextHopTable {
    /// (table rank, IPv6?, prefix length), in lookup order.
    lengths: Vec<(u8, bool, u8)>,
    /// The best (lowest metric) gateway of each prefix.
    prefixes: HashMap<PrefixKey, (u32, Option<IpAddr>)>,
}

impl NextHopTable {
    /// Index the routes of the main and default tables that leave through `ifindex`.
    pub fn new(routes: impl IntoIterator<Item = RouteEntry>, ifindex: u32) -> NextHopTable {
        let mut t = NextHopTable::default();
        for r in routes {
            // Like `ip route get PEER oif IF`: only routes out of the underlay
            // interface count, main table first, then default (the kernel's
            // default rules; other policy rules are not followed).
            let rank = match r.table {
                TABLE_MAIN => 0,
                TABLE_DEFAULT => 1,
                _ => continue,
            };
            if r.oif != ifindex {
                continue;
            }
            let v6 = r.dst.is_ipv6();
            let key = (rank, v6, r.prefix_len, masked(r.dst, r.prefix_len));
            let e = t.prefixes.entry(key).or_insert((r.metric, r.gateway));
            if r.metric < e.0 {
                *e = (r.metric, r.gateway);
            }
            if !t.lengths.contains(&(rank, v6, r.prefix_len)) {
                t.lengths.push((rank, v6, r.prefix_len));
            }
        }
        t.lengths
            .sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
        t
    }

    /// The next hop towards `peer`: the gateway of the longest matching
    /// prefix, or the peer itself when that route is on-link or no route
    /// leaves through the interface (then the kernel, too, assumes on-link).
    pub fn next_hop(&self, peer: IpAddr) -> IpAddr {
        let v6 = peer.is_ipv6();
        self.lengths
            .iter()
            .filter(|l| l.1 == v6)
            .find_map(|&(rank, _, len)| self.prefixes.get(&(rank, v6, len, masked(peer, len))))
            .and_then(|(_, gw)| *gw)
            .unwrap_or(peer)
    }
}

/// Whether a neighbour entry in `state` has a usable link-layer address.
fn usable(state: NeighbourState) -> bool {
    const VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80; // REACHABLE..PROBE, NOARP, PERMANENT
    const BAD: u16 = 0x01 | 0x20; // INCOMPLETE, FAILED
    match state {
        NeighbourState::Reachable
        | NeighbourState::Stale
        | NeighbourState::Delay
        | NeighbourState::Probe
        | NeighbourState::Noarp
        | NeighbourState::Permanent => true,
        NeighbourState::Other(s) => s & VALID != 0 && s & BAD == 0,
        _ => false,
    }
}

/// The usable MAC of each neighbour on `ifindex`, from neighbour messages.
pub fn neighbour_macs<'a>(
    msgs: impl IntoIterator<Item = &'a NeighbourMessage>,
    ifindex: u32,
) -> HashMap<IpAddr, [u8; 6]> {
    let mut out = HashMap::new();
    for m in msgs {
        if m.header.ifindex != ifindex || !usable(m.header.state) {
            continue;
        }
        let mut dst = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    dst = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    dst = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(&l[..]).ok(),
                _ => {}
            }
        }
        if let (Some(d), Some(m)) = (dst, mac) {
            out.insert(d, m);
        }
    }
    out
}

/// Warn once per process when rtnetlink fails; later failures go to debug.
fn report(what: &str, e: &dyn std::fmt::Display) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        debug!("next hops: {what}: {e}");
    } else {
        warn!("next hops: {what}: {e} (next-hop MACs stay as they were)");
    }
}

/// Make the kernel resolve each of `hops` on `ifname`: one empty UDP
/// datagram to its discard port, sent from that interface (so a link-local
/// hop is scoped by the interface index). The datagram waits in the kernel's
/// neighbour queue, which sends ARP or a neighbour solicitation from the
/// datagram's source address.
//
// Not RTM_NEWNEIGH with NTF_USE: it resolves too, but its solicitations need
// a usable link-local address on the interface, which a freshly created
// interface lacks for the seconds of duplicate address detection.
fn solicit(ifname: &str, ifindex: u32, hops: &[IpAddr]) {
    let mut v4 = None;
    let mut v6 = None;
    for &hop in hops {
        let (slot, bind, dst) = match hop {
            IpAddr::V4(a) => (
                &mut v4,
                SocketAddr::from(([0u8; 4], 0)),
                SocketAddr::from((a, DISCARD_PORT)),
            ),
            IpAddr::V6(a) => (
                &mut v6,
                SocketAddr::from(([0u16; 8], 0)),
                SocketAddr::V6(SocketAddrV6::new(a, DISCARD_PORT, 0, ifindex)),
            ),
        };
        if slot.is_none() {
            *slot = Some(bound_to_device(bind, ifname));
        }
        let sent = match slot {
            Some(Ok(s)) => s.send_to(&[], dst).map(|_| ()),
            Some(Err(e)) => Err(std::io::Error::new(e.kind(), e.to_string())),
            None => Ok(()),
        };
        if let Err(e) = sent {
            debug!(%hop, interface = ifname, error = %e, "next-hop solicitation not sent");
        }
    }
}

/// The discard port (RFC 863): where the solicitation datagram goes.
const DISCARD_PORT: u16 = 9;

/// A UDP socket bound to `bind` and to interface `ifname` (SO_BINDTODEVICE).
fn bound_to_device(bind: SocketAddr, ifname: &str) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(bind)?;
    // SAFETY: the option value is the interface name and its length.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr().cast(),
            ifname.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

/// Resolve each peer's next-hop MAC on `ifname` into `macs` (same order as
/// `peers`). Per round it makes one route dump and one neighbour dump for
/// all peers together, makes the kernel resolve the next hops it lacks,
/// and repeats every 100 ms until all are known or `wait` has passed
/// (`Duration::ZERO`: one round). A MAC once known is kept while a lookup
/// finds none. No subprocess.
pub fn refresh_next_hops(peers: &[IpAddr], ifname: &str, macs: &[SharedMac], wait: Duration) {
    let deadline = Instant::now() + wait;
    let Ok(name) = CString::new(ifname) else {
        return;
    };
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        report(
            &format!("interface {ifname}"),
            &std::io::Error::last_os_error(),
        );
        return;
    }
    let mut rtnl = match netlink::Rtnl::open() {
        Ok(r) => r,
        Err(e) => return report("opening rtnetlink", &e),
    };
    loop {
        let routes = match rtnl.dump_routes() {
            Ok(d) => d,
            Err(e) => return report("route dump", &e),
        };
        let table = NextHopTable::new(
            routes.messages.iter().flat_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_entries(r),
                _ => Vec::new(),
            }),
            ifindex,
        );
        let neigh = match rtnl.dump_neighbours() {
            Ok(d) => d,
            Err(e) => return report("neighbour dump", &e),
        };
        let known = neighbour_macs(
            neigh.messages.iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Some(n),
                _ => None,
            }),
            ifindex,
        );
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        for (peer, slot) in peers.iter().zip(macs) {
            let hop = table.next_hop(*peer);
            let mac = known.get(&hop).copied();
            if mac.is_none() && seen.insert(hop) {
                missing.push(hop);
            }
            if mac.is_some() && mac != slot.get() {
                debug!(%peer, %hop, interface = ifname, "next hop resolved");
            }
            if mac.is_some() || slot.get().is_none() {
                slot.set(mac);
            }
        }
        solicit(ifname, ifindex, &missing);
        if missing.is_empty() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
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
    }
}
