//! The values of one Prometheus scrape, read from the owner's state (the
//! renderer of the text is `crate::metrics::render`).
use xdpsec_common::{InsideCounter, XdpCounter};
use xdpsec_datapath::{DropReason, worker::sa_counters};

use super::{Kind, Msg, Owner, OwnerHandle};
use crate::metrics::{MetricFamily, MetricKind, Metrics, Series};

/// How long a scrape waits for the owner.
const SCRAPE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl OwnerHandle {
    /// One scrape's text from the owner thread (None: it is stopping, or
    /// did not answer within [`SCRAPE_WAIT`]).
    pub fn scrape(&self) -> Option<String> {
        let (tx, rx) = crossbeam::channel::bounded(1);
        if !self.send(Msg::Metrics(tx)) {
            return None;
        }
        rx.recv_timeout(SCRAPE_WAIT).ok()
    }
}

impl Owner {
    /// One scrape: every metric, encoded.
    pub fn metrics_text(&mut self) -> String {
        crate::metrics::render(&self.metrics())
    }

    /// One scrape's values, raw totals since start.
    pub(crate) fn metrics(&mut self) -> Metrics {
        self.sync_xdp_drops();
        let mut m = Metrics::default();
        let totals = self.drops.raw_totals();
        m.families.push(MetricFamily::counters(
            "qfp_drops",
            "IPsec datapath drops by QFP drop type",
            DropReason::ALL.iter().map(|r| {
                Series::new(
                    &[("id", r.id().to_string()), ("name", r.name().to_string())],
                    totals[r.index()],
                )
            }),
        ));

        let (mut pkts, mut octets, mut errs) = (Vec::new(), Vec::new(), Vec::new());
        for r in self.all_sas() {
            let dir = if r.inbound { "inbound" } else { "outbound" };
            let c = sa_counters(&self.workers, r.id);
            let labels = [
                ("tunnel", r.tunnel.to_string()),
                ("peer", r.peer.clone()),
                ("direction", dir.to_string()),
                ("spi", format!("0x{:08X}", r.spi)),
            ];
            let (p, o) = if r.inbound {
                (c.decaps, c.decap_octets)
            } else {
                (c.encaps, c.encap_octets)
            };
            pkts.push(Series::new(&labels, p));
            octets.push(Series::new(&labels, o));
            for (kind, v) in [
                ("verify_failed", c.verify_failed),
                ("replay_too_old", c.replay_too_old),
                ("replay_duplicate", c.replay_duplicate),
                ("send", c.send_errors),
                ("recv", c.recv_errors),
            ] {
                let mut s = Series::new(&labels, v);
                s.labels.push(("kind".into(), kind.into()));
                errs.push(s);
            }
        }
        m.families.push(MetricFamily::counters(
            "sa_packets",
            "Packets per SA (encaps outbound, decaps inbound)",
            pkts,
        ));
        m.families.push(MetricFamily::counters(
            "sa_octets",
            "Plaintext octets per SA",
            octets,
        ));
        m.families.push(MetricFamily::counters(
            "sa_errors",
            "Errors per SA by kind",
            errs,
        ));

        let per_queue = |name: &str, v: u64, queue: u32| {
            Series::new(
                &[("queue", queue.to_string()), ("counter", name.to_string())],
                v,
            )
        };
        m.families.push(MetricFamily::counters(
            "afxdp",
            "AF_XDP per-queue counters",
            self.queues.iter().flat_map(|info| {
                xdpsec_worker::stats::QUEUE_FIELDS
                    .iter()
                    .zip(info.values())
                    .map(|(name, v)| per_queue(name, v, info.queue))
                    .collect::<Vec<_>>()
            }),
        ));
        m.families.push(MetricFamily::counters(
            "worker_io",
            "Per-queue worker I/O around the datapath core (TUN, inside socket, handoff, punt/inject)",
            self.queues.iter().flat_map(|info| {
                info.io_counters()
                    .into_iter()
                    .map(|(name, v)| per_queue(name, v, info.queue))
                    .collect::<Vec<_>>()
            }),
        ));
        let counter = |name: &str, v: u64| Series::new(&[("counter", name.to_string())], v);
        if let Some(inside) = self.steering.as_mut().and_then(|st| st.inside())
            && let Ok(raw) = inside.counters()
        {
            m.families.push(MetricFamily::counters(
                "inside_xdp",
                "Gateway mode: the inside XDP program's counters",
                InsideCounter::ALL
                    .iter()
                    .map(|&c| counter(c.name(), raw[c as usize])),
            ));
        }
        if let Some(st) = self.steering.as_ref()
            && let Ok(raw) = st.counters()
        {
            m.families.push(MetricFamily::counters(
                "xdp_steering",
                "XDP steering counters",
                XdpCounter::ALL
                    .iter()
                    .map(|&c| counter(c.name(), raw[c as usize])),
            ));
        }
        m.families.push(MetricFamily {
            name: "next_hop_refreshes",
            help: "Passes resolving the peers' next hops over rtnetlink",
            kind: MetricKind::Total,
            series: vec![Series::new(&[], self.next_hops.refreshes())],
        });
        m.families.push(MetricFamily {
            name: "next_hop_held_sent",
            help: "Frames held for a next hop without a MAC, sent once it was resolved",
            kind: MetricKind::Total,
            series: vec![Series::new(&[], self.next_hops.held_sent())],
        });
        if let Some(ike) = &self.ike {
            // One series per IKE tunnel and peer address (as configured:
            // not the port, which moves from 500 to the NAT-T port), there
            // while the tunnel has no IKE SA at all too (0, as while
            // negotiating): a peer that is down must read 0, not vanish.
            // 1 when any of its SAs is established (during a rekey or a
            // clear there are two).
            let mut up: std::collections::BTreeMap<(String, String), bool> = self
                .registry
                .iter()
                .filter(|e| e.kind == Kind::Ike)
                .map(|e| ((e.name.clone(), e.peer.to_string()), false))
                .collect();
            for v in ike.sas(self.now) {
                *up.entry((v.tunnel.clone(), v.remote.ip().to_string()))
                    .or_default() |= v.status == xdpsec_ike::IkeSaStatus::Ready;
            }
            m.families.push(MetricFamily::gauges(
                "ike_sa_up",
                "IKEv2 SAs: 1 when established",
                up.into_iter().map(|((tunnel, peer), up)| {
                    Series::new(&[("tunnel", tunnel), ("peer", peer)], u64::from(up))
                }),
            ));
        }
        if let Some(s) = &self.sdwan {
            m.families.push(MetricFamily::gauges(
                "bfd_session_up",
                "SD-WAN BFD sessions: 1 when up",
                s.peers.values().map(|p| {
                    Series::new(
                        &[
                            ("system_ip", p.sa.remote.system_ip.to_string()),
                            ("local_color", p.sa.local_color.clone()),
                            ("remote_color", p.sa.remote.color.clone()),
                            (
                                "destination",
                                format!("{}:{}", p.sa.remote_ip, p.sa.remote_port),
                            ),
                        ],
                        u64::from(p.up_since.is_some()),
                    )
                }),
            ));
        }
        m
    }
}
