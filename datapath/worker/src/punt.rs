//! Punt and inject between the datapath workers and the owner of control
//! state (docs/architecture.md, "Between datapath and control").
//!
//! Punt (worker -> owner): decrypted inner packets for the node itself
//! (`Verdict::Punt`: BFD inside SD-WAN tunnels). One bounded ring per
//! worker, single producer (its worker), with preallocated buffers that
//! cycle between a free queue and a ready queue, as in [`crate::handoff`]:
//! nothing is allocated per packet on the worker. A full ring (or a packet
//! larger than [`PUNT_PACKET`]) drops the packet, counted once in the
//! worker's `IoStats::punt_dropped` (a named counter, not a QFP drop: the
//! packet was authentic and decrypted, and was already counted as
//! `punted` by the core).
//!
//! Inject (owner -> worker): inner packets to encrypt on a tunnel (BFD
//! hellos). They go to the worker that owns the tunnel's outbound SA (its
//! sequence counter's only writer), through that worker's handoff queue
//! (bounded, preallocated, woken by its eventfd), and are encrypted exactly
//! like a packet read from the TUN. A full queue drops the packet, counted
//! once in that worker's `IoStats::inject_dropped`.
//!
//! Wake-up: every worker writes one shared eventfd ([`PuntHub::fd`]) once
//! per batch that punted something. The owner can poll that fd, or simply
//! call [`PuntHub::drain`] on its 100 ms tick: the latency is then at most
//! one tick (100 ms), well inside a BFD detection time (hello 1000 ms x 7
//! by default, and still 3 x 300 ms in fast tests); with the fd in its
//! poll set it is the owner's wake-up latency (microseconds).
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use xdpsec_datapath::SaSnapshot;

use crate::handoff::{EventFd, HandoffQueue, Ring};
use crate::stats::IoStats;

/// Largest inner packet a punt buffer holds (a BFD control packet with
/// IPv4 and UDP headers is 52 bytes; authentication adds at most 28).
pub const PUNT_PACKET: usize = 2048;
/// Punt buffers per worker.
pub const PUNT_BUFFERS: usize = 256;

/// A packet a worker punted, as the owner receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Punted {
    /// The worker (queue) that received it.
    pub worker: u16,
    /// Tunnel index of the SA that decrypted it.
    pub tunnel: u32,
    /// The inner IPv4 packet.
    pub packet: Vec<u8>,
}

/// Every worker's punt ring and inject path, and the owner's wake-up fd.
pub struct PuntHub {
    rings: Vec<Ring<PUNT_PACKET>>,
    handoff: Arc<Vec<Arc<HandoffQueue>>>,
    io: Vec<Arc<IoStats>>,
    efd: EventFd,
}

impl PuntHub {
    /// Rings for one worker per handoff queue, with preallocated buffers,
    /// and one `IoStats` per worker (give `io(w)` to worker `w`).
    pub fn new(handoff: Arc<Vec<Arc<HandoffQueue>>>) -> std::io::Result<PuntHub> {
        let n = handoff.len();
        Ok(PuntHub {
            rings: (0..n).map(|_| Ring::new(PUNT_BUFFERS)).collect(),
            io: (0..n).map(|_| Arc::new(IoStats::default())).collect(),
            handoff,
            efd: EventFd::new()?,
        })
    }

    /// Worker `w`'s I/O counters (the worker and `show` share them).
    pub fn io(&self, w: usize) -> Arc<IoStats> {
        Arc::clone(&self.io[w])
    }

    /// Worker side: queue a copy of the inner `packet` decrypted on
    /// `tunnel`. False when the ring is full or the packet too large: the
    /// caller counts `punt_dropped`.
    pub fn punt(&self, worker: u16, tunnel: u32, packet: &[u8]) -> bool {
        self.rings
            .get(usize::from(worker))
            .is_some_and(|r| r.push(tunnel, packet))
    }

    /// Worker side: wake the owner (once per batch that punted).
    pub fn notify(&self) {
        self.efd.notify();
    }

    /// The owner's wake-up fd (readable when something was punted).
    pub fn fd(&self) -> RawFd {
        self.efd.fd()
    }

    /// Owner side: clear the wake-up and move every punted packet of every
    /// worker into `out` (appended, in arrival order per worker). Call it on
    /// a wake-up of [`PuntHub::fd`] and on the owner's tick.
    pub fn drain(&self, out: &mut Vec<Punted>) {
        self.efd.clear();
        let mut slots = Vec::new();
        for (w, r) in self.rings.iter().enumerate() {
            // Bounded by the ring size: a worker refilling it meanwhile
            // waits for the next drain.
            r.take(&mut slots, r.capacity());
            out.extend(slots.iter().map(|s| Punted {
                worker: w as u16,
                tunnel: s.tunnel(),
                packet: s.bytes().to_vec(),
            }));
            r.recycle(&mut slots);
        }
    }

