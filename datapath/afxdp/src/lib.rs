//! AF_XDP sockets (xsk-rs) and the per-queue worker loop.
//!
//! One [`XskQueue`] per configured rx queue: its own UMEM, fill/completion
//! rings, rx and tx rings. The worker receives frames in batches, hands the
//! batch to a [`BatchHandler`] (the datapath), and recycles the frames into
//! the fill ring. Nothing here allocates per packet.
#![deny(missing_docs)]

use std::{
    io,
    marker::PhantomData,
    num::NonZeroU32,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};
use xsk_rs::{
    CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem,
    config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
    socket::Socket,
    umem::frame::DataMut,
};

/// Frames received (and recycled) per batch.
pub const BATCH_SIZE: usize = 64;
/// How long the worker sleeps in `poll()` when idle before re-checking its stop flag.
const IDLE_POLL_MS: i32 = 100;

/// How the kernel bound an AF_XDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// Frames DMA'd straight into the UMEM.
    ZeroCopy,
    /// The kernel copies each frame into the UMEM (veth, generic XDP).
    Copy,
}

impl BindMode {
    /// The name shown in `show` output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        }
    }
}

/// Sizes for one queue's socket and UMEM.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Interface to bind to.
    pub interface: String,
    /// Rx queue index on that interface.
    pub queue: u32,
    /// Frames in the UMEM: half stock the fill ring, half are for transmit.
    pub frames: u32,
    /// Fill, completion, rx and tx ring sizes (power of two).
    pub ring_size: u32,
    /// Busy polling: `SO_BUSY_POLL` microseconds (with
    /// `SO_PREFER_BUSY_POLL` and a budget of one batch) on the socket, and
    /// a worker that spins instead of sleeping while it has work; 0 is off.
    pub busy_poll_us: u32,
    /// Ask for multi-buffer receive (`XDP_USE_SG`): a frame longer than a
    /// UMEM frame arrives as a chain of descriptors, each but the last
    /// marked [`FrameBuf::continues`]. Refused by the kernel (before 6.6,
    /// or zero-copy drivers without it), the socket binds without it
    /// ([`XskQueue::multi_buffer`] says which).
    pub multi_buffer: bool,
}

impl QueueConfig {
    /// Defaults for `queue` on `interface`: 4096 frames of 4 KiB, rings of 2048.
    pub fn new(interface: &str, queue: u32) -> Self {
        QueueConfig {
            interface: interface.to_string(),
            queue,
            frames: 4096,
            ring_size: 2048,
            busy_poll_us: 0,
            multi_buffer: false,
        }
    }
}

/// Why a queue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// Invalid ring or frame size.
    #[error("AF_XDP configuration for queue {queue}: {msg}")]
    Config {
        /// Queue index.
        queue: u32,
        /// What is wrong.
        msg: String,
    },
    /// The UMEM could not be created (memory locking limits, no memory).
    #[error("creating the AF_XDP UMEM for queue {queue}: {msg}")]
    Umem {
        /// Queue index.
        queue: u32,
        /// The library's error.
        msg: String,
    },
    /// The socket could not be created or bound.
    #[error("binding an AF_XDP socket to {interface} queue {queue}: {msg}")]
    Bind {
        /// Interface name.
        interface: String,
        /// Queue index.
        queue: u32,
        /// The library's error.
        msg: String,
    },
}

/// Per-queue counters kept by the worker (single writer) and read by control.
/// On cache lines of its own: no two workers' counters share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct QueueStats {
    /// Frames received from the rx ring.
    pub rx_frames: AtomicU64,
    /// Bytes received from the rx ring.
    pub rx_bytes: AtomicU64,
    /// Non-empty batches received.
    pub rx_batches: AtomicU64,
    /// Times the fill ring would not take all recycled frames (they were stashed).
    pub fill_stashed: AtomicU64,
    /// Frames put on the tx ring.
    pub tx_frames: AtomicU64,
    /// Waits of [`IDLE_POLL_MS`] in [`XskQueue::run`] that timed out with
    /// nothing on any of the worker's inputs (rx ring, handoff, inside):
    /// each one means every frame queued before it began was handled. A
    /// test reads it to know the worker has drained what it was sent.
    pub idle_polls: AtomicU64,
}

