//! The daemon's TOML configuration: parsed, then validated into [`Config`].
//!
//! Errors name the field and the line, and say how to fix it. Nothing is
//! applied from a config that fails validation.
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Node name, used in prompts and logs.
    pub node: String,
    /// Path of the control socket.
    pub socket: PathBuf,
    /// Directory for state that must survive restarts (outbound sequence
    /// number reservations); default `/var/lib/xdpsec/<node>`, mode 0700.
    pub state_dir: PathBuf,
    /// The underlay: where ESP arrives and leaves.
    pub underlay: Underlay,
    /// Where decrypted packets go.
    pub inside: Inside,
    /// Configured tunnels, in file order.
    pub tunnels: Vec<Tunnel>,
    /// The SD-WAN edge (`[sdwan]`), if this node is one.
    pub sdwan: Option<crate::sdwan::config::SdwanConfig>,
    /// Remote syslog (`[logging]`).
    pub logging: Option<crate::syslog::LoggingConfig>,
    /// Prometheus `/metrics` (`[metrics]`).
    pub metrics: Option<crate::metrics::MetricsConfig>,
}

/// How the XDP program is attached to the underlay (`underlay.xdp_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttach {
    /// Driver (native) mode, generic if the driver has no XDP (the default).
    Driver,
    /// Generic (SKB) mode only. On veth this keeps the peer's TSO/GSO
    /// (veth turns them off for a driver-mode program, frags or not), so
    /// traffic passed to the kernel keeps its speed; ESP then reaches
    /// AF_XDP after the kernel built an skb for it.
    Generic,
}

/// Where decrypted inner packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inside {
    /// Written to a TUN device, so the local kernel sees them; packets the
    /// kernel routes into it towards a tunnel's `remote_subnets` are encrypted.
    Tun {
        /// Device name.
        name: String,
        /// Address (with prefix length) given to the device.
        address: Cidr,
        /// Segmentation offloads (`offloads`, default on): the device
        /// carries virtio-net headers, GSO super-packets are read and cut
        /// here, decrypted TCP segments are coalesced before writing.
        offloads: bool,
    },
    /// Counted and dropped after decrypt (benchmarks).
    Sink,
    /// Gateway mode: inner packets leave and enter as Ethernet frames
    /// through AF_XDP on this interface (next hops from the kernel's
    /// neighbour table), no syscall per packet.
    Xdp {
        /// The inside interface (never the underlay's).
        interface: String,
    },
}

/// An address with a prefix length (the workers' route tables use it too).
pub use xdpsec_worker::routes::Cidr;

/// How a tunnel's SAs are keyed.
#[derive(Clone, Debug)]
pub enum TunnelKind {
    /// Static keys from the config (IOS `ipsec-manual` crypto map).
    Manual(ManualKeys),
    /// Negotiated with IKEv2 (RFC 7296).
    Ike(IkeTunnel),
}

impl TunnelKind {
    /// The keyword in the config (`kind = "..."`).
    pub fn name(&self) -> &'static str {
        match self {
            TunnelKind::Manual(_) => "manual",
            TunnelKind::Ike(_) => "ike",
        }
    }
}

/// The SAs of a manual tunnel.
#[derive(Clone, Debug)]
pub struct ManualKeys {
    /// Transform.
    pub cipher: CipherName,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Inbound SA.
    pub inbound: ManualSa,
    /// Outbound SA.
    pub outbound: ManualSa,
}

/// The IKEv2 settings of an `ike` tunnel.
#[derive(Clone)]
pub struct IkeTunnel {
    /// Pre-shared key (from `psk` or `psk_file`); zeroized on drop. Empty
    /// with `auth = "cert"`.
    pub psk: zeroize::Zeroizing<Vec<u8>>,
    /// `auth = "cert"`: our certificate and key, the CAs trusted for the
    /// peer's (`cert_file`, `key_file`, `ca_file`).
    pub cert: Option<std::sync::Arc<xdpsec_ike::cert::Credentials>>,
    /// The files the credentials came from (cert, key, CA), for reloads.
    pub cert_files: Option<[String; 3]>,
    /// Our identity as configured (default: the underlay address).
    pub local_id: Option<String>,
    /// The peer's identity as configured (default: its address).
    pub remote_id: Option<String>,
    /// IKE proposals, strongSwan notation.
    pub ike_proposals: Vec<String>,
    /// ESP proposals, strongSwan notation.
    pub esp_proposals: Vec<String>,
    /// IKE SA lifetime.
    pub ike_lifetime: std::time::Duration,
    /// Child SA lifetime.
    pub lifetime: std::time::Duration,
    /// Dead peer detection interval (None: off).
    pub dpd: Option<std::time::Duration>,
    /// Start the negotiation (else wait for the peer).
    pub initiate: bool,
    /// The NAT-T port (ours and the peer's).
    pub nat_t_port: u16,
    /// Send INVALID_SPI for ESP with an unknown SPI from this peer.
    pub invalid_spi_recovery: bool,
    /// IKE fragmentation (RFC 7383) offered and used when the peer offers it.
    pub fragmentation: bool,
    /// The largest IP datagram an IKE message or fragment fills, headers included.
    pub fragment_size: usize,
}

impl std::fmt::Debug for IkeTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The PSK never appears in logs or debug output.
        f.debug_struct("IkeTunnel")
            .field("psk", &format_args!("<{} bytes redacted>", self.psk.len()))
            .field("cert", &self.cert)
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("ike_proposals", &self.ike_proposals)
            .field("esp_proposals", &self.esp_proposals)
            .field("ike_lifetime", &self.ike_lifetime)
            .field("lifetime", &self.lifetime)
            .field("dpd", &self.dpd)
            .field("initiate", &self.initiate)
            .field("nat_t_port", &self.nat_t_port)
            .field("invalid_spi_recovery", &self.invalid_spi_recovery)
            .field("fragmentation", &self.fragmentation)
            .field("fragment_size", &self.fragment_size)
            .finish()
    }
}

