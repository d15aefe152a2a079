//! Platform code: everything that talks to the Linux kernel on the control
//! side. The XDP loader (aya), rtnetlink next hops and neighbours, the TUN
//! device, and the kernel sockets that receive reassembled ESP. The owner of
//! control state and the workers use these through small, explicit calls;
//! nothing here holds control state.
pub mod kernelrx;
pub mod link;
pub mod loader;
pub mod neighbor;
pub mod route;
pub mod tun;

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
