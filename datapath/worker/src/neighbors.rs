//! Next hops the workers read and control keeps fresh: the underlay MAC
//! of every tunnel's next hop, and in gateway mode (`[inside] mode =
//! "xdp"`) the inside interface's routes and neighbour MACs. Control reads
//! them from the kernel (rtnetlink) and publishes them here; workers only
//! load them (once per batch) and, for an inside next hop without a MAC,
//! ask for it without waiting. An encrypted frame whose underlay next hop
//! has no MAC yet is held for the next-hop thread (as a router holds a
//! packet while ARP or ND resolves), which sends it once the MAC is known
//! or counts its drop.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use arc_swap::{ArcSwap, Guard};
use crossbeam::channel::{Receiver, Sender};

use crate::routes::masked;

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

/// Frames held for the next-hop thread, all tunnels together.
pub const HELD_QUEUE: usize = 512;
/// Frames held per tunnel at most (the kernel's ARP queue keeps about as
/// many per neighbour): one peer that never answers cannot crowd out the
/// first frames of the others.
pub const HELD_PER_TUNNEL: u32 = 16;

/// An encrypted Ethernet frame for `tunnel` whose next hop had no MAC:
/// its destination MAC (bytes 0..6) is written when the MAC is known.
#[derive(Debug)]
pub struct HeldFrame {
    /// The tunnel index (its next-hop slot).
    pub tunnel: u32,
    /// The whole frame.
    pub frame: Vec<u8>,
}

/// What became of a frame offered to [`NextHopMacs::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Held for the next-hop thread (which sends it or counts its drop).
    Held,
    /// Not held: the queue or the tunnel's share of it is full (the
    /// caller counts the drop).
    Full,
    /// The core refused to build the frame (and counted the drop).
    Refused,
}

/// The next-hop MAC of every tunnel index (index = tunnel index), sized
/// once at start-up: control publishes, workers read. Frames encrypted
/// while a slot has no MAC wait in a bounded queue for the next-hop thread.
#[derive(Debug)]
pub struct NextHopMacs {
    macs: Vec<SharedMac>,
    /// Frames held per slot and not yet sent or dropped.
    pending: Vec<AtomicU32>,
    held: (Sender<HeldFrame>, Receiver<HeldFrame>),
}

impl NextHopMacs {
    /// `n` slots, all unknown.
    pub fn new(n: usize) -> NextHopMacs {
        NextHopMacs {
            macs: (0..n).map(|_| SharedMac::default()).collect(),
            pending: (0..n).map(|_| AtomicU32::new(0)).collect(),
            held: crossbeam::channel::bounded(HELD_QUEUE),
        }
    }

