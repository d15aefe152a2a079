//! `show platform packet-trace summary` and `show platform packet-trace
//! packet K`: the frames the workers traced (the worker crate records a
//! [`TraceRecord`], control makes it a row, [`TracePacket`]: the record
//! and what control adds to it; and renders it: the columns, the path
//! view).
//!
//! JSON of the summary: `{"packets":[PACKET..],"remaining","drops_only"}`;
//! of a packet: `{"pkt","worker","input","xdp_verdict","queue",
//! "timestamp_ns","len","outer","spi","seq","sa","tunnel","replay","icv",
//! "state","drop":{"id","name"} or null,"result","output"}`.
use std::fmt::Write as _;

use serde::Serialize;
use xdpsec_datapath::{pipeline::PassReason, wire::ip_proto};
use xdpsec_worker::taps::{Fate, Input, Step, TraceRecord};

/// `show platform packet-trace summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceSummary {
    /// The traced frames, by packet number.
    pub packets: Vec<TracePacket>,
    /// Frames the armed trace still wants.
    pub remaining: u32,
    /// The trace keeps dropped frames only.
    pub drops_only: bool,
}

/// A traced frame's drop type (DROP only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TraceDrop {
    /// QFP drop type id.
    pub id: u16,
    /// QFP drop type name.
    pub name: &'static str,
}

/// One traced frame (`show platform packet-trace packet K`): the worker's
/// record, its fields as they are (`pkt`, `worker`, `timestamp_ns`,
/// `len`, `outer`, `spi`, `seq`, `sa`, `tunnel`, `replay`, `icv`,
/// `state`), and what control makes of the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TracePacket {
    /// The record as the worker made it.
    #[serde(flatten)]
    pub record: TraceRecord,
    /// The `Input` column: the interface and queue, or the handoff queue.
    pub input: String,
    /// `XDP_REDIRECT`, or `handoff` (not from XDP).
    pub xdp_verdict: &'static str,
    /// The AF_XDP queue XDP redirected it to (None: the handoff queue).
    pub queue: Option<u32>,
    /// The drop type (DROP only).
    pub drop: Option<TraceDrop>,
    /// What happened, in words.
    pub result: String,
    /// The `Output` column: the tunnel for FWD/PUNT, `<none>` otherwise.
    pub output: String,
}

