//! A minimal shell around the IKE core for interop tests: UDP sockets on
//! 500 and the NAT-T port, a timer, and a toy ESP-in-UDP endpoint that
//! checks the negotiated child keys by exchanging pings with the peer.
//! Not the daemon: no datapath, no XDP. Prints one JSON object per event.
//!
//! Usage: ike_peer CONFIG_JSON
//! (local, remote, psk, ike, esp, initiate, force_encap, seconds,
//! child_lifetime, ike_lifetime, dpd, and `schedule`: [[at_s, "cmd"], ...]
//! with cmd one of rekey-child, rekey-ike, clear-child, clear-ike, ping.)

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use ring::{aead, hmac};
use serde_json::{Value, json};
use xdpsec_ike::{
    Action, ChildKeys, Command, EspProposal, Identity, Ike, IkeProposal, Input, PeerConfig, Prefix,
};
use zeroize::Zeroizing;

fn emit(v: Value) {
    println!("{v}");
}

struct Esp {
    keys: ChildKeys,
    seq: u32,
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An IPv4 ICMP echo request from `src` to `dst`.
fn ping_packet(src: IpAddr, dst: IpAddr, seq: u16) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only")
    };
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"xdpsec-ike interop");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let len = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&len.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&s.octets());
    ip.extend_from_slice(&d.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

fn esp_seal(e: &mut Esp, inner: &[u8]) -> Vec<u8> {
    e.seq += 1;
    let mut out = Vec::new();
    out.extend_from_slice(&e.keys.spi.to_be_bytes());
    out.extend_from_slice(&e.seq.to_be_bytes());
    let block = if e.keys.encr.is_aead() { 4 } else { 16 };
    let mut plain = inner.to_vec();
    let pad = (block - (plain.len() + 2) % block) % block;
    plain.extend((1..=pad as u8).collect::<Vec<_>>());
    plain.push(pad as u8);
    plain.push(4); // next header: IPv4
    let kl = e.keys.encr.key_len();
    if e.keys.encr.is_aead() {
        let alg = if kl == 16 {
            &aead::AES_128_GCM
        } else {
            &aead::AES_256_GCM
        };
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(alg, &e.keys.key[..kl]).unwrap());
        let iv = u64::from(e.seq).to_be_bytes();
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&e.keys.key[kl..kl + 4]);
        n[4..].copy_from_slice(&iv);
        let aad = out.clone();
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(n),
            aead::Aad::from(&aad),
            &mut plain,
        )
        .unwrap();
        out.extend_from_slice(&iv);
        out.extend_from_slice(&plain);
    } else {
        use cbc::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::NoPadding};
        let iv = [e.seq as u8; 16];
        let n = plain.len();
        if kl == 16 {
            cbc::Encryptor::<aes::Aes128>::new_from_slices(&e.keys.key[..kl], &iv)
                .unwrap()
                .encrypt_padded::<NoPadding>(&mut plain, n)
                .unwrap();
        } else {
            cbc::Encryptor::<aes::Aes256>::new_from_slices(&e.keys.key[..kl], &iv)
                .unwrap()
                .encrypt_padded::<NoPadding>(&mut plain, n)
                .unwrap();
        }
        out.extend_from_slice(&iv);
        out.extend_from_slice(&plain);
        let integ = e.keys.integ.unwrap();
        let tag = hmac::sign(&hmac::Key::new(integ.hmac(), &e.keys.key[kl..]), &out);
        out.extend_from_slice(&tag.as_ref()[..integ.icv_len()]);
    }
    out
}

