//! The engine against an in-memory xdpsec responder (the same IKE core,
//! `initiate = false`, one tunnel per emulated peer) on a mock clock, with
//! a one-way network delay.
use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use xdpsec_ike::{Action, Ike, Input, PeerConfig};

use super::*;
use crate::{
    config::LoadtestConfig,
    stats::{Summary, round3},
};

const CONFIG: &str = r#"
[underlay]
interface = "lt0"
[loadtest]
gateway = "2001:db8:100::1"
source_range = "2001:db8:100::1000/116"
inside_range = "2001:db8:1::/64"
gateway_subnets = ["2001:db8:2::/64"]
psk = "load test key"
ike_proposals = ["aes256gcm16-prfsha256-x25519"]
esp_proposals = ["aes256gcm16"]
"#;

const DELAY: Duration = Duration::from_millis(10);

fn initiators(n: u64) -> Vec<PeerConfig> {
    let c = LoadtestConfig::parse(CONFIG).unwrap();
    (0..n).map(|k| c.peer(k).unwrap().2).collect()
}

/// The gateway's tunnel for each initiator, changed by `tweak(k, cfg)`;
/// `None` from `tweak` leaves that peer out (the gateway ignores it).
fn responder(ini: &[PeerConfig], tweak: impl Fn(usize, &mut PeerConfig) -> bool) -> Ike {
    let peers = ini
        .iter()
        .enumerate()
        .filter_map(|(k, p)| {
            let mut r = p.clone();
            r.tunnel = format!("Tunnel{k}");
            r.tunnel_index = k as u32;
            r.local = p.remote;
            r.remote = p.local;
            r.local_id = p.remote_id.clone();
            r.remote_id = p.local_id.clone();
            r.local_ts = p.remote_ts.clone();
            r.remote_ts = p.local_ts.clone();
            r.initiate = false;
            tweak(k, &mut r).then_some(r)
        })
        .collect();
    Ike::new(peers)
}

struct Net {
    t: Instant,
    /// (delivery time, to the gateway?, local, remote, data) with local = receiver.
    wire: VecDeque<(Instant, bool, SocketAddr, SocketAddr, Vec<u8>)>,
    max_in_flight: usize,
    /// Run until the DELETEs are answered (after `finish`).
    closing: bool,
    /// Drop this many DELETE datagrams to the gateway first.
    lose_deletes: usize,
    /// Drop this many datagrams to the gateway first (setup).
    lose_setup: usize,
}

impl Net {
    /// An empty network at `t0` that loses the first `lose_setup`
    /// datagrams to the gateway.
    fn at(t0: Instant, lose_setup: usize) -> Net {
        Net {
            t: t0,
            wire: VecDeque::new(),
            max_in_flight: 0,
            closing: false,
            lose_deletes: 0,
            lose_setup,
        }
    }

