//! Worker-local state: replay windows and per-SA counters, each with a
//! single writer (the worker), plus what the worker shares with control
//! (drop counters, per-SA counters, drop events).
//!
//! Every inbound SA has an owner worker; only the owner touches its replay
//! window, so no lock is needed (VPP's model). State is kept per stable
//! [`SaId`] index; a generation mismatch means the index was reused by a
//! new SA and the old state is reset.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

use arc_swap::ArcSwap;

use crate::drop::DropCounters;
use crate::events::{DEFAULT_EVENT_CAPACITY, EventRing};
use crate::replay::ReplayWindow;
use crate::sa::{SaId, SaSnapshot};

const PAGE: usize = 1024;

/// Per-SA counters as control reads them (summed over workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaCounters {
    /// Packets encapsulated (IOS `#pkts encaps/encrypt/digest`).
    pub encaps: u64,
    /// Packets decapsulated (IOS `#pkts decaps/decrypt/verify`).
    pub decaps: u64,
    /// ICV failures (IOS `#pkts verify failed`).
    pub verify_failed: u64,
    /// Anti-replay: left of the window.
    pub replay_too_old: u64,
    /// Anti-replay: already seen.
    pub replay_duplicate: u64,
    /// Outbound failures after the SA was found (sequence exhausted, no
    /// buffer, and what the caller reports with `count_send_error`).
    pub send_errors: u64,
    /// Inbound failures after the SA was found other than ICV and replay
    /// (bad padding/length, next header mismatch).
    pub recv_errors: u64,
    /// Plaintext octets of the packets encapsulated.
    pub encap_octets: u64,
    /// Plaintext octets of the packets decapsulated.
    pub decap_octets: u64,
}

impl SaCounters {
    /// IOS `#pkts replay failed (rcv)`: both anti-replay kinds.
    pub fn replay_failed(&self) -> u64 {
        self.replay_too_old + self.replay_duplicate
    }

    fn add(&mut self, o: &SaCounters) {
        self.encaps += o.encaps;
        self.decaps += o.decaps;
        self.verify_failed += o.verify_failed;
        self.replay_too_old += o.replay_too_old;
        self.replay_duplicate += o.replay_duplicate;
        self.send_errors += o.send_errors;
        self.recv_errors += o.recv_errors;
        self.encap_octets += o.encap_octets;
        self.decap_octets += o.decap_octets;
    }

    /// Field-wise sum (several SAs of one tunnel).
    pub fn plus(&self, o: &SaCounters) -> SaCounters {
        let mut t = *self;
        t.add(o);
        t
    }

    /// Field-wise difference (for clear baselines kept by control).
    pub fn saturating_sub(&self, o: &SaCounters) -> SaCounters {
        SaCounters {
            encaps: self.encaps.saturating_sub(o.encaps),
            decaps: self.decaps.saturating_sub(o.decaps),
            verify_failed: self.verify_failed.saturating_sub(o.verify_failed),
            replay_too_old: self.replay_too_old.saturating_sub(o.replay_too_old),
            replay_duplicate: self.replay_duplicate.saturating_sub(o.replay_duplicate),
            send_errors: self.send_errors.saturating_sub(o.send_errors),
            recv_errors: self.recv_errors.saturating_sub(o.recv_errors),
            encap_octets: self.encap_octets.saturating_sub(o.encap_octets),
            decap_octets: self.decap_octets.saturating_sub(o.decap_octets),
        }
    }
}

/// Which per-SA counter to bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaCounter {
    Encaps,
    Decaps,
    VerifyFailed,
    ReplayTooOld,
    ReplayDuplicate,
    SendErrors,
    RecvErrors,
    EncapOctets,
    DecapOctets,
}

impl SaCounter {
    /// Whether only outbound SAs count it.
    #[inline]
    const fn outbound(self) -> bool {
        matches!(
            self,
            SaCounter::Encaps | SaCounter::SendErrors | SaCounter::EncapOctets
        )
    }

