//! Next-hop MAC addresses for the underlay, from the kernel over rtnetlink.
//!
//! The housekeeping thread resolves every tunnel peer's next hop with one
//! route dump and one neighbour dump for all tunnels together: the longest
//! matching route out of the underlay interface gives the gateway (or the
//! peer itself when on-link), the neighbour table of that interface (by
//! interface index, so IPv6 link-local gateways work) gives the MAC. A
//! missing entry a frame waits for (see [`held`]) is resolved by the kernel
//! when an empty UDP datagram to the next hop's discard port leaves through
//! the interface; start-up's and the periodic passes only read. The MAC is
//! published in an atomic the workers read per packet
//! (`xdpsec_worker::neighbors`); workers never wait on this.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crossbeam::channel::{Receiver, Sender};

use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};
use tracing::{debug, warn};
use xdpsec_datapath::DropCounters;
use xdpsec_worker::neighbors::{NextHopMacs, NextHopTable, RouteEntry, SharedMac};

pub mod held;
pub mod inside;
pub mod netlink;

/// The next-hop MAC of every tunnel index, for the workers, and the peer
/// address each is resolved for. Sized once at start-up (the configured
/// tunnels plus room for SD-WAN peers); control sets a slot's peer when a
/// tunnel appears, and the next-hop thread resolves it.
pub struct NextHops {
    macs: Arc<NextHopMacs>,
    peers: Mutex<Vec<Option<IpAddr>>>,
    poke: (Sender<()>, Receiver<()>),
    /// Completed [`NextHops::refresh`] passes since start.
    refreshes: AtomicU64,
    /// Held frames (see [`held`]) sent once their next hop was resolved.
    held_sent: AtomicU64,
    /// Held frames dropped (single writer: the next-hop thread).
    held_drops: Arc<DropCounters>,
}

/// What woke the next-hop thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A new peer to resolve.
    Poke,
    /// Workers held frames for a next hop without a MAC.
    Held,
    /// Nothing before the timeout.
    Timeout,
}

impl NextHops {
    /// Slots for `peers` (index = tunnel index); `None` for unused ones.
    pub fn new(peers: Vec<Option<IpAddr>>) -> NextHops {
        NextHops {
            macs: Arc::new(NextHopMacs::new(peers.len())),
            peers: Mutex::new(peers),
            poke: crossbeam::channel::bounded(1),
            refreshes: AtomicU64::new(0),
            held_sent: AtomicU64::new(0),
            held_drops: Arc::new(DropCounters::new()),
        }
    }

