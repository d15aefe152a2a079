//! The owner core without root, XDP or sockets: each recovery command on
//! each tunnel kind, asserted as effects. IKE runs two owners against each
//! other in memory; SD-WAN runs two edge owners against the controller core.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use xdpsec_datapath::{WorkerState, sa::OutboundEntry};
use xdpsec_omp::controller::{self as omp, ConnId, Controller, ControllerConfig};
use xdpsec_worker::{routes::RouteTable, taps::Taps};

use super::*;
use crate::{
    config::Config,
    platform::neighbor::NextHops,
    sdwan::io::{IoCmd, IoEvent},
};

/// A fresh, empty state directory for one owner.
fn state_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xdpsec-owner-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An owner for `text` (its state in a fresh directory named `name`),
/// built as the daemon builds it but with no XDP program, workers or
/// sockets behind it.
fn owner(name: &str, text: &str, now: Instant) -> Owner {
    owner_at(&state_dir(name), text, now)
}

/// An owner for `text` with its state in `dir` (as found there: a restart).
fn owner_at(dir: &std::path::Path, text: &str, now: Instant) -> Owner {
    let text = format!("state_dir = \"{}\"\n{text}", dir.display());
    let config = Config::parse(&text).unwrap();
    let mut seq = SeqStore::open(&config.state_dir).unwrap();
    let (table, registry) = build_tunnels(&config, &mut seq, Duration::ZERO).unwrap();
    let n = config.tunnels.len() as u32;
    let workers = (0..config.underlay.queues)
        .map(|q| WorkerState::new(q as u16).shared())
        .collect();
    let static_routes: Vec<_> = config
        .tunnels
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.remote_subnets.iter().map(move |s| (*s, i as u32)))
        .collect();
    let sdwan = config
        .sdwan
        .clone()
        .map(|c| crate::sdwan::Sdwan::new(c, n, now));
    let peers = ike_peers(&config).unwrap();
    let started = Started {
        config_path: dir.join("xdpsec.toml"),
        epoch: now,
        steering: None,
        queues: Vec::new(),
        workers,
        extra_drops: Vec::new(),
        kernel_rx: Arc::default(),
        sdwan,
        routes: Arc::new(ArcSwap::from_pointee(RouteTable::new(
            static_routes.clone(),
        ))),
        static_routes,
        next_hops: Arc::new(NextHops::new(
            (0..n + 8 + crate::sdwan::MAX_PEERS)
                .map(|i| config.tunnels.get(i as usize).map(|t| t.peer))
                .collect(),
        )),
        taps: Arc::new(Taps::new(config.underlay.queues as usize)),
        config,
    };
    Owner::new(started, table, registry, seq, peers, now)
}

/// Run `line` on `o` at `now`.
fn cmd(o: &mut Owner, now: Instant, line: &str) -> Effects {
    o.handle(
        now,
        Input::Command {
            command: crate::grammar::parse(line).unwrap(),
            json: false,
        },
    )
}

/// The reply's text (asserting the command succeeded).
fn ok(fx: &Effects) -> &str {
    let r = fx.reply.as_ref().expect("a command has a reply");
    assert!(r.ok, "{}", r.output);
    &r.output
}