fn esp_open(k: &ChildKeys, pkt: &[u8]) -> Option<Vec<u8>> {
    let kl = k.encr.key_len();
    let mut plain = if k.encr.is_aead() {
        let alg = if kl == 16 {
            &aead::AES_128_GCM
        } else {
            &aead::AES_256_GCM
        };
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(alg, &k.key[..kl]).ok()?);
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&k.key[kl..kl + 4]);
        n[4..].copy_from_slice(pkt.get(8..16)?);
        let mut ct = pkt.get(16..)?.to_vec();
        let l = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(n),
                aead::Aad::from(&pkt[..8]),
                &mut ct,
            )
            .ok()?
            .len();
        ct.truncate(l);
        ct
    } else {
        use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::NoPadding};
        let integ = k.integ?;
        let end = pkt.len().checked_sub(integ.icv_len())?;
        let tag = hmac::sign(&hmac::Key::new(integ.hmac(), &k.key[kl..]), &pkt[..end]);
        if tag.as_ref()[..integ.icv_len()] != pkt[end..] {
            return None;
        }
        let iv = pkt.get(8..24)?;
        let mut ct = pkt.get(24..end)?.to_vec();
        if kl == 16 {
            cbc::Decryptor::<aes::Aes128>::new_from_slices(&k.key[..kl], iv)
                .ok()?
                .decrypt_padded::<NoPadding>(&mut ct)
                .ok()?;
        } else {
            cbc::Decryptor::<aes::Aes256>::new_from_slices(&k.key[..kl], iv)
                .ok()?
                .decrypt_padded::<NoPadding>(&mut ct)
                .ok()?;
        }
        ct
    };
    let nh = plain.pop()?;
    let pad = usize::from(plain.pop()?);
    plain.truncate(plain.len().checked_sub(pad)?);
    (nh == 4).then_some(plain)
}

enum Ev {
    Udp(SocketAddr, Vec<u8>, u16),
}

