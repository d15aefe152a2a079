//! TUN offloads end to end (issue 20): a TCP transfer of a known file
//! between two xdpsec nodes across a manual tunnel, checked by hash, with
//! the segmentation visible in the counters (super-packets read from the
//! TUN and the segments sealed from them on the sender, super-packets
//! written on the receiver), every segment one ESP packet; and the same
//! transfer with `[inside] offloads = false`, where those counters stay 0.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use xdpsec_e2e::{
    Daemon, Lab,
    gateway::{GatewayLab, HOST_A, HOST_B},
    py_command, py_report, queue_counter, scratch_dir,
    tunnel::{BASE, Case, inner_addrs, scapy_peer_config, tunnel_config},
};

/// Bytes sent: a deterministic file of 8 MiB.
const SIZE: usize = 8 << 20;

/// The file both sides hash: Python's Random(20) bytes.
const DATA: &str = "import random; data = random.Random(20).randbytes(SIZE)";

fn encaps(d: &Daemon) -> u64 {
    let s = d.cli_json("show crypto ipsec sa").unwrap();
    s["sas"][0]["pkts_encaps"]
        .as_u64()
        .unwrap_or_else(|| panic!("{s}"))
}

/// Send the file from node 1 to node 2 over TCP through the tunnel;
/// returns (sha256 sent, sha256 and length received).
fn transfer(lab: &Lab, v6: bool) -> (String, String) {
    let [src, dst] = inner_addrs(v6);
    send_file([&lab.ns1, src], [&lab.ns2, dst], v6)
}

/// Send the file over TCP from `client` (namespace, address) to `server`.
fn send_file(client: [&str; 2], server: [&str; 2], v6: bool) -> (String, String) {
    let ([cns, src], [sns, dst]) = (client, server);
    let fam = if v6 { "AF_INET6" } else { "AF_INET" };
    let server = format!(
        "import socket, hashlib\n\
         s = socket.socket(socket.{fam}, socket.SOCK_STREAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{dst}', 5201)); s.listen(1); s.settimeout(20)\n\
         c, _ = s.accept(); c.settimeout(20)\n\
         h = hashlib.sha256(); n = 0\n\
         while True:\n\
         \x20   b = c.recv(1 << 20)\n\
         \x20   if not b: break\n\
         \x20   h.update(b); n += len(b)\n\
         print(h.hexdigest(), n)\n"
    );
    let client = format!(
        "import socket, hashlib, time\nSIZE = {SIZE}\n{DATA}\n\
         for i in range(50):\n\
         \x20   try:\n\
         \x20       s = socket.create_connection(('{dst}', 5201), timeout=20, source_address=('{src}', 0)); break\n\
         \x20   except OSError: time.sleep(0.1)\n\
         for i in range(0, SIZE, 65536): s.sendall(data[i:i + 65536])\n\
         s.close()\n\
         print(hashlib.sha256(data).hexdigest(), SIZE)\n"
    );
    let srv = Command::new("ip")
        .args(["netns", "exec", sns, "timeout", "40", "python3", "-c"])
        .arg(&server)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sent = Lab::exec(cns, &["timeout", "40", "python3", "-c", &client]).unwrap();
    let got = srv.wait_with_output().unwrap();
    assert!(
        sent.status.success(),
        "client: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(
        got.status.success(),
        "server: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    (
        String::from_utf8_lossy(&sent.stdout).trim().to_string(),
        String::from_utf8_lossy(&got.stdout).trim().to_string(),
    )
}

fn config(lab: &Lab, side: usize, c: &Case, offloads: bool) -> String {
    tunnel_config(lab, side, c).replace(
        "[inside]\nmode = \"tun\"\n",
        &format!("[inside]\nmode = \"tun\"\noffloads = {offloads}\n"),
    )
}

#[test]
fn tcp_through_the_tunnel_with_offloads_is_segmented_coalesced_and_intact() {
    for v6 in [false, true] {
        let c = Case {
            v6_inner: v6,
            ..BASE
        };
        let lab = Lab::unique().up(1).unwrap();
        let d1 = Daemon::start(&lab.ns1, &config(&lab, 0, &c, true)).unwrap();
        let d2 = Daemon::start(&lab.ns2, &config(&lab, 1, &c, true)).unwrap();
        assert!(
            d1.log_text().contains("offloads on (checksum, TSO4, TSO6"),
            "{}",
            d1.log_text()
        );
        let (sent, got) = transfer(&lab, v6);
        assert_eq!(sent, got, "v6 {v6}: the file arrives intact");
        let (supers, segments) = (
            queue_counter(&d1, "tun_gso_rx"),
            queue_counter(&d1, "gso_segments"),
        );
        // 8 MiB in writes of 64 KB: the sender's kernel hands over
        // super-packets, each cut into several segments.
        assert!(supers > 0, "v6 {v6}: super-packets read");
        assert!(
            segments >= 2 * supers && segments as usize >= SIZE / 1376 / 4,
            "v6 {v6}: {segments} segments from {supers} super-packets"
        );
        // Each segment is one ESP packet (plus the packets read whole:
        // the handshake, and whatever the kernel did not aggregate).
        let tun_rx = queue_counter(&d1, "tun_rx");
        assert_eq!(
            encaps(&d1),
            tun_rx - supers + segments,
            "v6 {v6}: one encap per segment and per other packet"
        );
        // The receiver wrote coalesced super-packets; tun_tx still counts
        // every decrypted packet.
        let written = queue_counter(&d2, "tun_gro_tx");
        eprintln!(
            "v6 {v6}: sender tun_rx {tun_rx}, tun_gso_rx {supers}, gso_segments {segments}; receiver tun_tx {}, tun_gro_tx {written}",
            queue_counter(&d2, "tun_tx")
        );
        assert!(written > 0, "v6 {v6}: super-packets written");
        let s = d2.cli_json("show crypto ipsec sa").unwrap();
        assert_eq!(
            s["sas"][0]["pkts_decaps"].as_u64(),
            Some(queue_counter(&d2, "tun_tx")),
            "v6 {v6}: every decrypted packet written"
        );
    }
}

