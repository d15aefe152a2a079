//! Cores against each other in memory with a mock clock: sessions come Up,
//! a lost peer is detected after exactly the detection time, a returning or
//! restarted peer brings the session Up again, flap and remove, parameter
//! changes through Poll/Final, many sessions in one core, discards counted.

mod common;

use std::time::Duration;

use common::{Net, cfg};
use proptest::prelude::*;
use xdpsec_bfd::{
    Bfd, Command, Diag, Input, RxDrop, SessionConfig, State,
    wire::{Packet, Repr},
};

const A: (usize, u64) = (0, 1);
const B: (usize, u64) = (1, 7);

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn up_pair(hello: u64, mult: u8) -> Net {
    let mut n = Net::new(2);
    n.link(A, B, cfg(hello, mult), cfg(hello, mult));
    n.run_until(Duration::from_secs(5));
    assert_eq!(n.state(A), Some(State::Up));
    assert_eq!(n.state(B), Some(State::Up));
    n
}

/// Times between consecutive periodic packets (Finals are answers, not
/// periodic) sent by `from` in [from_t, to_t].
fn periodic_gaps(n: &Net, from: (usize, u64), from_t: Duration, to_t: Duration) -> Vec<Duration> {
    let times: Vec<Duration> = n
        .sent(from)
        .into_iter()
        .filter(|(at, r, _)| !r.final_ && *at >= from_t && *at <= to_t)
        .map(|(at, _, _)| at)
        .collect();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn sessions_come_up_slow_then_fast_with_poll_final_and_jitter() {
    let mut n = Net::new(2);
    n.link(A, B, cfg(100, 3), cfg(100, 3));
    n.run_until(Duration::from_secs(5));
    for (me, peer) in [(A, B), (B, A)] {
        let ch = n.changes(me);
        assert_eq!(ch.last().unwrap().2, State::Up, "{me:?}: {ch:?}");
        assert_eq!(ch.iter().filter(|c| c.2 == State::Up).count(), 1);
        assert!(ch[0].1 == State::Down && matches!(ch[0].2, State::Init | State::Up));
        // The three-way handshake runs at the slow rate: about one or two
        // 1 s intervals.
        assert!(
            ch.last().unwrap().0 <= Duration::from_millis(2100),
            "{ch:?}"
        );
        let v = n.cores[me.0].session(n.now, me.1).unwrap();
        let pv = n.cores[peer.0].session(n.now, peer.1).unwrap();
        assert_ne!(v.local_discriminator, 0);
        assert_eq!(v.remote_discriminator, pv.local_discriminator);
        assert_eq!(v.remote_state, State::Up);
        assert_eq!((v.tx_interval_ms, v.hello_ms, v.multiplier), (100, 100, 3));
        assert_eq!(v.transitions, 1);
        assert_eq!(v.diag, Diag::NoDiagnostic);
        assert!(v.uptime >= Duration::from_secs(2), "{v:?}");
    }
    let up_at = n.changes(A).last().unwrap().0;
    let sent = n.sent(A);
    // Not Up: Desired Min TX at least 1 s (RFC 5880 6.8.3), and packets at
    // least 750 ms apart (1 s less 25 % jitter).
    for (at, r, _) in &sent {
        if r.state != State::Up {
            assert!(r.desired_min_tx >= Duration::from_secs(1), "{at:?} {r:?}");
        }
    }
    for g in periodic_gaps(&n, A, Duration::ZERO, up_at - ms(1)) {
        assert!(g >= ms(750), "slow rate while not Up: {g:?}");
    }
    // Coming Up changed Desired Min TX: a Poll Sequence, answered by a Final.
    let polls: Vec<_> = sent.iter().filter(|(_, r, _)| r.poll).collect();
    assert!(!polls.is_empty(), "A polled after coming Up");
    assert!(
        polls
            .iter()
            .all(|(at, r, _)| *at >= up_at && r.desired_min_tx == ms(100) && !r.final_)
    );
    assert!(n.sent(B).iter().any(|(_, r, _)| r.final_ && !r.poll));
    // Steady state: 75-100 ms apart, jittered (not all the same).
    let gaps = periodic_gaps(&n, A, Duration::from_secs(3), Duration::from_secs(5));
    assert!(gaps.len() > 15, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= ms(75) && *g <= ms(100)),
        "{gaps:?}"
    );
    let mut distinct = gaps.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 3, "jittered: {gaps:?}");
    // After the poll: no more P bits.
    assert!(
        sent.iter()
            .filter(|(at, _, _)| *at >= Duration::from_secs(3))
            .all(|(_, r, _)| !r.poll)
    );
}

