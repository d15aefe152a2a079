//! Two xdpsec nodes with one IKEv2 tunnel between them (TUN inside), for
//! the IKE tests and the soak.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    Daemon, Lab,
    strongswan::{Charon, CharonOpts, Conn, Proposals},
};

/// Inner addresses of node 1 and node 2 (their TUN devices).
pub const INNER: [&str; 2] = ["203.0.113.1", "203.0.113.2"];

/// An xdpsec config for node `side` (0 or 1) of `lab` with one IKE tunnel
/// (`Tunnel2`, UDP-encapsulated) to the other node, `extra` lines added to
/// the tunnel (e.g. lifetimes). An empty proposal string leaves its key
/// out ([`NO_PROPOSALS`](crate::strongswan::NO_PROPOSALS): xdpsec's defaults).
pub fn ike_config(
    lab: &Lab,
    side: usize,
    psk: &str,
    initiate: bool,
    proposals: &Proposals,
    extra: &str,
) -> String {
    let iface = if side == 0 { &lab.if1 } else { &lab.if2 };
    format!(
        r#"node = "ike{n}"
socket = "{{socket}}"
[underlay]
interface = "{iface}"
address = "{local}"
[inside]
mode = "tun"
name = "xsike{n}"
address = "{inner_local}/32"
[[tunnel]]
name = "Tunnel2"
kind = "ike"
peer = "{peer}"
encap = "udp"
psk = "{psk}"
{ike}{esp}initiate = {initiate}
local_subnets = ["{inner_local}/32"]
remote_subnets = ["{inner_peer}/32"]
{extra}
"#,
        n = side + 1,
        local = lab.v4[side],
        peer = lab.v4[1 - side],
        inner_local = INNER[side],
        inner_peer = INNER[1 - side],
        ike = key_line("ike_proposals", proposals.ike),
        esp = key_line("esp_proposals", proposals.esp),
    )
}

/// `key = ["value"]` and a newline, or nothing for an empty value.
fn key_line(key: &str, value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!("{key} = [\"{value}\"]\n")
    }
}

/// Wait (bounded) until `d` has a READY IKE SA and a child SA; its
/// `show crypto ikev2 sa` JSON.
pub fn wait_ready(d: &Daemon, timeout: Duration) -> Result<Value> {
    let end = Instant::now() + timeout;
    loop {
        let v = d.cli_json("show crypto ikev2 sa")?;
        let s = d.cli_json("show crypto ipsec sa")?;
        if v["ike_sas"][0]["status"] == "READY"
            && s["sas"][0]["outbound_spi"].as_u64().unwrap_or(0) != 0
        {
            return Ok(v);
        }
        if Instant::now() >= end {
            bail!("no READY IKE SA with a child: {v}\n{s}\n{}", d.log_text());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first tunnel's outbound SPI and inbound SPIs (`show crypto ipsec sa`).
pub fn spis(d: &Daemon) -> Result<(u64, Vec<u64>)> {
    let s = d.cli_json("show crypto ipsec sa")?;
    let sa = &s["sas"][0];
    let out = sa["outbound_spi"].as_u64().context("no outbound SPI")?;
    let inb = sa["inbound_spis"]
        .as_array()
        .context("no inbound SPIs")?
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    Ok((out, inb))
}

/// strongSwan as node 2 of `lab`, the peer of [`ike_config`]'s node 1: its
/// inner address ([`INNER`]\[1\]) on `lo`, charon started (default
/// options) and the connection `xs` (PSK, `proposals`) loaded. Charon and
/// that `swanctl.conf` text (to load again for a reload).
pub fn charon_peer(lab: &Lab, psk: &str, proposals: Proposals) -> Result<(Charon, String)> {
    let inner = format!("{}/32", INNER[1]);
    let out = Lab::exec(&lab.ns2, &["ip", "addr", "add", &inner, "dev", "lo"])?;
    if !out.status.success() {
        bail!("adding {inner} on lo: {out:?}");
    }
    let charon = Charon::start(&lab.ns2, &CharonOpts::default())?;
    let mut conn = Conn::psk(
        "xs",
        lab.v4[1],
        lab.v4[0],
        &inner,
        &format!("{}/32", INNER[0]),
        psk,
    );
    conn.proposals = proposals;
    let conf = conn.to_swanctl();
    charon.load_conn(&conf)?;
    Ok((charon, conf))
}