/// Add `n` to a counter only the calling worker writes: a relaxed load and
/// store is enough and avoids a locked read-modify-write.
#[inline]
pub fn add_single_writer(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// One received frame's bytes inside the UMEM, valid for `'a`: the borrow
/// of the frame's descriptor and of the UMEM that the worker takes for one
/// batch. Safe code cannot keep it past the batch (its lifetime ends before
/// the frame goes back on the fill ring):
///
/// ```compile_fail
/// use xdpsec_afxdp::{BatchHandler, FrameBuf, RxBatch, XskTx};
/// struct Keep(Option<FrameBuf<'static>>);
/// impl BatchHandler for Keep {
///     fn handle_batch(&mut self, _: u32, batch: &mut RxBatch<'_, '_>, _: &mut XskTx) {
///         self.0 = Some(std::mem::take(&mut batch.frames_mut()[0]));
///     }
/// }
/// ```
pub struct FrameBuf<'a> {
    ptr: *mut u8,
    len: usize,
    /// `XDP_PKT_CONTD`: the packet goes on in the next descriptor.
    more: bool,
    _frame: PhantomData<&'a mut [u8]>,
}

impl Default for FrameBuf<'_> {
    /// An empty buffer (no frame).
    fn default() -> Self {
        FrameBuf {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
            more: false,
            _frame: PhantomData,
        }
    }
}

impl<'a> FrameBuf<'a> {
    /// The bytes of `data`, for as long as `data`'s borrow of the UMEM and
    /// of the descriptor lasts.
    fn new(mut data: DataMut<'a>, more: bool) -> Self {
        let c: &mut [u8] = data.contents_mut();
        FrameBuf {
            ptr: c.as_mut_ptr(),
            len: c.len(),
            more,
            _frame: PhantomData,
        }
    }

    /// Whether the packet goes on in the next frame of the batch (or of
    /// the next batch): `XDP_PKT_CONTD`, only on a socket bound with
    /// `XDP_USE_SG`.
    pub fn continues(&self) -> bool {
        self.more
    }
}

impl AsMut<[u8]> for FrameBuf<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: built by FrameBuf::new from a DataMut<'a> (the frame, taken
        // off the rx ring and owned by userspace until the fill ring gets it
        // back, which the borrow 'a outlives); each FrameBuf covers its own
        // descriptor, and `&mut self` keeps the access unique. A default
        // FrameBuf is an empty slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// A batch of received frames, borrowed from the queue's UMEM.
pub struct RxBatch<'b, 'a> {
    frames: &'b mut [FrameBuf<'a>],
}

impl<'a> RxBatch<'_, 'a> {
    /// Number of frames in the batch.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The bytes of frame `i` (Ethernet header first), writable in place.
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        self.frames[i].as_mut()
    }

    /// All frames, for a datapath that takes the batch at once.
    pub fn frames_mut(&mut self) -> &mut [FrameBuf<'a>] {
        self.frames
    }
}

/// What the datapath does with a batch of received frames.
pub trait BatchHandler {
    /// Handle every frame of `batch`; the frames are recycled afterwards.
    /// Frames to send are built with `tx` (flushed after the call).
    fn handle_batch(&mut self, queue: u32, batch: &mut RxBatch<'_, '_>, tx: &mut XskTx);
    /// A second file descriptor the worker should wait on (e.g. a TUN queue).
    fn extra_fd(&self) -> Option<RawFd> {
        None
    }
    /// `extra_fd` is readable, or a busy pass gives it its turn: read what
    /// it has (a bounded batch; nothing may be there), sending with `tx`
    /// (flushed after the call).
    fn on_extra_readable(&mut self, _queue: u32, _tx: &mut XskTx) {}
    /// A wake-up fd for work handed over by other workers.
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }
    /// Serve work handed over by other workers; called every loop pass (it
    /// must be cheap when there is none) and when `wake_fd` is readable.
    fn poll_handoff(&mut self, _queue: u32, _tx: &mut XskTx) {}
    /// Called when the worker has been idle for a poll interval (timers, flushing).
    fn on_idle(&mut self, _queue: u32) {}
    /// The receive ring was found empty (before the worker spins or
    /// waits): the end of a burst, where work held over batches (GRO)
    /// goes. Also once when the worker stops.
    fn on_rx_empty(&mut self, _queue: u32) {}
}