/// What became of `r`, in words.
fn result(r: &TraceRecord) -> String {
    match (r.fate, r.drop) {
        (_, Some(d)) => format!("dropped: {} {}", d.id(), d.name()),
        (Fate::Delivered(t), _) => format!("decrypted, to the inside on tunnel {t}"),
        (Fate::Punted(t), _) => {
            format!("decrypted, for the node itself (BFD) on tunnel {t}: to control")
        }
        (Fate::Dummy, _) => "ESP dummy packet (next header 59), discarded (RFC 4303 2.6)".into(),
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

impl TracePacket {
    /// The row of `r`, received on `interface`; `tunnels` names a tunnel
    /// index (the Output column).
    pub fn new(r: &TraceRecord, interface: &str, tunnels: &dyn Fn(u32) -> String) -> TracePacket {
        let (input, xdp_verdict, queue) = match r.input {
            Input::Xdp(q) => (format!("{interface}:q{q}"), "XDP_REDIRECT", Some(q)),
            Input::Handoff => (format!("handoff:w{}", r.worker), "handoff", None),
        };
        TracePacket {
            record: r.clone(),
            input,
            xdp_verdict,
            queue,
            drop: r.drop.map(|d| TraceDrop {
                id: d.id(),
                name: d.name(),
            }),
            result: result(r),
            output: match (r.state, r.tunnel) {
                ("FWD" | "PUNT", Some(t)) => tunnels(t),
                _ => "<none>".into(),
            },
        }
    }

    /// The `Reason` column (DROP: `NN (NAME)`, IOS style).
    pub fn reason(&self) -> String {
        self.drop
            .map(|d| format!("{} ({})", d.id, d.name))
            .unwrap_or_default()
    }
}

/// The text of `show platform packet-trace summary`: a line per frame,
/// without the trailing blanks of an empty Reason column.
pub fn render_summary(s: &TraceSummary) -> String {
    let mut text = String::new();
    let mut line = |pkt: &dyn std::fmt::Display, input: &str, output: &str, state, reason| {
        let l = format!("{pkt:<6}{input:<24}{output:<24}{state:<7}{reason}");
        let _ = writeln!(text, "{}", l.trim_end());
    };
    line(&"Pkt", "Input", "Output", "State", "Reason".into());
    for p in &s.packets {
        line(
            &p.record.pkt,
            &p.input,
            &p.output,
            p.record.state,
            p.reason(),
        );
    }
    text
}

/// The text of `show platform packet-trace packet K`: the summary, then
/// the path, one feature a block.
pub fn render_packet(p: &TracePacket) -> String {
    let r = &p.record;
    let mut out = String::new();
    let _ = writeln!(out, "Packet: {:<12}CBUG ID: {}", r.pkt, r.pkt);
    let _ = writeln!(out, "Summary");
    let _ = writeln!(out, "  Input     : {}", p.input);
    let _ = writeln!(out, "  Output    : {}", p.output);
    let _ = writeln!(out, "  State     : {} {}", r.state, p.reason());
    let _ = writeln!(out, "  Timestamp");
    let _ = writeln!(out, "    Start   : {} ns", r.timestamp_ns);
    let _ = writeln!(out, "  Length    : {}", r.len);
    let _ = writeln!(out, "Path Trace");
    let _ = writeln!(out, "  Feature: XDP");
    let _ = writeln!(
        out,
        "    Verdict     : {}",
        match p.queue {
            Some(q) => format!("XDP_REDIRECT to AF_XDP queue {q}"),
            None => "(handoff queue, not from XDP)".into(),
        }
    );
    let _ = writeln!(out, "  Feature: IPV4/IPV6 (outer)");
    match r.outer {
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
    if let Some(spi) = r.spi {
        let _ = writeln!(out, "    SPI         : 0x{spi:08X}");
    }
    if let Some(seq) = r.seq {
        let _ = writeln!(out, "    Sequence    : {seq}");
    }
    let sa = match (r.sa, r.tunnel) {
        (Step::Pass, Some(t)) => format!("FOUND (tunnel {t})"),
        (Step::Pass, None) => "FOUND".into(),
        (Step::Fail, _) => "NOT FOUND".into(),
        (Step::NotReached, _) => "-".into(),
    };
    let _ = writeln!(out, "    SA          : {sa}");
    let _ = writeln!(out, "    Anti-replay : {}", r.replay.as_str());
    let _ = writeln!(out, "    ICV         : {}", r.icv.as_str());
    let _ = writeln!(out, "    Result      : {}", p.result);
    out
}

#[cfg(test)]
mod tests {
    use xdpsec_datapath::DropReason;
    use xdpsec_worker::taps::Outer;

    use super::*;
    use crate::show::reply;

    /// A frame as a worker records it: ESP in UDP from .2 to .1 on queue 1,
    /// its ICV wrong.
    fn record() -> TraceRecord {
        TraceRecord {
            pkt: 3,
            worker: 1,
            input: Input::Xdp(1),
            timestamp_ns: 1_765_000_000_123_456_789,
            len: 110,
            outer: Some(Outer {
                src: "198.51.100.2".parse().unwrap(),
                dst: "198.51.100.1".parse().unwrap(),
                protocol: 17,
                ports: Some((4500, 4500)),
            }),
            spi: Some(0x1001),
            seq: Some(7),
            sa: Step::Pass,
            tunnel: Some(0),
            replay: Step::Pass,
            icv: Step::Fail,
            state: "DROP",
            drop: Some(DropReason::InMacException),
            fate: Fate::Dropped,
        }
    }

    fn name(t: u32) -> String {
        format!("Tunnel{}", t + 1)
    }

    #[test]
    fn packet_row_text_and_json() {
        let drop = DropReason::InMacException;
        let p = TracePacket::new(&record(), "veth-a", &name);
        let (text, json) = reply(&p, render_packet);
        assert_eq!(
            text,
            format!(
                "Packet: 3           CBUG ID: 3\n\
                 Summary\n\
                 \x20 Input     : veth-a:q1\n\
                 \x20 Output    : <none>\n\
                 \x20 State     : DROP {id} ({name})\n\
                 \x20 Timestamp\n\
                 \x20   Start   : 1765000000123456789 ns\n\
                 \x20 Length    : 110\n\
                 Path Trace\n\
                 \x20 Feature: XDP\n\
                 \x20   Verdict     : XDP_REDIRECT to AF_XDP queue 1\n\
                 \x20 Feature: IPV4/IPV6 (outer)\n\
                 \x20   Source      : 198.51.100.2\n\
                 \x20   Destination : 198.51.100.1\n\
                 \x20   Protocol    : 17 (UDP)\n\
                 \x20   SrcPort     : 4500\n\
                 \x20   DstPort     : 4500\n\
                 \x20 Feature: IPSec\n\
                 \x20   SPI         : 0x00001001\n\
                 \x20   Sequence    : 7\n\
                 \x20   SA          : FOUND (tunnel 0)\n\
                 \x20   Anti-replay : PASS\n\
                 \x20   ICV         : FAIL\n\
                 \x20   Result      : dropped: {id} {name}\n",
                id = drop.id(),
                name = drop.name()
            )
        );
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            format!(
                r#"{{"drop":{{"id":{id},"name":"{name}"}},"icv":"fail","input":"veth-a:q1","len":110,"outer":{{"dst":"198.51.100.1","ports":[4500,4500],"protocol":17,"src":"198.51.100.2"}},"output":"<none>","pkt":3,"queue":1,"replay":"pass","result":"dropped: {id} {name}","sa":"pass","seq":7,"spi":4097,"state":"DROP","timestamp_ns":1765000000123456789,"tunnel":0,"worker":1,"xdp_verdict":"XDP_REDIRECT"}}"#,
                id = drop.id(),
                name = drop.name()
            )
        );
    }

    /// A delivered frame from the handoff queue names its tunnel in the
    /// Output column; a frame that did not parse says so in the path.
    #[test]
    fn handoff_and_unparsed_frames() {
        let mut r = record();
        r.input = Input::Handoff;
        r.state = "FWD";
        r.drop = None;
        r.icv = Step::Pass;
        r.fate = Fate::Delivered(0);
        let p = TracePacket::new(&r, "veth-a", &name);
        assert_eq!(
            (p.input.as_str(), p.output.as_str()),
            ("handoff:w1", "Tunnel1")
        );
        assert_eq!((p.xdp_verdict, p.queue), ("handoff", None));
        let text = render_packet(&p);
        assert!(
            text.contains("  State     : FWD \n")
                && text.contains("    Verdict     : (handoff queue, not from XDP)\n")
                && text.contains("    Result      : decrypted, to the inside on tunnel 0\n"),
            "{text}"
        );
        let mut r = record();
        r.outer = None;
        r.spi = None;
        r.seq = None;
        r.sa = Step::NotReached;
        r.tunnel = None;
        r.fate = Fate::Passed(PassReason::NotIp);
        r.drop = None;
        r.state = "CONS";
        let text = render_packet(&TracePacket::new(&r, "veth-a", &name));
        assert!(
            text.contains("  Feature: IPV4/IPV6 (outer)\n    (not parsed)\n  Feature: IPSec\n    SA          : -\n"),
            "{text}"
        );
        assert!(text.ends_with("    Result      : not IP\n"), "{text}");
    }

    /// The columns line up; an empty Reason column leaves no trailing
    /// blanks.
    #[test]
    fn summary_columns() {
        let drop = record();
        let mut fwd = record();
        fwd.pkt = 4;
        fwd.state = "FWD";
        fwd.drop = None;
        fwd.fate = Fate::Delivered(0);
        let s = TraceSummary {
            packets: [drop, fwd]
                .iter()
                .map(|r| TracePacket::new(r, "veth-a", &name))
                .collect(),
            remaining: 12,
            drops_only: false,
        };
        let (text, json) = reply(&s, render_summary);
        let d = DropReason::InMacException;
        assert_eq!(
            text,
            format!(
                "Pkt   Input                   Output                  State  Reason\n\
                 3     veth-a:q1               <none>                  DROP   {} ({})\n\
                 4     veth-a:q1               Tunnel1                 FWD\n",
                d.id(),
                d.name()
            )
        );
        assert_eq!(
            (json["remaining"].as_u64(), json["drops_only"].as_bool()),
            (Some(12), Some(false))
        );
        assert_eq!(json["packets"][1]["output"], "Tunnel1");
        let empty = TraceSummary {
            packets: vec![],
            remaining: 0,
            drops_only: true,
        };
        assert_eq!(
            render_summary(&empty),
            "Pkt   Input                   Output                  State  Reason\n"
        );
    }
}
