//! The config's tests: the documented example, every field's errors.
use super::{ike::DEFAULT_IKE_PROPOSAL, text::line_of, *};

const GOOD: &str = r#"node = "edge1"
socket = "/run/xdpsec/edge1.sock"
[underlay]
interface = "veth-e1"
address = "198.51.100.1"
queues = 2
"#;

#[test]
fn parses_the_documented_example() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.node, "edge1");
    assert_eq!(c.socket, PathBuf::from("/run/xdpsec/edge1.sock"));
    assert_eq!(c.underlay.interface, "veth-e1");
    assert_eq!(
        c.underlay.address,
        "198.51.100.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(c.underlay.queues, 2);
    assert_eq!(
        c.underlay.udp_ports.iter().copied().collect::<Vec<_>>(),
        vec![4500, 12346, 12366, 12386, 12406, 12426]
    );
}

#[test]
fn xdp_mode_defaults_to_driver_and_takes_generic() {
    assert_eq!(
        Config::parse(GOOD).unwrap().underlay.xdp_mode,
        XdpAttach::Driver
    );
    let g = GOOD.replace("queues = 2", "queues = 2\nxdp_mode = \"generic\"");
    assert_eq!(
        Config::parse(&g).unwrap().underlay.xdp_mode,
        XdpAttach::Generic
    );
    let bad = GOOD.replace("queues = 2", "queues = 2\nxdp_mode = \"native\"");
    let e = Config::parse(&bad).unwrap_err();
    assert!(
        e.contains("line 7") && e.contains("underlay.xdp_mode") && e.contains("generic"),
        "{e}"
    );
}

