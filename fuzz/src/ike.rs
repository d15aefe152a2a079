//! The IKEv2 targets: the message parser alone, and the IKE core fed
//! datagrams by a peer that knows the pre-shared key.
//!
//! The core target's script plays the initiator of a tunnel the core
//! answers (its peer address is the script's), built from the crate's own
//! wire and crypto pieces: a real IKE_SA_INIT and IKE_AUTH (so the
//! messages after them decrypt and reach the request handlers), then
//! CREATE_CHILD_SA and INFORMATIONAL requests and answers to the core's own
//! requests from templates or raw payload chains, changed or not, sealed
//! with the IKE SA's keys; besides raw datagrams, replays, clock steps and
//! operator commands. A second tunnel of the core initiates towards another
//! script address, whose answers are raw or changed datagrams.
//! Checks: no panic; every datagram the core sends parses (and, where the
//! script holds the keys, its payloads too); the core's tables stay within
//! fixed bounds ([`xdpsec_ike::Ike::footprint`]).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use xdpsec_ike::crypto::{self, Dh, IkeKeys};
use xdpsec_ike::proposal::{esp_sa_payload, ike_sa_payload};
use xdpsec_ike::timers::{
    COOKIE_THRESHOLD, LOG_LIMIT_SENDERS, MAX_CHILD_SAS, MAX_IKE_SAS_PER_PEER,
};
use xdpsec_ike::wire::{
    self, DeleteRepr, FLAG_INITIATOR, FLAG_RESPONSE, HeaderRepr, Message, NotifyRepr, Payload,
    TsRepr, id_type, notify, payload_type,
};
use xdpsec_ike::{
    Action, Command, EspProposal, Identity, Ike, IkeProposal, Input, PeerConfig, Prefix,
};
use zeroize::Zeroizing;

use crate::Script;

/// The message parser: a whole message, and the input as a decrypted
/// payload chain; what parses (without SK) emits and parses back the same.
pub fn wire(data: &[u8]) {
    if let Ok(m) = Message::parse(data) {
        for p in &m.payloads {
            if let Payload::TsI(ts) | Payload::TsR(ts) = p {
                for t in ts {
                    let _ = t.to_prefix();
                    assert!(t.contains(t) || t.start > t.end || t.start_port > t.end_port);
                }
            }
        }
        if m.sk.is_none() {
            let again = wire::emit_message(&m.header, &m.payloads);
            assert_eq!(Message::parse(&again), Ok(m), "emit/parse round trip");
        }
    }
    if let Some((&first, rest)) = data.split_first() {
        let _ = wire::parse_chain(first, rest, 0);
    }
}

const PSK: &[u8] = b"fuzz ike psk";
/// The core's address, the script's (its peer), the peer it initiates to.
pub const CORE: [u8; 4] = [198, 51, 100, 1];
pub const SCRIPT: [u8; 4] = [198, 51, 100, 2];
const OTHER: [u8; 4] = [198, 51, 100, 3];
const IKE_PROPS: [&str; 2] = ["aes256gcm16-prfsha256-x25519", "aes128-sha256-ecp256"];
const ESP_PROPS: [&str; 2] = ["aes256gcm16", "aes128-sha1"];

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

fn prefix(a: [u8; 4]) -> Prefix {
    Prefix {
        addr: ip(a),
        len: 32,
    }
}

/// A tunnel from `local` to `remote` with the targets' PSK, proposals
/// (aes256gcm16 with x25519 first, CBC with P-256 second) and timers.
pub fn tunnel(
    name: &str,
    index: u32,
    local: [u8; 4],
    remote: [u8; 4],
    initiate: bool,
) -> PeerConfig {
    let (lts, rts) = if local == CORE {
        ([203, 0, 113, 1], [203, 0, 113, 2])
    } else {
        ([203, 0, 113, 2], [203, 0, 113, 1])
    };
    PeerConfig {
        tunnel: name.into(),
        tunnel_index: index,
        local: ip(local),
        remote: ip(remote),
        psk: Zeroizing::new(PSK.to_vec()),
        cert: None,
        local_id: Identity::Addr(ip(local)),
        remote_id: Identity::Addr(ip(remote)),
        ike_proposals: IKE_PROPS
            .iter()
            .map(|p| IkeProposal::parse(p).expect("proposal"))
            .collect(),
        esp_proposals: ESP_PROPS
            .iter()
            .map(|p| EspProposal::parse(p).expect("proposal"))
            .collect(),
        ike_lifetime: Duration::from_secs(3600),
        child_lifetime: Duration::from_secs(600),
        dpd: Some(Duration::from_secs(10)),
        dpd_retry: None,
        initiate,
        force_encap: false,
        nat_t_port: 4500,
        local_ts: vec![prefix(lts)],
        remote_ts: vec![prefix(rts)],
        replay_window: 64,
        invalid_spi_recovery: true,
        fragmentation: true,
        fragment_size: xdpsec_ike::frag::DEFAULT_FRAGMENT_SIZE,
    }
}

