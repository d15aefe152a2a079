//! The OMP targets: the frame parser alone, and the controller and edge
//! cores fed a byte stream by a peer with a certificate the core accepts
//! (the TLS shell's part; so the script gets past the checks to the route
//! handling) or one it refuses, with
//! raw bytes, well-formed messages and changed ones, closes, clock steps and
//! operator commands. Checks: no panic; every frame a core sends decodes;
//! a core only sends on connections that are open; its tables stay within
//! what the script could have created.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use xdpsec_omp::controller::{self, Controller, ControllerConfig};
use xdpsec_omp::edge::{self, Edge, EdgeConfig, TlocConfig};
use xdpsec_omp::tls::PeerCert;
use xdpsec_omp::wire::{FrameReader, GoodbyeReason, Message, Role, ServiceRoute, TlocRoute};
use xdpsec_omp::{KeyMaterial, Prefix};

use crate::Script;

const ORG: &str = "fuzz-org";

/// The certificate of system-ip `ip` (serial from its last octet), or a
/// wrong one (`bad`: another organization).
fn cert(ip: Ipv4Addr, role: &str, bad: bool) -> PeerCert {
    PeerCert {
        organization: if bad { "other".into() } else { ORG.into() },
        role: role.into(),
        serial: format!("{:02X}", ip.octets()[3]),
        system_ip: Some(ip),
    }
}
const COLORS: [&str; 4] = ["biz-internet", "mpls", "lte", ""];
const CONTROLLER_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

/// The frame parser: `data` as a TCP stream cut into script-chosen pieces,
/// and as one message body; what decodes encodes back to itself.
pub fn wire(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        let frame = m.encode();
        let mut r = FrameReader::default();
        r.push(&frame);
        assert_eq!(r.next_message(), Ok(Some(m)), "encode/decode round trip");
    }
    let mut s = Script::new(data);
    let mut r = FrameReader::default();
    while !s.done() {
        let n = usize::from(s.u8());
        r.push(s.take(n));
        loop {
            match r.next_message() {
                Ok(Some(m)) => {
                    let mut again = FrameReader::default();
                    again.push(&m.encode());
                    assert_eq!(again.next_message(), Ok(Some(m)), "round trip");
                }
                Ok(None) => break,
                // Framing is lost: the shell closes the connection.
                Err(_) => return,
            }
        }
    }
}

fn pick_ip(s: &mut Script<'_>) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1 + s.u8() % 4)
}

fn pick_addr(s: &mut Script<'_>) -> IpAddr {
    match s.u8() % 3 {
        0 => IpAddr::from([198, 51, 100, s.u8()]),
        1 => IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(s.u8())]),
        _ => IpAddr::from([203, 0, 113, s.u8()]),
    }
}

fn pick_color(s: &mut Script<'_>) -> String {
    COLORS[usize::from(s.u8()) % COLORS.len()].to_string()
}

/// A well-formed message with script-chosen fields (from small sets where
/// they name things, so that advertisements meet their withdrawals).
fn message(s: &mut Script<'_>, rng: &SystemRandom) -> Message {
    match s.u8() % 9 {
        0 => Message::Hello {
            role: if s.u8() & 1 == 0 {
                Role::Edge
            } else {
                Role::Controller
            },
            system_ip: pick_ip(s),
            site_id: s.u32(),
            color: pick_color(s),
            version: "fuzz".into(),
        },
        1 => Message::Refuse(xdpsec_omp::history::ErrorCode::CrtVerFl),
        2 => Message::AuthOk,
        3 => Message::Keepalive,
        4 => Message::TlocAdvertise(TlocRoute {
            system_ip: pick_ip(s),
            site_id: u32::from(s.u8()),
            color: pick_color(s),
            public_ip: pick_addr(s),
            public_port: s.u16(),
            spi: s.u32(),
            key: KeyMaterial::random(rng),
        }),
        5 => Message::TlocWithdraw {
            system_ip: pick_ip(s),
            color: pick_color(s),
        },
        6 => Message::RouteAdvertise(ServiceRoute {
            prefix: Prefix::new(pick_addr(s), s.u8() % 129).unwrap_or(Prefix {
                addr: IpAddr::from([203, 0, 113, 0]),
                len: 24,
            }),
            system_ip: pick_ip(s),
            site_id: u32::from(s.u8()),
        }),
        7 => Message::RouteWithdraw {
            prefix: Prefix::new(pick_addr(s), s.u8() % 129).unwrap_or(Prefix {
                addr: IpAddr::from([203, 0, 113, 0]),
                len: 24,
            }),
            system_ip: pick_ip(s),
        },
        _ => Message::Goodbye(
            [
                GoodbyeReason::Shutdown,
                GoodbyeReason::AuthFailed,
                GoodbyeReason::ProtocolError,
                GoodbyeReason::Replaced,
            ][usize::from(s.u8() % 4)],
        ),
    }
}

