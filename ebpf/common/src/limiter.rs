//! A log-line rate limit per key (a peer's address, an address and a kind),
//! with bounded memory: what the IKE and OMP cores use for lines about what
//! a network peer did. No I/O; the caller passes the time.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Slot {
    last: Instant,
    suppressed: u64,
}

/// At most one line per key per interval; the lines held back are counted
/// and handed to the next line of that key. At most `max_keys` keys are
/// tracked: past that, keys whose interval has ended are forgotten (their
/// counts unreported), and if every key is still recent the newcomers share
/// one overflow key the caller names.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    interval: Duration,
    max_keys: usize,
    slots: HashMap<K, Slot>,
}

impl<K: Hash + Eq> KeyedLimiter<K> {
    /// One line per key per `interval`, at most `max_keys` keys (plus the
    /// overflow key).
    pub fn new(interval: Duration, max_keys: usize) -> KeyedLimiter<K> {
        KeyedLimiter {
            interval,
            max_keys,
            slots: HashMap::new(),
        }
    }

    /// May a line about `key` go out at `now`? `Some(n)`: yes, and `n`
    /// lines of this key were held back since its last one; `None`: held
    /// back (and counted). `overflow` is the key used when the table is
    /// full of recent keys.
    pub fn allow(&mut self, now: Instant, key: K, overflow: impl FnOnce() -> K) -> Option<u64> {
        let interval = self.interval;
        let recent = move |s: &Slot| now.saturating_duration_since(s.last) < interval;
        let mut key = key;
        if !self.slots.contains_key(&key) && self.slots.len() >= self.max_keys {
            self.slots.retain(|_, s| recent(s));
            if self.slots.len() >= self.max_keys {
                key = overflow();
            }
        }
        match self.slots.get_mut(&key) {
            Some(s) if recent(s) => {
                s.suppressed = s.suppressed.saturating_add(1);
                None
            }
            Some(s) => {
                s.last = now;
                Some(core::mem::take(&mut s.suppressed))
            }
            None => {
                self.slots.insert(
                    key,
                    Slot {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No key tracked.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn one_line_per_key_per_interval_and_the_rest_counted() {
        let mut l = KeyedLimiter::new(S, 8);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert_eq!(l.allow(t0, 'a', || '*'), Some(0));
        for i in 1..=5 {
            assert_eq!(l.allow(ms(100 * i), 'a', || '*'), None);
        }
        // Another key is not held back by the first.
        assert_eq!(l.allow(ms(500), 'b', || '*'), Some(0));
        assert_eq!(l.allow(ms(1000), 'a', || '*'), Some(5));
        assert_eq!(l.allow(ms(1500), 'a', || '*'), None);
        assert_eq!(l.allow(ms(3000), 'a', || '*'), Some(1));
    }

    #[test]
    fn memory_is_bounded_and_newcomers_share_the_overflow_key() {
        let mut l = KeyedLimiter::new(S, 100);
        let t0 = Instant::now();
        for k in 0..150u32 {
            l.allow(t0, k, || u32::MAX);
        }
        // Every key recent: the 50 newcomers share one slot, which let the
        // first through and held back the other 49.
        assert_eq!(l.len(), 101);
        assert_eq!(l.allow(t0, 7777, || u32::MAX), None);
        // Once the interval is over, old keys are forgotten.
        assert_eq!(l.allow(t0 + 2 * S, 5000, || u32::MAX), Some(0));
        assert_eq!(l.len(), 1);
    }
}
