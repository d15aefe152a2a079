//! BFD (RFC 5880 asynchronous mode) protocol core for xdpsec: no I/O, no
//! clocks, no threads.
//!
//! One [`Bfd`] holds every BFD session of the node, each keyed by a
//! [`SessionId`] the shell chooses (for SD-WAN, the tunnel/peer index). The
//! shell feeds received control packets, timer expiries and commands to
//! [`Bfd::handle`] with the current time and carries out the [`Action`]s
//! that come back; [`Bfd::next_timeout`] says when to call again. Tests run
//! two cores against each other in memory with a mock clock (boringtun's
//! shape, as `control/ike`).
//!
//! What the shell must do (single-hop BFD inside SD-WAN tunnels, RFC 5881):
//! - Send each [`Action::Send`] payload in inner IPv4/UDP from the sending
//!   TLOC's address to the receiving TLOC's, destination port
//!   [`timers::UDP_PORT`] (3784), a source port in 49152-65535 that stays
//!   the same for the session, TTL [`timers::TTL`] (255); encrypted on the
//!   session's tunnel.
//! - Feed every decrypted UDP/3784 payload of a tunnel as
//!   [`Input::Packet`] with that tunnel's session id, after discarding
//!   those whose TTL is not 255 (RFC 5881 5). The core does every other
//!   reception check and counts each discard in exactly one
//!   [`RxDrop`] counter ([`Bfd::drops`]).
//! - Call `handle(now, Input::Timer)` when [`Bfd::next_timeout`] passes.
//! - Route over a tunnel only while its session is Up: follow
//!   [`Action::StateChange`] (or [`Bfd::is_up`]). After
//!   [`Command::Remove`] the core still sends AdminDown packets for the
//!   session for one detection time, so the peer learns it at once; the
//!   shell may drop them if the tunnel is already gone.
//! - [`Command::Add`] when a tunnel appears (again with new parameters to
//!   change them: Poll/Final when Up), [`Command::Remove`] when it goes,
//!   [`Command::Flap`] for a clear/flap command.
//! - Seed the core from the OS's random source ([`Bfd::new`]): the seed
//!   picks discriminators and jitter.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod timers;
pub mod wire;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    time::{Duration, Instant},
};

pub use wire::{Diag, State};
use wire::{Packet, Repr};

use timers::{
    DEFAULT_HELLO, DEFAULT_MULTIPLIER, INITIAL_REMOTE_MIN_RX, JITTER_MAX_PERMILLE,
    JITTER_MAX_PERMILLE_MULT1, JITTER_MIN_PERMILLE, MAX_INTERVAL, MIN_HELLO, SLOW_TX,
};

/// The shell's name for a session (for SD-WAN: the tunnel/peer index).
pub type SessionId = u64;

/// Per-session parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Hello interval: our Desired Min TX and Required Min RX interval
    /// (SD-WAN `hello-interval`). Clamped to [`timers::MIN_HELLO`] ..=
    /// [`timers::MAX_INTERVAL`].
    pub hello: Duration,
    /// Detect multiplier (SD-WAN `multiplier`); 0 is taken as 1.
    pub multiplier: u8,
}

impl Default for SessionConfig {
    /// Cisco SD-WAN's defaults: hello 1000 ms, multiplier 7.
    fn default() -> Self {
        SessionConfig {
            hello: DEFAULT_HELLO,
            multiplier: DEFAULT_MULTIPLIER,
        }
    }
}

/// What the shell tells the core.
#[derive(Debug)]
pub enum Input<'a> {
    /// A BFD control packet (the UDP payload) received on session `session`.
    Packet {
        /// The session (tunnel) it arrived on.
        session: SessionId,
        /// The UDP payload.
        data: &'a [u8],
    },
    /// `next_timeout()` has passed.
    Timer,
    /// A command.
    Command(Command),
}

/// Commands: configuration and operator actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Create a session (Down, sending at once). On an existing session:
    /// change its parameters (a Poll Sequence when Up, RFC 5880 6.8.3).
    Add {
        /// The shell's id for it.
        session: SessionId,
        /// Hello and multiplier.
        config: SessionConfig,
    },
    /// Delete a session: it goes AdminDown (diagnostic Administratively
    /// Down), tells the peer for one detection time, then is forgotten.
    Remove {
        /// Which.
        session: SessionId,
    },
    /// Clear a session (the `flap` command): AdminDown, telling the peer at
    /// once, then Down, so that both ends come Up again through the usual
    /// three-way handshake.
    Flap {
        /// Which.
        session: SessionId,
    },
}

