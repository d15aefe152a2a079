//! `show sdwan control local-properties`.
use std::{
    fmt::Write,
    net::{IpAddr, Ipv4Addr},
};

use serde_json::{Value, json};

use super::{dashes, table_line};
use crate::show::omp::uptime;

/// One local TLOC (WAN interface) in `show sdwan control local-properties`.
#[derive(Debug, Clone)]
pub struct LocalTlocRow {
    /// The underlay interface's name.
    pub interface: String,
    /// The TLOC's address (no NAT: public and private are the same). Genie
    /// reads IPv4 TLOCs only; an IPv6 one shows `0.0.0.0` as IPv4.
    pub address: IpAddr,
    /// The TLOC's current port: 12346 + offset, moved by each port hop.
    pub port: u16,
    /// Control connections up on this TLOC to a controller (vSmart).
    pub vsmart: u32,
    /// The TLOC's color.
    pub color: String,
    /// `up` while the TLOC's control connection is up, else `down`.
    pub state: &'static str,
    /// Seconds since the TLOC's control connection last came up (0: never).
    pub last_connection_seconds: u64,
    /// Seconds until the TLOC's next timed rekey.
    pub spi_time_remaining_seconds: u64,
}

/// What `show sdwan control local-properties` shows about the edge itself.
#[derive(Debug, Clone)]
pub struct LocalProperties {
    /// The edge's system-ip.
    pub system_ip: Ipv4Addr,
    /// The edge's site-id.
    pub site_id: u32,
    /// The controller's address as configured (IOS shows the vBond's name).
    pub dns_name: String,
    /// The control connections' transport: `tcp`, or `tls` with rustls
    /// (IOS: `dtls` or `tls`).
    pub protocol: &'static str,
    /// The node's name (IOS: chassis number / unique id).
    pub chassis_num: String,
    /// The timed rekey interval (IOS: keygen-interval).
    pub keygen_interval_seconds: u64,
    /// The first reconnect backoff of a control connection.
    pub retry_interval_seconds: u64,
    /// The control connection's hold time (no keepalive for that long: down).
    pub no_activity_exp_interval_seconds: u64,
    /// Whether any TLOC has hopped port since start.
    pub port_hopped: bool,
    /// Seconds since the last port hop (IOS: since boot when none).
    pub time_since_last_port_hop_seconds: u64,
    /// Whether SAs use pairwise keys derived per (sending, receiving) TLOC.
    pub pairwise_keying: bool,
    /// The local TLOCs.
    pub tlocs: Vec<LocalTlocRow>,
}

