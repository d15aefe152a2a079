//! Batched decap (VPP's esp-decrypt node shape) and single-packet encap.
//!
//! `decap_batch` runs three passes over up to [`MAX_BATCH`] frames with
//! fixed scratch arrays on the stack (no allocation, lock or syscall per
//! packet):
//! 1. parse Ethernet / IPv4 (options, header checksum) or IPv6 (extension
//!    headers, AH) / [UDP] / ESP, count the frame's [`FrameClass`], drop
//!    fragments, look the SA up, infer ESN, anti-replay pre-check; with
//!    more than 4096 inbound SAs in stages over the batch that prefetch the
//!    SPI map, the SAs, the worker's slots and replay words before reading
//!    them (VPP's prefetching), otherwise frame by frame;
//! 2. verify and decrypt in place;
//! 3. anti-replay re-check and window advance, trailer and inner checks,
//!    dummy packets, ECN (RFC 6040), packets for the node itself (BFD) to
//!    control ([`Verdict::Punt`]), then the inbound policy check.
//!
//! Every frame ends with exactly one [`Verdict`]; every `Drop` bumps exactly
//! one drop counter (in [`drop_frame`], the only place that does; encap's
//! drops and the workers' own go through it too).

use core::net::IpAddr;
use core::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::crypto::OpenError;
use crate::drop::DropReason;
use crate::events::{DropEvent, InnerFlow};
pub use crate::outer::PassReason;
use crate::outer::{EspLocation, NotEsp, locate_esp};
use crate::replay::{ReplayError, ReplayWindow};
use crate::sa::{InboundSa, OutboundEntry, SaId, SaSnapshot, SeqError};
use crate::wire::esp::Trailer;
use crate::wire::{checksum, ecn, esp, ip_proto, ipv4, ipv6, udp};
use crate::worker::{FrameClass, SaCounter, WorkerShared, WorkerState};

/// Frames processed per pass; longer slices are processed in chunks.
pub const MAX_BATCH: usize = 64;

/// Inbound SAs above which pass 1 prefetches. Below, the SA state stays in
/// the caches and the prefetch stages only cost instructions.
const PREFETCH_MIN_SAS: usize = 4096;

/// What to do with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Decrypted: forward `frame[inner]` (an IPv4 or IPv6 packet) on `tunnel`.
    Deliver {
        /// Tunnel index of the SA.
        tunnel: u32,
        /// The inner IP packet's bytes within the frame.
        inner: Range<usize>,
    },
    /// Dropped; the reason's counter was bumped.
    Drop(DropReason),
    /// The SA is owned by this other worker: send the untouched frame there.
    Handoff(u16),
    /// An authentic dummy packet (next header 59): discarded silently as
    /// RFC 4303 section 2.6 says, counted in `WorkerShared::dummy_packets`,
    /// not a drop.
    Dummy,
    /// Not ESP: give it to the kernel or ignore it (counted in
    /// `WorkerShared::passed`).
    Pass(PassReason),
    /// Decrypted and for the node itself (BFD inside an SD-WAN tunnel,
    /// see [`is_punt`]): hand `frame[inner]` (an IPv4 packet) to the control
    /// plane, never to the inside. Counted in `WorkerShared::punted`, not a
    /// drop.
    Punt {
        /// Tunnel index of the SA.
        tunnel: u32,
        /// The inner IP packet's bytes within the frame.
        inner: Range<usize>,
    },
}

/// UDP destination port of single-hop BFD control packets (RFC 5881
/// section 4), which SD-WAN runs inside its tunnels.
pub const BFD_CONTROL_PORT: u16 = 3784;

/// Whether the decrypted inner packet `inner` is for the node itself and
/// goes to the control plane: IPv4, not a fragment, UDP to
/// [`BFD_CONTROL_PORT`], addressed to `local` (the outer destination of
/// the ESP packet: the tunnel's local TLOC address). Never panics: every
/// length is checked first.
pub fn is_punt(inner: &[u8], local: IpAddr) -> bool {
    let IpAddr::V4(local) = local else {
        return false;
    };
    // Cheap rejections first (protocol, destination: fixed offsets within
    // the 20 bytes pass 3 checked), since nearly every packet is not a
    // punt; the full header and length checks only for candidates.
    if inner.get(9) != Some(&ip_proto::UDP) || inner.get(16..20) != Some(&local.octets()[..]) {
        return false;
    }
    let Ok(ip) = ipv4::Packet::new_checked(inner) else {
        return false;
    };
    if ip.is_fragment() {
        return false;
    }
    // The UDP header must lie within the IPv4 total length.
    udp::Packet::new_checked(ip.payload()).is_ok_and(|u| u.dst_port() == BFD_CONTROL_PORT)
}

