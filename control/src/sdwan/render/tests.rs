//! The SD-WAN renderers' layouts and JSON, and genieparser reading them.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Command,
};

use serde_json::{Value, json};

use super::*;
use crate::show::omp::uptime;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A local TLOC of the sample edge: (color, address, port).
type Local = (&'static str, &'static str, u16);
/// A remote TLOC: (system-ip, site, color, address, port).
type Remote = (&'static str, u32, &'static str, &'static str, u16);

/// The local TLOCs of the sample edge 192.0.2.1.
const LOCAL: [Local; 2] = [
    ("biz-internet", "198.51.100.1", 12346),
    ("mpls", "203.0.113.1", 12347),
];

/// The sample fabric's remote TLOCs: three peers, one with two colors,
/// one after a port hop.
const REMOTE: [Remote; 4] = [
    ("192.0.2.2", 200, "biz-internet", "198.51.100.2", 12346),
    ("192.0.2.3", 300, "biz-internet", "198.51.100.3", 12346),
    ("192.0.2.3", 300, "mpls", "203.0.113.3", 12347),
    ("192.0.2.4", 400, "biz-internet", "198.51.100.4", 12366),
];

/// Every (local TLOC, remote TLOC) pair, numbered, as the edge builds a
/// tunnel for each.
fn pairs() -> Vec<(usize, Local, Remote)> {
    let mut v = Vec::new();
    for l in LOCAL {
        for r in REMOTE {
            v.push((v.len(), l, r));
        }
    }
    v
}

/// One BFD session per tunnel; the one from mpls to 192.0.2.4 is down.
fn bfd_rows() -> Vec<BfdSessionRow> {
    pairs()
        .into_iter()
        .map(|(i, l, r)| {
            let down = l.0 == "mpls" && r.0 == "192.0.2.4";
            BfdSessionRow {
                system_ip: v4(r.0),
                site_id: r.1,
                state: if down { "down" } else { "up" },
                source_color: l.0.into(),
                remote_color: r.2.into(),
                source_ip: ip(l.1),
                destination_ip: ip(r.3),
                destination_port: r.4,
                encap: "ipsec",
                multiplier: 7,
                tx_interval_ms: 1000,
                uptime_seconds: if down { 0 } else { 3600 + i as u64 * 61 },
                transitions: if down { 3 } else { i as u64 % 3 },
            }
        })
        .collect()
}

fn inbound_rows() -> Vec<InboundConnectionRow> {
    pairs()
        .into_iter()
        .map(|(_, l, r)| InboundConnectionRow {
            source_ip: ip(r.3),
            source_port: r.4,
            destination_ip: ip(l.1),
            destination_port: l.2,
            remote_tloc: v4(r.0),
            remote_tloc_color: r.2.into(),
            local_tloc: v4("192.0.2.1"),
            local_tloc_color: l.0.into(),
            encryption_algorithm: "AES-GCM-256",
            tc_spis: 1,
        })
        .collect()
}

fn outbound_rows() -> Vec<OutboundConnectionRow> {
    pairs()
        .into_iter()
        .map(|(i, l, r)| OutboundConnectionRow {
            source_ip: ip(l.1),
            source_port: l.2,
            destination_ip: ip(r.3),
            destination_port: r.4,
            spi: 0x2000 + i as u32,
            tunnel_mtu: 1438,
            remote_tloc: v4(r.0),
            remote_tloc_color: r.2.into(),
            authentication: "AES-GCM-256",
            key_hash: key_hash(&[i as u8; 32]),
            encryption_algorithm: "AES-GCM-256",
            tc_spis: 1,
        })
        .collect()
}

/// The biz-internet TLOC during a rekey grace: old and new SPI.
fn local_sa_rows() -> Vec<LocalSaRow> {
    [259, 260]
        .into_iter()
        .map(|spi| LocalSaRow {
            tloc_address: v4("192.0.2.1"),
            tloc_color: "biz-internet".into(),
            spi,
            source_ip: ip("198.51.100.1"),
            source_port: 12346,
            key_hash: key_hash(&[spi as u8; 32]),
        })
        .collect()
}

fn tunnel_rows() -> Vec<TunnelStatisticsRow> {
    pairs()
        .into_iter()
        .map(|(i, l, r)| {
            let n = i as u64;
            TunnelStatisticsRow {
                protocol: "ipsec",
                src_ip: ip(l.1),
                dest_ip: ip(r.3),
                src_port: l.2,
                dst_port: r.4,
                remote_sys_ip: v4(r.0),
                local_color: l.0.into(),
                remote_color: r.2.into(),
                tunnel_mtu: 1438,
                tx_pkts: 1000 + n,
                tx_octets: 84_000 + n,
                rx_pkts: 990 + n,
                rx_octets: 83_000 + n,
                tcp_mss_adjust: 0,
                ipv6_tx_pkts: n,
                ipv6_tx_octets: 100 * n,
                ipv6_rx_pkts: 2 * n,
                ipv6_rx_octets: 200 * n,
                ipsec_decrypt_inbound: 990 + n,
                ipsec_rx_auth_failures: n % 2,
                ipsec_rx_failures: 7 * n,
                ipsec_encrypt_outbound: 1000 + n,
                ipsec_tx_auth_failures: 0,
                ipsec_tx_failures: n % 3,
            }
        })
        .collect()
}

/// The sample edge after a port hop on mpls, whose connection is down.
fn local_properties() -> LocalProperties {
    LocalProperties {
        system_ip: v4("192.0.2.1"),
        site_id: 100,
        dns_name: "198.51.100.10:23456".into(),
        protocol: "tcp",
        chassis_num: "edge1".into(),
        keygen_interval_seconds: 86_400,
        retry_interval_seconds: 1,
        no_activity_exp_interval_seconds: 12,
        port_hopped: true,
        time_since_last_port_hop_seconds: 75,
        pairwise_keying: true,
        tlocs: vec![
            LocalTlocRow {
                interface: "xs-e1-biz".into(),
                address: ip("198.51.100.1"),
                port: 12346,
                vsmart: 1,
                color: "biz-internet".into(),
                state: "up",
                last_connection_seconds: 600,
                spi_time_remaining_seconds: 85_800,
            },
            LocalTlocRow {
                interface: "xs-e1-mpls".into(),
                address: ip("203.0.113.1"),
                port: 12367,
                vsmart: 0,
                color: "mpls".into(),
                state: "down",
                last_connection_seconds: 0,
                spi_time_remaining_seconds: 85_799,
            },
        ],
    }
}

fn summary() -> BfdSummary {
    BfdSummary {
        sessions_total: 8,
        sessions_up: 7,
        sessions_max: 8,
        sessions_flap: 4,
        poll_interval_ms: 600_000,
    }
}

/// The sorted field names of a JSON list's first row.
fn row_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(k: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = k.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

#[test]
fn sdwan_show_bfd_sessions_layout_and_json() {
    let rows = bfd_rows();
    let (t, j) = bfd_sessions(&rows);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[1],
        "SYSTEM IP        SITE ID  STATE       COLOR            COLOR            SOURCE IP        \
         IP               PORT        ENCAP  MULTIPLIER  INTERVAL(msec)  UPTIME        TRANSITIONS"
    );
    assert!(lines[0].starts_with(&format!("{:38}SOURCE TLOC      REMOTE TLOC", "")));
    assert_eq!(lines[2], "-".repeat(lines[1].len()));
    assert_eq!(
        lines[3],
        "192.0.2.2        200      up          biz-internet     biz-internet     198.51.100.1     \
         198.51.100.2     12346       ipsec  7           1000            0:01:00:00    0"
    );
    assert_eq!(lines.len(), 3 + rows.len());
    assert!(lines[3 + 7].contains(" down "));
    assert!(t.lines().all(|l| l == l.trim_end()), "no trailing blanks");
    let s = &j["sessions"];
    assert_eq!(s.as_array().unwrap().len(), rows.len());
    assert_eq!(
        row_keys(&s[0]),
        sorted(&[
            "system_ip",
            "site_id",
            "state",
            "source_color",
            "remote_color",
            "source_ip",
            "destination_ip",
            "destination_port",
            "encap",
            "multiplier",
            "tx_interval_ms",
            "uptime_seconds",
            "transitions"
        ])
    );
    assert_eq!(s[7]["state"], "down");
    assert_eq!(s[0]["destination_port"], 12346);
    assert_eq!(s[0]["uptime_seconds"], 3600);
}

#[test]
fn sdwan_show_bfd_summary_layout_and_json() {
    let (t, j) = bfd_summary(&summary());
    assert_eq!(
        t,
        "sessions-total         8\nsessions-up            7\nsessions-max           8\n\
         sessions-flap          4\npoll-interval          600000\n"
    );
    assert_eq!(
        j,
        json!({"sessions_total": 8, "sessions_up": 7, "sessions_max": 8,
               "sessions_flap": 4, "poll_interval": 600000})
    );
}

#[test]
fn sdwan_show_inbound_connections_layout_and_json() {
    let (t, j) = ipsec_inbound_connections(&inbound_rows());
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[1],
        format!(
            "{:40}{:8}{:40}{:8}TLOC ADDRESS     TLOC COLOR       TLOC ADDRESS     TLOC COLOR       \
             ENCRYPTION ALGORITHM  TC SPIs",
            "IP", "PORT", "IP", "PORT"
        )
    );
    assert_eq!(
        lines[3],
        format!(
            "{:40}{:8}{:40}{:8}192.0.2.2        biz-internet     192.0.2.1        biz-internet     \
             AES-GCM-256           1",
            "198.51.100.2", "12346", "198.51.100.1", "12346"
        )
    );
    let c = &j["connections"];
    assert_eq!(c.as_array().unwrap().len(), 8);
    assert_eq!(
        row_keys(&c[0]),
        sorted(&[
            "source_ip",
            "source_port",
            "destination_ip",
            "destination_port",
            "remote_tloc",
            "remote_tloc_color",
            "local_tloc",
            "local_tloc_color",
            "encryption_algorithm",
            "tc_spi"
        ])
    );
    assert_eq!(c[4]["destination_port"], 12347);
}