/// `show sdwan control local-properties`, read by genieparser's
/// `ShowSdwanControlLocalProperties`; each TLOC's current port (after a
/// port hop) is its `PUBLIC PORT` and `PRIVATE PORT`.
///
/// Genie requires the certificate lines, which xdpsec has no use for (PSK
/// authentication): they show `Not Applicable`; organization-name is
/// `xdpsec`, domain-id 1, tls-port 0, dns-cache-ttl 0. Per TLOC the fixed
/// columns are VM 0, MAX CNTRL 1 (one control connection per TLOC),
/// RESTRICT/CONTROL/STUN `no/yes/no`, LR/LB `No/No`, NAT TYPE `N` (not
/// learned), VM CON PRF 5.
///
/// JSON: `{"personality","organization_name","dns_name","site_id",
/// "domain_id","protocol","tls_port","system_ip","chassis_num_unique_id",
/// "keygen_interval_seconds","retry_interval_seconds",
/// "no_activity_exp_interval_seconds","port_hopped",
/// "time_since_last_port_hop_seconds","pairwise_keying",
/// "number_vbond_peers","number_active_wan_interfaces",
/// "wan_interfaces":[{"interface","public_ipv4","public_port",
/// "private_ipv4","private_ipv6","private_port","vsmart","vmanage","color",
/// "state","max_cntrl","last_connection_seconds",
/// "spi_time_remaining_seconds","nat_type"}]}` (`port_hopped` and
/// `pairwise_keying` booleans, counts and ports numbers).
pub fn control_local_properties(p: &LocalProperties) -> (String, Value) {
    let active = p.tlocs.iter().filter(|t| t.state == "up").count();
    let yes_no = |b: bool, y: &'static str, n: &'static str| if b { y } else { n };
    // An empty name stands for a blank line: IOS groups the lines so.
    let props = [
        ("personality", "vedge".into()),
        ("sp-organization-name", "xdpsec".into()),
        ("organization-name", "xdpsec".into()),
        ("root-ca-chain-status", "Not Applicable".into()),
        ("", String::new()),
        ("certificate-status", "Not Applicable".into()),
        ("certificate-validity", "Not Applicable".into()),
        ("certificate-not-valid-before", "Not Applicable".into()),
        ("certificate-not-valid-after", "Not Applicable".into()),
        ("", String::new()),
        ("dns-name", p.dns_name.clone()),
        ("site-id", p.site_id.to_string()),
        ("domain-id", "1".into()),
        ("protocol", p.protocol.into()),
        ("tls-port", "0".into()),
        ("system-ip", p.system_ip.to_string()),
        ("chassis-num/unique-id", p.chassis_num.clone()),
        ("serial-num", "-NA-".into()),
        ("keygen-interval", uptime(p.keygen_interval_seconds)),
        ("retry-interval", uptime(p.retry_interval_seconds)),
        (
            "no-activity-exp-interval",
            uptime(p.no_activity_exp_interval_seconds),
        ),
        ("dns-cache-ttl", uptime(0)),
        ("port-hopped", yes_no(p.port_hopped, "TRUE", "FALSE").into()),
        (
            "time-since-last-port-hop",
            uptime(p.time_since_last_port_hop_seconds),
        ),
        (
            "pairwise-keying",
            yes_no(p.pairwise_keying, "Enabled", "Disabled").into(),
        ),
        ("device-role", "edge-router".into()),
        ("number-vbond-peers", "0".into()),
        ("number-active-wan-interfaces", active.to_string()),
    ];
    let mut t = String::new();
    for (k, v) in &props {
        if k.is_empty() {
            t.push('\n');
        } else {
            let _ = writeln!(t, "{k:<33} {v}");
        }
    }
    t += "\n NAT TYPE: E -- indicates End-point independent mapping\n           \
          A -- indicates Address-port dependent mapping\n           \
          N -- indicates Not learned\n           \
          Note: Requires minimum two vbonds to learn the NAT type\n\n";
    const W: [usize; 20] = [
        24, 15, 6, 15, 39, 7, 5, 16, 5, 5, 12, 6, 12, 11, 4, 3, 7, 0, 0, 0,
    ];
    let mut h = table_line(
        &W,
        &[
            "",
            "PUBLIC",
            "PUBLIC",
            "PRIVATE",
            "PRIVATE",
            "PRIVATE",
            "",
            "",
            "WAN",
            "MAX",
            "RESTRICT/",
            "",
            "LAST",
            "SPI TIME",
            "NAT",
            "VM",
            "",
            "BIND",
        ],
    );
    h += &table_line(
        &W,
        &[
            "INTERFACE",
            "IPv4",
            "PORT",
            "IPv4",
            "IPv6",
            "PORT",
            "VS/VM",
            "COLOR",
            "STATE",
            "CNTRL",
            "CONTROL/",
            "LR/LB",
            "CONNECTION",
            "REMAINING",
            "TYPE",
            "CON",
            "REG",
            "INTERFACE",
        ],
    );
    h += &table_line(
        &W,
        &[
            "", "", "", "", "", "", "", "", "", "", "STUN", "", "", "", "", "PRF", "IDs",
        ],
    );
    t += &h;
    t += &dashes(&h);
    let mut list = Vec::new();
    for r in &p.tlocs {
        let (v4, v6) = match r.address {
            IpAddr::V4(a) => (a.to_string(), "::".to_string()),
            IpAddr::V6(a) => ("0.0.0.0".to_string(), a.to_string()),
        };
        let port = r.port.to_string();
        t += &table_line(
            &W,
            &[
                &r.interface,
                &v4,
                &port,
                &v4,
                &v6,
                &port,
                &format!("{}/0", r.vsmart),
                &r.color,
                r.state,
                "1",
                "no/yes/no",
                "No/No",
                &uptime(r.last_connection_seconds),
                &uptime(r.spi_time_remaining_seconds),
                "N",
                "5",
                "Default",
                "N/A",
            ],
        );
        list.push(json!({
            "interface": r.interface,
            "public_ipv4": v4,
            "public_port": r.port,
            "private_ipv4": v4,
            "private_ipv6": v6,
            "private_port": r.port,
            "vsmart": r.vsmart,
            "vmanage": 0,
            "color": r.color,
            "state": r.state,
            "max_cntrl": 1,
            "last_connection_seconds": r.last_connection_seconds,
            "spi_time_remaining_seconds": r.spi_time_remaining_seconds,
            "nat_type": "N",
        }));
    }
    let j = json!({
        "personality": "vedge",
        "organization_name": "xdpsec",
        "dns_name": p.dns_name,
        "site_id": p.site_id,
        "domain_id": 1,
        "protocol": p.protocol,
        "tls_port": 0,
        "system_ip": p.system_ip.to_string(),
        "chassis_num_unique_id": p.chassis_num,
        "keygen_interval_seconds": p.keygen_interval_seconds,
        "retry_interval_seconds": p.retry_interval_seconds,
        "no_activity_exp_interval_seconds": p.no_activity_exp_interval_seconds,
        "port_hopped": p.port_hopped,
        "time_since_last_port_hop_seconds": p.time_since_last_port_hop_seconds,
        "pairwise_keying": p.pairwise_keying,
        "number_vbond_peers": 0,
        "number_active_wan_interfaces": active,
        "wan_interfaces": list,
    });
    (t, j)
}
