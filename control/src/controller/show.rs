//! The controller's show commands: IOS text in the layouts Cisco's
//! genieparser reads (`ShowSdwanOmpPeers`, `ShowSdwanOmpTlocs`,
//! `ShowSdwanControlConnections`) and the `--json` values. Pure functions
//! of the core's views, so they are tested without sockets.
use std::fmt::Write;

use serde_json::{Value, json};
use xdpsec_omp::controller::{ConnectionView, PeerView, RouteView, TlocView};

/// `D:HH:MM:SS`, as SD-WAN shows uptimes.
pub use crate::show::system::dhms_uptime as uptime;

/// `show sdwan omp peers`. The controller installs nothing itself, so
/// `I` is always 0 (as a vSmart shows).
pub fn omp_peers(peers: &[PeerView]) -> (String, Value) {
    let mut t = String::from(
        "R -> routes received\nI -> routes installed\nS -> routes sent\n\n\
                         DOMAIN    OVERLAY   SITE\n\
PEER             TYPE    ID        ID        ID        STATE    UPTIME           R/I/S\n\
------------------------------------------------------------------------------------------\n",
    );
    let mut list = Vec::new();
    for p in peers {
        // Domain and overlay id 1, as on a single-domain fabric.
        let _ = writeln!(
            t,
            "{:<16} {:<7} {:<9} {:<9} {:<9} {:<8} {:<16} {}/0/{}",
            p.system_ip.to_string(),
            p.peer_type,
            1,
            1,
            p.site_id,
            p.state,
            uptime(p.uptime_seconds),
            p.received,
            p.sent
        );
        list.push(json!({
            "system_ip": p.system_ip.to_string(),
            "peer_type": p.peer_type,
            "site_id": p.site_id,
            "state": p.state,
            "uptime_seconds": p.uptime_seconds,
            "received": p.received,
            "installed": 0,
            "sent": p.sent,
        }));
    }
    (t, json!({ "peers": list }))
}

/// `show sdwan omp tlocs`: one block per TLOC, the attributes a vSmart
/// shows (the encap key is `not set`: keys are never shown).
pub fn omp_tlocs(tlocs: &[TlocView]) -> (String, Value) {
    let mut t = String::new();
    let mut list = Vec::new();
    for v in tlocs {
        let stale = if v.status.contains("Stale") {
            "yes"
        } else {
            "not set"
        };
        let _ = write!(
            t,
            "---------------------------------------------------\n\
tloc entries for {sys}\n                {color}\n                {encap}\n\
---------------------------------------------------\n\
            RECEIVED FROM:\n\
peer            {sys}\n\
status          {status}\n\
loss-reason     not set\n\
lost-to-peer    not set\n\
lost-to-path-id not set\n\
    Attributes:\n\
    attribute-type    installed\n\
    encap-key         not set\n\
    encap-proto       0\n\
    encap-spi         {spi}\n\
    encap-auth        aes256-gcm\n\
    encap-encrypt     aes256-gcm\n\
    public-ip         {ip}\n\
    public-port       {port}\n\
    private-ip        {ip}\n\
    private-port      {port}\n\
    bfd-status        up\n\
    domain-id         not set\n\
    site-id           not set\n\
    overlay-id        not set\n\
    preference        0\n\
    tag               not set\n\
    stale             {stale}\n\
    weight            1\n\
    version           1\n\
    gen-id            0x80000001\n\
    carrier           default\n\
    restrict          0\n\
    on-demand         0\n\
    groups            [ 0 ]\n\
    bandwidth         0\n\
    qos-group         default-group\n\
    border            not set\n\
    unknown-attr-len  not set\n\n",
            sys = v.system_ip,
            color = v.color,
            encap = v.encap,
            status = v.status,
            spi = v.spi,
            ip = v.public_ip,
            port = v.public_port,
        );
        list.push(json!({
            "system_ip": v.system_ip.to_string(),
            "color": v.color,
            "encap": v.encap,
            "public_ip": v.public_ip.to_string(),
            "public_port": v.public_port,
            "spi": v.spi,
            "status": v.status,
        }));
    }
    (t, json!({ "tlocs": list }))
}

