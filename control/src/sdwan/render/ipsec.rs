//! `show sdwan ipsec inbound-connections`, `outbound-connections` and
//! `local-sa`.
use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Value, json};

use super::{dashes, table_line};

/// One inbound IPsec connection: a remote TLOC sending to a local TLOC.
#[derive(Debug, Clone)]
pub struct InboundConnectionRow {
    /// The remote TLOC's public address (the packets' source).
    pub source_ip: IpAddr,
    /// The remote TLOC's public port.
    pub source_port: u16,
    /// The local TLOC's address.
    pub destination_ip: IpAddr,
    /// The local TLOC's port (after any port hop).
    pub destination_port: u16,
    /// The remote edge's system-ip (a TLOC is system-ip, color, encap).
    pub remote_tloc: Ipv4Addr,
    /// The remote TLOC's color.
    pub remote_tloc_color: String,
    /// The local system-ip.
    pub local_tloc: Ipv4Addr,
    /// The local TLOC's color.
    pub local_tloc_color: String,
    /// `AES-GCM-256`, as IOS names it.
    pub encryption_algorithm: &'static str,
    /// Inbound SPIs live on this TLOC for this peer (IOS shows its
    /// traffic-class SPIs, 8; xdpsec has one, two during a rekey grace).
    pub tc_spis: u32,
}

/// `show sdwan ipsec inbound-connections`, read by genieparser's
/// `ShowSdwanIpsecInboundConnections`.
///
/// JSON: `{"connections":[{"source_ip","source_port","destination_ip",
/// "destination_port","remote_tloc","remote_tloc_color","local_tloc",
/// "local_tloc_color","encryption_algorithm","tc_spi"}]}`. Genie keys it by
/// source and destination address, keeping the first row of each pair.
pub fn ipsec_inbound_connections(rows: &[InboundConnectionRow]) -> (String, Value) {
    const W: [usize; 10] = [39, 7, 39, 7, 16, 16, 16, 16, 21, 0];
    let mut t = table_line(
        &W,
        &[
            "SOURCE",
            "SOURCE",
            "DEST",
            "DEST",
            "REMOTE",
            "REMOTE",
            "LOCAL",
            "LOCAL",
            "NEGOTIATED",
        ],
    );
    t += &table_line(
        &W,
        &[
            "IP",
            "PORT",
            "IP",
            "PORT",
            "TLOC ADDRESS",
            "TLOC COLOR",
            "TLOC ADDRESS",
            "TLOC COLOR",
            "ENCRYPTION ALGORITHM",
            "TC SPIs",
        ],
    );
    t += &dashes(&t);
    let mut list = Vec::new();
    for r in rows {
        t += &table_line(
            &W,
            &[
                &r.source_ip.to_string(),
                &r.source_port.to_string(),
                &r.destination_ip.to_string(),
                &r.destination_port.to_string(),
                &r.remote_tloc.to_string(),
                &r.remote_tloc_color,
                &r.local_tloc.to_string(),
                &r.local_tloc_color,
                r.encryption_algorithm,
                &r.tc_spis.to_string(),
            ],
        );
        list.push(json!({
            "source_ip": r.source_ip.to_string(),
            "source_port": r.source_port,
            "destination_ip": r.destination_ip.to_string(),
            "destination_port": r.destination_port,
            "remote_tloc": r.remote_tloc.to_string(),
            "remote_tloc_color": r.remote_tloc_color,
            "local_tloc": r.local_tloc.to_string(),
            "local_tloc_color": r.local_tloc_color,
            "encryption_algorithm": r.encryption_algorithm,
            "tc_spi": r.tc_spis,
        }));
    }
    (t, json!({ "connections": list }))
}

/// One outbound IPsec connection: a local TLOC encrypting to a remote TLOC.
#[derive(Debug, Clone)]
pub struct OutboundConnectionRow {
    /// The local TLOC's address.
    pub source_ip: IpAddr,
    /// The local TLOC's port (after any port hop).
    pub source_port: u16,
    /// The remote TLOC's public address.
    pub destination_ip: IpAddr,
    /// The remote TLOC's public port.
    pub destination_port: u16,
    /// The SPI this edge encrypts to (the remote TLOC's advertised one).
    pub spi: u32,
    /// The tunnel's MTU (inner packets).
    pub tunnel_mtu: u16,
    /// The remote edge's system-ip.
    pub remote_tloc: Ipv4Addr,
    /// The remote TLOC's color.
    pub remote_tloc_color: String,
    /// IOS's "AUTHENTICATION USED" (`AH_SHA1_HMAC` there with AH); one
    /// token, for example `AES-GCM-256` (GCM authenticates within ESP).
    pub authentication: &'static str,
    /// The outbound key, masked: [`key_hash`].
    pub key_hash: String,
    /// `AES-GCM-256`.
    pub encryption_algorithm: &'static str,
    /// Outbound SPIs in use to this peer (IOS: traffic-class SPIs, 8).
    pub tc_spis: u32,
}

