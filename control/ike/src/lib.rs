//! IKEv2 (RFC 7296) protocol core for xdpsec: no I/O, no clocks, no threads.
//!
//! The owner of control state holds one [`Ike`] for every IKE tunnel of the
//! node. The daemon's thin shell owns the UDP sockets (500 and the NAT-T
//! port) and the timer: it feeds received datagrams, timer expiries and
//! commands to [`Ike::handle`] with the current time, and carries out the
//! [`Action`]s that come back (send a datagram, install or remove ESP SAs,
//! log a line). [`Ike::next_timeout`] says when to call again. Tests run two
//! cores against each other in memory with a mock clock (boringtun's shape).
//!
//! This file is the contract between the core and the daemon: the types
//! and signatures here are what the daemon uses.
//!
//! What the shell must do (`examples/ike_peer.rs` is a minimal one):
//! - Feed every datagram of the IKE sockets (500 and `nat_t_port`) as
//!   [`Input::Datagram`] with the local address and port it arrived on (a
//!   wildcard address is replaced by the tunnel's `local`). On the NAT-T
//!   port, datagrams starting with four zero bytes are IKE: strip them;
//!   others are ESP. [`Action::Send`] from a port other than 500 needs the
//!   four zero bytes prepended (RFC 3948 2.2).
//! - Call `handle(now, Input::Timer)` when [`Ike::next_timeout`] passes;
//!   initiators start at the first `handle`, whatever `now` is.
//! - On stop, feed [`Command::Shutdown`] and send the DELETEs it returns
//!   before the sockets close.
//! - Carry out the actions in order. `AddInbound` comes before the
//!   `SetOutbound` that makes the peer use it; after a rekey the old
//!   inbound SA stays until its `RemoveInbound` (a grace of
//!   [`timers::INBOUND_GRACE`] after the peer moved). `RemoveInbound` may
//!   name an SPI the datapath no longer has (after a fault injection).
//! - `Action::Log { ios: true }` lines are `%IKEV2-5-SA_UP: SA UP (Tunnel2
//!   peer ADDR)` and `%IKEV2-5-SA_DOWN: SA DOWN (...)`; every other line is
//!   `Tunnel2: peer ADDR: <plain English>`.
//! - [`Input::UnknownSpi`] only when the tunnel has `invalid_spi_recovery`
//!   (the core checks it too), sampled; the core rate-limits the notify.
//! - DPD counts IKE messages only: the core does not see ESP.
//! - Log lines an unauthenticated sender can cause at will (unknown peer,
//!   malformed message, failed integrity check, a refused, simultaneous or
//!   timed-out IKE_SA_INIT, failed authentication) come at most once a
//!   [`timers::LOG_INTERVAL`] per sender address and kind; the next one
//!   says `(N more such line(s) suppressed since the last one; ...)`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use zeroize::Zeroizing;

pub mod cert;
mod core;
pub mod crypto;
pub mod frag;
pub mod proposal;
pub mod random;
pub mod timers;
pub mod wire;

/// IKE's own port (RFC 7296 2.).
pub const IKE_PORT: u16 = 500;
/// The NAT-T port (RFC 3948, RFC 7296 2.23), unless configured otherwise.
pub const NAT_T_PORT: u16 = 4500;

/// An identity (RFC 7296 3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// ID_IPV4_ADDR / ID_IPV6_ADDR.
    Addr(IpAddr),
    /// ID_FQDN.
    Fqdn(String),
    /// ID_RFC822_ADDR.
    Email(String),
    /// ID_KEY_ID (opaque bytes).
    KeyId(Vec<u8>),
    /// ID_DER_ASN1_DN: a distinguished name, DER ([`cert::dn_from_text`]
    /// makes one from `C=CH, O=Org, CN=moon`); compared by attributes.
    Dn(Vec<u8>),
}

