//! A controller core and three edge cores wired in memory with a mock clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use xdpsec_omp::consts::{GRACEFUL_RESTART, REKEY_GRACE};
use xdpsec_omp::controller::{self, Controller, ControllerConfig};
use xdpsec_omp::edge::{self, Edge, EdgeConfig, TlocConfig};
use xdpsec_omp::history::ErrorCode;
use xdpsec_omp::{Prefix, SdwanSa, TlocId};

use xdpsec_omp::tls::PeerCert;

/// The organization of the fabric's (simulated) certificates.
const ORG: &str = "xdpsec-test";

/// The controller's certificate as the edges' TLS would report it.
fn controller_cert() -> PeerCert {
    PeerCert {
        organization: ORG.into(),
        role: "controller".into(),
        serial: "C0".into(),
        system_ip: Some(sys(254)),
    }
}

/// The controller's config: edges 1-8 allowed (serial `En`), 9 not.
fn ctrl_cfg() -> ControllerConfig {
    let allowed = (1..=8).map(|n| (format!("E{n}"), sys(n))).collect();
    ControllerConfig::new(sys(254), ORG, allowed)
}

enum Ev {
    Ctrl(CtrlEv),
    Edge(usize, EdgeEv),
}
enum CtrlEv {
    Accepted(u64),
    Bytes(u64, Vec<u8>),
    Closed(u64),
}
enum EdgeEv {
    Connected(String),
    Bytes(String, Vec<u8>),
    Closed(String),
}

/// What one edge's shell would have installed, and what it was asked.
#[derive(Default)]
struct EdgeState {
    sas: BTreeMap<(String, TlocId), SdwanSa>,
    routes: BTreeSet<(Prefix, TlocId)>,
    ports: BTreeMap<String, u16>,
    logs: Vec<String>,
    history: Vec<String>,
    sa_removes: usize,
}

struct Fabric {
    now: Instant,
    ctrl: Option<Controller>,
    ctrl_gr: Duration,
    ctrl_logs: Vec<String>,
    edges: Vec<Option<Edge>>,
    /// Each edge's certificate, as the controller's TLS would report it.
    certs: Vec<PeerCert>,
    state: Vec<EdgeState>,
    conns: BTreeMap<u64, (usize, String)>,
    next_conn: u64,
    queue: VecDeque<Ev>,
    /// Edges whose bytes are lost both ways (TCP stalled, no reset).
    blackhole: BTreeSet<usize>,
}

fn sys(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, n)
}

fn edge_cfg(n: u8, colors: &[&str], org: &str) -> EdgeConfig {
    let tlocs = colors
        .iter()
        .enumerate()
        .map(|(i, c)| TlocConfig {
            color: (*c).into(),
            address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, n * 10 + i as u8)),
            port_offset: 0,
        })
        .collect();
    let mut c = EdgeConfig::new(sys(n), n as u32 * 100, org, tlocs);
    c.service_prefixes = vec![Prefix::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, n)), 32).unwrap()];
    c
}

impl Fabric {
    /// Edge 1 has two colors; edges 2 and 3 one each.
    fn new() -> Fabric {
        Fabric::with(vec![
            edge_cfg(1, &["biz-internet", "mpls"], ORG),
            edge_cfg(2, &["biz-internet"], ORG),
            edge_cfg(3, &["mpls"], ORG),
        ])
    }

    fn with(cfgs: Vec<EdgeConfig>) -> Fabric {
        let now = Instant::now();
        let mut f = Fabric {
            now,
            ctrl: None,
            ctrl_gr: GRACEFUL_RESTART,
            ctrl_logs: Vec::new(),
            edges: Vec::new(),
            certs: Vec::new(),
            state: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            queue: VecDeque::new(),
            blackhole: BTreeSet::new(),
        };
        f.start_controller();
        for c in cfgs {
            f.add_edge(c);
        }
        f
    }

    fn add_edge(&mut self, c: EdgeConfig) -> usize {
        self.certs.push(PeerCert {
            organization: c.organization.clone(),
            role: "edge".into(),
            serial: format!("E{}", c.system_ip.octets()[3]),
            system_ip: Some(c.system_ip),
        });
        self.edges.push(Some(Edge::new(c, self.now)));
        self.state.push(EdgeState::default());
        let i = self.edges.len() - 1;
        let a = self.edges[i]
            .as_mut()
            .unwrap()
            .handle(self.now, edge::Input::Timer);
        self.edge_actions(i, a);
        self.run();
        i
    }

    fn start_controller(&mut self) {
        let mut c = ctrl_cfg();
        c.graceful_restart = self.ctrl_gr;
        self.ctrl = Some(Controller::new(c));
    }

    /// The controller process dies: every TCP connection resets.
    fn kill_controller(&mut self) {
        self.ctrl = None;
        for (_, (e, color)) in std::mem::take(&mut self.conns) {
            self.queue.push_back(Ev::Edge(e, EdgeEv::Closed(color)));
        }
        self.run();
    }

