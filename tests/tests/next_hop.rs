//! Next hops from rtnetlink: two xdpsec nodes whose underlay addresses are
//! reached through a gateway route (IPv4 gateway; IPv6 link-local gateway,
//! `via fe80::2 dev X`) ping across a manual tunnel, and the daemons never
//! run `ip` to find their next hops.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use xdpsec_e2e::{
    Daemon, Lab, scratch_dir,
    tunnel::{BASE, Case, inner_addrs, tunnel_config},
    wait_for,
};

/// Run `ip` inside `ns` (through `ip -n`), failing the test on error.
fn ip_in(ns: &str, args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {ns} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory with an `ip` that logs its arguments to `ip.log`, then runs the real one.
fn logging_ip(dir: &Path) -> (PathBuf, PathBuf) {
    let real = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("ip"))
                .find(|p| p.is_file())
        })
        .expect("ip (iproute2) on PATH");
    let log = dir.join("ip.log");
    let script = dir.join("ip");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["755"])
        .arg(&script)
        .status()
        .unwrap();
    (dir.to_path_buf(), log)
}

fn ip_calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Both nodes: underlay address on `lo`, the peer's reached via `gw[i]` on the veth.
fn gateway_lab(v6: bool) -> (Lab, [&'static str; 2]) {
    let lab = Lab::unique().up(1).unwrap();
    let (addrs, gws, plen) = if v6 {
        // Each node's veth also gets a short link-local address (nodad, so
        // it is usable at once); the routes name the other's as gateway.
        // A second interface whose fe80::/64 route is preferred, as on any
        // host with more than one interface, makes an unscoped lookup of
        // fe80::2 go the wrong way: only the interface index finds it.
        for (ns, ifname, ll) in [
            (&lab.ns1, &lab.if1, "fe80::1/64"),
            (&lab.ns2, &lab.if2, "fe80::2/64"),
        ] {
            ip_in(ns, &["-6", "addr", "add", ll, "dev", ifname, "nodad"]);
            // (A veth pair inside the namespace: there is no dummy driver here.)
            ip_in(
                ns,
                &[
                    "link", "add", "xsother0", "type", "veth", "peer", "name", "xsother1",
                ],
            );
            ip_in(ns, &["link", "set", "xsother1", "up"]);
            ip_in(ns, &["link", "set", "xsother0", "up"]);
            ip_in(
                ns,
                &[
                    "-6",
                    "route",
                    "add",
                    "fe80::/64",
                    "dev",
                    "xsother0",
                    "metric",
                    "1",
                ],
            );
        }
        (
            ["2001:db8:300::1", "2001:db8:300::2"],
            ["fe80::1", "fe80::2"],
            "128",
        )
    } else {
        // The /32s are inside the connected 198.51.100.0/24: the longer
        // gateway route must win. arp_ignore=1 keeps a node from answering
        // ARP for its lo address on the veth, so assuming on-link fails.
        for ns in [&lab.ns1, &lab.ns2] {
            let out = Lab::exec(ns, &["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"]).unwrap();
            assert!(out.status.success());
        }
        (
            ["198.51.100.201", "198.51.100.202"],
            ["198.51.100.1", "198.51.100.2"],
            "32",
        )
    };
    for (i, (ns, ifname)) in [(&lab.ns1, &lab.if1), (&lab.ns2, &lab.if2)]
        .into_iter()
        .enumerate()
    {
        ip_in(
            ns,
            &["addr", "add", &format!("{}/{plen}", addrs[i]), "dev", "lo"],
        );
        ip_in(
            ns,
            &[
                "route",
                "add",
                &format!("{}/{plen}", addrs[1 - i]),
                "via",
                gws[1 - i],
                "dev",
                ifname,
            ],
        );
    }
    (lab, addrs)
}

/// Completed next-hop refresh passes (`show platform hardware qfp active statistics`).
fn next_hop_refreshes(d: &Daemon) -> u64 {
    d.cli_json("show platform hardware qfp active statistics")
        .unwrap()["next_hop_refreshes"]
        .as_u64()
        .expect("next_hop_refreshes in show platform hardware qfp active statistics --json")
}

fn sa_counts(d: &Daemon) -> (Option<u64>, Option<u64>) {
    let v = d.cli_json("show crypto ipsec sa").unwrap();
    let s = &v["sas"][0];
    (s["pkts_encaps"].as_u64(), s["pkts_decaps"].as_u64())
}

#[test]
fn peers_behind_ipv4_and_ipv6_link_local_gateways_are_reached_without_running_ip() {
    for v6 in [false, true] {
        let c = Case {
            v6_outer: v6,
            ..BASE
        };
        let (lab, addrs) = gateway_lab(v6);
        let dir = scratch_dir("nexthop");
        let (bin, ip_log) = logging_ip(&dir);
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let outer = if v6 { lab.v6 } else { lab.v4 };
        let config = |side: usize| {
            tunnel_config(&lab, side, &c)
                .replace(
                    &format!("address = \"{}\"", outer[side]),
                    &format!("address = \"{}\"", addrs[side]),
                )
                .replace(
                    &format!("peer = \"{}\"", outer[1 - side]),
                    &format!("peer = \"{}\"", addrs[1 - side]),
                )
        };
        let d1 = Daemon::start_with_env(&lab.ns1, &config(0), &[("PATH", &path)]).unwrap();
        let d2 = Daemon::start_with_env(&lab.ns2, &config(1), &[("PATH", &path)]).unwrap();
        let started = ip_calls(&ip_log);
        let inner = inner_addrs(false);
        let out = Lab::exec(
            &lab.ns1,
            &[
                "ping", "-c", "4", "-i", "0.2", "-W", "2", "-I", inner[0], inner[1],
            ],
        )
        .unwrap();
        assert!(
            out.status.success(),
            "v6 {v6}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            d1.log_text()
        );
        for d in [&d1, &d2] {
            assert_eq!(sa_counts(d), (Some(4), Some(4)), "v6 {v6}");
        }
        // The ESP went to the gateway's MAC through the kernel's neighbour
        // entry (on the interface, by index: fe80:: has no global meaning).
        let neigh = Lab::exec(&lab.ns1, &["ip", "neigh", "show", "dev", &lab.if1]).unwrap();
        let neigh = String::from_utf8_lossy(&neigh.stdout);
        let gw = if v6 { "fe80::2 " } else { "198.51.100.2 " };
        assert!(neigh.contains(gw), "v6 {v6}: {neigh}");
        // At least two periodic refreshes (every 2 s) on each node run after
        // this point: none runs `ip`, and neither did the start-up resolution.
        let at = [&d1, &d2].map(next_hop_refreshes);
        for (d, at) in [&d1, &d2].into_iter().zip(at) {
            wait_for(
                &format!("v6 {v6}: two next-hop refreshes after {at}"),
                Duration::from_secs(20),
                || next_hop_refreshes(d) >= at + 2,
            );
        }
        let calls = ip_calls(&ip_log);
        assert_eq!(calls, started, "v6 {v6}: ip run after start-up");
        assert!(
            !calls
                .iter()
                .any(|c| c.contains("neigh") || c.contains("route get")),
            "v6 {v6}: {calls:?}"
        );
        assert!(
            calls.iter().any(|c| c.starts_with("netns exec")),
            "the logging ip was not used: {calls:?}"
        );
        drop((d1, d2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
