//! `cargo xtask demo --steering`: the two-namespace lab, xdpsec receiving
//! steered ESP and printing its counters while ping and IKE still reach the
//! kernel, then a manual tunnel broken by a one-sided rekey and repaired.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use anyhow::{Result, ensure};
use xdpsec_e2e::{
    Daemon, Lab, base_config,
    frames::{PacketSocket, RawListener, esp, ipv4, ipv6, udp, udp_count, udp_listener},
    tunnel::{BASE, Case, KEY_A, KEY_C, inner_addrs, tunnel_config},
};

fn step(s: &str) {
    println!("\n==> {s}");
}

pub fn run() -> Result<()> {
    let bin = crate::build_xdpsec()?;
    // SAFETY: no other thread runs yet; the harness reads XDPSEC_BIN to find the binary.
    unsafe { std::env::set_var("XDPSEC_BIN", &bin) };

    step("lab up: two namespaces joined by a veth pair");
    let lab = Lab::default_names().up(1)?;
    lab.print();

    step(&format!("xdpsec run in {} on {}", lab.ns1, lab.if1));
    let daemon = Daemon::start(&lab.ns1, &base_config("edge1", &lab.if1, lab.v4[0], 1))?;
    let attached = Lab::exec(&lab.ns1, &["ip", "-d", "link", "show", &lab.if1])?;
    for l in String::from_utf8_lossy(&attached.stdout).lines() {
        if l.contains("prog/xdp") {
            println!("{}", l.trim());
        }
    }

    let (IpAddr::V4(s4), IpAddr::V4(d4)) = (lab.v4[1], lab.v4[0]) else {
        unreachable!()
    };
    let (IpAddr::V6(s6), IpAddr::V6(d6)) = (lab.v6[1], lab.v6[0]) else {
        unreachable!()
    };
    let tx = PacketSocket::open(&lab.ns2, &lab.if2, &lab.ns1, &lab.if1)?;
    let raw_esp = RawListener::open(&lab.ns1, 50, false)?;
    let ike = udp_listener(&lab.ns1, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 500)?;

    step(&format!(
        "from {}: 10 ESP/IPv4, 10 ESP/IPv6, 10 UDP-ESP to 4500, 10 UDP-ESP to 12346",
        lab.ns2
    ));
    let body = esp(0x215e_bff1, 1, &[0xab; 64]);
    for seq in 1..=10u32 {
        let e = esp(0x215e_bff1, seq, &[0xab; 64]);
        tx.send_v4(&ipv4(s4, d4, 50, &[], 0, &e))?;
        tx.send_v6(&ipv6(s6, d6, &[], 50, &e))?;
        for port in [4500, 12346] {
            tx.send_v4(&ipv4(
                s4,
                d4,
                17,
                &[],
                0,
                &udp(lab.v4[1], lab.v4[0], 4500, port, &body),
            ))?;
        }
    }
    step("and non-ESP traffic: ping, 3 IKE datagrams on UDP 500");
    let ping = Lab::exec(
        &lab.ns2,
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            &lab.v4[0].to_string(),
        ],
    )?;
    print!("{}", String::from_utf8_lossy(&ping.stdout));
    for _ in 0..3 {
        tx.send_v4(&ipv4(
            s4,
            d4,
            17,
            &[],
            0,
            &udp(lab.v4[1], lab.v4[0], 500, 500, &[0x21; 40]),
        ))?;
    }
    let kernel_esp = raw_esp.count(Duration::from_millis(300));
    let kernel_ike = udp_count(&ike, Duration::ZERO);

    step("xdpsec# show platform hardware qfp active statistics");
    print!(
        "{}",
        daemon
            .cli("show platform hardware qfp active statistics")
            .map_err(anyhow::Error::msg)?
    );
    println!(
        "\nkernel raw ESP socket in {} received: {kernel_esp} packets (ESP went to userspace)",
        lab.ns1
    );
    println!("kernel UDP socket on port 500 received: {kernel_ike} IKE datagrams (untouched)");
    ensure!(ping.status.success(), "ping through the XDP program failed");
    ensure!(
        kernel_esp == 0 && kernel_ike == 3,
        "unexpected kernel deliveries"
    );
    let v = daemon.cli_json("show platform hardware qfp active statistics")?;
    let steered: u64 = ["steered_esp_v4", "steered_esp_v6", "steered_udp_esp_v4"]
        .iter()
        .map(|k| v["xdp"][k].as_u64().unwrap_or(0))
        .sum();
    ensure!(steered == 40, "expected 40 steered frames, saw {steered}");

    step("stop xdpsec (SIGINT): the XDP program is detached");
    drop(daemon);
    ensure!(
        !Lab::xdp_attached(&lab.ns1, &lab.if1),
        "XDP program still attached"
    );
    println!("no XDP program on {} any more", lab.if1);

    tunnel_demo(&lab)?;

    step("lab down");
    drop(lab);
    println!("\ndemo ok");
    Ok(())
}