    /// Owner side: hand the inner IPv4 `packet` to the worker that owns
    /// `tunnel`'s outbound SA, to be encrypted and sent on that tunnel
    /// exactly like a packet read from the TUN device. Without a usable
    /// outbound SA it goes to worker 0, whose core counts the drop (111,
    /// 32). False when that worker's inject queue is full or the packet too
    /// large: counted once in its `inject_dropped`.
    pub fn inject(&self, snap: &SaSnapshot, tunnel: u32, packet: &[u8]) -> bool {
        let w = snap.outbound_owner(tunnel).unwrap_or(0);
        let Some(q) = self.handoff.get(usize::from(w)) else {
            return false;
        };
        if q.push_inject(tunnel, packet) {
            q.notify();
            true
        } else {
            // The owner is the only producer: a plain add is enough, but
            // the worker writes other fields of the same struct, so this
            // stays an atomic read-modify-write of its own field.
            self.io[usize::from(w)]
                .inject_dropped
                .fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(workers: usize) -> PuntHub {
        let handoff = Arc::new(
            (0..workers)
                .map(|_| Arc::new(HandoffQueue::new().unwrap()))
                .collect::<Vec<_>>(),
        );
        PuntHub::new(handoff).unwrap()
    }

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn punt_rings_are_bounded_lossless_until_full_and_ordered() {
        let h = hub(2);
        assert!(!readable(h.fd()));
        // Worker 1 fills its ring; worker 0's is independent.
        for i in 0..PUNT_BUFFERS {
            assert!(h.punt(1, 7, &(i as u32).to_be_bytes()));
        }
        assert!(!h.punt(1, 7, &[1]), "bounded: full drops");
        assert!(h.punt(0, 9, &[0xaa; 52]));
        assert!(!h.punt(0, 9, &[0; PUNT_PACKET + 1]), "too large");
        assert!(!h.punt(2, 9, &[1]), "no such worker");
        h.notify();
        assert!(readable(h.fd()));
        let mut out = Vec::new();
        h.drain(&mut out);
        assert!(!readable(h.fd()), "drain clears the wake-up");
        assert_eq!(out.len(), PUNT_BUFFERS + 1);
        assert_eq!(
            out[0],
            Punted {
                worker: 0,
                tunnel: 9,
                packet: vec![0xaa; 52]
            }
        );
        for (i, p) in out[1..].iter().enumerate() {
            assert_eq!((p.worker, p.tunnel), (1, 7));
            assert_eq!(p.packet, (i as u32).to_be_bytes());
        }
        // Buffers came back: the ring takes a full load again.
        out.clear();
        for _ in 0..PUNT_BUFFERS {
            assert!(h.punt(1, 7, &[2]));
        }
        assert!(!h.punt(1, 7, &[2]));
        h.drain(&mut out);
        assert_eq!(out.len(), PUNT_BUFFERS);
    }

    #[test]
    fn inject_goes_to_the_worker_owning_the_outbound_sa_and_full_counts() {
        use xdpsec_datapath::crypto::{Cipher, KeyMaterial};
        use xdpsec_datapath::sa::{OutboundSaConfig, OuterHeader, SaChange, SaTable};
        let h = hub(2);
        let mut t = SaTable::new();
        t.apply(
            vec![SaChange::SetOutbound(OutboundSaConfig {
                spi: 0x2001,
                tunnel: 3,
                owner: 1,
                cipher: Cipher::Aes256Gcm,
                key: KeyMaterial::new(vec![7; 36]),
                esn: false,
                outer: OuterHeader {
                    src: "198.51.100.2".parse().unwrap(),
                    dst: "198.51.100.1".parse().unwrap(),
                    udp: None,
                    ethernet: None,
                    ttl: 64,
                },
                last_seq: 0,
                seq_limit: u64::MAX,
                name: "out".into(),
            })],
            std::time::Duration::ZERO,
        )
        .unwrap();
        let snap = t.snapshot();
        let mut slots = Vec::new();
        assert!(h.inject(&snap, 3, &[0x45, 1, 2]));
        assert!(!h.handoff[1].is_empty());
        h.handoff[1].take_inject(&mut slots, 64);
        assert_eq!(slots.len(), 1);
        assert_eq!(
            (slots[0].tunnel(), slots[0].bytes()),
            (3, &[0x45, 1, 2][..])
        );
        h.handoff[1].recycle_inject(&mut slots);
        // No outbound SA: worker 0, whose core counts the drop.
        assert!(h.inject(&snap, 4, &[0x45]));
        h.handoff[0].take_inject(&mut slots, 64);
        assert_eq!(slots.len(), 1);
        h.handoff[0].recycle_inject(&mut slots);
        // Bounded: full counts inject_dropped once per packet.
        let mut n = 0;
        while h.inject(&snap, 3, &[0x45]) {
            n += 1;
        }
        assert_eq!(n, crate::handoff::HANDOFF_INJECT_BUFFERS);
        assert!(!h.inject(&snap, 3, &[0x45]));
        assert_eq!(h.io(1).inject_dropped.load(Ordering::Relaxed), 2);
        assert_eq!(h.io(0).inject_dropped.load(Ordering::Relaxed), 0);
    }
}
