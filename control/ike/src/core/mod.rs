//! The IKE SA and child SA state machines (RFC 7296): IKE_SA_INIT,
//! IKE_AUTH with PSK or certificates, CREATE_CHILD_SA (new child, child rekey, IKE rekey),
//! INFORMATIONAL (DELETE, DPD, INVALID_SPI), with window size 1,
//! retransmission and cached responses.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use xdpsec_common::limiter::KeyedLimiter;
use zeroize::Zeroizing;

use crate::{
    Action, AuthMethod, ChildKeys, Command, DhGroup, EspEncap, EspProposal, Failure, IkeProposal,
    IkeSaStatus, IkeSaView, IkeStats, Input, PeerConfig, Prefix, Removal, TunnelEvent,
    crypto::{self, Dh, IkeKeys, Secret},
    frag::{self, FragError, FragOutcome},
    proposal::{self, TRANS_DH, TRANS_ESN},
    random::Random,
    timers::*,
    wire::{
        self, DeleteRepr, FLAG_INITIATOR, FLAG_RESPONSE, HeaderRepr, Message, NotifyRepr, Payload,
        ProposalRepr, TransformRepr, TsRepr, notify,
    },
};

mod auth;
mod child;
mod credentials;
mod ike_rekey;
mod info;
mod init;
mod message;
mod template;
mod text;
mod timers;

use text::*;

/// Where an IKE SA is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Initiator: IKE_SA_INIT sent.
    InitSent,
    /// Initiator: IKE_AUTH sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    InitDone,
    /// Established.
    Ready,
    /// Being deleted (a DELETE of the IKE SA is outstanding).
    Deleting,
}

/// Work waiting for the request window (size 1).
enum Work {
    NewChild,
    RekeyChild(u32),
    /// A new child (`rekey` None) or a child rekey again, with the PFS
    /// group the peer asked for (INVALID_KE_PAYLOAD); `retries` so far.
    ChildWithGroup {
        rekey: Option<u32>,
        group: DhGroup,
        retries: u8,
    },
    RekeyIke,
    DeleteChildren(Vec<u32>),
    DeleteIke,
    Dpd,
    InvalidSpi(u32),
}

/// What an outstanding request was, with the state its response needs.
enum Sent {
    Init,
    Auth,
    Child {
        rekey: Option<u32>,
        spi_in: u32,
        ni: Vec<u8>,
        dh: Option<Dh>,
        /// The ESP proposals offered, in order.
        offered: Vec<EspProposal>,
        /// Retries after INVALID_KE_PAYLOAD so far (no loops).
        ke_retries: u8,
    },
    Ike {
        spi: u64,
        ni: Vec<u8>,
        dh: Option<Dh>,
        prop: IkeProposal,
    },
    DeleteChildren(Vec<u32>),
    DeleteIke,
    Dpd,
    InvalidSpi,
}

struct Pending {
    msg_id: u32,
    /// The request's datagrams: one, or its Encrypted Fragments
    /// (a retransmission sends them all, RFC 7383 2.6.1).
    data: Vec<Vec<u8>>,
    tries: usize,
    next_at: Instant,
    sent: Sent,
}

/// State kept between IKE_SA_INIT and IKE_AUTH.
struct Neg {
    dh: Option<Dh>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    init_req: Vec<u8>,
    init_resp: Vec<u8>,
    cookie: Option<Vec<u8>>,
    child_spi: u32,
    /// Groups already tried after INVALID_KE_PAYLOAD (no loops).
    ke_retries: usize,
    /// The peer answered IKE_SA_INIT with an error (logged once).
    refused: bool,
    /// Initiator: times we started over with a new SPI because a COOKIE
    /// came after a retransmission (see `init_response`).
    respins: u8,
    /// The hashes the peer announced in SIGNATURE_HASH_ALGORITHMS (RFC
    /// 7427 4), for our AUTH with a certificate; empty: none announced.
    peer_hashes: Vec<u16>,
}