#[test]
fn inside_xdp_mode_needs_a_valid_interface_other_than_the_underlay() {
    let c = Config::parse(&format!(
        "{GOOD}[inside]\nmode = \"xdp\"\ninterface = \"veth-in\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.inside,
        Inside::Xdp {
            interface: "veth-in".into(),
            xdp_mode: XdpAttach::Driver,
        }
    );
    let g = Config::parse(&format!(
        "{GOOD}[inside]\nmode = \"xdp\"\ninterface = \"veth-in\"\nxdp_mode = \"generic\"\n"
    ))
    .unwrap();
    assert!(matches!(
        g.inside,
        Inside::Xdp {
            xdp_mode: XdpAttach::Generic,
            ..
        }
    ));
    // Any destination is allowed by default (no single inside address).
    assert!(c.tunnels.is_empty() || c.tunnels[0].local_selectors(&c.inside).is_empty());
    let err = |inside: &str| Config::parse(&format!("{GOOD}[inside]\n{inside}")).unwrap_err();
    let e = err("mode = \"xdp\"\n");
    assert!(
        e.contains("line 7") && e.contains("`inside.interface` is missing"),
        "{e}"
    );
    let e = err("mode = \"xdp\"\ninterface = \"veth-e1\"\n");
    assert!(
        e.contains("line 9")
            && e.contains("`inside.interface` = \"veth-e1\" is the underlay interface"),
        "{e}"
    );
    let e = err("mode = \"xdp\"\ninterface = \"a-name-far-too-long\"\n");
    assert!(
        e.contains("`inside.interface`") && e.contains("not a valid"),
        "{e}"
    );
    let e = err("mode = \"wire\"\n");
    assert!(e.contains("give \"tun\", \"xdp\" or \"sink\""), "{e}");
    // "tun" and "sink" are as before; `interface` belongs to "xdp" only
    // in meaning, and an unknown key is still refused.
    let e = err("mode = \"xdp\"\ninterface = \"veth-in\"\nifname = \"x\"\n");
    assert!(e.contains("ifname"), "{e}");
    let e = err("mode = \"xdp\"\ninterface = \"veth-in\"\nxdp_mode = \"skb\"\n");
    assert!(
        e.contains("line 10") && e.contains("`inside.xdp_mode` = \"skb\"") && e.contains("generic"),
        "{e}"
    );
    let e = err("mode = \"sink\"\nxdp_mode = \"generic\"\n");
    assert!(
        e.contains("`inside.xdp_mode` applies to mode \"xdp\" only"),
        "{e}"
    );
}

#[test]
fn line_index_agrees_with_counting() {
    let text = "a\nbb\n\nccc\n";
    let idx = LineIndex::new(text);
    for pos in 0..=text.len() + 2 {
        assert_eq!(idx.line(pos), line_of(text, pos), "offset {pos}");
    }
}

#[test]
fn socket_defaults_from_node_and_queues_to_one() {
    let c = Config::parse(
        "node = \"n2\"\n[underlay]\ninterface = \"eth0\"\naddress = \"2001:db8::1\"\n",
    )
    .unwrap();
    assert_eq!(c.socket, PathBuf::from("/run/xdpsec/n2.sock"));
    assert_eq!(c.underlay.queues, 1);
}

#[test]
fn errors_name_field_and_line() {
    let bad = GOOD.replace("queues = 2", "queues = 0");
    let e = Config::parse(&bad).unwrap_err();
    assert!(e.contains("line 6") && e.contains("underlay.queues"), "{e}");

    let bad = GOOD.replace("198.51.100.1", "198.51.100.1/24");
    let e = Config::parse(&bad).unwrap_err();
    assert!(
        e.contains("line 5") && e.contains("underlay.address"),
        "{e}"
    );

    let bad = GOOD.replace("queues = 2", "queues = 2\nqueus = 3");
    let e = Config::parse(&bad).unwrap_err();
    assert!(e.contains("line 7") && e.contains("queus"), "{e}");

    let bad = GOOD.replace("node = \"edge1\"", "node = \"edge 1\"");
    let e = Config::parse(&bad).unwrap_err();
    assert!(e.contains("line 1") && e.contains("`node`"), "{e}");

    let e = Config::parse("node = \"x\"\n").unwrap_err();
    assert!(e.contains("underlay"), "{e}");

    let bad = GOOD.replace("queues = 2", "queues = \"two\"");
    let e = Config::parse(&bad).unwrap_err();
    assert!(e.contains("line 6"), "{e}");

    let bad = GOOD.replace("queues = 2", "queues = 2\nbusy_poll_us = -5");
    let e = Config::parse(&bad).unwrap_err();
    assert!(
        e.contains("line 7") && e.contains("underlay.busy_poll_us"),
        "{e}"
    );
    let ok = GOOD.replace("queues = 2", "queues = 2\nbusy_poll_us = 50");
    assert_eq!(Config::parse(&ok).unwrap().underlay.busy_poll_us, 50);
    assert_eq!(Config::parse(GOOD).unwrap().underlay.busy_poll_us, 0);
}

const TUNNEL: &str = r#"
[inside]
mode = "tun"
name = "xs0"
address = "203.0.113.2/32"

[[tunnel]]
name = "Tunnel1"
kind = "manual"
peer = "198.51.100.2"
encap = "udp"
local_port = 4500
peer_port = 4500
cipher = "aes256-gcm"
esn = false
replay_window = 64
remote_subnets = ["203.0.113.1/32"]
local_subnets = ["203.0.113.2/32", "2001:db8:200::/64"]
[tunnel.inbound]
spi = 0x1001
key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fcafebabe"
[tunnel.outbound]
spi = 0x2001
key = "101112131415161718191a1b1c1d1e1f000102030405060708090a0b0c0d0e0fdeadbeef"
"#;

#[test]
fn parses_the_tunnel_contract() {
    let c = Config::parse(&format!("{GOOD}{TUNNEL}")).unwrap();
    assert_eq!(
        c.inside,
        Inside::Tun {
            name: "xs0".into(),
            address: "203.0.113.2/32".parse().unwrap(),
            offloads: true,
        }
    );
    let off = Config::parse(
        &format!("{GOOD}{TUNNEL}").replace("[inside]\n", "[inside]\noffloads = false\n"),
    )
    .unwrap();
    assert!(matches!(
        off.inside,
        Inside::Tun {
            offloads: false,
            ..
        }
    ));
    let t = &c.tunnels[0];
    assert_eq!(t.name, "Tunnel1");
    assert_eq!(
        t.encap,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4500
        }
    );
    let TunnelKind::Manual(m) = &t.kind else {
        panic!("{:?}", t.kind)
    };
    assert_eq!(m.cipher, CipherName::Aes256Gcm);
    assert_eq!((m.inbound.spi, m.outbound.spi), (0x1001, 0x2001));
    assert_eq!(m.inbound.key.len(), 36);
    assert_eq!(&m.outbound.key[32..], &[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(t.remote_subnets, vec!["203.0.113.1/32".parse().unwrap()]);
    let local: Vec<Cidr> = vec![
        "203.0.113.2/32".parse().unwrap(),
        "2001:db8:200::/64".parse().unwrap(),
    ];
    assert_eq!(t.local_subnets, Some(local.clone()));
    assert_eq!(t.local_selectors(&c.inside), local);
    // Keys never show in debug output.
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("cafebabe") && !dbg.contains("202, 254"),
        "{dbg}"
    );
    // No [inside]: sink.
    assert_eq!(Config::parse(GOOD).unwrap().inside, Inside::Sink);
}

#[test]
fn tunnel_errors_name_field_and_line() {
    let full = format!("{GOOD}{TUNNEL}");
    let line_of_text = |needle: &str| full.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases = [
        (
            "cipher = \"aes256-gcm\"",
            "cipher = \"aes-gcm\"",
            "tunnel.cipher",
        ),
        (
            "replay_window = 64",
            "replay_window = 100",
            "tunnel.replay_window",
        ),
        ("spi = 0x1001", "spi = 255", "tunnel.inbound.spi"),
        ("key = \"0001", "key = \"0g01", "tunnel.inbound.key"),
        (
            "peer = \"198.51.100.2\"",
            "peer = \"2001:db8::2\"",
            "tunnel.peer",
        ),
        ("encap = \"udp\"", "encap = \"esp\"", "tunnel.local_port"),
        ("mode = \"tun\"", "mode = \"tap\"", "inside.mode"),
        (
            "remote_subnets = [\"203.0.113.1/32\"]",
            "remote_subnets = [\"203.0.113.1\"]",
            "tunnel.remote_subnets",
        ),
        (
            "local_subnets = [\"203.0.113.2/32\", \"2001:db8:200::/64\"]",
            "local_subnets = [\"203.0.113.2/32\", \"2001:db8:200::/129\"]",
            "tunnel.local_subnets",
        ),
    ];
    for (from, to, field) in cases {
        let bad = full.replacen(from, to, 1);
        let e = Config::parse(&bad).unwrap_err();
        let line = if field == "tunnel.local_port" {
            line_of_text("local_port")
        } else {
            line_of_text(from)
        };
        assert!(
            e.contains(field) && e.contains(&format!("line {line}")),
            "{field}: {e}"
        );
    }
    // A key of the wrong length names the needed size.
    let bad = full.replacen("cafebabe\"", "cafe\"", 1);
    let e = Config::parse(&bad).unwrap_err();
    assert!(e.contains("34 bytes") && e.contains("72 hex"), "{e}");
    // Duplicate inbound SPI across tunnels.
    let second = TUNNEL
        .split("[[tunnel]]")
        .nth(1)
        .unwrap()
        .replace("Tunnel1", "Tunnel2");
    let e = Config::parse(&format!("{full}[[tunnel]]{second}")).unwrap_err();
    assert!(e.contains("already the inbound SPI of Tunnel1"), "{e}");
}

#[test]
fn cbc_hmac_ciphers_and_their_key_lengths() {
    use xdpsec_datapath::crypto::{AesKeySize, Integrity};
    let full = format!("{GOOD}{TUNNEL}");
    let gcm_in = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fcafebabe";
    let gcm_out = "101112131415161718191a1b1c1d1e1f000102030405060708090a0b0c0d0e0fdeadbeef";
    let with = |name: &str, in_len: usize, out_len: usize| {
        Config::parse(
            &full
                .replace("cipher = \"aes256-gcm\"", &format!("cipher = \"{name}\""))
                .replace(gcm_in, &"ab".repeat(in_len))
                .replace(gcm_out, &"cd".repeat(out_len)),
        )
    };
    let cases = [
        (
            "aes128-sha1",
            AesKeySize::Aes128,
            Integrity::HmacSha1_96,
            36,
        ),
        (
            "aes128-sha256",
            AesKeySize::Aes128,
            Integrity::HmacSha256_128,
            48,
        ),
        (
            "aes256-sha256",
            AesKeySize::Aes256,
            Integrity::HmacSha256_128,
            64,
        ),
        (
            "aes256-sha384",
            AesKeySize::Aes256,
            Integrity::HmacSha384_192,
            80,
        ),
        (
            "aes256-sha512",
            AesKeySize::Aes256,
            Integrity::HmacSha512_256,
            96,
        ),
        (
            "aes192-sha256",
            AesKeySize::Aes192,
            Integrity::HmacSha256_128,
            56,
        ),
    ];
    for (name, k, i, len) in cases {
        let c = with(name, len, len).unwrap_or_else(|e| panic!("{name}: {e}"));
        let TunnelKind::Manual(m) = &c.tunnels[0].kind else {
            panic!("{name}")
        };
        assert_eq!(m.cipher, CipherName::AesCbc(k, i), "{name}");
        assert_eq!(m.inbound.key.len(), len, "{name}");
        // One byte short: the error names the field, the transform and
        // the length it needs, split into encryption and integrity key.
        let e = with(name, len - 1, len).unwrap_err();
        assert!(
            e.contains("tunnel.inbound.key")
                && e.contains(&format!("\"{name}\" needs {len}"))
                && e.contains("encryption key || integrity key")
                && e.contains(&format!("{} + {} bytes", k.key_len(), i.key_len()))
                && e.contains(&format!("{} hex digits", len * 2)),
            "{e}"
        );
    }
    // The AEAD names keep working, with their own error text.
    let e = with("aes128-gcm", 21, 20).unwrap_err();
    assert!(
        e.contains("key || 4-byte salt") && e.contains("needs 20"),
        "{e}"
    );
    assert!(with("chacha20-poly1305", 36, 36).is_ok());
    // Unknown integrity: the error lists the CBC forms.
    let e = with("aes256-md5", 64, 64).unwrap_err();
    assert!(
        e.contains("tunnel.cipher") && e.contains("aes256-sha256"),
        "{e}"
    );
}

#[test]
fn local_subnets_default_to_the_inside_address_or_any() {
    let full = format!("{GOOD}{TUNNEL}").replace(
        "local_subnets = [\"203.0.113.2/32\", \"2001:db8:200::/64\"]\n",
        "",
    );
    let c = Config::parse(&full).unwrap();
    let t = &c.tunnels[0];
    assert_eq!(t.local_subnets, None);
    // tun mode: the inside address as a host prefix (it is 203.0.113.2/32 here).
    assert_eq!(
        t.local_selectors(&c.inside),
        vec!["203.0.113.2/32".parse().unwrap()]
    );
    let wide = Inside::Tun {
        name: "xs0".into(),
        address: "2001:db8:200::2/64".parse().unwrap(),
        offloads: true,
    };
    assert_eq!(
        t.local_selectors(&wide),
        vec!["2001:db8:200::2/128".parse().unwrap()]
    );
    // sink mode: any destination.
    assert!(t.local_selectors(&Inside::Sink).is_empty());
    // An explicit empty list also allows any destination.
    let c = Config::parse(&full.replace(
        "remote_subnets = [\"203.0.113.1/32\"]",
        "remote_subnets = [\"203.0.113.1/32\"]\nlocal_subnets = []",
    ))
    .unwrap();
    assert_eq!(c.tunnels[0].local_subnets, Some(vec![]));
    assert!(c.tunnels[0].local_selectors(&c.inside).is_empty());
}

#[test]
fn udp_ports_are_validated() {
    let ok = GOOD.replace("queues = 2", "udp_ports = [4500, 12346]");
    assert_eq!(Config::parse(&ok).unwrap().underlay.udp_ports.len(), 2);
    let bad = GOOD.replace("queues = 2", "udp_ports = [500]");
    assert!(
        Config::parse(&bad)
            .unwrap_err()
            .contains("underlay.udp_ports")
    );
}

const IKE: &str = r#"
[[tunnel]]
name = "Tunnel2"
kind = "ike"
peer = "198.51.100.2"
encap = "udp"
psk = "not-a-real-secret"
local_id = "198.51.100.1"
ike_proposals = ["aes256gcm16-prfsha256-x25519", "aes256-sha256-ecp256"]
esp_proposals = ["aes256gcm16"]
ike_lifetime_seconds = 28800
lifetime_seconds = 1800
dpd_seconds = 10
initiate = false
local_subnets = ["203.0.113.2/32"]
remote_subnets = ["203.0.113.1/32"]
replay_window = 128
"#;

#[test]
fn parses_the_ike_tunnel_contract() {
    let c = Config::parse(&format!("{GOOD}{IKE}")).unwrap();
    let t = &c.tunnels[0];
    let TunnelKind::Ike(i) = &t.kind else {
        panic!("{:?}", t.kind)
    };
    assert_eq!(&i.psk[..], b"not-a-real-secret");
    assert_eq!(i.local_id.as_deref(), Some("198.51.100.1"));
    assert_eq!(i.remote_id, None);
    assert_eq!(i.ike_proposals.len(), 2);
    assert_eq!(i.esp_proposals, vec!["aes256gcm16".to_string()]);
    assert_eq!(i.ike_lifetime.as_secs(), 28800);
    assert_eq!(i.lifetime.as_secs(), 1800);
    assert_eq!(i.dpd.map(|d| d.as_secs()), Some(10));
    assert!(!i.initiate);
    assert_eq!(i.nat_t_port, 4500);
    assert_eq!(
        t.encap,
        Encap::Udp {
            local_port: 4500,
            peer_port: 4500
        }
    );
    assert_eq!(t.replay_window, 128);
    // The PSK never shows in debug output.
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("not-a-real-secret"), "{dbg}");
    // Defaults.
    let min = "[[tunnel]]\nname = \"T\"\nkind = \"ike\"\npeer = \"198.51.100.2\"\npsk = \"x\"\n";
    let c = Config::parse(&format!("{GOOD}{min}")).unwrap();
    let TunnelKind::Ike(i) = &c.tunnels[0].kind else {
        panic!()
    };
    assert_eq!(i.ike_proposals, vec![DEFAULT_IKE_PROPOSAL.to_string()]);
    assert_eq!(
        (i.ike_lifetime.as_secs(), i.lifetime.as_secs()),
        (86400, 3600)
    );
    assert!(i.initiate && i.dpd.is_none() && !i.invalid_spi_recovery);
    assert_eq!(c.tunnels[0].encap, Encap::Esp);
    assert!(i.fragmentation);
    assert_eq!(i.fragment_size, 1280);
    // fragmentation and fragment_size as given.
    let c = Config::parse(&format!(
        "{GOOD}{min}fragmentation = false\nfragment_size = 400\n"
    ))
    .unwrap();
    let TunnelKind::Ike(i) = &c.tunnels[0].kind else {
        panic!()
    };
    assert!(!i.fragmentation);
    assert_eq!(i.fragment_size, 400);
    for bad in [
        "fragment_size = 255",
        "fragment_size = 65536",
        "fragment_size = -1",
    ] {
        let e = Config::parse(&format!("{GOOD}{min}{bad}\n")).unwrap_err();
        assert!(
            e.contains("tunnel.fragment_size") && e.contains("256 to 65535"),
            "{bad}: {e}"
        );
    }
    let e = Config::parse(&format!("{GOOD}{min}fragmentation = 1\n")).unwrap_err();
    assert!(e.contains("field `tunnel.fragmentation`"), "{e}");
    // Any value of the wrong type names its field.
    let e = Config::parse(&GOOD.replace("queues = 2", "queues = \"two\"")).unwrap_err();
    assert!(e.contains("field `underlay.queues`"), "{e}");
}

