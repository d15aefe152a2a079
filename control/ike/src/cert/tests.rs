//! Signatures and certificates against openssl: keys, certificates and
//! signatures made by the openssl command, checked here, and ours checked
//! by openssl.

use std::path::Path;

use super::*;
use ring::rand::SystemRandom;
use xdpsec_testenv::{openssl, pki as openssl_pki};

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("xdpsec-ike-cert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A CA (`ca.crt`) and a leaf (`leaf.crt`, `leaf.key`, subject
/// `C=CH, O=xdpsec test, CN=moon`, SANs moon.example and 198.51.100.1)
/// of key type `kind`, in `d`; and `other.crt`, a second CA.
fn pki(d: &Path, kind: &str) {
    openssl_pki::keys(d, kind, &["ca", "leaf", "other"]);
    openssl_pki::ca(d, "ca");
    openssl_pki::ca(d, "other");
    openssl_pki::leaf(
        d,
        "leaf",
        "/C=CH/O=xdpsec test/CN=moon",
        "subjectAltName=DNS:moon.example,IP:198.51.100.1,email:moon@example.org\nkeyUsage=digitalSignature\n",
        "ca",
        30,
    );
}

fn read(d: &Path, f: &str) -> Vec<u8> {
    std::fs::read(d.join(f)).unwrap()
}

fn der_of(pem: &[u8]) -> Vec<u8> {
    pem_blocks(pem, &["CERTIFICATE"]).unwrap().remove(0).1
}

/// An ECDSA DER signature as `r | s` of `n` bytes each.
fn der_to_fixed(der: &[u8], n: usize) -> Vec<u8> {
    assert_eq!(der[0], 0x30);
    let mut i = if der[1] & 0x80 != 0 {
        2 + usize::from(der[1] & 0x7f)
    } else {
        2
    };
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let l = usize::from(der[i + 1]);
        let v = &der[i + 2..i + 2 + l];
        let v = &v[v.len().saturating_sub(n)..];
        out.extend(std::iter::repeat_n(0, n - v.len()));
        out.extend_from_slice(v);
        i += 2 + l;
    }
    out
}

fn fixed_to_der(f: &[u8]) -> Vec<u8> {
    let n = f.len() / 2;
    let mut body = Vec::new();
    for half in [&f[..n], &f[n..]] {
        let mut v: Vec<u8> = half.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        body.push(0x02);
        body.push(v.len() as u8);
        body.extend(v);
    }
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend(body);
    out
}

const OCTETS: &[u8] = b"RealMessage1 | Nr | prf(SK_pi, IDi') stands in here";

fn creds(d: &Path) -> Credentials {
    Credentials::from_pem(
        &read(d, "leaf.crt"),
        &read(d, "leaf.key"),
        &read(d, "ca.crt"),
    )
    .unwrap()
}

/// openssl signs with the leaf's key; `verify_auth` checks it under each
/// method the key allows, and refuses it altered.
fn openssl_signs_we_verify(d: &Path, kind: &str) {
    std::fs::write(d.join("octets"), OCTETS).unwrap();
    let leaf = der_of(&read(d, "leaf.crt"));
    let (dgst, alg, classic): (&str, &[u8], Option<(u8, usize)>) = match kind {
        "p256" => ("-sha256", ALG_ECDSA_SHA256, Some((AUTH_ECDSA_256, 32))),
        "p384" => ("-sha384", ALG_ECDSA_SHA384, Some((AUTH_ECDSA_384, 48))),
        _ => ("-sha256", ALG_SHA256_RSA, None),
    };
    openssl(
        d,
        &["dgst", dgst, "-sign", "leaf.key", "-out", "sig", "octets"],
    );
    let sig = read(d, "sig");
    let data = rfc7427(alg, &sig);
    verify_auth(&leaf, AUTH_DIGITAL_SIGNATURE, &data, OCTETS).unwrap();
    let mut bad = data.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(verify_auth(&leaf, AUTH_DIGITAL_SIGNATURE, &bad, OCTETS).is_err());
    assert!(verify_auth(&leaf, AUTH_DIGITAL_SIGNATURE, &data, b"other octets").is_err());
    match classic {
        Some((m, n)) => {
            let f = der_to_fixed(&sig, n);
            verify_auth(&leaf, m, &f, OCTETS).unwrap();
            assert!(verify_auth(&leaf, m, &f, b"other octets").is_err());
            // The other curve's method does not go with this key.
            let other = if m == AUTH_ECDSA_256 {
                AUTH_ECDSA_384
            } else {
                AUTH_ECDSA_256
            };
            assert!(verify_auth(&leaf, other, &f, OCTETS).is_err());
        }
        None => {
            // Method 1: PKCS#1 v1.5 with SHA-1 (IOS rsa-sig).
            openssl(
                d,
                &[
                    "dgst", "-sha1", "-sign", "leaf.key", "-out", "sig1", "octets",
                ],
            );
            let s1 = read(d, "sig1");
            verify_auth(&leaf, AUTH_RSA, &s1, OCTETS).unwrap();
            assert!(verify_auth(&leaf, AUTH_RSA, &s1, b"other octets").is_err());
            // SHA-512 under RFC 7427.
            openssl(
                d,
                &[
                    "dgst", "-sha512", "-sign", "leaf.key", "-out", "sig5", "octets",
                ],
            );
            let d5 = rfc7427(ALG_SHA512_RSA, &read(d, "sig5"));
            verify_auth(&leaf, AUTH_DIGITAL_SIGNATURE, &d5, OCTETS).unwrap();
            // The AlgorithmIdentifier must be the one used.
            let wrong = rfc7427(ALG_SHA384_RSA, &sig);
            assert!(verify_auth(&leaf, AUTH_DIGITAL_SIGNATURE, &wrong, OCTETS).is_err());
        }
    }
}

