//! The load tester's engine, I/O-free: one IKE core ([`xdpsec_ike::Ike`])
//! per emulated peer, paced starts (`--rate`), a cap on exchanges in
//! flight (`--concurrency`), the attempts' accounting and scheduled child
//! SA rekeys (`--rekey-every`). The shell feeds it datagrams and the time
//! and sends what [`Engine::take_sends`] returns; tests run it against an
//! in-memory xdpsec responder.
use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use xdpsec_ike::{
    Action, ChildKeys, Command, EspEncap, Ike, IkeSaStatus, Input, PeerConfig, Removal, TunnelEvent,
};

use crate::stats::{Accounting, Fault, Gone, Outcome};

/// After a rekey's new child SA is installed, probes sent for this long
/// still count as sent across the rekey (`lost_in_rekeys` when never
/// answered): the switch to the new SAs and the old one's DELETE.
pub const REKEY_SETTLE: Duration = Duration::from_secs(1);

/// How long an attempt may take before it counts as `TIMEOUT` if the core
/// has not given up by itself (it does after 31 s without an answer to one
/// request; IKE_SA_INIT then IKE_AUTH: 62 s).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(65);

/// When a DELETE of a closed tunnel is sent again without an answer (after
/// the first send); then it is given up.
pub const BYE_RESEND: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Engine options (from the command line).
#[derive(Debug, Clone)]
pub struct Options {
    /// New attempts per second; `None`: as fast as `concurrency` allows.
    pub rate: Option<f64>,
    /// Exchanges (attempts not ended) in flight at most.
    pub concurrency: usize,
    /// Rekey each tunnel's child SA this long after it came up, and again
    /// every so long.
    pub rekey_every: Option<Duration>,
    /// An attempt not ended after this long ends as `TIMEOUT`.
    pub attempt_timeout: Duration,
    /// Keep the cores' log lines for [`Engine::take_logs`].
    pub keep_logs: bool,
    /// Keep the cores' events (counted as they come) for
    /// [`Engine::take_events`], for a caller that wants them too.
    pub keep_events: bool,
    /// `--fault`: what [`Engine::inject_fault`] does.
    pub fault: Option<FaultSpec>,
}

/// `--fault KIND:N`: what happens to N tunnels once they are up, to time
/// how the gateway recovers (the Tunnel Failover Time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// `silent:N[:S]`: the peers die: everything the gateway sends them is
    /// dropped unread (its DPD requests are timed), they send nothing; S
    /// seconds later they restart with no memory of their SAs (no DELETE)
    /// and negotiate anew.
    Silent {
        /// How long the peers stay dead.
        restart_after: Duration,
    },
    /// `forget-sa:N`: the peers' datapath forgets their inbound child SAs
    /// (the IKE SA and the outbound SA stay): the gateway's ESP then comes
    /// with SPIs the peer does not know, it answers with INVALID_SPI (RFC
    /// 7296 2.21.4; `invalid_spi_recovery`) and the gateway must replace
    /// the child SA.
    ForgetSa,
}

/// `--fault` as given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSpec {
    /// What happens.
    pub kind: FaultKind,
    /// To how many tunnels (the first ones up, by peer index).
    pub tunnels: usize,
}

impl FaultSpec {
    /// The fault's name in the summary.
    pub fn name(&self) -> &'static str {
        match self.kind {
            FaultKind::Silent { .. } => "silent",
            FaultKind::ForgetSa => "forget-sa",
        }
    }

    /// Parse `silent:N[:S]` or `forget-sa:N` (S default 10 s).
    pub fn parse(s: &str) -> Result<FaultSpec, String> {
        let mut w = s.split(':');
        let kind = w.next().unwrap_or("");
        let n: usize = w
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!("--fault {s:?}: give silent:N[:S] or forget-sa:N with N >= 1 tunnels")
            })?;
        let kind = match (kind, w.next()) {
            ("silent", s_opt) => {
                let secs = match s_opt {
                    None => 10.0,
                    Some(x) => x
                        .parse::<f64>()
                        .ok()
                        .filter(|v| (0.0..1e6).contains(v))
                        .ok_or_else(|| {
                            format!("--fault {s:?}: S is the seconds the peers stay silent (>= 0)")
                        })?,
                };
                FaultKind::Silent {
                    restart_after: Duration::from_secs_f64(secs),
                }
            }
            ("forget-sa", None) => FaultKind::ForgetSa,
            _ => {
                return Err(format!("--fault {s:?}: give silent:N[:S] or forget-sa:N"));
            }
        };
        if w.next().is_some() {
            return Err(format!("--fault {s:?}: give silent:N[:S] or forget-sa:N"));
        }
        Ok(FaultSpec { kind, tunnels: n })
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rate: None,
            concurrency: 100,
            rekey_every: None,
            attempt_timeout: ATTEMPT_TIMEOUT,
            keep_logs: false,
            keep_events: false,
            fault: None,
        }
    }
}