/// `dpd_retry_seconds` (IOS's `crypto ikev2 dpd 10 2 on-demand`): parsed
/// into the tunnel, absent = none; refused out of 2..=60, without
/// `dpd_seconds` > 0 and on a manual tunnel, each naming the field.
#[test]
fn dpd_retry_seconds_contract() {
    let ike = |c: &Config| match &c.tunnels[0].kind {
        TunnelKind::Ike(i) => (i.dpd, i.dpd_retry),
        k => panic!("{k:?}"),
    };
    let with = format!("{GOOD}{IKE}").replacen(
        "dpd_seconds = 10",
        "dpd_seconds = 10\ndpd_retry_seconds = 2",
        1,
    );
    let secs = |s| Some(std::time::Duration::from_secs(s));
    assert_eq!(ike(&Config::parse(&with).unwrap()), (secs(10), Some(2)));
    let top = with.replacen("dpd_retry_seconds = 2", "dpd_retry_seconds = 60", 1);
    assert_eq!(ike(&Config::parse(&top).unwrap()), (secs(10), Some(60)));
    assert_eq!(
        ike(&Config::parse(&format!("{GOOD}{IKE}")).unwrap()),
        (secs(10), None)
    );
    // Each refusal names the field, and why.
    let refused = |from: &str, to: &str, why: &str| {
        let e = Config::parse(&with.replacen(from, to, 1)).unwrap_err();
        assert!(
            e.contains("field `tunnel.dpd_retry_seconds`") && e.contains(why),
            "{to:?}: {e}"
        );
    };
    let (retry, dpd) = ("dpd_retry_seconds = 2", "dpd_seconds = 10\n");
    let range = "in tunnel Tunnel2: give 2 to 60 seconds";
    refused(retry, "dpd_retry_seconds = 1", &format!("= 1 {range}"));
    refused(retry, "dpd_retry_seconds = 61", &format!("= 61 {range}"));
    refused(retry, "dpd_retry_seconds = -2", &format!("= -2 {range}"));
    let needs = "in tunnel Tunnel2 needs `dpd_seconds` > 0";
    refused(dpd, "", needs);
    refused(dpd, "dpd_seconds = 0\n", needs);
    // Not on a manual tunnel.
    let manual =
        format!("{GOOD}{TUNNEL}").replacen("esn = false", &format!("esn = false\n{retry}"), 1);
    let e = Config::parse(&manual).unwrap_err();
    assert!(
        e.contains("tunnel.dpd_retry_seconds") && e.contains("ike"),
        "{e}"
    );
}

