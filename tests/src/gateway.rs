//! Gateway mode (`[inside] mode = "xdp"`): hostA —veth— gw1 ==ESP== gw2
//! —veth— hostB. The gateways are a [`Lab`]'s two namespaces (underlay
//! 198.51.100.0/24); each has an inside veth to a host namespace.
//! Everything is removed on drop.
use std::process::{Command, Stdio};

use anyhow::Result;

use crate::{Lab, ip, link_ready, tunnel::KEY_A, tunnel::KEY_B};

/// Inside addressing: hostA's side is 203.0.113.0/25 and 2001:db8:a::/64,
/// hostB's 203.0.113.128/25 and 2001:db8:b::/64.
pub const HOST_A: [&str; 2] = ["203.0.113.10", "2001:db8:a::10"];
/// hostB's addresses.
pub const HOST_B: [&str; 2] = ["203.0.113.130", "2001:db8:b::10"];
/// gw1's inside addresses (hostA's gateway).
pub const GW1_INSIDE: [&str; 2] = ["203.0.113.1", "2001:db8:a::1"];
/// gw2's inside addresses (hostB's gateway).
pub const GW2_INSIDE: [&str; 2] = ["203.0.113.129", "2001:db8:b::1"];
/// Each side's inside prefixes.
const SUBNETS: [[&str; 2]; 2] = [
    ["203.0.113.0/25", "2001:db8:a::/64"],
    ["203.0.113.128/25", "2001:db8:b::/64"],
];

/// Two gateways and a host behind each.
pub struct GatewayLab {
    /// The gateways' namespaces (ns1 = gw1, ns2 = gw2) and underlay veth.
    pub lab: Lab,
    /// hostA's and hostB's namespaces.
    pub hosts: [String; 2],
    /// The inside veth ends in gw1 and gw2.
    pub inside: [String; 2],
    /// Rx/tx queues of every veth, and AF_XDP queues of each gateway.
    pub queues: u32,
}

impl GatewayLab {
    /// Create the four namespaces, the three veth pairs (`queues` rx/tx
    /// queues each) and the addresses and routes; hosts route everything
    /// to their gateway.
    pub fn up(queues: u32) -> Result<GatewayLab> {
        let lab = Lab::unique().up(queues)?;
        let hosts = [format!("{}h", lab.ns1), format!("{}h", lab.ns2)];
        let inside = [format!("{}i", lab.if1), format!("{}i", lab.if2)];
        let g = GatewayLab {
            lab,
            hosts,
            inside,
            queues,
        };
        let q = queues.to_string();
        for side in 0..2 {
            let gw = if side == 0 { &g.lab.ns1 } else { &g.lab.ns2 };
            let host = &g.hosts[side];
            let hif = format!("{}h", g.inside[side]);
            let (gw_addr, host_addr) = if side == 0 {
                (GW1_INSIDE, HOST_A)
            } else {
                (GW2_INSIDE, HOST_B)
            };
            ip(&["netns", "add", host])?;
            ip(&[
                "link",
                "add",
                &g.inside[side],
                "netns",
                gw,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                &hif,
                "netns",
                host,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ])?;
            ip(&["-n", host, "link", "set", "lo", "up"])?;
            let plen = |i: usize| if i == 0 { "25" } else { "64" };
            for i in 0..2 {
                let ga = format!("{}/{}", gw_addr[i], plen(i));
                let ha = format!("{}/{}", host_addr[i], plen(i));
                ip(&[
                    "-n",
                    gw,
                    "addr",
                    "add",
                    &ga,
                    "dev",
                    &g.inside[side],
                    "nodad",
                ])?;
                ip(&["-n", host, "addr", "add", &ha, "dev", &hif, "nodad"])?;
            }
            ip(&["-n", gw, "link", "set", &g.inside[side], "up"])?;
            ip(&["-n", host, "link", "set", &hif, "up"])?;
            link_ready(gw, &g.inside[side], gw_addr[1])?;
            link_ready(host, &hif, host_addr[1])?;
            ip(&["-n", host, "route", "add", "default", "via", gw_addr[0]])?;
            ip(&[
                "-n", host, "-6", "route", "add", "default", "via", gw_addr[1],
            ])?;
        }
        Ok(g)
    }

    /// gw `side`'s config: manual AES-256-GCM over plain ESP, the other
    /// side's inside prefixes routed into the tunnel, inside mode "xdp".
    pub fn config(&self, side: usize) -> String {
        let (kin, kout) = if side == 0 {
            (KEY_A, KEY_B)
        } else {
            (KEY_B, KEY_A)
        };
        let iface = if side == 0 {
            &self.lab.if1
        } else {
            &self.lab.if2
        };
        let remote = SUBNETS[1 - side];
        format!(
            r#"node = "gw{n}"
socket = "{{socket}}"
[underlay]
interface = "{iface}"
address = "{local}"
queues = {queues}
[inside]
mode = "xdp"
interface = "{inside}"
[[tunnel]]
name = "Tunnel1"
kind = "manual"
peer = "{peer}"
encap = "esp"
cipher = "aes256-gcm"
replay_window = 64
worker = {worker}
remote_subnets = ["{r4}", "{r6}"]
local_subnets = ["{l4}", "{l6}"]
[tunnel.inbound]
spi = {spi_in:#x}
key = "{kin}"
[tunnel.outbound]
spi = {spi_out:#x}
key = "{kout}"
"#,
            n = side + 1,
            queues = self.queues,
            // With two queues gw2's SAs belong to worker 1: ESP arriving
            // on queue 0 is handed over before it reaches the inside.
            worker = if side == 1 { self.queues - 1 } else { 0 },
            inside = self.inside[side],
            local = self.lab.v4[side],
            peer = self.lab.v4[1 - side],
            r4 = remote[0],
            r6 = remote[1],
            l4 = SUBNETS[side][0],
            l6 = SUBNETS[side][1],
            spi_in = 0x1001 + side,
            spi_out = 0x1001 + (1 - side),
        )
    }
}

impl Drop for GatewayLab {
    fn drop(&mut self) {
        // The gateways' namespaces (and the veths in them) go with `lab`.
        for ns in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
