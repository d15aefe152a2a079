//! The hot paths the benchmarks measure allocate nothing per packet:
//! `decap_batch` and `encap`, after their first call, make no heap
//! allocation (counted by a global allocator, per thread). The xdpsec
//! binary's allocator wipes every freed block (xdpsec-zalloc), a cost
//! that must stay off the packet path.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    time::Duration,
};

use xdpsec_benches::{inner_packet, table, templates};
use xdpsec_datapath::{MAX_BATCH, Verdict, WorkerState, decap_batch, encap};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALLOCS.with(|c| c.set(c.get() + 1));
}

// SAFETY: passes every call on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

#[test]
fn decap_and_encap_allocate_nothing_per_packet() {
    for n_sas in [1, 10_000] {
        let t = table(n_sas, 4 * MAX_BATCH);
        let tmpl = templates(&t, 512, 4);
        let snap = t.snapshot();
        let mut ws = WorkerState::new(0);
        let mut out = vec![Verdict::Handoff(0); MAX_BATCH];
        let mut frames: Vec<Vec<u8>> = tmpl[0].clone();
        let inner = inner_packet(512);
        let mut buf = vec![0u8; 2048];
        // Round 0 warms up (a worker may make its state for an SA on first
        // use); rounds 1.. are counted.
        let mut before = 0;
        for round in 0..51 {
            if round == 1 {
                before = allocs();
            }
            for b in &tmpl {
                for (f, src) in frames.iter_mut().zip(b) {
                    f.copy_from_slice(src);
                }
                decap_batch(&mut ws, &snap, &mut frames, &mut out, Duration::ZERO);
                assert!(
                    out.iter().all(|v| matches!(v, Verdict::Deliver { .. })),
                    "{n_sas} SAs, round {round}: {:?}",
                    out[0]
                );
            }
            for k in 0..4 * MAX_BATCH as u32 {
                encap(&mut ws, &snap, k, &inner, &mut buf).unwrap();
            }
        }
        assert_eq!(
            allocs() - before,
            0,
            "{n_sas} SAs: heap allocations in 50 x {} decaps and as many encaps",
            4 * MAX_BATCH
        );
    }
}
