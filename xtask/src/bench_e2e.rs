//! `cargo xtask bench --e2e`: end-to-end datapath rates on veth in network
//! namespaces, every row a ratio against a baseline measured in the same
//! run (this machine is shared and noisy: absolute numbers move, ratios
//! much less). `xdpsec gen` (AF_XDP TX) sends flat out from one namespace
//! to an xdpsec receiver in the other:
//! - decap into the sink vs the raw AF_XDP ceiling (the same frames
//!   received and only counted: `XDPSEC_BENCH_COUNT_ONLY=1`), at 64 and
//!   1400 payload bytes, with 1 queue, with 2 queues and one SA (its
//!   frames dealt over both queues: the worst case, half of them handed to
//!   the SA's owner worker), and with 2 queues and 2 SAs, one generator per
//!   SA on its own queue (`--first-queue`), each SA owned by that queue's
//!   worker, as RSS spreads SAs over a NIC's queues;
//! - the share of valid frames decrypted with a 1:1 unknown-SPI flood
//!   interleaved by the generator vs without it;
//! - the iperf3 rows (`bench_iperf`): passed kernel traffic, and a tunnel
//!   vs plain forwarding vs strongSwan.
//!
//! Generator and receiver share the machine's two cores. The table says
//! for each row its target (issue 10, item 8) and whether it was met.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xdpsec_e2e::{
    Daemon, Lab, gen_report, sa_decaps, scratch_dir,
    tunnel::{BASE, tunnel_config, two_tunnel_receiver, two_tunnel_sender},
};

use crate::bench_table::{Row, Target, print_table};

/// Seconds each generator run lasts.
const SECONDS: &str = "3";

/// The receiver: node 1 of `lab`, sink inside, `queues` queues.
fn receiver_config(lab: &Lab, queues: u32) -> String {
    sink(&tunnel_config(lab, 0, &BASE).replace("queues = 1", &format!("queues = {queues}")))
}

/// Config `c` with its inside replaced by the sink.
fn sink(c: &str) -> String {
    let (a, b) = (c.find("[inside]").unwrap(), c.find("[[tunnel]]").unwrap());
    format!("{}[inside]\nmode = \"sink\"\n{}", &c[..a], &c[b..])
}

/// The generator's config (node 2). Its `state_dir` is `state` (one for
/// the whole benchmark: the key is the same in every run, so sequence
/// numbers must carry on; a fresh state_dir would reuse nonces, and a
/// receiver that saw the earlier run would drop them as replays).
fn gen_config(lab: &Lab, queues: u32, dir: &Path, state: &Path) -> PathBuf {
    xdpsec_e2e::gen_config(
        &tunnel_config(lab, 1, &BASE).replace("queues = 1", &format!("queues = {queues}")),
        dir,
        state,
    )
}

/// Start a generator run of [`SECONDS`] with `size`-byte payloads on
/// queues `first_queue`.. (`queues` of them), with a 1:1 unknown-SPI
/// flood when `flood`.
fn spawn_gen(
    ns: &str,
    cfg: &Path,
    size: u32,
    queues: u32,
    first_queue: u32,
    flood: bool,
) -> Result<std::process::Child> {
    let (size, queues, first_queue) = (
        size.to_string(),
        queues.to_string(),
        first_queue.to_string(),
    );
    let mut args = vec![
        "--duration",
        SECONDS,
        "--size",
        &size,
        "--queues",
        &queues,
        "--first-queue",
        &first_queue,
    ];
    if flood {
        args.extend(["--mix", "unknown-spi=1"]);
    }
    xdpsec_e2e::spawn_gen(ns, cfg, &args, 30)
}

/// (frames received by AF_XDP, packets decrypted) on the receiver.
fn counters(d: &Daemon) -> Result<(u64, u64)> {
    let q = d.cli_json("show platform hardware qfp active statistics")?;
    let rx = q["queues"]
        .as_array()
        .context("queues")?
        .iter()
        .filter_map(|r| r["rx_frames"].as_u64())
        .sum();
    Ok((rx, sa_decaps(d)?))
}