impl Identity {
    /// The identity a `local_id`/`remote_id` string of a configuration
    /// names (the daemon's `kind = "ike"` tunnels and the load tester read
    /// it alike): an address, a DN (has `=`: `C=CH, O=Org, CN=moon`), an
    /// e-mail address (has `@`), else an FQDN (a leading `@` dropped). A
    /// text with `=` that is no DN is an FQDN here; configurations refuse
    /// it first ([`cert::dn_from_text`]'s error).
    pub fn from_config(v: &str) -> Identity {
        match v.parse::<IpAddr>() {
            Ok(a) => Identity::Addr(a),
            Err(_) if v.contains('=') => match cert::dn_from_text(v) {
                Ok(d) => Identity::Dn(d),
                Err(_) => Identity::Fqdn(v.to_string()),
            },
            Err(_) if v.contains('@') && !v.starts_with('@') => Identity::Email(v.to_string()),
            Err(_) => Identity::Fqdn(v.trim_start_matches('@').to_string()),
        }
    }
}

/// An IKE SA proposal, parsed from strongSwan notation such as
/// `aes256gcm16-prfsha256-x25519` or `aes256-sha256-ecp256` ([`IkeProposal::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeProposal {
    /// Encryption (with its key size).
    pub encr: Encr,
    /// Integrity; `None` for AEAD ciphers.
    pub integ: Option<Integ>,
    /// Pseudo-random function.
    pub prf: Prf,
    /// Diffie-Hellman group.
    pub dh: DhGroup,
}

/// One IKE proposal as it goes on the wire: any one transform of each
/// list may be chosen (RFC 7296 3.3), each list in order of preference.
/// strongSwan notation with several words of a kind
/// (`aes256-sha512-sha384-prfsha512-prfsha384-ecp256-modp2048-ecp521`,
/// IOS XE 17's default proposal, [`IkeOffer::ios_default`]) parses to one.
/// [`IkeOffer::expand`] gives the [`IkeProposal`]s it allows, most
/// preferred first; [`IkeOffer::group`] folds such a list back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeOffer {
    /// Encryption transforms (all AEAD or all not).
    pub encr: Vec<Encr>,
    /// Integrity transforms; empty with AEAD ciphers.
    pub integ: Vec<Integ>,
    /// Pseudo-random functions.
    pub prf: Vec<Prf>,
    /// Diffie-Hellman groups; the first is the one the initiator's KE
    /// payload uses.
    pub dh: Vec<DhGroup>,
}

/// An ESP (child SA) proposal in strongSwan notation: `aes256gcm16`,
/// `aes256-sha256`, `aes128-sha1`, optionally with a DH group for PFS
/// (`aes256gcm16-x25519`) ([`EspProposal::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspProposal {
    /// Encryption (with its key size).
    pub encr: Encr,
    /// Integrity; `None` for AEAD ciphers.
    pub integ: Option<Integ>,
    /// DH group for PFS in CREATE_CHILD_SA, if any.
    pub dh: Option<DhGroup>,
}

/// Encryption transforms (IANA "Transform Type 1").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encr {
    /// ENCR_AES_CBC (12) with a 128-bit key.
    AesCbc128,
    /// ENCR_AES_CBC (12) with a 256-bit key.
    AesCbc256,
    /// ENCR_AES_GCM_16 (20) with a 128-bit key.
    AesGcm16_128,
    /// ENCR_AES_GCM_16 (20) with a 256-bit key.
    AesGcm16_256,
    /// ENCR_CHACHA20_POLY1305 (28); ESP only.
    ChaCha20Poly1305,
}

/// Integrity transforms (IANA "Transform Type 3").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integ {
    /// AUTH_HMAC_SHA1_96 (2).
    HmacSha1_96,
    /// AUTH_HMAC_SHA2_256_128 (12).
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192 (13).
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256 (14).
    HmacSha512_256,
}

/// Pseudo-random functions (IANA "Transform Type 2").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256 (5).
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (6).
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (7).
    HmacSha512,
}

