//! The `[inside]` section and the `[[tunnel]]` entries, validated.
use std::net::IpAddr;

use toml::Spanned;

use super::{
    Cidr, CipherName, Encap, Inside, MAX_QUEUES, ManualKeys, ManualSa, RawInside, RawSa, RawTunnel,
    Tunnel, TunnelKind, ike::parse_ike, parse_xdp_mode, text::decode_hex,
};

pub(super) fn parse_inside(
    i: &Spanned<RawInside>,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
    underlay: &str,
) -> Result<Inside, String> {
    let r = i.get_ref();
    if r.offloads.is_some() && r.mode.get_ref() != "tun" {
        return Err(format!(
            "line {}: field `inside.offloads` applies to mode \"tun\" only",
            at(i.span())
        ));
    }
    if r.xdp_mode.is_some() && r.mode.get_ref() != "xdp" {
        return Err(format!(
            "line {}: field `inside.xdp_mode` applies to mode \"xdp\" only",
            at(i.span())
        ));
    }
    match r.mode.get_ref().as_str() {
        "sink" => Ok(Inside::Sink),
        "xdp" => {
            let name = r.interface.as_ref().ok_or_else(|| {
                format!(
                    "line {}: field `inside.interface` is missing: mode \"xdp\" needs the inside interface's name",
                    at(i.span())
                )
            })?;
            let n = name.get_ref();
            if n.is_empty() || n.len() >= libc::IFNAMSIZ || n.contains(['/', ' ']) {
                return Err(format!(
                    "line {}: field `inside.interface` = {n:?} is not a valid interface name (1-15 characters)",
                    at(name.span())
                ));
            }
            if n == underlay {
                return Err(format!(
                    "line {}: field `inside.interface` = {n:?} is the underlay interface: give the interface the inside hosts are on",
                    at(name.span())
                ));
            }
            let xdp_mode = parse_xdp_mode(r.xdp_mode.as_ref(), "inside.xdp_mode", at)?;
            Ok(Inside::Xdp {
                interface: n.clone(),
                xdp_mode,
            })
        }
        "tun" => {
            let name = r.name.as_ref().ok_or_else(|| {
                format!(
                    "line {}: field `inside.name` is missing: mode \"tun\" needs a TUN device name",
                    at(i.span())
                )
            })?;
            let n = name.get_ref();
            if n.is_empty() || n.len() >= libc::IFNAMSIZ || n.contains(['/', ' ']) {
                return Err(format!(
                    "line {}: field `inside.name` = {n:?} is not a valid interface name (1-15 characters)",
                    at(name.span())
                ));
            }
            let addr = r.address.as_ref().ok_or_else(|| {
                format!("line {}: field `inside.address` is missing: mode \"tun\" needs an address like \"203.0.113.2/32\"", at(i.span()))
            })?;
            let address: Cidr = addr.get_ref().parse().map_err(|_| {
                format!(
                    "line {}: field `inside.address` = {:?}: give an address with a prefix length, e.g. \"203.0.113.2/32\"",
                    at(addr.span()),
                    addr.get_ref()
                )
            })?;
            Ok(Inside::Tun {
                name: n.clone(),
                address,
                offloads: r.offloads.unwrap_or(true),
            })
        }
        other => Err(format!(
            "line {}: field `inside.mode` = {other:?}: give \"tun\", \"xdp\" or \"sink\"",
            at(r.mode.span())
        )),
    }
}