#[test]
fn offloads_off_reads_and_writes_one_packet_at_a_time() {
    let lab = Lab::unique().up(1).unwrap();
    let d1 = Daemon::start(&lab.ns1, &config(&lab, 0, &BASE, false)).unwrap();
    let d2 = Daemon::start(&lab.ns2, &config(&lab, 1, &BASE, false)).unwrap();
    let (sent, got) = transfer(&lab, false);
    assert_eq!(sent, got);
    for d in [&d1, &d2] {
        for k in ["tun_gso_rx", "gso_segments", "tun_gro_tx"] {
            assert_eq!(queue_counter(d, k), 0, "{k}");
        }
    }
    assert_eq!(encaps(&d1), queue_counter(&d1, "tun_rx"));
    assert!(!d1.log_text().contains("offloads on"));
}

/// Gateway mode: hosts with MTU 1500 behind gateways whose inside room
/// after ESP is 1376. TCP from hostA arrives in packets too large for the
/// tunnel; each is cut into segments that fit (`inside_segmented`,
/// `gso_segments`) instead of dropped (`inside_too_big`), and the file
/// arrives intact. ICMP that large is still too big (tests/gateway.rs).
#[test]
fn gateway_cuts_oversized_tcp_from_the_inside() {
    let g = GatewayLab::up(1).unwrap();
    for side in 0..2 {
        // XDP forwarding never completes a veth's partial checksums.
        let hif = format!("{}h", g.inside[side]);
        Lab::exec(&g.hosts[side], &["ethtool", "-K", &hif, "tx", "off"]).unwrap();
    }
    let d1 = Daemon::start(&g.lab.ns1, &g.config(0)).unwrap();
    let d2 = Daemon::start(&g.lab.ns2, &g.config(1)).unwrap();
    // The first packets may find no neighbour yet.
    let _ = Lab::exec(
        &g.hosts[0],
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", HOST_B[0]],
    );
    let (sent, got) = send_file([&g.hosts[0], HOST_A[0]], [&g.hosts[1], HOST_B[0]], false);
    assert_eq!(sent, got, "the file arrives intact");
    let (cut, segments) = (
        queue_counter(&d1, "inside_segmented"),
        queue_counter(&d1, "gso_segments"),
    );
    eprintln!("gw1: inside_segmented {cut}, gso_segments {segments}");
    // 8 MiB in 1460-byte segments: nearly all of them were too large.
    assert!(cut as usize > SIZE / 1460 / 2, "{cut} cut");
    assert!(segments >= 2 * cut);
    assert_eq!(queue_counter(&d1, "inside_too_big"), 0);
    drop(d2);
}

/// Whether `ifname` in `ns` has TCP segmentation offload on (ethtool -k).
fn tso_on(ns: &str, ifname: &str) -> bool {
    let out = Lab::exec(ns, &["ethtool", "-k", ifname]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "tcp-segmentation-offload: on")
}

