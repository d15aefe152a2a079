//! OMP-style SD-WAN control protocol core for xdpsec: no I/O, no clocks, no
//! threads.
//!
//! Edges keep one TLS 1.3 control connection per local TLOC (color) to a
//! controller, both ends authenticated by certificates from an enterprise
//! root CA (`xdpsec pki`), and advertise their TLOCs (public address, port,
//! inbound SPI, AES-256-GCM key) and service prefixes; the controller
//! reflects them to the other edges, which install SA pairs and routes.
//! [`edge::Edge`] and [`controller::Controller`] are cores in the style of
//! `xdpsec-ike`: `handle(now, input) -> Vec<Action>` and `next_timeout()`;
//! a thin shell owns the sockets, the timer and the TLS state
//! ([`tls::Link`]).
//!
//! A control connection, edge to controller (see [`wire`] for the bytes):
//!
//! 1. TLS 1.3 handshake, each side's chain checked against the CA (expired
//!    or not yet valid: CERTEXPRD; anything else: CRTVERFL);
//! 2. each core checks the peer certificate's organization (CTORGNMMIS) and
//!    role; the controller checks the serial against its allowed list
//!    (SERNTPRES);
//! 3. edge: `Hello` (role edge, system-ip, site-id, color, version); the
//!    controller checks the system-ip is the one bound to the serial
//!    (DUPSYSIPDEL when it is another serial's, SYSIPCHNG otherwise);
//! 4. controller: `Hello` and `AuthOk` and every other edge's routes; the
//!    edge sends all its TLOCs and service routes on each connection;
//! 5. both send `Keepalive` every interval; routes flow as
//!    advertise/withdraw; `Goodbye` before an orderly close.
//!
//! A refusal is a `Refuse` message with Cisco's code (inside TLS) or a TLS
//! alert, a `%SDWAN-3-...` log line on each side and a row in each side's
//! connection history ([`history`]).
//!
//! SA pairs use pairwise keys ([`pairwise_key`]): the key a sender encrypts
//! with towards a TLOC is derived from that TLOC's advertised key and both
//! TLOC identities, so every sender has its own GCM nonce space.

#![warn(missing_docs)]

pub mod consts;
pub mod controller;
pub mod edge;
mod edge_types;
pub mod history;
pub mod loglimit;
pub mod tls;
pub mod wire;
pub mod zbuf;

use std::net::{IpAddr, Ipv4Addr};

use ring::hkdf;
use zeroize::Zeroizing;

use consts::{KEY_LEN, PAIRWISE_INFO};

/// AES-256-GCM key material: 32-byte key || 4-byte salt (RFC 4106).
/// Zeroized on drop; never printed. The bytes live in their own heap
/// block, written there and nowhere else: moving the value (into a
/// `Vec`, out with `mem::replace`, inside an enum) moves a pointer, so no
/// stale copy of a key is left in a dead stack frame (where a later move
/// of an enum's unused bytes could carry it into the heap).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial(Box<Zeroizing<[u8; KEY_LEN]>>);

impl KeyMaterial {
    fn zeroed() -> Self {
        KeyMaterial(Box::new(Zeroizing::new([0u8; KEY_LEN])))
    }

    /// Wraps exactly [`KEY_LEN`] bytes (the caller checked the length).
    pub(crate) fn from_slice(b: &[u8]) -> Self {
        let mut k = KeyMaterial::zeroed();
        k.0.copy_from_slice(b);
        k
    }

    /// Fresh random key material.
    pub fn random(rng: &dyn ring::rand::SecureRandom) -> Self {
        let mut k = KeyMaterial::zeroed();
        // SystemRandom only fails where the OS has no randomness at all; a
        // core that cannot make keys must not run.
        rng.fill(&mut k.0[..]).expect("system random source failed");
        k
    }

    /// The key || salt bytes, for the datapath's SA.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never appear in logs or debug output.
        write!(f, "<{KEY_LEN} bytes redacted>")
    }
}

/// An IP prefix (service route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length (0..=32 or 0..=128).
    pub len: u8,
}

impl Prefix {
    /// A prefix, or `None` if the length does not fit the family.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Prefix { addr, len })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A TLOC's identity: (system-ip, color).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TlocId {
    /// The edge's system-ip.
    pub system_ip: Ipv4Addr,
    /// The TLOC's color.
    pub color: String,
}

