//! Frames for an SA owned by another worker are handed to that worker.
//!
//! Each inbound SA's replay window has a single writer, its owner worker
//! (VPP's design). A frame that arrives on another queue is copied into a
//! preallocated buffer and queued for the owner, which is woken through an
//! eventfd once per batch. Buffers cycle between a free queue and a ready
//! queue: nothing is allocated per packet. When no buffer is free the frame
//! is dropped as PKT_BUFFER_UNAVAILABLE (110).
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crossbeam::queue::ArrayQueue;

/// Largest frame a handoff buffer holds (an AF_XDP frame is at most this).
pub const HANDOFF_FRAME: usize = 4096;
/// Buffers per receiving worker.
pub const HANDOFF_BUFFERS: usize = 1024;

/// One handed-off frame.
pub struct HandoffBuf {
    len: usize,
    data: [u8; HANDOFF_FRAME],
}

/// A handed-off frame while the owner processes it.
pub struct HandoffSlot(pub Box<HandoffBuf>);

impl AsMut<[u8]> for HandoffSlot {
    fn as_mut(&mut self) -> &mut [u8] {
        let len = self.0.len;
        &mut self.0.data[..len]
    }
}

/// The queue of frames handed to one worker.
pub struct HandoffQueue {
    free: ArrayQueue<Box<HandoffBuf>>,
    ready: ArrayQueue<Box<HandoffBuf>>,
    efd: OwnedFd,
}

impl HandoffQueue {
    /// A queue with `HANDOFF_BUFFERS` preallocated buffers and its eventfd.
    pub fn new() -> std::io::Result<HandoffQueue> {
        // SAFETY: plain eventfd creation; the fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let free = ArrayQueue::new(HANDOFF_BUFFERS);
        for _ in 0..HANDOFF_BUFFERS {
            let _ = free.push(Box::new(HandoffBuf {
                len: 0,
                data: [0; HANDOFF_FRAME],
            }));
        }
        Ok(HandoffQueue {
            free,
            ready: ArrayQueue::new(HANDOFF_BUFFERS),
            // SAFETY: fd is a fresh eventfd we own.
            efd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Queue a copy of `frame` (sender side). False when no buffer is free
    /// or the frame is too large: the caller counts the drop.
    pub fn push(&self, frame: &[u8]) -> bool {
        if frame.len() > HANDOFF_FRAME {
            return false;
        }
        let Some(mut buf) = self.free.pop() else {
            return false;
        };
        buf.data[..frame.len()].copy_from_slice(frame);
        buf.len = frame.len();
        // Cannot fail: there are as many ready slots as buffers.
        let _ = self.ready.push(buf);
        true
    }

    /// Wake the owner (sender side, once per batch).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// The owner's wake-up fd.
    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Owner side: clear the wake-up and take up to `max` frames into `out`.
    pub fn take(&self, out: &mut Vec<HandoffSlot>, max: usize) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes from our non-blocking eventfd.
        unsafe { libc::read(self.efd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        while out.len() < max {
            match self.ready.pop() {
                Some(b) => out.push(HandoffSlot(b)),
                None => break,
            }
        }
    }

    /// Whether frames are waiting.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Owner side: give processed buffers back.
    pub fn recycle(&self, slots: &mut Vec<HandoffSlot>) {
        for s in slots.drain(..) {
            let _ = self.free.push(s.0);
        }
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
}
