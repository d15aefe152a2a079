//! Cross-checks against independent implementations: scapy's IKEv2 layer
//! parses what we emit and we parse what it builds; Python's `cryptography`
//! and `hmac` compute the key derivation and AUTH; it opens our SK payload.
//! Without the venv: ignored, or a failure under `cargo xtask test` and CI
//! (`xdpsec_testenv`).

use std::path::PathBuf;

use xdpsec_testenv::{hex, unhex};

use ring::rand::SystemRandom;
use xdpsec_ike::{
    DhGroup, Encr, IkeProposal, Prefix, Prf,
    crypto::{self, Dh, IkeKeys},
    wire::{
        self, DeleteRepr, HeaderRepr, Message, NotifyRepr, Payload, ProposalRepr, TransformRepr,
        TsRepr,
    },
};

fn run(req: serde_json::Value) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/ike_ref.py");
    serde_json::from_slice(&xdpsec_testenv::venv_script(
        &script,
        req.to_string().as_bytes(),
    ))
    .unwrap()
}

fn scapy_parses_what_we_emit() {
    let h = HeaderRepr {
        spi_i: 0x9c1d3f0a12345678,
        spi_r: 0,
        exchange: wire::IKE_SA_INIT,
        flags: wire::FLAG_INITIATOR,
        msg_id: 0,
    };
    let p = vec![
        Payload::Sa(vec![
            ProposalRepr {
                num: 1,
                protocol: wire::PROTO_IKE,
                spi: vec![],
                transforms: vec![
                    TransformRepr {
                        ty: 1,
                        id: 20,
                        key_len: Some(256),
                    },
                    TransformRepr {
                        ty: 2,
                        id: 5,
                        key_len: None,
                    },
                    TransformRepr {
                        ty: 4,
                        id: 31,
                        key_len: None,
                    },
                ],
            },
            ProposalRepr {
                num: 2,
                protocol: wire::PROTO_IKE,
                spi: vec![],
                transforms: vec![
                    TransformRepr {
                        ty: 1,
                        id: 12,
                        key_len: Some(128),
                    },
                    TransformRepr {
                        ty: 3,
                        id: 12,
                        key_len: None,
                    },
                    TransformRepr {
                        ty: 2,
                        id: 5,
                        key_len: None,
                    },
                    TransformRepr {
                        ty: 4,
                        id: 19,
                        key_len: None,
                    },
                ],
            },
        ]),
        Payload::Ke {
            group: 31,
            data: vec![0x33; 32],
        },
        Payload::Nonce(vec![0x44; 32]),
        Payload::Notify(NotifyRepr {
            protocol: 0,
            spi: vec![],
            ty: wire::notify::NAT_DETECTION_SOURCE_IP,
            data: vec![0x55; 20],
        }),
        Payload::TsI(vec![
            TsRepr::from_prefix(Prefix {
                addr: "203.0.113.0".parse().unwrap(),
                len: 24,
            }),
            TsRepr::from_prefix(Prefix {
                addr: "2001:db8::".parse().unwrap(),
                len: 112,
            }),
        ]),
        Payload::Delete(DeleteRepr::Esp(vec![0xc0ffee01, 0x1000])),
    ];
    let bytes = wire::emit_message(&h, &p);
    let v = run(serde_json::json!({"op": "parse", "hex": hex(&bytes)}));
    assert_eq!(v["init_spi"], "9c1d3f0a12345678");
    assert_eq!(v["exch"], 34);
    assert_eq!(v["length"], bytes.len());
    let pl = v["payloads"].as_array().unwrap();
    let types: Vec<&str> = pl.iter().map(|x| x["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "IKEv2_SA",
            "IKEv2_KE",
            "IKEv2_Nonce",
            "IKEv2_Notify",
            "IKEv2_TSi",
            "IKEv2_Delete"
        ]
    );
    assert_eq!(
        pl[0]["props"][0]["trans"],
        serde_json::json!([[1, 20, 256], [2, 5, null], [4, 31, null]])
    );
    assert_eq!(pl[0]["props"][1]["num"], 2);
    assert_eq!(
        pl[0]["props"][1]["trans"][0],
        serde_json::json!([1, 12, 128])
    );
    assert_eq!(pl[1]["group"], 31);
    assert_eq!(pl[1]["ke"], hex(&[0x33; 32]));
    assert_eq!(pl[3]["ntype"], 16388);
    assert_eq!(
        pl[4]["ts"][0],
        serde_json::json!(["203.0.113.0", "203.0.113.255", 0, 65535])
    );
    assert_eq!(
        pl[4]["ts"][1],
        serde_json::json!(["2001:db8::", "2001:db8::ffff", 0, 65535])
    );
    assert_eq!(pl[5]["proto"], 3);
}