#[test]
fn sdwan_show_outbound_connections_layout_and_json() {
    let rows = outbound_rows();
    let (t, j) = ipsec_outbound_connections(&rows);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[1].ends_with(
        "PORT    SPI     TUNNEL MTU  TLOC ADDRESS     TLOC COLOR       USED           \
         KEY HASH   ENCRYPTION ALGORITHM  TC SPIs"
    ));
    assert_eq!(
        lines[6],
        format!(
            "{:40}{:8}{:40}{:8}8195    1438        192.0.2.4        biz-internet     \
             AES-GCM-256    {:10} AES-GCM-256           1",
            "198.51.100.1", "12346", "198.51.100.4", "12366", rows[3].key_hash
        )
    );
    let c = &j["connections"];
    assert_eq!(
        row_keys(&c[0]),
        sorted(&[
            "source_ip",
            "source_port",
            "destination_ip",
            "destination_port",
            "spi",
            "tunnel_mtu",
            "remote_tloc",
            "remote_tloc_color",
            "authentication",
            "key_hash",
            "encryption_algorithm",
            "tc_spi"
        ])
    );
    assert_eq!(c[3]["spi"], 0x2003);
}

#[test]
fn sdwan_show_key_hash_is_masked_and_tells_keys_apart() {
    let a = key_hash(&[1; 32]);
    assert_eq!(a.len(), 9);
    assert!(a.starts_with("*****"));
    assert!(a[5..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, key_hash(&[2; 32]));
    assert_eq!(a, key_hash(&[1; 32]));
}

#[test]
fn sdwan_show_local_sa_layout_and_json() {
    let mut rows = local_sa_rows();
    rows.push(LocalSaRow {
        source_ip: ip("2001:db8::1"),
        ..rows[0].clone()
    });
    let (t, j) = ipsec_local_sa(&rows);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0],
        format!("{:42}SOURCE           SOURCE{:34}SOURCE", "", "")
    );
    assert_eq!(
        lines[1],
        "TLOC ADDRESS     TLOC COLOR       SPI     IPv4             IPv6                                    PORT    KEY HASH"
    );
    assert_eq!(
        lines[3],
        format!(
            "192.0.2.1        biz-internet     259     198.51.100.1     {:40}12346   {}",
            "::", rows[0].key_hash
        )
    );
    assert!(lines[5].contains(" 0.0.0.0          2001:db8::1 "));
    let s = &j["local_sa"];
    assert_eq!(
        row_keys(&s[0]),
        sorted(&[
            "tloc_address",
            "tloc_color",
            "spi",
            "source_ipv4",
            "source_ipv6",
            "source_port",
            "key_hash"
        ])
    );
    assert_eq!(s[1]["spi"], 260);
    assert_eq!(s[2]["source_ipv6"], "2001:db8::1");
    assert_eq!(s[2]["source_ipv4"], "0.0.0.0");
}

