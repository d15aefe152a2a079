//! Algorithms: strongSwan proposal notation, IANA transform IDs, key sizes.

use crate::wire::{PROTO_ESP, PROTO_IKE, Payload, ProposalRepr, TransformRepr};
use crate::{DhGroup, Encr, EspProposal, IkeProposal, Integ, Prf, ProposalError};

/// Transform type 1: encryption (RFC 7296 3.3.2).
pub const TRANS_ENCR: u8 = 1;
/// Transform type 2: PRF.
pub const TRANS_PRF: u8 = 2;
/// Transform type 3: integrity.
pub const TRANS_INTEG: u8 = 3;
/// Transform type 4: Diffie-Hellman group.
pub const TRANS_DH: u8 = 4;
/// Transform type 5: extended sequence numbers.
pub const TRANS_ESN: u8 = 5;

/// The SA payload offering these IKE proposals (numbered from 1); `spi`
/// for an IKE SA rekey (RFC 7296 1.3.2).
pub fn ike_sa_payload(props: &[IkeProposal], spi: Option<u64>) -> Payload {
    Payload::Sa(
        props
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (eid, kl) = p.encr.transform();
                let mut t = vec![TransformRepr {
                    ty: TRANS_ENCR,
                    id: eid,
                    key_len: Some(kl),
                }];
                t.push(TransformRepr {
                    ty: TRANS_PRF,
                    id: p.prf.id(),
                    key_len: None,
                });
                if let Some(i) = p.integ {
                    t.push(TransformRepr {
                        ty: TRANS_INTEG,
                        id: i.id(),
                        key_len: None,
                    });
                }
                t.push(TransformRepr {
                    ty: TRANS_DH,
                    id: p.dh.id(),
                    key_len: None,
                });
                ProposalRepr {
                    num: (i + 1) as u8,
                    protocol: PROTO_IKE,
                    spi: spi.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default(),
                    transforms: t,
                }
            })
            .collect(),
    )
}

/// The transforms of one ESP proposal (with its DH group when `with_dh`;
/// no ESN).
pub fn esp_transforms(p: &EspProposal, with_dh: bool) -> Vec<TransformRepr> {
    let (eid, kl) = p.encr.transform();
    let mut t = vec![TransformRepr {
        ty: TRANS_ENCR,
        id: eid,
        key_len: if p.encr.has_key_len_attr() {
            Some(kl)
        } else {
            None
        },
    }];
    if let Some(i) = p.integ {
        t.push(TransformRepr {
            ty: TRANS_INTEG,
            id: i.id(),
            key_len: None,
        });
    }
    if with_dh && let Some(g) = p.dh {
        t.push(TransformRepr {
            ty: TRANS_DH,
            id: g.id(),
            key_len: None,
        });
    }
    // No extended sequence numbers (ESN transform 0).
    t.push(TransformRepr {
        ty: TRANS_ESN,
        id: 0,
        key_len: None,
    });
    t
}

/// The SA payload offering these ESP proposals with our inbound `spi`.
pub fn esp_sa_payload(props: &[EspProposal], spi: u32, with_dh: bool) -> Payload {
    Payload::Sa(
        props
            .iter()
            .enumerate()
            .map(|(i, p)| ProposalRepr {
                num: (i + 1) as u8,
                protocol: PROTO_ESP,
                spi: spi.to_be_bytes().to_vec(),
                transforms: esp_transforms(p, with_dh),
            })
            .collect(),
    )
}

