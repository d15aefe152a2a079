//! The seed's SD-WAN recovery, command for command, on a fabric of a
//! controller and three edges (edges 1 and 2 on biz-internet, edge 3 on
//! biz-internet and mpls; tests/src/sdwan.rs):
//!
//! - scenario 1: `fault forget-sa peer` makes edge 1 drop edge 2's ESP as
//!   `4 IN_US_V4_PKT_SA_NOT_FOUND_SPI` with `%CRYPTO-4-RECVD_PKT_INV_SPI`
//!   naming Tunnel10001, while edge 3 (same TLOC SPI) keeps flowing;
//!   `ipsec-rekey` recovers and leaves a manual tunnel alone;
//! - scenario 2: `clear crypto sa peer` leaves encaps/decaps at 0 and the BFD
//!   session down, `ipsec-rekey` (on either side) does not help, and each of
//!   `clear sdwan omp all`, `port_hop` and `clear sdwan control connections`
//!   recovers;
//! - `port_hop` in detail: the port sequence, the XDP port map, local
//!   properties, peers following, only that color flapping;
//! - genieparser reads the live show output as `--json` gives it.
//!
//! BFD runs at 200 ms x 3: each test takes 10-20 s, the port-hop one about
//! 45 s (ten hops, each waiting 2 s so that uptimes that must keep growing
//! can show it); the file about a minute with two test threads.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::{Value, json};
use xdpsec_e2e::{
    Daemon, genie_parse,
    sdwan::{self, Fabric, Timers},
    settle_for, wait_for,
};

/// Edge 1's biz-internet TLOC address.
const E1: &str = "198.51.100.1";
/// Edge 2's biz-internet TLOC address.
const E2: &str = "198.51.100.2";
const DROPS: &str = "show platform hardware qfp active feature ipsec datapath drops";
const REKEY: &str = "request platform software sdwan security ipsec-rekey";

/// The lab's three edges, started and converged.
fn fabric() -> Fabric {
    let mut f = Fabric::unique(sdwan::lab_edges(), Timers::fast())
        .up()
        .expect("fabric namespaces");
    f.start().expect("controller and edges");
    f.wait_converged(&[1, 2, 3], Duration::from_secs(20))
        .unwrap();
    f
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("?").to_string()
}

/// Run `command` with `--json` on edge `i`; panics with the error.
fn json_of(f: &Fabric, i: usize, command: &str) -> Value {
    f.edge(i)
        .cli_json(command)
        .unwrap_or_else(|e| panic!("edge {i}: `{command}`: {e:#}"))
}

/// Non-zero QFP drop rows of edge `i`: {id: packets}.
fn drops(f: &Fabric, i: usize) -> BTreeMap<u64, u64> {
    xdpsec_e2e::drop_rows(f.edge(i))
}

/// Edge `i`'s `show crypto ipsec sa peer ADDR --json` row of `tunnel`.
fn sa_row(f: &Fabric, i: usize, peer: &str, tunnel: &str) -> Value {
    let v = json_of(f, i, &format!("show crypto ipsec sa peer {peer}"));
    let rows: Vec<&Value> = v["sas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tunnel"] == tunnel)
        .collect();
    assert_eq!(rows.len(), 1, "edge {i}: one {tunnel} row for {peer}: {v}");
    rows[0].clone()
}

/// (encaps, decaps) of edge `i`'s SA row with `peer` on `tunnel`.
fn sa_counts(f: &Fabric, i: usize, peer: &str, tunnel: &str) -> (u64, u64) {
    let r = sa_row(f, i, peer, tunnel);
    (
        r["pkts_encaps"].as_u64().unwrap(),
        r["pkts_decaps"].as_u64().unwrap(),
    )
}