/// Diffie-Hellman groups (IANA "Transform Type 4").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// 14: 2048-bit MODP (RFC 3526).
    Modp2048,
    /// 19: 256-bit random ECP (P-256).
    Ecp256,
    /// 20: 384-bit random ECP (P-384).
    Ecp384,
    /// 21: 521-bit random ECP (P-521).
    Ecp521,
    /// 31: Curve25519.
    Curve25519,
}

/// Why a proposal string was refused: the word that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalError(pub String);

impl IkeProposal {
    /// Parse strongSwan notation with one algorithm of each kind
    /// (`aes256gcm16-prfsha256-x25519`, `aes256-sha256-ecp256`: an
    /// integrity algorithm without `prf` also gives the PRF of the same
    /// hash).
    pub fn parse(s: &str) -> Result<IkeProposal, ProposalError> {
        match IkeOffer::parse(s)?.expand().as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(ProposalError(format!(
                "several algorithms of a kind in proposal `{s}` where one is needed"
            ))),
        }
    }
}

impl IkeOffer {
    /// Parse strongSwan notation, several algorithms of a kind allowed
    /// (without `prf` words, the PRFs of the integrity algorithms' hashes).
    pub fn parse(s: &str) -> Result<IkeOffer, ProposalError> {
        proposal::parse_ike(s)
    }
}

impl EspProposal {
    /// IOS XE's default transform set `default`: `esp-aes esp-sha-hmac`
    /// (AES-128-CBC with HMAC-SHA1-96), no PFS.
    pub const IOS_DEFAULT: &str = "aes128-sha1";

    /// Parse strongSwan notation (`aes256gcm16`, `aes256-sha256`,
    /// `aes128-sha1`, `aes256gcm16-x25519`).
    pub fn parse(s: &str) -> Result<EspProposal, ProposalError> {
        proposal::parse_esp(s)
    }
}

/// An address prefix used as a traffic selector (RFC 7296 3.13.1; ports
/// and protocol: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