/// We sign; openssl verifies with the certificate's public key.
fn we_sign_openssl_verifies(d: &Path, kind: &str) {
    let c = creds(d);
    let rng = SystemRandom::new();
    openssl(
        d,
        &[
            "x509", "-in", "leaf.crt", "-pubkey", "-noout", "-out", "pub.pem",
        ],
    );
    std::fs::write(d.join("octets"), OCTETS).unwrap();
    let check = |dgst: &str, sig: &[u8]| {
        std::fs::write(d.join("oursig"), sig).unwrap();
        openssl(
            d,
            &[
                "dgst",
                dgst,
                "-verify",
                "pub.pem",
                "-signature",
                "oursig",
                "octets",
            ],
        );
    };
    // RFC 7427 when the peer announced our hash.
    let (m, data) = c.sign(&OUR_HASHES, OCTETS, &rng).unwrap();
    assert_eq!(m, AUTH_DIGITAL_SIGNATURE);
    let n = usize::from(data[0]);
    let dgst = match kind {
        "p256" => {
            assert_eq!(&data[1..1 + n], ALG_ECDSA_SHA256);
            "-sha256"
        }
        "p384" => {
            assert_eq!(&data[1..1 + n], ALG_ECDSA_SHA384);
            "-sha384"
        }
        _ => {
            assert_eq!(&data[1..1 + n], ALG_SHA256_RSA);
            "-sha256"
        }
    };
    check(dgst, &data[1 + n..]);
    // Without RFC 7427: ECDSA's classic method (r | s), RSA still 14.
    let (m, data) = c.sign(&[], OCTETS, &rng).unwrap();
    match kind {
        "p256" | "p384" => {
            assert_eq!(
                m,
                if kind == "p256" {
                    AUTH_ECDSA_256
                } else {
                    AUTH_ECDSA_384
                }
            );
            assert_eq!(data.len(), if kind == "p256" { 64 } else { 96 });
            check(dgst, &fixed_to_der(&data));
        }
        _ => assert_eq!(m, AUTH_DIGITAL_SIGNATURE),
    }
    // A peer that only takes SHA-512 gets RSA SHA-512.
    if kind == "rsa" {
        let (_, data) = c.sign(&[hash::SHA512], OCTETS, &rng).unwrap();
        assert_eq!(&data[1..16], ALG_SHA512_RSA);
        check("-sha512", &data[16..]);
    }
}

