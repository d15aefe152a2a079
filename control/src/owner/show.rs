//! The rows of the node's own show commands, read from the owner's state
//! (the renderers are in `crate::show`).
use anyhow::Result;
use xdpsec_common::{InsideCounter, XdpCounter};
use xdpsec_datapath::worker::FrameClass;
use xdpsec_datapath::{DropReason, sa::SaId};
use xdpsec_ike::{EspProposal, IkeOffer};
use xdpsec_worker::stats::QUEUE_FIELDS;

use super::Owner;
use crate::{
    config::{Cidr, Encap, TunnelKind},
    show::{
        Counters,
        crypto_sa::{CryptoSa, CryptoSaRow, EspSaRow, SaTotals},
        ikev2::{Ikev2Sas, SessionIkeSa, SessionRow, Sessions, ike_status},
        proposals::{
            Ikev2Fragmentation, Ikev2ProposalRow, Ikev2Proposals, TransformSetRow, TransformSets,
        },
        qfp::{InsideXdp, QfpStatistics, QueueRow},
        system::{DropRow, Drops, LogLimits, Logging, RateLimited, UdpPorts, Version},
    },
    state::crypto_map_tag,
};

/// `addr/mask` as IOS writes an IPv4 ident (`10.0.0.0/255.0.0.0`), or
/// `addr/len` for IPv6.
fn ident_mask(c: &Cidr) -> String {
    if c.addr.is_ipv4() {
        let m = if c.len == 0 {
            0
        } else {
            u32::MAX << (32 - c.len)
        };
        format!("{}/{}", c.addr, std::net::Ipv4Addr::from(m))
    } else {
        format!("{}/{}", c.addr, c.len)
    }
}

/// The kernel's name, release and machine (`uname -srm`).
fn kernel_release() -> String {
    // SAFETY: utsname is plain data, filled by uname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid utsname to fill.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "Linux".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} ({})",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    )
}

impl Owner {
    /// An SA's row in `show crypto ipsec sa` (None: not in the table).
    pub(crate) fn esp_sa_row(&self, id: SaId) -> Option<EspSaRow> {
        let cold = self.table.cold(id)?;
        Some(EspSaRow {
            spi: cold.spi,
            conn: id.index + 1,
            transform: cold.cipher.ios_transform(),
            lifetime_left: self.registry.lifetime(id).map(|(at, life)| {
                life.saturating_sub(self.now.saturating_duration_since(at))
                    .as_secs()
            }),
        })
    }

    /// `show crypto ipsec sa [peer ADDR]`: one walk of the registry, the
    /// manual and IKE tunnels, then the SD-WAN peers.
    pub(super) fn crypto_sa(&self, peer: Option<std::net::IpAddr>) -> CryptoSa {
        let mut rows = Vec::new();
        for ts in self.registry.matching(peer) {
            if !ts.is_configured() {
                rows.extend(self.sdwan_sa_row(ts));
                continue;
            }
            let t = &self.config.tunnels[ts.config_index()];
            let (inb, outb) = self.tunnel_counters(ts);
            let port = match t.encap {
                Encap::Esp => 500,
                Encap::Udp { peer_port, .. } => peer_port,
            };
            let remote = remote_flow(ts, t)
                .as_ref()
                .map(ident_mask)
                .unwrap_or_else(|| "0.0.0.0/0.0.0.0".into());
            let any = if t.peer.is_ipv4() {
                "0.0.0.0/0.0.0.0"
            } else {
                "::/0"
            };
            // PFS: the DH group of the tunnel's first ESP proposal, if any.
            let pfs = match &t.kind {
                TunnelKind::Ike(k) => k
                    .esp_proposals
                    .first()
                    .and_then(|p| xdpsec_ike::EspProposal::parse(p).ok())
                    .and_then(|p| p.dh),
                TunnelKind::Manual(_) => None,
            };
            rows.push(CryptoSaRow {
                name: ts.name.clone(),
                tag: match ts.instance {
                    Some(_) => format!("{}-head-0", ts.name),
                    None => crypto_map_tag(t),
                },
                grouped: false,
                local: self.local,
                local_ident: format!("{any}/0/0"),
                remote_ident: format!("{remote}/0/0"),
                peer: ts.peer,
                port,
                inbound: ts
                    .inbound
                    .iter()
                    .filter_map(|s| self.esp_sa_row(s.id))
                    .collect(),
                outbound: ts.outbound.and_then(|s| self.esp_sa_row(s.id)),
                totals: SaTotals::new(&inb, &outb),
                udp: matches!(t.encap, Encap::Udp { .. }),
                keys_note: match &t.kind {
                    TunnelKind::Manual(_) => "manual keys, no expiry",
                    TunnelKind::Ike(_) => "negotiated keys",
                },
                pfs,
                replay: t.replay_window > 0,
            });
        }
        CryptoSa {
            interface: self.interface.clone(),
            plaintext_mtu: crate::platform::tun::TUN_MTU,
            rows,
        }
    }

