//! Certificate authentication (RFC 7296 2.15, 3.6, 3.7; RFC 7427; RFC
//! 4754): our certificate and private key, the trusted CAs, the AUTH
//! payload's signatures, and the checks of a peer's certificate and of the
//! identity it claims.
//!
//! Parsing and the certificates' own signatures are x509-parser's (with
//! ring underneath); the AUTH signatures are ring's. Keys: ECDSA P-256,
//! ECDSA P-384, RSA (2048 bits or more).
//!
//! AUTH methods:
//! - 14, digital signature (RFC 7427): an AlgorithmIdentifier, then the
//!   signature (ECDSA as a DER `Ecdsa-Sig-Value`). Sent when the peer
//!   announced SIGNATURE_HASH_ALGORITHMS with a hash we can use with our
//!   key; verified for RSA PKCS#1 v1.5 with SHA-1/256/384/512 and ECDSA
//!   P-256/P-384 with SHA-256/384.
//! - 9 and 10, ECDSA with SHA-256 on P-256 and SHA-384 on P-384 (RFC
//!   4754, `r | s`): sent with an ECDSA key to a peer without RFC 7427
//!   (IOS's `ecdsa-sig`), verified.
//! - 1, RSA digital signature (PKCS#1 v1.5 with SHA-1, IOS's `rsa-sig`):
//!   verified only; ring cannot make SHA-1 signatures, so with an RSA key
//!   we always sign with method 14.

use std::{net::IpAddr, time::SystemTime};

use ring::{
    rand::SecureRandom,
    signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair},
};
use x509_parser::{
    extensions::GeneralName,
    oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    },
    pem::Pem,
    prelude::{FromDer, X509Certificate, X509Name},
    time::ASN1Time,
    x509::SubjectPublicKeyInfo,
};
use zeroize::Zeroize;

use crate::{Identity, wire::id_type};

/// AUTH method 1: RSA digital signature (PKCS#1 v1.5, SHA-1).
pub const AUTH_RSA: u8 = 1;
/// AUTH method 9: ECDSA with SHA-256 on P-256 (RFC 4754).
pub const AUTH_ECDSA_256: u8 = 9;
/// AUTH method 10: ECDSA with SHA-384 on P-384 (RFC 4754).
pub const AUTH_ECDSA_384: u8 = 10;
/// AUTH method 14: digital signature (RFC 7427).
pub const AUTH_DIGITAL_SIGNATURE: u8 = 14;

/// Hash algorithm numbers of SIGNATURE_HASH_ALGORITHMS (RFC 7427 4).
pub mod hash {
    /// SHA2-256.
    pub const SHA256: u16 = 2;
    /// SHA2-384.
    pub const SHA384: u16 = 3;
    /// SHA2-512.
    pub const SHA512: u16 = 4;
}

/// The hashes we announce in SIGNATURE_HASH_ALGORITHMS (and verify with).
pub const OUR_HASHES: [u16; 3] = [hash::SHA256, hash::SHA384, hash::SHA512];

/// Certificate encoding 4: X.509 Certificate - Signature (RFC 7296 3.6).
pub const CERT_X509_SIGNATURE: u8 = 4;

/// Certificates a peer may send with its own (intermediate CAs); more are
/// ignored.
pub const MAX_PEER_CERTS: usize = 4;
/// Longest certificate we parse from a peer.
pub const MAX_CERT_LEN: usize = 16 * 1024;

// AlgorithmIdentifiers of RFC 7427 Appendix A (DER, with NULL parameters
// for RSA and none for ECDSA).
const ALG_SHA1_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00,
];
const ALG_SHA256_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
const ALG_SHA384_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
];
const ALG_SHA512_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
];
const ALG_ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const ALG_ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];

/// The kind of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA.
    Rsa,
}

