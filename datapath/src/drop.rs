//! The closed set of drop reasons, numbered and named as IOS XE's QFP prints
//! them in `show platform hardware qfp active feature ipsec datapath drops`,
//! and the per-worker counters indexed by them.
//!
//! Counter design: each worker owns one [`DropCounters`] (inside an `Arc`
//! it shares with control) and is its only writer: it bumps a counter with a
//! Relaxed load + Relaxed store, no read-modify-write instruction needed.
//! Control reads every worker's counters with Relaxed loads and sums them
//! ([`DropStats`]), without locks and without stopping the workers.
//! Clearing (`clear ... drops`) never writes to a worker's counters (that
//! would race with the single writer); control instead records the current
//! sums as a baseline and reports `sum - baseline` from then on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal; )*) => {
        /// A reason the datapath dropped a packet; each carries its QFP drop
        /// type number and name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in QFP number order; `ALL[r.index()] == r`.
            pub const ALL: [DropReason; DropReason::COUNT] = [ $( DropReason::$variant, )* ];

            /// The QFP drop type number.
            pub const fn id(self) -> u16 {
                match self { $( DropReason::$variant => $id, )* }
            }

            /// The QFP drop type name.
            pub const fn name(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )* }
            }
        }
    };
}

drop_reasons! {
    /// Inbound IPv4 ESP whose SPI belonged to an SA deleted or expired a
    /// short while ago (still remembered, see `sa::RECENTLY_DELETED_TTL`).
    InV4HitInvalidSa = 1, "IN_V4_PKT_HIT_INVALID_SA";
    /// Inbound IPv4 ESP whose SPI is unknown (never known or long gone).
    InV4SaNotFoundSpi = 4, "IN_US_V4_PKT_SA_NOT_FOUND_SPI";
    /// IPv6 form of [`DropReason::InV4HitInvalidSa`].
    InV6HitInvalidSa = 9, "IN_V6_PKT_HIT_INVALID_SA";
    /// IPv6 form of [`DropReason::InV4SaNotFoundSpi`].
    InV6SaNotFoundSpi = 12, "IN_US_V6_PKT_SA_NOT_FOUND_SPI";
    /// Anti-replay check failed (too old or duplicate); named as the seed's
    /// router (OCT crypto engine) prints it.
    InAntiReplayFail = 19, "IN_OCT_ANTI_REPLAY_FAIL";
    /// Bad ESP padding, or a length that cannot hold header, IV, trailer and
    /// ICV (also used for truncated or inconsistent outer headers).
    InHeadPadLenErr = 23, "IN_PKT_HEADPAD_LEN_ERR";
    /// A decrypted IPv4 inner packet whose source is outside the SA's remote
    /// traffic selectors or whose destination is outside its local ones
    /// (RFC 4301 5.2 inbound policy check).
    InV4PostInputPolicyFail = 30, "IN_V4_POST_INPUT_POLICY_FAIL";
    /// IPv6 form of [`DropReason::InV4PostInputPolicyFail`] (the inner
    /// packet's version decides).
    InV6PostInputPolicyFail = 31, "IN_V6_POST_INPUT_POLICY_FAIL";
    /// Outbound IPv4 packet for a tunnel whose SA is known but not usable
    /// (deleted and not replaced).
    OutV4HitInvalidSa = 32, "OUT_V4_PKT_HIT_INVALID_SA";
    /// IPv6 form of [`DropReason::OutV4HitInvalidSa`].
    OutV6HitInvalidSa = 37, "OUT_V6_PKT_HIT_INVALID_SA";
    /// The outbound SA cannot take a sequence number right now: the control
    /// plane's sequence reservation ran out and was not extended yet, or a
    /// worker other than the SA's owner tried to encapsulate. Our choice
    /// (IOS has no drop type for a reservation): QFP's catch-all for an
    /// unexpected outbound crypto condition, kept apart from 46 (the real
    /// end of the sequence space, which needs a rekey) and from 110 (buffers).
    OutUnexpException = 45, "OUT_UNEXP_CD_SW_IPSEC_EXCEPTION";
    /// Outbound sequence number exhausted: stop sending, never wrap or reuse
    /// (RFC 4303 3.3.3). The misspelling is IOS's.
    OutSeqOverflow = 46, "OUT_CD_SW_IPSEC_DETECT_SEQ_OVEFLOW";
    /// The Ethernet header for an encapsulated packet could not be built:
    /// the next hop's MAC address is not known (yet).
    OutSettingWrongL2Hdr = 55, "OUT_SETTING_WRONG_L2_HDR";
    /// ICV (integrity) check failed.
    InMacException = 62, "IN_OCT_MAC_EXCEPTION";
    /// Decrypted next header is not 4/41, or the inner IP version disagrees.
    InNhMismatch = 65, "IN_CD_SW_IPSEC_NH_MISMATCH";
    /// The outer packet is a fragment (IPv4, and IPv6 Fragment header too).
    InV4FragErr = 70, "IN_V4_PKT_FRAG_ERR";
    /// Not IPv4/IPv6 (Ethernet type or IP version field).
    InIpVerInvalid = 89, "IN_PKT_IPVER_INVALID";
    /// The caller's output buffer is too small for the result.
    PktBufferUnavailable = 110, "PKT_BUFFER_UNAVAILABLE";
    /// Outbound IPv4 packet for a tunnel without any outbound SA.
    OutIpv4SaNotFound = 111, "OUT_IPV4_SA_NOT_FOUND";
    /// Outbound IPv6 packet for a tunnel without any outbound SA.
    OutIpv6SaNotFound = 112, "OUT_IPV6_SA_NOT_FOUND";
    /// Inbound outer IPv4 header whose header checksum is wrong. IOS's QFP
    /// has no IPsec drop type for this (its IPv4 input drops it earlier):
    /// 120 and its name are xdpsec's own, beyond IOS's numbers.
    InV4ChecksumErr = 120, "IN_V4_PKT_CHECKSUM_ERR";
    /// Authentic inbound packet whose outer ECN field is CE while the inner
    /// packet is Not-ECT: RFC 6040 section 4.2 says the decapsulator MUST
    /// drop it (its transport would not understand the mark). xdpsec's own
    /// number and name, beyond IOS's.
    InEcnCeNotEct = 121, "IN_ECN_CE_ON_NOT_ECT";
}

