//! The IOS-style commands the daemon answers on its control socket.
//!
//! Commands run on the owner of control state ([`Owner`]), one at a time:
//! they read its state directly and change it only through its methods.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use serde_json::{Value, json};
use xdpsec_common::XdpCounter;

use xdpsec_datapath::{
    DropReason,
    sa::{SaChange, SaCold, SaId, SaTable},
    worker::{FrameClass, SaCounters, WorkerShared, sa_counters},
};

use crate::{
    cli::{self, Arg, CommandSpec},
    config::{Encap, TunnelKind},
    ctlsock::{Reply, Request},
    owner::Owner,
    platform::loader::XdpSteering,
    queues::QUEUE_FIELDS,
    state::crypto_map_tag,
};

/// Commands the daemon knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Steering and AF_XDP counters.
    ShowQfpStatistics,
    /// Zero them (as seen by `show`).
    ClearQfpStatistics,
    /// The steered UDP ports.
    ShowUdpPorts,
    /// Steer another UDP port.
    UdpPortAdd,
    /// Stop steering a UDP port.
    UdpPortRemove,
    /// `show platform hardware qfp active feature ipsec datapath drops`.
    ShowDrops,
    /// The same with `all`: zero rows too.
    ShowDropsAll,
    /// Zero the drop counters.
    ClearDrops,
    /// `show crypto ipsec sa`.
    ShowCryptoSa,
    /// `show crypto ipsec sa peer ADDR`.
    ShowCryptoSaPeer,
    /// `clear crypto sa counters`.
    ClearSaCounters,
    /// `clear crypto sa peer ADDR`.
    ClearSaPeer,
    /// `clear crypto sa`: every peer.
    ClearSaAll,
    /// Fault injection: the datapath forgets a peer's inbound SAs.
    ForgetSa,
    /// `show logging`.
    ShowLogging,
    /// `clear logging`.
    ClearLogging,
    /// Re-read the config file and apply changed manual SAs.
    Reload,
    /// `show version`: software, node name, uptime.
    ShowVersion,
    /// The command list.
    Help,
}

