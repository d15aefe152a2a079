//! Keys and certificates for the tests, made by the openssl command (an
//! independent implementation): a key per name, self-signed CAs, and
//! leaves signed by one of them. Each writes its files by name into one
//! directory: `NAME.key`, `NAME.crt` (and a leaf's `NAME.ext`,
//! `NAME.csr`).
use std::path::Path;

use crate::openssl;

/// `openssl genpkey` arguments of a key type: `p256` (ECDSA P-256),
/// `p384` (ECDSA P-384), anything else RSA-2048.
pub fn key_args(kind: &str) -> &'static [&'static str] {
    match kind {
        "p256" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        _ => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    }
}

/// A key of type `kind` ([`key_args`]) for each of `names`: `NAME.key`.
pub fn keys(dir: &Path, kind: &str, names: &[&str]) {
    for name in names {
        let out = format!("{name}.key");
        let mut a = vec!["genpkey"];
        a.extend(key_args(kind));
        a.extend(["-out", &out]);
        openssl(dir, &a);
    }
}

/// A self-signed CA `NAME.crt` of the key `NAME.key`: subject
/// `/C=CH/O=xdpsec test/CN=NAME CA`, valid 30 days.
pub fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/C=CH/O=xdpsec test/CN={name} CA"),
            "-days",
            "30",
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A leaf certificate `NAME.crt` of the key `NAME.key`: subject `subject`
/// (openssl's `/K=V/..` form), the extensions `ext` (an openssl extfile:
/// `subjectAltName=..` and `keyUsage=..` lines, written to `NAME.ext`),
/// signed by the CA `CA.crt`/`CA.key`, valid `days` days.
pub fn leaf(dir: &Path, name: &str, subject: &str, ext: &str, ca: &str, days: u32) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            &days.to_string(),
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// SHA-1 of the SubjectPublicKeyInfo of the certificate `NAME.crt`, as
/// openssl computes it (what a CERTREQ names a CA by, RFC 7296 3.7);
/// writes `NAME.pub` and `NAME.spki`.
pub fn spki_sha1(dir: &Path, name: &str) -> Vec<u8> {
    let (crt, public, spki) = (
        format!("{name}.crt"),
        format!("{name}.pub"),
        format!("{name}.spki"),
    );
    openssl(
        dir,
        &["x509", "-in", &crt, "-noout", "-pubkey", "-out", &public],
    );
    openssl(
        dir,
        &[
            "pkey", "-pubin", "-in", &public, "-outform", "DER", "-out", &spki,
        ],
    );
    let out = openssl(dir, &["dgst", "-sha1", "-binary", &spki]);
    assert_eq!(out.len(), 20, "a SHA-1 digest");
    out
}
