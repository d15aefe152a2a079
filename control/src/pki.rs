//! `xdpsec pki`: an enterprise root CA, device certificates for SD-WAN edges
//! and controllers (and IKE peers), and the controller's authorized edge list.
//!
//! Device certificates carry what the controller and the edges check:
//! - subject `O` = the organization (Cisco: CTORGNMMIS when it differs);
//! - subject `serialNumber` (2.5.4.5) = the device serial, upper-case hex
//!   (SERNTPRES when it is not in the allowed list);
//! - subject `OU` = the role, `edge` or `controller` (as Cisco puts the device
//!   type in OU), which a verifier reads to refuse an edge posing as a
//!   controller; and the extended key usage that goes with the role's side of
//!   the TLS connection (controller: serverAuth, edge: clientAuth), so rustls
//!   and webpki refuse a certificate used on the wrong side before any
//!   application check;
//! - an IP-address subjectAltName = the system-ip.
//!
//! Keys are ECDSA P-256; a device's may be ECDSA P-384 or RSA-2048
//! (`--key-type`; an RSA key is imported with `--key`: ring, rcgen's
//! backend here, cannot generate RSA keys). Key files are created with mode 0600 (never wider,
//! not even while being written), every file is written to a temporary name
//! in the target directory and renamed, and key material in memory is
//! zeroized after writing.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result, anyhow, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, SanType, SerialNumber, SignatureAlgorithm,
    string::PrintableString,
};
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};
use zeroize::{Zeroize, Zeroizing};

/// The root CA's validity: 10 years, the usual life of an offline
/// enterprise root (the devices' certificates are renewed under it).
const CA_DAYS: i64 = 3650;
/// A device certificate's default validity: one year, short enough that a
/// leaked key does not stay good for long, long enough for a lab or a test
/// bed not to need renewals.
const DEVICE_DAYS: u32 = 365;
/// notBefore is backdated by this much by default, so a peer whose clock is
/// slightly behind still accepts a certificate issued a moment ago.
const BACKDATE: Duration = Duration::hours(1);
/// The subject attribute serialNumber (X.520).
const OID_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];

/// A device's role, written as the subject OU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// An SD-WAN edge (a TLS client of the controller): OU=edge, clientAuth.
    Edge,
    /// The SD-WAN controller (the TLS server): OU=controller, serverAuth.
    Controller,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Controller => "controller",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device key's type (`--key-type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256, signing with SHA-256.
    #[default]
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on P-384, signing with SHA-384.
    #[value(name = "ecdsa-p384")]
    EcdsaP384,
    /// RSA of 2048 bits or more (PKCS#1 v1.5 with SHA-256); imported with
    /// `--key`, never generated.
    #[value(name = "rsa-2048")]
    Rsa2048,
}

impl KeyType {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa2048 => &PKCS_RSA_SHA256,
        }
    }
}

