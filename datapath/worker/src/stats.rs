//! Queue statistics: the worker's I/O counters around the core, and what
//! control reads of each AF_XDP queue (ring counters, the datapath core's
//! per-class frame counts, the kernel's ring drops).
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use xdpsec_afxdp::{BindMode, QueueStats, XdpStatistics, xdp_statistics};
use xdpsec_datapath::worker::{FrameClass, WorkerShared};

/// Counters of the worker's I/O around the core (single writer: the worker).
/// On cache lines of its own: no two workers' counters share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct IoStats {
    /// Decrypted packets written to the TUN device.
    pub tun_tx: AtomicU64,
    /// Decrypted packets the TUN device refused (queue full).
    pub tun_tx_errors: AtomicU64,
    /// Decrypted packets counted and dropped by the sink.
    pub sink: AtomicU64,
    /// Packets read from the TUN device (to encrypt).
    pub tun_rx: AtomicU64,
    /// With offloads: GSO super-packets read from the TUN (part of tun_rx).
    pub tun_gso_rx: AtomicU64,
    /// With offloads: segments cut from them (each sealed as one ESP
    /// packet, or handed to the SA's owner worker).
    pub gso_segments: AtomicU64,
    /// With offloads: coalesced super-packets written to the TUN (their
    /// segments are counted in tun_tx).
    pub tun_gro_tx: AtomicU64,
    /// With offloads: the segments those super-packets carried (part of
    /// tun_tx; tun_gro_segments / tun_gro_tx is the average coalesced).
    pub tun_gro_segments: AtomicU64,
    /// Gateway mode: decrypted packets queued on the inside interface's
    /// AF_XDP TX as Ethernet frames.
    pub inside_tx: AtomicU64,
    /// Gateway mode: decrypted packets dropped because their next hop on
    /// the inside interface has no MAC yet (its resolution was requested).
    pub inside_no_neighbor: AtomicU64,
    /// Gateway mode: decrypted packets dropped because the inside socket
    /// had no free TX frame (or its ring no room).
    pub inside_tx_errors: AtomicU64,
    /// Gateway mode: UMEM frames received on the inside interface's AF_XDP
    /// socket (inner packets to encrypt; each piece of a chained frame counts).
    pub inside_rx: AtomicU64,
    /// Gateway mode: inner packets from the inside interface dropped as
    /// larger than `InsideXdp::max_inner` (they would not fit the
    /// underlay's MTU after ESP; nothing fragments them).
    pub inside_too_big: AtomicU64,
    /// Gateway mode: TCP packets from the inside interface larger than
    /// `InsideXdp::max_inner`, cut into segments that fit (counted in
    /// gso_segments) instead of dropped.
    pub inside_segmented: AtomicU64,
    /// Gateway mode: frames the inside socket received in several UMEM
    /// frames (`XDP_USE_SG`) and put back together: on veth with
    /// `inside.xdp_mode = "generic"`, a host's GSO super-packets (TSO),
    /// each cut into segments (counted in gso_segments).
    pub inside_gso_rx: AtomicU64,
    /// Gateway mode: chained frames dropped as longer than 64 KB (an
    /// Ethernet header and the largest IP packet), counted once each.
    pub inside_chain_too_long: AtomicU64,
    /// Gateway mode: chained frames dropped because their last piece never
    /// came (the ring was empty with the chain open).
    pub inside_chain_unterminated: AtomicU64,
    /// Gateway mode: TCP/UDP checksums from the inside completed here
    /// (partial, as a host with transmit checksum offload leaves them).
    pub inside_csum_completed: AtomicU64,
    /// Encrypted frames handed to AF_XDP TX.
    pub encap_tx: AtomicU64,
    /// Encrypted frames whose tunnel's next hop had no MAC yet, held for
    /// the next-hop thread (which sends each once the MAC is known or
    /// counts it as OUT_SETTING_WRONG_L2_HDR).
    pub next_hop_held: AtomicU64,
    /// Frames handed to the worker owning their SA.
    pub handoff: AtomicU64,
    /// Inner packets read from the TUN and handed to the worker owning
    /// their tunnel's outbound SA (its sequence counter's only writer).
    pub handoff_out: AtomicU64,
    /// Frames the core passed back as not ESP (steered by mistake).
    pub not_esp: AtomicU64,
    /// Punted packets (`WorkerShared::punted`) lost because the punt ring
    /// to control was full (or the packet too large for its buffers).
    pub punt_dropped: AtomicU64,
    /// Packets control injected that this worker encrypted and queued on
    /// AF_XDP TX.
    pub injected: AtomicU64,
    /// Packets control could not inject because this worker's inject
    /// queue was full (written by control, not by the worker).
    pub inject_dropped: AtomicU64,
}

/// What control knows about one queue.
pub struct QueueInfo {
    /// Rx queue index.
    pub queue: u32,
    /// Bind mode granted by the kernel.
    pub mode: BindMode,
    /// The worker's ring counters.
    pub stats: Arc<QueueStats>,
    /// The worker's core counters: frames per outer-header class (from the
    /// datapath's own parse), dummy packets.
    pub worker: Arc<WorkerShared>,
    /// The worker's inside I/O counters.
    pub io: Arc<IoStats>,
    /// A duplicate of the queue's AF_XDP socket fd, for the kernel's ring
    /// counters (`XDP_STATISTICS`); `None` if it could not be duplicated.
    pub xsk_fd: Option<std::os::fd::OwnedFd>,
    /// Gateway mode: the same for the queue's socket on the inside interface.
    pub inside_xsk_fd: Option<std::os::fd::OwnedFd>,
}

/// Number of per-queue counters in [`QUEUE_FIELDS`].
pub const N_QUEUE_FIELDS: usize = 3 + FrameClass::COUNT + 6;

