//! The SD-WAN fabric end to end: `xdpsec controller` and three `xdpsec run`
//! edges (one with two colors) on a shared bridge, each in its own network
//! namespace (tests/src/sdwan.rs). Control connections and BFD sessions
//! come up, every pair of inside addresses pings through the tunnels, a
//! timed rekey under traffic loses nothing, the fabric survives a
//! controller restart, a wrong PSK is refused with a log line, and a
//! stopped edge is withdrawn after the graceful-restart time.
//!
//! BFD runs at 200 ms x 3 here so each test stays within about 30 s.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use xdpsec_e2e::{
    Lab,
    sdwan::{self, Cert, EdgeSpec, Fabric, Timers},
    settle_for,
};

/// Edges 1 and 2 on biz-internet, edge 3 on biz-internet and mpls (the lab's).
fn three_edges() -> Vec<EdgeSpec> {
    sdwan::lab_edges()
}

fn fabric(specs: Vec<EdgeSpec>, timers: Timers) -> Fabric {
    let mut f = Fabric::unique(specs, timers)
        .up()
        .expect("fabric namespaces");
    f.start().expect("controller and edges");
    f
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("?").to_string()
}

/// The inbound SPIs of edge `j`'s `Tunnel1000(k+1)` rows in `show crypto
/// ipsec sa` (every peer encrypts to a TLOC with the same SPI; after a
/// rekey the old one stays for the grace time).
fn inbound_spis(f: &Fabric, j: usize, k: usize) -> BTreeSet<u64> {
    let tunnel = Fabric::tunnel_name(k);
    f.ipsec_sas(j)
        .iter()
        .filter(|r| r["tunnel"] == tunnel.as_str())
        .flat_map(|r| r["inbound_spis"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_u64())
        .collect()
}

/// The SPI edge `j` receives on with its TLOC `k`, outside a rekey.
fn own_spi(f: &Fabric, j: usize, k: usize) -> u64 {
    let spis = inbound_spis(f, j, k);
    assert_eq!(
        spis.len(),
        1,
        "edge {j} {}: one inbound SPI for all its peers: {:?}",
        Fabric::tunnel_name(k),
        f.ipsec_sas(j)
    );
    *spis.first().unwrap()
}

/// `show sdwan omp tlocs` of edge `i`: (system_ip, color) -> row, without
/// edge `i`'s own TLOCs.
fn remote_tlocs(f: &Fabric, i: usize) -> BTreeMap<(String, String), Value> {
    f.omp_tlocs(i)
        .into_iter()
        .filter(|r| r["system_ip"] != Fabric::system_ip(i).as_str())
        .map(|r| ((str_of(&r["system_ip"]), str_of(&r["color"])), r))
        .collect()
}

/// The originator of an edge's OMP service route (`originator` as on the
/// controller, or `system_ip`).
fn originator(r: &Value) -> String {
    if r["originator"].is_string() {
        str_of(&r["originator"])
    } else {
        str_of(&r["system_ip"])
    }
}

/// Edge `i`'s (prefix, originator) of the service routes other edges sent.
fn remote_routes(f: &Fabric, i: usize) -> BTreeSet<(String, String)> {
    f.omp_routes(i)
        .iter()
        .map(|r| (str_of(&r["prefix"]), originator(r)))
        .filter(|(_, o)| *o != Fabric::system_ip(i))
        .collect()
}

/// Edge `i`'s (tunnel, peer) rows of `show crypto ipsec sa`.
fn sa_rows(f: &Fabric, i: usize) -> BTreeSet<(String, String)> {
    f.ipsec_sas(i)
        .iter()
        .map(|r| (str_of(&r["tunnel"]), str_of(&r["peer"])))
        .collect()
}

/// What the SA rows of edge `i` should be with the edges in `peers`.
fn expected_sa_rows(f: &Fabric, i: usize, peers: &[usize]) -> BTreeSet<(String, String)> {
    let mut want = BTreeSet::new();
    for k in 0..f.colors(i).len() {
        for &j in peers.iter().filter(|&&j| j != i) {
            for m in 0..f.colors(j).len() {
                want.insert((Fabric::tunnel_name(k), f.tloc_ip(j, m).to_string()));
            }
        }
    }
    want
}

/// Non-zero QFP drop rows of edge `i`: {id: packets}.
fn drops(f: &Fabric, i: usize) -> BTreeMap<u64, u64> {
    xdpsec_e2e::drop_rows(f.edge(i))
}

/// Ping every ordered pair of `members`, `count` each (pairs in parallel).
fn ping_all_pairs(f: &Fabric, members: &[usize], count: u32) {
    let pairs: Vec<(usize, usize)> = members
        .iter()
        .flat_map(|&i| members.iter().map(move |&j| (i, j)))
        .filter(|(i, j)| i != j)
        .collect();
    let results: Vec<((usize, usize), (u32, u32))> = std::thread::scope(|s| {
        let hs: Vec<_> = pairs
            .iter()
            .map(|&(i, j)| s.spawn(move || ((i, j), f.ping(i, j, count, "0.2"))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((i, j), got) in results {
        assert_eq!(
            got,
            (count, count),
            "ping {} -> {} (edge {i} -> edge {j}): (transmitted, received)",
            Fabric::inside_ip(i),
            Fabric::inside_ip(j)
        );
    }
}

/// The harness alone: the bridge joins every namespace (edges' second
/// addresses too), the controller starts on .10, and dropping the fabric
/// removes every namespace.
#[test]
fn fabric_harness_builds_and_removes_its_namespaces() {
    let mut f = Fabric::unique(three_edges(), Timers::fast())
        .up()
        .expect("fabric");
    f.start_controller().expect("controller");
    let ping1 = |ns: &str, dst: &str| {
        Lab::exec(ns, &["ping", "-n", "-q", "-c", "1", "-W", "2", dst])
            .unwrap()
            .status
            .success()
    };
    for i in 1..=3 {
        assert!(
            ping1(&f.edge_ns[i - 1], "198.51.100.10"),
            "edge {i} -> controller"
        );
    }
    assert!(
        ping1(&f.edge_ns[0], &f.tloc_ip(3, 1).to_string()),
        "edge 1 -> edge 3 mpls"
    );
    assert!(
        ping1(&f.edge_ns[2], &f.tloc_ip(2, 0).to_string()),
        "edge 3 -> edge 2"
    );
    let conns = f.ctrl().cli_json("show sdwan control connections").unwrap();
    assert_eq!(conns["connections"], serde_json::json!([]), "{conns}");
    let cfg = f.edge_config(3);
    for line in [
        "system_ip = \"192.0.2.3\"",
        "site_id = 103",
        "address = \"203.0.113.3/32\"",
        "controller = \"198.51.100.10:23456\"",
        "color = \"mpls\"\naddress = \"198.51.100.23\"\nport_offset = 1",
    ] {
        assert!(cfg.contains(line), "{line} in\n{cfg}");
    }
    let names = f.namespaces();
    assert_eq!(names.len(), 5);
    drop(f);
    let list = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    for ns in names {
        assert!(
            !list.split_whitespace().any(|w| w == ns),
            "{ns} left behind"
        );
    }
}

#[test]
fn fabric_comes_up_and_every_pair_pings() {
    let f = fabric(three_edges(), Timers::fast());
    let all = [1, 2, 3];
    f.wait_converged(&all, Duration::from_secs(20)).unwrap();

    // c_i x sum(c_j, j != i) sessions, each row as the topology says.
    for (i, n) in [(1, 3), (2, 3), (3, 4)] {
        let rows = f.bfd_sessions(i);
        assert_eq!(rows.len(), n, "edge {i}: {rows:?}");
        for r in &rows {
            assert_eq!(r["state"], "up", "{r}");
            assert_eq!(r["encap"], "ipsec", "{r}");
            assert_eq!(r["multiplier"], 3, "edge {i}: {r}");
            assert_eq!(r["tx_interval_ms"], 200, "edge {i}: {r}");
            assert!(r["uptime_seconds"].is_u64(), "{r}");
            assert!(r["transitions"].is_u64(), "{r}");
        }
    }

    // One control connection per local color, to the vSmart.
    for i in all {
        let rows = f.control_connections(i);
        assert_eq!(rows.len(), f.colors(i).len(), "edge {i}: {rows:?}");
        for r in &rows {
            assert!(r["site_id"].is_u64() || r["site_id"].is_string(), "{r}");
            assert!(r["uptime_seconds"].is_u64(), "{r}");
        }
    }
    let ctrl_conns = f.ctrl().cli_json("show sdwan control connections").unwrap();
    let up: BTreeSet<(String, String)> = ctrl_conns["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "up")
        .map(|r| (str_of(&r["system_ip"]), str_of(&r["color"])))
        .collect();
    let want: BTreeSet<(String, String)> = all
        .iter()
        .flat_map(|&i| {
            f.colors(i)
                .iter()
                .map(move |c| (Fabric::system_ip(i), c.clone()))
        })
        .collect();
    assert_eq!(up, want, "controller's connections: {ctrl_conns}");

    // Each edge learned every remote TLOC with the SPI its owner receives on.
    let spis: BTreeMap<(usize, usize), u64> = all
        .iter()
        .flat_map(|&j| (0..f.colors(j).len()).map(move |k| (j, k)))
        .map(|(j, k)| ((j, k), own_spi(&f, j, k)))
        .collect();
    for i in all {
        let tlocs = remote_tlocs(&f, i);
        let mut want = BTreeSet::new();
        for j in all.iter().copied().filter(|&j| j != i) {
            for (m, color) in f.colors(j).iter().enumerate() {
                want.insert((Fabric::system_ip(j), color.clone()));
                let r = &tlocs
                    .get(&(Fabric::system_ip(j), color.clone()))
                    .unwrap_or_else(|| panic!("edge {i} lacks TLOC {j}/{color}: {tlocs:?}"));
                assert_eq!(r["spi"], spis[&(j, m)], "edge {i}: {r}");
                assert_eq!(r["encap"], "ipsec", "{r}");
                assert_eq!(r["public_ip"], f.tloc_ip(j, m).to_string(), "{r}");
                assert_eq!(r["public_port"], Fabric::tloc_port(m), "{r}");
                for k in r.as_object().unwrap().keys() {
                    assert!(!k.contains("key"), "a TLOC row never carries a key: {r}");
                }
            }
        }
        assert_eq!(
            tlocs.keys().cloned().collect::<BTreeSet<_>>(),
            want,
            "edge {i}'s remote TLOCs"
        );
        // Its own TLOCs, where it lists them, carry the SPI it receives on.
        for r in f.omp_tlocs(i) {
            if r["system_ip"] == Fabric::system_ip(i).as_str() {
                let k = f
                    .colors(i)
                    .iter()
                    .position(|c| r["color"] == c.as_str())
                    .unwrap_or_else(|| panic!("edge {i} lists a TLOC it does not have: {r}"));
                assert_eq!(r["spi"], spis[&(i, k)], "edge {i}'s own TLOC: {r}");
            }
        }
        // Service routes: every other edge's inside address, from it.
        let want: BTreeSet<(String, String)> = all
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| (format!("{}/32", Fabric::inside_ip(j)), Fabric::system_ip(j)))
            .collect();
        assert_eq!(remote_routes(&f, i), want, "edge {i}'s omp routes");
    }

    // show crypto ipsec sa: one row per (local tunnel, remote TLOC),
    // encrypting to the remote TLOC's SPI.
    let tloc_of_ip: BTreeMap<String, (usize, usize)> = spis
        .keys()
        .map(|&(j, m)| (f.tloc_ip(j, m).to_string(), (j, m)))
        .collect();
    for i in all {
        assert_eq!(
            sa_rows(&f, i),
            expected_sa_rows(&f, i, &all),
            "edge {i}: (tunnel, peer) rows of show crypto ipsec sa"
        );
        for r in f.ipsec_sas(i) {
            let peer = &tloc_of_ip[&str_of(&r["peer"])];
            assert_eq!(r["outbound_spi"], spis[peer], "edge {i}: {r}");
        }
        let text = f.edge(i).cli("show crypto ipsec sa").unwrap();
        for k in 0..f.colors(i).len() {
            assert!(
                text.contains(&format!("interface: {}", Fabric::tunnel_name(k))),
                "edge {i}:\n{text}"
            );
        }
    }

    ping_all_pairs(&f, &all, 5);

    // `request platform software sdwan security ipsec-rekey` on edge 3,
    // under traffic: both its TLOCs get a new SPI at once, the others learn
    // them, nothing is lost.
    let spis_of_3 = || -> Vec<u64> {
        let t = remote_tlocs(&f, 1);
        f.colors(3)
            .iter()
            .map(|c| {
                t[&(Fabric::system_ip(3), c.clone())]["spi"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    let before = spis_of_3();
    let echos = |i: usize| xdpsec_e2e::icmp_in_echos(&f.edge_ns[i - 1]);
    let echos0 = echos(3);
    let (pinged, rekeyed) = std::thread::scope(|s| {
        let p = s.spawn(|| f.ping(1, 3, 40, "0.05"));
        // The rekey once the pings flow: 10 echoes on edge 3 (of 40).
        xdpsec_e2e::wait_for(
            "10 echoes before the rekey",
            Duration::from_secs(10),
            || echos(3) >= echos0 + 10,
        );
        let r = f
            .edge(3)
            .cli_json("request platform software sdwan security ipsec-rekey")
            .unwrap();
        (p.join().unwrap(), r)
    });
    assert_eq!(pinged, (40, 40), "edge 1 -> edge 3 across a manual rekey");
    let rows = rekeyed["rekeyed"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rekeyed}");
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(r["tunnel"], Fabric::tunnel_name(k), "{rekeyed}");
        assert_eq!(r["old_spi"], before[k], "{rekeyed}");
        assert_ne!(r["new_spi"], r["old_spi"], "{rekeyed}");
    }
    let want: Vec<u64> = rows
        .iter()
        .map(|r| r["new_spi"].as_u64().unwrap())
        .collect();
    let learned = settle_for(
        want.clone(),
        Duration::ZERO,
        Duration::from_secs(3),
        spis_of_3,
    );
    assert_eq!(learned, want, "edge 1 learned edge 3's new SPIs");
    for k in 0..2 {
        assert_eq!(
            inbound_spis(&f, 3, k),
            [before[k], want[k]].into(),
            "edge 3's inbound SAs: the new one, and the old one for the grace time"
        );
    }
}

#[test]
fn timed_rekey_under_traffic_loses_nothing() {
    let timers = Timers {
        rekey_seconds: 4,
        rekey_grace_seconds: 3,
        ..Timers::fast()
    };
    let f = fabric(
        vec![
            EdgeSpec::new(&["biz-internet"]),
            EdgeSpec::new(&["biz-internet", "mpls"]),
        ],
        timers,
    );
    let all = [1, 2];
    f.wait_converged(&all, Duration::from_secs(20)).unwrap();
    // Drops while the fabric converged (a TLOC not yet learned) are not ours.
    for i in all {
        f.edge(i)
            .cli("clear platform hardware qfp active feature ipsec datapath drops")
            .unwrap();
    }
    let spis_seen_by = |i: usize| -> BTreeMap<(String, String), u64> {
        remote_tlocs(&f, i)
            .into_iter()
            .map(|(k, r)| (k, r["spi"].as_u64().unwrap_or(0)))
            .collect()
    };
    let before = (spis_seen_by(1), spis_seen_by(2));

    // 200 pings each way at 50 ms (10 s): two rekeys of every TLOC or more.
    let (a, b, seen) = std::thread::scope(|s| {
        let a = s.spawn(|| f.ping(1, 2, 200, "0.05"));
        let b = s.spawn(|| f.ping(2, 1, 200, "0.05"));
        // Every SPI each TLOC had while the pings ran, as the other edge learned it.
        let mut seen: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        while !(a.is_finished() && b.is_finished()) {
            for (k, spi) in spis_seen_by(1).into_iter().chain(spis_seen_by(2)) {
                seen.entry(k).or_default().insert(spi);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        (a.join().unwrap(), b.join().unwrap(), seen)
    });
    assert_eq!(a, (200, 200), "edge 1 -> edge 2 across rekeys");
    assert_eq!(b, (200, 200), "edge 2 -> edge 1 across rekeys");
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (tloc, spis) in &seen {
        assert!(
            spis.len() >= 3,
            "TLOC {tloc:?}: at least two rekeys during the pings, saw SPIs {spis:x?}"
        );
    }
    let after = (spis_seen_by(1), spis_seen_by(2));
    for (b, a) in [(&before.0, &after.0), (&before.1, &after.1)] {
        assert_eq!(b.len(), a.len());
        for (k, spi) in b {
            assert_ne!(a[k], *spi, "TLOC {k:?} kept its SPI across rekeys");
        }
    }
    for i in all {
        assert_eq!(
            drops(&f, i),
            BTreeMap::new(),
            "edge {i}: drops across rekeys"
        );
    }
    // The fabric is still whole.
    f.wait_converged(&all, Duration::from_secs(5)).unwrap();
}

#[test]
fn controller_restart_keeps_traffic_then_reconverges() {
    let mut f = fabric(three_edges(), Timers::fast());
    let all = [1, 2, 3];
    f.wait_converged(&all, Duration::from_secs(20)).unwrap();

    // 120 pings at 50 ms (6 s) each, across the outage and the restart.
    let pinger = |f: &Fabric, i: usize, j: usize| {
        let ns = f.edge_ns[i - 1].clone();
        std::thread::spawn(move || {
            xdpsec_e2e::ping(
                &ns,
                &Fabric::inside_ip(i),
                &Fabric::inside_ip(j),
                120,
                "0.05",
            )
        })
    };
    let echos = |i: usize| xdpsec_e2e::icmp_in_echos(&f.edge_ns[i - 1]);
    let echos0 = [echos(3), echos(2)];
    let p13 = pinger(&f, 1, 3);
    let p32 = pinger(&f, 3, 2);
    // The outage once both pings flow: 5 echoes on edges 3 and 2.
    xdpsec_e2e::wait_for(
        "5 echoes each way before the outage",
        Duration::from_secs(10),
        || echos(3) >= echos0[0] + 5 && echos(2) >= echos0[1] + 5,
    );
    f.stop_controller();
    let stopped = Instant::now();
    // Every edge sees its control connections go down...
    for i in all {
        let any_up = settle_for(false, Duration::ZERO, Duration::from_secs(2), || {
            f.control_state(i).iter().any(|(_, _, s)| s == "up")
        });
        assert!(
            !any_up,
            "edge {i}: control connections still up without a controller"
        );
    }
    // ... and keeps its tunnels (graceful restart): BFD stays up.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(stopped.elapsed()));
    for i in all {
        let down: Vec<_> = f
            .bfd_state(i)
            .into_iter()
            .filter(|(_, s)| s != "up")
            .collect();
        assert_eq!(
            down,
            vec![],
            "edge {i}: BFD sessions down during the outage"
        );
        assert_eq!(f.bfd_sessions(i).len(), f.expected_bfd(i, &all).len());
    }
    f.start_controller().expect("controller again");
    let outage = stopped.elapsed();
    assert_eq!(
        p13.join().unwrap(),
        (120, 120),
        "edge 1 -> edge 3 through the outage"
    );
    assert_eq!(
        p32.join().unwrap(),
        (120, 120),
        "edge 3 -> edge 2 through the outage"
    );
    assert!(outage >= Duration::from_secs(2), "{outage:?}");

    // Reconverged: every connection up again (edges back off 1, 2, 4 s).
    f.wait_converged(&all, Duration::from_secs(20)).unwrap();
    let c = f.ctrl().cli_json("show sdwan control connections").unwrap();
    let up = c["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "up")
        .count();
    assert_eq!(up, 4, "{c}");
    let t = f.ctrl().cli_json("show sdwan omp tlocs").unwrap();
    assert_eq!(t["tlocs"].as_array().unwrap().len(), 4, "{t}");
    ping_all_pairs(&f, &all, 3);
}

/// The rows of a `show sdwan control connection-history` text as Cisco's
/// genieparser (`ShowSdwanControlConnectionHistory`) reads them.
/// genieparser keys the rows by DOWNTIME (rows of the same second would
/// overwrite each other): each row is parsed on its own, under the header.
fn history_rows(text: &str) -> Vec<Value> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(dash) = lines.iter().position(|l| l.starts_with("-----")) else {
        return Vec::new();
    };
    let head = lines[..=dash].join("\n");
    let cases: Vec<Value> = lines[dash + 1..]
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| json!({ "connection_history": format!("{head}\n{l}\n") }))
        .collect();
    if cases.is_empty() {
        return Vec::new();
    }
    let g = xdpsec_e2e::genie_parse(&Value::Array(cases)).unwrap();
    let mut v = Vec::new();
    for c in g.as_array().unwrap() {
        let parsed = &c["connection_history"]["parsed"];
        for t in parsed["peer_type"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            for r in t["downtime"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                v.push(r.clone());
            }
        }
    }
    v
}

/// Each certificate check of the issue, refused on both sides with Cisco's
/// code: a `%SDWAN-3-` log line each side and a row in each side's
/// `show sdwan control connection-history` that Cisco's genieparser reads
/// (LOCAL ERROR on the side that found it, REMOTE ERROR on the other); the
/// refused edge retries with backoff (a growing REPEAT COUNT), never comes
/// up, learns nothing; the hijacker of edge 1's system-ip leaves edge 1's
/// connection untouched.
#[test]
fn refused_edges_get_ciscos_codes_on_both_sides() {
    let cases = [
        (2, Cert::ForeignCa, "CRTVERFL"),
        (3, Cert::Expired, "CERTEXPRD"),
        (4, Cert::OtherOrganization, "CTORGNMMIS"),
        (5, Cert::NotAllowed, "SERNTPRES"),
        (6, Cert::ClaimsSystemIpOf(1), "DUPSYSIPDEL"),
        (7, Cert::SystemIpChanged, "SYSIPCHNG"),
    ];
    let mut specs = vec![EdgeSpec::new(&["biz-internet"])];
    for (_, cert, _) in &cases {
        specs.push(EdgeSpec::new(&["lte"]).with_cert(cert.clone()));
    }
    let f = fabric(specs, Timers::fast());
    f.wait_converged(&[1], Duration::from_secs(20)).unwrap();
    let up_since = |f: &Fabric| -> u64 {
        let v = f.ctrl().cli_json("show sdwan control connections").unwrap();
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["system_ip"] == "192.0.2.1" && r["state"] == "up")
            .and_then(|r| r["uptime_seconds"].as_u64())
            .expect("edge 1 up on the controller")
    };
    let up0 = up_since(&f);
    // Every refused edge has retried at least once (backoff 1 s, 2 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let mut missing = Vec::new();
        let ctrl = f
            .ctrl()
            .cli("show sdwan control connection-history")
            .unwrap();
        let ctrl_rows = history_rows(&ctrl);
        for (i, _, code) in &cases {
            let ip = f.tloc_ip(*i, 0).to_string();
            // The controller: its own finding, LOCAL ERROR.
            if !ctrl_rows.iter().any(|r| {
                r["peer_private_ip"] == ip.as_str()
                    && r["local_error"] == *code
                    && r["remote_error"] == "NOERR"
            }) {
                missing.push(format!("controller row for edge {i} {code}"));
            }
            // The edge: the controller's finding, REMOTE ERROR, repeated.
            let text = f
                .edge(*i)
                .cli("show sdwan control connection-history")
                .unwrap();
            let rows = history_rows(&text);
            if !rows.iter().any(|r| {
                r["remote_error"] == *code
                    && r["local_error"] == "NOERR"
                    && r["local_color"] == "lte"
                    && r["repeat_count"]
                        .as_str()
                        .and_then(|c| c.parse::<u32>().ok())
                        >= Some(1)
            }) {
                missing.push(format!("edge {i} row {code} repeated:\n{text}"));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing: {missing:#?}\ncontroller:\n{ctrl}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Log lines on both sides, with the code.
    let ctrl_log = f.ctrl().cli("show logging").unwrap();
    for (i, _, code) in &cases {
        let edge_log = f.edge(*i).cli("show logging").unwrap();
        assert!(
            edge_log
                .lines()
                .any(|l| l.contains("%SDWAN-3-") && l.contains(code)),
            "edge {i}: no %SDWAN-3- line with {code}:\n{edge_log}"
        );
        assert!(
            ctrl_log.lines().any(|l| l.contains("%SDWAN-3-")
                && l.contains(code)
                && l.contains(&f.tloc_ip(*i, 0).to_string())),
            "controller: no %SDWAN-3- line with {code} for edge {i}:\n{ctrl_log}"
        );
        let conns = f.control_state(*i);
        assert!(
            !conns.iter().any(|(_, _, state)| state == "up"),
            "refused edge {i} is up: {conns:?}"
        );
        // Learned TLOCs only (the hijacker's own TLOC carries edge 1's
        // system-ip, so it is not filtered out as local by system-ip).
        let learned: Vec<Value> = remote_tlocs(&f, *i)
            .into_values()
            .filter(|t| t["status"] != "C,Red,R")
            .collect();
        assert_eq!(
            learned,
            Vec::<Value>::new(),
            "refused edge {i} learned TLOCs"
        );
    }
    // Edge 1 was never disturbed by the hijacker of its system-ip.
    assert!(up_since(&f) >= up0, "edge 1's connection was replaced");
    let ctrl_tlocs = f.ctrl().cli_json("show sdwan omp tlocs").unwrap();
    let tlocs = ctrl_tlocs["tlocs"].as_array().unwrap();
    assert_eq!(tlocs.len(), 1, "only edge 1's TLOC: {ctrl_tlocs}");
    assert_eq!(tlocs[0]["public_ip"], f.tloc_ip(1, 0).to_string().as_str());
}

#[test]
fn stopped_edge_is_withdrawn_after_the_hold_time() {
    let hold = Duration::from_secs(4);
    let mut f = fabric(
        three_edges(),
        Timers {
            controller_graceful_restart_seconds: hold.as_secs(),
            ..Timers::fast()
        },
    );
    let all = [1, 2, 3];
    f.wait_converged(&all, Duration::from_secs(20)).unwrap();
    let others = [1, 2];
    let gone_peers = [f.tloc_ip(3, 0).to_string(), f.tloc_ip(3, 1).to_string()];
    // What edge i still has of edge 3: (TLOCs, routes, BFD sessions, SA rows).
    let of_edge3 = |f: &Fabric, i: usize| -> (usize, usize, usize, usize) {
        (
            remote_tlocs(f, i)
                .keys()
                .filter(|(s, _)| s == "192.0.2.3")
                .count(),
            remote_routes(f, i)
                .iter()
                .filter(|(_, o)| o == "192.0.2.3")
                .count(),
            f.bfd_sessions(i)
                .iter()
                .filter(|r| r["system_ip"] == "192.0.2.3")
                .count(),
            sa_rows(f, i)
                .iter()
                .filter(|(_, p)| gone_peers.contains(p))
                .count(),
        )
    };
    for i in others {
        assert_eq!(of_edge3(&f, i), (2, 1, 2, 2), "edge {i} before");
    }

    f.stop_edge(3);
    // Until the controller's graceful-restart timer for edge 3 expires (its
    // log line, read after each sample: a sample followed by a log without
    // it was taken before the expiry), edges 1 and 2 keep edge 3's TLOCs
    // and route; BFD notices the edge gone meanwhile (600 ms). Then all of
    // it goes. Judged by that order, not by the test's own clock.
    let expired = || {
        f.ctrl()
            .cli("show logging")
            .unwrap()
            .contains("%SDWAN-5-OMP_GR_EXPIRED: OMP peer 192.0.2.3")
    };
    let bfd_down = |i: usize| {
        let s = f.bfd_state(i);
        let to3: Vec<_> = s.iter().filter(|(k, _)| k.0 == "192.0.2.3").collect();
        to3.len() == 2 && to3.iter().all(|(_, st)| st == "down")
    };
    let mut held_with_bfd_down = [false; 2];
    let deadline = Instant::now() + hold + Duration::from_secs(20);
    loop {
        let state: Vec<_> = others
            .iter()
            .map(|&i| (of_edge3(&f, i), bfd_down(i)))
            .collect();
        if !expired() {
            for (k, (i, (h, down))) in others.iter().zip(&state).enumerate() {
                assert_eq!(
                    (h.0, h.1),
                    (2, 1),
                    "edge {i}: edge 3's TLOCs and route withdrawn before the hold time expired"
                );
                held_with_bfd_down[k] |= *down;
            }
        } else if state.iter().all(|(h, _)| *h == (0, 0, 0, 0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edge 3 not withdrawn {:?} after it stopped: ((tlocs, routes, bfd, sas), bfd down) {state:?}",
            hold + Duration::from_secs(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        held_with_bfd_down, [true; 2],
        "BFD to the stopped edge down while its routes were held (edges 1, 2)"
    );
    // The hold lasted the configured time, by the controller's own stamps.
    let log = f.ctrl().cli("show logging").unwrap();
    let held = xdpsec_e2e::log_interval(
        &log,
        "%SDWAN-5-OMP_PEER_DOWN: OMP peer 192.0.2.3",
        "%SDWAN-5-OMP_GR_EXPIRED: OMP peer 192.0.2.3",
    )
    .unwrap_or_else(|| panic!("no PEER_DOWN and GR_EXPIRED lines for 192.0.2.3: {log}"));
    assert!(
        held + Duration::from_millis(50) >= hold,
        "withdrawn {held:?} after the peer went down, before the hold time"
    );
    // Edges 1 and 2 are untouched.
    f.wait_converged(&others, Duration::from_secs(3)).unwrap();
    assert_eq!(f.ping(1, 2, 3, "0.2"), (3, 3));
    assert_eq!(
        f.ping(2, 3, 2, "0.2"),
        (2, 0),
        "no route to the withdrawn edge"
    );
}

/// `cargo xtask lab up --sdwan` / `lab down` (here under a unique prefix):
/// the fabric outlives the call, answers and pings; `lab_down` stops its
/// processes and removes its namespaces.
#[test]
fn lab_up_leaves_a_fabric_running_and_lab_down_removes_it() {
    let prefix = format!("xsl{:x}", std::process::id() % 0xffff);
    // Removes the lab if an assertion below fails.
    struct Down<'a>(&'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            sdwan::lab_down(self.0);
        }
    }
    let _guard = Down(&prefix);
    sdwan::lab_up(&prefix, Timers::fast(), Duration::from_secs(20)).expect("lab up");
    let info = sdwan::lab_show(&prefix).expect("lab show");
    let ns = |n: &str| format!("{prefix}-{n}");
    for n in ["br", "vsmart", "edge1", "edge2", "edge3"] {
        assert!(info.contains(&ns(n)), "{n} in\n{info}");
    }
    // Each node's control socket, as printed, answers.
    let socks: Vec<String> = info
        .lines()
        .filter_map(|l| l.split("--socket ").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(socks.len(), 4, "{info}");
    for s in &socks {
        xdpsec_e2e::cli(std::path::Path::new(s), "show version", false).expect(s);
    }
    assert_eq!(
        xdpsec_e2e::ping(&ns("edge1"), "203.0.113.1", "203.0.113.3", 3, "0.2"),
        (3, 3)
    );
    let pids: Vec<i32> = ["vsmart", "edge1", "edge2", "edge3"]
        .iter()
        .flat_map(|n| {
            let o = std::process::Command::new("ip")
                .args(["netns", "pids", &ns(n)])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(|p| p.parse::<i32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(pids.len(), 4, "one xdpsec per node: {pids:?}");

    sdwan::lab_down(&prefix);
    for p in pids {
        // Gone, or a zombie of this test process (lab_up started them here).
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "pid {p} still runs: {stat}"
        );
    }
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&prefix), "{list}");
    for s in &socks {
        assert!(!std::path::Path::new(s).exists(), "{s} left behind");
    }
    assert!(sdwan::lab_show(&prefix).is_none());
}

/// Edge 1's packets to edge 3's two TLOCs, data and BFD apart, from one
/// `show sdwan tunnel statistics` (per peer: tx_pkts, and tx_octets of the
/// plaintext). Both kinds are encrypted on the same SA and counted in
/// tx_pkts; their sizes tell them apart: a data packet here is
/// [`DATA_LEN`] bytes, a BFD control packet in IPv4/UDP 52 (20 + 8 + 24,
/// RFC 5880 4.1 without authentication). `None` when the two counters of a
/// row were read across a packet (no whole solution): read again.
fn data_and_bfd(f: &Fabric, peers: [&str; 2]) -> Option<[(u64, u64); 2]> {
    const BFD_LEN: u64 = 52;
    let rows = f.rows(1, "show sdwan tunnel statistics", "tunnels");
    let mut out = [(0, 0); 2];
    for (o, peer) in out.iter_mut().zip(peers) {
        let (pkts, octets) = rows
            .iter()
            .find(|r| r["dest_ip"] == peer)
            .map_or((0, 0), |r| {
                (
                    r["tx_pkts"].as_u64().unwrap(),
                    r["tx_octets"].as_u64().unwrap(),
                )
            });
        // octets = DATA_LEN * data + BFD_LEN * bfd, pkts = data + bfd.
        let extra = octets.checked_sub(DATA_LEN * pkts)?;
        if extra % (BFD_LEN - DATA_LEN) != 0 || extra / (BFD_LEN - DATA_LEN) > pkts {
            return None;
        }
        let bfd = extra / (BFD_LEN - DATA_LEN);
        *o = (pkts - bfd, bfd);
    }
    Some(out)
}

/// Inner length of the test's data packets: IPv4 + UDP + 4 bytes.
const DATA_LEN: u64 = 20 + 8 + 4;

/// The data packets of [`data_and_bfd`] per path, once they total at
/// least `total` (a deadline of 5 s; then whatever was counted).
fn wait_data(f: &Fabric, peers: [&str; 2], total: u64) -> [u64; 2] {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = None;
    loop {
        if let Some([(a, _), (b, _)]) = data_and_bfd(f, peers) {
            last = Some([a, b]);
            if a + b >= total {
                return [a, b];
            }
        }
        if Instant::now() > deadline {
            return last.unwrap_or_else(|| {
                panic!(
                    "tx_pkts/tx_octets of {peers:?} never split into data and BFD: {:?}",
                    f.rows(1, "show sdwan tunnel statistics", "tunnels")
                )
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Equal-cost paths across colors: edge 1 reaches edge 3 through both of
/// edge 3's TLOCs (biz-internet and mpls), each flow on one of them; when
/// one path's BFD session goes down, every flow takes the other. Data
/// packets are counted apart from the BFD hellos sharing the SAs, exactly.
#[test]
fn flows_share_equal_cost_paths_across_colors_and_fail_over() {
    let f = fabric(three_edges(), Timers::fast());
    f.wait_converged(&[1, 2, 3], Duration::from_secs(20))
        .expect("fabric converges");
    let biz = f.tloc_ip(3, 0).to_string();
    let mpls = f.tloc_ip(3, 1).to_string();
    let peers = [biz.as_str(), mpls.as_str()];
    // Flow `port` (a UDP source port) from edge 1's inside address to edge
    // 3's: 5 packets of DATA_LEN bytes.
    let send_flows = |ports: std::ops::Range<u16>| {
        let src = Fabric::inside_ip(1);
        let dst = Fabric::inside_ip(3);
        Lab::in_ns(&f.edge_ns[0], move || {
            for port in ports {
                let s = std::net::UdpSocket::bind((src.as_str(), 40000 + port)).unwrap();
                for _ in 0..5 {
                    s.send_to(b"ecmp", (dst.as_str(), 9)).unwrap();
                }
            }
        })
        .unwrap();
    };
    // 64 flows, one at a time: each flow's 5 packets all on one path.
    let mut on = [0u32; 2];
    let mut total = wait_data(&f, peers, 0);
    for port in 0..64 {
        send_flows(port..port + 1);
        let now = wait_data(&f, peers, total[0] + total[1] + 5);
        let d = [now[0] - total[0], now[1] - total[1]];
        match d {
            [5, 0] => on[0] += 1,
            [0, 5] => on[1] += 1,
            _ => panic!(
                "flow {port}: its 5 packets went biz +{}, mpls +{}",
                d[0], d[1]
            ),
        }
        total = now;
    }
    assert!(
        on[0] >= 8 && on[1] >= 8,
        "both paths carry flows: biz {}, mpls {} of 64",
        on[0],
        on[1]
    );

    // The mpls path goes down (its SAs cleared on edge 1: no BFD): all
    // flows take biz-internet.
    f.edge(1)
        .cli(&format!("clear crypto sa peer {mpls}"))
        .expect("clear crypto sa peer");
    let down = settle_for(true, Duration::ZERO, Duration::from_secs(5), || {
        f.bfd_sessions(1)
            .iter()
            .any(|s| s["destination_ip"] == mpls.as_str() && s["state"] == "down")
    });
    assert!(
        down,
        "BFD to edge 3 mpls goes down: {:?}",
        f.bfd_sessions(1)
    );
    let before = wait_data(&f, peers, 0);
    send_flows(0..64);
    let after = wait_data(&f, peers, before[0] + before[1] + 320);
    assert_eq!(
        [after[0] - before[0], after[1] - before[1]],
        [320, 0],
        "every packet of every flow on biz-internet (biz, mpls)"
    );
    // Reachability over the remaining color; one echo in ten may be lost
    // on a loaded two-core machine (the exact per-path counts above are
    // the failover's proof).
    let (sent, got) = f.ping(1, 3, 10, "0.1");
    assert!(
        sent == 10 && got >= 9,
        "edge 1 -> edge 3 over biz-internet: {got} of {sent}"
    );
}

/// The controller's link, captured by tshark across a `clear sdwan control
/// connections` and a rekey (so every TLOC key crosses it while captured):
/// every TCP segment with a payload is TLS (tshark's dissector), a TLS 1.3
/// handshake was seen, and none of the SA keys the edges export for
/// Wireshark (`show crypto ipsec sa export wireshark`) appears anywhere in
/// the captured bytes.
#[test]
fn controller_link_carries_only_tls_and_no_key() {
    use std::process::Command;
    let f = fabric(three_edges(), Timers::fast());
    let all = [1, 2, 3];
    f.wait_converged(&all, Duration::from_secs(20)).unwrap();
    let dir = xdpsec_e2e::scratch_dir("tlscap");
    let cap = dir.join("controller.pcapng");
    let mut child = xdpsec_e2e::start_tshark(
        &f.controller_ns,
        &["-i", sdwan::EDGE_IF, "-f", "tcp port 23456"],
        &cap,
        60,
    );
    // Every connection reconnects (full TLS handshakes, every TLOC
    // re-advertised with its key), then new keys everywhere.
    for i in all {
        f.edge(i).cli("clear sdwan control connections").unwrap();
    }
    f.wait_converged(&all, Duration::from_secs(20)).unwrap();
    for i in all {
        f.edge(i)
            .cli("request platform software sdwan security ipsec-rekey")
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    f.wait_converged(&all, Duration::from_secs(20)).unwrap();
    // SAFETY: signalling the `timeout` we spawned; it passes SIGINT on.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    // The keys now in force, as Wireshark would be given them.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in all {
        let path = dir.join(format!("esp_sa{i}"));
        f.edge(i)
            .cli(&format!(
                "show crypto ipsec sa export wireshark {}",
                path.display()
            ))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for field in text.split('"') {
            if let Some(hex) = field.strip_prefix("0x")
                && hex.len() >= 32
            {
                let b: Vec<u8> = (0..hex.len() / 2)
                    .map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).unwrap())
                    .collect();
                keys.push(b);
            }
        }
    }
    assert!(
        keys.len() >= 12,
        "every edge's SAs exported: {} keys",
        keys.len()
    );
    let bytes = std::fs::read(&cap).unwrap();
    for k in &keys {
        // Any 12 bytes of a key would give it away; the first 12 stand in.
        assert!(
            !bytes.windows(12).any(|w| w == &k[..12]),
            "a key's bytes are in the capture"
        );
    }
    // tshark: every segment with a payload is TLS; TLS 1.3 handshakes seen.
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(&cap)
        .args(["-d", "tcp.port==23456,tls", "-T", "fields"])
        .args([
            "-e",
            "tcp.len",
            "-e",
            "frame.protocols",
            "-e",
            "tls.handshake.type",
            "-e",
            "tls.record.version",
            "-e",
            "tls.handshake.extensions.supported_version",
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    let rows: Vec<Vec<&str>> = shown.lines().map(|l| l.split('\t').collect()).collect();
    let payload: Vec<&Vec<&str>> = rows
        .iter()
        .filter(|r| r[0].parse::<u32>().unwrap_or(0) > 0)
        .collect();
    assert!(payload.len() > 20, "segments captured:\n{shown}");
    let not_tls: Vec<_> = payload.iter().filter(|r| !r[1].contains(":tls")).collect();
    assert!(not_tls.is_empty(), "not TLS: {not_tls:?}");
    let has_type = |r: &[&str], t: &str| r[2].split(',').any(|x| x == t);
    // A full handshake of the reconnections captured: its ClientHello, or
    // its ServerHello (tshark's start races the first reconnections on a
    // loaded machine: a run saw the ServerHellos and none of the
    // ClientHellos a few milliseconds before them).
    let hellos = rows
        .iter()
        .filter(|r| has_type(r, "1") || has_type(r, "2"))
        .count();
    assert!(
        hellos >= 1,
        "handshakes of the reconnections: {hellos}\n{shown}"
    );
    // TLS 1.3 negotiated: a ServerHello whose supported_versions extension
    // selects 0x0304 (RFC 8446 4.2.1), and every ClientHello offers it.
    assert!(
        rows.iter()
            .any(|r| has_type(r, "2") && r.get(4).is_some_and(|v| v.contains("0x0304"))),
        "no TLS 1.3 ServerHello:\n{shown}"
    );
    assert!(
        rows.iter()
            .filter(|r| has_type(r, "1"))
            .all(|r| r.get(4).is_some_and(|v| v.contains("0x0304"))),
        "a ClientHello without TLS 1.3:\n{shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Seconds of CPU (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field of the line, stime the 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Seconds edge `i`'s connections take to be up again after `clear sdwan
/// control connections`.
fn reconnect_time(f: &Fabric, i: usize) -> Duration {
    let t0 = Instant::now();
    f.edge(i).cli("clear sdwan control connections").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    while Instant::now() < t0 + Duration::from_secs(30) {
        let c = f.control_state(i);
        if !c.is_empty() && c.iter().all(|(_, _, s)| s == "up") {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// `n` TCP connections to the controller from edge `i`'s namespace (its
/// TLOC address), as many as connect within 2 s each; nothing sent.
fn open_to_controller(f: &Fabric, i: usize, n: usize) -> Vec<std::net::TcpStream> {
    use std::net::{SocketAddr, TcpStream};
    let target = SocketAddr::new(sdwan::CONTROLLER_IP.into(), sdwan::CONTROLLER_PORT);
    Lab::in_ns(&f.edge_ns[i - 1], || {
        (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok())
            .collect::<Vec<_>>()
    })
    .unwrap()
}

/// Connections that never finish their TLS handshake (two send nothing,
/// two stall after the first bytes of a ClientHello) are closed by the
/// controller after the handshake timeout (10 s), each counted in one
/// DHSTMO row of its connection history that genieparser reads (REPEAT
/// COUNT 3), while the log has one line for the source (rate-limited per
/// source).
#[test]
fn stalled_handshakes_are_dropped_with_dhstmo() {
    use std::io::{ErrorKind, Read, Write};
    let mut f = fabric(vec![EdgeSpec::new(&["biz-internet"])], Timers::fast());
    f.wait_converged(&[1], Duration::from_secs(20)).unwrap();
    // The edge's daemon goes: its namespace becomes the staller's.
    f.stop_edge(1);
    let ip = f.tloc_ip(1, 0).to_string();
    let t0 = Instant::now();
    let mut conns = open_to_controller(&f, 1, 4);
    assert_eq!(conns.len(), 4);
    for c in &mut conns[2..] {
        // A handshake record announcing 512 bytes, a ClientHello's first 11.
        c.write_all(&[0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3])
            .unwrap();
    }
    for (k, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
        let mut b = [0u8; 64];
        // A signal for another thread of this harness may interrupt the
        // read (EINTR): read again.
        let r = loop {
            match c.read(&mut b) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let t = t0.elapsed();
        assert!(
            matches!(&r, Ok(0)) || matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "connection {k}: {r:?} after {t:?}"
        );
        assert!(
            t >= Duration::from_secs(9),
            "connection {k} closed after {t:?}, before the handshake timeout"
        );
    }
    let text = f
        .ctrl()
        .cli("show sdwan control connection-history")
        .unwrap();
    let rows = history_rows(&text);
    let count = |r: &Value| {
        r["repeat_count"]
            .as_u64()
            .or_else(|| r["repeat_count"].as_str().and_then(|c| c.parse().ok()))
    };
    assert!(
        rows.iter().any(|r| r["peer_private_ip"] == ip.as_str()
            && r["local_error"] == "DHSTMO"
            && r["remote_error"] == "NOERR"
            && count(r) == Some(3)),
        "no DHSTMO row for {ip} repeated 3 times:\n{text}\n{rows:#?}"
    );
    let log = f.ctrl().cli("show logging").unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("%SDWAN-3-") && l.contains("DHSTMO") && l.contains(&ip))
        .collect();
    assert_eq!(lines.len(), 1, "DHSTMO lines for {ip}:\n{log}");
}

/// 500 idle TCP connections to the controller (never a ClientHello), held
/// from edge 2's namespace: a real edge's `clear sdwan control connections`
/// reconnects within 10 s, the controller uses under 20% of a core
/// meanwhile, and says what it refused. Then with its file limit lowered
/// below what the idle connections need, accept() fails (EMFILE): the
/// controller pauses its listener instead of spinning (CPU again under
/// 20%), logs it, keeps answering, and edge 1 still reconnects once the
/// idle connections are gone.
#[test]
fn idle_connections_and_the_file_limit_leave_real_edges_served() {
    let mut f = fabric(
        vec![
            EdgeSpec::new(&["biz-internet"]),
            EdgeSpec::new(&["biz-internet"]),
        ],
        Timers::fast(),
    );
    f.wait_converged(&[1, 2], Duration::from_secs(20)).unwrap();
    // Edge 2's daemon goes: its namespace becomes the attacker's.
    f.stop_edge(2);
    let pid = f.controller.as_ref().unwrap().pid().unwrap();
    let open_idle = |n: usize| open_to_controller(&f, 2, n);
    let fd_count = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let rest_fds = fd_count();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let idle = open_idle(500);
    assert!(idle.len() >= 400, "{} connections opened", idle.len());
    let took = reconnect_time(&f, 1);
    assert!(
        took < Duration::from_secs(10),
        "edge 1 reconnected in {took:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let share = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    eprintln!(
        "500 idle connections: edge 1 reconnected in {took:?}, controller CPU {:.1}% of a core",
        share * 100.0
    );
    assert!(
        share < 0.2,
        "controller used {:.0}% of a core",
        share * 100.0
    );
    let log = f.ctrl().cli("show logging").unwrap();
    assert!(log.contains("%SDWAN-4-CONTROL_CONN_LIMIT"), "{log}");
    drop(idle);

    // The file limit: a few descriptors above what the controller holds at
    // rest, fewer than the 8 handshakes it lets one source have. Counted
    // once it has seen the idle connections close: counted while some of
    // their sockets were still open, the slack was 8 or more and accept()
    // never failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count() > rest_fds && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let fds = fd_count();
    assert!(
        fds <= rest_fds,
        "the controller still holds {fds} descriptors, {rest_fds} before the idle connections"
    );
    let limit = fds + 4;
    let soft = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            "--nofile",
            "--output",
            "SOFT",
            "--noheadings",
        ])
        .output()
        .unwrap();
    let soft = String::from_utf8_lossy(&soft.stdout).trim().to_string();
    // The soft limit only: a lowered hard limit could not be raised again
    // without CAP_SYS_RESOURCE.
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .status()
        .unwrap();
    assert!(st.success(), "prlimit");
    let cpu1 = cpu_seconds(pid);
    let t1 = Instant::now();
    let idle = open_idle(50);
    std::thread::sleep(Duration::from_secs(4));
    let share = (cpu_seconds(pid) - cpu1) / t1.elapsed().as_secs_f64();
    eprintln!(
        "at the file limit: controller CPU {:.1}% of a core",
        share * 100.0
    );
    assert!(
        share < 0.2,
        "at the file limit the controller used {:.0}% of a core",
        share * 100.0
    );
    // The idle connections go (their descriptors come back), then the
    // controller answers and tells what happened.
    drop(idle);
    std::thread::sleep(Duration::from_secs(1));
    let log = f.ctrl().cli("show logging").unwrap();
    assert!(
        log.contains("%SDWAN-4-CONTROL_ACCEPT_FAIL"),
        "no accept failure logged:\n{log}"
    );
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .unwrap();
    assert!(st.success(), "prlimit");
    // Idle connections closed by the peer (and by the handshake timeout).
    std::thread::sleep(Duration::from_secs(1));
    let took = reconnect_time(&f, 1);
    assert!(
        took < Duration::from_secs(10),
        "edge 1 reconnected in {took:?} after the limit"
    );
}

/// The edge checks the controller as the controller checks edges: a
/// controller certificate of another organization (CTORGNMMIS), from
/// another CA (CRTVERFL), or an edge's certificate posing as the
/// controller (CRTVERFL: wrong role and key usage) is refused by the edge,
/// its LOCAL ERROR in the edge's connection history and the same code as
/// REMOTE ERROR in the controller's, `%SDWAN-3-` lines on both sides.
#[test]
fn edges_refuse_a_wrong_controller_with_ciscos_codes() {
    let mut f = fabric(vec![EdgeSpec::new(&["biz-internet"])], Timers::fast());
    f.wait_converged(&[1], Duration::from_secs(20)).unwrap();
    let p = f.pki_dir().to_path_buf();
    let d = |s: &str| p.join(s).display().to_string();
    let ctl_ip = sdwan::CONTROLLER_IP.to_string();
    let device = |ca: &str, org: &str, role: &str, out: &str| {
        sdwan::pki(&[
            "device",
            "--ca",
            &d(ca),
            "--organization",
            org,
            "--serial",
            "C0FFEE",
            "--system-ip",
            &ctl_ip,
            "--role",
            role,
            "--out",
            &d(out),
        ])
        .unwrap();
    };
    sdwan::pki(&[
        "ca",
        "--organization",
        sdwan::ORGANIZATION,
        "--out",
        &d("rogue-ca"),
    ])
    .unwrap();
    device("ca", "another-org", "controller", "ctl-org");
    device("rogue-ca", sdwan::ORGANIZATION, "controller", "ctl-ca");
    device("ca", sdwan::ORGANIZATION, "edge", "ctl-edge");
    for (dir, code) in [
        ("ctl-org", "CTORGNMMIS"),
        ("ctl-ca", "CRTVERFL"),
        ("ctl-edge", "CRTVERFL"),
    ] {
        f.stop_controller();
        let cfg = f
            .controller_config()
            .replace("/vsmart/device.", &format!("/{dir}/device."));
        f.controller = Some(
            xdpsec_e2e::controller::Controller::start(&f.controller_ns, &cfg).expect("controller"),
        );
        let found = settle_for(true, Duration::ZERO, Duration::from_secs(40), || {
            let e = f
                .edge(1)
                .cli_json("show sdwan control connection-history")
                .unwrap();
            let c = f
                .ctrl()
                .cli_json("show sdwan control connection-history")
                .unwrap();
            let has = |v: &Value, local: &str, remote: &str| {
                v["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["local_error"] == local && r["remote_error"] == remote)
            };
            has(&e, code, "NOERR") && has(&c, "NOERR", code)
        });
        let e = f
            .edge(1)
            .cli("show sdwan control connection-history")
            .unwrap();
        let c = f
            .ctrl()
            .cli("show sdwan control connection-history")
            .unwrap();
        assert!(
            found,
            "{dir}: {code} not on both sides:\nedge:\n{e}\ncontroller:\n{c}"
        );
        let el = f.edge(1).cli("show logging").unwrap();
        assert!(
            el.lines()
                .any(|l| l.contains("%SDWAN-3-") && l.contains(code)),
            "{dir}: edge log:\n{el}"
        );
        let cl = f.ctrl().cli("show logging").unwrap();
        assert!(
            cl.lines()
                .any(|l| l.contains("%SDWAN-3-") && l.contains(code)),
            "{dir}: controller log:\n{cl}"
        );
        let conns = f.control_state(1);
        assert!(
            !conns.iter().any(|(_, _, s)| s == "up"),
            "{dir}: up: {conns:?}"
        );
        // The edge log per case: the next case finds its own lines (the
        // controller is a new process each time, its history fresh).
        f.edge(1).cli("clear logging").unwrap();
    }
}
