//! IKEv2 cryptography: Diffie-Hellman (ring), the PRF and prf+, SKEYSEED
//! and its keys (RFC 7296 2.14), child KEYMAT (2.17), PSK AUTH (2.15) and
//! the SK payload (3.14; RFC 5282 for AES-GCM). No hand-written cipher:
//! ring for ECDH, HMAC and AES-GCM, RustCrypto `aes`+`cbc` for AES-CBC.

use crypto_bigint::{
    Odd, U2048,
    modular::{FixedMontyForm, FixedMontyParams},
};
use p521::elliptic_curve::sec1::ToSec1Point;
use ring::{aead, agreement, hmac};
use zeroize::Zeroizing;

use crate::{
    DhGroup, Encr, IkeProposal, Integ, Prf,
    random::Random,
    wire::{HEADER_LEN, HeaderRepr, SkRef},
};

/// Why a cryptographic operation failed (no detail: nothing to leak).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// A peer's public value is malformed or the agreement failed.
    BadPublicKey,
    /// The SK payload did not authenticate or is malformed.
    Integrity,
    /// Random generation failed.
    Rng,
}

/// Secret bytes, zeroized on drop.
pub type Secret = Zeroizing<Vec<u8>>;

/// An ephemeral DH key pair.
pub struct Dh {
    /// The group.
    pub group: DhGroup,
    private: Private,
    public: Vec<u8>,
}

/// The private half of a [`Dh`], by implementation: ring for X25519,
/// P-256 and P-384; RustCrypto's `p521` for ECP-521; a Montgomery-form
/// exponentiation (crypto-bigint, constant time) for MODP-2048.
enum Private {
    Ring(agreement::EphemeralPrivateKey),
    /// Zeroized on drop by `elliptic-curve`.
    P521(p521::SecretKey),
    Modp2048(Zeroizing<U2048>),
}

/// The prime of the 2048-bit MODP group 14 (RFC 3526 section 3); the
/// generator is 2. Checked against its definition from pi in
/// `testdata/gen_modp2048.py`.
const MODP2048_P: U2048 = U2048::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
));

/// Montgomery parameters of [`MODP2048_P`], computed once.
fn modp2048_params() -> &'static FixedMontyParams<{ U2048::LIMBS }> {
    static P: std::sync::OnceLock<FixedMontyParams<{ U2048::LIMBS }>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        FixedMontyParams::new_vartime(Odd::new(MODP2048_P).expect("the RFC 3526 prime is odd"))
    })
}

/// base^exp mod p of group 14, in constant time in `exp`.
fn modp2048_pow(base: &U2048, exp: &U2048) -> U2048 {
    FixedMontyForm::new(base, modp2048_params())
        .pow(exp)
        .retrieve()
}

/// A peer's group 14 public value, validated as NIST SP 800-56A rev. 3
/// 5.6.2.3.1 (full public-key validation of a safe-prime group): 1 < y <
/// p-1 (RFC 7296 leaves it to the group; 0, 1 and p-1 would force a
/// known shared secret) and y^q = 1 mod p with q = (p-1)/2, so that y is
/// in the subgroup the generator 2 spans.
fn modp2048_peer(peer: &[u8]) -> Result<U2048, CryptoError> {
    let y = U2048::from_be_slice(peer);
    let p_minus_1 = MODP2048_P.wrapping_sub(&U2048::ONE);
    if y <= U2048::ONE || y >= p_minus_1 {
        return Err(CryptoError::BadPublicKey);
    }
    if modp2048_pow(&y, &p_minus_1.shr_vartime(1)) != U2048::ONE {
        return Err(CryptoError::BadPublicKey);
    }
    Ok(y)
}

