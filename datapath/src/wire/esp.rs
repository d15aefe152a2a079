//! ESP header (RFC 4303 2: SPI, sequence number) and trailer
//! (padding, pad length, next header) views.

use super::{Error, Result, get_u32, put_u32};

mod field {
    use core::ops::Range;
    pub const SPI: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const PAYLOAD: usize = 8;
}

/// Length of the ESP header (SPI + sequence number).
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Length of the fixed trailer fields (pad length + next header).
pub const TRAILER_LEN: usize = 2;

/// A read/write view of an ESP packet (from the SPI to the end).
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

    /// Check that SPI and sequence number fit.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Give back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Security Parameters Index.
    pub fn spi(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SPI.start)
    }

    /// Sequence number (low 32 bits when ESN is in use).
    pub fn sequence_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ.start)
    }

    /// Everything after the header: IV, ciphertext, ICV.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the SPI.
    pub fn set_spi(&mut self, v: u32) {
        put_u32(self.buffer.as_mut(), field::SPI.start, v);
    }

    /// Set the (low 32 bits of the) sequence number.
    pub fn set_sequence_number(&mut self, v: u32) {
        put_u32(self.buffer.as_mut(), field::SEQ.start, v);
    }

    /// Everything after the header, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// High-level representation of the ESP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Security Parameters Index.
    pub spi: u32,
    /// Sequence number as on the wire (low 32 bits).
    pub sequence_number: u32,
}

impl Repr {
    /// Parse the header. SPI 0 is reserved (RFC 4303 2.1) and rejected.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.spi() == 0 {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            spi: p.spi(),
            sequence_number: p.sequence_number(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write SPI and sequence number.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_spi(self.spi);
        p.set_sequence_number(self.sequence_number);
    }
}

/// The decrypted ESP trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Number of padding bytes before the pad-length byte.
    pub pad_len: u8,
    /// Protocol of the protected payload (4 = IPv4, 41 = IPv6 in tunnel mode).
    pub next_header: u8,
}

impl Trailer {
    /// Parse the trailer at the end of `plaintext` (payload || padding ||
    /// pad length || next header) and check the default padding bytes
    /// 1, 2, 3, ... (RFC 4303 2.4). Returns the trailer and the payload length.
    pub fn parse(plaintext: &[u8]) -> Result<(Trailer, usize)> {
        let n = plaintext.len();
        if n < TRAILER_LEN {
            return Err(Error::Truncated);
        }
        let pad_len = plaintext[n - 2];
        let next_header = plaintext[n - 1];
        let pad = usize::from(pad_len);
        if pad + TRAILER_LEN > n {
            return Err(Error::Malformed);
        }
        let payload_len = n - TRAILER_LEN - pad;
        let padding = &plaintext[payload_len..n - TRAILER_LEN];
        if padding.iter().zip(1u8..).any(|(&b, want)| b != want) {
            return Err(Error::Malformed);
        }
        Ok((
            Trailer {
                pad_len,
                next_header,
            },
            payload_len,
        ))
    }

    /// Padding needed after `payload_len` bytes so that payload, padding and
    /// the two trailer bytes end on a 4-byte boundary (RFC 4303 2.4; AEAD
    /// ciphers here are stream-like, so 4 is the only alignment).
    pub const fn pad_len_for(payload_len: usize) -> usize {
        (4 - (payload_len + TRAILER_LEN) % 4) % 4
    }

    /// Bytes [`Trailer::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        self.pad_len as usize + TRAILER_LEN
    }

    /// Write padding 1, 2, ... then pad length and next header into
    /// `buf[..self.buffer_len()]`.
    pub fn emit(&self, buf: &mut [u8]) {
        let pad = usize::from(self.pad_len);
        for (i, b) in buf[..pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        buf[pad] = self.pad_len;
        buf[pad + 1] = self.next_header;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // ESP header + IV of OpenDataPlane's pkt_mcgrew_gcm_test_2_esp.
    const HDR: &str = "0000a5f80000000afacedbaddecaf888";

    #[test]
    fn deconstruct() {
        let b = hex(HDR);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.spi(), 0xa5f8);
        assert_eq!(p.sequence_number(), 0xa);
        assert_eq!(p.payload(), &hex("facedbaddecaf888")[..]);
    }

    #[test]
    fn construct() {
        let repr = Repr {
            spi: 0xa5f8,
            sequence_number: 10,
        };
        let mut b = vec![0u8; 8];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, hex(HDR)[..8]);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap(),
            repr
        );
    }

    #[test]
    fn check_len_and_spi_zero() {
        let b = hex(HDR);
        for n in 0..8 {
            assert_eq!(Packet::new_checked(&b[..n]).unwrap_err(), Error::Truncated);
        }
        let z = hex("0000000000000001");
        assert_eq!(
            Repr::parse(&Packet::new_checked(&z[..]).unwrap()).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn trailer() {
        // Plaintext tail of draft-mcgrew-gcm-test-01 test case 14/ODP case 15:
        // ... 71 72 73 74 | 01 02 | 02 | 04
        let pt = hex("7172737401020204");
        let (t, n) = Trailer::parse(&pt).unwrap();
        assert_eq!(
            t,
            Trailer {
                pad_len: 2,
                next_header: 4
            }
        );
        assert_eq!(n, 4);
        let mut out = [0u8; 4];
        t.emit(&mut out);
        assert_eq!(&out, &pt[4..]);
        // Bad padding content, pad length beyond the plaintext, too short.
        assert_eq!(
            Trailer::parse(&hex("7172737401030204")).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            Trailer::parse(&hex("01020504")).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(Trailer::parse(&hex("04")).unwrap_err(), Error::Truncated);
        assert_eq!(
            Trailer::parse(&hex("0004")).unwrap(),
            (
                Trailer {
                    pad_len: 0,
                    next_header: 4
                },
                0
            )
        );
    }

    #[test]
    fn pad_len_for() {
        for len in 0..64 {
            let pad = Trailer::pad_len_for(len);
            assert!(pad < 4);
            assert_eq!((len + pad + TRAILER_LEN) % 4, 0);
        }
    }
}
