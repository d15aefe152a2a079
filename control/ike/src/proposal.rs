//! Algorithms: strongSwan proposal notation, IANA transform IDs, key sizes.

use crate::wire::{PROTO_ESP, PROTO_IKE, Payload, ProposalRepr, TransformRepr};
use crate::{DhGroup, Encr, EspProposal, IkeOffer, IkeProposal, Integ, Prf, ProposalError};

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

/// The SA payload offering these IKE proposals (numbered from 1), folded
/// into as few proposals as keep their meaning ([`IkeOffer::group`]): IOS
/// XE's default goes out as the one proposal a router sends; `spi` for an
/// IKE SA rekey (RFC 7296 1.3.2).
pub fn ike_sa_payload(props: &[IkeProposal], spi: Option<u64>) -> Payload {
    let t = |ty, id, key_len| TransformRepr { ty, id, key_len };
    Payload::Sa(
        IkeOffer::group(props)
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut ts = Vec::new();
                for e in &o.encr {
                    let (eid, kl) = e.transform();
                    ts.push(t(TRANS_ENCR, eid, Some(kl)));
                }
                ts.extend(o.prf.iter().map(|p| t(TRANS_PRF, p.id(), None)));
                ts.extend(o.integ.iter().map(|i| t(TRANS_INTEG, i.id(), None)));
                ts.extend(o.dh.iter().map(|g| t(TRANS_DH, g.id(), None)));
                ProposalRepr {
                    num: (i + 1) as u8,
                    protocol: PROTO_IKE,
                    spi: spi.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default(),
                    transforms: ts,
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
            DhGroup::Modp2048 => 14,
            DhGroup::Ecp256 => 19,
            DhGroup::Ecp384 => 20,
            DhGroup::Ecp521 => 21,
            DhGroup::Curve25519 => 31,
        }
    }
    /// From a group number.
    pub fn from_id(id: u16) -> Option<DhGroup> {
        Some(match id {
            19 => DhGroup::Ecp256,
            14 => DhGroup::Modp2048,
            20 => DhGroup::Ecp384,
            21 => DhGroup::Ecp521,
            31 => DhGroup::Curve25519,
            _ => return None,
        })
    }
    /// Length of the KE payload's key exchange data (RFC 5903 7, RFC 8031
    /// 2, RFC 7296 3.4: a MODP value as long as the prime).
    pub fn ke_len(self) -> usize {
        match self {
            DhGroup::Modp2048 => 256,
            DhGroup::Ecp256 => 64,
            DhGroup::Ecp384 => 96,
            DhGroup::Ecp521 => 132,
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
        "ecp521" => DhGroup::Ecp521,
        "modp2048" => DhGroup::Modp2048,
        "x25519" | "curve25519" => DhGroup::Curve25519,
        _ => return None,
    })
}

fn err(s: &str, what: &str) -> ProposalError {
    ProposalError(format!("{what} in proposal `{s}`"))
}

/// Add `v` to `list` unless it is there already (order kept).
fn push_new<T: PartialEq>(list: &mut Vec<T>, v: T) {
    if !list.contains(&v) {
        list.push(v);
    }
}