/// Outer framing of a tunnel's ESP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    /// ESP directly in IP (protocol 50).
    Esp,
    /// ESP in UDP (RFC 3948) between the given ports.
    Udp {
        /// Our UDP port.
        local_port: u16,
        /// The peer's UDP port.
        peer_port: u16,
    },
}

/// The ESP transform a tunnel uses: the datapath's own list (AEADs with
/// key || 4-byte salt, AES-CBC + HMAC with encryption key || integrity key),
/// named in the config as [`CipherName::from_name`] reads them
/// (`aes256-gcm`, `aes256-sha256`, `aes128-sha1`, ...).
pub type CipherName = xdpsec_datapath::crypto::Cipher;

/// One direction's SA of a manual tunnel.
#[derive(Clone)]
pub struct ManualSa {
    /// SPI.
    pub spi: u32,
    /// key || salt; zeroized on drop.
    pub key: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ManualSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never appear in logs or debug output.
        write!(
            f,
            "ManualSa {{ spi: {:#x}, key: <{} bytes redacted> }}",
            self.spi,
            self.key.len()
        )
    }
}

/// A configured tunnel.
#[derive(Clone, Debug)]
pub struct Tunnel {
    /// Name, e.g. `Tunnel1` (the IOS interface name in logs and show output).
    pub name: String,
    /// How it is keyed, with the keys or the IKE settings.
    pub kind: TunnelKind,
    /// The peer's underlay address.
    pub peer: IpAddr,
    /// Outer framing.
    pub encap: Encap,
    /// Anti-replay window: 0 (off) or a power of two 64..8192.
    pub replay_window: u32,
    /// Inner destinations routed into this tunnel; also the remote traffic
    /// selectors: a decrypted packet's source must be in one of them (an
    /// empty list allows any source).
    pub remote_subnets: Vec<Cidr>,
    /// Local traffic selectors as configured: a decrypted packet's
    /// destination must be in one of them (an empty list allows any).
    /// `None` when not configured: see [`Tunnel::local_selectors`].
    pub local_subnets: Option<Vec<Cidr>>,
    /// The worker (rx queue) that owns the inbound SA's replay window;
    /// frames arriving on other queues are handed to it.
    pub worker: u32,
}

/// Underlay interface settings.
#[derive(Clone, Debug)]
pub struct Underlay {
    /// Interface name.
    pub interface: String,
    /// Local underlay address (IPv4 or IPv6).
    pub address: IpAddr,
    /// AF_XDP sockets, one per rx queue 0..queues.
    pub queues: u32,
    /// UDP destination ports steered as UDP-encapsulated ESP at start-up.
    pub udp_ports: BTreeSet<u16>,
    /// Drop ESP with an SPI no inbound SA has in the XDP program
    /// (`underlay.early_drop`, default true); false sends it to userspace.
    pub early_drop: bool,
    /// How the XDP program is attached (`underlay.xdp_mode`, default "driver").
    pub xdp_mode: XdpAttach,
    /// Busy polling on the AF_XDP sockets: `SO_BUSY_POLL` microseconds
    /// (`underlay.busy_poll_us`; 0, the default, is off).
    pub busy_poll_us: u32,
}

