//! The per-queue datapath handler: AF_XDP batches through the ESP core
//! (`xdpsec-datapath`), decrypted packets to the inside (TUN, sink, or in
//! gateway mode the inside interface's AF_XDP socket), and packets read
//! from the TUN or the inside socket encrypted and sent through AF_XDP TX.
use std::{net::IpAddr, os::fd::RawFd, sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use xdpsec_afxdp::{BATCH_SIZE, BatchHandler, RxBatch, XskQueue, XskTx, add_single_writer};
use xdpsec_datapath::{
    DropReason, SaSnapshot, Verdict, WorkerState, decap_batch, drop_frame, encap,
    sa::SharedSnapshot, worker::WorkerShared,
};

use crate::{
    chain::{Chain, Step},
    frame::{encap_frame, ethernet_frame, ip_packet},
    handoff::{HandoffQueue, HandoffSlot},
    neighbors::{Hold, InsideNeighbors, NextHopMacs},
    offload::{
        self, VNET_HDR_LEN, VnetHdr,
        gro::{Gro, GroOut},
    },
    punt::PuntHub,
    routes::{RouteTable, inner_dst},
    stats::IoStats,
    taps::{Input, Taps, WorkerTap},
    tun,
};

/// Where a worker puts decrypted packets.
pub enum InsideIo {
    /// Write to this TUN queue fd (and read packets to encrypt from it).
    Tun(RawFd),
    /// The same on a TUN queue opened with virtio-net headers and
    /// segmentation offloads: GSO super-packets are read and cut here,
    /// decrypted TCP segments coalesced before they are written.
    TunVnet(TunVnet),
    /// Count and drop.
    Sink,
    /// Gateway mode: send as Ethernet frames on this AF_XDP socket of the
    /// inside interface (and receive packets to encrypt from it).
    Xdp(Box<InsideXdp>),
}

/// A TUN queue with virtio-net headers (`[inside] offloads`).
pub struct TunVnet {
    /// The queue's fd.
    pub fd: RawFd,
    /// Largest inner packet (the TUN's MTU): super-packets are cut to it.
    pub max_inner: usize,
}

/// A worker's AF_XDP socket on the inside interface (gateway mode).
pub struct InsideXdp {
    /// The socket, bound to the worker's queue index on the inside interface.
    pub xsk: XskQueue,
    /// Next-hop MACs on the inside interface.
    pub neighbors: Arc<InsideNeighbors>,
    /// Largest inner packet encrypted: larger ones would exceed the
    /// underlay's MTU once encapsulated (counted as `inside_too_big`).
    pub max_inner: usize,
    /// Largest segment a chained frame (a host's GSO super-packet) is cut
    /// into: `max_inner`, or the inside interface's MTU when smaller (the
    /// hosts' MTU: AF_XDP carries no `gso_size`, and segments larger than
    /// the hosts' own would not fit the far side's hosts).
    pub seg_max: usize,
    /// A frame arriving in several UMEM frames, being put together.
    pub chain: Chain,
}

/// What control publishes to every worker.
#[derive(Clone)]
pub struct Published {
    /// The published SA snapshot.
    pub snap: SharedSnapshot,
    /// Inner routes into tunnels (republished by control when SD-WAN
    /// routes change; loaded once per batch).
    pub routes: Arc<ArcSwap<RouteTable>>,
    /// Next-hop MAC per tunnel index.
    pub next_hops: Arc<NextHopMacs>,
    /// The underlay interface's MAC.
    pub local_mac: [u8; 6],
    /// The daemon's clock origin (`now` for the core is time since it).
    pub epoch: Instant,
}

/// What a worker needs, shared with control.
pub struct WorkerCtx {
    /// What control publishes.
    pub published: Published,
    /// Every worker's handoff queue, indexed by worker id.
    pub handoff: Arc<Vec<Arc<HandoffQueue>>>,
    /// Punt rings to control (and control's inject path).
    pub punt: Arc<PuntHub>,
    /// Packet trace and drop capture (checked once per batch).
    pub taps: Arc<Taps>,
}

/// The datapath for one queue.
pub struct DatapathHandler {
    ws: WorkerState,
    shared: Arc<WorkerShared>,
    handoff: Arc<Vec<Arc<HandoffQueue>>>,
    /// Frames taken from this worker's handoff queue (capacity reused).
    handoff_slots: Vec<HandoffSlot>,
    /// Inner packets taken from this worker's handoff queue (capacity reused).
    handoff_out_slots: Vec<HandoffSlot>,
    /// Packets control injected, taken from the handoff queue (capacity reused).
    inject_slots: Vec<HandoffSlot>,
    ctx: WorkerCtx,
    inside: InsideIo,
    verdicts: Vec<Verdict>,
    io: Arc<IoStats>,
    /// One inner packet read from the TUN (max IP packet, after a
    /// virtio-net header with offloads).
    tun_buf: Box<[u8]>,
    /// With offloads: one segment being cut from a super-packet.
    seg_buf: Box<[u8]>,
    /// With offloads: the decrypted TCP segments being coalesced (open
    /// groups are written when the receive ring is empty).
    gro: Gro,
    /// `XDPSEC_BENCH_COUNT_ONLY=1`: receive and count, nothing else (the
    /// raw AF_XDP ceiling `cargo xtask bench --e2e` compares against).
    count_only: bool,
    /// Test builds only (`--features test-hooks`): `XDPSEC_TEST_LEAK_BYTES=N`
    /// leaks N bytes (written, so resident) per frame received on AF_XDP, the leak the
    /// soak's RSS check must catch. Production builds never read the variable.
    #[cfg(feature = "test-hooks")]
    leak_bytes: usize,
    /// This worker's scratch for the trace and the capture.
    tap: WorkerTap,
}

impl DatapathHandler {
    /// A handler for worker `ws`.
    pub fn new(ws: WorkerState, ctx: WorkerCtx, inside: InsideIo, io: Arc<IoStats>) -> Self {
        DatapathHandler {
            shared: ws.shared(),
            handoff: Arc::clone(&ctx.handoff),
            handoff_slots: Vec::with_capacity(BATCH_SIZE),
            handoff_out_slots: Vec::with_capacity(BATCH_SIZE),
            inject_slots: Vec::with_capacity(BATCH_SIZE),
            ws,
            ctx,
            inside,
            // Allocated once; reused for every batch.
            verdicts: vec![Verdict::Drop(DropReason::PktBufferUnavailable); BATCH_SIZE],
            io,
            tun_buf: vec![0u8; 65536 + VNET_HDR_LEN].into_boxed_slice(),
            seg_buf: vec![0u8; 65536].into_boxed_slice(),
            gro: Gro::default(),
            count_only: std::env::var_os("XDPSEC_BENCH_COUNT_ONLY").is_some_and(|v| v == "1"),
            #[cfg(feature = "test-hooks")]
            leak_bytes: test_leak_bytes(),
            tap: WorkerTap::default(),
        }
    }
}

impl DatapathHandler {
    /// Encrypt and send the inner packets in `slots` on their tunnels
    /// (counted in `encap_tx`, or `next_hop_held` for those waiting for
    /// their next hop's MAC); returns how many were queued on `tx`.
    fn encap_slots(&mut self, slots: &[HandoffSlot], tx: &mut XskTx) -> u64 {
        if slots.is_empty() {
            return 0;
        }
        let snap = self.ctx.published.snap.load();
        let (mut sent, mut held) = (0, 0);
        for s in slots {
            match encap_and_send(
                &mut self.ws,
                &self.shared,
                &self.ctx,
                &snap,
                s.tunnel(),
                s.bytes(),
                tx,
            ) {
                Sent::Xdp => sent += 1,
                Sent::Held => held += 1,
                Sent::Dropped => {}
            }
        }
        add_single_writer(&self.io.encap_tx, sent);
        add_single_writer(&self.io.next_hop_held, held);
        sent
    }

    /// Decap `frames` and act on the verdicts: deliver to the inside, hand
    /// frames of other workers' SAs to them, packets for the node itself to
    /// control. Every frame not delivered was counted by the core, or is
    /// counted here through the core's `drop_frame` (110 when a handoff
    /// queue is full), or as `punt_dropped` (the punt ring is full).
    fn decap_and_deliver<F: AsMut<[u8]>>(&mut self, frames: &mut [F], input: Input) {
        let n = frames.len().min(self.verdicts.len());
        let now = self.ctx.published.epoch.elapsed();
        // One snapshot for the whole batch: every frame sees the same SA set.
        let snap = self.ctx.published.snap.load();
        // The one check per batch the trace and the capture cost when off.
        let armed = self.ctx.taps.armed();
        if armed {
            self.tap.before(&self.ctx.taps, &mut frames[..n]);
        }
        decap_batch(
            &mut self.ws,
            &snap,
            &mut frames[..n],
            &mut self.verdicts[..n],
            now,
        );
        let (mut tun_ok, mut tun_err, mut sink, mut handed, mut not_esp) = (0, 0, 0, 0, 0);
        let (mut punted, mut punt_dropped) = (0, 0);
        let (mut xdp_ok, mut xdp_err, mut no_neighbor) = (0, 0, 0);
        // Gateway mode: the inside next hops, loaded once per batch.
        let view = match &self.inside {
            InsideIo::Xdp(x) => Some(x.neighbors.load()),
            _ => None,
        };
        let mut last_request = None;
        let mut woken = 0u64; // bit per owner worker to notify once
        let mut vnet = VnetWrites::new(&self.inside);
        for (i, frame) in frames[..n].iter_mut().enumerate() {
            match &self.verdicts[i] {
                Verdict::Deliver { inner, .. } => match &mut self.inside {
                    // Coalesced: written now, or when its group closes.
                    InsideIo::TunVnet(_) => {
                        let pkt = &frame.as_mut()[inner.clone()];
                        self.gro.push(pkt, i as u32, &mut |o| vnet.write(o));
                    }
                    InsideIo::Tun(fd) => {
                        let fd = *fd;
                        if tun::write_packet(fd, &frame.as_mut()[inner.clone()]) {
                            tun_ok += 1;
                        } else {
                            tun_err += 1;
                        }
                    }
                    InsideIo::Sink => sink += 1,
                    InsideIo::Xdp(x) => {
                        let pkt = &frame.as_mut()[inner.clone()];
                        // The core delivers only IPv4/IPv6 (else 89), so
                        // a destination is always there.
                        let hop = match (&view, inner_dst(pkt)) {
                            (Some(v), Some(dst)) => v.resolve(dst),
                            _ => (IpAddr::from([0u8; 4]), None),
                        };
                        match hop {
                            (hop, None) if hop.is_unspecified() => no_neighbor += 1,
                            (_, Some(mac)) => {
                                let src = x.neighbors.mac;
                                if x.xsk
                                    .tx()
                                    .send_with(|buf| ethernet_frame(buf, mac, src, pkt))
                                {
                                    xdp_ok += 1;
                                } else {
                                    xdp_err += 1;
                                }
                            }
                            (hop, None) => {
                                // Ask once per batch and hop, never waiting.
                                if last_request != Some(hop) {
                                    x.neighbors.request(hop);
                                    last_request = Some(hop);
                                }
                                no_neighbor += 1;
                            }
                        }
                    }
                },
                Verdict::Drop(_) => {}
                Verdict::Handoff(owner) => {
                    let owner = *owner as usize;
                    match self.handoff.get(owner) {
                        Some(q) if q.push(frame.as_mut()) => {
                            handed += 1;
                            woken |= 1 << (owner % 64);
                        }
                        // The frame's verdict becomes the drop (the trace
                        // and the capture see it).
                        _ => {
                            self.verdicts[i] =
                                drop_frame(&self.shared, DropReason::PktBufferUnavailable, None);
                        }
                    }
                }
                Verdict::Pass(_) => not_esp += 1,
                // Counted by the core (dummy_packets): discarded silently.
                Verdict::Dummy => {}
                // For the node itself (BFD): to control, never the inside.
                // Counted by the core as punted; a full ring counts here.
                Verdict::Punt { tunnel, inner } => {
                    if self
                        .ctx
                        .punt
                        .punt(self.ws.id(), *tunnel, &frame.as_mut()[inner.clone()])
                    {
                        punted += 1;
                    } else {
                        punt_dropped += 1;
                    }
                }
            }
        }
        if vnet.fd >= 0 {
            self.gro.end_batch(&mut |o| vnet.write(o));
            vnet.count(&self.io);
        }
        if armed {
            self.tap.after(
                &self.ctx.taps,
                self.ws.id(),
                input,
                &snap,
                &mut frames[..n],
                &self.verdicts[..n],
            );
        }
        if punted > 0 {
            self.ctx.punt.notify();
        }
        add_single_writer(&self.io.punt_dropped, punt_dropped);
        for (w, q) in self.handoff.iter().enumerate() {
            if woken & (1 << (w % 64)) != 0 {
                q.notify();
            }
        }
        drop(view);
        if let InsideIo::Xdp(x) = &mut self.inside
            && xdp_ok > 0
        {
            // One kick per batch (copy mode sends only on a sendto).
            x.xsk.tx().flush();
        }
        add_single_writer(&self.io.inside_tx, xdp_ok);
        add_single_writer(&self.io.inside_tx_errors, xdp_err);
        add_single_writer(&self.io.inside_no_neighbor, no_neighbor);
        add_single_writer(&self.io.tun_tx, tun_ok);
        add_single_writer(&self.io.tun_tx_errors, tun_err);
        add_single_writer(&self.io.sink, sink);
        add_single_writer(&self.io.handoff, handed);
        add_single_writer(&self.io.not_esp, not_esp);
    }
}

impl BatchHandler for DatapathHandler {
    // The core classifies each frame (esp_v4, ...) in its own parse.
    fn handle_batch(&mut self, queue: u32, batch: &mut RxBatch<'_, '_>, _tx: &mut XskTx) {
        #[cfg(feature = "test-hooks")]
        if self.leak_bytes > 0 {
            for _ in 0..batch.len() {
                // black_box: the optimiser must not elide the allocation.
                std::hint::black_box(Box::leak(vec![0x5a_u8; self.leak_bytes].into_boxed_slice()));
            }
        }
        if self.count_only {
            // The benchmark's ceiling: frames received and only counted
            // (rx_frames), no parse, no crypto.
            return;
        }
        self.decap_and_deliver(batch.frames_mut(), Input::Xdp(queue));
    }

    fn wake_fd(&self) -> Option<RawFd> {
        self.handoff.get(self.ws.id() as usize).map(|q| q.fd())
    }

    fn poll_handoff(&mut self, _queue: u32, tx: &mut XskTx) {
        let Some(q) = self.handoff.get(self.ws.id() as usize).cloned() else {
            return;
        };
        if q.is_empty() {
            return;
        }
        let mut slots = std::mem::take(&mut self.handoff_slots);
        q.take(&mut slots, BATCH_SIZE);
        self.decap_and_deliver(&mut slots, Input::Handoff);
        q.recycle(&mut slots);
        self.handoff_slots = slots;

        // Inner packets other workers read from the TUN for tunnels whose
        // outbound SA this worker owns: encrypted here, in arrival order.
        let mut slots = std::mem::take(&mut self.handoff_out_slots);
        q.take_outbound(&mut slots, BATCH_SIZE);
        self.encap_slots(&slots, tx);
        q.recycle_outbound(&mut slots);
        self.handoff_out_slots = slots;

        // Packets control injects (BFD hellos): the same encapsulation as
        // a packet read from the TUN, on the tunnel control chose.
        let mut slots = std::mem::take(&mut self.inject_slots);
        q.take_inject(&mut slots, BATCH_SIZE);
        let sent = self.encap_slots(&slots, tx);
        add_single_writer(&self.io.injected, sent);
        q.recycle_inject(&mut slots);
        self.inject_slots = slots;
        // More than a batch waiting: come back without waiting for a new
        // wake-up (the read in `take` cleared it).
        if !q.is_empty() {
            q.notify();
        }
    }

    fn on_rx_empty(&mut self, _queue: u32) {
        // With offloads: the open groups go (as NAPI flushes GRO at the
        // end of a poll), whatever their age.
        if !self.gro.is_empty() {
            let mut vnet = VnetWrites::new(&self.inside);
            self.gro.flush(&mut |o| vnet.write(o));
            vnet.count(&self.io);
        }
    }

    fn on_idle(&mut self, _queue: u32) {
        // Gateway mode: frames a kick left on the inside tx ring go now.
        if let InsideIo::Xdp(x) = &mut self.inside {
            x.xsk.tx().kick_if_in_flight();
        }
    }

    fn extra_fd(&self) -> Option<RawFd> {
        match &self.inside {
            InsideIo::Tun(fd) => Some(*fd),
            InsideIo::TunVnet(t) => Some(t.fd),
            InsideIo::Sink => None,
            InsideIo::Xdp(x) => Some(x.xsk.raw_fd()),
        }
    }

    fn on_extra_readable(&mut self, _queue: u32, tx: &mut XskTx) {
        let fd = match &self.inside {
            InsideIo::Tun(fd) => *fd,
            InsideIo::TunVnet(_) => return self.tun_vnet_rx(tx),
            InsideIo::Xdp(_) => return self.inside_xdp_rx(tx),
            InsideIo::Sink => return,
        };
        let snap = self.ctx.published.snap.load();
        let routes = self.ctx.published.routes.load();
        let mut read = 0;
        let mut tally = Tally::default();
        // A bounded batch per wake-up, so received ESP is served in between.
        for _ in 0..BATCH_SIZE {
            let Some(len) = tun::read_packet(fd, &mut self.tun_buf) else {
                break;
            };
            read += 1;
            let inner = &self.tun_buf[..len];
            tally.add(route_and_encap(
                &mut self.ws,
                &self.shared,
                &self.ctx,
                &self.handoff,
                &snap,
                &routes,
                inner,
                tx,
            ));
        }
        add_single_writer(&self.io.tun_rx, read);
        tally.finish(&self.handoff, &self.io);
    }
}

impl DatapathHandler {
    /// With offloads: a bounded batch of reads from the TUN, each a
    /// virtio-net header and a packet; super-packets are cut into
    /// segments of at most the TUN's MTU, each routed and sealed as one
    /// packet read from a TUN (one ESP packet each, sequence numbers and
    /// counters as for any packet), on this worker's TX (flushed once
    /// after the batch) or handed to the SA's owner.
    fn tun_vnet_rx(&mut self, tx: &mut XskTx) {
        let InsideIo::TunVnet(t) = &self.inside else {
            return;
        };
        let (fd, max_inner) = (t.fd, t.max_inner);
        let snap = self.ctx.published.snap.load();
        let routes = self.ctx.published.routes.load();
        let (ws, shared, ctx, handoff) = (&mut self.ws, &self.shared, &self.ctx, &self.handoff);
        let (mut read, mut supers, mut segments) = (0u64, 0u64, 0u64);
        let mut tally = Tally::default();
        // Bounded in reads and in segments (a super-packet makes up to 64
        // KB / MSS of them), so received ESP is served in between and the
        // TX frames last.
        while read < BATCH_SIZE as u64 && segments < 4 * BATCH_SIZE as u64 {
            let Some(len) = tun::read_packet(fd, &mut self.tun_buf) else {
                break;
            };
            read += 1;
            let (h, pkt) = self.tun_buf[..len].split_at_mut(len.min(VNET_HDR_LEN));
            let Some(hdr) = VnetHdr::parse(h) else {
                drop_frame(shared, DropReason::OutUnexpException, None);
                continue;
            };
            if hdr.gso() != offload::GSO_NONE && hdr.gso_size > 0 {
                // The segments leave together: one kick for the burst.
                let payload = pkt.len().saturating_sub(usize::from(hdr.hdr_len));
                tx.reserve(payload.div_ceil(usize::from(hdr.gso_size)));
            }
            let res = offload::prepare(&hdr, pkt, max_inner, &mut self.seg_buf, |seg| {
                tally.add(route_and_encap(
                    ws, shared, ctx, handoff, &snap, &routes, seg, tx,
                ));
            });
            match res {
                Ok((n, true)) => {
                    supers += 1;
                    segments += u64::from(n);
                }
                Ok((_, false)) => {}
                // A super-packet the kernel should not have made: dropped,
                // counted once.
                Err(_) => {
                    drop_frame(shared, DropReason::OutUnexpException, None);
                }
            }
        }
        add_single_writer(&self.io.tun_rx, read);
        add_single_writer(&self.io.tun_gso_rx, supers);
        add_single_writer(&self.io.gso_segments, segments);
        tally.finish(&self.handoff, &self.io);
    }

    /// Gateway mode: one batch of frames from the inside interface's
    /// AF_XDP socket (the XDP program steered only destinations a tunnel
    /// route covers), encrypted onto the underlay's `tx` or handed to the
    /// worker owning their tunnel's outbound SA, as packets read from a
    /// TUN. A frame in several UMEM frames (`XDP_USE_SG`: a host's GSO
    /// super-packet) is put together first and cut into segments.
    fn inside_xdp_rx(&mut self, tx: &mut XskTx) {
        let InsideIo::Xdp(x) = &mut self.inside else {
            return;
        };
        let snap = self.ctx.published.snap.load();
        let routes = self.ctx.published.routes.load();
        let mut out = InsideOut {
            ws: &mut self.ws,
            shared: &self.shared,
            ctx: &self.ctx,
            handoff: &self.handoff,
            snap: &snap,
            routes: &routes,
            seg_buf: &mut self.seg_buf,
            max_inner: x.max_inner,
            seg_max: x.seg_max,
            n: InsideCounts::default(),
        };
        let chain = &mut x.chain;
        let read = x.xsk.poll_batch(|batch, _inside_tx| {
            for f in batch.frames_mut() {
                let more = f.continues();
                if !more && !chain.is_open() {
                    // One frame, the common case: no copy.
                    out.frame(f.as_mut(), tx, false);
                    continue;
                }
                match chain.push(f.as_mut(), more) {
                    Step::More => {}
                    Step::Whole(frame) => {
                        out.n.supers += 1;
                        out.frame(frame, tx, true);
                    }
                    Step::TooLong => out.n.too_long += 1,
                }
            }
        });
        // Nothing received and the ring was looked at: it is empty, so an
        // open chain's end will not come (the kernel publishes a packet's
        // descriptors together).
        if read == 0 && !x.xsk.refill_pending() && chain.abandon() {
            out.n.unterminated += 1;
        }
        let n = out.n;
        let io = &self.io;
        add_single_writer(&io.inside_rx, read as u64);
        add_single_writer(&io.inside_too_big, n.too_big);
        add_single_writer(&io.inside_segmented, n.cut);
        add_single_writer(&io.gso_segments, n.segments);
        add_single_writer(&io.inside_gso_rx, n.supers);
        add_single_writer(&io.inside_chain_too_long, n.too_long);
        add_single_writer(&io.inside_chain_unterminated, n.unterminated);
        add_single_writer(&io.inside_csum_completed, n.csum);
        n.tally.finish(&self.handoff, &self.io);
    }
}

/// Gateway mode: what [`DatapathHandler::inside_xdp_rx`] needs to send
/// one frame from the inside on, and what it counts.
struct InsideOut<'a> {
    ws: &'a mut WorkerState,
    shared: &'a WorkerShared,
    ctx: &'a WorkerCtx,
    handoff: &'a [Arc<HandoffQueue>],
    snap: &'a SaSnapshot,
    routes: &'a RouteTable,
    seg_buf: &'a mut [u8],
    max_inner: usize,
    seg_max: usize,
    n: InsideCounts,
}

