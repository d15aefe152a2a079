//! Control-plane scale benchmark (`cargo xtask bench`, or alone with
//! `cargo xtask bench --scale-only`): generated configs of N manual tunnels,
//! timed as a user meets them: `xdpsec check-config`, start-up of `xdpsec
//! run` in a lab namespace until its control socket answers, and `show
//! crypto ipsec sa` as text and as `--json` through `xdpsec cli`.
//!
//! Absolute wall-clock times on this (shared, 2 vCPU) machine: the targets
//! are absolute (10,000 tunnels load and start in under 1 s, shows in
//! under 1 s), and the table prints each row's growth over the previous
//! size so linear behaviour (about 10x per 10x tunnels) is visible, and
//! the daemon's RSS after start-up with its growth per tunnel between rows.
use std::{
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use xdpsec_e2e::{Daemon, Lab, scratch_dir};

/// A config with `n` manual tunnels to `peer` (distinct SPIs and keys;
/// sink mode, so start-up measures control, not route installation).
pub fn config(lab: &Lab, n: u32, tun: bool) -> String {
    let mut s = format!(
        "node = \"scale\"\nsocket = \"{{socket}}\"\n[underlay]\ninterface = \"{}\"\naddress = \"{}\"\nqueues = 1\n",
        lab.if1, lab.v4[0]
    );
    if tun {
        s.push_str(
            "[inside]\nmode = \"tun\"\nname = \"xsscale\"\naddress = \"203.0.113.254/32\"\n",
        );
    }
    s.reserve(n as usize * 420);
    for i in 0..n {
        // Distinct 36-byte keys per direction and tunnel (never both equal).
        let kin = format!("{:08x}{}", i, "a5".repeat(32));
        let kout = format!("{:08x}{}", i, "5a".repeat(32));
        // Inner prefixes: 2001:db8:1::/48 split into /128s, one per tunnel.
        let _ = write!(
            s,
            "[[tunnel]]\nname = \"Tunnel{}\"\nkind = \"manual\"\npeer = \"{}\"\nencap = \"udp\"\nlocal_port = 4500\npeer_port = 4500\ncipher = \"aes256-gcm\"\nreplay_window = 64\nremote_subnets = [\"2001:db8:1::{:x}:{:x}/128\"]\n[tunnel.inbound]\nspi = {:#x}\nkey = \"{kin}\"\n[tunnel.outbound]\nspi = {:#x}\nkey = \"{kout}\"\n",
            i + 1,
            lab.v4[1],
            i >> 16,
            i & 0xffff,
            0x10000 + i,
            0x10000 + i,
        );
    }
    s
}

/// One size's measurements.
struct Row {
    n: u32,
    load: Duration,
    start: Duration,
    show_text: Duration,
    show_json: Duration,
    text_bytes: usize,
    /// The daemon's VmRSS right after start-up (kB).
    rss_kb: u64,
}

fn time_cli(d: &Daemon, command: &str, json: bool) -> Result<(Duration, usize)> {
    let t = Instant::now();
    let out = xdpsec_e2e::cli(&d.socket, command, json)
        .map_err(|e| anyhow::anyhow!("`{command}`: {e}"))?;
    Ok((t.elapsed(), out.len()))
}

fn measure(bin: &std::path::Path, lab: &Lab, n: u32) -> Result<Row> {
    let dir = scratch_dir("scale");
    let text = config(lab, n, false);
    let path = dir.join("scale.toml");
    std::fs::write(
        &path,
        text.replace("{socket}", "/tmp/xdpsec-scale-unused.sock"),
    )?;
    let t = Instant::now();
    let out = Command::new(bin)
        .args(["check-config", "--quiet", "--config"])
        .arg(&path)
        .output()
        .context("running xdpsec check-config")?;
    let load = t.elapsed();
    ensure!(
        out.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    let d = Daemon::start(&lab.ns1, &text)?;
    let start = t.elapsed();
    let rss_kb = crate::soak::rss_kb(d.pid().context("daemon pid")?)?;
    let (show_text, text_bytes) = time_cli(&d, "show crypto ipsec sa", false)?;
    let (show_json, json_bytes) = time_cli(&d, "show crypto ipsec sa", true)?;
    let v: serde_json::Value = serde_json::from_str(
        &xdpsec_e2e::cli(&d.socket, "show crypto ipsec sa peer 198.51.100.2", true)
            .map_err(|e| anyhow::anyhow!(e))?,
    )?;
    if v["sas"].as_array().map(Vec::len) != Some(n as usize) {
        bail!(
            "show listed {:?} SAs, want {n}",
            v["sas"].as_array().map(Vec::len)
        );
    }
    let _ = json_bytes;
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Row {
        n,
        load,
        start,
        show_text,
        show_json,
        text_bytes,
        rss_kb,
    })
}

/// Run the scale benchmark for each size and print the table.
pub fn run(sizes: &[u32]) -> Result<()> {
    let bin = crate::build_xdpsec()?;
    // SAFETY: single-threaded here; the harness reads XDPSEC_BIN.
    unsafe { std::env::set_var("XDPSEC_BIN", &bin) };
    let lab = Lab::unique().up(1)?;
    let mut rows: Vec<Row> = Vec::new();
    for &n in sizes {
        eprintln!("[scale] {n} tunnels ...");
        rows.push(measure(&bin, &lab, n)?);
    }
    println!(
        "\ncontrol-plane scale (manual tunnels; wall clock, 2 vCPU shared machine; x = growth over the previous row)"
    );
    println!(
        "{:>8} {:>14} {:>14} {:>18} {:>18} {:>10} {:>8} {:>12}",
        "tunnels",
        "check-config",
        "start-up",
        "show sa (text)",
        "show sa (json)",
        "text MB",
        "RSS MB",
        "KB/tunnel"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut prev: Option<&Row> = None;
    for r in &rows {
        let g = |a: Duration, b: Option<Duration>| match b {
            Some(b) if !b.is_zero() => format!("{:>8.0} ms {:>4.1}x", ms(a), ms(a) / ms(b)),
            _ => format!("{:>8.0} ms      ", ms(a)),
        };
        // RSS growth per tunnel since the previous row (the fixed part cancels).
        let per_tunnel = match prev {
            Some(p) if r.n > p.n => format!(
                "{:.2}",
                (r.rss_kb as f64 - p.rss_kb as f64) / f64::from(r.n - p.n)
            ),
            _ => "-".into(),
        };
        println!(
            "{:>8} {:>14} {:>14} {:>18} {:>18} {:>10.1} {:>8.1} {:>12}",
            r.n,
            g(r.load, prev.map(|p| p.load)),
            g(r.start, prev.map(|p| p.start)),
            g(r.show_text, prev.map(|p| p.show_text)),
            g(r.show_json, prev.map(|p| p.show_json)),
            r.text_bytes as f64 / 1e6,
            r.rss_kb as f64 / 1024.0,
            per_tunnel
        );
        prev = Some(r);
    }
    if let Some(r) = rows.iter().find(|r| r.n == 10_000) {
        let ok = |d: Duration| {
            if d < Duration::from_secs(1) {
                "met"
            } else {
                "MISSED"
            }
        };
        println!(
            "targets at 10,000 tunnels (under 1 s each): load {}, start-up {}, show text {}, show json {}",
            ok(r.load),
            ok(r.start),
            ok(r.show_text),
            ok(r.show_json)
        );
    }
    Ok(())
}