/// One AF_XDP socket bound to one rx queue, with its UMEM and rings.
pub struct XskQueue {
    queue: u32,
    mode: BindMode,
    /// Bound with `XDP_USE_SG`.
    multi_buffer: bool,
    umem: Umem,
    rx: RxQueue,
    fill: FillQueue,
    tx: XskTx,
    /// Frames not yet on the fill ring at start-up.
    stash: Vec<FrameDesc>,
    stats: Arc<QueueStats>,
    /// Busy polling on (`QueueConfig::busy_poll_us` > 0).
    busy_poll: bool,
}

/// The transmit side of a queue: tx ring, completion ring and a pool of free frames.
pub struct XskTx {
    umem: Umem,
    ring: TxQueue,
    comp: CompQueue,
    /// Frames free for transmit.
    pool: Vec<FrameDesc>,
    /// Frames written but not yet on the tx ring.
    pending: PendingFrames<FrameDesc>,
    /// Frames on the tx ring, not yet completed.
    in_flight: usize,
    /// Frames the kernel sends per `sendto` kick in copy mode: the tx
    /// ring's size where the kernel takes `XDP_MAX_TX_SKB_BUDGET`, else
    /// its default of 32.
    kick_budget: usize,
    stats: Arc<QueueStats>,
}

impl XskTx {
    /// Build one frame in place: `build` gets the frame's whole buffer and
    /// returns the length to send, or `None` to give the frame back unsent.
    /// Returns false when no frame is free (the caller counts the drop).
    /// Also false, without calling `build`, when the tx ring had no room
    /// for the frames already written (they stay pending).
    pub fn send_with(&mut self, build: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        if self.pending.is_full() {
            self.flush();
            if self.pending.is_full() {
                // The tx ring took nothing: no room to queue another frame.
                return false;
            }
        }
        if self.pool.is_empty() {
            self.reclaim();
        }
        let Some(mut desc) = self.pool.pop() else {
            return false;
        };
        let sent = {
            // SAFETY: the frame came from the pool: it belongs to this UMEM and
            // is on no ring, so nothing else reads or writes it.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            let mut cur = data.cursor();
            let cap = cur.buf_len();
            cur.set_pos(cap);
            match build(data.contents_mut()) {
                Some(len) if len <= cap => {
                    data.cursor().set_pos(len);
                    true
                }
                _ => false,
            }
        };
        if !sent {
            self.pool.push(desc);
        } else if let Err(desc) = self.pending.push(desc) {
            // Cannot happen (checked above); the frame goes back unsent.
            self.pool.push(desc);
            return false;
        }
        sent
    }

    /// Put written frames on the tx ring and kick the kernel (copy mode
    /// transmits only on a `sendto`).
    pub fn flush(&mut self) {
        self.reclaim();
        if self.pending.is_empty() {
            return;
        }
        // SAFETY: pending frames belong to this UMEM and are on no ring.
        let done = unsafe { self.ring.produce(self.pending.as_slice()) };
        if done > 0 {
            self.in_flight += done;
            add_single_writer(&self.stats.tx_frames, done as u64);
            self.pending.remove_front(done);
        }
        // Kick even when the ring was full, so the kernel drains it; in
        // copy mode one kick sends at most `kick_budget` frames, so a
        // batch larger than that gets as many kicks as it needs (frames
        // left on the ring would otherwise wait for the next batch).
        for _ in 0..done.div_ceil(self.kick_budget).max(1) {
            if let Err(e) = self.ring.wakeup() {
                debug!(error = %e, "AF_XDP tx wakeup failed");
                break;
            }
        }
    }

    /// Make room for a burst of `n` frames (at most a batch) beside those
    /// written and not yet on the ring: flush first when they would not
    /// fit, so the burst (a super-packet's segments) leaves with one kick.
    pub fn reserve(&mut self, n: usize) {
        if self.pending.len + n.min(BATCH_SIZE) > BATCH_SIZE {
            self.flush();
        }
    }

    /// Kick the kernel if frames are still on the tx ring (not completed):
    /// for a socket idle in receive, so the end of a burst does not wait
    /// on the ring for the next one.
    pub fn kick_if_in_flight(&mut self) {
        self.reclaim();
        if self.in_flight > 0 || !self.pending.is_empty() {
            self.flush();
        }
    }

