//! `xdpsec pki` end to end, checked by an independent implementation: the
//! openssl CLI reads and verifies what the binary wrote (subject O, OU,
//! serialNumber, the system-ip SAN, validity, EC P-256, the CA's
//! basicConstraints, the extended key usage per role), and the files' modes.
//! No root needed.
use std::{
    ffi::OsStr,
    fmt::Debug,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn xdpsec<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xdpsec"))
        .arg("pki")
        .args(args)
        .output()
        .expect("run xdpsec")
}

fn ok<S: AsRef<OsStr> + Debug>(args: &[S]) {
    let o = xdpsec(args);
    assert!(
        o.status.success(),
        "xdpsec pki {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs xdpsec pki expecting exit status 2; returns stderr.
fn refused<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let o = xdpsec(args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "xdpsec pki {args:?} should fail: stdout {} stderr {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `xdpsec pki allow` arguments.
fn allow<'a>(serial: &'a str, ip: &'a str, file: &'a str) -> [&'a str; 7] {
    [
        "allow",
        "--serial",
        serial,
        "--system-ip",
        ip,
        "--out",
        file,
    ]
}

/// `xdpsec pki device` arguments: the CA dir, organization, serial,
/// system-ip, role and out dir, then `extra`.
fn device(fields: [&str; 6], extra: &[&str]) -> Vec<String> {
    let [ca, org, serial, ip, role, out] = fields;
    let mut a: Vec<String> = [
        "device",
        "--ca",
        ca,
        "--organization",
        org,
        "--serial",
        serial,
        "--system-ip",
        ip,
        "--role",
        role,
        "--out",
        out,
    ]
    .map(String::from)
    .to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn openssl(args: &[&str]) -> (bool, String) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl CLI (apt install openssl)");
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), s)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("xdpsec-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn s(&self, sub: &str) -> String {
        self.0.join(sub).to_str().unwrap().to_string()
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(cert: &str) -> String {
    let (good, t) = openssl(&["x509", "-noout", "-text", "-in", cert]);
    assert!(good, "openssl x509 -text {cert}: {t}");
    t
}

#[test]
fn ca_and_device_certificates_verify_with_openssl() {
    let t = TempDir::new("ok");
    let (ca, edge, ctl) = (t.s("ca"), t.s("edge"), t.s("ctl"));
    ok(&["ca", "--organization", "Acme Labs", "--out", &ca]);
    assert_eq!(mode(&t.0.join("ca/ca.key")), 0o600, "ca.key mode");
    let ca_crt = format!("{ca}/ca.crt");
    let ca_text = text(&ca_crt);
    assert!(
        ca_text.contains("CA:TRUE"),
        "CA basicConstraints:\n{ca_text}"
    );
    assert!(ca_text.contains("O = Acme Labs"), "{ca_text}");
    assert!(ca_text.contains("ASN1 OID: prime256v1"), "{ca_text}");
    assert!(ca_text.contains("Certificate Sign"), "{ca_text}");
    let (good, k) = openssl(&["pkey", "-noout", "-text", "-in", &format!("{ca}/ca.key")]);
    assert!(good && k.contains("prime256v1"), "ca.key: {k}");

    ok(&device(
        [&ca, "Acme Labs", "0x1a2b3c", "10.255.0.11", "edge", &edge],
        &[],
    ));
    let dev_crt = format!("{edge}/device.crt");
    assert_eq!(mode(&t.0.join("edge/device.key")), 0o600, "device.key mode");
    let (good, v) = openssl(&["verify", "-CAfile", &ca_crt, &dev_crt]);
    assert!(good && v.contains(": OK"), "openssl verify: {v}");
    let d = text(&dev_crt);
    for want in [
        "O = Acme Labs",
        "OU = edge",
        "serialNumber = 1A2B3C",
        "IP Address:10.255.0.11",
        "ASN1 OID: prime256v1",
        "CA:FALSE",
        "TLS Web Client Authentication",
        "Issuer: O = Acme Labs, CN = Acme Labs Root CA",
    ] {
        assert!(d.contains(want), "device.crt lacks {want:?}:\n{d}");
    }
    assert!(!d.contains("TLS Web Server Authentication"), "{d}");
    let (good, k) = openssl(&[
        "pkey",
        "-noout",
        "-text",
        "-in",
        &format!("{edge}/device.key"),
    ]);
    assert!(good && k.contains("prime256v1"), "device.key: {k}");
    // The key belongs to the certificate.
    let (_, pub_cert) = openssl(&["x509", "-noout", "-pubkey", "-in", &dev_crt]);
    let (_, pub_key) = openssl(&["pkey", "-pubout", "-in", &format!("{edge}/device.key")]);
    assert_eq!(pub_cert, pub_key, "device.key does not match device.crt");

    ok(&device(
        [&ca, "Acme Labs", "C0FFEE", "10.255.0.1", "controller", &ctl],
        &["--days", "30"],
    ));
    let c = text(&format!("{ctl}/device.crt"));
    assert!(
        c.contains("OU = controller") && c.contains("TLS Web Server Authentication"),
        "{c}"
    );
    // --days 30: notAfter is 30 days out (checkend says "will not expire" at 29, "will expire" at 31).
    let crt = format!("{ctl}/device.crt");
    const DAY: u64 = 86_400;
    let (good, _) = openssl(&[
        "x509",
        "-noout",
        "-checkend",
        &(DAY * 29).to_string(),
        "-in",
        &crt,
    ]);
    assert!(good, "--days 30 expires within 29 days");
    let (good, _) = openssl(&[
        "x509",
        "-noout",
        "-checkend",
        &(DAY * 31).to_string(),
        "-in",
        &crt,
    ]);
    assert!(!good, "--days 30 still valid in 31 days");
    // A device certificate from another CA does not verify against this one.
    let other = t.s("other");
    ok(&["ca", "--organization", "Acme Labs", "--out", &other]);
    let (good, v) = openssl(&["verify", "-CAfile", &format!("{other}/ca.crt"), &dev_crt]);
    assert!(!good, "verified against the wrong CA: {v}");
}

#[test]
fn explicit_validity_and_an_expired_certificate() {
    let t = TempDir::new("dates");
    let (ca, old, set) = (t.s("ca"), t.s("old"), t.s("set"));
    ok(&["ca", "--organization", "Acme", "--out", &ca]);
    ok(&device(
        [&ca, "Acme", "ABC", "10.0.0.2", "edge", &old],
        &[
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2021-01-01T00:00:00Z",
        ],
    ));
    let ca_crt = format!("{ca}/ca.crt");
    let (good, v) = openssl(&["verify", "-CAfile", &ca_crt, &format!("{old}/device.crt")]);
    assert!(
        !good && v.contains("certificate has expired"),
        "expired: {v}"
    );
    ok(&device(
        [&ca, "Acme", "ABD", "10.0.0.3", "edge", &set],
        &[
            "--not-before",
            "2026-01-02T03:04:05Z",
            "--not-after",
            "2099-06-07T08:09:10+02:00",
        ],
    ));
    let (_, dates) = openssl(&[
        "x509",
        "-noout",
        "-dates",
        "-in",
        &format!("{set}/device.crt"),
    ]);
    assert!(
        dates.contains("notBefore=Jan  2 03:04:05 2026 GMT"),
        "{dates}"
    );
    assert!(
        dates.contains("notAfter=Jun  7 06:09:10 2099 GMT"),
        "{dates}"
    );
    // Not yet valid: --not-before in the future.
    let soon = t.s("soon");
    ok(&device(
        [&ca, "Acme", "ABE", "10.0.0.4", "edge", &soon],
        &["--not-before", "2098-01-01T00:00:00Z"],
    ));
    let (good, v) = openssl(&["verify", "-CAfile", &ca_crt, &format!("{soon}/device.crt")]);
    assert!(
        !good && v.contains("certificate is not yet valid"),
        "not yet valid: {v}"
    );
}

#[test]
fn bad_input_is_refused_naming_the_flag_and_writes_nothing() {
    let t = TempDir::new("bad");
    let ca = t.s("ca");
    ok(&["ca", "--organization", "Acme", "--out", &ca]);
    let out = t.s("dev");
    let dev = |serial: &str, ip: &str, role: &str, extra: &[&str]| -> String {
        refused(&device([&ca, "Acme", serial, ip, role, &out], extra))
    };
    let e = dev("12XY", "10.0.0.1", "edge", &[]);
    assert!(e.contains("--serial"), "{e}");
    let e = dev("12", "10.0.0.300", "edge", &[]);
    assert!(e.contains("--system-ip"), "{e}");
    let e = dev("12", "10.0.0.1", "router", &[]);
    assert!(e.contains("--role"), "{e}");
    let e = dev("12", "10.0.0.1", "edge", &["--not-after", "tomorrow"]);
    assert!(e.contains("--not-after"), "{e}");
    let e = dev(
        "12",
        "10.0.0.1",
        "edge",
        &[
            "--not-before",
            "2030-01-01T00:00:00Z",
            "--not-after",
            "2029-01-01T00:00:00Z",
        ],
    );
    assert!(
        e.contains("--not-after") && e.contains("--not-before"),
        "{e}"
    );
    assert!(
        !t.0.join("dev").exists(),
        "a refused device command left {out}"
    );
    // CA files missing.
    let e = refused(&device(
        [&t.s("nope"), "Acme", "12", "10.0.0.1", "edge", &out],
        &[],
    ));
    assert!(e.contains("--ca") && e.contains("ca.crt"), "{e}");
    // A ca.key that does not belong to ca.crt.
    let other = t.s("other");
    ok(&["ca", "--organization", "Acme", "--out", &other]);
    std::fs::copy(t.0.join("other/ca.key"), t.0.join("ca/ca.key")).unwrap();
    let e = refused(&device([&ca, "Acme", "12", "10.0.0.1", "edge", &out], &[]));
    assert!(
        e.contains("--ca") && e.contains("do not belong together"),
        "{e}"
    );
    assert!(!t.0.join("dev").exists());
    // An existing CA is not overwritten without --force.
    let before = std::fs::read(t.0.join("other/ca.key")).unwrap();
    let e = refused(&["ca", "--organization", "Acme", "--out", &other]);
    assert!(e.contains("--out") && e.contains("--force"), "{e}");
    assert_eq!(before, std::fs::read(t.0.join("other/ca.key")).unwrap());
    // Out dir not writable (a file where the directory should be).
    std::fs::write(t.0.join("file"), "x").unwrap();
    let e = refused(&["ca", "--organization", "Acme", "--out", &t.s("file/sub")]);
    assert!(e.contains("--out"), "{e}");
    // Nothing half-written: no temporary files left anywhere.
    for d in ["ca", "other"] {
        let names: Vec<_> = std::fs::read_dir(t.0.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, ["ca.crt", "ca.key"], "{d}: {names:?}");
    }
}

#[test]
fn allow_list_adds_replaces_and_refuses_a_taken_system_ip() {
    let t = TempDir::new("allow");
    let f = t.s("allowed.toml");
    ok(&allow("1a2b", "10.0.0.1", &f));
    ok(&allow("C0DE", "10.0.0.2", &f));
    // Re-adding a serial replaces its entry.
    ok(&allow("1A2B", "10.0.0.3", &f));
    let before = std::fs::read_to_string(&f).unwrap();
    let e = refused(&allow("BEEF", "10.0.0.2", &f));
    assert!(e.contains("--system-ip") && e.contains("C0DE"), "{e}");
    assert_eq!(
        before,
        std::fs::read_to_string(&f).unwrap(),
        "a refused allow changed the file"
    );
    let e = refused(&allow("BEEF", "10.0.0", &f));
    assert!(e.contains("--system-ip"), "{e}");
    // The file as the controller will read it: one entry per serial.
    let v: toml::Value = toml::from_str(&before).unwrap();
    let edges = v["edge"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = edges
        .iter()
        .map(|e| {
            (
                e["serial"].as_str().unwrap(),
                e["system_ip"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [("1A2B", "10.0.0.3"), ("C0DE", "10.0.0.2")],
        "{before}"
    );
    // A broken file is refused naming the line, and left alone.
    std::fs::write(
        &f,
        "[[edge]]\nserial = \"AB\"\nsystem_ip = \"10.0.0.999\"\n",
    )
    .unwrap();
    let e = refused(&allow("BEEF", "10.0.0.9", &f));
    assert!(e.contains("line 3") && e.contains("system_ip"), "{e}");
}