impl Dh {
    /// A fresh key pair.
    pub fn generate(group: DhGroup, rng: &dyn Random) -> Result<Dh, CryptoError> {
        let (private, public) = match group {
            DhGroup::Ecp521 => {
                // A uniform scalar in [1, n-1]: 521 random bits, retried
                // while not below the group order n (about half the time).
                let key = loop {
                    let mut b = Zeroizing::new([0u8; 66]);
                    rng.fill(&mut b[..]).map_err(|_| CryptoError::Rng)?;
                    b[0] &= 0x01;
                    if let Ok(k) = p521::SecretKey::from_slice(&b[..]) {
                        break k;
                    }
                };
                // RFC 5903 7: x || y without the 0x04 prefix.
                let point = key.public_key().to_sec1_point(false);
                let public = point.as_bytes().get(1..).unwrap_or_default().to_vec();
                (Private::P521(key), public)
            }
            DhGroup::Modp2048 => {
                // A 2047-bit exponent (below p); 0 and 1 are refused.
                let x = loop {
                    let mut b = Zeroizing::new([0u8; 256]);
                    rng.fill(&mut b[..]).map_err(|_| CryptoError::Rng)?;
                    b[0] &= 0x7f;
                    let x = Zeroizing::new(U2048::from_be_slice(&b[..]));
                    if *x > U2048::ONE {
                        break x;
                    }
                };
                Self::modp2048_from(x)
            }
            _ => {
                let alg = Self::alg(group);
                let private = agreement::EphemeralPrivateKey::generate(alg, rng.ring())
                    .map_err(|_| CryptoError::Rng)?;
                let pk = private.compute_public_key().map_err(|_| CryptoError::Rng)?;
                let pk = pk.as_ref();
                // RFC 5903 7: the KE data of ECP groups is x || y, without the
                // uncompressed-point 0x04 prefix ring uses.
                let public = match group {
                    DhGroup::Curve25519 => pk.to_vec(),
                    _ => pk.get(1..).unwrap_or_default().to_vec(),
                };
                (Private::Ring(private), public)
            }
        };
        Ok(Dh {
            group,
            private,
            public,
        })
    }

    /// Group 14's key pair for the private exponent `x`: (x, 2^x mod p as
    /// 256 bytes, RFC 7296 3.4: padded to the length of the prime).
    fn modp2048_from(x: Zeroizing<U2048>) -> (Private, Vec<u8>) {
        let y = modp2048_pow(&U2048::from_u8(2), &x);
        (Private::Modp2048(x), y.to_be_bytes().as_ref().to_vec())
    }

    fn alg(group: DhGroup) -> &'static agreement::Algorithm {
        match group {
            DhGroup::Curve25519 => &agreement::X25519,
            DhGroup::Ecp384 => &agreement::ECDH_P384,
            DhGroup::Ecp256 => &agreement::ECDH_P256,
            // Never asked for: these two have their own `Private`.
            DhGroup::Ecp521 | DhGroup::Modp2048 => &agreement::ECDH_P256,
        }
    }

    /// Our public value as the KE payload carries it.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret g^ir with the peer's KE data (RFC 5903 7: the x
    /// coordinate for ECP groups; RFC 8031 for Curve25519, which refuses
    /// an all-zero result; RFC 7296 2.14 for MODP: big endian, as long as
    /// the prime). The peer's value is validated first: for ECP groups a
    /// point on the curve other than the identity (RFC 6989 2.3, NIST SP
    /// 800-56A 5.6.2.3.3), for MODP-2048 see [`modp2048_peer`].
    pub fn agree(self, peer: &[u8]) -> Result<Secret, CryptoError> {
        if peer.len() != self.group.ke_len() {
            return Err(CryptoError::BadPublicKey);
        }
        let point = || {
            let mut point = Vec::with_capacity(peer.len() + 1);
            point.push(4);
            point.extend_from_slice(peer);
            point
        };
        match self.private {
            Private::P521(key) => {
                let pk = p521::PublicKey::from_sec1_bytes(&point())
                    .map_err(|_| CryptoError::BadPublicKey)?;
                let s = p521::ecdh::diffie_hellman(key.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(s.raw_secret_bytes().to_vec()))
            }
            Private::Modp2048(x) => {
                let y = modp2048_peer(peer)?;
                let s = Zeroizing::new(modp2048_pow(&y, &x));
                Ok(Zeroizing::new(s.to_be_bytes().as_ref().to_vec()))
            }
            Private::Ring(private) => {
                let data = if self.group == DhGroup::Curve25519 {
                    peer.to_vec()
                } else {
                    point()
                };
                let alg = Self::alg(self.group);
                let peer = agreement::UnparsedPublicKey::new(alg, &data);
                agreement::agree_ephemeral(private, &peer, |k| Zeroizing::new(k.to_vec()))
                    .map_err(|_| CryptoError::BadPublicKey)
            }
        }
    }
}

/// prf(key, data).
pub fn prf(p: Prf, key: &[u8], data: &[u8]) -> Secret {
    let k = hmac::Key::new(p.hmac(), key);
    Zeroizing::new(hmac::sign(&k, data).as_ref().to_vec())
}

