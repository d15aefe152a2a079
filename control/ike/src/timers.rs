//! Timer and protocol constants, each with its source.

use std::time::Duration;

/// Retransmission intervals of a request: sent, then again after 1, 2, 4
/// and 8 s; after 16 s more without an answer the peer is given up (RFC
/// 7296 2.1 and 2.4 ask for exponential backoff; strongSwan's defaults are
/// 4 s x 1.8^n, five tries: ours is shorter for tests and DPD).
pub const RETRANSMIT: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// The DPD retry intervals a tunnel may configure (`dpd_retry_seconds`),
/// in seconds: IOS's `crypto ikev2 dpd INTERVAL RETRY on-demand` takes a
/// retry interval of 2 to 60 s.
pub const DPD_RETRY_SECONDS: std::ops::RangeInclusive<u64> = 2..=60;

/// Why a DPD retry interval is refused ([`dpd_retry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpdRetryRefused {
    /// DPD is off (`dpd_seconds` 0 or absent): nothing to retry.
    NoDpd,
    /// Outside [`DPD_RETRY_SECONDS`].
    OutOfRange,
}

/// The rule of a configured DPD retry interval, for every config that
/// takes one: only with DPD on (`dpd_seconds` > 0), within
/// [`DPD_RETRY_SECONDS`].
pub fn dpd_retry(dpd_seconds: u64, retry_seconds: i64) -> Result<Duration, DpdRetryRefused> {
    if dpd_seconds == 0 {
        return Err(DpdRetryRefused::NoDpd);
    }
    match u64::try_from(retry_seconds) {
        Ok(s) if DPD_RETRY_SECONDS.contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(DpdRetryRefused::OutOfRange),
    }
}

/// Nonce length: 32 bytes (RFC 7296 2.10: at least half the PRF's key size,
/// at least 16; 32 covers PRF-HMAC-SHA2-512's half).
pub const NONCE_LEN: usize = 32;

/// Soft lifetime of child and IKE SAs as a fraction (per mille) of the
/// configured lifetime: rekey at a random point between 85 % and 90 %, so
/// that both peers do not start at the same moment (strongSwan uses
/// rekey_time and rand_time the same way).
pub const REKEY_SOFT_MIN: u32 = 850;
/// See [`REKEY_SOFT_MIN`].
pub const REKEY_SOFT_MAX: u32 = 900;

/// When a rekey could not start or failed, try again after this long.
pub const REKEY_RETRY: Duration = Duration::from_secs(30);

/// After a rekey, the old inbound SA still decrypts for this long once the
/// peer has moved (packets already in flight on the old SPI).
pub const INBOUND_GRACE: Duration = Duration::from_secs(5);

/// A responder's IKE SA that never saw IKE_AUTH is dropped after this.
pub const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Initiators start again this long after their IKE SA went away (peer
/// dead, deleted by the peer), and after a first attempt that got no
/// answer.
pub const REINITIATE_DELAY: Duration = Duration::from_secs(5);

/// An initiator whose attempts go unanswered keeps trying for as long as
/// the tunnel is configured (as a router does): the delay before the next
/// attempt doubles from [`REINITIATE_DELAY`] after each unanswered one, up
/// to this. With [`RETRANSMIT`] inside each attempt, a peer that comes
/// back hears an IKE_SA_INIT within 16 + 20 s at worst.
pub const REINITIATE_MAX: Duration = Duration::from_secs(20);

/// After a failed negotiation (authentication, proposals), retry after this.
pub const FAILED_RETRY: Duration = Duration::from_secs(60);

/// At most one INVALID_SPI notify per IKE SA in this interval (IOS rate-
/// limits invalid-spi-recovery likewise; an unauthenticated trigger).
pub const INVALID_SPI_INTERVAL: Duration = Duration::from_secs(10);

/// With this many half-open IKE SAs (IKE_SA_INIT answered, no IKE_AUTH
/// yet), the responder answers IKE_SA_INIT with a COOKIE first (RFC 7296
/// 2.6; strongSwan's default threshold is 10 per peer, 30 in all).
pub const COOKIE_THRESHOLD: usize = 30;

/// Half-open IKE SAs (a responder's IKE_SA_INIT answered, no IKE_AUTH
/// yet) are unauthenticated state anyone can create with a spoofed source
/// address; these bound them. From [`HALF_OPEN_COOKIE_PER_PEER`] half-open
/// SAs of one peer address on, a new IKE_SA_INIT from it must carry a
/// COOKIE (RFC 7296 2.6: only a sender that receives at that address can
/// return it; an honest peer needs at most two at once, a retry while its
/// last attempt is still half-open here); strongSwan's `cookie_threshold_ip`
/// is 3.
pub const HALF_OPEN_COOKIE_PER_PEER: usize = 2;

/// Hard cap on half-open IKE SAs of one peer address: beyond it an
/// IKE_SA_INIT is dropped, cookie or not (strongSwan's `block_threshold`
/// is 5 likewise). Our own initiation never depends on them.
pub const HALF_OPEN_MAX_PER_PEER: usize = 5;

/// Hard cap on half-open IKE SAs in all (memory and DH work bound
/// whatever the number of tunnels): beyond it an IKE_SA_INIT is dropped.
pub const HALF_OPEN_MAX: usize = 256;

/// Child SAs an IKE SA holds at most (superseded ones until removed
/// included): beyond, the peer's CREATE_CHILD_SA is answered
/// NO_ADDITIONAL_SAS (RFC 7296 1.3). One live child, one in its rekey
/// grace and a collision's need three.
pub const MAX_CHILD_SAS: usize = 8;

/// Established IKE SAs with one peer at most: a peer that authenticates
/// again and again (without INITIAL_CONTACT) replaces its oldest one, as
/// strongSwan's `uniqueids`. One, its rekey and a collision need three.
pub const MAX_IKE_SAS_PER_PEER: usize = 4;

/// The old IKE SA of a rekey is dropped after this if the peer never
/// deleted it (its children moved to the new SA already).
pub const REKEYED_LINGER: Duration = Duration::from_secs(60);

/// Log lines an unauthenticated sender can cause at will (an unknown
/// peer, a malformed message, a failed integrity check, a refused or
/// half-open IKE_SA_INIT, a failed authentication): at most one this
/// often per sender address and kind; the next line says how many were
/// suppressed.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Senders whose log rate limits are kept at once (memory bound against
/// spoofed sources); beyond it, newcomers share one limit per kind.
pub const LOG_LIMIT_SENDERS: usize = 1024;

/// Network-supplied text (identities) in log lines is cut to this many
/// characters (after escaping).
pub const LOG_TEXT_MAX: usize = 128;
