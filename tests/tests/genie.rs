//! Cisco's genieparser (pyATS, the IOS XE parsers) reads our show output
//! into the same numbers `--json` gives: `show crypto ipsec sa` through
//! `ShowCryptoIpsecSa` and `... datapath drops all` through
//! `ShowPlatformHardwareQfpActiveFeatureIpsecDatapathDropsAll`, after real
//! traffic from the scapy peer left decaps, encaps and several drop types.
//!
//! IPv4 underlay only: genie's `ShowCryptoIpsecSa` matches addresses
//! (`local addr`, `current_peer`, idents, crypto endpoints) as dotted IPv4
//! and raises on IPv6 ones, real IOS output included.
use std::collections::BTreeMap;

use serde_json::{Value, json};
use xdpsec_e2e::{
    Daemon, Lab, genie_parse, scapy_peer, settle,
    tunnel::{BASE, KEY_A128, KEY_B128, scapy_peer_config, tunnel_config},
};

const SA: &str = "show crypto ipsec sa";
const DROPS_ALL: &str = "show platform hardware qfp active feature ipsec datapath drops all";

/// IOS's SPI notation, as genie keys SAs: `0x1001(4097)`.
fn ios_spi(spi: u64) -> String {
    format!("0x{spi:X}({spi})")
}

/// Note in `diff` when genie's value differs from `--json`'s.
fn check(diff: &mut Vec<String>, what: String, got: &Value, want: Value) {
    if *got != want {
        diff.push(format!("{what}: genie read {got}, --json says {want}"));
    }
}

/// Every difference between what genie parsed and what `--json` says.
fn differences(parsed: &Value, sas: &Value, drops: &Value) -> Vec<String> {
    let mut diff = Vec::new();
    for (i, case) in [("sa", &parsed["sa"]), ("drops", &parsed["drops"])] {
        if let Some(e) = case.get("error") {
            diff.push(format!("{i}: genie could not parse: {e}"));
        }
    }
    // show crypto ipsec sa: interface -> ident -> counters and SPIs.
    let interfaces = &parsed["sa"]["parsed"]["interface"];
    let json_sas = sas["sas"].as_array().cloned().unwrap_or_default();
    check(
        &mut diff,
        "interfaces".into(),
        &json!(interfaces.as_object().map_or(0, |o| o.len())),
        json!(json_sas.len()),
    );
    for s in &json_sas {
        let name = s["tunnel"].as_str().unwrap_or("?");
        let idents = &interfaces[name]["ident"];
        let Some(idents) = idents.as_object() else {
            diff.push(format!("{name}: no ident in genie's parse"));
            continue;
        };
        let peer = s["peer"].clone();
        let ident: Vec<&Value> = idents.values().filter(|v| v["peer_ip"] == peer).collect();
        if ident.len() != 1 {
            diff.push(format!("{name}: {} idents for peer {peer}", ident.len()));
            continue;
        }
        let g = ident[0];
        let at = |k: &str| format!("{name} {k}");
        for k in ["pkts_encaps", "pkts_encrypt", "pkts_digest"] {
            check(&mut diff, at(k), &g[k], s["pkts_encaps"].clone());
        }
        for k in ["pkts_decaps", "pkts_decrypt", "pkts_verify"] {
            check(&mut diff, at(k), &g[k], s["pkts_decaps"].clone());
        }
        check(
            &mut diff,
            at("send_errors"),
            &g["send_errors"],
            s["send_errors"].clone(),
        );
        check(
            &mut diff,
            at("recv_errors"),
            &g["recv_errors"],
            s["recv_errors"].clone(),
        );
        check(
            &mut diff,
            at("remote_crypto_endpt"),
            &g["remote_crypto_endpt"],
            peer,
        );
        let out_spi = s["outbound_spi"].as_u64().unwrap_or(0);
        check(
            &mut diff,
            at("current_outbound_spi"),
            &g["current_outbound_spi"],
            json!(ios_spi(out_spi)),
        );
        let keys = |v: &Value| -> Value {
            json!(
                v.as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            )
        };
        let mut inbound: Vec<String> = s["inbound_spis"]
            .as_array()
            .unwrap_or(&vec![])
            .iter()
            .map(|v| ios_spi(v.as_u64().unwrap_or(0)))
            .collect();
        inbound.sort();
        check(
            &mut diff,
            at("inbound esp sas"),
            &keys(&g["inbound_esp_sas"]["spi"]),
            json!(inbound),
        );
        check(
            &mut diff,
            at("outbound esp sas"),
            &keys(&g["outbound_esp_sas"]["spi"]),
            json!([ios_spi(out_spi)]),
        );
    }
    // drops all: every row of --json, by name, with its number and count.
    let rows = &parsed["drops"]["parsed"]["drops"];
    let json_rows = drops["drops"].as_array().cloned().unwrap_or_default();
    check(
        &mut diff,
        "drop rows".into(),
        &json!(rows.as_object().map_or(0, |o| o.len())),
        json!(json_rows.len()),
    );
    for r in &json_rows {
        let name = r["name"].as_str().unwrap_or("?");
        check(
            &mut diff,
            format!("drop {name} type"),
            &rows[name]["drop_type"],
            r["id"].clone(),
        );
        check(
            &mut diff,
            format!("drop {name} packets"),
            &rows[name]["packets"],
            r["packets"].clone(),
        );
    }
    diff
}

