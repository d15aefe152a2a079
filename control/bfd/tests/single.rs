//! One core against a scripted peer: hand-made packets, so the tests can
//! set what a second core of ours never sends (Demand, Required Min RX of
//! zero or slower than our hello).

use std::time::{Duration, Instant};

use xdpsec_bfd::{
    Action, Bfd, Command, Diag, Input, SessionConfig, State,
    wire::{Packet, Repr},
};

const PEER_DISC: u32 = 0x0bad_cafe;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn peer(state: State, your: u32) -> Repr {
    Repr {
        diag: Diag::NoDiagnostic,
        state,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: PEER_DISC,
        your_discriminator: your,
        desired_min_tx: ms(100),
        required_min_rx: ms(100),
        required_min_echo_rx: Duration::ZERO,
    }
}

fn sends(acts: &[Action]) -> Vec<Repr> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Send { session: 1, data } => {
                Some(Repr::parse(&Packet::new_checked(&data[..]).unwrap()).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn changes(acts: &[Action]) -> Vec<(State, State, Diag)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::StateChange {
                session: 1,
                old,
                new,
                diag,
            } => Some((*old, *new, *diag)),
            _ => None,
        })
        .collect()
}

struct Scripted {
    core: Bfd,
    now: Instant,
    disc: u32,
}

impl Scripted {
    /// A session with a 100 ms hello, multiplier 3, brought Up by hand.
    fn up() -> Scripted {
        let now = Instant::now();
        let mut core = Bfd::new(11);
        let acts = core.handle(
            now,
            Input::Command(Command::Add {
                session: 1,
                config: SessionConfig {
                    hello: ms(100),
                    multiplier: 3,
                },
            }),
        );
        let first = sends(&acts);
        assert_eq!(first.len(), 1, "the first packet goes out at once");
        let f = first[0];
        assert_eq!(
            (f.state, f.your_discriminator, f.detect_mult),
            (State::Down, 0, 3)
        );
        assert_eq!((f.desired_min_tx, f.required_min_rx), (ms(1000), ms(100)));
        let disc = f.my_discriminator;
        let mut s = Scripted { core, now, disc };
        let acts = s.rx(peer(State::Down, 0));
        assert_eq!(
            changes(&acts),
            [(State::Down, State::Init, Diag::NoDiagnostic)]
        );
        let acts = s.rx(peer(State::Up, disc));
        assert_eq!(
            changes(&acts),
            [(State::Init, State::Up, Diag::NoDiagnostic)]
        );
        s
    }

    fn rx(&mut self, r: Repr) -> Vec<Action> {
        self.core.handle(
            self.now,
            Input::Packet {
                session: 1,
                data: &r.to_bytes(),
            },
        )
    }

    /// Runs timers until `d` from now; returns (time from the start, actions).
    fn run(&mut self, d: Duration) -> Vec<(Instant, Action)> {
        let end = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.core.next_timeout().filter(|t| *t <= end) {
            self.now = t;
            out.extend(
                self.core
                    .handle(t, Input::Timer)
                    .into_iter()
                    .map(|a| (t, a)),
            );
        }
        self.now = end;
        out
    }
}

#[test]
fn poll_until_final_then_demand_mode_silences_periodic_packets() {
    let mut s = Scripted::up();
    let acts: Vec<Action> = s.run(ms(250)).into_iter().map(|(_, a)| a).collect();
    let polls = sends(&acts);
    assert!(!polls.is_empty());
    assert!(
        polls
            .iter()
            .all(|r| r.poll && r.state == State::Up && r.desired_min_tx == ms(100))
    );
    // The peer answers with Final and asks for Demand mode (RFC 5880 6.6):
    // with both Up, our periodic packets stop (6.8.7).
    let mut fin = peer(State::Up, s.disc);
    fin.final_ = true;
    fin.demand = true;
    assert!(sends(&s.rx(fin)).is_empty());
    let t_last = s.now;
    let acts = s.run(ms(1000));
    let sent: Vec<_> = acts
        .iter()
        .filter(|(_, a)| matches!(a, Action::Send { .. }))
        .collect();
    // Our detection time still runs on the peer's packets: 3 x 100 ms.
    let down = acts
        .iter()
        .find(|(_, a)| matches!(a, Action::StateChange { .. }))
        .expect("went Down");
    assert_eq!(down.0 - t_last, ms(300));
    assert!(
        sent.iter().all(|(t, _)| *t >= down.0),
        "nothing periodic while the peer is in Demand mode and both are Up"
    );
    assert!(!sent.is_empty(), "periodic packets again once Down");
    let v = s.core.session(s.now, 1).unwrap();
    assert_eq!(
        (v.state, v.diag),
        (State::Down, Diag::ControlDetectionTimeExpired)
    );
}

#[test]
fn a_poll_is_answered_at_once_with_a_final() {
    let mut s = Scripted::up();
    let mut p = peer(State::Up, s.disc);
    p.poll = true;
    let out = sends(&s.rx(p));
    assert_eq!(out.len(), 1);
    assert!(out[0].final_ && !out[0].poll, "never P and F together");
    assert_eq!(out[0].your_discriminator, PEER_DISC);
}

#[test]
fn the_peer_sets_the_pace_when_slower_or_asks_for_nothing() {
    let mut s = Scripted::up();
    let mut fin = peer(State::Up, s.disc);
    fin.final_ = true;
    fin.required_min_rx = ms(500);
    fin.desired_min_tx = ms(500);
    s.rx(fin);
    assert_eq!(s.core.session(s.now, 1).unwrap().tx_interval_ms, 500);
    // The first packet went out at `now` (when the session was added): the
    // next one, already scheduled 100 ms later, moves to 375-500 ms.
    let mut times = vec![s.now];
    for _ in 0..8 {
        let acts = s.run(ms(400));
        times.extend(
            acts.iter()
                .filter(|(_, a)| matches!(a, Action::Send { .. }))
                .map(|(t, _)| *t),
        );
        let mut keep = peer(State::Up, s.disc);
        keep.required_min_rx = ms(500);
        keep.desired_min_tx = ms(500);
        s.rx(keep);
    }
    assert!(s.core.is_up(1));
    let gaps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 4, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= ms(375) && *g <= ms(500)),
        "{gaps:?}"
    );
    // Required Min RX zero: the peer wants no packets (RFC 5880 6.8.7).
    let mut quiet = peer(State::Up, s.disc);
    quiet.required_min_rx = Duration::ZERO;
    s.rx(quiet);
    let acts = s.run(ms(250));
    assert!(acts.iter().all(|(_, a)| !matches!(a, Action::Send { .. })));
    assert_eq!(s.core.session(s.now, 1).unwrap().tx_interval_ms, 0);
}

#[test]
fn admin_down_from_the_peer_takes_the_session_down_signalled() {
    let mut s = Scripted::up();
    let mut p = peer(State::AdminDown, s.disc);
    p.diag = Diag::AdministrativelyDown;
    assert_eq!(
        changes(&s.rx(p)),
        [(State::Up, State::Down, Diag::NeighborSignaledSessionDown)]
    );
    // More AdminDown packets: we stay Down (no Init from AdminDown).
    assert!(changes(&s.rx(p)).is_empty());
    assert_eq!(s.core.session(s.now, 1).unwrap().state, State::Down);
}