    /// Take completed frames back into the pool.
    fn reclaim(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        let mut done = [FrameDesc::default(); BATCH_SIZE];
        loop {
            // SAFETY: completed descriptors are frames of this UMEM.
            let n = unsafe { self.comp.consume(&mut done) };
            self.pool.extend_from_slice(&done[..n]);
            self.in_flight -= n.min(self.in_flight);
            if n < BATCH_SIZE {
                break;
            }
        }
    }

    /// Frames free for transmit right now.
    pub fn free_frames(&self) -> usize {
        self.pool.len()
    }
}

impl XskQueue {
    /// Create the UMEM and socket for `cfg.queue`, asking for zero-copy and
    /// falling back to copy mode (veth offers copy mode only).
    ///
    /// The caller must already have attached its own XDP program: libxdp's
    /// default program is never loaded. The socket's fd still has to be put
    /// into the program's XSKMAP ([`XskQueue::raw_fd`]).
    pub fn open(cfg: &QueueConfig) -> Result<Self, XskError> {
        let queue = cfg.queue;
        let config_err = |msg: String| XskError::Config { queue, msg };
        let ring = QueueSize::new(cfg.ring_size).map_err(|e| config_err(e.to_string()))?;
        let frame_size = FrameSize::new(4096).map_err(|e| config_err(e.to_string()))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| config_err(e.to_string()))?;
        let frames = NonZeroU32::new(cfg.frames).ok_or_else(|| config_err("zero frames".into()))?;
        if cfg.frames < 2 * cfg.ring_size {
            return Err(config_err(format!(
                "{} frames cannot stock a fill ring of {} and a transmit pool",
                cfg.frames, cfg.ring_size
            )));
        }
        let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| XskError::Umem {
            queue,
            msg: e.to_string(),
        })?;
        let interface = cfg
            .interface
            .parse()
            .map_err(|e: std::ffi::NulError| config_err(e.to_string()))?;

        let mut last_err = String::new();
        // With multi-buffer asked for: each mode with XDP_USE_SG first,
        // then without (a kernel or driver that refuses it).
        let sg = if cfg.multi_buffer {
            &[true, false][..]
        } else {
            &[false][..]
        };
        let attempts = [
            (BindMode::ZeroCopy, BindFlags::XDP_ZEROCOPY),
            (BindMode::Copy, BindFlags::XDP_COPY),
        ]
        .into_iter()
        .flat_map(|(m, f)| sg.iter().map(move |&sg| (m, f, sg)));
        for (mode, flags, sg) in attempts {
            let mut flags = flags | BindFlags::XDP_USE_NEED_WAKEUP;
            if sg {
                flags |= BindFlags::XDP_USE_SG;
            }
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(ring)
                .tx_queue_size(ring)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(flags)
                .build();
            // SAFETY: the UMEM is fresh and not shared; the pair (interface,
            // queue) is bound once; libxdp's program load is inhibited.
            match unsafe { Socket::new(sock_cfg, &umem, &interface, queue) } {
                Ok((tx, rx, Some((fill, comp)))) => {
                    let actual = query_mode(rx.fd().as_raw_fd()).unwrap_or(mode);
                    let kick_budget = raise_tx_budget(rx.fd().as_raw_fd(), cfg.ring_size);
                    if cfg.busy_poll_us > 0 {
                        set_busy_poll(rx.fd().as_raw_fd(), cfg.busy_poll_us).map_err(|e| {
                            config_err(format!(
                                "busy polling (SO_BUSY_POLL {} us): {e}",
                                cfg.busy_poll_us
                            ))
                        })?;
                    }
                    let stats = Arc::new(QueueStats::default());
                    // First half of the frames for receive, the rest for transmit.
                    let mut stash = descs;
                    let pool = stash.split_off(cfg.ring_size as usize);
                    let mut q = XskQueue {
                        queue,
                        mode: actual,
                        multi_buffer: sg,
                        umem: umem.clone(),
                        rx,
                        fill,
                        tx: XskTx {
                            umem,
                            ring: tx,
                            comp,
                            pool,
                            pending: PendingFrames::new(FrameDesc::default()),
                            in_flight: 0,
                            kick_budget,
                            stats: Arc::clone(&stats),
                        },
                        stash,
                        stats,
                        busy_poll: cfg.busy_poll_us > 0,
                    };
                    q.stock_fill_ring(cfg.ring_size as usize);
                    return Ok(q);
                }
                Ok((_, _, None)) => {
                    last_err = "the UMEM came back without fill/completion rings".into();
                }
                Err(e) => {
                    debug!(queue, mode = mode.as_str(), sg, error = %e, "AF_XDP bind failed");
                    last_err = format!("{e} (asked for {})", mode.as_str());
                }
            }
        }
        Err(XskError::Bind {
            interface: cfg.interface.clone(),
            queue,
            msg: last_err,
        })
    }

    fn stock_fill_ring(&mut self, n: usize) {
        let start = self.stash.len() - n.min(self.stash.len());
        // SAFETY: these frames belong to this UMEM and are on no ring.
        let done = unsafe { self.fill.produce(&self.stash[start..]) };
        // The ring took the first `done` of them; the rest stay in the stash.
        self.stash.drain(start..start + done);
    }

    /// The rx queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The mode the kernel granted.
    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// Whether [`XskQueue::poll_batch`] is holding back: recycled frames
    /// the fill ring had no room for are still waiting, so a call that
    /// received nothing did not look at the rx ring.
    pub fn refill_pending(&self) -> bool {
        !self.stash.is_empty()
    }

    /// Whether the socket was bound with `XDP_USE_SG` (takes chained frames).
    pub fn multi_buffer(&self) -> bool {
        self.multi_buffer
    }

    /// The socket's file descriptor, for the XSKMAP.
    pub fn raw_fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// A duplicate of the socket's fd for reading [`xdp_statistics`] from
    /// another thread (control) while the worker owns the queue. It keeps the
    /// socket open until dropped.
    pub fn stats_fd(&self) -> io::Result<OwnedFd> {
        // SAFETY: the socket's fd stays open for this borrow of self.
        let fd = unsafe { BorrowedFd::borrow_raw(self.rx.fd().as_raw_fd()) };
        fd.try_clone_to_owned()
    }

    /// The transmit side, for a sender that does not run the receive loop
    /// (the traffic generator).
    pub fn tx(&mut self) -> &mut XskTx {
        &mut self.tx
    }

    /// Counters the worker keeps for this queue.
    pub fn stats(&self) -> Arc<QueueStats> {
        Arc::clone(&self.stats)
    }

    /// Receive one batch without waiting, for a socket served from another
    /// queue's loop (gateway mode's inside interface): up to
    /// [`BATCH_SIZE`] frames go to `handle` with this socket's transmit
    /// side, then back on the fill ring. Returns how many were received
    /// (0 when none were waiting).
    pub fn poll_batch(&mut self, handle: impl FnOnce(&mut RxBatch<'_, '_>, &mut XskTx)) -> usize {
        if !self.stash.is_empty() {
            // Frames the fill ring had no room for last time go first.
            let n = self.stash.len();
            self.stock_fill_ring(n);
            if !self.stash.is_empty() {
                return 0;
            }
        }
        let mut descs = [FrameDesc::default(); BATCH_SIZE];
        // SAFETY: descs are overwritten with frames of this UMEM.
        let n = unsafe { self.rx.consume(&mut descs) };
        if n == 0 {
            if self.fill.needs_wakeup() {
                let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
            }
            return 0;
        }
        let bytes: usize = descs[..n].iter().map(|d| d.lengths().data()).sum();
        add_single_writer(&self.stats.rx_frames, n as u64);
        add_single_writer(&self.stats.rx_bytes, bytes as u64);
        add_single_writer(&self.stats.rx_batches, 1);
        {
            // The frames' borrows end with this block, before the frames
            // go back on the fill ring below.
            let umem = &self.umem;
            let mut bufs: [FrameBuf<'_>; BATCH_SIZE] = std::array::from_fn(|_| FrameBuf::default());
            for (buf, desc) in bufs.iter_mut().zip(descs[..n].iter_mut()) {
                let more = desc.has_more_frames();
                // SAFETY: the descriptor came from this UMEM's rx ring and
                // is owned by userspace until it goes back on the fill ring.
                *buf = FrameBuf::new(unsafe { umem.data_mut(desc) }, more);
            }
            let mut batch = RxBatch {
                frames: &mut bufs[..n],
            };
            handle(&mut batch, &mut self.tx);
        }
        // SAFETY: the batch's frames are ours again and go back to the kernel.
        let done = unsafe { self.fill.produce(&descs[..n]) };
        if done < n {
            // Kept for the next call (the stash has room: it held more at start-up).
            self.stash.extend_from_slice(&descs[done..n]);
            add_single_writer(&self.stats.fill_stashed, 1);
        }
        n
    }

    /// Receive in batches until `stop` is set, handing each batch to `handler`
    /// and recycling its frames into the fill ring.
    pub fn run<H: BatchHandler>(&mut self, handler: &mut H, stop: &AtomicBool) -> io::Result<()> {
        info!(
            queue = self.queue,
            mode = self.mode.as_str(),
            "AF_XDP worker started"
        );
        let mut descs = [FrameDesc::default(); BATCH_SIZE];
        // Recycled frames the fill ring had no room for: retried first next round.
        let mut pending = [FrameDesc::default(); BATCH_SIZE];
        let mut n_pending = 0usize;
        // Busy polling: when the queue went empty (None while it has work).
        let mut spin_since: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if n_pending > 0 {
                // SAFETY: pending frames came from this UMEM's rx ring and are on no ring.
                let done = unsafe { self.fill.produce(&pending[..n_pending]) };
                pending.copy_within(done..n_pending, 0);
                n_pending -= done;
                if n_pending > 0 {
                    // Wait for the kernel to take fill entries rather than spinning.
                    self.rx.poll(1)?;
                    continue;
                }
            }
            // SAFETY: descs are overwritten with frames of this UMEM.
            let n = unsafe { self.rx.consume(&mut descs) };
            if n == 0 {
                handler.on_rx_empty(self.queue);
            }
            if n == 0
                && self.busy_poll
                && spin_since.get_or_insert_with(Instant::now).elapsed() < BUSY_SPIN
            {
                // Busy polling: a non-blocking receive runs the device's
                // NAPI poll in this thread (SO_PREFER_BUSY_POLL); the other
                // directions get their turn; no sleep until the queue has
                // been idle for BUSY_SPIN.
                busy_poll_once(self.rx.fd().as_raw_fd());
                handler.poll_handoff(self.queue, &mut self.tx);
                if handler.extra_fd().is_some() {
                    handler.on_extra_readable(self.queue, &mut self.tx);
                }
                self.tx.flush();
                continue;
            }
            if n == 0 {
                spin_since = None;
                if self.fill.needs_wakeup() {
                    self.fill.wakeup(self.rx.fd_mut(), 0)?;
                }
                match wait_readable(
                    self.rx.fd().as_raw_fd(),
                    handler.extra_fd(),
                    handler.wake_fd(),
                    IDLE_POLL_MS,
                )? {
                    Readable::Extra => {
                        handler.on_extra_readable(self.queue, &mut self.tx);
                        self.tx.flush();
                    }
                    Readable::Wake => {
                        handler.poll_handoff(self.queue, &mut self.tx);
                        self.tx.flush();
                    }
                    Readable::Timeout => {
                        add_single_writer(&self.stats.idle_polls, 1);
                        handler.on_idle(self.queue)
                    }
                    Readable::Interrupted => handler.on_idle(self.queue),
                    Readable::Xsk => {}
                }
                continue;
            }
            spin_since = None;
            let bytes: usize = descs[..n].iter().map(|d| d.lengths().data()).sum();
            add_single_writer(&self.stats.rx_frames, n as u64);
            add_single_writer(&self.stats.rx_bytes, bytes as u64);
            add_single_writer(&self.stats.rx_batches, 1);
            {
                // The frames' borrows end with this block, before the frames
                // go back on the fill ring below.
                let umem = &self.umem;
                let mut bufs: [FrameBuf<'_>; BATCH_SIZE] =
                    std::array::from_fn(|_| FrameBuf::default());
                for (buf, desc) in bufs.iter_mut().zip(descs[..n].iter_mut()) {
                    let more = desc.has_more_frames();
                    // SAFETY: the descriptor came from this UMEM's rx ring and
                    // is owned by userspace until it goes back on the fill ring.
                    *buf = FrameBuf::new(unsafe { umem.data_mut(desc) }, more);
                }
                let mut batch = RxBatch {
                    frames: &mut bufs[..n],
                };
                handler.handle_batch(self.queue, &mut batch, &mut self.tx);
            }
            handler.poll_handoff(self.queue, &mut self.tx);
            // The other direction gets its turn in every busy pass too (a
            // bounded batch, one non-blocking read when it has nothing), so
            // steady receive load never starves it.
            if handler.extra_fd().is_some() {
                handler.on_extra_readable(self.queue, &mut self.tx);
            }
            self.tx.flush();
            // SAFETY: the batch's frames are ours again and go back to the kernel.
            let done = unsafe { self.fill.produce(&descs[..n]) };
            if done < n {
                // The fill ring can look full right after the kernel took frames
                // (it publishes its consumer index per batch): keep the rest.
                pending[..n - done].copy_from_slice(&descs[done..n]);
                n_pending = n - done;
                add_single_writer(&self.stats.fill_stashed, 1);
            }
        }
        handler.on_rx_empty(self.queue);
        info!(queue = self.queue, "AF_XDP worker stopped");
        Ok(())
    }
}

