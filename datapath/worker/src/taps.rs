//! Packet trace and drop capture: what `debug platform packet-trace packet
//! N` and `monitor capture drops start` arm, what the workers fill and
//! control reads.
//!
//! Cost when off: each worker loads one atomic ([`Taps::armed`]) per batch
//! and branches on it. When armed, a worker copies what it needs into
//! buffers allocated when the trace or capture was armed (never per
//! packet) and takes one uncontended lock per batch for the trace; the
//! capture moves preallocated buffers through two lock-free queues to a
//! writer thread.
use std::{
    fs::File,
    io::BufWriter,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use crossbeam::queue::ArrayQueue;
use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};
use xdpsec_datapath::{
    DropReason, SaSnapshot, Verdict,
    pipeline::PassReason,
    wire::{esp, ethernet, ip_proto, ipv4, ipv6, udp},
};

/// Most frames one trace may hold (IOS's `debug platform packet-trace
/// packet` takes 16 to 8192).
pub const TRACE_MAX_PACKETS: u32 = 8192;
/// Bytes of a dropped frame kept in the capture (an AF_XDP frame's size;
/// longer frames are cut, their original length recorded).
pub const CAPTURE_SNAPLEN: usize = 2048;
/// Capture buffers in flight between the workers and the writer thread;
/// a drop finding none free is counted in `lost`, not written.
pub const CAPTURE_POOL: usize = 1024;

const ARM_TRACE: u8 = 1;
const ARM_CAPTURE: u8 = 2;

/// Where a traced frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The XDP program redirected it (XDP_REDIRECT) to this AF_XDP queue.
    Xdp(u32),
    /// Taken from the worker's handoff queue: handed over by the worker that
    /// received it (the SA's owner is this one), or by the kernel-socket
    /// thread (reassembled fragments, ESP the kernel received).
    Handoff,
}

/// Outcome of one step of a frame's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Step {
    /// Not reached (the frame left the path earlier).
    NotReached,
    /// Passed.
    Pass,
    /// Failed: the frame was dropped here.
    Fail,
}

impl Step {
    /// `PASS`, `FAIL` or `-` (the trace's path view).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::NotReached => "-",
            Step::Pass => "PASS",
            Step::Fail => "FAIL",
        }
    }
}

/// Outer headers of a traced frame, as far as they parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Outer {
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
    /// IP protocol (50 ESP, 17 UDP...).
    pub protocol: u8,
    /// UDP source and destination ports (ESP in UDP).
    pub ports: Option<(u16, u16)>,
}

/// One traced frame. Serialized (feature `serde`) as the fields a
/// `show platform packet-trace` row shows as they are: without `input`,
/// `drop` and `fate`, which control shows in its own terms (the
/// interface's name, the drop type's id and name, the result in words).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TraceRecord {
    /// Packet number (IOS `Pkt`), from 0 in the order frames were claimed.
    pub pkt: u32,
    /// Worker (queue) that processed it.
    pub worker: u16,
    /// Where it came from.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub input: Input,
    /// Wall-clock time of its batch (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// Frame length.
    pub len: u32,
    /// Outer headers.
    pub outer: Option<Outer>,
    /// ESP SPI.
    pub spi: Option<u32>,
    /// ESP sequence number (low 32 bits as on the wire).
    pub seq: Option<u32>,
    /// SA lookup: found (and its tunnel), not found, or not reached.
    pub sa: Step,
    /// Tunnel of the SA found.
    pub tunnel: Option<u32>,
    /// Anti-replay check.
    pub replay: Step,
    /// ICV (integrity) check.
    pub icv: Step,
    /// IOS state: FWD, DROP, PUNT or CONS.
    pub state: &'static str,
    /// The drop type (DROP only).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub drop: Option<DropReason>,
    /// What became of it.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub fate: Fate,
}

/// What became of a traced frame (the verdict, without its ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Decrypted, to the inside on this tunnel.
    Delivered(u32),
    /// Decrypted, for the node itself: to control.
    Punted(u32),
    /// An ESP dummy packet, discarded.
    Dummy,
    /// Handed to the SA's owner worker.
    HandedOff(u16),
    /// Not ESP for us.
    Passed(PassReason),
    /// Dropped (the record's `drop`).
    Dropped,
}

/// The state of a capture writer (what `stop` reports).
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// Frames written to the file.
    pub written: AtomicU64,
    /// Dropped frames not captured: no free buffer (the writer fell behind).
    pub lost: AtomicU64,
}