/// The bytes of one script step that sends something: raw bytes, or a
/// message (changed or not).
fn payload(s: &mut Script<'_>, rng: &SystemRandom, op: u8) -> Vec<u8> {
    if op & 0x80 != 0 {
        s.bytes().to_vec()
    } else {
        let mut b = message(s, rng).encode().to_vec();
        if op & 0x40 != 0 {
            s.mutate(&mut b);
        }
        b
    }
}

/// What the harness's peer of one connection knows.
#[derive(Default)]
struct Peer {
    open: bool,
    rx: FrameReader,
    system_ip: Option<Ipv4Addr>,
    color: String,
}

impl Peer {
    /// Frames the core sent: each must decode.
    fn receive(&mut self, data: &[u8], who: &str) {
        assert!(self.open, "the {who} sent on a closed connection");
        self.rx.push(data);
        while let Some(m) = self
            .rx
            .next_message()
            .unwrap_or_else(|e| panic!("the {who} sent a frame that does not decode: {e:?}"))
        {
            let _ = m;
        }
    }
}

/// The controller target: up to 4 edge connections.
pub fn controller(data: &[u8]) {
    let rng = SystemRandom::new();
    let mut s = Script::new(data);
    let mut now = Instant::now();
    // System-ips 10.0.0.1-3 are allowed (serials 01-03), 10.0.0.4 is not.
    let allowed = (1..=3u8)
        .map(|n| (format!("{n:02X}"), Ipv4Addr::new(10, 0, 0, n)))
        .collect();
    let mut c = Controller::new(ControllerConfig::new(CONTROLLER_IP, ORG, allowed));
    let mut peers: Vec<Peer> = (0..4).map(|_| Peer::default()).collect();
    let mut advertised = 0usize;
    let mut steps = 0;
    while !s.done() && steps < 1000 {
        steps += 1;
        let op = s.u8();
        let k = usize::from(s.u8() % 4);
        let conn = k as u64;
        let input_bytes: Vec<u8>;
        let input = match op % 8 {
            0 => {
                if peers[k].open {
                    continue;
                }
                peers[k] = Peer {
                    open: true,
                    ..Peer::default()
                };
                let remote = SocketAddr::new(IpAddr::from([198, 51, 100, k as u8 + 10]), 40000);
                let peer = cert(pick_ip(&mut s), "edge", op & 0x40 != 0);
                controller::Input::Accepted { conn, remote, peer }
            }
            1 => {
                // Our Hello, as an edge.
                let system_ip = pick_ip(&mut s);
                let color = pick_color(&mut s);
                peers[k].system_ip = Some(system_ip);
                peers[k].color = color.clone();
                let mut b = Message::Hello {
                    role: Role::Edge,
                    system_ip,
                    site_id: u32::from(s.u8()),
                    color,
                    version: "fuzz".into(),
                }
                .encode()
                .to_vec();
                if op & 0x40 != 0 {
                    s.mutate(&mut b);
                }
                input_bytes = b;
                controller::Input::Bytes {
                    conn,
                    data: &input_bytes,
                }
            }
            2 => {
                // A TLS failure before the core knew the connection.
                let remote = SocketAddr::new(IpAddr::from([198, 51, 100, k as u8 + 10]), 40000);
                controller::Input::Failed {
                    remote,
                    local: xdpsec_omp::history::ErrorCode::CrtVerFl,
                    remote_error: xdpsec_omp::history::ErrorCode::NoErr,
                    detail: "fuzz".into(),
                }
            }
            3 | 4 => {
                input_bytes = payload(&mut s, &rng, op);
                advertised += 1;
                controller::Input::Bytes {
                    conn,
                    data: &input_bytes,
                }
            }
            5 => {
                if !peers[k].open {
                    continue;
                }
                peers[k].open = false;
                controller::Input::Closed { conn }
            }
            6 => {
                now += Duration::from_millis(u64::from(s.u16()) * 16);
                controller::Input::Timer
            }
            _ => {
                if let Some(t) = c.next_timeout() {
                    now = now.max(t.min(now + Duration::from_secs(3600)));
                }
                controller::Input::Timer
            }
        };
        if let controller::Input::Bytes { .. } = input
            && !peers[k].open
        {
            continue;
        }
        if crate::trace() {
            eprintln!("step {steps}: {input:?}");
        }
        let actions = c.handle(now, input);
        if crate::trace() {
            eprintln!("  {actions:?}");
        }
        for a in actions {
            match a {
                controller::Action::Send { conn, data } => {
                    peers[conn as usize].receive(&data, "controller")
                }
                controller::Action::Close { conn } => peers[conn as usize].open = false,
                controller::Action::Log(_) => {}
            }
        }
        let open = peers.iter().filter(|p| p.open).count();
        assert!(
            c.control_connections(now).len() <= open,
            "connections the shell did not open or closed"
        );
        // Edges are named by the 4 system-ips the script uses.
        assert!(c.peers(now).len() <= 4, "more edges than system-ips");
        assert!(c.tlocs().len() <= advertised, "TLOCs nobody advertised");
        assert!(c.routes().len() <= advertised, "routes nobody advertised");
    }
}

