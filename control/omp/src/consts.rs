//! Timer and protocol constants, each with its source.

use std::time::Duration;

/// Control-connection hello (keepalive) interval: 1 s, Cisco SD-WAN's
/// default `security control hello-interval 1000` (ms).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Control-connection hold time: 12 s without any message and the
/// connection is declared down; Cisco SD-WAN's default `security control
/// hello-tolerance 12` (s).
pub const KEEPALIVE_HOLD: Duration = Duration::from_secs(12);

/// OMP hold time (Cisco SD-WAN `omp timers holdtime`, default 60 s). The
/// control connection's hold time above already detects a dead peer here
/// (OMP runs inside it), so this is documentation of the Cisco value only.
pub const OMP_HOLDTIME: Duration = Duration::from_secs(60);

/// OMP graceful-restart time: routes of a peer whose connection dropped are
/// kept this long (Cisco SD-WAN `omp timers graceful-restart-timer`,
/// default 43200 s = 12 h).
pub const GRACEFUL_RESTART: Duration = Duration::from_secs(43_200);

/// IPsec rekey interval of SD-WAN TLOC keys (Cisco SD-WAN `security ipsec
/// rekey`, default 86400 s).
pub const REKEY_INTERVAL: Duration = Duration::from_secs(86_400);

/// After a rekey the old inbound SA still decrypts this long. Ours (Cisco
/// does not document its value): the new route must reach every peer
/// through the controller (one keepalive-scale round trip, well under a
/// second in a healthy fabric) and packets already in flight on the old SPI
/// must drain; 60 s covers that with a wide margin and also a controller
/// connection that flaps once (backoff 1 + 2 + 4 + 8 s, handshake) during
/// the rekey, while keeping the old key alive only briefly.
pub const REKEY_GRACE: Duration = Duration::from_secs(60);

/// First reconnect delay after a control connection failed; doubled after
/// each failure up to [`RECONNECT_MAX`] (ours: exponential backoff as the
/// issue asks; Cisco retries about once a second per controller).
pub const RECONNECT_INITIAL: Duration = Duration::from_secs(1);
/// See [`RECONNECT_INITIAL`].
pub const RECONNECT_MAX: Duration = Duration::from_secs(64);

/// A TCP connect or handshake (TLS, Hello, AuthOk) that takes longer than
/// this is abandoned (ours).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Base port of a TLOC's IPsec/UDP (Cisco SD-WAN: 12346 + port offset).
pub const TLOC_BASE_PORT: u16 = 12_346;

/// Port hopping moves a TLOC to the next of five ports 20 apart: 12346,
/// 12366, 12386, 12406, 12426, then 12346 again (Cisco SD-WAN
/// `request platform software sdwan port_hop`), plus the port offset.
pub const PORT_HOP_STEP: u16 = 20;
/// See [`PORT_HOP_STEP`].
pub const PORT_HOP_COUNT: u16 = 5;

/// Largest frame body accepted on a control connection (ours: a TLOC route
/// is under 100 bytes; anything this large is an error).
pub const MAX_FRAME: usize = 16 * 1024;

/// Inbound SPIs are random and at least this (RFC 4303 2.1: 1..255 are
/// reserved by IANA).
pub const MIN_SPI: u32 = 256;

/// AES-256-GCM key material of a TLOC: 32-byte key || 4-byte salt (RFC 4106).
pub const KEY_LEN: usize = 36;

/// Protocol version in Hello; a peer with another version is refused.
pub const PROTOCOL_VERSION: u8 = 2;

/// HKDF-SHA256 info prefix of the SD-WAN pairwise keys (see
/// [`crate::pairwise_key`]).
pub const PAIRWISE_INFO: &[u8] = b"xdpsec-omp pairwise-key v1";

/// TLOCs (colors) one edge may have: Cisco's WAN edges take up to 8 TLOCs.
/// More are refused by the controller (logged).
pub const MAX_TLOCS_PER_EDGE: usize = 8;

/// Service prefixes one edge may advertise (ours: far above a branch's
/// inside networks, small enough that one edge cannot fill the
/// controller's memory). More are refused (logged).
pub const MAX_PREFIXES_PER_EDGE: usize = 4096;
