//! A global allocator that wipes every block before it is freed.
//!
//! Memory that held key material (TLOC keys in rustls's record buffers,
//! ring's key schedules in a `Box` or an `Arc`, a `Vec` that grew by
//! reallocation, serde's buffers) would otherwise go back to the allocator
//! as it is, readable until the allocator hands it out again. With
//! [`ZeroOnFree`] as the `#[global_allocator]` no freed block keeps its
//! bytes: `dealloc` zeroes the block first, and `realloc` never leaves the
//! old block behind unwiped (it allocates the new one, copies, wipes and
//! frees the old one).
//!
//! The zeroing is `write_bytes` (memset) followed by zeroize's
//! [`optimization_barrier`], an empty `asm!` that reads the block, so the
//! compiler cannot drop the writes as dead stores before `free`.
//!
//! Cost: every free writes its block once (memset speed, about what
//! filling it cost), and a `realloc` always copies (glibc's can sometimes
//! grow in place). The datapath workers allocate nothing per packet, so
//! the cost falls on the control plane.
#![no_std]
#![warn(missing_docs)]

use core::alloc::{GlobalAlloc, Layout};

use zeroize::optimization_barrier;

/// Wraps an allocator `A`: every block is zeroed before `A` frees it.
pub struct ZeroOnFree<A>(pub A);

/// Zeroes `len` bytes at `ptr` so that the compiler keeps the writes.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    // SAFETY: the caller gives `len` writable bytes; after write_bytes
    // they are initialized, so the shared slice the barrier reads is sound.
    unsafe {
        core::ptr::write_bytes(ptr, 0, len);
        optimization_barrier(core::slice::from_raw_parts(ptr, len));
    }
}

// SAFETY: every block comes from `A` with the caller's layout and goes back
// to `A` with the same layout; wiping writes only inside the block.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ZeroOnFree<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes (the
        // caller's contract), freed only after the wipe.
        unsafe {
            wipe(ptr, layout.size());
            self.0.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The inner realloc may move the block and free the old one as it
        // is: always move by hand instead, so the old block is wiped.
        // SAFETY: the caller guarantees `new_size` is non-zero and forms a
        // valid layout with `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid non-zero layout (above).
        let new = unsafe { self.0.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct, each at least
            // `min` bytes; the old one is wiped and freed with its layout.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        // On failure the old block stays the caller's, untouched.
        new
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{alloc::System, sync::Mutex, vec::Vec};

    use super::*;

    /// An inner allocator (over the system's) that records, for every
    /// block it frees, whether the block's bytes were all zero by then.
    struct Recording {
        /// (address, size, all bytes zero) of each freed block.
        freed: Mutex<Vec<(usize, usize, bool)>>,
    }

    unsafe impl GlobalAlloc for Recording {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let bytes = unsafe { core::slice::from_raw_parts(ptr, layout.size()) };
            let zero = bytes.iter().all(|&b| b == 0);
            self.freed
                .lock()
                .unwrap()
                .push((ptr as usize, layout.size(), zero));
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    fn recording() -> ZeroOnFree<Recording> {
        ZeroOnFree(Recording {
            freed: Mutex::new(Vec::new()),
        })
    }

    /// A block filled with a pattern with no zero byte.
    unsafe fn filled(a: &ZeroOnFree<Recording>, layout: Layout) -> *mut u8 {
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        for i in 0..layout.size() {
            unsafe { p.add(i).write(0xa5 ^ (i as u8 & 0x0f)) };
        }
        p
    }

    #[test]
    fn every_freed_block_is_zero_when_the_inner_allocator_gets_it() {
        let a = recording();
        for size in [1usize, 7, 36, 64, 4096, 16 * 1024 + 5, 1 << 20] {
            let layout = Layout::from_size_align(size, 16).unwrap();
            let p = unsafe { filled(&a, layout) };
            unsafe { a.dealloc(p, layout) };
            let freed = a.0.freed.lock().unwrap().pop().unwrap();
            assert_eq!(freed, (p as usize, size, true), "size {size}");
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_and_wipes_the_old_block() {
        let a = recording();
        // Growing (as Vec does) and shrinking (as shrink_to does).
        for (old, new) in [
            (36usize, 72usize),
            (4096, 16 * 1024),
            (16 * 1024, 4096),
            (64, 8),
        ] {
            let layout = Layout::from_size_align(old, 8).unwrap();
            let p = unsafe { filled(&a, layout) };
            let q = unsafe { a.realloc(p, layout, new) };
            assert!(!q.is_null());
            let kept = unsafe { core::slice::from_raw_parts(q, old.min(new)) };
            for (i, &b) in kept.iter().enumerate() {
                assert_eq!(b, 0xa5 ^ (i as u8 & 0x0f), "byte {i} of {old} -> {new}");
            }
            let freed = a.0.freed.lock().unwrap().clone();
            assert_eq!(freed, [(p as usize, old, true)], "{old} -> {new}");
            a.0.freed.lock().unwrap().clear();
            unsafe { a.dealloc(q, Layout::from_size_align(new, 8).unwrap()) };
            assert_eq!(
                a.0.freed.lock().unwrap().pop(),
                Some((q as usize, new, true))
            );
        }
    }

    #[test]
    fn a_key_in_a_vec_that_grows_and_drops_leaves_no_freed_copy() {
        // The bytes a Vec held, through its own growth (realloc) and drop,
        // as the global allocator sees them.
        let a = recording();
        let key = [0x5cu8; 36];
        let mut layout = Layout::from_size_align(8, 1).unwrap();
        let mut p = unsafe { a.alloc(layout) };
        let mut len = 0;
        for _ in 0..20 {
            if len + key.len() > layout.size() {
                let grown = 2 * (len + key.len());
                p = unsafe { a.realloc(p, layout, grown) };
                layout = Layout::from_size_align(grown, 1).unwrap();
            }
            unsafe { core::ptr::copy_nonoverlapping(key.as_ptr(), p.add(len), key.len()) };
            len += key.len();
        }
        unsafe { a.dealloc(p, layout) };
        let freed = a.0.freed.lock().unwrap();
        assert!(freed.len() >= 5, "{freed:?}");
        assert!(freed.iter().all(|f| f.2), "{freed:?}");
    }
}