/// A configuration error: what is wrong, where, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// The message, naming the field and line.
    pub msg: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: Spanned<String>,
    socket: Option<Spanned<String>>,
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
    underlay: Spanned<RawUnderlay>,
    #[serde(default)]
    inside: Option<Spanned<RawInside>>,
    #[serde(default)]
    tunnel: Vec<Spanned<RawTunnel>>,
    #[serde(default)]
    sdwan: Option<Spanned<crate::sdwan::config::RawSdwan>>,
    #[serde(default)]
    logging: Option<Spanned<crate::syslog::RawLogging>>,
    #[serde(default)]
    metrics: Option<Spanned<crate::metrics::RawMetrics>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInside {
    mode: Spanned<String>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    address: Option<Spanned<String>>,
    #[serde(default)]
    interface: Option<Spanned<String>>,
    #[serde(default)]
    offloads: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    name: Spanned<String>,
    kind: Spanned<String>,
    peer: Spanned<String>,
    #[serde(default)]
    encap: Option<Spanned<String>>,
    #[serde(default)]
    local_port: Option<Spanned<i64>>,
    #[serde(default)]
    peer_port: Option<Spanned<i64>>,
    #[serde(default)]
    cipher: Option<Spanned<String>>,
    #[serde(default)]
    esn: Option<Spanned<bool>>,
    #[serde(default)]
    replay_window: Option<Spanned<i64>>,
    #[serde(default)]
    remote_subnets: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    local_subnets: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    inbound: Option<Spanned<RawSa>>,
    #[serde(default)]
    outbound: Option<Spanned<RawSa>>,
    #[serde(default)]
    worker: Option<Spanned<i64>>,
    // kind = "ike" only:
    #[serde(default)]
    psk: Option<Spanned<SecretText>>,
    #[serde(default)]
    psk_file: Option<Spanned<String>>,
    #[serde(default)]
    auth: Option<Spanned<String>>,
    #[serde(default)]
    cert_file: Option<Spanned<String>>,
    #[serde(default)]
    key_file: Option<Spanned<String>>,
    #[serde(default)]
    ca_file: Option<Spanned<String>>,
    #[serde(default)]
    local_id: Option<Spanned<String>>,
    #[serde(default)]
    remote_id: Option<Spanned<String>>,
    #[serde(default)]
    ike_proposals: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    esp_proposals: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    ike_lifetime_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    lifetime_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    dpd_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    initiate: Option<Spanned<bool>>,
    #[serde(default)]
    invalid_spi_recovery: Option<Spanned<bool>>,
    #[serde(default)]
    fragmentation: Option<Spanned<bool>>,
    #[serde(default)]
    fragment_size: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSa {
    spi: Spanned<i64>,
    key: Spanned<SecretText>,
}

/// A key as written in the config file: the text is zeroized when dropped.
pub(crate) struct SecretText(pub(crate) zeroize::Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretText(zeroize::Zeroizing::new(s)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnderlay {
    interface: Spanned<String>,
    address: Spanned<String>,
    #[serde(default)]
    queues: Option<Spanned<i64>>,
    #[serde(default)]
    udp_ports: Option<Spanned<Vec<i64>>>,
    #[serde(default)]
    early_drop: Option<bool>,
    #[serde(default)]
    xdp_mode: Option<Spanned<String>>,
    busy_poll_us: Option<Spanned<i64>>,
}

/// Largest `underlay.queues` accepted (the XDP program's XSKMAP size).
pub const MAX_QUEUES: u32 = xdpsec_common::MAX_QUEUES;

impl Config {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // The file text holds keys: zeroized when dropped.
        let text =
            zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| ConfigError {
                path: path.display().to_string(),
                msg: format!("cannot read the config file: {e}"),
            })?);
        Config::parse(&text).map_err(|msg| ConfigError {
            path: path.display().to_string(),
            msg,
        })
    }

    /// Parse and validate config text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = parse_toml(text)?;
        let lines = LineIndex::new(text);
        let at = |span: std::ops::Range<usize>| lines.line(span.start);
        let (node, socket) = node_and_socket(&raw.node, &raw.socket, &at)?;
        let state_dir = match &raw.state_dir {
            Some(s) if s.get_ref().is_empty() || !s.get_ref().starts_with('/') => {
                return Err(format!(
                    "line {}: field `state_dir` = {:?}: give an absolute directory path or leave it out for /var/lib/xdpsec/{node}",
                    at(s.span()),
                    s.get_ref()
                ));
            }
            Some(s) => PathBuf::from(s.get_ref()),
            None => PathBuf::from(format!("/var/lib/xdpsec/{node}")),
        };

        let u = raw.underlay.get_ref();
        let interface = u.interface.get_ref().clone();
        if interface.is_empty()
            || interface.len() >= libc::IFNAMSIZ
            || interface.contains(['/', ' ', '\0'])
        {
            return Err(format!(
                "line {}: field `underlay.interface` = {:?} is not a valid interface name (1-15 characters, no '/' or space)",
                at(u.interface.span()),
                interface
            ));
        }
        let address: IpAddr = u.address.get_ref().parse().map_err(|_| {
            format!(
                "line {}: field `underlay.address` = {:?} is not an IPv4 or IPv6 address (a prefix length does not belong here)",
                at(u.address.span()),
                u.address.get_ref()
            )
        })?;
        let busy_poll_us = match &u.busy_poll_us {
            None => 0,
            Some(b) => {
                let v = *b.get_ref();
                if !(0..=1_000_000).contains(&v) {
                    return Err(format!(
                        "line {}: field `underlay.busy_poll_us` = {v}: give 0 (off) to 1000000 microseconds",
                        at(b.span())
                    ));
                }
                v as u32
            }
        };
        let queues = match &u.queues {
            None => 1,
            Some(q) => {
                let v = *q.get_ref();
                if v < 1 || v > MAX_QUEUES as i64 {
                    return Err(format!(
                        "line {}: field `underlay.queues` = {v}: give 1 to {MAX_QUEUES} (one AF_XDP socket per rx queue)",
                        at(q.span())
                    ));
                }
                v as u32
            }
        };
        let xdp_mode = match u
            .xdp_mode
            .as_ref()
            .map(|m| (m.get_ref().as_str(), m.span()))
        {
            None | Some(("driver", _)) => XdpAttach::Driver,
            Some(("generic", _)) => XdpAttach::Generic,
            Some((other, span)) => {
                return Err(format!(
                    "line {}: field `underlay.xdp_mode` = {other:?}: give \"driver\" (the default) or \"generic\"",
                    at(span)
                ));
            }
        };
        let udp_ports = match &u.udp_ports {
            None => xdpsec_common::DEFAULT_UDP_ENCAP_PORTS.into_iter().collect(),
            Some(list) => {
                let mut set = BTreeSet::new();
                for &p in list.get_ref() {
                    if !(1..=65535).contains(&p) || p == 500 {
                        return Err(format!(
                            "line {}: field `underlay.udp_ports` has {p}: give UDP ports 1-65535 (500 is IKE and is never steered)",
                            at(list.span())
                        ));
                    }
                    set.insert(p as u16);
                }
                set
            }
        };
        let inside = match &raw.inside {
            None => Inside::Sink,
            Some(i) => parse_inside(i, &at, &interface)?,
        };
        let mut tunnels: Vec<Tunnel> = Vec::with_capacity(raw.tunnel.len());
        // Linear in the number of tunnels: names, inbound SPIs and outbound
        // keys are checked for duplicates through hash maps.
        let mut names: HashMap<String, usize> = HashMap::with_capacity(raw.tunnel.len());
        let mut in_spis: HashMap<u32, usize> = HashMap::with_capacity(raw.tunnel.len());
        // Keyed by fingerprint: no further copies of the keys.
        let mut out_keys: HashMap<crate::seqstore::KeyId, usize> =
            HashMap::with_capacity(raw.tunnel.len());
        for t in &raw.tunnel {
            let tun = parse_tunnel(t.get_ref(), &at, address)?;
            let r = t.get_ref();
            if tun.worker >= queues {
                let w = r.worker.as_ref().unwrap();
                return Err(format!(
                    "line {}: field `tunnel.worker` = {} in tunnel {}: give a queue below underlay.queues ({queues})",
                    at(w.span()),
                    tun.worker,
                    tun.name
                ));
            }
            let i = tunnels.len();
            if names.insert(tun.name.clone(), i).is_some() {
                return Err(format!(
                    "line {}: field `tunnel.name`: a tunnel named {} is already configured",
                    at(t.span()),
                    tun.name
                ));
            }
            if let TunnelKind::Manual(m) = &tun.kind {
                let (ri, ro) = (
                    r.inbound.as_ref().expect("manual"),
                    r.outbound.as_ref().expect("manual"),
                );
                if let Some(o) = in_spis.insert(m.inbound.spi, i) {
                    return Err(format!(
                        "line {}: field `tunnel.inbound.spi` = {:#x} is already the inbound SPI of {}: inbound SPIs identify SAs and must differ",
                        at(ri.get_ref().spi.span()),
                        m.inbound.spi,
                        tunnels[o].name
                    ));
                }
                // AES-GCM and ChaCha20-Poly1305 use the sequence number as IV: one
                // key in two places means one nonce used twice (RFC 4106 section 8).
                if *m.inbound.key == *m.outbound.key {
                    return Err(format!(
                        "line {}: field `tunnel.outbound.key` in tunnel {} equals `tunnel.inbound.key`: each direction needs its own key (a shared key reuses AEAD nonces)",
                        at(ro.get_ref().key.span()),
                        tun.name
                    ));
                }
                if let Some(o) = out_keys.insert(crate::seqstore::KeyId::of(&m.outbound.key), i) {
                    return Err(format!(
                        "line {}: field `tunnel.outbound.key` in tunnel {} is already the outbound key of {}: each outbound SA needs its own key (a shared key reuses AEAD nonces)",
                        at(ro.get_ref().key.span()),
                        tun.name,
                        tunnels[o].name
                    ));
                }
            }
            tunnels.push(tun);
        }
        let metrics = raw
            .metrics
            .as_ref()
            .map(|m| crate::metrics::parse_metrics(m, &at))
            .transpose()?;
        let logging = raw
            .logging
            .as_ref()
            .map(|l| crate::syslog::parse_logging(l, &at))
            .transpose()?;
        let sdwan = raw
            .sdwan
            .as_ref()
            .map(|s| crate::sdwan::config::parse_sdwan(s, &inside, &at))
            .transpose()?;
        Ok(Config {
            node,
            socket,
            state_dir,
            underlay: Underlay {
                interface,
                address,
                queues,
                udp_ports,
                early_drop: u.early_drop.unwrap_or(true),
                xdp_mode,
                busy_poll_us,
            },
            inside,
            tunnels,
            sdwan,
            logging,
            metrics,
        })
    }
}