/// One IKE tunnel's configuration (its Debug output hides the PSK).
#[derive(Clone)]
pub struct PeerConfig {
    /// The tunnel's name (`Tunnel2`): names it in logs, shows and actions.
    pub tunnel: String,
    /// The datapath's tunnel index (passed back in child SA actions).
    pub tunnel_index: u32,
    /// Local underlay address.
    pub local: IpAddr,
    /// The peer's address.
    pub remote: IpAddr,
    /// Pre-shared key (zeroized on drop); unused with `cert`.
    pub psk: Zeroizing<Vec<u8>>,
    /// Certificate authentication (`auth = "cert"`): our certificate and
    /// key and the CAs for the peer's; `None`: the PSK.
    pub cert: Option<std::sync::Arc<cert::Credentials>>,
    /// Our identity (default: `Identity::Addr(local)`).
    pub local_id: Identity,
    /// The identity the peer must present (default: `Identity::Addr(remote)`).
    pub remote_id: Identity,
    /// IKE proposals, in order of preference.
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP proposals, in order of preference.
    pub esp_proposals: Vec<EspProposal>,
    /// IKE SA lifetime; rekeyed before it ends.
    pub ike_lifetime: Duration,
    /// Child SA lifetime; rekeyed before it ends.
    pub child_lifetime: Duration,
    /// Dead peer detection interval; `None` = off.
    pub dpd: Option<Duration>,
    /// The interval between resends of an unanswered liveness check (IOS's
    /// `crypto ikev2 dpd INTERVAL RETRY on-demand`): resent every `RETRY`,
    /// as many times as [`timers::RETRANSMIT`] resends, the peer dead one
    /// more `RETRY` after the last; `None`: [`timers::RETRANSMIT`]'s
    /// schedule. Other requests always use [`timers::RETRANSMIT`].
    pub dpd_retry: Option<Duration>,
    /// Start the exchange ourselves (else wait for the peer).
    pub initiate: bool,
    /// Always encapsulate in UDP on the NAT-T port (as if a NAT were there).
    pub force_encap: bool,
    /// The NAT-T port, ours and the peer's (default 4500).
    pub nat_t_port: u16,
    /// Local traffic selectors (the tunnel's `local_subnets`).
    pub local_ts: Vec<Prefix>,
    /// Remote traffic selectors (the tunnel's `remote_subnets`).
    pub remote_ts: Vec<Prefix>,
    /// Replay window for the child SAs' inbound side.
    pub replay_window: u32,
    /// React to ESP with an unknown SPI from a peer with a live IKE SA by
    /// sending INVALID_SPI in that IKE SA (rate-limited), as IOS's
    /// `crypto isakmp invalid-spi-recovery`.
    pub invalid_spi_recovery: bool,
    /// IKE fragmentation (RFC 7383): announce IKEV2_FRAGMENTATION_SUPPORTED
    /// in IKE_SA_INIT; when the peer does too, encrypted messages too long
    /// for `fragment_size` go as Encrypted Fragment payloads.
    pub fragmentation: bool,
    /// The largest IP datagram an IKE message (or fragment) may fill,
    /// headers included ([`frag::DEFAULT_FRAGMENT_SIZE`]; strongSwan's
    /// `charon.fragment_size`).
    pub fragment_size: usize,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never appear in logs or debug output.
        f.debug_struct("PeerConfig")
            .field("tunnel", &self.tunnel)
            .field("tunnel_index", &self.tunnel_index)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("psk", &format_args!("<{} bytes redacted>", self.psk.len()))
            .field("cert", &self.cert)
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("ike_proposals", &self.ike_proposals)
            .field("esp_proposals", &self.esp_proposals)
            .field("ike_lifetime", &self.ike_lifetime)
            .field("child_lifetime", &self.child_lifetime)
            .field("dpd", &self.dpd)
            .field("dpd_retry", &self.dpd_retry)
            .field("initiate", &self.initiate)
            .field("force_encap", &self.force_encap)
            .field("nat_t_port", &self.nat_t_port)
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("replay_window", &self.replay_window)
            .field("invalid_spi_recovery", &self.invalid_spi_recovery)
            .field("fragmentation", &self.fragmentation)
            .field("fragment_size", &self.fragment_size)
            .finish()
    }
}

/// A responder template ([`Ike::set_template`]): its tunnel answers any
/// peer of `range` that no other tunnel has, and each peer that
/// authenticates becomes an instance, a tunnel of its own named
/// `TEMPLATE/ADDR` with datapath index `first_index + slot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateConfig {
    /// The peers' addresses.
    pub range: Prefix,
    /// At most this many instances at once (slots `0..max_peers`); a new
    /// peer beyond them is refused with NO_ADDITIONAL_SAS.
    pub max_peers: usize,
    /// The datapath index of slot 0.
    pub first_index: u32,
    /// Any identity that authenticates (no `remote_id` configured).
    pub any_remote_id: bool,
}

/// An instance of a template came or went ([`Ike::take_instance_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceChange {
    /// A peer of the range authenticated: its tunnel exists from now on
    /// (before the actions that install its child SAs).
    Up {
        /// The template's tunnel index.
        template: u32,
        /// The instance's tunnel index.
        tunnel: u32,
        /// Its name, `TEMPLATE/ADDR`.
        name: String,
        /// Its peer's address.
        peer: IpAddr,
        /// Its remote traffic selectors (the peer's, narrowed to the template's).
        remote_ts: Vec<Prefix>,
    },
    /// Its last IKE SA went (after the actions that removed its child SAs).
    Down {
        /// The template's tunnel index.
        template: u32,
        /// The instance's tunnel index.
        tunnel: u32,
    },
}

