//! Per-source rate limit of log lines about what a peer did: a source that
//! loops (reconnects with a refused certificate, stalls its handshakes,
//! claims another edge's system-ip) gets at most one line per interval; the
//! lines it did not get are counted in its next one.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use xdpsec_common::limiter::KeyedLimiter;

/// Log lines about one source: at most one a second (ours; a refused edge
/// retries after 1 s at the earliest, so an honest one loses no line).
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Sources tracked at once (ours). Past this, sources whose interval has
/// ended are forgotten; if all are recent (a flood from more sources than
/// this within one interval), new sources share one slot, the unspecified
/// address.
pub const MAX_SOURCES: usize = 4096;

/// The limiter: bounded memory ([`MAX_SOURCES`] sources), no I/O.
#[derive(Debug)]
pub struct LogLimiter(KeyedLimiter<IpAddr>);

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(LOG_INTERVAL)
    }
}

impl LogLimiter {
    /// At most one line per source per `interval`.
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter(KeyedLimiter::new(interval, MAX_SOURCES))
    }

    /// Whether a line about `source` may be written at `now`: `Some` with
    /// the suffix to append (empty, or how many lines were suppressed
    /// since the last one), `None` when it is suppressed (and counted).
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> Option<String> {
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        self.0.allow(now, source, || unspecified).map(suffix)
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No source tracked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn suffix(n: u64) -> String {
    match n {
        0 => String::new(),
        k => format!(" ({k} more from this source suppressed)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_interval_and_the_rest_counted() {
        let mut l = LogLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(l.allow(t0, a).as_deref(), Some(""));
        for i in 1..=5 {
            assert_eq!(l.allow(t0 + Duration::from_millis(100 * i), a), None);
        }
        // Another source is not held back by the first.
        assert_eq!(
            l.allow(t0 + Duration::from_millis(500), b).as_deref(),
            Some("")
        );
        let next = l.allow(t0 + Duration::from_secs(1), a);
        assert_eq!(
            next.as_deref(),
            Some(" (5 more from this source suppressed)")
        );
        assert_eq!(l.allow(t0 + Duration::from_millis(1500), a), None);
        assert_eq!(
            l.allow(t0 + Duration::from_secs(3), a).as_deref(),
            Some(" (1 more from this source suppressed)")
        );
    }

    #[test]
    fn memory_is_bounded_by_the_slot_count() {
        let mut l = LogLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.allow(t0, ip);
        }
        // Every source recent: the newcomers share the unspecified slot,
        // which lets one line through and counts the rest.
        assert_eq!(l.len(), MAX_SOURCES + 1);
        // Once the interval is over, old sources are forgotten.
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!(
            l.allow(t0 + Duration::from_secs(2), ip).as_deref(),
            Some("")
        );
        assert_eq!(l.len(), 1);
    }
}
