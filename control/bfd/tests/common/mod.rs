//! An in-memory network of BFD cores with a mock clock: links join (core,
//! session) endpoints; packets arrive with zero delay; each direction of a
//! link can be cut.

#![allow(dead_code)]

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use xdpsec_bfd::{
    Action, Bfd, Command, Diag, Input, SessionConfig, SessionId, State,
    wire::{Packet, Repr},
};

/// A (core index, session id) pair.
pub type End = (usize, SessionId);

/// One recorded event.
#[derive(Debug, Clone)]
pub enum Event {
    /// `from` sent a packet (delivered or not).
    Sent {
        at: Duration,
        from: End,
        repr: Repr,
        delivered: bool,
    },
    /// A state change at `end`.
    Change {
        at: Duration,
        end: End,
        old: State,
        new: State,
        diag: Diag,
    },
}

/// A link between two endpoints; `open[0]` carries a -> b, `open[1]` b -> a.
pub struct Link {
    pub a: End,
    pub b: End,
    pub open: [bool; 2],
}

pub struct Net {
    pub t0: Instant,
    pub now: Instant,
    pub cores: Vec<Bfd>,
    pub links: Vec<Link>,
    pub events: Vec<Event>,
}

pub fn cfg(hello_ms: u64, multiplier: u8) -> SessionConfig {
    SessionConfig {
        hello: Duration::from_millis(hello_ms),
        multiplier,
    }
}

impl Net {
    pub fn new(cores: usize) -> Net {
        let t0 = Instant::now();
        Net {
            t0,
            now: t0,
            cores: (0..cores).map(|i| Bfd::new(0x5eed + i as u64)).collect(),
            links: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Joins two endpoints and adds both sessions.
    pub fn link(&mut self, a: End, b: End, ca: SessionConfig, cb: SessionConfig) {
        self.links.push(Link {
            a,
            b,
            open: [true, true],
        });
        self.command(
            a.0,
            Command::Add {
                session: a.1,
                config: ca,
            },
        );
        self.command(
            b.0,
            Command::Add {
                session: b.1,
                config: cb,
            },
        );
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Opens or cuts the direction from `from` to its peer.
    pub fn set_open(&mut self, from: End, open: bool) {
        for l in &mut self.links {
            if l.a == from {
                l.open[0] = open;
            }
            if l.b == from {
                l.open[1] = open;
            }
        }
    }

    pub fn command(&mut self, core: usize, cmd: Command) {
        let acts = self.cores[core].handle(self.now, Input::Command(cmd));
        self.process(core, acts);
    }

    fn peer(&self, from: End) -> Option<(End, bool)> {
        self.links.iter().find_map(|l| {
            if l.a == from {
                Some((l.b, l.open[0]))
            } else if l.b == from {
                Some((l.a, l.open[1]))
            } else {
                None
            }
        })
    }

    pub fn process(&mut self, core: usize, acts: Vec<Action>) {
        let mut queue: VecDeque<(usize, Action)> = acts.into_iter().map(|a| (core, a)).collect();
        while let Some((c, act)) = queue.pop_front() {
            let at = self.elapsed();
            match act {
                Action::StateChange {
                    session,
                    old,
                    new,
                    diag,
                } => self.events.push(Event::Change {
                    at,
                    end: (c, session),
                    old,
                    new,
                    diag,
                }),
                Action::Send { session, data } => {
                    let repr = Repr::parse(&Packet::new_checked(&data[..]).unwrap())
                        .expect("the core emits valid packets");
                    let peer = self.peer((c, session));
                    let delivered = peer.is_some_and(|(_, open)| open);
                    self.events.push(Event::Sent {
                        at,
                        from: (c, session),
                        repr,
                        delivered,
                    });
                    if let Some(((pc, ps), true)) = peer {
                        let acts = self.cores[pc].handle(
                            self.now,
                            Input::Packet {
                                session: ps,
                                data: &data,
                            },
                        );
                        queue.extend(acts.into_iter().map(|a| (pc, a)));
                    }
                }
            }
        }
    }

    /// Runs every timer up to `t0 + until`, in time order.
    pub fn run_until(&mut self, until: Duration) {
        let end = self.t0 + until;
        loop {
            let next = self.cores.iter().filter_map(|c| c.next_timeout()).min();
            match next {
                Some(t) if t <= end => {
                    assert!(t >= self.now, "timeouts never lie in the past");
                    self.now = t;
                    for i in 0..self.cores.len() {
                        if self.cores[i].next_timeout().is_some_and(|x| x <= t) {
                            let acts = self.cores[i].handle(t, Input::Timer);
                            self.process(i, acts);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.elapsed() + d;
        self.run_until(until);
    }

    pub fn changes(&self, end: End) -> Vec<(Duration, State, State, Diag)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Change {
                    at,
                    end: e,
                    old,
                    new,
                    diag,
                } if *e == end => Some((*at, *old, *new, *diag)),
                _ => None,
            })
            .collect()
    }

    pub fn sent(&self, from: End) -> Vec<(Duration, Repr, bool)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Sent {
                    at,
                    from: f,
                    repr,
                    delivered,
                } if *f == from => Some((*at, *repr, *delivered)),
                _ => None,
            })
            .collect()
    }

    pub fn state(&self, end: End) -> Option<State> {
        self.cores[end.0].session(self.now, end.1).map(|v| v.state)
    }
}
