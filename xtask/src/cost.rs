//! Machine-noise-free datapath costs: `cargo xtask bench --callgrind`
//! (instructions per packet under callgrind; hardware counters are not
//! available on these VMs) and `cargo xtask bench --memory` (RSS per
//! inbound SA of the datapath's SA table and worker state).
use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::{Context, Result, bail, ensure};

use crate::{cargo, root, run};

/// Build `decap_cost` and run it under callgrind; print instructions per
/// packet of the decap pipeline and of bare ring AES-256-GCM open of the
/// same frames, per case, and their ratio.
pub fn callgrind(batches: u32) -> Result<()> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        crate::setup()?;
    }
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "xdpsec-benches",
        "--bin",
        "decap_cost",
    ]))?;
    let bin = root().join("target/release/decap_cost");
    let dir = std::env::temp_dir().join(format!("xdpsec-callgrind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let r = callgrind_in(&bin, &dir, batches);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn callgrind_in(bin: &Path, dir: &Path, batches: u32) -> Result<()> {
    eprintln!("[callgrind] set-up of 1,000,000 SAs runs uninstrumented; about 1.5 minutes in all");
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
        ])
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join("cg.out").display()
        ))
        .arg(bin)
        .args(["callgrind", "--batches", &batches.to_string()])
        .current_dir(dir)
        .output()
        .context("running valgrind")?;
    ensure!(
        out.status.success(),
        "valgrind failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One dump per case and kind, named "<kind> <case> <batches>".
    let mut ir: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let text = std::fs::read_to_string(&p)?;
        let Some(desc) = text
            .lines()
            .find_map(|l| l.strip_prefix("desc: Trigger: Client Request: "))
        else {
            continue;
        };
        let mut w = desc.split_whitespace();
        let (Some(kind), Some(case), Some(n)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let n: f64 = n.parse().context("batches in the dump name")?;
        let total: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals: ")
                    .or_else(|| l.strip_prefix("summary: "))
            })
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no totals in {}", p.display()))?;
        if !order.contains(&case.to_string()) {
            order.push(case.to_string());
        }
        ir.insert((kind.into(), case.into()), total / (n * 64.0));
    }
    if ir.is_empty() {
        bail!("no callgrind dumps in {}", dir.display());
    }
    // Cases in the order the binary ran them: by size, then SAs.
    order.sort_by_key(|c| {
        let size: u32 = c
            .split('B')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let sas = if c.contains("rotating") {
            2
        } else if c.contains("1M") {
            1
        } else {
            0
        };
        (size, sas)
    });
    println!(
        "\ninstructions per packet (callgrind, {batches} batches of 64 frames per case, AES-256-GCM in UDP/IPv4; decap only, not the copy of the frames; ring's AES-NI/AVX code path, as valgrind does not emulate AVX-512)"
    );
    println!(
        "{:<20} {:>10} {:>10} {:>8}",
        "case", "pipeline", "ring_open", "ratio"
    );
    for case in &order {
        let p = ir.get(&("pipeline".into(), case.clone()));
        let r = ir.get(&("ring_open".into(), case.clone()));
        if let (Some(p), Some(r)) = (p, r) {
            println!("{case:<20} {p:>10.0} {r:>10.0} {:>8.2}", p / r);
        }
    }
    Ok(())
}

/// RSS per inbound SA at replay window 1024 for each size, each in a fresh
/// process (the datapath's ignored test `rss_per_inbound_sa`, release).
pub fn memory(sizes: &[u32]) -> Result<()> {
    let mut lines = Vec::new();
    for &n in sizes {
        eprintln!("[memory] {n} inbound SAs ...");
        let out = cargo()
            .args([
                "test",
                "--release",
                "-q",
                "-p",
                "xdpsec-datapath",
                "--lib",
                "memory_tests::rss_per_inbound_sa",
                "--",
                "--ignored",
                "--exact",
                "--nocapture",
            ])
            .env("XDPSEC_MEMORY_SAS", n.to_string())
            .output()
            .context("running the datapath's rss_per_inbound_sa test")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "rss_per_inbound_sa failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("rss_per_inbound_sa: "))
            .context("no result line from rss_per_inbound_sa")?;
        lines.push(line.to_string());
    }
    println!(
        "\nmemory per inbound SA (RSS of the SA table and one worker's state, grown from empty)"
    );
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}