pub(crate) fn parse_ike(s: &str) -> Result<IkeOffer, ProposalError> {
    let mut o = IkeOffer {
        encr: vec![],
        integ: vec![],
        prf: vec![],
        dh: vec![],
    };
    for w in s.trim().split('-') {
        if let Some(e) = parse_encr(w) {
            push_new(&mut o.encr, e);
        } else if let Some(i) = parse_integ(w) {
            push_new(&mut o.integ, i);
        } else if let Some(p) = parse_prf(w) {
            push_new(&mut o.prf, p);
        } else if let Some(g) = parse_dh(w) {
            push_new(&mut o.dh, g);
        } else {
            return Err(err(s, &format!("unknown word `{w}`")));
        }
    }
    let Some(first) = o.encr.first().copied() else {
        return Err(err(s, "no cipher"));
    };
    if o.encr.contains(&Encr::ChaCha20Poly1305) {
        return Err(err(s, "chacha20poly1305 (ESP only here)"));
    }
    if o.encr.iter().any(|e| e.is_aead() != first.is_aead()) {
        return Err(err(s, "AEAD and CBC ciphers together"));
    }
    if first.is_aead() && !o.integ.is_empty() {
        return Err(err(s, "an integrity algorithm with an AEAD cipher"));
    }
    if !first.is_aead() && o.integ.is_empty() {
        return Err(err(s, "no integrity algorithm for a CBC cipher"));
    }
    if o.prf.is_empty() {
        // strongSwan: without an explicit PRF, the integrity algorithms' hashes.
        for i in &o.integ {
            let p = match i {
                Integ::HmacSha256_128 => Prf::HmacSha256,
                Integ::HmacSha384_192 => Prf::HmacSha384,
                Integ::HmacSha512_256 => Prf::HmacSha512,
                Integ::HmacSha1_96 => {
                    return Err(err(s, "no PRF (prfsha1 is not supported; add prfsha256)"));
                }
            };
            push_new(&mut o.prf, p);
        }
    }
    if o.prf.is_empty() {
        return Err(err(s, "no PRF"));
    }
    if o.dh.is_empty() {
        return Err(err(s, "no DH group"));
    }
    Ok(o)
}

impl IkeOffer {
    /// IOS XE 17's default IKEv2 proposal (`show crypto ikev2 proposal
    /// default`): AES-CBC-256; SHA-512 and SHA-384; PRF SHA-512 and
    /// SHA-384; DH groups 19, 14, 21.
    pub const IOS_DEFAULT: &str = "aes256-sha512-sha384-prfsha512-prfsha384-ecp256-modp2048-ecp521";

    /// [`IkeOffer::IOS_DEFAULT`], parsed.
    pub fn ios_default() -> IkeOffer {
        parse_ike(Self::IOS_DEFAULT).expect("the IOS XE default proposal parses")
    }

    /// Every combination it allows, most preferred first: by cipher, then
    /// integrity, PRF and DH group, each in the order given.
    pub fn expand(&self) -> Vec<IkeProposal> {
        let mut out = Vec::new();
        for &encr in &self.encr {
            let integs: Vec<Option<Integ>> = if encr.is_aead() {
                vec![None]
            } else {
                self.integ.iter().copied().map(Some).collect()
            };
            for &integ in &integs {
                for &prf in &self.prf {
                    for &dh in &self.dh {
                        out.push(IkeProposal {
                            encr,
                            integ,
                            prf,
                            dh,
                        });
                    }
                }
            }
        }
        out
    }

    /// The offer listing every algorithm of `props` (in first-seen order).
    fn covering(props: &[IkeProposal]) -> IkeOffer {
        let mut o = IkeOffer {
            encr: vec![],
            integ: vec![],
            prf: vec![],
            dh: vec![],
        };
        for p in props {
            push_new(&mut o.encr, p.encr);
            if let Some(i) = p.integ {
                push_new(&mut o.integ, i);
            }
            push_new(&mut o.prf, p.prf);
            push_new(&mut o.dh, p.dh);
        }
        o
    }

