//! The `[sdwan]` section of the daemon's config: this node is an SD-WAN
//! edge with one TLOC per `[[sdwan.tloc]]`, keyed through `xdpsec
//! controller` (no IKE). Errors name the field and the line.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use xdpsec_omp::tls::TlsFiles;

use crate::config::{Cidr, Inside, SecretText, addr_port_field, read_psk_file};

/// TLOC colors as Cisco SD-WAN names them.
pub const COLORS: &[&str] = &[
    "default",
    "mpls",
    "metro-ethernet",
    "biz-internet",
    "public-internet",
    "lte",
    "3g",
    "red",
    "green",
    "blue",
    "gold",
    "silver",
    "bronze",
    "custom1",
    "custom2",
    "custom3",
    "private1",
    "private2",
    "private3",
    "private4",
    "private5",
    "private6",
];

/// Defaults (Cisco SD-WAN's where it has one).
pub const DEFAULT_REKEY_SECONDS: u64 = 86_400;
/// Default replay window of SD-WAN inbound SAs.
pub const DEFAULT_REPLAY_WINDOW: u32 = 512;
/// Old inbound SA kept after a rekey: long enough for every peer to learn
/// the new TLOC through the controller and switch, short against misuse.
pub const DEFAULT_REKEY_GRACE_SECONDS: u64 = 60;
/// BFD hello interval.
pub const DEFAULT_BFD_HELLO_MS: u64 = 1000;
/// BFD detect multiplier.
pub const DEFAULT_BFD_MULTIPLIER: u8 = 7;
/// How long routes learned from the controller are kept after every
/// control connection dropped (OMP graceful restart).
pub const DEFAULT_GRACEFUL_RESTART_SECONDS: u64 = 43_200;

/// One local TLOC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlocCfg {
    /// Color (`biz-internet`, `mpls`, ...).
    pub color: String,
    /// Its address on the underlay interface.
    pub address: IpAddr,
    /// Added to the TLOC port: 12346 + offset (0-19).
    pub port_offset: u16,
}

/// A validated `[sdwan]` section.
#[derive(Clone)]
pub struct SdwanConfig {
    /// System-ip: an identifier, never used as an address on the wire.
    pub system_ip: Ipv4Addr,
    /// Site-id.
    pub site_id: u32,
    /// TCP address of `xdpsec controller`.
    pub controller: SocketAddr,
    /// The control connections' TLS material and organization.
    pub tls: TlsConfig,
    /// Each TLOC's key and SPI are replaced this often.
    pub rekey: Duration,
    /// Replay window of the inbound SAs.
    pub replay_window: u32,
    /// Inside prefixes advertised to the other edges.
    pub service_prefixes: Vec<Cidr>,
    /// Old inbound SA kept this long after a rekey.
    pub rekey_grace: Duration,
    /// BFD hello interval.
    pub bfd_hello: Duration,
    /// BFD detect multiplier.
    pub bfd_multiplier: u8,
    /// Learned routes kept this long without a control connection.
    pub graceful_restart: Duration,
    /// Local TLOCs, in file order (Tunnel10001, Tunnel10002, ...).
    pub tlocs: Vec<TlocCfg>,
}

impl std::fmt::Debug for SdwanConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The PSK never appears in output.
        f.debug_struct("SdwanConfig")
            .field("system_ip", &self.system_ip)
            .field("site_id", &self.site_id)
            .field("controller", &self.controller)
            .field("tls", &self.tls)
            .field("rekey", &self.rekey)
            .field("replay_window", &self.replay_window)
            .field("service_prefixes", &self.service_prefixes)
            .field("tlocs", &self.tlocs)
            .finish()
    }
}