/// An IKE datagram to send.
#[derive(Debug)]
pub struct Send {
    /// The emulated peer sending it.
    pub peer: usize,
    /// From (source address and port, as its IKE core sees them).
    pub local: SocketAddr,
    /// To.
    pub remote: SocketAddr,
    /// The IKE message (the shell adds the non-ESP marker off port 500).
    pub data: Vec<u8>,
}

/// A child SA's ESP state in one direction, for the traffic shell.
#[derive(Debug, Clone)]
pub struct ChildDir {
    /// How ESP travels.
    pub encap: EspEncap,
    /// SPI and keys.
    pub keys: ChildKeys,
}

/// Where a peer is.
enum State {
    /// Not started yet.
    Waiting,
    /// Negotiating its IKE SA and first child (attempt `attempt`).
    Negotiating,
    /// Its first child SA is installed.
    Up,
    /// Dead (`--fault silent`): its core is gone, it hears nothing.
    Silent,
    /// Restarted after `Silent`: negotiating anew.
    Restarting,
    /// Up once, then gone during the run (see [`Gone`]): not probed, not
    /// rekeyed; its core is kept only while it holds an IKE SA (the
    /// gateway deleted the last child SA only), for the final DELETE.
    Gone,
    /// Ended (failed, or shut down); its core is gone.
    Done,
}

/// One emulated peer.
struct Peer {
    cfg: Option<PeerConfig>,
    core: Option<Ike>,
    state: State,
    attempt: usize,
    next_rekey: Option<Instant>,
    rekeying: bool,
    /// After a rekey: until when probes still count as sent across it
    /// ([`REKEY_SETTLE`] after the new child SA was installed).
    settling_until: Option<Instant>,
    /// The child SA's current outbound direction.
    outbound: Option<ChildDir>,
    /// Inbound SAs (our SPI -> keys).
    inbound: HashMap<u32, ChildDir>,
    /// A copy of its configuration, to restart it (`--fault silent`).
    restart_cfg: Option<PeerConfig>,
    /// Its record in the accounting's faults.
    fault: Option<usize>,
}

impl Peer {
    /// Its tunnel stops (in `state`): no outbound SA, no rekey under way,
    /// settling or due.
    fn stop(&mut self, state: State) {
        self.state = state;
        self.outbound = None;
        self.next_rekey = None;
        self.rekeying = false;
        self.settling_until = None;
    }