/// The one place a packet is dropped: bumps one drop counter, records an
/// event for the reasons IOS logs, and gives the frame's verdict. Decap and
/// encap here use it, and so do the workers around the core for the drops
/// they find themselves (a full handoff queue, no next-hop MAC, no free TX
/// frame).
#[inline]
pub fn drop_frame(shared: &WorkerShared, reason: DropReason, ev: Option<DropEvent>) -> Verdict {
    shared.drops.bump(reason);
    if let Some(ev) = ev {
        shared.events.push(ev);
    }
    Verdict::Drop(reason)
}

/// Single-writer increment (the worker owns these counters): a load and a
/// store, no locked read-modify-write.
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// Pass-1 result for a frame that goes on to decryption.
#[derive(Clone)]
struct Pending<'a> {
    sa: &'a InboundSa,
    /// ESP bytes (SPI .. ICV) within the frame.
    esp: Range<usize>,
    /// Full (inferred) sequence number.
    seq: u64,
    /// Plaintext range within the frame after pass 2.
    plain: Range<usize>,
    /// Pass 2 found an authentic packet whose ciphertext is not a whole
    /// number of cipher blocks (CBC): dropped as 23 in pass 3.
    bad_length: bool,
    src: IpAddr,
    dst: IpAddr,
    /// The outer header's ECN field (RFC 6040 decapsulation).
    outer_ecn: u8,
}

/// How a frame leaves pass 1 early.
enum EarlyOutcome {
    /// Not ESP for us: passed back.
    Pass(PassReason),
    /// Dropped for this reason.
    Drop(DropReason),
    /// Its SA is owned by this worker: handed to it, which classifies
    /// and counts the frame itself.
    Handoff(u16),
}

/// Pass-1 failure: outcome plus optional SA (for per-SA counters) and event.
struct Early {
    outcome: EarlyOutcome,
    ev: Option<DropEvent>,
    counter: Option<(SaId, SaCounter)>,
}

impl Early {
    fn drop(r: DropReason) -> Early {
        Early {
            outcome: EarlyOutcome::Drop(r),
            ev: None,
            counter: None,
        }
    }
    fn is_handoff(&self) -> bool {
        matches!(self.outcome, EarlyOutcome::Handoff(_))
    }
    fn pass(p: PassReason) -> Early {
        Early {
            outcome: EarlyOutcome::Pass(p),
            ev: None,
            counter: None,
        }
    }
}

/// Pass 1 result: where the frame's ESP is, and its SPI and sequence
/// number (low half).
struct Located {
    loc: EspLocation,
    spi: u32,
    seq_lo: u32,
    class: FrameClass,
}

impl Located {
    /// The UDP source port the SA lookup qualifies by (0 for plain ESP).
    fn src_port(&self) -> u16 {
        self.loc.ports.map_or(0, |p| p.0)
    }
}

/// Pass 1 for one frame: parse the outer headers and the ESP header.
fn parse(snap: &SaSnapshot, frame: &[u8]) -> Result<Located, (Early, FrameClass)> {
    let mut class = FrameClass::Other;
    let loc = locate_esp(frame, |p| snap.is_esp_udp_port(p), &mut class).map_err(|e| {
        let e = match e {
            NotEsp::Pass(p) => Early::pass(p),
            NotEsp::Drop(r) => Early::drop(r),
        };
        (e, class)
    })?;
    let esp = esp::Packet::new_checked(&frame[loc.esp.clone()])
        .map_err(|_| (Early::drop(DropReason::InHeadPadLenErr), class))?;
    Ok(Located {
        spi: esp.spi(),
        seq_lo: esp.sequence_number(),
        loc,
        class,
    })
}