/// `xdpsec pki ...`
#[derive(clap::Subcommand)]
pub enum PkiCommand {
    /// Make an enterprise root CA (ECDSA P-256): DIR/ca.crt and DIR/ca.key (0600), PEM.
    Ca {
        /// The organization name (subject O); devices' certificates must carry the same.
        #[arg(long, value_parser = parse_organization)]
        organization: String,
        /// The directory for ca.crt and ca.key (created if absent).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace an existing ca.crt/ca.key in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Issue a device certificate signed by the CA: DIR/device.crt and DIR/device.key (0600), PEM.
    Device {
        /// The CA's directory (ca.crt and ca.key from `xdpsec pki ca`).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The organization name (subject O).
        #[arg(long, value_parser = parse_organization)]
        organization: String,
        /// The device serial number in hex (subject serialNumber, stored upper-case).
        #[arg(long, value_name = "HEX", value_parser = parse_serial)]
        serial: String,
        /// The device's system-ip (an IP-address subjectAltName).
        #[arg(long, value_name = "A.B.C.D")]
        system_ip: Ipv4Addr,
        /// The device's role (subject OU; extended key usage clientAuth for
        /// an edge, serverAuth for a controller).
        #[arg(long, value_enum)]
        role: Role,
        /// The device key's type. ring (the crypto library here) cannot
        /// generate RSA keys: with rsa-2048 give the key with --key (e.g.
        /// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`).
        #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
        key_type: KeyType,
        /// Certify this PKCS#8 PEM private key (of --key-type) instead of
        /// generating one; it is written to DIR/device.key (0600) too.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Validity in days from now, or from --not-before [default: 365].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36500), conflicts_with = "not_after")]
        days: Option<u32>,
        /// Start of validity, RFC 3339 (default: an hour ago).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        not_before: Option<OffsetDateTime>,
        /// End of validity, RFC 3339 (default: --days after now or --not-before).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        not_after: Option<OffsetDateTime>,
        /// The directory for device.crt and device.key (created if absent).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace an existing device.crt/device.key in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Add a device to the controller's authorized edge list (TOML, created if
    /// absent); re-adding a serial replaces its entry.
    Allow {
        /// The device serial number in hex.
        #[arg(long, value_name = "HEX", value_parser = parse_serial)]
        serial: String,
        /// The device's system-ip.
        #[arg(long, value_name = "A.B.C.D")]
        system_ip: Ipv4Addr,
        /// The allowed-edges file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Runs one `xdpsec pki` command; errors go to stderr with exit status 2.
pub fn main(cmd: PkiCommand) -> ExitCode {
    let result = match cmd {
        PkiCommand::Ca {
            organization,
            out,
            force,
        } => make_ca(&organization, &out, force).map(|()| {
            println!("{}", out.join("ca.crt").display());
        }),
        PkiCommand::Device {
            ca,
            organization,
            serial,
            system_ip,
            role,
            key_type,
            key,
            days,
            not_before,
            not_after,
            out,
            force,
        } => validity(now_seconds(), days, not_before, not_after).and_then(|(nb, na)| {
            let key_pem = match &key {
                Some(f) => Some(Zeroizing::new(
                    std::fs::read_to_string(f).with_context(|| format!("--key {}", f.display()))?,
                )),
                None => None,
            };
            let dev = DeviceSpec {
                organization: &organization,
                serial: &serial,
                system_ip,
                role,
                not_before: nb,
                not_after: na,
                key_type,
                key_pem: key_pem.as_ref().map(|k| k.as_str()),
            };
            make_device(&ca, &dev, &out, force)
                .map(|()| println!("{}", out.join("device.crt").display()))
        }),
        PkiCommand::Allow {
            serial,
            system_ip,
            out,
        } => allow(&out, &serial, system_ip),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("xdpsec pki: {}", chain.join(": "));
            ExitCode::from(2)
        }
    }
}

/// `--serial`: 1 to 64 hex digits (an optional 0x is dropped), upper-cased,
/// so the certificate, the allowed list and a comparison agree on one form.
pub fn parse_serial(s: &str) -> Result<String, String> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "'{s}' is not a hex serial number (1 to 64 digits 0-9, A-F)"
        ));
    }
    Ok(hex.to_ascii_uppercase())
}

/// `--organization`: non-empty, at most 64 characters (the X.520 upper
/// bound), printable (no control characters: it ends up in logs and shows).
pub fn parse_organization(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the organization name is empty".into());
    }
    if s.chars().count() > 64 {
        return Err("the organization name is longer than 64 characters".into());
    }
    if s.chars().any(char::is_control) {
        return Err("the organization name contains control characters".into());
    }
    Ok(s.to_string())
}

/// `--not-before`/`--not-after`: RFC 3339, e.g. 2026-01-31T12:00:00Z.
pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("'{s}' is not an RFC 3339 time like 2026-01-31T12:00:00Z ({e})"))
}