enum SigningKey {
    Ecdsa {
        /// DER signatures (RFC 7427).
        asn1: Box<EcdsaKeyPair>,
        /// `r | s` signatures (RFC 4754).
        fixed: Box<EcdsaKeyPair>,
    },
    Rsa(Box<RsaKeyPair>),
}

/// Our certificate, its private key and the CAs we trust for peers'
/// certificates. Never printed with the key.
pub struct Credentials {
    cert: Vec<u8>,
    key: SigningKey,
    kind: KeyKind,
    cas: Vec<Vec<u8>>,
    /// The wall clock for certificates' validity (tests set another).
    clock: fn() -> SystemTime,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ subject: {}, key: <{:?} redacted>, cas: {} }}",
            self.subject_text(),
            self.kind,
            self.cas.len()
        )
    }
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], c)) => Ok(c),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(format!("not an X.509 certificate ({e})")),
    }
}

/// The PEM blocks of a file with this label, decoded.
fn pem_blocks(pem: &[u8], labels: &[&str]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for p in Pem::iter_from_buffer(pem) {
        let Pem { label, contents } = p.map_err(|e| format!("bad PEM ({e})"))?;
        if labels.contains(&label.as_str()) {
            out.push((label, contents));
        } else {
            let mut c = contents;
            c.zeroize();
        }
    }
    Ok(out)
}

/// The kind of a certificate's public key.
fn spki_kind(spki: &SubjectPublicKeyInfo<'_>) -> Option<KeyKind> {
    let alg = &spki.algorithm;
    if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        return Some(KeyKind::Rsa);
    }
    if alg.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return None;
    }
    let curve = alg.parameters.as_ref()?.as_oid().ok()?;
    if curve == OID_EC_P256 {
        Some(KeyKind::EcdsaP256)
    } else if curve == OID_NIST_EC_P384 {
        Some(KeyKind::EcdsaP384)
    } else {
        None
    }
}