    /// The IKE SAs now (none without IKE tunnels).
    fn ike_views(&self) -> Vec<xdpsec_ike::IkeSaView> {
        self.ike
            .as_ref()
            .map(|i| i.sas(self.now))
            .unwrap_or_default()
    }

    /// `show crypto ikev2 sa [detailed]`.
    pub(super) fn ikev2_sas(&self, detailed: bool) -> Ikev2Sas {
        Ikev2Sas {
            detailed,
            rows: crate::show::ikev2::ikev2_sa_rows(&self.ike_views()),
        }
    }

    /// `show crypto session [detail]`: a session per tunnel.
    pub(super) fn sessions(&self, detail: bool) -> Sessions {
        let views = self.ike_views();
        let mut rows = Vec::new();
        // A session per configured tunnel (SD-WAN peers have none).
        for ts in self.registry.iter().filter(|e| e.is_configured()) {
            let i = ts.index as usize;
            let t = &self.config.tunnels[ts.config_index()];
            let ike = views.iter().find(|v| v.tunnel == ts.name);
            let active_sas = ts.inbound.len() + usize::from(ts.outbound.is_some());
            let ready = ike.is_some_and(|v| v.status == xdpsec_ike::IkeSaStatus::Ready);
            let status = match (&t.kind, ike) {
                (TunnelKind::Manual(_), _) => "UP-NO-IKE",
                (TunnelKind::Ike(_), Some(_)) if ready && active_sas > 0 => "UP-ACTIVE",
                (TunnelKind::Ike(_), Some(_)) if ready => "UP-IDLE",
                (TunnelKind::Ike(_), Some(_)) => "DOWN-NEGOTIATING",
                (TunnelKind::Ike(_), None) => "DOWN",
            };
            let peer_port = ike.map(|v| v.remote.port()).unwrap_or(match t.encap {
                Encap::Udp { peer_port, .. } => peer_port,
                Encap::Esp => 500,
            });
            let (inbound, outbound) = self.tunnel_counters(ts);
            rows.push(SessionRow {
                interface: ts.name.clone(),
                session_status: status,
                peer: ts.peer,
                peer_port,
                session_id: i,
                kind: t.kind.name(),
                ike_sa: ike.map(|v| SessionIkeSa {
                    tunnel_id: v.id,
                    status: ike_status(v.status),
                    local: v.local,
                    remote: v.remote,
                }),
                active_sas,
                local_flow: t.local_selectors(&self.config.inside).first().copied(),
                remote_flow: remote_flow(ts, t),
                inbound,
                outbound,
            });
        }
        Sessions { detail, rows }
    }