/// A dropped frame on its way to the writer.
#[derive(Debug)]
pub struct CapturedFrame {
    reason: DropReason,
    timestamp: Duration,
    orig_len: u32,
    data: Vec<u8>,
}

/// What the workers and control share.
#[derive(Debug)]
pub struct Taps {
    armed: AtomicU8,
    trace_remaining: AtomicU32,
    trace_next: AtomicU32,
    trace_drops_only: AtomicBool,
    /// Bumped by each arm and clear: records claimed under an older trace
    /// are discarded, not mixed into the new one.
    trace_generation: AtomicU32,
    /// Per-worker trace records: capacity reserved when armed, so a worker
    /// pushing within it never allocates.
    trace_bufs: Vec<Mutex<Vec<TraceRecord>>>,
    capture_remaining: AtomicU64,
    capture_free: ArrayQueue<Box<CapturedFrame>>,
    capture_full: ArrayQueue<Box<CapturedFrame>>,
    capture: CaptureCounters,
}

impl Taps {
    /// Taps for `workers` workers, all off.
    pub fn new(workers: usize) -> Taps {
        Taps {
            armed: AtomicU8::new(0),
            trace_remaining: AtomicU32::new(0),
            trace_next: AtomicU32::new(0),
            trace_drops_only: AtomicBool::new(false),
            trace_generation: AtomicU32::new(0),
            trace_bufs: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
            capture_remaining: AtomicU64::new(0),
            capture_free: ArrayQueue::new(CAPTURE_POOL),
            capture_full: ArrayQueue::new(CAPTURE_POOL),
            capture: CaptureCounters::default(),
        }
    }

    /// Whether anything is armed (the one check per batch when off).
    #[inline]
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed) != 0
    }

    /// Whether frames the XDP program could drop early (unknown SPIs)
    /// must reach the workers instead: a trace that still wants frames or a
    /// drop capture is armed.
    pub fn wants_every_frame(&self) -> bool {
        self.tracing() || self.capturing()
    }

    /// Whether the drop capture is armed.
    pub fn capturing(&self) -> bool {
        self.armed.load(Ordering::Relaxed) & ARM_CAPTURE != 0
    }

    /// Whether the trace is armed and still wants frames.
    pub fn tracing(&self) -> bool {
        self.armed.load(Ordering::Relaxed) & ARM_TRACE != 0
            && self.trace_remaining.load(Ordering::Relaxed) != 0
    }

    /// Arm a trace of the next `n` frames (dropped frames only with
    /// `drops_only`), forgetting the previous trace. Control only.
    pub fn arm_trace(&self, n: u32, drops_only: bool) {
        let n = n.clamp(1, TRACE_MAX_PACKETS);
        self.armed.fetch_and(!ARM_TRACE, Ordering::SeqCst);
        self.trace_generation.fetch_add(1, Ordering::SeqCst);
        for b in &self.trace_bufs {
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            b.clear();
            // Any one worker may take every frame of the trace.
            b.reserve_exact(n as usize);
        }
        self.trace_next.store(0, Ordering::SeqCst);
        self.trace_drops_only.store(drops_only, Ordering::SeqCst);
        self.trace_remaining.store(n, Ordering::SeqCst);
        self.armed.fetch_or(ARM_TRACE, Ordering::SeqCst);
    }

    /// Stop tracing and forget the records (`clear platform packet-trace`).
    pub fn clear_trace(&self) {
        self.armed.fetch_and(!ARM_TRACE, Ordering::SeqCst);
        self.trace_remaining.store(0, Ordering::SeqCst);
        self.trace_generation.fetch_add(1, Ordering::SeqCst);
        for b in &self.trace_bufs {
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            *b = Vec::new();
        }
    }

    /// Every traced frame so far, by packet number.
    pub fn trace_records(&self) -> Vec<TraceRecord> {
        let mut all: Vec<TraceRecord> = self
            .trace_bufs
            .iter()
            .flat_map(|b| b.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        all.sort_by_key(|r| r.pkt);
        all
    }

    /// (frames still wanted, drops only) of the armed trace.
    pub fn trace_status(&self) -> (u32, bool) {
        (
            self.trace_remaining.load(Ordering::Relaxed),
            self.trace_drops_only.load(Ordering::Relaxed),
        )
    }

    /// Claim up to `want` frames of the trace: the first packet number and
    /// how many.
    fn claim_trace(&self, want: u32) -> Option<(u32, u32)> {
        let mut got = 0;
        let _ = self
            .trace_remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                got = r.min(want);
                (got > 0).then_some(r - got)
            });
        (got > 0).then(|| (self.trace_next.fetch_add(got, Ordering::Relaxed), got))
    }

    /// A free capture buffer for one more dropped frame, if the capture is
    /// armed and below its limit (the frame counts as lost when none is
    /// free).
    fn capture_slot(&self) -> Option<Box<CapturedFrame>> {
        self.capture_remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
            .ok()?;
        let slot = self.capture_free.pop();
        if slot.is_none() {
            self.capture.lost.fetch_add(1, Ordering::Relaxed);
        }
        slot
    }
}