/// A child SA (one pair of ESP SAs).
struct Child {
    spi_in: u32,
    spi_out: u32,
    esp: EspProposal,
    local_ts: Vec<Prefix>,
    remote_ts: Vec<Prefix>,
    rekey_at: Instant,
    expire_at: Instant,
    /// Rekeyed: a newer child replaces it; it only decrypts until removed.
    superseded: bool,
    /// A DELETE for it is outstanding or it awaits the peer's.
    deleting: bool,
    /// Responder of a rekey: outbound keys installed only when the peer
    /// deletes the old SA (by then it has our new inbound SA).
    pending_out: Option<ChildKeys>,
    /// The child this one replaces (its spi_in).
    replaces: Option<u32>,
    /// Remove the inbound SA at this time (grace after a rekey).
    remove_at: Option<Instant>,
    /// Whether its outbound SA is the tunnel's outbound SA.
    outbound: bool,
    /// Nonces of the peer's rekey of this child we answered (for the
    /// simultaneous-rekey rule), and the child it created.
    peer_rekey: Option<(Vec<u8>, Vec<u8>, u32)>,
    /// Its outbound keys: the tunnel's outbound SA moves back to this
    /// child if a duplicate IKE SA's child that held it goes.
    out_keys: ChildKeys,
}

struct IkeSa {
    id: u32,
    peer: usize,
    initiator: bool,
    spi_i: u64,
    spi_r: u64,
    state: State,
    local: SocketAddr,
    remote: SocketAddr,
    prop: Option<IkeProposal>,
    keys: Option<IkeKeys>,
    nat: bool,
    created: Instant,
    established: Option<Instant>,
    rekey_at: Option<Instant>,
    next_req_id: u32,
    peer_req_id: u32,
    pending: Option<Pending>,
    queue: VecDeque<Work>,
    /// The answer to the peer's last request (its message id), for its
    /// retransmissions, and the addresses it went between (ours, the
    /// peer's): a retransmission from anywhere else gets nothing (no
    /// reflection of an unauthenticated message to a spoofed source).
    last_response: Option<(u32, Vec<Vec<u8>>, SocketAddr, SocketAddr)>,
    /// Both sides announced IKE fragmentation in IKE_SA_INIT (RFC 7383
    /// 2.3; a rekeyed IKE SA inherits it).
    frag: bool,
    /// The peer's messages being reassembled from fragments.
    reasm: frag::Reassembler,
    last_rx: Instant,
    children: Vec<Child>,
    neg: Option<Neg>,
    /// Set when this SA was replaced by a rekey and waits for deletion.
    rekeyed: bool,
    /// How we signed our AUTH and how the peer's was made (for `show`;
    /// a rekeyed IKE SA keeps its predecessor's).
    auth_sign: AuthMethod,
    auth_verify: AuthMethod,
    /// Last INVALID_SPI sent (rate limit).
    last_invalid_spi: Option<Instant>,
    /// A simultaneous IKE SA rekey (RFC 7296 2.8.2): the nonces (Ni, Nr)
    /// of the peer's rekey of this SA that we answered while ours was in
    /// flight, and the id of the IKE SA it created. Resolved when our own
    /// exchange completes.
    peer_ike_rekey: Option<(Vec<u8>, Vec<u8>, u32)>,
}

impl IkeSa {
    /// Queue work for the request window, without piling it up while the
    /// window is stuck (a silent peer): one new child at most, and the
    /// children to delete in one DELETE.
    fn enqueue(&mut self, w: Work) {
        match w {
            Work::NewChild if self.queue.iter().any(|q| matches!(q, Work::NewChild)) => {}
            Work::DeleteChildren(spis) => {
                match self.queue.iter_mut().find_map(|q| match q {
                    Work::DeleteChildren(v) => Some(v),
                    _ => None,
                }) {
                    Some(v) => {
                        for s in spis {
                            if !v.contains(&s) {
                                v.push(s);
                            }
                        }
                    }
                    None => self.queue.push_back(Work::DeleteChildren(spis)),
                }
            }
            w => self.queue.push_back(w),
        }
    }
}

/// Kinds of log lines an unauthenticated sender can cause at will: at
/// most one a [`LOG_INTERVAL`] per sender address and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Noise {
    /// A sender no tunnel has as its peer.
    UnknownPeer,
    /// A message that does not parse (outside or inside SK), or lacks
    /// payloads it must have.
    Malformed,
    /// A message of a known IKE SA that fails its integrity check.
    BadIntegrity,
    /// An IKE_SA_INIT refused (no proposal, another DH group, limits) or
    /// answered while ours is in flight.
    InitRefused,
    /// A half-open IKE SA that timed out.
    HalfOpen,
    /// A new peer of a template refused (max_peers, its selectors).
    TemplateRefused,
    /// An IKE_AUTH that failed authentication.
    AuthFailed,
}