fn show(node: &str, d: &Daemon, cmd: &str) -> Result<String> {
    println!("\n{node}#{cmd}");
    let out = d.cli(cmd).map_err(anyhow::Error::msg)?;
    print!("{out}");
    Ok(out)
}

fn ping(lab: &Lab, count: &str) -> Result<bool> {
    let [a, b] = inner_addrs(false);
    println!("\n{}$ ping -c {count} -I {a} {b}", lab.ns1);
    let out = Lab::exec(
        &lab.ns1,
        &["ping", "-c", count, "-i", "0.2", "-W", "1", "-I", a, b],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text
        .lines()
        .filter(|l| l.contains("transmitted") || l.contains("bytes from"))
    {
        println!("{l}");
    }
    Ok(out.status.success())
}

/// Two xdpsec nodes, a manual AES-256-GCM tunnel over UDP 12346 (the SD-WAN
/// data-plane port): traffic passes; then edge2 rekeys its outbound SA
/// alone, edge1 sees an SPI it does not know (the seed's fault: invalid-SPI
/// drops and the IOS log line); rekeying edge1 to match recovers it.
fn tunnel_demo(lab: &Lab) -> Result<()> {
    let case = Case {
        udp: Some(12346),
        ..BASE
    };
    step(
        "two xdpsec nodes, a manual tunnel (AES-256-GCM in UDP 12346) between 203.0.113.1 and 203.0.113.2",
    );
    let d1 = Daemon::start(&lab.ns1, &tunnel_config(lab, 0, &case))?;
    let d2 = Daemon::start(&lab.ns2, &tunnel_config(lab, 1, &case))?;
    ensure!(ping(lab, "3")?, "ping across the tunnel failed");
    show(
        "edge1",
        &d1,
        &format!("show crypto ipsec sa peer {}", lab.v4[1]),
    )?;

    // A new SPI always comes with a new key: AEAD nonces (the sequence
    // numbers) must never repeat under one key, and the peer restarts them.
    let (old_sa, new_sa) = (
        format!("spi = 0x1001\nkey = \"{KEY_A}\""),
        format!("spi = 0x2002\nkey = \"{KEY_C}\""),
    );
    step(
        "fault: edge2 alone rekeys its outbound SA (SPI 0x2002, new key); edge1 does not know that SPI",
    );
    let cfg2 = std::fs::read_to_string(&d2.config)?;
    ensure!(
        cfg2.contains(&old_sa),
        "edge2's outbound SA is not in its config"
    );
    std::fs::write(&d2.config, cfg2.replace(&old_sa, &new_sa))?;
    show("edge2", &d2, "request platform software xdpsec reload")?;
    ensure!(
        !ping(lab, "3")?,
        "ping should fail while the SAs are out of sync"
    );
    // Every dropped frame counted (the datapath drained) before the show.
    xdpsec_e2e::drain(&[&d1]);
    let drops = show(
        "edge1",
        &d1,
        "show platform hardware qfp active feature ipsec datapath drops",
    )?;
    ensure!(
        drops.contains("IN_US_V4_PKT_SA_NOT_FOUND_SPI"),
        "no invalid-SPI drops counted"
    );
    let log = show("edge1", &d1, "show logging")?;
    ensure!(
        log.contains("%CRYPTO-4-RECVD_PKT_INV_SPI"),
        "no %CRYPTO-4-RECVD_PKT_INV_SPI line"
    );

    step("recovery: edge1 takes the new SPI and key (as a rekey would); traffic passes again");
    let cfg1 = std::fs::read_to_string(&d1.config)?;
    ensure!(
        cfg1.contains(&old_sa),
        "edge1's inbound SA is not in its config"
    );
    std::fs::write(&d1.config, cfg1.replace(&old_sa, &new_sa))?;
    show("edge1", &d1, "request platform software xdpsec reload")?;
    ensure!(ping(lab, "3")?, "ping after recovery failed");
    show(
        "edge1",
        &d1,
        "show platform hardware qfp active feature ipsec datapath drops",
    )?;
    Ok(())
}
