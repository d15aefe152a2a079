//! Two xdpsec nodes with one IKEv2 tunnel between them (TUN inside), for
//! the IKE tests and the soak.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    Daemon, Lab,
    strongswan::{Charon, CharonOpts, ChildSa, Conn, IkeSa, Proposals},
};

/// Inner addresses of node 1 and node 2 (their TUN devices).
pub const INNER: [&str; 2] = ["203.0.113.1", "203.0.113.2"];

/// An xdpsec config for node `side` (0 or 1) of `lab` with one IKE tunnel
/// (`Tunnel2`, UDP-encapsulated unless `extra` has an `encap` line; with
/// `psk` unless `extra` has an `auth` line) to the other node, `extra`
/// lines added to the tunnel (e.g. lifetimes; a `local_subnets` or
/// `remote_subnets` line there replaces the default). An empty
/// proposal string leaves its key out
/// ([`NO_PROPOSALS`](crate::strongswan::NO_PROPOSALS): xdpsec's defaults).
pub fn ike_config(
    lab: &Lab,
    side: usize,
    psk: &str,
    initiate: bool,
    proposals: &Proposals,
    extra: &str,
) -> String {
    ike_config_on(lab, side, psk, initiate, proposals, extra, false)
}

/// [`ike_config`] over the lab's IPv6 underlay addresses when `ipv6`.
pub fn ike_config_on(
    lab: &Lab,
    side: usize,
    psk: &str,
    initiate: bool,
    proposals: &Proposals,
    extra: &str,
    ipv6: bool,
) -> String {
    let iface = if side == 0 { &lab.if1 } else { &lab.if2 };
    let under = if ipv6 { lab.v6 } else { lab.v4 };
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
{encap}{psk}{ike}{esp}initiate = {initiate}
{local_subnets}{remote_subnets}{extra}
"#,
        n = side + 1,
        // UDP-encapsulated unless `extra` says otherwise.
        encap = unless_in(extra, "encap", "encap = \"udp\"\n"),
        psk = unless_in(extra, "auth", &format!("psk = \"{psk}\"\n")),
        local = under[side],
        peer = under[1 - side],
        inner_local = INNER[side],
        local_subnets = unless_in(
            extra,
            "local_subnets",
            &format!("local_subnets = [\"{}/32\"]\n", INNER[side])
        ),
        remote_subnets = unless_in(
            extra,
            "remote_subnets",
            &format!("remote_subnets = [\"{}/32\"]\n", INNER[1 - side])
        ),
        ike = key_line("ike_proposals", proposals.ike),
        esp = key_line("esp_proposals", proposals.esp),
    )
}

/// `line`, unless `extra` has a line setting `key`.
fn unless_in(extra: &str, key: &str, line: &str) -> String {
    if extra
        .lines()
        .any(|l| l.trim_start().starts_with(&format!("{key} ")))
    {
        String::new()
    } else {
        line.to_string()
    }
}

/// Selectors with `n` more /32s each way than the inner addresses, to
/// make IKE_AUTH long: xdpsec's (node 1: [`INNER`]\[0\] and
/// 203.0.113.101 on) as its tunnel's `local_subnets` and `remote_subnets`
/// lines, and charon's `local_ts` and `remote_ts` (node 2: [`INNER`]\[1\]
/// and 203.0.113.201 on).
pub fn many_selectors(n: u8) -> (String, Vec<String>, Vec<String>) {
    let ours: Vec<String> = std::iter::once(format!("{}/32", INNER[0]))
        .chain((101..101 + n).map(|k| format!("203.0.113.{k}/32")))
        .collect();
    let theirs: Vec<String> = std::iter::once(format!("{}/32", INNER[1]))
        .chain((201..201 + n).map(|k| format!("203.0.113.{k}/32")))
        .collect();
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lines = format!(
        "local_subnets = [{}]\nremote_subnets = [{}]\n",
        list(&ours),
        list(&theirs)
    );
    (lines, theirs, ours)
}

/// Put [`many_selectors`]' `n` extra addresses of charon's side on
/// `lo` of node 2: charon routes to the remote selectors with a local
/// address inside its `local_ts` as source, and refuses the child SA
/// ("error installing route") where the first it picks is not there.
pub fn charon_selector_addrs(lab: &Lab, n: u8) -> Result<()> {
    for k in 201..201 + n {
        let a = format!("203.0.113.{k}/32");
        let out = Lab::exec(&lab.ns2, &["ip", "addr", "add", &a, "dev", "lo"])?;
        if !out.status.success() {
            bail!("adding {a} on lo in {}: {out:?}", lab.ns2);
        }
    }
    Ok(())
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
    let (charon, conn) = charon_node(lab, psk, proposals, false, &CharonOpts::default(), |_| {})?;
    Ok((charon, conn.to_swanctl()))
}