/// What the daemon tells the core.
#[derive(Debug)]
pub enum Input<'a> {
    /// An IKE message received on `local` from `remote` (on the NAT-T port
    /// the shell has already removed the 4-byte non-ESP marker).
    Datagram {
        /// Our address and port it arrived on.
        local: SocketAddr,
        /// The sender.
        remote: SocketAddr,
        /// The IKE message.
        data: &'a [u8],
    },
    /// `next_timeout()` has passed.
    Timer,
    /// An operator command.
    Command(Command),
    /// ESP arrived from `peer` with an SPI no SA has (for invalid-SPI
    /// recovery; the shell samples these, never one per packet).
    UnknownSpi {
        /// The sender's address.
        peer: IpAddr,
        /// The SPI it used.
        spi: u32,
    },
}

/// Operator commands the core acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `clear crypto sa peer ADDR`: delete that peer's child SAs (telling
    /// the peer) and negotiate new ones at once.
    ClearChildSas(IpAddr),
    /// `clear crypto ikev2 sa [remote ADDR]` / `clear crypto session
    /// [remote ADDR]`: delete the IKE SA (and its children), then initiate
    /// again where configured.
    ClearIkeSas(Option<IpAddr>),
    /// The daemon stops: delete every IKE SA (a DELETE to each peer that
    /// may hold it established) and its children; from now on nothing is
    /// initiated and no datagram is answered.
    Shutdown,
}

/// One direction's ESP keys and parameters of a child SA.
#[derive(Clone)]
pub struct ChildKeys {
    /// The SPI (the receiver's).
    pub spi: u32,
    /// Encryption.
    pub encr: Encr,
    /// Integrity (CBC only).
    pub integ: Option<Integ>,
    /// Encryption key (|| 4-byte salt for GCM and ChaCha20-Poly1305, RFC
    /// 4106 / RFC 7634), then the integrity key: as KEYMAT is taken
    /// (RFC 7296 2.17). Zeroized on drop.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never appear in logs or debug output.
        write!(
            f,
            "ChildKeys {{ spi: {:#010x}, encr: {:?}, integ: {:?}, key: <{} bytes redacted> }}",
            self.spi,
            self.encr,
            self.integ,
            self.key.len()
        )
    }
}

/// How the child SA's ESP travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspEncap {
    /// Plain ESP (protocol 50).
    Esp,
    /// ESP in UDP between these ports (ours, the peer's).
    Udp(u16, u16),
}

/// What the core asks the daemon to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Send `data` from `local` to `remote` (on the NAT-T port the shell
    /// prepends the non-ESP marker).
    Send {
        /// Our address and port to send from.
        local: SocketAddr,
        /// Where to.
        remote: SocketAddr,
        /// The IKE message.
        data: Vec<u8>,
    },
    /// Install an inbound ESP SA (before the peer can use it: make before break).
    AddInbound {
        /// Tunnel index.
        tunnel: u32,
        /// The peer's address.
        peer: IpAddr,
        /// How its ESP arrives.
        encap: EspEncap,
        /// Our SPI and the keys to decrypt with.
        keys: ChildKeys,
        /// Replay window.
        replay_window: u32,
        /// Negotiated local traffic selectors (inner destinations allowed).
        local_ts: Vec<Prefix>,
        /// Negotiated remote traffic selectors (inner sources allowed).
        remote_ts: Vec<Prefix>,
        /// Lifetime the SA was negotiated with (for `show`).
        lifetime: Duration,
    },
    /// Send on this tunnel with a new outbound SA from now on (replaces the
    /// tunnel's outbound SA atomically).
    SetOutbound {
        /// Tunnel index.
        tunnel: u32,
        /// The peer's address.
        peer: IpAddr,
        /// How ESP goes out.
        encap: EspEncap,
        /// The peer's SPI and the keys to encrypt with.
        keys: ChildKeys,
        /// Lifetime the SA was negotiated with (for `show`).
        lifetime: Duration,
    },
    /// Delete the inbound SA with our SPI `spi` (after a rekey's grace, or
    /// on DELETE).
    RemoveInbound {
        /// Tunnel index.
        tunnel: u32,
        /// Our SPI.
        spi: u32,
    },
    /// The tunnel has no outbound SA any more (deleted, not replaced).
    RemoveOutbound {
        /// Tunnel index.
        tunnel: u32,
    },
    /// A line for the daemon's log (and `show logging` where it is an IOS line).
    Log {
        /// IOS-style lines (`%IKEV2-...`) go to `show logging`; others only
        /// to the daemon's log.
        ios: bool,
        /// The text (never a key).
        line: String,
    },
    /// What happened to a tunnel, typed: emitted once per occurrence next
    /// to the log line that tells it (the line stays for people; this is
    /// for programs that count, such as the load tester).
    Event {
        /// Tunnel index.
        tunnel: u32,
        /// The peer's address.
        peer: IpAddr,
        /// What happened.
        event: TunnelEvent,
    },
}