/// The IKE datagrams among `fx`'s sends.
fn ike_sends(fx: &Effects) -> Vec<IkeDatagram> {
    fx.sends
        .iter()
        .filter_map(|s| match s {
            Send::Ike(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

/// A datagram `d` sent, as its receiver gets it: from the sender's
/// address to ours.
fn as_received(d: IkeDatagram) -> IkeDatagram {
    IkeDatagram {
        local: d.remote,
        remote: d.local,
        data: d.data,
    }
}

/// `fault forget-sa peer` on the peer 198.51.100.2 of `o`: the datapath
/// loses its inbound SAs in one snapshot, nobody is told.
fn forget_sa(o: &mut Owner, now: Instant) {
    let fx = cmd(
        o,
        now,
        "request platform software xdpsec fault forget-sa peer 198.51.100.2",
    );
    assert!(ok(&fx).contains("Fault injected"), "{}", ok(&fx));
    assert_eq!(fx.publishes, 1);
    assert!(fx.sends.is_empty() && fx.shell.is_empty(), "nobody is told");
}

/// The SPIs of `o`'s SAs: (inbound, outbound) of tunnel `t`.
fn spis(o: &Owner, t: usize) -> (Vec<u32>, Option<u32>) {
    let e = o.registry.by_index(t as u32).unwrap();
    let spi = |s: &SaSlot| o.table.cold(s.id).map(|c| c.spi).unwrap_or(0);
    (
        e.inbound.iter().map(spi).collect(),
        e.outbound.as_ref().map(spi),
    )
}

const PEER: &str = "198.51.100.2";

const MANUAL: &str = r#"node = "edge1"
socket = "/nonexistent/edge1.sock"
[underlay]
interface = "veth-e1"
address = "198.51.100.1"
queues = 2
[[tunnel]]
name = "Tunnel1"
kind = "manual"
peer = "198.51.100.2"
cipher = "aes256-gcm"
remote_subnets = ["203.0.113.0/26"]
[tunnel.inbound]
spi = 0x1001
key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fcafebabe"
[tunnel.outbound]
spi = 0x2001
key = "101112131415161718191a1b1c1d1e1f000102030405060708090a0b0c0d0e0fdeadbeef"
"#;

#[test]
fn manual_clear_crypto_sa_peer_publishes_one_snapshot_and_restores_a_forgotten_sa() {
    let t0 = Instant::now();
    let mut o = owner("manual", MANUAL, t0);
    let peer = PEER;
    let id = o.registry.by_index(0).unwrap().inbound[0].id;
    // forget-sa: the datapath loses the inbound SA; the owner's view keeps it.
    let fx = cmd(
        &mut o,
        t0,
        &format!("request platform software xdpsec fault forget-sa peer {peer}"),
    );
    assert!(
        ok(&fx).contains("forgot inbound SA 0x00001001 of Tunnel1"),
        "{}",
        ok(&fx)
    );
    assert_eq!(fx.publishes, 1);
    assert!(o.table.is_forgotten(id));
    assert!(
        o.table
            .snapshot()
            .lookup_inbound(0x1001, PEER.parse().unwrap(), 0)
            .is_none()
    );
    assert_eq!(spis(&o, 0), (vec![0x1001], Some(0x2001)));
    // clear crypto sa peer: the same SA is back, in one publish, and
    // nothing is sent (manual keys: no peer to tell).
    let fx = cmd(&mut o, t0, &format!("clear crypto sa peer {peer}"));
    assert!(
        ok(&fx).contains("Tunnel1: manual SAs re-installed"),
        "{}",
        ok(&fx)
    );
    assert_eq!(fx.publishes, 1, "one SA snapshot per command");
    assert!(fx.sends.is_empty() && fx.shell.is_empty());
    assert!(!o.table.is_forgotten(id));
    assert!(
        o.table
            .snapshot()
            .lookup_inbound(0x1001, PEER.parse().unwrap(), 0)
            .is_some()
    );
    // An unknown peer changes nothing.
    let fx = cmd(&mut o, t0, "clear crypto sa peer 198.51.100.9");
    assert!(!fx.reply.as_ref().unwrap().ok);
    assert_eq!(fx.publishes, 0);
    // A show publishes nothing.
    let fx = cmd(&mut o, t0, "show crypto ipsec sa");
    assert!(ok(&fx).contains("spi: 0x1001"));
    assert_eq!(fx.publishes, 0);
}

/// Two owners with one IKE tunnel between them (A initiates).
const IKE_A: &str = r#"node = "a"
socket = "/nonexistent/a.sock"
[underlay]
interface = "veth-a"
address = "198.51.100.1"
[[tunnel]]
name = "Tunnel2"
kind = "ike"
peer = "198.51.100.2"
psk = "not-a-real-secret"
esp_proposals = ["aes256gcm16"]
ike_proposals = ["aes256gcm16-prfsha256-x25519"]
initiate = true
local_subnets = ["203.0.113.1/32"]
remote_subnets = ["203.0.113.2/32"]
"#;

fn ike_b() -> String {
    IKE_A
        .replace("node = \"a\"", "node = \"b\"")
        .replace("198.51.100.1", "198.51.100.X")
        .replace("198.51.100.2", "198.51.100.1")
        .replace("198.51.100.X", "198.51.100.2")
        .replace("203.0.113.1/32", "203.0.113.Y")
        .replace("203.0.113.2/32", "203.0.113.1/32")
        .replace("203.0.113.Y", "203.0.113.2/32")
        .replace("initiate = true", "initiate = false")
}

/// Two owners and a clock; IKE datagrams go from one to the other.
struct IkeLab {
    now: Instant,
    o: [Owner; 2],
}

impl IkeLab {
    fn new() -> IkeLab {
        let now = Instant::now();
        IkeLab {
            now,
            o: [owner("ike-a", IKE_A, now), owner("ike-b", &ike_b(), now)],
        }
    }

    /// Deliver `fx`'s IKE datagrams from owner `from` to the other, and
    /// the answers back, until nothing is sent.
    fn deliver(&mut self, from: usize, fx: Effects) {
        let mut queue: Vec<(usize, IkeDatagram)> =
            ike_sends(&fx).into_iter().map(|d| (1 - from, d)).collect();
        for _ in 0..64 {
            let Some((to, d)) = queue.pop() else {
                return;
            };
            let fx = self.o[to].handle(self.now, Input::Ike(as_received(d)));
            queue.extend(ike_sends(&fx).into_iter().map(|d| (1 - to, d)));
        }
        panic!("IKE did not settle");
    }

    /// Tick both owners for `secs` seconds, delivering what they send.
    fn run(&mut self, secs: u64) {
        for _ in 0..secs * 10 {
            self.now += TICK;
            for i in 0..2 {
                let fx = self.o[i].handle(self.now, Input::Tick);
                self.deliver(i, fx);
            }
        }
    }

    /// Both sides have an outbound SA and each one's outbound SPI is an
    /// inbound SPI of the other.
    fn established(&self) -> bool {
        let (a, b) = (spis(&self.o[0], 0), spis(&self.o[1], 0));
        matches!((a.1, b.1), (Some(x), Some(y)) if b.0.contains(&x) && a.0.contains(&y))
    }
}

#[test]
fn ike_recovery_commands_are_effects_with_one_publish_each() {
    let mut lab = IkeLab::new();
    lab.run(2);
    assert!(
        lab.established(),
        "{:?} {:?}",
        spis(&lab.o[0], 0),
        spis(&lab.o[1], 0)
    );
    let now = lab.now;
    let before = spis(&lab.o[0], 0);

    // clear crypto sa peer: the child SAs go (INFORMATIONAL DELETE to the
    // peer), new ones are negotiated at once; one snapshot for the command.
    let fx = cmd(&mut lab.o[0], now, "clear crypto sa peer 198.51.100.2");
    assert!(
        ok(&fx).contains("Tunnel2: child SAs deleted"),
        "{}",
        ok(&fx)
    );
    assert_eq!(fx.publishes, 1, "one SA snapshot per command");
    assert!(!ike_sends(&fx).is_empty(), "the peer is told");
    assert!(
        lab.o[0].registry.by_index(0).unwrap().outbound.is_none() || spis(&lab.o[0], 0) != before
    );
    lab.deliver(0, fx);
    lab.run(1);
    assert!(lab.established());
    let after_clear = spis(&lab.o[0], 0);
    assert_ne!(after_clear.1, before.1, "a new outbound SA");

    // ipsec rekey child-sa: one CREATE_CHILD_SA request; nothing changes
    // in the table until the answer.
    let fx = cmd(
        &mut lab.o[0],
        now,
        "request platform software xdpsec rekey child-sa peer 198.51.100.2",
    );
    assert!(
        ok(&fx).contains("1 CREATE_CHILD_SA request(s) sent"),
        "{}",
        ok(&fx)
    );
    assert_eq!(ike_sends(&fx).len(), 1);
    assert!(fx.publishes <= 1);
    lab.deliver(0, fx);
    lab.run(1);
    assert!(lab.established());
    assert_ne!(spis(&lab.o[0], 0).1, after_clear.1, "rekeyed outbound SA");

    // forget-sa on an IKE tunnel: the datapath loses the inbound SAs only.
    forget_sa(&mut lab.o[0], lab.now);

    // clear crypto ikev2 sa: the IKE SA goes (a DELETE), and A, the
    // initiator, negotiates a new one with new child SAs.
    let fx = cmd(&mut lab.o[0], lab.now, "clear crypto ikev2 sa");
    ok(&fx);
    assert!(fx.publishes <= 1);
    assert!(!ike_sends(&fx).is_empty());
    let old_out = spis(&lab.o[0], 0).1;
    lab.deliver(0, fx);
    lab.run(3);
    assert!(lab.established());
    assert_ne!(spis(&lab.o[0], 0).1, old_out);
}

// ---------------------------------------------------------------- SD-WAN

const SDWAN_A: &str = r#"node = "e1"
socket = "/nonexistent/e1.sock"
[underlay]
interface = "veth-e1"
address = "198.51.100.1"
[sdwan]
system_ip = "192.0.2.1"
site_id = 100
controller = "198.51.100.10:23456"
ca_file = "PKI/ca/ca.crt"
cert_file = "PKI/e1/device.crt"
key_file = "PKI/e1/device.key"
organization = "xdpsec-test"
service_prefixes = ["203.0.113.0/28"]
[[sdwan.tloc]]
color = "biz-internet"
address = "198.51.100.1"
port_offset = 1
"#;

/// A CA, the controller's and both edges' certificates, made once per
/// test process with `xdpsec pki`'s own functions.
fn sdwan_pki() -> &'static std::path::Path {
    use crate::pki::Role;
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = state_dir("pki");
        crate::pki::test_pki(
            &dir,
            &[
                ("ctl", Role::Controller, "C0", "192.0.2.10"),
                ("e1", Role::Edge, "E1", "192.0.2.1"),
                ("e2", Role::Edge, "E2", "192.0.2.2"),
            ],
        );
        dir
    })
}

fn sdwan_a() -> String {
    SDWAN_A.replace("PKI", &sdwan_pki().display().to_string())
}

/// What a certificate of `xdpsec pki` says, as the TLS shell reads it.
fn peer_cert(role: &str, serial: &str, system_ip: &str) -> xdpsec_omp::tls::PeerCert {
    xdpsec_omp::tls::PeerCert {
        organization: "xdpsec-test".into(),
        role: role.into(),
        serial: serial.into(),
        system_ip: Some(system_ip.parse().unwrap()),
    }
}

fn sdwan_b() -> String {
    sdwan_a()
        .replace("e1", "e2")
        .replace("198.51.100.1\"", "198.51.100.2\"")
        .replace("192.0.2.1", "192.0.2.2")
        .replace("site_id = 100", "site_id = 200")
        .replace("203.0.113.0/28", "203.0.113.16/28")
}

/// The OMP commands among `fx`'s sends.
fn omp_sends(fx: &Effects) -> impl Iterator<Item = &IoCmd> {
    fx.sends.iter().filter_map(|s| match s {
        Send::Omp(c) => Some(c),
        _ => None,
    })
}

/// Two edge owners and the controller core, connected in memory.
struct SdwanLab {
    now: Instant,
    o: [Owner; 2],
    ctl: Controller,
    /// (owner, color) -> controller connection, and back.
    conns: BTreeMap<(usize, String), ConnId>,
    next_conn: u64,
}

impl SdwanLab {
    fn new() -> SdwanLab {
        SdwanLab::with("sd", &sdwan_a(), &sdwan_b())
    }

    /// Two edges with these configs (A is `a`, B is `b`), their state
    /// directories named after `name`.
    fn with(name: &str, a: &str, b: &str) -> SdwanLab {
        let now = Instant::now();
        let allowed = [("E1", "192.0.2.1"), ("E2", "192.0.2.2")]
            .into_iter()
            .map(|(s, ip)| (s.to_string(), ip.parse().unwrap()))
            .collect();
        let ctl = Controller::new(ControllerConfig::new(
            "192.0.2.10".parse().unwrap(),
            "xdpsec-test",
            allowed,
        ));
        let mut lab = SdwanLab {
            now,
            o: [
                owner(&format!("{name}-a"), a, now),
                owner(&format!("{name}-b"), b, now),
            ],
            ctl,
            conns: BTreeMap::new(),
            next_conn: 1,
        };
        for i in 0..2 {
            let fx = lab.o[i].handle(now, Input::Start);
            lab.effects(i, fx);
        }
        lab
    }

    /// Carry out owner `i`'s OMP sends through the controller core, and
    /// what the controller answers, until both are quiet.
    fn effects(&mut self, i: usize, fx: Effects) {
        let mut pending = vec![(i, fx)];
        for _ in 0..256 {
            let Some((i, fx)) = pending.pop() else {
                return;
            };
            // The shell's reservation writes, reported back.
            for op in &fx.shell {
                if let ShellOp::Reserve(w) = op {
                    let error = w.write().err().map(|e| format!("{e:#}"));
                    let generation = w.generation;
                    let ev = ShellEvent::Reserved { generation, error };
                    let fx = self.o[i].handle(self.now, Input::Shell(ev));
                    pending.push((i, fx));
                }
            }
            for s in fx.sends {
                let c = match s {
                    Send::Omp(c) => c,
                    // IKE tunnels between the edges: as received by the other.
                    Send::Ike(d) => {
                        let d = IkeDatagram {
                            local: d.remote,
                            remote: d.local,
                            data: d.data,
                        };
                        let fx = self.o[1 - i].handle(self.now, Input::Ike(d));
                        pending.push((1 - i, fx));
                        continue;
                    }
                    _ => continue,
                };
                let mut events = Vec::new();
                match c {
                    IoCmd::Connect { color, local, .. } => {
                        let conn: ConnId = self.next_conn;
                        self.next_conn += 1;
                        self.conns.insert((i, color.clone()), conn);
                        let remote = SocketAddr::new(local, 40000 + i as u16);
                        let (serial, ip) = [("E1", "192.0.2.1"), ("E2", "192.0.2.2")][i];
                        let peer = peer_cert("edge", serial, ip);
                        events.push(omp::Input::Accepted { conn, remote, peer });
                        let ctl = peer_cert("controller", "C0", "192.0.2.10");
                        let fx = self.o[i]
                            .handle(self.now, Input::Sdwan(IoEvent::Connected(color, ctl)));
                        pending.push((i, fx));
                    }
                    IoCmd::Send { color, data } => {
                        if let Some(&conn) = self.conns.get(&(i, color)) {
                            let acts = self
                                .ctl
                                .handle(self.now, omp::Input::Bytes { conn, data: &data });
                            pending.extend(self.controller(acts));
                        }
                    }
                    IoCmd::Close { color } => {
                        if let Some(conn) = self.conns.remove(&(i, color)) {
                            events.push(omp::Input::Closed { conn });
                        }
                    }
                }
                for e in events {
                    let acts = self.ctl.handle(self.now, e);
                    pending.extend(self.controller(acts));
                }
            }
        }
        panic!("OMP did not settle");
    }

    /// The controller's sends, delivered to the edges.
    fn controller(&mut self, acts: Vec<omp::Action>) -> Vec<(usize, Effects)> {
        let mut out = Vec::new();
        for a in acts {
            let omp::Action::Send { conn, data } = a else {
                continue;
            };
            let Some(((i, color), _)) = self.conns.iter().find(|(_, c)| **c == conn) else {
                continue;
            };
            let (i, color) = (*i, color.clone());
            let fx = self.o[i].handle(
                self.now,
                Input::Sdwan(IoEvent::Bytes(color, data.to_vec().into())),
            );
            out.push((i, fx));
        }
        out
    }

    fn run(&mut self, secs: u64) {
        for _ in 0..secs * 10 {
            self.now += TICK;
            let acts = self.ctl.handle(self.now, omp::Input::Timer);
            for (i, fx) in self.controller(acts) {
                self.effects(i, fx);
            }
            for i in 0..2 {
                let fx = self.o[i].handle(self.now, Input::Tick);
                self.effects(i, fx);
            }
        }
    }

    /// Owner `i`'s SD-WAN peers: (remote address, inbound SPIs, outbound SPI).
    fn peers(&self, i: usize) -> Vec<(IpAddr, Vec<u32>, Option<u32>)> {
        self.o[i]
            .registry
            .iter()
            .filter(|e| !e.is_configured())
            .map(|e| {
                (
                    e.peer,
                    e.inbound.iter().map(|x| x.spi).collect(),
                    e.outbound.map(|x| x.spi),
                )
            })
            .collect()
    }

    /// Each edge has its peer's SAs installed, in the datapath too.
    fn installed(&self) -> bool {
        (0..2).all(|i| {
            let snap = self.o[i].table.snapshot();
            let s = self.o[i].sdwan.as_ref().unwrap();
            s.peers.len() == 1
                && self.o[i].sdwan_peers().count() == 1
                && self.o[i].sdwan_peers().all(|(_, e, _)| {
                    !e.inbound.is_empty()
                        && matches!(snap.outbound(e.index), Some(OutboundEntry::Active(_)))
                })
        })
    }
}

#[test]
fn sdwan_recovery_commands_are_effects_with_one_publish_each() {
    let mut lab = SdwanLab::new();
    lab.run(2);
    assert!(lab.installed(), "{:?} {:?}", lab.peers(0), lab.peers(1));
    let b: IpAddr = "198.51.100.2".parse().unwrap();
    let now = lab.now;

    // clear crypto sa peer: the peer's SAs go, in one snapshot; nothing
    // re-creates them (no IKE) until the peer is rebuilt.
    let fx = cmd(&mut lab.o[0], now, "clear crypto sa peer 198.51.100.2");
    assert!(ok(&fx).contains("SD-WAN has no IKE"), "{}", ok(&fx));
    assert_eq!(fx.publishes, 1, "one SA snapshot per command");
    assert_eq!(lab.peers(0), vec![(b, vec![], None)]);
    lab.effects(0, fx);
    lab.run(1);
    assert_eq!(lab.peers(0), vec![(b, vec![], None)], "still cleared");

    // clear sdwan omp all: the peer is rebuilt from OMP.
    let fx = cmd(&mut lab.o[0], lab.now, "clear sdwan omp all");
    assert!(
        ok(&fx).contains("1 SD-WAN tunnel peer(s) rebuilt"),
        "{}",
        ok(&fx)
    );
    assert!(fx.publishes <= 1);
    lab.effects(0, fx);
    lab.run(1);
    assert!(lab.installed(), "{:?}", lab.peers(0));

    // forget-sa: the inbound SAs leave the datapath, nobody is told.
    forget_sa(&mut lab.o[0], lab.now);

    // ipsec-rekey: a new inbound SPI advertised (OMP bytes to the
    // controller); the old SA stays for the grace time.
    let old = lab.peers(1)[0].2;
    let fx = cmd(
        &mut lab.o[0],
        lab.now,
        "request platform software sdwan security ipsec-rekey",
    );
    assert!(
        ok(&fx).contains("advertised to the controller"),
        "{}",
        ok(&fx)
    );
    assert!(fx.publishes <= 1);
    assert!(omp_sends(&fx).any(|c| matches!(c, IoCmd::Send { .. })));
    lab.effects(0, fx);
    lab.run(1);
    assert_ne!(lab.peers(1)[0].2, old, "B sends on A's new SPI");
    assert!(
        lab.peers(0)[0].1.len() >= 2,
        "old and new inbound SAs during the grace time"
    );

    // port_hop: XDP steers the new port before the datapath forgets the
    // old one (the shell says when), the control connection flaps.
    let old_port = lab.o[0].sdwan.as_ref().unwrap().tlocs[0].port;
    let fx = cmd(
        &mut lab.o[0],
        lab.now,
        "request platform software sdwan port_hop biz-internet",
    );
    ok(&fx);
    assert!(fx.publishes <= 1);
    let new_port = lab.o[0].sdwan.as_ref().unwrap().tlocs[0].port;
    assert_ne!(new_port, old_port);
    // The peer's outbound SA on the new port: a new reservation, written
    // by the shell after the port work.
    let (reserve, ports): (Vec<_>, Vec<_>) = fx
        .shell
        .iter()
        .cloned()
        .partition(|op| matches!(op, ShellOp::Reserve(_)));
    assert_eq!(reserve.len(), 1, "{:?}", fx.shell);
    assert!(matches!(fx.shell.last(), Some(ShellOp::Reserve(_))));
    assert_eq!(
        ports,
        vec![
            ShellOp::SteerPort(new_port, true),
            ShellOp::SteerPort(old_port, false),
            ShellOp::Notify(ShellEvent::PortsUnsteered(vec![old_port])),
        ]
    );
    let snap = lab.o[0].table.snapshot();
    assert!(snap.is_esp_udp_port(old_port) && snap.is_esp_udp_port(new_port));
    let fx2 = lab.o[0].handle(
        lab.now,
        Input::Shell(ShellEvent::PortsUnsteered(vec![old_port])),
    );
    assert_eq!(fx2.publishes, 1);
    assert!(!lab.o[0].table.snapshot().is_esp_udp_port(old_port));
    assert!(lab.o[0].table.snapshot().is_esp_udp_port(new_port));
    assert!(fx2.sends.iter().any(
        |s| matches!(s, Send::KernelPorts(p) if p.contains(&new_port) && !p.contains(&old_port))
    ));
    lab.effects(0, fx);
    lab.run(2);
    assert!(lab.installed(), "{:?}", lab.peers(0));

    // clear sdwan control connections: every connection closes and comes
    // back; the peers are rebuilt.
    let fx = cmd(&mut lab.o[0], lab.now, "clear sdwan control connections");
    assert!(ok(&fx).contains("control connection(s)"), "{}", ok(&fx));
    assert!(fx.publishes <= 1);
    assert!(omp_sends(&fx).any(|c| matches!(c, IoCmd::Close { .. })));
    lab.effects(0, fx);
    lab.run(2);
    assert!(lab.installed(), "{:?}", lab.peers(0));
}

// ------------------------------------------------ one registry, every kind

/// The `[[tunnel]]` tables of a config.
fn tunnel_tables(cfg: &str) -> &str {
    &cfg[cfg.find("[[tunnel]]").unwrap()..]
}

/// A's tunnels: a manual tunnel to .5 and an IKE tunnel to B's underlay
/// .2 (with its SD-WAN peer at B's TLOC .3: three kinds, three peers).
fn mixed_tunnels_a() -> String {
    let manual = tunnel_tables(MANUAL)
        .replace(PEER, "198.51.100.5")
        .replace("203.0.113.0/26", "203.0.113.128/26");
    format!("{manual}{}", tunnel_tables(IKE_A))
}

/// Each registry entry of `o`: (index, inbound SPIs, outbound SPI).
fn entries(o: &Owner) -> Vec<(u32, Vec<u32>, Option<u32>)> {
    o.registry
        .iter()
        .map(|e| {
            (
                e.index,
                e.inbound.iter().map(|s| s.spi).collect(),
                e.outbound.map(|s| s.spi),
            )
        })
        .collect()
}

/// The registry of `o` with entry `index` left out.
fn others(o: &Owner, index: u32) -> Vec<(u32, Vec<u32>, Option<u32>)> {
    entries(o).into_iter().filter(|e| e.0 != index).collect()
}

/// B of a mixed lab: underlay .2 (its IKE tunnel to A), TLOC .3 (A's SD-WAN peer).
fn mixed_b() -> String {
    let mut b = format!("{}{}", sdwan_b(), tunnel_tables(&ike_b()));
    let tloc = b.rfind("address = \"198.51.100.2\"").unwrap();
    b.replace_range(tloc..tloc + 24, "address = \"198.51.100.3\"");
    b
}

/// A mixed node: a manual tunnel, an IKE tunnel and an SD-WAN peer, each
/// with its own peer. Every SA command walks the one registry: aimed at
/// one peer it touches only that peer's entry, whatever its kind, in one
/// SA snapshot; aimed at all it reaches every kind.
#[test]
fn sa_commands_walk_one_registry_of_manual_ike_and_sdwan_tunnels() {
    let a = format!("{}{}", sdwan_a(), mixed_tunnels_a());
    let mut lab = SdwanLab::with("mixed", &a, &mixed_b());
    lab.run(3);
    assert!(lab.installed(), "{:?} {:?}", lab.peers(0), lab.peers(1));
    let (ike_a, ike_b) = (spis(&lab.o[0], 1), spis(&lab.o[1], 0));
    assert!(
        matches!((ike_a.1, ike_b.1), (Some(x), Some(y)) if ike_b.0.contains(&x) && ike_a.0.contains(&y)),
        "IKE established: {ike_a:?} {ike_b:?}"
    );
    // One list: manual (0), IKE (1), then the SD-WAN peer (after the TLOC's index 2).
    let kinds: Vec<(u32, &str)> = lab.o[0]
        .registry
        .iter()
        .map(|e| {
            let k = match e.kind {
                Kind::Manual => "manual",
                Kind::Ike => "ike",
                Kind::Sdwan { .. } => "sdwan",
            };
            (e.index, k)
        })
        .collect();
    assert_eq!(kinds[..2], [(0, "manual"), (1, "ike")]);
    assert_eq!(kinds.len(), 3);
    assert_eq!(kinds[2].1, "sdwan");
    let sd = kinds[2].0;
    let now = lab.now;
    let o = &mut lab.o[0];
    let manual_in = o.registry.by_index(0).unwrap().inbound[0].id;
    let ids =
        |o: &Owner, i: u32| -> Vec<SaId> { o.registry.by_index(i).unwrap().sa_ids().collect() };

    // forget-sa on the manual peer: only its inbound SA leaves the datapath.
    let fx = cmd(
        o,
        now,
        "request platform software xdpsec fault forget-sa peer 198.51.100.5",
    );
    assert_eq!(ok(&fx).lines().count(), 1, "{}", ok(&fx));
    assert!(ok(&fx).contains("0x00001001 of Tunnel1"), "{}", ok(&fx));
    assert_eq!(fx.publishes, 1);
    let forgotten: Vec<SaId> = o
        .registry
        .iter()
        .flat_map(|e| e.inbound.iter().map(|s| s.id))
        .filter(|&id| o.table.is_forgotten(id))
        .collect();
    assert_eq!(forgotten, vec![manual_in]);

    // clear crypto sa peer (manual): restored, counters rebased, nobody told;
    // the IKE and SD-WAN entries untouched.
    let before = entries(o);
    let fx = cmd(o, now, "clear crypto sa peer 198.51.100.5");
    assert_eq!(
        ok(&fx),
        "Tunnel1: manual SAs re-installed from the configuration\n"
    );
    assert_eq!(fx.publishes, 1, "one SA snapshot for the command");
    assert!(fx.sends.is_empty() && fx.shell.is_empty());
    assert!(!o.table.is_forgotten(manual_in));
    assert_eq!(entries(o), before);
    assert!(ids(o, 0).iter().all(|&id| o.registry.has_baseline(id)));
    assert!(
        ids(o, 1)
            .iter()
            .chain(&ids(o, sd))
            .all(|&id| !o.registry.has_baseline(id)),
        "other kinds' counters not rebased"
    );

    // clear crypto sa peer (SD-WAN): its SAs go, nobody is told, the
    // manual and IKE entries are untouched.
    let before = others(o, sd);
    let fx = cmd(o, now, "clear crypto sa peer 198.51.100.3");
    assert!(
        ok(&fx).starts_with("Tunnel10001: SAs with peer 192.0.2.2"),
        "{}",
        ok(&fx)
    );
    assert_eq!(ok(&fx).lines().count(), 1, "{}", ok(&fx));
    assert_eq!(fx.publishes, 1, "one SA snapshot for the command");
    assert!(ike_sends(&fx).is_empty());
    assert_eq!(
        entries(o).iter().find(|e| e.0 == sd),
        Some(&(sd, vec![], None))
    );
    assert_eq!(others(o, sd), before);
    assert!(matches!(
        o.table.snapshot().outbound(sd),
        Some(OutboundEntry::Invalid)
    ));

    // clear crypto sa peer (IKE): a DELETE to the peer, the manual and
    // (cleared) SD-WAN entries untouched.
    let before = others(o, 1);
    let fx = cmd(o, now, "clear crypto sa peer 198.51.100.2");
    assert_eq!(
        ok(&fx),
        "Tunnel2: child SAs deleted; IKEv2 negotiates new ones\n"
    );
    assert_eq!(fx.publishes, 1, "one SA snapshot for the command");
    assert!(!ike_sends(&fx).is_empty(), "the IKE peer is told");
    assert_eq!(others(o, 1), before);
    lab.effects(0, fx);
    lab.run(1);
    let o = &mut lab.o[0];
    assert!(
        spis(o, 1).1.is_some_and(|s| Some(s) != ike_a.1),
        "new child SAs"
    );

    // clear crypto sa counters: every SA of every kind rebased.
    let fx = cmd(o, lab.now, "clear crypto sa counters");
    assert_eq!(fx.publishes, 0);
    let all: Vec<SaId> = o.registry.iter().flat_map(|e| e.sa_ids()).collect();
    assert!(all.len() >= 4, "{:?}", entries(o));
    assert!(all.iter().all(|&id| o.registry.has_baseline(id)));
    assert_eq!(o.all_sas().count(), all.len());

    // show crypto ipsec sa: every kind, in registry order.
    let fx = cmd(o, lab.now, "show crypto ipsec sa");
    let text = ok(&fx);
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} in {text}"));
    assert!(at("interface: Tunnel1") < at("interface: Tunnel2"));
    assert!(at("interface: Tunnel2") < at("interface: Tunnel10001"));
    assert_eq!(fx.publishes, 0);

    // clear crypto sa: every kind, one snapshot.
    let fx = cmd(o, lab.now, "clear crypto sa");
    let text = ok(&fx);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("Tunnel1: manual SAs"), "{text}");
    assert!(lines[1].starts_with("Tunnel2: child SAs deleted"), "{text}");
    assert!(lines[2].starts_with("Tunnel10001: SAs with peer"), "{text}");
    assert_eq!(fx.publishes, 1, "one SA snapshot for the command");
}

