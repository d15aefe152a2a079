//! `show crypto ipsec sa [peer ADDR]` in the IOS XE layout (read by
//! genieparser's `ShowCryptoIpsecSa`): one block per manual or IKE tunnel,
//! and one ident per SD-WAN peer under its TLOC's interface.
//!
//! JSON: `{"sas":[{"tunnel","peer","outbound_spi","inbound_spis",
//! "pkts_encaps","pkts_decaps","pkts_verify_failed","pkts_replay_failed",
//! "pkts_replay_too_old","pkts_replay_duplicate","send_errors",
//! "recv_errors"}]}`.
use std::{fmt::Write as _, net::IpAddr};

use serde::{Serialize, Serializer};
use xdpsec_datapath::worker::SaCounters;
use xdpsec_ike::DhGroup;

/// The whole show.
#[derive(Debug, Clone, Serialize)]
pub struct CryptoSa {
    /// The underlay interface (`ip mtu idb`).
    #[serde(skip)]
    pub interface: String,
    /// The plaintext MTU (the TUN device's).
    #[serde(skip)]
    pub plaintext_mtu: u32,
    /// One row per tunnel or SD-WAN peer.
    #[serde(rename = "sas")]
    pub rows: Vec<CryptoSaRow>,
}

/// One ESP SA of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspSaRow {
    /// Its SPI.
    pub spi: u32,
    /// IOS's `conn id` (the SA table index plus one).
    pub conn: u32,
    /// The transform as IOS names it (`esp-gcm 256`).
    pub transform: &'static str,
    /// Seconds of key lifetime left (None: the keys do not expire here).
    pub lifetime_left: Option<u64>,
}

/// A row's counters since the last clear, as the text and JSON count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SaTotals {
    /// Packets encapsulated (outbound).
    pub pkts_encaps: u64,
    /// Packets decapsulated (inbound).
    pub pkts_decaps: u64,
    /// ICV failures.
    pub pkts_verify_failed: u64,
    /// Anti-replay failures, both kinds.
    pub pkts_replay_failed: u64,
    /// Left of the replay window.
    pub pkts_replay_too_old: u64,
    /// Already seen.
    pub pkts_replay_duplicate: u64,
    /// Outbound failures.
    pub send_errors: u64,
    /// Inbound failures; as on IOS, integrity and replay failures included.
    pub recv_errors: u64,
}

impl SaTotals {
    /// The totals of a row's inbound SAs' and outbound SA's counters.
    pub fn new(inb: &SaCounters, outb: &SaCounters) -> SaTotals {
        SaTotals {
            pkts_encaps: outb.encaps,
            pkts_decaps: inb.decaps,
            pkts_verify_failed: inb.verify_failed,
            pkts_replay_failed: inb.replay_failed(),
            pkts_replay_too_old: inb.replay_too_old,
            pkts_replay_duplicate: inb.replay_duplicate,
            send_errors: outb.send_errors,
            recv_errors: inb.recv_errors + inb.verify_failed + inb.replay_failed(),
        }
    }
}

/// One interface's (or SD-WAN peer's) SAs.
#[derive(Debug, Clone, Serialize)]
pub struct CryptoSaRow {
    /// Interface (tunnel, or the SD-WAN TLOC's interface) name.
    #[serde(rename = "tunnel")]
    pub name: String,
    /// Crypto map tag.
    #[serde(skip)]
    pub tag: String,
    /// An SD-WAN peer: an ident under the interface header of the row
    /// before it when that is the same interface's (IOS lists a crypto
    /// map's peers so; a repeated header makes genieparser fold every peer
    /// into one ident).
    #[serde(skip)]
    pub grouped: bool,
    /// Local address.
    #[serde(skip)]
    pub local: IpAddr,
    /// `addr/mask/prot/port` of the local ident.
    #[serde(skip)]
    pub local_ident: String,
    /// `addr/mask/prot/port` of the remote ident.
    #[serde(skip)]
    pub remote_ident: String,
    /// The peer.
    pub peer: IpAddr,
    /// The peer's port.
    #[serde(skip)]
    pub port: u16,
    /// Inbound SAs (two during a rekey).
    #[serde(rename = "inbound_spis", serialize_with = "spis")]
    pub inbound: Vec<EspSaRow>,
    /// Outbound SA.
    #[serde(rename = "outbound_spi", serialize_with = "spi_or_zero")]
    pub outbound: Option<EspSaRow>,
    /// Counters since the last clear.
    #[serde(flatten)]
    pub totals: SaTotals,
    /// UDP-encapsulated.
    #[serde(skip)]
    pub udp: bool,
    /// What the SA timing line says without a lifetime.
    #[serde(skip)]
    pub keys_note: &'static str,
    /// PFS group.
    #[serde(skip)]
    pub pfs: Option<DhGroup>,
    /// Replay detection on.
    #[serde(skip)]
    pub replay: bool,
}

