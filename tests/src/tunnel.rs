//! Manual-key tunnel configs for two nodes of a [`Lab`], shared by the tests and the demo.
use crate::Lab;

/// key || salt, AES-256-GCM / ChaCha20-Poly1305 sized (36 bytes).
pub const KEY_A: &str = "4c80cdefbb5d10da906ac73c3613a634e1fa3d5c9e5a1ab0ff0d1cd58e4e6d2fcafebabe";
pub const KEY_B: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308deadbeef";
/// A third 36-byte key || salt, for rekeys (a new SPI needs a new key).
pub const KEY_C: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0a5a5a5a5";
/// A fourth 36-byte key || salt (the second tunnel of [`two_tunnel_receiver`]).
pub const KEY_D: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
/// AES-128-GCM sized (20 bytes).
pub const KEY_A128: &str = "4c80cdefbb5d10da906ac73c3613a634cafebabe";
pub const KEY_B128: &str = "feffe9928665731c6d6a8f9467308308deadbeef";

/// One tunnel case.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Cipher name as in the config.
    pub cipher: &'static str,
    /// Extended sequence numbers.
    pub esn: bool,
    /// None: plain ESP; Some(port): UDP-encapsulated on that port both ways.
    pub udp: Option<u16>,
    /// Outer IPv6.
    pub v6_outer: bool,
    /// Inner IPv6.
    pub v6_inner: bool,
    /// Replay window.
    pub window: u32,
}

impl Case {
    /// The two key || salt strings for this cipher.
    pub fn keys(&self) -> (&'static str, &'static str) {
        if self.cipher == "aes128-gcm" {
            (KEY_A128, KEY_B128)
        } else {
            (KEY_A, KEY_B)
        }
    }
    /// scapy's name of the cipher.
    pub fn scapy_cipher(&self) -> &'static str {
        if self.cipher == "chacha20-poly1305" {
            "CHACHA20-POLY1305"
        } else {
            "AES-GCM"
        }
    }
}

/// Inner addresses of node 0 and 1.
pub fn inner_addrs(v6: bool) -> [&'static str; 2] {
    if v6 {
        ["2001:db8:200::1", "2001:db8:200::2"]
    } else {
        ["203.0.113.1", "203.0.113.2"]
    }
}