    /// Its core, taken to be dropped or shut down; its resends stay
    /// counted in `retransmitted`.
    fn take_core(&mut self, retransmitted: &mut u64) -> Option<Ike> {
        let core = self.core.take()?;
        *retransmitted += core.stats().retransmissions;
        Some(core)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    Core,
    Rekey,
    Deadline,
    Restart,
}

/// A DELETE of a closed tunnel's IKE SA (the run's own, or of a failed
/// attempt) until it is answered or given up.
struct Bye {
    peer: usize,
    send: Send,
    /// Sends so far beyond the first.
    tries: usize,
    /// When to resend (or give up).
    next: Instant,
    /// It counts in `unanswered_deletes` (a tunnel up at the end).
    counts: bool,
}

/// Whether `reply` is the response to the INFORMATIONAL request `req` in
/// the same IKE SA (both SPIs, exchange type 37, the response flag, the
/// message ID): `Some(true)` when it is protected (its first payload is
/// Encrypted or Encrypted Fragment, RFC 7296 3.14, RFC 7383), `Some(false)`
/// when not (an unprotected notify such as INVALID_IKE_SPI: the gateway
/// does not hold that IKE SA), `None` when it is no response to it. Its
/// integrity is not checked: the IKE SA's keys went with it (only a party
/// that saw both SPIs, which are random, can make one).
pub fn answers(req: &[u8], reply: &[u8]) -> Option<bool> {
    const INFORMATIONAL: u8 = 37;
    const RESPONSE: u8 = 0x20;
    if req.len() < 28 || reply.len() < 28 {
        return None;
    }
    let same = reply[..16] == req[..16]
        && reply[18] == INFORMATIONAL
        && reply[19] & RESPONSE != 0
        && reply[20..24] == req[20..24];
    same.then_some(matches!(reply[16], 46 | 53))
}

/// The engine: all peers, the pacing and the accounting.
pub struct Engine {
    opts: Options,
    t0: Instant,
    peers: Vec<Peer>,
    by_addr: HashMap<IpAddr, usize>,
    /// The peer of each inbound SPI (the replies' lookup).
    spi_owner: HashMap<u32, usize>,
    next: usize,
    next_start_at: Instant,
    in_flight: usize,
    wakes: BinaryHeap<Reverse<(Instant, usize, Wake)>>,
    sends: Vec<Send>,
    acc: Accounting,
    stopping: bool,
    ups: Vec<usize>,
    /// DELETEs of closed tunnels waiting for a slot (`concurrency` at a time).
    bye_queue: std::collections::VecDeque<Bye>,
    /// DELETEs sent, not answered yet.
    byes: Vec<Bye>,
    /// Peers gone (see [`Gone`]) since the last [`Engine::take_gone`].
    gone: Vec<usize>,
    /// IKE requests resent by the cores already closed or forgotten.
    retransmitted: u64,
    logs: Vec<String>,
    /// The cores' events (peer, event), with `keep_events`.
    events: Vec<(usize, TunnelEvent)>,
}

impl Engine {
    /// An engine for these peers (one IKE configuration each, distinct
    /// `local` addresses); the run's clock starts at `t0`.
    pub fn new(mut peers: Vec<PeerConfig>, opts: Options, t0: Instant) -> Engine {
        let fault = opts.fault.map(|f| f.kind);
        if fault == Some(FaultKind::ForgetSa) {
            // The peers tell the gateway about ESP with unknown SPIs.
            for p in &mut peers {
                p.invalid_spi_recovery = true;
            }
        }
        let by_addr = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.local, i))
            .collect();
        Engine {
            peers: peers
                .into_iter()
                .map(|cfg| Peer {
                    restart_cfg: matches!(fault, Some(FaultKind::Silent { .. }))
                        .then(|| cfg.clone()),
                    fault: None,
                    cfg: Some(cfg),
                    core: None,
                    state: State::Waiting,
                    attempt: usize::MAX,
                    next_rekey: None,
                    rekeying: false,
                    settling_until: None,
                    outbound: None,
                    inbound: HashMap::new(),
                })
                .collect(),
            opts,
            t0,
            by_addr,
            spi_owner: HashMap::new(),
            next: 0,
            next_start_at: t0,
            in_flight: 0,
            wakes: BinaryHeap::new(),
            sends: Vec::new(),
            acc: Accounting::default(),
            stopping: false,
            ups: Vec::new(),
            bye_queue: std::collections::VecDeque::new(),
            byes: Vec::new(),
            gone: Vec::new(),
            retransmitted: 0,
            logs: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The accounting so far.
    pub fn accounting(&self) -> &Accounting {
        &self.acc
    }

    /// The accounting, to record traffic results in.
    pub fn accounting_mut(&mut self) -> &mut Accounting {
        &mut self.acc
    }

    /// IKE requests the peers' cores resent for want of a response, all
    /// cores of the run (closed ones included).
    pub fn retransmissions(&self) -> u64 {
        let live: u64 = self
            .peers
            .iter()
            .filter_map(|p| p.core.as_ref())
            .map(|c| c.stats().retransmissions)
            .sum();
        self.retransmitted + live
    }

    /// Attempts in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether every peer has had its attempt and every attempt has ended.
    pub fn setup_done(&self) -> bool {
        (self.next == self.peers.len() || self.stopping) && self.in_flight == 0
    }

    /// The cores' log lines since the last call (with `keep_logs`).
    pub fn take_logs(&mut self) -> Vec<String> {
        std::mem::take(&mut self.logs)
    }

    /// The cores' events (peer, event) since the last call (with
    /// `keep_events`).
    pub fn take_events(&mut self) -> Vec<(usize, TunnelEvent)> {
        std::mem::take(&mut self.events)
    }

    /// The peers that came up since the last call.
    pub fn take_ups(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.ups)
    }