fn parse_inside(
    i: &Spanned<RawInside>,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
    underlay: &str,
) -> Result<Inside, String> {
    let r = i.get_ref();
    if r.offloads.is_some() && r.mode.get_ref() != "tun" {
        return Err(format!(
            "line {}: field `inside.offloads` applies to mode \"tun\" only",
            at(i.span())
        ));
    }
    match r.mode.get_ref().as_str() {
        "sink" => Ok(Inside::Sink),
        "xdp" => {
            let name = r.interface.as_ref().ok_or_else(|| {
                format!(
                    "line {}: field `inside.interface` is missing: mode \"xdp\" needs the inside interface's name",
                    at(i.span())
                )
            })?;
            let n = name.get_ref();
            if n.is_empty() || n.len() >= libc::IFNAMSIZ || n.contains(['/', ' ']) {
                return Err(format!(
                    "line {}: field `inside.interface` = {n:?} is not a valid interface name (1-15 characters)",
                    at(name.span())
                ));
            }
            if n == underlay {
                return Err(format!(
                    "line {}: field `inside.interface` = {n:?} is the underlay interface: give the interface the inside hosts are on",
                    at(name.span())
                ));
            }
            Ok(Inside::Xdp {
                interface: n.clone(),
            })
        }
        "tun" => {
            let name = r.name.as_ref().ok_or_else(|| {
                format!(
                    "line {}: field `inside.name` is missing: mode \"tun\" needs a TUN device name",
                    at(i.span())
                )
            })?;
            let n = name.get_ref();
            if n.is_empty() || n.len() >= libc::IFNAMSIZ || n.contains(['/', ' ']) {
                return Err(format!(
                    "line {}: field `inside.name` = {n:?} is not a valid interface name (1-15 characters)",
                    at(name.span())
                ));
            }
            let addr = r.address.as_ref().ok_or_else(|| {
                format!("line {}: field `inside.address` is missing: mode \"tun\" needs an address like \"203.0.113.2/32\"", at(i.span()))
            })?;
            let address: Cidr = addr.get_ref().parse().map_err(|_| {
                format!(
                    "line {}: field `inside.address` = {:?}: give an address with a prefix length, e.g. \"203.0.113.2/32\"",
                    at(addr.span()),
                    addr.get_ref()
                )
            })?;
            Ok(Inside::Tun {
                name: n.clone(),
                address,
                offloads: r.offloads.unwrap_or(true),
            })
        }
        other => Err(format!(
            "line {}: field `inside.mode` = {other:?}: give \"tun\", \"xdp\" or \"sink\"",
            at(r.mode.span())
        )),
    }
}

