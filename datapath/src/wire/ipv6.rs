//! IPv6 header view and an extension-header walker.

use core::net::Ipv6Addr;

use super::{Error, Result, get_u16, get_u32, ip_proto, put_u16, put_u32};

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// Most extension headers the walker follows before giving up: the same
/// limit as the XDP program's `MAX_IPV6_EXT_HDRS`, so both agree on which
/// frames carry ESP.
pub const MAX_EXT_HEADERS: usize = 6;

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking (accessors may panic).
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer and run [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Check that the fixed header and the payload length fit.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if HEADER_LEN + self.payload_len() as usize > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Give back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (6 for IPv6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        ((get_u16(self.buffer.as_ref(), 0) >> 4) & 0xff) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Next header after the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        Ipv6Addr::from(a)
    }

    /// The payload (extension headers included), `payload_len` bytes.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version 6, traffic class and flow label.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        put_u32(self.buffer.as_mut(), field::VER_TC_FLOW.start, v);
    }

    /// Set the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::LENGTH.start, v);
    }

    /// Set the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }
}

/// High-level representation of a fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
}

impl Repr {
    /// Parse and validate (version 6).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len() as usize,
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the fixed header (flow label 0).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_tc_flow(self.traffic_class, 0);
        p.set_payload_len(self.payload_len as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
    }
}

/// Where the upper-layer header starts after the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Protocol of the upper layer (e.g. 50 ESP, 17 UDP).
    pub protocol: u8,
    /// Offset of the upper-layer header within the IPv6 payload.
    pub offset: usize,
    /// A Fragment header with a non-zero offset or the M flag was seen.
    pub fragment: bool,
}

