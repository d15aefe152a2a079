//! The IOS-style commands the daemon answers on its control socket.
//!
//! Commands run on the owner of control state ([`Owner`]), one at a time:
//! they read its state directly and change it only through its methods.
use std::{
    fmt::Write as _,
    sync::{Arc, atomic::Ordering},
};

use serde_json::{Value, json};
use xdpsec_common::{InsideCounter, XdpCounter};

use xdpsec_datapath::{
    DropReason,
    sa::{SaCold, SaId},
    worker::{FrameClass, SaCounters, WorkerShared, sa_counters},
};

use xdpsec_ike::{DhGroup, IkeSaStatus, IkeSaView};

use xdpsec_worker::stats::QUEUE_FIELDS;

use crate::{
    config::{Encap, TunnelKind},
    ctlsock::{Reply, Request},
    grammar::{self, COMMANDS, Command},
    owner::Owner,
    platform::loader::XdpSteering,
    state::crypto_map_tag,
};

/// One interface's SAs as `show crypto ipsec sa` shows them.
pub(crate) struct SaEntry<'a> {
    /// Interface (tunnel) name.
    pub name: &'a str,
    /// Crypto map tag.
    pub tag: String,
    /// Local address.
    pub local: std::net::IpAddr,
    /// `addr/mask/prot/port` of the local ident.
    pub local_ident: String,
    /// `addr/mask/prot/port` of the remote ident.
    pub remote_ident: String,
    /// The peer.
    pub peer: std::net::IpAddr,
    /// The peer's port.
    pub port: u16,
    /// Inbound SAs.
    pub inbound: Vec<(SaId, &'a SaCold)>,
    /// Outbound SA.
    pub outbound: Option<(SaId, &'a SaCold)>,
    /// Inbound counters since the last clear.
    pub inb: SaCounters,
    /// Outbound counters since the last clear.
    pub outb: SaCounters,
    /// UDP-encapsulated.
    pub udp: bool,
    /// What the SA timing line says without a lifetime.
    pub keys_note: &'static str,
    /// PFS group.
    pub pfs: Option<DhGroup>,
    /// Replay detection on.
    pub replay: bool,
}

/// Dummy packets (ESP next header 59) summed over every worker.
fn dummy_packets(workers: &[Arc<WorkerShared>]) -> u64 {
    workers
        .iter()
        .map(|w| w.dummy_packets.load(Ordering::Relaxed))
        .sum()
}

impl Owner {
    fn show_drops(&self, all: bool) -> (String, Value) {
        let t = self.drops.totals();
        let dash = "-".repeat(72);
        let mut text = format!("{dash}\n{:<65}{:>7}\n{dash}\n", "Drop Type Name", "Packets");
        let mut rows = Vec::new();
        for r in DropReason::ALL {
            let n = t[r.index()];
            rows.push(json!({"id": r.id(), "name": r.name(), "packets": n}));
            if n != 0 || all {
                let left = format!("{} {}", r.id(), r.name());
                let width = 72usize
                    .saturating_sub(left.len())
                    .max(n.to_string().len() + 1);
                let _ = writeln!(text, "{left}{n:>width$}");
            }
        }
        (text, json!({ "drops": rows }))
    }

    fn clear_drops(&self) -> (String, Value) {
        self.drops.clear();
        (String::new(), json!({"cleared": true}))
    }

    /// An SA's counters summed over workers, less the last clear.
    fn sa_counters_since_clear(&self, id: SaId) -> SaCounters {
        let now = sa_counters(&self.workers, id);
        match self.sa_baseline.get(&id) {
            Some(base) => now.saturating_sub(base),
            None => now,
        }
    }

    /// A tunnel's counters since the last clear: (inbound, over all its
    /// inbound SAs, two during a rekey; outbound).
    fn tunnel_counters(&self, ts: &crate::owner::TunnelState) -> (SaCounters, SaCounters) {
        self.sa_pair_counters(ts.inbound.iter().copied(), ts.outbound)
    }

    /// `clear crypto sa counters`: every SA's counters read as zero from now on.
    fn clear_sa_counters(&mut self) -> (String, Value) {
        let now: Vec<(SaId, SaCounters)> = self
            .all_sas()
            .map(|r| (r.id, sa_counters(&self.workers, r.id)))
            .collect();
        self.sa_baseline = now.into_iter().collect();
        (String::new(), json!({"cleared": true}))
    }

    fn show_crypto_sa(&self, peer: Option<std::net::IpAddr>) -> (String, Value) {
        let mut text = String::new();
        let mut list = Vec::new();
        let table = &self.table;
        for ts in &self.tunnels {
            let t = &ts.cfg;
            if peer.is_some_and(|p| p != t.peer) {
                continue;
            }
            let (inb, outb) = self.tunnel_counters(ts);
            let port = match t.encap {
                Encap::Esp => 500,
                Encap::Udp { peer_port, .. } => peer_port,
            };
            let mask = |c: &crate::config::Cidr| -> String {
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
            };
            let remote = t
                .remote_subnets
                .first()
                .map(mask)
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
            let e = SaEntry {
                name: &t.name,
                tag: crypto_map_tag(t),
                local: self.local,
                local_ident: format!("{any}/0/0"),
                remote_ident: format!("{remote}/0/0"),
                peer: t.peer,
                port,
                inbound: ts
                    .inbound
                    .iter()
                    .filter_map(|&id| Some((id, table.cold(id)?)))
                    .collect(),
                outbound: ts.outbound.and_then(|id| Some((id, table.cold(id)?))),
                inb,
                outb,
                udp: matches!(t.encap, Encap::Udp { .. }),
                keys_note: match &t.kind {
                    TunnelKind::Manual(_) => "manual keys, no expiry",
                    TunnelKind::Ike(_) => "negotiated keys",
                },
                pfs,
                replay: t.replay_window > 0,
            };
            list.push(self.render_sa_entry(&e, true, &mut text));
        }
        // An SD-WAN tunnel's peers are idents under one `interface:` and
        // crypto map header, as IOS lists a crypto map's peers (a repeated
        // header makes genieparser fold every peer into one ident).
        let mut last: Option<String> = None;
        for e in self.sdwan_sa_entries(peer) {
            let header = last.as_deref() != Some(e.name);
            last = Some(e.name.to_string());
            list.push(self.render_sa_entry(&e, header, &mut text));
        }
        (text, json!({ "sas": list }))
    }

    /// Counters of a set of inbound SAs and an outbound SA since the last clear.
    pub(crate) fn sa_pair_counters(
        &self,
        inbound: impl Iterator<Item = SaId>,
        outbound: Option<SaId>,
    ) -> (SaCounters, SaCounters) {
        let inb = inbound.fold(SaCounters::default(), |a, id| {
            a.plus(&self.sa_counters_since_clear(id))
        });
        let outb = outbound
            .map(|id| self.sa_counters_since_clear(id))
            .unwrap_or_default();
        (inb, outb)
    }

    /// One interface's block of `show crypto ipsec sa` (without the
    /// `interface:` and crypto map lines unless `header`), and its JSON row.
    fn render_sa_entry(&self, e: &SaEntry<'_>, header: bool, text: &mut String) -> Value {
        let (inb, outb) = (&e.inb, &e.outb);
        let out_spi = e.outbound.map_or(0, |(_, c)| c.spi);
        let encaps = outb.encaps;
        let decaps = inb.decaps;
        let verify_failed = inb.verify_failed;
        let replay_failed = inb.replay_failed();
        let send_errors = outb.send_errors;
        // As on IOS, receive errors include integrity and replay failures.
        let recv_errors = inb.recv_errors + verify_failed + replay_failed;
        let tag = &e.tag;
        let settings = if e.udp {
            "{Tunnel UDP-Encaps, }"
        } else {
            "{Tunnel, }"
        };
        if header {
            let _ = writeln!(text, "interface: {}", e.name);
            let _ = writeln!(text, "    Crypto map tag: {tag}, local addr {}\n", e.local);
        }
        let _ = writeln!(text, "   protected vrf: (none)");
        let _ = writeln!(
            text,
            "   local  ident (addr/mask/prot/port): ({})",
            e.local_ident
        );
        let _ = writeln!(
            text,
            "   remote ident (addr/mask/prot/port): ({})",
            e.remote_ident
        );
        let _ = writeln!(text, "   current_peer {} port {}", e.peer, e.port);
        let _ = writeln!(text, "     PERMIT, flags={{origin_is_acl,}}");
        let _ = writeln!(
            text,
            "    #pkts encaps: {encaps}, #pkts encrypt: {encaps}, #pkts digest: {encaps}"
        );
        let _ = writeln!(
            text,
            "    #pkts decaps: {decaps}, #pkts decrypt: {decaps}, #pkts verify: {decaps}"
        );
        let _ = writeln!(text, "    #pkts compressed: 0, #pkts decompressed: 0");
        let _ = writeln!(text, "    #pkts not compressed: 0, #pkts compr. failed: 0");
        let _ = writeln!(
            text,
            "    #pkts not decompressed: 0, #pkts decompress failed: 0"
        );
        let _ = writeln!(
            text,
            "    #send errors {send_errors}, #recv errors {recv_errors}\n"
        );
        let _ = writeln!(
            text,
            "     local crypto endpt.: {}, remote crypto endpt.: {}",
            e.local, e.peer
        );
        let _ = writeln!(
            text,
            "     plaintext mtu {}, path mtu 1500, ip mtu 1500, ip mtu idb {}",
            crate::platform::tun::TUN_MTU,
            self.interface
        );
        let _ = writeln!(text, "     current outbound spi: 0x{out_spi:X}({out_spi})");
        match e.pfs {
            Some(g) => {
                let _ = writeln!(text, "     PFS (Y/N): Y, DH group: group{}\n", dh_number(g));
            }
            None => {
                let _ = writeln!(text, "     PFS (Y/N): N, DH group: none\n");
            }
        }
        let sa_block = |text: &mut String, dir: &str, sas: &[(SaId, &SaCold)]| {
            let _ = writeln!(text, "     {dir} esp sas:");
            for (id, cold) in sas {
                let (spi, conn) = (cold.spi, id.index + 1);
                let transform = cold.cipher.ios_transform();
                let _ = writeln!(text, "      spi: 0x{spi:X}({spi})");
                let _ = writeln!(text, "        transform: {transform} ,");
                let _ = writeln!(text, "        in use settings ={settings}");
                let _ = writeln!(
                    text,
                    "        conn id: {conn}, flow_id: SW:{conn}, sibling_flags 80000000, crypto map: {tag}"
                );
                match self.lifetimes.get(id) {
                    // IOS: (kilobytes/seconds) left; no volume limit here.
                    Some((at, life)) => {
                        let left = life
                            .saturating_sub(self.now.saturating_duration_since(*at))
                            .as_secs();
                        let _ = writeln!(
                            text,
                            "        sa timing: remaining key lifetime (k/sec): (4608000/{left})"
                        );
                    }
                    None => {
                        let _ = writeln!(
                            text,
                            "        sa timing: remaining key lifetime: {}",
                            e.keys_note
                        );
                    }
                }
                let iv = if transform.contains("gcm") || transform.contains("chacha") {
                    8
                } else {
                    16
                };
                let _ = writeln!(text, "        IV size: {iv} bytes");
                let replay = if e.replay { "Y" } else { "N" };
                let _ = writeln!(text, "        replay detection support: {replay}");
                let _ = writeln!(text, "        Status: ACTIVE(ACTIVE)");
            }
            let _ = writeln!(text, "\n     {dir} ah sas:\n\n     {dir} pcp sas:\n");
        };
        sa_block(text, "inbound", &e.inbound);
        sa_block(text, "outbound", e.outbound.as_slice());
        json!({
            "tunnel": e.name,
            "peer": e.peer.to_string(),
            "outbound_spi": out_spi,
            "inbound_spis": e.inbound.iter().map(|(_, c)| c.spi).collect::<Vec<_>>(),
            "pkts_encaps": encaps,
            "pkts_decaps": decaps,
            "pkts_verify_failed": verify_failed,
            "pkts_replay_failed": replay_failed,
            "pkts_replay_too_old": inb.replay_too_old,
            "pkts_replay_duplicate": inb.replay_duplicate,
            "send_errors": send_errors,
            "recv_errors": recv_errors,
        })
    }

    fn show_logging(&self) -> (String, Value) {
        let log = &self.log;
        let ev = &self.events;
        let suppressed: u64 = ev.suppressed().iter().map(|(_, n)| n).sum();
        let lines: Vec<&String> = log.lines().collect();
        let mut text = format!(
            "Syslog logging: enabled ({} messages rate-limited, {} events lost, {} messages logged)\n\nLog Buffer ({} lines):\n",
            suppressed,
            ev.lost,
            log.logged,
            lines.len()
        );
        for l in &lines {
            let _ = writeln!(text, "{l}");
        }
        let value = json!({
            "lines": lines,
            "rate_limited": ev.suppressed().iter().map(|(k, n)| json!({"kind": format!("{k:?}"), "suppressed": n})).collect::<Vec<_>>(),
            "events_lost": ev.lost,
            // Lines logged since start, rotated out or cleared included:
            // `terminal monitor` prints the lines it has not seen.
            "logged": log.logged,
        });
        (text, value)
    }

    /// Run one request from the control socket.
    pub fn execute(&mut self, req: &Request) -> Reply {
        // The drop table's early-drop rows come from XDP.
        self.sync_xdp_drops();
        // The client sends the command parsed; a bare line is parsed here.
        let command = match &req.cmd {
            Some(c) => c.clone(),
            None => match grammar::parse(&req.command) {
                Ok(c) => c,
                Err(e) => return Reply::error(e.0),
            },
        };
        let result = match command {
            Command::ShowQfpStatistics => self.show_qfp_statistics(),
            Command::ClearQfpStatistics => self.clear_qfp_statistics(),
            Command::ShowUdpPorts => self.show_udp_ports(),
            Command::UdpPort { port, add } => self.set_udp_port(port, add),
            Command::ShowDrops { all } => Ok(self.show_drops(all)),
            Command::ClearDrops => Ok(self.clear_drops()),
            Command::ShowCryptoSa { peer } => Ok(self.show_crypto_sa(peer)),
            Command::ClearCryptoSaCounters => Ok(self.clear_sa_counters()),
            Command::ClearCryptoSa { peer } => self.clear_sa(peer),
            Command::ForgetSa { peer } => self.forget_sa(peer),
            Command::Rekey { peer, ike } => self.rekey_now(peer, ike),
            Command::ShowLogging => Ok(self.show_logging()),
            Command::ClearLogging => {
                self.log.clear();
                Ok((String::new(), json!({"cleared": true})))
            }
            Command::Reload => self.reload().map(|t| (t.clone(), json!({ "reloaded": t }))),
            Command::ShowIkev2Sa { detailed } => Ok(self.show_ikev2_sa(detailed)),
            Command::ShowCryptoSession { detail } => Ok(self.show_session(detail)),
            Command::ShowIkev2Proposal => {
                Ok(crate::ike_show::ikev2_proposal(&self.ikev2_proposal_rows()))
            }
            Command::ShowIkev2StatsFragmentation => Ok(crate::ike_show::ikev2_fragmentation(
                self.ike.as_ref().map(|i| i.stats()).unwrap_or_default(),
            )),
            Command::ShowIpsecTransformSet => Ok(crate::ike_show::ipsec_transform_set(
                &self.transform_set_rows(),
            )),
            Command::ClearIkev2Sa { remote } | Command::ClearCryptoSession { remote } => {
                self.clear_ike(remote)
            }
            Command::ShowVersion => Ok(self.show_version()),
            Command::ShowSdwanBfdSessions => self.show_sdwan_bfd_sessions(),
            Command::ShowSdwanControlConnections => self.show_sdwan_control_connections(),
            Command::ShowSdwanControlConnectionHistory => {
                self.show_sdwan_control_connection_history()
            }
            Command::ShowSdwanOmpTlocs => self.show_sdwan_omp_tlocs(),
            Command::ShowSdwanOmpRoutes => self.show_sdwan_omp_routes(),
            Command::ShowSdwanOmpPeers => self.show_sdwan_omp_peers(),
            Command::SdwanIpsecRekey => self.sdwan_ipsec_rekey(),
            Command::ClearSdwanOmpAll => self.sdwan_clear_omp(),
            Command::SdwanPortHop { color } => self.sdwan_port_hop(&color),
            Command::ClearSdwanControlConnections => self.sdwan_clear_control(),
            Command::ShowSdwanBfdSummary => self.show_sdwan_bfd_summary(),
            Command::ShowSdwanIpsecInbound => self.show_sdwan_ipsec_inbound(),
            Command::ShowSdwanIpsecOutbound => self.show_sdwan_ipsec_outbound(),
            Command::ShowSdwanIpsecLocalSa { address } => self.show_sdwan_ipsec_local_sa(address),
            Command::ShowSdwanTunnelStatistics => self.show_sdwan_tunnel_statistics(),
            Command::ShowSdwanLocalProperties => self.show_sdwan_local_properties(),
            Command::DebugPacketTrace { count, drops_only } => {
                self.debug_packet_trace(count, drops_only)
            }
            Command::ClearPacketTrace => Ok(self.clear_packet_trace()),
            Command::ShowPacketTraceSummary => Ok(self.show_packet_trace_summary()),
            Command::ShowPacketTracePacket { number } => self.show_packet_trace_packet(number),
            Command::CaptureDropsStart { file, limit } => {
                self.capture_start(&file, limit.map(u64::from))
            }
            Command::CaptureDropsStop => self.capture_stop(),
            Command::ExportWireshark { file } => self.export_wireshark(&file),
            Command::Help => Ok(help()),
        };
        match result {
            Ok((text, value)) => Reply {
                ok: true,
                output: if req.json {
                    serde_json::to_string(&value).unwrap_or_default()
                } else {
                    text
                },
            },
            Err(e) => Reply {
                ok: false,
                output: format!("% {e}"),
            },
        }
    }

    fn with_steering<T>(
        &mut self,
        f: impl FnOnce(&mut XdpSteering) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self.steering.as_mut() {
            Some(s) => f(s),
            None => anyhow::bail!("the datapath is shutting down"),
        }
    }

    fn show_qfp_statistics(&mut self) -> anyhow::Result<(String, Value)> {
        let (iface, mode, raw, early) = self.with_steering(|s| {
            Ok((
                s.interface.clone(),
                s.attach_mode,
                s.counters()?,
                s.early_drop(),
            ))
        })?;
        let base = &self.baseline;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "Node {}: XDP steering on {iface} ({mode} mode), up {}s",
            self.node,
            self.now.saturating_duration_since(self.started).as_secs()
        );
        let _ = writeln!(
            text,
            "Early drop of unknown SPIs: {}",
            if early { "armed" } else { "off" }
        );
        let _ = writeln!(text, "{}", "-".repeat(56));
        let _ = writeln!(text, "{:<40}{:>16}", "Counter", "Packets");
        let _ = writeln!(text, "{}", "-".repeat(56));
        let mut xdp = serde_json::Map::new();
        for c in XdpCounter::ALL {
            let v = raw[c as usize].saturating_sub(base.xdp[c as usize]);
            let _ = writeln!(text, "{:<40}{:>16}", c.name(), v);
            xdp.insert(c.name().into(), json!(v));
        }
        let _ = writeln!(text, "\nAF_XDP queues");
        let _ = writeln!(
            text,
            "{:<6}{:<10}{:>12}{:>14}{:>10}{:>9}{:>9}{:>11}{:>11}{:>8}",
            "Queue",
            "Mode",
            "Rx frames",
            "Rx bytes",
            "Batches",
            "ESPv4",
            "ESPv6",
            "UDP-ESPv4",
            "UDP-ESPv6",
            "Other"
        );
        let mut queues = Vec::new();
        for (i, q) in self.queues.iter().enumerate() {
            let v = q.values();
            let d: Vec<u64> = v
                .iter()
                .zip(base.queues[i])
                .map(|(a, b)| a.saturating_sub(b))
                .collect();
            let _ = writeln!(
                text,
                "{:<6}{:<10}{:>12}{:>14}{:>10}{:>9}{:>9}{:>11}{:>11}{:>8}",
                q.queue,
                q.mode.as_str(),
                d[0],
                d[1],
                d[2],
                d[3],
                d[4],
                d[5],
                d[6],
                d[7]
            );
            let mut obj = serde_json::Map::new();
            obj.insert("queue".into(), json!(q.queue));
            obj.insert("mode".into(), json!(q.mode.as_str()));
            for (k, val) in QUEUE_FIELDS.iter().zip(&d) {
                obj.insert((*k).into(), json!(val));
            }
            // SO_BUSY_POLL as the kernel has it on the socket (0: off).
            let busy_poll_us = q.busy_poll_us();
            obj.insert("busy_poll_us".into(), json!(busy_poll_us));
            let _ = writeln!(
                text,
                "      kernel: {}{}",
                QUEUE_FIELDS[3 + FrameClass::COUNT..]
                    .iter()
                    .zip(&d[3 + FrameClass::COUNT..])
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if busy_poll_us > 0 {
                    format!("; busy polling {busy_poll_us} us")
                } else {
                    String::new()
                }
            );
            // Since start (not reset by `clear`): a test's "drained" signal.
            let idle_polls = q.idle_polls();
            obj.insert("idle_polls".into(), json!(idle_polls));
            let _ = writeln!(
                text,
                "      idle polls: {idle_polls} (waits with nothing to do, since start)"
            );
            let io = q.io_counters();
            let _ = writeln!(
                text,
                "      inside: {}",
                io.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (k, v) in io {
                obj.insert(k.into(), json!(v));
            }
            // Gateway mode: frames the kernel could not put on the inside
            // socket's rings (no userspace counter sees them).
            if let Some(k) = q.inside_kernel_counters() {
                let pairs: Vec<(String, u64)> = xdpsec_afxdp::XdpStatistics::FIELDS
                    .iter()
                    .zip(k.values())
                    .map(|(f, v)| (format!("inside_{f}"), v))
                    .collect();
                let _ = writeln!(
                    text,
                    "      inside kernel: {}",
                    pairs
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                for (k, v) in pairs {
                    obj.insert(k, json!(v));
                }
            }
            queues.push(Value::Object(obj));
        }
        let mut kernel = serde_json::Map::new();
        let _ = writeln!(
            text,
            "\nKernel sockets (reassembled fragments, ESP that XDP passed)"
        );
        for (i, (k, v)) in self.kernel_rx.values().into_iter().enumerate() {
            let v = v.saturating_sub(base.kernel[i]);
            let _ = writeln!(text, "{k:<40}{v:>16}");
            kernel.insert(k.into(), json!(v));
        }
        // Gateway mode: what the inside interface's XDP program did.
        let inside = self.with_steering(|s| {
            Ok(match s.inside() {
                Some(i) => Some((i.interface.clone(), i.attach_mode, i.counters()?)),
                None => None,
            })
        })?;
        let mut inside_xdp = Value::Null;
        if let Some((ifname, mode, raw)) = inside {
            let base = &self.baseline;
            let _ = writeln!(text, "\nInside XDP on {ifname} ({mode} mode; gateway mode)");
            let mut m = serde_json::Map::new();
            m.insert("interface".into(), json!(ifname));
            m.insert("attach_mode".into(), json!(mode));
            for c in InsideCounter::ALL {
                let v = raw[c as usize].saturating_sub(base.inside_xdp[c as usize]);
                let _ = writeln!(text, "{:<40}{:>16}", c.name(), v);
                m.insert(c.name().into(), json!(v));
            }
            inside_xdp = Value::Object(m);
        }
        let base = &self.baseline;
        let dummy = dummy_packets(&self.workers).saturating_sub(base.dummy_packets);
        let _ = writeln!(
            text,
            "\ndummy_packets {dummy} (ESP next header 59, discarded silently, RFC 4303 2.6)"
        );
        // Since start (not reset by `clear`): a pass count, not traffic.
        let next_hop_refreshes = self.next_hops.refreshes();
        let _ = writeln!(
            text,
            "next_hop_refreshes {next_hop_refreshes} (passes resolving the peers' next hops over rtnetlink, since start)"
        );
        let value = json!({
            "node": self.node,
            "interface": iface,
            "attach_mode": mode,
            "early_drop": early,
            "xdp": xdp,
            "queues": queues,
            "kernel": kernel,
            "dummy_packets": dummy,
            "inside_xdp": inside_xdp,
            "next_hop_refreshes": next_hop_refreshes,
        });
        Ok((text, value))
    }

    fn clear_qfp_statistics(&mut self) -> anyhow::Result<(String, Value)> {
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

    fn show_udp_ports(&mut self) -> anyhow::Result<(String, Value)> {
        let ports = &self.steered;
        let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        Ok((
            format!(
                "UDP-encapsulated ESP steered on destination ports: {}\n",
                list.join(" ")
            ),
            json!({ "udp_ports": ports }),
        ))
    }

    pub(crate) fn set_udp_port(
        &mut self,
        port: u32,
        steer: bool,
    ) -> anyhow::Result<(String, Value)> {
        if port == 0 || port > 65535 || port == 500 {
            anyhow::bail!("port {port}: give a UDP port 1-65535 other than 500 (IKE)");
        }
        let port = port as u16;
        if steer {
            self.steer_udp_ports(&[port], &[])?;
        } else {
            self.steer_udp_ports(&[], &[port])?;
        }
        // The reply goes out after the shell changed XDP's map.
        self.show_udp_ports()
    }
}

/// IOS names of IKE transforms: (encryption, key size, PRF, hash).
fn ike_names(v: &IkeSaView) -> (&'static str, u32, &'static str, &'static str) {
    (
        v.encr.ios_name(),
        u32::from(v.encr.key_bits()),
        v.prf.ios_name(),
        v.integ.map_or("None", |i| i.ios_name()),
    )
}

/// IANA number of a DH group.
fn dh_number(g: DhGroup) -> u32 {
    u32::from(g.id())
}

fn ike_status(s: IkeSaStatus) -> &'static str {
    match s {
        IkeSaStatus::InNeg => "IN-NEG",
        IkeSaStatus::Ready => "READY",
        IkeSaStatus::Deleting => "DELETE",
    }
}

impl Owner {
    /// The IKE SAs now (none without IKE tunnels).
    fn ike_views(&self) -> Vec<IkeSaView> {
        self.ike
            .as_ref()
            .map(|i| i.sas(self.now))
            .unwrap_or_default()
    }

    /// `show crypto ikev2 sa [detailed]` in the IOS XE layout.
    fn show_ikev2_sa(&self, detailed: bool) -> (String, Value) {
        let views = self.ike_views();
        let mut text = String::new();
        let mut list = Vec::new();
        for v6 in [false, true] {
            let _ = writeln!(text, " IPv{} Crypto IKEv2  SA\n", if v6 { 6 } else { 4 });
            for v in views.iter().filter(|v| v.local.is_ipv6() == v6) {
                let (encr, keysize, prf, hash) = ike_names(v);
                let (local_spi, remote_spi) = if v.initiator {
                    (v.spi_i, v.spi_r)
                } else {
                    (v.spi_r, v.spi_i)
                };
                let status = ike_status(v.status);
                if v6 {
                    let _ = writeln!(text, "Tunnel-id    fvrf/ivrf              Status");
                    let _ = writeln!(text, "{:<10} none/none             {status}", v.id);
                    let _ = writeln!(text, "Local  {}/{}", v.local.ip(), v.local.port());
                    let _ = writeln!(text, "Remote  {}/{}", v.remote.ip(), v.remote.port());
                } else {
                    let _ = writeln!(
                        text,
                        "Tunnel-id Local                 Remote                fvrf/ivrf            Status"
                    );
                    let _ = writeln!(
                        text,
                        "{:<10}{:<22}{:<22}{:<21}{status}",
                        v.id,
                        format!("{}/{}", v.local.ip(), v.local.port()),
                        format!("{}/{}", v.remote.ip(), v.remote.port()),
                        "none/none"
                    );
                }
                let _ = writeln!(
                    text,
                    "      Encr: {encr}, keysize: {keysize}, PRF: {prf}, Hash: {hash}, DH Grp:{}, Auth sign: PSK, Auth verify: PSK",
                    dh_number(v.dh)
                );
                let _ = writeln!(
                    text,
                    "      Life/Active Time: {}/{} sec",
                    v.lifetime.as_secs(),
                    v.active.as_secs()
                );
                if detailed {
                    let _ = writeln!(text, "      CE id: 0, Session-id: {}", v.id);
                    let _ = writeln!(
                        text,
                        "      Local spi: {local_spi:016X}       Remote spi: {remote_spi:016X}"
                    );
                    let _ = writeln!(
                        text,
                        "      Status Description: {}",
                        match v.status {
                            IkeSaStatus::Ready => "Negotiation done",
                            IkeSaStatus::InNeg => "Negotiation in progress",
                            IkeSaStatus::Deleting => "Deleting",
                        }
                    );
                    let _ = writeln!(
                        text,
                        "      NAT-T is {}",
                        if v.nat { "detected" } else { "not detected" }
                    );
                    let _ = writeln!(
                        text,
                        "      Initiator of SA : {}",
                        if v.initiator { "Yes" } else { "No" }
                    );
                    let _ = writeln!(text, "      Tunnel: {}", v.tunnel);
                }
                let _ = writeln!(text);
                list.push(json!({
                    "tunnel_id": v.id,
                    "tunnel": v.tunnel,
                    "local": v.local.ip().to_string(),
                    "local_port": v.local.port(),
                    "remote": v.remote.ip().to_string(),
                    "remote_port": v.remote.port(),
                    "status": status,
                    "encryption": encr,
                    "keysize": keysize,
                    "prf": prf,
                    "hash": hash,
                    "dh_group": dh_number(v.dh),
                    "auth_sign": "PSK",
                    "auth_verify": "PSK",
                    "initiator_spi": format!("{:016x}", v.spi_i),
                    "responder_spi": format!("{:016x}", v.spi_r),
                    "life_seconds": v.lifetime.as_secs(),
                    "active_seconds": v.active.as_secs(),
                    "nat_detected": v.nat,
                    "initiator": v.initiator,
                    "child_sas": v.children.iter().map(|(i, o)| json!({"inbound_spi": i, "outbound_spi": o})).collect::<Vec<_>>(),
                }));
            }
        }
        (text, json!({ "ike_sas": list }))
    }

    /// `show crypto session [detail]`: a session per tunnel.
    fn show_session(&self, detail: bool) -> (String, Value) {
        let views = self.ike_views();
        let mut text = String::from("Crypto session current status\n\n");
        let mut list = Vec::new();
        for (i, ts) in self.tunnels.iter().enumerate() {
            let t = &ts.cfg;
            let ike = views.iter().find(|v| v.tunnel == t.name);
            let active_sas = ts.inbound.len() + usize::from(ts.outbound.is_some());
            let status = match (&t.kind, ike) {
                (TunnelKind::Manual(_), _) => "UP-NO-IKE",
                (TunnelKind::Ike(_), Some(v))
                    if v.status == IkeSaStatus::Ready && active_sas > 0 =>
                {
                    "UP-ACTIVE"
                }
                (TunnelKind::Ike(_), Some(v)) if v.status == IkeSaStatus::Ready => "UP-IDLE",
                (TunnelKind::Ike(_), Some(_)) => "DOWN-NEGOTIATING",
                (TunnelKind::Ike(_), None) => "DOWN",
            };
            let port = ike.map(|v| v.remote.port()).unwrap_or(match t.encap {
                Encap::Udp { peer_port, .. } => peer_port,
                Encap::Esp => 500,
            });
            let _ = writeln!(text, "Interface: {}", t.name);
            let _ = writeln!(text, "Session status: {status}");
            let _ = writeln!(text, "Peer: {} port {port}", t.peer);
            let _ = writeln!(text, "  Session ID: {i}");
            if let Some(v) = ike {
                let _ = writeln!(
                    text,
                    "  IKEv2 SA: local {}/{} remote {}/{} {}",
                    v.local.ip(),
                    v.local.port(),
                    v.remote.ip(),
                    v.remote.port(),
                    if v.status == IkeSaStatus::Ready {
                        "Active"
                    } else {
                        "Inactive"
                    }
                );
            }
            let flow = |c: &[crate::config::Cidr]| {
                c.first()
                    .map(|c| format!("{}/{}", c.addr, c.len))
                    .unwrap_or_else(|| "any".into())
            };
            let (lo, re) = (
                flow(&t.local_selectors(&self.config.inside)),
                flow(&t.remote_subnets),
            );
            let _ = writeln!(text, "  IPSEC FLOW: permit ip {lo} {re}");
            let _ = writeln!(text, "        Active SAs: {active_sas}, origin: crypto map");
            let (inb, outb) = self.tunnel_counters(ts);
            if detail {
                let drops_in = inb.verify_failed + inb.replay_failed() + inb.recv_errors;
                let _ = writeln!(
                    text,
                    "        Inbound:  #pkts dec'ed {} drop {drops_in} life (KB/Sec) 0/0",
                    inb.decaps
                );
                let _ = writeln!(
                    text,
                    "        Outbound: #pkts enc'ed {} drop {} life (KB/Sec) 0/0",
                    outb.encaps, outb.send_errors
                );
            }
            let _ = writeln!(text);
            list.push(json!({
                "interface": t.name,
                "session_status": status,
                "peer": t.peer.to_string(),
                "peer_port": port,
                "session_id": i,
                "kind": t.kind.name(),
                "ike_sa": ike.map(|v| json!({"tunnel_id": v.id, "status": ike_status(v.status)})),
                "active_sas": active_sas,
                "pkts_decaps": inb.decaps,
                "pkts_encaps": outb.encaps,
            }));
        }
        (text, json!({ "sessions": list }))
    }

    /// `clear crypto ikev2 sa [remote ADDR]` / `clear crypto session [remote ADDR]`.
    fn clear_ike(&mut self, peer: Option<std::net::IpAddr>) -> anyhow::Result<(String, Value)> {
        if self.ike.is_none() {
            anyhow::bail!("no IKEv2 tunnel is configured");
        }
        if let Some(p) = peer
            && !self
                .tunnels
                .iter()
                .any(|t| t.cfg.peer == p && matches!(t.cfg.kind, TunnelKind::Ike(_)))
        {
            anyhow::bail!("no IKEv2 tunnel has peer {p}");
        }
        self.ike_input(xdpsec_ike::Input::Command(
            xdpsec_ike::Command::ClearIkeSas(peer),
        ));
        Ok((String::new(), json!({"cleared": true})))
    }
}

/// IOS's uptime wording: `1 week, 2 days, 3 hours, 4 minutes`, leading
/// zero units left out, minutes always there.
fn ios_uptime(secs: u64) -> String {
    let units = [
        (secs / 604_800, "week"),
        (secs % 604_800 / 86_400, "day"),
        (secs % 86_400 / 3_600, "hour"),
        (secs % 3_600 / 60, "minute"),
    ];
    let first = units.iter().position(|(n, _)| *n != 0).unwrap_or(3);
    units[first..]
        .iter()
        .map(|(n, u)| format!("{n} {u}{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
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
    /// `show version` in the IOS XE layout, naming xdpsec for what it is.
    //
    // Test automation reads two lines: `NODE uptime is ...` and `Router
    // operating mode: Autonomous` (pyATS/Unicon asks `show version | include
    // operating mode`; `Controller-Managed` would make it send SD-WAN-only
    // commands, which this CLI does not have). Nothing here claims to be
    // Cisco software.
    fn show_version(&self) -> (String, Value) {
        let up = self.now.saturating_duration_since(self.started).as_secs();
        let version = env!("CARGO_PKG_VERSION");
        let image = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "xdpsec".into());
        let kernel = kernel_release();
        let text = format!(
            "xdpsec Software, Version {version}\n\
             xdpsec: a userspace IPsec ESP datapath on XDP and AF_XDP for Linux, with an IOS-style CLI.\n\
             Not Cisco software; not affiliated with Cisco Systems, Inc.\n\
             \n\
             {node} uptime is {uptime}\n\
             System image file is \"{image}\"\n\
             Last reload reason: process start\n\
             \n\
             {kernel} host, XDP on {iface}\n\
             Router operating mode: Autonomous\n\
             Underlay {iface} address {local}\n",
            node = self.node,
            uptime = ios_uptime(up),
            iface = self.interface,
            local = self.local,
        );
        let value = json!({
            "version": version,
            "node": self.node,
            "uptime_s": up,
            "operating_mode": "Autonomous",
            "kernel": kernel,
            "image": image,
            "interface": self.interface,
            "local": self.local.to_string(),
        });
        (text, value)
    }
}

fn help() -> (String, Value) {
    let mut text = String::new();
    let mut list = Vec::new();
    for c in COMMANDS {
        let line = c.pattern;
        let _ = writeln!(text, "  {line:<72} {}", c.help);
        list.push(json!({"command": line, "help": c.help}));
    }
    (text, json!({ "commands": list }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_as_on_ios() {
        assert_eq!(ios_uptime(59), "0 minutes");
        assert_eq!(ios_uptime(61), "1 minute");
        assert_eq!(ios_uptime(3_600 + 120), "1 hour, 2 minutes");
        assert_eq!(ios_uptime(86_400), "1 day, 0 hours, 0 minutes");
        assert_eq!(
            ios_uptime(2 * 604_800 + 86_400 + 7_200 + 180),
            "2 weeks, 1 day, 2 hours, 3 minutes"
        );
    }
}
