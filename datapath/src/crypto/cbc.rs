//! AES-CBC (RFC 3602) with HMAC-SHA1-96 (RFC 2404) or
//! HMAC-SHA2-256-128/384-192/512-256 (RFC 4868): encrypt-then-MAC ESP.
//!
//! AES and the CBC mode come from the RustCrypto `aes` and `cbc` crates
//! (AES-NI detected at run time), HMAC from `ring`. Nothing here is a
//! hand-written cipher: this module only lays the ESP fields out.
//!
//! Layout (SPI first): `SPI || seq || IV (16) || ciphertext (whole blocks)
//! || ICV`. The ICV is the HMAC, truncated to half its length, over
//! `SPI || seq || IV || ciphertext`, followed with ESN by the high 32 bits of
//! the sequence number (RFC 4303 2.2.1: included in the ICV, never sent).

use core::ops::Range;

use aes::cipher::array::Array;
use aes::cipher::consts::U16;
use aes::cipher::{
    BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit,
    KeyInit,
};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::{AesKeySize, Integrity, KeyError, OpenError};
use crate::wire::esp::HEADER_LEN;

/// AES block length: the CBC ciphertext is a whole number of these.
pub const AES_BLOCK_LEN: usize = 16;
/// Length of the CBC IV carried after the ESP header (RFC 3602 3).
pub const CBC_IV_LEN: usize = 16;
/// Offset of the ciphertext from the SPI.
const CIPHERTEXT_OFFSET: usize = HEADER_LEN + CBC_IV_LEN;

/// The transform set as IOS prints it (`show crypto ipsec sa`, `transform:`):
/// `esp-aes`, `esp-192-aes`, `esp-256-aes`, then `esp-sha-hmac`,
/// `esp-sha256-hmac`, `esp-sha384-hmac`, `esp-sha512-hmac`.
// `esp-256-aes esp-sha256-hmac`, `esp-aes esp-sha-hmac` and
// `esp-256-aes esp-sha512-hmac` are spelled as in genieparser's golden IOS XE
// outputs; the 192 and SHA-384 forms follow the same pattern.
pub(super) const fn ios_transform(k: AesKeySize, i: Integrity) -> &'static str {
    use AesKeySize::*;
    use Integrity::*;
    match (k, i) {
        (Aes128, HmacSha1_96) => "esp-aes esp-sha-hmac",
        (Aes128, HmacSha256_128) => "esp-aes esp-sha256-hmac",
        (Aes128, HmacSha384_192) => "esp-aes esp-sha384-hmac",
        (Aes128, HmacSha512_256) => "esp-aes esp-sha512-hmac",
        (Aes192, HmacSha1_96) => "esp-192-aes esp-sha-hmac",
        (Aes192, HmacSha256_128) => "esp-192-aes esp-sha256-hmac",
        (Aes192, HmacSha384_192) => "esp-192-aes esp-sha384-hmac",
        (Aes192, HmacSha512_256) => "esp-192-aes esp-sha512-hmac",
        (Aes256, HmacSha1_96) => "esp-256-aes esp-sha-hmac",
        (Aes256, HmacSha256_128) => "esp-256-aes esp-sha256-hmac",
        (Aes256, HmacSha384_192) => "esp-256-aes esp-sha384-hmac",
        (Aes256, HmacSha512_256) => "esp-256-aes esp-sha512-hmac",
    }
}

/// An expanded AES key of one of the three sizes.
enum Aes {
    A128(aes::Aes128),
    A192(aes::Aes192),
    A256(aes::Aes256),
}

fn cbc_encrypt<C: BlockCipherEncrypt<BlockSize = U16>>(c: &C, iv: &[u8; 16], buf: &mut [u8]) {
    let (blocks, _tail) = Array::<u8, U16>::slice_as_chunks_mut(buf);
    cbc::Encryptor::<&C>::inner_iv_init(c, &Array::from(*iv)).encrypt_blocks(blocks);
}

fn cbc_decrypt<C: BlockCipherDecrypt<BlockSize = U16>>(c: &C, iv: &[u8; 16], buf: &mut [u8]) {
    let (blocks, _tail) = Array::<u8, U16>::slice_as_chunks_mut(buf);
    cbc::Decryptor::<&C>::inner_iv_init(c, &Array::from(*iv)).decrypt_blocks(blocks);
}

impl Aes {
    fn new(size: AesKeySize, key: &[u8]) -> Result<Aes, KeyError> {
        let r = match size {
            AesKeySize::Aes128 => aes::Aes128::new_from_slice(key).map(Aes::A128),
            AesKeySize::Aes192 => aes::Aes192::new_from_slice(key).map(Aes::A192),
            AesKeySize::Aes256 => aes::Aes256::new_from_slice(key).map(Aes::A256),
        };
        r.map_err(|_| KeyError::Rejected)
    }

    /// CBC-encrypt the whole blocks of `buf` in place (a tail shorter than a
    /// block is left as it is).
    fn encrypt(&self, iv: &[u8; 16], buf: &mut [u8]) {
        match self {
            Aes::A128(c) => cbc_encrypt(c, iv, buf),
            Aes::A192(c) => cbc_encrypt(c, iv, buf),
            Aes::A256(c) => cbc_encrypt(c, iv, buf),
        }
    }

    /// CBC-decrypt the whole blocks of `buf` in place.
    fn decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) {
        match self {
            Aes::A128(c) => cbc_decrypt(c, iv, buf),
            Aes::A192(c) => cbc_decrypt(c, iv, buf),
            Aes::A256(c) => cbc_decrypt(c, iv, buf),
        }
    }
}

