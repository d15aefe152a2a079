//! `show crypto ikev2 proposal` and `show crypto ipsec transform-set`: the
//! proposals the configured IKE tunnels offer and accept, in the IOS XE
//! layout; `show crypto ikev2 stats fragmentation`: RFC 7383 counters.
//! The owner fills the rows from the config (`owner/show.rs`); the
//! renderers are pure, and `--json` is serde of the same rows.
use std::fmt::Write as _;

use serde::{Serialize, Serializer};
use xdpsec_ike::{DhGroup, IkeOffer, IkeStats};

/// The name IOS XE gives a DH group in `show crypto ikev2 proposal`.
pub fn ios_dh_name(g: DhGroup) -> String {
    let name = match g {
        DhGroup::Modp2048 => "DH_GROUP_2048_MODP",
        DhGroup::Ecp256 => "DH_GROUP_256_ECP",
        DhGroup::Ecp384 => "DH_GROUP_384_ECP",
        DhGroup::Ecp521 => "DH_GROUP_521_ECP",
        // Not an IOS XE group; named in the same pattern.
        DhGroup::Curve25519 => "DH_GROUP_CURVE25519",
    };
    format!("{name}/Group {}", g.id())
}

/// DH groups as their IANA numbers (JSON).
fn group_ids<S: Serializer>(groups: &[DhGroup], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(groups.iter().map(|g| g.id()))
}

/// A DH group, if any, as its IANA number (JSON).
fn group_id<S: Serializer>(group: &Option<DhGroup>, s: S) -> Result<S::Ok, S::Error> {
    group.map(|g| g.id()).serialize(s)
}

/// `show crypto ikev2 proposal`, read by genieparser's `ShowCryptoIkev2Proposal`.
///
/// JSON: `{"proposals": [{"name", "encryption": [..], "integrity": [..],
/// "prf": [..], "dh_group": [numbers], "tunnels": [..]}]}` (names as the
/// text prints them; `integrity` is empty for AEAD ciphers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ikev2Proposals {
    /// Each proposal in use, once.
    pub proposals: Vec<Ikev2ProposalRow>,
}

/// One IKEv2 proposal: IOS XE's `default` (a tunnel without
/// `ike_proposals`) or one `ike_proposals` entry, named by its strongSwan
/// notation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ikev2ProposalRow {
    /// `default` or the notation (`aes256gcm16-prfsha256-x25519`).
    pub name: String,
    /// Ciphers, as IOS names them (`AES-CBC-256`).
    pub encryption: Vec<String>,
    /// Integrity algorithms (`SHA512`); none for AEAD ciphers.
    pub integrity: Vec<&'static str>,
    /// PRFs (`SHA512`).
    pub prf: Vec<&'static str>,
    /// DH groups (text: `DH_GROUP_256_ECP/Group 19`, JSON: 19).
    #[serde(serialize_with = "group_ids")]
    pub dh_group: Vec<DhGroup>,
    /// The tunnels that offer it.
    pub tunnels: Vec<String>,
}

impl Ikev2ProposalRow {
    /// The row of `offer`, named `name`, offered by `tunnels`.
    pub fn new(name: String, offer: &IkeOffer, tunnels: Vec<String>) -> Ikev2ProposalRow {
        Ikev2ProposalRow {
            name,
            encryption: offer.encr.iter().map(ToString::to_string).collect(),
            integrity: offer.integ.iter().map(|i| i.ios_name()).collect(),
            prf: offer.prf.iter().map(|p| p.ios_name()).collect(),
            dh_group: offer.dh.clone(),
            tunnels,
        }
    }
}

/// The text of `show crypto ikev2 proposal`.
pub fn render_ikev2_proposal(p: &Ikev2Proposals) -> String {
    let mut t = String::new();
    for r in &p.proposals {
        let dh: Vec<String> = r.dh_group.iter().map(|g| ios_dh_name(*g)).collect();
        let _ = write!(
            t,
            "IKEv2 proposal: {}\n     Encryption : {}\n     Integrity  : {}\n     PRF        : {}\n     DH Group   : {}\n",
            r.name,
            r.encryption.join(" "),
            r.integrity.join(" "),
            r.prf.join(" "),
            dh.join(" ")
        );
    }
    t
}

/// `show crypto ipsec transform-set` (genieparser 26.9 has no parser for
/// it; the layout is IOS XE's).
///
/// JSON: `{"transform_sets": [{"name", "transform", "mode", "pfs_group"
/// (number or null), "tunnels": [..]}]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransformSets {
    /// Each transform set in use, once.
    pub transform_sets: Vec<TransformSetRow>,
}

/// One transform set: IOS XE's `default` (`esp-aes esp-sha-hmac`, a tunnel
/// without `esp_proposals`) or one `esp_proposals` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransformSetRow {
    /// `default` or the notation (`aes256gcm16`).
    pub name: String,
    /// The transforms as IOS prints them (`esp-256-aes esp-sha256-hmac`).
    pub transform: String,
    /// Always `Tunnel` (xdpsec has no transport mode).
    pub mode: &'static str,
    /// The PFS group a rekey adds (IOS: `set pfs` in the profile).
    #[serde(rename = "pfs_group", serialize_with = "group_id")]
    pub pfs: Option<DhGroup>,
    /// The tunnels that offer it.
    pub tunnels: Vec<String>,
}

/// The text of `show crypto ipsec transform-set`.
pub fn render_transform_set(s: &TransformSets) -> String {
    let mut t = String::new();
    for r in &s.transform_sets {
        let _ = write!(
            t,
            "Transform set {}: {{ {}  }}\n   will negotiate = {{ {},  }},\n\n",
            r.name, r.transform, r.mode
        );
    }
    t
}

