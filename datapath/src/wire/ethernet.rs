//! Ethernet II frame view (optionally one 802.1Q tag, see [`Frame::payload_offset`]).

use super::{Error, Result, get_u16, put_u16};

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
    /// With one 802.1Q tag: TCI at 14..16, inner ethertype at 16..18.
    pub const VLAN_INNER_ETHERTYPE: usize = 16;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Length of the 802.1Q tag that may follow the MAC addresses.
pub const VLAN_TAG_LEN: usize = 4;

/// A 6-byte MAC address.
pub type MacAddr = [u8; 6];

/// EtherType values used here.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap a buffer without checking its length (accessors may panic).
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wrap a buffer and check that the header (and a VLAN tag, if the
    /// ethertype announces one) fits.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Check that every accessor is in bounds.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.ethertype() == ethertype::VLAN && len < HEADER_LEN + VLAN_TAG_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Give back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> MacAddr {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> MacAddr {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// The outer EtherType field (0x8100 for a tagged frame).
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// EtherType of the payload, looking through one 802.1Q tag.
    pub fn payload_ethertype(&self) -> u16 {
        match self.ethertype() {
            ethertype::VLAN => get_u16(self.buffer.as_ref(), field::VLAN_INNER_ETHERTYPE),
            t => t,
        }
    }

    /// Offset of the payload (14, or 18 behind one 802.1Q tag).
    pub fn payload_offset(&self) -> usize {
        match self.ethertype() {
            ethertype::VLAN => HEADER_LEN + VLAN_TAG_LEN,
            _ => HEADER_LEN,
        }
    }

    /// The payload after the header (and VLAN tag).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_offset()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination MAC address.
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }

    /// Set the source MAC address.
    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    /// Set the EtherType field.
    pub fn set_ethertype(&mut self, t: u16) {
        put_u16(self.buffer.as_mut(), field::ETHERTYPE.start, t);
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let off = self.payload_offset();
        &mut self.buffer.as_mut()[off..]
    }
}

/// High-level representation of an untagged Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source MAC.
    pub src_addr: MacAddr,
    /// Destination MAC.
    pub dst_addr: MacAddr,
    /// EtherType of the payload.
    pub ethertype: u16,
}

impl Repr {
    /// Parse a checked frame (the payload ethertype, looking through a tag).
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr> {
        frame.check_len()?;
        Ok(Repr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.payload_ethertype(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write an untagged header into the first [`HEADER_LEN`] bytes of `frame`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // First bytes of OpenDataPlane's pkt_mcgrew_gcm_test_2_esp frame.
    const FRAME: &str = "f1f1f1f1f1f1 f2f2f2f2f2f2 0800 45000074";

    #[test]
    fn deconstruct() {
        let b = hex(FRAME);
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!(f.dst_addr(), [0xf1; 6]);
        assert_eq!(f.src_addr(), [0xf2; 6]);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.payload_offset(), 14);
        assert_eq!(f.payload(), &[0x45, 0x00, 0x00, 0x74]);
    }

    #[test]
    fn vlan_tag() {
        let b = hex("f1f1f1f1f1f1 f2f2f2f2f2f2 8100 0064 86dd 60");
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!(f.payload_ethertype(), ethertype::IPV6);
        assert_eq!(f.payload_offset(), 18);
        assert_eq!(f.payload(), &[0x60]);
        assert_eq!(Frame::new_checked(&b[..16]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn construct() {
        let mut b = vec![0u8; 14];
        let repr = Repr {
            src_addr: [0xf2; 6],
            dst_addr: [0xf1; 6],
            ethertype: ethertype::IPV4,
        };
        assert_eq!(repr.buffer_len(), 14);
        repr.emit(&mut Frame::new_unchecked(&mut b[..]));
        assert_eq!(b, hex(FRAME)[..14]);
        assert_eq!(
            Repr::parse(&Frame::new_checked(&b[..]).unwrap()).unwrap(),
            repr
        );
    }

    #[test]
    fn check_len() {
        for n in 0..14 {
            assert_eq!(
                Frame::new_checked(&hex(FRAME)[..n]).unwrap_err(),
                Error::Truncated
            );
        }
    }
}