fn ts_payloads() -> [Payload; 2] {
    [
        Payload::TsI(vec![TsRepr::from_prefix(prefix([203, 0, 113, 2]))]),
        Payload::TsR(vec![TsRepr::from_prefix(prefix([203, 0, 113, 1]))]),
    ]
}

fn notify(ty: u16, protocol: u8, spi: Vec<u8>) -> Payload {
    Payload::Notify(NotifyRepr {
        protocol,
        spi,
        ty,
        data: Vec::new(),
    })
}

/// The script's side of one IKE SA with the core (it is the initiator).
struct Sa {
    spi_i: u64,
    spi_r: u64,
    keys: IkeKeys,
    /// Our next request's message id.
    next_id: u32,
}

/// An IKE_SA_INIT of ours waiting for its answer: SPIi, Ni, our DH, the
/// proposal, the request's bytes.
type Init = (u64, Vec<u8>, Dh, IkeProposal, Vec<u8>);

/// The script as the core's peer.
struct Peer {
    rng: SystemRandom,
    /// IKE_SA_INIT sent, waiting for the answer: (SPIi, Ni, DH, proposal, request).
    init: Option<Init>,
    /// After IKE_SA_INIT: the SA and what IKE_AUTH needs (request, Nr).
    sa: Option<(Sa, Vec<u8>, Vec<u8>)>,
    /// The core's last request to us: (message id, exchange).
    their_request: Option<(u32, u8)>,
    /// Counter for SPIs and nonces (deterministic per input).
    n: u32,
    /// Datagrams we sent (for replays).
    sent: Vec<Vec<u8>>,
}

impl Peer {
    fn fresh(&mut self) -> u32 {
        self.n += 1;
        self.n
    }

    fn seal(
        &self,
        exchange: u8,
        flags: u8,
        msg_id: u32,
        first: u8,
        inner: &[u8],
    ) -> Option<Vec<u8>> {
        let (sa, ..) = self.sa.as_ref()?;
        let h = HeaderRepr {
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            exchange,
            flags,
            msg_id,
        };
        sa.keys.seal(true, &h, first, inner, &self.rng).ok()
    }

    /// The payloads of a request or answer, from a template.
    fn template(&mut self, t: u8) -> (u8, Vec<Payload>) {
        let n = self.fresh();
        let nonce = Payload::Nonce(vec![n as u8; 32]);
        let esp = EspProposal::parse(ESP_PROPS[usize::from(t >> 4) % 2]).expect("proposal");
        match t % 7 {
            0 => (wire::INFORMATIONAL, vec![]),
            1 => (
                wire::INFORMATIONAL,
                vec![Payload::Delete(DeleteRepr::Esp(vec![0x5000 + n - 1]))],
            ),
            2 => (wire::INFORMATIONAL, vec![Payload::Delete(DeleteRepr::Ike)]),
            3 => {
                let [a, b] = ts_payloads();
                (
                    wire::CREATE_CHILD_SA,
                    vec![
                        esp_sa_payload(std::slice::from_ref(&esp), 0x5000 + n, false),
                        nonce,
                        a,
                        b,
                    ],
                )
            }
            4 => {
                // Rekey the child of our IKE_AUTH (or an earlier one).
                let [a, b] = ts_payloads();
                let old = 0x5000 + u32::from(t >> 5);
                (
                    wire::CREATE_CHILD_SA,
                    vec![
                        notify(
                            notify::REKEY_SA,
                            wire::PROTO_ESP,
                            old.to_be_bytes().to_vec(),
                        ),
                        esp_sa_payload(std::slice::from_ref(&esp), 0x5000 + n, false),
                        nonce,
                        a,
                        b,
                    ],
                )
            }
            5 => {
                let prop =
                    IkeProposal::parse(IKE_PROPS[usize::from(t >> 4) % 2]).expect("proposal");
                let Ok(dh) = Dh::generate(prop.dh, &self.rng) else {
                    return (wire::INFORMATIONAL, vec![]);
                };
                (
                    wire::CREATE_CHILD_SA,
                    vec![
                        ike_sa_payload(
                            std::slice::from_ref(&prop),
                            Some(0x7000_0000 + u64::from(n)),
                        ),
                        nonce,
                        Payload::Ke {
                            group: prop.dh.id(),
                            data: dh.public().to_vec(),
                        },
                    ],
                )
            }
            _ => (
                wire::INFORMATIONAL,
                vec![notify(
                    notify::INVALID_SPI,
                    wire::PROTO_ESP,
                    (0x5000 + n).to_be_bytes().to_vec(),
                )],
            ),
        }
    }

