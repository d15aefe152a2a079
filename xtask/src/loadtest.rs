//! `cargo xtask loadtest` (not in `cargo xtask test`: a 1,000-tunnel run
//! takes a while): the README's load tester measurement, rerun. In a lab
//! namespace pair, `xdpsec loadtest ike --tunnels N --concurrency C`
//! against strongSwan's charon (kernel-libipsec, one connection for any
//! peer of the range) and against an xdpsec responder (one `kind = "ike"`
//! tunnel per peer), or with `--only xdpsec-template` against an xdpsec
//! responder with ONE template tunnel (`peer_range`) for all peers; prints
//! tunnels per second and both processes' CPU.
//! The measurement itself is `xdpsec_e2e::loadtest::measure`, which the
//! e2e test `the_xtask_measurement_runs_small` runs with 100 tunnels.
use anyhow::Result;
use xdpsec_e2e::loadtest::{Auth, Gateway, measure};

/// Run against each of `gateways`, authenticating with `auth`; print one
/// table row each.
pub fn run(
    tunnels: usize,
    concurrency: usize,
    auth: Auth,
    gateways: &[Gateway],
    extra: &[String],
) -> Result<()> {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    println!(
        "| gateway | tunnels | up | failed | tunnels/s sustained (peak) | gateway CPU | xdpsec loadtest CPU |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for gw in gateways {
        let m = measure(*gw, auth, tunnels, concurrency, &extra)?;
        let v = &m.json;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let up = f("up");
        let per = |cpu: f64| if up > 0.0 { cpu / up * 1000.0 } else { 0.0 };
        let failed: u64 = v["failed"]
            .as_object()
            .map_or(0, |o| o.values().filter_map(|x| x.as_u64()).sum());
        println!(
            "| {}, {} | {tunnels}, --concurrency {concurrency} | {up} | {failed} | {:.0} ({:.0}) | {:.2} s ({:.2} ms/tunnel) | {:.2} s ({:.2} ms/tunnel) |",
            match gw {
                Gateway::Charon => "strongSwan charon, kernel-libipsec",
                Gateway::Xdpsec => "xdpsec run, kind = \"ike\" tunnels",
                Gateway::XdpsecTemplate => {
                    "xdpsec run, one responder template (peer_range)"
                }
            },
            match auth {
                Auth::Psk => "PSK",
                Auth::Cert => "certificates (ECDSA P-256)",
            },
            f("tunnels_per_second"),
            f("peak_tunnels_per_second"),
            m.gateway_cpu,
            per(m.gateway_cpu),
            f("cpu_seconds"),
            per(f("cpu_seconds")),
        );
        if let Some(n) = v["tunnels_answered"].as_u64() {
            println!(
                "  (--traffic: {n} of {up} tunnels answered; time to first packet {})",
                v["ttfp_ms"]
            );
        }
        println!("  machine load: {}", load_average());
    }
    Ok(())
}

/// The machine's load averages (1, 5, 15 minutes), as uptime prints them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |e| format!("/proc/loadavg: {e}"),
        |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "),
    )
}
