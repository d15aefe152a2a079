//! Cross-check of the wire codec against an independent implementation:
//! scapy's BFD layer (scapy.contrib.bfd) parses what we emit, also inside
//! IPv4/UDP to 3784, and builds byte-identical packets from the same
//! fields. Without the venv: ignored, or a failure under `cargo xtask test` and CI
//! (`xdpsec_testenv`).

use std::{path::PathBuf, time::Duration};

use xdpsec_testenv::hex;

mod common;

use common::{Event, Net, cfg};
use xdpsec_bfd::{
    Diag, State,
    wire::{Packet, Repr},
};

fn run(req: serde_json::Value) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/bfd_ref.py");
    serde_json::from_slice(&xdpsec_testenv::venv_script(
        &script,
        req.to_string().as_bytes(),
    ))
    .unwrap()
}

fn flags(r: &Repr) -> String {
    // scapy's FlagsField "MDACFP" prints set bits in that order.
    let mut s = String::new();
    for (on, c) in [
        (false, 'M'),
        (r.demand, 'D'),
        (false, 'A'),
        (r.cpi, 'C'),
        (r.final_, 'F'),
        (r.poll, 'P'),
    ] {
        if on {
            s.push(c);
        }
    }
    s
}

fn fields(r: &Repr) -> serde_json::Value {
    serde_json::json!({
        "diag": r.diag.to_wire(),
        "sta": r.state.to_wire(),
        "flags": flags(r),
        "detect_mult": r.detect_mult,
        "my_discriminator": r.my_discriminator,
        "your_discriminator": r.your_discriminator,
        "min_tx_interval": r.desired_min_tx.as_micros() as u64,
        "min_rx_interval": r.required_min_rx.as_micros() as u64,
        "echo_rx_interval": r.required_min_echo_rx.as_micros() as u64,
    })
}

/// Packets as the core emits them: the Down, Init and Up packets, Polls
/// and Finals of two cores coming Up with a 100 ms hello.
fn core_packets() -> Vec<Vec<u8>> {
    let mut n = Net::new(2);
    n.link((0, 1), (1, 1), cfg(100, 3), cfg(100, 3));
    n.run_until(Duration::from_secs(3));
    assert!(n.cores[0].is_up(1) && n.cores[1].is_up(1), "cores came Up");
    n.events
        .iter()
        .filter_map(|e| match e {
            Event::Sent { repr, .. } => Some(repr.to_bytes()),
            Event::Change { .. } => None,
        })
        .collect()
}

fn scapy_parses_what_we_emit_and_builds_the_same_bytes() {
    let fixed = Repr {
        diag: Diag::ControlDetectionTimeExpired,
        state: State::Down,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 7,
        my_discriminator: 0xdead_beef,
        your_discriminator: 0,
        desired_min_tx: Duration::from_secs(1),
        required_min_rx: Duration::from_millis(1000),
        required_min_echo_rx: Duration::ZERO,
    };
    let mut pkts = vec![fixed.to_bytes()];
    pkts.extend(core_packets());
    let reprs: Vec<Repr> = pkts
        .iter()
        .map(|p| Repr::parse(&Packet::new_checked(&p[..]).unwrap()).unwrap())
        .collect();
    assert!(reprs.iter().any(|r| r.poll), "a Poll was emitted");
    assert!(reprs.iter().any(|r| r.final_), "a Final was emitted");
    assert!(reprs.iter().any(|r| r.state == State::Init));
    let req: Vec<_> = pkts
        .iter()
        .zip(&reprs)
        .map(|(p, r)| serde_json::json!({"hex": hex(p), "fields": fields(r)}))
        .collect();
    let resp = run(serde_json::Value::Array(req));
    for ((p, r), got) in pkts.iter().zip(&reprs).zip(resp.as_array().unwrap()) {
        assert_eq!(
            got["built"],
            hex(p),
            "scapy builds the same bytes for {r:?}"
        );
        assert_eq!(got["in_udp"], true, "scapy finds BFD in UDP/3784");
        let parsed = &got["parsed"];
        assert_eq!(parsed["version"], 1);
        assert_eq!(parsed["len"], 24);
        let mut want = fields(r);
        let parsed_fields: serde_json::Map<_, _> = want
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (k.clone(), parsed[k].clone()))
            .collect();
        assert_eq!(
            serde_json::Value::Object(parsed_fields),
            std::mem::take(&mut want),
            "scapy reads our fields"
        );
    }
}

fn main() {
    use xdpsec_testenv::{Need, trial};
    xdpsec_testenv::main(vec![trial(
        "scapy_parses_what_we_emit_and_builds_the_same_bytes",
        &[Need::Venv],
        scapy_parses_what_we_emit_and_builds_the_same_bytes,
    )]);
}