fn parse_tunnel(
    t: &RawTunnel,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
    local: IpAddr,
) -> Result<Tunnel, String> {
    let name = t.name.get_ref().trim().to_string();
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(format!(
            "line {}: field `tunnel.name` = {:?}: give 1-63 characters from A-Z a-z 0-9 - _ . /",
            at(t.name.span()),
            t.name.get_ref()
        ));
    }
    let ike = match t.kind.get_ref().as_str() {
        "manual" => false,
        "ike" => true,
        other => {
            return Err(format!(
                "line {}: field `tunnel.kind` = {other:?} in tunnel {name}: give \"manual\" or \"ike\"",
                at(t.kind.span())
            ));
        }
    };
    // Fields of the other kind are refused, naming them.
    let manual_only: [(&str, Option<std::ops::Range<usize>>); 4] = [
        ("cipher", t.cipher.as_ref().map(|v| v.span())),
        ("esn", t.esn.as_ref().map(|v| v.span())),
        ("inbound", t.inbound.as_ref().map(|v| v.span())),
        ("outbound", t.outbound.as_ref().map(|v| v.span())),
    ];
    let ike_only: [(&str, Option<std::ops::Range<usize>>); 17] = [
        ("psk", t.psk.as_ref().map(|v| v.span())),
        ("psk_file", t.psk_file.as_ref().map(|v| v.span())),
        ("auth", t.auth.as_ref().map(|v| v.span())),
        ("cert_file", t.cert_file.as_ref().map(|v| v.span())),
        ("key_file", t.key_file.as_ref().map(|v| v.span())),
        ("ca_file", t.ca_file.as_ref().map(|v| v.span())),
        ("local_id", t.local_id.as_ref().map(|v| v.span())),
        ("remote_id", t.remote_id.as_ref().map(|v| v.span())),
        ("ike_proposals", t.ike_proposals.as_ref().map(|v| v.span())),
        ("esp_proposals", t.esp_proposals.as_ref().map(|v| v.span())),
        (
            "ike_lifetime_seconds",
            t.ike_lifetime_seconds.as_ref().map(|v| v.span()),
        ),
        (
            "lifetime_seconds",
            t.lifetime_seconds.as_ref().map(|v| v.span()),
        ),
        ("dpd_seconds", t.dpd_seconds.as_ref().map(|v| v.span())),
        ("initiate", t.initiate.as_ref().map(|v| v.span())),
        (
            "invalid_spi_recovery",
            t.invalid_spi_recovery.as_ref().map(|v| v.span()),
        ),
        ("fragmentation", t.fragmentation.as_ref().map(|v| v.span())),
        ("fragment_size", t.fragment_size.as_ref().map(|v| v.span())),
    ];
    let (foreign, other_kind) = if ike {
        (&manual_only[..], "manual")
    } else {
        (&ike_only[..], "ike")
    };
    if let Some((field, Some(span))) = foreign.iter().find(|(_, s)| s.is_some()) {
        return Err(format!(
            "line {}: field `tunnel.{field}` in tunnel {name} applies to kind = \"{other_kind}\" only",
            at(span.clone())
        ));
    }
    let peer: IpAddr = t.peer.get_ref().parse().map_err(|_| {
        format!(
            "line {}: field `tunnel.peer` = {:?} in tunnel {name} is not an IPv4 or IPv6 address",
            at(t.peer.span()),
            t.peer.get_ref()
        )
    })?;
    if peer.is_ipv4() != local.is_ipv4() {
        return Err(format!(
            "line {}: field `tunnel.peer` = {peer} in tunnel {name} is not of the same family as underlay.address {local}",
            at(t.peer.span())
        ));
    }
    let port = |f: &Option<Spanned<i64>>, field: &str| -> Result<Option<u16>, String> {
        match f {
            None => Ok(None),
            Some(p) if (1..=65535).contains(p.get_ref()) => Ok(Some(*p.get_ref() as u16)),
            Some(p) => Err(format!(
                "line {}: field `tunnel.{field}` = {} in tunnel {name}: give a UDP port 1-65535",
                at(p.span()),
                p.get_ref()
            )),
        }
    };
    let local_port = port(&t.local_port, "local_port")?;
    let peer_port = port(&t.peer_port, "peer_port")?;
    let encap = match t
        .encap
        .as_ref()
        .map(|e| e.get_ref().as_str())
        .unwrap_or("esp")
    {
        "esp" if ike => Encap::Esp,
        "esp" => {
            for (f, field) in [(&t.local_port, "local_port"), (&t.peer_port, "peer_port")] {
                if let Some(p) = f {
                    return Err(format!(
                        "line {}: field `tunnel.{field}` in tunnel {name} applies to encap = \"udp\" only",
                        at(p.span())
                    ));
                }
            }
            Encap::Esp
        }
        "udp" => Encap::Udp {
            local_port: local_port.unwrap_or(4500),
            peer_port: peer_port.unwrap_or(4500),
        },
        other => {
            let e = t.encap.as_ref().unwrap();
            return Err(format!(
                "line {}: field `tunnel.encap` = {other:?} in tunnel {name}: give \"esp\" or \"udp\"",
                at(e.span())
            ));
        }
    };
    let cipher = match &t.cipher {
        None => CipherName::Aes256Gcm,
        Some(c) => CipherName::from_name(c.get_ref()).ok_or_else(|| {
            format!(
                "line {}: field `tunnel.cipher` = {:?} in tunnel {name}: give \"aes128-gcm\", \"aes256-gcm\", \"chacha20-poly1305\" or AES-CBC with HMAC as \"aes128|aes192|aes256-sha1|sha256|sha384|sha512\" (e.g. \"aes256-sha256\", \"aes128-sha1\")",
                at(c.span()),
                c.get_ref()
            )
        })?,
    };
    let esn = t.esn.as_ref().map(|e| *e.get_ref()).unwrap_or(false);
    let replay_window = match &t.replay_window {
        None => 64,
        Some(w) => {
            let v = *w.get_ref();
            if !(v == 0 || ((64..=8192).contains(&v) && (v as u64).is_power_of_two())) {
                return Err(format!(
                    "line {}: field `tunnel.replay_window` = {v} in tunnel {name}: give 0 (off) or a power of two from 64 to 8192",
                    at(w.span())
                ));
            }
            v as u32
        }
    };
    let subnets = |list: &Spanned<Vec<Spanned<String>>>,
                   field: &str|
     -> Result<Vec<Cidr>, String> {
        list.get_ref()
            .iter()
            .map(|s| {
                s.get_ref().parse::<Cidr>().map_err(|_| {
                    format!(
                        "line {}: field `tunnel.{field}` has {:?} in tunnel {name}: give prefixes like \"203.0.113.1/32\"",
                        at(s.span()),
                        s.get_ref()
                    )
                })
            })
            .collect()
    };
    let remote_subnets = match &t.remote_subnets {
        Some(list) => subnets(list, "remote_subnets")?,
        None => Vec::new(),
    };
    let local_subnets = match &t.local_subnets {
        Some(list) => Some(subnets(list, "local_subnets")?),
        None => None,
    };
    let sa = |raw: &Spanned<RawSa>, dir: &str| -> Result<ManualSa, String> {
        let r = raw.get_ref();
        let spi = *r.spi.get_ref();
        // RFC 4303 2.1: SPI 0 is never sent, 1-255 are reserved by IANA.
        if !(256..=u32::MAX as i64).contains(&spi) {
            return Err(format!(
                "line {}: field `tunnel.{dir}.spi` = {spi} in tunnel {name}: give 256 to 0xFFFFFFFF (0-255 are reserved, RFC 4303)",
                at(r.spi.span())
            ));
        }
        let hex = r.key.get_ref().0.trim();
        let key = decode_hex(hex).ok_or_else(|| {
            format!(
                "line {}: field `tunnel.{dir}.key` in tunnel {name} is not hex (give {} as hex digits)",
                at(r.key.span()),
                cipher.key_material_layout()
            )
        })?;
        if key.len() != cipher.key_material_len() {
            let parts = match cipher {
                CipherName::AesCbc(k, i) => format!("{} + {} bytes", k.key_len(), i.key_len()),
                _ => format!("{} + 4 bytes", cipher.key_len()),
            };
            return Err(format!(
                "line {}: field `tunnel.{dir}.key` in tunnel {name} has {} bytes; \"{}\" needs {} ({}: {parts}, {} hex digits)",
                at(r.key.span()),
                key.len(),
                cipher.name(),
                cipher.key_material_len(),
                cipher.key_material_layout(),
                cipher.key_material_len() * 2
            ));
        }
        Ok(ManualSa {
            spi: spi as u32,
            key,
        })
    };
    let kind = if ike {
        TunnelKind::Ike(parse_ike(t, at, &name, local_port.unwrap_or(4500))?)
    } else {
        fn need<'r>(
            raw: &'r Option<Spanned<RawSa>>,
            dir: &str,
            name: &str,
            line: usize,
        ) -> Result<&'r Spanned<RawSa>, String> {
            raw.as_ref().ok_or_else(|| {
                format!(
                    "line {line}: tunnel {name} (kind = \"manual\") has no [tunnel.{dir}] table: give its spi and key"
                )
            })
        }
        let line = at(t.name.span());
        TunnelKind::Manual(ManualKeys {
            cipher,
            esn,
            inbound: sa(need(&t.inbound, "inbound", &name, line)?, "inbound")?,
            outbound: sa(need(&t.outbound, "outbound", &name, line)?, "outbound")?,
        })
    };
    let worker = match &t.worker {
        None => 0,
        Some(w) if (0..i64::from(MAX_QUEUES)).contains(w.get_ref()) => *w.get_ref() as u32,
        Some(w) => {
            return Err(format!(
                "line {}: field `tunnel.worker` = {} in tunnel {name}: give a queue number 0-{}",
                at(w.span()),
                w.get_ref(),
                MAX_QUEUES - 1
            ));
        }
    };
    Ok(Tunnel {
        name,
        kind,
        peer,
        encap,
        replay_window,
        remote_subnets,
        local_subnets,
        worker,
    })
}