/// A worker's side of the taps: scratch space for the batch, allocated the
/// first time something is armed (once, never per packet).
#[derive(Debug, Default)]
pub struct WorkerTap {
    /// Copies of the batch's frames before decap (the core decrypts in
    /// place; a capture wants the frames as received).
    pre: Vec<u8>,
    pre_len: Vec<u32>,
    /// Records of the batch being traced.
    recs: Vec<TraceRecord>,
}

impl WorkerTap {
    /// Before decap: keep copies of the frames if the capture is armed.
    pub fn before<F: AsMut<[u8]>>(&mut self, taps: &Taps, frames: &mut [F]) {
        if !taps.capturing() {
            self.pre_len.clear();
            return;
        }
        if self.pre.len() < xdpsec_afxdp::BATCH_SIZE * CAPTURE_SNAPLEN {
            self.pre = vec![0; xdpsec_afxdp::BATCH_SIZE * CAPTURE_SNAPLEN];
            self.pre_len = Vec::with_capacity(xdpsec_afxdp::BATCH_SIZE);
        }
        self.pre_len.clear();
        for (i, f) in frames.iter_mut().take(xdpsec_afxdp::BATCH_SIZE).enumerate() {
            let f = f.as_mut();
            let n = f.len().min(CAPTURE_SNAPLEN);
            self.pre[i * CAPTURE_SNAPLEN..i * CAPTURE_SNAPLEN + n].copy_from_slice(&f[..n]);
            self.pre_len.push(f.len() as u32);
        }
    }

    /// After the verdicts are final (a drop the handler found itself, such
    /// as a full handoff queue, is in the frame's verdict): capture the
    /// dropped frames and trace the frames the trace still wants.
    #[allow(clippy::too_many_arguments)]
    pub fn after<F: AsMut<[u8]>>(
        &mut self,
        taps: &Taps,
        worker: u16,
        input: Input,
        snap: &SaSnapshot,
        frames: &mut [F],
        verdicts: &[Verdict],
    ) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let fate = |i: usize| -> Option<DropReason> {
            match &verdicts[i] {
                Verdict::Drop(r) => Some(*r),
                _ => None,
            }
        };
        let n = frames.len().min(verdicts.len());
        if taps.capturing() && !self.pre_len.is_empty() {
            for i in 0..n.min(self.pre_len.len()) {
                let Some(reason) = fate(i) else { continue };
                let Some(mut slot) = taps.capture_slot() else {
                    continue;
                };
                let len = self.pre_len[i] as usize;
                let kept = len.min(CAPTURE_SNAPLEN);
                slot.data.clear();
                slot.data
                    .extend_from_slice(&self.pre[i * CAPTURE_SNAPLEN..i * CAPTURE_SNAPLEN + kept]);
                slot.reason = reason;
                slot.timestamp = now;
                slot.orig_len = len as u32;
                // Both queues hold CAPTURE_POOL: a buffer taken from one
                // always fits in the other.
                let _ = taps.capture_full.push(slot);
            }
        }
        if !taps.tracing() {
            return;
        }
        let drops_only = taps.trace_drops_only.load(Ordering::Relaxed);
        let want = (0..n).filter(|&i| !drops_only || fate(i).is_some()).count() as u32;
        let generation = taps.trace_generation.load(Ordering::SeqCst);
        let Some((first, got)) = taps.claim_trace(want) else {
            return;
        };
        if self.recs.capacity() < xdpsec_afxdp::BATCH_SIZE {
            // Once per worker, the first time it traces.
            self.recs = Vec::with_capacity(xdpsec_afxdp::BATCH_SIZE);
        }
        self.recs.clear();
        let mut pkt = first;
        for (i, frame) in frames[..n].iter_mut().enumerate() {
            if pkt == first + got {
                break;
            }
            let drop = fate(i);
            if drops_only && drop.is_none() {
                continue;
            }
            self.recs.push(trace_record(
                pkt,
                worker,
                input,
                now,
                snap,
                frame.as_mut(),
                &verdicts[i],
                drop,
            ));
            pkt += 1;
        }
        if let Some(b) = taps.trace_bufs.get(worker as usize) {
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            if taps.trace_generation.load(Ordering::SeqCst) != generation {
                // Re-armed or cleared since the claim.
                return;
            }
            // Within the capacity reserved when armed.
            let room = b.capacity() - b.len();
            b.extend(self.recs.drain(..).take(room));
        }
    }
}

