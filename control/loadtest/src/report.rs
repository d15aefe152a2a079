//! `--report FILE`: one self-contained HTML page (inline SVG drawn with
//! plotters, no scripts, no fetches) with the run's figures, tunnels up
//! over time, the setup latency histogram and failures over time. The
//! figures table is the `--json` summary itself (also embedded as JSON),
//! so the two always agree.
use std::{fmt::Write as _, time::Duration};

use plotters::{coord::types::RangedCoordf64, prelude::*};

use crate::stats::{Accounting, Outcome, Summary};

/// Escape text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart on 0..`xmax` x 0..`ymax` as an SVG string, drawn by `draw`.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn plot(
    caption: &str,
    (x_desc, y_desc): (&str, &str),
    (xmax, ymax): (f64, f64),
    draw: impl FnOnce(&mut Chart) -> Result<(), String>,
) -> String {
    let mut s = String::new();
    let r = (|| {
        let root = SVGBackend::with_string(&mut s, (720, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut c = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(|e| e.to_string())?;
        draw(&mut c)?;
        root.present().map_err(|e| e.to_string())
    })();
    match r {
        Ok(()) => s,
        Err(e) => format!("<p>(plot failed: {})</p>", esc(&e)),
    }
}

/// Tunnels up (cumulative) over time since the run's start.
fn tunnels_up(acc: &Accounting) -> Vec<(f64, f64)> {
    let mut ends: Vec<f64> = acc
        .attempts
        .iter()
        .filter_map(|a| match &a.end {
            Some((t, Outcome::Up)) => Some(t.as_secs_f64()),
            _ => None,
        })
        .collect();
    ends.sort_by(f64::total_cmp);
    let mut v = vec![(0.0, 0.0)];
    for (k, t) in ends.iter().enumerate() {
        v.push((*t, k as f64));
        v.push((*t, (k + 1) as f64));
    }
    v
}

/// Histogram buckets of the setup latencies (ms): (bucket start, width, count).
pub fn latency_buckets(lat_s: &[f64]) -> Vec<(f64, f64, u64)> {
    let Some(max) = lat_s.last().map(|m| m * 1000.0) else {
        return Vec::new();
    };
    // About 20 buckets of a round width.
    let raw = (max / 20.0).max(0.001);
    let mag = 10f64.powf(raw.log10().floor());
    let width = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|w| *w >= raw)
        .unwrap_or(10.0 * mag);
    let n = ((max / width).floor() as usize) + 1;
    let mut b: Vec<(f64, f64, u64)> = (0..n).map(|k| (k as f64 * width, width, 0)).collect();
    for l in lat_s {
        let k = ((l * 1000.0 / width).floor() as usize).min(n - 1);
        b[k].2 += 1;
    }
    b
}

/// The page.
pub fn html(s: &Summary, acc: &Accounting, title: &str, notes: &[String]) -> String {
    let (from, to) = acc.setup_span();
    let end = acc
        .attempts
        .iter()
        .filter_map(|a| a.end.as_ref().map(|e| e.0))
        .max()
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let xmax = end.as_secs_f64() * 1.05;
    let up_series = tunnels_up(acc);
    let up_plot = plot(
        "Tunnels up",
        ("seconds since start", "tunnels up"),
        (xmax, (s.up as f64).max(1.0) * 1.05),
        |c| {
            c.draw_series(LineSeries::new(up_series, &BLUE))
                .map_err(|e| e.to_string())?;
            Ok(())
        },
    );
    let lat = acc.setup_latencies();
    let buckets = latency_buckets(&lat);
    let hist_xmax = buckets.last().map_or(1.0, |b| b.0 + b.1);
    let hist_ymax = buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64 * 1.1;
    let hist_plot = plot(
        "Setup latency (IKE_SA_INIT sent to child SA up)",
        ("milliseconds", "tunnels"),
        (hist_xmax, hist_ymax),
        |c| {
            c.draw_series(buckets.iter().map(|(x, w, n)| {
                Rectangle::new(
                    [(*x, 0.0), (x + w * 0.95, *n as f64)],
                    BLUE.mix(0.6).filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
            Ok(())
        },
    );
    let per_s = acc.per_second(Duration::ZERO, end);
    let fail_ymax = per_s.iter().map(|b| b.0.max(b.1)).max().unwrap_or(1).max(1) as f64 * 1.1;
    let fail_plot = plot(
        "Per second: tunnels up (blue), failures (red)",
        ("second since start", "per second"),
        ((per_s.len() as f64).max(1.0), fail_ymax),
        |c| {
            for (color, off) in [(BLUE, 0.0), (RED, 0.5)] {
                c.draw_series(per_s.iter().enumerate().map(|(k, b)| {
                    let n = if off == 0.0 { b.0 } else { b.1 };
                    let x = k as f64 + off;
                    Rectangle::new([(x, 0.0), (x + 0.45, n as f64)], color.mix(0.6).filled())
                }))
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    );
    let json = serde_json::to_string(s).unwrap_or_default();
    let mut rows = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(
            rows,
            "<tr><th>{}</th><td id=\"{}\">{}</td></tr>",
            esc(k),
            esc(k),
            esc(&v)
        );
    };
    row("tunnels", s.tunnels.to_string());
    row("attempts", s.attempts.to_string());
    row("up", s.up.to_string());
    for (k, v) in &s.failed {
        row(&format!("failed.{k}"), v.to_string());
    }
    row("seconds", s.seconds.to_string());
    row("tunnels_per_second", s.tunnels_per_second.to_string());
    row(
        "peak_tunnels_per_second",
        s.peak_tunnels_per_second.to_string(),
    );
    let attempts_ps = if s.seconds > 0.0 {
        s.attempts as f64 / s.seconds
    } else {
        0.0
    };
    row("attempts per second", format!("{attempts_ps:.3}"));
    row("rekeys", s.rekeys.to_string());
    row("rekeys_per_second", s.rekeys_per_second.to_string());
    row("lost_in_rekeys", s.lost_in_rekeys.to_string());
    row("cpu_seconds", s.cpu_seconds.to_string());
    row("retransmissions", s.retransmissions.to_string());
    row("deleted_by_gateway", s.deleted_by_gateway.to_string());
    row("dead_by_dpd", s.dead_by_dpd.to_string());
    row("unanswered_deletes", s.unanswered_deletes.to_string());
    if let Some(n) = s.tunnels_answered {
        row("tunnels_answered", n.to_string());
    }
    if let Some(f) = &s.failover {
        row("failover.fault", f.fault.clone());
        row("failover.tunnels", f.tunnels.to_string());
        row("failover.recovered", f.recovered.to_string());
        row("failover.not_recovered", f.not_recovered.to_string());
        row("failover.dpd_seen", f.dpd_seen.to_string());
    }
    for (name, q) in [
        ("ttfp_ms", &s.ttfp_ms),
        ("failover_ms", &s.failover_ms),
        ("dpd_ms", &s.dpd_ms),
    ] {
        if let Some(q) = q {
            row(&format!("{name}.p50"), q.p50.to_string());
            row(&format!("{name}.p90"), q.p90.to_string());
            row(&format!("{name}.p99"), q.p99.to_string());
            row(&format!("{name}.max"), q.max.to_string());
        }
    }
    let per = if s.up > 0 {
        s.cpu_seconds / s.up as f64 * 1000.0
    } else {
        0.0
    };
    row("cpu ms per tunnel up", format!("{per:.3}"));
    let notes: String = notes
        .iter()
        .map(|n| format!("<li>{}</li>", esc(n)))
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n\
         <style>body{{font-family:sans-serif;max-width:760px;margin:1em auto}}table{{border-collapse:collapse}}\
         th,td{{border:1px solid #ccc;padding:2px 8px;text-align:left}}</style></head><body>\n\
         <h1>{title}</h1>\n<ul>{notes}<li>setup phase {from:.3} s to {to:.3} s after the start</li></ul>\n\
         <table>\n{rows}</table>\n<h2>Tunnels up over time</h2>\n{up_plot}\n<h2>Setup latency</h2>\n{hist_plot}\n\
         <h2>Tunnels up and failures per second</h2>\n{fail_plot}\n\
         <script type=\"application/json\" id=\"summary\">{json}</script>\n</body></html>\n",
        title = esc(title),
        from = from.as_secs_f64(),
        to = to.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_the_summarys_figures() {
        let mut acc = Accounting::default();
        for (k, o) in [Outcome::Up, Outcome::Up, Outcome::Failed("TIMEOUT")]
            .into_iter()
            .enumerate()
        {
            let i = acc.start(Duration::from_millis(10 * k as u64));
            acc.end(i, Duration::from_millis(10 * k as u64 + 35), o);
        }
        acc.retransmissions = 7;
        // One tunnel up went away (the gateway deleted it), the other's
        // final DELETE went unanswered.
        assert!(acc.gone(
            0,
            Duration::from_millis(80),
            crate::stats::Gone::DeletedByGateway
        ));
        acc.unanswered_deletes = 1;
        let s = Summary::of(&acc, 3, Duration::ZERO, 0.25, false);
        let page = html(&s, &acc, "run <1>", &["gateway 2001:db8::1".into()]);
        assert!(page.contains("<title>run &lt;1&gt;</title>"));
        // The embedded JSON is the summary.
        let json = page
            .split("id=\"summary\">")
            .nth(1)
            .unwrap()
            .split("</script>")
            .next()
            .unwrap();
        let back: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, serde_json::to_value(&s).unwrap());
        // The table's cells are its figures.
        for (k, v) in [
            ("up", "2"),
            ("attempts", "3"),
            ("failed.TIMEOUT", "1"),
            ("seconds", "0.055"),
            ("cpu_seconds", "0.25"),
            ("retransmissions", "7"),
            ("deleted_by_gateway", "1"),
            ("dead_by_dpd", "0"),
            ("unanswered_deletes", "1"),
        ] {
            assert!(page.contains(&format!("<td id=\"{k}\">{v}</td>")), "{k}");
        }
        // Three inline SVG plots, nothing fetched.
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(
            !page.contains("http://")
                || page.matches("http://").count()
                    == page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
    }

    #[test]
    fn latency_buckets_cover_every_tunnel() {
        let lat: Vec<f64> = (1..=100).map(|k| f64::from(k) * 0.001).collect();
        let b = latency_buckets(&lat);
        assert_eq!(b.iter().map(|x| x.2).sum::<u64>(), 100);
        assert_eq!(b[0].1, 5.0);
        assert!(latency_buckets(&[]).is_empty());
    }
}