/// What the core asks the shell to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this control packet (UDP payload to port 3784) on the session's tunnel.
    Send {
        /// The session (tunnel).
        session: SessionId,
        /// The 24-byte BFD control packet.
        data: Vec<u8>,
    },
    /// The session's state changed (route over it only while Up; log it).
    StateChange {
        /// The session.
        session: SessionId,
        /// Previous state.
        old: State,
        /// New state.
        new: State,
        /// Why (RFC 5880 4.1 diagnostic; No Diagnostic when coming Up).
        diag: Diag,
    },
}

/// Why a received packet was discarded; each discard bumps exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RxDrop {
    /// Shorter than 24 bytes.
    Truncated,
    /// Version not 1.
    Version,
    /// Length field wrong for the packet.
    Length,
    /// Detect Mult zero.
    DetectMult,
    /// Multipoint bit set.
    Multipoint,
    /// My Discriminator zero.
    MyDiscriminator,
    /// Your Discriminator zero in an Init or Up packet.
    YourDiscriminatorZero,
    /// Authentication present, none configured.
    Authentication,
    /// No session with that id.
    UnknownSession,
    /// Your Discriminator is not the session's local discriminator.
    YourDiscriminatorMismatch,
    /// The session is AdminDown (being removed).
    AdminDown,
}

impl RxDrop {
    /// Every reason, in counter order.
    pub const ALL: [RxDrop; 11] = [
        RxDrop::Truncated,
        RxDrop::Version,
        RxDrop::Length,
        RxDrop::DetectMult,
        RxDrop::Multipoint,
        RxDrop::MyDiscriminator,
        RxDrop::YourDiscriminatorZero,
        RxDrop::Authentication,
        RxDrop::UnknownSession,
        RxDrop::YourDiscriminatorMismatch,
        RxDrop::AdminDown,
    ];

    /// Stable counter name (tests and `--json` may use it).
    pub const fn name(self) -> &'static str {
        match self {
            RxDrop::Truncated => "bfd_truncated",
            RxDrop::Version => "bfd_bad_version",
            RxDrop::Length => "bfd_bad_length",
            RxDrop::DetectMult => "bfd_zero_detect_mult",
            RxDrop::Multipoint => "bfd_multipoint",
            RxDrop::MyDiscriminator => "bfd_zero_my_discriminator",
            RxDrop::YourDiscriminatorZero => "bfd_zero_your_discriminator",
            RxDrop::Authentication => "bfd_auth_not_configured",
            RxDrop::UnknownSession => "bfd_unknown_session",
            RxDrop::YourDiscriminatorMismatch => "bfd_your_discriminator_mismatch",
            RxDrop::AdminDown => "bfd_admin_down",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl From<wire::Error> for RxDrop {
    fn from(e: wire::Error) -> RxDrop {
        match e {
            wire::Error::Truncated => RxDrop::Truncated,
            wire::Error::Version => RxDrop::Version,
            wire::Error::Length => RxDrop::Length,
            wire::Error::DetectMult => RxDrop::DetectMult,
            wire::Error::Multipoint => RxDrop::Multipoint,
            wire::Error::MyDiscriminator => RxDrop::MyDiscriminator,
            wire::Error::YourDiscriminator => RxDrop::YourDiscriminatorZero,
            wire::Error::Authentication => RxDrop::Authentication,
        }
    }
}

/// One session as `show sdwan bfd sessions` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The shell's id.
    pub session: SessionId,
    /// Local state.
    pub state: State,
    /// The peer's state, as last received.
    pub remote_state: State,
    /// Our discriminator.
    pub local_discriminator: u32,
    /// The peer's discriminator (0 until heard, or after detection expired).
    pub remote_discriminator: u32,
    /// Negotiated transmit interval before jitter, ms: max(our Desired
    /// Min TX in use, the peer's Required Min RX); 1000 or more while not Up.
    pub tx_interval_ms: u64,
    /// Configured hello interval, ms.
    pub hello_ms: u64,
    /// Our detect multiplier.
    pub multiplier: u8,
    /// Time Up (zero when not Up).
    pub uptime: Duration,
    /// Transitions of the up/down status: each entry into Up and each exit
    /// from Up counts one (a fresh session that came Up shows 1).
    pub transitions: u32,
    /// Local diagnostic: why the session last went down (No Diagnostic
    /// once Up again).
    pub diag: Diag,
}

#[derive(Debug)]
struct Session {
    config: SessionConfig,
    state: State,
    remote_state: State,
    local_disc: u32,
    remote_disc: u32,
    local_diag: Diag,
    /// bfd.RemoteMinRxInterval.
    remote_min_rx: Duration,
    /// Last received Desired Min TX Interval.
    remote_desired_tx: Duration,
    /// Last received Detect Mult (0: never heard).
    remote_mult: u8,
    remote_demand: bool,
    /// A Poll Sequence is in progress (RFC 5880 6.5).
    poll: bool,
    /// Desired Min TX actually used for timing: an increase while Up waits
    /// for the Final (RFC 5880 6.8.3).
    tx_in_use: Duration,
    /// Required Min RX used for the detection time: a decrease while Up
    /// waits for the Final (RFC 5880 6.8.3).
    rx_in_use: Duration,
    next_tx: Option<Instant>,
    /// When the last periodic packet went out.
    last_tx: Option<Instant>,
    detect_at: Option<Instant>,
    /// Set when removed: forgotten at this time.
    remove_at: Option<Instant>,
    up_since: Option<Instant>,
    transitions: u32,
    /// The deadline under which the session sits in `Bfd::deadlines`.
    queued: Option<Instant>,
}

impl Session {
    fn new(config: SessionConfig, local_disc: u32) -> Session {
        let mut s = Session {
            config,
            state: State::Down,
            remote_state: State::Down,
            local_disc,
            remote_disc: 0,
            local_diag: Diag::NoDiagnostic,
            remote_min_rx: INITIAL_REMOTE_MIN_RX,
            remote_desired_tx: Duration::ZERO,
            remote_mult: 0,
            remote_demand: false,
            poll: false,
            tx_in_use: Duration::ZERO,
            rx_in_use: Duration::ZERO,
            next_tx: None,
            last_tx: None,
            detect_at: None,
            remove_at: None,
            up_since: None,
            transitions: 0,
            queued: None,
        };
        s.tx_in_use = s.adv_tx();
        s.rx_in_use = s.adv_rx();
        s
    }