/// The validity window: explicit times win; by default from an hour before
/// `now` to `days` (365) days after `now` (or after an explicit start).
pub fn validity(
    now: OffsetDateTime,
    days: Option<u32>,
    not_before: Option<OffsetDateTime>,
    not_after: Option<OffsetDateTime>,
) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let nb = not_before.unwrap_or(now - BACKDATE);
    let start = not_before.unwrap_or(now);
    let na = not_after.unwrap_or(start + Duration::days(days.unwrap_or(DEVICE_DAYS).into()));
    if na <= nb {
        bail!(
            "--not-after {} is not later than --not-before {}",
            rfc3339(na),
            rfc3339(nb)
        );
    }
    // X.509 times end in 9999 (GeneralizedTime) and start in 1950 (UTCTime).
    for (flag, t) in [("--not-before", nb), ("--not-after", na)] {
        if !(1950..=9999).contains(&t.year()) {
            bail!("{flag} {}: outside the years 1950 to 9999", rfc3339(t));
        }
    }
    Ok((nb, na))
}

/// Now, to the second (X.509 times have no fractions).
fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn random_serial() -> Result<SerialNumber> {
    let mut s = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s)
        .map_err(|_| anyhow!("no randomness for the certificate serial"))?;
    s[0] &= 0x7f; // a positive INTEGER
    s[0] |= 0x01; // and 16 bytes long
    Ok(SerialNumber::from_slice(&s))
}

/// Makes the root CA in `out`.
pub fn make_ca(organization: &str, out: &Path, force: bool) -> Result<()> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, organization);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{organization} Root CA"));
    // The root signs device certificates only: no intermediate below it.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = now_seconds();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_DAYS);
    params.serial_number = Some(random_serial()?);
    let mut key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating the CA key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate");
    let key_pem = Zeroizing::new(key.serialize_pem());
    key.zeroize();
    let cert = cert?;
    write_pair(out, "ca", &cert.pem(), &key_pem, force)
}

/// What a device certificate says.
pub struct DeviceSpec<'a> {
    pub organization: &'a str,
    pub serial: &'a str,
    pub system_ip: Ipv4Addr,
    pub role: Role,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The key's type.
    pub key_type: KeyType,
    /// A PKCS#8 PEM key to certify (`--key`); None: generate one.
    pub key_pem: Option<&'a str>,
}

/// Issues a device certificate in `out`, signed by the CA in `ca_dir`.
pub fn make_device(ca_dir: &Path, dev: &DeviceSpec, out: &Path, force: bool) -> Result<()> {
    let crt_path = ca_dir.join("ca.crt");
    let key_path = ca_dir.join("ca.key");
    let ca_pem = std::fs::read_to_string(&crt_path)
        .with_context(|| format!("--ca {}: {}", ca_dir.display(), crt_path.display()))?;
    let ca_key_pem = Zeroizing::new(
        std::fs::read_to_string(&key_path)
            .with_context(|| format!("--ca {}: {}", ca_dir.display(), key_path.display()))?,
    );
    let mut ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| anyhow!("--ca: {}: not a PEM private key ({e})", key_path.display()))?;
    let result = issue_device(&ca_pem, &crt_path, &ca_key, dev);
    ca_key.zeroize();
    let (cert_pem, key_pem) = result?;
    write_pair(out, "device", &cert_pem, &key_pem, force)
}