/// Default IKE SA lifetime (IOS IKEv2 profile default: 86400 s).
const DEFAULT_IKE_LIFETIME: u64 = 86400;
/// Default child SA lifetime (IOS `crypto ipsec security-association
/// lifetime seconds` default: 3600 s).
const DEFAULT_CHILD_LIFETIME: u64 = 3600;
/// Default proposals: IOS XE 17's smart defaults, so that a tunnel with
/// no proposals configured meets a router with none (the IKEv2 proposal
/// `default`; the transform set `default`, `esp-aes esp-sha-hmac`).
const DEFAULT_IKE_PROPOSAL: &str = xdpsec_ike::IkeOffer::IOS_DEFAULT;
const DEFAULT_ESP_PROPOSAL: &str = xdpsec_ike::EspProposal::IOS_DEFAULT;

/// The `kind = "ike"` fields of a tunnel.
fn parse_ike(
    t: &RawTunnel,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
    name: &str,
    nat_t_port: u16,
) -> Result<IkeTunnel, String> {
    let (psk, cert, cert_files) = match t.auth.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
        None | Some(("psk", _)) => {
            if let Some((f, span)) = [
                ("cert_file", &t.cert_file),
                ("key_file", &t.key_file),
                ("ca_file", &t.ca_file),
            ]
            .into_iter()
            .find_map(|(f, v)| v.as_ref().map(|v| (f, v.span())))
            {
                return Err(format!(
                    "line {}: field `tunnel.{f}` in tunnel {name} needs auth = \"cert\"",
                    at(span)
                ));
            }
            let psk = psk_field(
                &t.psk,
                &t.psk_file,
                "tunnel.",
                &format!(" in tunnel {name}"),
                &|| {
                    format!(
                        "line {}: tunnel {name} (kind = \"ike\") needs `psk` or `psk_file`",
                        at(t.name.span())
                    )
                },
                at,
            )?;
            (psk, None, None)
        }
        Some(("cert", span)) => {
            let (c, files) = cert_fields(t, at, name, span)?;
            (zeroize::Zeroizing::new(Vec::new()), Some(c), Some(files))
        }
        Some((other, span)) => {
            return Err(format!(
                "line {}: field `tunnel.auth` = {other:?} in tunnel {name}: give \"psk\" or \"cert\"",
                at(span)
            ));
        }
    };
    for (field, v) in [("local_id", &t.local_id), ("remote_id", &t.remote_id)] {
        if let Some(v) = v
            && v.get_ref().contains('=')
            && let Err(e) = xdpsec_ike::cert::dn_from_text(v.get_ref())
        {
            return Err(format!(
                "line {}: field `tunnel.{field}` = {:?} in tunnel {name} is not a distinguished name: {e}",
                at(v.span()),
                v.get_ref()
            ));
        }
    }
    if let (Some(c), Some(v)) = (&cert, &t.local_id)
        && let Err(e) = c.proves(&ike_identity(v.get_ref()))
    {
        return Err(format!(
            "line {}: field `tunnel.local_id` = {:?} in tunnel {name}: our certificate does not carry it: {e}",
            at(v.span()),
            v.get_ref()
        ));
    }
    let proposals = |list: &Option<Spanned<Vec<Spanned<String>>>>,
                     field: &str,
                     default: &str|
     -> Result<Vec<String>, String> {
        let Some(l) = list else {
            return Ok(vec![default.to_string()]);
        };
        if l.get_ref().is_empty() {
            return Err(format!(
                "line {}: field `tunnel.{field}` in tunnel {name} is empty: give at least one proposal, e.g. \"{default}\"",
                at(l.span())
            ));
        }
        for p in l.get_ref() {
            let checked = if field == "ike_proposals" {
                xdpsec_ike::IkeOffer::parse(p.get_ref()).map(|_| ())
            } else {
                xdpsec_ike::EspProposal::parse(p.get_ref()).map(|_| ())
            };
            if let Err(e) = checked {
                return Err(format!(
                    "line {}: field `tunnel.{field}` has {:?} in tunnel {name}: {} (strongSwan notation, e.g. \"{default}\")",
                    at(p.span()),
                    p.get_ref(),
                    e.0
                ));
            }
        }
        Ok(l.get_ref().iter().map(|p| p.get_ref().clone()).collect())
    };
    let seconds = |v: &Option<Spanned<i64>>, field: &str, default: u64, min: i64| match v {
        None => Ok(default),
        Some(s) if *s.get_ref() >= min && *s.get_ref() <= 31_536_000 => Ok(*s.get_ref() as u64),
        Some(s) => Err(format!(
            "line {}: field `tunnel.{field}` = {} in tunnel {name}: give {min} to 31536000 seconds",
            at(s.span()),
            s.get_ref()
        )),
    };
    let ike_lifetime = seconds(
        &t.ike_lifetime_seconds,
        "ike_lifetime_seconds",
        DEFAULT_IKE_LIFETIME,
        120,
    )?;
    let lifetime = seconds(
        &t.lifetime_seconds,
        "lifetime_seconds",
        DEFAULT_CHILD_LIFETIME,
        10,
    )?;
    let dpd = seconds(&t.dpd_seconds, "dpd_seconds", 0, 0)?;
    let (lo, hi) = (
        xdpsec_ike::frag::MIN_FRAGMENT_SIZE,
        xdpsec_ike::frag::MAX_FRAGMENT_SIZE,
    );
    let fragment_size = match &t.fragment_size {
        None => xdpsec_ike::frag::DEFAULT_FRAGMENT_SIZE,
        Some(v) if (lo as i64..=hi as i64).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            return Err(format!(
                "line {}: field `tunnel.fragment_size` = {} in tunnel {name}: give {lo} to {hi} bytes (the largest IP datagram, headers included)",
                at(v.span()),
                v.get_ref()
            ));
        }
    };
    Ok(IkeTunnel {
        psk,
        cert,
        cert_files,
        local_id: t.local_id.as_ref().map(|v| v.get_ref().clone()),
        remote_id: t.remote_id.as_ref().map(|v| v.get_ref().clone()),
        ike_proposals: proposals(&t.ike_proposals, "ike_proposals", DEFAULT_IKE_PROPOSAL)?,
        esp_proposals: proposals(&t.esp_proposals, "esp_proposals", DEFAULT_ESP_PROPOSAL)?,
        ike_lifetime: std::time::Duration::from_secs(ike_lifetime),
        lifetime: std::time::Duration::from_secs(lifetime),
        dpd: (dpd > 0).then(|| std::time::Duration::from_secs(dpd)),
        initiate: t.initiate.as_ref().is_none_or(|v| *v.get_ref()),
        nat_t_port,
        invalid_spi_recovery: t
            .invalid_spi_recovery
            .as_ref()
            .is_some_and(|v| *v.get_ref()),
        fragmentation: t.fragmentation.as_ref().is_none_or(|v| *v.get_ref()),
        fragment_size,
    })
}