/// Walk Hop-by-Hop, Routing, Destination Options, Fragment and
/// Authentication headers in `payload` (the IPv6 payload, starting with
/// `first` as next header), as the XDP program (`ebpf/xdp`) does.
///
/// Stops at the first other protocol, or at a real fragment (atomic fragments,
/// offset 0 without M, RFC 6946, are walked through). AH is walked through,
/// not verified: its length field counts 4-octet units minus 2 (RFC 4302
/// section 2.2), unlike the other headers' 8-octet units minus 1.
pub fn walk_extension_headers(first: u8, payload: &[u8]) -> Result<UpperLayer> {
    let mut nh = first;
    let mut off = 0usize;
    for _ in 0..MAX_EXT_HEADERS {
        match nh {
            ip_proto::HOPOPT | ip_proto::ROUTING | ip_proto::DSTOPTS => {
                let hdr = payload.get(off..off + 2).ok_or(Error::Truncated)?;
                let len = (usize::from(hdr[1]) + 1) * 8;
                if off + len > payload.len() {
                    return Err(Error::Truncated);
                }
                nh = hdr[0];
                off += len;
            }
            ip_proto::AH => {
                let hdr = payload.get(off..off + 2).ok_or(Error::Truncated)?;
                let len = (usize::from(hdr[1]) + 2) * 4;
                if off + len > payload.len() {
                    return Err(Error::Truncated);
                }
                nh = hdr[0];
                off += len;
            }
            ip_proto::FRAGMENT => {
                let hdr = payload.get(off..off + 8).ok_or(Error::Truncated)?;
                let off_m = get_u16(hdr, 2);
                if off_m & 0xfff9 != 0 {
                    return Ok(UpperLayer {
                        protocol: hdr[0],
                        offset: off + 8,
                        fragment: true,
                    });
                }
                nh = hdr[0];
                off += 8;
            }
            _ => break,
        }
    }
    match nh {
        // Still an extension header after the limit (XDP passes these too).
        ip_proto::HOPOPT | ip_proto::ROUTING | ip_proto::DSTOPTS | ip_proto::AH => {
            Err(Error::Malformed)
        }
        ip_proto::FRAGMENT => Err(Error::Malformed),
        _ => Ok(UpperLayer {
            protocol: nh,
            offset: off,
            fragment: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // Start of OpenDataPlane's pkt_ipv6_icmp_0_esp_udp_null_sha256_1:
    // IPv6, Hop-by-Hop (PadN), UDP 4500 -> 4500, ESP SPI 0x7b seq 1.
    const PKT: &str = "6000000000980040 20010db8000000000211 43fffe4ad70a \
                       20010db8000000000000000000000016 \
                       1100010001000100 1194119400900000 0000007b00000001";

    fn bytes() -> Vec<u8> {
        let mut b = hex(PKT);
        b.resize(40 + 0x98, 0x5a);
        b
    }

    #[test]
    fn deconstruct() {
        let b = bytes();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0);
        assert_eq!(p.flow_label(), 0);
        assert_eq!(p.payload_len(), 0x98);
        assert_eq!(p.next_header(), ip_proto::HOPOPT);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(
            p.src_addr(),
            "2001:db8::211:43ff:fe4a:d70a".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(p.dst_addr(), "2001:db8::16".parse::<Ipv6Addr>().unwrap());
        let ul = walk_extension_headers(p.next_header(), p.payload()).unwrap();
        assert_eq!(
            ul,
            UpperLayer {
                protocol: ip_proto::UDP,
                offset: 8,
                fragment: false
            }
        );
    }

    #[test]
    fn construct() {
        let b = bytes();
        let repr = Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap();
        let mut out = vec![0u8; 40];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, b[..40]);
    }

    #[test]
    fn fragment_header() {
        // Fragment header with offset 1 (8 bytes), next header ESP.
        let p = hex("3200000800000001");
        let ul = walk_extension_headers(ip_proto::FRAGMENT, &p).unwrap();
        assert!(ul.fragment);
        // Atomic fragment: offset 0, M clear -> walked through.
        let p = hex("3200000000000001");
        let ul = walk_extension_headers(ip_proto::FRAGMENT, &p).unwrap();
        assert_eq!(
            ul,
            UpperLayer {
                protocol: ip_proto::ESP,
                offset: 8,
                fragment: false
            }
        );
    }

    // scapy 2.8.0: IPv6(src="2001:db8::1", dst="2001:db8::2") /
    // AH(nh=50, payloadlen=4, spi=0x100, seq=1, icv=b"\xaa" * 12) /
    // ESP(spi=0x215ebff1, seq=7, data=bytes(32)): a 24-byte AH, then ESP.
    const AH_ESP: &str = "600000000040334020010db8000000000000000000000001\
                          20010db8000000000000000000000002\
                          3204000000000100000000 01aaaaaaaaaaaaaaaaaaaaaaaa\
                          215ebff100000007";

    #[test]
    fn esp_after_ah() {
        let mut b = hex(AH_ESP);
        b.resize(40 + 0x40, 0);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.next_header(), ip_proto::AH);
        let ul = walk_extension_headers(p.next_header(), p.payload()).unwrap();
        assert_eq!(
            ul,
            UpperLayer {
                protocol: ip_proto::ESP,
                offset: 24,
                fragment: false
            }
        );
        assert_eq!(&p.payload()[ul.offset..ul.offset + 4], &hex("215ebff1")[..]);
        // AH behind a destination options header, and a cut-off AH.
        let mut chain = hex("3300000000000000");
        chain.extend_from_slice(p.payload());
        let ul = walk_extension_headers(ip_proto::DSTOPTS, &chain).unwrap();
        assert_eq!((ul.protocol, ul.offset), (ip_proto::ESP, 32));
        assert_eq!(
            walk_extension_headers(ip_proto::AH, &p.payload()[..20]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn check_len() {
        let b = bytes();
        for n in [0, 1, 39] {
            assert_eq!(Packet::new_checked(&b[..n]).unwrap_err(), Error::Truncated);
        }
        assert_eq!(
            Packet::new_checked(&b[..b.len() - 1]).unwrap_err(),
            Error::Truncated
        );
        // Extension header longer than the payload.
        assert_eq!(
            walk_extension_headers(ip_proto::HOPOPT, &hex("11ff")).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            walk_extension_headers(ip_proto::HOPOPT, &hex("11")).unwrap_err(),
            Error::Truncated
        );
        // A chain longer than MAX_EXT_HEADERS.
        let chain: Vec<u8> = (0..9).flat_map(|_| hex("0000000000000000")).collect();
        assert_eq!(
            walk_extension_headers(ip_proto::HOPOPT, &chain).unwrap_err(),
            Error::Malformed
        );
        // Exactly MAX_EXT_HEADERS (6, as in XDP) before ESP is fine, 7 is not.
        let mut six: Vec<u8> = (0..5).flat_map(|_| hex("3c00000000000000")).collect();
        six.extend(hex("3200000000000000 215ebff100000001"));
        let ul = walk_extension_headers(ip_proto::DSTOPTS, &six).unwrap();
        assert_eq!((ul.protocol, ul.offset), (ip_proto::ESP, 48));
        let mut seven = hex("3c00000000000000");
        seven.extend(&six);
        assert_eq!(
            walk_extension_headers(ip_proto::DSTOPTS, &seven).unwrap_err(),
            Error::Malformed
        );
    }
}
