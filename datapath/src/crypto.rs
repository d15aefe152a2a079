//! ESP transforms.
//!
//! AEADs on top of `ring`: AES-GCM (RFC 4106) and ChaCha20-Poly1305
//! (RFC 7634), with 8-byte explicit IV and 16-byte ICV. Key material is
//! `key || 4-byte salt`; the nonce is `salt || IV`; the AAD is `SPI || seq`
//! (8 bytes) or, with ESN, `SPI || seq_hi || seq_lo` (12 bytes, RFC 4106 5 /
//! RFC 7634 3).
//!
//! AES-CBC (RFC 3602, RustCrypto `aes` + `cbc`) with HMAC-SHA1-96 (RFC 2404)
//! or HMAC-SHA2-256-128/384-192/512-256 (RFC 4868) from `ring`, in
//! [`cbc`](self::cbc): 16-byte IV, payload padded to the 16-byte block, ICV
//! verified before anything is decrypted. Key material is
//! `encryption key || integrity key` (the order of IKEv2's KEYMAT, RFC 7296
//! 2.17).
//!
//! The constants below ([`IV_LEN`], [`ICV_LEN`], [`CIPHERTEXT_OFFSET`],
//! [`MIN_ESP_LEN`], [`sealed_len`]) are the AEADs'; [`Cipher`] has the
//! per-transform forms.

mod cbc;

use core::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use crate::wire::esp::{self as esp_wire, Trailer};

pub use self::cbc::{AES_BLOCK_LEN, CBC_IV_LEN};

/// Length of the salt at the end of the key material.
pub const SALT_LEN: usize = 4;
/// Length of the explicit IV carried after the ESP header (AEADs).
pub const IV_LEN: usize = 8;
/// Length of the integrity check value (the AEAD tag).
pub const ICV_LEN: usize = 16;
/// Offset of the ciphertext from the SPI: ESP header + IV (AEADs).
pub const CIPHERTEXT_OFFSET: usize = esp_wire::HEADER_LEN + IV_LEN;
/// Smallest ESP packet that can hold a trailer: header, IV, trailer, ICV
/// (AEADs).
pub const MIN_ESP_LEN: usize = CIPHERTEXT_OFFSET + esp_wire::TRAILER_LEN + ICV_LEN;

/// The ESP transforms the datapath supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-128-GCM, 16-byte ICV (RFC 4106).
    Aes128Gcm,
    /// AES-256-GCM, 16-byte ICV (RFC 4106); the SD-WAN data plane's cipher.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 7634).
    ChaCha20Poly1305,
    /// AES-CBC (RFC 3602) with an HMAC integrity transform; IOS's
    /// `esp-aes [192|256] esp-sha*-hmac` transform sets.
    AesCbc(AesKeySize, Integrity),
}

/// Key size of AES-CBC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AesKeySize {
    /// 128-bit key (IOS `esp-aes`).
    Aes128,
    /// 192-bit key (IOS `esp-aes 192`).
    Aes192,
    /// 256-bit key (IOS `esp-aes 256`).
    Aes256,
}

impl AesKeySize {
    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            AesKeySize::Aes128 => 16,
            AesKeySize::Aes192 => 24,
            AesKeySize::Aes256 => 32,
        }
    }
}

/// Integrity transforms used with AES-CBC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// HMAC-SHA1-96 (RFC 2404): 20-byte key, 12-byte ICV (IOS `esp-sha-hmac`).
    HmacSha1_96,
    /// HMAC-SHA2-256-128 (RFC 4868): 32-byte key, 16-byte ICV.
    HmacSha256_128,
    /// HMAC-SHA2-384-192 (RFC 4868): 48-byte key, 24-byte ICV.
    HmacSha384_192,
    /// HMAC-SHA2-512-256 (RFC 4868): 64-byte key, 32-byte ICV.
    HmacSha512_256,
}

impl Integrity {
    /// Integrity key length in bytes (the hash's output length, RFC 4868
    /// 2.1.1; 20 for SHA-1, RFC 2404 3).
    pub const fn key_len(self) -> usize {
        match self {
            Integrity::HmacSha1_96 => 20,
            Integrity::HmacSha256_128 => 32,
            Integrity::HmacSha384_192 => 48,
            Integrity::HmacSha512_256 => 64,
        }
    }

