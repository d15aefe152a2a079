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

/// Nanoseconds per allocate + fill + free of `size` bytes through `a`,
/// with a doubling reallocation before the free if `grow`.
fn cycle(a: &dyn Alloc, size: usize, grow: bool) -> f64 {
    let layout = Layout::from_size_align(size, 16).unwrap();
    let grown = Layout::from_size_align(2 * size, 16).unwrap();
    let t = Instant::now();
    for i in 0..N {
        // SAFETY: valid non-zero layouts; each block is freed with its own.
        unsafe {
            let mut p = a.alloc(layout);
            std::ptr::write_bytes(p, i as u8 | 1, size);
            let mut l = layout;
            if grow {
                p = a.realloc(p, layout, grown.size());
                l = grown;
            }
            black_box(p);
            a.dealloc(p, l);
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
        for (name, grow) in [
            ("alloc+fill+free", false),
            ("alloc+fill+realloc(x2)+free", true),
        ] {
            let (mut best_s, mut best_z) = (f64::MAX, f64::MAX);
            for _ in 0..15 {
                best_s = best_s.min(cycle(&System, size, grow));
                best_z = best_z.min(cycle(&z, size, grow));
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
