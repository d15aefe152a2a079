//! What wiping on free costs: nanoseconds per allocate + fill + free and
//! per doubling reallocation, for block sizes the control plane uses (an
//! OMP frame, rustls's 4 KiB and 16 KiB record buffers, a 64 KiB show),
//! through the system allocator alone and through [`ZeroOnFree`]; each
//! case's fastest of 15 interleaved rounds (other processes only ever add
//! time). `cargo run --release -p xdpsec-zalloc --example cost`.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    time::Instant,
};

use xdpsec_zalloc::ZeroOnFree;

const N: usize = 20_000;

fn fill_free(a: &dyn Alloc, size: usize) -> f64 {
    let layout = Layout::from_size_align(size, 16).unwrap();
    let t = Instant::now();
    for i in 0..N {
        // SAFETY: a valid non-zero layout; the block is freed with it.
        unsafe {
            let p = a.alloc(layout);
            std::ptr::write_bytes(p, i as u8 | 1, size);
            black_box(p);
            a.dealloc(p, layout);
        }
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

fn grow(a: &dyn Alloc, size: usize) -> f64 {
    let layout = Layout::from_size_align(size, 16).unwrap();
    let t = Instant::now();
    for i in 0..N {
        // SAFETY: as above; realloc to a valid larger size.
        unsafe {
            let p = a.alloc(layout);
            std::ptr::write_bytes(p, i as u8 | 1, size);
            let q = a.realloc(p, layout, 2 * size);
            black_box(q);
            a.dealloc(q, Layout::from_size_align(2 * size, 16).unwrap());
        }
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

fn main() {
    let z = ZeroOnFree(System);
    println!(
        "{:<34} {:>10} {:>10} {:>7}",
        "case", "system ns", "zeroing ns", "ratio"
    );
    for size in [128usize, 4096, 16 * 1024, 64 * 1024] {
        for (name, f) in [
            ("alloc+fill+free", fill_free as fn(&dyn Alloc, usize) -> f64),
            ("alloc+fill+realloc(x2)+free", grow),
        ] {
            let (mut best_s, mut best_z) = (f64::MAX, f64::MAX);
            for _ in 0..15 {
                best_s = best_s.min(f(&System as &dyn Alloc, size));
                best_z = best_z.min(f(&z as &dyn Alloc, size));
            }
            println!(
                "{:<34} {:>10.0} {:>10.0} {:>7.2}",
                format!("{name} {size}"),
                best_s,
                best_z,
                best_z / best_s
            );
        }
    }
}

/// Object-safe view of an allocator, so both run through the same code.
trait Alloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8;
    unsafe fn dealloc(&self, p: *mut u8, l: Layout);
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8;
}

impl<A: GlobalAlloc> Alloc for A {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        unsafe { GlobalAlloc::alloc(self, l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { GlobalAlloc::dealloc(self, p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        unsafe { GlobalAlloc::realloc(self, p, l, n) }
    }
}