    /// An edge process dies: its TCP connections reset.
    fn kill_edge(&mut self, i: usize) {
        self.edges[i] = None;
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, (e, _))| *e == i)
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            self.conns.remove(&id);
            self.queue.push_back(Ev::Ctrl(CtrlEv::Closed(id)));
        }
        self.run();
    }

    fn edge_actions(&mut self, i: usize, actions: Vec<edge::Action>) {
        for a in actions {
            let st = &mut self.state[i];
            st.history.push(match &a {
                edge::Action::Send { color, .. } => format!("send {color}"),
                edge::Action::SaInstall(sa) => {
                    format!("sa-install {} {}", sa.local_color, sa.remote)
                }
                other => format!("{other:?}"),
            });
            match a {
                edge::Action::Connect { color } => {
                    if self.ctrl.is_some() {
                        let id = self.next_conn;
                        self.next_conn += 1;
                        self.conns.insert(id, (i, color.clone()));
                        self.queue.push_back(Ev::Ctrl(CtrlEv::Accepted(id)));
                        self.queue.push_back(Ev::Edge(i, EdgeEv::Connected(color)));
                    } else {
                        self.queue.push_back(Ev::Edge(i, EdgeEv::Closed(color)));
                    }
                }
                edge::Action::Send { color, data } => {
                    if let Some(id) = self.conn_of(i, &color)
                        && !self.blackhole.contains(&i)
                    {
                        self.queue
                            .push_back(Ev::Ctrl(CtrlEv::Bytes(id, data.to_vec())));
                    }
                }
                edge::Action::Close { color } => {
                    if let Some(id) = self.conn_of(i, &color) {
                        self.conns.remove(&id);
                        self.queue.push_back(Ev::Ctrl(CtrlEv::Closed(id)));
                    }
                }
                edge::Action::TlocPort { color, port, .. } => {
                    st.ports.insert(color, port);
                }
                edge::Action::SaInstall(sa) => {
                    // The shell's make-before-break rule: every inbound SPI
                    // listed is installed; ones not listed go.
                    st.sas
                        .insert((sa.local_color.clone(), sa.remote.clone()), sa);
                }
                edge::Action::SaRemove {
                    local_color,
                    remote,
                } => {
                    st.sa_removes += 1;
                    st.sas.remove(&(local_color, remote));
                }
                edge::Action::RouteAdd { prefix, via } => {
                    st.routes.insert((prefix, via));
                }
                edge::Action::RouteRemove { prefix, via } => {
                    st.routes.remove(&(prefix, via));
                }
                edge::Action::Log(l) => st.logs.push(l),
            }
        }
    }

    fn ctrl_actions(&mut self, actions: Vec<controller::Action>) {
        for a in actions {
            match a {
                controller::Action::Send { conn, data } => {
                    if let Some((e, color)) = self.conns.get(&conn)
                        && !self.blackhole.contains(e)
                    {
                        self.queue
                            .push_back(Ev::Edge(*e, EdgeEv::Bytes(color.clone(), data.to_vec())));
                    }
                }
                controller::Action::Close { conn } => {
                    if let Some((e, color)) = self.conns.remove(&conn) {
                        self.queue.push_back(Ev::Edge(e, EdgeEv::Closed(color)));
                    }
                }
                controller::Action::Log(l) => self.ctrl_logs.push(l),
            }
        }
    }

    fn conn_of(&self, i: usize, color: &str) -> Option<u64> {
        self.conns
            .iter()
            .find(|(_, (e, c))| *e == i && c == color)
            .map(|(k, _)| *k)
    }

    fn run(&mut self) {
        let mut n = 0;
        while let Some(ev) = self.queue.pop_front() {
            n += 1;
            assert!(n < 100_000, "no quiescence");
            let now = self.now;
            match ev {
                Ev::Ctrl(e) => {
                    let (peer, edge) = match e {
                        CtrlEv::Accepted(id) => self
                            .conns
                            .get(&id)
                            .map(|(i, _)| (self.certs[*i].clone(), *i as u8))
                            .unwrap_or_default(),
                        _ => (PeerCert::default(), 0),
                    };
                    let Some(c) = self.ctrl.as_mut() else {
                        continue;
                    };
                    let a = match e {
                        CtrlEv::Accepted(id) => c.handle(
                            now,
                            controller::Input::Accepted {
                                conn: id,
                                remote: SocketAddr::new(
                                    // Each edge from its own address.
                                    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 200 + edge)),
                                    40000 + id as u16,
                                ),
                                peer,
                            },
                        ),
                        CtrlEv::Bytes(id, d) => {
                            c.handle(now, controller::Input::Bytes { conn: id, data: &d })
                        }
                        CtrlEv::Closed(id) => c.handle(now, controller::Input::Closed { conn: id }),
                    };
                    self.ctrl_actions(a);
                }
                Ev::Edge(i, e) => {
                    let Some(ed) = self.edges[i].as_mut() else {
                        continue;
                    };
                    let a = match &e {
                        EdgeEv::Connected(c) => ed.handle(
                            now,
                            edge::Input::Connected {
                                color: c,
                                peer: &controller_cert(),
                            },
                        ),
                        EdgeEv::Bytes(c, d) => {
                            ed.handle(now, edge::Input::Bytes { color: c, data: d })
                        }
                        EdgeEv::Closed(c) => ed.handle(now, edge::Input::Closed { color: c }),
                    };
                    self.edge_actions(i, a);
                }
            }
        }
    }

    /// Runs every timer due up to `now + d`, in order.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let mut next: Option<Instant> = self.ctrl.as_ref().and_then(|c| c.next_timeout());
            for e in self.edges.iter().flatten() {
                if let Some(t) = e.next_timeout() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            let Some(t) = next.filter(|t| *t <= end) else {
                break;
            };
            self.now = self.now.max(t);
            let now = self.now;
            if let Some(c) = self.ctrl.as_mut()
                && c.next_timeout().is_some_and(|t| t <= now)
            {
                let a = c.handle(now, controller::Input::Timer);
                self.ctrl_actions(a);
            }
            for i in 0..self.edges.len() {
                if let Some(e) = self.edges[i].as_mut()
                    && e.next_timeout().is_some_and(|t| t <= now)
                {
                    let a = e.handle(now, edge::Input::Timer);
                    self.edge_actions(i, a);
                }
            }
            self.run();
        }
        self.now = end;
    }

    fn edge(&mut self, i: usize) -> &mut Edge {
        self.edges[i].as_mut().unwrap()
    }

    fn command(&mut self, i: usize, f: impl FnOnce(&mut Edge, Instant) -> Vec<edge::Action>) {
        let now = self.now;
        let a = f(self.edge(i), now);
        self.edge_actions(i, a);
        self.run();
    }

    fn colors(&self, i: usize) -> Vec<String> {
        let e = self.edges[i].as_ref().unwrap();
        e.tlocs()
            .into_iter()
            .filter(|t| t.system_ip == sys(i as u8 + 1))
            .map(|t| t.color)
            .collect()
    }
}

