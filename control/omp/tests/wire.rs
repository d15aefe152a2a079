//! The codec: round trips, exact layout, and no panic on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use ring::rand::SystemRandom;
use xdpsec_omp::wire::{FrameReader, GoodbyeReason, Message, Role, ServiceRoute, TlocRoute};
use xdpsec_omp::{KeyMaterial, Prefix, TlocId, pairwise_key};

fn samples() -> Vec<Message> {
    let key = KeyMaterial::random(&SystemRandom::new());
    vec![
        Message::Hello {
            role: Role::Edge,
            system_ip: Ipv4Addr::new(192, 0, 2, 1),
            site_id: 100,
            color: "biz-internet".into(),
            version: "xdpsec 0.1.0".into(),
        },
        Message::Refuse(xdpsec_omp::history::ErrorCode::SerNtPres),
        Message::AuthOk,
        Message::Keepalive,
        Message::TlocAdvertise(TlocRoute {
            system_ip: Ipv4Addr::new(192, 0, 2, 2),
            site_id: 200,
            color: "mpls".into(),
            public_ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            public_port: 12366,
            spi: 0x1234_5678,
            key,
        }),
        Message::TlocWithdraw {
            system_ip: Ipv4Addr::new(192, 0, 2, 2),
            color: "mpls".into(),
        },
        Message::RouteAdvertise(ServiceRoute {
            prefix: Prefix::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24).unwrap(),
            system_ip: Ipv4Addr::new(192, 0, 2, 2),
            site_id: 200,
        }),
        Message::RouteWithdraw {
            prefix: Prefix::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24).unwrap(),
            system_ip: Ipv4Addr::new(192, 0, 2, 2),
        },
        Message::Goodbye(GoodbyeReason::AuthFailed),
    ]
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let f = m.encode();
        let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(len, f.len() - 4);
        assert_eq!(Message::decode(&f[4..]).unwrap(), m);
    }
}

#[test]
fn exact_layout_of_a_service_route() {
    let m = Message::RouteWithdraw {
        prefix: Prefix::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24).unwrap(),
        system_ip: Ipv4Addr::new(192, 0, 2, 2),
    };
    assert_eq!(
        *m.encode(),
        [0, 0, 0, 11, 8, 4, 203, 0, 113, 0, 24, 192, 0, 2, 2]
    );
}

#[test]
fn reader_reassembles_split_and_joined_frames() {
    let mut stream = Vec::new();
    for m in samples() {
        stream.extend_from_slice(&m.encode());
    }
    let mut r = FrameReader::default();
    let mut got = Vec::new();
    for b in stream.chunks(3) {
        r.push(b);
        while let Some(m) = r.next_message().unwrap() {
            got.push(m);
        }
    }
    // Keys are random per sample() call: compare all but the TLOC route.
    let want = samples();
    for (g, w) in got.iter().zip(&want) {
        if !matches!(w, Message::TlocAdvertise(_)) {
            assert_eq!(g, w);
        }
    }
    assert_eq!(got.len(), samples().len());
}

#[test]
fn bad_frames_are_errors() {
    let mut r = FrameReader::default();
    r.push(&[0, 0, 0, 0]);
    assert!(r.next_message().is_err());
    let mut r = FrameReader::default();
    r.push(&[0, 1, 0, 0, 1]);
    assert!(r.next_message().is_err(), "over MAX_FRAME");
    // Prefix length 33 on IPv4.
    assert!(Message::decode(&[8, 4, 203, 0, 113, 0, 33, 192, 0, 2, 2]).is_err());
    // Trailing byte.
    assert!(Message::decode(&[4, 0]).is_err());
    // Unknown type.
    assert!(Message::decode(&[200]).is_err());
}

#[test]
fn keys_never_in_debug_output() {
    for m in samples() {
        if let Message::TlocAdvertise(t) = &m {
            let dbg = format!("{m:?}");
            assert!(dbg.contains("redacted"), "{dbg}");
            assert!(!dbg.contains(&format!("{:?}", t.key.bytes())));
        }
    }
}

