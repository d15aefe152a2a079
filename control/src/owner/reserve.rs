//! Outbound sequence reservations as an effect.
//!
//! An AEAD nonce (key, sequence number) must never repeat, not after a
//! restart or a crash either, so the datapath may only use numbers whose
//! reservation is on disk (`seqstore`). The owner decides reservations in
//! memory and hands the file to its shell ([`ShellOp::Reserve`]), which
//! writes it on its own thread and reports the generation it wrote
//! ([`ShellEvent::Reserved`]). Until then:
//! - an outbound SA installed with a new reservation (a reload, an SD-WAN
//!   peer's new key) is created with its limit at its first number minus
//!   one, so it can send nothing, and the SA-table batch that carries it
//!   is held back (the workers keep the previous snapshot and its SAs);
//! - a running SA's raised limit waits.
//!
//! When the write is reported, the limits are raised and the held batch is
//! published (one snapshot). A failed write is logged (at most once a
//! minute) and tried again at the next tick; the held batch goes out with
//! its new SAs unable to send, so nothing else waits on a broken disk. The
//! hold also ends after [`GATE_MAX`], or at once when the UDP ports change
//! (XDP must not steer a port the workers do not know yet).
use super::*;

/// Longest an SA-table batch is held back for its reservation.
pub const GATE_MAX: Duration = Duration::from_secs(1);

/// A write not reported after this long is handed to the shell again
/// (its job may have been dropped).
const REWRITE_AFTER: Duration = Duration::from_secs(5);

/// How often a failing reservation write is logged at most.
const ERROR_EVERY: Duration = Duration::from_secs(60);

/// Outbound SAs waiting for their reservation to be on disk.
#[derive(Default)]
pub(super) struct SeqWait {
    /// (generation that holds the reservation, the SA, its new limit).
    pub(super) raises: Vec<(u64, Arc<OutboundSa>, u64)>,
    /// The highest generation reported on disk.
    durable: u64,
    /// When the last write was handed to the shell, while unreported.
    in_flight: Option<Instant>,
    /// Publishing is held until this generation is on disk (since when).
    gate: Option<(u64, Instant)>,
    /// This input changes the UDP ports: publish whatever is held.
    publish_now: bool,
    /// The last write failed: try again at the next tick.
    failed: bool,
    /// When the last failed write was logged (rate limit).
    pub(super) error_logged: Option<Instant>,
}

impl SeqWait {
    /// Nothing waits yet; `durable` is the generation start-up wrote.
    pub(super) fn new(durable: u64) -> SeqWait {
        SeqWait {
            durable,
            ..SeqWait::default()
        }
    }
}

impl Owner {
    /// The outbound SA just installed on tunnel `index` (with its limit at
    /// its first number minus one) may use numbers up to `limit` once the
    /// reservations as they stand now are on disk; the batch that carries
    /// it is held until then.
    pub(crate) fn stage_outbound(&mut self, index: u32, limit: u64) {
        let snap = self.table.snapshot();
        let Some(OutboundEntry::Active(sa)) = snap.outbound(index) else {
            return;
        };
        let generation = self.seq.generation();
        let w = &mut self.seq_wait;
        w.raises.retain(|(_, a, _)| !Arc::ptr_eq(a, sa));
        w.raises.push((generation, Arc::clone(sa), limit));
        if generation > w.durable {
            let since = w.gate.map_or(self.now, |(_, t)| t);
            let g = w.gate.map_or(generation, |(g, _)| g.max(generation));
            w.gate = Some((g, since));
        }
        self.settle_reservations();
    }

    /// The UDP ports change in this input: publish at its end even if a
    /// batch is held for a reservation (its new SAs cannot send yet).
    pub(crate) fn publish_now(&mut self) {
        self.seq_wait.publish_now = true;
    }

    /// Reserve the next block for every outbound SA that has used half of
    /// its current one: one write for all of them, the new limits handed
    /// to the datapath when the shell reports it on disk.
    pub(super) fn extend_reservations(&mut self) {
        let snap = self.table.snapshot();
        // Manual tunnels and SD-WAN peers (negotiated keys are rekeyed
        // long before the end instead).
        let reserved = self
            .registry
            .iter()
            .filter_map(|e| Some((e.index, e.out_key?)));
        for (i, out_key) in reserved {
            let Some(OutboundEntry::Active(sa)) = snap.outbound(i) else {
                continue;
            };
            if self
                .seq_wait
                .raises
                .iter()
                .any(|(_, a, _)| Arc::ptr_eq(a, sa))
            {
                continue;
            }
            let limit = sa.seq_limit();
            let end = sa.max_seq();
            if limit >= end || limit.saturating_sub(sa.last_seq()) >= seqstore::LOW_WATER {
                continue;
            }
            let next = limit.saturating_add(seqstore::BLOCK).min(end);
            self.seq.reserve(out_key, next);
            let g = self.seq.generation();
            self.seq_wait.raises.push((g, Arc::clone(sa), next));
        }
        self.settle_reservations();
    }

    /// At each tick: a failed (or lost) write is handed to the shell
    /// again; SAs gone from every snapshot stop waiting.
    pub(super) fn retry_reservations(&mut self) {
        let w = &mut self.seq_wait;
        w.raises.retain(|(_, a, _)| Arc::strong_count(a) > 1);
        let lost = w
            .in_flight
            .is_some_and(|t| self.now.saturating_duration_since(t) >= REWRITE_AFTER);
        if std::mem::take(&mut w.failed) || (lost && !w.raises.is_empty()) {
            self.seq.write_failed();
        }
    }

    /// At the end of each input: what changed in memory goes to the shell.
    pub(super) fn flush_reservations(&mut self) {
        if let Some(w) = self.seq.take_write() {
            self.seq_wait.in_flight = Some(self.now);
            self.fx.shell.push(ShellOp::Reserve(w));
        }
    }

    /// Whether this input's SA-table batch must wait for a reservation.
    pub(super) fn hold_publish(&mut self) -> bool {
        let w = &mut self.seq_wait;
        let hold = !std::mem::take(&mut w.publish_now)
            && w.gate.is_some_and(|(g, since)| {
                g > w.durable && self.now.saturating_duration_since(since) < GATE_MAX
            });
        if !hold {
            w.gate = None;
        }
        hold
    }

    /// The shell wrote generation `generation` (or failed to).
    pub(super) fn reservations_written(&mut self, generation: u64, error: Option<String>) {
        let w = &mut self.seq_wait;
        if let Some(e) = error {
            w.failed = true;
            // What is held goes out unable to send; nothing else waits.
            w.gate = None;
            // The datapath stops at its current limits (counted as 45)
            // rather than risk a nonce that is not on disk.
            if w.error_logged
                .is_none_or(|t| self.now.saturating_duration_since(t) >= ERROR_EVERY)
            {
                error!(
                    "cannot extend outbound sequence reservations: {e}; tunnels stop sending when their reserved numbers run out"
                );
                w.error_logged = Some(self.now);
            }
            return;
        }
        w.durable = w.durable.max(generation);
        if generation >= self.seq.generation() {
            w.in_flight = None;
        }
        self.settle_reservations();
    }

    /// Raise every limit whose reservation is on disk.
    fn settle_reservations(&mut self) {
        let durable = self.seq_wait.durable;
        self.seq_wait.raises.retain(|(g, sa, limit)| {
            if *g > durable {
                return true;
            }
            // Release: the worker's Acquire load sees the limit only after
            // the shell reported the write.
            sa.raise_limit(*limit);
            false
        });
    }
}