#[test]
fn sdwan_show_tunnel_statistics_layout_and_json() {
    let rows = tunnel_rows();
    let (t, j) = tunnel_statistics(&rows);
    let block: Vec<&str> = t.lines().take(25).collect();
    assert_eq!(
        block[0],
        "tunnel stats ipsec 198.51.100.1 198.51.100.2 12346 12346"
    );
    assert_eq!(block[1], " system-ip              192.0.2.2");
    assert_eq!(block[2], " local-color            biz-internet");
    assert_eq!(block[5], " tx_pkts                1000");
    assert_eq!(block[18], " ipsec-decrypt-inbound  990");
    assert_eq!(
        block[24],
        "tunnel stats ipsec 198.51.100.1 198.51.100.3 12346 12346"
    );
    assert_eq!(t.lines().count(), 24 * rows.len());
    let r = &j["tunnels"][1];
    assert_eq!(r["ipsec_rx_failures"], 7);
    assert_eq!(r["remote_sys_ip"], "192.0.2.3");
    assert_eq!(row_keys(r).len(), 24);
}

#[test]
fn sdwan_show_local_properties_shows_the_current_port() {
    let (t, j) = control_local_properties(&local_properties());
    assert!(t.starts_with("personality                       vedge\n"));
    assert!(t.contains("\nsystem-ip                         192.0.2.1\n"));
    assert!(t.contains("\nport-hopped                       TRUE\n"));
    assert!(t.contains("\ntime-since-last-port-hop          0:00:01:15\n"));
    assert!(t.contains("\nnumber-active-wan-interfaces      1\n"));
    let row = t.lines().find(|l| l.starts_with("xs-e1-mpls")).unwrap();
    assert_eq!(
        row,
        format!(
            "{:25}{:16}{:7}{:16}{:40}{:8}{:6}{:17}{:6}{:6}{:13}{:7}{:13}{:12}{:5}{:4}{:8}N/A",
            "xs-e1-mpls",
            "203.0.113.1",
            "12367",
            "203.0.113.1",
            "::",
            "12367",
            "0/0",
            "mpls",
            "down",
            "1",
            "no/yes/no",
            "No/No",
            "0:00:00:00",
            "0:23:49:59",
            "N",
            "5",
            "Default"
        )
    );
    assert_eq!(j["port_hopped"], true);
    assert_eq!(j["number_active_wan_interfaces"], 1);
    assert_eq!(j["wan_interfaces"][1]["public_port"], 12367);
    assert_eq!(j["wan_interfaces"][1]["private_port"], 12367);
    assert_eq!(j["wan_interfaces"][0]["vsmart"], 1);
}

