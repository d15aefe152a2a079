//! The IKE SA and child SA state machines (RFC 7296): IKE_SA_INIT,
//! IKE_AUTH with PSK, CREATE_CHILD_SA (new child, child rekey, IKE rekey),
//! INFORMATIONAL (DELETE, DPD, INVALID_SPI), with window size 1,
//! retransmission and cached responses.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::{
    Action, ChildKeys, Command, DhGroup, EspEncap, EspProposal, IkeProposal, IkeSaStatus,
    IkeSaView, Input, PeerConfig, Prefix,
    crypto::{self, Dh, IkeKeys, Secret},
    proposal::{self, TRANS_DH, TRANS_ESN},
    timers::*,
    wire::{
        self, DeleteRepr, FLAG_INITIATOR, FLAG_RESPONSE, HeaderRepr, Message, NotifyRepr, Payload,
        ProposalRepr, TransformRepr, TsRepr, notify,
    },
};

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
    data: Vec<u8>,
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
    last_response: Option<(u32, Vec<u8>, SocketAddr, SocketAddr)>,
    last_rx: Instant,
    children: Vec<Child>,
    neg: Option<Neg>,
    /// Set when this SA was replaced by a rekey and waits for deletion.
    rekeyed: bool,
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
    /// An IKE_AUTH that failed authentication.
    AuthFailed,
}

/// The rate limit of one (sender, kind).
struct NoiseState {
    /// When the last line was logged.
    last: Instant,
    /// Lines suppressed since.
    suppressed: u64,
}

struct TunnelState {
    /// When to (re)initiate, for initiators without an IKE SA serving the
    /// tunnel ([`Core::served`]).
    initiate_at: Option<Instant>,
    /// Our attempts in a row that ended without an IKE SA (the backoff).
    failures: u32,
}

/// The core behind [`crate::Ike`].
pub(crate) struct Core {
    peers: Vec<Arc<PeerConfig>>,
    tunnels: Vec<TunnelState>,
    sas: Vec<IkeSa>,
    rng: SystemRandom,
    reserved: HashSet<u32>,
    used_spis: HashSet<u32>,
    next_id: u32,
    out: Vec<Action>,
    /// Key of the responder's stateless cookies (RFC 7296 2.6).
    cookie_secret: ring::hmac::Key,
    /// Rate limits of the log lines unauthenticated senders can cause.
    noise: HashMap<(IpAddr, Noise), NoiseState>,
    /// No `handle` yet: initiators start at the first one, whatever its
    /// `now` (a mock clock may be behind the `Instant` of `new`).
    fresh: bool,
    /// [`Command::Shutdown`] came: nothing is initiated or answered any more.
    stopped: bool,
}

