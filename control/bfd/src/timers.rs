//! Timer and protocol constants, each with its source.

use std::time::Duration;

/// BFD protocol version (RFC 5880 4.1: "This document defines protocol
/// version 1"; 6.8.6: other versions are discarded).
pub const VERSION: u8 = 1;

/// Length of a BFD control packet without an authentication section (RFC
/// 5880 4.1: 24 bytes; 6.8.6: shorter is discarded).
pub const PACKET_LEN: usize = 24;

/// Minimum length when the A bit is set (RFC 5880 6.8.6: 26). We refuse
/// authenticated packets anyway; the constant names the check's bound.
pub const PACKET_LEN_AUTH_MIN: usize = 26;

/// UDP destination port of single-hop BFD control packets (RFC 5881 4).
pub const UDP_PORT: u16 = 3784;

/// Lowest UDP source port a single-hop BFD control packet may use (RFC
/// 5881 4: "MUST be in the range 49152 through 65535").
pub const UDP_SOURCE_PORT_MIN: u16 = 49152;

/// IP TTL / hop limit of single-hop BFD (RFC 5881 5: sent with 255;
/// received packets with another value are discarded, by the shell).
pub const TTL: u8 = 255;

/// While a session is not Up, the advertised Desired Min TX Interval is at
/// least one second (RFC 5880 6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// Default hello (Desired Min TX and Required Min RX) of an SD-WAN tunnel's
/// BFD session (Cisco SD-WAN `bfd color ... hello-interval`, 1000 ms).
pub const DEFAULT_HELLO: Duration = Duration::from_millis(1000);

/// Default detect multiplier of an SD-WAN tunnel's BFD session (Cisco
/// SD-WAN `bfd color ... multiplier`, 7).
pub const DEFAULT_MULTIPLIER: u8 = 7;

/// Lowest hello the core accepts; lower configured values are raised to
/// it. Our choice: it bounds the shell's timer work per session (Cisco
/// SD-WAN's lowest `hello-interval` is 100 ms; tests run at 20 ms).
pub const MIN_HELLO: Duration = Duration::from_millis(10);

/// Periodic transmissions are jittered: each interval is between 75 % and
/// 100 % of the negotiated one (RFC 5880 6.8.7), in per mille.
pub const JITTER_MIN_PERMILLE: u64 = 750;
/// See [`JITTER_MIN_PERMILLE`].
pub const JITTER_MAX_PERMILLE: u64 = 1000;
/// With a detect multiplier of 1 the interval is at most 90 % of the
/// negotiated one (RFC 5880 6.8.7).
pub const JITTER_MAX_PERMILLE_MULT1: u64 = 900;

/// Initial bfd.RemoteMinRxInterval: 1 microsecond (RFC 5880 6.8.1), so the
/// first packets go out at our own rate.
pub const INITIAL_REMOTE_MIN_RX: Duration = Duration::from_micros(1);

/// Largest interval the wire carries (32-bit microseconds, RFC 5880 4.1);
/// configured intervals are clamped to it.
pub const MAX_INTERVAL: Duration = Duration::from_micros(u32::MAX as u64);
