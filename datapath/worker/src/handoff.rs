//! Work for an SA owned by another worker is handed to that worker.
//!
//! Inbound: each inbound SA's replay window has a single writer, its owner
//! worker (VPP's design). A frame that arrives on another queue is copied
//! into a preallocated buffer and queued for the owner.
//!
//! Outbound: each outbound SA's sequence counter has a single writer too,
//! the same owner worker, so packets leave in sequence order. An inner
//! packet read from the TUN by another worker is queued for the owner with
//! its tunnel index; the owner encrypts and sends it.
//!
//! The owner is woken through one eventfd once per batch. Buffers cycle
//! between a free queue and a ready queue, one pair per direction:
//! nothing is allocated per packet. When no buffer is free the packet is
//! dropped as PKT_BUFFER_UNAVAILABLE (110), counted once by the sender.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crossbeam::queue::ArrayQueue;

/// Largest frame or inner packet a handoff buffer holds (an AF_XDP frame
/// is at most this; inner packets are at most the TUN MTU).
pub const HANDOFF_FRAME: usize = 4096;
/// Buffers per receiving worker for received frames.
pub const HANDOFF_BUFFERS: usize = 1024;
/// Buffers per receiving worker for inner packets to encrypt.
pub const HANDOFF_OUTBOUND_BUFFERS: usize = 512;
/// Buffers per worker for packets control injects (BFD hellos: a few per
/// tunnel per second).
pub const HANDOFF_INJECT_BUFFERS: usize = 256;

/// One handed-off frame or inner packet, in a buffer of `N` bytes.
pub struct HandoffBuf<const N: usize = HANDOFF_FRAME> {
    len: usize,
    /// Tunnel index (inner packets only).
    tunnel: u32,
    data: [u8; N],
}

/// A handed-off frame or inner packet while the owner processes it.
pub struct HandoffSlot<const N: usize = HANDOFF_FRAME>(pub Box<HandoffBuf<N>>);

impl<const N: usize> HandoffSlot<N> {
    /// The tunnel an inner packet is for (0 for received frames).
    pub fn tunnel(&self) -> u32 {
        self.0.tunnel
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0.data[..self.0.len]
    }
}

impl<const N: usize> AsMut<[u8]> for HandoffSlot<N> {
    fn as_mut(&mut self) -> &mut [u8] {
        let len = self.0.len;
        &mut self.0.data[..len]
    }
}

/// A bounded pool of `n` preallocated buffers of `N` bytes and the queue
/// of filled ones: a producer copies in with `push`, the consumer `take`s
/// and `recycle`s. Nothing is allocated after `new`. Also the punt rings'
/// (`PuntHub`).
pub(crate) struct Ring<const N: usize = HANDOFF_FRAME> {
    free: ArrayQueue<Box<HandoffBuf<N>>>,
    ready: ArrayQueue<Box<HandoffBuf<N>>>,
}

impl<const N: usize> Ring<N> {
    pub(crate) fn new(n: usize) -> Ring<N> {
        let free = ArrayQueue::new(n);
        for _ in 0..n {
            let _ = free.push(Box::new(HandoffBuf {
                len: 0,
                tunnel: 0,
                data: [0; N],
            }));
        }
        Ring {
            free,
            ready: ArrayQueue::new(n),
        }
    }

    /// Buffers in the ring.
    pub(crate) fn capacity(&self) -> usize {
        self.ready.capacity()
    }

    /// Queue a copy of `bytes` for `tunnel`: false when no buffer is free
    /// or `bytes` is longer than a buffer (the caller counts the drop).
    pub(crate) fn push(&self, tunnel: u32, bytes: &[u8]) -> bool {
        if bytes.len() > N {
            return false;
        }
        let Some(mut buf) = self.free.pop() else {
            return false;
        };
        buf.data[..bytes.len()].copy_from_slice(bytes);
        buf.len = bytes.len();
        buf.tunnel = tunnel;
        // Cannot fail: there are as many ready slots as buffers.
        let _ = self.ready.push(buf);
        true
    }

    /// Move filled buffers into `out` until it holds `max`.
    pub(crate) fn take(&self, out: &mut Vec<HandoffSlot<N>>, max: usize) {
        while out.len() < max {
            match self.ready.pop() {
                Some(b) => out.push(HandoffSlot(b)),
                None => break,
            }
        }
    }

    /// Give the buffers in `slots` back to the pool.
    pub(crate) fn recycle(&self, slots: &mut Vec<HandoffSlot<N>>) {
        for s in slots.drain(..) {
            let _ = self.free.push(s.0);
        }
    }
}