    /// Its word in a [`SaCounterCell`].
    #[inline]
    const fn word(self) -> usize {
        match self {
            SaCounter::Decaps | SaCounter::Encaps => 0,
            SaCounter::VerifyFailed | SaCounter::SendErrors => 1,
            SaCounter::ReplayTooOld | SaCounter::EncapOctets => 2,
            SaCounter::ReplayDuplicate => 3,
            SaCounter::RecvErrors => 4,
            SaCounter::DecapOctets => 5,
        }
    }
}

/// Words in a [`SaCounterCell`]: an inbound SA counts six things, an
/// outbound SA three, and an SA is one or the other, so they share the
/// words (56 bytes a cell instead of 80 for all nine: 24 bytes per SA and
/// worker, 24 MB at a million SAs).
const CELL_WORDS: usize = 6;

/// One SA's counters in one worker; single writer.
#[derive(Debug, Default)]
struct SaCounterCell {
    generation: AtomicU32,
    /// The words hold an outbound SA's counters (set by its first count).
    outbound: AtomicBool,
    c: [AtomicU64; CELL_WORDS],
}

impl SaCounterCell {
    #[inline]
    fn add(&self, which: SaCounter, n: u64) {
        if self.outbound.load(Ordering::Relaxed) != which.outbound() {
            self.outbound.store(which.outbound(), Ordering::Relaxed);
        }
        let c = &self.c[which.word()];
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    // Seqlock-style write (Boehm, "Can seqlocks get along with programming
    // language memory models?"): mark the cell invalid, then a Release fence
    // so the zeroing stores cannot become visible before the mark.
    fn reset(&self, generation: u32) {
        self.generation.store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        self.outbound.store(false, Ordering::Relaxed);
        for c in &self.c {
            c.store(0, Ordering::Relaxed);
        }
        self.generation.store(generation, Ordering::Release);
    }

    // Seqlock-style read: generation, counters, generation again. The
    // Acquire fence orders the Relaxed counter loads before the second
    // generation load (an Acquire *load* would only order later accesses,
    // not earlier ones), so a reset that overlapped the read is seen.
    fn read(&self, generation: u32) -> Option<SaCounters> {
        if self.generation.load(Ordering::Acquire) != generation {
            return None;
        }
        let outbound = self.outbound.load(Ordering::Relaxed);
        let v: [u64; CELL_WORDS] = core::array::from_fn(|i| self.c[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if self.generation.load(Ordering::Relaxed) != generation {
            return None;
        }
        let w = |c: SaCounter| v[c.word()];
        Some(if outbound {
            SaCounters {
                encaps: w(SaCounter::Encaps),
                send_errors: w(SaCounter::SendErrors),
                encap_octets: w(SaCounter::EncapOctets),
                ..SaCounters::default()
            }
        } else {
            SaCounters {
                decaps: w(SaCounter::Decaps),
                verify_failed: w(SaCounter::VerifyFailed),
                replay_too_old: w(SaCounter::ReplayTooOld),
                replay_duplicate: w(SaCounter::ReplayDuplicate),
                recv_errors: w(SaCounter::RecvErrors),
                decap_octets: w(SaCounter::DecapOctets),
                ..SaCounters::default()
            }
        })
    }
}

type Page = Arc<[SaCounterCell]>;

/// Outer-header class of a received frame, from the datapath's own parse
/// (pass 1 of `decap_batch`): the one userspace parser of outer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameClass {
    /// ESP directly in IPv4 (fragments included).
    EspV4,
    /// ESP directly in IPv6 (after extension headers and AH).
    EspV6,
    /// UDP-encapsulated ESP in IPv4 (UDP to an ESP port).
    UdpEspV4,
    /// UDP-encapsulated ESP in IPv6.
    UdpEspV6,
    /// Anything else: not IP, other protocols, UDP to other ports, NAT
    /// keepalives, IKE, headers too short or malformed to tell.
    Other,
}

impl FrameClass {
    /// Number of classes.
    pub const COUNT: usize = 5;
    /// Every class, in counter order.
    pub const ALL: [FrameClass; FrameClass::COUNT] = [
        FrameClass::EspV4,
        FrameClass::EspV6,
        FrameClass::UdpEspV4,
        FrameClass::UdpEspV6,
        FrameClass::Other,
    ];

    /// Stable name used in `show` output and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            FrameClass::EspV4 => "esp_v4",
            FrameClass::EspV6 => "esp_v6",
            FrameClass::UdpEspV4 => "udp_esp_v4",
            FrameClass::UdpEspV6 => "udp_esp_v6",
            FrameClass::Other => "other",
        }
    }
}

