//! AEAD ESP on top of `ring`: AES-GCM (RFC 4106) and ChaCha20-Poly1305
//! (RFC 7634), with 8-byte explicit IV and 16-byte ICV.
//!
//! Key material is `key || 4-byte salt`; the nonce is `salt || IV`; the AAD
//! is `SPI || seq` (8 bytes) or, with ESN, `SPI || seq_hi || seq_lo`
//! (12 bytes, RFC 4106 5 / RFC 7634 3).

use core::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use crate::wire::esp::{self as esp_wire, Trailer};

/// Length of the salt at the end of the key material.
pub const SALT_LEN: usize = 4;
/// Length of the explicit IV carried after the ESP header.
pub const IV_LEN: usize = 8;
/// Length of the integrity check value (the AEAD tag).
pub const ICV_LEN: usize = 16;
/// Offset of the ciphertext from the SPI: ESP header + IV.
pub const CIPHERTEXT_OFFSET: usize = esp_wire::HEADER_LEN + IV_LEN;
/// Smallest ESP packet that can hold a trailer: header, IV, trailer, ICV.
pub const MIN_ESP_LEN: usize = CIPHERTEXT_OFFSET + esp_wire::TRAILER_LEN + ICV_LEN;

/// The AEAD transforms the datapath supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-128-GCM, 16-byte ICV (RFC 4106).
    Aes128Gcm,
    /// AES-256-GCM, 16-byte ICV (RFC 4106); the SD-WAN data plane's cipher.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 7634).
    ChaCha20Poly1305,
}

impl Cipher {
    /// Length of the key without the salt.
    pub const fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::ChaCha20Poly1305 => 32,
        }
    }

    /// Length of the key material (key || salt).
    pub const fn key_material_len(self) -> usize {
        self.key_len() + SALT_LEN
    }

    /// The transform as IOS prints it in `show crypto ipsec sa`.
    pub const fn ios_transform(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "esp-gcm",
            Cipher::Aes256Gcm => "esp-gcm 256",
            Cipher::ChaCha20Poly1305 => "esp-chacha20-poly1305",
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// Raw key material (key || salt), zeroized on drop, never printed.
#[derive(Clone)]
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    /// Take ownership of key material bytes.
    pub fn new(bytes: Vec<u8>) -> KeyMaterial {
        KeyMaterial(Zeroizing::new(bytes))
    }

    /// The bytes (for building a cipher; do not log them).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyMaterial(<{} bytes redacted>)", self.0.len())
    }
}

/// Errors building a cipher from key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The key material is not `key_len + 4` bytes long.
    WrongLength {
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// `ring` refused the key.
    Rejected,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyError::WrongLength { expected, got } => {
                write!(
                    f,
                    "key material must be {expected} bytes (key || 4-byte salt), got {got}"
                )
            }
            KeyError::Rejected => f.write_str("key rejected by the AEAD"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Why an inbound ESP packet could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Too short for header, IV, trailer and ICV.
    Truncated,
    /// The ICV did not verify (wrong key, corrupted, forged).
    Integrity,
    /// Decrypted fine but the padding or pad length is wrong.
    Padding,
}

/// Why an outbound ESP packet could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The buffer is not [`sealed_len`] of the payload long.
    BufferSize,
    /// The sequence number does not fit the SA (0, or above 2^32-1 without ESN).
    Sequence,
}

/// A successfully opened (decrypted and verified) ESP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Where the protected payload (the inner IP packet) is, relative to the
    /// SPI.
    pub payload: Range<usize>,
    /// The decrypted trailer.
    pub trailer: Trailer,
}

/// Total ESP length (SPI to ICV) for a payload of `payload_len` bytes.
pub const fn sealed_len(payload_len: usize) -> usize {
    CIPHERTEXT_OFFSET
        + payload_len
        + Trailer::pad_len_for(payload_len)
        + esp_wire::TRAILER_LEN
        + ICV_LEN
}

/// An AEAD context for one SA direction: expanded key plus salt.
///
/// `ring` keeps its expanded key schedule private and does not zeroize it;
/// the raw key material given to [`EspCipher::new`] is not kept here, and
/// the salt is zeroized on drop.
pub struct EspCipher {
    cipher: Cipher,
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
}

impl core::fmt::Debug for EspCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EspCipher")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl Drop for EspCipher {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

impl EspCipher {
    /// Build from `key || salt`.
    pub fn new(cipher: Cipher, key_material: &[u8]) -> Result<EspCipher, KeyError> {
        if key_material.len() != cipher.key_material_len() {
            return Err(KeyError::WrongLength {
                expected: cipher.key_material_len(),
                got: key_material.len(),
            });
        }
        let (key, salt) = key_material.split_at(cipher.key_len());
        let unbound = UnboundKey::new(cipher.algorithm(), key).map_err(|_| KeyError::Rejected)?;
        let mut s = [0u8; SALT_LEN];
        s.copy_from_slice(salt);
        Ok(EspCipher {
            cipher,
            key: LessSafeKey::new(unbound),
            salt: s,
        })
    }

