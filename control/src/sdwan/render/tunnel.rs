//! `show sdwan tunnel statistics`.
use std::{
    fmt::Write,
    net::{IpAddr, Ipv4Addr},
};

use serde_json::{Value, json};

/// One tunnel's counters, from a local TLOC to a remote TLOC.
#[derive(Debug, Clone)]
pub struct TunnelStatisticsRow {
    /// `ipsec`.
    pub protocol: &'static str,
    /// The local TLOC's address.
    pub src_ip: IpAddr,
    /// The remote TLOC's public address.
    pub dest_ip: IpAddr,
    /// The local TLOC's port.
    pub src_port: u16,
    /// The remote TLOC's public port.
    pub dst_port: u16,
    /// The remote edge's system-ip.
    pub remote_sys_ip: Ipv4Addr,
    /// The local TLOC's color.
    pub local_color: String,
    /// The remote TLOC's color.
    pub remote_color: String,
    /// The tunnel's MTU (inner packets).
    pub tunnel_mtu: u16,
    /// Packets sent into the tunnel.
    pub tx_pkts: u64,
    /// Octets sent into the tunnel.
    pub tx_octets: u64,
    /// Packets received from the tunnel.
    pub rx_pkts: u64,
    /// Octets received from the tunnel.
    pub rx_octets: u64,
    /// The TCP MSS the tunnel clamps to (0: none).
    pub tcp_mss_adjust: u16,
    /// Of `tx_pkts`, inner IPv6 packets.
    pub ipv6_tx_pkts: u64,
    /// Of `tx_octets`, inner IPv6 octets.
    pub ipv6_tx_octets: u64,
    /// Of `rx_pkts`, inner IPv6 packets.
    pub ipv6_rx_pkts: u64,
    /// Of `rx_octets`, inner IPv6 octets.
    pub ipv6_rx_octets: u64,
    /// Packets decrypted on the tunnel's inbound SAs.
    pub ipsec_decrypt_inbound: u64,
    /// Inbound packets dropped for a failed ICV.
    pub ipsec_rx_auth_failures: u64,
    /// Inbound packets dropped for any other reason (replay, ...).
    pub ipsec_rx_failures: u64,
    /// Packets encrypted on the tunnel's outbound SA.
    pub ipsec_encrypt_outbound: u64,
    /// Outbound authentication failures (always 0 with GCM here).
    pub ipsec_tx_auth_failures: u64,
    /// Outbound packets dropped (no SA, ...).
    pub ipsec_tx_failures: u64,
}

/// `show sdwan tunnel statistics`, read by genieparser's
/// `ShowSdwanTunnelStatistics`: one `tunnel stats` block per tunnel, as
/// IOS XE prints it, the IPsec counters included (as the full command
/// shows them; the FEC, BFD-echo and packet-duplication parts are left out:
/// xdpsec has none of them).
///
/// JSON: `{"tunnels":[{"protocol","src_ip","dest_ip","src_port","dst_port",
/// "remote_sys_ip","local_color","remote_color","tunnel_mtu","tx_pkts",
/// "tx_octets","rx_pkts","rx_octets","tcp_mss_adjust","ipv6_tx_pkts",
/// "ipv6_tx_octets","ipv6_rx_pkts","ipv6_rx_octets",
/// "ipsec_decrypt_inbound","ipsec_rx_auth_failures","ipsec_rx_failures",
/// "ipsec_encrypt_outbound","ipsec_tx_auth_failures","ipsec_tx_failures"}]}`.
/// Genie keys it by local and remote address (the last block of a pair
/// wins) and drops the `system-ip` line (its value pattern has no dots).
pub fn tunnel_statistics(rows: &[TunnelStatisticsRow]) -> (String, Value) {
    let mut t = String::new();
    let mut list = Vec::new();
    for r in rows {
        let _ = writeln!(
            t,
            "tunnel stats {} {} {} {} {}",
            r.protocol, r.src_ip, r.dest_ip, r.src_port, r.dst_port
        );
        let fields = [
            ("system-ip", r.remote_sys_ip.to_string()),
            ("local-color", r.local_color.clone()),
            ("remote-color", r.remote_color.clone()),
            ("tunnel-mtu", r.tunnel_mtu.to_string()),
            ("tx_pkts", r.tx_pkts.to_string()),
            ("tx_octets", r.tx_octets.to_string()),
            ("rx_pkts", r.rx_pkts.to_string()),
            ("rx_octets", r.rx_octets.to_string()),
            ("tcp-mss-adjust", r.tcp_mss_adjust.to_string()),
            ("ipv6_tx_pkts", r.ipv6_tx_pkts.to_string()),
            ("ipv6_tx_octets", r.ipv6_tx_octets.to_string()),
            ("ipv6_rx_pkts", r.ipv6_rx_pkts.to_string()),
            ("ipv6_rx_octets", r.ipv6_rx_octets.to_string()),
            // xdpsec carries no multicast: IOS's multicast counters stay 0
            // (genie requires them in the tx and rx groups).
            ("tx_ipv4_mcast_pkts", "0".into()),
            ("tx_ipv4_mcast_octets", "0".into()),
            ("rx_ipv4_mcast_pkts", "0".into()),
            ("rx_ipv4_mcast_octets", "0".into()),
            ("ipsec-decrypt-inbound", r.ipsec_decrypt_inbound.to_string()),
            (
                "ipsec-rx-auth-failures",
                r.ipsec_rx_auth_failures.to_string(),
            ),
            ("ipsec-rx-failures", r.ipsec_rx_failures.to_string()),
            (
                "ipsec-encrypt-outbound",
                r.ipsec_encrypt_outbound.to_string(),
            ),
            (
                "ipsec-tx-auth-failures",
                r.ipsec_tx_auth_failures.to_string(),
            ),
            ("ipsec-tx-failures", r.ipsec_tx_failures.to_string()),
        ];
        for (k, v) in &fields {
            let _ = writeln!(t, " {k:<22} {v}");
        }
        list.push(json!({
            "protocol": r.protocol,
            "src_ip": r.src_ip.to_string(),
            "dest_ip": r.dest_ip.to_string(),
            "src_port": r.src_port,
            "dst_port": r.dst_port,
            "remote_sys_ip": r.remote_sys_ip.to_string(),
            "local_color": r.local_color,
            "remote_color": r.remote_color,
            "tunnel_mtu": r.tunnel_mtu,
            "tx_pkts": r.tx_pkts,
            "tx_octets": r.tx_octets,
            "rx_pkts": r.rx_pkts,
            "rx_octets": r.rx_octets,
            "tcp_mss_adjust": r.tcp_mss_adjust,
            "ipv6_tx_pkts": r.ipv6_tx_pkts,
            "ipv6_tx_octets": r.ipv6_tx_octets,
            "ipv6_rx_pkts": r.ipv6_rx_pkts,
            "ipv6_rx_octets": r.ipv6_rx_octets,
            "ipsec_decrypt_inbound": r.ipsec_decrypt_inbound,
            "ipsec_rx_auth_failures": r.ipsec_rx_auth_failures,
            "ipsec_rx_failures": r.ipsec_rx_failures,
            "ipsec_encrypt_outbound": r.ipsec_encrypt_outbound,
            "ipsec_tx_auth_failures": r.ipsec_tx_auth_failures,
            "ipsec_tx_failures": r.ipsec_tx_failures,
        }));
    }
    (t, json!({ "tunnels": list }))
}