fn spis<S: Serializer>(sas: &[EspSaRow], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(sas.iter().map(|sa| sa.spi))
}

fn spi_or_zero<S: Serializer>(sa: &Option<EspSaRow>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(sa.as_ref().map_or(0, |sa| sa.spi))
}

/// The text of `show crypto ipsec sa`.
pub fn render(s: &CryptoSa) -> String {
    let mut text = String::new();
    let mut last: Option<&CryptoSaRow> = None;
    for r in &s.rows {
        let header = !(r.grouped && last.is_some_and(|l| l.grouped && l.name == r.name));
        render_row(s, r, header, &mut text);
        last = Some(r);
    }
    text
}

/// One interface's block (without the `interface:` and crypto map lines
/// unless `header`).
fn render_row(s: &CryptoSa, e: &CryptoSaRow, header: bool, text: &mut String) {
    let t = &e.totals;
    let out_spi = e.outbound.as_ref().map_or(0, |sa| sa.spi);
    let (encaps, decaps) = (t.pkts_encaps, t.pkts_decaps);
    let tag = &e.tag;
    let settings = if e.udp {
        "{Tunnel UDP-Encaps, }"
    } else {
        "{Tunnel, }"
    };
    if header {
        let _ = writeln!(text, "interface: {}", e.name);
        let _ = writeln!(text, "    Crypto map tag: {tag}, local addr {}\n", e.local);
    }
    let _ = writeln!(text, "   protected vrf: (none)");
    let _ = writeln!(
        text,
        "   local  ident (addr/mask/prot/port): ({})",
        e.local_ident
    );
    let _ = writeln!(
        text,
        "   remote ident (addr/mask/prot/port): ({})",
        e.remote_ident
    );
    let _ = writeln!(text, "   current_peer {} port {}", e.peer, e.port);
    let _ = writeln!(text, "     PERMIT, flags={{origin_is_acl,}}");
    let _ = writeln!(
        text,
        "    #pkts encaps: {encaps}, #pkts encrypt: {encaps}, #pkts digest: {encaps}"
    );
    let _ = writeln!(
        text,
        "    #pkts decaps: {decaps}, #pkts decrypt: {decaps}, #pkts verify: {decaps}"
    );
    let _ = writeln!(text, "    #pkts compressed: 0, #pkts decompressed: 0");
    let _ = writeln!(text, "    #pkts not compressed: 0, #pkts compr. failed: 0");
    let _ = writeln!(
        text,
        "    #pkts not decompressed: 0, #pkts decompress failed: 0"
    );
    let _ = writeln!(
        text,
        "    #send errors {}, #recv errors {}\n",
        t.send_errors, t.recv_errors
    );
    let _ = writeln!(
        text,
        "     local crypto endpt.: {}, remote crypto endpt.: {}",
        e.local, e.peer
    );
    let _ = writeln!(
        text,
        "     plaintext mtu {}, path mtu 1500, ip mtu 1500, ip mtu idb {}",
        s.plaintext_mtu, s.interface
    );
    let _ = writeln!(text, "     current outbound spi: 0x{out_spi:X}({out_spi})");
    match e.pfs {
        Some(g) => {
            let _ = writeln!(text, "     PFS (Y/N): Y, DH group: group{}\n", g.id());
        }
        None => {
            let _ = writeln!(text, "     PFS (Y/N): N, DH group: none\n");
        }
    }
    let sa_block = |text: &mut String, dir: &str, sas: &[EspSaRow]| {
        let _ = writeln!(text, "     {dir} esp sas:");
        for sa in sas {
            let (spi, conn, transform) = (sa.spi, sa.conn, sa.transform);
            let _ = writeln!(text, "      spi: 0x{spi:X}({spi})");
            let _ = writeln!(text, "        transform: {transform} ,");
            let _ = writeln!(text, "        in use settings ={settings}");
            let _ = writeln!(
                text,
                "        conn id: {conn}, flow_id: SW:{conn}, sibling_flags 80000000, crypto map: {tag}"
            );
            match sa.lifetime_left {
                // IOS: (kilobytes/seconds) left; no volume limit here.
                Some(left) => {
                    let _ = writeln!(
                        text,
                        "        sa timing: remaining key lifetime (k/sec): (4608000/{left})"
                    );
                }
                None => {
                    let _ = writeln!(
                        text,
                        "        sa timing: remaining key lifetime: {}",
                        e.keys_note
                    );
                }
            }
            let iv = if transform.contains("gcm") || transform.contains("chacha") {
                8
            } else {
                16
            };
            let _ = writeln!(text, "        IV size: {iv} bytes");
            let replay = if e.replay { "Y" } else { "N" };
            let _ = writeln!(text, "        replay detection support: {replay}");
            let _ = writeln!(text, "        Status: ACTIVE(ACTIVE)");
        }
        let _ = writeln!(text, "\n     {dir} ah sas:\n\n     {dir} pcp sas:\n");
    };
    sa_block(text, "inbound", &e.inbound);
    sa_block(text, "outbound", e.outbound.as_slice());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(spi: u32, conn: u32, transform: &'static str, left: Option<u64>) -> EspSaRow {
        EspSaRow {
            spi,
            conn,
            transform,
            lifetime_left: left,
        }
    }

    /// A manual tunnel's row as the owner builds it.
    fn manual() -> CryptoSaRow {
        CryptoSaRow {
            name: "Tunnel1".into(),
            tag: "Tunnel1-head-0".into(),
            grouped: false,
            local: "198.51.100.1".parse().unwrap(),
            local_ident: "0.0.0.0/0.0.0.0/0/0".into(),
            remote_ident: "203.0.113.0/255.255.255.192/0/0".into(),
            peer: "198.51.100.2".parse().unwrap(),
            port: 500,
            inbound: vec![sa(0x1001, 1, "esp-gcm 256", None)],
            outbound: Some(sa(0x2001, 2, "esp-gcm 256", None)),
            totals: SaTotals::default(),
            udp: false,
            keys_note: "manual keys, no expiry",
            pfs: None,
            replay: true,
        }
    }

    fn show(rows: Vec<CryptoSaRow>) -> CryptoSa {
        CryptoSa {
            interface: "veth-e1".into(),
            plaintext_mtu: 1376,
            rows,
        }
    }

    /// A manual tunnel, as the daemon printed it before the renderer moved
    /// out of the owner (and as genieparser's `ShowCryptoIpsecSa` reads it).
    #[test]
    fn manual_tunnel_text_and_json() {
        let s = show(vec![manual()]);
        let (text, json) = super::super::reply(&s, render);
        let sa_block = |dir: &str, spi: &str, conn: u32| {
            format!(
                "     {dir} esp sas:\n\
                 \x20     spi: {spi}\n\
                 \x20       transform: esp-gcm 256 ,\n\
                 \x20       in use settings ={{Tunnel, }}\n\
                 \x20       conn id: {conn}, flow_id: SW:{conn}, sibling_flags 80000000, crypto map: Tunnel1-head-0\n\
                 \x20       sa timing: remaining key lifetime: manual keys, no expiry\n\
                 \x20       IV size: 8 bytes\n\
                 \x20       replay detection support: Y\n\
                 \x20       Status: ACTIVE(ACTIVE)\n\
                 \n     {dir} ah sas:\n\n     {dir} pcp sas:\n\n"
            )
        };
        let want = "interface: Tunnel1\n\
            \x20   Crypto map tag: Tunnel1-head-0, local addr 198.51.100.1\n\n\
            \x20  protected vrf: (none)\n\
            \x20  local  ident (addr/mask/prot/port): (0.0.0.0/0.0.0.0/0/0)\n\
            \x20  remote ident (addr/mask/prot/port): (203.0.113.0/255.255.255.192/0/0)\n\
            \x20  current_peer 198.51.100.2 port 500\n\
            \x20    PERMIT, flags={origin_is_acl,}\n\
            \x20   #pkts encaps: 0, #pkts encrypt: 0, #pkts digest: 0\n\
            \x20   #pkts decaps: 0, #pkts decrypt: 0, #pkts verify: 0\n\
            \x20   #pkts compressed: 0, #pkts decompressed: 0\n\
            \x20   #pkts not compressed: 0, #pkts compr. failed: 0\n\
            \x20   #pkts not decompressed: 0, #pkts decompress failed: 0\n\
            \x20   #send errors 0, #recv errors 0\n\n\
            \x20    local crypto endpt.: 198.51.100.1, remote crypto endpt.: 198.51.100.2\n\
            \x20    plaintext mtu 1376, path mtu 1500, ip mtu 1500, ip mtu idb veth-e1\n\
            \x20    current outbound spi: 0x2001(8193)\n\
            \x20    PFS (Y/N): N, DH group: none\n\n"
            .to_string()
            + &sa_block("inbound", "0x1001(4097)", 1)
            + &sa_block("outbound", "0x2001(8193)", 2);
        assert_eq!(text, want);
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"sas":[{"inbound_spis":[4097],"outbound_spi":8193,"peer":"198.51.100.2","pkts_decaps":0,"pkts_encaps":0,"pkts_replay_duplicate":0,"pkts_replay_failed":0,"pkts_replay_too_old":0,"pkts_verify_failed":0,"recv_errors":0,"send_errors":0,"tunnel":"Tunnel1"}]}"#
        );
    }

    /// Receive errors count integrity and replay failures too (as on IOS);
    /// the JSON keeps each kind.
    #[test]
    fn totals_fold_integrity_and_replay_into_recv_errors() {
        let inb = SaCounters {
            decaps: 10,
            verify_failed: 1,
            replay_too_old: 2,
            replay_duplicate: 3,
            recv_errors: 4,
            ..Default::default()
        };
        let outb = SaCounters {
            encaps: 7,
            send_errors: 5,
            ..Default::default()
        };
        let mut r = manual();
        r.totals = SaTotals::new(&inb, &outb);
        let (text, json) = super::super::reply(&show(vec![r]), render);
        assert!(text.contains("    #pkts encaps: 7, #pkts encrypt: 7, #pkts digest: 7\n"));
        assert!(text.contains("    #pkts decaps: 10, #pkts decrypt: 10, #pkts verify: 10\n"));
        assert!(
            text.contains("    #send errors 5, #recv errors 10\n"),
            "{text}"
        );
        let row = &json["sas"][0];
        assert_eq!(row["recv_errors"], 10);
        assert_eq!(row["pkts_verify_failed"], 1);
        assert_eq!(row["pkts_replay_failed"], 5);
        assert_eq!(row["pkts_replay_too_old"], 2);
        assert_eq!(row["pkts_replay_duplicate"], 3);
    }

    /// SD-WAN peers of one TLOC are idents under one interface header; a
    /// negotiated SA shows its lifetime, PFS its group, UDP its setting,
    /// a CBC transform a 16-byte IV.
    #[test]
    fn sdwan_peers_share_their_interface_header() {
        let peer = |addr: &str, spi: u32| CryptoSaRow {
            name: "Tunnel10001".into(),
            tag: "Tunnel10001-vesen-head-0".into(),
            grouped: true,
            local_ident: "198.51.100.1/255.255.255.255/0/12347".into(),
            remote_ident: format!("{addr}/255.255.255.255/0/12347"),
            peer: addr.parse().unwrap(),
            port: 12347,
            inbound: vec![sa(spi, 3, "esp-aes 256 esp-sha256-hmac", Some(3599))],
            outbound: None,
            udp: true,
            keys_note: "keys from OMP",
            pfs: Some(DhGroup::Ecp256),
            ..manual()
        };
        let s = show(vec![
            manual(),
            peer("198.51.100.2", 0x300),
            peer("198.51.100.3", 0x301),
        ]);
        let text = render(&s);
        assert_eq!(text.matches("interface: Tunnel1\n").count(), 1);
        assert_eq!(
            text.matches("interface: Tunnel10001\n").count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches("   protected vrf: (none)\n").count(), 3);
        assert_eq!(
            text.matches("    Crypto map tag: Tunnel10001-vesen-head-0, local addr 198.51.100.1\n")
                .count(),
            1
        );
        assert!(text.contains("   current_peer 198.51.100.3 port 12347\n"));
        assert!(
            text.contains("        sa timing: remaining key lifetime (k/sec): (4608000/3599)\n")
        );
        assert!(text.contains("     PFS (Y/N): Y, DH group: group19\n\n"));
        assert!(text.contains("        in use settings ={Tunnel UDP-Encaps, }\n"));
        assert!(text.contains("        IV size: 16 bytes\n"));
        assert!(text.contains("     current outbound spi: 0x0(0)\n"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["sas"][2]["outbound_spi"], 0);
        assert_eq!(json["sas"][2]["inbound_spis"], serde_json::json!([0x301]));
    }
}
