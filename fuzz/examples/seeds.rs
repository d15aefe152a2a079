//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`
//! (`cargo run -p xdpsec-fuzz --example seeds`): real messages of two IKE
//! cores and of the OMP and BFD codecs, and scripts that walk each core
//! target through a whole exchange (handshake, rekeys, deletes, timers,
//! commands), so that mutations start deep in the protocol.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use xdpsec_fuzz::ike;
use xdpsec_ike::{Action, Ike, Input};
use xdpsec_omp::wire::{GoodbyeReason, Message, Role, ServiceRoute};

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
}

/// Every datagram of two IKE cores: handshake, child and IKE rekeys.
fn ike_pair() -> Vec<Vec<u8>> {
    let (a, b) = (ike::CORE, ike::SCRIPT);
    let mut nodes = [
        Ike::new(vec![ike::tunnel("Tunnel1", 1, a, b, true)]),
        Ike::new(vec![ike::tunnel("Tunnel1", 1, b, a, false)]),
    ];
    let mut now = Instant::now();
    let mut seen = Vec::new();
    let mut queue: Vec<(usize, SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    let push = |side: usize, acts: Vec<Action>, q: &mut Vec<_>| {
        for x in acts {
            if let Action::Send {
                local,
                remote,
                data,
            } = x
            {
                q.push((1 - side, remote, local, data));
            }
        }
    };
    let (a_ip, b_ip) = (IpAddr::from(a), IpAddr::from(b));
    for round in 0..4 {
        let acts = match round {
            0 => nodes[0].handle(now, Input::Timer),
            1 => nodes[0].rekey_now(now, b_ip, false),
            2 => nodes[1].rekey_now(now, a_ip, true),
            _ => {
                now += Duration::from_secs(20);
                nodes[0].handle(now, Input::Timer)
            }
        };
        push(0, acts, &mut queue);
        while !queue.is_empty() {
            let (to, local, remote, data) = queue.remove(0);
            let acts = nodes[to].handle(
                now,
                Input::Datagram {
                    local,
                    remote,
                    data: &data,
                },
            );
            seen.push(data);
            push(to, acts, &mut queue);
        }
    }
    seen
}

fn main() {
    // ---- IKE --------------------------------------------------------------
    for (i, d) in ike_pair().iter().enumerate() {
        write("ike_wire", &format!("pair-{i:02}"), d);
    }
    let (first_init, i, a, r, t, w, n, c, x) = (
        ike::op(1, 0),     // IKE_SA_INIT, proposal 0
        ike::op(1, 0x10),  // IKE_SA_INIT, proposal 1
        ike::op(2, 0),     // IKE_AUTH
        ike::op(3, 0),     // request from a template
        ike::op(7, 0),     // to the next timer
        ike::op(8, 0),     // clock step
        ike::op(4, 0),     // answer the core's request
        ike::op(9, 0),     // command
        ike::op(10, 0x80), // rekey_now
    );
    let _ = i;
    // Templates: 3 new child, 67 rekey child 0x5002 (made by IKE_AUTH),
    // 0 DPD, 1 delete child, 5 IKE rekey, 2 delete IKE SA.
    let happy = |init: u8, auth: u8| -> Vec<u8> {
        vec![
            init, auth, r, 3, r, 67, r, 0, t, w, 0x01, 0x00, t, n, 0, x, n, 5, r, 1, r, 5, c, 0, t,
            n, 0, r, 2, t,
        ]
    };
    write("ike_core", "gcm", &happy(first_init, a));
    write(
        "ike_core",
        "cbc",
        &happy(ike::op(1, 0x10), ike::op(2, 0x10)),
    );
    write(
        "ike_core",
        "initial-contact",
        &[first_init, a, first_init, ike::op(2, 0x20), t, c, 1, t],
    );
    let mut raw = vec![ike::op(0, 0)];
    let pair = ike_pair();
    raw.extend_from_slice(&(pair[0].len() as u16).to_be_bytes());
    raw.extend_from_slice(&pair[0]);
    write("ike_core", "raw-init", &raw);
    // The core's own initiation answered by itself changed, then timers.
    write(
        "ike_core",
        "initiator",
        &[t, ike::op(6, 0), 1, 0, 20, 0x55, t, w, 0x10, 0, t],
    );

    // ---- OMP --------------------------------------------------------------
    let msgs = [
        Message::Hello {
            role: Role::Edge,
            system_ip: [10, 0, 0, 1].into(),
            site_id: 100,
            color: "biz-internet".into(),
            version: "seed".into(),
        },
        Message::Refuse(xdpsec_omp::history::ErrorCode::SerNtPres),
        Message::AuthOk,
        Message::Keepalive,
        Message::RouteAdvertise(ServiceRoute {
            prefix: xdpsec_omp::Prefix::new([203, 0, 113, 0].into(), 24).expect("prefix"),
            system_ip: [10, 0, 0, 1].into(),
            site_id: 100,
        }),
        Message::TlocWithdraw {
            system_ip: [10, 0, 0, 2].into(),
            color: "mpls".into(),
        },
        Message::Goodbye(GoodbyeReason::Replaced),
    ];
    let mut stream = Vec::new();
    for (k, m) in msgs.iter().enumerate() {
        let f = m.encode();
        write("omp_wire", &format!("body-{k}"), &f[4..]);
        // As a stream script: chunk length, then the bytes.
        stream.push(f.len() as u8);
        stream.extend_from_slice(&f);
    }
    write("omp_wire", "stream", &stream);
    // Controller: accept, Hello (ip 10.0.0.1, biz-internet), Auth, TLOC and
    // route advertisements, keepalive, a second connection replacing it,
    // withdrawals, close, timers.
    let tloc = |ip: u8, color: u8| vec![4, 0, ip, color, 0, 0, 10, 0x30, 0x39, 0, 0, 0x10, 0];
    let mut ctl = vec![0, 0, 1, 0, 0, 0, 1, 2, 0];
    ctl.extend(tloc(0, 0));
    ctl.extend([4, 0, 6, 2, 5, 24, 0, 100]); // route advertise 203.0.113.x/24
    ctl.extend([4, 0, 3]); // keepalive
    ctl.extend([0, 1, 1, 1, 0, 0, 1, 2, 1]);
    ctl.extend(tloc(1, 1));
    ctl.extend([4, 1, 5, 1, 1]); // TLOC withdraw
    ctl.extend([4, 0, 7, 2, 5, 24, 0]); // route withdraw
    ctl.extend([5, 0, 7, 0, 6, 0, 0x10, 0, 7, 0]);
    write("omp_controller", "two-edges", &ctl);
    // Edge: start (connect both), connected, Hello+Auth, AuthOk, a TLOC
    // and a route from another edge, rekey, port hop, timers, close.
    let mut edge = vec![0, 0, 0, 2, 0, 3, 0];
    edge.extend([4, 0, 4, 1, 1, 0, 0, 10, 0x30, 0x39, 0, 0, 0x10, 0]);
    edge.extend([4, 0, 6, 2, 5, 24, 1, 7]);
    edge.extend([
        0, 1, 2, 1, 3, 1, 5, 0, 0, 5, 1, 2, 6, 0, 0x20, 0, 7, 0, 5, 0, 1, 1, 0, 7, 0,
    ]);
    write("omp_edge", "handshake", &edge);

    // ---- BFD --------------------------------------------------------------
    let up: Vec<u8> = std::iter::repeat_n([4u8, 0, 0, 0, 0, 0, 0, 0, 0], 12)
        .flatten()
        .collect();
    write("bfd", "up", &up);
    let mut flap = up.clone();
    flap.extend([
        7, 0, 1, 2, 4, 0, 0, 0, 0, 1, 0x11, 0x40, 3, 0x80, 7, 1, 2, 0, 7, 0, 1, 1, 4, 4, 4,
    ]);
    write("bfd", "flap-remove", &flap);
    let pkt = xdpsec_bfd::wire::Repr {
        diag: xdpsec_bfd::Diag::NoDiagnostic,
        state: xdpsec_bfd::State::Up,
        poll: true,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 0x11,
        your_discriminator: 0x22,
        desired_min_tx: Duration::from_millis(300),
        required_min_rx: Duration::from_millis(300),
        required_min_echo_rx: Duration::ZERO,
    }
    .to_bytes();
    write("bfd", "packet", &pkt);

    // ---- decap --------------------------------------------------------------
    // Each template (control byte odd), changed and truncated, and raw frames.
    let mut d = Vec::new();
    for k in 0..8u8 {
        d.extend([(k << 1) | 1, 0x80 | (k << 1) | 1 | 0x20, 3, 0xff, 9]);
    }
    d.extend([
        0, 20, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 50, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    write("decap", "templates", &d);
}