/// One SA direction's AES-CBC + HMAC context.
pub(super) struct CbcHmac {
    aes: Aes,
    hmac: hmac::Key,
    icv_len: usize,
    /// Key of the IV generator (see [`CbcHmac::iv_for`]); random, drawn once
    /// when the SA is installed, never derived from or shared with the SA's
    /// own keys.
    iv_key: aes::Aes128Enc,
}

impl CbcHmac {
    /// Build from `encryption key || integrity key` (lengths checked by the
    /// caller).
    pub(super) fn new(
        size: AesKeySize,
        integ: Integrity,
        key_material: &[u8],
    ) -> Result<CbcHmac, KeyError> {
        let (enc, auth) = key_material.split_at(size.key_len());
        Self::from_keys(size, integ, enc, auth)
    }

    /// Build from the two keys (any integrity key length; [`CbcHmac::new`]
    /// checked them for ESP, the known-answer tests use RFC 4231's).
    pub(super) fn from_keys(
        size: AesKeySize,
        integ: Integrity,
        enc: &[u8],
        auth: &[u8],
    ) -> Result<CbcHmac, KeyError> {
        let alg = match integ {
            Integrity::HmacSha1_96 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Integrity::HmacSha256_128 => hmac::HMAC_SHA256,
            Integrity::HmacSha384_192 => hmac::HMAC_SHA384,
            Integrity::HmacSha512_256 => hmac::HMAC_SHA512,
        };
        let mut seed = [0u8; 16];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| KeyError::NoRandom)?;
        let iv_key = aes::Aes128Enc::new_from_slice(&seed).map_err(|_| KeyError::Rejected);
        seed.zeroize();
        Ok(CbcHmac {
            aes: Aes::new(size, enc)?,
            hmac: hmac::Key::new(alg, auth),
            icv_len: integ.icv_len(),
            iv_key: iv_key?,
        })
    }

    /// The IV of the packet with sequence number `seq`: the 64-bit sequence
    /// number, as a 128-bit block, encrypted with AES-128 under this SA's
    /// random IV key.
    ///
    /// RFC 3602 2.3 wants CBC IVs an attacker cannot predict. AES under a
    /// secret key is a pseudo-random permutation: without the key its output
    /// for an input not seen before is indistinguishable from random, so
    /// knowing every earlier IV tells nothing about the next one (NIST SP
    /// 800-38A appendix C, "encrypt a nonce"). Distinct inputs give distinct
    /// IVs, and `seq` is distinct per packet: an outbound SA's sequence
    /// numbers never repeat and only its owner worker sends on it. The key
    /// is drawn once per SA install from the system's random source, so a
    /// restart or re-install that reuses sequence numbers still gets fresh
    /// IVs. Per packet this costs one AES block: no syscall, no lock, no
    /// shared state.
    pub(super) fn iv_for(&self, seq: u64) -> [u8; CBC_IV_LEN] {
        let mut block = Array::from(u128::from(seq).to_be_bytes());
        self.iv_key.encrypt_block(&mut block);
        block.into()
    }

    /// The full HMAC over `authenticated` and, with ESN, the high half of
    /// the sequence number.
    fn tag(&self, authenticated: &[u8], seq_hi: Option<u32>) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.hmac);
        ctx.update(authenticated);
        if let Some(hi) = seq_hi {
            ctx.update(&hi.to_be_bytes());
        }
        ctx.sign()
    }

    /// Verify the ICV, then decrypt in place; see
    /// [`super::EspCipher::decrypt_in_place`].
    pub(super) fn decrypt_in_place(
        &self,
        esp: &mut [u8],
        seq_hi: Option<u32>,
    ) -> Result<Range<usize>, OpenError> {
        if esp.len() < CIPHERTEXT_OFFSET + AES_BLOCK_LEN + self.icv_len {
            return Err(OpenError::Truncated);
        }
        let icv_at = esp.len() - self.icv_len;
        // The ICV is checked before anything is decrypted (RFC 4303 3.4.4.1):
        // a forged packet never reaches the CBC decryption or the padding
        // check, so neither can serve as an oracle. `ring::hmac::verify`
        // compares whole tags only and ESP sends half a tag, so the truncated
        // tags are compared here in constant time.
        let tag = self.tag(&esp[..icv_at], seq_hi);
        let ok: bool = tag.as_ref()[..self.icv_len].ct_eq(&esp[icv_at..]).into();
        if !ok {
            return Err(OpenError::Integrity);
        }
        let ct = CIPHERTEXT_OFFSET..icv_at;
        if ct.len() % AES_BLOCK_LEN != 0 {
            return Err(OpenError::Padding);
        }
        let mut iv = [0u8; CBC_IV_LEN];
        iv.copy_from_slice(&esp[HEADER_LEN..CIPHERTEXT_OFFSET]);
        self.aes.decrypt(&iv, &mut esp[ct.clone()]);
        Ok(ct)
    }

    /// CBC-encrypt `esp[CIPHERTEXT_OFFSET..icv_at]` with the IV already in
    /// `esp`, then write the ICV.
    pub(super) fn seal_prepared(&self, esp: &mut [u8], seq_hi: Option<u32>) {
        let icv_at = esp.len() - self.icv_len;
        let mut iv = [0u8; CBC_IV_LEN];
        iv.copy_from_slice(&esp[HEADER_LEN..CIPHERTEXT_OFFSET]);
        self.aes.encrypt(&iv, &mut esp[CIPHERTEXT_OFFSET..icv_at]);
        self.write_icv(esp, seq_hi);
    }

    /// Write the ICV over `esp[..len - icv_len]`.
    pub(super) fn write_icv(&self, esp: &mut [u8], seq_hi: Option<u32>) {
        let icv_at = esp.len() - self.icv_len;
        let tag = self.tag(&esp[..icv_at], seq_hi);
        esp[icv_at..].copy_from_slice(&tag.as_ref()[..self.icv_len]);
    }
}