/// Frames per [`FrameClass`] one worker parsed (single writer: the worker).
///
/// A frame handed to another worker (the SA's owner) is counted by the
/// owner, not by the worker that received it: every frame once.
#[derive(Debug, Default)]
pub struct ClassCounters([AtomicU64; FrameClass::COUNT]);

impl ClassCounters {
    /// Current count of one class.
    pub fn get(&self, class: FrameClass) -> u64 {
        self.0[class as usize].load(Ordering::Relaxed)
    }

    /// All classes, indexed by `FrameClass as usize`.
    pub fn snapshot(&self) -> [u64; FrameClass::COUNT] {
        core::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }

    /// Add a batch's local counts (the owning worker only).
    pub(crate) fn add(&self, n: &[u64; FrameClass::COUNT]) {
        for (c, v) in self.0.iter().zip(n) {
            if *v != 0 {
                c.store(
                    c.load(Ordering::Relaxed).wrapping_add(*v),
                    Ordering::Relaxed,
                );
            }
        }
    }
}

fn new_page() -> Page {
    (0..PAGE)
        .map(|_| SaCounterCell::default())
        .collect::<Vec<_>>()
        .into()
}

/// What a worker shares with control: read lock-free, written by the worker.
#[derive(Debug)]
pub struct WorkerShared {
    id: u16,
    /// Drop counters indexed by reason.
    pub drops: Arc<DropCounters>,
    /// Frames handed back as not ESP (`Verdict::Pass`).
    pub passed: AtomicU64,
    /// Frames delivered (decapsulated).
    pub delivered: AtomicU64,
    /// Authentic ESP dummy packets (next header 59, RFC 4303 section 2.6)
    /// discarded silently: not a drop (`Verdict::Dummy`).
    pub dummy_packets: AtomicU64,
    /// Decrypted packets for the node itself handed to control
    /// (`Verdict::Punt`, BFD inside SD-WAN tunnels): not a drop.
    pub punted: AtomicU64,
    /// Frames parsed per outer-header class.
    pub classes: ClassCounters,
    /// Drop events for IOS logs.
    pub events: EventRing,
    pages: ArcSwap<Vec<Page>>,
}

impl WorkerShared {
    /// The worker's id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// This worker's counters for an SA (zero if it never saw it).
    pub fn sa_counters(&self, id: SaId) -> SaCounters {
        let pages = self.pages.load();
        let i = id.index as usize;
        pages
            .get(i / PAGE)
            .and_then(|p| p[i % PAGE].read(id.generation))
            .unwrap_or_default()
    }
}

/// Sum an SA's counters over workers (what `show crypto ipsec sa` prints).
pub fn sa_counters(workers: &[Arc<WorkerShared>], id: SaId) -> SaCounters {
    let mut t = SaCounters::default();
    for w in workers {
        t.add(&w.sa_counters(id));
    }
    t
}

// The sizes an SA's footprint counts (`crate::layout`) are these types'.
const _: () = assert!(core::mem::size_of::<SaSlot>() == crate::layout::SLOT_BYTES);
const _: () = assert!(core::mem::size_of::<SaCounterCell>() == crate::layout::COUNTER_CELL_BYTES);