/// Config for node `side` (0 or 1) of `lab`: it receives on SPI 0x1001+side
/// with key A/B and sends to SPI 0x1001+(1-side).
pub fn tunnel_config(lab: &Lab, side: usize, c: &Case) -> String {
    let outer = if c.v6_outer { lab.v6 } else { lab.v4 };
    let inner = inner_addrs(c.v6_inner);
    let plen = if c.v6_inner { 128 } else { 32 };
    let (ka, kb) = c.keys();
    let (kin, kout) = if side == 0 { (ka, kb) } else { (kb, ka) };
    let iface = if side == 0 { &lab.if1 } else { &lab.if2 };
    let encap = match c.udp {
        None => "encap = \"esp\"".to_string(),
        Some(p) => format!("encap = \"udp\"\nlocal_port = {p}\npeer_port = {p}"),
    };
    format!(
        r#"node = "edge{n}"
socket = "{{socket}}"
[underlay]
interface = "{iface}"
address = "{local}"
queues = 1
[inside]
mode = "tun"
name = "xs{n}"
address = "{inner_local}/{plen}"
[[tunnel]]
name = "Tunnel1"
kind = "manual"
peer = "{peer}"
{encap}
cipher = "{cipher}"
esn = {esn}
replay_window = {window}
remote_subnets = ["{inner_peer}/{plen}"]
[tunnel.inbound]
spi = {spi_in:#x}
key = "{kin}"
[tunnel.outbound]
spi = {spi_out:#x}
key = "{kout}"
"#,
        n = side + 1,
        local = outer[side],
        peer = outer[1 - side],
        inner_local = inner[side],
        inner_peer = inner[1 - side],
        cipher = c.cipher,
        esn = c.esn,
        window = c.window,
        spi_in = 0x1001 + side,
        spi_out = 0x1001 + (1 - side),
    )
}

/// Node 1's inner address for Tunnel2 of [`two_tunnel_receiver`] (Tunnel1
/// uses node 1's inside address, as in [`tunnel_config`]).
pub const TUNNEL2_INNER: &str = "203.0.113.12";

/// `text` (a [`tunnel_config`] with [`BASE`]) with its one tunnel turned
/// into Tunnel2: SPIs 0x2001/0x2002 with keys C/D instead of 0x1001/0x1002
/// with A/B.
fn as_tunnel2(text: &str) -> String {
    text.replace("name = \"Tunnel1\"", "name = \"Tunnel2\"")
        .replace("spi = 0x1001", "spi = 0x2001")
        .replace("spi = 0x1002", "spi = 0x2002")
        .replace(KEY_A, KEY_C)
        .replace(KEY_B, KEY_D)
}

/// Node 0's config (IPv4, AES-256-GCM) with `queues` queues and two manual
/// tunnels to node 1, each owned by its own worker: Tunnel1 (inbound SPI
/// 0x1001, key A, `worker = 0`) as in [`tunnel_config`], and Tunnel2
/// (inbound SPI 0x2001, key C, `worker = 1`, inner peer [`TUNNEL2_INNER`]).
/// `queues` must be at least 2. Node 1 sends on them with
/// [`two_tunnel_sender`].
pub fn two_tunnel_receiver(lab: &Lab, queues: u32) -> String {
    let c = tunnel_config(lab, 0, &BASE).replace("queues = 1", &format!("queues = {queues}"));
    let at = c.find("[[tunnel]]").expect("a tunnel");
    let remote = |w: u32, peer: &str| format!("remote_subnets = [\"{peer}/32\"]\nworker = {w}\n");
    let peer1 = format!("remote_subnets = [\"{}/32\"]\n", inner_addrs(false)[1]);
    let tunnel1 = c[at..].replace(&peer1, &remote(0, inner_addrs(false)[1]));
    let tunnel2 = as_tunnel2(&c[at..]).replace(&peer1, &remote(1, TUNNEL2_INNER));
    format!("{}{tunnel1}{tunnel2}", &c[..at])
}

/// Node 1's config sending to tunnel `n` (1 or 2) of
/// [`two_tunnel_receiver`]: one tunnel, `queues` queues (Tunnel2's inner
/// source is [`TUNNEL2_INNER`]).
pub fn two_tunnel_sender(lab: &Lab, n: usize, queues: u32) -> String {
    let c = tunnel_config(lab, 1, &BASE).replace("queues = 1", &format!("queues = {queues}"));
    if n == 1 {
        return c;
    }
    let peer0 = format!("remote_subnets = [\"{}/32\"]\n", inner_addrs(false)[0]);
    as_tunnel2(&c).replace(
        &peer0,
        &format!("{peer0}local_subnets = [\"{TUNNEL2_INNER}/32\"]\n"),
    )
}

/// AES-256-GCM, plain ESP, IPv4 in IPv4, window 64.
pub const BASE: Case = Case {
    cipher: "aes256-gcm",
    esn: false,
    udp: None,
    v6_outer: false,
    v6_inner: false,
    window: 64,
};

/// The scapy peer's config (tests/py/esp_peer.py) for node 1 of `lab`,
/// talking to xdpsec on node 0 configured with [`tunnel_config`]`(lab, 0, c)`:
/// scapy sends to xdpsec's inbound SA (0x1001, key A) and decrypts xdpsec's
/// outbound SA (0x1002, key B). Five echo requests unless `count` is changed.
pub fn scapy_peer_config(lab: &Lab, c: &Case) -> anyhow::Result<serde_json::Value> {
    let fmt = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let outer = if c.v6_outer { lab.v6 } else { lab.v4 };
    let inner = inner_addrs(c.v6_inner);
    let (ka, kb) = c.keys();
    Ok(serde_json::json!({
        "iface": lab.if2,
        "src_mac": fmt(crate::frames::mac_of(&lab.ns2, &lab.if2)?),
        "dst_mac": fmt(crate::frames::mac_of(&lab.ns1, &lab.if1)?),
        "outer_src": outer[1].to_string(),
        "outer_dst": outer[0].to_string(),
        "inner_src": inner[1],
        "inner_dst": inner[0],
        "udp": c.udp.map(|p| serde_json::json!([p, p])),
        "cipher": c.scapy_cipher(),
        "esn": c.esn,
        "tx": {"spi": 0x1001, "key": ka},
        "rx": {"spi": 0x1002, "key": kb},
        "count": 5,
        "timeout": 15,
    }))
}