// ------------------------------- every recovery command on every kind

/// What a command can change of one registry entry.
#[derive(Debug, Clone, PartialEq)]
struct Print {
    index: u32,
    kind: Kind,
    /// Inbound SAs: (SPI, in the datapath, counter baseline).
    inbound: Vec<(u32, bool, bool)>,
    outbound: Option<u32>,
    /// The datapath's outbound entry for the tunnel.
    datapath_out: &'static str,
    /// Its BFD session (SD-WAN): state and transitions.
    bfd: Option<String>,
}

/// Each registry entry of `o`, in walk order.
fn prints(o: &Owner) -> Vec<Print> {
    let snap = o.table.snapshot();
    o.registry
        .iter()
        .map(|e| Print {
            index: e.index,
            kind: e.kind.clone(),
            inbound: e
                .inbound
                .iter()
                .map(|s| {
                    let live = o.table.cold(s.id).is_some() && !o.table.is_forgotten(s.id);
                    (s.spi, live, o.registry.has_baseline(s.id))
                })
                .collect(),
            outbound: e.outbound.map(|s| s.spi),
            datapath_out: match snap.outbound(e.index) {
                Some(OutboundEntry::Active(_)) => "active",
                Some(OutboundEntry::Invalid) => "invalid",
                None => "none",
            },
            bfd: o.sdwan.as_ref().and_then(|s| {
                let v = s.bfd.session(o.now, u64::from(e.index))?;
                Some(format!("{:?} {}", v.state, v.transitions))
            }),
        })
        .collect()
}

