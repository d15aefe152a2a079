//! AF_XDP sockets (xsk-rs) and the per-queue worker loop.
//!
//! One [`XskQueue`] per configured rx queue: its own UMEM, fill/completion
//! rings, rx and tx rings. The worker receives frames in batches, hands the
//! batch to a [`BatchHandler`] (the datapath), and recycles the frames into
//! the fill ring. Nothing here allocates per packet.
#![deny(missing_docs)]

use std::{
    io,
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tracing::{debug, info, warn};
use xsk_rs::{
    CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem,
    config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
    socket::Socket,
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
}

impl QueueConfig {
    /// Defaults for `queue` on `interface`: 4096 frames of 4 KiB, rings of 2048.
    pub fn new(interface: &str, queue: u32) -> Self {
        QueueConfig {
            interface: interface.to_string(),
            queue,
            frames: 4096,
            ring_size: 2048,
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
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Frames received from the rx ring.
    pub rx_frames: AtomicU64,
    /// Bytes received from the rx ring.
    pub rx_bytes: AtomicU64,
    /// Non-empty batches received.
    pub rx_batches: AtomicU64,
    /// Times the fill ring would not take all recycled frames (they were stashed).
    pub fill_stashed: AtomicU64,
}

impl QueueStats {
    #[inline]
    fn add(counter: &AtomicU64, n: u64) {
        // Single writer: a relaxed load + store is enough and avoids a locked add.
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// A batch of received frames, borrowed from the queue's UMEM.
pub struct RxBatch<'a> {
    umem: &'a Umem,
    descs: &'a mut [FrameDesc],
}

impl RxBatch<'_> {
    /// Number of frames in the batch.
    pub fn len(&self) -> usize {
        self.descs.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    /// The bytes of frame `i` (Ethernet header first), writable in place.
    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        let desc = &mut self.descs[i];
        // SAFETY: every descriptor in the batch came from this UMEM's rx ring
        // and is owned by userspace until the worker puts it back on the fill
        // ring after the handler returns; no other reference to it exists.
        let mut data = unsafe { self.umem.data_mut(desc) };
        let contents: &mut [u8] = data.contents_mut();
        let (ptr, len) = (contents.as_mut_ptr(), contents.len());
        // SAFETY: the slice points into the mmap'd UMEM, which outlives the
        // batch (`'a`), and the `&mut self` borrow keeps it unique.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

/// What the datapath does with a batch of received frames.
pub trait BatchHandler {
    /// Handle every frame of `batch`; the frames are recycled afterwards.
    fn handle_batch(&mut self, queue: u32, batch: &mut RxBatch<'_>);
    /// Called when the worker has been idle for a poll interval (timers, flushing).
    fn on_idle(&mut self, _queue: u32) {}
}

/// One AF_XDP socket bound to one rx queue, with its UMEM and rings.
pub struct XskQueue {
    queue: u32,
    mode: BindMode,
    umem: Umem,
    // Kept for the transmit path; holding it also keeps the socket alive.
    _tx: TxQueue,
    rx: RxQueue,
    fill: FillQueue,
    _comp: CompQueue,
    /// Frames not on any ring: the transmit pool and frames the fill ring refused.
    stash: Vec<FrameDesc>,
    stats: Arc<QueueStats>,
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
        for (mode, flags) in [
            (BindMode::ZeroCopy, BindFlags::XDP_ZEROCOPY),
            (BindMode::Copy, BindFlags::XDP_COPY),
        ] {
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(ring)
                .tx_queue_size(ring)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(flags | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: the UMEM is fresh and not shared; the pair (interface,
            // queue) is bound once; libxdp's program load is inhibited.
            match unsafe { Socket::new(sock_cfg, &umem, &interface, queue) } {
                Ok((tx, rx, Some((fill, comp)))) => {
                    let actual = query_mode(rx.fd().as_raw_fd()).unwrap_or(mode);
                    let mut q = XskQueue {
                        queue,
                        mode: actual,
                        umem,
                        _tx: tx,
                        rx,
                        fill,
                        _comp: comp,
                        stash: descs,
                        stats: Arc::new(QueueStats::default()),
                    };
                    q.stock_fill_ring(cfg.ring_size as usize);
                    return Ok(q);
                }
                Ok((_, _, None)) => {
                    last_err = "the UMEM came back without fill/completion rings".into();
                }
                Err(e) => {
                    debug!(queue, mode = mode.as_str(), error = %e, "AF_XDP bind failed");
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

    /// The socket's file descriptor, for the XSKMAP.
    pub fn raw_fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Counters the worker keeps for this queue.
    pub fn stats(&self) -> Arc<QueueStats> {
        Arc::clone(&self.stats)
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
                if self.fill.needs_wakeup() {
                    self.fill.wakeup(self.rx.fd_mut(), 0)?;
                }
                if !self.rx.poll(IDLE_POLL_MS)? {
                    handler.on_idle(self.queue);
                }
                continue;
            }
            let bytes: usize = descs[..n].iter().map(|d| d.lengths().data()).sum();
            QueueStats::add(&self.stats.rx_frames, n as u64);
            QueueStats::add(&self.stats.rx_bytes, bytes as u64);
            QueueStats::add(&self.stats.rx_batches, 1);
            let mut batch = RxBatch {
                umem: &self.umem,
                descs: &mut descs[..n],
            };
            handler.handle_batch(self.queue, &mut batch);
            // SAFETY: the batch's frames are ours again and go back to the kernel.
            let done = unsafe { self.fill.produce(&descs[..n]) };
            if done < n {
                // The fill ring can look full right after the kernel took frames
                // (it publishes its consumer index per batch): keep the rest.
                pending[..n - done].copy_from_slice(&descs[done..n]);
                n_pending = n - done;
                QueueStats::add(&self.stats.fill_stashed, 1);
            }
        }
        info!(queue = self.queue, "AF_XDP worker stopped");
        Ok(())
    }
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