/// One measured run: (sender pps, receiver rx pps, decap pps).
fn measure(
    lab: &Lab,
    d: &Daemon,
    queues: u32,
    size: u32,
    flood: bool,
    state: &Path,
) -> Result<(f64, f64, f64)> {
    let dir = scratch_dir("bench-e2e");
    let cfg = gen_config(lab, queues, &dir, state);
    let before = counters(d)?;
    let g = gen_report(spawn_gen(&lab.ns2, &cfg, size, queues, 0, flood)?)?;
    // The receiver has counted every frame the senders sent.
    xdpsec_e2e::drain(&[d]);
    let after = counters(d)?;
    let secs = g["seconds"].as_f64().unwrap_or(1.0).max(0.1);
    let valid_share =
        g["valid"].as_f64().unwrap_or(0.0) / g["sent"].as_f64().unwrap_or(1.0).max(1.0);
    Ok((
        g["pps"].as_f64().unwrap_or(0.0) * valid_share,
        (after.0 - before.0) as f64 / secs,
        (after.1 - before.1) as f64 / secs,
    ))
}

/// One measured run with two generators at once, one per tunnel of
/// [`two_tunnel_receiver`], each on its own queue (0 and 1): (the two
/// senders' pps summed, receiver rx pps, decap pps). The receiver's rates
/// are over the longer of the two runs (they start within a few
/// milliseconds of each other).
fn measure_two(lab: &Lab, d: &Daemon, size: u32, states: [&Path; 2]) -> Result<(f64, f64, f64)> {
    let before = counters(d)?;
    let mut children = Vec::new();
    for (n, state) in [1usize, 2].into_iter().zip(states) {
        let dir = scratch_dir("bench-e2e");
        let cfg = xdpsec_e2e::gen_config(&two_tunnel_sender(lab, n, 2), &dir, state);
        children.push(spawn_gen(&lab.ns2, &cfg, size, 1, n as u32 - 1, false)?);
    }
    let mut sent = 0.0;
    let mut secs: f64 = 0.1;
    for c in children {
        let g = gen_report(c)?;
        sent += g["pps"].as_f64().unwrap_or(0.0);
        secs = secs.max(g["seconds"].as_f64().unwrap_or(1.0));
    }
    // The receiver has counted every frame the senders sent.
    xdpsec_e2e::drain(&[d]);
    let after = counters(d)?;
    Ok((
        sent,
        (after.0 - before.0) as f64 / secs,
        (after.1 - before.1) as f64 / secs,
    ))
}

/// The honest multi-queue rows: two SAs, one generator each on its own
/// queue, each SA owned by that queue's worker (no handoff), vs the raw
/// AF_XDP ceiling with the same two generators; 64 and 1400 B.
fn two_sa_rows(lab: &Lab, rows: &mut Vec<Row>, states: [&Path; 2]) -> Result<()> {
    let cfg = sink(&two_tunnel_receiver(lab, 2));
    for size in [64u32, 1400] {
        let d = Daemon::start(&lab.ns1, &cfg)?;
        let (tx, _, decap) = measure_two(lab, &d, size, states)?;
        drop(d);
        let d = Daemon::start_with_env(&lab.ns1, &cfg, &[("XDPSEC_BENCH_COUNT_ONLY", "1")])?;
        let (tx0, ceiling, _) = measure_two(lab, &d, size, states)?;
        drop(d);
        rows.push(Row {
            what: format!(
                "decap, 2 queues, 2 SAs (one per queue, as RSS spreads them on a NIC) vs raw \
                 AF_XDP ceiling with the same two generators, {size} B"
            ),
            figures: format!(
                "{:.0} vs {:.0} kpps (gens sent {:.0} / {:.0} kpps)",
                decap / 1e3,
                ceiling / 1e3,
                tx / 1e3,
                tx0 / 1e3
            ),
            ratio: decap / ceiling.max(1.0),
            target: Target::AtLeast(0.9),
        });
    }
    Ok(())
}