/// The SPI edge `i` receives on with its TLOC `k` (one for all its peers,
/// outside a rekey grace).
fn own_spi(f: &Fabric, i: usize, k: usize) -> u64 {
    let tunnel = Fabric::tunnel_name(k);
    let spis: BTreeSet<u64> = f
        .ipsec_sas(i)
        .iter()
        .filter(|r| r["tunnel"] == tunnel.as_str())
        .flat_map(|r| r["inbound_spis"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_u64())
        .collect();
    assert_eq!(spis.len(), 1, "edge {i} {tunnel}: {spis:?}");
    *spis.first().unwrap()
}

/// The SPI edge `i` learned for edge `j`'s TLOC of `color` (0: not learned).
fn learned_spi(f: &Fabric, i: usize, j: usize, color: &str) -> u64 {
    f.omp_tlocs(i)
        .iter()
        .find(|r| r["system_ip"] == Fabric::system_ip(j).as_str() && r["color"] == color)
        .and_then(|r| r["spi"].as_u64())
        .unwrap_or(0)
}

/// Edge `i`'s BFD sessions: (source color, remote system-ip, remote color)
/// -> (state, transitions, uptime seconds, destination port).
type Sessions = BTreeMap<(String, String, String), (String, u64, u64, u64)>;

fn sessions(f: &Fabric, i: usize) -> Sessions {
    f.bfd_sessions(i)
        .iter()
        .map(|r| {
            (
                (
                    str_of(&r["source_color"]),
                    str_of(&r["system_ip"]),
                    str_of(&r["remote_color"]),
                ),
                (
                    str_of(&r["state"]),
                    r["transitions"].as_u64().unwrap(),
                    r["uptime_seconds"].as_u64().unwrap(),
                    r["destination_port"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// The session key of edge `i`'s session from `color` to edge `j`'s `rcolor`.
fn skey(color: &str, j: usize, rcolor: &str) -> (String, String, String) {
    (color.into(), Fabric::system_ip(j), rcolor.into())
}

/// Wait (up to `within`) until edge `i`'s session `key` is in `state`.
fn wait_session(
    f: &Fabric,
    i: usize,
    key: &(String, String, String),
    state: &str,
    within: Duration,
) {
    let got = settle_for(state.to_string(), Duration::ZERO, within, || {
        sessions(f, i)
            .get(key)
            .map_or("absent".to_string(), |s| s.0.clone())
    });
    assert_eq!(got, state, "edge {i} session {key:?}: {:?}", sessions(f, i));
}

/// Ping edge `j` from edge `i` and assert how many answers came back.
fn assert_ping(f: &Fabric, i: usize, j: usize, count: u32, received: u32) {
    assert_eq!(
        f.ping(i, j, count, "0.2"),
        (count, received),
        "ping edge {i} -> edge {j}: (transmitted, received)"
    );
}

/// Ping edge `j` from edge `i` in the background, `count` times at 100 ms:
/// (transmitted, received) when joined.
fn pinger(f: &Fabric, i: usize, j: usize, count: u32) -> std::thread::JoinHandle<(u32, u32)> {
    let ns = f.edge_ns[i - 1].clone();
    std::thread::spawn(move || {
        xdpsec_e2e::ping(
            &ns,
            &Fabric::inside_ip(i),
            &Fabric::inside_ip(j),
            count,
            "0.1",
        )
    })
}

/// A manual tunnel for edge 1's config, to a peer that never answers: its
/// SAs must not move when the SD-WAN tunnels are rekeyed.
const MANUAL_TUNNEL: &str = r#"
[[tunnel]]
name = "Tunnel1"
kind = "manual"
peer = "198.51.100.9"
encap = "esp"
cipher = "aes256-gcm"
esn = false
replay_window = 64
remote_subnets = ["203.0.113.99/32"]
[tunnel.inbound]
spi = 0x1001
key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fcafebabe"
[tunnel.outbound]
spi = 0x2001
key = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fdeadbeef"
"#;

/// Scenario 1 of the seed: the datapath of edge 1 loses edge 2's inbound SA
/// (nobody else knows); edge 2 keeps encrypting to the old SPI and edge 1
/// counts drop 4 (never 1: a forgotten SPI was not deleted) and logs
/// `%CRYPTO-4-RECVD_PKT_INV_SPI` with the tunnel; edge 3, on the same TLOC
/// SPI, is untouched. `ipsec-rekey` on edge 1 brings edge 2 back with a new
/// SPI and leaves the manual tunnel's SAs as they were.
#[test]
fn scenario1_forget_sa_drops_as_4_and_ipsec_rekey_recovers() {
    let mut f = Fabric::unique(sdwan::lab_edges(), Timers::fast())
        .up()
        .expect("fabric namespaces");
    f.start_controller().unwrap();
    f.edges[0] =
        Some(Daemon::start(&f.edge_ns[0], &(f.edge_config(1) + MANUAL_TUNNEL)).expect("edge 1"));
    f.start_edge(2).unwrap();
    f.start_edge(3).unwrap();
    f.wait_converged(&[1, 2, 3], Duration::from_secs(20))
        .unwrap();
    let manual = |f: &Fabric| {
        let r = sa_row(f, 1, "198.51.100.9", "Tunnel1");
        (
            r["inbound_spis"].clone(),
            r["outbound_spi"].clone(),
            r["pkts_encaps"].clone(),
            r["pkts_decaps"].clone(),
        )
    };
    let manual_before = manual(&f);
    assert_eq!(
        manual_before,
        (json!([0x1001]), json!(0x2001), json!(0), json!(0)),
        "the manual tunnel before"
    );

    let old = own_spi(&f, 1, 0);
    assert_eq!(learned_spi(&f, 2, 1, "biz-internet"), old);
    let e3_before = sessions(&f, 3);
    // A peer that learned edge 1's TLOC a moment before edge 1 learned its
    // own can have had a packet dropped and logged at start-up; the line is
    // rate-limited to one a minute (as on IOS), so ours would not show.
    if f.edge(1)
        .cli("show logging")
        .unwrap()
        .contains("%CRYPTO-4-RECVD_PKT_INV_SPI")
    {
        std::thread::sleep(Duration::from_secs(61));
    }
    // Drops while the fabric converged are not ours.
    f.edge(1)
        .cli("clear platform hardware qfp active feature ipsec datapath drops")
        .unwrap();

    // Edge 3 -> edge 1 throughout the fault and the rekey: nothing lost.
    let p31 = pinger(&f, 3, 1, 80);
    let r = json_of(
        &f,
        1,
        &format!("request platform software xdpsec fault forget-sa peer {E2}"),
    );
    assert_eq!(r["peer"], E2, "{r}");
    assert_eq!(r["forgotten_spis"], json!([old]), "{r}");

    // Edge 2's BFD hellos (and nothing else) now miss: drop 4 only, counting.
    wait_session(
        &f,
        1,
        &skey("biz-internet", 2, "biz-internet"),
        "down",
        Duration::from_secs(3),
    );
    let d1 = drops(&f, 1);
    assert_eq!(d1.keys().collect::<Vec<_>>(), [&4], "edge 1 drops: {d1:?}");
    // A BFD session not up sends a hello a second (RFC 5880 6.8.3).
    xdpsec_e2e::wait_for("drop 4 keeps counting", Duration::from_secs(5), || {
        drops(&f, 1).get(&4) > d1.get(&4)
    });
    let d2 = drops(&f, 1);
    assert_eq!(d2.keys().collect::<Vec<_>>(), [&4], "edge 1 drops: {d2:?}");
    assert!(d2[&4] > d1[&4], "drop 4 keeps counting: {d1:?} then {d2:?}");
    // The text as an engineer sees it: the row of drop 4, no row of drop 1.
    let text = f.edge(1).cli(DROPS).unwrap();
    let row = |id: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    let r4 = row("4").unwrap_or_else(|| panic!("no drop 4 row:\n{text}"));
    assert_eq!(r4[1], "IN_US_V4_PKT_SA_NOT_FOUND_SPI", "{text}");
    assert!(r4[2].parse::<u64>().unwrap() >= d2[&4], "{text}");
    assert!(
        row("1").is_none_or(|r| r[2] == "0"),
        "a forgotten SPI is not a deleted SA (drop 1):\n{text}"
    );

    let line = format!(
        "%CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd IPSEC packet has invalid spi for destaddr={E1}, prot=50, spi=0x{old:08X}({old}), srcaddr={E2}, input interface=Tunnel10001"
    );
    let log = f.edge(1).cli("show logging").unwrap();
    assert!(
        log.lines().any(|l| l.ends_with(&line)),
        "no `{line}` in edge 1's log:\n{log}"
    );

    // Edge 2 keeps encrypting to the old SPI; nothing reaches edge 1's inside.
    let (enc_a, _) = sa_counts(&f, 2, E1, "Tunnel10001");
    assert_eq!(sa_row(&f, 2, E1, "Tunnel10001")["outbound_spi"], old);
    assert_eq!(learned_spi(&f, 2, 1, "biz-internet"), old);
    assert_ping(&f, 2, 1, 3, 0);
    let (enc_b, _) = sa_counts(&f, 2, E1, "Tunnel10001");
    // Its BFD hellos (no route uses a tunnel whose session is down).
    assert!(
        enc_b > enc_a,
        "edge 2 still encrypts to edge 1: {enc_a} then {enc_b}"
    );

    // Edge 3 shares the SPI and is untouched: its traffic flows, its sessions never flapped.
    assert_ping(&f, 3, 1, 3, 3);
    assert_ping(&f, 1, 3, 3, 3);
    let e3_now = sessions(&f, 3);
    for (k, (state, transitions, _, _)) in &e3_before {
        assert_eq!(
            (&e3_now[k].0, e3_now[k].1),
            (state, *transitions),
            "edge 3 session {k:?}"
        );
    }

    // ipsec-rekey on edge 1: a new SPI, learned by edge 2; the tunnel comes up.
    let r = json_of(&f, 1, REKEY);
    let rows = r["rekeyed"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{r}");
    assert_eq!(rows[0]["tunnel"], "Tunnel10001", "{r}");
    assert_eq!(rows[0]["color"], "biz-internet", "{r}");
    assert_eq!(rows[0]["old_spi"], old, "{r}");
    let new = rows[0]["new_spi"].as_u64().unwrap();
    assert_ne!(new, old, "{r}");
    let learned = settle_for(new, Duration::ZERO, Duration::from_secs(3), || {
        learned_spi(&f, 2, 1, "biz-internet")
    });
    assert_eq!(learned, new, "edge 2 learned edge 1's new SPI");
    let local_sa: BTreeSet<u64> = json_of(&f, 1, "show sdwan ipsec local-sa 192.0.2.1")["local_sa"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spi"].as_u64().unwrap())
        .collect();
    assert!(
        local_sa.contains(&new),
        "local-sa lists the new SPI: {local_sa:?}"
    );
    f.wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .unwrap();
    assert_ping(&f, 2, 1, 3, 3);
    assert_ping(&f, 1, 2, 3, 3);
    assert_eq!(
        p31.join().unwrap(),
        (80, 80),
        "edge 3 -> edge 1 throughout forget-sa and ipsec-rekey"
    );
    assert_eq!(
        sa_row(&f, 2, E1, "Tunnel10001")["outbound_spi"],
        new,
        "edge 2 encrypts to the new SPI"
    );
    // Drop 4 stopped; never a drop 1: edge 1 decrypts more of edge 2's
    // packets (BFD hellos every 200 ms, on the new SPI) while the row
    // stays where it was.
    let d = drops(&f, 1);
    assert_eq!(d.keys().collect::<Vec<_>>(), [&4], "{d:?}");
    let from_e2 = || sa_counts(&f, 1, E2, "Tunnel10001").1;
    let decaps = from_e2();
    wait_for(
        "edge 1 decrypts three more packets from edge 2",
        Duration::from_secs(10),
        || from_e2() >= decaps + 3,
    );
    assert_eq!(drops(&f, 1), d, "drop 4 stopped counting after the rekey");
    // The manual tunnel: same SPIs, same counters.
    assert_eq!(
        manual(&f),
        manual_before,
        "ipsec-rekey touched the manual tunnel"
    );
}

/// Every BFD session of edge `i` flapped since `before` and is up: two
/// transitions more for one that was up, one more for one that was down.
fn assert_all_flapped(f: &Fabric, i: usize, before: &Sessions) {
    let now = sessions(f, i);
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "edge {i}: the same sessions"
    );
    for (k, (s0, t0, _, _)) in before {
        let (state, t1, _, _) = &now[k];
        assert_eq!(state, "up", "edge {i} session {k:?}");
        // Up before: down and up again; down before (the broken one): up.
        let want = if s0 == "up" { t0 + 2 } else { t0 + 1 };
        assert!(
            *t1 >= want,
            "edge {i} session {k:?} did not flap: {s0} with {t0} transitions, then {t1}"
        );
    }
}

/// TLOC ports that moved: (edge, color) -> port; the others are on 12346 + offset.
type Ports = BTreeMap<(usize, String), u64>;

/// [`Fabric::wait_converged`] for all three edges with TLOCs on `ports`:
/// each edge has one control connection up per color and every BFD
/// session up, to the right destination port, for 300 ms.
fn wait_converged_on(f: &Fabric, ports: &Ports, within: Duration) {
    let port = |j: usize, m: usize| {
        ports
            .get(&(j, f.colors(j)[m].clone()))
            .copied()
            .unwrap_or(Fabric::tloc_port(m))
    };
    type State = (Vec<(String, String)>, Sessions);
    let want: Vec<State> = (1..=3)
        .map(|i| {
            let c = f
                .colors(i)
                .iter()
                .map(|c| (c.clone(), "up".to_string()))
                .collect();
            let mut s = Sessions::new();
            for lc in f.colors(i) {
                for j in (1..=3).filter(|&j| j != i) {
                    for (m, rc) in f.colors(j).iter().enumerate() {
                        s.insert(skey(lc, j, rc), ("up".into(), 0, 0, port(j, m)));
                    }
                }
            }
            (c, s)
        })
        .collect();
    // Transitions and uptimes are not part of convergence.
    let got_now = || -> Vec<State> {
        (1..=3)
            .map(|i| {
                let c = conns(f, i)
                    .into_iter()
                    .map(|(k, (st, _))| (k, st))
                    .collect();
                let s = sessions(f, i)
                    .into_iter()
                    .map(|(k, (st, _, _, p))| (k, (st, 0, 0, p)))
                    .collect();
                (c, s)
            })
            .collect()
    };
    // Protocol states, not frame counts: the 300 ms hold only keeps a
    // session passing through "up" on its way down from counting as up.
    let got = settle_for(want.clone(), Duration::from_millis(300), within, got_now);
    assert_eq!(
        got, want,
        "the fabric did not converge in {within:?} with TLOC ports {ports:?}"
    );
}

/// Scenario 2's break: `clear crypto sa peer <edge 2>` on edge 1. The SAs
/// are gone and nothing regenerates them: `show crypto ipsec sa peer` keeps
/// the tunnel with encaps and decaps at 0 while edge 2 keeps sending, the
/// BFD session stays listed, down; edge 3 (same TLOC SPI) is unaffected.
fn break_scenario2(f: &Fabric) {
    let e3_before = sessions(f, 3);
    let r = json_of(f, 1, &format!("clear crypto sa peer {E2}"));
    assert_eq!(r["cleared"], json!(["Tunnel10001"]), "{r}");
    wait_session(
        f,
        1,
        &skey("biz-internet", 2, "biz-internet"),
        "down",
        Duration::from_secs(3),
    );
    wait_session(
        f,
        2,
        &skey("biz-internet", 1, "biz-internet"),
        "down",
        Duration::from_secs(3),
    );
    assert_scenario2_stuck(f);
    // Edge 3 shares edge 1's TLOC SPI: untouched.
    assert_ping(f, 3, 1, 3, 3);
    assert_ping(f, 1, 3, 3, 3);
    let e3_now = sessions(f, 3);
    for (k, (state, transitions, _, _)) in &e3_before {
        assert_eq!(
            (&e3_now[k].0, e3_now[k].1),
            (state, *transitions),
            "edge 3 session {k:?}"
        );
    }
    let e1 = sessions(f, 1);
    for j in [
        skey("biz-internet", 3, "biz-internet"),
        skey("biz-internet", 3, "mpls"),
    ] {
        assert_eq!(e1[&j].0, "up", "edge 1 session {j:?}: {e1:?}");
    }
}

/// Edge 1's tunnel to edge 2 as scenario 2 leaves it, for 1 s while edge 2
/// keeps sending: listed, zero counters, BFD down, no ping through.
fn assert_scenario2_stuck(f: &Fabric) {
    let text = f
        .edge(1)
        .cli(&format!("show crypto ipsec sa peer {E2}"))
        .unwrap();
    for want in [
        "interface: Tunnel10001".to_string(),
        format!("local  ident (addr/mask/prot/port): ({E1}/255.255.255.255/0/12346)"),
        format!("remote ident (addr/mask/prot/port): ({E2}/255.255.255.255/0/12346)"),
        format!("current_peer {E2} port 12346"),
        "#pkts encaps: 0, #pkts encrypt: 0, #pkts digest: 0".to_string(),
        "#pkts decaps: 0, #pkts decrypt: 0, #pkts verify: 0".to_string(),
    ] {
        assert!(text.contains(&want), "no `{want}` in edge 1's\n{text}");
    }
    let (sent_a, _) = sa_counts(f, 2, E1, "Tunnel10001");
    xdpsec_e2e::wait_for(
        &format!("edge 2 keeps sending to edge 1 (encaps {sent_a})"),
        Duration::from_secs(5),
        || sa_counts(f, 2, E1, "Tunnel10001").0 > sent_a,
    );
    assert_eq!(
        sa_counts(f, 1, E2, "Tunnel10001"),
        (0, 0),
        "edge 1's encaps/decaps with edge 2"
    );
    let s = sessions(f, 1);
    assert_eq!(
        s.get(&skey("biz-internet", 2, "biz-internet"))
            .map(|s| s.0.as_str()),
        Some("down"),
        "edge 1's BFD session to edge 2 stays listed, down: {s:?}"
    );
    assert_ping(f, 1, 2, 2, 0);
}

/// A scenario-2 break recovered: every session up, pings both ways, and
/// the SAs with edge 2 back with counters moving.
fn assert_recovered(f: &Fabric, ports: &Ports) {
    wait_converged_on(f, ports, Duration::from_secs(15));
    let a = sa_counts(f, 1, E2, "Tunnel10001");
    assert_ping(f, 1, 2, 3, 3);
    assert_ping(f, 2, 1, 3, 3);
    let b = sa_counts(f, 1, E2, "Tunnel10001");
    assert!(
        b.0 >= a.0 + 6 && b.1 >= a.1 + 6,
        "edge 1's SA counters with edge 2 move: {a:?} then {b:?}"
    );
}

/// Scenario 2, then `ipsec-rekey` on edge 1 and on edge 2 in turn does not
/// bring the tunnel back (OMP, not IKE, drives SD-WAN SAs, and the cleared
/// peer takes no OMP update); `clear sdwan omp all` does, flapping every
/// BFD session of edge 1.
#[test]
fn scenario2_survives_ipsec_rekey_and_clear_sdwan_omp_all_recovers() {
    let f = fabric();
    // Edge 3 -> edge 1 throughout the break and both rekeys: nothing lost.
    let p31 = pinger(&f, 3, 1, 100);
    break_scenario2(&f);
    for i in [1, 2] {
        let r = json_of(&f, i, REKEY);
        let new = r["rekeyed"][0]["new_spi"].as_u64().unwrap();
        let j = 3 - i;
        let learned = settle_for(new, Duration::ZERO, Duration::from_secs(3), || {
            learned_spi(&f, j, i, "biz-internet")
        });
        assert_eq!(learned, new, "edge {j} learned edge {i}'s new SPI");
        // (It waits for edge 2 to send more after this: still stuck.)
        assert_scenario2_stuck(&f);
    }

    assert_eq!(
        p31.join().unwrap(),
        (100, 100),
        "edge 3 -> edge 1 throughout the clear and the rekeys"
    );
    let before = sessions(&f, 1);
    let r = json_of(&f, 1, "clear sdwan omp all");
    assert_eq!(r["rebuilt_peers"], 3, "{r}");
    assert_recovered(&f, &Ports::new());
    assert_all_flapped(&f, 1, &before);
}

/// Scenario 2 recovered by `request platform software sdwan port_hop
/// biz-internet` on edge 1, broken again and recovered by the `port-hop`
/// spelling; each moves the TLOC to its next port.
#[test]
fn scenario2_port_hop_recovers() {
    let f = fabric();
    for (spelling, old, new) in [("port_hop", 12346, 12366), ("port-hop", 12366, 12386)] {
        break_scenario2_at(&f, old);
        let before = sessions(&f, 1);
        let r = json_of(
            &f,
            1,
            &format!("request platform software sdwan {spelling} biz-internet"),
        );
        assert_eq!(
            r,
            json!({"tunnel": "Tunnel10001", "color": "biz-internet", "old_port": old, "new_port": new}),
        );
        assert_recovered(&f, &Ports::from([((1, "biz-internet".into()), new)]));
        assert_all_flapped(&f, 1, &before);
    }
}

/// [`break_scenario2`] with edge 1's TLOC on `port`.
fn break_scenario2_at(f: &Fabric, port: u64) {
    if port == 12346 {
        return break_scenario2(f);
    }
    // The same, with the ports of the idents and of the peer's view moved.
    let r = json_of(f, 1, &format!("clear crypto sa peer {E2}"));
    assert_eq!(r["cleared"], json!(["Tunnel10001"]), "{r}");
    wait_session(
        f,
        1,
        &skey("biz-internet", 2, "biz-internet"),
        "down",
        Duration::from_secs(3),
    );
    let text = f
        .edge(1)
        .cli(&format!("show crypto ipsec sa peer {E2}"))
        .unwrap();
    let want = format!("local  ident (addr/mask/prot/port): ({E1}/255.255.255.255/0/{port})");
    assert!(text.contains(&want), "no `{want}` in\n{text}");
    assert_eq!(sa_counts(f, 1, E2, "Tunnel10001"), (0, 0));
    assert_ping(f, 1, 2, 2, 0);
}

/// Scenario 2 recovered by `clear sdwan control connections` on edge 1:
/// its control connection and every BFD session flap.
#[test]
fn scenario2_clear_sdwan_control_connections_recovers() {
    let f = fabric();
    break_scenario2(&f);
    let conn_up = |f: &Fabric| -> u64 {
        let c = f.control_connections(1);
        assert_eq!(c.len(), 1, "{c:?}");
        c[0]["uptime_seconds"].as_u64().unwrap()
    };
    // Up long enough for a reset uptime to show.
    xdpsec_e2e::wait_for(
        "edge 1's connection up 2 s",
        Duration::from_secs(10),
        || conn_up(&f) >= 2,
    );
    let up0 = conn_up(&f);
    let before = sessions(&f, 1);
    let r = json_of(&f, 1, "clear sdwan control connections");
    assert_eq!(r["flapped_connections"], 1, "{r}");
    assert_recovered(&f, &Ports::new());
    assert_all_flapped(&f, 1, &before);
    let up1 = conn_up(&f);
    assert!(
        up1 < up0,
        "the control connection flapped: uptime {up0} then {up1}"
    );

    // On edge 3 both control connections flap, and all four sessions.
    xdpsec_e2e::wait_for(
        "edge 3's connections up 2 s",
        Duration::from_secs(10),
        || {
            let c = conns(&f, 3);
            c.len() == 2 && c.values().all(|(st, up)| st == "up" && *up >= 2)
        },
    );
    let (c0, s0) = (conns(&f, 3), sessions(&f, 3));
    assert!(c0.values().all(|(st, up)| st == "up" && *up >= 2), "{c0:?}");
    let r = json_of(&f, 3, "clear sdwan control connections");
    assert_eq!(r["flapped_connections"], 2, "{r}");
    f.wait_converged(&[1, 2, 3], Duration::from_secs(15))
        .unwrap();
    assert_all_flapped(&f, 3, &s0);
    let c1 = conns(&f, 3);
    for (c, (_, up)) in &c0 {
        assert!(
            c1[c].1 < *up,
            "edge 3's {c} connection did not flap: {c0:?} then {c1:?}"
        );
    }
}

/// UDP ports edge `i`'s XDP program steers.
fn udp_ports(f: &Fabric, i: usize) -> BTreeSet<u64> {
    json_of(f, i, "show platform software xdpsec udp-ports")["udp_ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

/// Edge `i`'s control connections: color -> (state, uptime seconds).
fn conns(f: &Fabric, i: usize) -> BTreeMap<String, (String, u64)> {
    f.control_connections(i)
        .iter()
        .map(|r| {
            (
                str_of(&r["color"]),
                (str_of(&r["state"]), r["uptime_seconds"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// `port_hop` in detail, on edge 1's biz-internet TLOC (offset 0) and edge
/// 3's mpls TLOC (offset 1), both edges steering only 4500 by config: five
/// hops come back to the first port; each time XDP steers the new port and
/// not the old one, local-properties shows it, the peers learn it (OMP
/// TLOCs, their BFD sessions' destination port), and only that color flaps
/// (edge 3's biz-internet control connection and sessions keep their
/// uptime and transitions). An unknown color is refused by name.
#[test]
fn port_hop_moves_one_color_through_the_port_sequence() {
    let mut f = Fabric::unique(sdwan::lab_edges(), Timers::fast())
        .up()
        .expect("fabric namespaces");
    f.start_controller().unwrap();
    for i in [1, 3] {
        let cfg = f
            .edge_config(i)
            .replacen("queues = 1\n", "queues = 1\nudp_ports = [4500]\n", 1);
        f.edges[i - 1] = Some(Daemon::start(&f.edge_ns[i - 1], &cfg).expect("edge"));
    }
    f.start_edge(2).unwrap();
    f.wait_converged(&[1, 2, 3], Duration::from_secs(20))
        .unwrap();

    let e = f
        .edge(1)
        .cli("request platform software sdwan port_hop gold")
        .unwrap_err();
    assert!(e.contains("gold") && e.contains("biz-internet"), "{e}");
    let e = f
        .edge(3)
        .cli("request platform software sdwan port-hop lte")
        .unwrap_err();
    assert!(e.contains("lte") && e.contains("mpls"), "{e}");

    let mut ports = Ports::new();
    for (i, color, k) in [(1, "biz-internet", 0), (3, "mpls", 1)] {
        let first = 12346 + k as u64;
        // 4500 by config, and the port of each of the edge's TLOCs.
        let steered = |ports: &Ports| -> BTreeSet<u64> {
            let mut want = BTreeSet::from([4500]);
            for (m, c) in f.colors(i).iter().enumerate() {
                want.insert(
                    ports
                        .get(&(i, c.clone()))
                        .copied()
                        .unwrap_or(Fabric::tloc_port(m)),
                );
            }
            want
        };
        assert_eq!(udp_ports(&f, i), steered(&ports), "edge {i}");
        assert!(udp_ports(&f, i).contains(&first));
        let mut port = first;
        for hop in 1..=5 {
            let next = if hop == 5 { first } else { first + 20 * hop };
            // Long enough for uptimes that must keep growing to show it.
            std::thread::sleep(Duration::from_millis(2100));
            let (s_before, c_before) = (sessions(&f, i), conns(&f, i));
            let r = json_of(
                &f,
                i,
                &format!("request platform software sdwan port_hop {color}"),
            );
            assert_eq!(
                r,
                json!({"tunnel": Fabric::tunnel_name(k), "color": color, "old_port": port, "new_port": next}),
                "edge {i} hop {hop}"
            );
            ports.insert((i, color.to_string()), next);
            let now_steered = udp_ports(&f, i);
            assert_eq!(now_steered, steered(&ports), "edge {i} hop {hop}");
            assert!(
                now_steered.contains(&next) && !now_steered.contains(&port),
                "edge {i} hop {hop}: {port} -> {next}: {now_steered:?}"
            );
            let p = json_of(&f, i, "show sdwan control local-properties");
            assert_eq!(p["port_hopped"], true, "{p}");
            let w = &p["wan_interfaces"][k];
            assert_eq!(
                (&w["color"], &w["public_port"], &w["private_port"]),
                (&json!(color), &json!(next), &json!(next)),
                "{p}"
            );
            let text = f
                .edge(i)
                .cli("show sdwan control local-properties")
                .unwrap();
            assert!(
                text.contains("port-hopped                       TRUE"),
                "{text}"
            );
            assert!(
                text.lines()
                    .any(|l| l.contains(&format!(" {next} ")) && l.contains(color)),
                "{text}"
            );

            wait_converged_on(&f, &ports, Duration::from_secs(10));
            // The peers learned the new port.
            for j in [1, 2, 3].into_iter().filter(|&j| j != i) {
                let t: Vec<Value> = f
                    .omp_tlocs(j)
                    .into_iter()
                    .filter(|r| {
                        r["system_ip"] == Fabric::system_ip(i).as_str() && r["color"] == color
                    })
                    .collect();
                assert_eq!(t.len(), 1, "edge {j}: {t:?}");
                assert_eq!(t[0]["public_port"], next, "edge {j}: {t:?}");
                for ((_, sys, rc), (state, _, _, dport)) in sessions(&f, j) {
                    if sys == Fabric::system_ip(i) && rc == color {
                        assert_eq!((state.as_str(), dport), ("up", next), "edge {j}");
                    }
                }
            }
            // Only that color flapped.
            let (s_after, c_after) = (sessions(&f, i), conns(&f, i));
            for (key, (_, t0, up0, _)) in &s_before {
                let (_, t1, up1, _) = &s_after[key];
                if key.0 == color {
                    assert!(
                        t1 >= &(t0 + 2),
                        "edge {i} hop {hop}: {key:?} did not flap: {t0} then {t1}"
                    );
                } else {
                    assert_eq!(t1, t0, "edge {i} hop {hop}: {key:?} flapped");
                    assert!(
                        up1 >= up0 && *up0 >= 1,
                        "edge {i} hop {hop}: {key:?} uptime {up0} then {up1}"
                    );
                }
            }
            for (c, (_, up0)) in &c_before {
                let up1 = c_after[c].1;
                if c == color {
                    assert!(
                        up1 < *up0,
                        "edge {i} hop {hop}: {c} connection did not flap: {up0} then {up1}"
                    );
                } else {
                    assert!(
                        up1 >= *up0,
                        "edge {i} hop {hop}: {c} connection flapped: {up0} then {up1}"
                    );
                }
            }
            port = next;
        }
    }
    // Every pair still pings after ten hops.
    for (i, j) in [(1, 2), (2, 3), (3, 1)] {
        assert_ping(&f, i, j, 2, 2);
    }
}

/// IOS's `D:HH:MM:SS`, as genie holds uptimes.
fn uptime(secs: u64) -> String {
    format!(
        "{}:{:02}:{:02}:{:02}",
        secs / 86_400,
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// A JSON value as the text genie holds it.
fn text(v: &Value) -> Value {
    Value::String(v.to_string().trim_matches('"').to_string())
}

/// Genie's structure for `parser`, built from that command's `--json`
/// value: what genie must read from the text. Where genie keys a table by
/// fewer fields than a row has, it keeps one row per key (the first or the
/// last, as each parser does) and so does this.
fn genie_expected(parser: &str, j: &Value) -> Value {
    let rows = |k: &str| j[k].as_array().cloned().unwrap_or_default();
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    match parser {
        "bfd_sessions" => {
            let mut by_sys = serde_json::Map::new();
            for r in rows("sessions") {
                let e = by_sys
                    .entry(s(&r["system_ip"]))
                    .or_insert_with(|| json!({"source_tloc_color": {}}));
                // The last row of a (system-ip, source color) wins.
                e["source_tloc_color"][s(&r["source_color"])] = json!({
                    "site_id": text(&r["site_id"]),
                    "state": r["state"],
                    "source_ip": r["source_ip"],
                    "remote_tloc_color": r["remote_color"],
                    "destination_public_ip": r["destination_ip"],
                    "destination_public_port": text(&r["destination_port"]),
                    "encapsulation": r["encap"],
                    "detect_multiplier": text(&r["multiplier"]),
                    "tx_interval": text(&r["tx_interval_ms"]),
                    "uptime": uptime(r["uptime_seconds"].as_u64().unwrap()),
                    "transitions": text(&r["transitions"]),
                });
            }
            json!({"system_ip": by_sys})
        }
        "bfd_summary" => j.clone(),
        "ipsec_inbound_connections" | "ipsec_outbound_connections" => {
            let mut by_src = serde_json::Map::new();
            for r in rows("connections") {
                let e = by_src
                    .entry(s(&r["source_ip"]))
                    .or_insert_with(|| json!({"destination_ip": {}}));
                let mut v = r.clone();
                v.as_object_mut().unwrap().remove("source_ip");
                v.as_object_mut().unwrap().remove("destination_ip");
                // The first row of a (source, destination) stays.
                e["destination_ip"]
                    .as_object_mut()
                    .unwrap()
                    .entry(s(&r["destination_ip"]))
                    .or_insert(v);
            }
            json!({"source_ip": by_src})
        }
        "ipsec_local_sa" => {
            // Labelled by position: the first row inbound, the second outbound.
            let r = rows("local_sa");
            let entry = |r: &Value| {
                let mut v = r.clone();
                v.as_object_mut().unwrap().remove("tloc_address");
                v
            };
            let mut m = serde_json::Map::new();
            for (n, label) in [(0, "inbound"), (1, "outbound")] {
                if let Some(r) = r.get(n) {
                    m.insert(label.into(), entry(r));
                }
            }
            json!({"local_sa": m})
        }
        "tunnel_statistics" => {
            let mut by_src = serde_json::Map::new();
            for r in rows("tunnels") {
                let e = by_src
                    .entry(s(&r["src_ip"]))
                    .or_insert_with(|| json!({"remote": {}}));
                // The last block of a (source, destination) wins.
                e["remote"][s(&r["dest_ip"])] = json!({
                    "src_port": r["src_port"],
                    "dst_port": r["dst_port"],
                    "local_color": r["local_color"],
                    "remote_color": r["remote_color"],
                    "tunnel_mtu": r["tunnel_mtu"],
                    "tcp_mss_adjust": r["tcp_mss_adjust"],
                    "tx": {"tx_pkts": r["tx_pkts"], "tx_octets": r["tx_octets"],
                           "tx_ipv4_mcast_pkts": 0, "tx_ipv4_mcast_octets": 0},
                    "rx": {"rx_pkts": r["rx_pkts"], "rx_octets": r["rx_octets"],
                           "rx_ipv4_mcast_pkts": 0, "rx_ipv4_mcast_octets": 0},
                    "ipv6_tx": {"ipv6_tx_pkts": r["ipv6_tx_pkts"],
                                "ipv6_tx_octets": r["ipv6_tx_octets"]},
                    "ipv6_rx": {"ipv6_rx_pkts": r["ipv6_rx_pkts"],
                                "ipv6_rx_octets": r["ipv6_rx_octets"]},
                    "ipsec": {
                        "ipsec_decrypt_inbound": r["ipsec_decrypt_inbound"],
                        "ipsec_rx_auth_failures": r["ipsec_rx_auth_failures"],
                        "ipsec_rx_failures": r["ipsec_rx_failures"],
                        "ipsec_encrypt_outbound": r["ipsec_encrypt_outbound"],
                        "ipsec_tx_auth_failures": r["ipsec_tx_auth_failures"],
                        "ipsec_tx_failures": r["ipsec_tx_failures"],
                    },
                });
            }
            json!({"tunnel": by_src})
        }
        "control_local_properties" => {
            let mut wan = serde_json::Map::new();
            for w in rows("wan_interfaces") {
                let mut e = serde_json::Map::new();
                for k in [
                    "public_ipv4",
                    "public_port",
                    "private_ipv4",
                    "private_ipv6",
                    "private_port",
                    "vsmart",
                    "vmanage",
                    "color",
                    "state",
                    "max_cntrl",
                    "nat_type",
                ] {
                    e.insert(k.into(), text(&w[k]));
                }
                for k in ["last_connection", "spi_time_remaining"] {
                    let secs = w[format!("{k}_seconds").as_str()].as_u64().unwrap();
                    e.insert(k.into(), json!(uptime(secs)));
                }
                wan.insert(s(&w["interface"]), Value::Object(e));
            }
            let mut p = serde_json::Map::new();
            for k in [
                "personality",
                "organization_name",
                "dns_name",
                "site_id",
                "domain_id",
                "protocol",
                "tls_port",
                "system_ip",
                "chassis_num_unique_id",
                "number_vbond_peers",
                "number_active_wan_interfaces",
            ] {
                p.insert(k.into(), text(&j[k]));
            }
            for k in [
                "keygen_interval",
                "retry_interval",
                "no_activity_exp_interval",
                "time_since_last_port_hop",
            ] {
                let secs = j[format!("{k}_seconds").as_str()].as_u64().unwrap();
                p.insert(k.into(), json!(uptime(secs)));
            }
            let flag = |k: &str, y: &str, n: &str| json!(if j[k] == true { y } else { n });
            p.insert("port_hopped".into(), flag("port_hopped", "TRUE", "FALSE"));
            p.insert(
                "pairwise_keying".into(),
                flag("pairwise_keying", "Enabled", "Disabled"),
            );
            p.insert("wan_interfaces".into(), Value::Object(wan));
            Value::Object(p)
        }
        "control_connections" => {
            let mut by_color = serde_json::Map::new();
            for r in rows("connections") {
                let e = by_color
                    .entry(s(&r["color"]))
                    .or_insert_with(|| json!({"peer_system_ip": {}}));
                e["peer_system_ip"][s(&r["system_ip"])] = json!({
                    "peer_type": r["peer_type"],
                    "site_id": text(&r["site_id"]),
                    "state": r["state"],
                    "uptime": uptime(r["uptime_seconds"].as_u64().unwrap()),
                });
            }
            json!({"local_color": by_color})
        }
        "omp_tlocs" => {
            let mut by_sys = serde_json::Map::new();
            for r in rows("tlocs") {
                let e = by_sys
                    .entry(s(&r["system_ip"]))
                    .or_insert_with(|| json!({"tloc": {}}));
                let status: Vec<&str> = r["status"].as_str().unwrap().split(',').collect();
                e["tloc"][s(&r["color"])] = json!({
                    "transport": r["encap"],
                    "received_from": {
                        "status": status,
                        "attributes": {
                            "encap_spi": r["spi"],
                            "public_ip": r["public_ip"],
                            "public_port": r["public_port"],
                        },
                    },
                });
            }
            json!({"tloc_data": by_sys})
        }
        "omp_peers" => {
            let mut by_sys = serde_json::Map::new();
            for r in rows("peers") {
                by_sys.insert(
                    s(&r["system_ip"]),
                    json!({
                        "type": r["peer_type"],
                        "site_id": r["site_id"],
                        "state": r["state"],
                        "route": {"recv": r["received"], "sent": r["sent"]},
                    }),
                );
            }
            json!({"peer": by_sys})
        }
        other => panic!("no genie mapping for {other}"),
    }
}

/// A leaf as a number, for counters and uptimes that move between two
/// reads: a number, decimal text, or `D:HH:MM:SS` (as seconds).
fn as_number(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?;
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let p: Vec<u64> = s
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    (p.len() == 4).then(|| ((p[0] * 24 + p[1]) * 60 + p[2]) * 60 + p[3])
}

/// Every difference between genie's parse `got` and what `--json` read
/// just before (`a`) and just after (`b`) the text: a leaf equal in both
/// must be equal; one that moved (a counter, an uptime) must lie between.
/// Objects: each key of the expectation must be there; with `exact`, no
/// key more.
fn genie_differences(
    path: &str,
    a: &Value,
    b: &Value,
    got: &Value,
    exact: bool,
    diff: &mut Vec<String>,
) {
    match (a, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wa) in w {
                let wb = b.get(k).unwrap_or(&Value::Null);
                match g.get(k) {
                    Some(gv) => genie_differences(&format!("{path}.{k}"), wa, wb, gv, exact, diff),
                    None => diff.push(format!("{path}.{k}: missing in genie's parse")),
                }
            }
            if exact {
                for k in g.keys().filter(|k| !w.contains_key(*k)) {
                    diff.push(format!("{path}.{k}: genie has it, --json does not"));
                }
            }
        }
        _ if a == b => {
            if a != got {
                diff.push(format!("{path}: genie read {got}, --json says {a}"));
            }
        }
        _ => match (as_number(a), as_number(b), as_number(got)) {
            (Some(x), Some(y), Some(g)) if x.min(y) <= g && g <= x.max(y) => {}
            _ => diff.push(format!(
                "{path}: genie read {got}, --json said {a} then {b}"
            )),
        },
    }
}

/// The live show commands genie reads: (parser key of genie_parse.py,
/// command, whether genie's parse holds exactly the mapped keys).
fn live_commands(i: usize) -> Vec<(&'static str, String, bool)> {
    vec![
        ("bfd_sessions", "show sdwan bfd sessions".into(), true),
        ("bfd_summary", "show sdwan bfd summary".into(), true),
        (
            "control_connections",
            "show sdwan control connections".into(),
            false,
        ),
        (
            "control_local_properties",
            "show sdwan control local-properties".into(),
            false,
        ),
        ("omp_tlocs", "show sdwan omp tlocs".into(), false),
        ("omp_peers", "show sdwan omp peers".into(), false),
        (
            "ipsec_inbound_connections",
            "show sdwan ipsec inbound-connections".into(),
            true,
        ),
        (
            "ipsec_outbound_connections",
            "show sdwan ipsec outbound-connections".into(),
            true,
        ),
        (
            "ipsec_local_sa",
            format!("show sdwan ipsec local-sa {}", Fabric::system_ip(i)),
            true,
        ),
        (
            "tunnel_statistics",
            "show sdwan tunnel statistics".into(),
            true,
        ),
    ]
}

/// Genie's `ShowCryptoIpsecSa` against `show crypto ipsec sa --json`: per
/// SD-WAN tunnel and peer, the ident's counters, endpoints and SPIs.
fn sa_differences(got: &Value, a: &Value, b: &Value, diff: &mut Vec<String>) {
    let ifs = &got["interface"];
    let rows_a = a["sas"].as_array().cloned().unwrap_or_default();
    let rows_b = b["sas"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows_a.len(), rows_b.len());
    let names: BTreeSet<&str> = rows_a.iter().filter_map(|r| r["tunnel"].as_str()).collect();
    let got_names: BTreeSet<&str> = ifs
        .as_object()
        .map(|o| o.keys().map(|k| k.as_str()).collect())
        .unwrap_or_default();
    if names != got_names {
        diff.push(format!("sa: interfaces {got_names:?}, --json {names:?}"));
    }
    let ios_spi = |v: &Value| {
        let n = v.as_u64().unwrap_or(0);
        format!("0x{n:X}({n})")
    };
    for (ra, rb) in rows_a.iter().zip(&rows_b) {
        let name = ra["tunnel"].as_str().unwrap_or("?");
        let peer = &ra["peer"];
        let idents: Vec<&Value> = ifs[name]["ident"]
            .as_object()
            .map(|o| o.values().filter(|v| v["peer_ip"] == *peer).collect())
            .unwrap_or_default();
        if idents.len() != 1 {
            diff.push(format!(
                "sa {name}: {} idents for peer {peer}",
                idents.len()
            ));
            continue;
        }
        let g = idents[0];
        let at = format!("sa {name} {peer}");
        let want_a = json!({
            "pkts_encaps": ra["pkts_encaps"], "pkts_encrypt": ra["pkts_encaps"], "pkts_digest": ra["pkts_encaps"],
            "pkts_decaps": ra["pkts_decaps"], "pkts_decrypt": ra["pkts_decaps"], "pkts_verify": ra["pkts_decaps"],
            "send_errors": ra["send_errors"], "recv_errors": ra["recv_errors"],
            "remote_crypto_endpt": peer, "current_outbound_spi": ios_spi(&ra["outbound_spi"]),
        });
        let want_b = json!({
            "pkts_encaps": rb["pkts_encaps"], "pkts_encrypt": rb["pkts_encaps"], "pkts_digest": rb["pkts_encaps"],
            "pkts_decaps": rb["pkts_decaps"], "pkts_decrypt": rb["pkts_decaps"], "pkts_verify": rb["pkts_decaps"],
            "send_errors": rb["send_errors"], "recv_errors": rb["recv_errors"],
            "remote_crypto_endpt": peer, "current_outbound_spi": ios_spi(&rb["outbound_spi"]),
        });
        genie_differences(&at, &want_a, &want_b, g, false, diff);
        let mut inbound: Vec<String> = ra["inbound_spis"]
            .as_array()
            .unwrap()
            .iter()
            .map(ios_spi)
            .collect();
        inbound.sort();
        let keys = |v: &Value| -> Vec<String> {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        if keys(&g["inbound_esp_sas"]["spi"]) != inbound {
            diff.push(format!(
                "{at}: inbound SPIs {:?}, --json {inbound:?}",
                keys(&g["inbound_esp_sas"]["spi"])
            ));
        }
        if keys(&g["outbound_esp_sas"]["spi"]) != [ios_spi(&ra["outbound_spi"])] {
            diff.push(format!(
                "{at}: outbound SPIs {:?}",
                keys(&g["outbound_esp_sas"]["spi"])
            ));
        }
    }
}

/// The `--json` fields each show command documents (control/src/sdwan/
/// render.rs): (parser key, list key or "" for the top level, fields).
const DOCUMENTED: &[(&str, &str, &[&str])] = &[
    (
        "bfd_sessions",
        "sessions",
        &[
            "system_ip",
            "site_id",
            "state",
            "source_color",
            "remote_color",
            "source_ip",
            "destination_ip",
            "destination_port",
            "encap",
            "multiplier",
            "tx_interval_ms",
            "uptime_seconds",
            "transitions",
        ],
    ),
    (
        "bfd_summary",
        "",
        &[
            "sessions_total",
            "sessions_up",
            "sessions_max",
            "sessions_flap",
            "poll_interval",
        ],
    ),
    (
        "ipsec_inbound_connections",
        "connections",
        &[
            "source_ip",
            "source_port",
            "destination_ip",
            "destination_port",
            "remote_tloc",
            "remote_tloc_color",
            "local_tloc",
            "local_tloc_color",
            "encryption_algorithm",
            "tc_spi",
        ],
    ),
    (
        "ipsec_outbound_connections",
        "connections",
        &[
            "source_ip",
            "source_port",
            "destination_ip",
            "destination_port",
            "spi",
            "tunnel_mtu",
            "remote_tloc",
            "remote_tloc_color",
            "authentication",
            "key_hash",
            "encryption_algorithm",
            "tc_spi",
        ],
    ),
    (
        "ipsec_local_sa",
        "local_sa",
        &[
            "tloc_address",
            "tloc_color",
            "spi",
            "source_ipv4",
            "source_ipv6",
            "source_port",
            "key_hash",
        ],
    ),
    (
        "tunnel_statistics",
        "tunnels",
        &[
            "protocol",
            "src_ip",
            "dest_ip",
            "src_port",
            "dst_port",
            "remote_sys_ip",
            "local_color",
            "remote_color",
            "tunnel_mtu",
            "tx_pkts",
            "tx_octets",
            "rx_pkts",
            "rx_octets",
            "tcp_mss_adjust",
            "ipv6_tx_pkts",
            "ipv6_tx_octets",
            "ipv6_rx_pkts",
            "ipv6_rx_octets",
            "ipsec_decrypt_inbound",
            "ipsec_rx_auth_failures",
            "ipsec_rx_failures",
            "ipsec_encrypt_outbound",
            "ipsec_tx_auth_failures",
            "ipsec_tx_failures",
        ],
    ),
    (
        "control_local_properties",
        "",
        &[
            "personality",
            "organization_name",
            "dns_name",
            "site_id",
            "domain_id",
            "protocol",
            "tls_port",
            "system_ip",
            "chassis_num_unique_id",
            "keygen_interval_seconds",
            "retry_interval_seconds",
            "no_activity_exp_interval_seconds",
            "port_hopped",
            "time_since_last_port_hop_seconds",
            "pairwise_keying",
            "number_vbond_peers",
            "number_active_wan_interfaces",
            "wan_interfaces",
        ],
    ),
    (
        "control_local_properties",
        "wan_interfaces",
        &[
            "interface",
            "public_ipv4",
            "public_port",
            "private_ipv4",
            "private_ipv6",
            "private_port",
            "vsmart",
            "vmanage",
            "color",
            "state",
            "max_cntrl",
            "last_connection_seconds",
            "spi_time_remaining_seconds",
            "nat_type",
        ],
    ),
];

/// Differences between a command's `--json` and its documented fields:
/// every row (or the top level) has exactly those.
fn field_differences(key: &str, j: &Value, diff: &mut Vec<String>) {
    for (k, list, fields) in DOCUMENTED.iter().filter(|(k, _, _)| *k == key) {
        let rows: Vec<&Value> = if list.is_empty() {
            vec![j]
        } else {
            j[*list]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default()
        };
        if rows.is_empty() {
            diff.push(format!("{k}: no {list} rows: {j}"));
        }
        let want: BTreeSet<&str> = fields.iter().copied().collect();
        for r in rows {
            let got: BTreeSet<&str> = r
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            if got != want {
                diff.push(format!("{k} {list}: fields {got:?}, documented {want:?}"));
            }
        }
    }
}

/// Genie reads the live text of every SD-WAN show command on each edge
/// into the values `--json` gives around it; a changed number in the text
/// shows as a difference.
#[test]
fn genieparser_reads_live_sdwan_shows_as_json_gives_them() {
    let f = fabric();
    for (i, j) in [(1, 2), (2, 3), (3, 1)] {
        assert_ping(&f, i, j, 3, 3);
    }
    // Edge 1 within a rekey grace: two local-sa rows, two inbound SPIs per peer.
    json_of(&f, 1, REKEY);
    const SA: &str = "show crypto ipsec sa";
    // Per edge: the texts (genie's case) and the JSON read before and after.
    let mut cases = Vec::new();
    let mut reads = Vec::new();
    for i in 1..=3 {
        let mut case = serde_json::Map::new();
        let mut around = BTreeMap::new();
        for (key, cmd, _) in live_commands(i)
            .into_iter()
            .chain([("sa", SA.to_string(), false)])
        {
            let a = json_of(&f, i, &cmd);
            let t = f.edge(i).cli(&cmd).unwrap();
            let b = json_of(&f, i, &cmd);
            case.insert(key.into(), Value::String(t));
            around.insert(key, (a, b));
        }
        cases.push(Value::Object(case));
        reads.push(around);
    }
    // One number changed in edge 3's bfd summary: genie must see it.
    let mut bad = cases[2].clone();
    let summary = bad["bfd_summary"].as_str().unwrap().to_string();
    let total = reads[2]["bfd_summary"].0["sessions_total"]
        .as_u64()
        .unwrap();
    let tampered = summary.replacen(
        &format!("sessions-total         {total}\n"),
        &format!("sessions-total         {}\n", total + 1),
        1,
    );
    assert_ne!(tampered, summary);
    bad["bfd_summary"] = Value::String(tampered);
    cases.push(bad);

    let parsed = genie_parse(&Value::Array(cases.clone())).expect("genie");
    let mut diff = Vec::new();
    for i in 1..=3 {
        let p = &parsed[i - 1];
        for (key, _, exact) in live_commands(i) {
            let (a, b) = &reads[i - 1][key];
            let mut d = Vec::new();
            field_differences(key, a, &mut d);
            diff.extend(d.into_iter().map(|d| format!("edge {i} --json {d}")));
            let got = &p[key];
            if key == "ipsec_local_sa" && a["local_sa"].as_array().unwrap().len() < 2 {
                // Genie's schema wants two rows (its sample had two); a
                // single TLOC outside a rekey grace has one.
                let e = got["error"].as_str().unwrap_or("");
                assert!(
                    e.contains("SchemaMissingKeyError") && e.contains("outbound"),
                    "edge {i}: one local-sa row: {got}"
                );
                continue;
            }
            if let Some(e) = got.get("error") {
                diff.push(format!("edge {i} {key}: genie could not parse: {e}"));
                continue;
            }
            genie_differences(
                &format!("edge {i} {key}"),
                &genie_expected(key, a),
                &genie_expected(key, b),
                &got["parsed"],
                exact,
                &mut diff,
            );
        }
        let (a, b) = &reads[i - 1]["sa"];
        match p["sa"].get("error") {
            Some(e) => diff.push(format!("edge {i} sa: genie could not parse: {e}")),
            None => {
                let mut d = Vec::new();
                sa_differences(&p["sa"]["parsed"], a, b, &mut d);
                diff.extend(d.into_iter().map(|d| format!("edge {i} {d}")));
            }
        }
    }
    assert!(
        diff.is_empty(),
        "genie and --json differ:\n{}\n--- texts:\n{}",
        diff.join("\n"),
        serde_json::to_string_pretty(&cases).unwrap()
    );
    // Sanity: genie saw the fabric, not an empty parse that happens to agree.
    let p3 = &parsed[2];
    assert_eq!(
        p3["bfd_summary"]["parsed"]["sessions_total"], 4,
        "{}",
        p3["bfd_summary"]
    );
    // Genie keys WAN interfaces by name: both TLOCs are on e0, the last stays.
    assert_eq!(
        p3["control_local_properties"]["parsed"]["wan_interfaces"]["e0"]["color"], "mpls",
        "{}",
        p3["control_local_properties"]
    );
    let t = &p3["tunnel_statistics"]["parsed"]["tunnel"]["198.51.100.3"]["remote"]["198.51.100.1"];
    assert!(as_number(&t["tx"]["tx_pkts"]).unwrap_or(0) > 0, "{t}");
    let mut d = Vec::new();
    let (a, b) = &reads[2]["bfd_summary"];
    genie_differences(
        "tampered",
        &genie_expected("bfd_summary", a),
        &genie_expected("bfd_summary", b),
        &parsed[3]["bfd_summary"]["parsed"],
        true,
        &mut d,
    );
    assert_eq!(
        d,
        [format!(
            "tampered.sessions_total: genie read {}, --json says {total}",
            total + 1
        )],
        "a changed number must show"
    );
}