/// `show crypto ikev2 stats fragmentation` (xdpsec's own: IOS XE has no
/// such counters to copy): the IKE cores' fragment counters, all tunnels.
///
/// JSON: `{"fragments_sent","fragments_received","messages_reassembled",
/// "fragments_dropped"}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ikev2Fragmentation {
    /// Encrypted Fragment messages sent.
    pub fragments_sent: u64,
    /// Encrypted Fragment messages received and kept.
    pub fragments_received: u64,
    /// Messages made whole from fragments.
    pub messages_reassembled: u64,
    /// Encrypted Fragment messages dropped.
    pub fragments_dropped: u64,
}

impl From<IkeStats> for Ikev2Fragmentation {
    fn from(s: IkeStats) -> Ikev2Fragmentation {
        Ikev2Fragmentation {
            fragments_sent: s.fragments_sent,
            fragments_received: s.fragments_received,
            messages_reassembled: s.messages_reassembled,
            fragments_dropped: s.fragments_dropped,
        }
    }
}

/// The text of `show crypto ikev2 stats fragmentation`.
pub fn render_fragmentation(s: &Ikev2Fragmentation) -> String {
    let rows = [
        ("Fragments sent", s.fragments_sent),
        ("Fragments received", s.fragments_received),
        ("Messages reassembled", s.messages_reassembled),
        ("Fragments dropped", s.fragments_dropped),
    ];
    let mut text = String::from(" IKEv2 fragmentation (RFC 7383)\n");
    for (name, n) in rows {
        let _ = writeln!(text, "  {:<22}{n}", format!("{name}:"));
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::show::reply;

    fn proposals() -> Ikev2Proposals {
        Ikev2Proposals {
            proposals: vec![
                Ikev2ProposalRow::new(
                    "default".into(),
                    &IkeOffer::ios_default(),
                    vec!["Tunnel2".into(), "Tunnel3".into()],
                ),
                Ikev2ProposalRow::new(
                    "aes256gcm16-prfsha256-x25519".into(),
                    &IkeOffer::parse("aes256gcm16-prfsha256-x25519").unwrap(),
                    vec!["Tunnel4".into()],
                ),
            ],
        }
    }

    #[test]
    fn ikev2_proposal_layout() {
        let (t, j) = reply(&proposals(), render_ikev2_proposal);
        // The default proposal as genieparser's golden output of an IOS XE 17
        // router prints it.
        assert_eq!(
            t,
            "IKEv2 proposal: default\n     Encryption : AES-CBC-256\n     Integrity  : SHA512 SHA384\n     PRF        : SHA512 SHA384\n     DH Group   : DH_GROUP_256_ECP/Group 19 DH_GROUP_2048_MODP/Group 14 DH_GROUP_521_ECP/Group 21\n\
             IKEv2 proposal: aes256gcm16-prfsha256-x25519\n     Encryption : AES-GCM-256\n     Integrity  : \n     PRF        : SHA256\n     DH Group   : DH_GROUP_CURVE25519/Group 31\n"
        );
        assert_eq!(
            serde_json::to_string(&j).unwrap(),
            r#"{"proposals":[{"dh_group":[19,14,21],"encryption":["AES-CBC-256"],"integrity":["SHA512","SHA384"],"name":"default","prf":["SHA512","SHA384"],"tunnels":["Tunnel2","Tunnel3"]},{"dh_group":[31],"encryption":["AES-GCM-256"],"integrity":[],"name":"aes256gcm16-prfsha256-x25519","prf":["SHA256"],"tunnels":["Tunnel4"]}]}"#
        );
    }

    #[test]
    fn transform_set_layout() {
        let sets = TransformSets {
            transform_sets: vec![
                TransformSetRow {
                    name: "default".into(),
                    transform: "esp-aes esp-sha-hmac".into(),
                    mode: "Tunnel",
                    pfs: None,
                    tunnels: vec!["Tunnel2".into()],
                },
                TransformSetRow {
                    name: "aes256gcm16-x25519".into(),
                    transform: "esp-gcm 256".into(),
                    mode: "Tunnel",
                    pfs: Some(DhGroup::Curve25519),
                    tunnels: vec!["Tunnel4".into()],
                },
            ],
        };
        let (t, j) = reply(&sets, render_transform_set);
        assert_eq!(
            t,
            "Transform set default: { esp-aes esp-sha-hmac  }\n   will negotiate = { Tunnel,  },\n\n\
             Transform set aes256gcm16-x25519: { esp-gcm 256  }\n   will negotiate = { Tunnel,  },\n\n"
        );
        assert_eq!(j["transform_sets"][0].get("pfs_group"), Some(&Value::Null));
        assert_eq!(
            j["transform_sets"][1],
            json!({"name": "aes256gcm16-x25519", "transform": "esp-gcm 256", "mode": "Tunnel",
                   "pfs_group": 31, "tunnels": ["Tunnel4"]})
        );
    }

    #[test]
    fn fragmentation_layout() {
        let s = Ikev2Fragmentation {
            fragments_sent: 4,
            fragments_received: 3,
            messages_reassembled: 1,
            fragments_dropped: 12_345,
        };
        let (t, j) = reply(&s, render_fragmentation);
        assert_eq!(
            t,
            " IKEv2 fragmentation (RFC 7383)\n  Fragments sent:       4\n  Fragments received:   3\n  Messages reassembled: 1\n  Fragments dropped:    12345\n"
        );
        assert_eq!(
            serde_json::to_string(&j).unwrap(),
            r#"{"fragments_dropped":12345,"fragments_received":3,"fragments_sent":4,"messages_reassembled":1}"#
        );
    }
}