/// Outer headers, SPI and sequence number of a frame, as far as they parse
/// (the outer headers and the ESP header are never changed by decap).
fn parse_outer(frame: &[u8]) -> (Option<Outer>, Option<(u32, u32, usize)>) {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return (None, None);
    };
    let l3 = &frame[eth.payload_offset()..];
    let (src, dst, protocol, l4): (IpAddr, IpAddr, u8, &[u8]) = match eth.payload_ethertype() {
        ethernet::ethertype::IPV4 => {
            let Ok(ip) = ipv4::Packet::new_checked(l3) else {
                return (None, None);
            };
            let hl = ip.header_len() as usize;
            let end = (ip.total_len() as usize).min(l3.len());
            (
                ip.src_addr().into(),
                ip.dst_addr().into(),
                ip.protocol(),
                l3.get(hl..end).unwrap_or(&[]),
            )
        }
        ethernet::ethertype::IPV6 => {
            let Ok(ip) = ipv6::Packet::new_checked(l3) else {
                return (None, None);
            };
            let Ok(ul) = ipv6::walk_extension_headers(ip.next_header(), ip.payload()) else {
                return (None, None);
            };
            (
                ip.src_addr().into(),
                ip.dst_addr().into(),
                ul.protocol,
                l3.get(ipv6::HEADER_LEN + ul.offset..ipv6::HEADER_LEN + ip.payload_len() as usize)
                    .unwrap_or(&[]),
            )
        }
        _ => return (None, None),
    };
    let (ports, esp_bytes) = match protocol {
        ip_proto::ESP => (None, Some(l4)),
        ip_proto::UDP => match udp::Packet::new_checked(l4) {
            Ok(u) => (
                Some((u.src_port(), u.dst_port())),
                Some(&l4[udp::HEADER_LEN..]),
            ),
            Err(_) => (None, None),
        },
        _ => (None, None),
    };
    let outer = Outer {
        src,
        dst,
        protocol,
        ports,
    };
    let esp = esp_bytes.and_then(|b| {
        let e = esp::Packet::new_checked(b).ok()?;
        Some((e.spi(), e.sequence_number(), b.len()))
    });
    (Some(outer), esp)
}

/// The trace record of one frame. The steps are read off the verdict: the
/// core's order is fixed (parse, SA lookup, replay pre-check, ICV and
/// decrypt, replay re-check, trailer, inner checks, policy), so the drop
/// type says how far the frame got; only 23 happens both before and after
/// the ICV, told apart by whether the ESP length reached the SA's minimum.
#[allow(clippy::too_many_arguments)]
fn trace_record(
    pkt: u32,
    worker: u16,
    input: Input,
    now: Duration,
    snap: &SaSnapshot,
    frame: &[u8],
    verdict: &Verdict,
    drop: Option<DropReason>,
) -> TraceRecord {
    let (outer, esp) = parse_outer(frame);
    let sa = match (outer, esp) {
        (Some(o), Some((spi, _, _))) => snap.lookup_inbound(spi, o.src, o.ports.map_or(0, |p| p.0)),
        _ => None,
    };
    let esp_len_ok = sa.is_some_and(|sa| esp.is_some_and(|e| e.2 >= sa.cipher.min_esp_len()));
    use DropReason as D;
    use Step::{Fail, NotReached as No, Pass};
    let found = if sa.is_some() { Pass } else { No };
    let (sa_step, replay, icv, state, fate) = match (verdict, drop) {
        (_, Some(r)) => {
            let (s, rp, ic) = match r {
                D::InV4SaNotFoundSpi
                | D::InV6SaNotFoundSpi
                | D::InV4HitInvalidSa
                | D::InV6HitInvalidSa => (Fail, No, No),
                D::InAntiReplayFail => (Pass, Fail, No),
                D::InMacException => (Pass, Pass, Fail),
                D::InHeadPadLenErr if esp_len_ok => (Pass, Pass, Pass),
                D::InHeadPadLenErr => (found, No, No),
                D::InNhMismatch
                | D::InEcnCeNotEct
                | D::InV4PostInputPolicyFail
                | D::InV6PostInputPolicyFail => (Pass, Pass, Pass),
                // A full handoff queue (110 counted by the handler) after
                // the SA was found; the rest before the lookup.
                _ => (found, No, No),
            };
            (s, rp, ic, "DROP", Fate::Dropped)
        }
        (Verdict::Deliver { tunnel, .. }, None) => {
            (Pass, Pass, Pass, "FWD", Fate::Delivered(*tunnel))
        }
        (Verdict::Punt { tunnel, .. }, None) => (Pass, Pass, Pass, "PUNT", Fate::Punted(*tunnel)),
        (Verdict::Dummy, None) => (Pass, Pass, Pass, "CONS", Fate::Dummy),
        (Verdict::Handoff(w), None) => (Pass, No, No, "FWD", Fate::HandedOff(*w)),
        (Verdict::Pass(p), None) => (No, No, No, "CONS", Fate::Passed(*p)),
        (Verdict::Drop(_), None) => unreachable!("a Drop verdict is a drop"),
    };
    TraceRecord {
        pkt,
        worker,
        input,
        timestamp_ns: now.as_nanos() as u64,
        len: frame.len() as u32,
        outer,
        spi: esp.map(|e| e.0),
        seq: esp.map(|e| e.1),
        sa: sa_step,
        tunnel: sa.map(|s| s.tunnel),
        replay,
        icv,
        state,
        drop,
        fate,
    }
}

