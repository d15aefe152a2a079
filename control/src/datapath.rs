//! The per-queue datapath handler: AF_XDP batches through the ESP core
//! (`xdpsec-datapath`), decrypted packets to the inside (TUN, sink, or in
//! gateway mode the inside interface's AF_XDP socket), and packets read
//! from the TUN or the inside socket encrypted and sent through AF_XDP TX.
use std::{
    collections::HashMap,
    net::IpAddr,
    os::fd::RawFd,
    sync::{Arc, atomic::AtomicU64},
    time::Instant,
};

use arc_swap::ArcSwap;
use xdpsec_afxdp::{BATCH_SIZE, BatchHandler, RxBatch, XskQueue, XskTx, add_single_writer};
use xdpsec_datapath::{
    DropReason, SaSnapshot, Verdict, WorkerState, decap_batch, encap, sa::SharedSnapshot,
    worker::WorkerShared,
};

use crate::{
    config::Cidr,
    handoff::{HandoffQueue, HandoffSlot},
    platform::neighbor::{NextHops, inside::InsideNeighbors},
    punt::PuntHub,
    taps::{Input, Taps, WorkerTap},
};

/// Where a worker puts decrypted packets.
pub enum InsideIo {
    /// Write to this TUN queue fd (and read packets to encrypt from it).
    Tun(RawFd),
    /// Count and drop.
    Sink,
    /// Gateway mode: send as Ethernet frames on this AF_XDP socket of the
    /// inside interface (and receive packets to encrypt from it).
    Xdp(Box<InsideXdp>),
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
}

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
    /// Gateway mode: decrypted packets queued on the inside interface's
    /// AF_XDP TX as Ethernet frames.
    pub inside_tx: AtomicU64,
    /// Gateway mode: decrypted packets dropped because their next hop on
    /// the inside interface has no MAC yet (its resolution was requested).
    pub inside_no_neighbor: AtomicU64,
    /// Gateway mode: decrypted packets dropped because the inside socket
    /// had no free TX frame (or its ring no room).
    pub inside_tx_errors: AtomicU64,
    /// Gateway mode: frames received on the inside interface's AF_XDP
    /// socket (inner packets to encrypt).
    pub inside_rx: AtomicU64,
    /// Gateway mode: inner packets from the inside interface dropped as
    /// larger than `InsideXdp::max_inner` (they would not fit the
    /// underlay's MTU after ESP; nothing fragments them).
    pub inside_too_big: AtomicU64,
    /// Encrypted frames handed to AF_XDP TX.
    pub encap_tx: AtomicU64,
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

/// Inner destination prefixes routed into tunnels. Longest-prefix match
/// with one hash table per prefix length in use, longest first: a lookup
/// costs one hash probe per distinct length (typically one or two), not
/// one comparison per tunnel, so thousands of tunnels cost no more per
/// packet than one. Built once at start-up (no allocation per packet).
///
/// A prefix may route into several tunnels at equal cost (SD-WAN: one per
/// BFD-up path, across colors): each flow (addresses, protocol, ports)
/// sticks to one of them, so its packets stay in order.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// (prefix length, masked address -> target), IPv4 then IPv6 keys as
    /// u128 (IPv4 in the low 32 bits), longest length first per family.
    /// A target is a tunnel, or with [`ECMP`] set an index into `groups`.
    v4: Vec<(u8, HashMap<u128, u32>)>,
    v6: Vec<(u8, HashMap<u128, u32>)>,
    /// Equal-cost tunnel sets.
    groups: Vec<Box<[u32]>>,
}

/// A route target with this bit set is an equal-cost group.
const ECMP: u32 = 1 << 31;

/// `addr` with the bits beyond `len` cleared, as a u128 (IPv4 in the low 32).
fn masked(addr: IpAddr, len: u8) -> u128 {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            u128::from(u32::from(a) & m)
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len.min(128))
            };
            u128::from(a) & m
        }
    }
}

impl RouteTable {
    /// Build from `(prefix, tunnel index)` pairs (the first tunnel given a
    /// prefix keeps it).
    pub fn new(routes: Vec<(Cidr, u32)>) -> RouteTable {
        RouteTable::with_ecmp(routes.into_iter().map(|(c, t)| (c, vec![t])).collect())
    }