    /// Fold a preference list of single proposals into as few offers as
    /// keep its meaning and order: from each position, the longest run
    /// that is exactly one offer's [`expand`](IkeOffer::expand). What the
    /// IKE_SA_INIT request carries (one proposal for IOS XE's default, as
    /// a router sends it) and what `show crypto ikev2 proposal` lists.
    pub fn group(props: &[IkeProposal]) -> Vec<IkeOffer> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < props.len() {
            let end = (at + 1..=props.len())
                .rev()
                .find(|&end| Self::covering(&props[at..end]).expand() == props[at..end])
                .unwrap_or(at + 1);
            out.push(Self::covering(&props[at..end]));
            at = end;
        }
        out
    }
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
    fn ios_default_offer() {
        let o = IkeOffer::ios_default();
        assert_eq!(o.encr, [Encr::AesCbc256]);
        assert_eq!(o.integ, [Integ::HmacSha512_256, Integ::HmacSha384_192]);
        assert_eq!(o.prf, [Prf::HmacSha512, Prf::HmacSha384]);
        assert_eq!(o.dh, [DhGroup::Ecp256, DhGroup::Modp2048, DhGroup::Ecp521]);
        let all = o.expand();
        assert_eq!(all.len(), 12);
        // Most preferred first: SHA-512, PRF SHA-512, group 19 (the KE's).
        assert_eq!(
            all[0],
            IkeProposal::parse("aes256-sha512-prfsha512-ecp256").unwrap()
        );
        assert_eq!(
            all[1],
            IkeProposal::parse("aes256-sha512-prfsha512-modp2048").unwrap()
        );
        assert_eq!(
            all[11],
            IkeProposal::parse("aes256-sha384-prfsha384-ecp521").unwrap()
        );
        // Folded back into the one proposal.
        assert_eq!(IkeOffer::group(&all), [o]);
        assert_eq!(
            EspProposal::parse(EspProposal::IOS_DEFAULT).unwrap(),
            EspProposal {
                encr: Encr::AesCbc128,
                integ: Some(Integ::HmacSha1_96),
                dh: None
            }
        );
    }

    #[test]
    fn offers_parse_expand_and_group() {
        // Without prf words: the integrity algorithms' hashes.
        let o = IkeOffer::parse("aes128-aes256-sha256-sha384-x25519").unwrap();
        assert_eq!(o.prf, [Prf::HmacSha256, Prf::HmacSha384]);
        assert_eq!(o.expand().len(), 8);
        // Repeated words count once.
        assert_eq!(
            IkeOffer::parse("aes256-sha256-sha256-ecp256-ecp256")
                .unwrap()
                .expand()
                .len(),
            1
        );
        for bad in [
            "aes256gcm16-aes256-sha256-prfsha256-x25519",
            "aes256-sha256-sha1-ecp256",
            "aes256-sha256",
            "chacha20poly1305-prfsha256-x25519",
        ] {
            assert!(IkeOffer::parse(bad).is_err(), "{bad}");
        }
        // One algorithm of a kind where a single proposal is asked for.
        assert!(IkeProposal::parse("aes256-sha256-ecp256-modp2048").is_err());
        assert_eq!(
            IkeProposal::parse("aes256-sha256-modp2048").unwrap().dh,
            DhGroup::Modp2048
        );
        assert_eq!(
            IkeProposal::parse("aes256gcm16-prfsha384-ecp521")
                .unwrap()
                .dh,
            DhGroup::Ecp521
        );
        // Two configured proposals stay two; a list that is no product
        // is not folded into one that would allow more.
        let a = IkeOffer::parse("aes256gcm16-prfsha256-x25519").unwrap();
        let b = IkeOffer::parse("aes256-sha256-ecp256-modp2048").unwrap();
        let list = [a.expand(), b.expand()].concat();
        assert_eq!(IkeOffer::group(&list), [a, b.clone()]);
        let partial = [b.expand()[0].clone(), o.expand()[3].clone()];
        let g = IkeOffer::group(&partial);
        assert_eq!(
            g.iter().flat_map(IkeOffer::expand).collect::<Vec<_>>(),
            partial
        );
        assert!(IkeOffer::group(&[]).is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(Encr::AesGcm16_256.to_string(), "AES-GCM-256");
        assert_eq!(Encr::AesCbc128.to_string(), "AES-CBC-128");
        assert_eq!(Integ::HmacSha1_96.ios_name(), "SHA96");
        assert_eq!(Prf::HmacSha384.to_string(), "PRF-HMAC-SHA2-384");
    }
}
