//! Gateway mode (`[inside] mode = "xdp"`): the Ethernet next hop of each
//! decrypted inner packet on the inside interface, from the kernel's
//! routes and neighbour table.
//!
//! The next-hop thread publishes one `InsideView` (the routes out of the
//! inside interface and the usable neighbour MACs on it) that workers load
//! once per batch: the inner destination itself when it is on-link, else
//! the route's gateway. A destination whose next hop has no MAC yet is
//! dropped by the worker (counted as `inside_no_neighbor`) and queued here
//! without blocking; the next-hop thread makes the kernel resolve it (as
//! for the underlay) and publishes a new view, so later packets go.
use std::{
    collections::HashSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use tracing::debug;
use xdpsec_worker::neighbors::{InsideNeighbors, InsideView};

use super::{dump_next_hops, open_dumps, report, solicit};

/// Re-read the routes and neighbours of the inside interface and publish
/// them in `n`; next hops workers asked for and still unknown are
/// solicited, and the dump repeated every 50 ms until they are known or
/// `wait` passed.
pub fn refresh(n: &InsideNeighbors, wait: Duration) {
    let deadline = Instant::now() + wait;
    let mut wanted: HashSet<IpAddr> = n.requested().collect();
    let ifname = n.ifname();
    let what = format!("inside interface {ifname}");
    let Some((ifindex, mut rtnl)) = open_dumps(&what, ifname) else {
        return;
    };
    loop {
        let (table, macs) = match dump_next_hops(&mut rtnl, ifindex) {
            Ok(d) => d,
            Err((what, e)) => return report(what, &e),
        };
        wanted.retain(|h| !macs.contains_key(h));
        n.publish(InsideView::new(table, macs));
        if wanted.is_empty() || Instant::now() >= deadline {
            return;
        }
        let hops: Vec<IpAddr> = wanted.iter().copied().collect();
        debug!(interface = %ifname, ?hops, "soliciting inside next hops");
        solicit(ifname, ifindex, &hops);
        std::thread::sleep(Duration::from_millis(50));
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

    #[test]
    fn interface_mtu_of_lo_and_of_no_interface() {
        assert_eq!(interface_mtu("lo").map(|m| m >= 1280), Some(true));
        assert_eq!(interface_mtu("nonexistent0"), None);
    }
}