    /// An answer of the core to our IKE_SA_INIT: derive the SA's keys.
    fn init_answer(&mut self, data: &[u8]) {
        let Ok(m) = Message::parse(data) else { return };
        let Some((spi_i, ni, dh, prop, req)) = self.init.take() else {
            return;
        };
        if m.header.spi_i != spi_i || m.header.exchange != wire::IKE_SA_INIT {
            self.init = Some((spi_i, ni, dh, prop, req));
            return;
        }
        let ke = m.payloads.iter().find_map(|p| match p {
            Payload::Ke { data, .. } => Some(data.clone()),
            _ => None,
        });
        let nr = m.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let (Some(ke), Some(nr)) = (ke, nr) else {
            return;
        };
        let Ok(shared) = dh.agree(&ke) else { return };
        let seed = crypto::skeyseed(prop.prf, &ni, &nr, &shared);
        let keys = IkeKeys::derive(&prop, &seed, &ni, &nr, spi_i, m.header.spi_r);
        let sa = Sa {
            spi_i,
            spi_r: m.header.spi_r,
            keys,
            next_id: 1,
        };
        self.sa = Some((sa, req, nr));
        self.their_request = None;
    }

    /// A datagram of the core to us: it parses; if it is of our SA, its
    /// payloads parse too; remember the core's requests.
    fn receive(&mut self, data: &[u8]) {
        let m = Message::parse(data).expect("the core sent a message that does not parse");
        if m.header.exchange == wire::IKE_SA_INIT {
            self.init_answer(data);
            return;
        }
        let Some((sa, ..)) = &self.sa else { return };
        let (Some(sk), true) = (
            m.sk,
            m.header.spi_i == sa.spi_i && m.header.spi_r == sa.spi_r,
        ) else {
            return;
        };
        let plain = sa
            .keys
            .open(false, data, sk)
            .expect("the core's message fails our integrity check");
        wire::parse_chain(sk.first_inner, &plain, 0).expect("the core's payloads do not parse");
        if !m.header.is_response() {
            self.their_request = Some((m.header.msg_id, m.header.exchange));
        }
    }
}

/// The bounds of the core's tables, whatever the script does: half-open
/// SAs stop at the cookie threshold, established ones at
/// [`MAX_IKE_SAS_PER_PEER`] per tunnel (2 tunnels; besides, those being
/// deleted), their children at [`MAX_CHILD_SAS`] each.
fn check_footprint(ike: &Ike) {
    let f = ike.footprint();
    let ike_sas = COOKIE_THRESHOLD + 2 * (MAX_IKE_SAS_PER_PEER + 2);
    assert!(f.ike_sas <= ike_sas, "IKE SAs pile up: {f:?}");
    let children = 2 * (MAX_IKE_SAS_PER_PEER + 2) * MAX_CHILD_SAS;
    assert!(f.child_sas <= children, "child SAs pile up: {f:?}");
    // Per IKE SA: a delete and a new child for each child (all expiring
    // at once), and a few more.
    let queued = f.ike_sas * (2 * MAX_CHILD_SAS + 4);
    assert!(f.queued <= queued, "queued work piles up: {f:?}");
    // Each IKE SA holds at most one SPI for a child still to come.
    assert!(f.spis <= f.child_sas + f.ike_sas, "SPIs leak: {f:?}");
    assert!(
        f.log_limits <= LOG_LIMIT_SENDERS + 4,
        "log limits pile up: {f:?}"
    );
}