#[test]
fn refuse_carries_the_mib_number_of_the_code() {
    use xdpsec_omp::history::ErrorCode;
    // CISCO-SDWAN-SECURITY-MIB ConnFlagEnum: sERNTPRES(37), cRTVERFL(38),
    // cTORGNMMIS(48), cERTEXPRD(53), dUPSYSIPDEL(65).
    for (c, n) in [
        (ErrorCode::SerNtPres, 37),
        (ErrorCode::CrtVerFl, 38),
        (ErrorCode::CtOrgNmMis, 48),
        (ErrorCode::CertExprd, 53),
        (ErrorCode::DupSysIpDel, 65),
    ] {
        assert_eq!(&Message::Refuse(c).encode()[..], &[0, 0, 0, 2, 10, n]);
        assert_eq!(Message::decode(&[10, n]).unwrap(), Message::Refuse(c));
    }
    assert!(Message::decode(&[10, 200]).is_err());
}

#[test]
fn pairwise_keys_differ_per_sender_and_match_rfc5869_expansion() {
    let k = KeyMaterial::random(&SystemRandom::new());
    let b = TlocId {
        system_ip: Ipv4Addr::new(192, 0, 2, 2),
        color: "mpls".into(),
    };
    let a = TlocId {
        system_ip: Ipv4Addr::new(192, 0, 2, 1),
        color: "mpls".into(),
    };
    let c = TlocId {
        system_ip: Ipv4Addr::new(192, 0, 2, 3),
        color: "mpls".into(),
    };
    let ab = pairwise_key(&k, &a, &b, 0x1000);
    assert_eq!(ab, pairwise_key(&k, &a, &b, 0x1000));
    assert_ne!(ab, pairwise_key(&k, &c, &b, 0x1000));
    assert_ne!(ab, pairwise_key(&k, &a, &b, 0x1001));
    assert_ne!(ab.bytes(), k.bytes());
    // Independent HKDF-SHA256 (RFC 5869) from HMAC: PRK = HMAC(0^32, IKM),
    // T1 = HMAC(PRK, info || 1), T2 = HMAC(PRK, T1 || info || 2).
    let mut info = b"xdpsec-omp pairwise-key v1".to_vec();
    info.extend([192, 0, 2, 1, 4]);
    info.extend(b"mpls");
    info.extend([192, 0, 2, 2, 4]);
    info.extend(b"mpls");
    info.extend(0x1000u32.to_be_bytes());
    let h = |key: &[u8], data: &[u8]| {
        ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), data)
            .as_ref()
            .to_vec()
    };
    let prk = h(&[0; 32], k.bytes());
    let t1 = h(&prk, &[info.clone(), vec![1]].concat());
    let t2 = h(&prk, &[t1.clone(), info, vec![2]].concat());
    assert_eq!(ab.bytes()[..32], t1[..]);
    assert_eq!(ab.bytes()[32..], t2[..4]);
}

proptest! {
    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Message::decode(&body);
        let mut r = FrameReader::default();
        r.push(&body);
        for _ in 0..8 {
            match r.next_message() { Ok(Some(_)) => {}, _ => break }
        }
    }

    #[test]
    fn truncated_and_mutated_frames_never_panic(i in 0usize..9, cut in 0usize..120, flip in 0usize..120, x in any::<u8>()) {
        let f = samples()[i].encode();
        let body = &f[4..];
        let _ = Message::decode(&body[..cut.min(body.len())]);
        if cut < body.len() {
            prop_assert!(Message::decode(&body[..cut]).is_err());
        }
        let mut m = body.to_vec();
        let n = m.len();
        m[flip % n] ^= x;
        let _ = Message::decode(&m);
        let mut r = FrameReader::default();
        r.push(&f[..(cut + 4).min(f.len())]);
        let _ = r.next_message();
    }
}