/// prf+(key, seed) truncated to `len` bytes (RFC 7296 2.13).
pub fn prf_plus(p: Prf, key: &[u8], seed: &[u8], len: usize) -> Secret {
    let k = hmac::Key::new(p.hmac(), key);
    let mut out = Zeroizing::new(Vec::with_capacity(len + p.out_len()));
    let mut t: Secret = Zeroizing::new(Vec::new());
    let mut i: u8 = 1;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(&t);
        ctx.update(seed);
        ctx.update(&[i]);
        t = Zeroizing::new(ctx.sign().as_ref().to_vec());
        out.extend_from_slice(&t);
        // prf+ is defined for at most 255 iterations.
        i = i.wrapping_add(1);
        if i == 0 {
            break;
        }
    }
    out.truncate(len);
    out
}

/// The keys of an IKE SA (RFC 7296 2.14). Never printed.
pub struct IkeKeys {
    /// The negotiated algorithms.
    pub prop: IkeProposal,
    /// SK_d: for child SAs and IKE rekeys.
    pub sk_d: Secret,
    /// SK_ai / SK_ar.
    pub sk_ai: Secret,
    /// SK_ar.
    pub sk_ar: Secret,
    /// SK_ei / SK_er (with the 4-byte salt for GCM).
    pub sk_ei: Secret,
    /// SK_er.
    pub sk_er: Secret,
    /// SK_pi / SK_pr (for AUTH).
    pub sk_pi: Secret,
    /// SK_pr.
    pub sk_pr: Secret,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IkeKeys {{ prop: {:?}, <redacted> }}", self.prop)
    }
}

/// SKEYSEED of a new IKE SA: prf(Ni | Nr, g^ir).
pub fn skeyseed(p: Prf, ni: &[u8], nr: &[u8], shared: &[u8]) -> Secret {
    let key = [ni, nr].concat();
    prf(p, &key, shared)
}

/// SKEYSEED of a rekeyed IKE SA: prf(SK_d (old), g^ir (new) | Ni | Nr)
/// (RFC 7296 2.18), with the old SA's PRF.
pub fn skeyseed_rekey(
    old_prf: Prf,
    old_sk_d: &[u8],
    shared: &[u8],
    ni: &[u8],
    nr: &[u8],
) -> Secret {
    let data = Zeroizing::new([shared, ni, nr].concat());
    prf(old_prf, old_sk_d, &data)
}

impl IkeKeys {
    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} =
    /// prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
    pub fn derive(
        prop: &IkeProposal,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let pl = prop.prf.out_len();
        let al = prop.integ.map_or(0, Integ::key_len);
        let el = prop.encr.keymat_len();
        let seed = [ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
        let km = prf_plus(prop.prf, skeyseed, &seed, 3 * pl + 2 * al + 2 * el);
        let mut at = 0;
        let mut take = |n: usize| {
            let s = Zeroizing::new(km[at..at + n].to_vec());
            at += n;
            s
        };
        IkeKeys {
            prop: prop.clone(),
            sk_d: take(pl),
            sk_ai: take(al),
            sk_ar: take(al),
            sk_ei: take(el),
            sk_er: take(el),
            sk_pi: take(pl),
            sk_pr: take(pl),
        }
    }

    /// Encrypt and authenticate `inner` (a payload chain starting with
    /// type `first_inner`) into a whole message with header `h`. `from_initiator`
    /// picks SK_ei/SK_ai or SK_er/SK_ar.
    pub fn seal(
        &self,
        from_initiator: bool,
        h: &HeaderRepr,
        first_inner: u8,
        inner: &[u8],
        rng: &dyn Random,
    ) -> Result<Vec<u8>, CryptoError> {
        let (ek, ak) = if from_initiator {
            (&self.sk_ei, &self.sk_ai)
        } else {
            (&self.sk_er, &self.sk_ar)
        };
        seal_payload(
            self.prop.encr,
            self.prop.integ,
            ek,
            ak,
            h,
            first_inner,
            inner,
            None,
            rng,
        )
    }

    /// Check and decrypt the SK payload of a received message; returns the
    /// inner payload chain's bytes. `from_initiator`: who sent it.
    pub fn open(&self, from_initiator: bool, msg: &[u8], sk: SkRef) -> Result<Secret, CryptoError> {
        let (ek, ak) = if from_initiator {
            (&self.sk_ei, &self.sk_ai)
        } else {
            (&self.sk_er, &self.sk_ar)
        };
        open(self.prop.encr, self.prop.integ, ek, ak, msg, sk)
    }
}