/// See [`Action::Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEvent {
    /// Setting up the IKE SA or its first child SA failed.
    Failure(Failure),
    /// An established IKE SA or a child SA went without us asking.
    Removed(Removal),
    /// The peer refused our CREATE_CHILD_SA (the line "CREATE_CHILD_SA
    /// refused by the peer"; the core retries later).
    RekeyRefused,
}

/// Why a negotiation failed (see [`TunnelEvent::Failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer to IKE_SA_INIT or IKE_AUTH through every retransmission.
    NoAnswer,
    /// Authentication failed: the peer refused ours, or we refused its.
    Authentication,
    /// The peer asks for a DH group we do not propose (INVALID_KE_PAYLOAD).
    DhGroup,
    /// The peer refused IKE_SA_INIT, IKE_AUTH or the first child SA with
    /// this error notify type (0: it named none).
    Refused {
        /// The notify message type (RFC 7296 3.10.1).
        notify: u16,
    },
}

impl Failure {
    /// Its name: `TIMEOUT`, `AUTHENTICATION_FAILED`, `INVALID_KE_PAYLOAD`,
    /// or the refusal's notify name (`OTHER_ERROR_NOTIFY` for a type
    /// without one here).
    pub fn name(self) -> &'static str {
        match self {
            Failure::NoAnswer => "TIMEOUT",
            Failure::Authentication => "AUTHENTICATION_FAILED",
            Failure::DhGroup => "INVALID_KE_PAYLOAD",
            Failure::Refused { notify } => match notify {
                7 => "INVALID_SYNTAX",
                wire::notify::NO_PROPOSAL_CHOSEN => "NO_PROPOSAL_CHOSEN",
                wire::notify::INVALID_KE_PAYLOAD => "INVALID_KE_PAYLOAD",
                wire::notify::AUTHENTICATION_FAILED => "AUTHENTICATION_FAILED",
                34 => "SINGLE_PAIR_REQUIRED",
                wire::notify::NO_ADDITIONAL_SAS => "NO_ADDITIONAL_SAS",
                36 => "INTERNAL_ADDRESS_FAILURE",
                37 => "FAILED_CP_REQUIRED",
                wire::notify::TS_UNACCEPTABLE => "TS_UNACCEPTABLE",
                wire::notify::TEMPORARY_FAILURE => "TEMPORARY_FAILURE",
                _ => "OTHER_ERROR_NOTIFY",
            },
        }
    }
}

/// How an SA went (see [`TunnelEvent::Removed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The peer deleted it with an authenticated DELETE: the IKE SA
    /// (`ike`, also the old one after the peer rekeyed it) or a child SA
    /// outside a rekey.
    DeletedByPeer {
        /// The IKE SA (else a child SA).
        ike: bool,
    },
    /// A request of ours on the established IKE SA went unanswered
    /// through every retransmission: the IKE SA and its children are gone.
    DeadPeer,
}

/// State of an IKE SA as `show crypto ikev2 sa` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeSaStatus {
    /// Negotiating (IKE_SA_INIT or IKE_AUTH in flight).
    InNeg,
    /// Established.
    Ready,
    /// Being deleted.
    Deleting,
}

