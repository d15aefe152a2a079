//! The daemon's TOML configuration: parsed, then validated into [`Config`].
//!
//! Errors name the field and the line, and say how to fix it. Nothing is
//! applied from a config that fails validation.
//!
//! Here: the validated types, the raw (deserialized) sections and
//! [`Config::parse`]; `tunnel.rs` the `[inside]` section and the tunnels,
//! `ike.rs` a tunnel's IKEv2 fields and key files, `sdwan.rs` the `[sdwan]`
//! section (and the TLS fields the controller's config shares),
//! `logging.rs` `[logging]`, `metrics.rs` `[metrics]`, `text.rs` TOML, line
//! numbers and hex. Nothing here imports the owner or a feature module
//! (only `seqstore`'s key fingerprint and `pki`'s organization check): the
//! modules that run a section (`sdwan`, `syslog`, `metrics`) import it.
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

mod ike;
pub mod logging;
pub mod metrics;
pub mod sdwan;
#[cfg(test)]
pub(crate) mod tests;
mod text;
mod tunnel;

pub use ike::ike_identity;
pub(crate) use ike::read_psk_file;
pub(crate) use text::{LineIndex, addr_port_field, node_and_socket, parse_toml};
use tunnel::{parse_inside, parse_tunnel};

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
    pub sdwan: Option<sdwan::SdwanConfig>,
    /// Remote syslog (`[logging]`).
    pub logging: Option<logging::LoggingConfig>,
    /// Prometheus `/metrics` (`[metrics]`).
    pub metrics: Option<metrics::MetricsConfig>,
}

/// How the XDP program is attached (`underlay.xdp_mode`, `inside.xdp_mode`):
/// the platform crate's, so the loader and the load tester share it.
pub use xdpsec_platform::XdpAttach;

/// An `xdp_mode` field (`underlay.xdp_mode`, `inside.xdp_mode`): "driver"
/// (the default, also when absent) or "generic".
pub(super) fn parse_xdp_mode(
    v: Option<&Spanned<String>>,
    field: &str,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
) -> Result<XdpAttach, String> {
    match v.map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("driver", _)) => Ok(XdpAttach::Driver),
        Some(("generic", _)) => Ok(XdpAttach::Generic),
        Some((other, span)) => Err(format!(
            "line {}: field `{field}` = {other:?}: give \"driver\" (the default) or \"generic\"",
            at(span)
        )),
    }
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
        /// How the inside program is attached (`inside.xdp_mode`, default
        /// "driver"). Generic keeps a veth host's TSO: its 64 KB
        /// super-packets arrive whole, in chained frames, and are cut here.
        xdp_mode: XdpAttach,
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
    /// The interval between resends of an unanswered DPD check
    /// (`dpd_retry_seconds`, IOS's retry interval; None: the IKE core's
    /// default schedule). Seconds (2 to 60) in a byte: the enum of tunnel
    /// kinds stays as large as it was.
    pub dpd_retry: Option<u8>,
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
    /// `peer_range`: a responder template answering any peer of a range.
    pub template: Option<Box<IkeTemplate>>,
}

/// A responder template (`peer_range` instead of `peer`): any peer of
/// `range` that authenticates becomes an instance of the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeTemplate {
    /// The peers' addresses (`peer_range`, a network address with its length).
    pub range: Cidr,
    /// At most this many instances at once (`max_peers`).
    pub max_peers: u32,
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
            .field("dpd_retry", &self.dpd_retry)
            .field("initiate", &self.initiate)
            .field("nat_t_port", &self.nat_t_port)
            .field("invalid_spi_recovery", &self.invalid_spi_recovery)
            .field("fragmentation", &self.fragmentation)
            .field("fragment_size", &self.fragment_size)
            .field("template", &self.template)
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
    sdwan: Option<Spanned<sdwan::RawSdwan>>,
    #[serde(default)]
    logging: Option<Spanned<logging::RawLogging>>,
    #[serde(default)]
    metrics: Option<Spanned<metrics::RawMetrics>>,
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
    #[serde(default)]
    xdp_mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    peer: Option<Spanned<String>>,
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
    dpd_retry_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    initiate: Option<Spanned<bool>>,
    #[serde(default)]
    invalid_spi_recovery: Option<Spanned<bool>>,
    #[serde(default)]
    fragmentation: Option<Spanned<bool>>,
    #[serde(default)]
    fragment_size: Option<Spanned<i64>>,
    #[serde(default)]
    peer_range: Option<Spanned<String>>,
    #[serde(default)]
    max_peers: Option<Spanned<i64>>,
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
        let xdp_mode = parse_xdp_mode(u.xdp_mode.as_ref(), "underlay.xdp_mode", &at)?;
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
            if let TunnelKind::Ike(IkeTunnel {
                template: Some(tpl),
                ..
            }) = &tun.kind
            {
                let within = |a: &Cidr, b: &Cidr| {
                    a.len >= b.len
                        && a.addr.is_ipv4() == b.addr.is_ipv4()
                        && ike::masked(a.addr, b.len) == ike::masked(b.addr, b.len)
                };
                if let Some(o) = tunnels.iter().find(|o| match &o.kind {
                    TunnelKind::Ike(IkeTunnel {
                        template: Some(x), ..
                    }) => within(&tpl.range, &x.range) || within(&x.range, &tpl.range),
                    _ => false,
                }) {
                    return Err(format!(
                        "line {}: field `tunnel.peer_range` = {} in tunnel {} overlaps the peer_range of {}: a peer must belong to one template",
                        at(r.peer_range.as_ref().expect("a template").span()),
                        tpl.range,
                        tun.name,
                        o.name
                    ));
                }
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
            .map(|m| metrics::parse_metrics(m, &at))
            .transpose()?;
        let logging = raw
            .logging
            .as_ref()
            .map(|l| logging::parse_logging(l, &at))
            .transpose()?;
        let sdwan = raw
            .sdwan
            .as_ref()
            .map(|s| sdwan::parse_sdwan(s, &inside, &at))
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