/// Run every row and print the table.
pub fn run(tcp_only: bool) -> Result<()> {
    let t0 = std::time::Instant::now();
    let modes = [
        crate::bench_iperf::InsideMode::Tun,
        crate::bench_iperf::InsideMode::TunNoOffloads,
        crate::bench_iperf::InsideMode::Xdp,
        crate::bench_iperf::InsideMode::XdpGeneric,
    ];
    if tcp_only {
        let mut rows = Vec::new();
        crate::bench_iperf::tunnels(&mut rows, &modes, &[crate::bench_iperf::Load::Tcp])?;
        println!(
            "\nTCP through the tunnels on veth in namespaces (iperf3 runs 3 s, best of 2 runs each); \
             every ratio is between runs of this benchmark:\n"
        );
        print_table(&rows);
        println!("\n(took {:.0} s)", t0.elapsed().as_secs_f64());
        return Ok(());
    }
    let state = scratch_dir("bench-e2e-state").join("state");
    // Tunnel2's key (the two-SA rows) has its own reservations.
    let state2 = scratch_dir("bench-e2e-state").join("state");
    let mut rows = Vec::new();
    for queues in [1u32, 2] {
        let lab = Lab::unique().up(queues)?;
        for size in [64u32, 1400] {
            let d = Daemon::start(&lab.ns1, &receiver_config(&lab, queues))?;
            let (tx, _, decap) = measure(&lab, &d, queues, size, false, &state)?;
            drop(d);
            let d = Daemon::start_with_env(
                &lab.ns1,
                &receiver_config(&lab, queues),
                &[("XDPSEC_BENCH_COUNT_ONLY", "1")],
            )?;
            let (tx0, ceiling, _) = measure(&lab, &d, queues, size, false, &state)?;
            drop(d);
            rows.push(Row {
                what: if queues == 1 {
                    format!("decap into the sink vs raw AF_XDP ceiling, {size} B, 1 queue")
                } else {
                    format!(
                        "decap into the sink vs raw AF_XDP ceiling, {size} B, {queues} queues, \
                         1 SA dealt over both (worst case: half its frames handed to its owner worker)"
                    )
                },
                figures: format!(
                    "{:.0} vs {:.0} kpps (gen sent {:.0} / {:.0} kpps)",
                    decap / 1e3,
                    ceiling / 1e3,
                    tx / 1e3,
                    tx0 / 1e3
                ),
                ratio: decap / ceiling.max(1.0),
                target: Target::AtLeast(0.9),
            });
        }
        if queues == 2 {
            two_sa_rows(&lab, &mut rows, [&state, &state2])?;
        }
    }
    let lab = Lab::unique().up(1)?;
    // What generic mode (which keeps a veth peer's TSO for passed traffic,
    // see bench_iperf) costs ESP: decap in generic vs driver mode.
    let generic =
        receiver_config(&lab, 1).replace("[underlay]\n", "[underlay]\nxdp_mode = \"generic\"\n");
    let mut decap = [0.0; 2];
    for (i, cfg) in [receiver_config(&lab, 1), generic].iter().enumerate() {
        let d = Daemon::start(&lab.ns1, cfg)?;
        decap[i] = measure(&lab, &d, 1, 64, false, &state)?.2;
    }
    rows.push(Row {
        what: "decap into the sink, xdp_mode = \"generic\" vs driver mode, 64 B, 1 queue".into(),
        figures: format!("{:.0} vs {:.0} kpps", decap[1] / 1e3, decap[0] / 1e3),
        ratio: decap[1] / decap[0].max(1.0),
        target: Target::None,
    });
    let d = Daemon::start(&lab.ns1, &receiver_config(&lab, 1))?;
    let (sent_clean, _, clean) = measure(&lab, &d, 1, 64, false, &state)?;
    let (sent_valid, rx, flooded) = measure(&lab, &d, 1, 64, true, &state)?;
    drop(d);
    drop(lab);
    // The generator interleaves one unknown-SPI frame per valid one: the
    // share of valid frames that decrypt, flooded vs clean.
    let (a, b) = (flooded / sent_valid.max(1.0), clean / sent_clean.max(1.0));
    rows.push(Row {
        what: "valid frames decrypted, 1:1 unknown-SPI flood vs none, 64 B".into(),
        figures: format!(
            "{a:.3} vs {b:.3} of those sent (valid {:.0} kpps; receiver took {:.0} kframes/s in all)",
            flooded / 1e3,
            rx / 1e3
        ),
        ratio: a / b.max(1e-9),
        target: Target::AtLeast(0.9),
    });
    crate::bench_iperf::passed_traffic(&mut rows)?;
    crate::bench_iperf::tunnels(&mut rows, &modes, &crate::bench_iperf::LOADS)?;
    println!(
        "\nEnd to end on veth in namespaces (2 vCPU shared by sender and receiver; copy-mode AF_XDP); \
         xdpsec gen runs {SECONDS} s, iperf3 runs 3 s (best of 2 runs each); every ratio is between runs of this benchmark:\n"
    );
    print_table(&rows);
    println!("\n(took {:.0} s)", t0.elapsed().as_secs_f64());
    Ok(())
}