/// The entries of `o` that are configured tunnels (manual and IKE).
fn configured(o: &Owner) -> Vec<Print> {
    prints(o)
        .into_iter()
        .filter(|p| matches!(p.kind, Kind::Manual | Kind::Ike))
        .collect()
}

/// The SD-WAN entries of `o` under local color `color`.
fn sdwan_of(o: &Owner, color: &str) -> Vec<Print> {
    prints(o)
        .into_iter()
        .filter(|p| matches!(&p.kind, Kind::Sdwan { local_color, .. } if local_color == color))
        .collect()
}

/// The entries of `o` of `kind` (manual, IKE) as `prints` lists them.
fn of_kind(o: &Owner, kind: Kind) -> Vec<Print> {
    prints(o).into_iter().filter(|p| p.kind == kind).collect()
}

/// A's two local colors: its SD-WAN peers are B's TLOC under each.
const COLORS: [&str; 2] = ["biz-internet", "mpls"];

/// A with a manual tunnel, an IKE tunnel and two local TLOCs (so two
/// SD-WAN peers, one per color), B as in the mixed lab: both settled.
fn two_color_lab(name: &str) -> SdwanLab {
    let mpls = "[[sdwan.tloc]]\ncolor = \"mpls\"\naddress = \"198.51.100.6\"\nport_offset = 2\n";
    let a = format!("{}{mpls}{}", sdwan_a(), mixed_tunnels_a());
    let mut lab = SdwanLab::with(name, &a, &mixed_b());
    lab.run(3);
    assert!(settled(&lab), "{:?}", prints(&lab.o[0]));
    lab
}