/// The edge target: an edge with two TLOCs, the script as its controller.
pub fn edge(data: &[u8]) {
    let rng = SystemRandom::new();
    let mut s = Script::new(data);
    let mut now = Instant::now();
    let system_ip = Ipv4Addr::new(10, 0, 0, 9);
    let tlocs = vec![
        TlocConfig {
            color: COLORS[0].into(),
            address: IpAddr::from([198, 51, 100, 1]),
            port_offset: 0,
        },
        TlocConfig {
            color: COLORS[1].into(),
            address: IpAddr::from([203, 0, 113, 1]),
            port_offset: 1,
        },
    ];
    let mut cfg = EdgeConfig::new(system_ip, 100, ORG, tlocs);
    cfg.service_prefixes = vec![Prefix::new(IpAddr::from([203, 0, 113, 128]), 25).expect("prefix")];
    let mut e = Edge::new(cfg, now);
    let mut peers: Vec<Peer> = (0..2)
        .map(|k| Peer {
            color: COLORS[k].into(),
            ..Peer::default()
        })
        .collect();
    let mut connecting = [false; 2];
    let mut advertised = 0usize;
    let mut steps = 0;
    let mut first = true;
    while !s.done() && steps < 1000 {
        steps += 1;
        let op = if first { 7 } else { s.u8() };
        first = false;
        let k = usize::from(s.u8() % 2);
        let color = COLORS[k];
        let input_bytes: Vec<u8>;
        let actions = match op % 8 {
            0 => {
                if !connecting[k] {
                    continue;
                }
                connecting[k] = false;
                peers[k].open = true;
                peers[k].rx = FrameReader::default();
                let peer = cert(CONTROLLER_IP, "controller", op & 0x40 != 0);
                e.handle(now, edge::Input::Connected { color, peer: &peer })
            }
            1 => {
                if !peers[k].open && !connecting[k] {
                    continue;
                }
                peers[k].open = false;
                connecting[k] = false;
                e.handle(now, edge::Input::Closed { color })
            }
            2 => {
                // Our Hello and AuthOk, as the controller.
                let mut b = Message::Hello {
                    role: Role::Controller,
                    system_ip: CONTROLLER_IP,
                    site_id: 0,
                    color: String::new(),
                    version: "fuzz".into(),
                }
                .encode()
                .to_vec();
                b.extend_from_slice(&Message::AuthOk.encode());
                if op & 0x20 != 0 {
                    s.mutate(&mut b);
                }
                if !peers[k].open {
                    continue;
                }
                input_bytes = b;
                e.handle(
                    now,
                    edge::Input::Bytes {
                        color,
                        data: &input_bytes,
                    },
                )
            }
            3 | 4 => {
                input_bytes = if op % 8 == 3 {
                    Message::AuthOk.encode().to_vec()
                } else {
                    payload(&mut s, &rng, op)
                };
                advertised += 1;
                if !peers[k].open {
                    continue;
                }
                e.handle(
                    now,
                    edge::Input::Bytes {
                        color,
                        data: &input_bytes,
                    },
                )
            }
            5 => match s.u8() % 4 {
                0 => e.ipsec_rekey(now),
                1 => e.clear_omp(now),
                2 => e.port_hop(now, color).unwrap_or_default(),
                _ => e.clear_control_connections(now),
            },
            6 => {
                now += Duration::from_millis(u64::from(s.u16()) * 16);
                e.handle(now, edge::Input::Timer)
            }
            _ => {
                if let Some(t) = e.next_timeout() {
                    now = now.max(t.min(now + Duration::from_secs(3600)));
                }
                e.handle(now, edge::Input::Timer)
            }
        };
        if crate::trace() {
            eprintln!("step {steps}: op {} on {color}: {actions:?}", op % 8);
        }
        for a in actions {
            let at = |c: &str| {
                COLORS
                    .iter()
                    .position(|x| *x == c)
                    .expect("a configured color")
            };
            match a {
                edge::Action::Connect { color } => {
                    let i = at(&color);
                    assert!(!peers[i].open, "Connect on an open connection");
                    connecting[i] = true;
                }
                edge::Action::Send { color, data } => peers[at(&color)].receive(&data, "edge"),
                edge::Action::Close { color } => {
                    let i = at(&color);
                    peers[i].open = false;
                    connecting[i] = false;
                }
                _ => {}
            }
        }
        assert!(
            e.control_connections(now).len() <= 2,
            "more connections than TLOCs"
        );
        assert!(
            e.tlocs().len() <= advertised + 2,
            "TLOCs nobody advertised (besides our 2)"
        );
        assert!(
            e.routes().len() <= advertised + 1,
            "routes nobody advertised"
        );
    }
}
