//! Zero-copy packet views in the smoltcp style.
//!
//! Each protocol has a `Packet<T: AsRef<[u8]>>` (or `Frame`) view over the
//! caller's bytes. `new_checked` runs `check_len`; once it passed, no
//! accessor of that view can panic. Network input must always go through
//! `new_checked`. Field byte ranges live in a private `mod field`.

pub mod esp;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

/// Why a wire view or representation could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than a length field or fixed header says.
    Truncated,
    /// A field has a value the protocol does not allow (bad version, a length
    /// smaller than the header, a wrong checksum, bad padding).
    Malformed,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated packet"),
            Error::Malformed => f.write_str("malformed packet"),
        }
    }
}

impl std::error::Error for Error {}

/// Result of wire parsing.
pub type Result<T> = core::result::Result<T, Error>;

/// IP protocol / IPv6 next-header numbers used here (IANA registry).
pub mod ip_proto {
    /// IPv6 Hop-by-Hop Options.
    pub const HOPOPT: u8 = 0;
    /// IPv4 encapsulation (tunnel-mode ESP inner IPv4).
    pub const IPV4: u8 = 4;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 encapsulation (tunnel-mode ESP inner IPv6).
    pub const IPV6: u8 = 41;
    /// IPv6 Routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating Security Payload.
    pub const ESP: u8 = 50;
    /// Authentication Header.
    pub const AH: u8 = 51;
    /// No next header (ESP dummy packets, RFC 4303 2.6).
    pub const NONE: u8 = 59;
    /// IPv6 Destination Options.
    pub const DSTOPTS: u8 = 60;
}

/// ECN codepoints and the RFC 6040 tunnel rules (the low two bits of the
/// IPv4 TOS byte / IPv6 traffic class).
pub mod ecn {
    /// Not ECN-capable transport.
    pub const NOT_ECT: u8 = 0b00;
    /// ECN-capable transport, ECT(1).
    pub const ECT1: u8 = 0b01;
    /// ECN-capable transport, ECT(0).
    pub const ECT0: u8 = 0b10;
    /// Congestion experienced.
    pub const CE: u8 = 0b11;
    /// Mask of the ECN bits in a TOS / traffic class byte.
    pub const MASK: u8 = 0b11;

    /// Outer ECN on encapsulation, RFC 6040 section 4.1 normal mode: a copy
    /// of the inner field (CE included).
    pub const fn encap(inner: u8) -> u8 {
        inner & MASK
    }

    /// Inner ECN to forward on decapsulation, RFC 6040 section 4.2 Figure 4;
    /// `None` where the table says drop (outer CE on a Not-ECT inner packet:
    /// its transport would not understand the mark).
    pub const fn decap(outer: u8, inner: u8) -> Option<u8> {
        let (outer, inner) = (outer & MASK, inner & MASK);
        match (inner, outer) {
            (NOT_ECT, CE) => None,
            // Not-ECT stays Not-ECT whatever ECT the outer carries.
            (NOT_ECT, _) => Some(NOT_ECT),
            (_, CE) => Some(CE),
            (ECT0, ECT1) => Some(ECT1),
            _ => Some(inner),
        }
    }
}