impl Core {
    pub(crate) fn new(peers: Vec<PeerConfig>) -> Core {
        let epoch = Instant::now();
        let tunnels = peers
            .iter()
            .map(|p| TunnelState {
                initiate_at: if p.initiate { Some(epoch) } else { None },
                failures: 0,
            })
            .collect();
        Core {
            peers: peers.into_iter().map(Arc::new).collect(),
            tunnels,
            sas: Vec::new(),
            rng: SystemRandom::new(),
            reserved: HashSet::new(),
            used_spis: HashSet::new(),
            next_id: 1,
            fresh: true,
            stopped: false,
            noise: HashMap::new(),
            cookie_secret: {
                let mut k = [0u8; 32];
                let _ = SystemRandom::new().fill(&mut k);
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k)
            },
            out: Vec::new(),
        }
    }

    pub(crate) fn reserve_spis(&mut self, spis: impl IntoIterator<Item = u32>) {
        self.reserved.extend(spis);
    }

    // ---- helpers -------------------------------------------------------

    fn log(&mut self, sa_peer: usize, ios: bool, msg: impl std::fmt::Display) {
        let cfg = &self.peers[sa_peer];
        let line = if ios {
            format!("{msg} ({} peer {})", cfg.tunnel, cfg.remote)
        } else {
            format!("{}: peer {}: {msg}", cfg.tunnel, cfg.remote)
        };
        self.out.push(Action::Log { ios, line });
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
        let mut key = (from, kind);
        if !self.noise.contains_key(&key) && self.noise.len() >= LOG_LIMIT_SENDERS {
            // Many senders (spoofed, say): forget those whose interval
            // passed (their suppressed counts go unreported); if all are
            // recent, the newcomers share one limit per kind.
            self.noise.retain(|_, v| now < v.last + LOG_INTERVAL);
            if self.noise.len() >= LOG_LIMIT_SENDERS {
                key = (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), kind);
            }
        }
        let suppressed = match self.noise.get_mut(&key) {
            Some(e) if now < e.last + LOG_INTERVAL => {
                e.suppressed += 1;
                return;
            }
            Some(e) => std::mem::take(&mut e.suppressed),
            None => 0,
        };
        self.noise.insert(
            key,
            NoiseState {
                last: now,
                suppressed: 0,
            },
        );
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
        // SystemRandom fails only without an OS RNG; the zeros would then
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

    fn tunnel_for(&self, remote: IpAddr) -> Option<usize> {
        self.peers.iter().position(|p| p.remote == remote)
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

    fn id_payload(id: &crate::Identity) -> (u8, Vec<u8>) {
        crate::cert::id_payload(id)
    }

    fn id_body(t: u8, d: &[u8]) -> Vec<u8> {
        let mut v = vec![t, 0, 0, 0];
        v.extend_from_slice(d);
        v
    }

    /// Whether a received proposal offers every transform of ours.
    fn offers(theirs: &ProposalRepr, ours: &[TransformRepr]) -> bool {
        ours.iter().all(|o| theirs.transforms.iter().any(|t| t == o))
            // ...and nothing of a type we did not propose is mandatory for
            // it (an INTEG with an AEAD, a DH when we do not do PFS).
            && theirs.transforms.iter().all(|t| {
                ours.iter().any(|o| o.ty == t.ty) || (t.ty == TRANS_DH && t.id == 0) || (t.ty == TRANS_ESN && t.id == 0)
            })
    }

    /// Responder: the first of our IKE proposals the peer offers.
    fn select_ike(ours: &[IkeProposal], theirs: &[ProposalRepr]) -> Option<(u8, IkeProposal)> {
        for o in ours {
            let Payload::Sa(p) = proposal::ike_sa_payload(std::slice::from_ref(o), None) else {
                continue;
            };
            for t in theirs.iter().filter(|t| t.protocol == wire::PROTO_IKE) {
                if Self::offers(t, &p[0].transforms) {
                    return Some((t.num, o.clone()));
                }
            }
        }
        None
    }

    /// Responder: the first of our ESP proposals the peer offers.
    fn select_esp(
        ours: &[EspProposal],
        theirs: &[ProposalRepr],
        pfs: bool,
    ) -> Option<(u8, u32, EspProposal)> {
        // Matched without the DH transform when there is no KE (IKE_AUTH,
        // no PFS), but the configured proposal (with its PFS group, for
        // later rekeys) is what the child keeps.
        for configured in ours {
            let o = EspProposal {
                dh: if pfs { configured.dh } else { None },
                ..configured.clone()
            };
            let mine = proposal::esp_transforms(&o, pfs);
            for t in theirs
                .iter()
                .filter(|t| t.protocol == wire::PROTO_ESP && t.spi.len() == 4)
            {
                if Self::offers(t, &mine) {
                    let spi = u32::from_be_bytes(t.spi.clone().try_into().unwrap_or([0; 4]));
                    return Some((t.num, spi, configured.clone()));
                }
            }
        }
        None
    }

    /// Initiator: which of our proposals the responder's single proposal is.
    fn accepted_ike(ours: &[IkeProposal], theirs: &[ProposalRepr]) -> Option<IkeProposal> {
        let [t] = theirs else { return None };
        ours.iter()
            .find(|o| {
                let Payload::Sa(p) = proposal::ike_sa_payload(std::slice::from_ref(o), None) else {
                    return false;
                };
                Self::offers(t, &p[0].transforms) && t.transforms.len() == p[0].transforms.len()
            })
            .cloned()
    }

    fn accepted_esp(
        ours: &[EspProposal],
        theirs: &[ProposalRepr],
        pfs: bool,
    ) -> Option<(u32, EspProposal)> {
        let [t] = theirs else { return None };
        if t.protocol != wire::PROTO_ESP || t.spi.len() != 4 {
            return None;
        }
        let spi = u32::from_be_bytes(t.spi.clone().try_into().unwrap_or([0; 4]));
        ours.iter()
            .find(|configured| {
                let o = EspProposal {
                    dh: if pfs { configured.dh } else { None },
                    ..(*configured).clone()
                };
                Self::offers(t, &proposal::esp_transforms(&o, pfs))
            })
            .map(|o| (spi, o.clone()))
    }

    fn ts_payloads(local: &[Prefix], remote: &[Prefix], initiator: bool) -> [Payload; 2] {
        let l: Vec<TsRepr> = local.iter().map(|p| TsRepr::from_prefix(*p)).collect();
        let r: Vec<TsRepr> = remote.iter().map(|p| TsRepr::from_prefix(*p)).collect();
        if initiator {
            [Payload::TsI(l), Payload::TsR(r)]
        } else {
            [Payload::TsI(r), Payload::TsR(l)]
        }
    }

    fn nat_payloads(
        &self,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
        fake: bool,
    ) -> [Payload; 2] {
        // strongSwan's `encap = yes`: a source hash that cannot match makes
        // the peer see a NAT, so both sides move to UDP encapsulation.
        let src = if fake {
            self.random_bytes(20)
        } else {
            crypto::nat_hash(spi_i, spi_r, local)
        };
        [
            Payload::Notify(NotifyRepr {
                protocol: 0,
                spi: vec![],
                ty: notify::NAT_DETECTION_SOURCE_IP,
                data: src,
            }),
            Payload::Notify(NotifyRepr {
                protocol: 0,
                spi: vec![],
                ty: notify::NAT_DETECTION_DESTINATION_IP,
                data: crypto::nat_hash(spi_i, spi_r, remote),
            }),
        ]
    }

    /// Whether the NAT detection notifies of `m` (received on `local`
    /// from `remote`) show a NAT on the path.
    fn nat_detected(
        m: &Message,
        spi_i: u64,
        spi_r: u64,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> bool {
        let src_ok = m
            .notifies(notify::NAT_DETECTION_SOURCE_IP)
            .any(|n| n.data == crypto::nat_hash(spi_i, spi_r, remote));
        let has_src = m.notify(notify::NAT_DETECTION_SOURCE_IP).is_some();
        let dst_ok = m
            .notify(notify::NAT_DETECTION_DESTINATION_IP)
            .is_none_or(|n| n.data == crypto::nat_hash(spi_i, spi_r, local));
        has_src && (!src_ok || !dst_ok)
    }

    fn notify_payload(ty: u16, data: Vec<u8>) -> Payload {
        Payload::Notify(NotifyRepr {
            protocol: 0,
            spi: vec![],
            ty,
            data,
        })
    }

    /// Encrypt `payloads` into a message of this SA.
    fn seal(
        &self,
        i: usize,
        exchange: u8,
        response: bool,
        msg_id: u32,
        payloads: &[Payload],
    ) -> Option<Vec<u8>> {
        let sa = &self.sas[i];
        let keys = sa.keys.as_ref()?;
        let h = HeaderRepr {
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            exchange,
            flags: (if sa.initiator { FLAG_INITIATOR } else { 0 })
                | (if response { FLAG_RESPONSE } else { 0 }),
            msg_id,
        };
        let mut inner = Vec::new();
        let first = wire::emit_payloads(payloads, &mut inner);
        let inner = Zeroizing::new(inner);
        keys.seal(sa.initiator, &h, first, &inner, &self.rng).ok()
    }

    /// Send a request now (the window is free) and keep it for retransmission.
    fn send_request(
        &mut self,
        i: usize,
        now: Instant,
        exchange: u8,
        payloads: &[Payload],
        sent: Sent,
    ) {
        let msg_id = self.sas[i].next_req_id;
        let Some(data) = self.seal(i, exchange, false, msg_id, payloads) else {
            return;
        };
        self.sas[i].next_req_id = msg_id.wrapping_add(1);
        self.send_request_bytes(i, now, msg_id, data, sent);
    }

    fn send_request_bytes(
        &mut self,
        i: usize,
        now: Instant,
        msg_id: u32,
        data: Vec<u8>,
        sent: Sent,
    ) {
        let (local, remote) = (self.sas[i].local, self.sas[i].remote);
        self.send(local, remote, data.clone());
        self.sas[i].pending = Some(Pending {
            msg_id,
            data,
            tries: 0,
            next_at: now + RETRANSMIT[0],
            sent,
        });
    }

    /// Answer a request of the peer and cache the answer for its retransmissions.
    fn respond(&mut self, i: usize, exchange: u8, msg_id: u32, payloads: &[Payload]) {
        let Some(data) = self.seal(i, exchange, true, msg_id, payloads) else {
            return;
        };
        let (local, remote) = (self.sas[i].local, self.sas[i].remote);
        self.send(local, remote, data.clone());
        self.sas[i].last_response = Some((msg_id, data, local, remote));
        self.sas[i].peer_req_id = msg_id.wrapping_add(1);
    }

    #[allow(clippy::too_many_arguments)]
    fn child_keys(
        &self,
        i: usize,
        shared: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
        esp: &EspProposal,
        spi_in: u32,
        spi_out: u32,
        we_initiated: bool,
    ) -> Option<(ChildKeys, ChildKeys)> {
        let keys = self.sas[i].keys.as_ref()?;
        let (i2r, r2i) = crypto::child_keymat(
            keys.prop.prf,
            &keys.sk_d,
            shared,
            ni,
            nr,
            esp.encr,
            esp.integ,
        );
        let (inb, outb) = if we_initiated { (r2i, i2r) } else { (i2r, r2i) };
        Some((
            ChildKeys {
                spi: spi_in,
                encr: esp.encr,
                integ: esp.integ,
                key: inb,
            },
            ChildKeys {
                spi: spi_out,
                encr: esp.encr,
                integ: esp.integ,
                key: outb,
            },
        ))
    }

    /// Install a child: inbound first, then outbound unless deferred.
    #[allow(clippy::too_many_arguments)]
    fn install_child(
        &mut self,
        i: usize,
        now: Instant,
        keys: (ChildKeys, ChildKeys),
        esp: EspProposal,
        local_ts: Vec<Prefix>,
        remote_ts: Vec<Prefix>,
        replaces: Option<u32>,
        defer_out: bool,
    ) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let encap = self.encap(&self.sas[i]);
        let (inb, outb) = keys;
        let (spi_in, spi_out) = (inb.spi, outb.spi);
        self.out.push(Action::AddInbound {
            tunnel: cfg.tunnel_index,
            peer: cfg.remote,
            encap,
            keys: inb,
            replay_window: cfg.replay_window,
            local_ts: local_ts.clone(),
            remote_ts: remote_ts.clone(),
            lifetime: cfg.child_lifetime,
        });
        let out_keys = outb.clone();
        let mut pending_out = None;
        if defer_out {
            pending_out = Some(outb);
        } else {
            self.set_outbound(i, outb);
        }
        let rekey_at = now + self.jitter(cfg.child_lifetime, REKEY_SOFT_MIN, REKEY_SOFT_MAX);
        self.sas[i].children.push(Child {
            spi_in,
            spi_out,
            esp: esp.clone(),
            local_ts,
            remote_ts,
            rekey_at,
            expire_at: now + cfg.child_lifetime,
            superseded: false,
            deleting: false,
            pending_out,
            replaces,
            remove_at: None,
            outbound: !defer_out,
            peer_rekey: None,
            out_keys,
        });
        let what = if replaces.is_some() {
            "rekeyed"
        } else {
            "established"
        };
        self.log(
            self.sas[i].peer,
            false,
            format!(
                "child SA {what}: inbound SPI 0x{spi_in:08x}, outbound SPI 0x{spi_out:08x}, {}{}",
                esp.encr,
                esp.integ.map(|x| format!(" {x}")).unwrap_or_default()
            ),
        );
    }

    fn set_outbound(&mut self, i: usize, outb: ChildKeys) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let encap = self.encap(&self.sas[i]);
        let spi = outb.spi;
        // One outbound SA per tunnel, whichever IKE SA made it.
        let peer = self.sas[i].peer;
        for sa in self.sas.iter_mut().filter(|s| s.peer == peer) {
            for c in &mut sa.children {
                c.outbound = false;
            }
        }
        if let Some(c) = self.sas[i].children.iter_mut().find(|c| c.spi_out == spi) {
            c.outbound = true;
        }
        self.out.push(Action::SetOutbound {
            tunnel: cfg.tunnel_index,
            peer: cfg.remote,
            encap,
            keys: outb,
            lifetime: cfg.child_lifetime,
        });
    }

    /// Remove a child's SAs from the datapath now.
    fn remove_child(&mut self, i: usize, spi_in: u32) {
        let tunnel = self.peers[self.sas[i].peer].tunnel_index;
        let Some(pos) = self.sas[i].children.iter().position(|c| c.spi_in == spi_in) else {
            return;
        };
        let c = self.sas[i].children.remove(pos);
        self.out.push(Action::RemoveInbound {
            tunnel,
            spi: c.spi_in,
        });
        self.used_spis.remove(&c.spi_in);
        if c.outbound {
            // Its outbound SA was the tunnel's (a rekey would have moved
            // the flag to the replacement). Another live child of the
            // tunnel (of a duplicate IKE SA: simultaneous initiation) takes
            // over; else the tunnel has none now.
            let peer = self.sas[i].peer;
            let other = self.sas.iter().enumerate().rev().find_map(|(j, s)| {
                if s.peer != peer || s.state != State::Ready || s.rekeyed {
                    return None;
                }
                s.children
                    .iter()
                    .rev()
                    .find(|c| !c.superseded && !c.deleting && c.pending_out.is_none())
                    .map(|c| (j, c.out_keys.clone()))
            });
            match other {
                Some((j, keys)) => self.set_outbound(j, keys),
                None => self.out.push(Action::RemoveOutbound { tunnel }),
            }
        }
    }

    /// Whether an IKE SA serves tunnel `p`, so that we need not initiate:
    /// one of ours (in any state), or an authenticated one of the peer's.
    /// A half-open responder SA never counts: anyone can make one with a
    /// spoofed IKE_SA_INIT.
    fn served(&self, p: usize) -> bool {
        self.sas.iter().any(|s| {
            s.peer == p && (s.initiator || matches!(s.state, State::Ready | State::Deleting))
        })
    }

    /// The delay before initiating again after `failures` attempts in a
    /// row went unanswered: doubling from [`REINITIATE_DELAY`] up to
    /// [`REINITIATE_MAX`].
    fn backoff(failures: u32) -> Duration {
        let d = REINITIATE_DELAY.saturating_mul(1 << failures.saturating_sub(1).min(8));
        d.min(REINITIATE_MAX)
    }

    /// Tear down an IKE SA and its children now.
    fn drop_sa(&mut self, i: usize, now: Instant, reinitiate: Option<Duration>) {
        // None of its children takes the tunnel's outbound SA over.
        for c in &mut self.sas[i].children {
            c.deleting = true;
        }
        let spis: Vec<u32> = self.sas[i].children.iter().map(|c| c.spi_in).collect();
        for s in spis {
            self.remove_child(i, s);
        }
        let sa = self.sas.remove(i);
        // SPIs taken for children that never came: the first child's of a
        // handshake that did not finish, an outstanding CREATE_CHILD_SA's.
        if let Some(n) = &sa.neg {
            self.used_spis.remove(&n.child_spi);
        }
        if let Some(Pending {
            sent: Sent::Child { spi_in, .. },
            ..
        }) = &sa.pending
        {
            self.used_spis.remove(spi_in);
        }
        if (sa.state == State::Ready || sa.state == State::Deleting) && !sa.rekeyed {
            self.log(sa.peer, true, "%IKEV2-5-SA_DOWN: SA DOWN");
        }
        let cfg = self.peers[sa.peer].clone();
        let t = &mut self.tunnels[sa.peer];
        if sa.initiator && sa.established.is_none() && reinitiate.is_none() {
            // Our attempt got no IKE SA: back off before the next one.
            t.failures = t.failures.saturating_add(1);
        }
        // Re-initiate only if no other IKE SA serves the tunnel.
        if cfg.initiate && !self.served(sa.peer) {
            let t = &mut self.tunnels[sa.peer];
            let at = now + reinitiate.unwrap_or_else(|| Self::backoff(t.failures));
            t.initiate_at = Some(t.initiate_at.map_or(at, |x| x.min(at)));
        }
    }

    // ---- entry points --------------------------------------------------

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

    /// At most [`MAX_IKE_SAS_PER_PEER`] established IKE SAs per tunnel: a
    /// peer that authenticates or rekeys again and again loses its oldest
    /// ones, those a rekey already replaced first.
    fn limit_ike_sas(&mut self, now: Instant) {
        if self.sas.len() <= MAX_IKE_SAS_PER_PEER {
            return;
        }
        let mut count: HashMap<usize, usize> = HashMap::new();
        for s in self.sas.iter().filter(|s| s.state == State::Ready) {
            *count.entry(s.peer).or_default() += 1;
        }
        for (p, mut n) in count {
            while n > MAX_IKE_SAS_PER_PEER {
                let Some((_, j)) = self
                    .sas
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.peer == p && s.state == State::Ready)
                    .map(|(j, s)| ((!s.rekeyed, s.established), j))
                    .min()
                else {
                    break;
                };
                self.log(
                    p,
                    false,
                    format!("more than {MAX_IKE_SAS_PER_PEER} IKE SAs with the peer; deleting the oldest and its child SAs"),
                );
                self.drop_sa(j, now, None);
                n -= 1;
            }
        }
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        for (p, ts) in self.tunnels.iter().enumerate() {
            if let Some(x) = ts.initiate_at
                && !self.stopped
                && !self.served(p)
            {
                at(x);
            }
        }
        for sa in &self.sas {
            if let Some(p) = &sa.pending {
                at(p.next_at);
            }
            if sa.state == State::InitDone {
                at(sa.created + HALF_OPEN_TIMEOUT);
            }
            if sa.state == State::Ready {
                if let Some(r) = sa.rekey_at {
                    at(r);
                }
                if let Some(d) = self.peers[sa.peer].dpd
                    && sa.pending.is_none()
                    && sa.queue.is_empty()
                {
                    at(sa.last_rx + d);
                }
                for c in &sa.children {
                    // (A child waiting for the peer's DELETE of the one it
                    // replaces is not rekeyed before that.)
                    if !c.superseded && !c.deleting && c.pending_out.is_none() {
                        at(c.rekey_at);
                    }
                    if let Some(r) = c.remove_at {
                        at(r);
                    }
                    if !c.superseded && !c.deleting {
                        at(c.expire_at);
                    }
                }
            }
        }
        t
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

    // ---- timers ----------------------------------------------------------

    fn timers(&mut self, now: Instant) {
        if std::mem::take(&mut self.fresh) {
            for (t, p) in self.tunnels.iter_mut().zip(&self.peers) {
                if p.initiate {
                    t.initiate_at = Some(now);
                }
            }
        }
        // Initiations: a tunnel with `initiate` and no IKE SA serving it
        // always has one due (half-open responder SAs, which a spoofed
        // IKE_SA_INIT makes, never hold it back).
        for p in 0..self.peers.len() {
            if !self.peers[p].initiate || self.stopped {
                continue;
            }
            if self.served(p) {
                self.tunnels[p].initiate_at = None;
                continue;
            }
            match self.tunnels[p].initiate_at {
                Some(at) if at <= now => {
                    self.tunnels[p].initiate_at = None;
                    self.start_init(p, now, None);
                }
                Some(_) => {}
                None => {
                    let d = Self::backoff(self.tunnels[p].failures);
                    self.tunnels[p].initiate_at = Some(now + d);
                }
            }
        }
        let mut i = 0;
        while i < self.sas.len() {
            if self.sa_timers(i, now) {
                i += 1;
            }
        }
    }

    /// Returns false when the SA at `i` was removed.
    fn sa_timers(&mut self, i: usize, now: Instant) -> bool {
        if self.sas[i].state == State::InitDone && now >= self.sas[i].created + HALF_OPEN_TIMEOUT {
            let (from, p) = (self.sas[i].remote.ip(), self.sas[i].peer);
            self.log_noise(
                now,
                from,
                Noise::HalfOpen,
                Some(p),
                "half-open IKE SA timed out (no IKE_AUTH from the peer)",
            );
            self.drop_sa(i, now, None);
            return false;
        }
        // Retransmissions (RFC 7296 2.1, 2.4).
        if let Some(p) = &mut self.sas[i].pending
            && p.next_at <= now
        {
            p.tries += 1;
            if p.tries >= RETRANSMIT.len() {
                let what = match self.sas[i].state {
                    State::InitSent => "no answer to IKE_SA_INIT",
                    State::AuthSent => "no answer to IKE_AUTH",
                    _ => "peer dead: no answer",
                };
                let total: Duration = RETRANSMIT.iter().sum();
                self.log(
                    self.sas[i].peer,
                    false,
                    format!("{what} after {} retransmissions ({} s); deleting the IKE SA and its child SAs", RETRANSMIT.len() - 1, total.as_secs()),
                );
                let refused = self.sas[i].neg.as_ref().is_some_and(|n| n.refused);
                self.drop_sa(i, now, if refused { Some(FAILED_RETRY) } else { None });
                return false;
            }
            p.next_at = now + RETRANSMIT[p.tries];
            let data = p.data.clone();
            let (local, remote) = (self.sas[i].local, self.sas[i].remote);
            self.send(local, remote, data);
        }
        if self.sas[i].state != State::Ready {
            return true;
        }
        if self.sas[i].rekeyed {
            if self.sas[i].rekey_at.is_some_and(|t| t <= now) {
                self.drop_sa(i, now, None);
                return false;
            }
            return true;
        }
        let cfg = self.peers[self.sas[i].peer].clone();
        // Children: grace removals, deferred outbound fallbacks, rekeys.
        let mut j = 0;
        while j < self.sas[i].children.len() {
            let c = &self.sas[i].children[j];
            if c.remove_at.is_some_and(|t| t <= now) {
                let spi = c.spi_in;
                self.remove_child(i, spi);
                continue;
            }
            if c.pending_out.is_some() && c.expire_at <= now {
                // Never told to switch: the SA is not used; drop it.
                let spi = c.spi_in;
                self.remove_child(i, spi);
                continue;
            }
            if !c.superseded && !c.deleting && c.pending_out.is_none() && c.expire_at <= now {
                // The hard lifetime passed and no rekey got through: the
                // keys must not be used longer (RFC 7296 2.8).
                let spi = c.spi_in;
                self.log(
                    self.sas[i].peer,
                    false,
                    format!("child SA (inbound SPI 0x{spi:08x}) reached its lifetime without a rekey; deleting it and negotiating a new one"),
                );
                self.remove_child(i, spi);
                self.sas[i]
                    .queue
                    .retain(|w| !matches!(w, Work::RekeyChild(s) if *s == spi));
                self.sas[i].enqueue(Work::DeleteChildren(vec![spi]));
                self.sas[i].enqueue(Work::NewChild);
                continue;
            }
            if !c.superseded && !c.deleting && c.pending_out.is_none() && c.rekey_at <= now {
                let spi = c.spi_in;
                let retry = now + self.jitter(REKEY_RETRY, 500, 1500);
                self.sas[i].children[j].rekey_at = retry;
                if !self.sas[i]
                    .queue
                    .iter()
                    .any(|w| matches!(w, Work::RekeyChild(s) if *s == spi))
                {
                    self.sas[i].queue.push_back(Work::RekeyChild(spi));
                }
            }
            j += 1;
        }
        if let Some(r) = self.sas[i].rekey_at
            && r <= now
            && !self.sas[i].rekeyed
        {
            self.sas[i].rekey_at = Some(now + self.jitter(REKEY_RETRY, 500, 1500));
            if !self.sas[i]
                .queue
                .iter()
                .any(|w| matches!(w, Work::RekeyIke))
            {
                self.sas[i].queue.push_back(Work::RekeyIke);
            }
        }
        if let Some(d) = cfg.dpd
            && now >= self.sas[i].last_rx + d
            && self.sas[i].pending.is_none()
            && self.sas[i].queue.is_empty()
        {
            self.sas[i].queue.push_back(Work::Dpd);
        }
        true
    }

    /// Send queued requests where the window is free.
    fn kick(&mut self, now: Instant) {
        for i in 0..self.sas.len() {
            while self.sas[i].pending.is_none()
                && matches!(self.sas[i].state, State::Ready | State::Deleting)
            {
                let Some(w) = self.sas[i].queue.pop_front() else {
                    break;
                };
                self.start_work(i, now, w);
            }
        }
    }

    /// The ESP proposals for a rekey of a child negotiated as `esp`: that
    /// one first, then the same transforms with each other PFS group of
    /// the configured proposals (so that a peer asking for another group
    /// with INVALID_KE_PAYLOAD, RFC 7296 1.3 and 2.7, finds it offered).
    fn rekey_proposals(cfg: &PeerConfig, esp: &EspProposal) -> Vec<EspProposal> {
        let mut v = vec![esp.clone()];
        if esp.dh.is_none() {
            return v;
        }
        for c in &cfg.esp_proposals {
            if c.encr == esp.encr
                && c.integ == esp.integ
                && c.dh.is_some()
                && !v.iter().any(|x| x.dh == c.dh)
            {
                v.push(EspProposal {
                    dh: c.dh,
                    ..esp.clone()
                });
            }
        }
        v
    }

    /// Send a CREATE_CHILD_SA request for a new child (`rekey` None) or a
    /// rekey of the child with inbound SPI `rekey`; `group` overrides the
    /// PFS group of the first proposal (after INVALID_KE_PAYLOAD).
    fn start_child(
        &mut self,
        i: usize,
        now: Instant,
        rekey: Option<u32>,
        group: Option<DhGroup>,
        ke_retries: u8,
    ) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let old = rekey.and_then(|s| {
            self.sas[i]
                .children
                .iter()
                .find(|c| c.spi_in == s && !c.superseded && !c.deleting)
        });
        if rekey.is_some() && old.is_none() {
            return;
        }
        let (local_ts, remote_ts, esp_list) = match old {
            Some(c) => (
                c.local_ts.clone(),
                c.remote_ts.clone(),
                Self::rekey_proposals(&cfg, &c.esp),
            ),
            None => (
                cfg.local_ts.clone(),
                cfg.remote_ts.clone(),
                cfg.esp_proposals.clone(),
            ),
        };
        if esp_list.is_empty() {
            self.log(
                self.sas[i].peer,
                false,
                "no ESP proposals configured; no child SA",
            );
            return;
        }
        let spi_in = self.alloc_spi();
        let ni = self.nonce();
        let pfs = esp_list.first().and_then(|e| e.dh);
        // The group the peer asked for, if it is one we offer.
        let pfs = match group {
            Some(g) if pfs.is_some() && esp_list.iter().any(|e| e.dh == Some(g)) => Some(g),
            _ => pfs,
        };
        let dh = match pfs {
            Some(g) => match Dh::generate(g, &self.rng) {
                Ok(d) => Some(d),
                Err(_) => return,
            },
            None => None,
        };
        let mut p = vec![
            proposal::esp_sa_payload(&esp_list, spi_in, true),
            Payload::Nonce(ni.clone()),
        ];
        if let Some(d) = &dh {
            p.push(Payload::Ke {
                group: d.group.id(),
                data: d.public().to_vec(),
            });
        }
        p.extend(Self::ts_payloads(&local_ts, &remote_ts, true));
        if let Some(s) = rekey {
            p.insert(
                0,
                Payload::Notify(NotifyRepr {
                    protocol: wire::PROTO_ESP,
                    spi: s.to_be_bytes().to_vec(),
                    ty: notify::REKEY_SA,
                    data: vec![],
                }),
            );
        }
        self.send_request(
            i,
            now,
            wire::CREATE_CHILD_SA,
            &p,
            Sent::Child {
                rekey,
                spi_in,
                ni,
                dh,
                offered: esp_list,
                ke_retries,
            },
        );
    }

    fn start_work(&mut self, i: usize, now: Instant, w: Work) {
        match w {
            Work::NewChild => self.start_child(i, now, None, None, 0),
            Work::RekeyChild(s) => self.start_child(i, now, Some(s), None, 0),
            Work::ChildWithGroup {
                rekey,
                group,
                retries,
            } => self.start_child(i, now, rekey, Some(group), retries),
            Work::RekeyIke => {
                let Some(prop) = self.sas[i].prop.clone() else {
                    return;
                };
                let spi = self.random_u64();
                let ni = self.nonce();
                let Ok(dh) = Dh::generate(prop.dh, &self.rng) else {
                    return;
                };
                let p = vec![
                    proposal::ike_sa_payload(std::slice::from_ref(&prop), Some(spi)),
                    Payload::Nonce(ni.clone()),
                    Payload::Ke {
                        group: prop.dh.id(),
                        data: dh.public().to_vec(),
                    },
                ];
                self.send_request(
                    i,
                    now,
                    wire::CREATE_CHILD_SA,
                    &p,
                    Sent::Ike {
                        spi,
                        ni,
                        dh: Some(dh),
                        prop,
                    },
                );
            }
            Work::DeleteChildren(spis) => {
                let p = vec![Payload::Delete(DeleteRepr::Esp(spis.clone()))];
                self.send_request(i, now, wire::INFORMATIONAL, &p, Sent::DeleteChildren(spis));
            }
            Work::DeleteIke => {
                self.sas[i].state = State::Deleting;
                let p = vec![Payload::Delete(DeleteRepr::Ike)];
                self.send_request(i, now, wire::INFORMATIONAL, &p, Sent::DeleteIke);
            }
            Work::Dpd => self.send_request(i, now, wire::INFORMATIONAL, &[], Sent::Dpd),
            Work::InvalidSpi(spi) => {
                let p = vec![Payload::Notify(NotifyRepr {
                    protocol: wire::PROTO_ESP,
                    spi: vec![],
                    ty: notify::INVALID_SPI,
                    data: spi.to_be_bytes().to_vec(),
                })];
                self.send_request(i, now, wire::INFORMATIONAL, &p, Sent::InvalidSpi);
            }
        }
    }

    // ---- IKE_SA_INIT, initiator -----------------------------------------

    fn start_init(&mut self, p: usize, now: Instant, group: Option<DhGroup>) {
        let cfg = self.peers[p].clone();
        let Some(first) = cfg.ike_proposals.first() else {
            self.log(p, false, "no IKE proposals configured; not initiating");
            return;
        };
        let group = group.unwrap_or(first.dh);
        let id = self.next_id;
        self.next_id += 1;
        let child_spi = self.alloc_spi();
        let sa = IkeSa {
            id,
            peer: p,
            initiator: true,
            spi_i: self.random_u64(),
            spi_r: 0,
            state: State::InitSent,
            local: SocketAddr::new(cfg.local, crate::IKE_PORT),
            remote: SocketAddr::new(cfg.remote, crate::IKE_PORT),
            prop: None,
            keys: None,
            nat: false,
            created: now,
            established: None,
            rekey_at: None,
            next_req_id: 0,
            peer_req_id: 0,
            pending: None,
            queue: VecDeque::new(),
            last_response: None,
            last_rx: now,
            children: Vec::new(),
            neg: Some(Neg {
                dh: None,
                ni: Vec::new(),
                nr: Vec::new(),
                init_req: Vec::new(),
                init_resp: Vec::new(),
                cookie: None,
                child_spi,
                ke_retries: 0,
                refused: false,
            }),
            rekeyed: false,
            last_invalid_spi: None,
            peer_ike_rekey: None,
        };
        self.sas.push(sa);
        let i = self.sas.len() - 1;
        self.send_init(i, now, group);
        self.log(
            p,
            false,
            format!(
                "initiating IKE SA (IKE_SA_INIT to {}:{})",
                cfg.remote,
                crate::IKE_PORT
            ),
        );
    }

    fn send_init(&mut self, i: usize, now: Instant, group: DhGroup) {
        let cfg = self.peers[self.sas[i].peer].clone();
        // Retrying with a COOKIE resends the same Ni and KE (the cookie is
        // bound to Ni, RFC 7296 2.6); a new group needs a new key.
        let reuse = self.sas[i].neg.as_mut().and_then(|n| match &n.dh {
            Some(d) if d.group == group && !n.ni.is_empty() => {
                n.dh.take().map(|d| (d, n.ni.clone()))
            }
            _ => None,
        });
        let (dh, ni) = match reuse {
            Some(x) => x,
            None => {
                let Ok(dh) = Dh::generate(group, &self.rng) else {
                    return;
                };
                (dh, self.nonce())
            }
        };
        let sa = &self.sas[i];
        let mut p = Vec::new();
        if let Some(c) = sa.neg.as_ref().and_then(|n| n.cookie.clone()) {
            p.push(Self::notify_payload(notify::COOKIE, c));
        }
        p.push(proposal::ike_sa_payload(&cfg.ike_proposals, None));
        p.push(Payload::Ke {
            group: group.id(),
            data: dh.public().to_vec(),
        });
        p.push(Payload::Nonce(ni.clone()));
        p.extend(self.nat_payloads(sa.spi_i, 0, sa.local, sa.remote, cfg.force_encap));
        let h = HeaderRepr {
            spi_i: sa.spi_i,
            spi_r: 0,
            exchange: wire::IKE_SA_INIT,
            flags: FLAG_INITIATOR,
            msg_id: 0,
        };
        let data = wire::emit_message(&h, &p);
        let sa = &mut self.sas[i];
        if let Some(n) = &mut sa.neg {
            n.dh = Some(dh);
            n.ni = ni;
            n.init_req = data.clone();
        }
        sa.next_req_id = 1;
        self.send_request_bytes(i, now, 0, data, Sent::Init);
    }

    fn init_response(
        &mut self,
        i: usize,
        now: Instant,
        m: &Message,
        local: SocketAddr,
        remote: SocketAddr,
        raw: &[u8],
    ) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let p = self.sas[i].peer;
        if let Some(c) = m.notify(notify::COOKIE) {
            // RFC 7296 2.6: retry with the cookie first.
            if let Some(n) = &mut self.sas[i].neg
                && n.cookie.is_none()
            {
                n.cookie = Some(c.data.clone());
                let g = n.dh.as_ref().map_or(cfg.ike_proposals[0].dh, |d| d.group);
                self.send_init(i, now, g);
            }
            return;
        }
        if let Some(n) = m.notify(notify::INVALID_KE_PAYLOAD) {
            let want = n
                .data
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .and_then(DhGroup::from_id);
            let tried = self.sas[i].neg.as_ref().map_or(0, |n| n.ke_retries);
            match want {
                Some(g) if cfg.ike_proposals.iter().any(|x| x.dh == g) && tried < 2 => {
                    self.log(p, false, format!("peer asks for DH group {} (INVALID_KE_PAYLOAD); retrying IKE_SA_INIT with it", g.id()));
                    if let Some(n) = &mut self.sas[i].neg {
                        n.ke_retries += 1;
                    }
                    self.send_init(i, now, g);
                }
                _ => self.init_refused(
                    i,
                    "peer asks for a DH group we do not propose (INVALID_KE_PAYLOAD); IKE SA not established",
                ),
            }
            return;
        }
        if let Some(e) = m.error_notify() {
            let what = if e.ty == notify::NO_PROPOSAL_CHOSEN {
                "NO_PROPOSAL_CHOSEN: no IKE proposal acceptable to the peer".to_string()
            } else {
                format!("error notify {}", e.ty)
            };
            self.init_refused(
                i,
                format!("IKE_SA_INIT refused by the peer ({what}); IKE SA not established"),
            );
            return;
        }
        let props = m.payloads.iter().find_map(|p| {
            if let Payload::Sa(x) = p {
                Some(x)
            } else {
                None
            }
        });
        let ke = m.payloads.iter().find_map(|p| {
            if let Payload::Ke { group, data } = p {
                Some((*group, data))
            } else {
                None
            }
        });
        let nr = m.payloads.iter().find_map(|p| {
            if let Payload::Nonce(n) = p {
                Some(n.clone())
            } else {
                None
            }
        });
        let (Some(props), Some((group, ke)), Some(nr)) = (props, ke, nr) else {
            self.log_noise(
                now,
                remote.ip(),
                Noise::Malformed,
                Some(p),
                "IKE_SA_INIT response without SA, KE or Nonce; ignored",
            );
            return;
        };
        if !(16..=256).contains(&nr.len()) || m.header.spi_r == 0 {
            return;
        }
        let Some(prop) = Self::accepted_ike(&cfg.ike_proposals, props) else {
            self.init_refused(
                i,
                "peer chose an IKE proposal we did not offer; IKE SA not established",
            );
            return;
        };
        let Some(ours) = self.sas[i].neg.as_ref().and_then(|n| n.dh.as_ref()) else {
            return;
        };
        if ours.group.id() != group || prop.dh != ours.group || ke.len() != ours.group.ke_len() {
            self.init_refused(
                i,
                "peer's KE group differs from the chosen proposal; IKE SA not established",
            );
            return;
        }
        let Some(dh) = self.sas[i].neg.as_mut().and_then(|n| n.dh.take()) else {
            return;
        };
        let Ok(shared) = dh.agree(ke) else {
            // Our key is spent (an invalid point is only found by using
            // it): start over at once with a new IKE SA rather than wait
            // (an answer forged with our SPI, from on the path, costs a
            // retry, never the tunnel).
            self.log_noise(
                now,
                remote.ip(),
                Noise::Malformed,
                Some(p),
                "peer's KE payload is invalid; starting over with a new IKE SA",
            );
            self.drop_sa(i, now, Some(Duration::ZERO));
            return;
        };
        let spi_r = m.header.spi_r;
        let sa = &mut self.sas[i];
        sa.spi_r = spi_r;
        let neg = sa.neg.as_mut().expect("checked above");
        neg.nr = nr;
        neg.init_resp = raw.to_vec();
        let seed = crypto::skeyseed(prop.prf, &neg.ni, &neg.nr, &shared);
        sa.keys = Some(IkeKeys::derive(
            &prop, &seed, &neg.ni, &neg.nr, sa.spi_i, spi_r,
        ));
        sa.prop = Some(prop);
        sa.pending = None;
        sa.nat = cfg.force_encap || Self::nat_detected(m, sa.spi_i, spi_r, local, remote);
        if sa.nat {
            // RFC 7296 2.23: move to the NAT-T port from IKE_AUTH on.
            sa.local = Self::ike_port_addr(&cfg, cfg.local, true);
            sa.remote = Self::ike_port_addr(&cfg, remote.ip(), true);
        }
        self.send_auth(i, now);
    }

    /// An answer to our IKE_SA_INIT we cannot use. It is unauthenticated:
    /// a forged or damaged answer must not end the exchange (RFC 7296
    /// 2.21.1). Keep retransmitting and waiting for a valid answer, give
    /// up when the retransmissions end (then retry after
    /// [`FAILED_RETRY`]); the line is logged once per exchange.
    fn init_refused(&mut self, i: usize, line: impl std::fmt::Display) {
        let first = self.sas[i]
            .neg
            .as_mut()
            .is_some_and(|n| !std::mem::replace(&mut n.refused, true));
        if first {
            self.log(self.sas[i].peer, false, line);
        }
    }

    fn send_auth(&mut self, i: usize, now: Instant) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let sa = &self.sas[i];
        let (Some(neg), Some(keys)) = (sa.neg.as_ref(), sa.keys.as_ref()) else {
            return;
        };
        let (idt, idd) = Self::id_payload(&cfg.local_id);
        let auth = crypto::psk_auth(
            keys.prop.prf,
            &cfg.psk,
            &neg.init_req,
            &neg.nr,
            &keys.sk_pi,
            &Self::id_body(idt, &idd),
        );
        let mut p = vec![
            Payload::IdI(idt, idd),
            Payload::Auth(crypto::AUTH_PSK, auth.to_vec()),
        ];
        // INITIAL_CONTACT: the peer may drop IKE SAs left from our past
        // (only when we have no other established one with it).
        let peer = sa.peer;
        if !self
            .sas
            .iter()
            .any(|s| s.peer == peer && s.state == State::Ready)
        {
            p.push(Self::notify_payload(notify::INITIAL_CONTACT, vec![]));
        }
        p.push(proposal::esp_sa_payload(
            &cfg.esp_proposals,
            neg.child_spi,
            false,
        ));
        p.extend(Self::ts_payloads(&cfg.local_ts, &cfg.remote_ts, true));
        self.sas[i].state = State::AuthSent;
        self.send_request(i, now, wire::IKE_AUTH, &p, Sent::Auth);
    }

    // ---- IKE_SA_INIT, responder -------------------------------------------

    fn init_request(
        &mut self,
        now: Instant,
        m: &Message,
        local: SocketAddr,
        remote: SocketAddr,
        raw: &[u8],
    ) {
        // A retransmitted IKE_SA_INIT: answer from the cache, only to
        // the address and port the original came from, and only for the
        // very same message.
        if let Some(sa) = self
            .sas
            .iter()
            .find(|s| !s.initiator && s.spi_i == m.header.spi_i && s.remote.ip() == remote.ip())
        {
            if let Some((0, data, l, r)) = &sa.last_response
                && *r == remote
                && l.port() == local.port()
                && sa.neg.as_ref().is_some_and(|n| n.init_req == raw)
            {
                let (l, r, d) = (*l, *r, data.clone());
                self.send(l, r, d);
            }
            return;
        }
        let Some(p) = self.tunnel_for(remote.ip()) else {
            self.log_noise(
                now,
                remote.ip(),
                Noise::UnknownPeer,
                None,
                format!("IKE_SA_INIT from {remote}: no tunnel has this peer; ignored"),
            );
            return;
        };
        let cfg = self.peers[p].clone();
        let h = |spi_r: u64| HeaderRepr {
            spi_i: m.header.spi_i,
            spi_r,
            exchange: wire::IKE_SA_INIT,
            flags: FLAG_RESPONSE,
            msg_id: 0,
        };
        let props = m.payloads.iter().find_map(|p| {
            if let Payload::Sa(x) = p {
                Some(x)
            } else {
                None
            }
        });
        let ke = m.payloads.iter().find_map(|p| {
            if let Payload::Ke { group, data } = p {
                Some((*group, data))
            } else {
                None
            }
        });
        let ni = m.payloads.iter().find_map(|p| {
            if let Payload::Nonce(n) = p {
                Some(n.clone())
            } else {
                None
            }
        });
        let (Some(props), Some((group, ke)), Some(ni)) = (props, ke, ni) else {
            self.log_noise(
                now,
                remote.ip(),
                Noise::Malformed,
                Some(p),
                "IKE_SA_INIT without SA, KE or Nonce; ignored",
            );
            return;
        };
        if !(16..=256).contains(&ni.len()) {
            return;
        }
        let Some((num, prop)) = Self::select_ike(&cfg.ike_proposals, props) else {
            self.log_noise(
                now,
                remote.ip(),
                Noise::InitRefused,
                Some(p),
                "IKE_SA_INIT: no proposal of the peer is acceptable; answered NO_PROPOSAL_CHOSEN",
            );
            let d = wire::emit_message(
                &h(0),
                &[Self::notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
            );
            self.send(local, remote, d);
            return;
        };
        if group != prop.dh.id() {
            // RFC 7296 1.2: ask for the group of the chosen proposal.
            self.log_noise(
                now,
                remote.ip(),
                Noise::InitRefused,
                Some(p),
                format!(
                    "IKE_SA_INIT with DH group {group}; asked for group {} (INVALID_KE_PAYLOAD)",
                    prop.dh.id()
                ),
            );
            let d = wire::emit_message(
                &h(0),
                &[Self::notify_payload(
                    notify::INVALID_KE_PAYLOAD,
                    prop.dh.id().to_be_bytes().to_vec(),
                )],
            );
            self.send(local, remote, d);
            return;
        }
        // Half-open SAs are unauthenticated state: hard caps per peer and
        // in all, and under load a cookie first, before spending a DH
        // computation or any state (RFC 7296 2.6).
        let half_open = self
            .sas
            .iter()
            .filter(|s| s.state == State::InitDone)
            .count();
        let half_open_peer = self
            .sas
            .iter()
            .filter(|s| s.state == State::InitDone && s.peer == p)
            .count();
        if half_open >= HALF_OPEN_MAX || half_open_peer >= HALF_OPEN_MAX_PER_PEER {
            self.log_noise(
                now,
                remote.ip(),
                Noise::InitRefused,
                Some(p),
                format!("IKE_SA_INIT dropped: {half_open_peer} half-open IKE SA(s) of this peer, {half_open} in all (limits {HALF_OPEN_MAX_PER_PEER} and {HALF_OPEN_MAX})"),
            );
            return;
        }
        if half_open >= COOKIE_THRESHOLD || half_open_peer >= HALF_OPEN_COOKIE_PER_PEER {
            let want = self.cookie(&ni, remote.ip(), m.header.spi_i);
            if m.notify(notify::COOKIE)
                .is_none_or(|c| !ring_eq(&c.data, &want))
            {
                let d = wire::emit_message(&h(0), &[Self::notify_payload(notify::COOKIE, want)]);
                self.send(local, remote, d);
                return;
            }
        }
        let Ok(dh) = Dh::generate(prop.dh, &self.rng) else {
            return;
        };
        let public = dh.public().to_vec();
        let Ok(shared) = dh.agree(ke) else {
            self.log_noise(
                now,
                remote.ip(),
                Noise::Malformed,
                Some(p),
                "IKE_SA_INIT with an invalid KE payload; ignored",
            );
            return;
        };
        let spi_r = self.random_u64();
        let spi_i = m.header.spi_i;
        let nr = self.nonce();
        let nat = cfg.force_encap || Self::nat_detected(m, spi_i, 0, local, remote);
        let mut sa_prop = proposal::ike_sa_payload(std::slice::from_ref(&prop), None);
        if let Payload::Sa(ps) = &mut sa_prop {
            ps[0].num = num;
        }
        let mut pl = vec![
            sa_prop,
            Payload::Ke {
                group: prop.dh.id(),
                data: public,
            },
            Payload::Nonce(nr.clone()),
        ];
        pl.extend(self.nat_payloads(spi_i, spi_r, local, remote, cfg.force_encap));
        let resp = wire::emit_message(&h(spi_r), &pl);
        let seed = crypto::skeyseed(prop.prf, &ni, &nr, &shared);
        let keys = IkeKeys::derive(&prop, &seed, &ni, &nr, spi_i, spi_r);
        let id = self.next_id;
        self.next_id += 1;
        self.sas.push(IkeSa {
            id,
            peer: p,
            initiator: false,
            spi_i,
            spi_r,
            state: State::InitDone,
            local,
            remote,
            prop: Some(prop),
            keys: Some(keys),
            nat,
            created: now,
            established: None,
            rekey_at: None,
            next_req_id: 0,
            peer_req_id: 1,
            pending: None,
            queue: VecDeque::new(),
            last_response: Some((0, resp.clone(), local, remote)),
            last_rx: now,
            children: Vec::new(),
            neg: Some(Neg {
                dh: None,
                ni,
                nr,
                init_req: raw.to_vec(),
                init_resp: resp.clone(),
                cookie: None,
                child_spi: 0,
                ke_retries: 0,
                refused: false,
            }),
            rekeyed: false,
            last_invalid_spi: None,
            peer_ike_rekey: None,
        });
        self.send(local, remote, resp);
        if self.sas.iter().any(|s| {
            s.peer == p && s.initiator && matches!(s.state, State::InitSent | State::AuthSent)
        }) {
            // RFC 7296 2.21.1: nothing before authentication may end an
            // exchange; an IKE_SA_INIT with the peer's address may be
            // anyone's. Both exchanges go on; settle_duplicates decides
            // once the peer's has authenticated.
            self.log_noise(
                now,
                remote.ip(),
                Noise::HalfOpen,
                Some(p),
                "simultaneous initiation: answering the peer's IKE_SA_INIT; ours goes on too (the tie is settled once the peer's authenticates)",
            );
        }
    }

    /// Cookie = 0 (secret version) | HMAC-SHA256(secret, Ni | IPi | SPIi).
    fn cookie(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        let mut c = ring::hmac::Context::with_key(&self.cookie_secret);
        c.update(ni);
        match ip {
            IpAddr::V4(a) => c.update(&a.octets()),
            IpAddr::V6(a) => c.update(&a.octets()),
        }
        c.update(&spi_i.to_be_bytes());
        let mut v = vec![0u8];
        v.extend_from_slice(c.sign().as_ref());
        v
    }

    // ---- datagrams -----------------------------------------------------------

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
        let Some(sk) = m.sk else { return };
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
                if *r == remote && l.port() == local.port() {
                    let (l, r, d) = (*l, *r, data.clone());
                    self.send(l, r, d);
                }
                return;
            }
            if h.msg_id != expect {
                return;
            }
        }
        let plain = {
            let Some(keys) = self.sas[i].keys.as_ref() else {
                return;
            };
            match keys.open(from_initiator, data, sk) {
                Ok(p) => p,
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
        };
        let inner = match wire::parse_chain(sk.first_inner, &plain, 0) {
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
            self.request(i, now, &m, local, remote);
        }
    }

    // ---- responses to our requests ------------------------------------------

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

    fn auth_response(&mut self, i: usize, now: Instant, m: &Message) {
        let p = self.sas[i].peer;
        let cfg = self.peers[p].clone();
        if m.notify(notify::AUTHENTICATION_FAILED).is_some() {
            self.log(p, false, "authentication failed: peer refused our authentication (AUTHENTICATION_FAILED): check the pre-shared key and local_id");
            self.drop_sa(i, now, Some(FAILED_RETRY));
            return;
        }
        let idr = m.payloads.iter().find_map(|p| {
            if let Payload::IdR(t, d) = p {
                Some((*t, d.clone()))
            } else {
                None
            }
        });
        let auth = m.payloads.iter().find_map(|p| {
            if let Payload::Auth(t, d) = p {
                Some((*t, d.clone()))
            } else {
                None
            }
        });
        let (Some((idt, idd)), Some((am, ad))) = (idr, auth) else {
            let e = m.error_notify().map(|n| n.ty).unwrap_or(0);
            self.log(p, false, format!("IKE_AUTH answered without IDr or AUTH (error notify {e}); IKE SA not established"));
            self.drop_sa(i, now, Some(FAILED_RETRY));
            return;
        };
        let want = Self::id_payload(&cfg.remote_id);
        if (idt, idd.clone()) != want {
            self.log(
                p,
                false,
                format!(
                    "authentication failed: peer identity {} is not the configured remote_id {}",
                    id_text(idt, &idd),
                    ident_text(&cfg.remote_id)
                ),
            );
            self.drop_sa(i, now, Some(FAILED_RETRY));
            return;
        }
        let ok = {
            let sa = &self.sas[i];
            let (Some(neg), Some(keys)) = (sa.neg.as_ref(), sa.keys.as_ref()) else {
                return;
            };
            let expect = crypto::psk_auth(
                keys.prop.prf,
                &cfg.psk,
                &neg.init_resp,
                &neg.ni,
                &keys.sk_pr,
                &Self::id_body(idt, &idd),
            );
            am == crypto::AUTH_PSK && ring_eq(&expect, &ad)
        };
        if !ok {
            self.log(p, false, "authentication failed: the peer's AUTH does not verify with our pre-shared key (AUTHENTICATION_FAILED)");
            // RFC 7296 2.21.2: delete the IKE SA with an INFORMATIONAL.
            self.send_delete_ike(i);
            self.drop_sa(i, now, Some(FAILED_RETRY));
            return;
        }
        self.established(i, now);
        // The first child.
        if let Some(e) = m.error_notify() {
            let why = match e.ty {
                notify::TS_UNACCEPTABLE => {
                    "TS_UNACCEPTABLE: the peer does not accept our traffic selectors".to_string()
                }
                notify::NO_PROPOSAL_CHOSEN => {
                    "NO_PROPOSAL_CHOSEN: no ESP proposal acceptable to the peer".to_string()
                }
                t => format!("error notify {t}"),
            };
            self.log(
                p,
                false,
                format!("first child SA refused by the peer ({why})"),
            );
            return;
        }
        let child_spi = self.sas[i].neg.as_ref().map_or(0, |n| n.child_spi);
        let (ni, nr) = {
            let n = self.sas[i].neg.as_ref().expect("checked");
            (n.ni.clone(), n.nr.clone())
        };
        self.sas[i].neg = None;
        self.finish_child(
            i,
            now,
            m,
            child_spi,
            &ni,
            &nr,
            None,
            None,
            &cfg.esp_proposals,
            false,
        );
    }

    /// Initiator side of a child's creation: check the response's SA and
    /// TS, derive and install.
    #[allow(clippy::too_many_arguments)]
    fn finish_child(
        &mut self,
        i: usize,
        now: Instant,
        m: &Message,
        spi_in: u32,
        ni: &[u8],
        nr: &[u8],
        shared: Option<&[u8]>,
        replaces: Option<u32>,
        esp_list: &[EspProposal],
        pfs: bool,
    ) -> Option<u32> {
        let p = self.sas[i].peer;
        let props = m.payloads.iter().find_map(|p| {
            if let Payload::Sa(x) = p {
                Some(x)
            } else {
                None
            }
        });
        let Some((spi_out, esp)) = props.and_then(|x| Self::accepted_esp(esp_list, x, pfs)) else {
            self.log(
                p,
                false,
                "child SA: the peer chose an ESP proposal we did not offer; deleting it",
            );
            self.used_spis.remove(&spi_in);
            self.sas[i].enqueue(Work::DeleteChildren(vec![spi_in]));
            return None;
        };
        let (local_ts, remote_ts) =
            match replaces.and_then(|s| self.sas[i].children.iter().find(|c| c.spi_in == s)) {
                Some(c) => (c.local_ts.clone(), c.remote_ts.clone()),
                None => (
                    self.peers[p].local_ts.clone(),
                    self.peers[p].remote_ts.clone(),
                ),
            };
        // Narrowing of what we offered is refused (the datapath's policy
        // is the configured subnets).
        let tsi = m.payloads.iter().find_map(|p| {
            if let Payload::TsI(x) = p {
                Some(x.clone())
            } else {
                None
            }
        });
        let tsr = m.payloads.iter().find_map(|p| {
            if let Payload::TsR(x) = p {
                Some(x.clone())
            } else {
                None
            }
        });
        let want_i: Vec<TsRepr> = local_ts.iter().map(|x| TsRepr::from_prefix(*x)).collect();
        let want_r: Vec<TsRepr> = remote_ts.iter().map(|x| TsRepr::from_prefix(*x)).collect();
        if tsi.as_ref() != Some(&want_i) || tsr.as_ref() != Some(&want_r) {
            self.log(
                p,
                false,
                format!(
                    "child SA refused: the peer narrowed our traffic selectors (local {}, remote {}) to TSi {} TSr {} (TS_UNACCEPTABLE)",
                    prefixes(&local_ts),
                    prefixes(&remote_ts),
                    ts_text(tsi.as_deref()),
                    ts_text(tsr.as_deref())
                ),
            );
            self.used_spis.remove(&spi_in);
            let msg_id = self.sas[i].next_req_id;
            let _ = msg_id;
            self.sas[i].enqueue(Work::DeleteChildren(vec![spi_in]));
            return None;
        }
        let keys = self.child_keys(i, shared, ni, nr, &esp, spi_in, spi_out, true)?;
        self.install_child(i, now, keys, esp, local_ts, remote_ts, replaces, false);
        Some(spi_out)
    }

    #[allow(clippy::too_many_arguments)]
    fn child_response(
        &mut self,
        i: usize,
        now: Instant,
        m: &Message,
        rekey: Option<u32>,
        spi_in: u32,
        ni: Vec<u8>,
        dh: Option<Dh>,
        offered: Vec<EspProposal>,
        ke_retries: u8,
    ) {
        let p = self.sas[i].peer;
        if let Some(e) = m.error_notify() {
            self.used_spis.remove(&spi_in);
            let t = e.ty;
            if t == notify::INVALID_KE_PAYLOAD && dh.is_some() {
                // RFC 7296 1.3 and 2.7: the peer wants another PFS group;
                // retry at once with it if we offered it (as IKE_SA_INIT
                // does), at most twice.
                let want = e
                    .data
                    .get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .and_then(DhGroup::from_id);
                let what = if rekey.is_some() {
                    "child SA rekey"
                } else {
                    "new child SA"
                };
                match want {
                    Some(g) if offered.iter().any(|x| x.dh == Some(g)) && ke_retries < 2 => {
                        self.log(
                            p,
                            false,
                            format!("peer asks for PFS DH group {} (INVALID_KE_PAYLOAD); retrying the {what} with it", g.id()),
                        );
                        self.sas[i].queue.push_front(Work::ChildWithGroup {
                            rekey,
                            group: g,
                            retries: ke_retries + 1,
                        });
                    }
                    _ => {
                        let g = want.map_or_else(|| "unknown".to_string(), |g| g.id().to_string());
                        self.log(
                            p,
                            false,
                            format!("peer asks for PFS DH group {g} (INVALID_KE_PAYLOAD), which we do not offer; {what} refused"),
                        );
                    }
                }
                return;
            }
            if t == notify::TEMPORARY_FAILURE || t == notify::CHILD_SA_NOT_FOUND {
                // A collision the peer resolved (RFC 7296 2.25): its own
                // rekey or delete of this child goes on.
                self.log(
                    p,
                    false,
                    format!(
                        "child SA rekey answered with notify {t}; leaving it to the peer's exchange"
                    ),
                );
            } else {
                self.log(
                    p,
                    false,
                    format!("CREATE_CHILD_SA refused by the peer (error notify {t})"),
                );
            }
            return;
        }
        let nr = m.payloads.iter().find_map(|p| {
            if let Payload::Nonce(n) = p {
                Some(n.clone())
            } else {
                None
            }
        });
        let Some(nr) = nr else {
            self.log(
                p,
                false,
                "CREATE_CHILD_SA response without a nonce; child not created",
            );
            self.used_spis.remove(&spi_in);
            return;
        };
        let shared = match dh {
            Some(d) => {
                let ke = m.payloads.iter().find_map(|p| {
                    if let Payload::Ke { data, .. } = p {
                        Some(data.clone())
                    } else {
                        None
                    }
                });
                match ke.map(|k| d.agree(&k)) {
                    Some(Ok(s)) => Some(s),
                    _ => {
                        self.log(p, false, "CREATE_CHILD_SA response without a valid KE for PFS; child not created");
                        self.used_spis.remove(&spi_in);
                        return;
                    }
                }
            }
            None => None,
        };
        let pfs = shared.is_some();
        let esp_list = offered;
        // Simultaneous rekey (RFC 7296 2.8.1): the new child made with the
        // lowest of the four nonces is redundant; whoever created it
        // deletes it.
        if let Some(old) = rekey
            && let Some(c) = self.sas[i].children.iter().find(|c| c.spi_in == old)
            && let Some((pni, pnr, _)) = &c.peer_rekey
        {
            let ours = std::cmp::min(ni.as_slice(), nr.as_slice());
            let theirs = std::cmp::min(pni.as_slice(), pnr.as_slice());
            if ours < theirs {
                self.log(
                    p,
                    false,
                    "simultaneous rekey: ours has the lowest nonce and is redundant; deleting it",
                );
                let props = m.payloads.iter().find_map(|p| {
                    if let Payload::Sa(x) = p {
                        Some(x)
                    } else {
                        None
                    }
                });
                // Never installed here: the SPI is free again either way.
                self.used_spis.remove(&spi_in);
                if props
                    .and_then(|x| Self::accepted_esp(&esp_list, x, pfs))
                    .is_some()
                {
                    self.sas[i].enqueue(Work::DeleteChildren(vec![spi_in]));
                }
                return;
            }
            self.log(
                p,
                false,
                "simultaneous rekey: ours wins (the peer's has the lowest nonce)",
            );
        }
        let done = self.finish_child(
            i,
            now,
            m,
            spi_in,
            &ni,
            &nr,
            shared.as_ref().map(|s| s.as_slice()),
            rekey,
            &esp_list,
            pfs,
        );
        if done.is_some()
            && let Some(old) = rekey
            && let Some(c) = self.sas[i].children.iter_mut().find(|c| c.spi_in == old)
        {
            // Make before break: the new outbound SA is installed; the old
            // inbound SA decrypts until the peer has answered our DELETE.
            c.superseded = true;
            c.deleting = true;
            self.sas[i].enqueue(Work::DeleteChildren(vec![old]));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ike_rekey_response(
        &mut self,
        i: usize,
        now: Instant,
        m: &Message,
        spi: u64,
        ni: Vec<u8>,
        dh: Option<Dh>,
        prop: IkeProposal,
    ) {
        let p = self.sas[i].peer;
        if let Some(e) = m.error_notify() {
            self.log(
                p,
                false,
                format!(
                    "IKE SA rekey refused by the peer (error notify {}); retrying later",
                    e.ty
                ),
            );
            return;
        }
        let props = m.payloads.iter().find_map(|p| {
            if let Payload::Sa(x) = p {
                Some(x)
            } else {
                None
            }
        });
        let nr = m.payloads.iter().find_map(|p| {
            if let Payload::Nonce(n) = p {
                Some(n.clone())
            } else {
                None
            }
        });
        let ke = m.payloads.iter().find_map(|p| {
            if let Payload::Ke { data, .. } = p {
                Some(data.clone())
            } else {
                None
            }
        });
        let (Some(props), Some(nr), Some(ke), Some(dh)) = (props, nr, ke, dh) else {
            return;
        };
        let [rp] = props.as_slice() else { return };
        if rp.spi.len() != 8 || Self::accepted_ike(std::slice::from_ref(&prop), props).is_none() {
            self.log(
                p,
                false,
                "IKE SA rekey: the peer's answer does not match our proposal",
            );
            return;
        }
        let spi_r = u64::from_be_bytes(rp.spi.clone().try_into().unwrap_or([0; 8]));
        let Ok(shared) = dh.agree(&ke) else { return };
        self.rekey_ike_finish(i, now, spi, spi_r, true, &ni, &nr, &shared, prop);
    }

    /// Create the new IKE SA of a rekey, move the children to it, and (as
    /// the rekey's initiator) delete the old one.
    #[allow(clippy::too_many_arguments)]
    fn rekey_ike_finish(
        &mut self,
        i: usize,
        now: Instant,
        spi_i: u64,
        spi_r: u64,
        we_initiated: bool,
        ni: &[u8],
        nr: &[u8],
        shared: &[u8],
        prop: IkeProposal,
    ) {
        let Some(old) = self.sas[i].keys.as_ref() else {
            return;
        };
        let seed = crypto::skeyseed_rekey(old.prop.prf, &old.sk_d, shared, ni, nr);
        let keys = IkeKeys::derive(&prop, &seed, ni, nr, spi_i, spi_r);
        let cfg = self.peers[self.sas[i].peer].clone();
        let id = self.next_id;
        self.next_id += 1;
        let children = std::mem::take(&mut self.sas[i].children);
        let old_sa = &mut self.sas[i];
        old_sa.rekeyed = true;
        // The rekey's initiator deletes the old SA; if that DELETE never
        // comes, it goes anyway after a while (its children have moved).
        old_sa.rekey_at = Some(now + REKEYED_LINGER);
        let new = IkeSa {
            id,
            peer: old_sa.peer,
            initiator: we_initiated,
            spi_i,
            spi_r,
            state: State::Ready,
            local: old_sa.local,
            remote: old_sa.remote,
            prop: Some(prop),
            keys: Some(keys),
            nat: old_sa.nat,
            created: now,
            established: Some(now),
            rekey_at: Some(now + self.jitter(cfg.ike_lifetime, REKEY_SOFT_MIN, REKEY_SOFT_MAX)),
            next_req_id: 0,
            peer_req_id: 0,
            pending: None,
            queue: VecDeque::new(),
            last_response: None,
            last_rx: now,
            children,
            neg: None,
            rekeyed: false,
            last_invalid_spi: None,
            peer_ike_rekey: None,
        };
        // Work waiting on the old SA (child rekeys, deletes) moves too.
        let moved: Vec<Work> = self.sas[i]
            .queue
            .drain(..)
            .filter(|w| !matches!(w, Work::RekeyIke | Work::Dpd))
            .collect();
        self.sas.push(new);
        let n = self.sas.len() - 1;
        self.sas[n].queue.extend(moved);
        self.log(
            self.sas[i].peer,
            false,
            format!("IKE SA rekeyed: new SPIs {spi_i:016x}/{spi_r:016x}"),
        );
        let ours_in_flight = self.sas[i]
            .pending
            .as_ref()
            .is_some_and(|x| matches!(x.sent, Sent::Ike { .. }));
        if !we_initiated && ours_in_flight {
            // Simultaneous rekey (RFC 7296 2.8.2), the peer's exchange
            // done first: the children serve on its new SA until ours
            // completes and the nonces decide which new SA survives.
            self.sas[i].peer_ike_rekey = Some((ni.to_vec(), nr.to_vec(), id));
            self.log(
                self.sas[i].peer,
                false,
                "simultaneous IKE SA rekey: answered the peer's while ours is in flight",
            );
            return;
        }
        if we_initiated
            && let Some((pni, pnr, pid)) = self.sas[i].peer_ike_rekey.take()
            && let Some(pj) = self.sas.iter().position(|s| s.id == pid)
        {
            self.resolve_ike_rekey_collision(i, n, pj, now, (ni, nr), (&pni, &pnr));
            return;
        }
        if we_initiated {
            self.sas[i].queue.push_back(Work::DeleteIke);
        }
    }

    /// Both rekeys of the IKE SA `old` completed: `ours` is the new SA we
    /// initiated, `theirs` the one the peer initiated. RFC 7296 2.8.2: the
    /// new SA created by the exchange with the lowest of the four nonces
    /// is deleted by the side that initiated it; the survivor takes the
    /// children, and its initiator deletes the old SA. Both sides see the
    /// same four nonces, so both come to the same answer.
    fn resolve_ike_rekey_collision(
        &mut self,
        old: usize,
        ours: usize,
        theirs: usize,
        now: Instant,
        our_nonces: (&[u8], &[u8]),
        their_nonces: (&[u8], &[u8]),
    ) {
        let p = self.sas[old].peer;
        let ours_min = std::cmp::min(our_nonces.0, our_nonces.1);
        let theirs_min = std::cmp::min(their_nonces.0, their_nonces.1);
        let (spi_i, spi_r) = (self.sas[ours].spi_i, self.sas[ours].spi_r);
        if ours_min < theirs_min {
            // Ours is redundant: we delete it; the children stay on the
            // peer's, and the peer deletes the old SA.
            let sa = &mut self.sas[ours];
            sa.rekeyed = true;
            sa.rekey_at = Some(now + REKEYED_LINGER);
            sa.queue.push_back(Work::DeleteIke);
            self.log(
                p,
                false,
                format!("simultaneous IKE SA rekey: ours ({spi_i:016x}/{spi_r:016x}) has the lowest nonce and is redundant; deleting it"),
            );
        } else {
            // The peer's is redundant (the peer deletes it): the children
            // and pending work move to ours, and we delete the old SA.
            let children = std::mem::take(&mut self.sas[theirs].children);
            let work: Vec<Work> = self.sas[theirs]
                .queue
                .drain(..)
                .filter(|w| !matches!(w, Work::RekeyIke | Work::Dpd))
                .collect();
            let t = &mut self.sas[theirs];
            t.rekeyed = true;
            t.rekey_at = Some(now + REKEYED_LINGER);
            self.sas[ours].children.extend(children);
            self.sas[ours].queue.extend(work);
            self.sas[old].queue.push_back(Work::DeleteIke);
            self.log(
                p,
                false,
                format!("simultaneous IKE SA rekey: ours ({spi_i:016x}/{spi_r:016x}) survives (the peer's has the lowest nonce)"),
            );
        }
    }

    fn established(&mut self, i: usize, now: Instant) {
        let cfg = self.peers[self.sas[i].peer].clone();
        let rekey_at = now + self.jitter(cfg.ike_lifetime, REKEY_SOFT_MIN, REKEY_SOFT_MAX);
        let sa = &mut self.sas[i];
        sa.state = State::Ready;
        sa.established = Some(now);
        sa.rekey_at = Some(rekey_at);
        let sa = &self.sas[i];
        let prop = sa.prop.clone();
        let (role, spi_i, spi_r, nat) = (
            if sa.initiator {
                "initiator"
            } else {
                "responder"
            },
            sa.spi_i,
            sa.spi_r,
            sa.nat,
        );
        let (l, r) = (sa.local, sa.remote);
        self.log(self.sas[i].peer, true, "%IKEV2-5-SA_UP: SA UP");
        if let Some(prop) = prop {
            self.log(
                self.sas[i].peer,
                false,
                format!(
                    "IKE SA established as {role}: {l} <-> {r}, SPIs {spi_i:016x}/{spi_r:016x}, {}{} {} DH group {}{}",
                    prop.encr,
                    prop.integ.map(|x| format!(" {x}")).unwrap_or_default(),
                    prop.prf,
                    prop.dh.id(),
                    if nat { ", NAT-T (UDP encapsulation)" } else { "" }
                ),
            );
        }
        // A newer IKE SA for the same tunnel replaces older ones (e.g. the
        // peer restarted): nothing to do here; they expire by DPD or delete.
        let p = self.sas[i].peer;
        self.tunnels[p].failures = 0;
        self.settle_duplicates(p);
    }

    /// Simultaneous initiation (both sides `initiate`, or a peer that
    /// restarted while we were initiating). RFC 7296 has no tie rule for
    /// initial exchanges and does not forbid two IKE SAs between the same
    /// peers; an IKE_SA_INIT is unauthenticated (anyone can send one with
    /// the peer's address), and nothing unauthenticated may end an
    /// exchange (2.21.1), so both exchanges go on. Only once the peer's
    /// has authenticated (its IKE SA is READY here) does the side with the
    /// higher address give its own up, as 2.8.2 has the initiator of a
    /// redundant SA delete it: an exchange still in IKE_SA_INIT is
    /// forgotten (the peer holds half-open state at most, which times
    /// out); one in IKE_AUTH goes on and is deleted here when it is
    /// established; an established one is deleted now. The side with the
    /// lower address keeps both until the peer deletes its redundant one.
    fn settle_duplicates(&mut self, p: usize) {
        let cfg = self.peers[p].clone();
        if addr_key(cfg.local) < addr_key(cfg.remote)
            || !self
                .sas
                .iter()
                .any(|s| s.peer == p && !s.initiator && s.state == State::Ready && !s.rekeyed)
        {
            return;
        }
        let mut k = 0;
        while k < self.sas.len() {
            let s = &self.sas[k];
            if s.peer != p || !s.initiator || s.rekeyed {
                k += 1;
                continue;
            }
            match s.state {
                State::InitSent => {
                    let spi = s.neg.as_ref().map_or(0, |n| n.child_spi);
                    self.log(p, false, "simultaneous initiation: the peer's IKE SA is authenticated and the peer has the lower address; ours (in IKE_SA_INIT) given up");
                    self.used_spis.remove(&spi);
                    self.sas.remove(k);
                    continue;
                }
                State::Ready if !s.queue.iter().any(|w| matches!(w, Work::DeleteIke)) => {
                    self.log(p, false, "simultaneous initiation: the peer's IKE SA is authenticated and the peer has the lower address; deleting ours");
                    self.sas[k].queue.push_back(Work::DeleteIke);
                }
                _ => {}
            }
            k += 1;
        }
    }

    // ---- requests of the peer -------------------------------------------

    fn request(
        &mut self,
        i: usize,
        now: Instant,
        m: &Message,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        let _ = (local, remote);
        match m.header.exchange {
            wire::IKE_AUTH if self.sas[i].state == State::InitDone => self.auth_request(i, now, m),
            wire::CREATE_CHILD_SA if self.sas[i].state == State::Ready => {
                self.create_child_request(i, now, m)
            }
            wire::INFORMATIONAL => self.informational_request(i, now, m),
            x => {
                // Not valid in this state: answer so the peer's window moves.
                let _ = x;
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

    fn auth_request(&mut self, i: usize, now: Instant, m: &Message) {
        let p = self.sas[i].peer;
        let cfg = self.peers[p].clone();
        let msg_id = m.header.msg_id;
        let idi = m.payloads.iter().find_map(|p| {
            if let Payload::IdI(t, d) = p {
                Some((*t, d.clone()))
            } else {
                None
            }
        });
        let auth = m.payloads.iter().find_map(|p| {
            if let Payload::Auth(t, d) = p {
                Some((*t, d.clone()))
            } else {
                None
            }
        });
        let fail = |s: &mut Core, why: String| {
            let from = s.sas[i].remote.ip();
            s.log_noise(
                now,
                from,
                Noise::AuthFailed,
                Some(p),
                format!("authentication failed: {why}; answered AUTHENTICATION_FAILED"),
            );
            s.respond(
                i,
                wire::IKE_AUTH,
                msg_id,
                &[Self::notify_payload(notify::AUTHENTICATION_FAILED, vec![])],
            );
            s.drop_sa(i, now, Some(FAILED_RETRY));
        };
        let (Some((idt, idd)), Some((am, ad))) = (idi, auth) else {
            fail(self, "IKE_AUTH without IDi or AUTH".into());
            return;
        };
        if (idt, idd.clone()) != Self::id_payload(&cfg.remote_id) {
            fail(
                self,
                format!(
                    "peer identity {} is not the configured remote_id {}",
                    id_text(idt, &idd),
                    ident_text(&cfg.remote_id)
                ),
            );
            return;
        }
        let ok = {
            let sa = &self.sas[i];
            let (Some(neg), Some(keys)) = (sa.neg.as_ref(), sa.keys.as_ref()) else {
                return;
            };
            let expect = crypto::psk_auth(
                keys.prop.prf,
                &cfg.psk,
                &neg.init_req,
                &neg.nr,
                &keys.sk_pi,
                &Self::id_body(idt, &idd),
            );
            am == crypto::AUTH_PSK && ring_eq(&expect, &ad)
        };
        if !ok {
            fail(
                self,
                "the peer's AUTH does not verify with our pre-shared key".into(),
            );
            return;
        }
        // Our AUTH.
        let (idt, idd) = Self::id_payload(&cfg.local_id);
        let (ni, nr, our_auth) = {
            let sa = &self.sas[i];
            let (Some(neg), Some(keys)) = (sa.neg.as_ref(), sa.keys.as_ref()) else {
                return;
            };
            let a = crypto::psk_auth(
                keys.prop.prf,
                &cfg.psk,
                &neg.init_resp,
                &neg.ni,
                &keys.sk_pr,
                &Self::id_body(idt, &idd),
            );
            (neg.ni.clone(), neg.nr.clone(), a)
        };
        self.established(i, now);
        self.sas[i].neg = None;
        let mut out = vec![
            Payload::IdR(idt, idd),
            Payload::Auth(crypto::AUTH_PSK, our_auth.to_vec()),
        ];
        match self.child_offer(i, m, false, None) {
            Ok((num, spi_out, esp, local_ts, remote_ts)) => {
                let spi_in = self.alloc_spi();
                let Some(keys) = self.child_keys(i, None, &ni, &nr, &esp, spi_in, spi_out, false)
                else {
                    return;
                };
                out.extend(Self::answer_child(
                    num, spi_in, &esp, &local_ts, &remote_ts, false,
                ));
                self.respond(i, wire::IKE_AUTH, msg_id, &out);
                self.install_child(i, now, keys, esp, local_ts, remote_ts, None, false);
            }
            Err(n) => {
                out.push(Self::notify_payload(n, vec![]));
                self.respond(i, wire::IKE_AUTH, msg_id, &out);
            }
        }
        if m.notify(notify::INITIAL_CONTACT).is_some() {
            // RFC 7296 2.4: the peer has no other IKE SA with us (it
            // restarted): ours from before are stale.
            let me = self.sas[i].id;
            while let Some(j) = self
                .sas
                .iter()
                .position(|s| s.peer == p && s.id != me && s.state == State::Ready)
            {
                self.log(p, false, "INITIAL_CONTACT: the peer started afresh; deleting our older IKE SA and its child SAs");
                self.drop_sa(j, now, None);
            }
        }
    }

    fn answer_child(
        num: u8,
        spi_in: u32,
        esp: &EspProposal,
        local_ts: &[Prefix],
        remote_ts: &[Prefix],
        pfs: bool,
    ) -> Vec<Payload> {
        let mut sa = proposal::esp_sa_payload(std::slice::from_ref(esp), spi_in, pfs);
        if let Payload::Sa(p) = &mut sa {
            p[0].num = num;
        }
        let mut v = vec![sa];
        v.extend(Self::ts_payloads(local_ts, remote_ts, false));
        v
    }

    /// Responder: pick the ESP proposal and check the traffic selectors of
    /// a child request. Err: the error notify to answer.
    #[allow(clippy::type_complexity)]
    fn child_offer(
        &mut self,
        i: usize,
        m: &Message,
        pfs: bool,
        rekeyed: Option<usize>,
    ) -> Result<(u8, u32, EspProposal, Vec<Prefix>, Vec<Prefix>), u16> {
        let p = self.sas[i].peer;
        let cfg = self.peers[p].clone();
        let props = m.payloads.iter().find_map(|p| {
            if let Payload::Sa(x) = p {
                Some(x)
            } else {
                None
            }
        });
        let ours = match rekeyed {
            Some(c) => Self::rekey_proposals(&cfg, &self.sas[i].children[c].esp),
            None => cfg.esp_proposals.clone(),
        };
        let Some((num, spi_out, esp)) = props.and_then(|x| Self::select_esp(&ours, x, pfs)) else {
            self.log(
                p,
                false,
                "child SA: no ESP proposal of the peer is acceptable (NO_PROPOSAL_CHOSEN)",
            );
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        if spi_out < 256 {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        }
        let tsi = m
            .payloads
            .iter()
            .find_map(|p| {
                if let Payload::TsI(x) = p {
                    Some(x.clone())
                } else {
                    None
                }
            })
            .unwrap_or_default();
        let tsr = m
            .payloads
            .iter()
            .find_map(|p| {
                if let Payload::TsR(x) = p {
                    Some(x.clone())
                } else {
                    None
                }
            })
            .unwrap_or_default();
        let (lts, rts) = match rekeyed {
            Some(c) => (
                self.sas[i].children[c].local_ts.clone(),
                self.sas[i].children[c].remote_ts.clone(),
            ),
            None => (cfg.local_ts.clone(), cfg.remote_ts.clone()),
        };
        // The peer's TSi are its local side (our remote), TSr ours. We
        // accept exactly our configured selectors (what the datapath's
        // policy check enforces); anything else is TS_UNACCEPTABLE.
        let want_i: Vec<TsRepr> = rts.iter().map(|x| TsRepr::from_prefix(*x)).collect();
        let want_r: Vec<TsRepr> = lts.iter().map(|x| TsRepr::from_prefix(*x)).collect();
        let covers = |offered: &[TsRepr], want: &[TsRepr]| {
            want.iter().all(|w| offered.iter().any(|o| o.contains(w)))
        };
        if !covers(&tsi, &want_i) || !covers(&tsr, &want_r) {
            self.log(
                p,
                false,
                format!(
                    "child SA refused: the peer's traffic selectors TSi {} TSr {} do not cover ours (local {}, remote {}) (TS_UNACCEPTABLE)",
                    ts_text(Some(&tsi)),
                    ts_text(Some(&tsr)),
                    prefixes(&lts),
                    prefixes(&rts)
                ),
            );
            return Err(notify::TS_UNACCEPTABLE);
        }
        Ok((num, spi_out, esp, lts, rts))
    }

    fn create_child_request(&mut self, i: usize, now: Instant, m: &Message) {
        let p = self.sas[i].peer;
        let msg_id = m.header.msg_id;
        let props = m.payloads.iter().find_map(|p| {
            if let Payload::Sa(x) = p {
                Some(x.clone())
            } else {
                None
            }
        });
        let ni = m.payloads.iter().find_map(|p| {
            if let Payload::Nonce(n) = p {
                Some(n.clone())
            } else {
                None
            }
        });
        let ke = m.payloads.iter().find_map(|p| {
            if let Payload::Ke { group, data } = p {
                Some((*group, data.clone()))
            } else {
                None
            }
        });
        let (Some(props), Some(ni)) = (props, ni) else {
            self.respond(
                i,
                wire::CREATE_CHILD_SA,
                msg_id,
                &[Self::notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
            );
            return;
        };
        if !(16..=256).contains(&ni.len()) {
            return;
        }
        let nr = self.nonce();
        // IKE SA rekey (RFC 7296 1.3.2).
        if props.first().is_some_and(|x| x.protocol == wire::PROTO_IKE) {
            let prop = self.sas[i].prop.clone();
            let chosen = prop
                .as_ref()
                .and_then(|pr| Self::select_ike(std::slice::from_ref(pr), &props));
            let (Some((num, prop)), Some((g, kd))) = (chosen, ke) else {
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
                );
                return;
            };
            if g != prop.dh.id() {
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(
                        notify::INVALID_KE_PAYLOAD,
                        prop.dh.id().to_be_bytes().to_vec(),
                    )],
                );
                return;
            }
            if self.sas[i].rekeyed
                || self.sas[i]
                    .pending
                    .as_ref()
                    .is_some_and(|x| matches!(x.sent, Sent::Child { .. }))
            {
                // An IKE rekey while our child exchange is in flight, or of
                // an SA already replaced: TEMPORARY_FAILURE (RFC 7296
                // 2.25). A simultaneous IKE rekey (ours in flight) is
                // answered as usual and resolved by the nonces (2.8.2)
                // when ours completes (rekey_ike_finish).
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(notify::TEMPORARY_FAILURE, vec![])],
                );
                return;
            }
            let their_spi = props
                .iter()
                .find(|x| x.num == num)
                .map(|x| x.spi.clone())
                .unwrap_or_default();
            let Ok(spi_i) = <[u8; 8]>::try_from(their_spi.as_slice()).map(u64::from_be_bytes)
            else {
                return;
            };
            let Ok(dh) = Dh::generate(prop.dh, &self.rng) else {
                return;
            };
            let public = dh.public().to_vec();
            let Ok(shared) = dh.agree(&kd) else { return };
            let spi_r = self.random_u64();
            let mut sa = proposal::ike_sa_payload(std::slice::from_ref(&prop), Some(spi_r));
            if let Payload::Sa(x) = &mut sa {
                x[0].num = num;
            }
            self.respond(
                i,
                wire::CREATE_CHILD_SA,
                msg_id,
                &[
                    sa,
                    Payload::Nonce(nr.clone()),
                    Payload::Ke {
                        group: g,
                        data: public,
                    },
                ],
            );
            self.rekey_ike_finish(i, now, spi_i, spi_r, false, &ni, &nr, &shared, prop);
            return;
        }
        let rekey = m
            .notify(notify::REKEY_SA)
            .and_then(|n| <[u8; 4]>::try_from(n.spi.as_slice()).ok())
            .map(u32::from_be_bytes);
        let old = match rekey {
            Some(s) => match self.sas[i].children.iter().position(|c| c.spi_out == s) {
                Some(c) if !self.sas[i].children[c].superseded => Some(c),
                Some(_) => {
                    // We already rekeyed it (our exchange finished first).
                    self.respond(
                        i,
                        wire::CREATE_CHILD_SA,
                        msg_id,
                        &[Self::notify_payload(notify::TEMPORARY_FAILURE, vec![])],
                    );
                    return;
                }
                None => {
                    self.respond(
                        i,
                        wire::CREATE_CHILD_SA,
                        msg_id,
                        &[Payload::Notify(NotifyRepr {
                            protocol: wire::PROTO_ESP,
                            spi: s.to_be_bytes().to_vec(),
                            ty: notify::CHILD_SA_NOT_FOUND,
                            data: vec![],
                        })],
                    );
                    return;
                }
            },
            None => None,
        };
        // A peer that keeps asking for children (new ones, or rekeys whose
        // old SA it never deletes): each is an inbound SA in the datapath.
        if self.sas[i].children.len() >= MAX_CHILD_SAS {
            self.log(
                p,
                false,
                format!(
                    "CREATE_CHILD_SA refused: the IKE SA has {MAX_CHILD_SAS} child SAs already; answered NO_ADDITIONAL_SAS"
                ),
            );
            self.respond(
                i,
                wire::CREATE_CHILD_SA,
                msg_id,
                &[Self::notify_payload(notify::NO_ADDITIONAL_SAS, vec![])],
            );
            return;
        }
        let pfs = ke.is_some();
        let (num, spi_out, esp, lts, rts) = match self.child_offer(i, m, pfs, old) {
            Ok(x) if pfs && x.2.dh.is_none() => {
                // A KE without a DH transform in the proposal we chose.
                let _ = x;
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
                );
                return;
            }
            Ok(x) => x,
            Err(n) => {
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(n, vec![])],
                );
                return;
            }
        };
        let mut shared = None;
        let mut ke_out = None;
        if let (Some((g, kd)), Some(want)) = (&ke, esp.dh) {
            if *g != want.id() {
                self.respond(
                    i,
                    wire::CREATE_CHILD_SA,
                    msg_id,
                    &[Self::notify_payload(
                        notify::INVALID_KE_PAYLOAD,
                        want.id().to_be_bytes().to_vec(),
                    )],
                );
                return;
            }
            let Ok(dh) = Dh::generate(want, &self.rng) else {
                return;
            };
            ke_out = Some(Payload::Ke {
                group: *g,
                data: dh.public().to_vec(),
            });
            let Ok(s) = dh.agree(kd) else { return };
            shared = Some(s);
        }
        let spi_in = self.alloc_spi();
        let Some(keys) = self.child_keys(
            i,
            shared.as_ref().map(|s: &Secret| s.as_slice()),
            &ni,
            &nr,
            &esp,
            spi_in,
            spi_out,
            false,
        ) else {
            return;
        };
        let mut out = Self::answer_child(num, spi_in, &esp, &lts, &rts, pfs);
        out.insert(1, Payload::Nonce(nr.clone()));
        if let Some(k) = ke_out {
            out.insert(2, k);
        }
        self.respond(i, wire::CREATE_CHILD_SA, msg_id, &out);
        let replaces = old.map(|c| self.sas[i].children[c].spi_in);
        if let Some(c) = old {
            self.sas[i].children[c].peer_rekey = Some((ni.clone(), nr.clone(), spi_in));
        }
        // Rekey responder: our outbound switches when the peer deletes the
        // old SA (it has our new inbound SA by then). A new child (after a
        // clear) is used at once.
        self.install_child(i, now, keys, esp, lts, rts, replaces, replaces.is_some());
        if let Some(n) = self.sas[i].children.last_mut()
            && replaces.is_some()
        {
            // If the peer never deletes the old SA, the unused new one
            // goes with the old one's lifetime.
            n.expire_at = now + self.peers[p].child_lifetime;
        }
    }

    fn informational_request(&mut self, i: usize, now: Instant, m: &Message) {
        let p = self.sas[i].peer;
        let msg_id = m.header.msg_id;
        let mut answer = Vec::new();
        let mut delete_ike = false;
        for pl in &m.payloads {
            match pl {
                Payload::Delete(DeleteRepr::Ike) => delete_ike = true,
                Payload::Delete(DeleteRepr::Esp(spis)) => {
                    let mut ours = Vec::new();
                    for s in spis {
                        let Some(ci) = self.sas[i].children.iter().position(|c| c.spi_out == *s)
                        else {
                            continue;
                        };
                        let c = &self.sas[i].children[ci];
                        let spi_in = c.spi_in;
                        ours.push(spi_in);
                        if c.superseded || c.peer_rekey.is_some() {
                            // The peer finished a rekey of it: switch our
                            // outbound SA to the replacement first, then
                            // keep the old inbound SA for packets in flight.
                            let repl = self.sas[i].children.iter().position(|n| {
                                n.replaces == Some(spi_in) && n.pending_out.is_some()
                            });
                            if let Some(r) = repl
                                && let Some(k) = self.sas[i].children[r].pending_out.take()
                            {
                                self.sas[i].children[r].expire_at =
                                    now + self.peers[p].child_lifetime;
                                self.set_outbound(i, k);
                            }
                            let c = &mut self.sas[i].children[ci];
                            c.superseded = true;
                            c.deleting = true;
                            c.remove_at = Some(now + INBOUND_GRACE);
                        } else {
                            self.log(p, false, format!("peer deleted child SA (inbound SPI 0x{spi_in:08x}, outbound SPI 0x{s:08x})"));
                            self.remove_child(i, spi_in);
                        }
                    }
                    if !ours.is_empty() {
                        answer.push(Payload::Delete(DeleteRepr::Esp(ours)));
                    }
                }
                Payload::Notify(n) if n.ty == notify::INVALID_SPI => {
                    let spi = n
                        .data
                        .get(..4)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .map(u32::from_be_bytes);
                    if let Some(spi) = spi
                        && let Some(c) = self.sas[i]
                            .children
                            .iter()
                            .find(|c| c.spi_out == spi && !c.superseded)
                    {
                        let spi_in = c.spi_in;
                        self.log(p, false, format!("peer reports our ESP SPI 0x{spi:08x} as invalid (INVALID_SPI); deleting that child SA and negotiating a new one"));
                        self.remove_child(i, spi_in);
                        self.sas[i].enqueue(Work::DeleteChildren(vec![spi_in]));
                        self.sas[i].enqueue(Work::NewChild);
                    }
                }
                _ => {}
            }
        }
        if delete_ike {
            self.respond(i, wire::INFORMATIONAL, msg_id, &[]);
            let me = self.sas[i].id;
            if let Some(j) = self
                .sas
                .iter()
                .position(|s| s.peer_ike_rekey.as_ref().is_some_and(|x| x.2 == me))
            {
                // A simultaneous IKE rekey the peer resolved before the
                // answer to ours reached us (reordered): it deleted the SA
                // of its own exchange, so ours survives. The children go
                // back to the old SA; ours takes them when it completes.
                let children = std::mem::take(&mut self.sas[i].children);
                let work: Vec<Work> = self.sas[i].queue.drain(..).collect();
                self.sas[j].children.extend(children);
                self.sas[j].queue.extend(work);
                self.sas[j].peer_ike_rekey = None;
                self.log(p, false, "simultaneous IKE SA rekey: the peer deleted the new IKE SA of its exchange; ours survives");
                self.sas.remove(i);
                return;
            }
            self.log(p, false, "peer deleted the IKE SA");
            let re = if self.sas[i].rekeyed {
                None
            } else {
                Some(REINITIATE_DELAY)
            };
            // (The old SA of a rekey: its children moved to the new one,
            // but the peer may have made more on it since.)
            self.drop_sa(i, now, re);
            return;
        }
        self.respond(i, wire::INFORMATIONAL, msg_id, &answer);
    }

    // ---- commands -------------------------------------------------------

    fn command(&mut self, now: Instant, c: Command) {
        match c {
            Command::ClearChildSas(peer) => {
                let Some(i) = self.sas.iter().position(|s| {
                    self.peers[s.peer].remote == peer && s.state == State::Ready && !s.rekeyed
                }) else {
                    return;
                };
                let spis: Vec<u32> = self.sas[i].children.iter().map(|c| c.spi_in).collect();
                self.log(
                    self.sas[i].peer,
                    false,
                    format!(
                        "clearing {} child SA(s) on command; negotiating new ones",
                        spis.len()
                    ),
                );
                for s in &spis {
                    self.remove_child(i, *s);
                }
                // The DELETE first (the peer removes its half), then a new child.
                self.sas[i]
                    .queue
                    .retain(|w| !matches!(w, Work::RekeyChild(_)));
                if !spis.is_empty() {
                    self.sas[i].queue.push_front(Work::DeleteChildren(spis));
                }
                // One new child however often the command comes before it
                // is made (a silent peer queued one per command).
                self.sas[i].enqueue(Work::NewChild);
            }
            Command::ClearIkeSas(peer) => {
                self.delete_ike_sas(now, peer, "clearing the IKE SA on command")
            }
            Command::Shutdown => {
                self.stopped = true;
                self.delete_ike_sas(now, None, "the daemon stops: deleting the IKE SA");
            }
        }
    }

    /// A DELETE of IKE SA `i`, fire and forget (the SA goes locally at
    /// once; no retransmission).
    fn send_delete_ike(&mut self, i: usize) {
        let msg_id = self.sas[i].next_req_id;
        if let Some(d) = self.seal(
            i,
            wire::INFORMATIONAL,
            false,
            msg_id,
            &[Payload::Delete(DeleteRepr::Ike)],
        ) {
            let (l, r) = (self.sas[i].local, self.sas[i].remote);
            self.send(l, r, d);
        }
    }

    /// Delete the IKE SAs of `peer` (all with None) and their children
    /// now, telling the peer with a DELETE wherever it may hold the SA
    /// established (ours in IKE_AUTH, or established): fire and forget,
    /// the SA is gone locally at once. Initiators start again at once
    /// (unless stopped).
    fn delete_ike_sas(&mut self, now: Instant, peer: Option<IpAddr>, line: &str) {
        let mut i = 0;
        while i < self.sas.len() {
            let p = self.sas[i].peer;
            if peer.is_some_and(|x| self.peers[p].remote != x) {
                i += 1;
                continue;
            }
            self.log(p, false, line);
            if self.sas[i].keys.is_some()
                && matches!(
                    self.sas[i].state,
                    State::AuthSent | State::Ready | State::Deleting
                )
            {
                self.send_delete_ike(i);
            }
            self.drop_sa(i, now, Some(Duration::ZERO));
        }
    }

    /// Tests: start a rekey of the children (or the IKE SA) of `peer` now.
    pub(crate) fn rekey_now(&mut self, now: Instant, peer: IpAddr, ike: bool) -> Vec<Action> {
        for sa in self
            .sas
            .iter_mut()
            .filter(|s| s.state == State::Ready && !s.rekeyed)
        {
            if self.peers[sa.peer].remote != peer {
                continue;
            }
            if ike {
                sa.rekey_at = Some(now);
            } else {
                for c in sa.children.iter_mut().filter(|c| !c.superseded) {
                    c.rekey_at = now;
                }
            }
        }
        self.handle(now, Input::Timer)
    }

    fn unknown_spi(&mut self, now: Instant, peer: IpAddr, spi: u32) {
        let Some(i) = self.sas.iter().position(|s| {
            self.peers[s.peer].remote == peer && s.state == State::Ready && !s.rekeyed
        }) else {
            return;
        };
        let cfg = self.peers[self.sas[i].peer].clone();
        if !cfg.invalid_spi_recovery {
            return;
        }
        if self.sas[i]
            .last_invalid_spi
            .is_some_and(|t| now < t + INVALID_SPI_INTERVAL)
        {
            return;
        }
        self.sas[i].last_invalid_spi = Some(now);
        self.log(
            self.sas[i].peer,
            false,
            format!("ESP with unknown SPI 0x{spi:08x}: telling the peer (INVALID_SPI)"),
        );
        self.sas[i].queue.push_back(Work::InvalidSpi(spi));
    }
}

