//! Prometheus: `[metrics] listen = "ADDR:PORT"` serves `GET /metrics` in
//! the OpenMetrics text format (the `prometheus-client` crate's encoder,
//! `tiny_http` for HTTP). A scrape asks the owner of control state for one
//! snapshot, [`Metrics`] (filled in `owner/metrics.rs`); the owner reads the
//! counters the workers already keep (as `show` does), so scraping costs
//! the datapath nothing. [`render`] encodes the snapshot, a pure function.
//! Counters are raw totals since start: `clear` commands do not reset them
//! (Prometheus computes rates).
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::Serialize;

use crate::config::metrics::MetricsConfig;

/// Bind the HTTP listener (at start-up: a failure stops the daemon with a
/// clear error before anything is attached).
pub fn bind(cfg: &MetricsConfig) -> Result<tiny_http::Server> {
    tiny_http::Server::http(cfg.listen).map_err(|e| {
        anyhow!(
            "metrics.listen {}: cannot listen there: {e} (is the address on an interface of this namespace, the port free?)",
            cfg.listen
        )
    })
}

/// Serve scrapes until `stop`; `scrape` asks the owner for one (None: the
/// daemon is busy or stopping).
pub fn spawn(
    server: tiny_http::Server,
    scrape: impl Fn() -> Option<String> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("xdpsec-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                let path = req.url().split('?').next().unwrap_or("").to_string();
                let resp = if req.method() == &tiny_http::Method::Get && path == "/metrics" {
                    match scrape() {
                        Some(b) => tiny_http::Response::from_string(b).with_header(
                            "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
                                .parse::<tiny_http::Header>()
                                .expect("a valid header"),
                        ),
                        None => tiny_http::Response::from_string("the daemon is busy or stopping\n")
                            .with_status_code(503),
                    }
                } else {
                    tiny_http::Response::from_string("only GET /metrics here\n")
                        .with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        })
        .context("spawning the metrics thread")
}

/// One scrape's values: the metric families in the order they are
/// encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// The families, registered in this order.
    pub families: Vec<MetricFamily>,
}

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MetricKind {
    /// Labelled counters (`NAME_total{..}`).
    Counter,
    /// Labelled gauges.
    Gauge,
    /// One counter without labels: the sum of the series.
    Total,
}

/// One metric family: its name (after the `xdpsec_` prefix), help text and
/// series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricFamily {
    /// The name, without the `xdpsec_` prefix or the `_total` suffix.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Counter, gauge or a single total.
    pub kind: MetricKind,
    /// The series; two with the same labels add up (counters) or the last
    /// counts (gauges).
    pub series: Vec<Series>,
}

impl MetricFamily {
    /// A counter family.
    pub fn counters(
        name: &'static str,
        help: &'static str,
        series: impl IntoIterator<Item = Series>,
    ) -> MetricFamily {
        MetricFamily {
            name,
            help,
            kind: MetricKind::Counter,
            series: series.into_iter().collect(),
        }
    }

    /// A gauge family.
    pub fn gauges(
        name: &'static str,
        help: &'static str,
        series: impl IntoIterator<Item = Series>,
    ) -> MetricFamily {
        MetricFamily {
            kind: MetricKind::Gauge,
            ..MetricFamily::counters(name, help, series)
        }
    }
}

/// One series: its labels in order and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Series {
    /// (label, value) pairs.
    pub labels: Vec<(String, String)>,
    /// The counter's total or the gauge's value.
    pub value: u64,
}

impl Series {
    /// A series labelled `kv`.
    pub fn new(kv: &[(&str, String)], value: u64) -> Series {
        Series {
            labels: kv
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
            value,
        }
    }
}

/// The OpenMetrics text of `m` (the series of one family in the encoder's
/// order).
pub fn render(m: &Metrics) -> String {
    type Labels = Vec<(String, String)>;
    let mut r = Registry::with_prefix("xdpsec");
    for f in &m.families {
        match f.kind {
            MetricKind::Counter => {
                let fam = Family::<Labels, Counter>::default();
                r.register(f.name, f.help, fam.clone());
                for s in &f.series {
                    fam.get_or_create(&s.labels).inc_by(s.value);
                }
            }
            MetricKind::Gauge => {
                let fam = Family::<Labels, Gauge>::default();
                r.register(f.name, f.help, fam.clone());
                for s in &f.series {
                    fam.get_or_create(&s.labels)
                        .set(i64::try_from(s.value).unwrap_or(i64::MAX));
                }
            }
            MetricKind::Total => {
                let c = Counter::<u64>::default();
                c.inc_by(f.series.iter().map(|s| s.value).sum());
                r.register(f.name, f.help, c);
            }
        }
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &r) {
        tracing::error!("encoding metrics: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of family, in order, as Prometheus scrapes it: counters
    /// end in `_total`, the labels in the order given, a family without
    /// series leaves no line at all.
    #[test]
    fn render_encodes_each_family_in_order() {
        let m = Metrics {
            families: vec![
                MetricFamily::counters(
                    "qfp_drops",
                    "IPsec datapath drops by QFP drop type",
                    [Series::new(
                        &[
                            ("id", "19".into()),
                            ("name", "IN_OCT_ANTI_REPLAY_FAIL".into()),
                        ],
                        7,
                    )],
                ),
                MetricFamily::counters("sa_packets", "Packets per SA", []),
                MetricFamily {
                    name: "next_hop_refreshes",
                    help: "Passes",
                    kind: MetricKind::Total,
                    series: vec![Series::new(&[], 3)],
                },
                MetricFamily::gauges(
                    "ike_sa_up",
                    "IKEv2 SAs: 1 when established",
                    [Series::new(
                        &[
                            ("tunnel", "Tunnel2".into()),
                            ("peer", "198.51.100.2".into()),
                        ],
                        1,
                    )],
                ),
            ],
        };
        assert_eq!(
            render(&m),
            "# HELP xdpsec_qfp_drops IPsec datapath drops by QFP drop type.\n\
             # TYPE xdpsec_qfp_drops counter\n\
             xdpsec_qfp_drops_total{id=\"19\",name=\"IN_OCT_ANTI_REPLAY_FAIL\"} 7\n\
             # HELP xdpsec_next_hop_refreshes Passes.\n\
             # TYPE xdpsec_next_hop_refreshes counter\n\
             xdpsec_next_hop_refreshes_total 3\n\
             # HELP xdpsec_ike_sa_up IKEv2 SAs: 1 when established.\n\
             # TYPE xdpsec_ike_sa_up gauge\n\
             xdpsec_ike_sa_up{tunnel=\"Tunnel2\",peer=\"198.51.100.2\"} 1\n\
             # EOF\n"
        );
    }

    /// Series with the same labels add up in a counter family; the last
    /// one counts in a gauge family; the others each get a line.
    #[test]
    fn render_sums_counters_and_keeps_the_last_gauge() {
        let s = |v: &str, n| Series::new(&[("counter", v.to_string())], n);
        let m = Metrics {
            families: vec![
                MetricFamily::counters("afxdp", "AF_XDP", [s("rx", 2), s("tx", 5), s("rx", 3)]),
                MetricFamily::gauges("bfd_session_up", "BFD", [s("a", 1), s("a", 0)]),
            ],
        };
        let text = render(&m);
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "xdpsec_afxdp_total{counter=\"rx\"} 5",
                "xdpsec_afxdp_total{counter=\"tx\"} 5",
                "xdpsec_bfd_session_up{counter=\"a\"} 0",
            ]
        );
    }
}