#[test]
fn sdwan_defaults_come_up_without_a_poll() {
    let mut n = Net::new(2);
    n.link(A, B, SessionConfig::default(), SessionConfig::default());
    n.run_until(Duration::from_secs(10));
    let v = n.cores[0].session(n.now, 1).unwrap();
    assert_eq!(v.state, State::Up);
    assert_eq!(
        (v.tx_interval_ms, v.hello_ms, v.multiplier),
        (1000, 1000, 7)
    );
    // Desired Min TX is 1 s whether Up or not: nothing to poll for.
    assert!(n.sent(A).iter().all(|(_, r, _)| !r.poll));
}

#[test]
fn multiplier_one_jitters_at_most_ninety_percent() {
    let mut n = up_pair(100, 1);
    n.run_for(Duration::from_secs(3));
    let gaps = periodic_gaps(&n, A, Duration::from_secs(5), Duration::from_secs(8));
    assert!(gaps.len() > 25);
    assert!(
        gaps.iter().all(|g| *g >= ms(75) && *g <= ms(90)),
        "{gaps:?}"
    );
}

/// Cuts B -> A and returns (time of the last packet A received from B, the
/// time A went Down, its diagnostic).
fn cut_and_detect(n: &mut Net, run: Duration) -> (Duration, Duration, Diag) {
    let cut = n.elapsed();
    n.set_open(B, false);
    n.run_for(run);
    let last_rx = n
        .sent(B)
        .into_iter()
        .filter(|(_, _, delivered)| *delivered)
        .map(|(at, _, _)| at)
        .max()
        .unwrap();
    assert!(last_rx <= cut);
    let downs: Vec<_> = n.changes(A).into_iter().filter(|c| c.0 >= cut).collect();
    assert_eq!(
        downs.len(),
        1,
        "exactly one change after the cut: {downs:?}"
    );
    assert_eq!((downs[0].1, downs[0].2), (State::Up, State::Down));
    (last_rx, downs[0].0, downs[0].3)
}

#[test]
fn lost_peer_detected_after_exactly_the_detection_time() {
    // (hello ms, A's multiplier, B's multiplier): A's detection time is
    // B's multiplier times B's interval (RFC 5880 6.8.4).
    for (hello, ma, mb) in [(100, 3, 3), (1000, 7, 7), (50, 3, 5), (20, 1, 1)] {
        let mut n = Net::new(2);
        n.link(A, B, cfg(hello, ma), cfg(hello, mb));
        n.run_until(Duration::from_secs(15));
        assert_eq!(n.state(A), Some(State::Up));
        let detect = ms(hello) * u32::from(mb);
        let (last_rx, down_at, diag) = cut_and_detect(&mut n, detect * 3);
        assert_eq!(
            down_at - last_rx,
            detect,
            "hello {hello} mult {mb}: down exactly one detection time after the last packet"
        );
        assert_eq!(diag, Diag::ControlDetectionTimeExpired);
        let v = n.cores[0].session(n.now, 1).unwrap();
        assert_eq!(v.remote_discriminator, 0, "RFC 5880 6.8.1");
        assert_eq!(v.diag, Diag::ControlDetectionTimeExpired);
        // B still hears A: A's Down packet takes it Down, signalled.
        let b = n.changes(B);
        let b_down = b.iter().find(|c| c.1 == State::Up).unwrap();
        assert_eq!(
            (b_down.2, b_down.3),
            (State::Down, Diag::NeighborSignaledSessionDown)
        );
        assert!(
            b_down.0 >= down_at && b_down.0 <= down_at + ms(1000),
            "{b:?}"
        );
    }
}