impl PartialEq for SdwanConfig {
    fn eq(&self, o: &Self) -> bool {
        format!("{self:?}") == format!("{o:?}")
            && self.tls == o.tls
            && self.rekey_grace == o.rekey_grace
            && self.bfd_hello == o.bfd_hello
            && self.bfd_multiplier == o.bfd_multiplier
            && self.graceful_restart == o.graceful_restart
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSdwan {
    system_ip: Spanned<String>,
    site_id: Spanned<i64>,
    controller: Spanned<String>,
    #[serde(default)]
    psk: Option<Spanned<SecretText>>,
    #[serde(default)]
    psk_file: Option<Spanned<String>>,
    #[serde(default)]
    ca_file: Option<Spanned<String>>,
    #[serde(default)]
    cert_file: Option<Spanned<String>>,
    #[serde(default)]
    key_file: Option<Spanned<String>>,
    #[serde(default)]
    organization: Option<Spanned<String>>,
    #[serde(default)]
    rekey_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    replay_window: Option<Spanned<i64>>,
    #[serde(default)]
    service_prefixes: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    rekey_grace_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    bfd_hello_ms: Option<Spanned<i64>>,
    #[serde(default)]
    bfd_multiplier: Option<Spanned<i64>>,
    #[serde(default)]
    graceful_restart_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    tloc: Vec<Spanned<RawTloc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTloc {
    color: Spanned<String>,
    address: Spanned<String>,
    #[serde(default)]
    port_offset: Option<Spanned<i64>>,
}

/// The control connections' TLS side: the files as read (the key file
/// mode 0600 or stricter) and the organization.
#[derive(Clone, PartialEq)]
pub struct TlsConfig {
    /// CA, certificate and key (PEM).
    pub files: TlsFiles,
    /// The organization the peer's certificate must carry.
    pub organization: String,
    /// Where the files came from (for errors and shows).
    pub paths: [String; 3],
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key's contents never appear; a change of any file does show
        // as a change of the config (PartialEq compares the contents).
        f.debug_struct("TlsConfig")
            .field("organization", &self.organization)
            .field("ca_file", &self.paths[0])
            .field("cert_file", &self.paths[1])
            .field("key_file", &self.paths[2])
            .finish()
    }
}

impl TlsConfig {
    /// The edge's rustls configuration (checked when the config was read,
    /// so `None` only if the files became unusable in between).
    pub fn client(&self) -> Option<std::sync::Arc<xdpsec_omp::tls::rustls::ClientConfig>> {
        self.files.client_config().ok()
    }

    /// The controller's rustls configuration (see [`TlsConfig::client`]).
    pub fn server(&self) -> Option<std::sync::Arc<xdpsec_omp::tls::rustls::ServerConfig>> {
        self.files.server_config().ok()
    }
}

/// The TLS fields of a config section (the edge's `[sdwan]` or the
/// controller's top level); `prefix` is how errors name them.
pub(crate) struct TlsFields<'a> {
    pub prefix: &'a str,
    pub psk: Option<std::ops::Range<usize>>,
    pub psk_file: Option<std::ops::Range<usize>>,
    pub ca_file: &'a Option<Spanned<String>>,
    pub cert_file: &'a Option<Spanned<String>>,
    pub key_file: &'a Option<Spanned<String>>,
    pub organization: &'a Option<Spanned<String>>,
    pub section: std::ops::Range<usize>,
}

/// The [`TlsFields`] of a raw config section `$raw`, a struct with the
/// fields `psk`, `psk_file`, `ca_file`, `cert_file`, `key_file` and
/// `organization` (the edge's `[sdwan]`, the controller's top level):
/// errors name them with `$prefix`, a missing one at the line of
/// `$section` (a span).
macro_rules! tls_fields_of {
    ($raw:expr, $prefix:expr, $section:expr) => {
        $crate::config::sdwan::TlsFields {
            prefix: $prefix,
            psk: $raw.psk.as_ref().map(|p| p.span()),
            psk_file: $raw.psk_file.as_ref().map(|p| p.span()),
            ca_file: &$raw.ca_file,
            cert_file: &$raw.cert_file,
            key_file: &$raw.key_file,
            organization: &$raw.organization,
            section: $section,
        }
    };
}
pub(crate) use tls_fields_of;

/// Reads and checks the TLS fields: the files must exist, the key file be
/// private, and the three make a usable TLS configuration (`server`: the
/// controller's side). The retired `psk`/`psk_file` are an error naming the
/// new fields.
pub(crate) fn tls_fields(
    f: &TlsFields,
    server: bool,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
) -> Result<TlsConfig, String> {
    let p = f.prefix;
    let new_keys = format!(
        "`{p}ca_file`, `{p}cert_file`, `{p}key_file` and `{p}organization` (make the CA and the certificates with `xdpsec pki`)"
    );
    for (name, span) in [("psk", &f.psk), ("psk_file", &f.psk_file)] {
        if let Some(span) = span {
            return Err(format!(
                "line {}: field `{p}{name}` is no longer supported: control connections are TLS with certificates; give {new_keys}",
                at(span.clone())
            ));
        }
    }
    let need = |v: &Option<Spanned<String>>, name: &str| -> Result<(String, usize), String> {
        match v {
            Some(s) if !s.get_ref().is_empty() => Ok((s.get_ref().clone(), at(s.span()))),
            Some(s) => Err(format!("line {}: field `{p}{name}` is empty", at(s.span()))),
            None => Err(format!(
                "line {}: field `{p}{name}` is missing: the control connections need {new_keys}",
                at(f.section.clone())
            )),
        }
    };
    let (ca, ca_line) = need(f.ca_file, "ca_file")?;
    let (cert, cert_line) = need(f.cert_file, "cert_file")?;
    let (key, key_line) = need(f.key_file, "key_file")?;
    let (organization, org_line) = need(f.organization, "organization")?;
    crate::pki::parse_organization(&organization)
        .map_err(|e| format!("line {org_line}: field `{p}organization`: {e}"))?;
    let read = |path: &str, name: &str, line: usize| {
        std::fs::read(path)
            .map_err(|e| format!("line {line}: field `{p}{name}` = {path:?}: cannot read it: {e}"))
    };
    let ca_pem = read(&ca, "ca_file", ca_line)?;
    let cert_pem = read(&cert, "cert_file", cert_line)?;
    let key_pem = read_psk_file(&key)
        .map_err(|e| format!("line {key_line}: field `{p}key_file` = {key:?}: {e}"))?;
    let files = TlsFiles {
        ca_pem,
        cert_pem,
        key_pem,
    };
    let built = if server {
        files.server_config().map(|_| ())
    } else {
        files.client_config().map(|_| ())
    };
    built.map_err(|e| {
        format!("line {cert_line}: fields `{p}ca_file`, `{p}cert_file`, `{p}key_file`: {e}")
    })?;
    Ok(TlsConfig {
        files,
        organization,
        paths: [ca, cert, key],
    })
}

/// An integer field in `range`, or its default.
fn int_field(
    v: &Option<Spanned<i64>>,
    field: &str,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
) -> Result<i64, String> {
    match v {
        None => Ok(default),
        Some(s) if range.contains(s.get_ref()) => Ok(*s.get_ref()),
        Some(s) => Err(format!(
            "line {}: field `sdwan.{field}` = {}: give {}-{} (default {default})",
            at(s.span()),
            s.get_ref(),
            range.start(),
            range.end()
        )),
    }
}

/// Validate the `[sdwan]` section against the rest of the config.
pub(crate) fn parse_sdwan(
    s: &Spanned<RawSdwan>,
    inside: &Inside,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
) -> Result<SdwanConfig, String> {
    let r = s.get_ref();
    let system_ip: Ipv4Addr = r.system_ip.get_ref().parse().map_err(|_| {
        format!(
            "line {}: field `sdwan.system_ip` = {:?}: give an IPv4 address (an identifier, e.g. \"192.0.2.1\")",
            at(r.system_ip.span()),
            r.system_ip.get_ref()
        )
    })?;
    let site_id = int_field(
        &Some(r.site_id.clone()),
        "site_id",
        1..=4_294_967_295,
        0,
        at,
    )? as u32;
    let controller = addr_port_field(
        &r.controller,
        "sdwan.controller",
        "give the controller's ADDR:PORT, e.g. \"198.51.100.10:23456\"",
        at,
    )?;
    let tls = tls_fields(&tls_fields_of!(r, "sdwan.", s.span()), false, at)?;
    let rekey = int_field(
        &r.rekey_seconds,
        "rekey_seconds",
        2..=1_209_600,
        DEFAULT_REKEY_SECONDS as i64,
        at,
    )?;
    let replay_window = match &r.replay_window {
        None => DEFAULT_REPLAY_WINDOW,
        Some(w) => {
            let v = *w.get_ref();
            if !((64..=8192).contains(&v) && (v as u64).is_power_of_two()) {
                return Err(format!(
                    "line {}: field `sdwan.replay_window` = {v}: give a power of two from 64 to 8192 (default {DEFAULT_REPLAY_WINDOW})",
                    at(w.span())
                ));
            }
            v as u32
        }
    };
    let service_prefixes = match &r.service_prefixes {
        Some(list) => list
            .get_ref()
            .iter()
            .map(|p| {
                p.get_ref().parse::<Cidr>().map_err(|_| {
                    format!(
                        "line {}: field `sdwan.service_prefixes` has {:?}: give prefixes as ADDR/LEN",
                        at(p.span()),
                        p.get_ref()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => match inside {
            Inside::Tun { address, .. } => vec![Cidr {
                addr: address.addr,
                len: if address.addr.is_ipv4() { 32 } else { 128 },
            }],
            Inside::Sink | Inside::Xdp { .. } => Vec::new(),
        },
    };
    let rekey_grace = int_field(
        &r.rekey_grace_seconds,
        "rekey_grace_seconds",
        1..=86_400,
        DEFAULT_REKEY_GRACE_SECONDS as i64,
        at,
    )?;
    let bfd_hello = int_field(
        &r.bfd_hello_ms,
        "bfd_hello_ms",
        50..=300_000,
        DEFAULT_BFD_HELLO_MS as i64,
        at,
    )?;
    let bfd_multiplier = int_field(
        &r.bfd_multiplier,
        "bfd_multiplier",
        1..=60,
        i64::from(DEFAULT_BFD_MULTIPLIER),
        at,
    )?;
    let graceful_restart = int_field(
        &r.graceful_restart_seconds,
        "graceful_restart_seconds",
        1..=604_800,
        DEFAULT_GRACEFUL_RESTART_SECONDS as i64,
        at,
    )?;
    if r.tloc.is_empty() {
        return Err(format!(
            "line {}: section `sdwan` needs at least one `[[sdwan.tloc]]` (color, address, port_offset)",
            at(s.span())
        ));
    }
    let mut tlocs: Vec<TlocCfg> = Vec::new();
    let mut colors = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for t in &r.tloc {
        let tr = t.get_ref();
        let color = tr.color.get_ref().clone();
        if !COLORS.contains(&color.as_str()) {
            return Err(format!(
                "line {}: field `sdwan.tloc.color` = {color:?}: give one of {}",
                at(tr.color.span()),
                COLORS.join(", ")
            ));
        }
        if !colors.insert(color.clone()) {
            return Err(format!(
                "line {}: field `sdwan.tloc.color`: a TLOC with color {color} is already configured (one TLOC per color)",
                at(tr.color.span())
            ));
        }
        let address: IpAddr = tr.address.get_ref().parse().map_err(|_| {
            format!(
                "line {}: field `sdwan.tloc.address` = {:?} in TLOC {color}: give an IPv4 or IPv6 address of the underlay interface",
                at(tr.address.span()),
                tr.address.get_ref()
            )
        })?;
        if address.is_ipv6() {
            // BFD runs inside the tunnels as inner IPv4 between the TLOC
            // addresses (RFC 5881), which the datapath punts.
            return Err(format!(
                "line {}: field `sdwan.tloc.address` = {address} in TLOC {color}: SD-WAN TLOCs are IPv4 here (BFD inside the tunnels is IPv4); give an IPv4 address of the underlay interface",
                at(tr.address.span()),
            ));
        }
        if address.is_ipv4() != controller.is_ipv4() {
            return Err(format!(
                "line {}: field `sdwan.tloc.address` = {address} in TLOC {color}: the control connection runs from it to sdwan.controller {controller}: give addresses of one family",
                at(tr.address.span()),
            ));
        }
        let port_offset = int_field(&tr.port_offset, "tloc.port_offset", 0..=19, 0, at)? as u16;
        if !ports.insert((address, port_offset)) {
            return Err(format!(
                "line {}: field `sdwan.tloc.port_offset` = {port_offset} in TLOC {color}: another TLOC has the same address and port",
                at(t.span())
            ));
        }
        tlocs.push(TlocCfg {
            color,
            address,
            port_offset,
        });
    }
    Ok(SdwanConfig {
        system_ip,
        site_id,
        controller,
        tls,
        rekey: Duration::from_secs(rekey as u64),
        replay_window,
        service_prefixes,
        rekey_grace: Duration::from_secs(rekey_grace as u64),
        bfd_hello: Duration::from_millis(bfd_hello as u64),
        bfd_multiplier: bfd_multiplier as u8,
        graceful_restart: Duration::from_secs(graceful_restart as u64),
        tlocs,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "node = \"e1\"\n[underlay]\ninterface = \"e0\"\naddress = \"198.51.100.1\"\n[inside]\nmode = \"tun\"\nname = \"xs0\"\naddress = \"203.0.113.1/32\"\n";
    /// An `[sdwan]` section with TLS files from a fresh test PKI.
    fn sdwan(tag: &str) -> String {
        let d = crate::pki::test_pki_dir(&format!("sdwan-{tag}"));
        format!(
            "[sdwan]\nsystem_ip = \"192.0.2.1\"\nsite_id = 100\ncontroller = \"198.51.100.10:23456\"\nca_file = \"{d}/ca/ca.crt\"\ncert_file = \"{d}/edge/device.crt\"\nkey_file = \"{d}/edge/device.key\"\norganization = \"xdpsec-test\"\n[[sdwan.tloc]]\ncolor = \"biz-internet\"\naddress = \"198.51.100.1\"\n",
            d = d.display()
        )
    }

    #[test]
    fn defaults_follow_the_issue_contract() {
        let sdwan = sdwan("defaults");
        let c = Config::parse(&format!("{BASE}{sdwan}")).unwrap();
        let s = c.sdwan.unwrap();
        assert_eq!(s.system_ip.to_string(), "192.0.2.1");
        assert_eq!(s.site_id, 100);
        assert_eq!(s.rekey.as_secs(), 86_400);
        assert_eq!(s.replay_window, 512);
        assert_eq!(s.rekey_grace.as_secs(), 60);
        assert_eq!(s.bfd_hello.as_millis(), 1000);
        assert_eq!(s.bfd_multiplier, 7);
        assert_eq!(s.graceful_restart.as_secs(), 43_200);
        // Default service prefix: the inside address, as a host route.
        assert_eq!(s.service_prefixes[0].to_string(), "203.0.113.1/32");
        assert_eq!(s.tlocs[0].port_offset, 0);
        assert_eq!(s.tls.organization, "xdpsec-test");
        assert!(!format!("{s:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn errors_name_the_field() {
        let sdwan = sdwan("errors");
        let cases = [
            ("site_id = 100", "site_id = 0", "sdwan.site_id"),
            (
                "color = \"biz-internet\"",
                "color = \"purple\"",
                "sdwan.tloc.color",
            ),
            (
                "address = \"198.51.100.1\"\n",
                "address = \"2001:db8::1\"\n",
                "sdwan.tloc.address",
            ),
            (
                "controller = \"198.51.100.10:23456\"",
                "controller = \"198.51.100.10\"",
                "sdwan.controller",
            ),
            (
                "organization = \"xdpsec-test\"",
                "organization = \"xdpsec-test\"\npsk = \"x\"",
                "field `sdwan.psk` is no longer supported",
            ),
            (
                "organization = \"xdpsec-test\"",
                "organization = \"xdpsec-test\"\npsk_file = \"/x\"",
                "`sdwan.ca_file`, `sdwan.cert_file`, `sdwan.key_file` and `sdwan.organization`",
            ),
            (
                "organization = \"xdpsec-test\"\n",
                "",
                "field `sdwan.organization` is missing",
            ),
            (
                "site_id = 100",
                "site_id = 100\nreplay_window = 100",
                "sdwan.replay_window",
            ),
            (
                "site_id = 100",
                "site_id = 100\nbfd_multiplier = 0",
                "sdwan.bfd_multiplier",
            ),
        ];
        for (from, to, want) in cases {
            let text = format!("{BASE}{}", sdwan.replacen(from, to, 1));
            let e = Config::parse(&text).unwrap_err();
            assert!(e.contains(want), "{to}: {e}");
        }
        // The ADDR:PORT error, whole (`text::addr_port_field`).
        for bad in ["198.51.100.10", "198.51.100.10:0", "controller:23456"] {
            let text = format!("{BASE}{}", sdwan.replacen("198.51.100.10:23456", bad, 1));
            assert_eq!(
                Config::parse(&text).unwrap_err(),
                format!(
                    "line 12: field `sdwan.controller` = {bad:?}: give the controller's ADDR:PORT, e.g. \"198.51.100.10:23456\""
                )
            );
        }
        // Two TLOCs of one color.
        let e = Config::parse(&format!(
            "{BASE}{sdwan}[[sdwan.tloc]]\ncolor = \"biz-internet\"\naddress = \"198.51.100.21\"\nport_offset = 1\n"
        ))
        .unwrap_err();
        assert!(e.contains("already configured"), "{e}");
        // No TLOC at all.
        let e = Config::parse(&format!(
            "{BASE}{}",
            sdwan.split("[[sdwan.tloc]]").next().unwrap()
        ))
        .unwrap_err();
        assert!(e.contains("[[sdwan.tloc]]"), "{e}");
    }
}
