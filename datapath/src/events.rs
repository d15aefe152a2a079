//! Drop events for the control plane to turn into IOS log lines.
//!
//! Each worker pushes `Copy` [`DropEvent`]s into its own fixed-capacity,
//! lock-free queue (crossbeam's `ArrayQueue`, allocated once); when the
//! queue is full the event is dropped and counted in [`EventRing::lost`].
//! Only invalid-SPI (1/4/9/12), inbound policy (30/31), anti-replay (19)
//! and ICV (62) drops produce events: those are the ones IOS logs.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::queue::ArrayQueue;

use crate::drop::DropReason;
use crate::sa::SaId;

/// Default capacity of a worker's event queue.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// One logged drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropEvent {
    /// Why it was dropped.
    pub reason: DropReason,
    /// SPI from the packet.
    pub spi: u32,
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
    /// Tunnel, when known (from the SA, a recently deleted SPI or a local
    /// endpoint), so the log can name the input interface.
    pub tunnel: Option<u32>,
    /// The SA (for IOS's "DP Handle"), when one was found.
    pub sa: Option<SaId>,
    /// The decrypted inner packet's addresses and protocol, for inbound
    /// policy drops (30/31); `None` for the others.
    pub inner: Option<InnerFlow>,
}

/// Addresses and protocol of a decrypted inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerFlow {
    /// Inner source address.
    pub src: IpAddr,
    /// Inner destination address.
    pub dst: IpAddr,
    /// IPv4 protocol, or the IPv6 fixed header's next header.
    pub protocol: u8,
}

impl DropEvent {
    /// Does IOS log drops of this reason (so the datapath records an event)?
    pub const fn is_logged(reason: DropReason) -> bool {
        matches!(
            reason,
            DropReason::InV4HitInvalidSa
                | DropReason::InV4SaNotFoundSpi
                | DropReason::InV6HitInvalidSa
                | DropReason::InV6SaNotFoundSpi
                | DropReason::InV4PostInputPolicyFail
                | DropReason::InV6PostInputPolicyFail
                | DropReason::InAntiReplayFail
                | DropReason::InMacException
        )
    }
}

/// A worker's bounded event queue: one producer (the worker), any consumer.
#[derive(Debug)]
pub struct EventRing {
    queue: ArrayQueue<DropEvent>,
    lost: AtomicU64,
}

impl EventRing {
    /// A queue holding at most `capacity` (at least 1) events.
    pub fn new(capacity: usize) -> EventRing {
        EventRing {
            queue: ArrayQueue::new(capacity.max(1)),
            lost: AtomicU64::new(0),
        }
    }

    /// Record an event, or count it lost when the queue is full. Never
    /// allocates or blocks.
    #[inline]
    pub fn push(&self, ev: DropEvent) {
        if self.queue.push(ev).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Take the oldest event.
    pub fn pop(&self) -> Option<DropEvent> {
        self.queue.pop()
    }

    /// Take up to `max` events, oldest first.
    pub fn drain(&self, max: usize) -> Vec<DropEvent> {
        let mut v = Vec::new();
        while v.len() < max {
            match self.queue.pop() {
                Some(e) => v.push(e),
                None => break,
            }
        }
        v
    }

    /// Events dropped because the queue was full, since creation.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// No events waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ev(spi: u32) -> DropEvent {
        DropEvent {
            reason: DropReason::InV4SaNotFoundSpi,
            spi,
            src: IpAddr::V4(Ipv4Addr::new(10, 40, 40, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 30, 30, 1)),
            tunnel: None,
            sa: None,
            inner: None,
        }
    }

    #[test]
    fn bounded_and_counts_lost() {
        let r = EventRing::new(3);
        for spi in 1..=5 {
            r.push(ev(spi));
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.lost(), 2);
        let got: Vec<u32> = r.drain(10).iter().map(|e| e.spi).collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert!(r.is_empty());
        r.push(ev(9));
        assert_eq!(r.pop().map(|e| e.spi), Some(9));
    }

    #[test]
    fn logged_reasons() {
        let logged: Vec<u16> = DropReason::ALL
            .iter()
            .filter(|r| DropEvent::is_logged(**r))
            .map(|r| r.id())
            .collect();
        assert_eq!(logged, vec![1, 4, 9, 12, 19, 30, 31, 62]);
    }
}