pub(super) fn parse_tunnel(
    t: &RawTunnel,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
    local: IpAddr,
) -> Result<Tunnel, String> {
    let name = t.name.get_ref().trim().to_string();
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(format!(
            "line {}: field `tunnel.name` = {:?}: give 1-63 characters from A-Z a-z 0-9 - _ . /",
            at(t.name.span()),
            t.name.get_ref()
        ));
    }
    let ike = match t.kind.get_ref().as_str() {
        "manual" => false,
        "ike" => true,
        other => {
            return Err(format!(
                "line {}: field `tunnel.kind` = {other:?} in tunnel {name}: give \"manual\" or \"ike\"",
                at(t.kind.span())
            ));
        }
    };
    // Fields of the other kind are refused, naming them.
    let manual_only: [(&str, Option<std::ops::Range<usize>>); 4] = [
        ("cipher", t.cipher.as_ref().map(|v| v.span())),
        ("esn", t.esn.as_ref().map(|v| v.span())),
        ("inbound", t.inbound.as_ref().map(|v| v.span())),
        ("outbound", t.outbound.as_ref().map(|v| v.span())),
    ];
    let ike_only: [(&str, Option<std::ops::Range<usize>>); 20] = [
        ("peer_range", t.peer_range.as_ref().map(|v| v.span())),
        ("max_peers", t.max_peers.as_ref().map(|v| v.span())),
        ("psk", t.psk.as_ref().map(|v| v.span())),
        ("psk_file", t.psk_file.as_ref().map(|v| v.span())),
        ("auth", t.auth.as_ref().map(|v| v.span())),
        ("cert_file", t.cert_file.as_ref().map(|v| v.span())),
        ("key_file", t.key_file.as_ref().map(|v| v.span())),
        ("ca_file", t.ca_file.as_ref().map(|v| v.span())),
        ("local_id", t.local_id.as_ref().map(|v| v.span())),
        ("remote_id", t.remote_id.as_ref().map(|v| v.span())),
        ("ike_proposals", t.ike_proposals.as_ref().map(|v| v.span())),
        ("esp_proposals", t.esp_proposals.as_ref().map(|v| v.span())),
        (
            "ike_lifetime_seconds",
            t.ike_lifetime_seconds.as_ref().map(|v| v.span()),
        ),
        (
            "lifetime_seconds",
            t.lifetime_seconds.as_ref().map(|v| v.span()),
        ),
        ("dpd_seconds", t.dpd_seconds.as_ref().map(|v| v.span())),
        (
            "dpd_retry_seconds",
            t.dpd_retry_seconds.as_ref().map(|v| v.span()),
        ),
        ("initiate", t.initiate.as_ref().map(|v| v.span())),
        (
            "invalid_spi_recovery",
            t.invalid_spi_recovery.as_ref().map(|v| v.span()),
        ),
        ("fragmentation", t.fragmentation.as_ref().map(|v| v.span())),
        ("fragment_size", t.fragment_size.as_ref().map(|v| v.span())),
    ];
    let (foreign, other_kind) = if ike {
        (&manual_only[..], "manual")
    } else {
        (&ike_only[..], "ike")
    };
    if let Some((field, Some(span))) = foreign.iter().find(|(_, s)| s.is_some()) {
        return Err(format!(
            "line {}: field `tunnel.{field}` in tunnel {name} applies to kind = \"{other_kind}\" only",
            at(span.clone())
        ));
    }
    let (peer, range) = match (&t.peer, &t.peer_range) {
        (Some(_), Some(r)) => {
            return Err(format!(
                "line {}: fields `tunnel.peer` and `tunnel.peer_range` in tunnel {name}: give one of them (`peer_range`: a template answering any peer of the range)",
                at(r.span())
            ));
        }
        (None, None) => {
            return Err(format!(
                "line {}: tunnel {name} needs `peer`, the peer's address{}",
                at(t.name.span()),
                if ike {
                    " (or `peer_range`, a range of peers' addresses, for a template)"
                } else {
                    ""
                }
            ));
        }
        (Some(p), None) => {
            let peer: IpAddr = p.get_ref().parse().map_err(|_| {
                format!(
                    "line {}: field `tunnel.peer` = {:?} in tunnel {name} is not an IPv4 or IPv6 address",
                    at(p.span()),
                    p.get_ref()
                )
            })?;
            if peer.is_ipv4() != local.is_ipv4() {
                return Err(format!(
                    "line {}: field `tunnel.peer` = {peer} in tunnel {name} is not of the same family as underlay.address {local}",
                    at(p.span())
                ));
            }
            (peer, None)
        }
        (None, Some(r)) => {
            let range = super::ike::parse_peer_range(r, at, &name, local)?;
            (range.addr, Some(range))
        }
    };
    let port = |f: &Option<Spanned<i64>>, field: &str| -> Result<Option<u16>, String> {
        match f {
            None => Ok(None),
            Some(p) if (1..=65535).contains(p.get_ref()) => Ok(Some(*p.get_ref() as u16)),
            Some(p) => Err(format!(
                "line {}: field `tunnel.{field}` = {} in tunnel {name}: give a UDP port 1-65535",
                at(p.span()),
                p.get_ref()
            )),
        }
    };
    let local_port = port(&t.local_port, "local_port")?;
    let peer_port = port(&t.peer_port, "peer_port")?;
    let encap = match t
        .encap
        .as_ref()
        .map(|e| e.get_ref().as_str())
        .unwrap_or("esp")
    {
        "esp" if ike => Encap::Esp,
        "esp" => {
            for (f, field) in [(&t.local_port, "local_port"), (&t.peer_port, "peer_port")] {
                if let Some(p) = f {
                    return Err(format!(
                        "line {}: field `tunnel.{field}` in tunnel {name} applies to encap = \"udp\" only",
                        at(p.span())
                    ));
                }
            }
            Encap::Esp
        }
        "udp" => Encap::Udp {
            local_port: local_port.unwrap_or(4500),
            peer_port: peer_port.unwrap_or(4500),
        },
        other => {
            let e = t.encap.as_ref().unwrap();
            return Err(format!(
                "line {}: field `tunnel.encap` = {other:?} in tunnel {name}: give \"esp\" or \"udp\"",
                at(e.span())
            ));
        }
    };
    let cipher = match &t.cipher {
        None => CipherName::Aes256Gcm,
        Some(c) => CipherName::from_name(c.get_ref()).ok_or_else(|| {
            format!(
                "line {}: field `tunnel.cipher` = {:?} in tunnel {name}: give \"aes128-gcm\", \"aes256-gcm\", \"chacha20-poly1305\" or AES-CBC with HMAC as \"aes128|aes192|aes256-sha1|sha256|sha384|sha512\" (e.g. \"aes256-sha256\", \"aes128-sha1\")",
                at(c.span()),
                c.get_ref()
            )
        })?,
    };
    let esn = t.esn.as_ref().map(|e| *e.get_ref()).unwrap_or(false);
    let replay_window = match &t.replay_window {
        None => 64,
        Some(w) => {
            let v = *w.get_ref();
            if !(v == 0 || ((64..=8192).contains(&v) && (v as u64).is_power_of_two())) {
                return Err(format!(
                    "line {}: field `tunnel.replay_window` = {v} in tunnel {name}: give 0 (off) or a power of two from 64 to 8192",
                    at(w.span())
                ));
            }
            v as u32
        }
    };
    let subnets = |list: &Spanned<Vec<Spanned<String>>>,
                   field: &str|
     -> Result<Vec<Cidr>, String> {
        list.get_ref()
            .iter()
            .map(|s| {
                s.get_ref().parse::<Cidr>().map_err(|_| {
                    format!(
                        "line {}: field `tunnel.{field}` has {:?} in tunnel {name}: give prefixes like \"203.0.113.1/32\"",
                        at(s.span()),
                        s.get_ref()
                    )
                })
            })
            .collect()
    };
    let remote_subnets = match &t.remote_subnets {
        Some(list) => subnets(list, "remote_subnets")?,
        None => Vec::new(),
    };
    let local_subnets = match &t.local_subnets {
        Some(list) => Some(subnets(list, "local_subnets")?),
        None => None,
    };
    let sa = |raw: &Spanned<RawSa>, dir: &str| -> Result<ManualSa, String> {
        let r = raw.get_ref();
        let spi = *r.spi.get_ref();
        // RFC 4303 2.1: SPI 0 is never sent, 1-255 are reserved by IANA.
        if !(256..=u32::MAX as i64).contains(&spi) {
            return Err(format!(
                "line {}: field `tunnel.{dir}.spi` = {spi} in tunnel {name}: give 256 to 0xFFFFFFFF (0-255 are reserved, RFC 4303)",
                at(r.spi.span())
            ));
        }
        let hex = r.key.get_ref().0.trim();
        let key = decode_hex(hex).ok_or_else(|| {
            format!(
                "line {}: field `tunnel.{dir}.key` in tunnel {name} is not hex (give {} as hex digits)",
                at(r.key.span()),
                cipher.key_material_layout()
            )
        })?;
        if key.len() != cipher.key_material_len() {
            let parts = match cipher {
                CipherName::AesCbc(k, i) => format!("{} + {} bytes", k.key_len(), i.key_len()),
                _ => format!("{} + 4 bytes", cipher.key_len()),
            };
            return Err(format!(
                "line {}: field `tunnel.{dir}.key` in tunnel {name} has {} bytes; \"{}\" needs {} ({}: {parts}, {} hex digits)",
                at(r.key.span()),
                key.len(),
                cipher.name(),
                cipher.key_material_len(),
                cipher.key_material_layout(),
                cipher.key_material_len() * 2
            ));
        }
        Ok(ManualSa {
            spi: spi as u32,
            key,
        })
    };
    let kind = if ike {
        TunnelKind::Ike(parse_ike(t, at, &name, local_port.unwrap_or(4500), range)?)
    } else {
        fn need<'r>(
            raw: &'r Option<Spanned<RawSa>>,
            dir: &str,
            name: &str,
            line: usize,
        ) -> Result<&'r Spanned<RawSa>, String> {
            raw.as_ref().ok_or_else(|| {
                format!(
                    "line {line}: tunnel {name} (kind = \"manual\") has no [tunnel.{dir}] table: give its spi and key"
                )
            })
        }
        let line = at(t.name.span());
        TunnelKind::Manual(ManualKeys {
            cipher,
            esn,
            inbound: sa(need(&t.inbound, "inbound", &name, line)?, "inbound")?,
            outbound: sa(need(&t.outbound, "outbound", &name, line)?, "outbound")?,
        })
    };
    let worker = match &t.worker {
        None => 0,
        Some(w) if (0..i64::from(MAX_QUEUES)).contains(w.get_ref()) => *w.get_ref() as u32,
        Some(w) => {
            return Err(format!(
                "line {}: field `tunnel.worker` = {} in tunnel {name}: give a queue number 0-{}",
                at(w.span()),
                w.get_ref(),
                MAX_QUEUES - 1
            ));
        }
    };
    Ok(Tunnel {
        name,
        kind,
        peer,
        encap,
        replay_window,
        remote_subnets,
        local_subnets,
        worker,
    })
}

impl Tunnel {
    /// The local traffic selectors in force: `local_subnets` if configured,
    /// else the `[inside]` address as a host prefix in tun mode, else (sink
    /// and xdp modes) none, which allows any destination.
    pub fn local_selectors(&self, inside: &Inside) -> Vec<Cidr> {
        match (&self.local_subnets, inside) {
            (Some(list), _) => list.clone(),
            (None, Inside::Tun { address, .. }) => vec![Cidr {
                addr: address.addr,
                len: if address.addr.is_ipv4() { 32 } else { 128 },
            }],
            (None, Inside::Sink | Inside::Xdp { .. }) => Vec::new(),
        }
    }
}