    /// Run until every attempt has ended, then `hold` more; the time it ended.
    fn run(&mut self, e: &mut Engine, gw: &mut Ike, hold: Duration) -> Instant {
        let mut end: Option<Instant> = None;
        loop {
            e.tick(self.t);
            self.max_in_flight = self.max_in_flight.max(e.in_flight());
            for s in e.take_sends() {
                self.wire
                    .push_back((self.t + DELAY, true, s.remote, s.local, s.data));
            }
            if let Some(t) = gw.next_timeout()
                && t <= self.t
            {
                self.gw_actions(gw.handle(self.t, Input::Timer));
            }
            while let Some((at, _, _, _, _)) = self.wire.front()
                && *at <= self.t
            {
                let (_, to_gw, local, remote, data) = self.wire.pop_front().unwrap();
                if to_gw && self.closing && self.lose_deletes > 0 {
                    self.lose_deletes -= 1;
                    continue;
                }
                if to_gw && !self.closing && self.lose_setup > 0 {
                    self.lose_setup -= 1;
                    continue;
                }
                if to_gw {
                    let a = gw.handle(
                        self.t,
                        Input::Datagram {
                            local,
                            remote,
                            data: &data,
                        },
                    );
                    self.gw_actions(a);
                } else {
                    e.datagram(self.t, local, remote, &data);
                    for s in e.take_sends() {
                        self.wire
                            .push_back((self.t + DELAY, true, s.remote, s.local, s.data));
                    }
                }
            }
            if self.closing && e.closing_done() && self.wire.is_empty() {
                return self.t;
            }
            if !self.closing && end.is_none() && e.setup_done() {
                end = Some(self.t + hold);
            }
            if let Some(x) = end
                && self.t >= x
            {
                return self.t;
            }
            let next = [
                e.next_wakeup(),
                gw.next_timeout(),
                self.wire.front().map(|w| w.0),
                end,
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("something is due");
            self.t = next.max(self.t);
        }
    }

    fn gw_actions(&mut self, actions: Vec<Action>) {
        for a in actions {
            if let Action::Send {
                local,
                remote,
                data,
            } = a
            {
                self.wire
                    .push_back((self.t + DELAY, false, remote, local, data));
            }
        }
    }
}

fn run(
    n: u64,
    opts: Options,
    tweak: impl Fn(usize, &mut PeerConfig) -> bool,
    hold: Duration,
) -> (Engine, Net, Ike, Instant) {
    run_peers(initiators(n), opts, tweak, hold)
}

/// [`run`] with these initiators.
fn run_peers(
    ini: Vec<PeerConfig>,
    opts: Options,
    tweak: impl Fn(usize, &mut PeerConfig) -> bool,
    hold: Duration,
) -> (Engine, Net, Ike, Instant) {
    let mut gw = responder(&ini, tweak);
    let t0 = Instant::now();
    let mut e = Engine::new(ini, opts, t0);
    let mut net = Net::at(t0, 0);
    let end = net.run(&mut e, &mut gw, hold);
    (e, net, gw, t0 + (end - t0))
}

#[test]
fn all_up_paced_and_capped() {
    let opts = Options {
        rate: Some(50.0),
        concurrency: 4,
        ..Options::default()
    };
    let (e, net, _, _) = run(30, opts, |_, _| true, Duration::ZERO);
    let s = Summary::of(e.accounting(), 30, Duration::ZERO, 0.0, false);
    assert_eq!((s.attempts, s.up), (30, 30), "{s:?}");
    assert!(s.failed.is_empty());
    assert_eq!(e.up_now(), 30);
    // Two round trips of 20 ms each: 40 ms per tunnel; at 50/s (20 ms
    // apart) two are in flight at a time (three at the instant one starts
    // as another's answer arrives), under the cap of 4.
    let starts: Vec<Duration> = e.accounting().attempts.iter().map(|a| a.start).collect();
    for (k, s) in starts.iter().enumerate() {
        assert_eq!(*s, Duration::from_millis(20 * k as u64), "attempt {k}");
    }
    assert_eq!(e.accounting().setup_latencies()[29], 0.04);
    assert_eq!(net.max_in_flight, 3);
}

#[test]
fn concurrency_caps_exchanges_in_flight() {
    let opts = Options {
        rate: None,
        concurrency: 7,
        ..Options::default()
    };
    let (e, net, _, _) = run(40, opts, |_, _| true, Duration::ZERO);
    assert_eq!(e.accounting().up(), 40);
    assert_eq!(net.max_in_flight, 7);
    // Flat out, seven at a time, 40 ms each: six rounds, the last of five.
    let (from, to) = e.accounting().setup_span();
    assert_eq!(to - from, Duration::from_millis(6 * 40));
}

#[test]
fn every_failure_is_named_once() {
    let opts = Options {
        concurrency: 100,
        ..Options::default()
    };
    // Peers 0-9 up; 10-14 wrong PSK; 15-19 another IKE proposal; 20-24
    // another ESP proposal; 25-27 other traffic selectors; 28-29 unknown to the gateway.
    let tweak = |k: usize, r: &mut PeerConfig| {
        match k {
            10..=14 => r.psk = zeroize::Zeroizing::new(b"another key".to_vec()),
            15..=19 => {
                r.ike_proposals =
                    vec![xdpsec_ike::IkeProposal::parse("aes256-sha256-ecp256").unwrap()]
            }
            20..=24 => {
                r.esp_proposals = vec![xdpsec_ike::EspProposal::parse("aes128-sha1").unwrap()]
            }
            25..=27 => r.local_ts[0].addr = "2001:db8:3::".parse().unwrap(),
            28..=29 => return false,
            _ => {}
        }
        true
    };
    let (e, _, _, end) = run(30, opts, tweak, Duration::ZERO);
    let s = Summary::of(e.accounting(), 30, Duration::ZERO, 0.0, false);
    assert_eq!(s.up, 10, "{s:?}");
    let want: Vec<(&str, u64)> = vec![
        ("AUTHENTICATION_FAILED", 5),
        ("NO_PROPOSAL_CHOSEN", 10),
        ("TIMEOUT", 2),
        ("TS_UNACCEPTABLE", 3),
    ];
    let got: Vec<(&str, u64)> = s.failed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(got, want);
    assert_eq!(s.up + s.failed.values().sum::<u64>(), s.attempts);
    // The timeouts are the core's: 1+2+4+8+16 s after the first send.
    let timeouts: Vec<Duration> = e.accounting().attempts[28..]
        .iter()
        .map(|a| a.end.as_ref().unwrap().0 - a.start)
        .collect();
    assert_eq!(timeouts, vec![Duration::from_secs(31); 2]);
    assert!(end - e.t0 >= Duration::from_secs(31));
}

/// `auth = "cert"` with one certificate for every peer (`peer0` of
/// [`crate::config::tests::pki`]) against a gateway with its own (`peer1`,
/// the loadtest's `remote_id` its DN): all up; a gateway that trusts
/// another CA refuses peers 0-2 (its AUTHENTICATION_FAILED notify), and a
/// gateway certificate of another CA is refused by the peers: every
/// attempt then ends as AUTHENTICATION_FAILED, none as a timeout.
#[test]
fn certificates_authenticate_and_wrong_cas_fail_as_authentication_failed() {
    use std::sync::Arc;
    use xdpsec_ike::cert::Credentials;
    let d = crate::config::tests::pki("engine");
    let f = |n: &str| std::fs::read(d.join(n)).unwrap();
    let ds = d.display();
    let text = CONFIG.replace(
        "psk = \"load test key\"",
        &format!(
            "auth = \"cert\"\ncert_file = \"{ds}/peer0.crt\"\nkey_file = \"{ds}/peer0.key\"\nca_file = \"{ds}/ca.crt\"\nremote_id = \"O=lt, CN=peer1\""
        ),
    );
    let peers = |text: &str, n: u64| {
        let c = LoadtestConfig::parse(text).unwrap();
        (0..n).map(|k| c.peer(k).unwrap().2).collect::<Vec<_>>()
    };
    let gw_cert = |ca: &str| {
        Some(Arc::new(
            Credentials::from_pem(&f("peer1.crt"), &f("peer1.key"), &f(ca)).unwrap(),
        ))
    };
    let opts = || Options {
        concurrency: 100,
        ..Options::default()
    };
    let summary = |e: &Engine, n| Summary::of(e.accounting(), n, Duration::ZERO, 0.0, false);
    // All up, both sides authenticated by certificate.
    let (e, _, _, _) = run_peers(
        peers(&text, 10),
        opts(),
        |_, r| {
            r.cert = gw_cert("ca.crt");
            true
        },
        Duration::ZERO,
    );
    let s = summary(&e, 10);
    assert_eq!((s.attempts, s.up), (10, 10), "{s:?}");
    assert!(s.failed.is_empty(), "{s:?}");
    // The gateway trusts another CA for peers 0-2.
    let (e, _, _, _) = run_peers(
        peers(&text, 10),
        opts(),
        |k, r| {
            r.cert = gw_cert(if k < 3 { "other.crt" } else { "ca.crt" });
            true
        },
        Duration::ZERO,
    );
    let s = summary(&e, 10);
    assert_eq!(s.up, 7, "{s:?}");
    let got: Vec<(&str, u64)> = s.failed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(got, vec![("AUTHENTICATION_FAILED", 3)]);
    // The peers trust another CA: the gateway's certificate is refused.
    let wrong = text.replace("ca.crt", "other.crt");
    let (e, _, _, _) = run_peers(
        peers(&wrong, 5),
        opts(),
        |_, r| {
            r.cert = gw_cert("ca.crt");
            true
        },
        Duration::ZERO,
    );
    let s = summary(&e, 5);
    assert_eq!(s.up, 0, "{s:?}");
    let got: Vec<(&str, u64)> = s.failed.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(got, vec![("AUTHENTICATION_FAILED", 5)]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn interrupted_attempts_are_counted() {
    let ini = initiators(10);
    let t0 = Instant::now();
    let mut e = Engine::new(ini, Options::default(), t0);
    e.tick(t0);
    assert_eq!(e.in_flight(), 10);
    assert_eq!(e.take_sends().len(), 10);
    e.finish(t0 + Duration::from_millis(5));
    let s = Summary::of(e.accounting(), 10, Duration::ZERO, 0.0, false);
    assert_eq!(s.failed.get("INTERRUPTED"), Some(&10));
    assert_eq!(s.attempts, 10);
    assert!(e.setup_done());
}

#[test]
fn rekeys_on_schedule() {
    let opts = Options {
        rekey_every: Some(Duration::from_secs(10)),
        ..Options::default()
    };
    // Held 35 s: three rekeys of each of the five tunnels.
    let (e, _, _, end) = run(5, opts, |_, _| true, Duration::from_secs(35));
    assert_eq!(e.accounting().up(), 5);
    assert_eq!(e.accounting().rekeys.len(), 15);
    for i in 0..5 {
        assert!(e.outbound(i).is_some());
        assert!(!e.rekeying(i, end));
    }
}

#[test]
fn probes_count_across_a_rekey_until_it_settles() {
    let opts = Options {
        rekey_every: Some(Duration::from_secs(10)),
        ..Options::default()
    };
    // One tunnel held 25 s: rekeyed at about 10 and 20 s.
    let (e, _, _, end) = run(1, opts, |_, _| true, Duration::from_secs(25));
    let rekeys = &e.accounting().rekeys;
    assert_eq!(rekeys.len(), 2);
    let last = e.t0 + rekeys[1];
    // The new child SA is in use, but the switch has not settled yet.
    assert!(e.rekeying(0, last));
    assert!(e.rekeying(0, last + REKEY_SETTLE - Duration::from_millis(1)));
    assert!(!e.rekeying(0, last + REKEY_SETTLE));
    assert!(!e.rekeying(0, end));
}

/// Each failure event of a core ends its attempt under that failure's
/// name, once; events that end nothing (a refused rekey while
/// negotiating, a removal before the tunnel was up) end nothing.
#[test]
fn the_cores_failure_events_end_attempts_by_name() {
    use xdpsec_ike::Failure;
    let cases = [
        (Failure::Refused { notify: 14 }, "NO_PROPOSAL_CHOSEN"),
        (Failure::Refused { notify: 43 }, "TEMPORARY_FAILURE"),
        (Failure::Refused { notify: 9999 }, "OTHER_ERROR_NOTIFY"),
        (Failure::Refused { notify: 0 }, "OTHER_ERROR_NOTIFY"),
        (Failure::Refused { notify: 24 }, "AUTHENTICATION_FAILED"),
        (Failure::Refused { notify: 36 }, "INTERNAL_ADDRESS_FAILURE"),
        (Failure::Refused { notify: 35 }, "NO_ADDITIONAL_SAS"),
        (Failure::Refused { notify: 38 }, "TS_UNACCEPTABLE"),
        (Failure::DhGroup, "INVALID_KE_PAYLOAD"),
        (Failure::NoAnswer, "TIMEOUT"),
        (Failure::Authentication, "AUTHENTICATION_FAILED"),
    ];
    let n = cases.len() as u64;
    let t0 = Instant::now();
    let opts = Options {
        concurrency: cases.len(),
        ..Options::default()
    };
    let mut e = Engine::new(initiators(n), opts, t0);
    e.tick(t0);
    assert_eq!(e.in_flight(), cases.len());
    let ev = |event| Action::Event {
        tunnel: 1,
        peer: "2001:db8:100::1".parse().unwrap(),
        event,
    };
    for (i, (f, _)) in cases.iter().enumerate() {
        e.apply(
            i,
            t0,
            vec![
                ev(TunnelEvent::RekeyRefused),
                ev(TunnelEvent::Removed(Removal::DeadPeer)),
            ],
        );
        assert_eq!(e.in_flight(), cases.len() - i, "ended by a non-failure");
        e.apply(i, t0, vec![ev(TunnelEvent::Failure(*f))]);
        // Once ended, a second failure counts nothing.
        e.apply(i, t0, vec![ev(TunnelEvent::Failure(*f))]);
    }
    let s = summary(&e, n);
    let mut want = std::collections::BTreeMap::new();
    for (_, name) in cases {
        *want.entry(name.to_string()).or_insert(0u64) += 1;
    }
    assert_eq!(s.failed, want, "{s:?}");
    assert_eq!((s.up, s.deleted_by_gateway, s.dead_by_dpd), (0, 0, 0));
}

#[test]
fn unknown_addresses_are_ignored() {
    let ini = initiators(2);
    let t0 = Instant::now();
    let mut e = Engine::new(ini, Options::default(), t0);
    let a: SocketAddr = "[2001:db8:100::9]:500".parse().unwrap();
    let b: SocketAddr = "[2001:db8:100::1]:500".parse().unwrap();
    assert!(!e.datagram(t0, a, b, &[0; 40]));
    // A peer not started yet has no core: ignored too.
    let first: IpAddr = "2001:db8:100::1001".parse().unwrap();
    assert!(!e.datagram(t0, SocketAddr::new(first, 500), b, &[0; 40]));
}

#[test]
fn deletes_are_paced_resent_and_answered() {
    let opts = Options {
        concurrency: 5,
        ..Options::default()
    };
    let (mut e, mut net, mut gw, _) = run(20, opts, |_, _| true, Duration::ZERO);
    assert_eq!(gw.sas(net.t).len(), 20);
    e.finish(net.t);
    // Five DELETEs out at once, the rest as they are answered.
    assert_eq!(e.take_sends().len(), 5);
    net.closing = true;
    // The first three are lost: sent again after 0.5 s.
    net.lose_deletes = 3;
    let t = net.t;
    // (The five taken above never reach the wire: they are resent too.)
    let end = net.run(&mut e, &mut gw, Duration::ZERO);
    assert!(e.closing_done());
    e.end_closing();
    assert_eq!(e.accounting().unanswered_deletes, 0);
    assert_eq!(gw.sas(end).len(), 0, "{:?}", gw.sas(end));
    assert!(
        end - t >= BYE_RESEND[0] && end - t < BYE_RESEND[0] * 3,
        "{:?}",
        end - t
    );
}

/// The first IKE_SA_INIT of each of five peers is lost: each core resends
/// it once, 1 s later, and the engine counts those five, also once the
/// cores are closed (the engine's own DELETE resends are not the cores').
#[test]
fn lost_requests_count_as_retransmissions() {
    let ini = initiators(5);
    let mut gw = responder(&ini, |_, _| true);
    let t0 = Instant::now();
    let opts = Options {
        concurrency: 5,
        ..Options::default()
    };
    let mut e = Engine::new(ini, opts.clone(), t0);
    let mut net = Net::at(t0, 5);
    net.run(&mut e, &mut gw, Duration::ZERO);
    assert_eq!(e.accounting().up(), 5);
    assert_eq!(e.accounting().setup_latencies()[0], 1.04);
    assert_eq!(e.retransmissions(), 5);
    e.finish(net.t);
    net.closing = true;
    net.lose_deletes = 2;
    net.run(&mut e, &mut gw, Duration::ZERO);
    assert!(e.closing_done());
    assert_eq!(e.retransmissions(), 5);
    // Nothing lost, nothing resent.
    let (e, ..) = run(5, opts, |_, _| true, Duration::ZERO);
    assert_eq!((e.accounting().up(), e.retransmissions()), (5, 0));
}

#[test]
fn late_wakeups_keep_the_rate() {
    // 100 a second, woken 3 ms late each time: still one start per 10 ms.
    let opts = Options {
        rate: Some(100.0),
        ..Options::default()
    };
    let t0 = Instant::now();
    let mut e = Engine::new(initiators(50), opts, t0);
    let mut t = t0;
    while e.accounting().attempts.len() < 50 {
        e.tick(t);
        e.take_sends();
        t = e.next_wakeup().unwrap() + Duration::from_millis(3);
    }
    let last = e.accounting().attempts[49].start;
    assert!(last < Duration::from_millis(500), "{last:?}");
}

/// Peer `i`'s inbound SPIs, sorted.
fn inbound_spis(e: &Engine, i: usize) -> Vec<u32> {
    let mut v: Vec<u32> = e.peers[i].inbound.keys().copied().collect();
    v.sort_unstable();
    v
}

#[test]
fn silent_peers_get_dpd_then_restart_and_replace_their_sas() {
    let opts = Options {
        fault: Some(FaultSpec {
            kind: FaultKind::Silent {
                restart_after: Duration::from_secs(6),
            },
            tunnels: 2,
        }),
        ..Options::default()
    };
    // The gateway runs DPD every 2 s.
    let tweak = |_: usize, r: &mut PeerConfig| {
        r.dpd = Some(Duration::from_secs(2));
        true
    };
    let (mut e, mut net, mut gw, _) = run(4, opts, tweak, Duration::from_secs(1));
    assert_eq!(e.up_now(), 4);
    e.take_ups();
    let before: Vec<u32> = (0..4).map(|i| e.outbound(i).unwrap().keys.spi).collect();
    let fault_t = net.t;
    assert_eq!(e.inject_fault(fault_t), 2);
    // Peers 0 and 1 are dead: no SA, nothing to send with.
    assert!(e.outbound(0).is_none() && e.outbound(1).is_none());
    assert!(inbound_spis(&e, 0).is_empty());
    assert_eq!(e.up_now(), 2);
    // 4 s: the gateway's DPD reached both, unanswered; nothing restarted yet.
    net.run(&mut e, &mut gw, Duration::from_secs(4));
    let faults = e.accounting().fault.clone().unwrap().1;
    assert_eq!(
        faults.iter().map(|f| f.peer).collect::<Vec<_>>(),
        vec![0, 1]
    );
    for f in &faults {
        let d = f.dpd.expect("the gateway's DPD request was seen") - f.at;
        assert!(d <= Duration::from_secs(3), "{d:?}");
        assert_eq!(f.recovered, None);
    }
    assert_eq!(e.up_now(), 2);
    // 6 s after the fault they restart: up again on new SAs, and the
    // gateway keeps one IKE SA for each (INITIAL_CONTACT replaced the old).
    let end = net.run(&mut e, &mut gw, Duration::from_secs(4));
    assert_eq!(e.up_now(), 4);
    let mut ups = e.take_ups();
    ups.sort_unstable();
    assert_eq!(ups, vec![0, 1]);
    for (i, old) in before.iter().enumerate() {
        let now = e.outbound(i).unwrap().keys.spi;
        assert_eq!(now != *old, i < 2, "peer {i}");
    }
    let sas = gw.sas(end);
    assert_eq!(sas.len(), 4, "{sas:?}");
    // Recovered once a reply comes through (the shell says so).
    e.replied(1, end);
    e.replied(1, end + Duration::from_secs(1));
    e.replied(2, end);
    let s = Summary::of(e.accounting(), 4, Duration::ZERO, 0.0, true);
    let f = s.failover.unwrap();
    assert_eq!(
        (
            f.fault.as_str(),
            f.tunnels,
            f.recovered,
            f.not_recovered,
            f.dpd_seen
        ),
        ("silent", 2, 1, 1, 2)
    );
    let ms = (end - fault_t).as_secs_f64() * 1000.0;
    assert_eq!(s.failover_ms.unwrap().max, round3(ms));
    assert!(!e.all_recovered());
}

#[test]
fn forgotten_inbound_sas_are_replaced_through_invalid_spi() {
    let opts = Options {
        fault: Some(FaultSpec {
            kind: FaultKind::ForgetSa,
            tunnels: 1,
        }),
        ..Options::default()
    };
    let (mut e, mut net, mut gw, _) = run(3, opts, |_, _| true, Duration::from_secs(1));
    e.take_ups();
    let old_in = inbound_spis(&e, 0);
    let old_out = e.outbound(0).unwrap().keys.spi;
    assert_eq!(old_in.len(), 1);
    // The replies find their tunnel by SPI.
    assert_eq!(e.peer_of_spi(old_in[0]), Some(0));
    let spi1 = inbound_spis(&e, 1)[0];
    assert_eq!(e.peer_of_spi(spi1), Some(1));
    assert_eq!(e.inject_fault(net.t), 1);
    // Its datapath forgot the inbound SA; the IKE SA and outbound stay.
    assert!(inbound_spis(&e, 0).is_empty());
    assert_eq!(e.peer_of_spi(old_in[0]), None);
    assert!(e.outbound(0).is_some());
    // The gateway's ESP on the forgotten SPI: INVALID_SPI goes out.
    let local: IpAddr = "2001:db8:100::1001".parse().unwrap();
    let i = e.peer_at(local).unwrap();
    assert_eq!(i, 0);
    e.unknown_spi(net.t, i, old_in[0]);
    assert_eq!(e.take_sends().len(), 1);
    // Rate-limited: the next ones within 10 s send nothing.
    e.unknown_spi(net.t, i, old_in[0]);
    assert!(e.take_sends().is_empty());
    e.unknown_spi(net.t, i, old_in[0]);
    // The gateway deletes that child and makes a new one.
    e.tick(net.t);
    net.run(&mut e, &mut gw, Duration::from_secs(2));
    let new_in = inbound_spis(&e, 0);
    assert_eq!(new_in.len(), 1);
    assert_ne!(new_in, old_in);
    assert_eq!(e.peer_of_spi(new_in[0]), Some(0));
    assert_ne!(e.outbound(0).unwrap().keys.spi, old_out);
    assert_eq!(e.take_ups(), vec![0]);
    // The others kept theirs.
    assert_eq!(inbound_spis(&e, 1).len(), 1);
    e.replied(0, net.t);
    assert!(e.all_recovered());
}

#[test]
fn without_forget_sa_unknown_spis_send_nothing() {
    let (mut e, net, _, _) = run(1, Options::default(), |_, _| true, Duration::from_secs(1));
    e.unknown_spi(net.t, 0, 0x1234_5678);
    assert!(e.take_sends().is_empty());
    assert_eq!(e.inject_fault(net.t), 0);
    assert!(!e.all_recovered());
}

#[test]
fn fault_specs_parse() {
    assert_eq!(
        FaultSpec::parse("silent:5:2.5"),
        Ok(FaultSpec {
            kind: FaultKind::Silent {
                restart_after: Duration::from_millis(2500)
            },
            tunnels: 5
        })
    );
    assert_eq!(
        FaultSpec::parse("silent:3").map(|f| f.kind),
        Ok(FaultKind::Silent {
            restart_after: Duration::from_secs(10)
        })
    );
    assert_eq!(
        FaultSpec::parse("forget-sa:7"),
        Ok(FaultSpec {
            kind: FaultKind::ForgetSa,
            tunnels: 7
        })
    );
    for bad in [
        "silent",
        "silent:0",
        "silent:x",
        "silent:2:-1",
        "forget-sa:2:3",
        "dead:2",
        "",
        "silent:2:1:1",
    ] {
        let e = FaultSpec::parse(bad).expect_err(bad);
        assert!(e.contains("--fault"), "{e}");
    }
}

/// Peer `k`'s source address (the gateway's name for it).
fn addr_of(k: u64) -> IpAddr {
    initiators(k + 1)[k as usize].local
}

fn summary(e: &Engine, n: u64) -> Summary {
    Summary::of(e.accounting(), n, Duration::ZERO, 0.0, false)
}

/// The gateway deletes peer 1's IKE SA (an authenticated DELETE, its
/// `clear crypto ikev2 sa remote`): that tunnel counts once in
/// `deleted_by_gateway`, loses its child SA, is reported gone (its probes
/// stop), and does not negotiate again; the attempts' outcomes stay; the
/// final DELETEs go to the other two only, all answered.
#[test]
fn a_gateway_delete_of_the_ike_sa_counts_once() {
    let (mut e, mut net, mut gw, _) =
        run(3, Options::default(), |_, _| true, Duration::from_secs(1));
    assert_eq!(e.up_now(), 3);
    let a = gw.handle(
        net.t,
        Input::Command(Command::ClearIkeSas(Some(addr_of(1)))),
    );
    net.gw_actions(a);
    net.run(&mut e, &mut gw, Duration::from_secs(2));
    let s = summary(&e, 3);
    assert_eq!((s.attempts, s.up, s.deleted_by_gateway), (3, 3, 1), "{s:?}");
    assert_eq!((s.dead_by_dpd, s.unanswered_deletes), (0, 0), "{s:?}");
    assert_eq!(e.take_gone(), vec![1]);
    assert!(e.outbound(1).is_none() && inbound_spis(&e, 1).is_empty());
    assert_eq!(e.up_now(), 2);
    // The core would have negotiated anew after 5 s: it is gone, so the
    // gateway keeps two IKE SAs, and the count stays one.
    let end = net.run(&mut e, &mut gw, Duration::from_secs(20));
    assert_eq!(gw.sas(end).len(), 2, "{:?}", gw.sas(end));
    assert_eq!(summary(&e, 3).deleted_by_gateway, 1);
    assert!(e.take_gone().is_empty());
    e.finish(end);
    assert_eq!(e.take_sends().len(), 2);
    net.closing = true;
    let end = net.run(&mut e, &mut gw, Duration::ZERO);
    e.end_closing();
    let s = summary(&e, 3);
    assert_eq!(
        (s.deleted_by_gateway, s.unanswered_deletes),
        (1, 0),
        "{s:?}"
    );
    assert_eq!(s.up + s.failed.values().sum::<u64>(), s.attempts);
    assert!(gw.sas(end).is_empty());
}

/// The gateway rekeys peer 0's child SA (CREATE_CHILD_SA, then a DELETE of
/// the old one) and peer 1's IKE SA (then a DELETE of the old IKE SA):
/// neither is a removal; both tunnels stay up, on new SAs.
#[test]
fn a_gateway_rekey_deleting_the_old_sa_is_no_removal() {
    let opts = Options {
        keep_events: true,
        ..Options::default()
    };
    let (mut e, mut net, mut gw, _) = run(2, opts, |_, _| true, Duration::from_secs(1));
    let old_out = e.outbound(0).unwrap().keys.spi;
    let old_ike = gw.sas(net.t).iter().map(|s| s.spi_i).collect::<Vec<_>>();
    let a = gw.rekey_now(net.t, addr_of(0), false);
    net.gw_actions(a);
    let a = gw.rekey_now(net.t, addr_of(1), true);
    net.gw_actions(a);
    let end = net.run(&mut e, &mut gw, Duration::from_secs(10));
    let s = summary(&e, 2);
    assert_eq!((s.deleted_by_gateway, s.dead_by_dpd), (0, 0), "{s:?}");
    assert!(e.take_gone().is_empty());
    assert_eq!(e.up_now(), 2);
    assert_ne!(e.outbound(0).unwrap().keys.spi, old_out);
    // Peer 1's IKE SA is a new one (the gateway's SPI as its initiator);
    // the old one is gone on both sides, deleted by the gateway.
    let sas = gw.sas(end);
    assert_eq!(sas.len(), 2, "{sas:?}");
    let p1 = sas.iter().find(|s| s.remote.ip() == addr_of(1)).unwrap();
    assert!(!old_ike.contains(&p1.spi_i), "{sas:?}");
    // Peer 1 saw the old IKE SA's DELETE (one event), which removed
    // nothing: the new one carries on.
    let events = e.take_events();
    let deleted = TunnelEvent::Removed(Removal::DeletedByPeer { ike: true });
    assert_eq!(events, vec![(1, deleted)], "{events:?}");
}

/// The gateway deletes peer 0's only child SA (keeping the IKE SA): the
/// tunnel is gone (no child to carry traffic) and counts once; its IKE
/// SA still gets the final DELETE, answered, and not counted.
#[test]
fn a_gateway_delete_of_the_last_child_sa_counts() {
    let (mut e, mut net, mut gw, _) =
        run(2, Options::default(), |_, _| true, Duration::from_secs(1));
    let a = gw.handle(net.t, Input::Command(Command::ClearChildSas(addr_of(0))));
    net.gw_actions(a);
    let end = net.run(&mut e, &mut gw, Duration::from_secs(3));
    let s = summary(&e, 2);
    assert_eq!(s.deleted_by_gateway, 1, "{s:?}");
    assert_eq!(e.take_gone(), vec![0]);
    assert!(e.outbound(0).is_none());
    e.finish(end);
    net.closing = true;
    let end = net.run(&mut e, &mut gw, Duration::ZERO);
    e.end_closing();
    assert_eq!(summary(&e, 2).unanswered_deletes, 0);
    assert!(gw.sas(end).is_empty(), "{:?}", gw.sas(end));
}

/// A gateway that lost every IKE SA without telling (crashed and back,
/// or charon's INITIAL_CONTACT of another peer with the same identity):
/// the final DELETEs go unanswered, each sent 4 times (0.5, 1, 2 s), and
/// count in `unanswered_deletes`, 3 of 3; not as removals.
#[test]
fn final_deletes_unanswered_are_counted() {
    let ini = initiators(3);
    let (mut e, mut net, _, _) = run(3, Options::default(), |_, _| true, Duration::from_secs(1));
    let mut fresh = responder(&ini, |_, _| true);
    let t = net.t;
    e.finish(t);
    net.closing = true;
    let end = net.run(&mut e, &mut fresh, Duration::ZERO);
    e.end_closing();
    let s = summary(&e, 3);
    assert_eq!((s.up, s.unanswered_deletes), (3, 3), "{s:?}");
    assert_eq!((s.deleted_by_gateway, s.dead_by_dpd), (0, 0), "{s:?}");
    assert!(
        end - t >= BYE_RESEND.iter().sum::<Duration>(),
        "{:?}",
        end - t
    );
}

/// The matching of a DELETE's response: both SPIs, INFORMATIONAL, the
/// response flag, the message ID; protected (SK) or not (a notify).
#[test]
fn delete_answers_are_matched_by_header() {
    let mut req = vec![0u8; 40];
    req[..16].copy_from_slice(&[7; 16]);
    req[16] = 46;
    req[18] = 37;
    req[19] = 0x08;
    req[20..24].copy_from_slice(&5u32.to_be_bytes());
    let mut resp = req.clone();
    resp[19] = 0x20;
    assert_eq!(answers(&req, &resp), Some(true));
    let mut notify = resp.clone();
    notify[16] = 41;
    assert_eq!(answers(&req, &notify), Some(false));
    for (k, v) in [(3usize, 8u8), (12, 9), (18, 36), (19, 0x08), (23, 6)] {
        let mut other = resp.clone();
        other[k] = v;
        assert_eq!(answers(&req, &other), None, "byte {k}");
    }
    assert_eq!(answers(&req, &resp[..27]), None);
}

/// `dpd_seconds` on the peers, and the gateway loses their IKE SAs
/// silently: each peer's liveness check goes unanswered through the
/// core's retransmissions (2 s + 31 s): `dead_by_dpd` 2, not probed, no
/// final DELETE (nothing left to delete), nothing else counted.
#[test]
fn liveness_checks_unanswered_count_as_dead_by_dpd() {
    let mut ini = initiators(2);
    for p in &mut ini {
        p.dpd = Some(Duration::from_secs(2));
    }
    let (mut e, mut net, _, _) = run_peers(
        ini.clone(),
        Options::default(),
        |_, _| true,
        Duration::from_secs(1),
    );
    let mut fresh = responder(&ini, |_, _| true);
    let end = net.run(&mut e, &mut fresh, Duration::from_secs(40));
    let s = summary(&e, 2);
    assert_eq!((s.dead_by_dpd, s.deleted_by_gateway), (2, 0), "{s:?}");
    let mut gone = e.take_gone();
    gone.sort_unstable();
    assert_eq!(gone, vec![0, 1]);
    e.finish(end);
    assert!(e.take_sends().is_empty());
    e.end_closing();
    assert_eq!(summary(&e, 2).unanswered_deletes, 0);
}

/// A tunnel gone (the shell is told by [`Engine::take_gone`]) is probed no
/// more, and the probes it sent during a rekey are not counted lost.
#[test]
fn gone_tunnels_are_not_probed_and_lose_nothing_in_rekeys() {
    let (e, net, _, _) = run(2, Options::default(), |_, _| true, Duration::from_secs(1));
    let mut t = crate::traffic::Traffic::new(10.0, 2);
    let src: IpAddr = "2001:db8:1::1".parse().unwrap();
    let dst: IpAddr = "2001:db8:2::1".parse().unwrap();
    for i in 0..2 {
        t.tunnel_up(i, net.t);
    }
    let mut due = t.take_due(net.t);
    due.sort_unstable();
    assert_eq!(due, vec![0, 1]);
    for i in due {
        let keys = &e.outbound(i).unwrap().keys;
        // Both sent while a rekey was under way, neither answered.
        assert!(t.probe(i, keys, src, dst, true, net.t).is_some());
    }
    t.tunnel_gone(1);
    let later = net.t + Duration::from_secs(5);
    let due = t.take_due(later);
    assert!(due.contains(&0) && !due.contains(&1), "{due:?}");
    let tot = t.totals(later);
    assert_eq!((tot.sent, tot.lost_in_rekeys), (2, 1));
}
