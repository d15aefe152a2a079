//! The SD-WAN edge's show commands, on the owner: the rows of
//! its peers are built from one walk of the tunnel registry
//! ([`Owner::sdwan_peers`]), rendered by [`crate::sdwan::render`].
use std::net::IpAddr;

use anyhow::{Result, anyhow};
use serde_json::Value;

use super::{Owner, TunnelEntry};
use crate::{
    sdwan::{MAX_PEERS, Sdwan, TlocIf, render},
    show::{
        crypto_sa::{CryptoSaRow, SaTotals},
        history, omp as cshow,
    },
};

/// `addr/255.255.255.255/0/port` (IPv4) or `addr/128/0/port`, as IOS XE
/// shows an SD-WAN tunnel's idents.
fn host_ident(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/255.255.255.255/0/{port}"),
        IpAddr::V6(_) => format!("{a}/128/0/{port}"),
    }
}

impl Owner {
    /// The SD-WAN edge, or the error of a node that is none.
    pub(super) fn edge(&self) -> Result<&Sdwan> {
        self.sdwan.as_ref().ok_or_else(|| {
            anyhow!("this node is not an SD-WAN edge (no [sdwan] section in its config)")
        })
    }

    /// The `show crypto ipsec sa` row of the SD-WAN peer registered as `e`,
    /// an ident under its TLOC's interface.
    pub(crate) fn sdwan_sa_row(&self, e: &TunnelEntry) -> Option<CryptoSaRow> {
        let p = self.sdwan_peer(e)?;
        let (inb, outb) = self.tunnel_counters(e);
        Some(CryptoSaRow {
            name: e.name.clone(),
            tag: format!("{}-vesen-head-0", e.name),
            grouped: true,
            local: p.sa.local_ip,
            local_ident: host_ident(p.sa.local_ip, p.sa.local_port),
            remote_ident: host_ident(p.sa.remote_ip, p.sa.remote_port),
            peer: p.sa.remote_ip,
            port: p.sa.remote_port,
            inbound: e
                .inbound
                .iter()
                .filter_map(|s| self.esp_sa_row(s.id))
                .collect(),
            outbound: e.outbound.and_then(|s| self.esp_sa_row(s.id)),
            totals: SaTotals::new(&inb, &outb),
            udp: true,
            keys_note: "keys from OMP",
            pfs: None,
            replay: true,
        })
    }

    /// `show sdwan bfd sessions`.
    pub(crate) fn show_sdwan_bfd_sessions(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let now = self.now;
        let mut rows = Vec::new();
        for (name, e, p) in self.sdwan_peers() {
            let Some(v) = s.bfd.session(now, u64::from(e.index)) else {
                continue;
            };
            let before = s.bfd_transitions_before.get(&name).copied().unwrap_or(0);
            rows.push(render::BfdSessionRow {
                system_ip: p.sa.remote.system_ip,
                site_id: p.sa.remote_site_id,
                state: if v.state == xdpsec_bfd::State::Up {
                    "up"
                } else {
                    "down"
                },
                source_color: p.sa.local_color.clone(),
                remote_color: p.sa.remote.color.clone(),
                source_ip: p.sa.local_ip,
                destination_ip: p.sa.remote_ip,
                destination_port: p.sa.remote_port,
                encap: "ipsec",
                multiplier: v.multiplier,
                tx_interval_ms: u32::try_from(v.tx_interval_ms).unwrap_or(u32::MAX),
                uptime_seconds: v.uptime.as_secs(),
                transitions: before + u64::from(v.transitions),
            });
        }
        Ok(render::bfd_sessions(&rows))
    }

    /// `show sdwan control connections` on the edge: one row per local color.
    pub(crate) fn show_sdwan_control_connections(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let rows: Vec<xdpsec_omp::controller::ConnectionView> = s
            .edge
            .control_connections(self.now)
            .into_iter()
            .map(|c| xdpsec_omp::controller::ConnectionView {
                peer_type: c.peer_type,
                system_ip: c.system_ip,
                site_id: c.site_id,
                color: Some(c.color),
                remote: s.cfg.controller,
                state: c.state,
                uptime_seconds: c.uptime_seconds,
            })
            .collect();
        Ok(cshow::control_connections(&rows))
    }

    /// `show sdwan control connection-history` on the edge.
    pub(crate) fn show_sdwan_control_connection_history(&self) -> Result<(String, Value)> {
        let rows = self.edge()?.edge.history();
        let now = self.now;
        Ok(history::render(&rows, now, std::time::SystemTime::now()))
    }

    /// `show sdwan omp tlocs` on the edge: local TLOCs, then learned ones.
    pub(crate) fn show_sdwan_omp_tlocs(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        Ok(cshow::omp_tlocs(&s.edge.tlocs()))
    }