/// Gateway mode: the counts of one inside batch.
#[derive(Default, Clone, Copy)]
struct InsideCounts {
    tally: Tally,
    too_big: u64,
    cut: u64,
    segments: u64,
    supers: u64,
    too_long: u64,
    unterminated: u64,
    csum: u64,
}

impl InsideOut<'_> {
    /// One Ethernet frame from the inside (`chained`: put together from
    /// several UMEM frames): its inner packet completed (a partial
    /// checksum), cut into segments when too large for the tunnel (TCP
    /// only; a chained frame at `seg_max`), routed and encrypted.
    fn frame(&mut self, frame: &mut [u8], tx: &mut XskTx, chained: bool) {
        // The inner packet after the Ethernet header, without the padding
        // of a short frame; a runt is empty (the core counts 89).
        let inner_len = frame.get(14..).map_or(0, |b| ip_packet(b).len());
        let inner: &mut [u8] = match frame.get_mut(14..14 + inner_len) {
            Some(b) => b,
            None => &mut [],
        };
        let cut_at = if chained {
            self.seg_max.min(self.max_inner)
        } else {
            self.max_inner
        };
        if inner.len() > cut_at {
            // A host's super-packet, or TCP from a host whose MTU is
            // larger than the tunnel's: cut into segments that fit, as
            // TSO would have (every checksum computed anew). Anything
            // else does not fit.
            let (ws, shared, ctx, handoff) = (&mut *self.ws, self.shared, self.ctx, self.handoff);
            let (snap, routes, tally) = (self.snap, self.routes, &mut self.n.tally);
            let done = offload::tso_header(inner, cut_at).and_then(|h| {
                offload::segment(&h, inner, cut_at, self.seg_buf, |seg| {
                    tally.add(route_and_encap(
                        ws, shared, ctx, handoff, snap, routes, seg, tx,
                    ));
                })
                .ok()
            });
            match done {
                Some(s) => {
                    if !chained {
                        self.n.cut += 1;
                    }
                    self.n.segments += u64::from(s.segments);
                }
                None => self.n.too_big += 1,
            }
            return;
        }
        if offload::complete_partial(inner) {
            self.n.csum += 1;
        }
        self.n.tally.add(route_and_encap(
            self.ws,
            self.shared,
            self.ctx,
            self.handoff,
            self.snap,
            self.routes,
            inner,
            tx,
        ));
    }
}

