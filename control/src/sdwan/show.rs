//! The SD-WAN edge's show and request commands, on the owner.
use std::{net::IpAddr, time::Instant};

use anyhow::{Result, anyhow};
use serde_json::{Value, json};
use xdpsec_datapath::sa::{SaCold, SaId};

use crate::{commands::SaEntry, controller::show as cshow, owner::Owner};

use super::{Sdwan, render};

/// `addr/255.255.255.255/0/port` (IPv4) or `addr/128/0/port`, as IOS XE
/// shows an SD-WAN tunnel's idents.
fn host_ident(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/255.255.255.255/0/{port}"),
        IpAddr::V6(_) => format!("{a}/128/0/{port}"),
    }
}

impl Owner {
    fn edge(&self) -> Result<&Sdwan> {
        self.sdwan.as_ref().ok_or_else(|| {
            anyhow!("this node is not an SD-WAN edge (no [sdwan] section in its config)")
        })
    }

    /// `show crypto ipsec sa` rows of the SD-WAN peers (with `peer`: only
    /// that remote TLOC address's).
    pub(crate) fn sdwan_sa_entries(&self, peer: Option<IpAddr>) -> Vec<SaEntry<'_>> {
        let Some(s) = &self.sdwan else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in s.peers.values() {
            if peer.is_some_and(|a| a != p.sa.remote_ip) {
                continue;
            }
            let Some(t) = s.tloc(&p.sa.local_color) else {
                continue;
            };
            let cold = |id: SaId| -> Option<(SaId, &SaCold)> { Some((id, self.table.cold(id)?)) };
            let (inb, outb) =
                self.sa_pair_counters(p.inbound.iter().map(|(_, id)| *id), p.outbound.map(|o| o.1));
            out.push(SaEntry {
                name: &t.name,
                tag: format!("{}-vesen-head-0", t.name),
                local: p.sa.local_ip,
                local_ident: host_ident(p.sa.local_ip, p.sa.local_port),
                remote_ident: host_ident(p.sa.remote_ip, p.sa.remote_port),
                peer: p.sa.remote_ip,
                port: p.sa.remote_port,
                inbound: p.inbound.iter().filter_map(|(_, id)| cold(*id)).collect(),
                outbound: p.outbound.and_then(|o| cold(o.1)),
                inb,
                outb,
                udp: true,
                keys_note: "keys from OMP",
                pfs: None,
                replay: true,
            });
        }
        out
    }

    /// `show sdwan bfd sessions`.
    pub(crate) fn show_sdwan_bfd_sessions(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let now = Instant::now();
        let mut rows = Vec::new();
        for p in s.peers.values() {
            let Some(v) = s.bfd.session(now, u64::from(p.index)) else {
                continue;
            };
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
                transitions: u64::from(v.transitions),
            });
        }
        Ok(render::bfd_sessions(&rows))
    }

    /// `show sdwan control connections` on the edge: one row per local color.
    pub(crate) fn show_sdwan_control_connections(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let rows: Vec<xdpsec_omp::controller::ConnectionView> = s
            .edge
            .control_connections(Instant::now())
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

    /// `show sdwan omp tlocs` on the edge: local TLOCs, then learned ones.
    pub(crate) fn show_sdwan_omp_tlocs(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let rows: Vec<xdpsec_omp::controller::TlocView> = s
            .edge
            .tlocs()
            .into_iter()
            .map(|t| xdpsec_omp::controller::TlocView {
                system_ip: t.system_ip,
                color: t.color,
                encap: t.encap,
                public_ip: t.public_ip,
                public_port: t.public_port,
                spi: t.spi,
                status: t.status,
            })
            .collect();
        Ok(cshow::omp_tlocs(&rows))
    }

    /// `show sdwan omp routes` on the edge: learned service routes, with
    /// the TLOC colors they resolve through; `C,I,R` when installed (a
    /// BFD-up tunnel carries them), `R` otherwise.
    pub(crate) fn show_sdwan_omp_routes(&self) -> Result<(String, Value)> {
        let s = self.edge()?;
        let installed: std::collections::BTreeSet<crate::config::Cidr> =
            s.datapath_routes().into_iter().map(|(c, _)| c).collect();
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
        for c in s.edge.control_connections(Instant::now()) {
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

    /// `request platform software sdwan security ipsec-rekey`: a new
    /// inbound SPI and key on every local TLOC now, advertised through the
    /// controller; the old SAs still decrypt for the grace time.
    pub(crate) fn sdwan_ipsec_rekey(&mut self) -> Result<(String, Value)> {
        let s = self.sdwan.as_mut().ok_or_else(|| {
            anyhow!("this node is not an SD-WAN edge (no [sdwan] section in its config)")
        })?;
        let before: Vec<(String, Option<u32>)> = s
            .tlocs
            .iter()
            .map(|t| (t.name.clone(), s.edge.local_spi(&t.color)))
            .collect();
        let actions = s.edge.ipsec_rekey(Instant::now());
        self.sdwan_omp_actions(actions);
        let s = self.sdwan.as_ref().expect("checked above");
        let mut text = String::new();
        let mut list = Vec::new();
        for ((name, old), t) in before.iter().zip(&s.tlocs) {
            let new = s.edge.local_spi(&t.color);
            text.push_str(&format!(
                "{name} ({}): inbound SPI 0x{:08X} -> 0x{:08X}; advertised to the controller\n",
                t.color,
                old.unwrap_or(0),
                new.unwrap_or(0)
            ));
            list.push(json!({"tunnel": name, "color": t.color, "old_spi": old, "new_spi": new}));
        }
        tracing::info!("ipsec-rekey: {}", text.trim_end().replace('\n', "; "));
        Ok((text, json!({ "rekeyed": list })))
    }
}
