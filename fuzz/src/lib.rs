//! The bodies of xdpsec's fuzz targets: every parser a network peer can
//! reach, and the protocol cores behind them, fed arbitrary bytes.
//!
//! Each target is a plain `fn(&[u8])` that panics on a finding (a panic in
//! the code under test, a broken invariant, state that grows past its
//! bound). `fuzz/libfuzzer` wraps each in a cargo-fuzz target (`cargo xtask
//! fuzz`); `tests/corpus.rs` replays `corpus/<target>/` (seeds and every
//! crashing input found) and a bounded run of seeded mutations of it, in
//! the test profile (overflow checks and debug assertions on), without
//! cargo-fuzz or nightly.

pub mod bfd;
pub mod decap;
pub mod ike;
pub mod mutate;
pub mod omp;

/// A target's body: panics on a finding.
pub type Body = fn(&[u8]);

/// Every target: (name, body). The name is the cargo-fuzz target's and the
/// corpus directory's.
pub const TARGETS: &[(&str, Body)] = &[
    ("decap", decap::decap),
    ("ike_wire", ike::wire),
    ("ike_core", ike::core),
    ("omp_wire", omp::wire),
    ("omp_controller", omp::controller),
    ("omp_edge", omp::edge),
    ("bfd", bfd::bfd),
];

/// Reads a fuzz input as a script: numbers and byte strings, zeros once
/// the input is used up (so every input is a valid, finite script).
pub struct Script<'a> {
    data: &'a [u8],
}

impl<'a> Script<'a> {
    /// A script over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Script { data }
    }

    /// Whether the input is used up.
    pub fn done(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 when done).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// A length-prefixed byte string: a 16-bit length, then that many bytes.
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.take(n)
    }

    /// Up to 4 (offset, xor) mutations of `buf`, then an optional truncation
    /// (as the decap target's): how scripts change valid messages.
    pub fn mutate(&mut self, buf: &mut Vec<u8>) {
        let ctl = self.u8();
        if buf.is_empty() {
            return;
        }
        for _ in 0..(ctl & 3) {
            let at = usize::from(self.u16()) % buf.len();
            buf[at] ^= self.u8();
        }
        if ctl & 4 != 0 {
            let keep = usize::from(self.u16()) % (buf.len() + 1);
            buf.truncate(keep);
        }
    }
}

/// Whether to print what the cores do (`XDPSEC_FUZZ_TRACE=1`), to read a
/// crashing input's story.
pub fn trace() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::env::var_os("XDPSEC_FUZZ_TRACE").is_some())
}