/// Pass 1 for one frame, all of it: [`parse`], look up, [`resolve`].
fn classify<'a>(
    ws: &mut WorkerState,
    snap: &'a SaSnapshot,
    frame: &[u8],
    now: Duration,
    class: &mut FrameClass,
) -> Result<Pending<'a>, Early> {
    let l = parse(snap, frame).map_err(|(e, c)| {
        *class = c;
        e
    })?;
    *class = l.class;
    match snap.lookup_inbound(l.spi, l.loc.src, l.src_port()) {
        Some(sa) => resolve(ws, sa, &l),
        None => Err(unknown_spi(snap, &l, now)),
    }
}

/// Pass 1 for a frame whose SPI has no SA: 1/9 if recently deleted, else
/// 4/12, with the event IOS logs.
fn unknown_spi(snap: &SaSnapshot, l: &Located, now: Duration) -> Early {
    let EspLocation {
        src, dst, ports, ..
    } = l.loc;
    let spi = l.spi;
    let v6 = src.is_ipv6();
    let (reason, tunnel) = match snap.recently_deleted(spi, now) {
        Some(d) => (
            if v6 {
                DropReason::InV6HitInvalidSa
            } else {
                DropReason::InV4HitInvalidSa
            },
            Some(d.tunnel),
        ),
        None => (
            if v6 {
                DropReason::InV6SaNotFoundSpi
            } else {
                DropReason::InV4SaNotFoundSpi
            },
            snap.endpoint_tunnel(dst, ports.map(|p| p.1)),
        ),
    };
    let ev = DropEvent {
        reason,
        spi,
        src,
        dst,
        tunnel,
        sa: None,
        inner: None,
    };
    Early {
        outcome: EarlyOutcome::Drop(reason),
        ev: Some(ev),
        counter: None,
    }
}

/// Pass 1 for a frame whose SA was found: owner, length, ESN inference,
/// anti-replay pre-check.
#[inline(always)]
fn resolve<'a>(ws: &mut WorkerState, sa: &'a InboundSa, l: &Located) -> Result<Pending<'a>, Early> {
    let Located {
        loc:
            EspLocation {
                esp: ref esp_range,
                src,
                dst,
                outer_ecn,
                ..
            },
        spi,
        seq_lo,
        ..
    } = *l;
    if sa.owner != ws.id() {
        return Err(Early {
            outcome: EarlyOutcome::Handoff(sa.owner),
            ev: None,
            counter: None,
        });
    }
    if esp_range.len() < sa.cipher.min_esp_len() {
        return Err(Early {
            outcome: EarlyOutcome::Drop(DropReason::InHeadPadLenErr),
            ev: None,
            counter: Some((sa.id, SaCounter::RecvErrors)),
        });
    }
    let slot = ws
        .slot(sa.id)
        .ok_or_else(|| Early::drop(DropReason::PktBufferUnavailable))?;
    let seq = match (&slot.window, sa.esn) {
        (Some(w), true) => w.infer_esn(seq_lo),
        // Nothing received yet on this SA: the first subspace.
        (None, true) | (_, false) => u64::from(seq_lo),
    };
    // Pre-check before the expensive decrypt; the window does not move yet.
    if let Some(w) = &slot.window {
        if let Err(e) = w.check(seq) {
            return Err(replay_early(sa, e, spi, src, dst));
        }
    } else if sa.window != 0 && seq == 0 {
        return Err(replay_early(sa, ReplayError::TooOld, spi, src, dst));
    }
    Ok(Pending {
        sa,
        esp: esp_range.clone(),
        seq,
        plain: 0..0,
        bad_length: false,
        src,
        dst,
        outer_ecn,
    })
}

fn replay_early(sa: &InboundSa, e: ReplayError, spi: u32, src: IpAddr, dst: IpAddr) -> Early {
    let which = match e {
        ReplayError::TooOld => SaCounter::ReplayTooOld,
        ReplayError::Duplicate => SaCounter::ReplayDuplicate,
    };
    let reason = DropReason::InAntiReplayFail;
    Early {
        outcome: EarlyOutcome::Drop(reason),
        ev: Some(DropEvent {
            reason,
            spi,
            src,
            dst,
            tunnel: Some(sa.tunnel),
            sa: Some(sa.id),
            inner: None,
        }),
        counter: Some((sa.id, which)),
    }
}

