//! Per-packet cost of the decap pipeline beside bare `ring` AES-256-GCM
//! open of the same bytes, without criterion:
//!
//! - `decap_cost callgrind [--batches K]`: run under `valgrind
//!   --tool=callgrind --instr-atstart=no --collect-atstart=no` (what `cargo
//!   xtask bench --callgrind` does). Set-up runs uninstrumented; each case
//!   then decapsulates K batches of 64 frames with only the decap (or the
//!   bare opens) collected, not the copy of the template frames, and dumps
//!   its counts as `callgrind.out.*` parts named after the case. The
//!   instruction count does not move with machine noise.
//! - `decap_cost time [--batches K] [--rounds R]`: the same cases natively,
//!   rounds interleaved, each case's fastest round (other processes only
//!   ever add time), as ns per packet and ratios.
//!
//! Cases: 64 and 1400 B payloads; 1 SA; 1,000,000 SAs with the same 64
//! SAs in every batch (the criterion bench's case); and 1,000,000 SAs with
//! every batch going to 64 other SAs (256 template batches, 16,384 SAs
//! whose state does not stay in the caches: the case prefetching is for).
//! The replay window is off (the frames are fed again and again).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use xdpsec_benches::{ESP_OFFSET, KEY, table, templates};
use xdpsec_datapath::{MAX_BATCH, SaTable, Verdict, WorkerState, decap_batch};

/// Valgrind client requests (valgrind.h / callgrind.h): the magic
/// instruction sequence is a no-op when not running under valgrind.
mod vg {
    const BASE: u64 = ((b'C' as u64) << 24) | ((b'T' as u64) << 16);
    const ZERO_STATS: u64 = BASE + 1;
    const TOGGLE_COLLECT: u64 = BASE + 2;
    const DUMP_STATS_AT: u64 = BASE + 3;
    const START_INSTRUMENTATION: u64 = BASE + 4;

    #[cfg(target_arch = "x86_64")]
    fn request(req: u64, arg: u64) {
        let args: [u64; 6] = [req, arg, 0, 0, 0, 0];
        // SAFETY: the rotations of rdi add up to 128 bits (rdi unchanged,
        // declared clobbered anyway) and `xchg rbx, rbx` changes nothing;
        // valgrind recognises the sequence and reads `args` through rax.
        unsafe {
            core::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") args.as_ptr(),
                inout("rdx") 0u64 => _,
                inout("rdi") 0u64 => _,
                options(nostack),
            );
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn request(_req: u64, _arg: u64) {}

    pub fn start_instrumentation() {
        request(START_INSTRUMENTATION, 0);
    }
    pub fn zero_stats() {
        request(ZERO_STATS, 0);
    }
    pub fn toggle_collect() {
        request(TOGGLE_COLLECT, 0);
    }
    /// Dump the counts since the last zero as a part named `name`.
    pub fn dump_stats_at(name: &str) {
        let c = std::ffi::CString::new(name).expect("no NUL");
        request(DUMP_STATS_AT, c.as_ptr() as u64);
    }
}

/// Template batches cycled through by the rotating case.
const ROTATING: usize = 256;

struct Case<'t> {
    name: String,
    table: &'t SaTable,
    templates: Vec<Vec<Vec<u8>>>,
}

/// The two tables: 1 SA, and 1,000,000 SAs (or none with `quick`).
fn tables(quick: bool) -> [SaTable; 2] {
    if quick {
        return [table(1, MAX_BATCH), SaTable::new()];
    }
    eprintln!("[decap_cost] setting up 1 SA and 1,000,000 SAs");
    [table(1, MAX_BATCH), table(1_000_000, ROTATING * MAX_BATCH)]
}

fn cases(t: &[SaTable; 2]) -> Vec<Case<'_>> {
    let mut v = Vec::new();
    for payload in [64usize, 1400] {
        v.push(Case {
            name: format!("{payload}B/1sa"),
            table: &t[0],
            templates: templates(&t[0], payload, 1),
        });
        if t[1].snapshot().inbound_len() == 0 {
            continue;
        }
        let rotating = templates(&t[1], payload, ROTATING);
        // The first batch of the rotating ones: the criterion bench's case.
        v.push(Case {
            name: format!("{payload}B/1Msa"),
            table: &t[1],
            templates: rotating[..1].to_vec(),
        });
        v.push(Case {
            name: format!("{payload}B/1Msa-rotating"),
            table: &t[1],
            templates: rotating,
        });
    }
    v
}

fn copy_in(frames: &mut [Vec<u8>], template: &[Vec<u8>]) {
    for (f, t) in frames.iter_mut().zip(template) {
        f.clear();
        f.extend_from_slice(t);
    }
}

fn ring_open_batch(key: &LessSafeKey, frames: &mut [Vec<u8>]) {
    for f in frames {
        let (hdr, rest) = f[ESP_OFFSET..].split_at_mut(16);
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&KEY[32..]);
        nonce[4..].copy_from_slice(&hdr[8..16]);
        let r = key.open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&hdr[..8]),
            rest,
        );
        black_box(r.is_ok());
    }
}