/// `auth = "cert"`: `cert_file`, `key_file` (mode 0600) and `ca_file`
/// loaded; no `psk`/`psk_file`.
fn cert_fields(
    t: &RawTunnel,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
    name: &str,
    auth_span: std::ops::Range<usize>,
) -> Result<(std::sync::Arc<xdpsec_ike::cert::Credentials>, [String; 3]), String> {
    if let Some(span) = t
        .psk
        .as_ref()
        .map(|v| v.span())
        .or(t.psk_file.as_ref().map(|v| v.span()))
    {
        return Err(format!(
            "line {}: tunnel {name} has auth = \"cert\": no `psk` or `psk_file` with it",
            at(span)
        ));
    }
    let field = |v: &Option<Spanned<String>>,
                 f: &str|
     -> Result<(String, std::ops::Range<usize>), String> {
        v.as_ref()
            .map(|v| (v.get_ref().clone(), v.span()))
            .ok_or_else(|| {
                format!(
                    "line {}: tunnel {name} has auth = \"cert\" and needs `{f}`",
                    at(auth_span.clone())
                )
            })
    };
    let (cert, cs) = field(&t.cert_file, "cert_file")?;
    let (key, ks) = field(&t.key_file, "key_file")?;
    let (ca, cas) = field(&t.ca_file, "ca_file")?;
    let read = |path: &str, f: &str, span: std::ops::Range<usize>| {
        std::fs::read(path).map_err(|e| {
            format!(
                "line {}: field `tunnel.{f}` = {path:?} in tunnel {name}: cannot read it: {e}",
                at(span)
            )
        })
    };
    let cert_pem = read(&cert, "cert_file", cs)?;
    let ca_pem = read(&ca, "ca_file", cas)?;
    // The private key: the same rules as a PSK file (0600, owner only).
    let key_pem = read_psk_file(&key).map_err(|e| {
        format!(
            "line {}: field `tunnel.key_file` = {key:?} in tunnel {name}: {e}",
            at(ks.clone())
        )
    })?;
    let c = xdpsec_ike::cert::Credentials::from_pem(&cert_pem, &key_pem, &ca_pem).map_err(|e| {
        format!(
            "line {}: tunnel {name} (auth = \"cert\"): {e}",
            at(auth_span.clone())
        )
    })?;
    Ok((std::sync::Arc::new(c), [cert, key, ca]))
}

/// The identity a `local_id`/`remote_id` string names: an address, a DN
/// (has `=`: `C=CH, O=Org, CN=moon`), an e-mail address (has `@`), else
/// an FQDN (a leading `@` dropped).
pub fn ike_identity(v: &str) -> xdpsec_ike::Identity {
    use xdpsec_ike::Identity;
    match v.parse::<IpAddr>() {
        Ok(a) => Identity::Addr(a),
        Err(_) if v.contains('=') => match xdpsec_ike::cert::dn_from_text(v) {
            Ok(d) => Identity::Dn(d),
            Err(_) => Identity::Fqdn(v.to_string()),
        },
        Err(_) if v.contains('@') && !v.starts_with('@') => Identity::Email(v.to_string()),
        Err(_) => Identity::Fqdn(v.trim_start_matches('@').to_string()),
    }
}