#[test]
fn returning_peer_brings_the_session_up_again() {
    let mut n = up_pair(100, 3);
    cut_and_detect(&mut n, Duration::from_secs(2));
    assert_eq!(n.state(A), Some(State::Down));
    // Stays Down while the peer stays away.
    n.run_for(Duration::from_secs(3));
    assert_eq!(n.state(A), Some(State::Down));
    n.set_open(B, true);
    n.run_for(Duration::from_secs(4));
    for me in [A, B] {
        let v = n.cores[me.0].session(n.now, me.1).unwrap();
        assert_eq!(v.state, State::Up, "{me:?}");
        assert_eq!(v.transitions, 3, "up, down, up");
        assert_eq!(v.diag, Diag::NoDiagnostic);
        assert!(v.uptime < Duration::from_secs(4));
        assert_eq!(v.tx_interval_ms, 100);
    }
}

#[test]
fn restarted_peer_with_a_new_discriminator_comes_up_again() {
    let mut n = up_pair(100, 3);
    let old = n.cores[0].session(n.now, 1).unwrap().remote_discriminator;
    n.cores[1] = Bfd::new(0xabcdef);
    n.command(
        1,
        Command::Add {
            session: 7,
            config: cfg(100, 3),
        },
    );
    n.run_for(Duration::from_secs(5));
    let a = n.cores[0].session(n.now, 1).unwrap();
    let b = n.cores[1].session(n.now, 7).unwrap();
    assert_eq!((a.state, b.state), (State::Up, State::Up));
    assert_eq!(a.remote_discriminator, b.local_discriminator);
    assert_ne!(a.remote_discriminator, old);
    assert_eq!(a.transitions, 3);
}

#[test]
fn flap_goes_admin_down_then_up_again_counting_transitions() {
    let mut n = up_pair(100, 3);
    let t = n.elapsed();
    n.command(0, Command::Flap { session: 1 });
    let a: Vec<_> = n.changes(A).into_iter().filter(|c| c.0 >= t).collect();
    assert_eq!(
        a.iter().map(|c| (c.1, c.2, c.3)).collect::<Vec<_>>()[..2],
        [
            (State::Up, State::AdminDown, Diag::AdministrativelyDown),
            (State::AdminDown, State::Down, Diag::AdministrativelyDown)
        ]
    );
    // The AdminDown packet reached B at once.
    let b: Vec<_> = n.changes(B).into_iter().filter(|c| c.0 >= t).collect();
    assert_eq!(
        (b[0].0, b[0].1, b[0].2, b[0].3),
        (t, State::Up, State::Down, Diag::NeighborSignaledSessionDown)
    );
    assert!(!n.cores[0].is_up(1) && !n.cores[1].is_up(7));
    n.run_for(Duration::from_secs(4));
    for me in [A, B] {
        let v = n.cores[me.0].session(n.now, me.1).unwrap();
        assert_eq!((v.state, v.transitions), (State::Up, 3), "{me:?}");
    }
    n.command(1, Command::Flap { session: 7 });
    n.run_for(Duration::from_secs(4));
    for me in [A, B] {
        let v = n.cores[me.0].session(n.now, me.1).unwrap();
        assert_eq!((v.state, v.transitions), (State::Up, 5), "{me:?}");
    }
}