impl Encr {
    /// IANA transform ID and key length in bits (the Key Length attribute).
    pub fn transform(self) -> (u16, u16) {
        match self {
            Encr::AesCbc128 => (12, 128),
            Encr::AesCbc256 => (12, 256),
            Encr::AesGcm16_128 => (20, 128),
            Encr::AesGcm16_256 => (20, 256),
            Encr::ChaCha20Poly1305 => (28, 256),
        }
    }
    /// From a transform ID and Key Length attribute (None: absent).
    pub fn from_transform(id: u16, key_bits: Option<u16>) -> Option<Encr> {
        Some(match (id, key_bits) {
            (12, Some(128)) => Encr::AesCbc128,
            (12, Some(256)) => Encr::AesCbc256,
            (20, Some(128)) => Encr::AesGcm16_128,
            (20, Some(256)) => Encr::AesGcm16_256,
            // RFC 7634 2.: no Key Length attribute for ChaCha20-Poly1305.
            (28, None) => Encr::ChaCha20Poly1305,
            _ => return None,
        })
    }
    /// Whether this is an AEAD (no separate integrity transform).
    pub fn is_aead(self) -> bool {
        !matches!(self, Encr::AesCbc128 | Encr::AesCbc256)
    }
    /// Whether the Key Length attribute is sent.
    pub fn has_key_len_attr(self) -> bool {
        !matches!(self, Encr::ChaCha20Poly1305)
    }
    /// Key material taken for it: the key, plus a 4-byte salt for AEADs
    /// (RFC 5282 7.1 in IKE, RFC 4106 / RFC 7634 in ESP).
    pub fn keymat_len(self) -> usize {
        let key = usize::from(self.transform().1) / 8;
        if self.is_aead() { key + 4 } else { key }
    }
    /// The cipher key length alone.
    pub fn key_len(self) -> usize {
        usize::from(self.transform().1) / 8
    }
}

impl Integ {
    /// IANA transform ID.
    pub fn id(self) -> u16 {
        match self {
            Integ::HmacSha1_96 => 2,
            Integ::HmacSha256_128 => 12,
            Integ::HmacSha384_192 => 13,
            Integ::HmacSha512_256 => 14,
        }
    }
    /// From a transform ID.
    pub fn from_id(id: u16) -> Option<Integ> {
        Some(match id {
            2 => Integ::HmacSha1_96,
            12 => Integ::HmacSha256_128,
            13 => Integ::HmacSha384_192,
            14 => Integ::HmacSha512_256,
            _ => return None,
        })
    }
    /// Key length (RFC 4868 2.1.1, RFC 2404).
    pub fn key_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 20,
            Integ::HmacSha256_128 => 32,
            Integ::HmacSha384_192 => 48,
            Integ::HmacSha512_256 => 64,
        }
    }
    /// Truncated ICV length.
    pub fn icv_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 12,
            Integ::HmacSha256_128 => 16,
            Integ::HmacSha384_192 => 24,
            Integ::HmacSha512_256 => 32,
        }
    }
    /// ring's HMAC algorithm.
    pub fn hmac(self) -> ring::hmac::Algorithm {
        match self {
            Integ::HmacSha1_96 => ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Integ::HmacSha256_128 => ring::hmac::HMAC_SHA256,
            Integ::HmacSha384_192 => ring::hmac::HMAC_SHA384,
            Integ::HmacSha512_256 => ring::hmac::HMAC_SHA512,
        }
    }
}

impl Prf {
    /// IANA transform ID.
    pub fn id(self) -> u16 {
        match self {
            Prf::HmacSha256 => 5,
            Prf::HmacSha384 => 6,
            Prf::HmacSha512 => 7,
        }
    }
    /// From a transform ID.
    pub fn from_id(id: u16) -> Option<Prf> {
        Some(match id {
            5 => Prf::HmacSha256,
            6 => Prf::HmacSha384,
            7 => Prf::HmacSha512,
            _ => return None,
        })
    }
    /// Output (and preferred key) length.
    pub fn out_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }
    /// ring's HMAC algorithm.
    pub fn hmac(self) -> ring::hmac::Algorithm {
        match self {
            Prf::HmacSha256 => ring::hmac::HMAC_SHA256,
            Prf::HmacSha384 => ring::hmac::HMAC_SHA384,
            Prf::HmacSha512 => ring::hmac::HMAC_SHA512,
        }
    }
}

impl DhGroup {
    /// IANA group number.
    pub fn id(self) -> u16 {
        match self {
            DhGroup::Ecp256 => 19,
            DhGroup::Ecp384 => 20,
            DhGroup::Curve25519 => 31,
        }
    }
    /// From a group number.
    pub fn from_id(id: u16) -> Option<DhGroup> {
        Some(match id {
            19 => DhGroup::Ecp256,
            20 => DhGroup::Ecp384,
            31 => DhGroup::Curve25519,
            _ => return None,
        })
    }
    /// Length of the KE payload's key exchange data (RFC 5903 7, RFC 8031 2).
    pub fn ke_len(self) -> usize {
        match self {
            DhGroup::Ecp256 => 64,
            DhGroup::Ecp384 => 96,
            DhGroup::Curve25519 => 32,
        }
    }
}