    /// ICV length: the HMAC truncated to half its output (96 bits for SHA-1).
    pub const fn icv_len(self) -> usize {
        match self {
            Integrity::HmacSha1_96 => 12,
            Integrity::HmacSha256_128 => 16,
            Integrity::HmacSha384_192 => 24,
            Integrity::HmacSha512_256 => 32,
        }
    }
}

/// The CBC transforms and their names, in the order [`Cipher::name`] and
/// error messages list them.
const CBC_NAMES: [(&str, AesKeySize, Integrity); 12] = [
    ("aes128-sha1", AesKeySize::Aes128, Integrity::HmacSha1_96),
    (
        "aes128-sha256",
        AesKeySize::Aes128,
        Integrity::HmacSha256_128,
    ),
    (
        "aes128-sha384",
        AesKeySize::Aes128,
        Integrity::HmacSha384_192,
    ),
    (
        "aes128-sha512",
        AesKeySize::Aes128,
        Integrity::HmacSha512_256,
    ),
    ("aes192-sha1", AesKeySize::Aes192, Integrity::HmacSha1_96),
    (
        "aes192-sha256",
        AesKeySize::Aes192,
        Integrity::HmacSha256_128,
    ),
    (
        "aes192-sha384",
        AesKeySize::Aes192,
        Integrity::HmacSha384_192,
    ),
    (
        "aes192-sha512",
        AesKeySize::Aes192,
        Integrity::HmacSha512_256,
    ),
    ("aes256-sha1", AesKeySize::Aes256, Integrity::HmacSha1_96),
    (
        "aes256-sha256",
        AesKeySize::Aes256,
        Integrity::HmacSha256_128,
    ),
    (
        "aes256-sha384",
        AesKeySize::Aes256,
        Integrity::HmacSha384_192,
    ),
    (
        "aes256-sha512",
        AesKeySize::Aes256,
        Integrity::HmacSha512_256,
    ),
];

impl Cipher {
    /// Every transform, AEADs first.
    pub const ALL: [Cipher; 15] = [
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
        Cipher::ChaCha20Poly1305,
        Cipher::AesCbc(CBC_NAMES[0].1, CBC_NAMES[0].2),
        Cipher::AesCbc(CBC_NAMES[1].1, CBC_NAMES[1].2),
        Cipher::AesCbc(CBC_NAMES[2].1, CBC_NAMES[2].2),
        Cipher::AesCbc(CBC_NAMES[3].1, CBC_NAMES[3].2),
        Cipher::AesCbc(CBC_NAMES[4].1, CBC_NAMES[4].2),
        Cipher::AesCbc(CBC_NAMES[5].1, CBC_NAMES[5].2),
        Cipher::AesCbc(CBC_NAMES[6].1, CBC_NAMES[6].2),
        Cipher::AesCbc(CBC_NAMES[7].1, CBC_NAMES[7].2),
        Cipher::AesCbc(CBC_NAMES[8].1, CBC_NAMES[8].2),
        Cipher::AesCbc(CBC_NAMES[9].1, CBC_NAMES[9].2),
        Cipher::AesCbc(CBC_NAMES[10].1, CBC_NAMES[10].2),
        Cipher::AesCbc(CBC_NAMES[11].1, CBC_NAMES[11].2),
    ];