/// Everything a case runs with.
struct Runner<'a> {
    case: &'a Case<'a>,
    ws: WorkerState,
    frames: Vec<Vec<u8>>,
    out: Vec<Verdict>,
    key: &'a LessSafeKey,
}

impl<'a> Runner<'a> {
    fn new(case: &'a Case<'a>, key: &'a LessSafeKey) -> Runner<'a> {
        let mut r = Runner {
            case,
            ws: WorkerState::new(0),
            frames: (0..MAX_BATCH).map(|_| Vec::with_capacity(2048)).collect(),
            out: vec![Verdict::Handoff(0); MAX_BATCH],
            key,
        };
        // Sanity (and first-use set-up out of the way): every frame of every
        // template decapsulates.
        for t in 0..case.templates.len() {
            r.copy(t);
            r.pipeline();
            assert!(
                r.out.iter().all(|v| matches!(v, Verdict::Deliver { .. })),
                "{}: {:?}",
                case.name,
                r.out[0]
            );
        }
        r
    }

    fn copy(&mut self, batch: usize) {
        let t = &self.case.templates[batch % self.case.templates.len()];
        copy_in(&mut self.frames, t);
    }

    #[inline(never)]
    fn pipeline(&mut self) {
        let snap = self.case.table.snapshot();
        decap_batch(
            &mut self.ws,
            &snap,
            &mut self.frames,
            &mut self.out,
            Duration::ZERO,
        );
        black_box(&self.out);
    }

    #[inline(never)]
    fn ring(&mut self) {
        ring_open_batch(self.key, &mut self.frames);
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn callgrind(cases: &[Case<'_>], key: &LessSafeKey, batches: usize) {
    vg::start_instrumentation();
    for case in cases {
        for (what, pipeline) in [("pipeline", true), ("ring_open", false)] {
            let mut r = Runner::new(case, key);
            vg::zero_stats();
            for b in 0..batches {
                r.copy(b);
                vg::toggle_collect();
                if pipeline {
                    r.pipeline();
                } else {
                    r.ring();
                }
                vg::toggle_collect();
            }
            // Parsed by `cargo xtask bench --callgrind`: case, batches.
            vg::dump_stats_at(&format!("{what} {} {batches}", case.name));
        }
    }
}

fn time(cases: &[Case<'_>], key: &LessSafeKey, batches: usize, rounds: usize) {
    let mut runners: Vec<Runner> = cases.iter().map(|c| Runner::new(c, key)).collect();
    // [case][pipeline, ring] -> ns per batch of each round.
    let mut ns: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; cases.len()];
    for _ in 0..rounds {
        for (i, r) in runners.iter_mut().enumerate() {
            for (k, pipeline) in [true, false].into_iter().enumerate() {
                let t = Instant::now();
                for b in 0..batches {
                    r.copy(b);
                    if pipeline {
                        r.pipeline();
                    } else {
                        r.ring();
                    }
                }
                ns[i][k].push(t.elapsed().as_nanos() as f64 / batches as f64);
            }
        }
    }
    let min = |v: &Vec<f64>| v.iter().copied().fold(f64::INFINITY, f64::min);
    let median = |v: &Vec<f64>| {
        let mut s = v.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    println!(
        "decap of {batches} batches x 64 frames (copy of the template frames included in both), fastest of {rounds} interleaved rounds; ns per packet"
    );
    println!(
        "{:<20} {:>10} {:>10} {:>8} {:>14} {:>12}",
        "case", "pipeline", "ring_open", "ratio", "pipeline med", "vs 1 SA"
    );
    for (i, c) in cases.iter().enumerate() {
        let p = min(&ns[i][0]) / MAX_BATCH as f64;
        let r = min(&ns[i][1]) / MAX_BATCH as f64;
        let one = cases
            .iter()
            .position(|o| o.name.split('/').next() == c.name.split('/').next())
            .map(|j| min(&ns[j][0]) / MAX_BATCH as f64)
            .unwrap_or(p);
        println!(
            "{:<20} {:>10.1} {:>10.1} {:>8.2} {:>14.1} {:>12.2}",
            c.name,
            p,
            r,
            p / r,
            median(&ns[i][0]) / MAX_BATCH as f64,
            p / one
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY[..32]).unwrap());
    match args.first().map(String::as_str) {
        Some("callgrind") => {
            let t = tables(args.iter().any(|a| a == "--quick"));
            let cases = cases(&t);
            callgrind(&cases, &key, arg(&args, "--batches", 20));
        }
        Some("time") => {
            let t = tables(args.iter().any(|a| a == "--quick"));
            let cases = cases(&t);
            time(
                &cases,
                &key,
                arg(&args, "--batches", 200),
                arg(&args, "--rounds", 15),
            );
        }
        _ => {
            eprintln!(
                "usage: decap_cost callgrind [--batches K] [--quick] | time [--batches K] [--rounds R] [--quick]\n(--quick: the 1-SA cases only)"
            );
            std::process::exit(2);
        }
    }
}