/// A running drop capture: its writer thread.
#[derive(Debug)]
pub struct Capture {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Capture {
    /// Create `path` (pcapng, Ethernet, ns timestamps), fill the buffer
    /// pool and arm the capture of at most `limit` dropped frames.
    pub fn start(taps: &Arc<Taps>, path: &Path, limit: Option<u64>) -> Result<Capture> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = PcapNgWriter::new(BufWriter::new(file)).context("writing the pcapng header")?;
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: CAPTURE_SNAPLEN as u32,
            options: vec![InterfaceDescriptionOption::IfTsResol(9)],
        })
        .context("writing the pcapng interface block")?;
        while taps.capture_full.pop().is_some() {}
        while taps.capture_free.len() < CAPTURE_POOL {
            let _ = taps.capture_free.push(Box::new(CapturedFrame {
                reason: DropReason::PktBufferUnavailable,
                timestamp: Duration::ZERO,
                orig_len: 0,
                data: Vec::with_capacity(CAPTURE_SNAPLEN),
            }));
        }
        taps.capture.written.store(0, Ordering::Relaxed);
        taps.capture.lost.store(0, Ordering::Relaxed);
        taps.capture_remaining
            .store(limit.unwrap_or(u64::MAX), Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (Arc::clone(taps), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || write_loop(&t, &s, w))
            .context("spawning the capture writer")?;
        taps.armed.fetch_or(ARM_CAPTURE, Ordering::SeqCst);
        Ok(Capture {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Disarm, write what is queued, close the file: (written, lost).
    pub fn stop(mut self, taps: &Taps) -> Result<(u64, u64)> {
        taps.armed.fetch_and(!ARM_CAPTURE, Ordering::SeqCst);
        taps.capture_remaining.store(0, Ordering::SeqCst);
        // A worker checks the flag once per batch: let batches in flight
        // finish queueing their drops before the last drain.
        std::thread::sleep(Duration::from_millis(50));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("capture writer panicked"))??;
        }
        Ok((
            taps.capture.written.load(Ordering::Relaxed),
            taps.capture.lost.load(Ordering::Relaxed),
        ))
    }
}

fn write_loop(taps: &Taps, stop: &AtomicBool, mut w: PcapNgWriter<BufWriter<File>>) -> Result<()> {
    loop {
        // Read the flag first: after it is seen set, one more full drain.
        let last = stop.load(Ordering::SeqCst);
        let mut any = false;
        while let Some(f) = taps.capture_full.pop() {
            any = true;
            let comment = format!("drop {} {}", f.reason.id(), f.reason.name());
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: f.timestamp,
                original_len: f.orig_len,
                data: std::borrow::Cow::Borrowed(&f.data),
                options: vec![EnhancedPacketOption::Comment(comment.into())],
            })
            .context("writing a captured frame")?;
            taps.capture.written.fetch_add(1, Ordering::Relaxed);
            let _ = taps.capture_free.push(f);
        }
        if last {
            break;
        }
        if !any {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    use std::io::Write as _;
    w.get_mut().flush().context("flushing the capture file")?;
    Ok(())
}
