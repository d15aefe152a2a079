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