/// `show sdwan omp routes`: one row per (prefix, TLOC color).
pub fn omp_routes(routes: &[RouteView]) -> (String, Value) {
    let mut t = String::from(
        "Code:\nC   -> chosen\nR   -> resolved\nStale -> held by graceful restart\n\n\
VPN    PREFIX                   FROM PEER        SITE       STATUS     TLOC IP          COLOR            ENCAP\n\
-----------------------------------------------------------------------------------------------------------------\n",
    );
    let mut list = Vec::new();
    for r in routes {
        for c in &r.tloc_colors {
            let _ = writeln!(
                t,
                "{:<6} {:<24} {:<16} {:<10} {:<10} {:<16} {:<16} ipsec",
                1,
                r.prefix.to_string(),
                r.originator.to_string(),
                r.site_id,
                r.status,
                r.originator.to_string(),
                c
            );
        }
        list.push(json!({
            "prefix": r.prefix.to_string(),
            "originator": r.originator.to_string(),
            "site_id": r.site_id,
            "tloc_colors": r.tloc_colors,
            "status": r.status,
        }));
    }
    (t, json!({ "routes": list }))
}

/// `show sdwan control connections` on the controller: one row per edge
/// connection (a connection still in its handshake shows `challenge` and,
/// before the edge's Hello, `-` for what is not known yet).
pub fn control_connections(conns: &[ConnectionView]) -> (String, Value) {
    let mut t = String::from(
        "                                                                     PEER                     PEER\n\
PEER    PEER PEER            SITE       DOMAIN PEER                    PRIV  PEER                    PUB                                      GROUP\n\
TYPE    PROT SYSTEM IP       ID         ID     PRIVATE IP              PORT  PUBLIC IP               PORT  LOCAL COLOR     PROXY STATE     UPTIME      ID\n\
--------------------------------------------------------------------------------------------------------------------------------------------------------\n",
    );
    let mut list = Vec::new();
    for c in conns {
        let sys = c.system_ip.map_or("-".to_string(), |s| s.to_string());
        let color = c.color.clone().unwrap_or_else(|| "-".into());
        let ip = c.remote.ip().to_string();
        let _ = writeln!(
            t,
            "{:<7} {:<4} {:<15} {:<10} {:<6} {:<23} {:<5} {:<23} {:<5} {:<15} {:<5} {:<9} {:<11} 0",
            c.peer_type,
            "tls",
            sys,
            c.site_id.unwrap_or(0),
            1,
            ip,
            c.remote.port(),
            ip,
            c.remote.port(),
            color,
            "No",
            c.state,
            uptime(c.uptime_seconds),
        );
        list.push(json!({
            "peer_type": c.peer_type,
            "peer_protocol": "tls",
            "system_ip": c.system_ip.map(|s| s.to_string()),
            "site_id": c.site_id,
            "color": c.color,
            "state": c.state,
            "uptime_seconds": c.uptime_seconds,
        }));
    }
    (t, json!({ "connections": list }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_days_hours_minutes_seconds() {
        assert_eq!(uptime(0), "0:00:00:00");
        assert_eq!(uptime(86_400 * 6 + 13 * 3600 + 57 * 60 + 28), "6:13:57:28");
    }

    #[test]
    fn tlocs_never_carry_a_key_field() {
        let v = TlocView {
            system_ip: "192.0.2.1".parse().unwrap(),
            color: "biz-internet".into(),
            encap: "ipsec",
            public_ip: "198.51.100.2".parse().unwrap(),
            public_port: 12346,
            spi: 0x1234,
            status: "C,R",
        };
        let (text, j) = omp_tlocs(&[v]);
        assert!(text.contains("encap-spi         4660\n"));
        assert!(text.contains("encap-key         not set\n"));
        let mut keys: Vec<&String> = j["tlocs"][0].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "color",
                "encap",
                "public_ip",
                "public_port",
                "spi",
                "status",
                "system_ip"
            ]
        );
    }
}