/// With offloads: the writes of coalesced and single packets to the TUN
/// and their counts (a super-packet counts once in `tun_gro_tx` and for
/// each of its segments in `tun_tx` or `tun_tx_errors`).
struct VnetWrites {
    /// The TUN queue; -1 when the inside is not a TUN with offloads.
    fd: RawFd,
    ok: u64,
    err: u64,
    supers: u64,
    coalesced: u64,
}

impl VnetWrites {
    fn new(inside: &InsideIo) -> Self {
        VnetWrites {
            fd: match inside {
                InsideIo::TunVnet(t) => t.fd,
                _ => -1,
            },
            ok: 0,
            err: 0,
            supers: 0,
            coalesced: 0,
        }
    }

    /// One packet, after its virtio-net header, in one system call.
    fn write(&mut self, o: GroOut<'_>) {
        let n = o.tags.len() as u64;
        if tun::write_vnet(self.fd, &o.hdr.emit(), o.pkt) {
            self.ok += n;
            if o.hdr.gso() != offload::GSO_NONE {
                self.supers += 1;
                self.coalesced += n;
            }
        } else {
            self.err += n;
        }
    }

    fn count(&self, io: &IoStats) {
        add_single_writer(&io.tun_tx, self.ok);
        add_single_writer(&io.tun_tx_errors, self.err);
        add_single_writer(&io.tun_gro_tx, self.supers);
        add_single_writer(&io.tun_gro_segments, self.coalesced);
    }
}