/// The SK payload, AES-GCM (RFC 5282) or AES-CBC + HMAC (RFC 7296
/// 3.14), or with `frag = Some((number, total))` an Encrypted
/// Fragment payload (RFC 7383 2.5: its Fragment Number and Total
/// Fragments follow the generic header and are authenticated with it).
#[allow(clippy::too_many_arguments)]
pub fn seal_payload(
    encr: Encr,
    integ: Option<Integ>,
    ek: &[u8],
    ak: &[u8],
    h: &HeaderRepr,
    first_inner: u8,
    inner: &[u8],
    frag: Option<(u16, u16)>,
    rng: &dyn Random,
) -> Result<Vec<u8>, CryptoError> {
    let (ptype, extra) = match frag {
        Some(_) => (crate::wire::payload_type::SKF, 4),
        None => (crate::wire::payload_type::SK, 0),
    };
    let frag_fields = |out: &mut Vec<u8>| {
        if let Some((n, t)) = frag {
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(&t.to_be_bytes());
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + 16 + inner.len() + 64);
    match (encr, integ) {
        (Encr::AesGcm16_128 | Encr::AesGcm16_256, None) => {
            // RFC 5282 3: 8-byte IV; no block alignment, so no padding
            // beyond the Pad Length byte itself.
            let mut iv = [0u8; 8];
            rng.fill(&mut iv).map_err(|_| CryptoError::Rng)?;
            let body_len = 4 + extra + 8 + inner.len() + 1 + 16;
            h.emit(ptype, HEADER_LEN + body_len, &mut out);
            out.extend_from_slice(&[first_inner, 0]);
            out.extend_from_slice(&(body_len as u16).to_be_bytes());
            frag_fields(&mut out);
            let aad_end = out.len();
            out.extend_from_slice(&iv);
            let ct_start = out.len();
            out.extend_from_slice(inner);
            out.push(0);
            let key = gcm_key(encr, ek)?;
            let nonce = gcm_nonce(ek, &iv)?;
            let (aad, ct) = out.split_at_mut(ct_start);
            let tag = key
                .seal_in_place_separate_tag(nonce, aead::Aad::from(&aad[..aad_end]), ct)
                .map_err(|_| CryptoError::Integrity)?;
            out.extend_from_slice(tag.as_ref());
            Ok(out)
        }
        (Encr::AesCbc128 | Encr::AesCbc256, Some(integ)) => {
            use cbc::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::NoPadding};
            let mut iv = [0u8; 16];
            rng.fill(&mut iv).map_err(|_| CryptoError::Rng)?;
            // Pad to the block: inner | padding | pad length (RFC 7296 3.14).
            let pad = (16 - (inner.len() + 1) % 16) % 16;
            let ct_len = inner.len() + pad + 1;
            let body_len = 4 + extra + 16 + ct_len + integ.icv_len();
            h.emit(ptype, HEADER_LEN + body_len, &mut out);
            out.extend_from_slice(&[first_inner, 0]);
            out.extend_from_slice(&(body_len as u16).to_be_bytes());
            frag_fields(&mut out);
            out.extend_from_slice(&iv);
            let ct_start = out.len();
            out.extend_from_slice(inner);
            out.extend(std::iter::repeat_n(0u8, pad));
            out.push(pad as u8);
            let ct = &mut out[ct_start..];
            let r = match encr {
                Encr::AesCbc128 => cbc::Encryptor::<aes::Aes128>::new_from_slices(ek, &iv)
                    .map_err(|_| CryptoError::Integrity)?
                    .encrypt_padded::<NoPadding>(ct, ct_len)
                    .map(|_| ()),
                _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(ek, &iv)
                    .map_err(|_| CryptoError::Integrity)?
                    .encrypt_padded::<NoPadding>(ct, ct_len)
                    .map(|_| ()),
            };
            r.map_err(|_| CryptoError::Integrity)?;
            let k = hmac::Key::new(integ.hmac(), ak);
            let tag = hmac::sign(&k, &out);
            out.extend_from_slice(&tag.as_ref()[..integ.icv_len()]);
            Ok(out)
        }
        _ => Err(CryptoError::Integrity),
    }
}

fn gcm_key(encr: Encr, ek: &[u8]) -> Result<aead::LessSafeKey, CryptoError> {
    let alg = if encr == Encr::AesGcm16_128 {
        &aead::AES_128_GCM
    } else {
        &aead::AES_256_GCM
    };
    let kl = encr.key_len();
    let key = ek.get(..kl).ok_or(CryptoError::Integrity)?;
    Ok(aead::LessSafeKey::new(
        aead::UnboundKey::new(alg, key).map_err(|_| CryptoError::Integrity)?,
    ))
}

fn gcm_nonce(ek: &[u8], iv: &[u8]) -> Result<aead::Nonce, CryptoError> {
    // RFC 5282 4: nonce = salt (the last 4 bytes of the key material) | IV.
    let salt = ek
        .get(ek.len().saturating_sub(4)..)
        .ok_or(CryptoError::Integrity)?;
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(iv.get(..8).ok_or(CryptoError::Integrity)?);
    Ok(aead::Nonce::assume_unique_for_key(n))
}