    /// Tunnel `i`'s next-hop MAC slot.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&SharedMac> {
        self.macs.get(i)
    }

    /// The MAC slots, for the workers.
    pub fn macs(&self) -> Arc<NextHopMacs> {
        Arc::clone(&self.macs)
    }

    /// Control: tunnel `i` now goes to `peer` (or nowhere). A new peer is
    /// resolved at once by the next-hop thread.
    pub fn set_peer(&self, i: usize, peer: Option<IpAddr>) {
        let Some(slot) = self.macs.get(i) else {
            return;
        };
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers[i] != peer {
            peers[i] = peer;
            slot.set(None);
            if peer.is_some() {
                let _ = self.poke.0.try_send(());
            }
        }
    }

    /// Resolve every slot's peer on `ifname` (see [`refresh_next_hops`]):
    /// with a `wait`, next hops the kernel lacks are solicited; without
    /// (`Duration::ZERO`: start-up's and the periodic passes) the kernel's
    /// tables are only read. Soliciting a peer that is not on the link yet
    /// would leave its neighbour entry incomplete for the kernel's three
    /// probes (3 s), during which the kernel holds its replies to that
    /// peer's first IKE until the next probe, up to a second, or drops
    /// them; a next hop left alone is resolved by the kernel at once for
    /// its first reply, and by the held-frame path ([`held`]) for the
    /// first ESP.
    pub fn refresh(&self, ifname: &str, wait: Duration) {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let pairs: Vec<(IpAddr, &SharedMac)> = peers
            .iter()
            .zip(self.macs.slots())
            .filter_map(|(p, m)| p.map(|p| (p, m)))
            .collect();
        refresh_next_hops(&pairs, ifname, wait, !wait.is_zero());
        self.refreshes.fetch_add(1, Ordering::Release);
    }

    /// Completed refresh passes since start (start-up's, a new peer's and
    /// the periodic ones): `show platform hardware qfp active statistics`
    /// shows it, so a test can wait for a pass instead of sleeping.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Acquire)
    }

    /// One round (a dump, solicitations of those the kernel lacks) over
    /// the peers of `tunnels` only, the next hops held frames wait for:
    /// the MAC of each found, not published yet (the held frames go
    /// first, so a frame sent later does not overtake them). Not counted
    /// as a pass.
    pub fn resolve_some(&self, ifname: &str, tunnels: &[u32]) -> Vec<(u32, [u8; 6])> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let found: Vec<(u32, IpAddr, SharedMac)> = tunnels
            .iter()
            .filter_map(|&t| Some((t, peers.get(t as usize).copied()??, SharedMac::default())))
            .collect();
        let pairs: Vec<(IpAddr, &SharedMac)> = found.iter().map(|(_, p, m)| (*p, m)).collect();
        refresh_next_hops(&pairs, ifname, Duration::ZERO, true);
        found
            .iter()
            .filter_map(|(t, _, m)| Some((*t, m.get()?)))
            .collect()
    }

    /// Wait up to `d` for a new peer to resolve or held frames (which
    /// stay queued for [`held::HeldFrames::serve`]).
    pub fn wait(&self, d: Duration) -> Wake {
        if self.poke.1.try_recv().is_ok() {
            return Wake::Poke;
        }
        if !self.macs.held().is_empty() {
            return Wake::Held;
        }
        let mut sel = crossbeam::channel::Select::new();
        let poke = sel.recv(&self.poke.1);
        sel.recv(self.macs.held());
        match sel.ready_timeout(d) {
            Ok(i) if i == poke => {
                let _ = self.poke.1.try_recv();
                Wake::Poke
            }
            Ok(_) => Wake::Held,
            Err(_) => Wake::Timeout,
        }
    }

    /// Held frames sent once their next hop was resolved, since start.
    pub fn held_sent(&self) -> u64 {
        self.held_sent.load(Ordering::Relaxed)
    }

    /// The drops of held frames (OUT_SETTING_WRONG_L2_HDR), for the drop
    /// counters' totals.
    pub fn held_drops(&self) -> Arc<DropCounters> {
        Arc::clone(&self.held_drops)
    }
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

/// The addresses with a local route (table local, type local: the kernel
/// accepts packets to them) on interface `ifindex`, from route messages.
pub fn local_addresses<'a>(
    msgs: impl IntoIterator<Item = &'a RouteNetlinkMessage>,
    ifindex: u32,
) -> HashSet<IpAddr> {
    msgs.into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) if r.header.kind == RouteType::Local => Some(r),
            _ => None,
        })
        .filter(|r| r.attributes.contains(&RouteAttribute::Oif(ifindex)))
        .filter_map(|r| {
            r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => route_addr(d),
                _ => None,
            })
        })
        .collect()
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

/// Neighbours' MAC addresses by IP address, on one interface.
pub(super) type NeighbourMacs = HashMap<IpAddr, [u8; 6]>;

/// The index of `ifname` and an rtnetlink socket for [`dump_next_hops`];
/// `None` (reported once, as `what`) when either is missing.
pub(super) fn open_dumps(what: &str, ifname: &str) -> Option<(u32, netlink::Rtnl)> {
    let ifindex = match crate::ifindex(ifname) {
        Ok(i) => i,
        Err(e) => {
            report(what, &e);
            return None;
        }
    };
    match netlink::Rtnl::open() {
        Ok(r) => Some((ifindex, r)),
        Err(e) => {
            report("opening rtnetlink", &e);
            None
        }
    }
}