/// What became of a batch of inner packets to encrypt.
#[derive(Default, Clone, Copy)]
struct Tally {
    sent: u64,
    /// Held for the next-hop thread (no next-hop MAC yet).
    held: u64,
    handed: u64,
    /// A bit per owner worker to notify once.
    woken: u64,
}

impl Tally {
    fn add(&mut self, o: Outbound) {
        match o {
            Outbound::Sent(Sent::Xdp) => self.sent += 1,
            Outbound::Sent(Sent::Held) => self.held += 1,
            Outbound::Sent(Sent::Dropped) => {}
            Outbound::Handed(owner) => {
                self.handed += 1;
                self.woken |= 1 << (owner % 64);
            }
            Outbound::Dropped => {}
        }
    }

    /// Wake the workers packets were handed to (once each) and count.
    fn finish(self, handoff: &[Arc<HandoffQueue>], io: &IoStats) {
        for (w, q) in handoff.iter().enumerate() {
            if self.woken & (1 << (w % 64)) != 0 {
                q.notify();
            }
        }
        add_single_writer(&io.encap_tx, self.sent);
        add_single_writer(&io.next_hop_held, self.held);
        add_single_writer(&io.handoff_out, self.handed);
    }
}

/// What became of an inner packet to encrypt.
enum Outbound {
    /// Encrypted here (see [`Sent`]).
    Sent(Sent),
    /// Handed to this worker, which owns its tunnel's outbound SA.
    Handed(u16),
    /// Dropped and counted once (by the core, or 110 here).
    Dropped,
}