    /// The peers gone during the run (see [`Gone`]) since the last call:
    /// their probes stop.
    pub fn take_gone(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.gone)
    }

    /// Datagrams to send, in order.
    pub fn take_sends(&mut self) -> Vec<Send> {
        std::mem::take(&mut self.sends)
    }

    /// When [`Engine::tick`] is next due (a start, a core timer, a rekey).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let start = (!self.stopping
            && self.next < self.peers.len()
            && self.in_flight < self.opts.concurrency)
            .then_some(self.next_start_at);
        let wake = self.wakes.peek().map(|Reverse((t, _, _))| *t);
        let bye = if !self.bye_queue.is_empty() && self.byes.len() < self.opts.concurrency {
            Some(self.t0)
        } else {
            self.byes.iter().map(|b| b.next).min()
        };
        [start, wake, bye].into_iter().flatten().min()
    }

    /// Whether every DELETE has been answered or given up.
    pub fn closing_done(&self) -> bool {
        self.bye_queue.is_empty() && self.byes.is_empty()
    }

    /// How long the DELETEs queued now take at most if none is answered:
    /// `concurrency` at a time, each given up after [`BYE_RESEND`].
    pub fn closing_bound(&self) -> Duration {
        let n = self.bye_queue.len() + self.byes.len();
        let rounds = n.div_ceil(self.opts.concurrency.max(1)) as u32;
        BYE_RESEND.iter().sum::<Duration>() * rounds
    }

    /// The DELETEs of tunnels up at the end not answered by now (given up,
    /// still unanswered or never sent) count as unanswered; the rest are
    /// dropped. Call once the run stops waiting for them.
    pub fn end_closing(&mut self) {
        let left = self.byes.drain(..).chain(self.bye_queue.drain(..));
        self.acc.unanswered_deletes += left.filter(|b| b.counts).count() as u64;
    }

    /// A DELETE ended without an answer (given up, or refused unprotected).
    fn bye_unanswered(&mut self, b: &Bye) {
        if b.counts {
            self.acc.unanswered_deletes += 1;
        }
    }

    /// Send queued DELETEs while fewer than `concurrency` are unanswered;
    /// resend or give up those due.
    fn byes(&mut self, now: Instant) {
        let mut k = 0;
        while k < self.byes.len() {
            let b = &mut self.byes[k];
            if b.next <= now {
                if b.tries >= BYE_RESEND.len() {
                    let b = self.byes.swap_remove(k);
                    self.bye_unanswered(&b);
                    continue;
                }
                b.next = now + BYE_RESEND[b.tries];
                b.tries += 1;
                let again = Send {
                    peer: b.send.peer,
                    local: b.send.local,
                    remote: b.send.remote,
                    data: b.send.data.clone(),
                };
                self.sends.push(again);
            }
            k += 1;
        }
        while self.byes.len() < self.opts.concurrency
            && let Some(mut b) = self.bye_queue.pop_front()
        {
            self.sends.push(Send {
                peer: b.send.peer,
                local: b.send.local,
                remote: b.send.remote,
                data: b.send.data.clone(),
            });
            b.next = now + BYE_RESEND[0];
            self.byes.push(b);
        }
    }

    fn offset(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.t0)
    }

    /// Start what is due, run the cores' timers and rekeys that are due,
    /// send the DELETEs of closed tunnels.
    pub fn tick(&mut self, now: Instant) {
        self.byes(now);
        while !self.stopping
            && self.next < self.peers.len()
            && self.in_flight < self.opts.concurrency
            && self.next_start_at <= now
        {
            self.start_next(now);
        }
        while let Some(Reverse((t, i, w))) = self.wakes.peek().copied() {
            if t > now {
                break;
            }
            self.wakes.pop();
            match w {
                Wake::Core => {
                    let due = self.peers[i].core.as_ref().and_then(Ike::next_timeout);
                    if due == Some(t) {
                        self.handle(i, now, Input::Timer);
                    }
                }
                Wake::Rekey => {
                    if self.peers[i].next_rekey == Some(t)
                        && matches!(self.peers[i].state, State::Up)
                    {
                        self.rekey(i, now);
                    }
                }
                Wake::Deadline => {
                    if matches!(self.peers[i].state, State::Negotiating) {
                        self.fail(i, now, "TIMEOUT");
                    }
                }
                Wake::Restart => self.restart(i, now),
            }
        }
    }

    fn start_next(&mut self, now: Instant) {
        let i = self.next;
        self.next += 1;
        let cfg = self.peers[i].cfg.take().expect("each peer starts once");
        let at = self.offset(now);
        let attempt = self.acc.start(at);
        let p = &mut self.peers[i];
        p.core = Some(Ike::new(vec![cfg]));
        p.state = State::Negotiating;
        p.attempt = attempt;
        self.in_flight += 1;
        self.next_start_at = match self.opts.rate {
            // On the schedule, not from the (late) wake-up: a start up to
            // one interval late does not slow the rate; later than that
            // (held back by the concurrency cap) the schedule starts anew.
            Some(r) if r > 0.0 => {
                let interval = Duration::from_secs_f64(1.0 / r);
                let base = if now.saturating_duration_since(self.next_start_at) > interval {
                    now
                } else {
                    self.next_start_at
                };
                base + interval
            }
            _ => now,
        };
        self.wakes.push(Reverse((
            now + self.opts.attempt_timeout,
            i,
            Wake::Deadline,
        )));
        // The first handle starts the initiator.
        self.handle(i, now, Input::Timer);
    }

    /// The peer whose source address is `addr` (with one address per peer).
    pub fn peer_at(&self, addr: IpAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    /// A datagram for the peer whose source address is `local`'s (others
    /// are ignored: false).
    pub fn datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> bool {
        match self.peer_at(local.ip()) {
            Some(i) => self.datagram_to(i, now, local, remote, data),
            None => false,
        }
    }

    /// A datagram for peer `i` (`local`: where its core is, 500 or the
    /// NAT-T port).
    pub fn datagram_to(
        &mut self,
        i: usize,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> bool {
        if i >= self.peers.len() {
            return false;
        }
        if matches!(self.peers[i].state, State::Silent) {
            // Dead: unread; the first one (the gateway's DPD) is timed.
            let at = self.offset(now);
            if let (Some(f), Some((_, faults))) = (self.peers[i].fault, &mut self.acc.fault)
                && faults[f].dpd.is_none()
            {
                faults[f].dpd = Some(at);
            }
            return true;
        }
        if self.peers[i].core.is_none() {
            // The answer to a closed tunnel's DELETE ends it; anything
            // else from the gateway to it is ignored.
            let Some((k, protected)) =
                self.byes.iter().enumerate().find_map(|(k, b)| {
                    Some((k, answers(&b.send.data, data)?)).filter(|_| b.peer == i)
                })
            else {
                return false;
            };
            let b = self.byes.swap_remove(k);
            if !protected {
                self.bye_unanswered(&b);
            }
            return true;
        }
        self.handle(
            i,
            now,
            Input::Datagram {
                local,
                remote,
                data,
            },
        );
        true
    }

    fn handle(&mut self, i: usize, now: Instant, input: Input<'_>) {
        let Some(core) = self.peers[i].core.as_mut() else {
            return;
        };
        let actions = core.handle(now, input);
        self.apply(i, now, actions);
    }

    fn apply(&mut self, i: usize, now: Instant, actions: Vec<Action>) {
        let mut removed = Vec::new();
        for a in actions {
            match a {
                Action::Send {
                    local,
                    remote,
                    data,
                } => self.sends.push(Send {
                    peer: i,
                    local,
                    remote,
                    data,
                }),
                Action::SetOutbound { encap, keys, .. } => {
                    let at = self.offset(now);
                    let p = &mut self.peers[i];
                    let had = p.outbound.replace(ChildDir { encap, keys }).is_some();
                    match p.state {
                        State::Negotiating => {
                            p.state = State::Up;
                            self.in_flight -= 1;
                            self.acc.end(p.attempt, at, Outcome::Up);
                            self.ups.push(i);
                            if let Some(e) = self.opts.rekey_every {
                                p.next_rekey = Some(now + e);
                                self.wakes.push(Reverse((now + e, i, Wake::Rekey)));
                            }
                        }
                        State::Up if p.rekeying => {
                            p.rekeying = false;
                            p.settling_until = Some(now + REKEY_SETTLE);
                            self.acc.rekeys.push(at);
                        }
                        // A new child SA after the old one went (the
                        // gateway replaced it): traffic goes on.
                        State::Up if !had => self.ups.push(i),
                        // Restarted after `--fault silent`: up again.
                        State::Restarting => {
                            p.state = State::Up;
                            self.ups.push(i);
                        }
                        _ => {}
                    }
                }
                Action::AddInbound { encap, keys, .. } => {
                    self.spi_owner.insert(keys.spi, i);
                    self.peers[i]
                        .inbound
                        .insert(keys.spi, ChildDir { encap, keys });
                }
                Action::RemoveInbound { spi, .. } => {
                    self.peers[i].inbound.remove(&spi);
                    if self.spi_owner.get(&spi) == Some(&i) {
                        self.spi_owner.remove(&spi);
                    }
                }
                Action::RemoveOutbound { .. } => self.peers[i].outbound = None,
                Action::Log { line, .. } => {
                    if self.opts.keep_logs {
                        self.logs.push(line);
                    }
                }
                Action::Event { event, .. } => {
                    if self.opts.keep_events {
                        self.events.push((i, event));
                    }
                    match (event, &self.peers[i].state) {
                        (TunnelEvent::Failure(f), State::Negotiating) => {
                            self.fail(i, now, f.name());
                            return;
                        }
                        // A restart that failed: that tunnel does not recover.
                        (TunnelEvent::Failure(_), State::Restarting) => {
                            self.close(i, now);
                            return;
                        }
                        // A rekey the gateway refused is over (the core
                        // retries later).
                        (TunnelEvent::RekeyRefused, _) => self.peers[i].rekeying = false,
                        (TunnelEvent::Removed(r), State::Up) => removed.push(r),
                        _ => {}
                    }
                }
            }
        }
        if !removed.is_empty() {
            self.check_gone(i, now, &removed);
        }
        if let Some(t) = self.peers[i].core.as_ref().and_then(Ike::next_timeout) {
            self.wakes.push(Reverse((t, i, Wake::Core)));
        }
    }

    /// After `removed` of tunnel `i` (up; the core's events): if its core has no established
    /// IKE SA with a child SA left, the tunnel is gone (counted once): not
    /// probed or rekeyed any more, and its core is dropped unless it still
    /// holds an IKE SA (so it does not negotiate anew; that one gets the
    /// final DELETE). A DELETE of the old IKE or child SA of a rekey leaves
    /// the new one: nothing is gone.
    fn check_gone(&mut self, i: usize, now: Instant, removed: &[Removal]) {
        let p = &mut self.peers[i];
        let Some(core) = p.core.as_ref() else {
            return;
        };
        let sas = core.sas(now);
        let alive = sas
            .iter()
            .any(|s| s.status == IkeSaStatus::Ready && !s.children.is_empty());
        // Under `--fault forget-sa` the gateway deletes the child SA we
        // reported with INVALID_SPI and makes a new one: asked for, not
        // a removal.
        let asked = self
            .opts
            .fault
            .is_some_and(|f| f.kind == FaultKind::ForgetSa)
            && p.fault.is_some()
            && removed
                .iter()
                .all(|r| *r == Removal::DeletedByPeer { ike: false });
        if alive || asked {
            return;
        }
        let how = if removed.contains(&Removal::DeadPeer) {
            Gone::DeadByDpd
        } else {
            Gone::DeletedByGateway
        };
        self.acc.gone(p.attempt, self.offset(now), how);
        self.forget_inbound(i);
        let p = &mut self.peers[i];
        p.stop(State::Gone);
        if sas.is_empty() {
            p.take_core(&mut self.retransmitted);
        }
        self.gone.push(i);
    }

    /// End peer `i`'s attempt as `why` and close its core (a DELETE where
    /// the gateway may hold an IKE SA).
    fn fail(&mut self, i: usize, now: Instant, why: &'static str) {
        let at = self.offset(now);
        let p = &mut self.peers[i];
        if matches!(p.state, State::Negotiating) {
            self.in_flight -= 1;
            self.acc.end(p.attempt, at, Outcome::Failed(why));
        }
        self.close(i, now);
    }

    /// Peer `i`'s inbound SAs forgotten (and their SPIs' owner).
    fn forget_inbound(&mut self, i: usize) {
        for (spi, _) in self.peers[i].inbound.drain() {
            if self.spi_owner.get(&spi) == Some(&i) {
                self.spi_owner.remove(&spi);
            }
        }
    }

    /// Close peer `i`'s core: its DELETEs are queued (`counts`: in
    /// `unanswered_deletes` if never answered).
    fn close(&mut self, i: usize, now: Instant) {
        let counts = matches!(self.peers[i].state, State::Up);
        self.forget_inbound(i);
        let p = &mut self.peers[i];
        p.stop(State::Done);
        if let Some(mut core) = p.take_core(&mut self.retransmitted) {
            for a in core.handle(now, Input::Command(Command::Shutdown)) {
                if let Action::Send {
                    local,
                    remote,
                    data,
                } = a
                {
                    self.bye_queue.push_back(Bye {
                        peer: i,
                        send: Send {
                            peer: i,
                            local,
                            remote,
                            data,
                        },
                        tries: 0,
                        next: now,
                        counts,
                    });
                }
            }
        }
    }

    fn rekey(&mut self, i: usize, now: Instant) {
        let p = &mut self.peers[i];
        let (Some(core), Some(e)) = (p.core.as_mut(), self.opts.rekey_every) else {
            return;
        };
        let gw = core.sas(now).first().map(|s| s.remote.ip());
        p.next_rekey = Some(now + e);
        self.wakes.push(Reverse((now + e, i, Wake::Rekey)));
        // One rekey at a time: one still under way skips this turn.
        let (Some(gw), false) = (gw, p.rekeying) else {
            return;
        };
        p.rekeying = true;
        let actions = core.rekey_now(now, gw, false);
        self.apply(i, now, actions);
    }

    /// `--fault`: hit the first `tunnels` peers up now (by index); how
    /// many it hit (fewer when fewer are up; none without `--fault`).
    pub fn inject_fault(&mut self, now: Instant) -> usize {
        let Some(spec) = self.opts.fault else {
            return 0;
        };
        let at = self.offset(now);
        let mut hit = Vec::new();
        for i in 0..self.peers.len() {
            if hit.len() == spec.tunnels {
                break;
            }
            if !matches!(self.peers[i].state, State::Up) || self.peers[i].fault.is_some() {
                continue;
            }
            // Either kind: the datapath knows none of its inbound SAs.
            self.forget_inbound(i);
            let p = &mut self.peers[i];
            match spec.kind {
                FaultKind::Silent { restart_after } => {
                    // Forgotten at once: no DELETE, no more timers.
                    p.take_core(&mut self.retransmitted);
                    p.stop(State::Silent);
                    self.wakes
                        .push(Reverse((now + restart_after, i, Wake::Restart)));
                }
                FaultKind::ForgetSa => {}
            }
            hit.push(Fault {
                peer: i,
                at,
                dpd: None,
                recovered: None,
            });
            p.fault = Some(hit.len() - 1);
        }
        let n = hit.len();
        self.acc.fault = Some((spec.name(), hit));
        n
    }

    /// A silent peer's restart: a new core with the same configuration.
    fn restart(&mut self, i: usize, now: Instant) {
        let p = &mut self.peers[i];
        if !matches!(p.state, State::Silent) || self.stopping {
            return;
        }
        let Some(cfg) = p.restart_cfg.clone() else {
            return;
        };
        p.core = Some(Ike::new(vec![cfg]));
        p.state = State::Restarting;
        self.handle(i, now, Input::Timer);
    }

    /// ESP came to `local` with an SPI it has no inbound SA for: tell that
    /// peer's core (it sends INVALID_SPI only with `invalid_spi_recovery`,
    /// i.e. `--fault forget-sa`, at most once per 10 s).
    pub fn unknown_spi(&mut self, now: Instant, i: usize, spi: u32) {
        let Some(gw) = self.peers[i]
            .core
            .as_ref()
            .and_then(|c| c.sas(now).first().map(|s| s.remote.ip()))
        else {
            return;
        };
        self.handle(i, now, Input::UnknownSpi { peer: gw, spi });
    }

    /// A decrypted reply through peer `i`'s tunnel at `now`: the first
    /// after its fault is its recovery (only new child SAs are left to
    /// decrypt one).
    pub fn replied(&mut self, i: usize, now: Instant) {
        let at = self.offset(now);
        if let (Some(f), Some((_, faults))) = (self.peers[i].fault, &mut self.acc.fault)
            && faults[f].recovered.is_none()
        {
            faults[f].recovered = Some(at);
        }
    }

    /// Whether every tunnel `--fault` hit has recovered (false before it).
    pub fn all_recovered(&self) -> bool {
        self.acc
            .fault
            .as_ref()
            .is_some_and(|(_, f)| f.iter().all(|x| x.recovered.is_some()))
    }

    /// Stop starting attempts (Ctrl-C or the end of the run).
    pub fn stop_starting(&mut self) {
        self.stopping = true;
    }

    /// End the run: attempts still in flight end as `INTERRUPTED`, every
    /// tunnel is closed: its DELETE goes out with the next ticks,
    /// `concurrency` unanswered at a time, resent after [`BYE_RESEND`]
    /// ([`Engine::closing_done`] says when all are answered or given up).
    pub fn finish(&mut self, now: Instant) {
        self.stopping = true;
        for i in 0..self.peers.len() {
            match self.peers[i].state {
                State::Negotiating => self.fail(i, now, "INTERRUPTED"),
                State::Up | State::Restarting | State::Gone => self.close(i, now),
                State::Waiting | State::Done | State::Silent => {}
            }
        }
        self.wakes.clear();
        self.byes(now);
    }

    /// Tunnels up now.
    pub fn up_now(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| matches!(p.state, State::Up))
            .count()
    }

    /// Peer `i`'s outbound child SA while it is up.
    pub fn outbound(&self, i: usize) -> Option<&ChildDir> {
        match self.peers[i].state {
            State::Up => self.peers[i].outbound.as_ref(),
            _ => None,
        }
    }

    /// The peer with an inbound SA of SPI `spi`, if any.
    pub fn peer_of_spi(&self, spi: u32) -> Option<usize> {
        self.spi_owner.get(&spi).copied()
    }

    /// Peer `i`'s inbound SA with our SPI `spi`, if any.
    pub fn inbound(&self, i: usize, spi: u32) -> Option<&ChildDir> {
        self.peers.get(i)?.inbound.get(&spi)
    }

    /// Whether a probe of peer `i` sent at `now` goes across a rekey: its
    /// CREATE_CHILD_SA is under way, or the new child SA came less than
    /// [`REKEY_SETTLE`] ago (the gateway may not use or know it yet).
    pub fn rekeying(&self, i: usize, now: Instant) -> bool {
        let p = &self.peers[i];
        p.rekeying || p.settling_until.is_some_and(|t| now < t)
    }

    /// Peer `i`'s attempt (index into the accounting), once started.
    pub fn attempt_of(&self, i: usize) -> Option<usize> {
        (self.peers[i].attempt != usize::MAX).then_some(self.peers[i].attempt)
    }

    /// Number of peers.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