impl Encr {
    /// The name `show crypto ikev2 sa` prints (`Encr: AES-GCM, keysize: 256`).
    pub fn ios_name(self) -> &'static str {
        match self {
            Encr::AesCbc128 | Encr::AesCbc256 => "AES-CBC",
            Encr::AesGcm16_128 | Encr::AesGcm16_256 => "AES-GCM",
            Encr::ChaCha20Poly1305 => "CHACHA20-POLY1305",
        }
    }
    /// Key size in bits.
    pub fn key_bits(self) -> u16 {
        self.transform().1
    }
}

impl Integ {
    /// The name `show crypto ikev2 sa` prints (`Hash: SHA256`; HMAC-SHA1-96 is `SHA96`).
    pub fn ios_name(self) -> &'static str {
        match self {
            Integ::HmacSha1_96 => "SHA96",
            Integ::HmacSha256_128 => "SHA256",
            Integ::HmacSha384_192 => "SHA384",
            Integ::HmacSha512_256 => "SHA512",
        }
    }
}

impl Prf {
    /// The name `show crypto ikev2 sa` prints (`PRF: SHA256`).
    pub fn ios_name(self) -> &'static str {
        match self {
            Prf::HmacSha256 => "SHA256",
            Prf::HmacSha384 => "SHA384",
            Prf::HmacSha512 => "SHA512",
        }
    }
}

impl std::fmt::Display for Encr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encr::ChaCha20Poly1305 => write!(f, "ChaCha20-Poly1305"),
            e => write!(f, "{}-{}", e.ios_name(), e.key_bits()),
        }
    }
}

impl std::fmt::Display for Integ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Integ::HmacSha1_96 => "HMAC-SHA1-96",
            Integ::HmacSha256_128 => "HMAC-SHA2-256-128",
            Integ::HmacSha384_192 => "HMAC-SHA2-384-192",
            Integ::HmacSha512_256 => "HMAC-SHA2-512-256",
        })
    }
}

impl std::fmt::Display for Prf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PRF-HMAC-{}", self.ios_name().replace("SHA", "SHA2-"))
    }
}

fn parse_encr(w: &str) -> Option<Encr> {
    Some(match w {
        "aes128" => Encr::AesCbc128,
        "aes256" => Encr::AesCbc256,
        "aes128gcm16" | "aes128gcm128" => Encr::AesGcm16_128,
        "aes256gcm16" | "aes256gcm128" => Encr::AesGcm16_256,
        "chacha20poly1305" => Encr::ChaCha20Poly1305,
        _ => return None,
    })
}

fn parse_integ(w: &str) -> Option<Integ> {
    Some(match w {
        "sha1" | "sha" => Integ::HmacSha1_96,
        "sha256" | "sha2_256" => Integ::HmacSha256_128,
        "sha384" | "sha2_384" => Integ::HmacSha384_192,
        "sha512" | "sha2_512" => Integ::HmacSha512_256,
        _ => return None,
    })
}

fn parse_prf(w: &str) -> Option<Prf> {
    Some(match w {
        "prfsha256" => Prf::HmacSha256,
        "prfsha384" => Prf::HmacSha384,
        "prfsha512" => Prf::HmacSha512,
        _ => return None,
    })
}

fn parse_dh(w: &str) -> Option<DhGroup> {
    Some(match w {
        "ecp256" | "modp19" => DhGroup::Ecp256,
        "ecp384" => DhGroup::Ecp384,
        "x25519" | "curve25519" => DhGroup::Curve25519,
        _ => return None,
    })
}

fn err(s: &str, what: &str) -> ProposalError {
    ProposalError(format!("{what} in proposal `{s}`"))
}

