//! Certificate authentication between two cores (`auth = "cert"`), with
//! certificates the openssl command makes (an independent reference):
//! ECDSA P-256, P-384 and RSA-2048 in both roles; and refused: a
//! certificate of another CA, an expired one, an identity the
//! certificate does not prove, an identity other than `remote_id`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use xdpsec_ike::cert::{self, Credentials};
use xdpsec_testenv::pki as openssl_pki;

use super::*;

/// A scratch directory of this test process.
fn tmpdir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("xdpsec-ike-pair-{name}-{}-{k}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A PKI of key type `kind` (`p256`, `p384`, `rsa`) in a new directory:
/// CAs `ca` and `other` (30 days), and leaves `alpha` (node A: subject
/// `C=CH, O=xdpsec test, CN=alpha`, SANs alpha.example and A's address)
/// and `beta` (node B, likewise) signed by `ca`, `intruder` (beta's
/// subject and SANs, signed by `other`), `short` (beta's, signed by
/// `ca`, valid one day).
fn pki(kind: &str) -> PathBuf {
    let d = tmpdir(kind);
    openssl_pki::keys(
        &d,
        kind,
        &["ca", "other", "alpha", "beta", "intruder", "short"],
    );
    openssl_pki::ca(&d, "ca");
    openssl_pki::ca(&d, "other");
    for (name, cn, addr, ca, days) in [
        ("alpha", "alpha", A, "ca", 30),
        ("beta", "beta", B, "ca", 30),
        ("intruder", "beta", B, "other", 30),
        ("short", "beta", B, "ca", 1),
    ] {
        openssl_pki::leaf(
            &d,
            name,
            &format!("/C=CH/O=xdpsec test/CN={cn}"),
            &format!("subjectAltName=DNS:{cn}.example,IP:{addr}\nkeyUsage=digitalSignature\n"),
            ca,
            days,
        );
    }
    d
}

fn creds(d: &Path, leaf: &str) -> Credentials {
    let r = |f: String| std::fs::read(d.join(f)).unwrap();
    Credentials::from_pem(
        &r(format!("{leaf}.crt")),
        &r(format!("{leaf}.key")),
        &r("ca.crt".into()),
    )
    .unwrap()
}

/// A PeerConfig of node `local` authenticating with `c`: its identity the
/// certificate's subject, the peer's the DN `C=CH, O=xdpsec test,
/// CN={peer_cn}`.
fn cert_cfg(local: &str, c: Credentials, peer_cn: &str, initiate: bool) -> PeerConfig {
    let remote = if local == A { B } else { A };
    let mut p = cfg(
        local,
        remote,
        &["aes256gcm16-prfsha256-x25519"],
        &["aes256gcm16"],
        initiate,
    );
    p.psk = Zeroizing::new(Vec::new());
    p.local_id = Identity::Dn(c.subject_der());
    p.remote_id =
        Identity::Dn(cert::dn_from_text(&format!("C=CH, O=xdpsec test, CN={peer_cn}")).unwrap());
    p.cert = Some(Arc::new(c));
    p
}

/// A CERTREQ payload: encoding and data.
type CertReq = (u8, Vec<u8>);

/// The CERTREQ and SIGNATURE_HASH_ALGORITHMS of an IKE_SA_INIT.
fn init_cert_payloads(data: &[u8]) -> (Option<CertReq>, Option<Vec<u8>>) {
    let m = Message::parse(data).unwrap();
    assert_eq!(m.header.exchange, wire::IKE_SA_INIT);
    let req = m.payloads.iter().find_map(|p| match p {
        Payload::CertReq(e, d) => Some((*e, d.clone())),
        _ => None,
    });
    let hashes = m
        .notify(wire::notify::SIGNATURE_HASH_ALGORITHMS)
        .map(|n| n.data.clone());
    (req, hashes)
}

#[test]
fn cert_auth_each_key_type_both_roles() {
    for kind in ["p256", "p384", "rsa"] {
        let d = pki(kind);
        let want_req = openssl_pki::spki_sha1(&d, "ca");
        for a_initiates in [true, false] {
            let a = cert_cfg(A, creds(&d, "alpha"), "beta", a_initiates);
            let b = cert_cfg(B, creds(&d, "beta"), "alpha", !a_initiates);
            let mut n = Net::new(a, b);
            let cap = record(&mut n, |_, _| false);
            n.run_for(Duration::from_secs(5));
            let ctx = format!("{kind}, A initiates: {a_initiates}");
            assert!(
                n.ready(0) && n.ready(1),
                "{ctx}\nA: {}\nB: {}",
                n.logs(0),
                n.logs(1)
            );
            n.assert_keys_match();
            let init = if a_initiates { 0 } else { 1 };
            assert!(n.nodes[init].ike.sas(n.now)[0].initiator, "{ctx}");
            assert!(!n.nodes[1 - init].ike.sas(n.now)[0].initiator, "{ctx}");
            // Both IKE_SA_INITs announce SHA2-256/384/512 (RFC 7427);
            // the response names our CA (encoding 4, X.509 signature),
            // the request does not (RFC 7296 1.2: the initiator's CERTREQ
            // goes in IKE_AUTH).
            let cap = cap.borrow();
            for (who, msg, want) in [
                (init, &cap[0], None),
                (1 - init, &cap[1], Some((4, want_req.clone()))),
            ] {
                assert_eq!(msg.0, who, "{ctx}");
                let (req, hashes) = init_cert_payloads(&msg.1);
                assert_eq!(req, want, "{ctx}");
                assert_eq!(hashes, Some(vec![0, 2, 0, 3, 0, 4]), "{ctx}");
            }
            // IKE_SA_INIT, then IKE_AUTH (an RSA one in RFC 7383
            // fragments: longer than the default fragment_size), nothing
            // more.
            assert!(cap.len() >= 4, "{ctx}");
            for (_, d) in &cap[2..] {
                let h = Message::parse(d).unwrap().header;
                assert_eq!(h.exchange, wire::IKE_AUTH, "{ctx}");
            }
            for (s, peer) in [(0, "beta"), (1, "alpha")] {
                assert!(!n.logs(s).contains("failed"), "{ctx}: {}", n.logs(s));
                // Each announced SHA2: each signed with RFC 7427.
                let line = format!(
                    "peer authenticated by certificate C=CH, O=xdpsec test, CN={peer} (AUTH method 14, RFC 7427"
                );
                assert!(n.logs(s).contains(&line), "{ctx}: {}", n.logs(s));
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn cert_identity_from_a_subject_alt_name() {
    // B sends its address as its identity (a subjectAltName of its
    // certificate); A expects that address (the default remote_id).
    let d = pki("p256");
    let a = {
        let mut a = cert_cfg(A, creds(&d, "alpha"), "beta", true);
        a.remote_id = Identity::Addr(ip(B));
        a
    };
    let b = {
        let mut b = cert_cfg(B, creds(&d, "beta"), "alpha", false);
        b.local_id = Identity::Addr(ip(B));
        b
    };
    let mut n = Net::new(a, b);
    n.run_for(Duration::from_secs(5));
    assert!(n.ready(0) && n.ready(1), "{}\n{}", n.logs(0), n.logs(1));
    n.assert_keys_match();
    let _ = std::fs::remove_dir_all(&d);
}

/// Run A and B where B authenticates with `beta` (changed by `tweak_b`)
/// and A's config is changed by `tweak_a`, once with A initiating and
/// once with B: neither ends with an SA, and A, the side that checks the
/// bad credentials, logs `why`; B is told AUTHENTICATION_FAILED.
fn refused(
    what: &str,
    d: &Path,
    beta: &str,
    tweak_a: impl Fn(&mut PeerConfig),
    tweak_b: impl Fn(&mut PeerConfig),
    why: &str,
) {
    for a_initiates in [true, false] {
        let mut a = cert_cfg(A, creds(d, "alpha"), "beta", a_initiates);
        tweak_a(&mut a);
        let mut b = cert_cfg(B, creds(d, beta), "alpha", !a_initiates);
        tweak_b(&mut b);
        let mut n = Net::new(a, b);
        n.run_for(Duration::from_secs(5));
        let ctx = format!(
            "{what}, A initiates: {a_initiates}\nA: {}\nB: {}",
            n.logs(0),
            n.logs(1)
        );
        assert!(!n.ready(0) && !n.ready(1), "{ctx}");
        assert!(n.nodes[0].dp.inbound.is_empty(), "{ctx}");
        assert!(n.nodes[1].dp.inbound.is_empty(), "{ctx}");
        assert!(n.nodes[1].dp.outbound.is_none(), "{ctx}");
        assert!(
            n.logs(0).contains("authentication failed:") && n.logs(0).contains(why),
            "{ctx}"
        );
        if a_initiates {
            // A checked the responder's answer: it says so to B, which
            // had taken the SA as established and now deletes it.
            assert!(
                n.logs(1).contains("SA DOWN") || n.logs(1).contains("deleted"),
                "{ctx}"
            );
        } else {
            // A answered B's IKE_AUTH with AUTHENTICATION_FAILED.
            assert!(n.logs(1).contains("AUTHENTICATION_FAILED"), "{ctx}");
        }
    }
}

#[test]
fn cert_of_another_ca_refused() {
    let d = pki("p256");
    refused(
        "another CA",
        &d,
        "intruder",
        |_| {},
        |_| {},
        "is not signed by a CA of ca_file",
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn in_three_days() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3 * 86400)
}

#[test]
fn expired_cert_refused() {
    // B's certificate is valid for one day; A's clock is three days on
    // (its CA and its own certificate are still valid then).
    let d = pki("p384");
    refused(
        "expired",
        &d,
        "short",
        |a| {
            a.cert = Some(Arc::new(creds(&d, "alpha").with_clock(in_three_days)));
        },
        |_| {},
        "is not valid now",
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn identity_not_in_the_cert_or_not_the_remote_id_refused() {
    let d = pki("rsa");
    // B claims an FQDN its certificate does not have; A expects it.
    let gamma = Identity::Fqdn("gamma.example".into());
    refused(
        "identity not in the certificate",
        &d,
        "beta",
        |a| a.remote_id = gamma.clone(),
        |b| b.local_id = gamma.clone(),
        "is not among the certificate's subjectAltNames",
    );
    // B's identity is its certificate's subject, but A expects another DN.
    refused(
        "another remote_id",
        &d,
        "beta",
        |a| {
            a.remote_id = Identity::Dn(cert::dn_from_text("C=CH, O=xdpsec test, CN=gamma").unwrap())
        },
        |_| {},
        "is not the configured remote_id C=CH, O=xdpsec test, CN=gamma",
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// What `show crypto ikev2 sa detailed` prints as `Auth sign` and `Auth
/// verify`: the method each side signed its AUTH with and the one the
/// peer's AUTH used (RFC 7427's method 14 named by the key's type), with
/// A holding an ECDSA certificate and B an RSA one, in both roles; a
/// rekeyed IKE SA keeps them; with a pre-shared key both stay PSK.
#[test]
fn auth_methods_in_the_view_ecdsa_and_rsa_both_roles() {
    use xdpsec_ike::AuthMethod::{Ecdsa, Psk, Rsa};
    let (ec, rsa) = (pki("p256"), pki("rsa"));
    // Our certificate and key from `own`, trusting the peer's CA.
    let creds_of = |own: &Path, leaf: &str, peer: &Path| {
        let r = |d: &Path, f: String| std::fs::read(d.join(f)).unwrap();
        Credentials::from_pem(
            &r(own, format!("{leaf}.crt")),
            &r(own, format!("{leaf}.key")),
            &r(peer, "ca.crt".into()),
        )
        .unwrap()
    };
    let auth = |n: &Net, s: usize| {
        let v = n.nodes[s].ike.sas(n.now);
        assert_eq!(v.len(), 1, "{}", n.logs(s));
        (v[0].auth_sign, v[0].auth_verify, v[0].spi_i)
    };
    for a_initiates in [true, false] {
        let a = cert_cfg(A, creds_of(&ec, "alpha", &rsa), "beta", a_initiates);
        let b = cert_cfg(B, creds_of(&rsa, "beta", &ec), "alpha", !a_initiates);
        let mut n = Net::new(a, b);
        n.run_for(Duration::from_secs(5));
        let ctx = format!("A initiates: {a_initiates}");
        assert!(
            n.ready(0) && n.ready(1),
            "{ctx}\nA: {}\nB: {}",
            n.logs(0),
            n.logs(1)
        );
        let (a0, b0) = (auth(&n, 0), auth(&n, 1));
        assert_eq!((a0.0, a0.1), (Ecdsa, Rsa), "{ctx}");
        assert_eq!((b0.0, b0.1), (Rsa, Ecdsa), "{ctx}");
        // Rekey the IKE SA (from the initiator's side): same methods.
        let side = usize::from(!a_initiates);
        let peer = n.nodes[1 - side].addr;
        let acts = n.nodes[side].ike.rekey_now(n.now, peer, true);
        n.apply(side, acts);
        n.run_for(Duration::from_secs(2));
        let (a1, b1) = (auth(&n, 0), auth(&n, 1));
        assert_ne!(a1.2, a0.2, "{ctx}: IKE SA not rekeyed: {}", n.logs(0));
        assert_eq!((a1.0, a1.1), (Ecdsa, Rsa), "{ctx} after the rekey");
        assert_eq!((b1.0, b1.1), (Rsa, Ecdsa), "{ctx} after the rekey");
    }
    let mut n = pair(&["aes256gcm16-prfsha256-x25519"], &["aes256gcm16"]);
    n.run_for(Duration::from_secs(3));
    assert!(n.ready(0) && n.ready(1));
    for s in 0..2 {
        let v = auth(&n, s);
        assert_eq!((v.0, v.1), (Psk, Psk), "node {s}");
    }
    let _ = std::fs::remove_dir_all(&ec);
    let _ = std::fs::remove_dir_all(&rsa);
}