    /// bfd.DesiredMinTxInterval: the hello, at least 1 s while not Up
    /// (RFC 5880 6.8.3).
    fn adv_tx(&self) -> Duration {
        if self.state == State::Up {
            self.config.hello
        } else {
            self.config.hello.max(SLOW_TX)
        }
    }

    /// bfd.RequiredMinRxInterval: the hello.
    fn adv_rx(&self) -> Duration {
        self.config.hello
    }

    /// Periodic transmit interval before jitter (RFC 5880 6.8.7); None when
    /// the peer asked for no packets (Required Min RX zero).
    fn tx_interval(&self) -> Option<Duration> {
        if self.remote_min_rx.is_zero() {
            None
        } else {
            Some(self.tx_in_use.max(self.remote_min_rx))
        }
    }

    /// Detection time (RFC 5880 6.8.4, asynchronous mode): the peer's
    /// Detect Mult times the greater of our Required Min RX and its Desired
    /// Min TX. None before the peer was heard.
    fn detect_time(&self) -> Option<Duration> {
        (self.remote_mult != 0)
            .then(|| self.rx_in_use.max(self.remote_desired_tx) * u32::from(self.remote_mult))
    }

    fn packet(&self, final_: bool) -> Vec<u8> {
        Repr {
            diag: self.local_diag,
            state: self.state,
            // A packet never has both P and F (RFC 5880 6.5); the poll goes
            // on in the next periodic packet.
            poll: self.poll && !final_,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.config.multiplier,
            my_discriminator: self.local_disc,
            your_discriminator: self.remote_disc,
            desired_min_tx: self.adv_tx(),
            required_min_rx: self.adv_rx(),
            required_min_echo_rx: Duration::ZERO,
        }
        .to_bytes()
    }

