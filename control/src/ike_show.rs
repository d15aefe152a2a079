//! `show crypto ikev2 proposal` and `show crypto ipsec transform-set`: the
//! proposals the configured IKE tunnels offer and accept, in the IOS XE
//! layout; `show crypto ikev2 stats fragmentation`: RFC 7383 counters. Rows are built on the owner from the config; the renderers are
//! pure (text for people and genieparser, JSON for scripts).
use serde_json::{Value, json};
use xdpsec_ike::{DhGroup, EspProposal, IkeOffer, IkeStats};

use crate::{config::TunnelKind, owner::Owner};

/// One IKEv2 proposal: IOS XE's `default` (a tunnel without
/// `ike_proposals`) or one `ike_proposals` entry, named by its strongSwan
/// notation.
#[derive(Debug, Clone, PartialEq)]
pub struct Ikev2ProposalRow {
    /// `default` or the notation (`aes256gcm16-prfsha256-x25519`).
    pub name: String,
    /// Its transforms.
    pub offer: IkeOffer,
    /// The tunnels that offer it.
    pub tunnels: Vec<String>,
}

/// One transform set: IOS XE's `default` (`esp-aes esp-sha-hmac`, a tunnel
/// without `esp_proposals`) or one `esp_proposals` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformSetRow {
    /// `default` or the notation (`aes256gcm16`).
    pub name: String,
    /// The transforms as IOS prints them (`esp-256-aes esp-sha256-hmac`).
    pub transform: String,
    /// The PFS group a rekey adds (IOS: `set pfs` in the profile).
    pub pfs: Option<DhGroup>,
    /// The tunnels that offer it.
    pub tunnels: Vec<String>,
}

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

/// `show crypto ikev2 proposal`, read by genieparser's `ShowCryptoIkev2Proposal`.
///
/// JSON: `{"proposals": [{"name", "encryption": [..], "integrity": [..],
/// "prf": [..], "dh_group": [numbers], "tunnels": [..]}]}` (names as the
/// text prints them; `integrity` is empty for AEAD ciphers).
pub fn ikev2_proposal(rows: &[Ikev2ProposalRow]) -> (String, Value) {
    let mut t = String::new();
    let mut list = Vec::new();
    for r in rows {
        let o = &r.offer;
        let encr: Vec<String> = o.encr.iter().map(ToString::to_string).collect();
        let integ: Vec<&str> = o.integ.iter().map(|i| i.ios_name()).collect();
        let prf: Vec<&str> = o.prf.iter().map(|p| p.ios_name()).collect();
        let dh: Vec<String> = o.dh.iter().map(|g| ios_dh_name(*g)).collect();
        t += &format!(
            "IKEv2 proposal: {}\n     Encryption : {}\n     Integrity  : {}\n     PRF        : {}\n     DH Group   : {}\n",
            r.name,
            encr.join(" "),
            integ.join(" "),
            prf.join(" "),
            dh.join(" ")
        );
        list.push(json!({
            "name": r.name,
            "encryption": encr,
            "integrity": integ,
            "prf": prf,
            "dh_group": o.dh.iter().map(|g| g.id()).collect::<Vec<_>>(),
            "tunnels": r.tunnels,
        }));
    }
    (t, json!({ "proposals": list }))
}

/// `show crypto ipsec transform-set` (genieparser 26.9 has no parser for it;
/// the layout is IOS XE's).
///
/// JSON: `{"transform_sets": [{"name", "transform", "mode", "pfs_group"
/// (number or null), "tunnels": [..]}]}`.
pub fn ipsec_transform_set(rows: &[TransformSetRow]) -> (String, Value) {
    let mut t = String::new();
    let mut list = Vec::new();
    for r in rows {
        t += &format!(
            "Transform set {}: {{ {}  }}\n   will negotiate = {{ Tunnel,  }},\n\n",
            r.name, r.transform
        );
        list.push(json!({
            "name": r.name,
            "transform": r.transform,
            "mode": "Tunnel",
            "pfs_group": r.pfs.map(|g| g.id()),
            "tunnels": r.tunnels,
        }));
    }
    (t, json!({ "transform_sets": list }))
}

impl Owner {
    /// The proposals of the IKE tunnels (`esp`: `esp_proposals`, else
    /// `ike_proposals`), each once: (name, notation, tunnels). The name is
    /// `default` for `default_notation`, else the notation.
    fn proposals_in_use(
        &self,
        esp: bool,
        default_notation: &str,
    ) -> Vec<(String, String, Vec<String>)> {
        let mut out: Vec<(String, String, Vec<String>)> = Vec::new();
        for t in &self.config.tunnels {
            let TunnelKind::Ike(k) = &t.kind else {
                continue;
            };
            for p in if esp {
                &k.esp_proposals
            } else {
                &k.ike_proposals
            } {
                let tunnel = t.name.clone();
                match out.iter_mut().find(|r| &r.1 == p) {
                    Some(r) => r.2.push(tunnel),
                    None => {
                        let name = if p == default_notation { "default" } else { p };
                        out.push((name.to_string(), p.clone(), vec![tunnel]));
                    }
                }
            }
        }
        out
    }