struct TunnelState {
    /// When to (re)initiate, for initiators without an IKE SA serving the
    /// tunnel ([`Core::served`]).
    initiate_at: Option<Instant>,
    /// Our attempts in a row that ended without an IKE SA (the backoff).
    failures: u32,
    /// Datagrams from its peer's address come to it: false for a
    /// template (its range is matched after every such tunnel) and for a
    /// retired instance's slot.
    matchable: bool,
}

/// The core behind [`crate::Ike`].
pub(crate) struct Core {
    peers: Vec<Arc<PeerConfig>>,
    tunnels: Vec<TunnelState>,
    sas: Vec<IkeSa>,
    /// Every random byte: SPIs, nonces, IVs, DH keys, jitter, the cookie key.
    rng: Box<dyn Random>,
    reserved: HashSet<u32>,
    used_spis: HashSet<u32>,
    next_id: u32,
    out: Vec<Action>,
    /// Key of the responder's stateless cookies (RFC 7296 2.6).
    cookie_secret: ring::hmac::Key,
    /// Rate limits of the log lines unauthenticated senders can cause.
    noise: KeyedLimiter<(IpAddr, Noise)>,
    /// No `handle` yet: initiators start at the first one, whatever its
    /// `now` (a mock clock may be behind the `Instant` of `new`).
    fresh: bool,
    /// [`Command::Shutdown`] came: nothing is initiated or answered any more.
    stopped: bool,
    /// Fragmentation counters.
    stats: IkeStats,
    /// Responder templates, by their tunnel's position.
    templates: HashMap<usize, template::Template>,
    /// Instances of templates: position -> (its template's, its slot).
    instances: HashMap<usize, (usize, usize)>,
    /// Positions of retired instances, for the next one.
    free_peers: Vec<usize>,
    /// Instances that came and went, with their position in `out`.
    instance_changes: Vec<(usize, crate::InstanceChange)>,
}