/// Gateway mode with the inside program in generic mode
/// (`inside.xdp_mode = "generic"`): the hosts keep TSO and transmit
/// checksum offload (veth takes TSO away only from the peer of a
/// driver-mode program), so hostA's TCP leaves as 64 KB GSO
/// super-packets with partial checksums. gw1's inside socket (bound with
/// `XDP_USE_SG`) receives each whole in chained frames, puts it back
/// together, cuts it into segments that fit the tunnel and seals them
/// (`inside_gso_rx`, `gso_segments`); single packets get their partial
/// checksums completed (`inside_csum_completed`). The file arrives
/// intact over IPv4 and IPv6, nothing too big or broken.
#[test]
fn gateway_reads_the_hosts_super_packets_whole_in_generic_mode() {
    let g = GatewayLab::up(1).unwrap();
    let generic = |side| {
        g.config(side).replace(
            "mode = \"xdp\"\n",
            "mode = \"xdp\"\nxdp_mode = \"generic\"\n",
        )
    };
    let d1 = Daemon::start(&g.lab.ns1, &generic(0)).unwrap();
    let d2 = Daemon::start(&g.lab.ns2, &generic(1)).unwrap();
    for side in 0..2 {
        let hif = format!("{}h", g.inside[side]);
        assert!(tso_on(&g.hosts[side], &hif), "host {hif} keeps TSO");
    }
    for d in [&d1, &d2] {
        let st = d
            .cli_json("show platform hardware qfp active statistics")
            .unwrap();
        assert_eq!(st["inside_xdp"]["attach_mode"], "generic", "{st}");
    }
    for v6 in [false, true] {
        let i = usize::from(v6);
        // The first packets may find no neighbour yet.
        let _ = Lab::exec(
            &g.hosts[0],
            &["ping", "-c", "3", "-i", "0.2", "-W", "1", HOST_B[i]],
        );
        let before = queue_counter(&d1, "inside_gso_rx");
        let (sent, got) = send_file([&g.hosts[0], HOST_A[i]], [&g.hosts[1], HOST_B[i]], v6);
        assert_eq!(sent, got, "v6 {v6}: the file arrives intact");
        let supers = queue_counter(&d1, "inside_gso_rx") - before;
        eprintln!(
            "v6 {v6}: gw1 inside_rx {}, inside_gso_rx {supers}, gso_segments {}, inside_csum_completed {}",
            queue_counter(&d1, "inside_rx"),
            queue_counter(&d1, "gso_segments"),
            queue_counter(&d1, "inside_csum_completed"),
        );
        assert!(supers > 0, "v6 {v6}: super-packets read whole");
    }
    let (supers, segments) = (
        queue_counter(&d1, "inside_gso_rx"),
        queue_counter(&d1, "gso_segments"),
    );
    // Every super-packet is at least two segments.
    assert!(segments >= 2 * supers, "{segments} segments of {supers}");
    // hostB's ACKs (and hostA's small packets) came with partial checksums.
    assert!(queue_counter(&d2, "inside_csum_completed") > 0);
    for d in [&d1, &d2] {
        for k in [
            "inside_too_big",
            "inside_chain_too_long",
            "inside_chain_unterminated",
        ] {
            assert_eq!(queue_counter(d, k), 0, "{k}");
        }
    }
}

/// What the segments become on the wire, decrypted by scapy (an
/// independent ESP implementation as xdpsec's peer): a local UDP GSO send
/// of 5000 bytes in 1000-byte segments (`UDP_SEGMENT`) reaches xdpsec as
/// one super-packet, leaves as five ESP packets with consecutive sequence
/// numbers, and each decrypts to a UDP datagram with its own length and a
/// checksum scapy agrees with; together they carry the data in order.
#[test]
fn scapy_decrypts_the_esp_packets_a_super_packet_becomes() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &config(&lab, 0, &BASE, true)).unwrap();
    let mut cfg = scapy_peer_config(&lab, &BASE).unwrap();
    cfg["count"] = json!(0);
    cfg["linger"] = json!(4.0);
    cfg["keep_inner"] = json!(true);
    let ready = scratch_dir("offload-peer").join("ready");
    cfg["ready_file"] = json!(ready.to_str().unwrap());
    let mut peer = py_command(&lab.ns2, "esp_peer.py", &cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The peer captures for 4 s once it listens: send then.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if Instant::now() > deadline || peer.try_wait().unwrap().is_some() {
            let _ = peer.kill();
            panic!("the scapy peer never listened");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let [src, dst] = inner_addrs(false);
    let send = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{src}', 40000))\n\
         s.setsockopt(socket.SOL_UDP, 103, 1000)\n\
         s.sendto(bytes((i * 7 + 3) & 0xff for i in range(5000)), ('{dst}', 5201))\n"
    );
    let out = Lab::exec(&lab.ns1, &["timeout", "10", "python3", "-c", &send]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = py_report("esp_peer.py", peer.wait_with_output().unwrap()).unwrap();
    assert_eq!(queue_counter(&d, "tun_gso_rx"), 1, "one super-packet read");
    assert_eq!(queue_counter(&d, "gso_segments"), 5);
    assert_eq!(report["decrypted"], 5, "{report}");
    assert_eq!(
        report["reply_seqs"],
        json!([1, 2, 3, 4, 5]),
        "one ESP sequence number each"
    );
    let pkts: Vec<Vec<u8>> = report["inner"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let h = h.as_str().unwrap();
            (0..h.len() / 2)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
                .collect()
        })
        .collect();
    let checks = xdpsec_e2e::py_tool(
        &lab.ns2,
        "udp_check.py",
        &json!(
            pkts.iter()
                .map(|p| p.iter().map(|b| format!("{b:02x}")).collect::<String>())
                .collect::<Vec<_>>()
        ),
    )
    .unwrap();
    let mut data = Vec::new();
    for (p, c) in pkts.iter().zip(checks.as_array().unwrap()) {
        assert_eq!(c["len"], 1008, "UDP length of each segment");
        assert_eq!(c["chksum_ok"], true, "UDP checksum scapy computes");
        data.extend_from_slice(&p[28..]);
    }
    let want: Vec<u8> = (0..5000).map(|i| ((i * 7 + 3) & 0xff) as u8).collect();
    assert_eq!(data, want, "the segments carry the data in order");
}