/// A worker's replay state for one SA index. Its generation is the one of
/// the SA's counter cell (same index, same single writer), so the slot
/// holds nothing else: 24 bytes plus the bitmap.
#[derive(Debug, Default)]
pub(crate) struct SaSlot {
    /// Allocated on the first authenticated packet of the SA on this worker
    /// (once per SA, never per packet; forged packets cannot trigger it).
    pub(crate) window: Option<ReplayWindow>,
}

/// A worker's private state. Create one per worker thread and pass it to
/// `decap_batch` / `encap`; share [`WorkerState::shared`] with control.
/// It belongs to one [`crate::SaTable`]: its state is indexed by the
/// table's [`SaId`]s, which another table hands out again.
#[derive(Debug)]
pub struct WorkerState {
    shared: Arc<WorkerShared>,
    pages: Vec<Page>,
    slots: Vec<SaSlot>,
    synced_version: Option<u64>,
}

impl WorkerState {
    /// A worker with the default event capacity.
    pub fn new(id: u16) -> WorkerState {
        Self::with_event_capacity(id, DEFAULT_EVENT_CAPACITY)
    }

    /// A worker whose event queue holds `capacity` events.
    pub fn with_event_capacity(id: u16, capacity: usize) -> WorkerState {
        let shared = Arc::new(WorkerShared {
            id,
            drops: Arc::new(DropCounters::new()),
            passed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dummy_packets: AtomicU64::new(0),
            punted: AtomicU64::new(0),
            classes: ClassCounters::default(),
            events: EventRing::new(capacity),
            pages: ArcSwap::from_pointee(Vec::new()),
        });
        WorkerState {
            shared,
            pages: Vec::new(),
            slots: Vec::new(),
            synced_version: None,
        }
    }

    /// The worker's id (compared with inbound SAs' `owner`).
    pub fn id(&self) -> u16 {
        self.shared.id
    }

    /// What control reads: counters and events.
    pub fn shared(&self) -> Arc<WorkerShared> {
        self.shared.clone()
    }

    /// Grow local arrays to the snapshot's SA index range. Runs only when a
    /// new snapshot version is seen (allocates then, never per packet).
    pub(crate) fn sync(&mut self, snap: &SaSnapshot) {
        let cap = snap.index_capacity() as usize;
        if self.synced_version == Some(snap.version()) && self.slots.len() >= cap {
            return;
        }
        self.synced_version = Some(snap.version());
        if self.slots.len() < cap {
            self.slots.resize_with(cap, SaSlot::default);
        }
        let need_pages = cap.div_ceil(PAGE);
        if self.pages.len() < need_pages {
            while self.pages.len() < need_pages {
                self.pages.push(new_page());
            }
            self.shared.pages.store(Arc::new(self.pages.clone()));
        }
    }

    /// Prefetch the SA's slot and counter cell.
    #[inline]
    pub(crate) fn prefetch_sa(&self, id: SaId) {
        let i = id.index as usize;
        if let (Some(slot), Some(page)) = (self.slots.get(i), self.pages.get(i / PAGE)) {
            crate::prefetch::line(slot);
            crate::prefetch::line(&page[i % PAGE]);
        }
    }

    /// Prefetch the bitmap word of `seq` in the SA's replay window, if it
    /// has one (reads the slot: after [`WorkerState::prefetch_sa`]).
    #[inline]
    pub(crate) fn prefetch_replay(&self, id: SaId, seq: u64) {
        if let Some(w) = self
            .slots
            .get(id.index as usize)
            .and_then(|s| s.window.as_ref())
        {
            w.prefetch(seq);
        }
    }

