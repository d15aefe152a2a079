//! The BFD target: the codec on the raw input, then two BFD cores with a
//! few sessions exchanging control packets, the script choosing to deliver,
//! change, drop or forge packets, advance the clock and give commands.
//! Checks: no panic; a packet the codec refuses is counted in exactly the
//! drop counter of its error, any other packet in at most one; every packet
//! a core sends parses; no more sessions than were added.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use xdpsec_bfd::wire::{Packet, Repr};
use xdpsec_bfd::{Action, Bfd, Command, Input, RxDrop, SessionConfig};

use crate::Script;

/// Session ids the script uses (the shell's names; the same on both cores).
const SESSIONS: u64 = 4;
/// Packets in flight at most (the harness's own bound).
const IN_FLIGHT: usize = 256;

/// The codec alone: parse, and a parsed packet emits back to itself.
fn codec(data: &[u8]) -> Result<Repr, RxDrop> {
    let p = Packet::new_checked(data).map_err(RxDrop::from)?;
    let r = Repr::parse(&p).map_err(RxDrop::from)?;
    let again = r.to_bytes();
    let back = Repr::parse(&Packet::new_checked(&again[..]).expect("emitted packet too short"))
        .expect("an emitted packet fails its own parse");
    assert_eq!(back, r, "emit/parse round trip");
    Ok(r)
}

fn drops(b: &Bfd) -> Vec<u64> {
    b.drops().map(|(_, n)| n).collect()
}

/// The BFD target.
pub fn bfd(data: &[u8]) {
    let _ = codec(data);
    let mut s = Script::new(data);
    let mut now = Instant::now();
    let mut cores = [Bfd::new(1), Bfd::new(2)];
    // (to core, session, packet)
    let mut wire: VecDeque<(usize, u64, Vec<u8>)> = VecDeque::new();
    let run = |cores: &mut [Bfd; 2],
               side: usize,
               now: Instant,
               input: Input<'_>,
               wire: &mut VecDeque<_>| {
        for a in cores[side].handle(now, input) {
            if let Action::Send { session, data } = a {
                codec(&data).expect("the core sent a packet that does not parse");
                if wire.len() < IN_FLIGHT {
                    wire.push_back((1 - side, session, data));
                }
            }
        }
    };
    for side in 0..2 {
        for session in 0..SESSIONS {
            let config = SessionConfig::default();
            run(
                &mut cores,
                side,
                now,
                Input::Command(Command::Add { session, config }),
                &mut wire,
            );
        }
    }
    let mut steps = 0;
    while !s.done() && steps < 2000 {
        steps += 1;
        match s.u8() % 8 {
            op @ 0..=2 => {
                // Deliver the next packet in flight: as sent, changed, or
                // a forged one.
                let (side, session, mut pkt) = if op == 2 {
                    let side = usize::from(s.u8() & 1);
                    let session = u64::from(s.u8()) % (SESSIONS + 1);
                    (side, session, s.bytes().to_vec())
                } else {
                    let Some(x) = wire.pop_front() else { continue };
                    x
                };
                if op == 1 {
                    s.mutate(&mut pkt);
                }
                let before = drops(&cores[side]);
                run(
                    &mut cores,
                    side,
                    now,
                    Input::Packet {
                        session,
                        data: &pkt,
                    },
                    &mut wire,
                );
                let after = drops(&cores[side]);
                let rose: Vec<usize> = (0..before.len())
                    .filter(|&i| after[i] != before[i])
                    .collect();
                let total: u64 = after.iter().sum::<u64>() - before.iter().sum::<u64>();
                assert!(total <= 1, "one packet counted {total} drops");
                if let Err(e) = codec(&pkt) {
                    let i = RxDrop::ALL
                        .iter()
                        .position(|r| *r == e)
                        .expect("a drop reason");
                    assert_eq!(
                        rose,
                        vec![i],
                        "a packet the codec refuses ({e:?}) is counted there"
                    );
                }
            }
            3 => {
                let _ = wire.pop_front();
            }
            4 => {
                // To the next deadline (at most a minute on).
                let next = cores.iter().filter_map(Bfd::next_timeout).min();
                if let Some(t) = next {
                    now = now.max(t.min(now + Duration::from_secs(60)));
                }
                for side in 0..2 {
                    run(&mut cores, side, now, Input::Timer, &mut wire);
                }
            }
            5 => {
                now += Duration::from_millis(u64::from(s.u16()));
                for side in 0..2 {
                    run(&mut cores, side, now, Input::Timer, &mut wire);
                }
            }
            _ => {
                let side = usize::from(s.u8() & 1);
                let session = u64::from(s.u8()) % SESSIONS;
                let c = match s.u8() % 3 {
                    0 => Command::Add {
                        session,
                        config: SessionConfig {
                            hello: Duration::from_millis(u64::from(s.u16())),
                            multiplier: s.u8(),
                        },
                    },
                    1 => Command::Remove { session },
                    _ => Command::Flap { session },
                };
                run(&mut cores, side, now, Input::Command(c), &mut wire);
            }
        }
        for c in &cores {
            assert!(
                c.sessions(now).len() as u64 <= SESSIONS,
                "sessions grew past those added"
            );
        }
    }
}