    /// `show sdwan omp routes` on the edge: learned service routes, with
    /// the TLOC colors they resolve through; `C,I,R` when installed (a
    /// BFD-up tunnel carries them), `R` otherwise.
    pub(crate) fn show_sdwan_omp_routes(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let installed: std::collections::BTreeSet<crate::config::Cidr> = self
            .sdwan_datapath_routes()
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let rows: Vec<xdpsec_omp::controller::RouteView> = s
            .edge
            .routes()
            .into_iter()
            .map(|r| {
                let colors: Vec<String> = s
                    .routes
                    .get(&r.prefix)
                    .map(|v| {
                        v.iter()
                            .filter(|t| t.system_ip == r.system_ip)
                            .map(|t| t.color.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let c = crate::config::Cidr {
                    addr: r.prefix.addr,
                    len: r.prefix.len,
                };
                xdpsec_omp::controller::RouteView {
                    prefix: r.prefix,
                    originator: r.system_ip,
                    site_id: r.site_id,
                    tloc_colors: colors,
                    status: if installed.contains(&c) { "C,I,R" } else { "R" },
                }
            })
            .collect();
        Ok(cshow::omp_routes(&rows))
    }

    /// `show sdwan omp peers` on the edge: the controller, per connection.
    pub(crate) fn show_sdwan_omp_peers(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let received = s.edge.tlocs().len() - s.tlocs.len() + s.edge.routes().len();
        let sent = s.tlocs.len() + s.cfg.service_prefixes.len();
        let mut rows = Vec::new();
        for c in s.edge.control_connections(self.now) {
            let Some(sys) = c.system_ip else { continue };
            if rows
                .iter()
                .any(|r: &xdpsec_omp::controller::PeerView| r.system_ip == sys)
            {
                continue;
            }
            rows.push(xdpsec_omp::controller::PeerView {
                system_ip: sys,
                site_id: c.site_id.unwrap_or(0),
                peer_type: "vsmart",
                state: c.state,
                uptime_seconds: c.uptime_seconds,
                received,
                sent,
            });
        }
        Ok(cshow::omp_peers(&rows))
    }

    /// `show sdwan bfd summary`.
    pub(crate) fn show_sdwan_bfd_summary(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let now = self.now;
        let views: Vec<_> = self
            .sdwan_peers()
            .filter_map(|(name, e, _)| {
                let v = s.bfd.session(now, u64::from(e.index))?;
                let before = s.bfd_transitions_before.get(&name).copied().unwrap_or(0);
                Some((v.state, before + u64::from(v.transitions)))
            })
            .collect();
        let up = views
            .iter()
            .filter(|(state, _)| *state == xdpsec_bfd::State::Up)
            .count() as u64;
        // Flaps: each exit from Up (a session that came up once shows 1
        // transition), rebuilt sessions' earlier ones included.
        let flaps = views.iter().map(|(_, t)| t / 2).sum();
        Ok(render::bfd_summary(&render::BfdSummary {
            sessions_total: views.len() as u64,
            sessions_up: up,
            sessions_max: u64::from(MAX_PEERS),
            sessions_flap: flaps,
            poll_interval_ms: 600_000,
        }))
    }

    /// `show sdwan ipsec inbound-connections`: one row per peer sending to us.
    pub(crate) fn show_sdwan_ipsec_inbound(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let rows: Vec<render::InboundConnectionRow> = self
            .sdwan_peers()
            .filter(|(_, e, _)| !e.inbound.is_empty())
            .map(|(_, e, p)| render::InboundConnectionRow {
                source_ip: p.sa.remote_ip,
                source_port: p.sa.remote_port,
                destination_ip: p.sa.local_ip,
                destination_port: p.sa.local_port,
                remote_tloc: p.sa.remote.system_ip,
                remote_tloc_color: p.sa.remote.color.clone(),
                local_tloc: s.cfg.system_ip,
                local_tloc_color: p.sa.local_color.clone(),
                encryption_algorithm: "AES-GCM-256",
                tc_spis: e.inbound.len() as u32,
            })
            .collect();
        Ok(render::ipsec_inbound_connections(&rows))
    }

    /// `show sdwan ipsec outbound-connections`: one row per peer we send to.
    pub(crate) fn show_sdwan_ipsec_outbound(&self) -> Result<(String, Value)> {
        self.edge()?;
        let rows: Vec<render::OutboundConnectionRow> = self
            .sdwan_peers()
            .filter_map(|(_, e, p)| {
                let spi = e.outbound?.spi;
                Some(render::OutboundConnectionRow {
                    source_ip: p.sa.local_ip,
                    source_port: p.sa.local_port,
                    destination_ip: p.sa.remote_ip,
                    destination_port: p.sa.remote_port,
                    spi,
                    tunnel_mtu: crate::platform::tun::TUN_MTU as u16,
                    remote_tloc: p.sa.remote.system_ip,
                    remote_tloc_color: p.sa.remote.color.clone(),
                    authentication: "AES-GCM-256",
                    key_hash: render::key_hash(p.sa.outbound.key.bytes()),
                    encryption_algorithm: "AES-GCM-256",
                    tc_spis: 1,
                })
            })
            .collect();
        Ok(render::ipsec_outbound_connections(&rows))
    }

    /// `show sdwan ipsec local-sa SYSTEM-IP`: this edge's TLOC SPIs
    /// (current, and old ones within the rekey grace), never a key.
    pub(crate) fn show_sdwan_ipsec_local_sa(&self, tloc: IpAddr) -> Result<(String, Value)> {
        let s = self.edge()?;
        let matches_tloc = |t: &TlocIf| tloc == IpAddr::V4(s.cfg.system_ip) || tloc == t.address;
        let mut rows = Vec::new();
        for t in s.tlocs.iter().filter(|t| matches_tloc(t)) {
            for (spi, key) in s.edge.local_sas(&t.color) {
                rows.push(render::LocalSaRow {
                    tloc_address: s.cfg.system_ip,
                    tloc_color: t.color.clone(),
                    spi,
                    source_ip: t.address,
                    source_port: t.port,
                    key_hash: render::key_hash(key.bytes()),
                });
            }
        }
        if rows.is_empty() {
            return Err(anyhow!(
                "{tloc} is not this edge's system-ip ({}) or a local TLOC address",
                s.cfg.system_ip
            ));
        }
        Ok(render::ipsec_local_sa(&rows))
    }

    /// `show sdwan tunnel statistics`: per peer, packets and plaintext
    /// octets since the last `clear crypto sa counters`.
    pub(crate) fn show_sdwan_tunnel_statistics(&self) -> Result<(String, Value)> {
        self.edge()?;
        let rows: Vec<render::TunnelStatisticsRow> = self
            .sdwan_peers()
            .map(|(_, e, p)| {
                let (inb, outb) = self.tunnel_counters(e);
                render::TunnelStatisticsRow {
                    protocol: "ipsec",
                    src_ip: p.sa.local_ip,
                    dest_ip: p.sa.remote_ip,
                    src_port: p.sa.local_port,
                    dst_port: p.sa.remote_port,
                    remote_sys_ip: p.sa.remote.system_ip,
                    local_color: p.sa.local_color.clone(),
                    remote_color: p.sa.remote.color.clone(),
                    tunnel_mtu: crate::platform::tun::TUN_MTU as u16,
                    tx_pkts: outb.encaps,
                    tx_octets: outb.encap_octets,
                    rx_pkts: inb.decaps,
                    rx_octets: inb.decap_octets,
                    tcp_mss_adjust: (crate::platform::tun::TUN_MTU - 40) as u16,
                    // Inner IPv6 is counted with the rest: not split out.
                    ipv6_tx_pkts: 0,
                    ipv6_tx_octets: 0,
                    ipv6_rx_pkts: 0,
                    ipv6_rx_octets: 0,
                    ipsec_decrypt_inbound: inb.decaps,
                    ipsec_rx_auth_failures: inb.verify_failed,
                    ipsec_rx_failures: inb.recv_errors + inb.replay_failed(),
                    ipsec_encrypt_outbound: outb.encaps,
                    ipsec_tx_auth_failures: 0,
                    ipsec_tx_failures: outb.send_errors,
                }
            })
            .collect();
        Ok(render::tunnel_statistics(&rows))
    }

    /// `show sdwan control local-properties`: the edge's identity and each
    /// TLOC's current port (after port hops).
    pub(crate) fn show_sdwan_local_properties(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let now = self.now;
        let conns = s.edge.control_connections(now);
        let tlocs = s
            .tlocs
            .iter()
            .map(|t| {
                let c = conns.iter().find(|c| c.color == t.color);
                render::LocalTlocRow {
                    interface: self.interface.clone(),
                    address: t.address,
                    port: t.port,
                    vsmart: u32::from(c.is_some_and(|c| c.state == "up")),
                    color: t.color.clone(),
                    state: if c.is_some_and(|c| c.state == "up") {
                        "up"
                    } else {
                        "down"
                    },
                    last_connection_seconds: c.map_or(0, |c| c.uptime_seconds),
                    spi_time_remaining_seconds: s
                        .edge
                        .next_rekey(&t.color)
                        .map_or(0, |at| at.saturating_duration_since(now).as_secs()),
                }
            })
            .collect();
        Ok(render::control_local_properties(&render::LocalProperties {
            system_ip: s.cfg.system_ip,
            site_id: s.cfg.site_id,
            dns_name: s.cfg.controller.ip().to_string(),
            protocol: "tls",
            chassis_num: self.node.clone(),
            keygen_interval_seconds: s.cfg.rekey.as_secs(),
            retry_interval_seconds: 1,
            no_activity_exp_interval_seconds: 12,
            port_hopped: s.last_port_hop.is_some(),
            time_since_last_port_hop_seconds: s
                .last_port_hop
                .map_or(0, |t| self.now.saturating_duration_since(t).as_secs()),
            pairwise_keying: true,
            tlocs,
        }))
    }
}