/// A has every tunnel up: the manual and IKE tunnels' SAs, and an SD-WAN
/// peer per color with SAs in the datapath.
fn settled(lab: &SdwanLab) -> bool {
    let p = prints(&lab.o[0]);
    let up = |p: &Print| {
        !p.inbound.is_empty() && p.inbound.iter().all(|s| s.1) && p.datapath_out == "active"
    };
    p.len() == 4 && p.iter().all(up) && COLORS.iter().all(|c| sdwan_of(&lab.o[0], c).len() == 1)
}

/// The OMP connections (colors) `fx` closes.
fn closed(fx: &Effects) -> Vec<String> {
    omp_sends(fx)
        .filter_map(|c| match c {
            IoCmd::Close { color } => Some(color.clone()),
            _ => None,
        })
        .collect()
}

/// Run `line`, a command that rebuilds every SD-WAN peer, on `o`: it
/// replies `reply`; every peer goes, their SAs in one batch (one
/// snapshot); nothing to an IKE peer; manual and IKE entries untouched.
fn rebuild_all(o: &mut Owner, now: Instant, line: &str, reply: &str) -> Effects {
    let conf = configured(o);
    let fx = cmd(o, now, line);
    assert_eq!(ok(&fx), reply);
    assert_eq!(
        (fx.batches, fx.publishes),
        (1, 1),
        "{line}: one SA batch, one snapshot"
    );
    assert!(ike_sends(&fx).is_empty());
    assert_eq!(o.sdwan_peers().count(), 0);
    assert_eq!(configured(o), conf, "{line}");
    fx
}