/// Per-queue counter values, in display order: ring counters, the core's
/// frame classes, then the kernel's AF_XDP ring drops.
pub const QUEUE_FIELDS: [&str; N_QUEUE_FIELDS] = [
    "rx_frames",
    "rx_bytes",
    "rx_batches",
    FrameClass::ALL[0].name(),
    FrameClass::ALL[1].name(),
    FrameClass::ALL[2].name(),
    FrameClass::ALL[3].name(),
    FrameClass::ALL[4].name(),
    XdpStatistics::FIELDS[0],
    XdpStatistics::FIELDS[1],
    XdpStatistics::FIELDS[2],
    XdpStatistics::FIELDS[3],
    XdpStatistics::FIELDS[4],
    XdpStatistics::FIELDS[5],
];

/// Number of the worker's I/O counters in [`QueueInfo::io_counters`].
pub const N_IO_COUNTERS: usize = 28;

impl QueueInfo {
    /// The worker's I/O counters around the core, by name, in display
    /// order (the "inside:" line of `show platform hardware qfp active
    /// statistics`, and `xdpsec_worker_io_total` in the metrics).
    pub fn io_counters(&self) -> [(&'static str, u64); N_IO_COUNTERS] {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let io = &self.io;
        [
            ("tun_tx", r(&io.tun_tx)),
            ("tun_tx_errors", r(&io.tun_tx_errors)),
            ("sink", r(&io.sink)),
            ("tun_rx", r(&io.tun_rx)),
            // Gateway mode (`[inside] mode = "xdp"`): inner packets
            // received on / sent to the inside interface's AF_XDP socket;
            // each decrypted packet not sent is counted once as
            // inside_no_neighbor or inside_tx_errors, each received one too
            // large to encrypt as inside_too_big.
            ("inside_rx", r(&io.inside_rx)),
            ("inside_too_big", r(&io.inside_too_big)),
            ("inside_tx", r(&io.inside_tx)),
            ("inside_no_neighbor", r(&io.inside_no_neighbor)),
            ("inside_tx_errors", r(&io.inside_tx_errors)),
            ("encap_tx", r(&io.encap_tx)),
            ("next_hop_held", r(&io.next_hop_held)),
            ("handoff", r(&io.handoff)),
            ("handoff_out", r(&io.handoff_out)),
            ("not_esp", r(&io.not_esp)),
            ("tx_frames", r(&self.stats.tx_frames)),
            // Punt/inject between datapath and control (BFD inside SD-WAN
            // tunnels); punt_dropped is part of punted.
            ("punted", r(&self.worker.punted)),
            ("punt_dropped", r(&io.punt_dropped)),
            ("injected", r(&io.injected)),
            ("inject_dropped", r(&io.inject_dropped)),
            // TUN offloads (`[inside] offloads`): super-packets read and
            // the segments cut from them, super-packets written.
            ("tun_gso_rx", r(&io.tun_gso_rx)),
            ("gso_segments", r(&io.gso_segments)),
            ("tun_gro_tx", r(&io.tun_gro_tx)),
            ("tun_gro_segments", r(&io.tun_gro_segments)),
            // Gateway mode: oversized TCP from the inside, cut.
            ("inside_segmented", r(&io.inside_segmented)),
            // Gateway mode: chained frames (a host's super-packets), the
            // two ways one is dropped, and completed partial checksums.
            ("inside_gso_rx", r(&io.inside_gso_rx)),
            ("inside_chain_too_long", r(&io.inside_chain_too_long)),
            (
                "inside_chain_unterminated",
                r(&io.inside_chain_unterminated),
            ),
            ("inside_csum_completed", r(&io.inside_csum_completed)),
        ]
    }

    /// Times the worker waited a whole idle poll with nothing to do (see
    /// `QueueStats::idle_polls`): one more after a moment means the queue
    /// had drained by then.
    pub fn idle_polls(&self) -> u64 {
        self.stats.idle_polls.load(Ordering::Relaxed)
    }

    /// The socket's `SO_BUSY_POLL` microseconds as the kernel has it (0:
    /// busy polling off, or the socket cannot tell).
    pub fn busy_poll_us(&self) -> u32 {
        use std::os::fd::AsRawFd;
        self.xsk_fd
            .as_ref()
            .and_then(|fd| xdpsec_afxdp::busy_poll_us(fd.as_raw_fd()).ok())
            .unwrap_or(0)
    }

    /// Gateway mode: the kernel's ring counters of the inside socket
    /// (`None` without one, or if the kernel cannot tell).
    pub fn inside_kernel_counters(&self) -> Option<XdpStatistics> {
        use std::os::fd::AsFd;
        xdp_statistics(self.inside_xsk_fd.as_ref()?.as_fd()).ok()
    }

    /// The counters, in [`QUEUE_FIELDS`] order.
    pub fn values(&self) -> [u64; N_QUEUE_FIELDS] {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let classes = self.worker.classes.snapshot();
        // Read from the kernel now; zeros if the socket cannot tell.
        let xdp = self
            .xsk_fd
            .as_ref()
            .and_then(|fd| {
                use std::os::fd::AsFd;
                xdp_statistics(fd.as_fd()).ok()
            })
            .unwrap_or_default()
            .values();
        let mut v = [0u64; N_QUEUE_FIELDS];
        v[..3].copy_from_slice(&[
            r(&self.stats.rx_frames),
            r(&self.stats.rx_bytes),
            r(&self.stats.rx_batches),
        ]);
        v[3..3 + FrameClass::COUNT].copy_from_slice(&classes);
        v[3 + FrameClass::COUNT..].copy_from_slice(&xdp);
        v
    }
}
