//! The IOS-style commands the daemon answers on its control socket: the
//! dispatch of a parsed [`Command`] to the owner ([`Owner`]), as
//! [`Input::Command`](super::Input::Command) asks.
//!
//! Commands run on the owner of control state one at a time: they read its
//! state directly and change it only through its methods. Shows build rows
//! on the owner (`owner/show.rs`) and render them with `crate::show`.
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Owner;
use crate::{
    ctlsock::Reply,
    grammar::{COMMANDS, Command},
    show::{self, crypto_sa, ikev2, proposals, qfp, system, trace},
};

impl Owner {
    /// Run one command from the control socket; the reply is IOS text, or
    /// with `json` the same rows as JSON.
    pub(super) fn execute(&mut self, command: Command, json: bool) -> Reply {
        // The drop table's early-drop rows come from XDP.
        self.sync_xdp_drops();
        let result = match command {
            Command::ShowQfpStatistics => {
                self.qfp_statistics().map(|s| show::reply(&s, qfp::render))
            }
            Command::ClearQfpStatistics => self.clear_qfp_statistics(),
            Command::ShowUdpPorts => Ok(show::reply(&self.udp_ports(), system::render_udp_ports)),
            Command::UdpPort { port, add } => self.set_udp_port(port, add),
            Command::ShowDrops { all } => Ok(show::reply(&self.drops(all), system::render_drops)),
            Command::ClearDrops => Ok(self.clear_drops()),
            Command::ShowCryptoSa { peer } => {
                Ok(show::reply(&self.crypto_sa(peer), crypto_sa::render))
            }
            Command::ClearCryptoSaCounters => Ok(self.clear_sa_counters()),
            Command::ClearCryptoSa { peer } => self.clear_sa(peer),
            Command::ForgetSa { peer } => self.forget_sa(peer),
            Command::Rekey { peer, ike } => self.rekey_now(peer, ike),
            Command::ShowLogging => Ok(show::reply(&self.logging(), system::render_logging)),
            Command::ClearLogging => {
                self.log.clear();
                Ok((String::new(), json!({"cleared": true})))
            }
            Command::Reload => self.reload().map(|t| (t.clone(), json!({ "reloaded": t }))),
            Command::ShowIkev2Sa { detailed } => Ok(show::reply(
                &self.ikev2_sas(detailed),
                ikev2::render_ikev2_sa,
            )),
            Command::ShowCryptoSession { detail } => {
                Ok(show::reply(&self.sessions(detail), ikev2::render_session))
            }
            Command::ShowIkev2Proposal => Ok(show::reply(
                &self.ikev2_proposals(),
                proposals::render_ikev2_proposal,
            )),
            Command::ShowIkev2StatsFragmentation => Ok(show::reply(
                &self.ikev2_fragmentation(),
                proposals::render_fragmentation,
            )),
            Command::ShowIpsecTransformSet => Ok(show::reply(
                &self.transform_sets(),
                proposals::render_transform_set,
            )),
            Command::ClearIkev2Sa { remote } | Command::ClearCryptoSession { remote } => {
                self.clear_ike(remote)
            }
            Command::ShowVersion => Ok(show::reply(&self.version(), system::render_version)),
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
            Command::ClearSdwanControlConnectionHistory => self.sdwan_clear_control_history(),
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
            Command::ShowPacketTraceSummary => Ok(show::reply(
                &self.packet_trace_summary(),
                trace::render_summary,
            )),
            Command::ShowPacketTracePacket { number } => self
                .packet_trace_packet(number)
                .map(|p| show::reply(&p, trace::render_packet)),
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
                output: if json {
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