/// Addresses and protocol of a decrypted inner packet whose version and
/// minimum length (20 bytes IPv4, 40 IPv6) pass 3 has already checked.
fn inner_flow(pkt: &[u8]) -> InnerFlow {
    // Only fixed-header fields are read, within the length checked by the
    // next-header check; the inner length fields are the inside's business.
    if pkt.first().map(|b| b >> 4) == Some(6) {
        let ip = ipv6::Packet::new_unchecked(&pkt[..ipv6::HEADER_LEN]);
        InnerFlow {
            src: IpAddr::V6(ip.src_addr()),
            dst: IpAddr::V6(ip.dst_addr()),
            protocol: ip.next_header(),
        }
    } else {
        let ip = ipv4::Packet::new_unchecked(&pkt[..ipv4::HEADER_LEN]);
        InnerFlow {
            src: IpAddr::V4(ip.src_addr()),
            dst: IpAddr::V4(ip.dst_addr()),
            protocol: ip.protocol(),
        }
    }
}

/// Decapsulate a batch of Ethernet frames in place.
///
/// `out[i]` receives the verdict for `frames[i]`; frames beyond `out.len()`
/// are not touched. Returns the number of frames processed. Load `snap` once
/// per batch (`shared.load()`), so every frame of the batch sees one SA set.
pub fn decap_batch<F: AsMut<[u8]>>(
    ws: &mut WorkerState,
    snap: &SaSnapshot,
    frames: &mut [F],
    out: &mut [Verdict],
    now: Duration,
) -> usize {
    let n = frames.len().min(out.len());
    ws.sync(snap);
    let mut done = 0;
    while done < n {
        let m = (n - done).min(MAX_BATCH);
        decap_chunk(
            ws,
            snap,
            &mut frames[done..done + m],
            &mut out[done..done + m],
            now,
        );
        done += m;
    }
    n
}

/// Whether pass 1 runs in prefetching stages for this snapshot.
pub(crate) fn prefetches(snap: &SaSnapshot) -> bool {
    #[cfg(test)]
    if let Some(forced) = tests_force_staged::get() {
        return forced;
    }
    snap.inbound_len() > PREFETCH_MIN_SAS
}

/// Tests run pass 1 both ways on the same frames.
#[cfg(test)]
pub(crate) mod tests_force_staged {
    use std::cell::Cell;
    thread_local!(static FORCED: Cell<Option<bool>> = const { Cell::new(None) });
    /// Until the guard is dropped: `Some(true)` staged, `Some(false)`
    /// fused, `None` by table size.
    pub(crate) fn set(v: Option<bool>) -> Guard {
        FORCED.with(|f| f.set(v));
        Guard
    }
    /// Puts the choice back to the table size when dropped.
    pub(crate) struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            FORCED.with(|f| f.set(None));
        }
    }
    pub(crate) fn get() -> Option<bool> {
        FORCED.with(|f| f.get())
    }
}

/// Pass 1 over a batch: parse ([`parse`]), look up (or [`unknown_spi`]),
/// then [`resolve`]; every frame ends either pending for pass 2 or with its
/// verdict, and is counted in its [`FrameClass`] (except handoffs).
struct Pass1<'w, 's> {
    ws: &'w mut WorkerState,
    shared: &'w WorkerShared,
    snap: &'s SaSnapshot,
    now: Duration,
    classes: [u64; FrameClass::COUNT],
}

