//! IKEv2 tunnels end to end: two xdpsec nodes negotiate with each other,
//! and xdpsec negotiates with strongSwan 5.9.8 (an independent IKEv2
//! implementation, kernel-libipsec for its ESP) as initiator and as
//! responder; traffic flows through the TUN devices; `clear crypto sa peer`
//! brings new SPIs; `forget-sa` reproduces the seed's INV_SPI fault and
//! `clear crypto sa peer` recovers it; a wrong PSK is refused on both sides.
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xdpsec_e2e::{
    Daemon, Lab,
    ike::{INNER, WithStrongswan, charon_peer, ike_config as ike_config_with},
    strongswan::{
        CBC_ECP256, Charon, CharonOpts, GCM_X25519, IOS_XE_DEFAULTS, NO_PROPOSALS, Proposals,
    },
};

const PSK: &str = "xdpsec ikev2 test key";
/// An xdpsec config with one IKE tunnel to the other node of `lab`.
fn ike_config(lab: &Lab, side: usize, psk: &str, initiate: bool, proposals: &Proposals) -> String {
    ike_config_with(lab, side, psk, initiate, proposals, "")
}

/// `ping` from `src` to `dst` in `ns`, bounded; (transmitted, received).
fn ping(ns: &str, src: &str, dst: &str, count: u32) -> (u32, u32) {
    ping_every(ns, src, dst, count, "0.2")
}

/// `ping -i interval`, bounded to 40 s; (transmitted, received).
fn ping_every(ns: &str, src: &str, dst: &str, count: u32, interval: &str) -> (u32, u32) {
    xdpsec_e2e::ping(ns, src, dst, count, interval)
}

/// Wait (bounded) until `d` has a READY IKE SA and a child SA; its JSON.
fn wait_ready(d: &Daemon, timeout: Duration) -> Value {
    xdpsec_e2e::ike::wait_ready(d, timeout).unwrap()
}

fn spis(d: &Daemon) -> (u64, Vec<u64>) {
    xdpsec_e2e::ike::spis(d).unwrap()
}