    /// The config name: `aes128-gcm`, `aes256-gcm`, `chacha20-poly1305`, or
    /// strongSwan's ESP notation for CBC, `aes256-sha256`, `aes128-sha1`, ...
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "aes128-gcm",
            Cipher::Aes256Gcm => "aes256-gcm",
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::AesCbc(k, i) => CBC_NAMES
                .iter()
                .find(|(_, kk, ii)| (*kk, *ii) == (k, i))
                .map_or("aes-cbc", |(n, _, _)| n),
        }
    }

    /// Parse a config name: [`Cipher::name`]'s, strongSwan's AEAD names
    /// (`aes128gcm16`, `aes256gcm16`, `chacha20poly1305`) and its SHA-2
    /// aliases (`aes256-sha2_256`); `aes` alone is AES-128 as in strongSwan.
    pub fn from_name(s: &str) -> Option<Cipher> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "aes128-gcm" | "aes128gcm16" | "aes128gcm128" => return Some(Cipher::Aes128Gcm),
            "aes256-gcm" | "aes256gcm16" | "aes256gcm128" => return Some(Cipher::Aes256Gcm),
            "chacha20-poly1305" | "chacha20poly1305" => return Some(Cipher::ChaCha20Poly1305),
            _ => {}
        }
        let (enc, integ) = s.split_once('-')?;
        let enc = if enc == "aes" { "aes128" } else { enc };
        let integ = match integ {
            "sha" | "sha1" => "sha1",
            "sha2_256" => "sha256",
            "sha2_384" => "sha384",
            "sha2_512" => "sha512",
            other => other,
        };
        let want = format!("{enc}-{integ}");
        CBC_NAMES
            .iter()
            .find(|(n, _, _)| *n == want)
            .map(|&(_, k, i)| Cipher::AesCbc(k, i))
    }

    /// Length of the encryption key (without the salt of the AEADs or the
    /// integrity key of CBC).
    pub const fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::ChaCha20Poly1305 => 32,
            Cipher::AesCbc(k, _) => k.key_len(),
        }
    }

    /// Length of the key material: key || salt (AEADs), encryption key ||
    /// integrity key (CBC).
    pub const fn key_material_len(self) -> usize {
        match self {
            Cipher::AesCbc(k, i) => k.key_len() + i.key_len(),
            _ => self.key_len() + SALT_LEN,
        }
    }

    /// What the key material is made of, for error messages.
    pub const fn key_material_layout(self) -> &'static str {
        match self {
            Cipher::AesCbc(..) => "encryption key || integrity key",
            _ => "key || 4-byte salt",
        }
    }

    /// Length of the IV after the ESP header: 8 (AEADs), 16 (CBC).
    pub const fn iv_len(self) -> usize {
        match self {
            Cipher::AesCbc(..) => CBC_IV_LEN,
            _ => IV_LEN,
        }
    }

    /// Length of the ICV.
    pub const fn icv_len(self) -> usize {
        match self {
            Cipher::AesCbc(_, i) => i.icv_len(),
            _ => ICV_LEN,
        }
    }

    /// Offset of the ciphertext from the SPI: ESP header + IV.
    pub const fn ciphertext_offset(self) -> usize {
        esp_wire::HEADER_LEN + self.iv_len()
    }

    /// Smallest ESP packet (SPI .. ICV) that can hold a trailer: for CBC one
    /// whole block of ciphertext.
    pub const fn min_esp_len(self) -> usize {
        match self {
            Cipher::AesCbc(..) => self.ciphertext_offset() + AES_BLOCK_LEN + self.icv_len(),
            _ => MIN_ESP_LEN,
        }
    }

    /// Padding after a payload of `payload_len` bytes: to 4 bytes for the
    /// AEADs, to the 16-byte block for CBC (RFC 4303 2.4).
    pub const fn pad_len_for(self, payload_len: usize) -> usize {
        match self {
            Cipher::AesCbc(..) => {
                (AES_BLOCK_LEN - (payload_len + esp_wire::TRAILER_LEN) % AES_BLOCK_LEN)
                    % AES_BLOCK_LEN
            }
            _ => Trailer::pad_len_for(payload_len),
        }
    }

    /// Total ESP length (SPI to ICV) for a payload of `payload_len` bytes.
    pub const fn sealed_len(self, payload_len: usize) -> usize {
        self.ciphertext_offset()
            + payload_len
            + self.pad_len_for(payload_len)
            + esp_wire::TRAILER_LEN
            + self.icv_len()
    }

    /// The transform as IOS prints it in `show crypto ipsec sa`.
    pub const fn ios_transform(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "esp-gcm",
            Cipher::Aes256Gcm => "esp-gcm 256",
            Cipher::ChaCha20Poly1305 => "esp-chacha20-poly1305",
            Cipher::AesCbc(k, i) => cbc::ios_transform(k, i),
        }
    }

    fn algorithm(self) -> Option<&'static aead::Algorithm> {
        match self {
            Cipher::Aes128Gcm => Some(&aead::AES_128_GCM),
            Cipher::Aes256Gcm => Some(&aead::AES_256_GCM),
            Cipher::ChaCha20Poly1305 => Some(&aead::CHACHA20_POLY1305),
            Cipher::AesCbc(..) => None,
        }
    }
}