    /// Build from `(prefix, tunnels)` pairs: several tunnels share the
    /// prefix's flows at equal cost (the first pair given a prefix keeps it;
    /// an empty list routes nothing).
    pub fn with_ecmp(routes: Vec<(Cidr, Vec<u32>)>) -> RouteTable {
        let mut t = RouteTable::default();
        for (c, tunnels) in routes {
            let tunnel = match tunnels.as_slice() {
                [] => continue,
                [one] => *one,
                many => {
                    t.groups.push(many.into());
                    ECMP | (t.groups.len() - 1) as u32
                }
            };
            let list = if c.addr.is_ipv4() {
                &mut t.v4
            } else {
                &mut t.v6
            };
            let pos = match list.iter().position(|(l, _)| *l == c.len) {
                Some(p) => p,
                None => {
                    list.push((c.len, HashMap::new()));
                    list.len() - 1
                }
            };
            list[pos].1.entry(masked(c.addr, c.len)).or_insert(tunnel);
        }
        t.v4.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
        t.v6.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
        t
    }

    /// The route target for inner destination `dst` (longest prefix wins).
    fn target(&self, dst: IpAddr) -> Option<u32> {
        let list = if dst.is_ipv4() { &self.v4 } else { &self.v6 };
        list.iter()
            .find_map(|(len, m)| m.get(&masked(dst, *len)).copied())
    }

    /// The tunnel for inner destination `dst` (longest prefix wins; of an
    /// equal-cost set, the first).
    #[cfg(test)]
    pub fn lookup(&self, dst: IpAddr) -> Option<u32> {
        let t = self.target(dst)?;
        if t & ECMP == 0 {
            return Some(t);
        }
        self.groups.get((t & !ECMP) as usize)?.first().copied()
    }

    /// The tunnel for the inner IP packet `pkt`: by its destination, and
    /// within an equal-cost set by a hash of its flow (addresses, protocol,
    /// ports), so a flow always takes the same tunnel.
    pub fn lookup_packet(&self, pkt: &[u8]) -> Option<u32> {
        let t = self.target(inner_dst(pkt)?)?;
        if t & ECMP == 0 {
            return Some(t);
        }
        let g = self.groups.get((t & !ECMP) as usize)?;
        let h = flow_hash(pkt);
        g.get((h % g.len() as u64) as usize).copied()
    }
}

/// A hash of an inner packet's flow: source and destination addresses,
/// protocol, and the first four bytes after the IPv4 header (ports for TCP,
/// UDP, SCTP; type and code for ICMP) or after the fixed IPv6 header.
fn flow_hash(pkt: &[u8]) -> u64 {
    let (addrs, proto, l4) = match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => {
            let ihl = usize::from(pkt[0] & 0xf) * 4;
            (&pkt[12..20], pkt[9], pkt.get(ihl..ihl + 4))
        }
        Some(6) if pkt.len() >= 40 => (&pkt[8..40], pkt[6], pkt.get(40..44)),
        _ => return 0,
    };
    // FNV-1a: cheap, and good enough to spread flows over a few tunnels.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in addrs
        .iter()
        .chain(std::iter::once(&proto))
        .chain(l4.unwrap_or(&[]))
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Inner destination address of an IP packet.
fn inner_dst(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&pkt[16..20]).ok()?)),
        6 if pkt.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&pkt[24..40]).ok()?)),
        _ => None,
    }
}

/// What a worker needs, shared with control.
pub struct WorkerCtx {
    /// The published SA snapshot.
    pub snap: SharedSnapshot,
    /// Inner routes into tunnels (republished by control when SD-WAN
    /// routes change; loaded once per batch).
    pub routes: Arc<ArcSwap<RouteTable>>,
    /// Next-hop MAC per tunnel index.
    pub next_hops: Arc<NextHops>,
    /// This interface's MAC.
    pub local_mac: [u8; 6],
    /// The daemon's clock origin (`now` for the core is time since it).
    pub epoch: Instant,
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
    /// One inner packet read from the TUN (max IP packet).
    tun_buf: Box<[u8]>,
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
    /// Drops the handler counted itself in the batch (110 when a handoff
    /// queue is full), for the trace and the capture; kept only when armed.
    handler_drops: Vec<Option<DropReason>>,
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
            tun_buf: vec![0u8; 65536].into_boxed_slice(),
            count_only: std::env::var_os("XDPSEC_BENCH_COUNT_ONLY").is_some_and(|v| v == "1"),
            #[cfg(feature = "test-hooks")]
            leak_bytes: test_leak_bytes(),
            tap: WorkerTap::default(),
            handler_drops: vec![None; BATCH_SIZE],
        }
    }
}

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