    /// Tunnel `i`'s next-hop MAC slot.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&SharedMac> {
        self.macs.get(i)
    }

    /// Every slot, by tunnel index.
    pub fn slots(&self) -> &[SharedMac] {
        &self.macs
    }

    /// Hold a frame for `tunnel`, whose next hop has no MAC: `build` writes
    /// it into the buffer it is given (the length, or `None` when the core
    /// refused and counted the drop). Never blocks; the frame is built
    /// only when there is room for it.
    pub fn hold(
        &self,
        tunnel: u32,
        len: usize,
        build: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Hold {
        let Some(pending) = self.pending.get(tunnel as usize) else {
            return Hold::Full;
        };
        if self.held.0.is_full() {
            return Hold::Full;
        }
        if pending.fetch_add(1, Ordering::AcqRel) >= HELD_PER_TUNNEL {
            pending.fetch_sub(1, Ordering::AcqRel);
            return Hold::Full;
        }
        let mut frame = vec![0u8; len];
        let Some(n) = build(&mut frame) else {
            pending.fetch_sub(1, Ordering::AcqRel);
            return Hold::Refused;
        };
        frame.truncate(n);
        match self.held.0.try_send(HeldFrame { tunnel, frame }) {
            Ok(()) => Hold::Held,
            Err(_) => {
                pending.fetch_sub(1, Ordering::AcqRel);
                Hold::Full
            }
        }
    }

    /// The held frames (the next-hop thread: select on it, take from it).
    pub fn held(&self) -> &Receiver<HeldFrame> {
        &self.held.1
    }

    /// The next-hop thread is done with one of `tunnel`'s held frames
    /// (sent or dropped).
    pub fn release(&self, tunnel: u32) {
        if let Some(p) = self.pending.get(tunnel as usize) {
            let _ = p.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
        }
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

/// Next hops requested by workers and not yet handled (more wait for the
/// next miss: the packets that found none were counted anyway).
const MISS_QUEUE: usize = 256;

/// Routes and neighbour MACs of the inside interface, as one published view.
#[derive(Debug, Default)]
pub struct InsideView {
    table: NextHopTable,
    macs: HashMap<IpAddr, [u8; 6]>,
}

impl InsideView {
    /// A view from routes out of the inside interface and its neighbours.
    pub fn new(table: NextHopTable, macs: HashMap<IpAddr, [u8; 6]>) -> InsideView {
        InsideView { table, macs }
    }

    /// The next hop towards inner destination `dst` and its MAC, if known.
    #[inline]
    pub fn resolve(&self, dst: IpAddr) -> (IpAddr, Option<[u8; 6]>) {
        let hop = self.table.next_hop(dst);
        (hop, self.macs.get(&hop).copied())
    }
}

/// The inside interface's next hops, shared by the workers (readers) and
/// the next-hop thread (the one writer).
pub struct InsideNeighbors {
    ifname: String,
    /// The inside interface's own MAC (the source of every frame sent there).
    pub mac: [u8; 6],
    view: ArcSwap<InsideView>,
    misses: (Sender<IpAddr>, Receiver<IpAddr>),
}

impl InsideNeighbors {
    /// Next hops on `ifname`, whose MAC is `mac`; empty until the first refresh.
    pub fn new(ifname: &str, mac: [u8; 6]) -> InsideNeighbors {
        InsideNeighbors {
            ifname: ifname.to_string(),
            mac,
            view: ArcSwap::from_pointee(InsideView::default()),
            misses: crossbeam::channel::bounded(MISS_QUEUE),
        }
    }

    /// The current view (workers: once per batch).
    #[inline]
    pub fn load(&self) -> Guard<Arc<InsideView>> {
        self.view.load()
    }

    /// A worker found no MAC for `hop`: ask for it (never blocks; a full
    /// queue forgets the request, the next packet asks again).
    #[inline]
    pub fn request(&self, hop: IpAddr) {
        let _ = self.misses.0.try_send(hop);
    }

    /// Whether workers asked for next hops since the last refresh.
    pub fn has_requests(&self) -> bool {
        !self.misses.1.is_empty()
    }

    /// The inside interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The next hops workers asked for since the last call (never blocks).
    pub fn requested(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.misses.1.try_iter()
    }

    /// Publish a new view (the next-hop thread).
    pub fn publish(&self, view: InsideView) {
        self.view.store(Arc::new(view));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_link_destinations_are_their_own_next_hop_others_use_the_gateway() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let r = |dst: &str, len, gw: Option<&str>| RouteEntry {
            table: 254,
            dst: ip(dst),
            prefix_len: len,
            metric: 0,
            oif: 7,
            gateway: gw.map(ip),
        };
        let table = NextHopTable::new(
            vec![
                r("203.0.113.0", 25, None),
                r("0.0.0.0", 0, Some("203.0.113.1")),
                r("2001:db8:1::", 64, None),
            ],
            7,
        );
        let mac = [2, 0, 0, 0, 0, 0x10];
        let view = InsideView::new(table, HashMap::from([(ip("203.0.113.10"), mac)]));
        assert_eq!(
            view.resolve(ip("203.0.113.10")),
            (ip("203.0.113.10"), Some(mac))
        );
        // Known route, unknown neighbour: the hop to solicit.
        assert_eq!(view.resolve(ip("203.0.113.11")), (ip("203.0.113.11"), None));
        // Off-link: through the gateway (not resolved yet).
        assert_eq!(view.resolve(ip("198.51.100.9")), (ip("203.0.113.1"), None));
        assert_eq!(
            view.resolve(ip("2001:db8:1::5")),
            (ip("2001:db8:1::5"), None)
        );
        // Requests never block, even past the queue's size.
        let n = InsideNeighbors::new("nonexistent0", mac);
        for _ in 0..2 * MISS_QUEUE {
            n.request(ip("203.0.113.11"));
        }
        assert!(n.has_requests());
    }

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