pub(crate) fn parse_ike(s: &str) -> Result<IkeProposal, ProposalError> {
    let (mut encr, mut integ, mut prf, mut dh) = (None, None, None, None);
    for w in s.trim().split('-') {
        if let Some(e) = parse_encr(w) {
            if encr.replace(e).is_some() {
                return Err(err(s, &format!("a second cipher `{w}`")));
            }
        } else if let Some(i) = parse_integ(w) {
            if integ.replace(i).is_some() {
                return Err(err(s, &format!("a second integrity algorithm `{w}`")));
            }
        } else if let Some(p) = parse_prf(w) {
            prf = Some(p);
        } else if let Some(g) = parse_dh(w) {
            dh = Some(g);
        } else {
            return Err(err(s, &format!("unknown word `{w}`")));
        }
    }
    let encr = encr.ok_or_else(|| err(s, "no cipher"))?;
    if encr == Encr::ChaCha20Poly1305 {
        return Err(err(s, "chacha20poly1305 (ESP only here)"));
    }
    if encr.is_aead() && integ.is_some() {
        return Err(err(s, "an integrity algorithm with an AEAD cipher"));
    }
    if !encr.is_aead() && integ.is_none() {
        return Err(err(s, "no integrity algorithm for a CBC cipher"));
    }
    if integ == Some(Integ::HmacSha1_96) && prf.is_none() {
        return Err(err(s, "no PRF (prfsha1 is not supported; add prfsha256)"));
    }
    // strongSwan: without an explicit PRF, the integrity algorithm's hash.
    let prf = match (prf, integ) {
        (Some(p), _) => p,
        (None, Some(Integ::HmacSha256_128)) => Prf::HmacSha256,
        (None, Some(Integ::HmacSha384_192)) => Prf::HmacSha384,
        (None, Some(Integ::HmacSha512_256)) => Prf::HmacSha512,
        _ => return Err(err(s, "no PRF")),
    };
    let dh = dh.ok_or_else(|| err(s, "no DH group"))?;
    Ok(IkeProposal {
        encr,
        integ,
        prf,
        dh,
    })
}

pub(crate) fn parse_esp(s: &str) -> Result<EspProposal, ProposalError> {
    let (mut encr, mut integ, mut dh) = (None, None, None);
    for w in s.trim().split('-') {
        if let Some(e) = parse_encr(w) {
            if encr.replace(e).is_some() {
                return Err(err(s, &format!("a second cipher `{w}`")));
            }
        } else if let Some(i) = parse_integ(w) {
            if integ.replace(i).is_some() {
                return Err(err(s, &format!("a second integrity algorithm `{w}`")));
            }
        } else if let Some(g) = parse_dh(w) {
            dh = Some(g);
        } else if w == "noesn" {
            // The default: ESN is not offered.
        } else {
            return Err(err(s, &format!("unknown word `{w}`")));
        }
    }
    let encr = encr.ok_or_else(|| err(s, "no cipher"))?;
    if encr.is_aead() && integ.is_some() {
        return Err(err(s, "an integrity algorithm with an AEAD cipher"));
    }
    if !encr.is_aead() && integ.is_none() {
        return Err(err(s, "no integrity algorithm for a CBC cipher"));
    }
    Ok(EspProposal { encr, integ, dh })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_notation() {
        assert_eq!(
            IkeProposal::parse("aes256gcm16-prfsha256-x25519").unwrap(),
            IkeProposal {
                encr: Encr::AesGcm16_256,
                integ: None,
                prf: Prf::HmacSha256,
                dh: DhGroup::Curve25519
            }
        );
        assert_eq!(
            IkeProposal::parse("aes256-sha384-ecp384").unwrap(),
            IkeProposal {
                encr: Encr::AesCbc256,
                integ: Some(Integ::HmacSha384_192),
                prf: Prf::HmacSha384,
                dh: DhGroup::Ecp384
            }
        );
        assert!(IkeProposal::parse("aes256gcm16-prfsha256").is_err());
        assert!(IkeProposal::parse("aes256-x25519").is_err());
        assert!(
            IkeProposal::parse("3des-sha1-modp1024")
                .unwrap_err()
                .0
                .contains("3des")
        );
        assert_eq!(
            EspProposal::parse("aes128-sha1").unwrap(),
            EspProposal {
                encr: Encr::AesCbc128,
                integ: Some(Integ::HmacSha1_96),
                dh: None
            }
        );
        assert_eq!(
            EspProposal::parse("aes256gcm16-x25519").unwrap(),
            EspProposal {
                encr: Encr::AesGcm16_256,
                integ: None,
                dh: Some(DhGroup::Curve25519)
            }
        );
        assert!(EspProposal::parse("aes256gcm16-sha256").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(Encr::AesGcm16_256.to_string(), "AES-GCM-256");
        assert_eq!(Encr::AesCbc128.to_string(), "AES-CBC-128");
        assert_eq!(Integ::HmacSha1_96.ios_name(), "SHA96");
        assert_eq!(Prf::HmacSha384.to_string(), "PRF-HMAC-SHA2-384");
    }
}