fn issue_device(
    ca_pem: &str,
    crt_path: &Path,
    ca_key: &KeyPair,
    dev: &DeviceSpec,
) -> Result<(String, Zeroizing<String>)> {
    let ca_der =
        pem_der(ca_pem, "CERTIFICATE").with_context(|| format!("--ca: {}", crt_path.display()))?;
    let (ca_dn, ca_pub) = subject_and_public_key(&ca_der)
        .map_err(|e| anyhow!("--ca: {}: {e}", crt_path.display()))?;
    if ca_pub != ca_key.public_key_raw() {
        bail!(
            "--ca: {} and ca.key do not belong together (different public keys)",
            crt_path.display()
        );
    }
    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = ca_dn;
    issuer_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let issuer = Issuer::new(issuer_params, ca_key);

    let mut params = CertificateParams::default();
    let dn = &mut params.distinguished_name;
    *dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, dev.organization);
    dn.push(DnType::OrganizationalUnitName, dev.role.as_str());
    dn.push(
        DnType::CommonName,
        format!("{}-{}", dev.role.as_str(), dev.serial),
    );
    dn.push(
        DnType::CustomDnType(OID_SERIAL_NUMBER.to_vec()),
        DnValue::PrintableString(
            PrintableString::try_from(dev.serial).map_err(|e| anyhow!("--serial: {e}"))?,
        ),
    );
    params.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(dev.system_ip))];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match dev.role {
        Role::Edge => ExtendedKeyUsagePurpose::ClientAuth,
        Role::Controller => ExtendedKeyUsagePurpose::ServerAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    params.not_before = dev.not_before;
    params.not_after = dev.not_after;
    params.serial_number = Some(random_serial()?);
    let alg = dev.key_type.algorithm();
    let mut key = match (dev.key_pem, dev.key_type) {
        (Some(pem), t) => KeyPair::from_pem_and_sign_algo(pem, alg).map_err(|e| {
            anyhow!("--key: not a PKCS#8 PEM private key of --key-type {t:?} ({e})")
        })?,
        (None, KeyType::Rsa2048) => bail!(
            "--key-type rsa-2048 needs --key FILE: ring cannot generate RSA keys (make one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out FILE`)"
        ),
        (None, _) => KeyPair::generate_for(alg).context("generating the key")?,
    };
    let cert = params.signed_by(&key, &issuer);
    let key_pem = Zeroizing::new(key.serialize_pem());
    key.zeroize();
    Ok((
        cert.context("signing the device certificate")?.pem(),
        key_pem,
    ))
}

/// The DER of a PEM block labelled `label`.
fn pem_der(pem_text: &str, label: &str) -> Result<Vec<u8>> {
    let block = pem::parse(pem_text).map_err(|e| anyhow!("not PEM ({e})"))?;
    if block.tag() != label {
        bail!("a PEM {} block, not {label}", block.tag());
    }
    Ok(block.into_contents())
}

/// A certificate's subject (re-encodable byte for byte by rcgen: single-valued
/// RDNs, each attribute type once, UTF8/Printable/IA5 strings) and its
/// subjectPublicKey bits.
fn subject_and_public_key(der: &[u8]) -> Result<(DistinguishedName, Vec<u8>), String> {
    use yasna::tags::{TAG_IA5STRING, TAG_PRINTABLESTRING, TAG_UTF8STRING};
    let mut attrs: Vec<(Vec<u64>, DnValue)> = Vec::new();
    let mut unsupported = None;
    let public_key = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let pk = r.next().read_sequence(|r| {
                // version [0], serial, signature, issuer, validity
                r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_u8()))?;
                for _ in 0..4 {
                    r.next().read_der()?;
                }
                r.next().read_sequence_of(|r| {
                    r.read_set_of(|r| {
                        r.read_sequence(|r| {
                            let oid = r.next().read_oid()?.components().clone();
                            let v = r.next();
                            let value = match v.lookahead_tag()? {
                                TAG_UTF8STRING => DnValue::Utf8String(v.read_utf8string()?),
                                TAG_PRINTABLESTRING => {
                                    let s = v.read_printable_string()?;
                                    match PrintableString::try_from(s) {
                                        Ok(p) => DnValue::PrintableString(p),
                                        Err(_) => {
                                            return Err(yasna::ASN1Error::new(
                                                yasna::ASN1ErrorKind::Invalid,
                                            ));
                                        }
                                    }
                                }
                                TAG_IA5STRING => {
                                    let s = v.read_ia5_string()?;
                                    match s.try_into() {
                                        Ok(i) => DnValue::Ia5String(i),
                                        Err(_) => {
                                            return Err(yasna::ASN1Error::new(
                                                yasna::ASN1ErrorKind::Invalid,
                                            ));
                                        }
                                    }
                                }
                                tag => {
                                    unsupported = Some(tag);
                                    v.read_der()?;
                                    return Ok(());
                                }
                            };
                            attrs.push((oid, value));
                            Ok(())
                        })
                    })
                })?;
                let pk = r.next().read_sequence(|r| {
                    r.next().read_der()?;
                    Ok(r.next().read_bitvec_bytes()?.0)
                })?;
                // issuerUniqueID, subjectUniqueID, extensions
                while r.read_optional(|r| r.read_der())?.is_some() {}
                Ok(pk)
            })?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(pk)
        })
    })
    .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    if let Some(tag) = unsupported {
        return Err(format!(
            "the subject uses a string type this tool does not re-encode ({tag:?})"
        ));
    }
    let mut dn = DistinguishedName::new();
    for (oid, value) in attrs {
        let ty = match oid.as_slice() {
            [2, 5, 4, 3] => DnType::CommonName,
            [2, 5, 4, 6] => DnType::CountryName,
            [2, 5, 4, 7] => DnType::LocalityName,
            [2, 5, 4, 8] => DnType::StateOrProvinceName,
            [2, 5, 4, 10] => DnType::OrganizationName,
            [2, 5, 4, 11] => DnType::OrganizationalUnitName,
            _ => DnType::CustomDnType(oid),
        };
        if dn.get(&ty).is_some() {
            return Err(format!(
                "the subject has {ty:?} twice, which this tool does not re-encode"
            ));
        }
        dn.push(ty, value);
    }
    Ok((dn, public_key))
}