enum Readable {
    Xsk,
    Extra,
    Wake,
    Timeout,
    /// A signal cut the wait short: served as a timeout, not counted idle.
    Interrupted,
}

/// Wait until the AF_XDP socket, the extra fd or the wake-up fd is readable.
/// The wake-up fd wins, then the extra fd; the socket is served on the next
/// pass anyway (consume() finds its frames without waiting).
fn wait_readable(
    xsk: RawFd,
    extra: Option<RawFd>,
    wake: Option<RawFd>,
    timeout_ms: i32,
) -> io::Result<Readable> {
    let mut fds = [
        libc::pollfd {
            fd: xsk,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: extra.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: three valid pollfds; a negative fd is ignored by poll().
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Readable::Interrupted)
        } else {
            Err(e)
        };
    }
    if rc == 0 {
        return Ok(Readable::Timeout);
    }
    if fds[2].revents & libc::POLLIN != 0 {
        return Ok(Readable::Wake);
    }
    if fds[1].revents & libc::POLLIN != 0 {
        return Ok(Readable::Extra);
    }
    Ok(Readable::Xsk)
}

/// `XDP_MAX_TX_SKB_BUDGET` (linux/if_xdp.h, kernels from 6.17): frames a
/// copy-mode `sendto` kick sends, 32 by default.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// The kernel's default number of frames per copy-mode kick.
const DEFAULT_TX_BUDGET: usize = 32;