#[test]
fn parameter_change_uses_poll_and_final() {
    let mut n = up_pair(100, 3);
    // B's Final cannot reach A yet: the increase waits for it (RFC 5880 6.8.3).
    n.set_open(B, false);
    let t = n.elapsed();
    n.command(
        0,
        Command::Add {
            session: 1,
            config: cfg(300, 3),
        },
    );
    n.run_for(ms(150));
    let polls: Vec<_> = n
        .sent(A)
        .into_iter()
        .filter(|(at, _, _)| *at >= t)
        .collect();
    assert!(polls.len() >= 2, "{polls:?}");
    assert!(
        polls
            .iter()
            .all(|(_, r, _)| r.poll && r.desired_min_tx == ms(300))
    );
    assert!(
        n.sent(B)
            .iter()
            .any(|(at, r, delivered)| *at >= t && r.final_ && !delivered),
        "B answered every Poll with a Final"
    );
    assert_eq!(n.cores[0].session(n.now, 1).unwrap().tx_interval_ms, 100);
    for g in periodic_gaps(&n, A, t, n.elapsed()) {
        assert!(g <= ms(100), "old interval until the Final: {g:?}");
    }
    // The Final gets through: the poll ends, the new interval applies.
    n.set_open(B, true);
    let t2 = n.elapsed();
    n.run_for(ms(200));
    let fin = n
        .sent(B)
        .into_iter()
        .find(|(at, r, d)| *at >= t2 && r.final_ && *d)
        .expect("a Final delivered")
        .0;
    assert_eq!(n.cores[0].session(n.now, 1).unwrap().tx_interval_ms, 300);
    n.run_for(Duration::from_secs(3));
    assert!(
        n.sent(A)
            .iter()
            .filter(|(at, _, _)| *at > fin)
            .all(|(_, r, _)| !r.poll),
        "no Poll after the Final"
    );
    let gaps = periodic_gaps(&n, A, fin + ms(1), n.elapsed());
    assert!(
        gaps.iter().all(|g| *g >= ms(225) && *g <= ms(300)),
        "{gaps:?}"
    );
    assert!(n.cores[0].is_up(1) && n.cores[1].is_up(7));
    // B now detects A's loss after 3 x 300 ms.
    let cut = n.elapsed();
    n.set_open(A, false);
    n.run_for(Duration::from_secs(2));
    let last_rx = n
        .sent(A)
        .into_iter()
        .filter(|(at, _, d)| *d && *at <= cut)
        .map(|(at, _, _)| at)
        .max()
        .unwrap();
    let down = n
        .changes(B)
        .into_iter()
        .find(|c| c.0 >= cut)
        .expect("B went Down");
    assert_eq!(
        (down.0 - last_rx, down.3),
        (ms(900), Diag::ControlDetectionTimeExpired)
    );
}

#[test]
fn remove_tells_the_peer_then_forgets_the_session() {
    let mut n = up_pair(100, 3);
    let t = n.elapsed();
    n.command(0, Command::Remove { session: 1 });
    assert_eq!(
        n.changes(A).last().map(|c| (c.0, c.2, c.3)),
        Some((t, State::AdminDown, Diag::AdministrativelyDown))
    );
    assert_eq!(
        n.changes(B).last().map(|c| (c.0, c.2, c.3)),
        Some((t, State::Down, Diag::NeighborSignaledSessionDown))
    );
    assert!(n.cores[0].sessions(n.now).is_empty(), "no longer shown");
    n.run_for(Duration::from_secs(3));
    // B stayed Down: AdminDown packets do not start the handshake.
    assert_eq!(n.state(B), Some(State::Down));
    assert_eq!(n.changes(B).last().unwrap().0, t);
    // AdminDown packets went out for one detection time, then nothing.
    let admin: Vec<_> = n
        .sent(A)
        .into_iter()
        .filter(|(at, _, _)| *at >= t)
        .collect();
    assert!(admin.iter().all(|(_, r, _)| r.state == State::AdminDown));
    assert!(admin.last().unwrap().0 < t + ms(300) + ms(1), "{admin:?}");
    assert_eq!(n.cores[0].next_timeout(), None);
    let unknown = n.cores[0]
        .drops()
        .find(|(r, _)| *r == RxDrop::UnknownSession)
        .unwrap()
        .1;
    assert!(
        unknown > 0,
        "B's packets to the removed session are counted"
    );
    // Added again: a new session with a new discriminator comes Up.
    n.command(
        0,
        Command::Add {
            session: 1,
            config: cfg(100, 3),
        },
    );
    n.run_for(Duration::from_secs(4));
    assert!(n.cores[0].is_up(1) && n.cores[1].is_up(7));
}

