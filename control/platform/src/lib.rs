//! Platform code shared by the `xdpsec` binary and the load tester
//! (`xdpsec-loadtest`): the XDP loader (aya) and its maps, next hops and
//! neighbour MACs over rtnetlink, and device links (MTU, address, up).
//! Nothing here holds control state; callers drive it through small,
//! explicit calls.
pub mod link;
pub mod loader;
pub mod neighbor;

/// The index of interface `name` in this network namespace, or why not
/// (`NotFound` for a name no interface has).
pub fn ifindex(name: &str) -> std::io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// How many receive and transmit queues `iface` has (its `queues/rx-N`
/// and `queues/tx-N` in sysfs); `None` when sysfs does not show the
/// interface (for example a namespace entered without `ip netns exec`,
/// which remounts /sys).
pub fn queue_counts(iface: &str) -> Option<(u32, u32)> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{iface}/queues")).ok()?;
    let (mut rx, mut tx) = (0u32, 0u32);
    for e in dir.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("rx-") {
            rx += 1;
        } else if name.starts_with("tx-") {
            tx += 1;
        }
    }
    Some((rx, tx))
}

/// How the XDP program is attached to an interface (`underlay.xdp_mode`,
/// `inside.xdp_mode` in the daemon's config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttach {
    /// Driver (native) mode, generic if the driver has no XDP (the default).
    Driver,
    /// Generic (SKB) mode only. On veth this keeps the peer's TSO/GSO
    /// (veth turns them off for a driver-mode program, frags or not), so
    /// traffic passed to the kernel keeps its speed; ESP then reaches
    /// AF_XDP after the kernel built an skb for it.
    Generic,
}
