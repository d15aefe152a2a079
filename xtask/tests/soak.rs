//! `cargo xtask soak`, its manual-tunnel phase at its shortest (two cycles
//! of four rounds, the second judged by the RSS check, about 10 s): the
//! ledger balances and the run passes; a receiver that loses frames (counts
//! them without decrypting them) makes it fail with the mismatch named; a
//! receiver that leaks (the test build's `XDPSEC_TEST_LEAK_BYTES`) makes
//! the RSS check fail. Nothing is left behind either way.
use std::process::{Command, Output};

fn soak(env: &[(&str, &str)]) -> Output {
    Command::new("timeout")
        .args(["120", env!("CARGO_BIN_EXE_xtask")])
        .args(["soak", "--seconds", "0", "--only", "manual", "--no-build"])
        .envs(env.iter().copied())
        .output()
        .expect("running xtask soak")
}

/// The run's namespaces (it names them) that still exist.
fn left_behind(text: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("manual tunnel: namespaces "))
        .expect("the soak names its namespaces");
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    line.split_whitespace()
        .filter(|ns| {
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(*ns))
        })
        .map(String::from)
        .collect()
}

#[test]
fn soak_manual_phase_balances_its_ledger_and_fails_when_frames_are_lost() {
    let ok = soak(&[]);
    let text =
        String::from_utf8_lossy(&ok.stdout).to_string() + &String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{text}");
    for line in [
        "SIGHUP reload",
        "forget-sa",
        "clear crypto sa peer",
        "daemon log without a panic: ok",
        "daemon RSS: first",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    let total = text
        .lines()
        .find(|l| l.trim_start().starts_with("total"))
        .expect("total row");
    assert!(total.ends_with("ok"), "{text}");
    assert_eq!(left_behind(&text), Vec::<String>::new());

    // The receiver only counts frames (the benchmark's ceiling mode): none
    // is decrypted nor dropped, and the soak must say so.
    let bad = soak(&[("XDPSEC_BENCH_COUNT_ONLY", "1")]);
    let text =
        String::from_utf8_lossy(&bad.stdout).to_string() + &String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{text}");
    assert!(
        text.contains("MISMATCH") && text.contains("soak failed"),
        "{text}"
    );
    assert!(text.contains("the ledger does not balance"), "{text}");
    assert_eq!(left_behind(&text), Vec::<String>::new());
}

/// The RSS check judges the smoke's rounds: a daemon that leaks 2 KiB per
/// received frame (about 4 MB a round; `XDPSEC_TEST_LEAK_BYTES`, compiled
/// only with `--features xdpsec-control/test-hooks`, as `cargo xtask test`
/// builds) balances every ledger row and fails on its RSS alone.
#[test]
fn soak_manual_phase_fails_when_the_daemon_leaks() {
    let bad = soak(&[("XDPSEC_TEST_LEAK_BYTES", "2048")]);
    let text =
        String::from_utf8_lossy(&bad.stdout).to_string() + &String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{text}");
    let total = text
        .lines()
        .find(|l| l.trim_start().starts_with("total"))
        .expect("total row");
    assert!(total.ends_with("ok"), "the ledger still balances: {text}");
    let failures: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("soak failed"))
        .skip(1)
        .collect();
    assert!(
        failures.len() == 1 && failures[0].contains("daemon RSS grew"),
        "the RSS check and only it fails (is XDPSEC_BIN built with \
         --features xdpsec-control/test-hooks, as `cargo xtask test` does?): {text}"
    );
    assert_eq!(left_behind(&text), Vec::<String>::new());
}