/// The command table.
pub const COMMANDS: &[CommandSpec<Cmd>] = &[
    CommandSpec {
        pattern: "show platform hardware qfp active statistics",
        id: Cmd::ShowQfpStatistics,
        help: "XDP steering counters and AF_XDP queues (mode, frames received)",
    },
    CommandSpec {
        pattern: "clear platform hardware qfp active statistics",
        id: Cmd::ClearQfpStatistics,
        help: "zero the counters shown by `show platform hardware qfp active statistics`",
    },
    CommandSpec {
        pattern: "show platform software xdpsec udp-ports",
        id: Cmd::ShowUdpPorts,
        help: "UDP destination ports steered as UDP-encapsulated ESP",
    },
    CommandSpec {
        pattern: "request platform software xdpsec udp-port add <port>",
        id: Cmd::UdpPortAdd,
        help: "steer UDP destination port <port> to the datapath",
    },
    CommandSpec {
        pattern: "request platform software xdpsec udp-port remove <port>",
        id: Cmd::UdpPortRemove,
        help: "stop steering UDP destination port <port>",
    },
    CommandSpec {
        pattern: "show platform hardware qfp active feature ipsec datapath drops",
        id: Cmd::ShowDrops,
        help: "IPsec datapath drops by QFP drop type (non-zero rows)",
    },
    CommandSpec {
        pattern: "show platform hardware qfp active feature ipsec datapath drops all",
        id: Cmd::ShowDropsAll,
        help: "IPsec datapath drops, every drop type",
    },
    CommandSpec {
        pattern: "clear platform hardware qfp active feature ipsec datapath drops",
        id: Cmd::ClearDrops,
        help: "zero the IPsec datapath drop counters",
    },
    CommandSpec {
        pattern: "show crypto ipsec sa",
        id: Cmd::ShowCryptoSa,
        help: "IPsec SAs and their counters",
    },
    CommandSpec {
        pattern: "show crypto ipsec sa peer <address>",
        id: Cmd::ShowCryptoSaPeer,
        help: "IPsec SAs with one peer",
    },
    CommandSpec {
        pattern: "clear crypto sa counters",
        id: Cmd::ClearSaCounters,
        help: "zero the SA packet and error counters shown by `show crypto ipsec sa`",
    },
    CommandSpec {
        pattern: "clear crypto sa peer <address>",
        id: Cmd::ClearSaPeer,
        help: "delete and re-create the SAs with one peer (manual tunnels: re-installed from the config)",
    },
    CommandSpec {
        pattern: "clear crypto sa",
        id: Cmd::ClearSaAll,
        help: "delete and re-create the SAs with every peer",
    },
    CommandSpec {
        pattern: "request platform software xdpsec fault forget-sa peer <address>",
        id: Cmd::ForgetSa,
        help: "fault injection: the datapath loses that peer's inbound SAs; the control plane and the peer are not told",
    },
    CommandSpec {
        pattern: "show logging",
        id: Cmd::ShowLogging,
        help: "the buffered log (IOS %CRYPTO/%IPSEC lines)",
    },
    CommandSpec {
        pattern: "clear logging",
        id: Cmd::ClearLogging,
        help: "empty the log buffer",
    },
    CommandSpec {
        pattern: "request platform software xdpsec reload",
        id: Cmd::Reload,
        help: "re-read the config file: apply changed manual SAs (SPIs, keys) without stopping traffic",
    },
    CommandSpec {
        pattern: "show version",
        id: Cmd::ShowVersion,
        help: "software version, node name and uptime",
    },
    CommandSpec {
        pattern: "help",
        id: Cmd::Help,
        help: "list the commands",
    },
];

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

    /// `clear crypto sa counters`: every SA's counters read as zero from now on.
    fn clear_sa_counters(&mut self) -> (String, Value) {
        let base = &mut self.sa_baseline;
        base.clear();
        for t in &self.tunnels {
            for id in t.sa_ids() {
                base.insert(id, sa_counters(&self.workers, id));
            }
        }
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
            // Counters over the tunnel's SAs (two inbound during a rekey).
            let mut inb = SaCounters::default();
            for &id in &ts.inbound {
                inb = inb.plus(&self.sa_counters_since_clear(id));
            }
            let outb = ts
                .outbound
                .map(|id| self.sa_counters_since_clear(id))
                .unwrap_or_default();
            let inbound: Vec<(SaId, &SaCold)> = ts
                .inbound
                .iter()
                .filter_map(|&id| Some((id, table.cold(id)?)))
                .collect();
            let outbound: Option<(SaId, &SaCold)> =
                ts.outbound.and_then(|id| Some((id, table.cold(id)?)));
            let out_spi = outbound.map_or(0, |(_, c)| c.spi);
            let encaps = outb.encaps;
            let decaps = inb.decaps;
            let verify_failed = inb.verify_failed;
            let replay_failed = inb.replay_failed();
            let send_errors = outb.send_errors;
            // As on IOS, receive errors include integrity and replay failures.
            let recv_errors = inb.recv_errors + verify_failed + replay_failed;
            let port = match t.encap {
                Encap::Esp => 500,
                Encap::Udp { peer_port, .. } => peer_port,
            };
            let tag = crypto_map_tag(t);
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
            let keys_note = match &t.kind {
                TunnelKind::Manual(_) => "manual keys, no expiry",
                TunnelKind::Ike(_) => "negotiated keys",
            };
            let settings = match t.encap {
                Encap::Esp => "{Tunnel, }",
                Encap::Udp { .. } => "{Tunnel UDP-Encaps, }",
            };
            let _ = writeln!(text, "interface: {}", t.name);
            let _ = writeln!(
                text,
                "    Crypto map tag: {tag}, local addr {}\n",
                self.local
            );
            let _ = writeln!(text, "   protected vrf: (none)");
            let _ = writeln!(text, "   local  ident (addr/mask/prot/port): ({any}/0/0)");
            let _ = writeln!(
                text,
                "   remote ident (addr/mask/prot/port): ({remote}/0/0)"
            );
            let _ = writeln!(text, "   current_peer {} port {port}", t.peer);
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
                self.local, t.peer
            );
            let _ = writeln!(
                text,
                "     plaintext mtu {}, path mtu 1500, ip mtu 1500, ip mtu idb {}",
                crate::platform::tun::TUN_MTU,
                self.interface
            );
            let _ = writeln!(text, "     current outbound spi: 0x{out_spi:X}({out_spi})");
            let _ = writeln!(text, "     PFS (Y/N): N, DH group: none\n");
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
                    let _ = writeln!(
                        text,
                        "        sa timing: remaining key lifetime: {keys_note}"
                    );
                    let _ = writeln!(text, "        IV size: 8 bytes");
                    let replay = if t.replay_window > 0 { "Y" } else { "N" };
                    let _ = writeln!(text, "        replay detection support: {replay}");
                    let _ = writeln!(text, "        Status: ACTIVE(ACTIVE)");
                }
                let _ = writeln!(text, "\n     {dir} ah sas:\n\n     {dir} pcp sas:\n");
            };
            sa_block(&mut text, "inbound", &inbound);
            sa_block(&mut text, "outbound", outbound.as_slice());
            list.push(json!({
                "tunnel": t.name,
                "peer": t.peer.to_string(),
                "outbound_spi": out_spi,
                "inbound_spis": inbound.iter().map(|(_, c)| c.spi).collect::<Vec<_>>(),
                "pkts_encaps": encaps,
                "pkts_decaps": decaps,
                "pkts_verify_failed": verify_failed,
                "pkts_replay_failed": replay_failed,
                "pkts_replay_too_old": inb.replay_too_old,
                "pkts_replay_duplicate": inb.replay_duplicate,
                "send_errors": send_errors,
                "recv_errors": recv_errors,
            }));
        }
        (text, json!({ "sas": list }))
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
        });
        (text, value)
    }

    /// Run one request from the control socket.
    pub fn execute(&mut self, req: &Request) -> Reply {
        let parsed = match cli::parse(COMMANDS, &req.command) {
            Ok(p) => p,
            Err(e) => {
                return Reply {
                    ok: false,
                    output: e.0,
                };
            }
        };
        let result = match parsed.id {
            Cmd::ShowQfpStatistics => self.show_qfp_statistics(),
            Cmd::ClearQfpStatistics => self.clear_qfp_statistics(),
            Cmd::ShowUdpPorts => self.show_udp_ports(),
            Cmd::UdpPortAdd | Cmd::UdpPortRemove => {
                let port = match parsed.args.first() {
                    Some(Arg::Num(p)) => *p,
                    _ => 0,
                };
                self.set_udp_port(port, parsed.id == Cmd::UdpPortAdd)
            }
            Cmd::ShowDrops => Ok(self.show_drops(false)),
            Cmd::ShowDropsAll => Ok(self.show_drops(true)),
            Cmd::ClearDrops => Ok(self.clear_drops()),
            Cmd::ShowCryptoSa => Ok(self.show_crypto_sa(None)),
            Cmd::ShowCryptoSaPeer => {
                let peer = match parsed.args.first() {
                    Some(Arg::Addr(a)) => Some(*a),
                    _ => None,
                };
                Ok(self.show_crypto_sa(peer))
            }
            Cmd::ClearSaCounters => Ok(self.clear_sa_counters()),
            Cmd::ClearSaPeer | Cmd::ClearSaAll | Cmd::ForgetSa => {
                let peer = match parsed.args.first() {
                    Some(Arg::Addr(a)) => Some(*a),
                    _ => None,
                };
                if parsed.id == Cmd::ForgetSa {
                    self.forget_sa(peer.expect("pattern has <address>"))
                } else {
                    self.clear_sa(peer)
                }
            }
            Cmd::ShowLogging => Ok(self.show_logging()),
            Cmd::ClearLogging => {
                self.log.clear();
                Ok((String::new(), json!({"cleared": true})))
            }
            Cmd::Reload => self.reload().map(|t| (t.clone(), json!({ "reloaded": t }))),
            Cmd::ShowVersion => {
                let up = self.started.elapsed().as_secs();
                let text = format!(
                    "xdpsec Software, Version {}\n{} uptime is {} hours, {} minutes, {} seconds\nUnderlay {} address {}\n",
                    env!("CARGO_PKG_VERSION"),
                    self.node,
                    up / 3600,
                    up % 3600 / 60,
                    up % 60,
                    self.interface,
                    self.local
                );
                Ok((
                    text,
                    json!({"version": env!("CARGO_PKG_VERSION"), "node": self.node, "uptime_s": up}),
                ))
            }
            Cmd::Help => Ok(help()),
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
        let (iface, mode, raw) =
            self.with_steering(|s| Ok((s.interface.clone(), s.attach_mode, s.counters()?)))?;
        let base = &self.baseline;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "Node {}: XDP steering on {iface} ({mode} mode), up {}s",
            self.node,
            self.started.elapsed().as_secs()
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
            let _ = writeln!(
                text,
                "      kernel: {}",
                QUEUE_FIELDS[3 + FrameClass::COUNT..]
                    .iter()
                    .zip(&d[3 + FrameClass::COUNT..])
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let io = [
                ("tun_tx", r(&q.io.tun_tx)),
                ("tun_tx_errors", r(&q.io.tun_tx_errors)),
                ("sink", r(&q.io.sink)),
                ("tun_rx", r(&q.io.tun_rx)),
                ("encap_tx", r(&q.io.encap_tx)),
                ("handoff", r(&q.io.handoff)),
                ("handoff_out", r(&q.io.handoff_out)),
                ("not_esp", r(&q.io.not_esp)),
                ("tx_frames", r(&q.stats.tx_frames)),
            ];
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
        let dummy = dummy_packets(&self.workers).saturating_sub(base.dummy_packets);
        let _ = writeln!(
            text,
            "\ndummy_packets {dummy} (ESP next header 59, discarded silently, RFC 4303 2.6)"
        );
        let value = json!({
            "node": self.node,
            "interface": iface,
            "attach_mode": mode,
            "xdp": xdp,
            "queues": queues,
            "kernel": kernel,
            "dummy_packets": dummy,
        });
        Ok((text, value))
    }

    fn clear_qfp_statistics(&mut self) -> anyhow::Result<(String, Value)> {
        let raw = self.with_steering(|s| s.counters())?;
        let base = &mut self.baseline;
        base.xdp = raw;
        for (i, q) in self.queues.iter().enumerate() {
            base.queues[i] = q.values();
        }
        base.kernel = self.kernel_rx.values().map(|(_, v)| v);
        base.dummy_packets = dummy_packets(&self.workers);
        Ok((String::new(), json!({"cleared": true})))
    }

    fn show_udp_ports(&mut self) -> anyhow::Result<(String, Value)> {
        let ports = self.with_steering(|s| s.udp_ports())?;
        let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        Ok((
            format!(
                "UDP-encapsulated ESP steered on destination ports: {}\n",
                list.join(" ")
            ),
            json!({ "udp_ports": ports }),
        ))
    }

    fn set_udp_port(&mut self, port: u32, steer: bool) -> anyhow::Result<(String, Value)> {
        if port == 0 || port > 65535 || port == 500 {
            anyhow::bail!("port {port}: give a UDP port 1-65535 other than 500 (IKE)");
        }
        let port = port as u16;
        let mut ports = self.with_steering(|s| s.udp_ports())?;
        let changed = if steer {
            ports.insert(port)
        } else {
            ports.remove(&port)
        };
        if changed {
            // The datapath learns a new port before XDP steers it there, and
            // forgets a removed one only after XDP stopped steering it: a
            // steered frame always finds its port in the snapshot (never
            // passed back as "not ESP").
            let publish = |table: &mut SaTable, epoch: Instant, ports: &BTreeSet<u16>| {
                table
                    .apply(
                        vec![SaChange::SetUdpPorts(
                            ports.iter().map(|&p| p..=p).collect(),
                        )],
                        epoch.elapsed(),
                    )
                    .map_err(|e| anyhow::anyhow!("updating the datapath's UDP ports: {e}"))
            };
            if steer {
                publish(&mut self.table, self.epoch, &ports)?;
            }
            self.with_steering(|s| s.set_udp_port(port, steer))?;
            if !steer {
                publish(&mut self.table, self.epoch, &ports)?;
            }
            // The kernel socket for fragmented ESP in UDP follows.
            let _ = self
                .kernel_ctl
                .send(crate::platform::kernelrx::Ctl::SetPorts(
                    ports.iter().copied().collect(),
                ));
        }
        self.show_udp_ports()
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
