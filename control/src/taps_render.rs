//! How `show platform packet-trace` renders a traced frame (the worker
//! crate records it, control renders it): its columns, the `--json`
//! object and the path view.
use xdpsec_datapath::{pipeline::PassReason, wire::ip_proto};
use xdpsec_worker::taps::{Fate, Input, Step, TraceRecord};

/// The renderings of a [`TraceRecord`].
pub trait TraceRender {
    /// The `Input` column: the interface and queue, or the handoff queue.
    fn input_name(&self, interface: &str) -> String;
    /// The `Output` column: the tunnel for FWD/PUNT, `<none>` otherwise.
    fn output_name(&self, tunnels: &dyn Fn(u32) -> String) -> String;
    /// What happened, in words.
    fn result(&self) -> String;
    /// The record as JSON (`--json`).
    fn to_json(&self, interface: &str) -> serde_json::Value;
    /// The `Reason` column (DROP: `NN (NAME)`, IOS style).
    fn reason(&self) -> String;
    /// `show platform packet-trace packet K`'s path, one feature a block.
    fn render_path(&self, out: &mut String);
}

impl TraceRender for TraceRecord {
    fn input_name(&self, interface: &str) -> String {
        match self.input {
            Input::Xdp(q) => format!("{interface}:q{q}"),
            Input::Handoff => format!("handoff:w{}", self.worker),
        }
    }

    fn output_name(&self, tunnels: &dyn Fn(u32) -> String) -> String {
        match (self.state, self.tunnel) {
            ("FWD" | "PUNT", Some(t)) => tunnels(t),
            _ => "<none>".into(),
        }
    }

    fn result(&self) -> String {
        match (self.fate, self.drop) {
            (_, Some(r)) => format!("dropped: {} {}", r.id(), r.name()),
            (Fate::Delivered(t), _) => format!("decrypted, to the inside on tunnel {t}"),
            (Fate::Punted(t), _) => {
                format!("decrypted, for the node itself (BFD) on tunnel {t}: to control")
            }
            (Fate::Dummy, _) => {
                "ESP dummy packet (next header 59), discarded (RFC 4303 2.6)".into()
            }
            (Fate::HandedOff(w), _) => format!("SA owned by worker {w}: handed off to it"),
            (Fate::Passed(p), _) => match p {
                PassReason::NotIp => "not IP",
                PassReason::NotEsp => "not ESP",
                PassReason::NatKeepalive => "NAT keepalive",
                PassReason::IkeMarker => "IKE (non-ESP marker)",
            }
            .into(),
            (Fate::Dropped, None) => "dropped".into(),
        }
    }

    fn to_json(&self, interface: &str) -> serde_json::Value {
        serde_json::json!({
            "pkt": self.pkt,
            "worker": self.worker,
            "input": self.input_name(interface),
            "xdp_verdict": match self.input { Input::Xdp(_) => "XDP_REDIRECT", Input::Handoff => "handoff" },
            "queue": match self.input { Input::Xdp(q) => Some(q), Input::Handoff => None },
            "timestamp_ns": self.timestamp_ns,
            "len": self.len,
            "outer": self.outer,
            "spi": self.spi,
            "seq": self.seq,
            "sa": self.sa,
            "tunnel": self.tunnel,
            "replay": self.replay,
            "icv": self.icv,
            "state": self.state,
            "drop": self.drop.map(|r| serde_json::json!({"id": r.id(), "name": r.name()})),
            "result": self.result(),
        })
    }

    fn reason(&self) -> String {
        self.drop
            .map(|r| format!("{} ({})", r.id(), r.name()))
            .unwrap_or_default()
    }

    fn render_path(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "Path Trace");
        let _ = writeln!(out, "  Feature: XDP");
        let _ = writeln!(
            out,
            "    Verdict     : {}",
            match self.input {
                Input::Xdp(q) => format!("XDP_REDIRECT to AF_XDP queue {q}"),
                Input::Handoff => "(handoff queue, not from XDP)".into(),
            }
        );
        let _ = writeln!(out, "  Feature: IPV4/IPV6 (outer)");
        match self.outer {
            Some(o) => {
                let _ = writeln!(out, "    Source      : {}", o.src);
                let _ = writeln!(out, "    Destination : {}", o.dst);
                let name = match o.protocol {
                    ip_proto::ESP => "ESP",
                    ip_proto::UDP => "UDP",
                    _ => "other",
                };
                let _ = writeln!(out, "    Protocol    : {} ({name})", o.protocol);
                if let Some((s, d)) = o.ports {
                    let _ = writeln!(out, "    SrcPort     : {s}");
                    let _ = writeln!(out, "    DstPort     : {d}");
                }
            }
            None => {
                let _ = writeln!(out, "    (not parsed)");
            }
        }
        let _ = writeln!(out, "  Feature: IPSec");
        if let Some(spi) = self.spi {
            let _ = writeln!(out, "    SPI         : 0x{spi:08X}");
        }
        if let Some(seq) = self.seq {
            let _ = writeln!(out, "    Sequence    : {seq}");
        }
        let sa = match (self.sa, self.tunnel) {
            (Step::Pass, Some(t)) => format!("FOUND (tunnel {t})"),
            (Step::Pass, None) => "FOUND".into(),
            (Step::Fail, _) => "NOT FOUND".into(),
            (Step::NotReached, _) => "-".into(),
        };
        let _ = writeln!(out, "    SA          : {sa}");
        let _ = writeln!(out, "    Anti-replay : {}", self.replay.as_str());
        let _ = writeln!(out, "    ICV         : {}", self.icv.as_str());
        let _ = writeln!(out, "    Result      : {}", self.result());
    }
}
