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