fn main() {
    let arg = std::env::args().nth(1).expect("config JSON");
    let c: Value = serde_json::from_str(&arg).expect("JSON");
    let s = |k: &str| c[k].as_str().unwrap_or_else(|| panic!("{k}")).to_string();
    let local: IpAddr = s("local").parse().unwrap();
    let remote: IpAddr = s("remote").parse().unwrap();
    let secs = |k: &str, d: u64| Duration::from_secs(c[k].as_u64().unwrap_or(d));
    let pfx = |k: &str| -> Vec<Prefix> {
        let v = s(k);
        let (a, l) = v.split_once('/').unwrap();
        vec![Prefix {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }]
    };
    let cfg = PeerConfig {
        tunnel: "Tunnel2".into(),
        tunnel_index: 1,
        local,
        remote,
        psk: Zeroizing::new(s("psk").into_bytes()),
        cert: None,
        local_id: Identity::Addr(local),
        remote_id: Identity::Addr(remote),
        ike_proposals: vec![IkeProposal::parse(&s("ike")).unwrap()],
        esp_proposals: vec![EspProposal::parse(&s("esp")).unwrap()],
        ike_lifetime: secs("ike_lifetime", 86400),
        child_lifetime: secs("child_lifetime", 3600),
        dpd: c["dpd"].as_u64().map(Duration::from_secs),
        dpd_retry: c["dpd_retry"].as_u64().map(Duration::from_secs),
        initiate: c["initiate"].as_bool().unwrap_or(true),
        force_encap: c["force_encap"].as_bool().unwrap_or(true),
        nat_t_port: 4500,
        local_ts: pfx("local_ts"),
        remote_ts: pfx("remote_ts"),
        replay_window: 64,
        invalid_spi_recovery: false,
        fragmentation: true,
        fragment_size: xdpsec_ike::frag::DEFAULT_FRAGMENT_SIZE,
    };
    let inner_src = cfg.local_ts[0].addr;
    let inner_dst = cfg.remote_ts[0].addr;
    let s500 = UdpSocket::bind(SocketAddr::new(local, 500)).expect("bind 500");
    let s4500 = UdpSocket::bind(SocketAddr::new(local, 4500)).expect("bind 4500");
    let (tx, rx) = mpsc::channel();
    for (sock, port) in [
        (s500.try_clone().unwrap(), 500u16),
        (s4500.try_clone().unwrap(), 4500),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if tx.send(Ev::Udp(from, buf[..n].to_vec(), port)).is_err() {
                    return;
                }
            }
        });
    }
    let mut ike = Ike::new(vec![cfg.clone()]);
    let start = Instant::now();
    let end = start + secs("seconds", 20);
    let mut schedule: Vec<(Duration, String)> = c["schedule"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        Duration::from_millis((x[0].as_f64().unwrap() * 1000.0) as u64),
                        x[1].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    schedule.sort_by_key(|x| x.0);
    let mut inbound: HashMap<u32, ChildKeys> = HashMap::new();
    let mut outbound: Option<(Esp, SocketAddr)> = None;
    let mut ping_seq = 0u16;
    let mut actions = ike.handle(Instant::now(), Input::Timer);
    loop {
        for a in actions.drain(..) {
            match a {
                Action::Send {
                    local: l,
                    remote: r,
                    data,
                } => {
                    let mut d = Vec::new();
                    let sock = if l.port() == 500 { &s500 } else { &s4500 };
                    if l.port() != 500 {
                        d.extend_from_slice(&[0, 0, 0, 0]); // non-ESP marker (RFC 3948 2.2)
                    }
                    d.extend_from_slice(&data);
                    let _ = sock.send_to(&d, r);
                }
                Action::AddInbound { keys, encap, .. } => {
                    emit(
                        json!({"ev": "add_inbound", "spi": keys.spi, "encap": format!("{encap:?}"), "encr": format!("{:?}", keys.encr)}),
                    );
                    inbound.insert(keys.spi, keys);
                }
                Action::SetOutbound {
                    keys, encap, peer, ..
                } => {
                    emit(
                        json!({"ev": "set_outbound", "spi": keys.spi, "encap": format!("{encap:?}")}),
                    );
                    let port = match encap {
                        xdpsec_ike::EspEncap::Udp(_, p) => p,
                        xdpsec_ike::EspEncap::Esp => 0,
                    };
                    outbound = Some((Esp { keys, seq: 0 }, SocketAddr::new(peer, port)));
                }
                Action::RemoveInbound { spi, .. } => {
                    emit(json!({"ev": "remove_inbound", "spi": spi}));
                    inbound.remove(&spi);
                }
                Action::RemoveOutbound { .. } => {
                    emit(json!({"ev": "remove_outbound"}));
                    outbound = None;
                }
                Action::Log { line, ios } => emit(json!({"ev": "log", "ios": ios, "line": line})),
                // The typed twin of a log line emitted above.
                Action::Event { .. } => {}
            }
        }
        let now = Instant::now();
        if now >= end {
            let v: Vec<Value> = ike.sas(now).iter().map(|s| json!({"spi_i": format!("{:016x}", s.spi_i), "spi_r": format!("{:016x}", s.spi_r), "status": format!("{:?}", s.status), "children": s.children, "nat": s.nat, "remote_port": s.remote.port()})).collect();
            emit(json!({"ev": "end", "sas": v}));
            return;
        }
        if let Some((at, _)) = schedule.first()
            && now >= start + *at
        {
            let (_, cmd) = schedule.remove(0);
            emit(json!({"ev": "cmd", "cmd": cmd}));
            actions = match cmd.as_str() {
                "rekey-child" => ike.rekey_now(now, remote, false),
                "rekey-ike" => ike.rekey_now(now, remote, true),
                "clear-child" => ike.handle(now, Input::Command(Command::ClearChildSas(remote))),
                "clear-ike" => ike.handle(now, Input::Command(Command::ClearIkeSas(None))),
                "ping" => {
                    if let Some((e, to)) = &mut outbound {
                        ping_seq += 1;
                        let pkt = esp_seal(e, &ping_packet(inner_src, inner_dst, ping_seq));
                        let _ = s4500.send_to(&pkt, *to);
                        emit(json!({"ev": "ping_sent", "spi": e.keys.spi, "seq": ping_seq}));
                    }
                    Vec::new()
                }
                _ => panic!("unknown command {cmd}"),
            };
            continue;
        }
        let mut wake = end;
        if let Some(t) = ike.next_timeout() {
            wake = wake.min(t);
        }
        if let Some((at, _)) = schedule.first() {
            wake = wake.min(start + *at);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Ev::Udp(from, data, port)) => {
                let lsock = SocketAddr::new(local, port);
                if port != 500 {
                    if data.len() < 4 {
                        continue;
                    }
                    if data[..4] != [0, 0, 0, 0] {
                        // ESP in UDP.
                        let spi = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                        match inbound.get(&spi).and_then(|k| esp_open(k, &data)) {
                            Some(inner) => emit(
                                json!({"ev": "esp_ok", "spi": spi, "icmp_type": inner.get(20), "src": inner.get(12..16).map(|b| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))}),
                            ),
                            None => emit(
                                json!({"ev": "esp_bad", "spi": spi, "known": inbound.contains_key(&spi)}),
                            ),
                        }
                        continue;
                    }
                    actions = ike.handle(
                        Instant::now(),
                        Input::Datagram {
                            local: lsock,
                            remote: from,
                            data: &data[4..],
                        },
                    );
                } else {
                    actions = ike.handle(
                        Instant::now(),
                        Input::Datagram {
                            local: lsock,
                            remote: from,
                            data: &data,
                        },
                    );
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                actions = ike.handle(Instant::now(), Input::Timer)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}
