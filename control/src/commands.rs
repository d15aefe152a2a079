//! The IOS-style commands the daemon answers on its control socket.
use std::{
    fmt::Write as _,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Instant,
};

use serde_json::{Value, json};
use xdpsec_afxdp::{BindMode, QueueStats};
use xdpsec_common::{XDP_COUNTER_COUNT, XdpCounter};

use crate::{
    cli::{self, Arg, CommandSpec, Token::*},
    config::Config,
    ctlsock::{Reply, Request},
    daemon::lock,
    loader::XdpSteering,
    worker::ClassStats,
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
    /// The command list.
    Help,
}

/// The command table.
pub const COMMANDS: &[CommandSpec<Cmd>] = &[
    CommandSpec {
        tokens: &[
            Kw("show"),
            Kw("platform"),
            Kw("hardware"),
            Kw("qfp"),
            Kw("active"),
            Kw("statistics"),
        ],
        id: Cmd::ShowQfpStatistics,
        help: "XDP steering counters and AF_XDP queues (mode, frames received)",
    },
    CommandSpec {
        tokens: &[
            Kw("clear"),
            Kw("platform"),
            Kw("hardware"),
            Kw("qfp"),
            Kw("active"),
            Kw("statistics"),
        ],
        id: Cmd::ClearQfpStatistics,
        help: "zero the counters shown by `show platform hardware qfp active statistics`",
    },
    CommandSpec {
        tokens: &[
            Kw("show"),
            Kw("platform"),
            Kw("software"),
            Kw("xdpsec"),
            Kw("udp-ports"),
        ],
        id: Cmd::ShowUdpPorts,
        help: "UDP destination ports steered as UDP-encapsulated ESP",
    },
    CommandSpec {
        tokens: &[
            Kw("request"),
            Kw("platform"),
            Kw("software"),
            Kw("xdpsec"),
            Kw("udp-port"),
            Kw("add"),
            Num("port"),
        ],
        id: Cmd::UdpPortAdd,
        help: "steer UDP destination port <port> to the datapath",
    },
    CommandSpec {
        tokens: &[
            Kw("request"),
            Kw("platform"),
            Kw("software"),
            Kw("xdpsec"),
            Kw("udp-port"),
            Kw("remove"),
            Num("port"),
        ],
        id: Cmd::UdpPortRemove,
        help: "stop steering UDP destination port <port>",
    },
    CommandSpec {
        tokens: &[Kw("help")],
        id: Cmd::Help,
        help: "list the commands",
    },
];

/// What control knows about one queue.
pub struct QueueInfo {
    /// Rx queue index.
    pub queue: u32,
    /// Bind mode granted by the kernel.
    pub mode: BindMode,
    /// The worker's ring counters.
    pub stats: Arc<QueueStats>,
    /// The worker's classification counters.
    pub class: Arc<ClassStats>,
}

/// Per-queue counter values, in display order.
const QUEUE_FIELDS: [&str; 8] = [
    "rx_frames",
    "rx_bytes",
    "rx_batches",
    "esp_v4",
    "esp_v6",
    "udp_esp_v4",
    "udp_esp_v6",
    "other",
];

impl QueueInfo {
    fn values(&self) -> [u64; 8] {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        [
            r(&self.stats.rx_frames),
            r(&self.stats.rx_bytes),
            r(&self.stats.rx_batches),
            r(&self.class.esp_v4),
            r(&self.class.esp_v6),
            r(&self.class.udp_esp_v4),
            r(&self.class.udp_esp_v6),
            r(&self.class.other),
        ]
    }
}

/// Counter values at the last `clear`, subtracted on read.
struct Baseline {
    xdp: [u64; XDP_COUNTER_COUNT as usize],
    queues: Vec<[u64; 8]>,
}

/// The running daemon as the control socket sees it.
pub struct Daemon {
    node: String,
    steering: Mutex<Option<XdpSteering>>,
    queues: Vec<QueueInfo>,
    baseline: Mutex<Baseline>,
    started: Instant,
}

impl Daemon {
    /// Wrap the started pieces.
    pub fn new(config: &Config, steering: XdpSteering, queues: Vec<QueueInfo>) -> Daemon {
        let n = queues.len();
        Daemon {
            node: config.node.clone(),
            steering: Mutex::new(Some(steering)),
            queues,
            baseline: Mutex::new(Baseline {
                xdp: [0; XDP_COUNTER_COUNT as usize],
                queues: vec![[0; 8]; n],
            }),
            started: Instant::now(),
        }
    }

    /// Detach the XDP program now (the workers have stopped).
    pub fn shutdown(&self) {
        if let Some(mut s) = lock(&self.steering).take() {
            for q in &self.queues {
                s.unset_socket(q.queue);
            }
        }
    }

    /// Run one request from the control socket.
    pub fn execute(&self, req: &Request) -> Reply {
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
        &self,
        f: impl FnOnce(&mut XdpSteering) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match lock(&self.steering).as_mut() {
            Some(s) => f(s),
            None => anyhow::bail!("the datapath is shutting down"),
        }
    }

    fn show_qfp_statistics(&self) -> anyhow::Result<(String, Value)> {
        let (iface, mode, raw) =
            self.with_steering(|s| Ok((s.interface.clone(), s.attach_mode, s.counters()?)))?;
        let base = lock(&self.baseline);
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
            queues.push(Value::Object(obj));
        }
        let value = json!({
            "node": self.node,
            "interface": iface,
            "attach_mode": mode,
            "xdp": xdp,
            "queues": queues,
        });
        Ok((text, value))
    }

    fn clear_qfp_statistics(&self) -> anyhow::Result<(String, Value)> {
        let raw = self.with_steering(|s| s.counters())?;
        let mut base = lock(&self.baseline);
        base.xdp = raw;
        for (i, q) in self.queues.iter().enumerate() {
            base.queues[i] = q.values();
        }
        Ok((String::new(), json!({"cleared": true})))
    }

    fn show_udp_ports(&self) -> anyhow::Result<(String, Value)> {
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

    fn set_udp_port(&self, port: u32, steer: bool) -> anyhow::Result<(String, Value)> {
        if port == 0 || port > 65535 || port == 500 {
            anyhow::bail!("port {port}: give a UDP port 1-65535 other than 500 (IKE)");
        }
        self.with_steering(|s| s.set_udp_port(port as u16, steer))?;
        self.show_udp_ports()
    }
}

fn help() -> (String, Value) {
    let mut text = String::new();
    let mut list = Vec::new();
    for c in COMMANDS {
        let words: Vec<String> = c
            .tokens
            .iter()
            .map(|t| match t {
                Kw(k) => (*k).to_string(),
                Addr(n) | Num(n) | Word(n) => format!("<{n}>"),
            })
            .collect();
        let line = words.join(" ");
        let _ = writeln!(text, "  {line:<72} {}", c.help);
        list.push(json!({"command": line, "help": c.help}));
    }
    (text, json!({ "commands": list }))
}