fn chain_and_ids(d: &Path) {
    let c = creds(d);
    let leaf = der_of(&read(d, "leaf.crt"));
    let subject = c.verify_chain(std::slice::from_ref(&leaf)).unwrap();
    assert_eq!(subject, "C=CH, O=xdpsec test, CN=moon");
    // Another CA does not make it good.
    let other = Credentials::from_pem(
        &read(d, "leaf.crt"),
        &read(d, "leaf.key"),
        &read(d, "other.crt"),
    )
    .unwrap();
    let e = other.verify_chain(std::slice::from_ref(&leaf)).unwrap_err();
    assert!(e.contains("not signed by a CA of ca_file"), "{e}");
    // Outside its validity.
    let late =
        creds(d).with_clock(|| SystemTime::now() + std::time::Duration::from_secs(60 * 86400));
    let e = late.verify_chain(std::slice::from_ref(&leaf)).unwrap_err();
    assert!(e.contains("not valid now"), "{e}");
    // A self-signed certificate with the CA's subject but another key.
    let fake = der_of(&read(d, "other.crt"));
    assert!(c.verify_chain(&[fake]).is_err());
    // Identities: the subject (any string type, any ASCII case), the SANs.
    let dn = dn_from_text("C=CH, O=xdpsec test, CN=MOON").unwrap();
    id_bound_to_cert(&leaf, id_type::DER_ASN1_DN, &dn).unwrap();
    assert!(dn_eq(&dn, &c.subject_der()));
    let wrong = dn_from_text("C=CH, O=xdpsec test, CN=sun").unwrap();
    assert!(id_bound_to_cert(&leaf, id_type::DER_ASN1_DN, &wrong).is_err());
    let reordered = dn_from_text("O=xdpsec test, C=CH, CN=moon").unwrap();
    assert!(!dn_eq(&reordered, &c.subject_der()));
    id_bound_to_cert(&leaf, id_type::FQDN, b"moon.example").unwrap();
    assert!(id_bound_to_cert(&leaf, id_type::FQDN, b"sun.example").is_err());
    id_bound_to_cert(&leaf, id_type::IPV4, &[198, 51, 100, 1]).unwrap();
    assert!(id_bound_to_cert(&leaf, id_type::IPV4, &[198, 51, 100, 2]).is_err());
    id_bound_to_cert(&leaf, id_type::RFC822, b"moon@example.org").unwrap();
    assert!(id_bound_to_cert(&leaf, id_type::KEY_ID, b"moon").is_err());
    c.proves(&Identity::Fqdn("moon.example".into())).unwrap();
    assert!(c.proves(&Identity::Fqdn("sun.example".into())).is_err());
    assert_eq!(dn_text(&dn), "C=CH, O=xdpsec test, CN=MOON");
    // CERTREQ: SHA-1 of the CA's SubjectPublicKeyInfo, as openssl computes it.
    assert_eq!(c.certreq_data(), openssl_pki::spki_sha1(d, "ca"));
}

fn for_kind(kind: &str) {
    let d = tmpdir(kind);
    pki(&d, kind);
    assert_eq!(
        creds(&d).kind(),
        match kind {
            "p256" => KeyKind::EcdsaP256,
            "p384" => KeyKind::EcdsaP384,
            _ => KeyKind::Rsa,
        }
    );
    openssl_signs_we_verify(&d, kind);
    we_sign_openssl_verifies(&d, kind);
    chain_and_ids(&d);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn ecdsa_p256() {
    for_kind("p256");
}

#[test]
fn ecdsa_p384() {
    for_kind("p384");
}

#[test]
fn rsa_2048() {
    for_kind("rsa");
}

#[test]
fn loading_refuses_mismatches() {
    let d = tmpdir("load");
    pki(&d, "p256");
    let (crt, key, ca) = (
        read(&d, "leaf.crt"),
        read(&d, "leaf.key"),
        read(&d, "ca.crt"),
    );
    // Another key than the certificate's.
    let e = Credentials::from_pem(&crt, &read(&d, "other.key"), &ca).unwrap_err();
    assert!(e.contains("not the certificate's"), "{e}");
    // Nothing where a certificate or key should be.
    assert!(
        Credentials::from_pem(b"", &key, &ca)
            .unwrap_err()
            .contains("cert_file")
    );
    assert!(
        Credentials::from_pem(&crt, b"junk", &ca)
            .unwrap_err()
            .contains("key_file")
    );
    assert!(
        Credentials::from_pem(&crt, &key, b"")
            .unwrap_err()
            .contains("ca_file")
    );
    // SEC1 keys get a hint.
    openssl(&d, &["ec", "-in", "leaf.key", "-out", "sec1.key"]);
    let e = Credentials::from_pem(&crt, &read(&d, "sec1.key"), &ca).unwrap_err();
    assert!(e.contains("pkcs8"), "{e}");
    // Debug output never shows the key.
    let c = Credentials::from_pem(&crt, &key, &ca).unwrap();
    assert!(format!("{c:?}").contains("redacted"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn dn_text_forms() {
    let a = dn_from_text("C=CH,O=Org\\, Inc.,CN=moon").unwrap();
    assert_eq!(
        dn_text(&a),
        "C=CH, O=Org\\, Inc., CN=moon".replace("\\,", ",")
    );
    assert!(dn_from_text("CN").is_err());
    assert!(dn_from_text("XX=1").is_err());
    assert!(!dn_eq(&a, b"\x30\x00junk"));
}