#[test]
fn ike_tunnel_errors_name_the_field() {
    let full = format!("{GOOD}{IKE}");
    for (from, to, field) in [
        ("psk = \"not-a-real-secret\"\n", "", "psk"),
        ("dpd_seconds = 10", "dpd_seconds = -1", "tunnel.dpd_seconds"),
        (
            "esp_proposals = [\"aes256gcm16\"]",
            "esp_proposals = []",
            "tunnel.esp_proposals",
        ),
        (
            "initiate = false",
            "initiate = false\ncipher = \"aes256-gcm\"",
            "tunnel.cipher",
        ),
        ("kind = \"ike\"", "kind = \"ikev1\"", "tunnel.kind"),
        (
            "\"aes256-sha256-ecp256\"",
            "\"aes256-sha256-modp1024\"",
            "tunnel.ike_proposals",
        ),
        (
            "esp_proposals = [\"aes256gcm16\"]",
            "esp_proposals = [\"des\"]",
            "tunnel.esp_proposals",
        ),
    ] {
        let e = Config::parse(&full.replacen(from, to, 1)).unwrap_err();
        assert!(e.contains(field), "{field}: {e}");
    }
    // A manual tunnel refuses IKE fields, and needs its SAs.
    let manual =
        format!("{GOOD}{TUNNEL}").replacen("esn = false", "esn = false\ndpd_seconds = 5", 1);
    let e = Config::parse(&manual).unwrap_err();
    assert!(e.contains("tunnel.dpd_seconds") && e.contains("ike"), "{e}");
    // psk_file must be 0600.
    let dir = std::env::temp_dir().join(format!("xdpsec-psk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("psk");
    std::fs::write(&f, "s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let with_file = full.replacen(
        "psk = \"not-a-real-secret\"",
        &format!("psk_file = \"{}\"", f.display()),
        1,
    );
    let e = Config::parse(&with_file).unwrap_err();
    assert!(
        e.contains("tunnel.psk_file") && e.contains("chmod 600"),
        "{e}"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = Config::parse(&with_file).unwrap();
    let TunnelKind::Ike(i) = &c.tunnels[0].kind else {
        panic!()
    };
    assert_eq!(
        &i.psk[..],
        b"s3cret",
        "one trailing newline is not part of the key"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// For tests: a CA and a certificate `/C=CH/CN=me` with its key (mode
/// 0644) made by openssl in a fresh `dir`, and a config whose IKE tunnel
/// authenticates with them.
pub(crate) fn cert_config(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let ssl = |args: &[&str]| {
        xdpsec_testenv::openssl(dir, args);
    };
    for k in ["ca", "me"] {
        ssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{k}.key"),
        ]);
    }
    ssl(&[
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=ca", "-days", "3", "-out", "ca.crt",
    ]);
    ssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "me.key",
        "-subj",
        "/C=CH/CN=me",
        "-days",
        "3",
        "-out",
        "me.crt",
    ]);
    let key = dir.join("me.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fields = format!(
        "auth = \"cert\"\ncert_file = \"{d}/me.crt\"\nkey_file = \"{d}/me.key\"\nca_file = \"{d}/ca.crt\"",
        d = dir.display()
    );
    let base = format!("{GOOD}{IKE}");
    base.replacen("psk = \"not-a-real-secret\"", &fields, 1)
        .replacen("local_id = \"198.51.100.1\"\n", "", 1)
}

#[test]
fn ike_cert_auth_fields() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("xdpsec-cert-cfg-{}", std::process::id()));
    let cert = cert_config(&dir);
    let base = format!("{GOOD}{IKE}");
    let key = dir.join("me.key");
    // The key file must be 0600: the error names it.
    let e = Config::parse(&cert).unwrap_err();
    assert!(
        e.contains("tunnel.key_file") && e.contains("me.key") && e.contains("chmod 600"),
        "{e}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = Config::parse(&cert).unwrap();
    let TunnelKind::Ike(i) = &c.tunnels[0].kind else {
        panic!()
    };
    let creds = i.cert.as_ref().unwrap();
    assert_eq!(creds.subject_text(), "C=CH, CN=me");
    assert!(i.psk.is_empty());
    // A local_id the certificate does not carry, a malformed DN, a
    // PSK beside the certificate, a missing file, an unknown method.
    for (from, to, want) in [
        (
            "auth = \"cert\"",
            "auth = \"cert\"\nlocal_id = \"C=CH, CN=other\"",
            "does not carry it",
        ),
        (
            "auth = \"cert\"",
            "auth = \"cert\"\nremote_id = \"XX=1\"",
            "tunnel.remote_id",
        ),
        (
            "auth = \"cert\"",
            "auth = \"cert\"\npsk = \"x\"",
            "no `psk`",
        ),
        ("ca.crt", "missing.crt", "tunnel.ca_file"),
        ("auth = \"cert\"", "auth = \"eap\"", "tunnel.auth"),
    ] {
        let e = Config::parse(&cert.replacen(from, to, 1)).unwrap_err();
        assert!(e.contains(want), "{want}: {e}");
    }
    let dn = cert.replacen(
        "auth = \"cert\"",
        "auth = \"cert\"\nlocal_id = \"C=CH, CN=me\"",
        1,
    );
    Config::parse(&dn).unwrap();
    // Certificate fields need auth = "cert".
    let e = Config::parse(&base.replacen(
        "psk = \"not-a-real-secret\"",
        "psk = \"x\"\nca_file = \"/x\"",
        1,
    ))
    .unwrap_err();
    assert!(
        e.contains("tunnel.ca_file") && e.contains("auth = \"cert\""),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `metrics.listen`: ADDR:PORT with a port 1-65535; the error whole, as
/// every ADDR:PORT field words it (`text::addr_port_field`; the
/// `sdwan.controller` and controller `listen` tests check theirs).
#[test]
fn metrics_listen_is_addr_port_and_its_error_is_exact() {
    let with = |listen: &str| Config::parse(&format!("{GOOD}[metrics]\nlisten = \"{listen}\"\n"));
    for bad in ["198.51.100.1", "198.51.100.1:0", "metrics:9273", ""] {
        assert_eq!(
            with(bad).unwrap_err(),
            format!(
                "line 8: field `metrics.listen` = {bad:?}: give ADDR:PORT, e.g. \"198.51.100.1:9273\""
            )
        );
    }
    let c = with("[2001:db8::1]:9273").unwrap();
    assert_eq!(
        c.metrics.unwrap().listen,
        "[2001:db8::1]:9273".parse().unwrap()
    );
}

/// A template: `peer_range` instead of `peer` (IPv4 underlay).
const TEMPLATE: &str = r#"
[[tunnel]]
name = "Tunnel9"
kind = "ike"
peer_range = "198.51.100.128/25"
psk = "not-a-real-secret"
initiate = false
remote_subnets = ["203.0.113.0/24"]
"#;

#[test]
fn parses_the_template_contract() {
    let c = Config::parse(&format!("{GOOD}{TEMPLATE}")).unwrap();
    let t = &c.tunnels[0];
    let TunnelKind::Ike(i) = &t.kind else {
        panic!("{:?}", t.kind)
    };
    let tpl = *i.template.clone().expect("a template");
    assert_eq!(tpl.range, "198.51.100.128/25".parse::<Cidr>().unwrap());
    // The default, at most the range's size: 128 addresses.
    assert_eq!(tpl.max_peers, 128);
    assert_eq!(t.peer, "198.51.100.128".parse::<IpAddr>().unwrap());
    assert!(!i.initiate && i.remote_id.is_none());
    // A large range: the default 1024.
    let v6 = format!(
        "{}{}",
        GOOD.replace("198.51.100.1", "2001:db8::1"),
        TEMPLATE
            .replace("198.51.100.128/25", "2001:db8::1000/116")
            .replace("203.0.113.0/24", "2001:db8:1::/64")
    );
    let c = Config::parse(&v6).unwrap();
    let TunnelKind::Ike(i) = &c.tunnels[0].kind else {
        panic!()
    };
    assert_eq!(
        i.template.as_ref().unwrap().max_peers,
        ike::DEFAULT_MAX_PEERS
    );
    let c = Config::parse(&v6.replace("initiate = false", "initiate = false\nmax_peers = 4096"))
        .unwrap();
    let TunnelKind::Ike(i) = &c.tunnels[0].kind else {
        panic!()
    };
    assert_eq!(i.template.as_ref().unwrap().max_peers, 4096);
    // A normal tunnel has none.
    let c = Config::parse(&format!("{GOOD}{IKE}")).unwrap();
    let TunnelKind::Ike(i) = &c.tunnels[0].kind else {
        panic!()
    };
    assert!(i.template.is_none());
}

#[test]
fn template_errors_name_the_field() {
    let full = format!("{GOOD}{TEMPLATE}");
    let v6 = format!(
        "{}{}",
        GOOD.replace("198.51.100.1", "2001:db8::1"),
        TEMPLATE
            .replace("198.51.100.128/25", "2001:db8::/32")
            .replace("203.0.113.0/24", "2001:db8:1::/64")
    );
    for (text, from, to, want) in [
        // Both, or neither.
        (
            &full,
            "peer_range = ",
            "peer = \"198.51.100.2\"\npeer_range = ",
            &[
                "line 12",
                "`tunnel.peer` and `tunnel.peer_range`",
                "one of them",
            ][..],
        ),
        (
            &full,
            "peer_range = \"198.51.100.128/25\"\n",
            "",
            &["tunnel Tunnel9 needs `peer`", "`peer_range`"],
        ),
        // Not a prefix, another family, host bits.
        (
            &full,
            "\"198.51.100.128/25\"",
            "\"198.51.100.128\"",
            &["line 11", "field `tunnel.peer_range`", "prefix"],
        ),
        (
            &full,
            "\"198.51.100.128/25\"",
            "\"2001:db8::/64\"",
            &["field `tunnel.peer_range`", "family"],
        ),
        (
            &full,
            "\"198.51.100.128/25\"",
            "\"198.51.100.129/25\"",
            &["field `tunnel.peer_range`", "network address"],
        ),
        // initiate = false is required.
        (
            &full,
            "initiate = false",
            "initiate = true",
            &["line 13", "field `tunnel.initiate`", "initiate = false"],
        ),
        (
            &full,
            "initiate = false\n",
            "",
            &["field `tunnel.initiate`", "initiate = false"],
        ),
        // max_peers: 1 to the range's size, and the hard cap.
        (
            &full,
            "initiate = false",
            "initiate = false\nmax_peers = 129",
            &["line 14", "field `tunnel.max_peers` = 129", "1 to 128"],
        ),
        (
            &full,
            "initiate = false",
            "initiate = false\nmax_peers = 0",
            &["field `tunnel.max_peers` = 0", "1 to 128"],
        ),
        (
            &v6,
            "initiate = false",
            "initiate = false\nmax_peers = 16385",
            &["field `tunnel.max_peers` = 16385", "1 to 16384"],
        ),
        // remote_subnets are required.
        (
            &full,
            "remote_subnets = [\"203.0.113.0/24\"]\n",
            "",
            &["field `tunnel.remote_subnets`", "Tunnel9", "template"],
        ),
    ] {
        let e = Config::parse(&text.replacen(from, to, 1)).unwrap_err();
        for w in want {
            assert!(e.contains(w), "{to:?}: want {w:?} in: {e}");
        }
    }
    // max_peers needs peer_range.
    let e = Config::parse(&format!("{GOOD}{IKE}").replacen(
        "initiate = false",
        "initiate = false\nmax_peers = 4",
        1,
    ))
    .unwrap_err();
    assert!(
        e.contains("field `tunnel.max_peers`") && e.contains("peer_range"),
        "{e}"
    );
    // A manual tunnel has no peer_range.
    let manual = format!("{GOOD}{TUNNEL}").replacen(
        "esn = false",
        "esn = false\npeer_range = \"198.51.100.0/24\"",
        1,
    );
    let e = Config::parse(&manual).unwrap_err();
    assert!(e.contains("tunnel.peer_range") && e.contains("ike"), "{e}");
    // Two templates' ranges may not overlap.
    let two = format!(
        "{full}{}",
        TEMPLATE
            .replace("Tunnel9", "Tunnel10")
            .replace("198.51.100.128/25", "198.51.100.192/26")
    );
    let e = Config::parse(&two).unwrap_err();
    assert!(
        e.contains("field `tunnel.peer_range` = 198.51.100.192/26")
            && e.contains("overlaps the peer_range of Tunnel9"),
        "{e}"
    );
    let apart = two.replace("198.51.100.192/26", "198.51.100.0/26");
    Config::parse(&apart).unwrap();
}