    /// Applies a change of the advertised parameters (old values given):
    /// starts a Poll Sequence when Up, and applies at once what may be
    /// applied at once (RFC 5880 6.8.3).
    fn params_changed(&mut self, old_tx: Duration, old_rx: Duration, old_mult: u8) {
        let (tx, rx) = (self.adv_tx(), self.adv_rx());
        let up = self.state == State::Up;
        if up && (tx != old_tx || rx != old_rx || self.config.multiplier != old_mult) {
            self.poll = true;
        }
        if !up {
            self.poll = false;
        }
        if !up || tx <= self.tx_in_use {
            self.tx_in_use = tx;
        }
        if !up || rx >= self.rx_in_use {
            self.rx_in_use = rx;
        }
    }

    /// Moves the pending periodic transmission after the interval changed:
    /// sooner when it shrank (from the slow 1 s to the hello when coming
    /// Up, or the peer asking for faster packets), later when the peer asked
    /// for slower ones (never less than 75 % of the interval after the
    /// last periodic packet, RFC 5880 6.8.7), started when the peer allows
    /// packets again.
    fn reschedule_tx(&mut self, now: Instant, jitter: u64) {
        let Some(iv) = self.tx_interval() else {
            self.next_tx = None;
            return;
        };
        let step = jittered(iv, jitter, self.config.multiplier);
        match (self.next_tx, self.last_tx) {
            (None, _) => self.next_tx = Some(now + step),
            (Some(t), _) if t > now + iv => self.next_tx = Some(now + step),
            (Some(t), Some(last)) if t < last + iv * 3 / 4 => {
                self.next_tx = Some((last + step).max(now));
            }
            _ => {}
        }
    }
}

/// `iv` reduced by a random 0-25 % (by 10-25 % when the multiplier is 1),
/// picked by `r` (RFC 5880 6.8.7).
fn jittered(iv: Duration, r: u64, mult: u8) -> Duration {
    let max = if mult == 1 {
        JITTER_MAX_PERMILLE_MULT1
    } else {
        JITTER_MAX_PERMILLE
    };
    let permille = JITTER_MIN_PERMILLE + r % (max - JITTER_MIN_PERMILLE + 1);
    let us = iv.as_micros().min(u128::from(u64::MAX / 1000)) as u64;
    Duration::from_micros(us * permille / 1000)
}

/// The BFD core: every session of the node.
#[derive(Debug)]
pub struct Bfd {
    sessions: BTreeMap<SessionId, Session>,
    /// Each session's earliest deadline, so that timers and
    /// `next_timeout` cost O(log n) however many sessions there are.
    deadlines: BTreeSet<(Instant, SessionId)>,
    /// Local discriminators in use.
    discriminators: HashSet<u32>,
    rng: u64,
    drops: [u64; RxDrop::ALL.len()],
}

impl Bfd {
    /// A core with no sessions; `seed` (from the OS's random source in the
    /// daemon, fixed in tests) picks discriminators and jitter.
    pub fn new(seed: u64) -> Bfd {
        Bfd {
            sessions: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            discriminators: HashSet::new(),
            rng: seed,
            drops: [0; RxDrop::ALL.len()],
        }
    }

    // splitmix64: discriminators need to be unpredictable only as far as
    // the seed is (RFC 5880 6.8.1 asks for uniqueness, random is advised);
    // no crypto strength is needed, and a seeded generator keeps tests
    // reproducible.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random, non-zero discriminator no session of this core uses.
    fn new_discriminator(&mut self) -> u32 {
        loop {
            let d = self.random() as u32;
            if d != 0 && self.discriminators.insert(d) {
                return d;
            }
        }
    }

