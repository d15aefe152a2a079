//! The strongSwan harness proved with strongSwan on both ends: two charons
//! (kernel-libipsec, ESP in UDP) in two namespaces on one veth pair come up
//! with a PSK, carry pings between their inner addresses, keep them going
//! across a child rekey started with `swanctl --rekey`, rekey the IKE SA,
//! and refuse a wrong PSK with a recognisable log line on both sides. The
//! xdpsec-vs-strongSwan tests build on the same harness.
//!
//! Needs strongSwan 5.9.8 from Debian (`cargo xtask setup` installs it).
use std::{
    thread,
    time::{Duration, Instant},
};

use xdpsec_e2e::{
    Lab, ping,
    strongswan::{CBC_ECP256, Charon, CharonOpts, ChildSa, Conn, GCM_X25519, IkeSa, Proposals},
};

/// Inner (TUN-side) addresses of node 1 and node 2.
const INNER: [&str; 2] = ["203.0.113.1", "203.0.113.2"];
const PSK: &str = "xdpsec strongSwan test key 1";

fn require_strongswan() {
    xdpsec_e2e::strongswan::require_5_9_8();
}

/// Two charons on a lab. Fields drop in order: charons first, then the namespaces.
struct Pair {
    a: Charon,
    b: Charon,
    lab: Lab,
}