/// `show sdwan ipsec outbound-connections`, read by genieparser's
/// `ShowSdwanIpsecOutboundConnections`.
///
/// JSON: `{"connections":[{"source_ip","source_port","destination_ip",
/// "destination_port","spi","tunnel_mtu","remote_tloc","remote_tloc_color",
/// "authentication","key_hash","encryption_algorithm","tc_spi"}]}`. Genie
/// keys it by source and destination address, keeping the first row of each.
pub fn ipsec_outbound_connections(rows: &[OutboundConnectionRow]) -> (String, Value) {
    const W: [usize; 12] = [39, 7, 39, 7, 7, 11, 16, 16, 14, 10, 21, 0];
    let mut t = table_line(
        &W,
        &[
            "SOURCE",
            "SOURCE",
            "DEST",
            "DEST",
            "",
            "",
            "REMOTE",
            "REMOTE",
            "AUTHENTICATION",
            "",
            "NEGOTIATED",
        ],
    );
    t += &table_line(
        &W,
        &[
            "IP",
            "PORT",
            "IP",
            "PORT",
            "SPI",
            "TUNNEL MTU",
            "TLOC ADDRESS",
            "TLOC COLOR",
            "USED",
            "KEY HASH",
            "ENCRYPTION ALGORITHM",
            "TC SPIs",
        ],
    );
    t += &dashes(&t);
    let mut list = Vec::new();
    for r in rows {
        t += &table_line(
            &W,
            &[
                &r.source_ip.to_string(),
                &r.source_port.to_string(),
                &r.destination_ip.to_string(),
                &r.destination_port.to_string(),
                &r.spi.to_string(),
                &r.tunnel_mtu.to_string(),
                &r.remote_tloc.to_string(),
                &r.remote_tloc_color,
                r.authentication,
                &r.key_hash,
                r.encryption_algorithm,
                &r.tc_spis.to_string(),
            ],
        );
        list.push(json!({
            "source_ip": r.source_ip.to_string(),
            "source_port": r.source_port,
            "destination_ip": r.destination_ip.to_string(),
            "destination_port": r.destination_port,
            "spi": r.spi,
            "tunnel_mtu": r.tunnel_mtu,
            "remote_tloc": r.remote_tloc.to_string(),
            "remote_tloc_color": r.remote_tloc_color,
            "authentication": r.authentication,
            "key_hash": r.key_hash,
            "encryption_algorithm": r.encryption_algorithm,
            "tc_spi": r.tc_spis,
        }));
    }
    (t, json!({ "connections": list }))
}

/// One inbound SA of a local TLOC (during a rekey grace a TLOC has two:
/// the old SPI and the new one).
#[derive(Debug, Clone)]
pub struct LocalSaRow {
    /// The local system-ip (the TLOC address the command names).
    pub tloc_address: Ipv4Addr,
    /// The local TLOC's color.
    pub tloc_color: String,
    /// The inbound SPI advertised for this TLOC.
    pub spi: u32,
    /// The TLOC's underlay address; IPv4 fills the IPv4 column (IPv6 `::`),
    /// IPv6 the IPv6 column (IPv4 `0.0.0.0`).
    pub source_ip: IpAddr,
    /// The TLOC's port (after any port hop).
    pub source_port: u16,
    /// The SA's key, masked: [`key_hash`].
    pub key_hash: String,
}

/// `show sdwan ipsec local-sa TLOC-ADDRESS`, read by genieparser's
/// `ShowSdwanIpsecLocalsa` (the owner passes the rows of that system-ip).
///
/// JSON: `{"local_sa":[{"tloc_address","tloc_color","spi","source_ipv4",
/// "source_ipv6","source_port","key_hash"}]}`. Genie holds two rows only,
/// labelled by position whatever they are: the first (and any third or
/// later row) as `inbound`, the second as `outbound`.
pub fn ipsec_local_sa(rows: &[LocalSaRow]) -> (String, Value) {
    const W: [usize; 7] = [16, 16, 7, 16, 39, 7, 0];
    let mut t = table_line(&W, &["", "", "", "SOURCE", "SOURCE", "SOURCE"]);
    t += &table_line(
        &W,
        &[
            "TLOC ADDRESS",
            "TLOC COLOR",
            "SPI",
            "IPv4",
            "IPv6",
            "PORT",
            "KEY HASH",
        ],
    );
    t += &dashes(&t);
    let mut list = Vec::new();
    for r in rows {
        let (v4, v6) = match r.source_ip {
            IpAddr::V4(a) => (a.to_string(), "::".to_string()),
            IpAddr::V6(a) => ("0.0.0.0".to_string(), a.to_string()),
        };
        t += &table_line(
            &W,
            &[
                &r.tloc_address.to_string(),
                &r.tloc_color,
                &r.spi.to_string(),
                &v4,
                &v6,
                &r.source_port.to_string(),
                &r.key_hash,
            ],
        );
        list.push(json!({
            "tloc_address": r.tloc_address.to_string(),
            "tloc_color": r.tloc_color,
            "spi": r.spi,
            "source_ipv4": v4,
            "source_ipv6": v6,
            "source_port": r.source_port,
            "key_hash": r.key_hash,
        }));
    }
    (t, json!({ "local_sa": list }))
}