    /// `show version`.
    pub(super) fn version(&self) -> Version {
        Version {
            version: env!("CARGO_PKG_VERSION"),
            node: self.node.clone(),
            uptime_s: self.now.saturating_duration_since(self.started).as_secs(),
            operating_mode: "Autonomous",
            kernel: kernel_release(),
            image: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "xdpsec".into()),
            interface: self.interface.clone(),
            local: self.local,
        }
    }

    /// `show logging`.
    pub(super) fn logging(&self) -> Logging {
        Logging {
            lines: self.log.lines().cloned().collect(),
            limits: Some(LogLimits {
                rate_limited: self
                    .events
                    .suppressed()
                    .iter()
                    .map(|(k, n)| RateLimited {
                        kind: format!("{k:?}"),
                        suppressed: *n,
                    })
                    .collect(),
                events_lost: self.events.lost,
            }),
            logged: self.log.logged,
        }
    }

    /// `show platform software xdpsec udp-ports`.
    pub(super) fn udp_ports(&self) -> UdpPorts {
        UdpPorts {
            udp_ports: self.steered.iter().copied().collect(),
        }
    }

    /// `show platform hardware qfp active feature ipsec datapath drops [all]`.
    pub(super) fn drops(&self, all: bool) -> Drops {
        let t = self.drops.totals();
        Drops {
            all,
            drops: DropReason::ALL
                .iter()
                .map(|r| DropRow {
                    id: r.id(),
                    name: r.name(),
                    packets: t[r.index()],
                })
                .collect(),
        }
    }

    /// `show platform hardware qfp active statistics`: each counter less
    /// its value at the last clear.
    pub(super) fn qfp_statistics(&mut self) -> Result<QfpStatistics> {
        let (interface, attach_mode, raw, early_drop) = self.with_steering(|s| {
            Ok((
                s.interface.clone(),
                s.attach_mode,
                s.counters()?,
                s.early_drop(),
            ))
        })?;
        let inside = self.with_steering(|s| {
            Ok(match s.inside() {
                Some(i) => Some((i.interface.clone(), i.attach_mode, i.counters()?)),
                None => None,
            })
        })?;
        let base = &self.baseline;
        let xdp = Counters::new(XdpCounter::ALL.iter().map(|&c| {
            (
                c.name(),
                raw[c as usize].saturating_sub(base.xdp[c as usize]),
            )
        }));
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let d: Vec<u64> = q
                    .values()
                    .iter()
                    .zip(base.queues[i])
                    .map(|(a, b)| a.saturating_sub(b))
                    .collect();
                QueueRow {
                    queue: q.queue,
                    mode: q.mode.as_str(),
                    counters: Counters::new(QUEUE_FIELDS.iter().copied().zip(d)),
                    kernel_from: 3 + FrameClass::COUNT,
                    busy_poll_us: q.busy_poll_us(),
                    idle_polls: q.idle_polls(),
                    io: Counters::new(q.io_counters()),
                    inside_kernel: q.inside_kernel_counters().map(|k| {
                        Counters(
                            xdpsec_afxdp::XdpStatistics::FIELDS
                                .iter()
                                .zip(k.values())
                                .map(|(f, v)| (format!("inside_{f}"), v))
                                .collect(),
                        )
                    }),
                }
            })
            .collect();
        let kernel = Counters::new(
            self.kernel_rx
                .values()
                .into_iter()
                .enumerate()
                .map(|(i, (k, v))| (k, v.saturating_sub(base.kernel[i]))),
        );
        let inside_xdp = inside.map(|(interface, attach_mode, raw)| InsideXdp {
            interface,
            attach_mode,
            counters: Counters::new(InsideCounter::ALL.iter().map(|&c| {
                (
                    c.name(),
                    raw[c as usize].saturating_sub(base.inside_xdp[c as usize]),
                )
            })),
        });
        let dummy = super::counters::dummy_packets(&self.workers);
        Ok(QfpStatistics {
            node: self.node.clone(),
            interface,
            attach_mode,
            early_drop,
            up_s: self.now.saturating_duration_since(self.started).as_secs(),
            xdp,
            queues,
            kernel,
            dummy_packets: dummy.saturating_sub(base.dummy_packets),
            inside_xdp,
            next_hop_refreshes: self.next_hops.refreshes(),
            next_hop_held_sent: self.next_hops.held_sent(),
        })
    }

    /// The proposals of the IKE tunnels (`esp`: `esp_proposals`, else
    /// `ike_proposals`), each once: (name, notation, tunnels). The name is
    /// `default` for `default_notation`, else the notation.
    fn proposals_in_use(
        &self,
        esp: bool,
        default_notation: &str,
    ) -> Vec<(String, String, Vec<String>)> {
        let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
        for t in &self.config.tunnels {
            let TunnelKind::Ike(k) = &t.kind else {
                continue;
            };
            for p in if esp {
                &k.esp_proposals
            } else {
                &k.ike_proposals
            } {
                let tunnel = t.name.clone();
                match out.iter_mut().find(|r| &r.1 == p) {
                    Some(r) => r.2.push(tunnel),
                    None => {
                        let name = if p == default_notation { "default" } else { p };
                        out.push((name.to_string(), p.clone(), vec![tunnel]));
                    }
                }
            }
        }
        out
    }

    /// `show crypto ikev2 proposal`: the IKEv2 proposals of the configured
    /// tunnels (checked when the config was read, so none is left out).
    pub(crate) fn ikev2_proposals(&self) -> Ikev2Proposals {
        Ikev2Proposals {
            proposals: self
                .proposals_in_use(false, IkeOffer::IOS_DEFAULT)
                .into_iter()
                .filter_map(|(name, p, tunnels)| {
                    Some(Ikev2ProposalRow::new(
                        name,
                        &IkeOffer::parse(&p).ok()?,
                        tunnels,
                    ))
                })
                .collect(),
        }
    }

    /// `show crypto ipsec transform-set`: the transform sets of the
    /// configured tunnels.
    pub(crate) fn transform_sets(&self) -> TransformSets {
        TransformSets {
            transform_sets: self
                .proposals_in_use(true, EspProposal::IOS_DEFAULT)
                .into_iter()
                .filter_map(|(name, p, tunnels)| {
                    let e = EspProposal::parse(&p).ok()?;
                    Some(TransformSetRow {
                        name,
                        transform: super::esp_cipher(e.encr, e.integ)?
                            .ios_transform()
                            .to_string(),
                        mode: "Tunnel",
                        pfs: e.dh,
                        tunnels,
                    })
                })
                .collect(),
        }
    }

    /// `show crypto ikev2 stats fragmentation`: all tunnels' counters.
    pub(crate) fn ikev2_fragmentation(&self) -> Ikev2Fragmentation {
        self.ike
            .as_ref()
            .map(|i| i.stats())
            .unwrap_or_default()
            .into()
    }
}

/// The remote flow a tunnel's rows show: an instance's own selectors,
/// else the tunnel's first `remote_subnets`.
fn remote_flow(e: &super::TunnelEntry, t: &crate::config::Tunnel) -> Option<crate::config::Cidr> {
    match &e.instance {
        Some(i) => i.remote.first().copied(),
        None => t.remote_subnets.first().copied(),
    }
}