/// A lab with each node's inner address on `lo`, a charon in each namespace
/// and the connection `ss` loaded on both (node 2 with `psk_b`, node 1's
/// changed by `tweak_a`).
fn pair(
    proposals: Proposals,
    nat_t_port: u16,
    psk_b: &str,
    tweak_a: impl FnOnce(&mut Conn),
) -> Pair {
    require_strongswan();
    let lab = Lab::unique().up(1).unwrap();
    for (ns, inner) in [(&lab.ns1, INNER[0]), (&lab.ns2, INNER[1])] {
        let out = Lab::exec(
            ns,
            &["ip", "addr", "add", &format!("{inner}/32"), "dev", "lo"],
        )
        .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let opts = CharonOpts {
        port_nat_t: nat_t_port,
        ..CharonOpts::default()
    };
    let a = Charon::start(&lab.ns1, &opts).unwrap();
    let b = Charon::start(&lab.ns2, &opts).unwrap();
    let mut conn = Conn::psk(
        "ss",
        lab.v4[0],
        lab.v4[1],
        &format!("{}/32", INNER[0]),
        &format!("{}/32", INNER[1]),
        PSK,
    );
    conn.proposals = proposals;
    if nat_t_port != 4500 {
        // Straight to the NAT-T port, as xdpsec's SD-WAN-like ports would be.
        conn.local_port = Some(nat_t_port);
        conn.remote_port = Some(nat_t_port);
    }
    let mut mirror = conn.mirrored();
    mirror.psk = psk_b.into();
    b.load_conn(&mirror.to_swanctl()).unwrap();
    tweak_a(&mut conn);
    a.load_conn(&conn.to_swanctl()).unwrap();
    Pair { a, b, lab }
}

/// The single ESTABLISHED IKE SA `ss` and its INSTALLED child on `c`.
fn up(c: &Charon) -> (IkeSa, ChildSa) {
    c.wait_installed("ss", Duration::from_secs(5)).unwrap()
}

/// Both sides' views agree: the same IKE SPIs, each child's inbound SPI is the other's outbound.
fn assert_mirrored(a: &(IkeSa, ChildSa), b: &(IkeSa, ChildSa)) {
    assert_eq!(a.0.initiator_spi, b.0.initiator_spi);
    assert_eq!(a.0.responder_spi, b.0.responder_spi);
    assert_eq!(a.1.spi_in, b.1.spi_out, "{a:#?} {b:#?}");
    assert_eq!(a.1.spi_out, b.1.spi_in, "{a:#?} {b:#?}");
}

#[test]
fn strongswan_pair_psk_gcm_ping_and_rekeys() {
    let t0 = Instant::now();
    let p = pair(GCM_X25519, 4500, PSK, |_| {});
    p.a.initiate("ss").unwrap();
    let (sa_a, sa_b) = (up(&p.a), up(&p.b));
    assert_mirrored(&sa_a, &sa_b);
    let (ike, child) = &sa_a;
    assert!(ike.initiator && !sa_b.0.initiator);
    assert_eq!(
        (ike.encr_alg.as_str(), ike.encr_keysize),
        ("AES_GCM_16", 256)
    );
    assert_eq!(ike.prf_alg, "PRF_HMAC_SHA2_256");
    assert_eq!(ike.dh_group, "CURVE_25519");
    // Forced NAT-T: IKE_AUTH and ESP went to 4500 on both sides.
    assert_eq!((ike.local_port, ike.remote_port), (4500, 4500));
    assert_eq!(ike.local_id, p.lab.v4[0].to_string());
    assert_eq!(ike.remote_id, p.lab.v4[1].to_string());
    assert_eq!((child.mode.as_str(), child.encap), ("TUNNEL", true));
    assert_eq!(
        (child.encr_alg.as_str(), child.encr_keysize),
        ("AES_GCM_16", 256)
    );
    assert_eq!(child.local_ts, ["203.0.113.1/32"]);
    assert_eq!(child.remote_ts, ["203.0.113.2/32"]);
    assert_eq!((child.packets_in, child.packets_out), (0, 0));

    // Ping through the tunnel both ways; the child SAs count exactly those packets.
    assert_eq!(ping(&p.lab.ns1, INNER[0], INNER[1], 5, "0.05"), (5, 5));
    assert_eq!(ping(&p.lab.ns2, INNER[1], INNER[0], 3, "0.05"), (3, 3));
    let (_, ca) = up(&p.a);
    let (_, cb) = up(&p.b);
    assert_eq!((ca.packets_out, ca.packets_in), (8, 8), "{ca:#?}");
    assert_eq!((cb.packets_out, cb.packets_in), (8, 8), "{cb:#?}");

    // A child rekey (CREATE_CHILD_SA from node 1) in the middle of a steady
    // ping (40 at 50 ms, 2 s): no echo lost, and new SPIs on both sides.
    let old = child.clone();
    let ns1 = p.lab.ns1.clone();
    let pinger = thread::spawn(move || ping(&ns1, INNER[0], INNER[1], 40, "0.05"));
    // The rekey once the pings flow: 10 echoes out of node 1 (of 40).
    xdpsec_e2e::wait_for(
        "10 echoes before the rekey",
        Duration::from_secs(10),
        || up(&p.a).1.packets_out >= ca.packets_out + 10,
    );
    p.a.rekey_child("ss").unwrap();
    assert_eq!(
        pinger.join().unwrap(),
        (40, 40),
        "ping lost echoes across the rekey"
    );
    let (sa_a, sa_b) = (up(&p.a), up(&p.b));
    assert_mirrored(&sa_a, &sa_b);
    let new = &sa_a.1;
    assert_ne!(new.spi_in, old.spi_in);
    assert_ne!(new.spi_out, old.spi_out);
    assert!(new.uniqueid > old.uniqueid);
    assert!(
        new.packets_in > 0 && new.packets_out > 0,
        "traffic did not move to the new child SA: {new:#?}"
    );
    assert_eq!(sa_a.0.initiator_spi, ike.initiator_spi, "the IKE SA stayed");
    assert_eq!(ping(&p.lab.ns1, INNER[0], INNER[1], 3, "0.05"), (3, 3));

    // An IKE rekey started by node 2 (the responder): new IKE SPIs, the child SA stays.
    p.b.rekey_ike("ss").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let rekeyed = loop {
        let sas = p.b.list_sas().unwrap();
        // Done when the old IKE SA is gone and the new one is up.
        if let [s] = sas.as_slice()
            && s.state == "ESTABLISHED"
            && s.initiator_spi != ike.initiator_spi
        {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "IKE rekey did not finish: {sas:#?}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(rekeyed.initiator, "node 2 initiated the IKE rekey");
    let (ike_a, child_a) = up(&p.a);
    assert_eq!(ike_a.initiator_spi, rekeyed.initiator_spi);
    assert_eq!(ike_a.responder_spi, rekeyed.responder_spi);
    assert_eq!(
        child_a.spi_in, new.spi_in,
        "the child SA moved to the new IKE SA"
    );
    assert_eq!(ping(&p.lab.ns2, INNER[1], INNER[0], 3, "0.05"), (3, 3));

    // Terminate from node 1: node 2 gets the DELETE and has no SA left.
    p.a.terminate("ss").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p.b.list_sas().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "node 2 kept its IKE SA after a DELETE"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(p.a.list_sas().unwrap().is_empty());
    assert_eq!(ping(&p.lab.ns1, INNER[0], INNER[1], 1, "0.2").1, 0);
    eprintln!("took {:?}", t0.elapsed());
}

/// CBC + HMAC with ECP-256 straight on NAT-T port 12346, node 2 initiating;
/// node 1's child SA rekeys by itself (`rekey_time`) under a steady ping,
/// and its dead peer detection (`dpd_delay`) probes an idle peer.
#[test]
fn strongswan_pair_psk_cbc_on_nat_t_port_12346_lifetime_rekey_dpd() {
    let p = pair(CBC_ECP256, 12346, PSK, |a| {
        a.rekey_time = Some(3);
        a.life_time = Some(20);
        a.rand_time = Some(0);
        a.dpd_delay = Some(1);
    });
    p.b.initiate("ss").unwrap();
    let (sa_a, sa_b) = (up(&p.a), up(&p.b));
    assert_mirrored(&sa_a, &sa_b);
    let (ike, child) = &sa_b;
    assert!(ike.initiator);
    assert_eq!((ike.encr_alg.as_str(), ike.encr_keysize), ("AES_CBC", 256));
    assert_eq!(ike.integ_alg, "HMAC_SHA2_256_128");
    assert_eq!(ike.prf_alg, "PRF_HMAC_SHA2_256");
    assert_eq!(ike.dh_group, "ECP_256");
    assert_eq!((ike.local_port, ike.remote_port), (12346, 12346));
    assert_eq!(
        (child.encr_alg.as_str(), child.encr_keysize),
        ("AES_CBC", 256)
    );
    assert_eq!(child.integ_alg, "HMAC_SHA2_256_128");
    assert!(child.encap);
    assert_eq!(ping(&p.lab.ns2, INNER[1], INNER[0], 3, "0.05"), (3, 3));

    // Node 1 rekeys about 3 s after the child came up; a 4 s ping (80 at
    // 50 ms) spans it without losing an echo.
    assert_eq!(ping(&p.lab.ns1, INNER[0], INNER[1], 80, "0.05"), (80, 80));
    let (sa_a, sa_b) = (up(&p.a), up(&p.b));
    assert_mirrored(&sa_a, &sa_b);
    assert_ne!(
        sa_a.1.spi_in, child.spi_out,
        "no rekey within rekey_time + 1 s"
    );
    assert!(
        sa_a.1.packets_in > 0,
        "traffic did not move to the new child SA"
    );
    assert!(
        p.a.log_text()
            .contains("generating CREATE_CHILD_SA request"),
        "node 1 did not start the rekey"
    );

    // Idle for dpd_delay: node 1 sends an empty INFORMATIONAL, node 2 answers.
    let deadline = Instant::now() + Duration::from_secs(4);
    while !p.a.log_text().contains("sending DPD request") {
        assert!(Instant::now() < deadline, "no DPD request in 4 s");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(up(&p.a).0.state, "ESTABLISHED");
}

#[test]
fn strongswan_pair_wrong_psk_refused_on_both_sides() {
    let p = pair(GCM_X25519, 4500, "not the same key", |_| {});
    let (pid_a, dir_a) = (p.a.pid().unwrap(), p.a.dir.clone());
    let err = p.a.initiate("ss").unwrap_err();
    assert!(
        format!("{err:#}").contains("establishing CHILD_SA 'ss' failed"),
        "{err:#}"
    );
    // The responder finds the AUTH payload does not match its key and says so;
    // the initiator gets AUTHENTICATION_FAILED.
    let (log_a, log_b) = (p.a.log_text(), p.b.log_text());
    assert!(
        log_a.contains("received AUTHENTICATION_FAILED notify error"),
        "initiator log:\n{log_a}"
    );
    assert!(
        log_b.contains(&format!(
            "tried 1 shared key for '{}' - '{}', but MAC mismatched",
            p.lab.v4[1], p.lab.v4[0]
        )),
        "responder log:\n{log_b}"
    );
    assert!(
        log_b.contains("generating IKE_AUTH response 1 [ N(AUTH_FAILED) ]"),
        "{log_b}"
    );
    for c in [&p.a, &p.b] {
        let sas = c.list_sas().unwrap();
        assert!(
            sas.iter().all(|s| s.state != "ESTABLISHED"),
            "an IKE SA came up with a wrong PSK: {sas:#?}"
        );
    }
    assert_eq!(ping(&p.lab.ns1, INNER[0], INNER[1], 1, "0.2").1, 0);
    // Dropping the pair stops charon and removes its files.
    let ns = p.lab.ns1.clone();
    drop(p);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid_a}")).exists(),
        "charon still runs"
    );
    assert!(!dir_a.exists(), "scratch dir left: {}", dir_a.display());
    assert!(!std::path::Path::new(&format!("/run/netns/{ns}")).exists());
}