    /// Feeds one input at time `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Packet { session, data } => {
                self.receive(now, session, data, &mut out);
                self.requeue(session);
            }
            Input::Timer => self.timers(now, &mut out),
            Input::Command(Command::Add { session, config }) => {
                self.add(now, session, config, &mut out);
                self.requeue(session);
            }
            Input::Command(Command::Remove { session }) => {
                self.remove(now, session, &mut out);
                self.requeue(session);
            }
            Input::Command(Command::Flap { session }) => {
                self.flap(now, session, &mut out);
                self.requeue(session);
            }
        }
        out
    }

    /// When to call `handle(.., Input::Timer)` next.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Puts the session's earliest deadline into the index (after anything
    /// that may have changed its timers).
    fn requeue(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let due = [s.next_tx, s.detect_at, s.remove_at]
            .into_iter()
            .flatten()
            .min();
        if s.queued != due {
            if let Some(q) = s.queued {
                self.deadlines.remove(&(q, id));
            }
            if let Some(d) = due {
                self.deadlines.insert((d, id));
            }
            s.queued = due;
        }
    }

    /// Deletes a session with its deadline and discriminator.
    fn forget(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.remove(&id) {
            if let Some(q) = s.queued {
                self.deadlines.remove(&(q, id));
            }
            self.discriminators.remove(&s.local_disc);
        }
    }

    /// Whether the session exists and is Up (route over its tunnel).
    pub fn is_up(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.state == State::Up)
    }

    /// One session's view (None for unknown or removed ones).
    pub fn session(&self, now: Instant, session: SessionId) -> Option<SessionView> {
        self.sessions
            .get(&session)
            .filter(|s| s.remove_at.is_none())
            .map(|s| view(now, session, s))
    }

    /// Every configured session, by id (removed ones no longer listed).
    pub fn sessions(&self, now: Instant) -> Vec<SessionView> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.remove_at.is_none())
            .map(|(id, s)| view(now, *id, s))
            .collect()
    }

    /// Discard counters: every reason with its count, in [`RxDrop::ALL`] order.
    pub fn drops(&self) -> impl Iterator<Item = (RxDrop, u64)> + '_ {
        RxDrop::ALL.iter().map(|r| (*r, self.drops[r.index()]))
    }

    /// The one place a received packet is discarded.
    fn drop_packet(&mut self, reason: RxDrop) {
        self.drops[reason.index()] += 1;
    }

    fn add(
        &mut self,
        now: Instant,
        id: SessionId,
        mut config: SessionConfig,
        out: &mut Vec<Action>,
    ) {
        config.hello = config.hello.clamp(MIN_HELLO, MAX_INTERVAL);
        config.multiplier = config.multiplier.max(1);
        if let Some(s) = self.sessions.get_mut(&id).filter(|s| s.remove_at.is_none()) {
            let (tx, rx, mult) = (s.adv_tx(), s.adv_rx(), s.config.multiplier);
            s.config = config;
            s.params_changed(tx, rx, mult);
            let r = self.random();
            if let Some(s) = self.sessions.get_mut(&id) {
                s.reschedule_tx(now, r);
            }
            return;
        }
        // A new session (or one re-added while it was being removed: it
        // starts afresh with a new discriminator).
        self.forget(id);
        let disc = self.new_discriminator();
        let mut s = Session::new(config, disc);
        out.push(Action::Send {
            session: id,
            data: s.packet(false),
        });
        s.last_tx = Some(now);
        let r = self.random();
        s.next_tx = s
            .tx_interval()
            .map(|iv| now + jittered(iv, r, s.config.multiplier));
        self.sessions.insert(id, s);
    }

    fn remove(&mut self, now: Instant, id: SessionId, out: &mut Vec<Action>) {
        let Some(s) = self.sessions.get_mut(&id).filter(|s| s.remove_at.is_none()) else {
            return;
        };
        // RFC 5880 6.8.16: keep telling the peer for at least a detection
        // time. The peer's detection time for us (our multiplier times our
        // interval before this change) is enough: after it the peer goes
        // Down even without hearing us.
        let iv = s.tx_interval().unwrap_or(s.tx_in_use);
        s.remove_at = Some(now + iv * u32::from(s.config.multiplier));
        set_state(
            now,
            id,
            s,
            State::AdminDown,
            Diag::AdministrativelyDown,
            out,
        );
        s.detect_at = None;
        out.push(Action::Send {
            session: id,
            data: s.packet(false),
        });
    }

    fn flap(&mut self, now: Instant, id: SessionId, out: &mut Vec<Action>) {
        let Some(s) = self.sessions.get_mut(&id).filter(|s| s.remove_at.is_none()) else {
            return;
        };
        set_state(
            now,
            id,
            s,
            State::AdminDown,
            Diag::AdministrativelyDown,
            out,
        );
        // One AdminDown packet at once takes the peer Down (RFC 5880 6.8.6);
        // if it is lost, our Down packets do the same.
        out.push(Action::Send {
            session: id,
            data: s.packet(false),
        });
        set_state(now, id, s, State::Down, Diag::AdministrativelyDown, out);
        s.detect_at = None;
    }

    fn receive(&mut self, now: Instant, id: SessionId, data: &[u8], out: &mut Vec<Action>) {
        let repr = match Packet::new_checked(data).and_then(|p| Repr::parse(&p)) {
            Ok(r) => r,
            Err(e) => return self.drop_packet(e.into()),
        };
        let r = self.random();
        let Some(s) = self.sessions.get_mut(&id) else {
            return self.drop_packet(RxDrop::UnknownSession);
        };
        if s.state == State::AdminDown {
            return self.drop_packet(RxDrop::AdminDown);
        }
        // The shell selected the session by tunnel; a non-zero Your
        // Discriminator must still be ours (RFC 5880 6.8.6).
        if repr.your_discriminator != 0 && repr.your_discriminator != s.local_disc {
            return self.drop_packet(RxDrop::YourDiscriminatorMismatch);
        }
        s.remote_disc = repr.my_discriminator;
        s.remote_state = repr.state;
        s.remote_demand = repr.demand;
        s.remote_min_rx = repr.required_min_rx;
        s.remote_desired_tx = repr.desired_min_tx;
        s.remote_mult = repr.detect_mult;
        if repr.final_ && s.poll {
            // The Poll Sequence ends: the new parameters apply fully.
            s.poll = false;
            s.tx_in_use = s.adv_tx();
            s.rx_in_use = s.adv_rx();
        }
        match (s.state, repr.state) {
            (State::Down, State::AdminDown) => {}
            (_, State::AdminDown) => set_state(
                now,
                id,
                s,
                State::Down,
                Diag::NeighborSignaledSessionDown,
                out,
            ),
            (State::Down, State::Down) => set_state(now, id, s, State::Init, s.local_diag, out),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                set_state(now, id, s, State::Up, Diag::NoDiagnostic, out)
            }
            (State::Up, State::Down) => set_state(
                now,
                id,
                s,
                State::Down,
                Diag::NeighborSignaledSessionDown,
                out,
            ),
            _ => {}
        }
        s.detect_at = s.detect_time().map(|d| now + d);
        if repr.poll {
            // Answer a Poll at once, outside the transmit timer (RFC 5880 6.8.7).
            out.push(Action::Send {
                session: id,
                data: s.packet(true),
            });
        }
        s.reschedule_tx(now, r);
    }

    fn timers(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut gone = Vec::new();
        let ids: Vec<SessionId> = self
            .deadlines
            .range(..=(now, SessionId::MAX))
            .map(|(_, id)| *id)
            .collect();
        for &id in &ids {
            let r = self.random();
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if s.remove_at.is_some_and(|t| t <= now) {
                gone.push(id);
                continue;
            }
            if s.detect_at.is_some_and(|t| t <= now) {
                // RFC 5880 6.8.4 / 6.8.1: the peer is gone.
                s.detect_at = None;
                s.remote_disc = 0;
                s.remote_state = State::Down;
                if matches!(s.state, State::Init | State::Up) {
                    set_state(
                        now,
                        id,
                        s,
                        State::Down,
                        Diag::ControlDetectionTimeExpired,
                        out,
                    );
                }
            }
            if s.next_tx.is_some_and(|t| t <= now) {
                s.next_tx = None;
                // The peer in Demand mode with both Up asks for no periodic
                // packets, except while we poll (RFC 5880 6.8.7).
                let quiet = s.remote_demand
                    && s.state == State::Up
                    && s.remote_state == State::Up
                    && !s.poll;
                if !quiet {
                    out.push(Action::Send {
                        session: id,
                        data: s.packet(false),
                    });
                    s.last_tx = Some(now);
                }
                s.next_tx = s
                    .tx_interval()
                    .map(|iv| now + jittered(iv, r, s.config.multiplier));
            }
        }
        for id in ids {
            self.requeue(id);
        }
        for id in gone {
            self.forget(id);
        }
    }
}

