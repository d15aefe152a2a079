//! `show platform hardware qfp active statistics`: XDP's counters, the
//! AF_XDP queues', the kernel sockets', gateway mode's inside XDP program's
//! and the totals, each since the last clear unless it says otherwise.
//!
//! JSON: `{"node","interface","attach_mode","early_drop","xdp":{counter:
//! n},"queues":[{"queue","mode",<queue fields>,"busy_poll_us",
//! "idle_polls",<inside I/O counters>,<inside_ kernel counters>}],
//! "kernel":{counter: n},"dummy_packets","inside_xdp":{"interface",
//! "attach_mode",counter: n} or null,"next_hop_refreshes","next_hop_held_sent"}`.
use std::fmt::Write as _;

use serde::Serialize;

use super::Counters;

/// The whole show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QfpStatistics {
    /// The node's name.
    pub node: String,
    /// The underlay interface.
    pub interface: String,
    /// XDP's attach mode (`driver`, `generic`).
    pub attach_mode: &'static str,
    /// Early drop of unknown SPIs armed.
    pub early_drop: bool,
    /// Seconds since start.
    #[serde(skip)]
    pub up_s: u64,
    /// XDP's counters.
    pub xdp: Counters,
    /// The AF_XDP queues.
    pub queues: Vec<QueueRow>,
    /// The kernel sockets' counters.
    pub kernel: Counters,
    /// Authentic ESP dummy packets discarded.
    pub dummy_packets: u64,
    /// Gateway mode: the inside interface's XDP program.
    pub inside_xdp: Option<InsideXdp>,
    /// Passes resolving the peers' next hops, since start.
    pub next_hop_refreshes: u64,
    /// Frames held because their next hop had no MAC yet (the queues'
    /// `next_hop_held`), sent once it was resolved, since start.
    pub next_hop_held_sent: u64,
}

/// One AF_XDP queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueRow {
    /// Queue number.
    pub queue: u32,
    /// Bind mode (`zero-copy`, `copy`).
    pub mode: &'static str,
    /// The queue fields (`QUEUE_FIELDS`): frames, bytes, batches, the frame
    /// classes, then the kernel's socket counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// How many of `counters` come before the kernel's socket counters.
    #[serde(skip)]
    pub kernel_from: usize,
    /// SO_BUSY_POLL as the kernel has it on the socket (0: off).
    pub busy_poll_us: u32,
    /// Waits with nothing to do, since start (not reset by `clear`): a
    /// test's "drained" signal.
    pub idle_polls: u64,
    /// The inside I/O counters.
    #[serde(flatten)]
    pub io: Counters,
    /// Gateway mode: frames the kernel could not put on the inside
    /// socket's rings (`inside_` names).
    #[serde(flatten)]
    pub inside_kernel: Option<Counters>,
}

/// Gateway mode's inside XDP program.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InsideXdp {
    /// The inside interface.
    pub interface: String,
    /// Its attach mode.
    pub attach_mode: &'static str,
    /// Its counters.
    #[serde(flatten)]
    pub counters: Counters,
}