/// charon in node 2 of `lab` with `opts`: [`INNER`]\[1\] on `lo`, the
/// connection `xs` to node 1 (PSK, `proposals`, over the IPv4 or IPv6
/// underlay, changed by `tweak`) loaded. Charon and that connection.
fn charon_node(
    lab: &Lab,
    psk: &str,
    proposals: Proposals,
    ipv6: bool,
    opts: &CharonOpts,
    tweak: impl FnOnce(&mut Conn),
) -> Result<(Charon, Conn)> {
    let inner = format!("{}/32", INNER[1]);
    let out = Lab::exec(&lab.ns2, &["ip", "addr", "add", &inner, "dev", "lo"])?;
    if !out.status.success() {
        bail!("adding {inner} on lo in {}: {out:?}", lab.ns2);
    }
    let under = if ipv6 { lab.v6 } else { lab.v4 };
    let charon = Charon::start(&lab.ns2, opts)?;
    let mut conn = Conn::psk(
        "xs",
        under[1],
        under[0],
        &inner,
        &format!("{}/32", INNER[0]),
        psk,
    );
    conn.proposals = proposals;
    tweak(&mut conn);
    charon.load_conn(&conn.to_swanctl())?;
    Ok((charon, conn))
}

/// xdpsec on node 1 (TUN inside, one IKE tunnel `Tunnel2`) and strongSwan's
/// charon on node 2 (connection and child `xs`, its inner address on `lo`).
/// Fields drop in order: xdpsec, charon, then the namespaces.
pub struct WithStrongswan {
    /// xdpsec on node 1.
    pub d: Daemon,
    /// charon on node 2.
    pub charon: Charon,
    /// charon's connection, to load again after a restart.
    pub conn: Conn,
    /// How charon runs.
    pub opts: CharonOpts,
    /// The namespaces.
    pub lab: Lab,
    /// The underlay is IPv6.
    pub ipv6: bool,
}

impl WithStrongswan {
    /// Start both with `psk` and `proposals` over the IPv4 or IPv6 underlay;
    /// `xdpsec_extra`: lines added to xdpsec's tunnel; `tweak`: charon's
    /// connection (e.g. `dpd_delay`). Neither initiates unless
    /// `xdpsec_initiates`; call [`Charon::initiate`] for the other way.
    pub fn start(
        ipv6: bool,
        psk: &str,
        proposals: Proposals,
        xdpsec_initiates: bool,
        xdpsec_extra: &str,
        opts: CharonOpts,
        tweak: impl FnOnce(&mut Conn),
    ) -> Result<WithStrongswan> {
        let lab = Lab::unique().up(1)?;
        let (charon, conn) = charon_node(&lab, psk, proposals, ipv6, &opts, tweak)?;
        let d = Daemon::start(
            &lab.ns1,
            &ike_config_on(
                &lab,
                0,
                psk,
                xdpsec_initiates,
                &proposals,
                xdpsec_extra,
                ipv6,
            ),
        )?;
        Ok(WithStrongswan {
            d,
            charon,
            conn,
            opts,
            lab,
            ipv6,
        })
    }

    /// charon's underlay address (xdpsec's peer).
    pub fn peer(&self) -> std::net::IpAddr {
        if self.ipv6 {
            self.lab.v6[1]
        } else {
            self.lab.v4[1]
        }
    }

    /// Start a new charon in node 2 (after [`Charon::kill`]): no SAs, the
    /// same connection loaded.
    pub fn restart_charon(&mut self) -> Result<()> {
        self.charon.kill();
        self.charon = Charon::start(&self.lab.ns2, &self.opts)?;
        self.charon.load_conn(&self.conn.to_swanctl())?;
        Ok(())
    }

    /// Wait (at most `timeout`) until both sides hold the same single IKE SA
    /// with one child SA each way and no other SA: charon's IKE SA
    /// ESTABLISHED with child `xs` INSTALLED and nothing else listed, and
    /// xdpsec's one READY IKE SA with the same SPIs, its outbound SPI
    /// charon's inbound and its only inbound SPI charon's outbound. Both
    /// views then, with xdpsec's `show crypto ikev2 sa` JSON entry.
    pub fn wait_agreed(&self, timeout: Duration) -> Result<(IkeSa, ChildSa, Value)> {
        let end = Instant::now() + timeout;
        loop {
            let sas = self.charon.list_sas()?;
            let v = self.d.cli_json("show crypto ikev2 sa")?;
            let (out, inb) = spis(&self.d)?;
            if let [ike] = sas.as_slice()
                && let [child] = ike.children.as_slice()
                && ike.state == "ESTABLISHED"
                && child.state == "INSTALLED"
                && let Some([x]) = v["ike_sas"].as_array().map(Vec::as_slice)
                && x["status"] == "READY"
                && x["initiator_spi"] == ike.initiator_spi.as_str()
                && x["responder_spi"] == ike.responder_spi.as_str()
                && out == u64::from(child.spi_in)
                && inb == [u64::from(child.spi_out)]
            {
                return Ok((ike.clone(), child.clone(), x.clone()));
            }
            if Instant::now() >= end {
                bail!(
                    "the two sides do not agree on one IKE SA and child in {timeout:?}:\ncharon: {sas:#?}\nxdpsec: {v}\nxdpsec child SPIs: out {out:x} in {inb:x?}\n--- xdpsec log ---\n{}",
                    self.d.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