    /// The SA's worker-local slot and counters, reset if the index was
    /// reused by a new SA. `None` if the snapshot was not synced (cannot
    /// happen through the pipeline).
    #[inline]
    pub(crate) fn slot(&mut self, id: SaId) -> Option<&mut SaSlot> {
        let i = id.index as usize;
        let slot = self.slots.get_mut(i)?;
        let cell = &self.pages.get(i / PAGE)?[i % PAGE];
        // Only this worker writes the cell's generation.
        if cell.generation.load(Ordering::Relaxed) != id.generation {
            slot.window = None;
            cell.reset(id.generation);
        }
        Some(slot)
    }

    #[inline]
    pub(crate) fn count(&mut self, id: SaId, which: SaCounter) {
        self.count_n(id, which, 1);
    }

    /// Add `n` to one of SA `id`'s counters (octets).
    #[inline]
    pub(crate) fn count_n(&mut self, id: SaId, which: SaCounter, n: u64) {
        if self.slot(id).is_some() {
            let i = id.index as usize;
            self.pages[i / PAGE][i % PAGE].add(which, n);
        }
    }

    /// Record that sending a packet encapsulated with SA `id` failed
    /// (the caller's TX ring was full, the socket errored...).
    pub fn count_send_error(&mut self, id: SaId) {
        self.count(id, SaCounter::SendErrors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inbound and outbound SAs share a cell's words: each counter still
    /// reads back as itself, and never as another.
    #[test]
    fn every_counter_reads_back_as_itself() {
        let mut w = WorkerState::new(0);
        w.slots.resize_with(2, SaSlot::default);
        w.pages = vec![new_page()];
        w.shared.pages.store(Arc::new(w.pages.clone()));
        let inb = SaId {
            index: 0,
            generation: 1,
        };
        let out = SaId {
            index: 1,
            generation: 1,
        };
        let inbound = [
            SaCounter::Decaps,
            SaCounter::VerifyFailed,
            SaCounter::ReplayTooOld,
            SaCounter::ReplayDuplicate,
            SaCounter::RecvErrors,
            SaCounter::DecapOctets,
        ];
        for (n, c) in inbound.into_iter().enumerate() {
            w.count_n(inb, c, 1 + n as u64);
        }
        for (n, c) in [
            SaCounter::Encaps,
            SaCounter::SendErrors,
            SaCounter::EncapOctets,
        ]
        .into_iter()
        .enumerate()
        {
            w.count_n(out, c, 10 + n as u64);
        }
        let shared = [w.shared()];
        assert_eq!(
            sa_counters(&shared, inb),
            SaCounters {
                decaps: 1,
                verify_failed: 2,
                replay_too_old: 3,
                replay_duplicate: 4,
                recv_errors: 5,
                decap_octets: 6,
                ..SaCounters::default()
            }
        );
        assert_eq!(
            sa_counters(&shared, out),
            SaCounters {
                encaps: 10,
                send_errors: 11,
                encap_octets: 12,
                ..SaCounters::default()
            }
        );
    }

    #[test]
    fn counters_reset_on_generation_change() {
        let mut w = WorkerState::new(0);
        // As sync() would for a snapshot with index capacity 3000.
        w.slots.resize_with(3000, SaSlot::default);
        w.pages = (0..3).map(|_| new_page()).collect();
        w.shared.pages.store(Arc::new(w.pages.clone()));
        let a = SaId {
            index: 2500,
            generation: 1,
        };
        w.count(a, SaCounter::Decaps);
        w.count(a, SaCounter::Decaps);
        w.count(a, SaCounter::ReplayDuplicate);
        let shared = [w.shared()];
        let c = sa_counters(&shared, a);
        assert_eq!((c.decaps, c.replay_duplicate, c.replay_failed()), (2, 1, 1));
        let b = SaId {
            index: 2500,
            generation: 2,
        };
        assert_eq!(sa_counters(&shared, b), SaCounters::default());
        w.count(b, SaCounter::Encaps);
        assert_eq!(sa_counters(&shared, b).encaps, 1);
        assert_eq!(sa_counters(&shared, a), SaCounters::default());
    }
}
