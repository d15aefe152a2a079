//! Cache prefetch hints, as VPP's `clib_prefetch_load`: the batched decap
//! looks up a whole batch's SAs and asks for their cache lines before it
//! reads them, so the misses of 64 frames overlap instead of queueing one
//! after another (with a million SAs every lookup step misses).
//!
//! A prefetch is only a hint: it never faults and never changes what the
//! program computes, so a wrong or stale address costs nothing but the
//! hint. No-ops on architectures without one here.
#![allow(unsafe_code)]

/// Ask for the cache line holding `*p`.
#[inline(always)]
pub(crate) fn line<T: ?Sized>(p: &T) {
    addr((p as *const T).cast::<u8>());
}

#[inline(always)]
fn addr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint; it does not access memory
    // architecturally and cannot fault, whatever `p` is.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