/// How one side of an IKE SA authenticated, as `show crypto ikev2 sa
/// detailed` names it (`Auth sign: PSK`, `RSA`, `ECDSA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A pre-shared key (AUTH method 2).
    Psk,
    /// An RSA signature (method 1, or 14 with an RSA key).
    Rsa,
    /// An ECDSA signature (methods 9, 10, or 14 with an ECDSA key).
    Ecdsa,
}

impl AuthMethod {
    /// The name IOS prints.
    pub fn ios_name(self) -> &'static str {
        match self {
            AuthMethod::Psk => "PSK",
            AuthMethod::Rsa => "RSA",
            AuthMethod::Ecdsa => "ECDSA",
        }
    }
}

impl From<cert::KeyKind> for AuthMethod {
    fn from(k: cert::KeyKind) -> AuthMethod {
        match k {
            cert::KeyKind::Rsa => AuthMethod::Rsa,
            cert::KeyKind::EcdsaP256 | cert::KeyKind::EcdsaP384 => AuthMethod::Ecdsa,
        }
    }
}

/// One IKE SA as the show commands see it.
#[derive(Debug, Clone)]
pub struct IkeSaView {
    /// A small number naming the IKE SA (`Tunnel-id`), stable while it lives.
    pub id: u32,
    /// The tunnel's name.
    pub tunnel: String,
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// Status.
    pub status: IkeSaStatus,
    /// Whether we initiated it.
    pub initiator: bool,
    /// Negotiated encryption.
    pub encr: Encr,
    /// Negotiated integrity (None for AEAD).
    pub integ: Option<Integ>,
    /// Negotiated PRF.
    pub prf: Prf,
    /// Negotiated DH group.
    pub dh: DhGroup,
    /// Initiator's IKE SPI.
    pub spi_i: u64,
    /// Responder's IKE SPI.
    pub spi_r: u64,
    /// Configured lifetime.
    pub lifetime: Duration,
    /// Time since it was established.
    pub active: Duration,
    /// A NAT was detected (or encapsulation forced).
    pub nat: bool,
    /// Its child SAs: (our inbound SPI, the peer's SPI).
    pub children: Vec<(u32, u32)>,
    /// How we authenticated (signed our AUTH); before our AUTH is made,
    /// what our credentials would make.
    pub auth_sign: AuthMethod,
    /// How the peer authenticated (the AUTH we verified); before it is
    /// verified, what we expect: PSK with a pre-shared key, else the kind
    /// of our own key.
    pub auth_verify: AuthMethod,
    /// The tunnel's DPD interval ([`PeerConfig::dpd`]).
    pub dpd: Option<Duration>,
    /// The tunnel's DPD retry interval ([`PeerConfig::dpd_retry`]).
    pub dpd_retry: Option<Duration>,
}

/// Sizes of the core's own tables ([`Ike::footprint`]): what a peer's
/// messages can make grow, for the fuzz targets and leak checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    /// IKE SAs, half-open ones included.
    pub ike_sas: usize,
    /// Child SAs of all IKE SAs (superseded ones until removed).
    pub child_sas: usize,
    /// Work queued for the request windows.
    pub queued: usize,
    /// Inbound child SPIs allocated.
    pub spis: usize,
    /// Rate-limit entries of unauthenticated senders' log lines.
    pub log_limits: usize,
}

/// Counters of IKE fragmentation (RFC 7383) and retransmission since the
/// core started, all tunnels together ([`Ike::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IkeStats {
    /// Encrypted Fragment messages sent (retransmissions included).
    pub fragments_sent: u64,
    /// Encrypted Fragment messages received that passed their integrity
    /// check and were kept for reassembly.
    pub fragments_received: u64,
    /// Messages made whole from fragments (and then processed).
    pub messages_reassembled: u64,
    /// Encrypted Fragment messages dropped: failed integrity check,
    /// malformed, beyond the bounds, duplicate or superseded, or from a
    /// peer that did not negotiate fragmentation.
    pub fragments_dropped: u64,
    /// Requests of this core sent again for want of a response (RFC 7296
    /// 2.1; each resend of one message counts once, however many
    /// fragments it has).
    pub retransmissions: u64,
}