#[test]
fn two_xdpsec_nodes_negotiate_clear_and_recover_from_forget_sa() {
    let lab = Lab::unique().up(1).unwrap();
    let d2 = Daemon::start(&lab.ns2, &ike_config(&lab, 1, PSK, false, &GCM_X25519)).unwrap();
    let d1 = Daemon::start(&lab.ns1, &ike_config(&lab, 0, PSK, true, &GCM_X25519)).unwrap();
    let v1 = wait_ready(&d1, Duration::from_secs(10));
    let v2 = wait_ready(&d2, Duration::from_secs(10));
    let (a, b) = (&v1["ike_sas"][0], &v2["ike_sas"][0]);
    assert_eq!(a["initiator_spi"], b["initiator_spi"], "{a} {b}");
    assert_eq!(a["responder_spi"], b["responder_spi"], "{a} {b}");
    assert_eq!(
        (a["encryption"].as_str(), a["keysize"].as_u64()),
        (Some("AES-GCM"), Some(256))
    );
    assert_eq!(a["dh_group"], 31);
    assert_eq!(
        (a["local_port"].as_u64(), a["remote_port"].as_u64()),
        (Some(4500), Some(4500))
    );
    // The child SAs mirror each other.
    let (out1, in1) = spis(&d1);
    let (out2, in2) = spis(&d2);
    assert_eq!((in1.clone(), in2.clone()), (vec![out2], vec![out1]));
    assert_eq!(ping(&lab.ns1, INNER[0], INNER[1], 5), (5, 5));

    // Cisco's genieparser reads `show crypto ikev2 sa` and `show crypto
    // ipsec sa` into the values `--json` gives.
    let texts = serde_json::json!([{
        "ikev2": d1.cli("show crypto ikev2 sa").unwrap(),
        "sa": d1.cli("show crypto ipsec sa").unwrap(),
        "session": d1.cli("show crypto session").unwrap(),
    }]);
    let parsed = xdpsec_e2e::genie_parse(&texts).unwrap();
    let g = &parsed[0]["ikev2"]["parsed"]["ipv4"];
    let (id, e) = g
        .as_object()
        .and_then(|m| m.iter().next())
        .unwrap_or_else(|| panic!("{parsed}"));
    assert_eq!(id, &a["tunnel_id"].to_string());
    for (gk, jk) in [
        ("local_ip", "local"),
        ("remote_ip", "remote"),
        ("status", "status"),
        ("encryption", "encryption"),
        ("prf", "prf"),
        ("hash", "hash"),
        ("auth_sign", "auth_sign"),
        ("auth_verify", "auth_verify"),
    ] {
        assert_eq!(e[gk], a[jk], "{gk}: {e} vs {a}");
    }
    for (gk, jk) in [
        ("local_port", "local_port"),
        ("remote_port", "remote_port"),
        ("keysize", "keysize"),
        ("dh_group", "dh_group"),
        ("life_time", "life_seconds"),
    ] {
        assert_eq!(e[gk], a[jk], "{gk}: {e} vs {a}");
    }
    let session = &parsed[0]["session"]["parsed"]["interface"]["Tunnel2"];
    assert_eq!(session["session_status"], "UP-ACTIVE", "{parsed}");
    let peer = lab.v4[1].to_string();
    assert!(session["peer"][&peer].is_object(), "{parsed}");
    let sa_parsed = &parsed[0]["sa"]["parsed"]["interface"]["Tunnel2"];
    let out_hex = format!("0x{out1:X}");
    let text = sa_parsed.to_string();
    assert!(text.contains(&out_hex), "{out_hex} not in {sa_parsed}");

    // clear crypto sa peer: the children go (the peer is told) and new
    // ones come with new SPIs; traffic resumes.
    let out = d1
        .cli(&format!("clear crypto sa peer {}", lab.v4[1]))
        .unwrap();
    assert!(out.contains("Tunnel2"), "{out}");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (o1, i1) = spis(&d1);
        let (o2, i2) = spis(&d2);
        if o1 != 0 && o1 != out1 && i1 == vec![o2] && i2 == vec![o1] {
            break;
        }
        assert!(
            Instant::now() < end,
            "no new SPIs: {o1:x} {i1:x?} / {o2:x} {i2:x?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ping(&lab.ns1, INNER[0], INNER[1], 5), (5, 5));

    // The seed's fault: node 1's datapath forgets its inbound SA.
    d1.cli(&format!(
        "request platform software xdpsec fault forget-sa peer {}",
        lab.v4[1]
    ))
    .unwrap();
    let (tx, rx) = ping(&lab.ns1, INNER[0], INNER[1], 3);
    assert_eq!(
        (tx, rx),
        (3, 0),
        "replies are dropped while the SA is forgotten"
    );
    let drops = d1
        .cli("show platform hardware qfp active feature ipsec datapath drops")
        .unwrap();
    assert!(drops.contains("4 IN_US_V4_PKT_SA_NOT_FOUND_SPI"), "{drops}");
    assert!(
        d1.cli("show logging")
            .unwrap()
            .contains("%CRYPTO-4-RECVD_PKT_INV_SPI")
    );
    // Recovery: IKE renegotiates.
    d1.cli(&format!("clear crypto sa peer {}", lab.v4[1]))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while ping(&lab.ns1, INNER[0], INNER[1], 2).1 < 2 {
        assert!(Instant::now() < end, "no recovery:\n{}", d1.log_text());
    }
}

#[test]
fn a_wrong_psk_is_refused_with_a_clear_log_line_on_both_sides() {
    let lab = Lab::unique().up(1).unwrap();
    let d2 = Daemon::start(
        &lab.ns2,
        &ike_config(&lab, 1, "another key", false, &GCM_X25519),
    )
    .unwrap();
    let d1 = Daemon::start(&lab.ns1, &ike_config(&lab, 0, PSK, true, &GCM_X25519)).unwrap();
    let end = Instant::now() + Duration::from_secs(8);
    loop {
        let (l1, l2) = (d1.log_text(), d2.log_text());
        if l1.to_lowercase().contains("authentication")
            && l2.to_lowercase().contains("authentication")
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "no authentication failure logged:\n{l1}\n---\n{l2}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(spis(&d1).0, 0, "no child SA");
}

/// xdpsec (node 1) and strongSwan (node 2) with an SA up between them.
/// Fields drop in order: charon and the daemon first, then the namespaces.
struct Up {
    charon: Charon,
    d: Daemon,
    lab: Lab,
    /// strongSwan's view of the IKE SA and its child.
    ike: xdpsec_e2e::strongswan::IkeSa,
    child: xdpsec_e2e::strongswan::ChildSa,
}

/// xdpsec configured with `ours` (empty strings: no proposal keys) and
/// strongSwan with `theirs`, one side initiating; waits (bounded) until
/// both have the SA and checks they hold the same child SPIs.
fn up_with_strongswan(ours: Proposals, theirs: Proposals, xdpsec_initiates: bool) -> Up {
    let lab = Lab::unique().up(1).unwrap();
    let (charon, _) = charon_peer(&lab, PSK, theirs).unwrap();
    let d = Daemon::start(&lab.ns1, &ike_config(&lab, 0, PSK, xdpsec_initiates, &ours)).unwrap();
    if !xdpsec_initiates {
        charon.initiate("xs").unwrap();
    }
    let (ike, child) = charon
        .wait_installed("xs", Duration::from_secs(10))
        .unwrap();
    wait_ready(&d, Duration::from_secs(10));
    let (out, inb) = spis(&d);
    assert_eq!(inb, vec![u64::from(child.spi_out)], "{child:?}");
    assert_eq!(out, u64::from(child.spi_in), "{child:?}");
    assert_eq!(ike.initiator, !xdpsec_initiates);
    Up {
        charon,
        d,
        lab,
        ike,
        child,
    }
}

impl Up {
    /// Five pings from xdpsec's inner address to strongSwan's, all answered.
    fn five_pings(&self) {
        assert_eq!(
            ping(&self.lab.ns1, INNER[0], INNER[1], 5),
            (5, 5),
            "{}",
            self.charon.log_text()
        );
    }
}

/// xdpsec and strongSwan, either side initiating, with `proposals`.
fn with_strongswan(proposals: Proposals, xdpsec_initiates: bool) {
    let w = up_with_strongswan(proposals, proposals, xdpsec_initiates);
    w.five_pings();
    let Up { charon, d, lab, .. } = &w;
    let (out, _) = spis(d);

    // clear crypto sa peer on xdpsec: strongSwan follows onto new SPIs.
    d.cli(&format!("clear crypto sa peer {}", lab.v4[1]))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (o, i) = spis(d);
        if o != 0 && o != out && i.len() == 1 {
            break;
        }
        assert!(Instant::now() < end, "no new SPIs:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let end = Instant::now() + Duration::from_secs(10);
    while ping(&lab.ns1, INNER[0], INNER[1], 2).1 < 2 {
        assert!(
            Instant::now() < end,
            "no traffic on the new SAs:\n{}",
            charon.log_text()
        );
    }

    // The seed's fault against strongSwan: xdpsec's datapath forgets the
    // inbound SA; strongSwan keeps encrypting to it; clear recovers.
    d.cli(&format!(
        "request platform software xdpsec fault forget-sa peer {}",
        lab.v4[1]
    ))
    .unwrap();
    assert_eq!(ping(&lab.ns1, INNER[0], INNER[1], 3).1, 0);
    let drops = d
        .cli("show platform hardware qfp active feature ipsec datapath drops")
        .unwrap();
    assert!(drops.contains("4 IN_US_V4_PKT_SA_NOT_FOUND_SPI"), "{drops}");
    d.cli(&format!("clear crypto sa peer {}", lab.v4[1]))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while ping(&lab.ns1, INNER[0], INNER[1], 2).1 < 2 {
        assert!(Instant::now() < end, "no recovery:\n{}", charon.log_text());
    }
}

#[test]
fn xdpsec_initiates_to_strongswan_gcm_x25519() {
    with_strongswan(GCM_X25519, true);
}

#[test]
fn strongswan_initiates_to_xdpsec_gcm_x25519() {
    with_strongswan(GCM_X25519, false);
}

#[test]
fn xdpsec_initiates_to_strongswan_cbc_sha256_ecp256() {
    with_strongswan(CBC_ECP256, true);
}

#[test]
fn strongswan_initiates_to_xdpsec_cbc_sha256_ecp256() {
    with_strongswan(CBC_ECP256, false);
}

/// strongSwan set up as an IOS XE 17 router with smart defaults
/// (`IOS_XE_DEFAULTS`) against an xdpsec tunnel with no proposals: the SA
/// comes up with IOS XE's first choice on both sides (AES-CBC-256,
/// HMAC-SHA-512, PRF SHA-512, group 19; ESP AES-128-CBC with HMAC-SHA1-96),
/// and pings pass.
fn ios_xe_defaults_with_strongswan(xdpsec_initiates: bool) {
    let w = up_with_strongswan(NO_PROPOSALS, IOS_XE_DEFAULTS, xdpsec_initiates);
    let (ike, child) = (&w.ike, &w.child);
    // strongSwan's side (swanctl --list-sas).
    assert_eq!(
        (
            ike.encr_alg.as_str(),
            ike.encr_keysize,
            ike.integ_alg.as_str(),
            ike.prf_alg.as_str(),
            ike.dh_group.as_str()
        ),
        (
            "AES_CBC",
            256,
            "HMAC_SHA2_512_256",
            "PRF_HMAC_SHA2_512",
            "ECP_256"
        ),
        "{ike:#?}"
    );
    assert_eq!(
        (
            child.encr_alg.as_str(),
            child.encr_keysize,
            child.integ_alg.as_str()
        ),
        ("AES_CBC", 128, "HMAC_SHA1_96"),
        "{child:#?}"
    );
    // xdpsec's side: show crypto ikev2 sa detailed, text and JSON.
    let text = w.d.cli("show crypto ikev2 sa detailed").unwrap();
    assert!(
        text.contains("Encr: AES-CBC, keysize: 256, PRF: SHA512, Hash: SHA512, DH Grp:19,"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Initiator of SA : {}",
            if xdpsec_initiates { "Yes" } else { "No" }
        )),
        "{text}"
    );
    let v = &w.d.cli_json("show crypto ikev2 sa detailed").unwrap()["ike_sas"][0];
    assert_eq!(
        (
            &v["encryption"],
            &v["keysize"],
            &v["prf"],
            &v["hash"],
            &v["dh_group"]
        ),
        (
            &json!("AES-CBC"),
            &json!(256),
            &json!("SHA512"),
            &json!("SHA512"),
            &json!(19)
        ),
        "{v}"
    );
    assert_eq!(v["initiator_spi"], ike.initiator_spi, "{v}");
    assert_eq!(v["responder_spi"], ike.responder_spi, "{v}");
    let sa = w.d.cli("show crypto ipsec sa").unwrap();
    assert!(sa.contains("transform: esp-aes esp-sha-hmac"), "{sa}");
    // What it offers, as IOS XE shows its defaults.
    let p = w.d.cli_json("show crypto ikev2 proposal").unwrap();
    assert_eq!(p["proposals"][0]["name"], "default", "{p}");
    assert_eq!(p["proposals"][0]["dh_group"], json!([19, 14, 21]), "{p}");
    let t = w.d.cli("show crypto ipsec transform-set").unwrap();
    assert!(
        t.starts_with("Transform set default: { esp-aes esp-sha-hmac  }"),
        "{t}"
    );
    assert_eq!(
        ping(&w.lab.ns1, INNER[0], INNER[1], 5),
        (5, 5),
        "{}",
        w.charon.log_text()
    );
}

#[test]
fn xdpsec_without_proposals_initiates_to_strongswan_as_ios_xe_defaults() {
    ios_xe_defaults_with_strongswan(true);
}

#[test]
fn strongswan_as_ios_xe_defaults_initiates_to_xdpsec_without_proposals() {
    ios_xe_defaults_with_strongswan(false);
}

/// One DH group alone on both sides: the SA comes up with it (strongSwan's
/// `dh-group` and xdpsec's `DH Grp`) and pings pass.
fn one_group_with_strongswan(
    ike: &'static str,
    esp: &'static str,
    xdpsec_initiates: bool,
    charon_name: &str,
    ios: u64,
) {
    let p = Proposals { ike, esp };
    let w = up_with_strongswan(p, p, xdpsec_initiates);
    assert_eq!(w.ike.dh_group, charon_name, "{:#?}", w.ike);
    let v = w.d.cli_json("show crypto ikev2 sa").unwrap();
    assert_eq!(v["ike_sas"][0]["dh_group"], ios, "{v}");
    w.five_pings();
}

#[test]
fn group_14_alone_xdpsec_initiates_to_strongswan() {
    one_group_with_strongswan(
        "aes256-sha256-modp2048",
        "aes256-sha256",
        true,
        "MODP_2048",
        14,
    );
}

#[test]
fn group_21_alone_strongswan_initiates_to_xdpsec() {
    one_group_with_strongswan(
        "aes256gcm16-prfsha384-ecp521",
        "aes256gcm16",
        false,
        "ECP_521",
        21,
    );
}

/// Child SAs rekeyed on their lifetime under steady traffic, make before
/// break: not one ping lost, and the SPIs changed (xdpsec on both sides).
#[test]
fn child_rekey_under_traffic_loses_nothing() {
    let lab = Lab::unique().up(1).unwrap();
    let extra = "lifetime_seconds = 10";
    let d2 = Daemon::start(
        &lab.ns2,
        &ike_config_with(&lab, 1, PSK, false, &GCM_X25519, extra),
    )
    .unwrap();
    let d1 = Daemon::start(
        &lab.ns1,
        &ike_config_with(&lab, 0, PSK, true, &GCM_X25519, extra),
    )
    .unwrap();
    wait_ready(&d1, Duration::from_secs(10));
    let (out1, _) = spis(&d1);
    // 13 s of pings every 100 ms: at least one rekey (soft at ~90% of 10 s).
    let (tx, rx) = ping_every(&lab.ns1, INNER[0], INNER[1], 130, "0.1");
    assert_eq!(
        (tx, rx),
        (130, 130),
        "{}\n---\n{}",
        d1.log_text(),
        d2.log_text()
    );
    let (out1_after, in1_after) = spis(&d1);
    assert_ne!(out1_after, out1, "the child SA was rekeyed");
    let (out2_after, in2_after) = spis(&d2);
    assert!(in1_after.contains(&out2_after) && in2_after.contains(&out1_after));
    // Nothing was dropped for a missing or wrong SA on either side.
    for d in [&d1, &d2] {
        let drops = d
            .cli_json("show platform hardware qfp active feature ipsec datapath drops")
            .unwrap();
        let nonzero: Vec<_> = drops["drops"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["packets"] != 0)
            .collect();
        assert!(nonzero.is_empty(), "{nonzero:?}");
    }
}

/// strongSwan starts the child rekey (`swanctl --rekey`) under traffic;
/// then xdpsec's own lifetime rekey: no ping lost either way, and charon's
/// log shows it sent the first CREATE_CHILD_SA and answered the second.
#[test]
fn rekeys_started_by_strongswan_and_by_xdpsec_lose_nothing() {
    let p = WithStrongswan::start(
        false,
        PSK,
        GCM_X25519,
        true,
        "lifetime_seconds = 10",
        CharonOpts::default(),
        |_| {},
    )
    .unwrap();
    let (lab, charon, d) = (&p.lab, &p.charon, &p.d);
    charon
        .wait_installed("xs", Duration::from_secs(10))
        .unwrap();
    wait_ready(d, Duration::from_secs(10));
    let (out0, _) = spis(d);
    let replies0 = xdpsec_e2e::sa_decaps(d).unwrap();
    std::thread::scope(|s| {
        let pinger = s.spawn(|| ping_every(&lab.ns1, INNER[0], INNER[1], 130, "0.1"));
        // The rekey once the pings flow: 15 replies decrypted (of 130).
        xdpsec_e2e::wait_for(
            "15 echo replies before the rekey",
            Duration::from_secs(10),
            || xdpsec_e2e::sa_decaps(d).unwrap() >= replies0 + 15,
        );
        charon.rekey_child("xs").unwrap();
        let (tx, rx) = pinger.join().unwrap();
        assert_eq!(
            (tx, rx),
            (130, 130),
            "{}\n---\n{}",
            d.log_text(),
            charon.log_text()
        );
    });
    let (out1, _) = spis(d);
    assert_ne!(out1, out0, "rekeyed");
    // Who sent which: strongSwan the first (swanctl), xdpsec the second (its lifetime).
    let x = charon.create_child_sas();
    let who: Vec<_> = x.iter().map(|e| (e.initiator, e.rekeys_child())).collect();
    assert_eq!(who[..2], [(true, true), (false, true)], "{x:#?}");
}

/// `invalid_spi_recovery = true` (IOS `crypto isakmp invalid-spi-recovery`):
/// after `forget-sa`, ESP with the forgotten SPI makes xdpsec send
/// INVALID_SPI in the IKE SA; the peer deletes that child SA and negotiates
/// a new one, so traffic recovers without an operator.
#[test]
fn invalid_spi_recovery_heals_a_forgotten_sa_by_itself() {
    let lab = Lab::unique().up(1).unwrap();
    let d2 = Daemon::start(&lab.ns2, &ike_config(&lab, 1, PSK, false, &GCM_X25519)).unwrap();
    let d1 = Daemon::start(
        &lab.ns1,
        &ike_config_with(
            &lab,
            0,
            PSK,
            true,
            &GCM_X25519,
            "invalid_spi_recovery = true",
        ),
    )
    .unwrap();
    wait_ready(&d1, Duration::from_secs(10));
    assert_eq!(ping(&lab.ns1, INNER[0], INNER[1], 2), (2, 2));
    let (_, before) = spis(&d1);
    d1.cli(&format!(
        "request platform software xdpsec fault forget-sa peer {}",
        lab.v4[1]
    ))
    .unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    while ping(&lab.ns1, INNER[0], INNER[1], 2).1 < 2 {
        assert!(
            Instant::now() < end,
            "no recovery by INVALID_SPI:\n{}\n---\n{}",
            d1.log_text(),
            d2.log_text()
        );
    }
    let (_, after) = spis(&d1);
    assert!(
        !after.iter().any(|s| before.contains(s)),
        "a new child SA: {before:x?} -> {after:x?}"
    );
    assert!(d1.log_text().contains("INVALID_SPI"), "{}", d1.log_text());
    assert!(d2.log_text().contains("INVALID_SPI"), "{}", d2.log_text());
    let drops = d1
        .cli("show platform hardware qfp active feature ipsec datapath drops")
        .unwrap();
    assert!(drops.contains("4 IN_US_V4_PKT_SA_NOT_FOUND_SPI"), "{drops}");
}

/// Dead peer detection: the peer vanishes without a DELETE (its daemon is
/// killed); after `dpd_seconds` without a message the liveness check is
/// resent every `dpd_retry_seconds` (2 s, IOS's `crypto ikev2 dpd 2 2
/// on-demand`) four times, and 2 s after the last (10 s in all) the IKE SA
/// and its children are removed and a line says so: sooner than the
/// default schedule (1+2+4+8+16 = 31 s after the first check, which the
/// core's unit tests check) could have.
#[test]
fn dead_peer_detection_removes_the_sas_of_a_peer_that_vanished() {
    let lab = Lab::unique().up(1).unwrap();
    let mut d2 = Daemon::start(&lab.ns2, &ike_config(&lab, 1, PSK, false, &GCM_X25519)).unwrap();
    let d1 = Daemon::start(
        &lab.ns1,
        &ike_config_with(
            &lab,
            0,
            PSK,
            true,
            &GCM_X25519,
            "dpd_seconds = 2\ndpd_retry_seconds = 2",
        ),
    )
    .unwrap();
    wait_ready(&d1, Duration::from_secs(10));
    let text = d1.cli("show crypto ikev2 sa detailed").unwrap();
    assert!(
        text.contains("      DPD configured for 2 seconds, retry 2\n"),
        "{text}"
    );
    d2.kill();
    let t0 = Instant::now();
    let default_schedule = Duration::from_secs(31);
    loop {
        let (out, inb) = spis(&d1);
        if out == 0 && inb.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < default_schedule,
            "SAs kept {default_schedule:?}, as long as the default schedule takes:\n{}",
            d1.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let line = "peer dead: no answer after 4 retransmissions (10 s); deleting the IKE SA and its child SAs";
    assert!(d1.log_text().contains(line), "{}", d1.log_text());
}
