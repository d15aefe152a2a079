//! A small persistent (copy-on-write) hash table keyed by `u32`, used for the
//! SA snapshot so that a change copies only the path it touches.
//!
//! Two levels of 1024-wide arrays of `Arc`s over a multiplicative hash of the
//! key, then a leaf slice of rows, each carrying its key ([`Row`]; several
//! rows may share a key). Cloning the map copies the 1024 top-level pointers (8 KiB); a
//! change then copies one 1024-pointer middle node and rebuilds one leaf, so
//! a single change costs O(1024) pointer copies however many entries there
//! are, and a batch touching k leaves costs at most O(1024 * min(k, 1024)).
//! Old snapshots keep sharing every untouched node.

use std::sync::Arc;

const BITS: u32 = 10;
const FAN: usize = 1 << BITS;

type Leaf<R> = Arc<[R]>;

/// A row of a [`PMap`]: something with a `u32` key. `(key, value)` is one;
/// a row type of its own can keep the key in what would be padding.
pub(crate) trait Row: Clone {
    /// The row's key.
    fn key(&self) -> u32;
}

impl<V: Clone> Row for (u32, V) {
    #[inline]
    fn key(&self) -> u32 {
        self.0
    }
}

#[derive(Clone)]
struct Mid<R> {
    leaves: Vec<Leaf<R>>,
}

/// Persistent hash table from `u32` keys to rows `R`.
#[derive(Clone)]
pub(crate) struct PMap<R> {
    top: Vec<Arc<Mid<R>>>,
    /// The shared all-empty middle node: a slot whose leaves all became
    /// empty goes back to it, so memory follows the live keys (random SPIs
    /// would otherwise leave a 16 KiB middle node behind in every slot
    /// they ever touched).
    empty: Arc<Mid<R>>,
    len: usize,
}

#[inline]
fn slots(key: u32) -> (usize, usize) {
    // Fibonacci hashing spreads sequential and random SPIs alike.
    let h = key.wrapping_mul(0x9e37_79b1);
    (
        (h >> (32 - BITS)) as usize,
        ((h >> (32 - 2 * BITS)) as usize) & (FAN - 1),
    )
}

impl<R: Row> PMap<R> {
    /// An empty map: every slot shares one empty middle node and leaf.
    pub(crate) fn new() -> PMap<R> {
        let empty_leaf: Leaf<R> = Arc::from(Vec::new());
        let mid = Arc::new(Mid {
            leaves: vec![empty_leaf; FAN],
        });
        PMap {
            top: vec![Arc::clone(&mid); FAN],
            empty: mid,
            len: 0,
        }
    }

    /// Number of rows.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// All rows whose key hashes to the same leaf as `key` (filter by key).
    #[inline]
    pub(crate) fn bucket(&self, key: u32) -> &[R] {
        let (a, b) = slots(key);
        &self.top[a].leaves[b]
    }

    /// Prefetch step 1: the leaf pointer of `key` (its middle node's slot).
    #[inline]
    pub(crate) fn prefetch_slot(&self, key: u32) {
        let (a, b) = slots(key);
        crate::prefetch::line(&self.top[a].leaves[b]);
    }

    /// Prefetch step 2 (after step 1 had time): the first rows of `key`'s
    /// leaf.
    #[inline]
    pub(crate) fn prefetch_rows(&self, key: u32) {
        if let Some(first) = self.bucket(key).first() {
            crate::prefetch::line(first);
        }
    }

    /// Rebuild the leaf of `key` with `f` (which may add or remove rows).
    pub(crate) fn update(&mut self, key: u32, f: impl FnOnce(&mut Vec<R>)) {
        let (a, b) = slots(key);
        let mid = Arc::make_mut(&mut self.top[a]);
        let mut rows: Vec<R> = mid.leaves[b].to_vec();
        let before = rows.len();
        f(&mut rows);
        // Every row must live in its own key's leaf, or lookups miss it.
        debug_assert!(rows.iter().all(|r| slots(r.key()) == (a, b)));
        self.len = self.len + rows.len() - before;
        let now_empty = rows.is_empty();
        mid.leaves[b] = Arc::from(rows);
        if now_empty && mid.leaves.iter().all(|l| l.is_empty()) {
            self.top[a] = Arc::clone(&self.empty);
        }
    }

    /// Middle nodes of their own (not the shared empty one).
    #[cfg(test)]
    fn own_mids(&self) -> usize {
        self.top
            .iter()
            .filter(|m| !Arc::ptr_eq(m, &self.empty))
            .count()
    }

    /// Iterate over all rows (control-plane use only; O(n + 2^20)).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &R> {
        self.top
            .iter()
            .flat_map(|m| m.leaves.iter().flat_map(|l| l.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_on_write_keeps_old_versions() {
        let mut a: PMap<(u32, u64)> = PMap::new();
        for k in 0..5000u32 {
            a.update(k, |rows| rows.push((k, u64::from(k) * 3)));
        }
        let old = a.clone();
        a.update(42, |rows| rows.retain(|r| r.0 != 42));
        a.update(7, |rows| rows.push((7, 1)));
        assert_eq!(a.len(), 5000);
        assert_eq!(old.len(), 5000);
        assert!(a.bucket(42).iter().all(|r| r.0 != 42));
        assert!(old.bucket(42).contains(&(42, 126)));
        assert_eq!(a.bucket(7).iter().filter(|r| r.0 == 7).count(), 2);
        assert_eq!(old.bucket(7).iter().filter(|r| r.0 == 7).count(), 1);
        assert_eq!(a.iter().count(), 5000);
    }

    #[test]
    fn emptied_slots_share_the_empty_node_again() {
        let mut m: PMap<(u32, u8)> = PMap::new();
        // Random-looking keys, as SPIs are: most land in slots of their own.
        let keys: Vec<u32> = (1..=300u32).map(|i| i.wrapping_mul(0x2545_f491)).collect();
        for &k in &keys {
            m.update(k, |rows| rows.push((k, 1)));
        }
        assert!(m.own_mids() > 200, "{}", m.own_mids());
        for &k in &keys {
            m.update(k, |rows| rows.retain(|r| r.0 != k));
        }
        assert_eq!(m.len(), 0);
        assert_eq!(m.own_mids(), 0, "every slot back on the shared empty node");
        // And the map still works.
        m.update(7, |rows| rows.push((7, 2)));
        assert_eq!(m.bucket(7), &[(7, 2)]);
        assert_eq!(m.own_mids(), 1);
    }
}