/// The text of `show platform hardware qfp active statistics`.
pub fn render(s: &QfpStatistics) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Node {}: XDP steering on {} ({} mode), up {}s",
        s.node, s.interface, s.attach_mode, s.up_s
    );
    let _ = writeln!(
        text,
        "Early drop of unknown SPIs: {}",
        if s.early_drop { "armed" } else { "off" }
    );
    let _ = writeln!(text, "{}", "-".repeat(56));
    let _ = writeln!(text, "{:<40}{:>16}", "Counter", "Packets");
    let _ = writeln!(text, "{}", "-".repeat(56));
    for (k, v) in &s.xdp.0 {
        let _ = writeln!(text, "{k:<40}{v:>16}");
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
    for q in &s.queues {
        let d: Vec<u64> = q.counters.0.iter().map(|(_, v)| *v).collect();
        let col = |i: usize| d.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            text,
            "{:<6}{:<10}{:>12}{:>14}{:>10}{:>9}{:>9}{:>11}{:>11}{:>8}",
            q.queue,
            q.mode,
            col(0),
            col(1),
            col(2),
            col(3),
            col(4),
            col(5),
            col(6),
            col(7)
        );
        let kernel = Counters(
            q.counters
                .0
                .get(q.kernel_from..)
                .unwrap_or_default()
                .to_vec(),
        );
        let _ = writeln!(
            text,
            "      kernel: {}{}",
            kernel.inline(),
            if q.busy_poll_us > 0 {
                format!("; busy polling {} us", q.busy_poll_us)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            text,
            "      idle polls: {} (waits with nothing to do, since start)",
            q.idle_polls
        );
        let _ = writeln!(text, "      inside: {}", q.io.inline());
        if let Some(k) = &q.inside_kernel {
            let _ = writeln!(text, "      inside kernel: {}", k.inline());
        }
    }
    let _ = writeln!(
        text,
        "\nKernel sockets (reassembled fragments, ESP that XDP passed)"
    );
    for (k, v) in &s.kernel.0 {
        let _ = writeln!(text, "{k:<40}{v:>16}");
    }
    if let Some(i) = &s.inside_xdp {
        let _ = writeln!(
            text,
            "\nInside XDP on {} ({} mode; gateway mode)",
            i.interface, i.attach_mode
        );
        for (k, v) in &i.counters.0 {
            let _ = writeln!(text, "{k:<40}{v:>16}");
        }
    }
    let _ = writeln!(
        text,
        "\ndummy_packets {} (ESP next header 59, discarded silently, RFC 4303 2.6)",
        s.dummy_packets
    );
    let _ = writeln!(
        text,
        "next_hop_refreshes {} (passes resolving the peers' next hops over rtnetlink, since start)",
        s.next_hop_refreshes
    );
    let _ = writeln!(
        text,
        "next_hop_held_sent {} (frames held for a next hop without a MAC, sent once resolved)",
        s.next_hop_held_sent
    );
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn counters(pairs: &[(&str, u64)]) -> Counters {
        Counters::new(pairs.iter().copied())
    }

    fn stats(gateway: bool) -> QfpStatistics {
        QfpStatistics {
            node: "edge1".into(),
            interface: "veth-e1".into(),
            attach_mode: "driver",
            early_drop: true,
            up_s: 42,
            xdp: counters(&[("esp_to_xsk", 5), ("pass", 1)]),
            queues: vec![QueueRow {
                queue: 0,
                mode: "copy",
                counters: counters(&[
                    ("rx_frames", 10),
                    ("rx_bytes", 1500),
                    ("batches", 3),
                    ("espv4", 4),
                    ("espv6", 0),
                    ("udp_espv4", 6),
                    ("udp_espv6", 0),
                    ("other", 0),
                    ("rx_dropped", 2),
                    ("rx_ring_full", 0),
                ]),
                kernel_from: 8,
                busy_poll_us: if gateway { 50 } else { 0 },
                idle_polls: 77,
                io: counters(&[("tun_writes", 4), ("tun_reads", 9)]),
                inside_kernel: gateway.then(|| counters(&[("inside_rx_dropped", 1)])),
            }],
            kernel: counters(&[("kernel_esp_v4", 3)]),
            dummy_packets: 1,
            inside_xdp: gateway.then(|| InsideXdp {
                interface: "veth-in".into(),
                attach_mode: "generic",
                counters: counters(&[("to_xsk", 8)]),
            }),
            next_hop_refreshes: 6,
            next_hop_held_sent: 2,
        }
    }

    #[test]
    fn statistics_text() {
        let c = |k: &str, v: u64| format!("{k:<40}{v:>16}\n");
        let dash = "-".repeat(56);
        let want = format!(
            "Node edge1: XDP steering on veth-e1 (driver mode), up 42s\n\
             Early drop of unknown SPIs: armed\n\
             {dash}\n{}{dash}\n{}{}\n\
             AF_XDP queues\n\
             Queue Mode         Rx frames      Rx bytes   Batches    ESPv4    ESPv6  UDP-ESPv4  UDP-ESPv6   Other\n\
             0     copy                10          1500         3        4        0          6          0       0\n\
             \x20     kernel: rx_dropped 2, rx_ring_full 0\n\
             \x20     idle polls: 77 (waits with nothing to do, since start)\n\
             \x20     inside: tun_writes 4, tun_reads 9\n\
             \n\
             Kernel sockets (reassembled fragments, ESP that XDP passed)\n{}\n\
             \n\
             dummy_packets 1 (ESP next header 59, discarded silently, RFC 4303 2.6)\n\
             next_hop_refreshes 6 (passes resolving the peers' next hops over rtnetlink, since start)\n\
             next_hop_held_sent 2 (frames held for a next hop without a MAC, sent once resolved)\n",
            c("Counter", 0).replace("               0", "         Packets"),
            c("esp_to_xsk", 5),
            c("pass", 1),
            c("kernel_esp_v4", 3).trim_end(),
        );
        assert_eq!(render(&stats(false)), want);
    }

    #[test]
    fn gateway_mode_adds_the_inside_lines() {
        let text = render(&stats(true));
        assert!(text.contains("      kernel: rx_dropped 2, rx_ring_full 0; busy polling 50 us\n"));
        assert!(text.contains(
            "      inside: tun_writes 4, tun_reads 9\n      inside kernel: inside_rx_dropped 1\n"
        ));
        assert!(text.contains(&format!(
            "\nInside XDP on veth-in (generic mode; gateway mode)\n{:<40}{:>16}\n\ndummy_packets",
            "to_xsk", 8
        )));
    }

    #[test]
    fn statistics_json_flattens_the_counters() {
        let j = serde_json::to_value(stats(false)).unwrap();
        assert_eq!(j["inside_xdp"], json!(null));
        assert_eq!(j["xdp"], json!({"esp_to_xsk": 5, "pass": 1}));
        assert_eq!(j["kernel"], json!({"kernel_esp_v4": 3}));
        assert_eq!(j["early_drop"], true);
        assert!(j.get("up_s").is_none());
        let q = &j["queues"][0];
        assert_eq!(q["queue"], 0);
        assert_eq!(q["mode"], "copy");
        assert_eq!(q["rx_frames"], 10);
        assert_eq!(q["rx_dropped"], 2);
        assert_eq!(q["tun_reads"], 9);
        assert_eq!(q["idle_polls"], 77);
        assert_eq!(q["busy_poll_us"], 0);
        assert!(q.get("inside_rx_dropped").is_none());
        assert!(q.get("kernel_from").is_none());
        let j = serde_json::to_value(stats(true)).unwrap();
        assert_eq!(j["queues"][0]["inside_rx_dropped"], 1);
        assert_eq!(
            j["inside_xdp"],
            json!({"interface": "veth-in", "attach_mode": "generic", "to_xsk": 8})
        );
    }
}