/// Let one `sendto` kick send up to a whole tx ring (`ring_size`) in copy
/// mode; returns the frames per kick now in force (32 where the kernel
/// does not know the option).
fn raise_tx_budget(fd: RawFd, ring_size: u32) -> usize {
    let budget = ring_size as libc::c_int;
    // SAFETY: fd is a live AF_XDP socket; the value is an int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        ring_size as usize
    } else {
        debug!(error = %io::Error::last_os_error(), "XDP_MAX_TX_SKB_BUDGET not taken: 32 frames per tx kick");
        DEFAULT_TX_BUDGET
    }
}

/// How long a busy-polling worker spins on an empty queue before it
/// sleeps in `poll()` (which still busy-polls for `SO_BUSY_POLL`).
const BUSY_SPIN: Duration = Duration::from_millis(10);

/// Turn on busy polling for `fd`: `SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`
/// microseconds, and a NAPI budget of one batch (`SO_BUSY_POLL_BUDGET`).
fn set_busy_poll(fd: RawFd, us: u32) -> io::Result<()> {
    for (opt, v) in [
        (libc::SO_PREFER_BUSY_POLL, 1),
        (libc::SO_BUSY_POLL, us.min(i32::MAX as u32) as libc::c_int),
        (libc::SO_BUSY_POLL_BUDGET, BATCH_SIZE as libc::c_int),
    ] {
        // SAFETY: fd is a live socket; the value is an int.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The socket's `SO_BUSY_POLL` in microseconds (0: off), as the kernel has it.
pub fn busy_poll_us(fd: RawFd) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: fd is a live socket; v/len are valid for writing.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v.max(0) as u32)
}