/// All IKE tunnels of a node.
pub struct Ike {
    core: core::Core,
}

impl Ike {
    /// A core for these tunnels; nothing is sent until the first `handle`
    /// (initiators start on their first `Timer`, which is due at once).
    /// The production core: the system's clock for the start and ring's
    /// `SystemRandom` ([`Ike::with_clock_and_rng`]).
    pub fn new(peers: Vec<PeerConfig>) -> Ike {
        Ike::with_clock_and_rng(
            peers,
            Instant::now(),
            Box::new(ring::rand::SystemRandom::new()),
        )
    }

    /// A core created at `now` of the caller's clock (initiators are due
    /// then), drawing every random byte (SPIs, nonces, IVs, DH private
    /// keys where the group's implementation allows, timer jitter) from
    /// `rng`: with a [`random::SeededRandom`] and a mock clock, two runs
    /// send the same bytes.
    pub fn with_clock_and_rng(
        peers: Vec<PeerConfig>,
        now: Instant,
        rng: Box<dyn random::Random>,
    ) -> Ike {
        Ike {
            core: core::Core::new(peers, now, rng),
        }
    }

    /// Reserve SPIs the core must not pick for its inbound child SAs
    /// (manual tunnels' SPIs); checked with every allocation.
    pub fn reserve_spis(&mut self, spis: impl IntoIterator<Item = u32>) {
        self.core.reserve_spis(spis)
    }

    /// Process one input at `now` and return what to do.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) -> Vec<Action> {
        self.core.handle(now, input)
    }

    /// Make the tunnel with `tunnel_index` a responder template (its
    /// `initiate` is ignored); false if no tunnel has that index.
    pub fn set_template(&mut self, tunnel_index: u32, template: TemplateConfig) -> bool {
        self.core.set_template(tunnel_index, template)
    }

    /// The instances that came and went during the calls since the last
    /// one, each with its position in the actions of the call that made
    /// it: an `Up` at position `k` comes before action `k` (its SAs'
    /// installs follow), a `Down` after the actions before `k` (its SAs'
    /// removals).
    pub fn take_instance_changes(&mut self) -> Vec<(usize, InstanceChange)> {
        self.core.take_instance_changes()
    }

    /// Delete every instance of template `tunnel_index` and its half-open
    /// IKE SAs now (a DELETE to each instance's peer), then give the
    /// template configuration `new` if any (its configuration changed):
    /// (the number of instances deleted, what to do).
    pub fn drop_template_instances(
        &mut self,
        now: Instant,
        tunnel_index: u32,
        new: Option<PeerConfig>,
    ) -> (usize, Vec<Action>) {
        let n = self.core.drop_template_instances(now, tunnel_index, new);
        (n, self.core.handle(now, Input::Timer))
    }

    /// Sizes of the core's tables.
    pub fn footprint(&self) -> Footprint {
        self.core.footprint()
    }

    /// Fragmentation and retransmission counters.
    pub fn stats(&self) -> IkeStats {
        self.core.stats()
    }

    /// When `handle(now, Input::Timer)` is next due, if ever.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.core.next_timeout()
    }

    /// The IKE SAs, for the show commands.
    pub fn sas(&self, now: Instant) -> Vec<IkeSaView> {
        self.core.sas(now)
    }

    /// Start a rekey of `peer`'s child SAs (`ike = false`) or IKE SA now,
    /// as if their soft lifetime had passed (tests, and a future `request`
    /// command).
    pub fn rekey_now(&mut self, now: Instant, peer: IpAddr, ike: bool) -> Vec<Action> {
        self.core.rekey_now(now, peer, ike)
    }
}