/// An IPv4/UDP packet (20-byte header, DF, both checksums) carrying
/// `payload`: for control-plane senders (BFD hellos, the traffic
/// generator), never the per-packet path (it allocates).
#[allow(clippy::too_many_arguments)]
pub fn build_udp_v4(
    src: core::net::Ipv4Addr,
    dst: core::net::Ipv4Addr,
    tos: u8,
    ttl: u8,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ulen = (8 + payload.len()) as u16;
    let mut p = Vec::with_capacity(20 + usize::from(ulen));
    p.extend_from_slice(&[0x45, tos]);
    p.extend_from_slice(&(20 + ulen).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, ttl, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum::compute(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&ulen.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // UDP checksum over the pseudo-header; 0 is sent as 0xffff.
    let u = !checksum::combine(
        checksum::pseudo_header_v4(&src, &dst, ulen, 17),
        checksum::sum(&p[20..]),
    );
    p[26..28].copy_from_slice(&(if u == 0 { 0xffff } else { u }).to_be_bytes());
    p
}

/// Internet checksum (RFC 1071) helpers.
pub mod checksum {
    /// One's-complement sum of `data` folded to 16 bits (not inverted).
    pub fn sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            acc += u32::from(*last) << 8;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    /// The checksum to store in a header: the inverted folded sum.
    pub fn compute(data: &[u8]) -> u16 {
        !sum(data)
    }

    /// One's-complement addition of two folded sums.
    pub fn combine(a: u16, b: u16) -> u16 {
        let s = u32::from(a) + u32::from(b);
        ((s & 0xffff) + (s >> 16)) as u16
    }

    /// Folded sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source,
    /// destination, upper-layer length (32 bits) and next header.
    pub fn pseudo_header_v6(
        src: &core::net::Ipv6Addr,
        dst: &core::net::Ipv6Addr,
        upper_len: u32,
        next_header: u8,
    ) -> u16 {
        let mut acc = combine(sum(&src.octets()), sum(&dst.octets()));
        acc = combine(acc, (upper_len >> 16) as u16);
        acc = combine(acc, upper_len as u16);
        combine(acc, u16::from(next_header))
    }

    /// Folded sum of the IPv4 pseudo-header (RFC 768): source, destination,
    /// zero, protocol and upper-layer length.
    pub fn pseudo_header_v4(
        src: &core::net::Ipv4Addr,
        dst: &core::net::Ipv4Addr,
        upper_len: u16,
        protocol: u8,
    ) -> u16 {
        let acc = combine(sum(&src.octets()), sum(&dst.octets()));
        combine(combine(acc, upper_len), u16::from(protocol))
    }

    /// Incremental update (RFC 1624 eqn. 3) of header checksum `check` when
    /// one 16-bit word of the header changes from `old` to `new`.
    pub fn update(check: u16, old: u16, new: u16) -> u16 {
        !combine(combine(!check, !old), new)
    }
}

#[inline]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Decode a hex string (whitespace ignored) for tests.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecn_decap_table_rfc6040_figure_4() {
        use ecn::*;
        // Rows: arriving inner; columns: arriving outer Not-ECT, ECT(0),
        // ECT(1), CE. None = drop.
        let table = [
            (NOT_ECT, [Some(NOT_ECT), Some(NOT_ECT), Some(NOT_ECT), None]),
            (ECT0, [Some(ECT0), Some(ECT0), Some(ECT1), Some(CE)]),
            (ECT1, [Some(ECT1), Some(ECT1), Some(ECT1), Some(CE)]),
            (CE, [Some(CE), Some(CE), Some(CE), Some(CE)]),
        ];
        for (inner, row) in table {
            for (outer, want) in [NOT_ECT, ECT0, ECT1, CE].into_iter().zip(row) {
                assert_eq!(decap(outer, inner), want, "inner {inner} outer {outer}");
                // DSCP bits around the field are ignored.
                assert_eq!(decap(outer | 0xb8, inner | 0x48), want);
            }
        }
        // Normal mode: copy, CE included.
        for e in [NOT_ECT, ECT0, ECT1, CE] {
            assert_eq!(encap(0xb8 | e), e);
        }
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut h = hex("4500003b1234000040111414c6336401c6336402");
        assert_eq!(checksum::sum(&h), 0xffff);
        for tos in [0x01u8, 0x03, 0xb9, 0xff, 0x00] {
            let old = u16::from_be_bytes([h[0], h[1]]);
            let check = u16::from_be_bytes([h[10], h[11]]);
            h[1] = tos;
            let new = u16::from_be_bytes([h[0], h[1]]);
            let c = checksum::update(check, old, new);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            assert_eq!(checksum::sum(&h), 0xffff, "tos {tos:#x}");
        }
    }
}
