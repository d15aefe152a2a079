//! Certificate authentication (`auth = "cert"`) against strongSwan 5.9.8
//! (issue 19, item 4), certificates made by `xdpsec pki` in the test:
//! xdpsec initiating and strongSwan initiating, ECDSA P-256, P-384 and
//! RSA-2048 keys, the tunnel up on both sides (charon's `swanctl
//! --list-sas` and xdpsec's shows agree) and pings through it; charon's
//! log says whom it authenticated and with which signature (RFC 7427
//! when charon announced SIGNATURE_HASH_ALGORITHMS, the classic ECDSA
//! method when it did not). Refused both ways: a certificate of another
//! CA, an expired one.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use xdpsec_e2e::{
    ike::{INNER, WithStrongswan, charon_selector_addrs, many_selectors},
    ping, scratch_dir,
    strongswan::{CharonCreds, CharonOpts, GCM_X25519, require_5_9_8},
    xdpsec_bin,
};

/// The organization of every certificate (no spaces: swanctl's raw
/// output of identities is split at spaces).
const ORG: &str = "xdpsec-e2e";

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("running a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `xdpsec pki ca` into `dir`.
fn make_ca(dir: &Path) {
    run(Command::new(xdpsec_bin())
        .args(["pki", "ca", "--organization", ORG, "--out"])
        .arg(dir));
}

/// `xdpsec pki device` signed by the CA in `ca`, into `out`: serial
/// `serial`, key type `key_type` (an RSA key made by openssl and
/// imported, as ring cannot generate one), `extra` flags (validity).
fn make_device(ca: &Path, out: &Path, serial: &str, key_type: &str, extra: &[&str]) {
    let mut c = Command::new(xdpsec_bin());
    c.args(["pki", "device", "--ca"])
        .arg(ca)
        .args(["--organization", ORG, "--serial", serial])
        .args(["--system-ip", INNER[0], "--role", "edge"])
        .args(["--key-type", key_type])
        .args(extra)
        .arg("--out")
        .arg(out);
    if key_type == "rsa-2048" {
        let key = out.with_extension("rsa.pem");
        run(Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA"])
            .args(["-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&key));
        c.arg("--key").arg(&key);
    }
    run(&mut c);
}

/// The subject of device `serial`'s certificate (`xdpsec pki`'s layout),
/// as text.
fn dn(serial: &str) -> String {
    format!("O={ORG}, OU=edge, CN=edge-{serial}, serialNumber={serial}")
}

/// A CA and two devices: xdpsec's (serial 1, `x`) and charon's (serial
/// 2, `s`); `charon_extra`: flags for charon's certificate.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(xdpsec_key: &str, charon_key: &str, charon_extra: &[&str]) -> Pki {
        let dir = scratch_dir("cert-pki");
        make_ca(&dir.join("ca"));
        make_device(&dir.join("ca"), &dir.join("x"), "1", xdpsec_key, &[]);
        make_device(
            &dir.join("ca"),
            &dir.join("s"),
            "2",
            charon_key,
            charon_extra,
        );
        Pki { dir }
    }

    /// xdpsec's tunnel lines: its certificate (identity: its subject DN),
    /// the CA, charon's DN as `remote_id`.
    fn xdpsec_lines(&self) -> String {
        let d = self.dir.display();
        format!(
            "auth = \"cert\"\ncert_file = \"{d}/x/device.crt\"\nkey_file = \"{d}/x/device.key\"\nca_file = \"{d}/ca/ca.crt\"\nremote_id = \"{}\"\n",
            dn("2")
        )
    }

    fn charon_creds(&self) -> CharonCreds {
        CharonCreds {
            cert: self.dir.join("s/device.crt"),
            key: self.dir.join("s/device.key"),
            ca: self.dir.join("ca/ca.crt"),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// xdpsec (node 1) and charon (node 2) authenticating with `pki`'s
/// certificates (charon: its subject as its identity, xdpsec's DN
/// expected); charon with `signature_authentication` (RFC 7427) or not.
/// charon initiates unless `xdpsec_initiates`: Err if that fails.
fn start(
    pki: &Pki,
    xdpsec_initiates: bool,
    rfc7427: bool,
) -> (WithStrongswan, Result<String, String>) {
    let opts = CharonOpts {
        creds: Some(pki.charon_creds()),
        signature_authentication: rfc7427,
        ..CharonOpts::default()
    };
    let p = WithStrongswan::start(
        false,
        "unused",
        GCM_X25519,
        xdpsec_initiates,
        &pki.xdpsec_lines(),
        opts,
        |c| {
            c.pubkey = true;
            c.remote_id = Some(dn("1"));
        },
    )
    .unwrap();
    let initiated = if xdpsec_initiates {
        Ok(String::new())
    } else {
        p.charon.initiate("xs").map_err(|e| e.to_string())
    };
    (p, initiated)
}

/// The tunnel is up on both sides (one IKE SA and child, the same SPIs),
/// started by the side `xdpsec_initiates` says; charon authenticated
/// xdpsec's DN `with {charon_saw}`, xdpsec charon's with AUTH method
/// `xdpsec_saw`; pings pass both ways and charon counted them.
fn assert_up(p: &WithStrongswan, xdpsec_initiates: bool, charon_saw: &str, xdpsec_saw: u8) {
    let (ike, _, x) = p
        .wait_agreed(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}\n--- charon's log ---\n{}", p.charon.log_text()));
    assert_eq!(ike.initiator, !xdpsec_initiates, "{ike:#?}");
    assert_eq!(x["initiator"], xdpsec_initiates, "{x}");
    let log = p.charon.log_text();
    for line in [
        format!(
            "authentication of '{}' with {charon_saw} successful",
            dn("1")
        ),
        // xdpsec's CERTREQ (in IKE_SA_INIT as responder, in IKE_AUTH as
        // initiator) names the CA.
        format!("received cert request for \"O={ORG}, CN={ORG} Root CA\""),
    ] {
        assert!(log.contains(&line), "charon's log lacks {line:?}:\n{log}");
    }
    let xlog = p.d.log_text();
    let line = format!(
        "peer authenticated by certificate {} (AUTH method {xdpsec_saw}",
        dn("2")
    );
    assert!(xlog.contains(&line), "xdpsec's log lacks {line:?}:\n{xlog}");
    let (sent, got) = ping(&p.lab.ns1, INNER[0], INNER[1], 5, "0.2");
    assert_eq!((sent, got), (5, 5), "pings from xdpsec's side");
    let (sent, got) = ping(&p.lab.ns2, INNER[1], INNER[0], 5, "0.2");
    assert_eq!((sent, got), (5, 5), "pings from charon's side");
    let (_, child, _) = p.wait_agreed(Duration::from_secs(5)).unwrap();
    assert!(
        child.packets_in >= 10 && child.packets_out >= 10,
        "{child:#?}"
    );
}

#[test]
fn cert_auth_xdpsec_initiates_p256_against_rsa() {
    require_5_9_8();
    let pki = Pki::new("ecdsa-p256", "rsa-2048", &[]);
    let (p, _) = start(&pki, true, true);
    // charon announced RFC 7427: xdpsec signs with ECDSA-SHA256 in
    // method 14; charon signs with RSA PKCS#1 v1.5 SHA-256 in method 14.
    assert_up(&p, true, "ECDSA_WITH_SHA256_DER", 14);
}

#[test]
fn cert_auth_strongswan_initiates_p384_against_p256() {
    require_5_9_8();
    let pki = Pki::new("ecdsa-p384", "ecdsa-p256", &[]);
    let (p, initiated) = start(&pki, false, true);
    initiated.unwrap();
    assert_up(&p, false, "ECDSA_WITH_SHA384_DER", 14);
}

#[test]
fn cert_auth_classic_methods_when_the_peer_has_no_rfc7427() {
    require_5_9_8();
    // charon without signature_authentication announces no hashes and
    // signs with the classic method: xdpsec signs with ECDSA-256 (9) and
    // verifies charon's ECDSA-384 (10), as with an IOS `ecdsa-sig` peer.
    let pki = Pki::new("ecdsa-p256", "ecdsa-p384", &[]);
    let (p, _) = start(&pki, true, false);
    assert_up(&p, true, "ECDSA-256 signature", 10);
}

/// Wait (bounded) until `text()` contains `needle`.
fn wait_text(what: &str, text: impl Fn() -> String, needle: &str) {
    let end = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let t = text();
        if t.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "{what} lacks {needle:?}:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cert_of_another_ca_or_expired_refused_both_ways() {
    require_5_9_8();
    // charon's certificate from another CA, strongSwan initiating: xdpsec
    // refuses it and answers AUTHENTICATION_FAILED.
    let pki = Pki::new("ecdsa-p256", "ecdsa-p256", &[]);
    let other = pki.dir.join("other");
    make_ca(&other);
    make_device(&other, &pki.dir.join("s"), "2", "ecdsa-p256", &["--force"]);
    let (p, initiated) = start(&pki, false, true);
    let e = initiated.unwrap_err();
    assert!(
        e.contains("received AUTHENTICATION_FAILED notify error"),
        "{e}"
    );
    wait_text(
        "xdpsec's log",
        || p.d.log_text(),
        "is not signed by a CA of ca_file",
    );
    wait_text(
        "charon's log",
        || p.charon.log_text(),
        "received AUTHENTICATION_FAILED notify error",
    );
    assert!(p.charon.list_sas().unwrap().is_empty());
    drop(p);
    // xdpsec initiating: charon takes xdpsec's certificate (its CA is
    // charon's), xdpsec refuses charon's and tells it so (RFC 7296
    // 2.21.2: an INFORMATIONAL with AUTHENTICATION_FAILED and the DELETE),
    // and charon deletes the IKE SA it had taken as established.
    let (p, _) = start(&pki, true, true);
    wait_text(
        "xdpsec's log",
        || p.d.log_text(),
        "is not signed by a CA of ca_file",
    );
    for line in [
        "parsed INFORMATIONAL request 2 [ N(AUTH_FAILED) D ]",
        "received DELETE for IKE_SA xs[1]",
    ] {
        wait_text("charon's log", || p.charon.log_text(), line);
    }
    drop(p);
    drop(pki);
    // charon's certificate expired in 2020: xdpsec refuses it.
    let pki = Pki::new(
        "ecdsa-p256",
        "ecdsa-p256",
        &[
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2020-12-31T00:00:00Z",
        ],
    );
    let (p, initiated) = start(&pki, false, true);
    let e = initiated.unwrap_err();
    assert!(
        e.contains("received AUTHENTICATION_FAILED notify error"),
        "{e}"
    );
    wait_text("xdpsec's log", || p.d.log_text(), "is not valid now");
    wait_text(
        "charon's log",
        || p.charon.log_text(),
        "received AUTHENTICATION_FAILED notify error",
    );
    assert!(p.charon.list_sas().unwrap().is_empty());
}

/// Certificate authentication across a path with a 1280-byte MTU (both
/// veth ends), RSA-2048 certificates on both sides so that IKE_AUTH is
/// longer than a datagram may be: both sides split it in RFC 7383
/// fragments (default fragment_size 1280 on both) and reassemble the
/// other's, in both roles; every IKE datagram charon sent fits the path;
/// the tunnel comes up and pings pass.
fn cert_auth_fragmented_1280(xdpsec_initiates: bool) {
    require_5_9_8();
    let pki = Pki::new("rsa-2048", "rsa-2048", &[]);
    let opts = CharonOpts {
        creds: Some(pki.charon_creds()),
        ..CharonOpts::default()
    };
    // 10 more /32 selectors each way: xdpsec's IKE_AUTH too is longer
    // than the path (charon's is already, with its notifies).
    let (ts, l, r) = many_selectors(10);
    let lines = format!("{}{ts}", pki.xdpsec_lines());
    let p = WithStrongswan::start(
        false,
        "unused",
        GCM_X25519,
        xdpsec_initiates,
        &lines,
        opts,
        move |c| {
            c.pubkey = true;
            c.remote_id = Some(dn("1"));
            c.fragmentation = Some("yes");
            c.local_ts = l;
            c.remote_ts = r;
        },
    )
    .unwrap();
    for (ns, ifc) in [(&p.lab.ns1, &p.lab.if1), (&p.lab.ns2, &p.lab.if2)] {
        let out =
            xdpsec_e2e::Lab::exec(ns, &["ip", "link", "set", "dev", ifc, "mtu", "1280"]).unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    charon_selector_addrs(&p.lab, 10).unwrap();
    if xdpsec_initiates {
        // xdpsec initiated at start, before the MTU and addresses were
        // set: start over, wholly across the 1280-byte path.
        p.d.cli(&format!("clear crypto session remote {}", p.peer()))
            .unwrap();
    } else {
        p.charon.initiate("xs").unwrap();
    }
    let (ike, _, _) = p
        .wait_agreed(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n--- charon's log ---\n{}", p.charon.log_text()));
    assert_eq!(ike.initiator, !xdpsec_initiates, "{ike:#?}");
    let log = p.charon.log_text();
    assert!(
        log.contains("splitting IKE message") && log.contains("reassembled fragmented IKE message"),
        "charon did not fragment and reassemble:\n{log}"
    );
    // Every datagram charon sent fits 1280 bytes with IPv4 and UDP headers.
    for l in log.lines().filter(|l| l.contains("sending packet:")) {
        let n: usize = l
            .rsplit('(')
            .next()
            .and_then(|t| t.split(' ').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{l}"));
        assert!(n + 28 <= 1280, "{l}");
    }
    let st =
        p.d.cli_json("show crypto ikev2 stats fragmentation")
            .unwrap();
    let n = |k: &str| st[k].as_u64().unwrap_or_else(|| panic!("{k}: {st}"));
    assert!(n("fragments_sent") >= 2, "{st}");
    assert!(n("messages_reassembled") >= 1, "{st}");
    assert!(
        p.d.log_text()
            .contains(&format!("peer authenticated by certificate {}", dn("2"))),
        "{}",
        p.d.log_text()
    );
    let (sent, got) = ping(&p.lab.ns1, INNER[0], INNER[1], 3, "0.2");
    assert_eq!((sent, got), (3, 3));
}

#[test]
fn cert_auth_xdpsec_initiates_across_a_1280_mtu_with_fragmentation() {
    cert_auth_fragmented_1280(true);
}

#[test]
fn cert_auth_strongswan_initiates_across_a_1280_mtu_with_fragmentation() {
    cert_auth_fragmented_1280(false);
}