/// A non-blocking eventfd: producers `notify`, the consumer polls `fd` and
/// `clear`s it before taking work.
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A fresh eventfd.
    pub fn new() -> std::io::Result<EventFd> {
        // SAFETY: plain eventfd creation; the fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh eventfd we own.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wake the consumer.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Reset the wake-up (consumer side).
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes from our non-blocking eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// The fd to poll.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The queues of work handed to one worker.
pub struct HandoffQueue {
    frames: Ring,
    outbound: Ring,
    /// Inner packets from control to encrypt (`PuntHub::inject`).
    inject: Ring,
    efd: EventFd,
}

impl HandoffQueue {
    /// A queue with preallocated buffers and its eventfd.
    pub fn new() -> std::io::Result<HandoffQueue> {
        Ok(HandoffQueue {
            frames: Ring::new(HANDOFF_BUFFERS),
            outbound: Ring::new(HANDOFF_OUTBOUND_BUFFERS),
            inject: Ring::new(HANDOFF_INJECT_BUFFERS),
            efd: EventFd::new()?,
        })
    }

    /// Queue a copy of a received `frame` (sender side). False when no
    /// buffer is free or the frame is too large: the caller counts the drop.
    pub fn push(&self, frame: &[u8]) -> bool {
        self.frames.push(0, frame)
    }

    /// Queue a copy of an inner `packet` to encrypt for `tunnel` (sender
    /// side). False when no buffer is free or it is too large: the caller
    /// counts the drop.
    pub fn push_outbound(&self, tunnel: u32, packet: &[u8]) -> bool {
        self.outbound.push(tunnel, packet)
    }

    /// Queue a copy of an inner `packet` control injects for `tunnel`
    /// (control side). False when no buffer is free or it is too large: the
    /// caller counts the drop.
    pub fn push_inject(&self, tunnel: u32, packet: &[u8]) -> bool {
        self.inject.push(tunnel, packet)
    }

    /// Wake the owner (sender side, once per batch).
    pub fn notify(&self) {
        self.efd.notify();
    }

    /// The owner's wake-up fd.
    pub fn fd(&self) -> RawFd {
        self.efd.fd()
    }

    /// Owner side: clear the wake-up and take up to `max` received frames
    /// into `out`. Call [`HandoffQueue::take_outbound`] in the same pass:
    /// the wake-up covers both.
    pub fn take(&self, out: &mut Vec<HandoffSlot>, max: usize) {
        self.efd.clear();
        self.frames.take(out, max);
    }

    /// Owner side: take up to `max` inner packets to encrypt into `out`.
    pub fn take_outbound(&self, out: &mut Vec<HandoffSlot>, max: usize) {
        self.outbound.take(out, max);
    }

    /// Owner side: take up to `max` injected packets to encrypt into `out`.
    pub fn take_inject(&self, out: &mut Vec<HandoffSlot>, max: usize) {
        self.inject.take(out, max);
    }

    /// Whether nothing is waiting, in any direction.
    pub fn is_empty(&self) -> bool {
        self.frames.ready.is_empty()
            && self.outbound.ready.is_empty()
            && self.inject.ready.is_empty()
    }

    /// Owner side: give processed frame buffers back.
    pub fn recycle(&self, slots: &mut Vec<HandoffSlot>) {
        self.frames.recycle(slots);
    }

    /// Owner side: give processed inner-packet buffers back.
    pub fn recycle_outbound(&self, slots: &mut Vec<HandoffSlot>) {
        self.outbound.recycle(slots);
    }

    /// Owner side: give processed injected-packet buffers back.
    pub fn recycle_inject(&self, slots: &mut Vec<HandoffSlot>) {
        self.inject.recycle(slots);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cycle_without_loss_and_overflow_is_reported() {
        let q = HandoffQueue::new().unwrap();
        assert!(q.push(&[1, 2, 3]));
        assert!(!q.push(&[0u8; HANDOFF_FRAME + 1]));
        let mut out = Vec::with_capacity(64);
        q.take(&mut out, 64);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_mut(), &[1, 2, 3]);
        q.recycle(&mut out);
        for _ in 0..HANDOFF_BUFFERS {
            assert!(q.push(&[9]));
        }
        assert!(!q.push(&[9]), "no free buffer left");
        q.take(&mut out, 64);
        assert_eq!(out.len(), 64);
        q.recycle(&mut out);
        assert!(q.push(&[9]));
    }

    #[test]
    fn outbound_packets_keep_order_and_tunnel_and_have_their_own_pool() {
        let q = HandoffQueue::new().unwrap();
        // The frame pool being full does not starve the outbound one.
        for _ in 0..HANDOFF_BUFFERS {
            assert!(q.push(&[9]));
        }
        assert!(!q.push(&[9]));
        for i in 0..HANDOFF_OUTBOUND_BUFFERS {
            assert!(q.push_outbound(7 + (i % 2) as u32, &(i as u32).to_be_bytes()));
        }
        assert!(!q.push_outbound(7, &[1]), "bounded: the caller counts 110");
        assert!(!q.is_empty());
        let mut out = Vec::new();
        q.take_outbound(&mut out, 64);
        // FIFO: the owner encrypts them in the order they were read.
        for (i, s) in out.iter().enumerate() {
            assert_eq!(s.bytes(), &(i as u32).to_be_bytes());
            assert_eq!(s.tunnel(), 7 + (i % 2) as u32);
        }
        q.recycle_outbound(&mut out);
        assert!(q.push_outbound(9, &[1, 2]));
        assert!(!q.push_outbound(9, &[0; HANDOFF_FRAME + 1]));
        let mut frames = Vec::new();
        q.take(&mut frames, HANDOFF_BUFFERS);
        q.recycle(&mut frames);
        q.take_outbound(&mut out, usize::MAX);
        assert_eq!(out.len(), HANDOFF_OUTBOUND_BUFFERS - 64 + 1);
        q.recycle_outbound(&mut out);
        assert!(q.is_empty());
    }
}