/// Genie's structures, built from our `--json` values: what genie must
/// read from our text. Its tables keep one entry per key (the last or
/// the first row, as each parser does); values are text where genie
/// holds text.
fn genie_expected() -> Value {
    let mut bfd = serde_json::Map::new();
    for s in bfd_sessions(&bfd_rows()).1["sessions"].as_array().unwrap() {
        let sys = s["system_ip"].as_str().unwrap();
        let color = s["source_color"].as_str().unwrap();
        let text = |k: &str| Value::String(s[k].to_string().trim_matches('"').to_string());
        let e = bfd
            .entry(sys)
            .or_insert_with(|| json!({"source_tloc_color": {}}));
        // Later rows of a (system-ip, color) overwrite, as in genie.
        e["source_tloc_color"][color] = json!({
            "site_id": text("site_id"),
            "state": text("state"),
            "source_ip": text("source_ip"),
            "remote_tloc_color": text("remote_color"),
            "destination_public_ip": text("destination_ip"),
            "destination_public_port": text("destination_port"),
            "encapsulation": text("encap"),
            "detect_multiplier": text("multiplier"),
            "tx_interval": text("tx_interval_ms"),
            "uptime": uptime(s["uptime_seconds"].as_u64().unwrap()),
            "transitions": text("transitions"),
        });
    }

    let mut inbound = json!({"source_ip": {}});
    for c in ipsec_inbound_connections(&inbound_rows()).1["connections"]
        .as_array()
        .unwrap()
    {
        let src = c["source_ip"].as_str().unwrap();
        let dst = c["destination_ip"].as_str().unwrap();
        let by_src = inbound["source_ip"]
            .as_object_mut()
            .unwrap()
            .entry(src)
            .or_insert_with(|| json!({"destination_ip": {}}));
        // The first row of a (source, destination) stays, as in genie.
        by_src["destination_ip"]
            .as_object_mut()
            .unwrap()
            .entry(dst)
            .or_insert_with(|| {
                let mut v = c.clone();
                v.as_object_mut().unwrap().remove("source_ip");
                v.as_object_mut().unwrap().remove("destination_ip");
                v
            });
    }

    let mut outbound = json!({"source_ip": {}});
    for c in ipsec_outbound_connections(&outbound_rows()).1["connections"]
        .as_array()
        .unwrap()
    {
        let src = c["source_ip"].as_str().unwrap();
        let dst = c["destination_ip"].as_str().unwrap();
        let by_src = outbound["source_ip"]
            .as_object_mut()
            .unwrap()
            .entry(src)
            .or_insert_with(|| json!({"destination_ip": {}}));
        by_src["destination_ip"]
            .as_object_mut()
            .unwrap()
            .entry(dst)
            .or_insert_with(|| {
                let mut v = c.clone();
                v.as_object_mut().unwrap().remove("source_ip");
                v.as_object_mut().unwrap().remove("destination_ip");
                v
            });
    }

    // Genie labels local-sa rows by position: first inbound, second outbound.
    let sa = ipsec_local_sa(&local_sa_rows()).1;
    let sa_entry = |r: &Value| {
        let mut v = r.clone();
        v.as_object_mut().unwrap().remove("tloc_address");
        v
    };
    let local_sa = json!({"local_sa": {
        "inbound": sa_entry(&sa["local_sa"][0]),
        "outbound": sa_entry(&sa["local_sa"][1]),
    }});

    let mut tunnels = json!({"tunnel": {}});
    for r in tunnel_statistics(&tunnel_rows()).1["tunnels"]
        .as_array()
        .unwrap()
    {
        let src = r["src_ip"].as_str().unwrap();
        let dst = r["dest_ip"].as_str().unwrap();
        let by_src = tunnels["tunnel"]
            .as_object_mut()
            .unwrap()
            .entry(src)
            .or_insert_with(|| json!({"remote": {}}));
        by_src["remote"][dst] = json!({
            "src_port": r["src_port"],
            "dst_port": r["dst_port"],
            "local_color": r["local_color"],
            "remote_color": r["remote_color"],
            "tunnel_mtu": r["tunnel_mtu"],
            "tcp_mss_adjust": r["tcp_mss_adjust"],
            "tx": {"tx_pkts": r["tx_pkts"], "tx_octets": r["tx_octets"],
                   "tx_ipv4_mcast_pkts": 0, "tx_ipv4_mcast_octets": 0},
            "rx": {"rx_pkts": r["rx_pkts"], "rx_octets": r["rx_octets"],
                   "rx_ipv4_mcast_pkts": 0, "rx_ipv4_mcast_octets": 0},
            "ipv6_tx": {"ipv6_tx_pkts": r["ipv6_tx_pkts"],
                        "ipv6_tx_octets": r["ipv6_tx_octets"]},
            "ipv6_rx": {"ipv6_rx_pkts": r["ipv6_rx_pkts"],
                        "ipv6_rx_octets": r["ipv6_rx_octets"]},
            "ipsec": {
                "ipsec_decrypt_inbound": r["ipsec_decrypt_inbound"],
                "ipsec_rx_auth_failures": r["ipsec_rx_auth_failures"],
                "ipsec_rx_failures": r["ipsec_rx_failures"],
                "ipsec_encrypt_outbound": r["ipsec_encrypt_outbound"],
                "ipsec_tx_auth_failures": r["ipsec_tx_auth_failures"],
                "ipsec_tx_failures": r["ipsec_tx_failures"],
            },
        });
    }

    let p = control_local_properties(&local_properties()).1;
    let text = |v: &Value| Value::String(v.to_string().trim_matches('"').to_string());
    let secs = |v: &Value| Value::String(uptime(v.as_u64().unwrap()));
    let mut wan = serde_json::Map::new();
    for w in p["wan_interfaces"].as_array().unwrap() {
        let mut e = serde_json::Map::new();
        for k in [
            "public_ipv4",
            "public_port",
            "private_ipv4",
            "private_ipv6",
            "private_port",
            "vsmart",
            "vmanage",
            "color",
            "state",
            "max_cntrl",
            "nat_type",
        ] {
            e.insert(k.into(), text(&w[k]));
        }
        e.insert(
            "last_connection".into(),
            secs(&w["last_connection_seconds"]),
        );
        e.insert(
            "spi_time_remaining".into(),
            secs(&w["spi_time_remaining_seconds"]),
        );
        wan.insert(w["interface"].as_str().unwrap().into(), Value::Object(e));
    }
    let mut props = serde_json::Map::new();
    for k in [
        "personality",
        "organization_name",
        "dns_name",
        "site_id",
        "domain_id",
        "protocol",
        "tls_port",
        "system_ip",
        "chassis_num_unique_id",
        "number_vbond_peers",
        "number_active_wan_interfaces",
    ] {
        props.insert(k.into(), text(&p[k]));
    }
    for k in [
        "keygen_interval",
        "retry_interval",
        "no_activity_exp_interval",
        "time_since_last_port_hop",
    ] {
        props.insert(k.into(), secs(&p[format!("{k}_seconds").as_str()]));
    }
    let flag = |k: &str, y: &str, n: &str| json!(if p[k] == true { y } else { n });
    props.insert("port_hopped".into(), flag("port_hopped", "TRUE", "FALSE"));
    props.insert(
        "pairwise_keying".into(),
        flag("pairwise_keying", "Enabled", "Disabled"),
    );
    props.insert("wan_interfaces".into(), Value::Object(wan));

    json!({
        "bfd_sessions": {"system_ip": bfd},
        "bfd_summary": bfd_summary(&summary()).1,
        "ipsec_inbound_connections": inbound,
        "ipsec_outbound_connections": outbound,
        "ipsec_local_sa": local_sa,
        "tunnel_statistics": tunnels,
        "control_local_properties": props,
    })
}

