//! Prometheus: `[metrics] listen = "ADDR:PORT"` serves `GET /metrics` in
//! the OpenMetrics text format (the `prometheus-client` crate's encoder,
//! `tiny_http` for HTTP). A scrape asks the owner of control state for one
//! snapshot; the owner reads the counters the workers already keep (as
//! `show` does), so scraping costs the datapath nothing. Counters are raw
//! totals since start: `clear` commands do not reset them (Prometheus
//! computes rates).
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
use xdpsec_common::XdpCounter;
use xdpsec_datapath::{DropReason, sa::SaId, worker::sa_counters};

use crate::{
    config::metrics::MetricsConfig,
    owner::{Msg, Owner, OwnerHandle},
};

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

/// Serve scrapes until `stop`.
pub fn spawn(
    server: tiny_http::Server,
    owner: OwnerHandle,
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
                    let (tx, rx) = crossbeam::channel::bounded(1);
                    let body = if owner.send(Msg::Metrics(tx)) {
                        rx.recv_timeout(Duration::from_secs(5)).ok()
                    } else {
                        None
                    };
                    match body {
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

type Labels = Vec<(String, String)>;

fn labels(kv: &[(&str, String)]) -> Labels {
    kv.iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

/// A counter family registered under `name`.
fn counters(r: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    r.register(name, help, f.clone());
    f
}

/// A gauge family registered under `name`.
fn gauges(r: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    r.register(name, help, f.clone());
    f
}

impl Owner {
    /// One scrape: every metric, encoded.
    pub fn metrics_text(&mut self) -> String {
        self.sync_xdp_drops();
        let mut r = Registry::with_prefix("xdpsec");
        let drops = counters(&mut r, "qfp_drops", "IPsec datapath drops by QFP drop type");
        let totals = self.drops.raw_totals();
        for reason in DropReason::ALL {
            drops
                .get_or_create(&labels(&[
                    ("id", reason.id().to_string()),
                    ("name", reason.name().to_string()),
                ]))
                .inc_by(totals[reason.index()]);
        }

        let pkts = counters(
            &mut r,
            "sa_packets",
            "Packets per SA (encaps outbound, decaps inbound)",
        );
        let octets = counters(&mut r, "sa_octets", "Plaintext octets per SA");
        let errs = counters(&mut r, "sa_errors", "Errors per SA by kind");
        let sa = |tunnel: &str, peer: String, dir: &str, id: SaId, spi: u32| {
            let c = sa_counters(&self.workers, id);
            let l = |extra: Option<(&str, &str)>| {
                let mut v = labels(&[
                    ("tunnel", tunnel.to_string()),
                    ("peer", peer.clone()),
                    ("direction", dir.to_string()),
                    ("spi", format!("0x{spi:08X}")),
                ]);
                if let Some((k, val)) = extra {
                    v.push((k.to_string(), val.to_string()));
                }
                v
            };
            let (p, o) = if dir == "outbound" {
                (c.encaps, c.encap_octets)
            } else {
                (c.decaps, c.decap_octets)
            };
            pkts.get_or_create(&l(None)).inc_by(p);
            octets.get_or_create(&l(None)).inc_by(o);
            for (kind, v) in [
                ("verify_failed", c.verify_failed),
                ("replay_too_old", c.replay_too_old),
                ("replay_duplicate", c.replay_duplicate),
                ("send", c.send_errors),
                ("recv", c.recv_errors),
            ] {
                errs.get_or_create(&l(Some(("kind", kind)))).inc_by(v);
            }
        };
        for r in self.all_sas() {
            let dir = if r.inbound { "inbound" } else { "outbound" };
            sa(r.tunnel, r.peer, dir, r.id, r.spi);
        }

        let q = counters(&mut r, "afxdp", "AF_XDP per-queue counters");
        for info in &self.queues {
            for (name, v) in xdpsec_worker::stats::QUEUE_FIELDS.iter().zip(info.values()) {
                q.get_or_create(&labels(&[
                    ("queue", info.queue.to_string()),
                    ("counter", (*name).to_string()),
                ]))
                .inc_by(v);
            }
        }
        let w = counters(
            &mut r,
            "worker_io",
            "Per-queue worker I/O around the datapath core (TUN, inside socket, handoff, punt/inject)",
        );
        for info in &self.queues {
            for (name, v) in info.io_counters() {
                w.get_or_create(&labels(&[
                    ("queue", info.queue.to_string()),
                    ("counter", name.to_string()),
                ]))
                .inc_by(v);
            }
        }
        if let Some(inside) = self.steering.as_mut().and_then(|st| st.inside())
            && let Ok(raw) = inside.counters()
        {
            let x = counters(
                &mut r,
                "inside_xdp",
                "Gateway mode: the inside XDP program's counters",
            );
            for c in xdpsec_common::InsideCounter::ALL {
                x.get_or_create(&labels(&[("counter", c.name().to_string())]))
                    .inc_by(raw[c as usize]);
            }
        }
        if let Some(st) = self.steering.as_ref()
            && let Ok(raw) = st.counters()
        {
            let x = counters(&mut r, "xdp_steering", "XDP steering counters");
            for c in XdpCounter::ALL {
                x.get_or_create(&labels(&[("counter", c.name().to_string())]))
                    .inc_by(raw[c as usize]);
            }
        }
        let nh = Counter::<u64>::default();
        nh.inc_by(self.next_hops.refreshes());
        r.register(
            "next_hop_refreshes",
            "Passes resolving the peers' next hops over rtnetlink",
            nh,
        );
        if let Some(ike) = &self.ike {
            let g = gauges(&mut r, "ike_sa_up", "IKEv2 SAs: 1 when established");
            // One series per IKE tunnel and peer address (as configured:
            // not the port, which moves from 500 to the NAT-T port), there
            // while the tunnel has no IKE SA at all too (0, as while
            // negotiating): a peer that is down must read 0, not vanish.
            // 1 when any of its SAs is established (during a rekey or a
            // clear there are two).
            let mut up: std::collections::BTreeMap<(String, String), bool> = self
                .registry
                .iter()
                .filter(|e| e.kind == crate::owner::Kind::Ike)
                .map(|e| ((e.name.clone(), e.peer.to_string()), false))
                .collect();
            for v in ike.sas(self.now) {
                *up.entry((v.tunnel.clone(), v.remote.ip().to_string()))
                    .or_default() |= v.status == xdpsec_ike::IkeSaStatus::Ready;
            }
            for ((tunnel, peer), up) in up {
                g.get_or_create(&labels(&[("tunnel", tunnel), ("peer", peer)]))
                    .set(i64::from(up));
            }
        }
        if let Some(s) = &self.sdwan {
            let g = gauges(&mut r, "bfd_session_up", "SD-WAN BFD sessions: 1 when up");
            for p in s.peers.values() {
                g.get_or_create(&labels(&[
                    ("system_ip", p.sa.remote.system_ip.to_string()),
                    ("local_color", p.sa.local_color.clone()),
                    ("remote_color", p.sa.remote.color.clone()),
                    (
                        "destination",
                        format!("{}:{}", p.sa.remote_ip, p.sa.remote_port),
                    ),
                ]))
                .set(i64::from(p.up_since.is_some()));
            }
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &r) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}