/// Read a pre-shared key file: it must be a regular file of mode 0600 (or
/// stricter); one trailing newline is not part of the key.
/// A pre-shared key given as `psk` or `psk_file` (one of them): the
/// fields are named `{field}psk`/`{field}psk_file`{whose} in errors;
/// `missing` is the error when neither is given.
pub(crate) fn psk_field(
    psk: &Option<Spanned<SecretText>>,
    psk_file: &Option<Spanned<String>>,
    field: &str,
    whose: &str,
    missing: &dyn Fn() -> String,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    match (psk, psk_file) {
        (Some(_), Some(f)) => Err(format!(
            "line {}: fields `{field}psk` and `{field}psk_file`{whose}: give one of them",
            at(f.span())
        )),
        (Some(p), None) => {
            let v = p.get_ref().0.as_bytes();
            if v.is_empty() {
                return Err(format!(
                    "line {}: field `{field}psk`{whose} is empty",
                    at(p.span())
                ));
            }
            Ok(zeroize::Zeroizing::new(v.to_vec()))
        }
        (None, Some(f)) => read_psk_file(f.get_ref()).map_err(|e| {
            format!(
                "line {}: field `{field}psk_file` = {:?}{whose}: {e}",
                at(f.span()),
                f.get_ref()
            )
        }),
        (None, None) => Err(missing()),
    }
}

/// Read a key file (mode 0600 or stricter; one trailing newline dropped).
pub(crate) fn read_psk_file(path: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_file() || mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:04o}: a key file must be readable by its owner only (chmod 600)"
        ));
    }
    let mut key =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?);
    if key.last() == Some(&b'\n') {
        key.pop();
    }
    if key.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(key)
}

impl Tunnel {
    /// The local traffic selectors in force: `local_subnets` if configured,
    /// else the `[inside]` address as a host prefix in tun mode, else (sink
    /// and xdp modes) none, which allows any destination.
    pub fn local_selectors(&self, inside: &Inside) -> Vec<Cidr> {
        match (&self.local_subnets, inside) {
            (Some(list), _) => list.clone(),
            (None, Inside::Tun { address, .. }) => vec![Cidr {
                addr: address.addr,
                len: if address.addr.is_ipv4() { 32 } else { 128 },
            }],
            (None, Inside::Sink | Inside::Xdp { .. }) => Vec::new(),
        }
    }
}

/// Deserialize config text, naming the line of a syntax or type error.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        let msg = e.message().trim_end().replace('\n', " ");
        match e.span().and_then(|s| field_at(text, s.start)) {
            // A value of the wrong type: name the field, as every other
            // config error does.
            Some(field) if !msg.contains('`') || !msg.contains(&field) => {
                format!("line {line}: field `{field}`: {msg}")
            }
            _ => format!("line {line}: {msg}"),
        }
    })
}

/// The dotted name of the `key = value` line holding byte `pos` (its table
/// header's name first, as `tunnel.fragment_size`), if that line is one.
fn field_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') || key.contains(['[', ' ']) {
        return None;
    }
    let table = text[..start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(['[', ']']).trim().to_string())
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// The `node` name and the control `socket` path (default
/// `/run/xdpsec/<node>.sock`) every xdpsec config starts with.
pub(crate) fn node_and_socket(
    node: &Spanned<String>,
    socket: &Option<Spanned<String>>,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
) -> Result<(String, PathBuf), String> {
    let name = node.get_ref().trim().to_string();
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!(
            "line {}: field `node` = {:?}: give 1-63 characters from A-Z a-z 0-9 - _ .",
            at(node.span()),
            node.get_ref()
        ));
    }
    let socket = match socket {
        Some(s) if s.get_ref().is_empty() => {
            return Err(format!(
                "line {}: field `socket` is empty: give a path or leave it out for /run/xdpsec/{name}.sock",
                at(s.span())
            ));
        }
        Some(s) => PathBuf::from(s.get_ref()),
        None => PathBuf::from(format!("/run/xdpsec/{name}.sock")),
    };
    Ok((name, socket))
}

/// Decode hex digits (an optional 0x prefix, no separators) into zeroizing bytes.
fn decode_hex(s: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(s.len() / 2));
    for pair in s.as_bytes().chunks(2) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out.push((hi * 16 + lo) as u8);
    }
    Some(out)
}

/// Line numbers of byte offsets in one text: its newlines found once, then
/// a binary search per lookup (a config with 100,000 tunnels asks for
/// many lines; counting from the start each time was quadratic).
pub(crate) struct LineIndex(Vec<usize>);

impl LineIndex {
    /// Index the newlines of `text`.
    pub(crate) fn new(text: &str) -> LineIndex {
        LineIndex(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// 1-based line number of byte offset `pos`.
    pub(crate) fn line(&self, pos: usize) -> usize {
        self.0.partition_point(|&nl| nl < pos) + 1
    }
}

/// 1-based line number of byte offset `pos` in `text`.
pub(crate) fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

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
                interface: "veth-in".into()
            }
        );
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
        let line_of_text =
            |needle: &str| full.lines().position(|l| l.contains(needle)).unwrap() + 1;
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
        let min =
            "[[tunnel]]\nname = \"T\"\nkind = \"ike\"\npeer = \"198.51.100.2\"\npsk = \"x\"\n";
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

    #[test]
    fn ike_cert_auth_fields() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xdpsec-cert-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ssl = |args: &[&str]| {
            let ok = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "openssl {args:?}");
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
            "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=ca", "-days", "3", "-out",
            "ca.crt",
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
        let cert = base
            .replacen("psk = \"not-a-real-secret\"", &fields, 1)
            .replacen("local_id = \"198.51.100.1\"\n", "", 1);
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
        // The daemon takes it: our identity is the certificate's subject,
        // the credentials go to the IKE core.
        let peers = crate::owner::ike_peers(&c).unwrap();
        assert_eq!(
            peers[0].local_id,
            xdpsec_ike::Identity::Dn(creds.subject_der())
        );
        assert!(peers[0].cert.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