    /// The transform.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    fn nonce(&self, iv: &[u8]) -> Nonce {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(&iv[..IV_LEN]);
        Nonce::assume_unique_for_key(n)
    }

    /// Verify and decrypt in place `esp` (SPI .. ICV). `seq_hi` is the
    /// inferred high half of the sequence number when the SA uses ESN.
    ///
    /// On success returns the plaintext range (payload, padding, pad length,
    /// next header) relative to the SPI; the ICV bytes are left as they were.
    pub fn decrypt_in_place(
        &self,
        esp: &mut [u8],
        seq_hi: Option<u32>,
    ) -> Result<Range<usize>, OpenError> {
        if esp.len() < MIN_ESP_LEN {
            return Err(OpenError::Truncated);
        }
        let mut aad_buf = [0u8; 12];
        let aad: &[u8] = match seq_hi {
            Some(hi) => {
                aad_buf[..4].copy_from_slice(&esp[..4]);
                aad_buf[4..8].copy_from_slice(&hi.to_be_bytes());
                aad_buf[8..12].copy_from_slice(&esp[4..8]);
                &aad_buf
            }
            None => {
                aad_buf[..8].copy_from_slice(&esp[..8]);
                &aad_buf[..8]
            }
        };
        let nonce = self.nonce(&esp[esp_wire::HEADER_LEN..CIPHERTEXT_OFFSET]);
        let end = esp.len() - ICV_LEN;
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut esp[CIPHERTEXT_OFFSET..])
            .map_err(|_| OpenError::Integrity)?
            .len();
        debug_assert_eq!(CIPHERTEXT_OFFSET + plain_len, end);
        Ok(CIPHERTEXT_OFFSET..CIPHERTEXT_OFFSET + plain_len)
    }

    /// [`EspCipher::decrypt_in_place`] then check the trailer and padding.
    pub fn open_in_place(&self, esp: &mut [u8], seq_hi: Option<u32>) -> Result<Opened, OpenError> {
        let plain = self.decrypt_in_place(esp, seq_hi)?;
        let (trailer, payload_len) =
            Trailer::parse(&esp[plain.clone()]).map_err(|_| OpenError::Padding)?;
        Ok(Opened {
            payload: plain.start..plain.start + payload_len,
            trailer,
        })
    }

    /// Seal in place an ESP packet whose payload was already copied to
    /// `esp[CIPHERTEXT_OFFSET..CIPHERTEXT_OFFSET + payload_len]`; `esp` must be
    /// exactly [`sealed_len`]`(payload_len)` bytes. Writes SPI, sequence
    /// number, IV, padding, trailer and ICV.
    ///
    /// The explicit IV is the 64-bit sequence number: RFC 4106 3.1 only
    /// requires the IV to be unique per key, and the outbound sequence number
    /// already is (it never wraps or repeats for an SA; a rekey brings a new
    /// key). It costs no random numbers and is what many implementations do.
    pub fn seal_in_place(
        &self,
        esp: &mut [u8],
        payload_len: usize,
        next_header: u8,
        spi: u32,
        seq: u64,
        esn: bool,
    ) -> Result<(), SealError> {
        if esp.len() != sealed_len(payload_len) {
            return Err(SealError::BufferSize);
        }
        if seq == 0 || (!esn && seq > u64::from(u32::MAX)) {
            return Err(SealError::Sequence);
        }
        let seq_lo = seq as u32;
        esp[..4].copy_from_slice(&spi.to_be_bytes());
        esp[4..8].copy_from_slice(&seq_lo.to_be_bytes());
        esp[8..CIPHERTEXT_OFFSET].copy_from_slice(&seq.to_be_bytes());
        let trailer = Trailer {
            pad_len: Trailer::pad_len_for(payload_len) as u8,
            next_header,
        };
        let tstart = CIPHERTEXT_OFFSET + payload_len;
        trailer.emit(&mut esp[tstart..tstart + trailer.buffer_len()]);
        self.seal_prepared(esp, spi, seq, esn);
        Ok(())
    }

    /// Encrypt `esp[CIPHERTEXT_OFFSET..len - ICV_LEN]` (payload and trailer
    /// already in place, header and IV already written) and write the ICV.
    pub(crate) fn seal_prepared(&self, esp: &mut [u8], spi: u32, seq: u64, esn: bool) {
        let seq_lo = seq as u32;
        let seq_hi = (seq >> 32) as u32;
        let mut aad_buf = [0u8; 12];
        aad_buf[..4].copy_from_slice(&spi.to_be_bytes());
        let aad: &[u8] = if esn {
            aad_buf[4..8].copy_from_slice(&seq_hi.to_be_bytes());
            aad_buf[8..12].copy_from_slice(&seq_lo.to_be_bytes());
            &aad_buf
        } else {
            aad_buf[4..8].copy_from_slice(&seq_lo.to_be_bytes());
            &aad_buf[..8]
        };
        let nonce = self.nonce(&esp[esp_wire::HEADER_LEN..CIPHERTEXT_OFFSET]);
        let icv_at = esp.len() - ICV_LEN;
        // ring fails only past the AEAD's length limit (~64 GiB for GCM),
        // which a packet cannot reach.
        if let Ok(tag) = self.key.seal_in_place_separate_tag(
            nonce,
            Aad::from(aad),
            &mut esp[CIPHERTEXT_OFFSET..icv_at],
        ) {
            esp[icv_at..].copy_from_slice(tag.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lengths_checked() {
        assert_eq!(
            EspCipher::new(Cipher::Aes256Gcm, &[0; 32]).unwrap_err(),
            KeyError::WrongLength {
                expected: 36,
                got: 32
            }
        );
        assert!(EspCipher::new(Cipher::Aes128Gcm, &[0; 20]).is_ok());
        assert!(EspCipher::new(Cipher::ChaCha20Poly1305, &[0; 36]).is_ok());
    }

    #[test]
    fn debug_never_prints_keys() {
        let km = KeyMaterial::new(vec![0xab; 36]);
        let c = EspCipher::new(Cipher::Aes256Gcm, km.as_bytes()).unwrap();
        let s = format!("{km:?} {c:?}");
        assert!(
            !s.to_lowercase().contains("ab, ") && !s.contains("171"),
            "{s}"
        );
        assert!(s.contains("redacted"));
    }

    #[test]
    fn seal_open_round_trip_all_lengths() {
        for cipher in [
            Cipher::Aes128Gcm,
            Cipher::Aes256Gcm,
            Cipher::ChaCha20Poly1305,
        ] {
            let km: Vec<u8> = (0..cipher.key_material_len() as u8).collect();
            let c = EspCipher::new(cipher, &km).unwrap();
            for esn in [false, true] {
                for len in 0..40usize {
                    let seq = if esn {
                        (3u64 << 32) | (len as u64 + 1)
                    } else {
                        len as u64 + 1
                    };
                    let mut buf = vec![0u8; sealed_len(len)];
                    for (i, b) in buf[CIPHERTEXT_OFFSET..CIPHERTEXT_OFFSET + len]
                        .iter_mut()
                        .enumerate()
                    {
                        *b = i as u8 ^ 0x5a;
                    }
                    let orig = buf[CIPHERTEXT_OFFSET..CIPHERTEXT_OFFSET + len].to_vec();
                    c.seal_in_place(&mut buf, len, 4, 0x1234, seq, esn).unwrap();
                    assert_eq!(buf.len() % 4, 0);
                    let hi = esn.then_some((seq >> 32) as u32);
                    let mut tampered = buf.clone();
                    let o = c.open_in_place(&mut buf, hi).unwrap();
                    assert_eq!(o.payload, CIPHERTEXT_OFFSET..CIPHERTEXT_OFFSET + len);
                    assert_eq!(o.trailer.next_header, 4);
                    assert_eq!(&buf[o.payload], &orig[..]);
                    // Any flipped bit (header, IV, ciphertext or ICV) fails.
                    let at = (len * 7) % tampered.len();
                    tampered[at] ^= 1;
                    assert_eq!(
                        c.open_in_place(&mut tampered, hi).unwrap_err(),
                        OpenError::Integrity
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_esn_high_half_fails_icv() {
        let c = EspCipher::new(Cipher::Aes128Gcm, &[7; 20]).unwrap();
        let mut buf = vec![0u8; sealed_len(20)];
        c.seal_in_place(&mut buf, 20, 41, 9, (5u64 << 32) | 1, true)
            .unwrap();
        let mut b2 = buf.clone();
        assert_eq!(
            c.open_in_place(&mut b2, Some(4)).unwrap_err(),
            OpenError::Integrity
        );
        assert_eq!(
            c.open_in_place(&mut buf, None).unwrap_err(),
            OpenError::Integrity
        );
    }

    #[test]
    fn seal_rejects_bad_sequence_and_size() {
        let c = EspCipher::new(Cipher::Aes128Gcm, &[7; 20]).unwrap();
        let mut buf = vec![0u8; sealed_len(4)];
        assert_eq!(
            c.seal_in_place(&mut buf, 4, 4, 9, 0, false),
            Err(SealError::Sequence)
        );
        assert_eq!(
            c.seal_in_place(&mut buf, 4, 4, 9, 1 << 32, false),
            Err(SealError::Sequence)
        );
        assert!(c.seal_in_place(&mut buf, 4, 4, 9, 1 << 32, true).is_ok());
        assert_eq!(
            c.seal_in_place(&mut buf, 8, 4, 9, 1, false),
            Err(SealError::BufferSize)
        );
    }

    #[test]
    fn truncated() {
        let c = EspCipher::new(Cipher::Aes128Gcm, &[7; 20]).unwrap();
        for n in 0..MIN_ESP_LEN {
            let mut b = vec![0u8; n];
            assert_eq!(
                c.open_in_place(&mut b, None).unwrap_err(),
                OpenError::Truncated
            );
        }
    }
}