fn tloc(n: u8, color: &str) -> TlocId {
    TlocId {
        system_ip: sys(n),
        color: color.into(),
    }
}

/// Every live edge has an SA pair from each local TLOC to each remote TLOC,
/// and A's outbound to B equals B's newest inbound from A (pairwise key).
fn assert_converged(f: &Fabric) {
    let live: Vec<usize> = (0..f.edges.len())
        .filter(|i| f.edges[*i].is_some())
        .collect();
    for &a in &live {
        let mut want = BTreeSet::new();
        for &b in &live {
            if a == b {
                continue;
            }
            for la in f.colors(a) {
                for lb in f.colors(b) {
                    want.insert((la.clone(), tloc(b as u8 + 1, &lb)));
                    let out = &f.state[a].sas[&(la.clone(), tloc(b as u8 + 1, &lb))];
                    let inb = &f.state[b].sas[&(lb.clone(), tloc(a as u8 + 1, &la))];
                    assert_eq!(
                        out.outbound, inb.inbound[0],
                        "edge {a} {la} -> edge {b} {lb}"
                    );
                    assert_eq!(out.remote_port, inb.local_port);
                    assert_eq!(out.local_port, inb.remote_port);
                    assert_eq!(
                        out.outbound.spi,
                        f.edges[b].as_ref().unwrap().local_spi(&lb).unwrap()
                    );
                }
            }
        }
        let have: BTreeSet<_> = f.state[a].sas.keys().cloned().collect();
        assert_eq!(have, want, "edge {a}'s SA pairs");
    }
}

#[test]
fn all_edges_learn_each_other_and_sa_pairs_match_pairwise() {
    let f = Fabric::new();
    assert_converged(&f);
    let ctrl = f.ctrl.as_ref().unwrap();
    assert_eq!(ctrl.tlocs().len(), 4);
    assert_eq!(ctrl.routes().len(), 3);
    assert_eq!(ctrl.peers(f.now).len(), 3);
    assert!(ctrl.peers(f.now).iter().all(|p| p.state == "up"));
    assert_eq!(ctrl.control_connections(f.now).len(), 4);
    assert!(
        ctrl.control_connections(f.now)
            .iter()
            .all(|c| c.state == "up")
    );
    // Pairwise: the two senders to edge 2's TLOC use different keys, same SPI.
    let from1 = &f.state[0].sas[&("biz-internet".to_string(), tloc(2, "biz-internet"))].outbound;
    let from1m = &f.state[0].sas[&("mpls".to_string(), tloc(2, "biz-internet"))].outbound;
    let from3 = &f.state[2].sas[&("mpls".to_string(), tloc(2, "biz-internet"))].outbound;
    assert_eq!(from1.spi, from3.spi);
    assert_eq!(from1.spi, from1m.spi);
    assert_ne!(from1.key, from3.key);
    assert_ne!(from1.key, from1m.key);
    // Service routes: edge 1's prefix via both its TLOCs on edge 2.
    let p1 = Prefix::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 32).unwrap();
    assert!(f.state[1].routes.contains(&(p1, tloc(1, "biz-internet"))));
    assert!(f.state[1].routes.contains(&(p1, tloc(1, "mpls"))));
    assert_eq!(f.state[1].routes.len(), 3);
    // Default ports, and no key in any show view or action's Debug.
    assert_eq!(f.state[0].ports["biz-internet"], 12346);
    for st in &f.state {
        for sa in st.sas.values() {
            let d = format!("{sa:?}");
            assert!(
                !d.contains(&format!("{:?}", sa.outbound.key.bytes())),
                "{d}"
            );
        }
    }
    // Keepalives keep everything up for a while; nothing changes.
    let mut f = f;
    let before: Vec<usize> = f.state.iter().map(|s| s.history.len()).collect();
    f.advance(Duration::from_secs(120));
    assert_converged(&f);
    for (i, s) in f.state.iter().enumerate() {
        assert!(
            s.history[before[i]..].iter().all(|h| h.starts_with("send")),
            "{:?}",
            &s.history[before[i]..]
        );
    }
}