    /// The IKEv2 proposals of the configured tunnels (checked when the
    /// config was read, so none is left out).
    pub(crate) fn ikev2_proposal_rows(&self) -> Vec<Ikev2ProposalRow> {
        self.proposals_in_use(false, IkeOffer::IOS_DEFAULT)
            .into_iter()
            .filter_map(|(name, p, tunnels)| {
                Some(Ikev2ProposalRow {
                    name,
                    offer: IkeOffer::parse(&p).ok()?,
                    tunnels,
                })
            })
            .collect()
    }

    /// The transform sets of the configured tunnels.
    pub(crate) fn transform_set_rows(&self) -> Vec<TransformSetRow> {
        self.proposals_in_use(true, EspProposal::IOS_DEFAULT)
            .into_iter()
            .filter_map(|(name, p, tunnels)| {
                let e = EspProposal::parse(&p).ok()?;
                Some(TransformSetRow {
                    name,
                    transform: crate::owner::esp_cipher(e.encr, e.integ)?
                        .ios_transform()
                        .to_string(),
                    pfs: e.dh,
                    tunnels,
                })
            })
            .collect()
    }
}

/// `show crypto ikev2 stats fragmentation` (xdpsec's own: IOS XE has no
/// such counters to copy): the IKE cores' fragment counters, all tunnels.
pub fn ikev2_fragmentation(s: IkeStats) -> (String, Value) {
    let rows = [
        ("Fragments sent", s.fragments_sent),
        ("Fragments received", s.fragments_received),
        ("Messages reassembled", s.messages_reassembled),
        ("Fragments dropped", s.fragments_dropped),
    ];
    let mut text = String::from(" IKEv2 fragmentation (RFC 7383)\n");
    for (name, n) in rows {
        text.push_str(&format!("  {:<22}{n}\n", format!("{name}:")));
    }
    (
        text,
        json!({
            "fragments_sent": s.fragments_sent,
            "fragments_received": s.fragments_received,
            "messages_reassembled": s.messages_reassembled,
            "fragments_dropped": s.fragments_dropped,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Ikev2ProposalRow> {
        vec![
            Ikev2ProposalRow {
                name: "default".into(),
                offer: IkeOffer::ios_default(),
                tunnels: vec!["Tunnel2".into(), "Tunnel3".into()],
            },
            Ikev2ProposalRow {
                name: "aes256gcm16-prfsha256-x25519".into(),
                offer: IkeOffer::parse("aes256gcm16-prfsha256-x25519").unwrap(),
                tunnels: vec!["Tunnel4".into()],
            },
        ]
    }

    #[test]
    fn ikev2_proposal_layout() {
        let (t, j) = ikev2_proposal(&rows());
        // The default proposal as genieparser's golden output of an IOS XE 17
        // router prints it.
        assert!(
            t.starts_with(
                "IKEv2 proposal: default\n     Encryption : AES-CBC-256\n     Integrity  : SHA512 SHA384\n     PRF        : SHA512 SHA384\n     DH Group   : DH_GROUP_256_ECP/Group 19 DH_GROUP_2048_MODP/Group 14 DH_GROUP_521_ECP/Group 21\n"
            ),
            "{t}"
        );
        assert!(t.contains("IKEv2 proposal: aes256gcm16-prfsha256-x25519\n     Encryption : AES-GCM-256\n     Integrity  : \n"), "{t}");
        assert_eq!(j["proposals"][0]["dh_group"], json!([19, 14, 21]));
        assert_eq!(j["proposals"][0]["integrity"], json!(["SHA512", "SHA384"]));
        assert_eq!(j["proposals"][1]["integrity"], json!([]));
        assert_eq!(j["proposals"][1]["tunnels"], json!(["Tunnel4"]));
    }

    #[test]
    fn transform_set_layout() {
        let (t, j) = ipsec_transform_set(&[
            TransformSetRow {
                name: "default".into(),
                transform: "esp-aes esp-sha-hmac".into(),
                pfs: None,
                tunnels: vec!["Tunnel2".into()],
            },
            TransformSetRow {
                name: "aes256gcm16-x25519".into(),
                transform: "esp-gcm 256".into(),
                pfs: Some(DhGroup::Curve25519),
                tunnels: vec!["Tunnel4".into()],
            },
        ]);
        assert_eq!(
            t,
            "Transform set default: { esp-aes esp-sha-hmac  }\n   will negotiate = { Tunnel,  },\n\n\
             Transform set aes256gcm16-x25519: { esp-gcm 256  }\n   will negotiate = { Tunnel,  },\n\n"
        );
        assert_eq!(j["transform_sets"][0]["pfs_group"], Value::Null);
        assert_eq!(j["transform_sets"][1]["pfs_group"], 31);
    }
}