/// One non-blocking receive on an AF_XDP socket: with busy polling on, the
/// kernel runs the device's NAPI poll for it (frames land on the rx ring).
fn busy_poll_once(fd: RawFd) {
    // SAFETY: fd is a live socket; an empty buffer is allowed.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// Ask the kernel which mode it bound the socket in (`XDP_OPTIONS`).
fn query_mode(fd: RawFd) -> Option<BindMode> {
    let mut opts: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: fd is a live AF_XDP socket; opts/len are valid for writing.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut opts as *mut u32).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        warn!(error = %io::Error::last_os_error(), "getsockopt(XDP_OPTIONS) failed");
        return None;
    }
    Some(if opts & libc::XDP_OPTIONS_ZEROCOPY != 0 {
        BindMode::ZeroCopy
    } else {
        BindMode::Copy
    })
}

/// A fixed-capacity queue of frames written but not yet on the tx ring:
/// pushing into a full one gives the frame back instead of indexing past the
/// array.
struct PendingFrames<T: Copy> {
    items: [T; BATCH_SIZE],
    len: usize,
}

impl<T: Copy> PendingFrames<T> {
    fn new(fill: T) -> Self {
        PendingFrames {
            items: [fill; BATCH_SIZE],
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == BATCH_SIZE
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, v: T) -> Result<(), T> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = v;
                self.len += 1;
                Ok(())
            }
            None => Err(v),
        }
    }

    fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    /// Forget the first `n` (they went on the ring).
    fn remove_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.items.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