#[test]
fn rekey_is_make_before_break_and_old_inbound_goes_after_grace() {
    let mut f = Fabric::new();
    let old = f.edge(1).local_spi("biz-internet").unwrap();
    let mark = f.state[1].history.len();
    f.command(1, |e, now| e.ipsec_rekey(now));
    let new = f.edge(1).local_spi("biz-internet").unwrap();
    assert_ne!(old, new);
    // On edge 2, every SA install (new inbound listed) precedes the advertisement.
    let h = &f.state[1].history[mark..];
    let first_send = h.iter().position(|x| x.starts_with("send")).unwrap();
    let installs: Vec<usize> = h
        .iter()
        .enumerate()
        .filter(|(_, x)| x.starts_with("sa-install"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(installs.len(), 3, "{h:?}");
    assert!(installs.iter().all(|i| *i < first_send), "{h:?}");
    for sa in f.state[1].sas.values() {
        let spis: Vec<u32> = sa.inbound.iter().map(|s| s.spi).collect();
        assert_eq!(spis, vec![new, old]);
    }
    // Peers moved their outbound to the new SPI.
    assert_converged(&f);
    // The old inbound stays for the grace, then goes.
    f.advance(REKEY_GRACE - Duration::from_secs(1));
    assert!(f.state[1].sas.values().all(|sa| sa.inbound.len() == 2));
    f.advance(Duration::from_secs(2));
    assert!(
        f.state[1]
            .sas
            .values()
            .all(|sa| sa.inbound.iter().map(|s| s.spi).collect::<Vec<_>>() == vec![new])
    );
    assert_converged(&f);
    assert_eq!(f.state.iter().map(|s| s.sa_removes).sum::<usize>(), 0);
}

#[test]
fn timed_rekey_follows_rekey_seconds() {
    let mut cfgs = vec![
        edge_cfg(1, &["biz-internet"], ORG),
        edge_cfg(2, &["biz-internet"], ORG),
    ];
    cfgs[0].rekey = Duration::from_secs(300);
    cfgs[0].rekey_grace = Duration::from_secs(10);
    let mut f = Fabric::with(cfgs);
    let s0 = f.edge(0).local_spi("biz-internet").unwrap();
    f.advance(Duration::from_secs(299));
    assert_eq!(f.edge(0).local_spi("biz-internet").unwrap(), s0);
    f.advance(Duration::from_secs(2));
    let s1 = f.edge(0).local_spi("biz-internet").unwrap();
    assert_ne!(s0, s1);
    assert_converged(&f);
    assert_eq!(f.state[0].sas.values().next().unwrap().inbound.len(), 2);
    f.advance(Duration::from_secs(10));
    assert_eq!(f.state[0].sas.values().next().unwrap().inbound.len(), 1);
    f.advance(Duration::from_secs(300));
    assert_ne!(f.edge(0).local_spi("biz-internet").unwrap(), s1);
    assert_converged(&f);
}

#[test]
fn refusals_carry_ciscos_codes_on_both_sides() {
    let mut f = Fabric::new();
    // Edge 9's serial is not in the allowed list; edge 4's organization
    // differs (each side refuses the other's certificate).
    let bad = f.add_edge(edge_cfg(9, &["lte"], ORG));
    let other = f.add_edge(edge_cfg(4, &["lte"], "other-org"));
    f.advance(Duration::from_secs(30));
    let has = |logs: &[String], what: &str| {
        logs.iter()
            .any(|l| l.starts_with("%SDWAN-3-") && l.contains(what))
    };
    assert!(has(&f.ctrl_logs, "SERNTPRES"), "{:?}", f.ctrl_logs);
    assert!(has(&f.ctrl_logs, "CTORGNMMIS"), "{:?}", f.ctrl_logs);
    assert!(
        has(&f.state[bad].logs, "SERNTPRES"),
        "{:?}",
        f.state[bad].logs
    );
    assert!(
        has(&f.state[other].logs, "CTORGNMMIS"),
        "{:?}",
        f.state[other].logs
    );
    let now = f.now;
    let h = f.edge(bad).history();
    assert_eq!(h[0].remote_error, ErrorCode::SerNtPres, "{h:?}");
    assert_eq!(h[0].local_error, ErrorCode::NoErr);
    // Retried with backoff (1, 2, 4, 8, 16 s): a handful of tries, counted.
    assert!((3..=5).contains(&h[0].repeat_count), "{h:?}");
    let ch = f.ctrl.as_ref().unwrap().history();
    assert!(
        ch.iter()
            .any(|r| r.local_error == ErrorCode::SerNtPres && r.remote_error == ErrorCode::NoErr),
        "{ch:?}"
    );
    assert!(f.state[bad].sas.is_empty());
    let ctrl = f.ctrl.as_ref().unwrap();
    assert!(
        ctrl.tlocs()
            .iter()
            .all(|t| t.system_ip != sys(9) && t.system_ip != sys(4))
    );
    assert!(f.state[0].sas.keys().all(|(_, r)| r.system_ip != sys(9)));
    assert_ne!(f.edge(bad).control_connections(now)[0].state, "up");
    let tries = f.state[bad]
        .history
        .iter()
        .filter(|h| h.starts_with("Connect"))
        .count();
    assert!((4..=6).contains(&tries), "{tries}");
}

/// Edge `n`'s certificate (serial `En`, system-ip `sys(n)`) as the
/// controller's TLS reports it.
fn edge_cert(n: u8) -> PeerCert {
    PeerCert {
        organization: ORG.into(),
        role: "edge".into(),
        serial: format!("E{n}"),
        system_ip: Some(sys(n)),
    }
}

/// An edge's Hello claiming `sys(n)`, as one frame.
fn edge_hello(n: u8) -> zeroize::Zeroizing<Vec<u8>> {
    use xdpsec_omp::wire::{Message, Role};
    Message::Hello {
        role: Role::Edge,
        system_ip: sys(n),
        site_id: 9,
        color: "mpls".into(),
        version: "x".into(),
    }
    .encode()
}

/// The log lines among the controller's actions.
fn ctrl_log_lines(a: &[controller::Action]) -> Vec<String> {
    a.iter()
        .filter_map(|x| match x {
            controller::Action::Log(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_hijacked_system_ip_is_refused_and_the_owner_untouched() {
    let now = Instant::now();
    let mut c = Controller::new(ctrl_cfg());
    let remote: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    let cert = edge_cert;
    let hello = edge_hello;
    let logs = ctrl_log_lines;
    c.handle(
        now,
        controller::Input::Accepted {
            conn: 1,
            remote,
            peer: cert(1),
        },
    );
    let a = c.handle(
        now,
        controller::Input::Bytes {
            conn: 1,
            data: &hello(1),
        },
    );
    assert!(
        logs(&a).iter().any(|l| l.contains("CONTROL_CONN_UP")),
        "{a:?}"
    );
    // Edge 2's certificate claiming edge 1's system-ip in its Hello.
    c.handle(
        now,
        controller::Input::Accepted {
            conn: 2,
            remote,
            peer: cert(2),
        },
    );
    let a = c.handle(
        now,
        controller::Input::Bytes {
            conn: 2,
            data: &hello(1),
        },
    );
    assert!(
        logs(&a)
            .iter()
            .any(|l| l.starts_with("%SDWAN-3-") && l.contains("DUPSYSIPDEL")),
        "{a:?}"
    );
    assert!(
        a.iter()
            .any(|x| matches!(x, controller::Action::Close { conn: 2 }))
    );
    assert!(
        !a.iter()
            .any(|x| matches!(x, controller::Action::Close { conn: 1 }))
    );
    let conns = c.control_connections(now);
    assert_eq!(conns.len(), 1);
    assert_eq!((conns[0].system_ip, conns[0].state), (Some(sys(1)), "up"));
    // A serial not in the list, from another address (lines about one
    // address are rate-limited): refused at once.
    let a = c.handle(
        now,
        controller::Input::Accepted {
            conn: 3,
            remote: "198.51.100.10:40000".parse().unwrap(),
            peer: cert(9),
        },
    );
    assert!(logs(&a).iter().any(|l| l.contains("SERNTPRES")), "{a:?}");
    assert!(
        a.iter()
            .any(|x| matches!(x, controller::Action::Close { conn: 3 }))
    );
    // Garbage never panics and closes the connection.
    c.handle(
        now,
        controller::Input::Accepted {
            conn: 4,
            remote,
            peer: cert(3),
        },
    );
    let a = c.handle(
        now,
        controller::Input::Bytes {
            conn: 4,
            data: &[0, 0, 0, 2, 99, 1],
        },
    );
    assert!(
        a.iter()
            .any(|x| matches!(x, controller::Action::Close { conn: 4 }))
    );
}

#[test]
fn a_dropped_edge_is_withdrawn_after_the_hold_time_not_before() {
    let mut f = Fabric::new();
    f.kill_edge(2);
    let ctrl = f.ctrl.as_ref().unwrap();
    assert!(
        ctrl.peers(f.now)
            .iter()
            .any(|p| p.system_ip == sys(3) && p.state == "down")
    );
    assert!(
        ctrl.tlocs()
            .iter()
            .any(|t| t.system_ip == sys(3) && t.status == "C,R,Stale")
    );
    f.advance(GRACEFUL_RESTART - Duration::from_secs(1));
    assert!(f.state[0].sas.keys().any(|(_, r)| r.system_ip == sys(3)));
    assert!(f.state[1].sas.keys().any(|(_, r)| r.system_ip == sys(3)));
    assert_eq!(f.state[0].sa_removes, 0);
    f.advance(Duration::from_secs(2));
    assert!(f.state[0].sas.keys().all(|(_, r)| r.system_ip != sys(3)));
    assert!(f.state[1].sas.keys().all(|(_, r)| r.system_ip != sys(3)));
    assert!(f.state[1].routes.iter().all(|(_, v)| v.system_ip != sys(3)));
    assert!(
        f.ctrl_logs
            .iter()
            .any(|l| l.starts_with("%SDWAN-5-OMP_GR_EXPIRED") && l.contains("192.0.2.3"))
    );
    let ctrl = f.ctrl.as_ref().unwrap();
    assert!(ctrl.tlocs().iter().all(|t| t.system_ip != sys(3)));
    assert_eq!(ctrl.peers(f.now).len(), 2);
}

#[test]
fn graceful_restart_hold_time_is_configurable() {
    let mut f = Fabric::new();
    let mut c = ctrl_cfg();
    c.graceful_restart = Duration::from_secs(30);
    f.ctrl = Some(Controller::new(c));
    f.clear_all_connections();
    f.advance(Duration::from_secs(5));
    assert_converged(&f);
    f.kill_edge(1);
    f.advance(Duration::from_secs(29));
    assert!(f.state[0].sas.keys().any(|(_, r)| r.system_ip == sys(2)));
    f.advance(Duration::from_secs(2));
    assert!(f.state[0].sas.keys().all(|(_, r)| r.system_ip != sys(2)));
}

impl Fabric {
    fn clear_all_connections(&mut self) {
        for i in 0..self.edges.len() {
            if self.edges[i].is_some() {
                self.command(i, |e, now| e.clear_control_connections(now));
            }
        }
    }
}

#[test]
fn controller_restart_keeps_sas_through_graceful_restart_then_reconverges() {
    let mut f = Fabric::new();
    let sas_before: Vec<_> = f.state.iter().map(|s| s.sas.clone()).collect();
    f.kill_controller();
    f.advance(Duration::from_secs(600));
    for (i, s) in f.state.iter().enumerate() {
        assert_eq!(s.sa_removes, 0);
        assert_eq!(s.sas, sas_before[i], "edge {i} kept its SAs");
        assert!(s.logs.iter().any(|l| l.contains("CONTROL_CONN_DOWN")));
    }
    assert!(f.edge(1).tlocs().iter().any(|t| t.status == "C,I,R,Stale"));
    f.start_controller();
    // Backoff is capped at 64 s: everyone is back within that.
    f.advance(Duration::from_secs(65));
    let ctrl = f.ctrl.as_ref().unwrap();
    assert_eq!(ctrl.tlocs().len(), 4);
    assert!(
        ctrl.control_connections(f.now)
            .iter()
            .all(|c| c.state == "up")
    );
    assert_eq!(ctrl.control_connections(f.now).len(), 4);
    for (i, s) in f.state.iter().enumerate() {
        assert_eq!(s.sa_removes, 0);
        assert_eq!(s.sas, sas_before[i]);
    }
    assert!(f.edge(1).tlocs().iter().all(|t| t.status != "C,I,R,Stale"));
    assert_converged(&f);
    // Converged again: a rekey propagates through the new controller.
    f.command(0, |e, now| e.ipsec_rekey(now));
    assert_converged(&f);
}

#[test]
fn port_hop_changes_the_port_and_flaps_only_that_color() {
    let mut f = Fabric::new();
    let mark = f.state[0].history.len();
    let now = f.now;
    let a = f.edge(0).port_hop(now, "biz-internet").unwrap();
    f.edge_actions(0, a);
    f.run();
    let h = &f.state[0].history[mark..];
    assert!(
        h.iter()
            .any(|x| x.contains("Close { color: \"biz-internet\" }")),
        "{h:?}"
    );
    assert!(
        h.iter()
            .any(|x| x.contains("Connect { color: \"biz-internet\" }")),
        "{h:?}"
    );
    assert!(
        !h.iter().any(|x| x.contains("color: \"mpls\" }")
            && (x.starts_with("Close") || x.starts_with("Connect"))),
        "{h:?}"
    );
    assert_eq!(f.state[0].ports["biz-internet"], 12366);
    assert_eq!(f.state[0].ports["mpls"], 12346);
    let ctrl = f.ctrl.as_ref().unwrap();
    let t = ctrl
        .tlocs()
        .into_iter()
        .find(|t| t.system_ip == sys(1) && t.color == "biz-internet")
        .unwrap();
    assert_eq!(t.public_port, 12366);
    assert_eq!(
        f.state[1].sas[&("biz-internet".to_string(), tloc(1, "biz-internet"))].remote_port,
        12366
    );
    assert_converged(&f);
    assert!(f.edge(0).port_hop(now, "no-such-color").is_none());
    let mut ports = vec![];
    for _ in 0..5 {
        let a = f.edge(0).port_hop(now, "mpls").unwrap();
        f.edge_actions(0, a);
        f.run();
        ports.push(f.state[0].ports["mpls"]);
    }
    assert_eq!(ports, [12366, 12386, 12406, 12426, 12346]);
    assert_converged(&f);
}

#[test]
fn clear_omp_withdraws_and_relearns() {
    let mut f = Fabric::new();
    let before = f.state[1].sa_removes;
    f.command(0, |e, now| e.clear_omp(now));
    // Edge 1 dropped all it learned, the others dropped edge 1's TLOCs, and
    // everything came back.
    assert!(f.state[0].sa_removes > 0);
    assert!(f.state[1].sa_removes > before);
    assert_converged(&f);
}

#[test]
fn clear_control_connections_reinstalls_sas() {
    // Recovery of a datapath that lost an SA (the seed's scenario 2): after
    // a flap of the control connections every SA pair is installed again.
    let mut f = Fabric::new();
    f.state[1].sas.clear();
    f.command(1, |e, now| e.clear_control_connections(now));
    assert_converged(&f);
}

#[test]
fn a_rekey_while_the_controller_is_down_keeps_the_old_inbound_until_it_is_back() {
    let mut f = Fabric::new();
    f.kill_controller();
    let old = f.edge(1).local_spi("biz-internet").unwrap();
    f.command(1, |e, now| e.ipsec_rekey(now));
    f.advance(REKEY_GRACE * 10);
    // The peers still send on the old SPI: it must still decrypt.
    assert!(
        f.state[1]
            .sas
            .values()
            .all(|sa| sa.inbound.iter().any(|s| s.spi == old))
    );
    f.start_controller();
    f.advance(Duration::from_secs(65));
    assert_converged(&f);
    assert!(f.state[1].sas.values().all(|sa| sa.inbound.len() == 2));
    f.advance(REKEY_GRACE);
    assert!(f.state[1].sas.values().all(|sa| sa.inbound.len() == 1));
    assert_converged(&f);
}

#[test]
fn no_key_in_the_debug_output_of_actions() {
    let mut f = Fabric::new();
    let now = f.now;
    let acts = f.edge(1).ipsec_rekey(now);
    let dbg = format!("{acts:?}");
    assert!(
        dbg.contains("Send { color: \"biz-internet\", data: <"),
        "{dbg}"
    );
    assert!(dbg.contains("redacted"), "{dbg}");
    let mut keys = Vec::new();
    for a in &acts {
        if let edge::Action::Send { data, .. } = a {
            let mut r = xdpsec_omp::wire::FrameReader::default();
            r.push(data);
            while let Some(m) = r.next_message().unwrap() {
                if let xdpsec_omp::wire::Message::TlocAdvertise(t) = m {
                    keys.push(*t.key.bytes());
                }
            }
        }
    }
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(
            !dbg.contains(&format!("{}, {}, {}, {}", k[0], k[1], k[2], k[3])),
            "{dbg}"
        );
    }
    for a in &acts {
        if let edge::Action::SaInstall(sa) = a {
            for k in sa.inbound.iter().chain([&sa.outbound]) {
                assert!(!dbg.contains(&format!("{:?}", k.key.bytes())));
                // Nor as a run of the first bytes in decimal.
                let b = k.key.bytes();
                assert!(!dbg.contains(&format!("{}, {}, {}, {}", b[0], b[1], b[2], b[3])));
            }
        }
    }
    f.edge_actions(1, acts);
    f.run();
    assert_converged(&f);
}

#[test]
fn a_silent_connection_is_dropped_after_the_hold_time_and_recovers() {
    use xdpsec_omp::consts::KEEPALIVE_HOLD;
    let mut f = Fabric::new();
    f.blackhole.insert(1);
    f.advance(KEEPALIVE_HOLD - Duration::from_secs(1));
    assert!(f.ctrl_logs.iter().all(|l| !l.contains("CONTROL_CONN_DOWN")));
    f.advance(Duration::from_secs(2));
    assert!(
        f.ctrl_logs.iter().any(|l| l.contains("CONTROL_CONN_DOWN")
            && l.contains("192.0.2.2")
            && l.contains("hold time expired")),
        "{:?}",
        f.ctrl_logs
    );
    assert!(
        f.state[1]
            .logs
            .iter()
            .any(|l| l.contains("CONTROL_CONN_DOWN")),
        "{:?}",
        f.state[1].logs
    );
    // Routes are held (graceful restart), nothing removed; retries back off.
    assert_eq!(f.state.iter().map(|s| s.sa_removes).sum::<usize>(), 0);
    let mark = f.state[1].history.len();
    f.advance(Duration::from_secs(200));
    let tries = f.state[1].history[mark..]
        .iter()
        .filter(|h| h.starts_with("Connect"))
        .count();
    // Connects at +1, +2, +4 ... each failing its handshake after 10 s.
    assert!((4..=8).contains(&tries), "{tries}");
    f.blackhole.clear();
    f.advance(Duration::from_secs(80));
    assert_converged(&f);
    assert!(
        f.ctrl
            .as_ref()
            .unwrap()
            .control_connections(f.now)
            .iter()
            .all(|c| c.state == "up")
    );
    assert_eq!(f.state.iter().map(|s| s.sa_removes).sum::<usize>(), 0);
}

#[test]
fn a_flap_while_tcp_connects_sends_nothing_on_that_connection() {
    // Found by the omp_edge fuzz target (fuzz/corpus/omp_edge/crash-*): a
    // clear while the TCP connect is still in progress sent a Goodbye on a
    // connection nobody had accepted yet.
    let now = Instant::now();
    let mut e = Edge::new(edge_cfg(1, &["biz-internet"], ORG), now);
    let start = e.handle(now, edge::Input::Timer);
    assert!(
        start
            .iter()
            .any(|a| matches!(a, edge::Action::Connect { .. })),
        "{start:?}"
    );
    for (what, actions) in [
        ("clear sdwan omp all", e.clear_omp(now)),
        (
            "clear sdwan control connections",
            e.clear_control_connections(now),
        ),
        ("port hop", e.port_hop(now, "biz-internet").unwrap()),
    ] {
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, edge::Action::Send { .. })),
            "{what} while connecting: {actions:?}"
        );
        // It still gives the connect up and starts a fresh one.
        assert!(
            matches!(
                &actions[actions.len() - 2..],
                [edge::Action::Close { .. }, edge::Action::Connect { .. }]
            ),
            "{what}: {actions:?}"
        );
    }
}

#[test]
fn per_edge_bounds_refuse_tlocs_and_routes_past_them_with_one_log_line() {
    use xdpsec_omp::consts::{MAX_PREFIXES_PER_EDGE, MAX_TLOCS_PER_EDGE};
    use xdpsec_omp::wire::{Message, Role, ServiceRoute, TlocRoute};
    let now = Instant::now();
    let mut c = Controller::new(ctrl_cfg());
    let remote: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    let peer = PeerCert {
        organization: ORG.into(),
        role: "edge".into(),
        serial: "E1".into(),
        system_ip: Some(sys(1)),
    };
    c.handle(
        now,
        controller::Input::Accepted {
            conn: 1,
            remote,
            peer,
        },
    );
    let hello = Message::Hello {
        role: Role::Edge,
        system_ip: sys(1),
        site_id: 1,
        color: "mpls".into(),
        version: "x".into(),
    };
    c.handle(
        now,
        controller::Input::Bytes {
            conn: 1,
            data: &hello.encode(),
        },
    );
    let mut data = Vec::new();
    for k in 0..MAX_TLOCS_PER_EDGE + 3 {
        data.extend_from_slice(
            &Message::TlocAdvertise(TlocRoute {
                system_ip: sys(1),
                site_id: 1,
                color: format!("custom{k}"),
                public_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
                public_port: 12346,
                spi: 1000 + k as u32,
                key: xdpsec_omp::KeyMaterial::random(&ring::rand::SystemRandom::new()),
            })
            .encode(),
        );
    }
    for k in 0..MAX_PREFIXES_PER_EDGE + 3 {
        let a = Ipv4Addr::from(0x0a00_0000u32 + (k as u32) * 256);
        data.extend_from_slice(
            &Message::RouteAdvertise(ServiceRoute {
                prefix: Prefix::new(IpAddr::V4(a), 24).unwrap(),
                system_ip: sys(1),
                site_id: 1,
            })
            .encode(),
        );
    }
    let a = c.handle(
        now,
        controller::Input::Bytes {
            conn: 1,
            data: &data,
        },
    );
    let limits: Vec<_> = a
        .iter()
        .filter(|x| matches!(x, controller::Action::Log(l) if l.starts_with("%SDWAN-4-OMP_LIMIT")))
        .collect();
    assert_eq!(
        limits.len(),
        1,
        "one log line, not one per refusal: {limits:?}"
    );
    assert_eq!(c.tlocs().len(), MAX_TLOCS_PER_EDGE);
    assert_eq!(c.routes().len(), MAX_PREFIXES_PER_EDGE);
    // Still up: bounds refuse the excess, not the edge.
    assert_eq!(c.control_connections(now)[0].state, "up");
}

/// Refusals made after the TLS handshake (a certificate the CA signed, so
/// the handshake succeeds) are rate-limited per source address: an
/// attacker looping reconnects from one address, in turn hijacking edge
/// 1's system-ip (DUPSYSIPDEL), with a serial not allowed (SERNTPRES), and
/// claiming a system-ip its serial is not bound to (SYSIPCHNG), gets one
/// log line a second, each try still refused and counted in the history;
/// another address is not held back; the next line after the interval
/// says how many were suppressed; stalled connections (TLS done, no Hello)
/// closed by the handshake timeout (DHSTMO) are limited the same way.
#[test]
fn refusals_after_the_handshake_are_rate_limited_per_source() {
    use xdpsec_omp::consts::HANDSHAKE_TIMEOUT;
    let t0 = Instant::now();
    let mut c = Controller::new(ctrl_cfg());
    let attacker: SocketAddr = "198.51.100.66:40000".parse().unwrap();
    let other: SocketAddr = "198.51.100.67:40000".parse().unwrap();
    let mut lines = Vec::new();
    let mut conn = 0u64;
    let mut codes = BTreeSet::new();
    // A connection whose TLS handshake is done, with `peer`'s certificate.
    let accept = |c: &mut Controller, t: Instant, conn: u64, remote: SocketAddr, peer: PeerCert| {
        c.handle(t, controller::Input::Accepted { conn, remote, peer })
    };
    for i in 0..100u64 {
        let now = t0 + Duration::from_millis(i * 9);
        conn += 1;
        let (peer, claim) = match i % 3 {
            0 => (edge_cert(2), 1),
            1 => (edge_cert(9), 9),
            _ => (
                PeerCert {
                    system_ip: Some(sys(77)),
                    ..edge_cert(3)
                },
                77,
            ),
        };
        let mut a = accept(&mut c, now, conn, attacker, peer);
        if c.control_connections(now)
            .iter()
            .any(|v| v.remote == attacker)
        {
            let data = edge_hello(claim);
            a.extend(c.handle(now, controller::Input::Bytes { conn, data: &data }));
        }
        assert!(
            a.iter()
                .any(|x| matches!(x, controller::Action::Close { conn: k } if *k == conn)),
            "try {i} not refused: {a:?}"
        );
        lines.extend(ctrl_log_lines(&a));
    }
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("DUPSYSIPDEL"), "{lines:?}");
    // Every try is in the history (the log is limited, not the counting).
    let tries: u32 = c
        .history()
        .iter()
        .filter(|r| r.peer_ip == Some(attacker.ip()))
        .map(|r| {
            codes.insert(r.local_error);
            r.repeat_count + 1
        })
        .sum();
    assert_eq!(tries, 100);
    assert_eq!(
        codes,
        BTreeSet::from([
            ErrorCode::DupSysIpDel,
            ErrorCode::SerNtPres,
            ErrorCode::SysIpChng
        ])
    );
    // Another address in the same second: its own line.
    conn += 1;
    let a = accept(
        &mut c,
        t0 + Duration::from_millis(500),
        conn,
        other,
        edge_cert(9),
    );
    let l = ctrl_log_lines(&a);
    assert!(l.len() == 1 && l[0].contains("SERNTPRES"), "{l:?}");
    // After the interval, the attacker's next line counts the rest.
    conn += 1;
    let a = accept(
        &mut c,
        t0 + Duration::from_secs(2),
        conn,
        attacker,
        edge_cert(9),
    );
    let l = ctrl_log_lines(&a);
    assert!(
        l.len() == 1
            && l[0].contains("SERNTPRES")
            && l[0].ends_with("(99 more from this source suppressed)"),
        "{l:?}"
    );
    // Five connections that finished TLS with an allowed certificate and
    // never sent their Hello: all closed at the timeout, one line.
    let t1 = t0 + Duration::from_secs(3);
    let first = conn + 1;
    for _ in 0..5 {
        conn += 1;
        accept(&mut c, t1, conn, attacker, edge_cert(3));
    }
    assert_eq!(c.next_timeout(), Some(t1 + HANDSHAKE_TIMEOUT));
    let a = c.handle(t1 + HANDSHAKE_TIMEOUT, controller::Input::Timer);
    let closed = a
        .iter()
        .filter(
            |x| matches!(x, controller::Action::Close { conn: k } if (first..=conn).contains(k)),
        )
        .count();
    assert_eq!(closed, 5, "{a:?}");
    let l = ctrl_log_lines(&a);
    assert!(l.len() == 1 && l[0].contains("DHSTMO"), "{l:?}");
    let h = c.history();
    assert_eq!(
        (h[0].local_error, h[0].repeat_count, h[0].peer_ip),
        (ErrorCode::DhsTmo, 4, Some(attacker.ip())),
        "{h:?}"
    );
}