/// Verify and decrypt an SK payload (the message's last payload).
pub fn open(
    encr: Encr,
    integ: Option<Integ>,
    ek: &[u8],
    ak: &[u8],
    msg: &[u8],
    sk: SkRef,
) -> Result<Secret, CryptoError> {
    let body_start = sk.offset.checked_add(4).ok_or(CryptoError::Integrity)?;
    open_at(encr, integ, ek, ak, msg, body_start)
}

/// Verify and decrypt the encrypted payload (SK, or SKF after its
/// fragment fields) whose IV starts at `body_start` and which ends the
/// message; everything before `body_start` is authenticated with it.
pub fn open_at(
    encr: Encr,
    integ: Option<Integ>,
    ek: &[u8],
    ak: &[u8],
    msg: &[u8],
    body_start: usize,
) -> Result<Secret, CryptoError> {
    if body_start > msg.len() {
        return Err(CryptoError::Integrity);
    }
    match (encr, integ) {
        (Encr::AesGcm16_128 | Encr::AesGcm16_256, None) => {
            let iv = msg
                .get(body_start..body_start + 8)
                .ok_or(CryptoError::Integrity)?;
            let ct = msg.get(body_start + 8..).ok_or(CryptoError::Integrity)?;
            if ct.len() < 16 + 1 {
                return Err(CryptoError::Integrity);
            }
            let key = gcm_key(encr, ek)?;
            let nonce = gcm_nonce(ek, iv)?;
            let mut buf = Zeroizing::new(ct.to_vec());
            let plain_len = key
                .open_in_place(nonce, aead::Aad::from(&msg[..body_start]), &mut buf)
                .map_err(|_| CryptoError::Integrity)?
                .len();
            buf.truncate(plain_len);
            strip_pad(buf)
        }
        (Encr::AesCbc128 | Encr::AesCbc256, Some(integ)) => {
            use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::NoPadding};
            let icv = integ.icv_len();
            let signed_end = msg.len().checked_sub(icv).ok_or(CryptoError::Integrity)?;
            if signed_end < body_start + 16 {
                return Err(CryptoError::Integrity);
            }
            // Integrity first, in constant time, before decrypting.
            let k = hmac::Key::new(integ.hmac(), ak);
            let tag = hmac::sign(&k, &msg[..signed_end]);
            if !ring_ct_eq(&tag.as_ref()[..icv], &msg[signed_end..]) {
                return Err(CryptoError::Integrity);
            }
            let iv = &msg[body_start..body_start + 16];
            let mut buf = Zeroizing::new(msg[body_start + 16..signed_end].to_vec());
            if buf.is_empty() || !buf.len().is_multiple_of(16) {
                return Err(CryptoError::Integrity);
            }
            let n = buf.len();
            let r = match encr {
                Encr::AesCbc128 => cbc::Decryptor::<aes::Aes128>::new_from_slices(ek, iv)
                    .map_err(|_| CryptoError::Integrity)?
                    .decrypt_padded::<NoPadding>(&mut buf[..n])
                    .map(|_| ()),
                _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(ek, iv)
                    .map_err(|_| CryptoError::Integrity)?
                    .decrypt_padded::<NoPadding>(&mut buf[..n])
                    .map(|_| ()),
            };
            r.map_err(|_| CryptoError::Integrity)?;
            strip_pad(buf)
        }
        _ => Err(CryptoError::Integrity),
    }
}

fn ring_ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn strip_pad(mut buf: Secret) -> Result<Secret, CryptoError> {
    let pad = usize::from(*buf.last().ok_or(CryptoError::Integrity)?);
    let keep = buf
        .len()
        .checked_sub(pad + 1)
        .ok_or(CryptoError::Integrity)?;
    buf.truncate(keep);
    Ok(buf)
}

/// Child SA KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 2.17),
/// split into (initiator-to-responder, responder-to-initiator) key
/// material, each encryption key (| salt) then integrity key.
pub fn child_keymat(
    p: Prf,
    sk_d: &[u8],
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    encr: Encr,
    integ: Option<Integ>,
) -> (Secret, Secret) {
    let one = encr.keymat_len() + integ.map_or(0, Integ::key_len);
    let seed = Zeroizing::new([shared.unwrap_or_default(), ni, nr].concat());
    let km = prf_plus(p, sk_d, &seed, 2 * one);
    (
        Zeroizing::new(km[..one].to_vec()),
        Zeroizing::new(km[one..].to_vec()),
    )
}