/// Writes `DIR/NAME.crt` and `DIR/NAME.key` (0600): both to temporary files
/// in DIR first, then renamed into place, so neither is ever half-written.
fn write_pair(out: &Path, name: &str, cert_pem: &str, key_pem: &str, force: bool) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .with_context(|| format!("--out {}", out.display()))?;
    let crt = out.join(format!("{name}.crt"));
    let key = out.join(format!("{name}.key"));
    if !force {
        for p in [&crt, &key] {
            if p.exists() {
                bail!(
                    "--out {}: {} exists (give --force to replace it)",
                    out.display(),
                    p.display()
                );
            }
        }
    }
    let key_tmp = write_temp(&key, key_pem.as_bytes(), 0o600)
        .with_context(|| format!("--out {}", out.display()))?;
    let crt_tmp = match write_temp(&crt, cert_pem.as_bytes(), 0o644) {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(&key_tmp);
            return Err(e).with_context(|| format!("--out {}", out.display()));
        }
    };
    let renamed = std::fs::rename(&key_tmp, &key).and_then(|()| std::fs::rename(&crt_tmp, &crt));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&key_tmp);
        let _ = std::fs::remove_file(&crt_tmp);
        return Err(e).with_context(|| format!("--out {}", out.display()));
    }
    Ok(())
}

/// Writes `data` to a new temporary file beside `dest`, created with `mode`
/// (so a key is 0600 from its first byte), synced; returns its path.
fn write_temp(dest: &Path, data: &[u8], mode: u32) -> Result<PathBuf> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{base}.tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow!("{}: {e}", tmp.display()));
    }
    Ok(tmp)
}

/// The authorized edge list the controller reads (`allowed_edges_file`):
///
/// ```toml
/// [[edge]]
/// serial = "1A2B3C"
/// system_ip = "10.0.0.1"
/// ```
///
/// One entry per serial; a system-ip belongs to one serial. Returns
/// serial (upper-case hex) -> system-ip; errors name the line and field.
pub fn parse_allowed_edges(text: &str) -> Result<BTreeMap<String, Ipv4Addr>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        edge: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        serial: toml::Spanned<String>,
        system_ip: toml::Spanned<String>,
    }
    let line = |span: std::ops::Range<usize>| {
        1 + text.as_bytes()[..span.start.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    };
    let file: File = toml::from_str(text).map_err(|e| match e.span() {
        Some(s) => anyhow!("line {}: {}", line(s), e.message()),
        None => anyhow!("{}", e.message()),
    })?;
    let mut edges = BTreeMap::new();
    let mut by_ip: BTreeMap<Ipv4Addr, (String, usize)> = BTreeMap::new();
    let mut serial_line: BTreeMap<String, usize> = BTreeMap::new();
    for e in file.edge {
        let sl = line(e.serial.span());
        let il = line(e.system_ip.span());
        let serial =
            parse_serial(e.serial.get_ref()).map_err(|m| anyhow!("line {sl}: serial: {m}"))?;
        let ip: Ipv4Addr = e.system_ip.get_ref().parse().map_err(|_| {
            anyhow!(
                "line {il}: system_ip: '{}' is not an IPv4 address A.B.C.D",
                e.system_ip.get_ref()
            )
        })?;
        if let Some(prev) = serial_line.insert(serial.clone(), sl) {
            bail!("line {sl}: serial: {serial} is listed twice (also on line {prev})");
        }
        if let Some((other, prev)) = by_ip.insert(ip, (serial.clone(), il)) {
            bail!("line {il}: system_ip: {ip} is already bound to serial {other} on line {prev}");
        }
        edges.insert(serial, ip);
    }
    Ok(edges)
}

