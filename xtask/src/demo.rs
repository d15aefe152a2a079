//! `cargo xtask demo`: the lab, xdpsec receiving steered ESP and printing its
//! counters, while ping and IKE still reach the kernel.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use anyhow::{Result, ensure};
use xdpsec_e2e::{
    Daemon, Lab, base_config,
    frames::{PacketSocket, RawListener, esp, ipv4, ipv6, udp, udp_count, udp_listener},
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
    step("lab down");
    drop(lab);
    println!("demo ok");
    Ok(())
}