/// What became of a packet this worker encrypted (or tried to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Queued on the underlay's AF_XDP TX.
    Xdp,
    /// Held for the next-hop thread: its next hop had no MAC yet.
    Held,
    /// Dropped and counted once (by the core, or 55/110 here).
    Dropped,
}

/// Route the inner packet `inner` (read from the TUN or the inside
/// interface) into its tunnel and encrypt it onto `tx`, or hand it to the
/// worker owning that tunnel's outbound SA.
#[allow(clippy::too_many_arguments)]
fn route_and_encap(
    ws: &mut WorkerState,
    shared: &WorkerShared,
    ctx: &WorkerCtx,
    handoff: &[Arc<HandoffQueue>],
    snap: &SaSnapshot,
    routes: &RouteTable,
    inner: &[u8],
    tx: &mut XskTx,
) -> Outbound {
    // Not IP, or a destination no tunnel claims: there is no SA, and the
    // core counts it (89, 111/112).
    let Some(tunnel) = routes.lookup_packet(inner) else {
        let _ = encap(ws, snap, u32::MAX, inner, &mut []);
        return Outbound::Dropped;
    };
    // One sequencing owner per outbound SA: a packet for a tunnel another
    // worker owns goes to that worker (bounded queue; full counts 110
    // once), so its sequence counter has one writer and packets leave in
    // order. Without a usable SA any worker lets the core count the drop.
    match snap.outbound_owner(tunnel) {
        Some(owner) if owner != ws.id() => match handoff.get(owner as usize) {
            Some(q) if q.push_outbound(tunnel, inner) => Outbound::Handed(owner),
            _ => {
                drop_frame(shared, DropReason::PktBufferUnavailable, None);
                Outbound::Dropped
            }
        },
        _ => Outbound::Sent(encap_and_send(ws, shared, ctx, snap, tunnel, inner, tx)),
    }
}

