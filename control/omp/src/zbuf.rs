//! Growing a zeroizing buffer without leaving copies behind.
//!
//! `Zeroizing<Vec<u8>>` wipes its allocation when dropped, but
//! `extend_from_slice` past the capacity reallocates, and the allocator
//! frees the old block as it is: a frame with a TLOC key stays readable in
//! freed memory. [`extend`] grows into a new zeroizing buffer instead and
//! drops (wipes) the old one.

use zeroize::Zeroizing;

/// Appends `data` to `buf`; when `buf` must grow, its bytes move to a new
/// allocation (at least twice the capacity) and the old one is zeroized.
pub fn extend(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let need = buf.len() + data.len();
    if need > buf.capacity() {
        let mut grown = Zeroizing::new(Vec::with_capacity(need.max(2 * buf.capacity())));
        grown.extend_from_slice(buf);
        // The old allocation is wiped as `grown` (now holding it) drops.
        std::mem::swap(buf, &mut grown);
    }
    buf.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_without_reallocating_in_place() {
        let mut b = Zeroizing::new(Vec::with_capacity(4));
        extend(&mut b, b"abc");
        let first = b.as_ptr();
        extend(&mut b, b"d");
        assert_eq!(b.as_ptr(), first, "fits: same allocation");
        extend(&mut b, b"efgh");
        assert_eq!(&b[..], b"abcdefgh");
        assert!(b.capacity() >= 8);
        // Every growth past the capacity is a fresh buffer (the old one
        // was dropped as a Zeroizing, so wiped), never Vec's own realloc.
        let cap = b.capacity();
        let before = b.as_ptr();
        extend(&mut b, &vec![7u8; cap]);
        assert_ne!(b.as_ptr(), before);
        assert_eq!(b.len(), 8 + cap);
    }
}