/// Every difference between `want` and `got`: for objects, each key of
/// `want` (and, where `exact`, no key more); leaves must be equal.
fn differences(path: &str, want: &Value, got: &Value, exact: bool, diff: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => differences(&format!("{path}.{k}"), wv, gv, exact, diff),
                    None => diff.push(format!("{path}.{k}: missing in genie's parse")),
                }
            }
            if exact {
                for k in g.keys().filter(|k| !w.contains_key(*k)) {
                    diff.push(format!("{path}.{k}: genie has it, --json does not"));
                }
            }
        }
        _ if want != got => diff.push(format!("{path}: genie read {got}, --json says {want}")),
        _ => {}
    }
}

/// The project's venv python (XDPSEC_VENV, else the workspace's .venv).
fn venv_python() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var("XDPSEC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join(".venv"))
        .join("bin/python")
}

/// Cisco's genieparser reads each renderer's text into the values its
/// `--json` gives. Fails (never skips) when genie is missing.
#[test]
fn sdwan_show_genie_reads_what_json_says() {
    let props = control_local_properties(&local_properties());
    let case = json!({
        "bfd_sessions": bfd_sessions(&bfd_rows()).0,
        "bfd_summary": bfd_summary(&summary()).0,
        "ipsec_inbound_connections": ipsec_inbound_connections(&inbound_rows()).0,
        "ipsec_outbound_connections": ipsec_outbound_connections(&outbound_rows()).0,
        "ipsec_local_sa": ipsec_local_sa(&local_sa_rows()).0,
        "tunnel_statistics": tunnel_statistics(&tunnel_rows()).0,
        "control_local_properties": props.0,
    });
    let dir = std::env::temp_dir().join(format!("xdpsec-sdwan-show-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("cases.json");
    std::fs::write(&input, json!({ "cases": [case] }).to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/py/genie_parse.py");
    let py = venv_python();
    let out = Command::new("timeout")
        .arg("120")
        .arg(&py)
        .arg(&script)
        .arg(&input)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.unwrap_or_else(|e| panic!("running {}: {e}", py.display()));
    assert!(
        out.status.success(),
        "genie_parse.py with {} failed ({}): is genie installed in the venv \
         (`cargo xtask setup`)?\n{}",
        py.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    let parsed = &parsed[0];
    let want = genie_expected();
    let mut diff = Vec::new();
    for (name, w) in want.as_object().unwrap() {
        let got = &parsed[name];
        if let Some(e) = got.get("error") {
            diff.push(format!("{name}: genie could not parse: {e}"));
            continue;
        }
        // Local properties: genie also holds the fixed lines (certificates, ...).
        let exact = name != "control_local_properties";
        differences(name, w, &got["parsed"], exact, &mut diff);
    }
    // And the tables' row keys: all there, none more.
    let wan = &parsed["control_local_properties"]["parsed"]["wan_interfaces"];
    assert_eq!(wan.as_object().map(|o| o.len()), Some(2), "{wan}");
    assert!(diff.is_empty(), "genie differs:\n{}", diff.join("\n"));
}