/// Changes the session's state, with the diagnostic, the Up bookkeeping,
/// the parameters that depend on Up, and the action.
fn set_state(
    now: Instant,
    id: SessionId,
    s: &mut Session,
    new: State,
    diag: Diag,
    out: &mut Vec<Action>,
) {
    let old = s.state;
    if old == new {
        return;
    }
    let (tx, rx, mult) = (s.adv_tx(), s.adv_rx(), s.config.multiplier);
    s.state = new;
    s.local_diag = diag;
    if new == State::Up {
        s.up_since = Some(now);
    } else {
        s.up_since = None;
    }
    if old == State::Up || new == State::Up {
        s.transitions += 1;
    }
    s.params_changed(tx, rx, mult);
    out.push(Action::StateChange {
        session: id,
        old,
        new,
        diag,
    });
}

fn view(now: Instant, id: SessionId, s: &Session) -> SessionView {
    SessionView {
        session: id,
        state: s.state,
        remote_state: s.remote_state,
        local_discriminator: s.local_disc,
        remote_discriminator: s.remote_disc,
        tx_interval_ms: s.tx_interval().map_or(0, |d| d.as_millis() as u64),
        hello_ms: s.config.hello.as_millis() as u64,
        multiplier: s.config.multiplier,
        uptime: s
            .up_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
        transitions: s.transitions,
        diag: s.local_diag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The deadline index and discriminator set agree with the sessions.
    fn check_index(b: &Bfd) {
        let mut want = BTreeSet::new();
        for (id, s) in &b.sessions {
            let due = [s.next_tx, s.detect_at, s.remove_at]
                .into_iter()
                .flatten()
                .min();
            assert_eq!(s.queued, due, "session {id}");
            if let Some(d) = due {
                want.insert((d, *id));
            }
        }
        assert_eq!(b.deadlines, want);
        let discs: HashSet<u32> = b.sessions.values().map(|s| s.local_disc).collect();
        assert_eq!(discs.len(), b.sessions.len(), "unique discriminators");
        assert!(!discs.contains(&0));
        assert_eq!(b.discriminators, discs);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u64, u64),
        Remove(u64),
        Flap(u64),
        Deliver(u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..4, 10u64..300).prop_map(|(s, h)| Op::Add(s, h)),
            (0u64..4).prop_map(Op::Remove),
            (0u64..4).prop_map(Op::Flap),
            (0u64..4).prop_map(Op::Deliver),
            (1u64..500).prop_map(Op::Advance),
        ]
    }

    proptest! {
        // Random command sequences on two cores joined session by session:
        // the index never goes stale, timeouts never lie in the past.
        #[test]
        fn deadline_index_stays_consistent(ops in proptest::collection::vec(op(), 1..60)) {
            let mut cores = [Bfd::new(1), Bfd::new(2)];
            let mut now = Instant::now();
            // Packets in flight: (to core, session, bytes).
            let mut pending: Vec<(usize, u64, Vec<u8>)> = Vec::new();
            for op in ops {
                let mut out: Vec<(usize, Action)> = Vec::new();
                match op {
                    Op::Add(s, h) => {
                        let config = SessionConfig { hello: Duration::from_millis(h), multiplier: 3 };
                        for (i, c) in cores.iter_mut().enumerate() {
                            out.extend(c.handle(now, Input::Command(Command::Add { session: s, config }))
                                .into_iter().map(|x| (i, x)));
                        }
                    }
                    Op::Remove(s) => out.extend(cores[0].handle(now, Input::Command(Command::Remove { session: s }))
                        .into_iter().map(|x| (0, x))),
                    Op::Flap(s) => out.extend(cores[1].handle(now, Input::Command(Command::Flap { session: s }))
                        .into_iter().map(|x| (1, x))),
                    Op::Deliver(s) => {
                        // A few rounds of delivery for session s, both ways.
                        for _ in 0..4 {
                            let (now_pkts, rest): (Vec<_>, Vec<_>) =
                                pending.drain(..).partition(|(_, x, _)| *x == s);
                            pending = rest;
                            for (to, sess, data) in now_pkts {
                                let acts = cores[to].handle(now, Input::Packet { session: sess, data: &data });
                                for act in acts {
                                    if let Action::Send { session, data } = act {
                                        pending.push((1 - to, session, data));
                                    }
                                }
                            }
                        }
                    }
                    Op::Advance(ms) => {
                        let end = now + Duration::from_millis(ms);
                        while let Some(t) = cores.iter().filter_map(|c| c.next_timeout()).min().filter(|t| *t <= end) {
                            prop_assert!(t >= now);
                            now = t;
                            for (i, c) in cores.iter_mut().enumerate() {
                                if c.next_timeout().is_some_and(|x| x <= now) {
                                    out.extend(c.handle(now, Input::Timer).into_iter().map(|x| (i, x)));
                                }
                            }
                        }
                        now = end;
                    }
                }
                for (from, act) in out {
                    if let Action::Send { session, data } = act {
                        pending.push((1 - from, session, data));
                    }
                }
                check_index(&cores[0]);
                check_index(&cores[1]);
            }
        }
    }
}