impl Core {
    /// `now`: the clock's time at creation (initiators are due then);
    /// `rng`: the source of every random byte.
    pub(crate) fn new(peers: Vec<PeerConfig>, now: Instant, rng: Box<dyn Random>) -> Core {
        let epoch = now;
        let tunnels = peers
            .iter()
            .map(|p| TunnelState {
                initiate_at: if p.initiate { Some(epoch) } else { None },
                failures: 0,
                matchable: true,
            })
            .collect();
        Core {
            peers: peers.into_iter().map(Arc::new).collect(),
            tunnels,
            sas: Vec::new(),
            cookie_secret: {
                let mut k = [0u8; 32];
                let _ = rng.fill(&mut k);
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k)
            },
            rng,
            reserved: HashSet::new(),
            used_spis: HashSet::new(),
            next_id: 1,
            fresh: true,
            stopped: false,
            stats: IkeStats::default(),
            templates: HashMap::new(),
            instances: HashMap::new(),
            free_peers: Vec::new(),
            instance_changes: Vec::new(),
            noise: KeyedLimiter::new(LOG_INTERVAL, LOG_LIMIT_SENDERS),
            out: Vec::new(),
        }
    }

    pub(crate) fn reserve_spis(&mut self, spis: impl IntoIterator<Item = u32>) {
        self.reserved.extend(spis);
    }

    fn log(&mut self, sa_peer: usize, ios: bool, msg: impl std::fmt::Display) {
        let cfg = &self.peers[sa_peer];
        // A template's lines name its range (its half-open SAs' peers
        // are named in the message).
        let remote = match self.templates.get(&sa_peer) {
            Some(t) => format!("range {}/{}", t.cfg.range.addr, t.cfg.range.len),
            None => cfg.remote.to_string(),
        };
        let line = if ios {
            format!("{msg} ({} peer {remote})", cfg.tunnel)
        } else {
            format!("{}: peer {remote}: {msg}", cfg.tunnel)
        };
        self.out.push(Action::Log { ios, line });
    }

    /// The typed event of the SA at `i`'s tunnel (next to its log line).
    fn event(&mut self, i: usize, event: TunnelEvent) {
        let sa = &self.sas[i];
        self.out.push(Action::Event {
            tunnel: self.peers[sa.peer].tunnel_index,
            peer: sa.remote.ip(),
            event,
        });
    }

    /// The event of the SA at `i` given up unanswered: a failed setup, or
    /// a dead peer once established.
    fn no_answer(&mut self, i: usize) {
        let e = match self.sas[i].state {
            State::InitSent | State::AuthSent => TunnelEvent::Failure(Failure::NoAnswer),
            _ => TunnelEvent::Removed(Removal::DeadPeer),
        };
        self.event(i, e);
    }

    /// Log a line an unauthenticated sender `from` can cause at will (an
    /// unknown peer, a malformed message, a failed integrity check): at
    /// most one a [`LOG_INTERVAL`] per sender and kind; the next line
    /// logged says how many were suppressed. `tunnel`: the tunnel whose
    /// peer `from` is, if any (the line names it).
    fn log_noise(
        &mut self,
        now: Instant,
        from: IpAddr,
        kind: Noise,
        tunnel: Option<usize>,
        msg: impl std::fmt::Display,
    ) {
        // Many senders (spoofed, say): once LOG_LIMIT_SENDERS are recent,
        // the newcomers share one limit per kind.
        let unspecified = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        let Some(suppressed) = self.noise.allow(now, (from, kind), || (unspecified, kind)) else {
            return;
        };
        let msg = if suppressed > 0 {
            format!(
                "{msg} ({suppressed} more such line(s) suppressed since the last one; at most one a minute per sender)"
            )
        } else {
            msg.to_string()
        };
        match tunnel {
            Some(p) => self.log(p, false, msg),
            None => self.out.push(Action::Log {
                ios: false,
                line: msg,
            }),
        }
    }

    fn random_bytes(&self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        // The system's generator fails only without an OS RNG; the zeros would then
        // be refused by the peer rather than panic here.
        let _ = self.rng.fill(&mut v);
        v
    }

    fn random_u64(&self) -> u64 {
        loop {
            let b = self.random_bytes(8);
            let v = u64::from_be_bytes(b.try_into().unwrap_or([1; 8]));
            if v != 0 {
                return v;
            }
        }
    }

    /// A fresh inbound child SPI: random, never 0-255 (RFC 4303 2.1
    /// reserves 1-255; 0 is for local use), never reserved or in use.
    fn alloc_spi(&mut self) -> u32 {
        loop {
            let b = self.random_bytes(4);
            let spi = u32::from_be_bytes(b.try_into().unwrap_or([0; 4]));
            if spi > 255 && !self.reserved.contains(&spi) && self.used_spis.insert(spi) {
                return spi;
            }
        }
    }

    fn nonce(&self) -> Vec<u8> {
        self.random_bytes(NONCE_LEN)
    }

    /// A duration scaled by a random factor in [lo, hi] (per mille).
    fn jitter(&self, d: Duration, lo: u32, hi: u32) -> Duration {
        let b = self.random_bytes(4);
        let r = u32::from_be_bytes(b.try_into().unwrap_or([0; 4])) % (hi - lo + 1) + lo;
        d * r / 1000
    }

    fn find_sa(&self, spi_i: u64, spi_r: u64) -> Option<usize> {
        self.sas
            .iter()
            .position(|s| s.spi_i == spi_i && s.spi_r == spi_r)
    }

    /// The tunnel whose peer `remote` is: a configured tunnel or an
    /// instance with that address, else a template whose range has it.
    fn tunnel_for(&self, remote: IpAddr) -> Option<usize> {
        self.peers
            .iter()
            .zip(&self.tunnels)
            .position(|(p, t)| t.matchable && p.remote == remote)
            .or_else(|| self.template_for(remote))
    }

    fn ike_port_addr(cfg: &PeerConfig, ip: IpAddr, nat: bool) -> SocketAddr {
        SocketAddr::new(ip, if nat { cfg.nat_t_port } else { crate::IKE_PORT })
    }

    fn encap(&self, sa: &IkeSa) -> EspEncap {
        if sa.nat {
            EspEncap::Udp(sa.local.port(), sa.remote.port())
        } else {
            EspEncap::Esp
        }
    }

    fn send(&mut self, local: SocketAddr, remote: SocketAddr, data: Vec<u8>) {
        self.out.push(Action::Send {
            local,
            remote,
            data,
        });
    }

    /// Send a message's datagrams (one, or its fragments), counting fragments.
    fn send_all(&mut self, local: SocketAddr, remote: SocketAddr, data: &[Vec<u8>]) {
        for d in data {
            if frag::fragment_fields(d).is_some() {
                self.stats.fragments_sent += 1;
            }
            self.send(local, remote, d.clone());
        }
    }

    pub(crate) fn stats(&self) -> IkeStats {
        self.stats
    }

    fn id_body(t: u8, d: &[u8]) -> Vec<u8> {
        let mut v = vec![t, 0, 0, 0];
        v.extend_from_slice(d);
        v
    }

    pub(crate) fn handle(&mut self, now: Instant, input: Input<'_>) -> Vec<Action> {
        match input {
            Input::Datagram {
                local,
                remote,
                data,
            } => self.datagram(now, local, remote, data),
            Input::Timer => {}
            Input::Command(c) => self.command(now, c),
            Input::UnknownSpi { peer, spi } => self.unknown_spi(now, peer, spi),
        }
        self.limit_ike_sas(now);
        self.timers(now);
        self.kick(now);
        std::mem::take(&mut self.out)
    }

    pub(crate) fn footprint(&self) -> crate::Footprint {
        crate::Footprint {
            ike_sas: self.sas.len(),
            child_sas: self.sas.iter().map(|s| s.children.len()).sum(),
            queued: self.sas.iter().map(|s| s.queue.len()).sum(),
            spis: self.used_spis.len(),
            log_limits: self.noise.len(),
        }
    }

    pub(crate) fn sas(&self, now: Instant) -> Vec<IkeSaView> {
        let mut v: Vec<IkeSaView> = self
            .sas
            .iter()
            .filter_map(|sa| {
                let cfg = &self.peers[sa.peer];
                let prop = sa
                    .prop
                    .clone()
                    .or_else(|| cfg.ike_proposals.first().cloned())?;
                Some(IkeSaView {
                    id: sa.id,
                    tunnel: cfg.tunnel.clone(),
                    local: sa.local,
                    remote: sa.remote,
                    status: match sa.state {
                        State::Ready if sa.rekeyed => IkeSaStatus::Deleting,
                        State::Ready => IkeSaStatus::Ready,
                        State::Deleting => IkeSaStatus::Deleting,
                        _ => IkeSaStatus::InNeg,
                    },
                    initiator: sa.initiator,
                    encr: prop.encr,
                    integ: prop.integ,
                    prf: prop.prf,
                    dh: prop.dh,
                    spi_i: sa.spi_i,
                    spi_r: sa.spi_r,
                    lifetime: cfg.ike_lifetime,
                    active: sa
                        .established
                        .map_or(Duration::ZERO, |e| now.saturating_duration_since(e)),
                    nat: sa.nat,
                    auth_sign: sa.auth_sign,
                    auth_verify: sa.auth_verify,
                    dpd: cfg.dpd,
                    dpd_retry: cfg.dpd_retry,
                    children: sa
                        .children
                        .iter()
                        .filter(|c| !c.superseded)
                        .map(|c| (c.spi_in, c.spi_out))
                        .collect(),
                })
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    fn datagram(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
        if self.stopped {
            return;
        }
        // A shell that read from a wildcard socket: our address is the
        // tunnel's (NAT detection hashes need the real one).
        let local = match self.tunnel_for(remote.ip()) {
            Some(p) if local.ip().is_unspecified() => {
                SocketAddr::new(self.peers[p].local, local.port())
            }
            _ => local,
        };
        let m = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                match self.tunnel_for(remote.ip()) {
                    Some(p) => self.log_noise(
                        now,
                        remote.ip(),
                        Noise::Malformed,
                        Some(p),
                        format!("IKE message from {remote} dropped: {e}"),
                    ),
                    None => self.log_noise(
                        now,
                        remote.ip(),
                        Noise::UnknownPeer,
                        None,
                        format!("IKE message from {remote} (no tunnel has this peer) dropped: {e}"),
                    ),
                }
                return;
            }
        };
        let h = m.header;
        if h.exchange == wire::IKE_SA_INIT {
            if !h.is_response() && h.spi_r == 0 && h.msg_id == 0 && h.flags & FLAG_INITIATOR != 0 {
                self.init_request(now, &m, local, remote, data);
            } else if h.is_response() {
                let i = self
                    .sas
                    .iter()
                    .position(|s| s.initiator && s.spi_i == h.spi_i && s.state == State::InitSent);
                if let Some(i) = i
                    && self.sas[i].pending.as_ref().is_some_and(|p| p.msg_id == 0)
                {
                    self.sas[i].last_rx = now;
                    self.init_response(i, now, &m, local, remote, data);
                }
            }
            return;
        }
        let Some(i) = self.find_sa(h.spi_i, h.spi_r) else {
            // An unknown IKE SA (RFC 7296 2.21.4 allows an unprotected
            // INVALID_IKE_SPI; we stay silent).
            return;
        };
        // An Encrypted Fragment (RFC 7383): (number, total), unchecked yet.
        let fragment = frag::fragment_fields(data);
        let sk = match (m.sk, fragment) {
            (Some(sk), _) => Some(sk),
            (None, Some(_)) => None,
            (None, None) => return,
        };
        // Our role decides whose keys the peer used.
        let from_initiator = h.flags & FLAG_INITIATOR != 0;
        if from_initiator == self.sas[i].initiator {
            return;
        }
        if h.is_response() {
            match &self.sas[i].pending {
                Some(p) if p.msg_id == h.msg_id => {}
                _ => return,
            }
        } else {
            let expect = self.sas[i].peer_req_id;
            if let Some((id, data, l, r)) = &self.sas[i].last_response
                && h.msg_id == expect.wrapping_sub(1)
                && *id == h.msg_id
            {
                // A retransmitted request: the cached response again
                // (RFC 7296 2.1), without processing it twice. It is not
                // checked (that would cost as much as answering), so it
                // goes only where the original answer went: never to
                // another source, which could be anyone's (a reflection).
                // A fragmented request is answered on its first fragment
                // only (RFC 7383 2.6.1), not once per fragment.
                if *r == remote
                    && l.port() == local.port()
                    && fragment.is_none_or(|(num, _)| num == 1)
                {
                    let (l, r, d) = (*l, *r, data.clone());
                    self.send_all(l, r, &d);
                }
                return;
            }
            if h.msg_id != expect {
                return;
            }
        }
        let (first_inner, plain) = match sk {
            Some(sk) => {
                let Some(keys) = self.sas[i].keys.as_ref() else {
                    return;
                };
                match keys.open(from_initiator, data, sk) {
                    Ok(p) => (sk.first_inner, p),
                    Err(_) => {
                        let p = self.sas[i].peer;
                        self.log_noise(
                            now,
                            remote.ip(),
                            Noise::BadIntegrity,
                            Some(p),
                            format!(
                                "IKE message {} failed its integrity check; dropped",
                                h.msg_id
                            ),
                        );
                        return;
                    }
                }
            }
            None => match self.reassemble(i, now, remote, from_initiator, data) {
                Some(whole) => whole,
                None => return,
            },
        };
        let inner = match wire::parse_chain(first_inner, &plain, 0) {
            Ok((p, None)) => p,
            _ => {
                let p = self.sas[i].peer;
                self.log_noise(
                    now,
                    remote.ip(),
                    Noise::Malformed,
                    Some(p),
                    "malformed payloads inside SK; dropped",
                );
                return;
            }
        };
        let m = Message {
            header: h,
            payloads: inner,
            sk: None,
        };
        self.sas[i].last_rx = now;
        if self.sas[i].nat {
            // RFC 7296 2.23: behind a NAT, answer and send where the last
            // authenticated message came from (and on the port it came to).
            self.sas[i].remote = remote;
            self.sas[i].local = local;
        }
        if h.is_response() {
            let Some(p) = self.sas[i].pending.take() else {
                return;
            };
            self.response(i, now, &m, p.sent);
        } else {
            self.request(i, now, &m);
        }
    }

    /// Take one Encrypted Fragment of IKE SA `i` (its header already
    /// matched to the SA's message ids): each is checked on its own
    /// before it is kept (RFC 7383 2.6), within the per-SA bounds of
    /// [`frag::Reassembler`] and [`frag::MAX_TOTAL_BYTES`] for all SAs;
    /// a bad or duplicate one leaves the others as they were. Returns the
    /// whole message's (first inner payload type, payload chain) once
    /// its last fragment came.
    fn reassemble(
        &mut self,
        i: usize,
        now: Instant,
        remote: SocketAddr,
        from_initiator: bool,
        data: &[u8],
    ) -> Option<(u8, Secret)> {
        let p = self.sas[i].peer;
        let held: usize = self.sas.iter().map(|s| s.reasm.bytes()).sum();
        let sa = &mut self.sas[i];
        let outcome = match sa.keys.as_ref() {
            _ if !sa.frag => Err(None),
            None => Err(None),
            Some(_) if held + data.len() > frag::MAX_TOTAL_BYTES => Err(Some(FragError::TooBig)),
            Some(keys) => sa
                .reasm
                .accept(now, keys, from_initiator, data)
                .map_err(Some),
        };
        let why = match outcome {
            Ok(FragOutcome::Incomplete) => {
                self.stats.fragments_received += 1;
                return None;
            }
            Ok(FragOutcome::Complete { first_inner, plain }) => {
                self.stats.fragments_received += 1;
                self.stats.messages_reassembled += 1;
                return Some((first_inner, plain));
            }
            Err(e) => e,
        };
        self.stats.fragments_dropped += 1;
        let (kind, line) = match why {
            None => (
                Noise::Malformed,
                "IKE fragment from a peer that did not negotiate fragmentation (RFC 7383); dropped"
                    .to_string(),
            ),
            Some(FragError::Ignored) => return None,
            Some(FragError::Integrity) => (
                Noise::BadIntegrity,
                format!(
                    "IKE fragment of message {} failed its integrity check; dropped",
                    Message::parse(data).map_or(0, |m| m.header.msg_id)
                ),
            ),
            Some(e) => (Noise::Malformed, format!("{e}; dropped")),
        };
        self.log_noise(now, remote.ip(), kind, Some(p), line);
        None
    }

    fn response(&mut self, i: usize, now: Instant, m: &Message, sent: Sent) {
        match sent {
            Sent::Init => {}
            Sent::Auth => self.auth_response(i, now, m),
            Sent::Child {
                rekey,
                spi_in,
                ni,
                dh,
                offered,
                ke_retries,
            } => self.child_response(i, now, m, rekey, spi_in, ni, dh, offered, ke_retries),
            Sent::Ike { spi, ni, dh, prop } => {
                self.ike_rekey_response(i, now, m, spi, ni, dh, prop)
            }
            Sent::DeleteChildren(spis) => {
                // The peer's half of the deleted children: remove the
                // superseded ones' inbound SAs after a grace for packets
                // still in flight, the others now.
                for s in spis {
                    if let Some(c) = self.sas[i].children.iter_mut().find(|c| c.spi_in == s) {
                        if c.superseded {
                            c.remove_at = Some(now + INBOUND_GRACE);
                        } else {
                            self.remove_child(i, s);
                        }
                    }
                }
            }
            Sent::DeleteIke => {
                if !self.sas[i].rekeyed {
                    self.log(self.sas[i].peer, false, "IKE SA deleted");
                }
                self.drop_sa(i, now, None);
            }
            Sent::Dpd | Sent::InvalidSpi => {}
        }
    }

    fn request(&mut self, i: usize, now: Instant, m: &Message) {
        match m.header.exchange {
            wire::IKE_AUTH if self.sas[i].state == State::InitDone => self.auth_request(i, now, m),
            wire::CREATE_CHILD_SA if self.sas[i].state == State::Ready => {
                self.create_child_request(i, now, m)
            }
            wire::INFORMATIONAL => self.informational_request(i, now, m),
            _ => {
                // Not valid in this state: answer so the peer's window moves.
                let id = m.header.msg_id;
                self.respond(
                    i,
                    m.header.exchange,
                    id,
                    &[Self::notify_payload(notify::TEMPORARY_FAILURE, vec![])],
                );
            }
        }
    }
}