impl std::fmt::Display for TlocId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.system_ip, self.color)
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The SD-WAN pairwise key for traffic from `sender` to `receiver`, as
/// Cisco's `pairwise-keys` option does: every sender to a TLOC gets its own
/// key, so two senders never share a GCM nonce space (their sequence
/// numbers, the IVs, start at 1 each) under one key.
///
/// HKDF-SHA256 (RFC 5869) with no salt (a zero-filled salt of hash
/// length), IKM = the receiving TLOC's advertised key material (key ||
/// salt, 36 bytes), info = `"xdpsec-omp pairwise-key v1"` || sender
/// system-ip (4 bytes) || sender color length (1 byte) || sender color ||
/// receiver system-ip (4) || receiver color length (1) || receiver color ||
/// receiver's SPI (4 bytes, big-endian); output 36 bytes = AES-256 key ||
/// 4-byte salt. Both ends compute it: the sender for its outbound SA, the
/// receiver for its inbound SA from that sender.
pub fn pairwise_key(
    receiver_key: &KeyMaterial,
    sender: &TlocId,
    receiver: &TlocId,
    receiver_spi: u32,
) -> KeyMaterial {
    let mut info = Vec::with_capacity(PAIRWISE_INFO.len() + 80);
    info.extend_from_slice(PAIRWISE_INFO);
    for t in [sender, receiver] {
        info.extend_from_slice(&t.system_ip.octets());
        let c = &t.color.as_bytes()[..t.color.len().min(255)];
        info.push(c.len() as u8);
        info.extend_from_slice(c);
    }
    info.extend_from_slice(&receiver_spi.to_be_bytes());
    let mut out = KeyMaterial::zeroed();
    derive(receiver_key, &info, &mut out);
    // ring's SHA-256 contexts held the TLOC key (HMAC's message block) and
    // the output in stack frames that are dead now: overwrite them.
    wipe_stack();
    out
}

#[inline(never)]
fn derive(receiver_key: &KeyMaterial, info: &[u8], out: &mut KeyMaterial) {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(receiver_key.bytes());
    // 36 bytes is far below HKDF-SHA256's 255 * 32 limit: cannot fail.
    prk.expand(&[info], Len(KEY_LEN))
        .and_then(|okm| okm.fill(&mut out.0[..]))
        .expect("HKDF output length within limits");
}

/// Zero the stack below the caller's frame, where the frames of the
/// functions it called (ring's HMAC and SHA-256) were.
#[inline(never)]
fn wipe_stack() {
    let mut scratch = [0u8; 8192];
    zeroize::Zeroize::zeroize(&mut scratch[..]);
    std::hint::black_box(&scratch);
}

/// One direction's SA parameters (AES-256-GCM, UDP-encapsulated ESP).
#[derive(Clone, PartialEq, Eq)]
pub struct SaParams {
    /// The SPI (the receiving TLOC's).
    pub spi: u32,
    /// Pairwise key || salt.
    pub key: KeyMaterial,
}

impl std::fmt::Debug for SaParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SaParams {{ spi: {:#010x}, key: {:?} }}",
            self.spi, self.key
        )
    }
}

/// The SA pair of one SD-WAN tunnel peer: a local TLOC and a remote TLOC.
/// Install replaces any earlier state of the same (`local_color`,
/// `remote`): the shell adds inbound SPIs not yet installed (first),
/// switches the outbound SA, then removes inbound SPIs no longer listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdwanSa {
    /// Local TLOC color (the tunnel interface).
    pub local_color: String,
    /// Local TLOC address.
    pub local_ip: IpAddr,
    /// Local TLOC port (after port hops).
    pub local_port: u16,
    /// The remote TLOC.
    pub remote: TlocId,
    /// Remote edge's site-id.
    pub remote_site_id: u32,
    /// Remote TLOC address.
    pub remote_ip: IpAddr,
    /// Remote TLOC port.
    pub remote_port: u16,
    /// Inbound SAs from this peer (found by SPI, peer address and port),
    /// newest first; after a local rekey the old one stays listed for the
    /// grace time.
    pub inbound: Vec<SaParams>,
    /// Outbound SA to this peer: the remote TLOC's SPI, pairwise key.
    pub outbound: SaParams,
}

/// Software version sent in Hello.
pub const SOFTWARE_VERSION: &str = concat!("xdpsec ", env!("CARGO_PKG_VERSION"));

/// A peer-sent string made safe for a log line or a show: control and
/// non-ASCII characters escaped, at most 64 characters kept.
pub fn escape(s: &str) -> String {
    let mut o = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i == 64 {
            o.push_str("...");
            break;
        }
        if ch.is_ascii_graphic() || ch == ' ' {
            o.push(ch);
        } else {
            o.extend(ch.escape_default());
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn peer_strings_are_escaped_and_bounded() {
        assert_eq!(escape("biz-internet"), "biz-internet");
        assert_eq!(escape("a\nb\u{1b}[2J\r"), "a\\nb\\u{1b}[2J\\r");
        assert_eq!(escape("é"), "\\u{e9}");
        let long = "x".repeat(100);
        assert_eq!(escape(&long), format!("{}...", "x".repeat(64)));
    }
}