/// Room for the encapsulation around an inner packet in a held frame:
/// Ethernet, outer IPv6, UDP, ESP header and IV, padding, trailer, ICV.
const HELD_OVERHEAD: usize = 512;

/// Encrypt `inner` for `tunnel` and queue the frame on `tx`, or, when the
/// tunnel's next hop has no MAC yet, hold the frame for the next-hop thread
/// (which sends it once the kernel resolved the MAC, or counts 55). When
/// neither, exactly one drop was counted (by the core, or here: 55 no room
/// to hold a frame without a next-hop MAC, 110 no free TX frame).
fn encap_and_send(
    ws: &mut WorkerState,
    shared: &WorkerShared,
    ctx: &WorkerCtx,
    snap: &SaSnapshot,
    tunnel: u32,
    inner: &[u8],
    tx: &mut XskTx,
) -> Sent {
    let next_hops = &ctx.published.next_hops;
    let Some(dst_mac) = next_hops.get(tunnel as usize).and_then(|m| m.get()) else {
        return hold_for_next_hop(ws, shared, ctx, snap, tunnel, inner);
    };
    let mut built = false;
    let ok = tx.send_with(|buf| {
        built = true;
        encap_frame(
            ws,
            snap,
            tunnel,
            inner,
            [dst_mac, ctx.published.local_mac],
            buf,
        )
    });
    if !ok && !built {
        // No free AF_XDP frame to transmit from.
        drop_frame(shared, DropReason::PktBufferUnavailable, None);
    }
    if ok { Sent::Xdp } else { Sent::Dropped }
}

