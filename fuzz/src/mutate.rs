//! Seeded mutations of corpus inputs, for the bounded fuzz run of `cargo
//! xtask test` (no libFuzzer there): libFuzzer's simplest mutators (bit
//! flips, interesting bytes, inserts, deletes, copies, splices, length
//! fields nudged), driven by a xorshift generator so a failure names the
//! seed that reproduces it.

/// xorshift64* (deterministic, never zero).
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x40, 0x10];

/// `input` changed by 1 to 8 random mutations; `other` is a second corpus
/// input to splice from. At most `max_len` bytes.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = v.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next_u64() as u8;
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(at..at, ins);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                v.drain(at..at + n);
            }
            5 if len > 0 => {
                // Copy a chunk of itself elsewhere.
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(64));
                let chunk = v[from..from + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            6 if !other.is_empty() => {
                // Splice: our head, the other's tail.
                let at = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            7 if len >= 2 => {
                // Nudge a big-endian 16-bit field (lengths, counts).
                let i = rng.below(len - 1);
                let x = u16::from_be_bytes([v[i], v[i + 1]]);
                let d = [1u16, 2, 4, 8, 0x100][rng.below(5)];
                let y = if rng.below(2) == 0 {
                    x.wrapping_add(d)
                } else {
                    x.wrapping_sub(d)
                };
                v[i..i + 2].copy_from_slice(&y.to_be_bytes());
            }
            8 if len > 0 => {
                let keep = rng.below(len);
                v.truncate(keep);
            }
            _ => {}
        }
    }
    v.truncate(max_len);
    v
}
