//! Gateway mode (`[inside] mode = "xdp"`): the Ethernet next hop of each
//! decrypted inner packet on the inside interface, from the kernel's
//! routes and neighbour table.
//!
//! The next-hop thread publishes one [`InsideView`] (the routes out of the
//! inside interface and the usable neighbour MACs on it) that workers load
//! once per batch: the inner destination itself when it is on-link, else
//! the route's gateway. A destination whose next hop has no MAC yet is
//! dropped by the worker (counted as `inside_no_neighbor`) and queued here
//! without blocking; the next-hop thread makes the kernel resolve it (as
//! for the underlay) and publishes a new view, so later packets go.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::{ArcSwap, Guard};
use crossbeam::channel::{Receiver, Sender};
use tracing::debug;

use super::{NextHopTable, dump_next_hops, open_dumps, report, solicit};

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

    /// Re-read the routes and neighbours of the inside interface and
    /// publish them; next hops workers asked for and still unknown are
    /// solicited, and the dump repeated every 50 ms until they are known
    /// or `wait` passed.
    pub fn refresh(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut wanted: HashSet<IpAddr> = self.misses.1.try_iter().collect();
        let what = format!("inside interface {}", self.ifname);
        let Some((ifindex, mut rtnl)) = open_dumps(&what, &self.ifname) else {
            return;
        };
        loop {
            let (table, macs) = match dump_next_hops(&mut rtnl, ifindex) {
                Ok(d) => d,
                Err((what, e)) => return report(what, &e),
            };
            wanted.retain(|h| !macs.contains_key(h));
            self.view.store(Arc::new(InsideView::new(table, macs)));
            if wanted.is_empty() || Instant::now() >= deadline {
                return;
            }
            let hops: Vec<IpAddr> = wanted.iter().copied().collect();
            debug!(interface = %self.ifname, ?hops, "soliciting inside next hops");
            solicit(&self.ifname, ifindex, &hops);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The MTU of `ifname` (SIOCGIFMTU).
pub fn interface_mtu(ifname: &str) -> Option<u32> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")
        .or_else(|_| std::net::UdpSocket::bind("[::]:0"))
        .ok()?;
    // SAFETY: zeroed ifreq is valid; the name is copied in below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, b) in req.ifr_name.iter_mut().zip(ifname.as_bytes()) {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU fills the ifreq.
    if unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SIOCGIFMTU,
            &mut req,
        )
    } < 0
    {
        return None;
    }
    // SAFETY: the union holds ifru_mtu after SIOCGIFMTU.
    u32::try_from(unsafe { req.ifr_ifru.ifru_mtu }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::neighbor::RouteEntry;

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
        assert_eq!(interface_mtu("lo").map(|m| m >= 1280), Some(true));
        assert_eq!(interface_mtu("nonexistent0"), None);
    }
}