/// One route dump and one neighbour dump: the next-hop table out of
/// interface `ifindex` and the MACs its neighbours have there. On error,
/// which dump failed.
pub(super) fn dump_next_hops(
    rtnl: &mut netlink::Rtnl,
    ifindex: u32,
) -> Result<(NextHopTable, NeighbourMacs), (&'static str, std::io::Error)> {
    let routes = rtnl.dump_routes().map_err(|e| ("route dump", e))?;
    let table = NextHopTable::new(
        routes.messages.iter().flat_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => route_entries(r),
            _ => Vec::new(),
        }),
        ifindex,
    );
    let neigh = rtnl.dump_neighbours().map_err(|e| ("neighbour dump", e))?;
    let macs = neighbour_macs(
        neigh.messages.iter().filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => Some(n),
            _ => None,
        }),
        ifindex,
    );
    Ok((table, macs))
}

/// Resolve each peer's next-hop MAC on `ifname` into its slot. Per round it makes one route dump and one neighbour dump for
/// all peers together, makes the kernel resolve the next hops it lacks
/// (when `solicit`), and repeats every 100 ms until all are known or
/// `wait` has passed (`Duration::ZERO`: one round). A MAC once known is
/// kept while a lookup finds none. No subprocess.
pub fn refresh_next_hops(
    peers: &[(IpAddr, &SharedMac)],
    ifname: &str,
    wait: Duration,
    solicit_missing: bool,
) {
    let deadline = Instant::now() + wait;
    let Some((ifindex, mut rtnl)) = open_dumps(&format!("interface {ifname}"), ifname) else {
        return;
    };
    loop {
        let (table, known) = match dump_next_hops(&mut rtnl, ifindex) {
            Ok(d) => d,
            Err((what, e)) => return report(what, &e),
        };
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        for &(peer, slot) in peers {
            let hop = table.next_hop(peer);
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
        if solicit_missing {
            solicit(ifname, ifindex, &missing);
        }
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

    // Captured from a namespace made with (xc0 has index 3, xc1 index 2):
    //   ip link add xc0 type veth peer name xc1; ip link set lo/xc0/xc1 up
    //   ip addr add 198.51.100.1/24 dev xc0; ip addr add 2001:db8:100::1/64 dev xc0 nodad
    //   ip addr add fe80::1/64 dev xc0 nodad; ip addr add 2001:db8:400::1/64 dev xc1 nodad
    //   ip route add default via 198.51.100.254 dev xc0
    //   ip route add 203.0.113.0/24 via 198.51.100.2 metric 50
    //   ip route add 203.0.113.0/24 via 198.51.100.3 metric 10
    //   ip route add 203.0.113.128/25 nexthop via 198.51.100.4 dev xc0 nexthop via 198.51.100.5 dev xc0
    //   ip route add blackhole 203.0.113.7/32
    //   ip route add 203.0.113.64/26 via inet6 fe80::2 dev xc0
    //   ip -6 route add default via fe80::2 dev xc0
    //   ip -6 route add 2001:db8:300::/48 via 2001:db8:100::9
    //   ip -6 route add 2001:db8:500::/48 via 2001:db8:400::2 dev xc1
    //   ip route add 203.0.113.0/24 via 198.51.100.66 table 100
    //   ip neigh add 198.51.100.2 lladdr 02:00:00:00:00:02 dev xc0 nud permanent
    //   ip neigh add 198.51.100.3 lladdr 02:00:00:00:00:03 dev xc0 nud reachable
    //   ip neigh add fe80::2 lladdr 02:00:00:00:00:22 dev xc0 nud stale
    //   ip neigh add 198.51.100.4 dev xc0 nud incomplete
    //   ip neigh add 198.51.100.5 lladdr 02:00:00:00:00:05 dev xc0 nud failed
    //   ip neigh add 2001:db8:400::2 lladdr 02:00:00:00:00:42 dev xc1 nud permanent
    //   ip neigh add 198.51.100.3 lladdr 02:00:00:00:00:13 dev xc1 nud permanent
    //   ip neigh add fe80::2 lladdr 02:00:00:00:00:99 dev xc1 nud permanent
    // then `netlink::capture::print_dumps` (ignored test) run inside it.
    const XC0: u32 = 3;
    const XC1: u32 = 2;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn messages(hex: &str) -> Vec<RouteNetlinkMessage> {
        let bytes = unhex(hex);
        netlink::split_messages(&bytes)
            .filter_map(|(_, p)| match p {
                Some(netlink_packet_core::NetlinkPayload::InnerMessage(m)) => Some(m),
                _ => None,
            })
            .collect()
    }

    fn table(ifindex: u32) -> NextHopTable {
        let msgs = messages(include_str!("neighbor/testdata/route_dump.hex"));
        NextHopTable::new(
            msgs.iter().flat_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => route_entries(r),
                _ => Vec::new(),
            }),
            ifindex,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The load tester's wait for usable source addresses: the captured
    /// dump's local routes by interface (not the broadcast, anycast or
    /// multicast routes of table local, not another interface's).
    #[test]
    fn local_addresses_from_a_captured_route_dump() {
        let msgs = messages(include_str!("neighbor/testdata/route_dump.hex"));
        let got = |i| {
            let mut v: Vec<IpAddr> = local_addresses(&msgs, i).into_iter().collect();
            v.sort();
            v
        };
        // With the link-local addresses the kernel gave each end.
        assert_eq!(
            got(XC0),
            [
                ip("198.51.100.1"),
                ip("2001:db8:100::1"),
                ip("fe80::1"),
                ip("fe80::a84d:cfff:fecb:3e94")
            ]
        );
        assert_eq!(
            got(XC1),
            [ip("2001:db8:400::1"), ip("fe80::f0c7:42ff:fe48:bca5")]
        );
    }

    #[test]
    fn next_hops_from_a_captured_route_dump() {
        let t = table(XC0);
        let cases = [
            // The lower metric of two equal prefixes; table 100 is not looked up.
            ("203.0.113.9", "198.51.100.3"),
            // A multipath route: its first hop.
            ("203.0.113.130", "198.51.100.4"),
            // RTA_VIA: an IPv6 gateway for an IPv4 prefix (RFC 5549).
            ("203.0.113.70", "fe80::2"),
            // A blackhole names no way out of the interface: the /24 decides.
            ("203.0.113.7", "198.51.100.3"),
            // On-link in the connected prefix: the peer itself.
            ("198.51.100.77", "198.51.100.77"),
            ("192.0.2.1", "198.51.100.254"),
            ("2001:db8:300::5", "2001:db8:100::9"),
            ("2001:db8:100::2", "2001:db8:100::2"),
            // The IPv6 default route via a link-local gateway.
            ("2001:db8:999::1", "fe80::2"),
            // A route out of another interface does not count.
            ("2001:db8:500::1", "fe80::2"),
        ];
        for (peer, hop) in cases {
            assert_eq!(t.next_hop(ip(peer)), ip(hop), "{peer}");
        }
        let t = table(XC1);
        assert_eq!(t.next_hop(ip("2001:db8:500::1")), ip("2001:db8:400::2"));
        // No route out of xc1: assumed on-link, as the kernel does with `oif`.
        assert_eq!(t.next_hop(ip("198.51.100.77")), ip("198.51.100.77"));
    }

    #[test]
    fn neighbour_macs_from_a_captured_dump_are_per_interface() {
        let msgs = messages(include_str!("neighbor/testdata/neigh_dump.hex"));
        let neigh = |ifindex| {
            neighbour_macs(
                msgs.iter().filter_map(|m| match m {
                    RouteNetlinkMessage::NewNeighbour(n) => Some(n),
                    _ => None,
                }),
                ifindex,
            )
        };
        let m = |last: u8| [2, 0, 0, 0, 0, last];
        let xc0 = neigh(XC0);
        // Incomplete and failed entries have no usable MAC; NOARP multicast
        // entries (ff02::1 and the like) do, but never name a next hop.
        let unicast: HashMap<IpAddr, [u8; 6]> =
            xc0.into_iter().filter(|(a, _)| !a.is_multicast()).collect();
        let want: HashMap<IpAddr, [u8; 6]> = [
            (ip("198.51.100.2"), m(0x02)),
            (ip("198.51.100.3"), m(0x03)),
            (ip("fe80::2"), m(0x22)),
        ]
        .into_iter()
        .collect();
        assert_eq!(unicast, want);
        let xc1 = neigh(XC1);
        assert_eq!(xc1.get(&ip("fe80::2")), Some(&m(0x99)));
        assert_eq!(xc1.get(&ip("198.51.100.3")), Some(&m(0x13)));
        assert_eq!(xc1.get(&ip("2001:db8:400::2")), Some(&m(0x42)));
    }

    #[test]
    fn truncated_or_corrupt_dumps_never_panic() {
        for hex in [
            include_str!("neighbor/testdata/route_dump.hex"),
            include_str!("neighbor/testdata/neigh_dump.hex"),
        ] {
            let bytes = unhex(hex);
            let all = netlink::split_messages(&bytes).count();
            assert!(all > 5, "{all}");
            // Every message parses, and the dump ends with NLMSG_DONE.
            assert!(netlink::split_messages(&bytes).all(|(_, p)| p.is_some()));
            assert!(matches!(
                netlink::split_messages(&bytes).last(),
                Some((_, Some(netlink_packet_core::NetlinkPayload::Done(_))))
            ));
            for cut in 0..bytes.len() {
                let _ = netlink::split_messages(&bytes[..cut]).count();
            }
            let mut flipped = bytes.clone();
            for i in (0..flipped.len()).step_by(7) {
                flipped[i] ^= 0xa5;
                for (_, p) in netlink::split_messages(&flipped) {
                    if let Some(netlink_packet_core::NetlinkPayload::InnerMessage(m)) = p {
                        if let RouteNetlinkMessage::NewRoute(r) = &m {
                            let _ = route_entries(r);
                        }
                        if let RouteNetlinkMessage::NewNeighbour(n) = &m {
                            let _ = neighbour_macs([n], XC0);
                        }
                    }
                }
            }
        }
    }

    /// Cost of one refresh for many tunnels (run by hand inside a namespace
    /// whose `NH_IF` reaches 2001:db8:300::/48 via a resolved gateway):
    /// `NH_IF=xc0 ip netns exec NS target/debug/deps/xdpsec-* refresh_cost --ignored --nocapture`.
    #[test]
    #[ignore]
    fn refresh_cost() {
        let ifname = std::env::var("NH_IF").unwrap();
        for n in [1_000u32, 10_000, 100_000] {
            let peers: Vec<IpAddr> = (0..n)
                .map(|i| {
                    IpAddr::V6(std::net::Ipv6Addr::from(
                        (0x2001_0db8_0300_u128 << 80) | (u128::from(i) + 1),
                    ))
                })
                .collect();
            let macs: Vec<SharedMac> = peers.iter().map(|_| SharedMac::default()).collect();
            let pairs: Vec<_> = peers.iter().copied().zip(&macs).collect();
            let t = Instant::now();
            refresh_next_hops(&pairs, &ifname, Duration::ZERO, true);
            let e = t.elapsed();
            assert!(macs.iter().all(|m| m.get().is_some()));
            println!("{n} peers: one refresh {e:?}");
        }
    }
}