mod cores {
    use super::*;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};
    use xdpsec_omp::controller::{self, Controller, ControllerConfig};
    use xdpsec_omp::edge::{self, Edge, EdgeConfig, TlocConfig};

    /// Well-formed messages with small random fields (few system-ips and
    /// colors, so advertisements and withdrawals hit the same routes).
    fn message() -> impl Strategy<Value = Message> {
        (0u8..8, 1u8..4, 0u8..3, any::<u16>(), any::<u32>(), 0u8..33).prop_map(
            |(t, s, c, port, spi, len)| {
                let system_ip = Ipv4Addr::new(192, 0, 2, s);
                let color = ["mpls", "lte", "biz-internet"][c as usize].to_string();
                let prefix = Prefix::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, s)), len).unwrap();
                match t {
                    0 => Message::TlocAdvertise(TlocRoute {
                        system_ip,
                        site_id: s as u32,
                        color,
                        public_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, s)),
                        public_port: port,
                        spi,
                        key: KeyMaterial::random(&SystemRandom::new()),
                    }),
                    1 => Message::TlocWithdraw { system_ip, color },
                    2 => Message::RouteAdvertise(ServiceRoute {
                        prefix,
                        system_ip,
                        site_id: 1,
                    }),
                    3 => Message::RouteWithdraw { prefix, system_ip },
                    4 => Message::Keepalive,
                    5 => Message::AuthOk,
                    6 => Message::Refuse(xdpsec_omp::history::ErrorCode::CrtVerFl),
                    _ => Message::Goodbye(GoodbyeReason::Replaced),
                }
            },
        )
    }

    fn edge_cert(n: u8) -> xdpsec_omp::tls::PeerCert {
        xdpsec_omp::tls::PeerCert {
            organization: "o".into(),
            role: "edge".into(),
            serial: format!("E{n}"),
            system_ip: Some(Ipv4Addr::new(192, 0, 2, n)),
        }
    }

    fn ctrl_cert() -> xdpsec_omp::tls::PeerCert {
        xdpsec_omp::tls::PeerCert {
            organization: "o".into(),
            role: "controller".into(),
            serial: "C0".into(),
            system_ip: Some(Ipv4Addr::new(192, 0, 2, 254)),
        }
    }

    fn frames(parts: &[(u8, Vec<u8>)]) -> Vec<u8> {
        // Valid length prefixes around random bodies reach the decoders of
        // every message type; a few raw chunks test the framing itself.
        let mut v = Vec::new();
        for (t, body) in parts {
            if *t == 0 {
                v.extend(body);
            } else {
                v.extend(((body.len() + 1) as u32).to_be_bytes());
                v.push(*t % 11);
                v.extend(body);
            }
        }
        v
    }

    proptest! {
        #[test]
        fn cores_never_panic_on_any_bytes(
            parts in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..80)), 0..12),
            split in 1usize..50,
        ) {
            let now = Instant::now();
            let data = frames(&parts);
            let mut c = Controller::new(ControllerConfig::new(Ipv4Addr::new(192, 0, 2, 254), "o", (1..=2).map(|n| (format!("E{n}"), Ipv4Addr::new(192, 0, 2, n))).collect()));
            let remote: SocketAddr = "198.51.100.9:40000".parse().unwrap();
            c.handle(now, controller::Input::Accepted { conn: 1, remote, peer: edge_cert(1) });
            for ch in data.chunks(split) {
                c.handle(now, controller::Input::Bytes { conn: 1, data: ch });
            }
            c.handle(now + Duration::from_secs(100), controller::Input::Timer);
            let _ = c.tlocs();
            let _ = c.peers(now);

            let cfg = EdgeConfig::new(Ipv4Addr::new(192, 0, 2, 1), 1, "o", vec![TlocConfig {
                color: "mpls".into(),
                address: "198.51.100.1".parse().unwrap(),
                port_offset: 0,
            }]);
            let mut e = Edge::new(cfg, now);
            e.handle(now, edge::Input::Timer);
            let a = e.handle(now, edge::Input::Connected { color: "mpls", peer: &ctrl_cert() });
            // Play the controller so the random frames reach an up connection.
            let edge::Action::Send { data: hello, .. } = &a[0] else { panic!("{a:?}") };
            let mut r = FrameReader::default();
            r.push(hello);
            let Some(Message::Hello { .. }) = r.next_message().unwrap() else { panic!() };
            let mut reply = Message::Hello {
                role: Role::Controller,
                system_ip: Ipv4Addr::new(192, 0, 2, 254),
                site_id: 0,
                color: String::new(),
                version: String::new(),
            }
            .encode();
            reply.extend_from_slice(&Message::AuthOk.encode());
            e.handle(now, edge::Input::Bytes { color: "mpls", data: &reply });
            prop_assert_eq!(e.control_connections(now)[0].state, "up");
            for ch in data.chunks(split) {
                e.handle(now, edge::Input::Bytes { color: "mpls", data: ch });
            }
            e.handle(now + Duration::from_secs(100), edge::Input::Timer);
            let _ = e.tlocs();
        }

        #[test]
        fn an_up_edge_never_panics_on_any_message_sequence(msgs in proptest::collection::vec(message(), 0..40)) {
            let now = Instant::now();
            let cfg = EdgeConfig::new(Ipv4Addr::new(192, 0, 2, 1), 1, "o", vec![TlocConfig {
                color: "mpls".into(),
                address: "198.51.100.1".parse().unwrap(),
                port_offset: 0,
            }]);
            let mut e = Edge::new(cfg, now);
            e.handle(now, edge::Input::Timer);
            let a = e.handle(now, edge::Input::Connected { color: "mpls", peer: &ctrl_cert() });
            let edge::Action::Send { data: hello, .. } = &a[0] else { panic!("{a:?}") };
            let mut r = FrameReader::default();
            r.push(hello);
            let Some(Message::Hello { .. }) = r.next_message().unwrap() else { panic!() };
            let mut reply = Message::Hello {
                role: Role::Controller,
                system_ip: Ipv4Addr::new(192, 0, 2, 254),
                site_id: 0,
                color: String::new(),
                version: String::new(),
            }
            .encode();
            reply.extend_from_slice(&Message::AuthOk.encode());
            e.handle(now, edge::Input::Bytes { color: "mpls", data: &reply });
            let mut t = now;
            for m in msgs {
                t += Duration::from_millis(300);
                e.handle(t, edge::Input::Bytes { color: "mpls", data: &m.encode() });
                if e.control_connections(t)[0].state != "up" {
                    break;
                }
            }
            e.ipsec_rekey(t);
            e.clear_omp(t);
            let _ = e.tlocs();
        }

        #[test]
        fn an_up_controller_never_panics_on_any_message_sequence(msgs in proptest::collection::vec(message(), 0..40)) {
            let now = Instant::now();
            let mut c = Controller::new(ControllerConfig::new(Ipv4Addr::new(192, 0, 2, 254), "o", (1..=2).map(|n| (format!("E{n}"), Ipv4Addr::new(192, 0, 2, n))).collect()));
            let remote: SocketAddr = "198.51.100.9:40000".parse().unwrap();
            let mut t = now;
            for conn in [1u64, 2] {
                let s = Ipv4Addr::new(192, 0, 2, conn as u8);
                c.handle(t, controller::Input::Accepted { conn, remote, peer: edge_cert(conn as u8) });
                let hello = Message::Hello { role: Role::Edge, system_ip: s, site_id: 1, color: "mpls".into(), version: String::new() };
                c.handle(t, controller::Input::Bytes { conn, data: &hello.encode() });
            }
            prop_assert_eq!(c.control_connections(t).iter().filter(|x| x.state == "up").count(), 2);
            for (i, m) in msgs.into_iter().enumerate() {
                t += Duration::from_millis(300);
                c.handle(t, controller::Input::Bytes { conn: 1 + (i as u64 % 2), data: &m.encode() });
            }
            c.handle(t, controller::Input::Closed { conn: 1 });
            c.handle(t + Duration::from_secs(50_000), controller::Input::Timer);
            let _ = (c.tlocs(), c.routes(), c.peers(t));
        }
    }
}