/// The kernel's AF_XDP ring counters for one socket (`getsockopt(SOL_XDP,
/// XDP_STATISTICS)`, `struct xdp_statistics`): frames the kernel dropped or
/// could not move, which no userspace counter sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStatistics {
    /// Dropped for reasons other than invalid descriptors (e.g. no room).
    pub rx_dropped: u64,
    /// Dropped because of invalid rx descriptors.
    pub rx_invalid_descs: u64,
    /// Dropped because of invalid tx descriptors.
    pub tx_invalid_descs: u64,
    /// Dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when the kernel needed a frame.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the tx ring was empty when the kernel looked for frames.
    pub tx_ring_empty_descs: u64,
}

impl XdpStatistics {
    /// Field names as shown in `show` output and JSON: the kernel's names
    /// prefixed `xdp_`, in [`XdpStatistics::values`] order.
    pub const FIELDS: [&'static str; 6] = [
        "xdp_rx_dropped",
        "xdp_rx_invalid_descs",
        "xdp_tx_invalid_descs",
        "xdp_rx_ring_full",
        "xdp_rx_fill_ring_empty_descs",
        "xdp_tx_ring_empty_descs",
    ];

    /// The counters in [`XdpStatistics::FIELDS`] order.
    pub fn values(&self) -> [u64; 6] {
        [
            self.rx_dropped,
            self.rx_invalid_descs,
            self.tx_invalid_descs,
            self.rx_ring_full,
            self.rx_fill_ring_empty_descs,
            self.tx_ring_empty_descs,
        ]
    }
}

/// Read the kernel's ring counters of the AF_XDP socket `fd`. Kernels before
/// 5.9 fill only the first three fields; the rest read as 0.
pub fn xdp_statistics(fd: BorrowedFd<'_>) -> io::Result<XdpStatistics> {
    // SAFETY: xdp_statistics is plain integers; all-zero is a valid value.
    let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: fd is a live socket for the borrow; st/len are valid for writing
    // and len says how many bytes st holds.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut st as *mut libc::xdp_statistics).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(XdpStatistics {
        rx_dropped: st.rx_dropped,
        rx_invalid_descs: st.rx_invalid_descs,
        tx_invalid_descs: st.tx_invalid_descs,
        rx_ring_full: st.rx_ring_full,
        rx_fill_ring_empty_descs: st.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: st.tx_ring_empty_descs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn pending_frames_never_index_past_capacity() {
        let mut p = PendingFrames::new(0u32);
        for i in 0..BATCH_SIZE as u32 {
            assert_eq!(p.push(i), Ok(()));
        }
        assert!(p.is_full());
        // A full queue gives the frame back (send_with used to index
        // pending[BATCH_SIZE] here when flush could not move any frame).
        assert_eq!(p.push(99), Err(99));
        p.remove_front(3);
        assert_eq!(p.as_slice().len(), BATCH_SIZE - 3);
        assert_eq!(p.as_slice()[0], 3);
        assert_eq!(p.push(7), Ok(()));
        assert_eq!(*p.as_slice().last().unwrap(), 7);
        p.remove_front(usize::MAX);
        assert!(p.is_empty());
    }

    #[test]
    fn xdp_statistics_needs_an_xdp_socket() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // SOL_XDP options are not UDP's: an error, never garbage.
        assert!(xdp_statistics(sock.as_fd()).is_err());
        assert_eq!(XdpStatistics::default().values(), [0; 6]);
        assert!(XdpStatistics::FIELDS.iter().all(|f| f.starts_with("xdp_")));
    }
}