impl DropReason {
    /// Number of drop reasons.
    pub const COUNT: usize = 22;

    /// Position in [`DropReason::ALL`] and in counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Find a reason by its QFP number.
    pub fn from_id(id: u16) -> Option<DropReason> {
        Self::ALL.iter().copied().find(|r| r.id() == id)
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}", self.id(), self.name())
    }
}

/// Plain drop totals, indexed by [`DropReason::index`].
pub type DropTotals = [u64; DropReason::COUNT];

/// One worker's drop counters: written by that worker only, read by anyone.
#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DropReason::COUNT]);

impl DropCounters {
    /// All zero.
    pub fn new() -> DropCounters {
        DropCounters::default()
    }

    /// Count one drop. Only the owning worker may call this (single writer:
    /// a load and a store instead of an atomic read-modify-write).
    #[inline]
    pub fn bump(&self, reason: DropReason) {
        let c = &self.0[reason.index()];
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Set a counter whose count is kept elsewhere and mirrored here (the
    /// XDP program's early drops). Single writer, as [`DropCounters::bump`].
    pub fn store(&self, reason: DropReason, value: u64) {
        self.0[reason.index()].store(value, Ordering::Relaxed);
    }

    /// Current value of one counter.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }

    /// All counters at once (each read is atomic, the set is not a
    /// consistent cut, which counters do not need).
    pub fn snapshot(&self) -> DropTotals {
        core::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.snapshot().iter().sum()
    }
}

/// Control-side view over all workers' drop counters, with a clear baseline.
#[derive(Debug, Default)]
pub struct DropStats {
    workers: Vec<Arc<DropCounters>>,
    baseline: Mutex<DropTotals>,
}

impl DropStats {
    /// Aggregate these workers' counters.
    pub fn new(workers: Vec<Arc<DropCounters>>) -> DropStats {
        DropStats {
            workers,
            baseline: Mutex::new([0; DropReason::COUNT]),
        }
    }

    /// Raw sums over workers, ignoring the clear baseline.
    pub fn raw_totals(&self) -> DropTotals {
        let mut t = [0u64; DropReason::COUNT];
        for w in &self.workers {
            for (acc, v) in t.iter_mut().zip(w.snapshot()) {
                *acc = acc.wrapping_add(v);
            }
        }
        t
    }

    /// Sums over workers since the last [`DropStats::clear`].
    pub fn totals(&self) -> DropTotals {
        let base = *self.baseline.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = self.raw_totals();
        for (v, b) in t.iter_mut().zip(base) {
            *v = v.wrapping_sub(b);
        }
        t
    }

    /// Non-zero rows `(reason, count)` as the show command prints them
    /// without `all`.
    pub fn nonzero(&self) -> Vec<(DropReason, u64)> {
        let t = self.totals();
        DropReason::ALL
            .iter()
            .map(|&r| (r, t[r.index()]))
            .filter(|&(_, n)| n != 0)
            .collect()
    }

    /// Make every counter read as zero from now on (workers are not touched).
    pub fn clear(&self) {
        let raw = self.raw_totals();
        *self.baseline.lock().unwrap_or_else(|e| e.into_inner()) = raw;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert_eq!(DropReason::ALL.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(DropReason::from_id(r.id()), Some(*r));
        }
        // Sorted by QFP number, all distinct.
        assert!(DropReason::ALL.windows(2).all(|w| w[0].id() < w[1].id()));
        assert_eq!(DropReason::InV4HitInvalidSa.id(), 1);
        assert_eq!(
            DropReason::InV4SaNotFoundSpi.name(),
            "IN_US_V4_PKT_SA_NOT_FOUND_SPI"
        );
        assert_eq!(
            DropReason::InAntiReplayFail.to_string(),
            "19 IN_OCT_ANTI_REPLAY_FAIL"
        );
        assert_eq!(
            DropReason::OutSeqOverflow.name(),
            "OUT_CD_SW_IPSEC_DETECT_SEQ_OVEFLOW"
        );
        assert_eq!(DropReason::from_id(2), None);
        assert_eq!(
            DropReason::InV4PostInputPolicyFail.to_string(),
            "30 IN_V4_POST_INPUT_POLICY_FAIL"
        );
        assert_eq!(
            DropReason::InV6PostInputPolicyFail.to_string(),
            "31 IN_V6_POST_INPUT_POLICY_FAIL"
        );
        assert_eq!(
            DropReason::OutUnexpException.to_string(),
            "45 OUT_UNEXP_CD_SW_IPSEC_EXCEPTION"
        );
    }

    #[test]
    fn sum_and_clear() {
        let a = Arc::new(DropCounters::new());
        let b = Arc::new(DropCounters::new());
        let stats = DropStats::new(vec![a.clone(), b.clone()]);
        for _ in 0..3 {
            a.bump(DropReason::InV4SaNotFoundSpi);
        }
        b.bump(DropReason::InV4SaNotFoundSpi);
        b.bump(DropReason::InAntiReplayFail);
        let t = stats.totals();
        assert_eq!(t[DropReason::InV4SaNotFoundSpi.index()], 4);
        assert_eq!(t[DropReason::InAntiReplayFail.index()], 1);
        assert_eq!(
            stats.nonzero(),
            vec![
                (DropReason::InV4SaNotFoundSpi, 4),
                (DropReason::InAntiReplayFail, 1)
            ]
        );
        stats.clear();
        assert!(stats.nonzero().is_empty());
        a.bump(DropReason::InAntiReplayFail);
        assert_eq!(stats.nonzero(), vec![(DropReason::InAntiReplayFail, 1)]);
        // Workers' own counters were never reset.
        assert_eq!(a.get(DropReason::InV4SaNotFoundSpi), 3);
        assert_eq!(stats.raw_totals().iter().sum::<u64>(), 6);
    }

    #[test]
    fn concurrent_reader_sees_monotonic_counts() {
        let c = Arc::new(DropCounters::new());
        let w = c.clone();
        let h = std::thread::spawn(move || {
            for _ in 0..100_000 {
                w.bump(DropReason::InMacException);
            }
        });
        let mut last = 0;
        while !h.is_finished() {
            let v = c.get(DropReason::InMacException);
            assert!(v >= last);
            last = v;
        }
        h.join().unwrap();
        assert_eq!(c.get(DropReason::InMacException), 100_000);
    }
}