/// What one script step gives the core.
enum Feed {
    /// A datagram from this sender to the core's port 500.
    Datagram(SocketAddr, Vec<u8>),
    /// Anything else.
    Other(Input<'static>),
}

/// The op byte of the core script with `op % 11 == kind` and the modifier
/// bits `bits` (of 0xf0), for seeds and tests: 0 raw datagram, 1
/// IKE_SA_INIT, 2 IKE_AUTH, 3 request, 4 answer to the core's request, 5
/// replay, 6 answer to the core's initiation, 7 next timer, 8 clock step, 9
/// command, 10 UnknownSpi (with 0x80: rekey the child, 0xc0: the IKE SA).
pub fn op(kind: u8, bits: u8) -> u8 {
    (0..=255u8)
        .find(|b| b % 11 == kind && b & 0xf0 == bits)
        .expect("an op byte")
}

/// The IKE core target.
pub fn core(data: &[u8]) {
    play(data);
}

/// The core target's script played; returns the core as the script left it.
pub fn play(data: &[u8]) -> Ike {
    let mut s = Script::new(data);
    let mut now = Instant::now();
    let mut ike = Ike::new(vec![
        tunnel("Tunnel1", 1, CORE, SCRIPT, false),
        tunnel("Tunnel2", 2, CORE, OTHER, true),
    ]);
    let mut peer = Peer {
        rng: SystemRandom::new(),
        init: None,
        sa: None,
        their_request: None,
        n: 0,
        sent: Vec::new(),
    };
    // The core's last datagram towards OTHER (to answer it changed).
    let mut other_last: Option<Vec<u8>> = None;
    let core500 = SocketAddr::new(ip(CORE), 500);
    let mut steps = 0;
    let mut first = true;
    while (!s.done() || first) && steps < 500 {
        steps += 1;
        let op = if first { 7 } else { s.u8() };
        first = false;
        let from = SocketAddr::new(ip(SCRIPT), 500);
        let feed = match op % 11 {
            0 => {
                let from = if op & 0x80 != 0 {
                    SocketAddr::new(ip([198, 51, 100, s.u8()]), 500)
                } else {
                    from
                };
                Feed::Datagram(from, s.bytes().to_vec())
            }
            1 => {
                // A fresh IKE_SA_INIT.
                let prop =
                    IkeProposal::parse(IKE_PROPS[usize::from(op >> 4) % 2]).expect("proposal");
                let Ok(dh) = Dh::generate(prop.dh, &peer.rng) else {
                    continue;
                };
                let n = peer.fresh();
                let spi_i = 0x1000_0000_0000 + u64::from(n);
                let ni = vec![n as u8 ^ 0x5a; 32];
                let h = HeaderRepr {
                    spi_i,
                    spi_r: 0,
                    exchange: wire::IKE_SA_INIT,
                    flags: FLAG_INITIATOR,
                    msg_id: 0,
                };
                let mut b = wire::emit_message(
                    &h,
                    &[
                        ike_sa_payload(std::slice::from_ref(&prop), None),
                        Payload::Ke {
                            group: prop.dh.id(),
                            data: dh.public().to_vec(),
                        },
                        Payload::Nonce(ni.clone()),
                    ],
                );
                if op & 0x40 != 0 {
                    s.mutate(&mut b);
                }
                peer.init = Some((spi_i, ni, dh, prop, b.clone()));
                Feed::Datagram(from, b)
            }
            2 => {
                // IKE_AUTH of the SA just made.
                let n = peer.fresh();
                let Some((sa, req, nr)) = &peer.sa else {
                    continue;
                };
                let id = SCRIPT.to_vec();
                let id_body = [&[id_type::IPV4, 0, 0, 0][..], &id].concat();
                let p = &sa.keys.prop;
                let auth = crypto::psk_auth(p.prf, PSK, req, nr, &sa.keys.sk_pi, &id_body);
                let esp =
                    EspProposal::parse(ESP_PROPS[usize::from(op >> 4) % 2]).expect("proposal");
                let [a, b] = ts_payloads();
                let mut payloads = vec![
                    Payload::IdI(id_type::IPV4, id),
                    Payload::Auth(crypto::AUTH_PSK, auth.to_vec()),
                    esp_sa_payload(std::slice::from_ref(&esp), 0x5000 + n, false),
                    a,
                    b,
                ];
                if op & 0x20 != 0 {
                    payloads.push(notify(notify::INITIAL_CONTACT, 0, vec![]));
                }
                let mut inner = Vec::new();
                let first = wire::emit_payloads(&payloads, &mut inner);
                if op & 0x40 != 0 {
                    s.mutate(&mut inner);
                }
                let msg_id = sa.next_id;
                let Some(b) = peer.seal(wire::IKE_AUTH, FLAG_INITIATOR, msg_id, first, &inner)
                else {
                    continue;
                };
                if let Some((sa, ..)) = &mut peer.sa {
                    sa.next_id += 1;
                }
                Feed::Datagram(from, b)
            }
            3 | 4 => {
                // A request (3) or an answer to the core's request (4):
                // from a template, or a raw payload chain; changed or not.
                let Some((sa, ..)) = &peer.sa else { continue };
                let next_id = sa.next_id;
                let t = s.u8();
                let (mut exchange, mut first, mut inner) = if op & 0x80 != 0 {
                    let ex = [
                        wire::IKE_AUTH,
                        wire::CREATE_CHILD_SA,
                        wire::INFORMATIONAL,
                        s.u8(),
                    ][usize::from(t % 4)];
                    (ex, s.u8(), s.bytes().to_vec())
                } else {
                    let (ex, payloads) = peer.template(t);
                    let mut inner = Vec::new();
                    let first = wire::emit_payloads(&payloads, &mut inner);
                    (ex, first, inner)
                };
                if op & 0x40 != 0 {
                    s.mutate(&mut inner);
                }
                let (flags, msg_id) = if op % 11 == 3 {
                    (
                        FLAG_INITIATOR,
                        if op & 0x20 != 0 { s.u32() } else { next_id },
                    )
                } else {
                    let Some((id, ex)) = peer.their_request else {
                        continue;
                    };
                    exchange = ex;
                    if op & 0x20 != 0 {
                        first = payload_type::NOTIFY;
                        inner.clear();
                        wire::emit_payloads(&[notify(s.u16(), 0, vec![])], &mut inner);
                    }
                    (FLAG_INITIATOR | FLAG_RESPONSE, id)
                };
                let Some(b) = peer.seal(exchange, flags, msg_id, first, &inner) else {
                    continue;
                };
                if flags & FLAG_RESPONSE == 0
                    && msg_id == next_id
                    && let Some((sa, ..)) = &mut peer.sa
                {
                    sa.next_id += 1;
                }
                Feed::Datagram(from, b)
            }
            5 => {
                // One of our datagrams again, changed or not.
                if peer.sent.is_empty() {
                    continue;
                }
                let mut b = peer.sent[usize::from(s.u8()) % peer.sent.len()].clone();
                if op & 0x40 != 0 {
                    s.mutate(&mut b);
                }
                Feed::Datagram(from, b)
            }
            6 => {
                // An answer to the core's initiation: raw, or its own
                // message changed.
                let mut b = match &other_last {
                    Some(d) if op & 0x80 == 0 => d.clone(),
                    _ => s.bytes().to_vec(),
                };
                s.mutate(&mut b);
                Feed::Datagram(SocketAddr::new(ip(OTHER), 500), b)
            }
            7 => {
                if let Some(t) = ike.next_timeout() {
                    now = now.max(t.min(now + Duration::from_secs(3600)));
                }
                Feed::Other(Input::Timer)
            }
            8 => {
                now += Duration::from_millis(u64::from(s.u16()) * 64);
                Feed::Other(Input::Timer)
            }
            9 => Feed::Other(Input::Command(match s.u8() % 4 {
                0 => Command::ClearChildSas(ip(SCRIPT)),
                1 => Command::ClearIkeSas(Some(ip(SCRIPT))),
                2 => Command::ClearIkeSas(None),
                _ => Command::ClearChildSas(ip(OTHER)),
            })),
            _ => {
                if op & 0x80 != 0 {
                    let actions = ike.rekey_now(now, ip(SCRIPT), op & 0x40 != 0);
                    apply(&mut peer, &mut other_last, actions);
                    check_footprint(&ike);
                    continue;
                }
                Feed::Other(Input::UnknownSpi {
                    peer: ip(SCRIPT),
                    spi: s.u32(),
                })
            }
        };
        if crate::trace() {
            eprintln!("step {steps}: op {}", op % 11);
        }
        let actions = match feed {
            Feed::Datagram(remote, data) => {
                if remote.ip() == ip(SCRIPT) && peer.sent.len() < 64 {
                    peer.sent.push(data.clone());
                }
                ike.handle(
                    now,
                    Input::Datagram {
                        local: core500,
                        remote,
                        data: &data,
                    },
                )
            }
            Feed::Other(input) => ike.handle(now, input),
        };
        apply(&mut peer, &mut other_last, actions);
        check_footprint(&ike);
    }
    ike
}

fn apply(peer: &mut Peer, other_last: &mut Option<Vec<u8>>, actions: Vec<Action>) {
    for a in actions {
        if crate::trace() {
            match &a {
                Action::Send { remote, data, .. } => {
                    eprintln!("  send {} bytes to {remote}", data.len())
                }
                a => eprintln!("  {a:?}"),
            }
        }
        if let Action::Send { remote, data, .. } = a {
            if remote.ip() == ip(SCRIPT) {
                peer.receive(&data);
            } else {
                Message::parse(&data).expect("the core sent a message that does not parse");
                *other_last = Some(data);
            }
        }
    }
}