impl DatapathHandler {
    /// Encrypt and send the inner packets in `slots` on their tunnels
    /// (counted in `encap_tx`); returns how many were sent.
    fn encap_slots(&mut self, slots: &[HandoffSlot], tx: &mut XskTx) -> u64 {
        if slots.is_empty() {
            return 0;
        }
        let snap = self.ctx.snap.load();
        let mut sent = 0;
        for s in slots {
            if encap_and_send(
                &mut self.ws,
                &self.shared,
                &self.ctx,
                &snap,
                s.tunnel(),
                s.bytes(),
                tx,
            ) {
                sent += 1;
            }
        }
        add_single_writer(&self.io.encap_tx, sent);
        sent
    }

    /// Decap `frames` and act on the verdicts: deliver to the inside, hand
    /// frames of other workers' SAs to them, packets for the node itself to
    /// control. Every frame not delivered was counted by the core, or is
    /// counted here (110 when a handoff queue is full, `punt_dropped` when
    /// the punt ring is full).
    fn decap_and_deliver<F: AsMut<[u8]>>(&mut self, frames: &mut [F], input: Input) {
        let n = frames.len().min(self.verdicts.len());
        let now = self.ctx.epoch.elapsed();
        // One snapshot for the whole batch: every frame sees the same SA set.
        let snap = self.ctx.snap.load();
        // The one check per batch the trace and the capture cost when off.
        let armed = self.ctx.taps.armed();
        if armed {
            self.tap.before(&self.ctx.taps, &mut frames[..n]);
            self.handler_drops[..n].fill(None);
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
        for (i, frame) in frames[..n].iter_mut().enumerate() {
            match &self.verdicts[i] {
                Verdict::Deliver { inner, .. } => match &mut self.inside {
                    InsideIo::Tun(fd) => {
                        let fd = *fd;
                        if crate::platform::tun::write_packet(fd, &frame.as_mut()[inner.clone()]) {
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
                        _ => {
                            self.shared.drops.bump(DropReason::PktBufferUnavailable);
                            if armed {
                                self.handler_drops[i] = Some(DropReason::PktBufferUnavailable);
                            }
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
        if armed {
            self.tap.after(
                &self.ctx.taps,
                self.ws.id(),
                input,
                &snap,
                &mut frames[..n],
                &self.verdicts[..n],
                &self.handler_drops[..n],
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

    fn on_idle(&mut self, _queue: u32) {
        // Gateway mode: frames a kick left on the inside tx ring go now.
        if let InsideIo::Xdp(x) = &mut self.inside {
            x.xsk.tx().kick_if_in_flight();
        }
    }

    fn extra_fd(&self) -> Option<RawFd> {
        match &self.inside {
            InsideIo::Tun(fd) => Some(*fd),
            InsideIo::Sink => None,
            InsideIo::Xdp(x) => Some(x.xsk.raw_fd()),
        }
    }

    fn on_extra_readable(&mut self, _queue: u32, tx: &mut XskTx) {
        let fd = match &self.inside {
            InsideIo::Tun(fd) => *fd,
            InsideIo::Xdp(_) => return self.inside_xdp_rx(tx),
            InsideIo::Sink => return,
        };
        let snap = self.ctx.snap.load();
        let routes = self.ctx.routes.load();
        let mut read = 0;
        let mut tally = Tally::default();
        // A bounded batch per wake-up, so received ESP is served in between.
        for _ in 0..BATCH_SIZE {
            let Some(len) = crate::platform::tun::read_packet(fd, &mut self.tun_buf) else {
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
    /// Gateway mode: one batch of frames from the inside interface's
    /// AF_XDP socket (the XDP program steered only destinations a tunnel
    /// route covers), encrypted onto the underlay's `tx` or handed to the
    /// worker owning their tunnel's outbound SA, as packets read from a TUN.
    fn inside_xdp_rx(&mut self, tx: &mut XskTx) {
        let InsideIo::Xdp(x) = &mut self.inside else {
            return;
        };
        let snap = self.ctx.snap.load();
        let routes = self.ctx.routes.load();
        let (ws, shared, ctx, handoff) = (&mut self.ws, &self.shared, &self.ctx, &self.handoff);
        let mut too_big = 0;
        let mut tally = Tally::default();
        let max_inner = x.max_inner;
        let read = x.xsk.poll_batch(|batch, _inside_tx| {
            for f in batch.frames_mut() {
                // The inner packet after the Ethernet header, without the
                // padding of a short frame; a runt is empty (the core
                // counts 89).
                let inner = f.as_mut().get(14..).map(ip_packet).unwrap_or(&[]);
                if inner.len() > max_inner {
                    too_big += 1;
                    continue;
                }
                tally.add(route_and_encap(
                    ws, shared, ctx, handoff, &snap, &routes, inner, tx,
                ));
            }
        });
        add_single_writer(&self.io.inside_rx, read as u64);
        add_single_writer(&self.io.inside_too_big, too_big);
        tally.finish(&self.handoff, &self.io);
    }
}

/// What became of a batch of inner packets to encrypt.
#[derive(Default)]
struct Tally {
    sent: u64,
    handed: u64,
    /// A bit per owner worker to notify once.
    woken: u64,
}

impl Tally {
    fn add(&mut self, o: Outbound) {
        match o {
            Outbound::Sent => self.sent += 1,
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
        add_single_writer(&io.handoff_out, self.handed);
    }
}

/// What became of an inner packet to encrypt.
enum Outbound {
    /// Encrypted and queued on the underlay's AF_XDP TX.
    Sent,
    /// Handed to this worker, which owns its tunnel's outbound SA.
    Handed(u16),
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
                shared.drops.bump(DropReason::PktBufferUnavailable);
                Outbound::Dropped
            }
        },
        _ => {
            if encap_and_send(ws, shared, ctx, snap, tunnel, inner, tx) {
                Outbound::Sent
            } else {
                Outbound::Dropped
            }
        }
    }
}

/// An IP packet without trailing bytes beyond its length field (the
/// padding of a short Ethernet frame); unchanged when the field does not
/// fit (the core judges the packet then).
fn ip_packet(b: &[u8]) -> &[u8] {
    let len = match b.first().map(|v| v >> 4) {
        Some(4) if b.len() >= 20 => usize::from(u16::from_be_bytes([b[2], b[3]])),
        Some(6) if b.len() >= 40 => 40 + usize::from(u16::from_be_bytes([b[4], b[5]])),
        _ => return b,
    };
    b.get(..len).unwrap_or(b)
}

/// Write an Ethernet frame (`dst`, `src`, the IP version's EtherType)
/// carrying the IP packet `pkt` into `buf`; its length, or `None` when it
/// does not fit.
fn ethernet_frame(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], pkt: &[u8]) -> Option<usize> {
    let len = 14 + pkt.len();
    let out = buf.get_mut(..len)?;
    out[..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    let et: u16 = if pkt.first().is_some_and(|v| v >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    out[12..14].copy_from_slice(&et.to_be_bytes());
    out[14..].copy_from_slice(pkt);
    Some(len)
}

/// Encrypt `inner` for `tunnel` and queue the frame on `tx`. True when a
/// frame was queued; otherwise exactly one drop was counted (by the core, or
/// here: 55 no next-hop MAC, 110 no free TX frame).
fn encap_and_send(
    ws: &mut WorkerState,
    shared: &WorkerShared,
    ctx: &WorkerCtx,
    snap: &SaSnapshot,
    tunnel: u32,
    inner: &[u8],
    tx: &mut XskTx,
) -> bool {
    let Some(dst_mac) = ctx.next_hops.get(tunnel as usize).and_then(|m| m.get()) else {
        // No next-hop MAC yet (control is resolving it).
        shared.drops.bump(DropReason::OutSettingWrongL2Hdr);
        return false;
    };
    let mut built = false;
    let ok = tx.send_with(|buf| {
        built = true;
        encap_frame(ws, snap, tunnel, inner, [dst_mac, ctx.local_mac], buf)
    });
    if !ok && !built {
        // No free AF_XDP frame to transmit from.
        shared.drops.bump(DropReason::PktBufferUnavailable);
    }
    ok
}

/// Build the Ethernet frame (`macs`: destination, source) carrying `inner`
/// encrypted for `tunnel` into `buf`; returns its length, or `None` when
/// the core refused (and counted the drop). The one encapsulation path for
/// packets read from the TUN, handed off, or injected by control.
pub(crate) fn encap_frame(
    ws: &mut WorkerState,
    snap: &SaSnapshot,
    tunnel: u32,
    inner: &[u8],
    macs: [[u8; 6]; 2],
    buf: &mut [u8],
) -> Option<usize> {
    let Some((eth, rest)) = buf.split_at_mut_checked(14) else {
        // Too small for anything: the core counts 110.
        let _ = encap(ws, snap, tunnel, inner, &mut []);
        return None;
    };
    // Err: counted by the core (one drop reason each).
    let out = encap(ws, snap, tunnel, inner, rest).ok()?;
    eth[..6].copy_from_slice(&macs[0]);
    eth[6..12].copy_from_slice(&macs[1]);
    let et: u16 = if rest[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    eth[12..14].copy_from_slice(&et.to_be_bytes());
    Some(14 + out.len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use xdpsec_datapath::SaTable;
    use xdpsec_datapath::crypto::{Cipher, KeyMaterial};
    use xdpsec_datapath::sa::{
        InboundSaConfig, OutboundSaConfig, OuterHeader, SaChange, Selectors,
    };

    const LOCAL: &str = "198.51.100.2";

    /// A loopback tunnel 0 (outbound and inbound SPI 0x2001, owner worker
    /// 0) from 198.51.100.1 to [`LOCAL`], without an Ethernet header in the
    /// SA (the worker adds it, as the daemon's SAs), and a handler for
    /// worker 0 with a sink inside.
    fn setup() -> (SaTable, DatapathHandler, Arc<PuntHub>) {
        let key = KeyMaterial::new(vec![0x33; 36]);
        let mut t = SaTable::new();
        t.apply(
            vec![
                SaChange::SetOutbound(OutboundSaConfig {
                    spi: 0x2001,
                    tunnel: 0,
                    owner: 0,
                    cipher: Cipher::Aes256Gcm,
                    key: key.clone(),
                    esn: false,
                    outer: OuterHeader {
                        src: "198.51.100.1".parse().unwrap(),
                        dst: LOCAL.parse().unwrap(),
                        udp: Some((12346, 12346)),
                        ethernet: None,
                        ttl: 64,
                    },
                    last_seq: 0,
                    seq_limit: u64::MAX,
                    name: "out".into(),
                }),
                SaChange::AddInbound(InboundSaConfig {
                    spi: 0x2001,
                    peer: None,
                    tunnel: 0,
                    owner: 0,
                    cipher: Cipher::Aes256Gcm,
                    key,
                    esn: false,
                    window: 64,
                    selectors: Selectors::any(),
                    name: "in".into(),
                }),
                SaChange::SetUdpPorts(vec![12346..=12346]),
            ],
            std::time::Duration::ZERO,
        )
        .unwrap();
        let handoff = Arc::new(vec![Arc::new(HandoffQueue::new().unwrap())]);
        let punt = Arc::new(PuntHub::new(Arc::clone(&handoff)).unwrap());
        let next_hops = NextHops::new(vec![None]);
        next_hops.get(0).unwrap().set(Some([2, 0, 0, 0, 0, 0xb]));
        let ctx = WorkerCtx {
            snap: t.shared(),
            routes: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            next_hops: Arc::new(next_hops),
            local_mac: [2, 0, 0, 0, 0, 0xa],
            epoch: Instant::now(),
            handoff,
            punt: Arc::clone(&punt),
            taps: Arc::new(Taps::new(1)),
        };
        let h = DatapathHandler::new(WorkerState::new(0), ctx, InsideIo::Sink, punt.io(0));
        (t, h, punt)
    }

    /// An inner IPv4 UDP packet from 203.0.113.1 to `dst`, port `dport`.
    fn udp(dst: &str, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 52, 0, 1, 0, 0, 64, 17, 0, 0, 203, 0, 113, 1];
        p.extend_from_slice(&dst.parse::<std::net::Ipv4Addr>().unwrap().octets());
        p.extend_from_slice(&49152u16.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 32, 0, 0]);
        p.resize(52, 0x20);
        p
    }

    /// Encrypt `inner` on tunnel 0 through the workers' encap path.
    fn frame(h: &mut DatapathHandler, t: &SaTable, inner: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let macs = [[2, 0, 0, 0, 0, 0xb], h.ctx.local_mac];
        let n = encap_frame(&mut h.ws, &t.snapshot(), 0, inner, macs, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn bfd_goes_to_control_never_inside_and_a_full_ring_counts() {
        let (t, mut h, punt) = setup();
        let bfd = udp(LOCAL, 3784);
        let other = udp("203.0.113.2", 3784);
        let mut frames = vec![frame(&mut h, &t, &bfd), frame(&mut h, &t, &other)];
        h.decap_and_deliver(&mut frames, Input::Xdp(0));
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // One punted to control, one delivered inside (the sink).
        assert_eq!(r(&h.shared.punted), 1);
        assert_eq!(r(&h.io.sink), 1);
        assert_eq!(r(&h.io.punt_dropped), 0);
        let mut got = Vec::new();
        punt.drain(&mut got);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].worker, got[0].tunnel), (0, 0));
        assert_eq!(got[0].packet, bfd);
        // Nobody drains: the ring fills, then each extra punt counts once.
        let extra = 5;
        let n = crate::punt::PUNT_BUFFERS + extra;
        let mut frames: Vec<_> = (0..n).map(|_| frame(&mut h, &t, &bfd)).collect();
        for chunk in frames.chunks_mut(BATCH_SIZE) {
            h.decap_and_deliver(chunk, Input::Xdp(0));
        }
        assert_eq!(r(&h.shared.punted), 1 + n as u64);
        assert_eq!(r(&h.io.punt_dropped), extra as u64);
        assert_eq!(r(&h.io.sink), 1, "never to the inside");
        assert_eq!(h.shared.drops.total(), 0, "not a QFP drop");
        got.clear();
        punt.drain(&mut got);
        assert_eq!(got.len(), crate::punt::PUNT_BUFFERS);
    }

    #[test]
    fn trace_and_capture_see_each_frame_only_while_armed() {
        use crate::taps::{Capture, Fate, Step};
        let (t, mut h, _punt) = setup();
        let taps = Arc::clone(&h.ctx.taps);
        let inner = udp("203.0.113.2", 9);
        let valid = frame(&mut h, &t, &inner);
        let mut forged = frame(&mut h, &t, &inner);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        // Off: nothing recorded.
        h.decap_and_deliver(&mut [valid.clone()], Input::Xdp(0));
        assert!(taps.trace_records().is_empty());
        let dir = std::env::temp_dir().join(format!("xdpsec-taps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pcap = dir.join("d.pcapng");
        let cap = Capture::start(&taps, &pcap, Some(1)).unwrap();
        taps.arm_trace(3, false);
        let mut frames = vec![frame(&mut h, &t, &inner), forged.clone(), forged.clone()];
        let sent_forged = forged.clone();
        h.decap_and_deliver(&mut frames, Input::Xdp(0));
        let recs = taps.trace_records();
        let got: Vec<_> = recs
            .iter()
            .map(|r| (r.pkt, r.fate, r.drop, r.sa, r.replay, r.icv, r.spi))
            .collect();
        let ok = (Step::Pass, Step::Pass, Step::Pass, Some(0x2001));
        let bad = (Step::Pass, Step::Pass, Step::Fail, Some(0x2001));
        let mac = Some(DropReason::InMacException);
        assert_eq!(
            got,
            vec![
                (0, Fate::Delivered(0), None, ok.0, ok.1, ok.2, ok.3),
                (1, Fate::Dropped, mac, bad.0, bad.1, bad.2, bad.3),
                (2, Fate::Dropped, mac, bad.0, bad.1, bad.2, bad.3),
            ]
        );
        // The trace is full: later frames are not traced.
        h.decap_and_deliver(&mut [forged.clone()], Input::Xdp(0));
        assert_eq!(taps.trace_records().len(), 3);
        // Limit 1: only the first drop, as received (not decrypted).
        assert_eq!(cap.stop(&taps).unwrap(), (1, 0));
        let mut r =
            pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(&pcap).unwrap()).unwrap();
        let mut got = Vec::new();
        while let Some(b) = r.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
                got.push((p.data.to_vec(), format!("{:?}", p.options)));
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, sent_forged);
        assert!(
            got[0].1.contains("drop 62 IN_OCT_MAC_EXCEPTION"),
            "{}",
            got[0].1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What the taps cost a worker: ns per frame through the handler with
    /// nothing armed, with an exhausted trace armed, and with the capture
    /// armed (frames dropped as replays: the cheapest path, where a fixed
    /// per-batch cost shows most). `cargo test --release -p
    /// xdpsec-control taps_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn taps_cost() {
        use crate::taps::Capture;
        let (t, mut h, _punt) = setup();
        let taps = Arc::clone(&h.ctx.taps);
        let one = frame(&mut h, &t, &udp("203.0.113.2", 9));
        let mut frames = vec![one.clone(); BATCH_SIZE];
        let rounds = 20_000;
        let mut run = |h: &mut DatapathHandler| {
            let start = Instant::now();
            for _ in 0..rounds {
                for f in frames.iter_mut() {
                    f.copy_from_slice(&one);
                }
                h.decap_and_deliver(&mut frames, Input::Xdp(0));
            }
            start.elapsed().as_nanos() as f64 / (rounds * BATCH_SIZE) as f64
        };
        let _warm_up = run(&mut h);
        let off = run(&mut h);
        taps.arm_trace(1, false);
        let traced = run(&mut h);
        taps.clear_trace();
        let off2 = run(&mut h);
        let pcap = std::env::temp_dir().join(format!("xdpsec-cost-{}.pcapng", std::process::id()));
        let cap = Capture::start(&taps, &pcap, None).unwrap();
        let captured = run(&mut h);
        let (written, lost) = cap.stop(&taps).unwrap();
        let _ = std::fs::remove_file(&pcap);
        println!(
            "ns/frame: off {off:.1} / {off2:.1}, trace armed (full) {traced:.1}, capture {captured:.1} ({written} written, {lost} lost)"
        );
    }

    #[test]
    fn injected_packets_are_encrypted_on_the_tunnel_by_the_owner() {
        let (t, mut h, punt) = setup();
        let hello = udp("198.51.100.1", 3784);
        assert!(punt.inject(&t.snapshot(), 0, &hello));
        // What the worker's poll_handoff does with the inject queue, minus
        // the AF_XDP TX ring: take, encapsulate on the given tunnel.
        let q = Arc::clone(&h.handoff[0]);
        let mut slots = Vec::new();
        q.take_inject(&mut slots, BATCH_SIZE);
        assert_eq!(slots.len(), 1);
        let snap = t.snapshot();
        let mut buf = vec![0u8; 2048];
        let macs = [[2, 0, 0, 0, 0, 0xb], h.ctx.local_mac];
        let n = encap_frame(
            &mut h.ws,
            &snap,
            slots[0].tunnel(),
            slots[0].bytes(),
            macs,
            &mut buf,
        )
        .unwrap();
        q.recycle_inject(&mut slots);
        let mut out = buf[..n].to_vec();
        // Ethernet to the next hop, UDP-ESP with the tunnel's SPI, and the
        // plaintext nowhere in the frame.
        assert_eq!(&out[..12], &[2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa]);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(out[14 + 9], 17);
        assert_eq!(&out[42..46], &0x2001u32.to_be_bytes());
        assert!(!out.windows(hello.len()).any(|w| w == hello));
        // It decrypts back to the packet (loopback SA).
        let mut v = [Verdict::Drop(DropReason::PktBufferUnavailable)];
        decap_batch(
            &mut h.ws,
            &snap,
            std::slice::from_mut(&mut out),
            &mut v,
            std::time::Duration::ZERO,
        );
        let Verdict::Deliver { tunnel: 0, inner } = v[0].clone() else {
            panic!("{:?}", v[0])
        };
        assert_eq!(&out[inner], &hello[..]);
    }

    /// An inner IPv4/UDP packet header from `src` port `sport` to `dst`.
    fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&[0x30, 0x39, 0, 8, 0, 0]);
        p
    }

    #[test]
    fn equal_cost_tunnels_share_flows_and_each_flow_sticks() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let t = RouteTable::with_ecmp(vec![
            (c("203.0.113.3/32"), vec![7, 8]),
            (c("203.0.113.0/24"), vec![5]),
            (c("203.0.113.9/32"), vec![]),
        ]);
        let mut seen = std::collections::BTreeMap::new();
        for port in 1000..1064u16 {
            let p = udp4([203, 0, 113, 1], port, [203, 0, 113, 3]);
            let a = t.lookup_packet(&p).unwrap();
            // The same flow always takes the same tunnel.
            assert_eq!(t.lookup_packet(&p), Some(a));
            *seen.entry(a).or_insert(0) += 1;
        }
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            vec![7, 8],
            "{seen:?}"
        );
        assert!(seen.values().all(|&n| n >= 16), "64 flows spread: {seen:?}");
        // A single tunnel, and a prefix with none (falls to the /24).
        let p = udp4([203, 0, 113, 1], 1, [203, 0, 113, 4]);
        assert_eq!(t.lookup_packet(&p), Some(5));
        let p = udp4([203, 0, 113, 1], 1, [203, 0, 113, 9]);
        assert_eq!(t.lookup_packet(&p), Some(5));
        assert_eq!(t.lookup("203.0.113.3".parse().unwrap()), Some(7));
        assert_eq!(t.lookup_packet(&[0x45, 0]), None);
    }

    #[test]
    fn inside_frames_lose_ethernet_padding_and_gain_a_header_on_the_way_out() {
        // A 28-byte IPv4 packet in a minimum frame: 18 bytes of padding.
        let mut p = udp4([203, 0, 113, 1], 7, [203, 0, 113, 2]);
        let mut padded = p.clone();
        padded.resize(46, 0);
        assert_eq!(ip_packet(&padded), &p[..]);
        // A length field beyond the bytes: left for the core to judge.
        p[3] = 200;
        assert_eq!(ip_packet(&p), &p[..]);
        assert_eq!(ip_packet(&[0x45, 0]), &[0x45, 0]);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.resize(48, 1);
        let mut padded = v6.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(ip_packet(&padded), &v6[..]);
        let mut buf = [0u8; 64];
        let (dst, src) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let n = ethernet_frame(&mut buf, dst, src, &v6).unwrap();
        assert_eq!(n, 14 + 48);
        assert_eq!(&buf[..12], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
        assert_eq!(&buf[12..14], &[0x86, 0xdd]);
        assert_eq!(&buf[14..n], &v6[..]);
        // Too small a buffer: nothing written, no panic.
        assert_eq!(ethernet_frame(&mut buf[..40], dst, src, &v6), None);
    }

    #[test]
    fn longest_prefix_wins() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let t = RouteTable::new(vec![
            (c("203.0.113.0/24"), 1),
            (c("203.0.113.1/32"), 2),
            (c("2001:db8::/32"), 3),
        ]);
        assert_eq!(t.lookup("203.0.113.1".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("203.0.113.9".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("198.51.100.1".parse().unwrap()), None);
        assert_eq!(t.lookup("2001:db8:5::1".parse().unwrap()), Some(3));
        assert_eq!(t.lookup("2001:db9::1".parse().unwrap()), None);
        // A default route, and thousands of host routes: still exact.
        let mut routes = vec![(c("0.0.0.0/0"), 9)];
        for i in 0..5000u32 {
            let a = std::net::Ipv4Addr::from(0xcb00_7100u32 + i); // from 203.0.113.0
            routes.push((
                Cidr {
                    addr: a.into(),
                    len: 32,
                },
                100 + i,
            ));
        }
        let t = RouteTable::new(routes);
        assert_eq!(t.lookup("203.0.113.5".parse().unwrap()), Some(105));
        assert_eq!(
            t.lookup(std::net::Ipv4Addr::from(0xcb00_7100u32 + 4999).into()),
            Some(5099)
        );
        assert_eq!(t.lookup("198.51.100.1".parse().unwrap()), Some(9));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), None);
    }
}
