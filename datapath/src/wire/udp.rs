//! UDP header view (RFC 768), used for ESP-in-UDP (RFC 3948).

use core::net::{Ipv4Addr, Ipv6Addr};

use super::{Error, Result, checksum, get_u16, ip_proto, put_u16};

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// IKE / NAT-T port that carries ESP in UDP (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;

/// A read/write view of a UDP datagram.
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

    /// Check the header fits and the length field is sane.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = self.len() as usize;
        if field_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if field_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Give back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length field (header + payload).
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// True when the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }

    /// Checksum field (0 = not computed, as RFC 3948 senders do).
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len() as usize]
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// True when the checksum over the IPv6 pseudo-header and the datagram
    /// (up to the length field) is correct. A zero checksum is invalid over
    /// IPv6 (RFC 8200 section 8.1).
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let d = &self.buffer.as_ref()[..self.len() as usize];
        let ph = checksum::pseudo_header_v6(src, dst, d.len() as u32, ip_proto::UDP);
        checksum::combine(ph, checksum::sum(d)) == 0xffff
    }

    /// True when the checksum over the IPv4 pseudo-header and the datagram
    /// is correct or absent (0: not computed, allowed over IPv4).
    pub fn verify_checksum_v4(&self, src: &Ipv4Addr, dst: &Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let d = &self.buffer.as_ref()[..self.len() as usize];
        let ph = checksum::pseudo_header_v4(src, dst, d.len() as u16, ip_proto::UDP);
        checksum::combine(ph, checksum::sum(d)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Compute and store the checksum over the IPv6 pseudo-header, the UDP
    /// header and the payload (everything up to the length field, which must
    /// be set and fit the buffer). A computed 0 is sent as 0xFFFF (RFC 768).
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let d = &self.buffer.as_ref()[..self.len() as usize];
        let ph = checksum::pseudo_header_v6(src, dst, d.len() as u32, ip_proto::UDP);
        let c = !checksum::combine(ph, checksum::sum(d));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Set the source port.
    pub fn set_src_port(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::SRC_PORT.start, v);
    }

    /// Set the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::DST_PORT.start, v);
    }

    /// Set the length field.
    pub fn set_len(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::LENGTH.start, v);
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM.start, v);
    }
}

/// High-level representation of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length.
    pub payload_len: usize,
}

impl Repr {
    /// Parse a checked datagram.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() as usize - HEADER_LEN,
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header with checksum 0: RFC 3948 2.1 lets ESP-in-UDP
    /// senders over IPv4 leave it out, since ESP carries its own integrity
    /// check. Over IPv6 call [`Packet::fill_checksum_v6`] once the payload
    /// is in place (RFC 8200 section 8.1: zero is not allowed there).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len((HEADER_LEN + self.payload_len) as u16);
        p.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // UDP header from OpenDataPlane's pkt_ipv6_icmp_0_esp_udp_null_sha256_1.
    const HDR: &str = "1194119400900000";

    fn bytes() -> Vec<u8> {
        let mut b = hex(HDR);
        b.resize(0x90, 0);
        b
    }

    #[test]
    fn deconstruct() {
        let b = bytes();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_port(), NAT_T_PORT);
        assert_eq!(p.dst_port(), NAT_T_PORT);
        assert_eq!(p.len(), 0x90);
        assert_eq!(p.checksum(), 0);
        assert_eq!(p.payload().len(), 0x90 - 8);
        assert!(!p.is_empty());
    }

    #[test]
    fn construct() {
        let repr = Repr {
            src_port: 4500,
            dst_port: 4500,
            payload_len: 0x88,
        };
        let mut b = vec![0xffu8; 8];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, hex(HDR));
        assert_eq!(
            Repr::parse(&Packet::new_checked(&bytes()[..]).unwrap()).unwrap(),
            repr
        );
    }

    // scapy 2.8.0: IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=64) /
    // UDP(sport=4500, dport=4500) / Raw(bytes(range(1, 32))): checksum 0x8012.
    const UDP6: &str = "600000000027114020010db800000000000000000000000120010db8\
                        00000000000000000000000211941194002780120102030405060708\
                        090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    // scapy 2.8.0: IP(src="198.51.100.1", dst="198.51.100.2", ttl=64,
    // id=0x1234) / UDP(sport=4500, dport=12346) / Raw(bytes(range(1, 32))).
    const UDP4: &str = "4500003b1234000040111414c6336401c63364021194303a00276876\
                        0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn checksum_v6_matches_scapy() {
        let b = hex(UDP6);
        let (src, dst) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let want = Packet::new_checked(&b[40..]).unwrap();
        assert_eq!(want.checksum(), 0x8012);
        assert!(want.verify_checksum_v6(&src, &dst));
        let mut mine = b[40..].to_vec();
        Repr {
            src_port: 4500,
            dst_port: 4500,
            payload_len: 31,
        }
        .emit(&mut Packet::new_unchecked(&mut mine[..]));
        assert_eq!(Packet::new_unchecked(&mine[..]).checksum(), 0);
        // Zero is not a valid UDP/IPv6 checksum.
        assert!(!Packet::new_unchecked(&mine[..]).verify_checksum_v6(&src, &dst));
        Packet::new_unchecked(&mut mine[..]).fill_checksum_v6(&src, &dst);
        assert_eq!(mine, b[40..]);
        mine[20] ^= 1;
        assert!(!Packet::new_unchecked(&mine[..]).verify_checksum_v6(&src, &dst));
    }

    #[test]
    fn checksum_v4_matches_scapy() {
        let b = hex(UDP4);
        let (src, dst) = (
            "198.51.100.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
        );
        let p = Packet::new_checked(&b[20..]).unwrap();
        assert_eq!(p.checksum(), 0x6876);
        assert!(p.verify_checksum_v4(&src, &dst));
        let mut z = b[20..].to_vec();
        z[6..8].copy_from_slice(&[0, 0]);
        // Absent is allowed over IPv4 (RFC 3948 senders).
        assert!(Packet::new_unchecked(&z[..]).verify_checksum_v4(&src, &dst));
        z[6] = 1;
        assert!(!Packet::new_unchecked(&z[..]).verify_checksum_v4(&src, &dst));
    }

    #[test]
    fn check_len() {
        let b = bytes();
        for n in 0..8 {
            assert_eq!(Packet::new_checked(&b[..n]).unwrap_err(), Error::Truncated);
        }
        assert_eq!(
            Packet::new_checked(&b[..0x8f]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = b.clone();
        bad[5] = 7;
        bad[4] = 0;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
    }
}