/// The pad string of PSK AUTH (RFC 7296 2.15).
pub const KEY_PAD: &[u8] = b"Key Pad for IKEv2";
/// AUTH method 2: shared key message integrity code.
pub const AUTH_PSK: u8 = 2;

/// The AUTH value with a pre-shared key (RFC 7296 2.15):
/// prf(prf(PSK, "Key Pad for IKEv2"), RealMessage | Nonce | prf(SK_p, ID')),
/// where ID' is the ID payload's body (type, reserved, data).
pub fn psk_auth(
    p: Prf,
    psk: &[u8],
    real_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Secret {
    let octets = signed_octets(p, real_message, peer_nonce, sk_p, id_body);
    let k = prf(p, psk, KEY_PAD);
    prf(p, &k, &octets)
}

/// The octets an AUTH payload covers (RFC 7296 2.15): RealMessage |
/// Nonce | prf(SK_p, ID'), ID' being the ID payload's body (type,
/// reserved, data). A PSK AUTH is a MAC of them, a certificate's AUTH a
/// signature.
pub fn signed_octets(
    p: Prf,
    real_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Vec<u8> {
    let mac_id = prf(p, sk_p, id_body);
    [real_message, peer_nonce, &mac_id].concat()
}

/// NAT detection hash SHA1(SPIi | SPIr | IP | Port) (RFC 7296 2.23).
pub fn nat_hash(spi_i: u64, spi_r: u64, addr: std::net::SocketAddr) -> Vec<u8> {
    let mut d = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    d.update(&spi_i.to_be_bytes());
    d.update(&spi_r.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(a) => d.update(&a.octets()),
        std::net::IpAddr::V6(a) => d.update(&a.octets()),
    }
    d.update(&addr.port().to_be_bytes());
    d.finish().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Message, Payload};
    use ring::rand::SystemRandom;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc4231_hmac_sha2_case_2() {
        // RFC 4231 4.3 (Test Case 2): key "Jefe".
        let data = b"what do ya want for nothing?";
        assert_eq!(
            *prf(Prf::HmacSha256, b"Jefe", data),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            *prf(Prf::HmacSha384, b"Jefe", data),
            hex(
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649"
            )
        );
        assert_eq!(
            *prf(Prf::HmacSha512, b"Jefe", data),
            hex(
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
            )
        );
    }

    #[test]
    fn rfc3602_aes_cbc_case_2() {
        // RFC 3602 4, Case #2: AES-128-CBC, 32 bytes.
        use cbc::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::NoPadding};
        let key = hex("c286696d887c9aa0611bbb3e2025a45a");
        let iv = hex("562e17996d093d28ddb3ba695a2e6f58");
        let mut pt = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let ct = hex("d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1");
        cbc::Encryptor::<aes::Aes128>::new_from_slices(&key, &iv)
            .unwrap()
            .encrypt_padded::<NoPadding>(&mut pt, 32)
            .unwrap();
        assert_eq!(pt, ct);
    }

    #[test]
    fn prf_plus_is_t1_t2() {
        // T1 = prf(K, S | 0x01), T2 = prf(K, T1 | S | 0x02).
        let t1 = prf(Prf::HmacSha256, b"k", b"seed\x01");
        let t2 = prf(Prf::HmacSha256, b"k", &[&t1[..], b"seed\x02"].concat());
        let out = prf_plus(Prf::HmacSha256, b"k", b"seed", 40);
        assert_eq!(&out[..32], &t1[..]);
        assert_eq!(&out[32..], &t2[..8]);
    }

    #[test]
    fn psk_auth_construction() {
        // Byte-exact against RFC 7296 2.15 spelled out with plain HMAC.
        let (psk, msg, nonce, skp, id) = (
            b"secret".as_slice(),
            b"msg1",
            [5u8; 32],
            [6u8; 32],
            [1u8, 0, 0, 0, 198, 51, 100, 1],
        );
        let k = hmac::Key::new(hmac::HMAC_SHA256, psk);
        let pad = hmac::sign(&k, b"Key Pad for IKEv2");
        let macid = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &skp), &id);
        let mut octets = msg.to_vec();
        octets.extend_from_slice(&nonce);
        octets.extend_from_slice(macid.as_ref());
        let want = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, pad.as_ref()), &octets);
        assert_eq!(
            *psk_auth(Prf::HmacSha256, psk, msg, &nonce, &skp, &id),
            want.as_ref()
        );
    }

    #[test]
    fn nat_hash_bytes() {
        let a: std::net::SocketAddr = "198.51.100.1:500".parse().unwrap();
        let mut d = vec![];
        d.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9]);
        d.extend_from_slice(&[198, 51, 100, 1, 0x01, 0xf4]);
        let want = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &d);
        assert_eq!(nat_hash(0x0102030405060708, 9, a), want.as_ref());
    }

    #[test]
    fn dh_agree_each_group() {
        let rng = SystemRandom::new();
        for g in [
            DhGroup::Curve25519,
            DhGroup::Ecp256,
            DhGroup::Ecp384,
            DhGroup::Ecp521,
            DhGroup::Modp2048,
        ] {
            let a = Dh::generate(g, &rng).unwrap();
            let b = Dh::generate(g, &rng).unwrap();
            assert_eq!(a.public().len(), g.ke_len());
            let (pa, pb) = (a.public().to_vec(), b.public().to_vec());
            let s1 = a.agree(&pb).unwrap();
            let s2 = b.agree(&pa).unwrap();
            assert_eq!(*s1, *s2);
            let c = Dh::generate(g, &rng).unwrap();
            assert!(c.agree(&pa[1..]).is_err());
        }
    }

    /// A group 14 key pair with a fixed private exponent (hex).
    fn modp2048_with(x: &str) -> Dh {
        let (private, public) = Dh::modp2048_from(Zeroizing::new(U2048::from_be_slice(&hex(x))));
        Dh {
            group: DhGroup::Modp2048,
            private,
            public,
        }
    }

    #[test]
    fn modp2048_known_answers() {
        // testdata/gen_modp2048.py: the prime from its definition (pi),
        // public values and shared secrets from Python's pow().
        let mut f = std::collections::HashMap::<&str, Vec<&str>>::new();
        for l in include_str!("../testdata/modp2048.txt").lines() {
            if let Some((k, v)) = l.split_once(' ')
                && !l.starts_with('#')
            {
                f.entry(k).or_default().push(v);
            }
        }
        assert_eq!(MODP2048_P.to_be_bytes().as_ref(), hex(f["p"][0]));
        assert_eq!(f["xi"].len(), 2);
        #[allow(clippy::needless_range_loop)] // five lists, one index
        for n in 0..2 {
            let (i, r) = (modp2048_with(f["xi"][n]), modp2048_with(f["xr"][n]));
            assert_eq!(i.public(), hex(f["yi"][n]), "vector {n}");
            assert_eq!(r.public(), hex(f["yr"][n]), "vector {n}");
            assert_eq!(i.public().len(), 256);
            let want = hex(f["shared"][n]);
            assert_eq!(*i.agree(&hex(f["yr"][n])).unwrap(), want, "vector {n}");
            assert_eq!(*r.agree(&hex(f["yi"][n])).unwrap(), want, "vector {n}");
        }
        // 0, 1, p-1, p, p+1 and p-2 (outside the order-q subgroup) refused.
        assert_eq!(f["bad"].len(), 6);
        for bad in &f["bad"] {
            let d = modp2048_with(f["xi"][0]);
            assert_eq!(
                d.agree(&hex(bad)).unwrap_err(),
                CryptoError::BadPublicKey,
                "{}",
                &bad[bad.len() - 8..]
            );
        }
        // A wrong length too.
        let d = modp2048_with(f["xi"][0]);
        assert!(d.agree(&hex(f["yr"][0])[1..]).is_err());
    }

    /// A group 21 key pair with a fixed private scalar (hex).
    fn p521_with(k: &str) -> Dh {
        let key = p521::SecretKey::from_slice(&hex(k)).unwrap();
        let public = key.public_key().to_sec1_point(false).as_bytes()[1..].to_vec();
        Dh {
            group: DhGroup::Ecp521,
            private: Private::P521(key),
            public,
        }
    }

    #[test]
    fn ecp521_known_answer() {
        // The 521-bit random ECP group's test data of RFC 5114 appendix A
        // (private keys dA, dB; KE data x|y of each public key; shared
        // secret: the x coordinate, RFC 5903 7), the same numbers Python's
        // `cryptography` (OpenSSL) computes from dA and dB.
        let i = "0113F82DA825735E3D97276683B2B74277BAD27335EA71664AF2430CC4F33459B9669EE78B3FFB9B8683015D344DCBFEF6FB9AF4C6C470BE254516CD3C1A1FB47362";
        let r = "00CEE3480D8645A17D249F2776D28BAE616952D1791FDB4B70F7C3378732AA1B22928448BCD1DC2496D435B01048066EBE4F72903C361B1A9DC1193DC2C9D0891B96";
        let gi = "01EBB34DD75721ABF8ADC9DBED17889CBB9765D90A7C60F2CEF007BB0F2B26E14881FD4442E689D61CB2DD046EE30E3FFD20F9A45BBDF6413D583A2DBF59924FD35C\
                  00F6B632D194C0388E22D8437E558C552AE195ADFD153F92D74908351B2F8C4EDA94EDB0916D1B53C020B5EECAED1A5FC38A233E4830587BB2EE3489B3B42A5A86A4";
        let gr = "010EBFAFC6E85E08D24BFFFCC1A4511DB0E634BEEB1B6DEC8C5939AE44766201AF6200430BA97C8AC6A0E9F08B33CE7E9FEEB5BA4EE5E0D81510C24295B8A08D0235\
                  00A4A6EC300DF9E257B0372B5E7ABFEF093436719A77887EBB0B18CF8099B9F4212B6E30A1419C18E029D36863CC9D448F4DBA4D2A0E60711BE572915FBD4FEF2695";
        let shared = "00CDEA89621CFA46B132F9E4CFE2261CDE2D4368EB5656634C7CC98C7A00CDE54ED1866A0DD3E6126C9D2F845DAFF82CEB1DA08F5D87521BB0EBECA77911169C20CC";
        assert_eq!(p521_with(i).public(), hex(gi));
        assert_eq!(p521_with(r).public(), hex(gr));
        assert_eq!(p521_with(i).public().len(), DhGroup::Ecp521.ke_len());
        assert_eq!(*p521_with(i).agree(&hex(gr)).unwrap(), hex(shared));
        assert_eq!(*p521_with(r).agree(&hex(gi)).unwrap(), hex(shared));
        // Not a point on the curve (one bit of y flipped), (0, 0) (what
        // the identity would be written as), coordinates above p: refused.
        let mut off = hex(gr);
        off[131] ^= 1;
        let mut big = vec![0xff; 132];
        big[0] = 0x03;
        for bad in [off, vec![0; 132], big] {
            assert_eq!(
                p521_with(i).agree(&bad).unwrap_err(),
                CryptoError::BadPublicKey
            );
        }
    }

    fn keys(encr: Encr, integ: Option<Integ>) -> IkeKeys {
        let prop = IkeProposal {
            encr,
            integ,
            prf: Prf::HmacSha256,
            dh: DhGroup::Curve25519,
        };
        IkeKeys::derive(&prop, &[3; 32], &[1; 32], &[2; 32], 1, 2)
    }

    #[test]
    fn sk_seal_open_each_cipher() {
        let rng = SystemRandom::new();
        for (e, i) in [
            (Encr::AesGcm16_128, None),
            (Encr::AesGcm16_256, None),
            (Encr::AesCbc128, Some(Integ::HmacSha256_128)),
            (Encr::AesCbc256, Some(Integ::HmacSha512_256)),
            (Encr::AesCbc256, Some(Integ::HmacSha1_96)),
        ] {
            let k = keys(e, i);
            let h = HeaderRepr {
                spi_i: 1,
                spi_r: 2,
                exchange: wire::IKE_AUTH,
                flags: wire::FLAG_INITIATOR,
                msg_id: 1,
            };
            let inner_p = [Payload::Nonce(vec![0xab; 37])];
            let mut inner = vec![];
            let first = wire::emit_payloads(&inner_p, &mut inner);
            let msg = k.seal(true, &h, first, &inner, &rng).unwrap();
            let m = Message::parse(&msg).unwrap();
            let sk = m.sk.unwrap();
            assert_eq!(sk.first_inner, wire::payload_type::NONCE);
            let plain = k.open(true, &msg, sk).unwrap();
            assert_eq!(&plain[..], &inner[..]);
            // Wrong direction's keys and any flipped bit fail.
            assert!(k.open(false, &msg, sk).is_err());
            for pos in [0, 20, msg.len() / 2, msg.len() - 1] {
                let mut bad = msg.clone();
                bad[pos] ^= 1;
                assert!(k.open(true, &bad, sk).is_err(), "{e:?} pos {pos}");
            }
        }
    }

    #[test]
    fn child_keymat_split() {
        let (i2r, r2i) = child_keymat(
            Prf::HmacSha256,
            &[1; 32],
            None,
            &[2; 32],
            &[3; 32],
            Encr::AesCbc256,
            Some(Integ::HmacSha256_128),
        );
        let all = prf_plus(
            Prf::HmacSha256,
            &[1; 32],
            &[[2u8; 32], [3u8; 32]].concat(),
            128,
        );
        assert_eq!(&all[..64], &i2r[..]);
        assert_eq!(&all[64..], &r2i[..]);
    }
}