/// The allowed-edges file's text for `edges`, in serial order.
pub fn render_allowed_edges(edges: &BTreeMap<String, Ipv4Addr>) -> String {
    let mut s = String::from(
        "# Authorized SD-WAN edges (xdpsec pki allow): the serial in each edge's\n\
         # certificate and the system-ip it may claim.\n",
    );
    for (serial, ip) in edges {
        s.push_str(&format!(
            "\n[[edge]]\nserial = \"{serial}\"\nsystem_ip = \"{ip}\"\n"
        ));
    }
    s
}

/// Adds (or replaces) `serial`'s entry in `edges`; refuses a
/// system-ip bound to another serial.
pub fn add_allowed_edge(
    edges: &mut BTreeMap<String, Ipv4Addr>,
    serial: &str,
    system_ip: Ipv4Addr,
) -> Result<()> {
    if let Some((other, _)) = edges
        .iter()
        .find(|(s, ip)| **ip == system_ip && *s != serial)
    {
        bail!(
            "--system-ip {system_ip} is already bound to serial {other}; remove that entry first"
        );
    }
    edges.insert(serial.to_string(), system_ip);
    Ok(())
}

fn allow(path: &Path, serial: &str, system_ip: Ipv4Addr) -> Result<()> {
    let mut edges = match std::fs::read_to_string(path) {
        Ok(text) => {
            parse_allowed_edges(&text).with_context(|| format!("--out {}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("--out {}", path.display())),
    };
    add_allowed_edge(&mut edges, serial, system_ip)
        .with_context(|| format!("{}", path.display()))?;
    let tmp = write_temp(path, render_allowed_edges(&edges).as_bytes(), 0o644)
        .with_context(|| format!("--out {}", path.display()))?;
    std::fs::rename(&tmp, path)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("--out {}", path.display()))
}

/// For tests: a CA, a controller and an edge certificate, an allowed list
/// with the edge, under a fresh temporary directory; returns the directory.
#[cfg(test)]
pub(crate) fn test_pki_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xdpsec-ctlcfg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    test_pki(
        &dir,
        &[
            ("ctl", Role::Controller, "C0", "198.51.100.10"),
            ("edge", Role::Edge, "E1", "192.0.2.1"),
        ],
    );
    std::fs::write(
        dir.join("allowed.toml"),
        "[[edge]]\nserial = \"E1\"\nsystem_ip = \"192.0.2.1\"\n",
    )
    .unwrap();
    dir
}

/// For tests: a CA of organization `xdpsec-test` in `dir/ca` and, for each
/// `(name, role, serial, system_ip)`, a device certificate valid from now
/// in `dir/name`.
#[cfg(test)]
pub(crate) fn test_pki(dir: &Path, devices: &[(&str, Role, &str, &str)]) {
    make_ca("xdpsec-test", &dir.join("ca"), false).unwrap();
    let (t0, t1) = validity(OffsetDateTime::now_utc(), None, None, None).unwrap();
    for &(name, role, serial, ip) in devices {
        let spec = DeviceSpec {
            organization: "xdpsec-test",
            serial,
            system_ip: ip.parse().unwrap(),
            role,
            not_before: t0,
            not_after: t1,
            key_type: KeyType::EcdsaP256,
            key_pem: None,
        };
        make_device(&dir.join("ca"), &spec, &dir.join(name), false).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device certificate of each key type: the IKE core loads it with
    /// its key and reports the type; RSA needs an imported key (openssl's).
    #[test]
    fn device_key_types() {
        let dir = std::env::temp_dir().join(format!("xdpsec-pki-keytypes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        make_ca("xdpsec-test", &dir.join("ca"), false).unwrap();
        let (t0, t1) = validity(OffsetDateTime::now_utc(), None, None, None).unwrap();
        let rsa = dir.join("rsa.pem");
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&rsa)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let rsa_pem = std::fs::read_to_string(&rsa).unwrap();
        use xdpsec_ike::cert::{Credentials, KeyKind};
        for (t, pem, kind) in [
            (KeyType::EcdsaP256, None, KeyKind::EcdsaP256),
            (KeyType::EcdsaP384, None, KeyKind::EcdsaP384),
            (KeyType::Rsa2048, Some(rsa_pem.as_str()), KeyKind::Rsa),
        ] {
            let spec = DeviceSpec {
                organization: "xdpsec-test",
                serial: "1A",
                system_ip: "10.0.0.1".parse().unwrap(),
                role: Role::Edge,
                not_before: t0,
                not_after: t1,
                key_type: t,
                key_pem: pem,
            };
            let out = dir.join(format!("{t:?}"));
            make_device(&dir.join("ca"), &spec, &out, false).unwrap();
            let read = |f: &str| std::fs::read(f).unwrap();
            let c = Credentials::from_pem(
                &read(out.join("device.crt").to_str().unwrap()),
                &read(out.join("device.key").to_str().unwrap()),
                &read(dir.join("ca/ca.crt").to_str().unwrap()),
            )
            .unwrap();
            assert_eq!(c.kind(), kind);
            assert!(c.verify_chain(&[c.cert_der().to_vec()]).is_ok());
        }
        // RSA without a key, and a key of another type, are refused
        // with the flag named; nothing is written.
        let mut spec = DeviceSpec {
            organization: "xdpsec-test",
            serial: "1B",
            system_ip: "10.0.0.2".parse().unwrap(),
            role: Role::Edge,
            not_before: t0,
            not_after: t1,
            key_type: KeyType::Rsa2048,
            key_pem: None,
        };
        let e = make_device(&dir.join("ca"), &spec, &dir.join("bad"), false).unwrap_err();
        assert!(format!("{e:#}").contains("--key"), "{e:#}");
        spec.key_type = KeyType::EcdsaP384;
        spec.key_pem = Some(&rsa_pem);
        let e = make_device(&dir.join("ca"), &spec, &dir.join("bad"), false).unwrap_err();
        assert!(format!("{e:#}").contains("--key"), "{e:#}");
        assert!(!dir.join("bad").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn serial_is_hex_upper_cased() {
        assert_eq!(parse_serial("1a2B").unwrap(), "1A2B");
        assert_eq!(parse_serial("0xc0de").unwrap(), "C0DE");
        for bad in ["", "0x", "12G4", "-12", "12 34", &"A".repeat(65)] {
            assert!(parse_serial(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_serial(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn organization_is_printable_and_bounded() {
        assert_eq!(parse_organization("Acme Labs").unwrap(), "Acme Labs");
        for bad in ["", "  ", "a\nb", "a\u{1b}[31m", &"o".repeat(65)] {
            assert!(parse_organization(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn validity_defaults_and_overrides() {
        let now = parse_time("2026-06-01T12:00:00Z").unwrap();
        let (nb, na) = validity(now, None, None, None).unwrap();
        assert_eq!(nb, now - Duration::hours(1));
        assert_eq!(na, now + Duration::days(365));
        let (_, na) = validity(now, Some(30), None, None).unwrap();
        assert_eq!(na, now + Duration::days(30));
        let t0 = parse_time("2020-01-01T00:00:00+02:00").unwrap();
        let t1 = parse_time("2021-01-01T00:00:00Z").unwrap();
        assert_eq!(validity(now, None, Some(t0), Some(t1)).unwrap(), (t0, t1));
        let e = validity(now, None, Some(t1), Some(t0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--not-after") && e.contains("--not-before"),
            "{e}"
        );
        // --days counts from an explicit --not-before.
        let later = now + Duration::days(2);
        assert_eq!(
            validity(now, Some(1), Some(later), None).unwrap(),
            (later, later + Duration::days(1))
        );
        assert!(
            validity(
                now,
                None,
                Some(parse_time("1949-12-31T00:00:00Z").unwrap()),
                None
            )
            .is_err()
        );
        for bad in [
            "2026-01-01",
            "2026-01-01 00:00:00",
            "yesterday",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn allowed_edges_round_trip_and_replace() {
        let mut edges = BTreeMap::new();
        add_allowed_edge(&mut edges, "1A", Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        add_allowed_edge(&mut edges, "2B", Ipv4Addr::new(10, 0, 0, 2)).unwrap();
        add_allowed_edge(&mut edges, "1A", Ipv4Addr::new(10, 0, 0, 3)).unwrap();
        let e = add_allowed_edge(&mut edges, "3C", Ipv4Addr::new(10, 0, 0, 2)).unwrap_err();
        assert!(
            e.to_string().contains("--system-ip 10.0.0.2") && e.to_string().contains("2B"),
            "{e}"
        );
        // Re-adding a serial with its own system-ip is fine.
        add_allowed_edge(&mut edges, "2B", Ipv4Addr::new(10, 0, 0, 2)).unwrap();
        let text = render_allowed_edges(&edges);
        assert_eq!(parse_allowed_edges(&text).unwrap(), edges);
        assert_eq!(edges.len(), 2);
        assert_eq!(edges["1A"], Ipv4Addr::new(10, 0, 0, 3));
        assert!(parse_allowed_edges("").unwrap().is_empty());
        assert!(parse_allowed_edges("# nothing yet\n").unwrap().is_empty());
    }

    #[test]
    fn allowed_edges_errors_name_line_and_field() {
        let err = |t: &str| parse_allowed_edges(t).unwrap_err().to_string();
        let e = err("[[edge]]\nserial = \"1A\"\nsystem_ip = \"10.0.0.300\"\n");
        assert!(e.starts_with("line 3: system_ip:"), "{e}");
        let e = err("\n[[edge]]\nserial = \"1Z\"\nsystem_ip = \"10.0.0.1\"\n");
        assert!(e.starts_with("line 3: serial:"), "{e}");
        let e = err(
            "[[edge]]\nserial = \"1A\"\nsystem_ip = \"10.0.0.1\"\n[[edge]]\nserial = \"1a\"\nsystem_ip = \"10.0.0.2\"\n",
        );
        assert!(
            e.starts_with("line 5: serial: 1A is listed twice (also on line 2)"),
            "{e}"
        );
        let e = err(
            "[[edge]]\nserial = \"1A\"\nsystem_ip = \"10.0.0.1\"\n[[edge]]\nserial = \"2A\"\nsystem_ip = \"10.0.0.1\"\n",
        );
        assert!(
            e.starts_with("line 6: system_ip: 10.0.0.1 is already bound to serial 1A on line 3"),
            "{e}"
        );
        let e = err("[[edge]]\nserial = \"1A\"\n");
        assert!(e.contains("system_ip"), "{e}");
        let e = err("[[edge]]\nserial = \"1A\"\nsystem_ip = \"10.0.0.1\"\nrole = \"x\"\n");
        assert!(e.starts_with("line 4:") && e.contains("role"), "{e}");
        let e = err("[[edge]]\nserial = 12\nsystem_ip = \"10.0.0.1\"\n");
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn ca_subject_and_key_read_back_from_der() {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Org ü");
        params.distinguished_name.push(DnType::CommonName, "Root");
        params.distinguished_name.push(
            DnType::CustomDnType(OID_SERIAL_NUMBER.to_vec()),
            DnValue::PrintableString(PrintableString::try_from("AB12").unwrap()),
        );
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = pem_der(&cert.pem(), "CERTIFICATE").unwrap();
        assert_eq!(der, cert.der().as_ref());
        let (dn, public) = subject_and_public_key(&der).unwrap();
        assert_eq!(public, key.public_key_raw());
        let got: Vec<_> = dn.iter().collect();
        let want: Vec<_> = params.distinguished_name.iter().collect();
        assert_eq!(got, want);
        assert!(subject_and_public_key(&der[..der.len() - 1]).is_err());
    }
}
