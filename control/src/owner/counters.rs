//! Counters since the last clear, and the commands that clear them or
//! change what XDP steers.
use std::sync::{Arc, atomic::Ordering};

use anyhow::Result;
use serde_json::{Value, json};
use xdpsec_datapath::worker::{SaCounters, WorkerShared};

use super::{Kind, Owner, TunnelEntry};
use crate::{platform::loader::XdpSteering, show};

/// Dummy packets (ESP next header 59) summed over every worker.
pub(crate) fn dummy_packets(workers: &[Arc<WorkerShared>]) -> u64 {
    workers
        .iter()
        .map(|w| w.dummy_packets.load(Ordering::Relaxed))
        .sum()
}

impl Owner {
    /// `f` on the XDP steering (an error once the datapath is stopping).
    pub(super) fn with_steering<T>(
        &mut self,
        f: impl FnOnce(&mut XdpSteering) -> Result<T>,
    ) -> Result<T> {
        match self.steering.as_mut() {
            Some(s) => f(s),
            None => anyhow::bail!("the datapath is shutting down"),
        }
    }

    /// A tunnel's counters since the last clear: (inbound, over all its
    /// inbound SAs, two during a rekey; outbound).
    pub(crate) fn tunnel_counters(&self, e: &TunnelEntry) -> (SaCounters, SaCounters) {
        self.registry.counters(&self.workers, e)
    }

    /// `clear crypto sa counters`: every SA's counters read as zero from now on.
    pub(super) fn clear_sa_counters(&mut self) -> (String, Value) {
        self.registry.clear_counters(&self.workers);
        (String::new(), json!({"cleared": true}))
    }

    /// `clear platform hardware qfp active feature ipsec datapath drops`.
    pub(super) fn clear_drops(&self) -> (String, Value) {
        self.drops.clear();
        (String::new(), json!({"cleared": true}))
    }

    /// `clear platform hardware qfp active statistics`.
    pub(super) fn clear_qfp_statistics(&mut self) -> Result<(String, Value)> {
        let raw = self.with_steering(|s| s.counters())?;
        let inside = self.with_steering(|s| match s.inside() {
            Some(i) => i.counters().map(Some),
            None => Ok(None),
        })?;
        let base = &mut self.baseline;
        base.xdp = raw;
        if let Some(v) = inside {
            base.inside_xdp = v;
        }
        for (i, q) in self.queues.iter().enumerate() {
            base.queues[i] = q.values();
        }
        base.kernel = self.kernel_rx.values().map(|(_, v)| v);
        base.dummy_packets = dummy_packets(&self.workers);
        Ok((String::new(), json!({"cleared": true})))
    }

    /// `request platform software xdpsec udp-port add|remove PORT`: the
    /// reply (`show platform software xdpsec udp-ports`) goes out after the
    /// shell changed XDP's map.
    pub(super) fn set_udp_port(&mut self, port: u32, steer: bool) -> Result<(String, Value)> {
        if port == 0 || port > 65535 || port == 500 {
            anyhow::bail!("port {port}: give a UDP port 1-65535 other than 500 (IKE)");
        }
        let port = port as u16;
        if steer {
            self.steer_udp_ports(&[port], &[])?;
        } else {
            self.steer_udp_ports(&[], &[port])?;
        }
        Ok(show::reply(
            &self.udp_ports(),
            show::system::render_udp_ports,
        ))
    }

    /// `clear crypto ikev2 sa [remote ADDR]` / `clear crypto session [remote ADDR]`.
    pub(super) fn clear_ike(&mut self, peer: Option<std::net::IpAddr>) -> Result<(String, Value)> {
        if self.ike.is_none() {
            anyhow::bail!("no IKEv2 tunnel is configured");
        }
        if let Some(p) = peer
            && !self.registry.matching(Some(p)).any(|e| e.kind == Kind::Ike)
        {
            anyhow::bail!("no IKEv2 tunnel has peer {p}");
        }
        self.ike_input(xdpsec_ike::Input::Command(
            xdpsec_ike::Command::ClearIkeSas(peer),
        ));
        Ok((String::new(), json!({"cleared": true})))
    }
}