impl core::fmt::Display for Cipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
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
    /// The key material is not [`Cipher::key_material_len`] bytes long.
    WrongLength {
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// `ring` refused the key.
    Rejected,
    /// No random bytes for the CBC IV key (the system's random source
    /// failed).
    NoRandom,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyError::WrongLength { expected, got } => {
                write!(
                    f,
                    "key material must be {expected} bytes (key || 4-byte salt, or for \
                     CBC encryption key || integrity key), got {got}"
                )
            }
            KeyError::Rejected => f.write_str("key rejected by the cipher"),
            KeyError::NoRandom => f.write_str("no random bytes for the CBC IV key"),
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

/// A cipher context for one SA direction: the AEAD's expanded key plus
/// salt, or CBC's AES and HMAC keys.
///
/// `ring` keeps its expanded key schedules (AEAD, HMAC) private and does not
/// zeroize them; the raw key material given to [`EspCipher::new`] is not
/// kept here, the salt is zeroized on drop and so are the AES key schedules
/// (the `aes` crate's `zeroize` feature).
pub struct EspCipher {
    // The transform sits inside `Imp`, in the padding after the AEAD salt:
    // beside it, it would cost 16 bytes per SA (ring's key is 16-aligned).
    imp: Imp,
}

// The AEAD's key stays inline (it is the hot, common case); CBC's larger
// state is the boxed one.
#[allow(clippy::large_enum_variant)]
enum Imp {
    Aead {
        key: LessSafeKey,
        salt: [u8; SALT_LEN],
        cipher: Cipher,
    },
    // Boxed: the AES and HMAC key schedules are large, and an AEAD SA should
    // not carry their size in the SA table.
    Cbc(Box<cbc::CbcHmac>, Cipher),
}

impl core::fmt::Debug for EspCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EspCipher")
            .field("cipher", &self.cipher())
            .finish_non_exhaustive()
    }
}

impl Drop for EspCipher {
    fn drop(&mut self) {
        if let Imp::Aead { salt, .. } = &mut self.imp {
            salt.zeroize();
        }
    }
}

impl EspCipher {
    /// Build from `key || salt` (AEADs) or `encryption key || integrity
    /// key` (CBC). A CBC context also draws its IV key from the system's
    /// random source here, once.
    pub fn new(cipher: Cipher, key_material: &[u8]) -> Result<EspCipher, KeyError> {
        if key_material.len() != cipher.key_material_len() {
            return Err(KeyError::WrongLength {
                expected: cipher.key_material_len(),
                got: key_material.len(),
            });
        }
        let imp = match (cipher, cipher.algorithm()) {
            (Cipher::AesCbc(k, i), _) => {
                Imp::Cbc(Box::new(cbc::CbcHmac::new(k, i, key_material)?), cipher)
            }
            (_, Some(alg)) => {
                let (key, salt) = key_material.split_at(cipher.key_len());
                let unbound = UnboundKey::new(alg, key).map_err(|_| KeyError::Rejected)?;
                let mut s = [0u8; SALT_LEN];
                s.copy_from_slice(salt);
                Imp::Aead {
                    key: LessSafeKey::new(unbound),
                    salt: s,
                    cipher,
                }
            }
            (_, None) => return Err(KeyError::Rejected),
        };
        Ok(EspCipher { imp })
    }

    /// Bytes of a context for `cipher` kept apart from the [`EspCipher`]
    /// itself (CBC's boxed AES and HMAC key schedules; 0 for the AEADs).
    pub fn boxed_bytes(cipher: Cipher) -> usize {
        match cipher {
            Cipher::AesCbc(..) => core::mem::size_of::<cbc::CbcHmac>(),
            _ => 0,
        }
    }

    /// The transform.
    #[inline]
    pub fn cipher(&self) -> Cipher {
        match &self.imp {
            Imp::Aead { cipher, .. } | Imp::Cbc(_, cipher) => *cipher,
        }
    }