use xdpsec_e2e::drop_rows as drops;

fn sa_counts(d: &Daemon) -> (u64, u64) {
    let v = d.cli_json(SA).unwrap();
    let s = v["sas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tunnel"] == "Tunnel1")
        .unwrap_or_else(|| panic!("no Tunnel1 in {v}"));
    (
        s["pkts_decaps"].as_u64().unwrap(),
        s["pkts_encaps"].as_u64().unwrap(),
    )
}

#[test]
fn genieparser_reads_show_output_as_json_gives_it() {
    let lab = Lab::unique().up(1).unwrap();
    // Tunnel1 carries the traffic; Tunnel2 (UDP-encapsulated, AES-128-GCM,
    // another peer) stays idle: two interfaces in the text.
    let config = tunnel_config(&lab, 0, &BASE)
        + &format!(
            r#"[[tunnel]]
name = "Tunnel2"
kind = "manual"
peer = "198.51.100.3"
encap = "udp"
local_port = 4500
peer_port = 4500
cipher = "aes128-gcm"
esn = false
replay_window = 128
remote_subnets = ["203.0.113.3/32"]
[tunnel.inbound]
spi = 0x2001
key = "{KEY_A128}"
[tunnel.outbound]
spi = 0x2002
key = "{KEY_B128}"
"#
        );
    let d = Daemon::start(&lab.ns1, &config).unwrap();
    let mut cfg = scapy_peer_config(&lab, &BASE).unwrap();
    // Five echo requests through the tunnel, the replies back through it.
    let r = scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(r["matched"], json!([0, 1, 2, 3, 4]), "{r}");
    // Then one frame of each failure, and one more good one.
    cfg["packets"] = json!([
        {"seq": 3},                        // duplicate: 19
        {"seq": 1, "spi": 0xBEEF},         // unknown SPI: 4
        {"seq": 2, "spi": 0xBEEF},
        {"seq": 6, "tamper": true},        // ICV: 62
        {"seq": 7, "nh": 17},              // next header: 65
        {"seq": 8, "pad": "0000"},         // padding: 23
        {"seq": 9},                        // decapsulated, its reply encapsulated
    ]);
    let r = scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(r["sent"], 7, "{r}");
    let want_drops: BTreeMap<u64, u64> = [(4, 2), (19, 1), (23, 1), (62, 1), (65, 1)]
        .into_iter()
        .collect();
    let want = (want_drops, (6, 6));
    assert_eq!(
        settle(&d, want.clone(), || (drops(&d), sa_counts(&d))),
        want
    );

    let sa_text = d.cli(SA).unwrap();
    let drops_text = d.cli(DROPS_ALL).unwrap();
    let sa_json = d.cli_json(SA).unwrap();
    let drops_json = d.cli_json(DROPS_ALL).unwrap();
    // The counters did not move between the text and the JSON reads.
    assert_eq!((drops(&d), sa_counts(&d)), want);

    // The same texts with one number changed must not compare equal: the
    // comparison below can fail.
    let bad_sa = sa_text.replacen("#pkts decaps: 6,", "#pkts decaps: 7,", 1);
    assert_ne!(bad_sa, sa_text, "{sa_text}");
    let row4 = drops_text
        .lines()
        .find(|l| l.trim_start().starts_with("4 "))
        .unwrap_or_else(|| panic!("no drop row 4 in {drops_text}"));
    let bad_drops = drops_text.replace(row4, &format!("{}3", &row4[..row4.len() - 1]));
    assert_ne!(bad_drops, drops_text);

    let parsed = genie_parse(&json!([
        {"sa": sa_text, "drops": drops_text},
        {"sa": bad_sa, "drops": bad_drops},
    ]))
    .unwrap();
    let diff = differences(&parsed[0], &sa_json, &drops_json);
    assert!(
        diff.is_empty(),
        "genie and --json disagree:\n{}\n--- text:\n{sa_text}\n{drops_text}\n--- genie:\n{}",
        diff.join("\n"),
        parsed[0]
    );
    // Sanity: genie saw both tunnels and the traffic (not an all-zero parse
    // that happens to agree).
    let names: Vec<&String> = parsed[0]["sa"]["parsed"]["interface"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(names, ["Tunnel1", "Tunnel2"], "{}", parsed[0]);
    let g = &parsed[0]["sa"]["parsed"]["interface"]["Tunnel1"]["ident"];
    let first = g.as_object().and_then(|o| o.values().next()).unwrap();
    assert_eq!(first["pkts_decaps"], 6, "{g}");
    assert_eq!(
        parsed[0]["drops"]["parsed"]["drops"]["IN_US_V4_PKT_SA_NOT_FOUND_SPI"]["packets"],
        2
    );
    let diff = differences(&parsed[1], &sa_json, &drops_json);
    assert_eq!(
        diff,
        vec![
            "Tunnel1 pkts_decaps: genie read 7, --json says 6".to_string(),
            "drop IN_US_V4_PKT_SA_NOT_FOUND_SPI packets: genie read 3, --json says 2".to_string(),
        ],
        "a wrong number in the text must show"
    );
}

/// `show crypto ikev2 proposal` of a live daemon with two IKE tunnels, one
/// without proposals (IOS XE's `default`) and one with two of its own:
/// genie's `ShowCryptoIkev2Proposal` reads what `--json` says, and a
/// changed group in the text shows.
#[test]
fn genieparser_reads_show_crypto_ikev2_proposal() {
    let lab = Lab::unique().up(1).unwrap();
    let second = r#"
[[tunnel]]
name = "Tunnel3"
kind = "ike"
peer = "198.51.100.3"
encap = "udp"
psk = "another test key"
initiate = false
ike_proposals = ["aes256gcm16-prfsha256-x25519", "aes128-sha256-modp2048"]
esp_proposals = ["aes256gcm16"]
remote_subnets = ["203.0.113.3/32"]
"#;
    let config = xdpsec_e2e::ike::ike_config(
        &lab,
        0,
        "a test key",
        false,
        &xdpsec_e2e::strongswan::NO_PROPOSALS,
        second,
    );
    let d = Daemon::start(&lab.ns1, &config).unwrap();
    let text = d.cli("show crypto ikev2 proposal").unwrap();
    let j = d.cli_json("show crypto ikev2 proposal").unwrap();
    let bad = text.replacen("Group 14", "Group 15", 1);
    assert_ne!(bad, text, "{text}");
    let parsed =
        genie_parse(&json!([{ "ikev2_proposal": text }, { "ikev2_proposal": bad }])).unwrap();
    // genie's names: the IOS words and "NAME/Group N" per DH group.
    let want = |j: &Value| -> Value {
        let mut m = serde_json::Map::new();
        for p in j["proposals"].as_array().unwrap() {
            let words = |k: &str| -> String {
                p[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let groups: Vec<String> = p["dh_group"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    let g = g.as_u64().unwrap();
                    let name = match g {
                        14 => "DH_GROUP_2048_MODP",
                        19 => "DH_GROUP_256_ECP",
                        20 => "DH_GROUP_384_ECP",
                        21 => "DH_GROUP_521_ECP",
                        31 => "DH_GROUP_CURVE25519",
                        _ => panic!("group {g}"),
                    };
                    format!("{name}/Group {g}")
                })
                .collect();
            m.insert(
                p["name"].as_str().unwrap().to_string(),
                json!({
                    "encryption": words("encryption"),
                    "integrity": words("integrity"),
                    "prf": words("prf"),
                    "dh_group": groups,
                }),
            );
        }
        json!({ "proposal_name": m })
    };
    let expected = want(&j);
    assert_eq!(
        parsed[0]["ikev2_proposal"]["parsed"], expected,
        "genie and --json disagree on\n{text}"
    );
    // The three proposals, IOS XE's default first, as its golden output.
    assert_eq!(
        expected["proposal_name"]["default"],
        json!({
            "encryption": "AES-CBC-256",
            "integrity": "SHA512 SHA384",
            "prf": "SHA512 SHA384",
            "dh_group": [
                "DH_GROUP_256_ECP/Group 19",
                "DH_GROUP_2048_MODP/Group 14",
                "DH_GROUP_521_ECP/Group 21"
            ],
        })
    );
    assert_eq!(j["proposals"].as_array().unwrap().len(), 3, "{j}");
    assert_eq!(j["proposals"][0]["tunnels"], json!(["Tunnel2"]), "{j}");
    assert_ne!(
        parsed[1]["ikev2_proposal"]["parsed"], expected,
        "a wrong group in the text must show"
    );
}