#[test]
fn many_sessions_in_one_core_are_independent() {
    // Core 0 has three sessions: two to core 1 (two colors), one to core 2.
    let mut n = Net::new(3);
    n.link((0, 1), (1, 1), cfg(100, 3), cfg(100, 3));
    n.link((0, 2), (1, 2), cfg(50, 5), cfg(50, 5));
    n.link((0, 3), (2, 9), cfg(100, 3), cfg(100, 3));
    n.run_until(Duration::from_secs(5));
    let views = n.cores[0].sessions(n.now);
    assert_eq!(
        views.iter().map(|v| v.session).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(views.iter().all(|v| v.state == State::Up));
    let mut d: Vec<u32> = views.iter().map(|v| v.local_discriminator).collect();
    d.sort();
    d.dedup();
    assert_eq!(d.len(), 3, "unique discriminators");
    assert!(d.iter().all(|x| *x != 0));
    n.set_open((1, 2), false);
    n.run_for(Duration::from_secs(2));
    assert!(n.cores[0].is_up(1) && !n.cores[0].is_up(2) && n.cores[0].is_up(3));
    // A packet of one session fed to another is refused by discriminator.
    let pkt = n.sent((1, 1)).last().unwrap().1.to_bytes();
    let before: u64 = n.cores[0].drops().map(|(_, c)| c).sum();
    let acts = n.cores[0].handle(
        n.now,
        Input::Packet {
            session: 3,
            data: &pkt,
        },
    );
    assert!(acts.is_empty());
    let mismatch = n.cores[0]
        .drops()
        .find(|(r, _)| *r == RxDrop::YourDiscriminatorMismatch)
        .unwrap()
        .1;
    assert_eq!(mismatch, 1);
    assert_eq!(n.cores[0].drops().map(|(_, c)| c).sum::<u64>(), before + 1);
}

fn drop_total(c: &Bfd) -> u64 {
    c.drops().map(|(_, n)| n).sum()
}

#[test]
fn each_discard_counts_once_under_its_name() {
    let mut n = up_pair(100, 3);
    let good = n.sent(B).last().unwrap().1.to_bytes();
    let cases: [(Vec<u8>, RxDrop); 8] = [
        (good[..20].to_vec(), RxDrop::Truncated),
        (
            {
                let mut p = good.clone();
                p[0] = 0x40;
                p
            },
            RxDrop::Version,
        ),
        (
            {
                let mut p = good.clone();
                p[3] = 30;
                p
            },
            RxDrop::Length,
        ),
        (
            {
                let mut p = good.clone();
                p[2] = 0;
                p
            },
            RxDrop::DetectMult,
        ),
        (
            {
                let mut p = good.clone();
                p[1] |= 0x01;
                p
            },
            RxDrop::Multipoint,
        ),
        (
            {
                let mut p = good.clone();
                p[4..8].fill(0);
                p
            },
            RxDrop::MyDiscriminator,
        ),
        (
            {
                let mut p = good.clone();
                p[8..12].fill(0);
                p
            },
            RxDrop::YourDiscriminatorZero,
        ),
        (
            {
                let mut p = good.clone();
                p[1] |= 0x04;
                p[3] = 26;
                p.extend([1, 2]);
                p
            },
            RxDrop::Authentication,
        ),
    ];
    for (pkt, reason) in cases {
        let before: Vec<u64> = n.cores[0].drops().map(|(_, c)| c).collect();
        let acts = n.cores[0].handle(
            n.now,
            Input::Packet {
                session: 1,
                data: &pkt,
            },
        );
        assert!(acts.is_empty(), "{reason:?}");
        let after: Vec<u64> = n.cores[0].drops().map(|(_, c)| c).collect();
        for ((r, b), a) in RxDrop::ALL.iter().zip(before).zip(after) {
            assert_eq!(
                a - b,
                u64::from(*r == reason),
                "{reason:?}: counter {}",
                r.name()
            );
        }
    }
    let before = drop_total(&n.cores[0]);
    n.cores[0].handle(
        n.now,
        Input::Packet {
            session: 42,
            data: &good,
        },
    );
    assert_eq!(drop_total(&n.cores[0]), before + 1);
    assert!(n.cores[0].is_up(1));
    let names: std::collections::HashSet<_> = RxDrop::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(names.len(), RxDrop::ALL.len());
}

proptest! {
    #[test]
    fn random_bytes_never_panic_and_count_at_most_once(
        data in proptest::collection::vec(any::<u8>(), 0..64),
        session in 0u64..3,
    ) {
        let mut c = Bfd::new(3);
        let t0 = std::time::Instant::now();
        c.handle(t0, Input::Command(Command::Add { session: 1, config: cfg(100, 3) }));
        let before = drop_total(&c);
        c.handle(t0, Input::Packet { session, data: &data });
        let after = drop_total(&c);
        let parses = Packet::new_checked(&data[..]).and_then(|p| Repr::parse(&p)).is_ok();
        if !parses || session != 1 {
            prop_assert_eq!(after, before + 1);
        } else {
            prop_assert!(after <= before + 1);
        }
        c.handle(t0 + Duration::from_secs(1), Input::Timer);
    }

    #[test]
    fn random_valid_packets_never_panic_a_session(
        mut data in proptest::collection::vec(any::<u8>(), 24..30),
        steps in 1usize..6,
    ) {
        // Mostly valid headers, so the state machine sees every state and
        // flag combination and any interval.
        data[0] = 0x20 | (data[0] & 0x1f);
        data[1] &= !0x05;
        data[2] = data[2].max(1);
        data[3] = 24;
        if data[4..8] == [0, 0, 0, 0] { data[4] = 1; }
        let mut c = Bfd::new(4);
        let t0 = std::time::Instant::now();
        c.handle(t0, Input::Command(Command::Add { session: 1, config: cfg(10, 1) }));
        let disc = c.session(t0, 1).unwrap().local_discriminator;
        if data[1] & 0x80 != 0 { data[8..12].copy_from_slice(&disc.to_be_bytes()); }
        let mut now = t0;
        for _ in 0..steps {
            c.handle(now, Input::Packet { session: 1, data: &data });
            if let Some(t) = c.next_timeout() {
                prop_assert!(t >= now);
                now = t;
                c.handle(now, Input::Timer);
            }
        }
    }

    #[test]
    fn repr_round_trips(
        diag in 0u8..32, sta in 0u8..4, p in any::<bool>(), f in any::<bool>(),
        cpi in any::<bool>(), d in any::<bool>(), mult in 1u8..=255,
        my in 1u32.., your in any::<u32>(), tx in any::<u32>(), rx in any::<u32>(), echo in any::<u32>(),
    ) {
        let state = State::from_wire(sta);
        let your = if matches!(state, State::Init | State::Up) { your.max(1) } else { your };
        let r = Repr {
            diag: Diag::from_wire(diag), state, poll: p, final_: f, cpi, demand: d,
            detect_mult: mult, my_discriminator: my, your_discriminator: your,
            desired_min_tx: Duration::from_micros(tx.into()),
            required_min_rx: Duration::from_micros(rx.into()),
            required_min_echo_rx: Duration::from_micros(echo.into()),
        };
        let bytes = r.to_bytes();
        prop_assert_eq!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap(), r);
    }
}