    /// Total ESP length (SPI to ICV) for a payload of `payload_len` bytes.
    pub fn sealed_len(&self, payload_len: usize) -> usize {
        self.cipher().sealed_len(payload_len)
    }

    /// Offset of the ciphertext (the payload before sealing) from the SPI.
    pub fn ciphertext_offset(&self) -> usize {
        self.cipher().ciphertext_offset()
    }

    /// Smallest ESP packet this transform can open.
    pub fn min_esp_len(&self) -> usize {
        self.cipher().min_esp_len()
    }

    fn nonce(salt: &[u8; SALT_LEN], iv: &[u8]) -> Nonce {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(salt);
        n[SALT_LEN..].copy_from_slice(&iv[..IV_LEN]);
        Nonce::assume_unique_for_key(n)
    }

    /// Verify and decrypt in place `esp` (SPI .. ICV). `seq_hi` is the
    /// inferred high half of the sequence number when the SA uses ESN.
    ///
    /// On success returns the plaintext range (payload, padding, pad length,
    /// next header) relative to the SPI; the ICV bytes are left as they were.
    /// CBC verifies the ICV first and decrypts nothing of a packet that
    /// fails it; an authentic CBC packet whose ciphertext is not a whole
    /// number of blocks is [`OpenError::Padding`].
    pub fn decrypt_in_place(
        &self,
        esp: &mut [u8],
        seq_hi: Option<u32>,
    ) -> Result<Range<usize>, OpenError> {
        let (key, salt) = match &self.imp {
            Imp::Cbc(c, _) => return c.decrypt_in_place(esp, seq_hi),
            Imp::Aead { key, salt, .. } => (key, salt),
        };
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
        let nonce = Self::nonce(salt, &esp[esp_wire::HEADER_LEN..CIPHERTEXT_OFFSET]);
        let end = esp.len() - ICV_LEN;
        let plain_len = key
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
    /// `esp[o..o + payload_len]` (`o` = [`EspCipher::ciphertext_offset`]);
    /// `esp` must be exactly [`EspCipher::sealed_len`]`(payload_len)` bytes.
    /// Writes SPI, sequence number, IV, padding, trailer and ICV.
    ///
    /// AEADs: the explicit IV is the 64-bit sequence number: RFC 4106 3.1
    /// only requires the IV to be unique per key, and the outbound sequence
    /// number already is (it never wraps or repeats for an SA; a rekey brings
    /// a new key). It costs no random numbers and is what many
    /// implementations do. CBC needs an unpredictable IV instead; see
    /// `cbc::CbcHmac::iv_for`.
    pub fn seal_in_place(
        &self,
        esp: &mut [u8],
        payload_len: usize,
        next_header: u8,
        spi: u32,
        seq: u64,
        esn: bool,
    ) -> Result<(), SealError> {
        if esp.len() != self.sealed_len(payload_len) {
            return Err(SealError::BufferSize);
        }
        if seq == 0 || (!esn && seq > u64::from(u32::MAX)) {
            return Err(SealError::Sequence);
        }
        let seq_lo = seq as u32;
        let offset = self.ciphertext_offset();
        esp[..4].copy_from_slice(&spi.to_be_bytes());
        esp[4..8].copy_from_slice(&seq_lo.to_be_bytes());
        match &self.imp {
            Imp::Aead { .. } => esp[8..offset].copy_from_slice(&seq.to_be_bytes()),
            Imp::Cbc(c, _) => esp[8..offset].copy_from_slice(&c.iv_for(seq)),
        }
        let trailer = Trailer {
            pad_len: self.cipher().pad_len_for(payload_len) as u8,
            next_header,
        };
        let tstart = offset + payload_len;
        trailer.emit(&mut esp[tstart..tstart + trailer.buffer_len()]);
        self.seal_prepared(esp, spi, seq, esn);
        Ok(())
    }

    /// Encrypt `esp[ciphertext_offset..len - icv_len]` (payload and trailer
    /// already in place, header and IV already written) and write the ICV.
    /// For CBC the ciphertext must be whole blocks (a shorter tail is left
    /// unencrypted; only tests build such packets).
    pub(crate) fn seal_prepared(&self, esp: &mut [u8], spi: u32, seq: u64, esn: bool) {
        let seq_lo = seq as u32;
        let seq_hi = (seq >> 32) as u32;
        let (key, salt) = match &self.imp {
            Imp::Cbc(c, _) => return c.seal_prepared(esp, esn.then_some(seq_hi)),
            Imp::Aead { key, salt, .. } => (key, salt),
        };
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
        let nonce = Self::nonce(salt, &esp[esp_wire::HEADER_LEN..CIPHERTEXT_OFFSET]);
        let icv_at = esp.len() - ICV_LEN;
        // ring fails only past the AEAD's length limit (~64 GiB for GCM),
        // which a packet cannot reach.
        if let Ok(tag) = key.seal_in_place_separate_tag(
            nonce,
            Aad::from(aad),
            &mut esp[CIPHERTEXT_OFFSET..icv_at],
        ) {
            esp[icv_at..].copy_from_slice(tag.as_ref());
        }
    }

    /// A CBC context with an integrity key of any length (the HMAC
    /// known-answer tests use RFC 4231's and RFC 2202's 20-byte keys).
    #[cfg(test)]
    pub(crate) fn cbc_with_keys(
        size: AesKeySize,
        integ: Integrity,
        enc: &[u8],
        auth: &[u8],
    ) -> Result<EspCipher, KeyError> {
        Ok(EspCipher {
            imp: Imp::Cbc(
                Box::new(cbc::CbcHmac::from_keys(size, integ, enc, auth)?),
                Cipher::AesCbc(size, integ),
            ),
        })
    }

    /// CBC only: write the ICV over `esp[..len - icv_len]` as it is (tests
    /// use it to build authentic packets with faulty ciphertext).
    #[cfg(test)]
    pub(crate) fn write_icv(&self, esp: &mut [u8], seq_hi: Option<u32>) {
        if let Imp::Cbc(c, _) = &self.imp {
            c.write_icv(esp, seq_hi);
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
        for cipher in Cipher::ALL {
            let km: Vec<u8> = (0..cipher.key_material_len() as u8).collect();
            let c = EspCipher::new(cipher, &km).unwrap();
            for esn in [false, true] {
                for len in 0..40usize {
                    let seq = if esn {
                        (3u64 << 32) | (len as u64 + 1)
                    } else {
                        len as u64 + 1
                    };
                    let off = c.ciphertext_offset();
                    let mut buf = vec![0u8; c.sealed_len(len)];
                    for (i, b) in buf[off..off + len].iter_mut().enumerate() {
                        *b = i as u8 ^ 0x5a;
                    }
                    let orig = buf[off..off + len].to_vec();
                    c.seal_in_place(&mut buf, len, 4, 0x1234, seq, esn).unwrap();
                    assert_eq!(buf.len() % 4, 0);
                    let ct_len = buf.len() - off - cipher.icv_len();
                    if let Cipher::AesCbc(..) = cipher {
                        assert_eq!(ct_len % AES_BLOCK_LEN, 0, "{cipher}");
                        // Padding is the least that fills the block.
                        assert!(ct_len - len - 2 < AES_BLOCK_LEN, "{cipher}");
                    }
                    let hi = esn.then_some((seq >> 32) as u32);
                    let mut tampered = buf.clone();
                    let o = c.open_in_place(&mut buf, hi).unwrap();
                    assert_eq!(o.payload, off..off + len);
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

    #[test]
    fn cbc_key_lengths_named() {
        let c = Cipher::AesCbc(AesKeySize::Aes256, Integrity::HmacSha256_128);
        assert_eq!(c.key_material_len(), 64);
        assert_eq!(
            EspCipher::new(c, &[0; 36]).unwrap_err(),
            KeyError::WrongLength {
                expected: 64,
                got: 36
            }
        );
        let sha1 = Cipher::AesCbc(AesKeySize::Aes128, Integrity::HmacSha1_96);
        assert_eq!(sha1.key_material_len(), 36);
        assert!(EspCipher::new(sha1, &[1; 36]).is_ok());
        assert_eq!(
            Cipher::AesCbc(AesKeySize::Aes192, Integrity::HmacSha512_256).key_material_len(),
            24 + 64
        );
        assert_eq!(
            Cipher::AesCbc(AesKeySize::Aes128, Integrity::HmacSha384_192).key_material_len(),
            16 + 48
        );
    }

    #[test]
    fn names_round_trip_and_ios_spelling() {
        for c in Cipher::ALL {
            assert_eq!(Cipher::from_name(c.name()), Some(c), "{c}");
        }
        let a256 = Cipher::AesCbc(AesKeySize::Aes256, Integrity::HmacSha256_128);
        let a128 = Cipher::AesCbc(AesKeySize::Aes128, Integrity::HmacSha1_96);
        assert_eq!(Cipher::from_name("aes256-sha256"), Some(a256));
        assert_eq!(Cipher::from_name("aes256-sha2_256"), Some(a256));
        assert_eq!(Cipher::from_name("aes-sha1"), Some(a128));
        assert_eq!(Cipher::from_name("aes256gcm16"), Some(Cipher::Aes256Gcm));
        assert_eq!(Cipher::from_name("aes256-md5"), None);
        assert_eq!(Cipher::from_name("aes-gcm"), None);
        // IOS XE's spellings (genieparser golden outputs).
        assert_eq!(a256.ios_transform(), "esp-256-aes esp-sha256-hmac");
        assert_eq!(a128.ios_transform(), "esp-aes esp-sha-hmac");
        assert_eq!(
            Cipher::AesCbc(AesKeySize::Aes256, Integrity::HmacSha512_256).ios_transform(),
            "esp-256-aes esp-sha512-hmac"
        );
        assert_eq!(Cipher::Aes256Gcm.ios_transform(), "esp-gcm 256");
    }

    #[test]
    fn cbc_iv_unique_per_packet_and_per_install() {
        let c = Cipher::AesCbc(AesKeySize::Aes128, Integrity::HmacSha256_128);
        let km = [3u8; 48];
        let a = EspCipher::new(c, &km).unwrap();
        let b = EspCipher::new(c, &km).unwrap();
        let iv = |e: &EspCipher, seq: u64| {
            let mut buf = vec![0u8; e.sealed_len(0)];
            e.seal_in_place(&mut buf, 0, 59, 1, seq, true).unwrap();
            buf[8..24].to_vec()
        };
        let mut seen = std::collections::HashSet::new();
        for seq in 1..2000u64 {
            let v = iv(&a, seq);
            // Not the counter in clear, never repeated.
            assert_ne!(&v[8..], &seq.to_be_bytes());
            assert!(seen.insert(v), "IV repeated at {seq}");
        }
        // The same keys installed twice draw different IV keys.
        assert_ne!(iv(&a, 1), iv(&b, 1));
        // Past 2^32 with ESN too.
        assert!(seen.insert(iv(&a, 1 << 32 | 1)));
    }

    #[test]
    fn cbc_icv_checked_before_padding_and_length() {
        let c = EspCipher::new(
            Cipher::AesCbc(AesKeySize::Aes256, Integrity::HmacSha256_128),
            &[9; 64],
        )
        .unwrap();
        // Ciphertext of 20 bytes (not whole blocks) with a valid ICV: padding
        // error; the same with a bad ICV: integrity error.
        let mut esp = vec![0u8; 8 + 16 + 20 + 16];
        esp[..4].copy_from_slice(&0x77u32.to_be_bytes());
        esp[7] = 1;
        let mut forged = esp.clone();
        c.write_icv(&mut esp, None);
        assert_eq!(
            c.decrypt_in_place(&mut esp.clone(), None).unwrap_err(),
            OpenError::Padding
        );
        assert_eq!(
            c.decrypt_in_place(&mut forged, None).unwrap_err(),
            OpenError::Integrity
        );
        // With ESN the high half is part of the ICV.
        assert_eq!(
            c.decrypt_in_place(&mut esp, Some(1)).unwrap_err(),
            OpenError::Integrity
        );
        // Too short for one block.
        let mut short = vec![0u8; 8 + 16 + 16];
        assert_eq!(
            c.decrypt_in_place(&mut short, None).unwrap_err(),
            OpenError::Truncated
        );
    }
}