/// Each recovery command on a node with every tunnel kind (manual, IKE,
/// two SD-WAN peers): what it does to the kinds it applies to, as effects
/// (SA batches, one snapshot, sends, shell work, log lines), and that it
/// leaves every other kind's entries untouched (SAs in the datapath,
/// counter baselines, BFD sessions). `clear crypto sa peer` and
/// `forget-sa` on manual and IKE tunnels are in the tests above.
#[test]
fn recovery_commands_touch_only_the_kinds_they_apply_to() {
    let mut lab = two_color_lab("kinds");
    let b3: IpAddr = "198.51.100.3".parse().unwrap();

    // clear crypto ikev2 sa: the IKE tunnel only (a DELETE to its peer);
    // manual and SD-WAN entries untouched, nothing to the controller.
    let o = &mut lab.o[0];
    let (manual, sdwan) = (of_kind(o, Kind::Manual), sdwan_of(o, COLORS[0]));
    let mpls = sdwan_of(o, COLORS[1]);
    let fx = cmd(o, lab.now, "clear crypto ikev2 sa");
    ok(&fx);
    assert!(fx.publishes <= 1);
    assert!(!ike_sends(&fx).is_empty(), "the IKE peer is told");
    assert_eq!(omp_sends(&fx).count(), 0);
    assert_eq!(of_kind(o, Kind::Manual), manual);
    assert_eq!(sdwan_of(o, COLORS[0]), sdwan);
    assert_eq!(sdwan_of(o, COLORS[1]), mpls);
    lab.effects(0, fx);
    lab.run(3);
    assert!(settled(&lab), "{:?}", prints(&lab.o[0]));

    // forget-sa on the SD-WAN peer (B's TLOC, under both colors): both
    // peers' inbound SAs leave the datapath in one batch, nobody is told;
    // manual and IKE untouched.
    let o = &mut lab.o[0];
    let conf = configured(o);
    let fx = cmd(
        o,
        lab.now,
        "request platform software xdpsec fault forget-sa peer 198.51.100.3",
    );
    assert_eq!(ok(&fx).lines().count(), 2, "{}", ok(&fx));
    assert!(ok(&fx).contains("of Tunnel10001 (peer 198.51.100.3)"));
    assert!(ok(&fx).contains("of Tunnel10002 (peer 198.51.100.3)"));
    assert_eq!((fx.batches, fx.publishes), (1, 1));
    assert!(fx.sends.is_empty() && fx.shell.is_empty(), "nobody is told");
    for c in COLORS {
        let p = &sdwan_of(o, c)[0];
        assert!(p.inbound.iter().all(|s| !s.1), "{c}: {p:?}");
        assert_eq!(p.datapath_out, "active", "{c}: sending goes on");
    }
    assert_eq!(configured(o), conf);

    // clear sdwan omp all: both SD-WAN peers go (registry, OMP and BFD
    // state; their SAs in one batch, one snapshot) and OMP rebuilds them,
    // forgotten SAs and all; manual and IKE untouched.
    let before = prints(o);
    let gone: Vec<u32> = before.iter().skip(2).map(|p| p.index).collect();
    let fx = rebuild_all(
        o,
        lab.now,
        "clear sdwan omp all",
        "OMP routes withdrawn and relearned; 2 SD-WAN tunnel peer(s) rebuilt, their BFD sessions flap\n",
    );
    assert!(omp_sends(&fx).any(|c| matches!(c, IoCmd::Send { .. })));
    assert!(o.sdwan.as_ref().unwrap().peers.is_empty());
    for i in &gone {
        assert!(o.registry.by_index(*i).is_none());
        assert!(o.table.snapshot().outbound(*i).is_none());
        let s = o.sdwan.as_ref().unwrap();
        assert!(s.bfd.session(o.now, u64::from(*i)).is_none(), "session {i}");
    }
    lab.effects(0, fx);
    lab.run(2);
    assert!(settled(&lab), "{:?}", prints(&lab.o[0]));
    assert_eq!(configured(&lab.o[0]), conf);

    // ipsec-rekey: a new SPI per local TLOC, advertised to the
    // controller; manual and IKE untouched, nothing to the IKE peer.
    let o = &mut lab.o[0];
    let conf = configured(o);
    let fx = cmd(
        o,
        lab.now,
        "request platform software sdwan security ipsec-rekey",
    );
    let text = ok(&fx).to_string();
    assert!(
        text.starts_with("Tunnel10001 (biz-internet): inbound SPI"),
        "{text}"
    );
    assert!(text.contains("\nTunnel10002 (mpls): inbound SPI"), "{text}");
    assert!(fx.publishes <= 1);
    assert!(omp_sends(&fx).any(|c| matches!(c, IoCmd::Send { .. })));
    assert!(ike_sends(&fx).is_empty());
    assert_eq!(configured(o), conf);
    lab.effects(0, fx);
    lab.run(1);
    assert!(settled(&lab), "{:?}", prints(&lab.o[0]));
    assert!(
        COLORS
            .iter()
            .all(|c| sdwan_of(&lab.o[0], c)[0].inbound.len() >= 2),
        "old and new inbound SAs: {:?}",
        prints(&lab.o[0])
    );

    // port_hop mpls: the mpls TLOC moves, its control connection and
    // peer flap; the biz-internet peer, manual and IKE untouched.
    let o = &mut lab.o[0];
    let (conf, biz) = (configured(o), sdwan_of(o, COLORS[0]));
    let mpls_index = sdwan_of(o, COLORS[1])[0].index;
    let old_port = o.sdwan.as_ref().unwrap().tlocs[1].port;
    let fx = cmd(o, lab.now, "request platform software sdwan port_hop mpls");
    let new_port = o.sdwan.as_ref().unwrap().tlocs[1].port;
    assert_eq!(
        ok(&fx),
        format!(
            "Tunnel10002 (mpls): TLOC port {old_port} -> {new_port}; control connection and BFD sessions of mpls flap\n"
        )
    );
    assert_eq!(fx.publishes, 1);
    assert_eq!(closed(&fx), vec!["mpls".to_string()]);
    assert!(fx.shell.contains(&ShellOp::SteerPort(new_port, true)));
    assert!(ike_sends(&fx).is_empty());
    // Rebuilt at once (the edge installs it again from the port's new
    // SA parameters): a new tunnel index and BFD session.
    let mpls = sdwan_of(o, COLORS[1]);
    assert!(mpls.iter().all(|p| p.index != mpls_index), "{mpls:?}");
    assert!(o.registry.by_index(mpls_index).is_none());
    assert!(
        o.sdwan
            .as_ref()
            .unwrap()
            .bfd
            .session(o.now, u64::from(mpls_index))
            .is_none()
    );
    assert_eq!(sdwan_of(o, COLORS[0]), biz);
    assert_eq!(configured(o), conf);
    lab.effects(0, fx);
    lab.run(2);
    assert!(settled(&lab), "{:?}", prints(&lab.o[0]));

    // clear sdwan control connections: both connections close, both
    // peers go in one SA batch; manual and IKE untouched.
    let o = &mut lab.o[0];
    let lines = o.log.lines().count();
    let fx = rebuild_all(
        o,
        lab.now,
        "clear sdwan control connections",
        "2 control connection(s) and every BFD session flapped; routes are relearned\n",
    );
    let mut c = closed(&fx);
    c.sort();
    assert_eq!(c, COLORS.map(String::from).to_vec());
    assert!(
        o.log.lines().skip(lines).any(|l| l.contains("%")),
        "the connections' log lines: {:?}",
        o.log.lines().skip(lines).collect::<Vec<_>>()
    );
    lab.effects(0, fx);
    lab.run(2);
    assert!(settled(&lab), "{:?}", prints(&lab.o[0]));

    // The BFD and SD-WAN show rows come from the registry walk: a row
    // per peer, with its registry entry's outbound SPI.
    let o = &lab.o[0];
    let (_, bfd) = o.show_sdwan_bfd_sessions().unwrap();
    let colors: Vec<&str> = bfd["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source_color"].as_str().unwrap())
        .collect();
    assert_eq!(colors, COLORS);
    let (_, out) = o.show_sdwan_ipsec_outbound().unwrap();
    let spis: Vec<u64> = out["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spi"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = o
        .sdwan_peers()
        .map(|(_, e, _)| u64::from(e.outbound.unwrap().spi))
        .collect();
    assert_eq!(spis, want);
    assert!(o.sdwan_peers().all(|(_, e, _)| e.peer == b3));
}

/// A certificate-authenticated IKE tunnel: our identity is the
/// certificate's subject, the credentials go to the IKE core.
#[test]
fn ike_peers_take_the_certificate_identity() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("xdpsec-owner-cert-{}", std::process::id()));
    let text = crate::config::tests::cert_config(&dir);
    std::fs::set_permissions(dir.join("me.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = Config::parse(&text).unwrap();
    let crate::config::TunnelKind::Ike(i) = &c.tunnels[0].kind else {
        panic!("an IKE tunnel")
    };
    let creds = i.cert.as_ref().unwrap();
    let peers = ike_peers(&c).unwrap();
    assert_eq!(
        peers[0].local_id,
        xdpsec_ike::Identity::Dn(creds.subject_der())
    );
    assert!(peers[0].cert.is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

mod reservations;

mod template;
