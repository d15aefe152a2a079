//! Every fuzz target over its corpus (`fuzz/corpus/<target>/`: seeds and
//! every crashing input found), then over seeded random mutations of it
//! for a bounded time, in whatever profile the test runs in (`cargo xtask
//! test` runs it in the test profile: overflow checks and debug
//! assertions on). No cargo-fuzz, no nightly: `cargo xtask fuzz` is the
//! long run.
//!
//! `XDPSEC_FUZZ_MS` sets the mutation time per target (default 2000 ms),
//! `XDPSEC_FUZZ_SEED` the seed (default: a fixed one under `cargo xtask
//! test` and CI, so a landing gate is repeatable; from the clock
//! otherwise; printed, so a failure can be replayed). A failing input is written to
//! `target/fuzz-failures/<target>/` to be added to the corpus.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xdpsec_fuzz::TARGETS;
use xdpsec_fuzz::mutate::{Rng, mutate};

/// libFuzzer's default -max_len.
const MAX_LEN: usize = 4096;

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("corpus entry").path();
            let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Runs `body` on `input`; on a panic, saves the input and says where.
fn run_one(name: &str, body: fn(&[u8]), input: &[u8], what: &str) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| body(input))).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/fuzz-failures")
            .join(name);
        let _ = std::fs::create_dir_all(&dir);
        let digest = ring::digest::digest(&ring::digest::SHA256, input);
        let hex: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = dir.join(format!("crash-{hex}"));
        let _ = std::fs::write(&path, input);
        format!(
            "{name}: {what} panicked ({msg}); input saved as {}",
            path.display()
        )
    })
}

fn check(name: &str) {
    let body = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .expect("a target");
    let inputs = corpus(name);
    assert!(!inputs.is_empty(), "{name}: empty corpus");
    let mut failures = Vec::new();
    let started = Instant::now();
    for (path, input) in &inputs {
        if let Err(e) = run_one(name, body, input, &path.display().to_string()) {
            failures.push(e);
        }
    }
    let replay = started.elapsed();
    let ms: u64 = std::env::var("XDPSEC_FUZZ_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("XDPSEC_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            if std::env::var_os("CI").is_some() || std::env::var_os("XDPSEC_REQUIRE_ALL").is_some()
            {
                return 0x5eed_cafe;
            }
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_millis(ms);
    let mut runs = 0u64;
    while Instant::now() < deadline && failures.len() < 3 {
        let a = &inputs[rng.below(inputs.len())].1;
        let b = &inputs[rng.below(inputs.len())].1;
        let m = mutate(&mut rng, a, b, MAX_LEN);
        runs += 1;
        if let Err(e) = run_one(name, body, &m, &format!("mutation {runs} of seed {seed}")) {
            failures.push(e);
        }
    }
    println!(
        "{name}: {} corpus inputs in {:.2} s, then {runs} mutations in {ms} ms (XDPSEC_FUZZ_SEED={seed})",
        inputs.len(),
        replay.as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

macro_rules! targets {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            check(stringify!($name));
        }
    )*
    /// Every body has its test here and its cargo-fuzz target, and every
    /// cargo-fuzz target is a body.
    #[test]
    fn every_target_has_a_test_and_a_cargo_fuzz_target() {
        let tested = [$(stringify!($name)),*];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("libfuzzer/fuzz_targets");
        for (n, _) in TARGETS {
            assert!(tested.contains(n), "target {n} has no corpus test");
            assert!(dir.join(format!("{n}.rs")).exists(), "target {n} has no cargo-fuzz target");
        }
        for e in std::fs::read_dir(&dir).expect("fuzz_targets") {
            let p = e.expect("entry").path();
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            assert!(TARGETS.iter().any(|(n, _)| *n == stem), "{} is no body of xdpsec-fuzz", p.display());
        }
    }
    };
}

targets!(
    decap,
    ike_wire,
    ike_core,
    omp_wire,
    omp_controller,
    omp_edge,
    bfd
);