fn we_parse_what_scapy_builds() {
    let v = run(serde_json::json!({"op": "build"}));
    let bytes = unhex(v["hex"].as_str().unwrap());
    let m = Message::parse(&bytes).expect("parse scapy's message");
    assert_eq!(m.header.spi_i, 0x0011223344556677);
    assert_eq!(m.header.exchange, wire::IKE_SA_INIT);
    let Payload::Sa(props) = &m.payloads[0] else {
        panic!("{:?}", m.payloads[0])
    };
    assert_eq!(props.len(), 2);
    assert_eq!(
        props[0].transforms[0],
        TransformRepr {
            ty: 1,
            id: 12,
            key_len: Some(256)
        }
    );
    assert_eq!(
        props[1].transforms[2],
        TransformRepr {
            ty: 4,
            id: 31,
            key_len: None
        }
    );
    assert_eq!(
        m.payloads[1],
        Payload::Ke {
            group: 19,
            data: vec![0x42; 64]
        }
    );
    assert_eq!(m.payloads[2], Payload::Nonce(vec![0x17; 32]));
    assert_eq!(
        m.notify(wire::notify::NAT_DETECTION_SOURCE_IP)
            .unwrap()
            .data,
        vec![1; 20]
    );
    assert_eq!(m.payloads[4], Payload::Vendor(b"strongSwan".to_vec()));
    let Payload::TsI(ts) = &m.payloads[5] else {
        panic!()
    };
    assert_eq!(
        ts[0].to_prefix(),
        Some(Prefix {
            addr: "203.0.113.0".parse().unwrap(),
            len: 24
        })
    );
    assert_eq!(
        ts[1].to_prefix(),
        Some(Prefix {
            addr: "2001:db8::".parse().unwrap(),
            len: 112
        })
    );
    assert_eq!(
        m.payloads[6],
        Payload::Delete(DeleteRepr::Esp(vec![0x11223344, 0x55667788]))
    );
}

fn key_derivation_matches_python() {
    let rng = SystemRandom::new();
    for group in [DhGroup::Curve25519, DhGroup::Ecp256] {
        let prop = IkeProposal {
            encr: Encr::AesGcm16_256,
            integ: None,
            prf: Prf::HmacSha256,
            dh: group,
        };
        let dh = Dh::generate(group, &rng).unwrap();
        let (ni, nr) = ([0x11u8; 32], [0x22u8; 32]);
        let (spi_i, spi_r) = (0x0102030405060708u64, 0x1112131415161718u64);
        let lens = [32, 0, 0, 36, 36, 32, 32];
        let msg = b"the responder's IKE_SA_INIT message";
        let id = [1u8, 0, 0, 0, 198, 51, 100, 2];
        let v = run(
            serde_json::json!({"op": "keys", "group": group.id(), "peer_ke": hex(dh.public()),
                "ni": hex(&ni), "nr": hex(&nr), "spi_i": format!("{spi_i:016x}"), "spi_r": format!("{spi_r:016x}"),
                "lens": lens, "child_len": 72, "psk": "an example psk", "msg": hex(msg), "id": hex(&id)}),
        );
        let shared = dh.agree(&unhex(v["pub"].as_str().unwrap())).unwrap();
        assert_eq!(hex(&shared), v["shared"]);
        let seed = crypto::skeyseed(Prf::HmacSha256, &ni, &nr, &shared);
        assert_eq!(hex(&seed), v["skeyseed"]);
        let k = IkeKeys::derive(&prop, &seed, &ni, &nr, spi_i, spi_r);
        let want: Vec<String> = v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        let got = [
            &k.sk_d, &k.sk_ai, &k.sk_ar, &k.sk_ei, &k.sk_er, &k.sk_pi, &k.sk_pr,
        ]
        .map(|x| hex(x));
        assert_eq!(got.to_vec(), want);
        let (i2r, r2i) = crypto::child_keymat(
            Prf::HmacSha256,
            &k.sk_d,
            None,
            &ni,
            &nr,
            Encr::AesGcm16_256,
            None,
        );
        assert_eq!(format!("{}{}", hex(&i2r), hex(&r2i)), v["child"]);
        // The responder's AUTH: its message | Ni ... here Nr stands as the
        // "peer nonce" exactly as the script computes it.
        let auth = crypto::psk_auth(Prf::HmacSha256, b"an example psk", msg, &nr, &k.sk_pi, &id);
        assert_eq!(hex(&auth), v["auth"]);
        // Python's AES-GCM opens our SK payload (RFC 5282).
        let h = HeaderRepr {
            spi_i,
            spi_r,
            exchange: wire::IKE_AUTH,
            flags: wire::FLAG_INITIATOR,
            msg_id: 1,
        };
        let mut inner = vec![];
        let first = wire::emit_payloads(&[Payload::Nonce(vec![9; 20])], &mut inner);
        let sealed = k.seal(true, &h, first, &inner, &rng).unwrap();
        let o =
            run(serde_json::json!({"op": "gcm_open", "hex": hex(&sealed), "ek": hex(&k.sk_ei)}));
        assert_eq!(o["plain"], hex(&inner));
    }
}

fn main() {
    use xdpsec_testenv::{Need, trial};
    xdpsec_testenv::main(vec![
        trial(
            "scapy_parses_what_we_emit",
            &[Need::Venv],
            scapy_parses_what_we_emit,
        ),
        trial(
            "we_parse_what_scapy_builds",
            &[Need::Venv],
            we_parse_what_scapy_builds,
        ),
        trial(
            "key_derivation_matches_python",
            &[Need::Venv],
            key_derivation_matches_python,
        ),
    ]);
}