impl Credentials {
    /// Load PEM: `cert` (our certificate first; further ones are ignored),
    /// `key` (PKCS#8 `PRIVATE KEY`, or `RSA PRIVATE KEY`), `ca` (one or
    /// more CA certificates). The key must be the certificate's. Errors
    /// name what is wrong, never key material.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Credentials, String> {
        let certs = pem_blocks(cert, &["CERTIFICATE"])?;
        let Some((_, cert_der)) = certs.into_iter().next() else {
            return Err("cert_file: no CERTIFICATE in it".into());
        };
        let (kind, public) = {
            let c = parse_cert(&cert_der).map_err(|e| format!("cert_file: {e}"))?;
            let kind = spki_kind(c.public_key()).ok_or(
                "cert_file: its key is neither ECDSA P-256, ECDSA P-384 nor RSA".to_string(),
            )?;
            (kind, c.public_key().subject_public_key.data.to_vec())
        };
        let mut keys = pem_blocks(key, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])
            .map_err(|e| format!("key_file: {e}"))?;
        let Some((label, mut der)) = keys.pop() else {
            return Err("key_file: no PRIVATE KEY in it".into());
        };
        for (_, mut d) in keys {
            d.zeroize();
        }
        let rng = ring::rand::SystemRandom::new();
        let loaded = match (label.as_str(), kind) {
            ("EC PRIVATE KEY", _) => Err(
                "key_file: an SEC1 `EC PRIVATE KEY`; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`"
                    .to_string(),
            ),
            ("PRIVATE KEY", KeyKind::EcdsaP256 | KeyKind::EcdsaP384) => {
                let (a, f) = if kind == KeyKind::EcdsaP256 {
                    (
                        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    )
                } else {
                    (
                        &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                        &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    )
                };
                match (
                    EcdsaKeyPair::from_pkcs8(a, &der, &rng),
                    EcdsaKeyPair::from_pkcs8(f, &der, &rng),
                ) {
                    (Ok(asn1), Ok(fixed)) => Ok(SigningKey::Ecdsa {
                        asn1: Box::new(asn1),
                        fixed: Box::new(fixed),
                    }),
                    _ => Err(format!(
                        "key_file: not a PKCS#8 {kind:?} key (the certificate's key type)"
                    )),
                }
            }
            (_, KeyKind::Rsa) => {
                let k = if label == "PRIVATE KEY" {
                    RsaKeyPair::from_pkcs8(&der)
                } else {
                    RsaKeyPair::from_der(&der)
                };
                k.map(|k| SigningKey::Rsa(Box::new(k))).map_err(|e| {
                    format!("key_file: not a usable RSA key of 2048 bits or more ({e})")
                })
            }
            _ => Err(format!(
                "key_file: a {label} does not go with the certificate's {kind:?} key"
            )),
        };
        der.zeroize();
        let key = loaded?;
        let matches = match &key {
            SigningKey::Ecdsa { asn1, .. } => asn1.public_key().as_ref() == public.as_slice(),
            SigningKey::Rsa(k) => k.public().as_ref() == public.as_slice(),
        };
        if !matches {
            return Err("key_file: the key is not the certificate's (cert_file)".into());
        }
        let cas: Vec<Vec<u8>> = pem_blocks(ca, &["CERTIFICATE"])
            .map_err(|e| format!("ca_file: {e}"))?
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        if cas.is_empty() {
            return Err("ca_file: no CERTIFICATE in it".into());
        }
        for c in &cas {
            parse_cert(c).map_err(|e| format!("ca_file: {e}"))?;
        }
        Ok(Credentials {
            cert: cert_der,
            key,
            kind,
            cas,
            clock: SystemTime::now,
        })
    }

    /// Use another wall clock for validity checks (tests).
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> Credentials {
        self.clock = clock;
        self
    }

    /// Our certificate (DER), for the CERT payload.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    /// Our key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Our certificate's subject (DER), the ID_DER_ASN1_DN we send when no
    /// `local_id` is configured.
    pub fn subject_der(&self) -> Vec<u8> {
        parse_cert(&self.cert)
            .map(|c| c.subject().as_raw().to_vec())
            .unwrap_or_default()
    }

    /// Our certificate's subject as text.
    pub fn subject_text(&self) -> String {
        parse_cert(&self.cert)
            .map(|c| c.subject().to_string())
            .unwrap_or_default()
    }

    /// The CERTREQ payload's data: SHA-1 of each trusted CA's
    /// SubjectPublicKeyInfo (RFC 7296 3.7).
    pub fn certreq_data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.cas {
            if let Ok(c) = parse_cert(c) {
                let d = ring::digest::digest(
                    &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    c.public_key().raw,
                );
                out.extend_from_slice(d.as_ref());
            }
        }
        out
    }

    /// Whether our certificate proves identity `id` (what we send as
    /// `local_id`): a DN equal to its subject, or a subjectAltName.
    pub fn proves(&self, id: &Identity) -> Result<(), String> {
        let (t, d) = id_payload(id);
        id_bound_to_cert(&self.cert, t, &d)
    }

    /// The AUTH method and data for `octets` (RFC 7296 2.15's signed
    /// octets): RFC 7427 when the peer announced a hash we can use,
    /// else the classic method of our key (RSA has none we can make).
    pub fn sign(
        &self,
        peer_hashes: &[u16],
        octets: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<(u8, Vec<u8>), String> {
        let fail = |_| "signing failed".to_string();
        match &self.key {
            SigningKey::Ecdsa { asn1, fixed } => {
                let (h, alg, classic) = if self.kind == KeyKind::EcdsaP256 {
                    (hash::SHA256, ALG_ECDSA_SHA256, AUTH_ECDSA_256)
                } else {
                    (hash::SHA384, ALG_ECDSA_SHA384, AUTH_ECDSA_384)
                };
                if peer_hashes.contains(&h) {
                    let sig = asn1.sign(rng, octets).map_err(fail)?;
                    Ok((AUTH_DIGITAL_SIGNATURE, rfc7427(alg, sig.as_ref())))
                } else {
                    let sig = fixed.sign(rng, octets).map_err(fail)?;
                    Ok((classic, sig.as_ref().to_vec()))
                }
            }
            SigningKey::Rsa(k) => {
                let (enc, alg): (&'static dyn signature::RsaEncoding, _) =
                    if peer_hashes.contains(&hash::SHA256) || peer_hashes.is_empty() {
                        (&signature::RSA_PKCS1_SHA256, ALG_SHA256_RSA)
                    } else if peer_hashes.contains(&hash::SHA384) {
                        (&signature::RSA_PKCS1_SHA384, ALG_SHA384_RSA)
                    } else {
                        (&signature::RSA_PKCS1_SHA512, ALG_SHA512_RSA)
                    };
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(enc, rng, octets, &mut sig).map_err(fail)?;
                Ok((AUTH_DIGITAL_SIGNATURE, rfc7427(alg, &sig)))
            }
        }
    }

    /// Check a peer's certificate chain: `certs[0]` is its own, the rest
    /// intermediates (any order); it must lead to one of our CAs with
    /// every signature good and every certificate valid now (the CAs'
    /// too), intermediates being CAs. Returns the end certificate's
    /// subject as text.
    pub fn verify_chain(&self, certs: &[Vec<u8>]) -> Result<String, String> {
        let Some(leaf_der) = certs.first() else {
            return Err("the peer sent no certificate".into());
        };
        let secs = (self.clock)()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let now = ASN1Time::from_timestamp(secs).map_err(|_| "bad clock".to_string())?;
        let leaf = parse_cert(leaf_der).map_err(|e| format!("its certificate: {e}"))?;
        let subject = leaf.subject().to_string();
        if let Ok(Some(ku)) = leaf.key_usage()
            && !ku.value.digital_signature()
            && !ku.value.non_repudiation()
        {
            return Err(format!(
                "certificate {subject} does not allow digital signatures (keyUsage)"
            ));
        }
        let inters: Vec<X509Certificate<'_>> = certs
            .iter()
            .skip(1)
            .take(MAX_PEER_CERTS)
            .filter_map(|d| parse_cert(d).ok())
            .collect();
        let cas: Vec<X509Certificate<'_>> =
            self.cas.iter().filter_map(|d| parse_cert(d).ok()).collect();
        let mut cur = leaf;
        for _ in 0..=MAX_PEER_CERTS {
            if !cur.validity().is_valid_at(now) {
                return Err(format!(
                    "certificate {} is not valid now (valid {} to {})",
                    cur.subject(),
                    cur.validity().not_before,
                    cur.validity().not_after
                ));
            }
            let by = |c: &&X509Certificate<'_>| {
                c.subject().as_raw() == cur.issuer().as_raw()
                    && cur.verify_signature(Some(c.public_key())).is_ok()
            };
            if let Some(ca) = cas.iter().find(by) {
                if !ca.validity().is_valid_at(now) {
                    return Err(format!("CA {} is not valid now", ca.subject()));
                }
                return Ok(subject);
            }
            let Some(next) = inters.iter().find(by) else {
                return Err(format!(
                    "certificate {} is not signed by a CA of ca_file (issuer {})",
                    cur.subject(),
                    cur.issuer()
                ));
            };
            if !next.is_ca() {
                return Err(format!(
                    "intermediate {} is not a CA (basicConstraints)",
                    next.subject()
                ));
            }
            cur = next.clone();
        }
        Err("certificate chain too long".into())
    }
}