/// `tunnel`'s next hop has no MAC yet: encrypt `inner` now, in sequence,
/// and hold the frame while control resolves the MAC (it writes the
/// destination MAC then and sends the frame, or counts 55). No room to
/// hold it: 55 here.
fn hold_for_next_hop(
    ws: &mut WorkerState,
    shared: &WorkerShared,
    ctx: &WorkerCtx,
    snap: &SaSnapshot,
    tunnel: u32,
    inner: &[u8],
) -> Sent {
    let src = ctx.published.local_mac;
    let len = inner.len() + HELD_OVERHEAD;
    match ctx.published.next_hops.hold(tunnel, len, |buf| {
        encap_frame(ws, snap, tunnel, inner, [[0; 6], src], buf)
    }) {
        Hold::Held => Sent::Held,
        Hold::Refused => Sent::Dropped,
        Hold::Full => {
            drop_frame(shared, DropReason::OutSettingWrongL2Hdr, None);
            Sent::Dropped
        }
    }
}

#[cfg(test)]
mod tests;

/// `XDPSEC_TEST_LEAK_BYTES` (test builds only), announced in the log.
#[cfg(feature = "test-hooks")]
fn test_leak_bytes() -> usize {
    let n = std::env::var("XDPSEC_TEST_LEAK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if n > 0 {
        tracing::warn!("test hook: leaking {n} bytes per received frame (XDPSEC_TEST_LEAK_BYTES)");
    }
    n
}