/// Addresses ordered as numbers (IPv4 before IPv6).
fn addr_key(a: IpAddr) -> (u8, u128) {
    match a {
        IpAddr::V4(a) => (4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (6, u128::from(a)),
    }
}

fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn id_text(t: u8, d: &[u8]) -> String {
    match (t, d.len()) {
        (wire::id_type::IPV4, 4) => {
            IpAddr::from(<[u8; 4]>::try_from(d).unwrap_or([0; 4])).to_string()
        }
        (wire::id_type::IPV6, 16) => {
            IpAddr::from(<[u8; 16]>::try_from(d).unwrap_or([0; 16])).to_string()
        }
        (wire::id_type::FQDN | wire::id_type::RFC822, _) => escape_text(d),
        _ => format!("(type {t}, {} bytes)", d.len()),
    }
}

/// Network-supplied text for a log line: printable ASCII as it is (a
/// backslash doubled), every other byte as `\xNN` (control characters,
/// terminal escapes, newlines that would forge log lines, invalid or
/// look-alike UTF-8), cut to [`LOG_TEXT_MAX`] characters.
fn escape_text(d: &[u8]) -> String {
    let mut out = String::new();
    for &b in d {
        let piece = match b {
            b'\\' => "\\\\".to_string(),
            0x20..=0x7e => char::from(b).to_string(),
            _ => format!("\\x{b:02x}"),
        };
        if out.len() + piece.len() > LOG_TEXT_MAX {
            out.push_str(&format!("...({} bytes)", d.len()));
            break;
        }
        out.push_str(&piece);
    }
    out
}

fn ident_text(i: &crate::Identity) -> String {
    let (t, d) = Core::id_payload(i);
    id_text(t, &d)
}

fn prefixes(p: &[Prefix]) -> String {
    let v: Vec<String> = p.iter().map(|x| format!("{}/{}", x.addr, x.len)).collect();
    format!("[{}]", v.join(", "))
}

fn ts_text(t: Option<&[TsRepr]>) -> String {
    let Some(t) = t else { return "(none)".into() };
    let v: Vec<String> = t
        .iter()
        .map(|x| match x.to_prefix() {
            Some(p) => format!("{}/{}", p.addr, p.len),
            None => format!("{}-{}", x.start, x.end),
        })
        .collect();
    format!("[{}]", v.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_text_is_escaped_and_cut() {
        assert_eq!(escape_text(b"vpn.example.com"), "vpn.example.com");
        assert_eq!(
            escape_text(b"a\nfake: line\x1b[31m\\\xff"),
            "a\\x0afake: line\\x1b[31m\\\\\\xff"
        );
        let long = escape_text(&[b'\n'; 1000]);
        assert!(long.len() <= LOG_TEXT_MAX + 20, "{long}");
        assert!(long.ends_with("...(1000 bytes)"), "{long}");
        assert_eq!(
            id_text(wire::id_type::FQDN, b"x\r\nTunnel9: SA UP"),
            "x\\x0d\\x0aTunnel9: SA UP"
        );
    }
}