fn rfc7427(alg: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + alg.len() + sig.len());
    v.push(alg.len() as u8);
    v.extend_from_slice(alg);
    v.extend_from_slice(sig);
    v
}

/// Check AUTH `data` of `method` over `octets` with the public key of
/// certificate `cert` (DER). Ok: the kind of that key (what signed).
pub fn verify_auth(cert: &[u8], method: u8, data: &[u8], octets: &[u8]) -> Result<KeyKind, String> {
    let c = parse_cert(cert)?;
    let spki = c.public_key();
    let kind = spki_kind(spki).ok_or("the certificate's key type is not supported")?;
    let (alg, sig): (&dyn signature::VerificationAlgorithm, &[u8]) = match (method, kind) {
        (AUTH_RSA, KeyKind::Rsa) => (
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            data,
        ),
        (AUTH_ECDSA_256, KeyKind::EcdsaP256) => (&signature::ECDSA_P256_SHA256_FIXED, data),
        (AUTH_ECDSA_384, KeyKind::EcdsaP384) => (&signature::ECDSA_P384_SHA384_FIXED, data),
        (AUTH_DIGITAL_SIGNATURE, _) => {
            let n = usize::from(*data.first().ok_or("empty AUTH")?);
            let algid = data
                .get(1..1 + n)
                .ok_or("AUTH shorter than its algorithm")?;
            let sig = &data[1 + n..];
            let alg: &dyn signature::VerificationAlgorithm = match (algid, kind) {
                (ALG_SHA1_RSA, KeyKind::Rsa) => {
                    &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
                }
                (ALG_SHA256_RSA, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA256,
                (ALG_SHA384_RSA, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA384,
                (ALG_SHA512_RSA, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA512,
                (ALG_ECDSA_SHA256, KeyKind::EcdsaP256) => &signature::ECDSA_P256_SHA256_ASN1,
                (ALG_ECDSA_SHA384, KeyKind::EcdsaP256) => &signature::ECDSA_P256_SHA384_ASN1,
                (ALG_ECDSA_SHA256, KeyKind::EcdsaP384) => &signature::ECDSA_P384_SHA256_ASN1,
                (ALG_ECDSA_SHA384, KeyKind::EcdsaP384) => &signature::ECDSA_P384_SHA384_ASN1,
                _ => {
                    return Err(format!(
                        "signature algorithm {} with a {kind:?} key is not supported",
                        hex(algid)
                    ));
                }
            };
            (alg, sig)
        }
        (m, k) => return Err(format!("AUTH method {m} does not go with a {k:?} key")),
    };
    signature::UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
        .verify(octets, sig)
        .map(|()| kind)
        .map_err(|_| "the signature does not verify with the certificate's key".to_string())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The ID payload (type, data) of an identity.
pub fn id_payload(id: &Identity) -> (u8, Vec<u8>) {
    match id {
        Identity::Addr(IpAddr::V4(a)) => (id_type::IPV4, a.octets().to_vec()),
        Identity::Addr(IpAddr::V6(a)) => (id_type::IPV6, a.octets().to_vec()),
        Identity::Fqdn(s) => (id_type::FQDN, s.as_bytes().to_vec()),
        Identity::Email(s) => (id_type::RFC822, s.as_bytes().to_vec()),
        Identity::KeyId(b) => (id_type::KEY_ID, b.clone()),
        Identity::Dn(d) => (id_type::DER_ASN1_DN, d.clone()),
    }
}

/// Whether an ID payload (type, data) a certificate's holder sent is
/// bound to certificate `cert`: a DN equal to its subject, an FQDN, e-mail
/// or address among its subjectAltNames.
pub fn id_bound_to_cert(cert: &[u8], t: u8, d: &[u8]) -> Result<(), String> {
    let c = parse_cert(cert)?;
    if t == id_type::DER_ASN1_DN {
        return if dn_eq(c.subject().as_raw(), d) {
            Ok(())
        } else {
            Err(format!(
                "the identity {} is not the certificate's subject {}",
                dn_text(d),
                c.subject()
            ))
        };
    }
    let sans: Vec<GeneralName<'_>> = match c.subject_alternative_name() {
        Ok(Some(s)) => s.value.general_names.clone(),
        _ => Vec::new(),
    };
    let found = sans.iter().any(|g| match (t, g) {
        (id_type::FQDN, GeneralName::DNSName(n)) => n.as_bytes().eq_ignore_ascii_case(d),
        (id_type::RFC822, GeneralName::RFC822Name(n)) => n.as_bytes().eq_ignore_ascii_case(d),
        (id_type::IPV4 | id_type::IPV6, GeneralName::IPAddress(a)) => *a == d,
        _ => false,
    });
    if found {
        Ok(())
    } else {
        Err(format!(
            "the identity (ID type {t}) is not among the certificate's subjectAltNames (subject {})",
            c.subject()
        ))
    }
}

/// The attributes of a DER DN as (OID, value), in order.
fn dn_attrs(der: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let (rest, n) = X509Name::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    Some(
        n.iter_attributes()
            .map(|a| (a.attr_type().to_id_string(), a.as_slice().to_vec()))
            .collect(),
    )
}

/// Whether two DER DNs name the same (attribute types in order; values
/// compared without regard to ASCII case or string type).
pub fn dn_eq(a: &[u8], b: &[u8]) -> bool {
    match (dn_attrs(a), dn_attrs(b)) {
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(&y)
                    .all(|((o1, v1), (o2, v2))| o1 == o2 && v1.eq_ignore_ascii_case(v2))
        }
        _ => false,
    }
}

/// A DER DN as text (`C=CH, O=Org, CN=moon`), or a note that it is not one.
pub fn dn_text(der: &[u8]) -> String {
    match X509Name::from_der(der) {
        Ok((_, n)) => n.to_string(),
        Err(_) => format!("(a malformed DN of {} bytes)", der.len()),
    }
}

const DN_ATTRS: &[(&str, &[u8])] = &[
    ("CN", &[0x55, 0x04, 0x03]),
    ("SN", &[0x55, 0x04, 0x04]),
    ("serialNumber", &[0x55, 0x04, 0x05]),
    ("C", &[0x55, 0x04, 0x06]),
    ("L", &[0x55, 0x04, 0x07]),
    ("ST", &[0x55, 0x04, 0x08]),
    ("O", &[0x55, 0x04, 0x0a]),
    ("OU", &[0x55, 0x04, 0x0b]),
    ("title", &[0x55, 0x04, 0x0c]),
    ("GN", &[0x55, 0x04, 0x2a]),
    ("E", &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
    (
        "DC",
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
    ),
];

fn der_tlv(tag: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(body);
}

/// A DN written as text (`C=CH, O=strongSwan, CN=moon`; a comma inside a
/// value as `\,`), as DER (UTF8String values; compared with [`dn_eq`],
/// which ignores the string type).
pub fn dn_from_text(s: &str) -> Result<Vec<u8>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for ch in s.chars() {
        match (esc, ch) {
            (false, '\\') => esc = true,
            (false, ',') => parts.push(std::mem::take(&mut cur)),
            (_, c) => {
                cur.push(c);
                esc = false;
            }
        }
    }
    parts.push(cur);
    let mut seq = Vec::new();
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            return Err(format!("`{}` is not ATTRIBUTE=value", p.trim()));
        };
        let (k, v) = (k.trim(), v.trim());
        let Some((_, oid)) = DN_ATTRS.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)) else {
            return Err(format!(
                "unknown DN attribute `{k}` (known: CN, SN, serialNumber, C, L, ST, O, OU, title, GN, E, DC)"
            ));
        };
        if v.is_empty() || v.len() > 256 {
            return Err(format!("the value of `{k}` is empty or too long"));
        }
        let mut atv = Vec::new();
        der_tlv(0x06, oid, &mut atv);
        der_tlv(0x0c, v.as_bytes(), &mut atv);
        let mut seq_atv = Vec::new();
        der_tlv(0x30, &atv, &mut seq_atv);
        der_tlv(0x31, &seq_atv, &mut seq);
    }
    let mut out = Vec::new();
    der_tlv(0x30, &seq, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests;