impl<'s> Pass1<'_, 's> {
    fn parse_failed(&mut self, out: &mut Verdict, e: Early, class: FrameClass) {
        self.classes[class as usize] += 1;
        finish_early(self.ws, self.shared, out, e);
    }

    fn not_found(&mut self, out: &mut Verdict, l: &Located) {
        self.classes[l.class as usize] += 1;
        let e = unknown_spi(self.snap, l, self.now);
        finish_early(self.ws, self.shared, out, e);
    }

    fn resolve(
        &mut self,
        out: &mut Verdict,
        pending: &mut Option<Pending<'s>>,
        sa: &'s InboundSa,
        l: &Located,
    ) {
        match resolve(self.ws, sa, l) {
            Ok(p) => {
                self.classes[l.class as usize] += 1;
                *pending = Some(p);
            }
            Err(e) => {
                // A handed-off frame is classified again by its owner:
                // count it there.
                if !e.is_handoff() {
                    self.classes[l.class as usize] += 1;
                }
                finish_early(self.ws, self.shared, out, e);
            }
        }
    }

    /// Frame by frame: for tables whose SA state stays in the caches.
    fn fused<F: AsMut<[u8]>>(
        &mut self,
        frames: &mut [F],
        out: &mut [Verdict],
        pending: &mut [Option<Pending<'s>>; MAX_BATCH],
    ) {
        for (i, frame) in frames.iter_mut().enumerate() {
            let mut class = FrameClass::Other;
            let r = classify(self.ws, self.snap, frame.as_mut(), self.now, &mut class);
            // A handed-off frame is classified again by its owner: count it
            // there.
            if !matches!(&r, Err(e) if e.is_handoff()) {
                self.classes[class as usize] += 1;
            }
            match r {
                Ok(p) => pending[i] = Some(p),
                Err(e) => finish_early(self.ws, self.shared, &mut out[i], e),
            }
        }
    }

    /// In stages over the whole batch, so that the cache misses of the SA
    /// lookup overlap across frames instead of stalling one frame at a time
    /// (VPP's esp-decrypt prefetches the same way): each stage asks for the
    /// lines the next one reads. With a million SAs each step misses the
    /// cache; with a few the stages would only cost instructions (hence
    /// [`PREFETCH_MIN_SAS`]).
    fn staged<F: AsMut<[u8]>>(
        &mut self,
        frames: &mut [F],
        out: &mut [Verdict],
        pending: &mut [Option<Pending<'s>>; MAX_BATCH],
    ) {
        let snap = self.snap;
        // 1a: parse the outer headers and ESP; prefetch the SPI map slot.
        let mut located: [Option<Located>; MAX_BATCH] = [const { None }; MAX_BATCH];
        for (i, frame) in frames.iter_mut().enumerate() {
            match parse(snap, frame.as_mut()) {
                Ok(l) => {
                    snap.prefetch_inbound_slot(l.spi);
                    located[i] = Some(l);
                }
                Err((e, class)) => self.parse_failed(&mut out[i], e, class),
            }
        }
        // 1b: prefetch the SPI map rows.
        for l in located.iter().flatten() {
            snap.prefetch_inbound_rows(l.spi);
        }
        // 1c: look up; prefetch the SA's hot scalars.
        let mut sas: [Option<&InboundSa>; MAX_BATCH] = [None; MAX_BATCH];
        for (i, slot) in located.iter_mut().enumerate() {
            let Some(l) = slot else { continue };
            match snap.lookup_inbound(l.spi, l.loc.src, l.src_port()) {
                Some(sa) => {
                    sa.prefetch();
                    sas[i] = Some(sa);
                }
                None => {
                    self.not_found(&mut out[i], l);
                    *slot = None;
                }
            }
        }
        // 1d: prefetch the worker's slot and counters of each SA.
        for sa in sas.iter().flatten() {
            self.ws.prefetch_sa(sa.id);
        }
        // 1e: prefetch the replay bitmap word of each sequence number.
        for (sa, l) in sas.iter().zip(&located) {
            if let (Some(sa), Some(l)) = (sa, l) {
                self.ws.prefetch_replay(sa.id, u64::from(l.seq_lo));
            }
        }
        // 1f: owner, length, ESN, anti-replay pre-check.
        for (i, (sa, l)) in sas.iter().zip(&located).enumerate() {
            if let (Some(sa), Some(l)) = (sa, l) {
                self.resolve(&mut out[i], &mut pending[i], sa, l);
            }
        }
    }
}

/// A frame pass 1 is done with: handed off, passed or dropped, with its
/// per-SA counter.
fn finish_early(ws: &mut WorkerState, shared: &WorkerShared, out: &mut Verdict, e: Early) {
    if let Some((id, which)) = e.counter {
        ws.count(id, which);
    }
    match e.outcome {
        EarlyOutcome::Handoff(owner) => *out = Verdict::Handoff(owner),
        EarlyOutcome::Pass(p) => {
            bump(&shared.passed);
            *out = Verdict::Pass(p);
        }
        EarlyOutcome::Drop(r) => *out = drop_frame(shared, r, e.ev),
    }
}

fn decap_chunk<F: AsMut<[u8]>>(
    ws: &mut WorkerState,
    snap: &SaSnapshot,
    frames: &mut [F],
    out: &mut [Verdict],
    now: Duration,
) {
    let shared = ws.shared();
    let mut pending: [Option<Pending<'_>>; MAX_BATCH] = [const { None }; MAX_BATCH];

    // Pass 1: parse, look up, pre-check.
    let mut pass1 = Pass1 {
        ws,
        shared: &shared,
        snap,
        now,
        classes: [0u64; FrameClass::COUNT],
    };
    if prefetches(snap) {
        pass1.staged(frames, out, &mut pending);
    } else {
        pass1.fused(frames, out, &mut pending);
    }
    let classes = pass1.classes;

    shared.classes.add(&classes);

    // Pass 2: verify and decrypt in place.
    for (i, frame) in frames.iter_mut().enumerate() {
        let Some(p) = pending[i].as_mut() else {
            continue;
        };
        let hi = p.sa.esn.then_some((p.seq >> 32) as u32);
        let esp = &mut frame.as_mut()[p.esp.clone()];
        match p.sa.cipher.decrypt_in_place(esp, hi) {
            Ok(plain) => p.plain = p.esp.start + plain.start..p.esp.start + plain.end,
            // Authentic (the ICV verified) but not decryptable: like a bad
            // trailer, its sequence number is spent in pass 3, then it is
            // dropped there as 23.
            Err(OpenError::Padding) => p.bad_length = true,
            Err(_) => {
                let (id, tunnel, spi) = (p.sa.id, p.sa.tunnel, p.sa.spi);
                let ev = DropEvent {
                    reason: DropReason::InMacException,
                    spi,
                    src: p.src,
                    dst: p.dst,
                    tunnel: Some(tunnel),
                    sa: Some(id),
                    inner: None,
                };
                ws.count(id, SaCounter::VerifyFailed);
                out[i] = drop_frame(&shared, DropReason::InMacException, Some(ev));
                pending[i] = None;
            }
        }
    }

    // Pass 3: replay re-check and advance, then trailer and inner checks.
    for (i, frame) in frames.iter_mut().enumerate() {
        let Some(p) = pending[i].take() else { continue };
        let sa = p.sa;
        // Checked again because one batch may carry s, s+1, s+1: both
        // copies of s+1 passed the pre-check before either was verified.
        // Advanced only now, after the ICV verified (RFC 4303 3.4.3), so
        // forged packets cannot move the window.
        let Some(slot) = ws.slot(sa.id) else {
            out[i] = drop_frame(&shared, DropReason::PktBufferUnavailable, None);
            continue;
        };
        let window = slot.window.get_or_insert_with(|| {
            ReplayWindow::new(sa.window)
                .unwrap_or_else(|_| ReplayWindow::new(0).expect("0 is valid"))
        });
        if let Err(e) = window.check_and_advance(p.seq) {
            let early = replay_early(sa, e, sa.spi, p.src, p.dst);
            if let Some((id, which)) = early.counter {
                ws.count(id, which);
            }
            out[i] = drop_frame(&shared, DropReason::InAntiReplayFail, early.ev);
            continue;
        }
        let bytes = frame.as_mut();
        let parsed = if p.bad_length {
            None
        } else {
            Trailer::parse(&bytes[p.plain.clone()]).ok()
        };
        let Some((trailer, payload_len)) = parsed else {
            ws.count(sa.id, SaCounter::RecvErrors);
            out[i] = drop_frame(&shared, DropReason::InHeadPadLenErr, None);
            continue;
        };
        let inner = p.plain.start..p.plain.start + payload_len;
        if trailer.next_header == ip_proto::NONE {
            // RFC 4303 2.6: an authentic dummy packet (traffic flow
            // confidentiality padding) is discarded silently, not dropped.
            bump(&shared.dummy_packets);
            out[i] = Verdict::Dummy;
            continue;
        }
        let version = bytes.get(inner.start).map(|b| b >> 4);
        let ok = match trailer.next_header {
            ip_proto::IPV4 => version == Some(4) && payload_len >= ipv4::HEADER_LEN,
            ip_proto::IPV6 => version == Some(6) && payload_len >= ipv6::HEADER_LEN,
            // Anything else is not a tunnel packet we can deliver.
            _ => false,
        };
        if !ok {
            ws.count(sa.id, SaCounter::RecvErrors);
            out[i] = drop_frame(&shared, DropReason::InNhMismatch, None);
            continue;
        }
        if !decap_ecn(&mut bytes[inner.clone()], p.outer_ecn) {
            ws.count(sa.id, SaCounter::RecvErrors);
            out[i] = drop_frame(&shared, DropReason::InEcnCeNotEct, None);
            continue;
        }
        // For the node itself (BFD inside an SD-WAN tunnel): to control,
        // before the policy check, since the tunnel's own addresses are not
        // within the selectors of the traffic it carries. Decrypted, so it
        // counts as a decap of its SA.
        if trailer.next_header == ip_proto::IPV4 && is_punt(&bytes[inner.clone()], p.dst) {
            ws.count(sa.id, SaCounter::Decaps);
            ws.count_n(sa.id, SaCounter::DecapOctets, inner.len() as u64);
            bump(&shared.punted);
            out[i] = Verdict::Punt {
                tunnel: sa.tunnel,
                inner,
            };
            continue;
        }
        // Inbound policy check (RFC 4301 5.2): the inner addresses must be
        // within the SA's traffic selectors. Skipped for "any" selectors.
        // The replay window has already advanced for this packet, on
        // purpose: it was authentic (the ICV verified), so its sequence
        // number is spent like any other's; only its content is refused.
        if !sa.selectors.is_any() {
            let flow = inner_flow(&bytes[inner.clone()]);
            if !sa.selectors.allows(flow.src, flow.dst) {
                let reason = if flow.src.is_ipv6() {
                    DropReason::InV6PostInputPolicyFail
                } else {
                    DropReason::InV4PostInputPolicyFail
                };
                let ev = DropEvent {
                    reason,
                    spi: sa.spi,
                    src: p.src,
                    dst: p.dst,
                    tunnel: Some(sa.tunnel),
                    sa: Some(sa.id),
                    inner: Some(flow),
                };
                ws.count(sa.id, SaCounter::RecvErrors);
                out[i] = drop_frame(&shared, reason, Some(ev));
                continue;
            }
        }
        ws.count(sa.id, SaCounter::Decaps);
        ws.count_n(sa.id, SaCounter::DecapOctets, inner.len() as u64);
        bump(&shared.delivered);
        out[i] = Verdict::Deliver {
            tunnel: sa.tunnel,
            inner,
        };
    }
}

/// Apply RFC 6040 section 4.2 to the inner IP packet `inner` (version and
/// length checked by the caller): write the combined ECN field (and fix the
/// IPv4 header checksum). False when the combination must be dropped.
fn decap_ecn(inner: &mut [u8], outer_ecn: u8) -> bool {
    let v6 = inner[0] >> 4 == 6;
    let now = if v6 {
        (inner[1] >> 4) & ecn::MASK
    } else {
        inner[1] & ecn::MASK
    };
    let Some(new) = ecn::decap(outer_ecn, now) else {
        return false;
    };
    if new != now {
        if v6 {
            inner[1] = (inner[1] & !(ecn::MASK << 4)) | (new << 4);
        } else {
            let old_word = u16::from_be_bytes([inner[0], inner[1]]);
            inner[1] = (inner[1] & !ecn::MASK) | new;
            let new_word = u16::from_be_bytes([inner[0], inner[1]]);
            let check = u16::from_be_bytes([inner[10], inner[11]]);
            let check = checksum::update(check, old_word, new_word);
            inner[10..12].copy_from_slice(&check.to_be_bytes());
        }
    }
    true
}

/// The inner packet's DSCP + ECN byte (IPv4 TOS, IPv6 traffic class); 0 when
/// the packet is too short to carry one.
fn inner_tos(inner: &[u8], v6: bool) -> u8 {
    match (v6, inner.first(), inner.get(1)) {
        (false, _, Some(&tos)) => tos,
        (true, Some(&b0), Some(&b1)) => (b0 << 4) | (b1 >> 4),
        _ => 0,
    }
}

/// A packet built by [`encap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapOutput {
    /// Bytes written at the start of the output buffer.
    pub len: usize,
    /// The SA used (for `count_send_error`).
    pub sa: SaId,
    /// The sequence number used.
    pub seq: u64,
}

/// Encapsulate the inner IP packet `inner` for `tunnel` into `out`:
/// [Ethernet] + outer IPv4/IPv6 + [UDP] + ESP + IV + ciphertext + ICV.
///
/// Drops are counted like decap's (one counter each): 89 inner not IP,
/// 111/112 no outbound SA, 32/37 SA invalid, 110 `out` too small or outer
/// length overflow, 46 sequence numbers exhausted, 45 sequence reservation
/// used up (not yet raised by control) or `ws` is not the SA's owner
/// worker (hand the packet to [`SaSnapshot::outbound_owner`] instead).
///
/// Outer headers: DSCP copied from the inner packet, ECN copied too (RFC
/// 6040 section 4.1 normal mode); IPv4 without DF, identification = the low
/// 16 bits of the ESP sequence number (RFC 6864: the datagram may be
/// fragmented, so the ID must not repeat soon for this source, destination
/// and protocol; the SA's sequence is unique per packet and needs no shared
/// counter); IPv6 flow label 0. UDP checksum 0 over IPv4 (RFC 3948 2.1),
/// computed over IPv6 (RFC 8200 section 8.1: zero is invalid there).
pub fn encap(
    ws: &mut WorkerState,
    snap: &SaSnapshot,
    tunnel: u32,
    inner: &[u8],
    out: &mut [u8],
) -> Result<EncapOutput, DropReason> {
    ws.sync(snap);
    let shared = ws.shared();
    let fail = |r: DropReason| {
        drop_frame(&shared, r, None);
        Err(r)
    };
    let (nh, inner_v6) = match inner.first().map(|b| b >> 4) {
        Some(4) => (ip_proto::IPV4, false),
        Some(6) => (ip_proto::IPV6, true),
        _ => return fail(DropReason::InIpVerInvalid),
    };
    let sa = match snap.outbound(tunnel) {
        Some(OutboundEntry::Active(sa)) => sa,
        Some(OutboundEntry::Invalid) => {
            return fail(if inner_v6 {
                DropReason::OutV6HitInvalidSa
            } else {
                DropReason::OutV4HitInvalidSa
            });
        }
        None => {
            return fail(if inner_v6 {
                DropReason::OutIpv6SaNotFound
            } else {
                DropReason::OutIpv4SaNotFound
            });
        }
    };
    // One sequencing owner per outbound SA: the counter has a single
    // writer (no shared compare-and-swap), so packets leave in sequence
    // order. Callers hand packets for SAs they do not own to the owner
    // first (`SaSnapshot::outbound_owner`); this refuses anything else
    // rather than race the owner for a sequence number.
    if sa.owner != ws.id() {
        ws.count(sa.id, SaCounter::SendErrors);
        return fail(DropReason::OutUnexpException);
    }
    let o = &sa.outer;
    let esp_len = sa.cipher.sealed_len(inner.len());
    let head = o.header_len();
    let total = head + esp_len;
    if total > out.len() || o.too_long(esp_len) {
        ws.count(sa.id, SaCounter::SendErrors);
        return fail(DropReason::PktBufferUnavailable);
    }
    let seq = match sa.next_seq() {
        Ok(seq) => seq,
        Err(e) => {
            ws.count(sa.id, SaCounter::SendErrors);
            return fail(match e {
                SeqError::Exhausted => DropReason::OutSeqOverflow,
                // The control plane has not extended the reservation yet;
                // see `DropReason::OutUnexpException` for the choice of 45.
                SeqError::ReservationExhausted => DropReason::OutUnexpException,
            });
        }
    };
    let out = &mut out[..total];
    // DSCP copied, ECN per RFC 6040 4.1 normal mode (a copy as well).
    let tos = inner_tos(inner, inner_v6);
    let tos = (tos & !ecn::MASK) | ecn::encap(tos);
    o.emit(out, esp_len, tos, seq as u16);
    let esp_buf = &mut out[head..];
    let offset = sa.cipher.ciphertext_offset();
    esp_buf[offset..offset + inner.len()].copy_from_slice(inner);
    if sa
        .cipher
        .seal_in_place(esp_buf, inner.len(), nh, sa.spi, seq, sa.esn)
        .is_err()
    {
        // Lengths and sequence were checked above; kept for robustness.
        ws.count(sa.id, SaCounter::SendErrors);
        return fail(DropReason::PktBufferUnavailable);
    }
    o.finish(out);
    ws.count(sa.id, SaCounter::Encaps);
    ws.count_n(sa.id, SaCounter::EncapOctets, inner.len() as u64);
    Ok(EncapOutput {
        len: total,
        sa: sa.id,
        seq,
    })
}
