//! A worker's I/O on its TUN queue (control creates the device and gives
//! each worker its queue's fd).
use std::os::fd::RawFd;

/// Write one packet to a TUN queue (non-blocking). Returns false if the
/// kernel did not take it.
pub fn write_packet(fd: RawFd, packet: &[u8]) -> bool {
    // SAFETY: packet is a valid buffer for the call.
    let n = unsafe { libc::write(fd, packet.as_ptr().cast(), packet.len()) };
    n == packet.len() as isize
}

/// Read one packet from a TUN queue (non-blocking): its length, or None when empty.
pub fn read_packet(fd: RawFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: buf is valid for writing.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    (n > 0).then_some(n as usize)
}

/// Write one packet after its virtio-net header (`hdr`) to a TUN queue
/// opened with `IFF_VNET_HDR`, in one system call without copying.
/// Returns false if the kernel did not take it.
pub fn write_vnet(fd: RawFd, hdr: &[u8], packet: &[u8]) -> bool {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: packet.as_ptr() as *mut libc::c_void,
            iov_len: packet.len(),
        },
    ];
    // SAFETY: both buffers are valid for reading for the call; the kernel
    // does not write through the iovecs of writev.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    n == (hdr.len() + packet.len()) as isize
}
