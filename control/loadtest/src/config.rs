//! The load tester's configuration file: `node`, `state_dir`,
//! `[underlay]` as for `xdpsec run`, and a `[loadtest]` section with the
//! keys of a `kind = "ike"` tunnel plus the address ranges (README,
//! "xdpsec loadtest").
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use xdpsec_ike::{
    EspProposal, Identity, IkeOffer, IkeProposal, PeerConfig, Prefix, cert::Credentials,
};
use xdpsec_platform::XdpAttach;
use zeroize::Zeroizing;

/// Default IKE SA lifetime, as a `kind = "ike"` tunnel's (86400 s).
const DEFAULT_IKE_LIFETIME: u64 = 86400;
/// Default child SA lifetime, as a `kind = "ike"` tunnel's (3600 s).
const DEFAULT_CHILD_LIFETIME: u64 = 3600;

#[derive(Deserialize)]
struct RawFile {
    #[allow(dead_code)]
    node: Option<String>,
    #[allow(dead_code)]
    state_dir: Option<String>,
    underlay: RawUnderlay,
    loadtest: RawLoadtest,
}

#[derive(Deserialize)]
struct RawUnderlay {
    interface: String,
    address: Option<String>,
    xdp_mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoadtest {
    gateway: String,
    source_range: Option<String>,
    source_port_range: Option<String>,
    inside_range: String,
    gateway_subnets: Vec<String>,
    psk: Option<String>,
    psk_file: Option<String>,
    auth: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    ca_file: Option<String>,
    ike_proposals: Option<Vec<String>>,
    esp_proposals: Option<Vec<String>>,
    local_id: Option<String>,
    remote_id: Option<String>,
    encap: Option<String>,
    ike_lifetime_seconds: Option<u64>,
    lifetime_seconds: Option<u64>,
    dpd_seconds: Option<u64>,
    dpd_retry_seconds: Option<u64>,
    nat_t_port: Option<u16>,
}

/// An address range `ADDR/LEN`; peer `n` (from 0) gets its address `n + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The range's first (network) address.
    pub base: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Range {
    /// Parse `ADDR/LEN`; the address is masked to the prefix.
    pub fn parse(s: &str) -> Result<Range> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("{s:?}: give ADDR/LEN"))?;
        let addr: IpAddr = a.parse().map_err(|_| anyhow!("{s:?}: bad address"))?;
        let len: u8 = l.parse().map_err(|_| anyhow!("{s:?}: bad prefix length"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if len > bits {
            bail!("{s:?}: prefix length above {bits}");
        }
        let base = match addr {
            IpAddr::V4(v) => {
                let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                IpAddr::V4(Ipv4Addr::from(u32::from(v) & m))
            }
            IpAddr::V6(v) => {
                let m = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(v) & m))
            }
        };
        Ok(Range { base, len })
    }

    /// How many peers the range has room for: every address but the first
    /// (and, for IPv4, the last, the broadcast address); capped at 2^32.
    pub fn capacity(&self) -> u64 {
        let host_bits = if self.base.is_ipv4() { 32 } else { 128 } - u32::from(self.len);
        let all = if host_bits >= 32 {
            1u64 << 32
        } else {
            1u64 << host_bits
        };
        let reserved = if self.base.is_ipv4() { 2 } else { 1 };
        all.saturating_sub(reserved)
    }

    /// Peer `n`'s address (the range's address `n + 1`), if the range has it.
    pub fn nth(&self, n: u64) -> Option<IpAddr> {
        if n >= self.capacity() {
            return None;
        }
        Some(match self.base {
            IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(u32::from(v) + n as u32 + 1)),
            IpAddr::V6(v) => IpAddr::V6(Ipv6Addr::from(u128::from(v) + u128::from(n) + 1)),
        })
    }
}

/// How the load tester's child SAs carry ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// ESP in UDP on the NAT-T port, forced (RFC 3948).
    Udp,
    /// Plain ESP unless a NAT is detected.
    Esp,
}

/// Where the emulated peers send from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// `source_range`: peer `n` has the range's address `n + 1`, ports
    /// 500 and the NAT-T port.
    Addrs(Range),
    /// `source_port_range = "FIRST-LAST"`: every peer sends from `addr`
    /// (`[underlay] address`), peer `n` from port `first + n` (IKE, then
    /// NAT-T and ESP in UDP on the same port): the gateway sees N peers
    /// behind one NAT.
    Ports {
        /// The peers' one address.
        addr: IpAddr,
        /// Peer 0's port.
        first: u16,
        /// How many ports.
        count: u64,
    },
}

impl Sources {
    /// How many peers it has room for.
    pub fn capacity(&self) -> u64 {
        match self {
            Sources::Addrs(r) => r.capacity(),
            Sources::Ports { count, .. } => *count,
        }
    }

    /// Peer `n`'s source address and, in port mode, its port.
    pub fn nth(&self, n: u64) -> Option<(IpAddr, Option<u16>)> {
        match self {
            Sources::Addrs(r) => r.nth(n).map(|a| (a, None)),
            Sources::Ports { addr, first, count } => {
                (n < *count).then(|| (*addr, Some(*first + n as u16)))
            }
        }
    }
}

/// `dpd_retry_seconds`: IOS's range, and only with `dpd_seconds` > 0.
fn dpd_retry(dpd: Option<u64>, retry: Option<u64>) -> Result<Option<Duration>> {
    use xdpsec_ike::timers::{DPD_RETRY_SECONDS as R, DpdRetryRefused};
    let Some(r) = retry else {
        return Ok(None);
    };
    match xdpsec_ike::timers::dpd_retry(dpd.unwrap_or(0), i64::try_from(r).unwrap_or(i64::MAX)) {
        Ok(d) => Ok(Some(d)),
        Err(DpdRetryRefused::NoDpd) => bail!(
            "loadtest.dpd_retry_seconds needs loadtest.dpd_seconds > 0 (the retry interval of DPD's liveness checks)"
        ),
        Err(DpdRetryRefused::OutOfRange) => bail!(
            "loadtest.dpd_retry_seconds = {r}: give {} to {} seconds (IOS's DPD retry interval)",
            R.start(),
            R.end()
        ),
    }
}

/// Parse `source_port_range` (`FIRST-LAST`, inclusive): not 0, not 500
/// nor the NAT-T port (the gateway's ports; the peers' cores think they
/// use those).
fn port_range(s: &str, nat_t_port: u16) -> Result<(u16, u64)> {
    let bad = || anyhow!("loadtest.source_port_range {s:?}: give FIRST-LAST, ports 1 to 65535");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let first: u16 = a.trim().parse().map_err(|_| bad())?;
    let last: u16 = b.trim().parse().map_err(|_| bad())?;
    if first == 0 || last < first {
        return Err(bad());
    }
    for p in [xdpsec_ike::IKE_PORT, nat_t_port] {
        if (first..=last).contains(&p) {
            bail!(
                "loadtest.source_port_range {s:?} includes port {p} (IKE's or NAT-T's): give other ports"
            );
        }
    }
    Ok((first, u64::from(last - first) + 1))
}

/// A parsed load test configuration.
#[derive(Debug)]
pub struct LoadtestConfig {
    /// The underlay interface the source addresses go on.
    pub interface: String,
    /// How the XDP program goes on it with `--traffic`
    /// (`underlay.xdp_mode`, as for `xdpsec run`: "driver", the default,
    /// or "generic").
    pub xdp_mode: XdpAttach,
    /// The gateway's IKE address.
    pub gateway: IpAddr,
    /// One source address (or one source port) per emulated peer.
    pub sources: Sources,
    /// One inside address (its traffic selector) per emulated peer.
    pub inside_range: Range,
    /// The remote traffic selectors; traffic goes to the first one's first address.
    pub gateway_subnets: Vec<Prefix>,
    auth: Auth,
    ike_proposals: Vec<IkeProposal>,
    esp_proposals: Vec<EspProposal>,
    local_id: Option<String>,
    remote_id: Option<String>,
    /// ESP encapsulation.
    pub encap: Encap,
    ike_lifetime: Duration,
    child_lifetime: Duration,
    dpd: Option<Duration>,
    /// The DPD retry interval (`dpd_retry_seconds`; None: the default schedule).
    dpd_retry: Option<Duration>,
    /// The NAT-T port, ours and the gateway's.
    pub nat_t_port: u16,
}

/// A peer's pre-shared key (empty with certificates) and certificate
/// credentials.
type PeerCredentials = (Zeroizing<Vec<u8>>, Option<Arc<Credentials>>);

/// How the emulated peers authenticate (`auth`).
enum Auth {
    /// `psk` or `psk_file`: one key for all.
    Psk(Zeroizing<Vec<u8>>),
    /// `auth = "cert"`, `cert_file` and `key_file` without `{n}`: one
    /// certificate for every peer.
    Cert(Arc<Credentials>),
    /// `auth = "cert"`, `{n}` in `cert_file` and `key_file`: peer `n`'s
    /// own certificate and key, read when its configuration is made; the
    /// CAs (`ca_file`) of all.
    PerPeer {
        cert_file: String,
        key_file: String,
        ca_pem: Vec<u8>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Psk(_) => f.write_str("Psk(..)"),
            Auth::Cert(c) => f.debug_tuple("Cert").field(c).finish(),
            Auth::PerPeer {
                cert_file,
                key_file,
                ..
            } => write!(f, "PerPeer({cert_file:?}, {key_file:?})"),
        }
    }
}

/// An identity as a `kind = "ike"` tunnel's `local_id` is read
/// ([`Identity::from_config`]: an address, a DN, an email, else an FQDN).
pub fn identity(s: &str) -> Identity {
    Identity::from_config(s)
}

/// Refuse a `local_id`/`remote_id` with `=` that is no DN, as the daemon does.
fn check_dn(field: &str, v: &Option<String>) -> Result<()> {
    if let Some(v) = v
        && v.contains('=')
        && let Err(e) = xdpsec_ike::cert::dn_from_text(v)
    {
        bail!("loadtest.{field} = {v:?} is not a distinguished name: {e}");
    }
    Ok(())
}

/// Certificate credentials from `cert_file` and `key_file` (mode 0600, as
/// the daemon's) and the CAs' PEM.
fn load_credentials(cert_file: &str, key_file: &str, ca_pem: &[u8]) -> Result<Credentials> {
    let cert_pem = std::fs::read(cert_file)
        .with_context(|| format!("loadtest.cert_file {cert_file:?}: cannot read it"))?;
    let key_pem = read_key_file("key_file", key_file)?;
    Credentials::from_pem(&cert_pem, &key_pem, ca_pem)
        .map_err(|e| anyhow!("loadtest (auth = \"cert\", {cert_file:?} and {key_file:?}): {e}"))
}

/// Read and check the certificate keys of `auth = "cert"` (`l`'s
/// `cert_file`, `key_file`, `ca_file`; no `psk`/`psk_file`).
fn cert_auth(l: &RawLoadtest) -> Result<Auth> {
    if l.psk.is_some() || l.psk_file.is_some() {
        bail!("loadtest.auth = \"cert\": no psk or psk_file with it");
    }
    let need = |v: &Option<String>, f: &str| {
        v.clone()
            .ok_or_else(|| anyhow!("loadtest.auth = \"cert\" needs loadtest.{f}"))
    };
    let (cert_file, key_file, ca_file) = (
        need(&l.cert_file, "cert_file")?,
        need(&l.key_file, "key_file")?,
        need(&l.ca_file, "ca_file")?,
    );
    let ca_pem = std::fs::read(&ca_file)
        .with_context(|| format!("loadtest.ca_file {ca_file:?}: cannot read it"))?;
    match (cert_file.contains("{n}"), key_file.contains("{n}")) {
        (false, false) => Ok(Auth::Cert(Arc::new(load_credentials(
            &cert_file, &key_file, &ca_pem,
        )?))),
        (true, true) => Ok(Auth::PerPeer {
            cert_file,
            key_file,
            ca_pem,
        }),
        _ => bail!(
            "loadtest.cert_file and loadtest.key_file: give {{n}} in both (each peer its own certificate and key) or in neither (one for all)"
        ),
    }
}

/// Read a key file (`psk_file`, `key_file`) as the daemon does: a regular
/// file of mode 0600 or stricter; one trailing newline is not part of it.
fn read_key_file(field: &str, path: &str) -> Result<Zeroizing<Vec<u8>>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("loadtest.{field} {path:?}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_file() || mode & 0o077 != 0 {
        bail!(
            "loadtest.{field} {path:?}: mode {mode:04o}: a key file must be readable by its owner only (chmod 600)"
        );
    }
    let mut key =
        Zeroizing::new(std::fs::read(path).with_context(|| format!("loadtest.{field} {path:?}"))?);
    if key.ends_with(b"\n") {
        key.pop();
    }
    if key.is_empty() {
        bail!("loadtest.{field} {path:?} is empty");
    }
    Ok(key)
}

impl LoadtestConfig {
    /// Read and check the file.
    pub fn load(path: &Path) -> Result<LoadtestConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    /// Parse and check the text of a config file.
    pub fn parse(text: &str) -> Result<LoadtestConfig> {
        let raw: RawFile = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let l = raw.loadtest;
        let gateway: IpAddr = l
            .gateway
            .parse()
            .map_err(|_| anyhow!("loadtest.gateway {:?}: not an address", l.gateway))?;
        let nat_t_port = l.nat_t_port.unwrap_or(xdpsec_ike::NAT_T_PORT);
        let sources = match (&l.source_range, &l.source_port_range) {
            (Some(r), None) => {
                let r = Range::parse(r).context("loadtest.source_range")?;
                if r.base.is_ipv4() != gateway.is_ipv4() {
                    bail!(
                        "loadtest.source_range and loadtest.gateway: give addresses of one family"
                    );
                }
                Sources::Addrs(r)
            }
            (None, Some(p)) => {
                let (first, count) = port_range(p, nat_t_port)?;
                let a = raw.underlay.address.as_deref().ok_or_else(|| {
                    anyhow!("loadtest.source_port_range: give [underlay] address (the peers' one source address)")
                })?;
                let addr: IpAddr = a
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|_| anyhow!("underlay.address {a:?}: not an address"))?;
                if addr.is_ipv4() != gateway.is_ipv4() {
                    bail!("underlay.address and loadtest.gateway: give addresses of one family");
                }
                let own_cert = l.auth.as_deref() == Some("cert")
                    && l.cert_file.as_deref().is_some_and(|c| c.contains("{n}"));
                if !own_cert && !l.local_id.as_deref().is_some_and(|i| i.contains("{n}")) {
                    bail!(
                        "loadtest.local_id: with source_port_range the peers share one address; give an identity pattern with {{n}} (e.g. \"peer{{n}}.lt.example\") so each has its own (or, with auth = \"cert\", {{n}} in cert_file and key_file: each its own certificate)"
                    );
                }
                Sources::Ports { addr, first, count }
            }
            (Some(_), Some(_)) => {
                bail!("loadtest: give source_range or source_port_range, not both")
            }
            (None, None) => bail!(
                "loadtest: give source_range (one address per peer) or source_port_range (one port per peer)"
            ),
        };
        let inside_range = Range::parse(&l.inside_range).context("loadtest.inside_range")?;
        let gateway_subnets = l
            .gateway_subnets
            .iter()
            .map(|s| {
                let r = Range::parse(s).context("loadtest.gateway_subnets")?;
                Ok(Prefix {
                    addr: r.base,
                    len: r.len,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if gateway_subnets.is_empty() {
            bail!("loadtest.gateway_subnets is empty: give the gateway's inside prefix");
        }
        check_dn("local_id", &l.local_id)?;
        check_dn("remote_id", &l.remote_id)?;
        let auth = match l.auth.as_deref() {
            None | Some("psk") => {
                if let Some(f) = [
                    ("cert_file", &l.cert_file),
                    ("key_file", &l.key_file),
                    ("ca_file", &l.ca_file),
                ]
                .iter()
                .find_map(|(f, v)| v.as_ref().map(|_| f))
                {
                    bail!("loadtest.{f} needs auth = \"cert\"");
                }
                Auth::Psk(match (&l.psk, &l.psk_file) {
                    (Some(_), Some(_)) => bail!("loadtest: give psk or psk_file, not both"),
                    (Some(p), None) if p.is_empty() => bail!("loadtest.psk is empty"),
                    (Some(p), None) => Zeroizing::new(p.as_bytes().to_vec()),
                    (None, Some(f)) => read_key_file("psk_file", f)?,
                    (None, None) => bail!("loadtest: give psk or psk_file (or auth = \"cert\")"),
                })
            }
            Some("cert") => cert_auth(&l)?,
            Some(a) => bail!("loadtest.auth = {a:?}: give \"psk\" or \"cert\""),
        };
        let ike_proposals = l
            .ike_proposals
            .clone()
            .unwrap_or_else(|| vec![IkeOffer::IOS_DEFAULT.to_string()])
            .iter()
            .map(|p| IkeOffer::parse(p).map(|o| o.expand()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("loadtest.ike_proposals: {}", e.0))?
            .concat();
        let esp_proposals = l
            .esp_proposals
            .clone()
            .unwrap_or_else(|| vec![EspProposal::IOS_DEFAULT.to_string()])
            .iter()
            .map(|p| EspProposal::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("loadtest.esp_proposals: {}", e.0))?;
        if ike_proposals.is_empty() || esp_proposals.is_empty() {
            bail!("loadtest.ike_proposals and esp_proposals: give at least one proposal");
        }
        let encap = match l.encap.as_deref() {
            None | Some("udp") => Encap::Udp,
            Some("esp") => Encap::Esp,
            Some(e) => bail!("loadtest.encap = {e:?}: give \"udp\" or \"esp\""),
        };
        let xdp_mode = match raw.underlay.xdp_mode.as_deref() {
            None | Some("driver") => XdpAttach::Driver,
            Some("generic") => XdpAttach::Generic,
            Some(m) => {
                bail!("underlay.xdp_mode = {m:?}: give \"driver\" (the default) or \"generic\"")
            }
        };
        let c = LoadtestConfig {
            interface: raw.underlay.interface,
            xdp_mode,
            gateway,
            sources,
            inside_range,
            gateway_subnets,
            auth,
            ike_proposals,
            esp_proposals,
            local_id: l.local_id,
            remote_id: l.remote_id,
            encap,
            ike_lifetime: Duration::from_secs(
                l.ike_lifetime_seconds.unwrap_or(DEFAULT_IKE_LIFETIME),
            ),
            child_lifetime: Duration::from_secs(
                l.lifetime_seconds.unwrap_or(DEFAULT_CHILD_LIFETIME),
            ),
            dpd: l.dpd_seconds.filter(|s| *s > 0).map(Duration::from_secs),
            dpd_retry: dpd_retry(l.dpd_seconds, l.dpd_retry_seconds)?,
            nat_t_port,
        };
        // With certificates peer 0 is made now: its certificate read and
        // its identity checked against it (peer n's when the run makes
        // it, before the first exchange).
        if !matches!(c.auth, Auth::Psk(_)) {
            c.peer(0)?;
        }
        Ok(c)
    }

    /// How many peers the ranges have room for.
    pub fn capacity(&self) -> u64 {
        self.sources.capacity().min(self.inside_range.capacity())
    }

    /// Peer `n`'s inside address.
    pub fn inside(&self, n: u64) -> Result<IpAddr> {
        self.inside_range
            .nth(n)
            .ok_or_else(|| anyhow!("loadtest.inside_range has no room for peer {n}"))
    }

    /// Peer `n`'s pre-shared key (empty with certificates) and
    /// certificate credentials (with `{n}` in `cert_file`: read now).
    fn credentials(&self, n: u64) -> Result<PeerCredentials> {
        Ok(match &self.auth {
            Auth::Psk(k) => (k.clone(), None),
            Auth::Cert(c) => (Zeroizing::new(Vec::new()), Some(c.clone())),
            Auth::PerPeer {
                cert_file,
                key_file,
                ca_pem,
            } => {
                let n = n.to_string();
                let c = load_credentials(
                    &cert_file.replace("{n}", &n),
                    &key_file.replace("{n}", &n),
                    ca_pem,
                )?;
                (Zeroizing::new(Vec::new()), Some(Arc::new(c)))
            }
        })
    }

    /// Peer `n`'s source address, inside address and IKE configuration.
    pub fn peer(&self, n: u64) -> Result<(IpAddr, IpAddr, PeerConfig)> {
        let (source, _) = self
            .sources
            .nth(n)
            .ok_or_else(|| anyhow!("loadtest.source_range has no room for peer {n}"))?;
        let inside = self.inside(n)?;
        let (psk, cert) = self.credentials(n)?;
        let local_id = match (&self.local_id, &cert) {
            (Some(p), _) => identity(&p.replace("{n}", &n.to_string())),
            // With a certificate, as a `kind = "ike"` tunnel: its subject DN.
            (None, Some(c)) => Identity::Dn(c.subject_der()),
            (None, None) => Identity::Addr(source),
        };
        if let Some(c) = &cert {
            c.proves(&local_id).map_err(|e| {
                anyhow!("loadtest.local_id of peer {n}: its certificate does not carry it: {e}")
            })?;
        }
        let remote_id = self
            .remote_id
            .as_deref()
            .map_or(Identity::Addr(self.gateway), identity);
        let host = if inside.is_ipv4() { 32 } else { 128 };
        let cfg = PeerConfig {
            tunnel: format!("peer{n}"),
            tunnel_index: 0,
            local: source,
            remote: self.gateway,
            psk,
            cert,
            local_id,
            remote_id,
            ike_proposals: self.ike_proposals.clone(),
            esp_proposals: self.esp_proposals.clone(),
            ike_lifetime: self.ike_lifetime,
            child_lifetime: self.child_lifetime,
            dpd: self.dpd,
            dpd_retry: self.dpd_retry,
            initiate: true,
            force_encap: self.encap == Encap::Udp,
            nat_t_port: self.nat_t_port,
            local_ts: vec![Prefix {
                addr: inside,
                len: host,
            }],
            remote_ts: self.gateway_subnets.clone(),
            replay_window: 64,
            invalid_spi_recovery: false,
            fragmentation: true,
            fragment_size: xdpsec_ike::frag::DEFAULT_FRAGMENT_SIZE,
        };
        Ok((source, inside, cfg))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
node = "lt"
state_dir = "/var/lib/xdpsec/lt"
[underlay]
interface = "eth0"
address = "2001:db8::2"
[loadtest]
gateway = "2001:db8::1"
source_range = "2001:db8::1000/116"
inside_range = "2001:db8:1::/64"
gateway_subnets = ["2001:db8:2::/64"]
psk = "secret"
ike_proposals = ["aes256gcm16-prfsha256-x25519"]
esp_proposals = ["aes256gcm16"]
local_id = "peer{n}.lt.example"
encap = "udp"
"#;

    /// Each `(from, to, why)`: `text` with `from` replaced by `to` is
    /// refused with an error that says `why`.
    fn refused(text: &str, cases: &[(&str, &str, &str)]) {
        for (from, to, why) in cases {
            let e = LoadtestConfig::parse(&text.replace(from, to))
                .err()
                .unwrap_or_else(|| panic!("{to:?} accepted"));
            assert!(format!("{e:#}").contains(why), "{to}: {e:#}");
        }
    }

    #[test]
    fn the_issues_example_parses() {
        let c = LoadtestConfig::parse(EXAMPLE).unwrap();
        assert_eq!(c.interface, "eth0");
        assert_eq!(c.xdp_mode, XdpAttach::Driver);
        let g = EXAMPLE.replace(
            "interface = \"eth0\"",
            "interface = \"eth0\"\nxdp_mode = \"generic\"",
        );
        assert_eq!(
            LoadtestConfig::parse(&g).unwrap().xdp_mode,
            XdpAttach::Generic
        );
        refused(
            &g,
            &[(
                "\"generic\"",
                "\"native\"",
                "underlay.xdp_mode = \"native\": give \"driver\"",
            )],
        );
        assert_eq!(c.capacity(), 4095);
        let (src, inside, p) = c.peer(0).unwrap();
        assert_eq!(src, "2001:db8::1001".parse::<IpAddr>().unwrap());
        assert_eq!(inside, "2001:db8:1::1".parse::<IpAddr>().unwrap());
        assert_eq!(p.local_id, Identity::Fqdn("peer0.lt.example".into()));
        assert_eq!(p.remote_id, Identity::Addr("2001:db8::1".parse().unwrap()));
        assert_eq!(p.local_ts[0].len, 128);
        assert!(p.force_encap);
        let (src, _, p) = c.peer(4094).unwrap();
        assert_eq!(src, "2001:db8::1fff".parse::<IpAddr>().unwrap());
        assert_eq!(p.local_id, Identity::Fqdn("peer4094.lt.example".into()));
        assert!(c.peer(4095).is_err());
    }

    #[test]
    fn source_ports_give_each_peer_its_own_port() {
        let text = EXAMPLE.replace(
            "source_range = \"2001:db8::1000/116\"",
            "source_port_range = \"20000-20999\"",
        );
        let c = LoadtestConfig::parse(&text).unwrap();
        assert_eq!(c.capacity(), 1000);
        let a: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(c.sources.nth(0), Some((a, Some(20000))));
        assert_eq!(c.sources.nth(999), Some((a, Some(20999))));
        assert_eq!(c.sources.nth(1000), None);
        let (src, _, p) = c.peer(7).unwrap();
        assert_eq!((src, p.local), (a, a));
        assert_eq!(p.local_id, Identity::Fqdn("peer7.lt.example".into()));
        refused(
            &text,
            &[
                ("20000-20999", "20999-20000", "FIRST-LAST"),
                ("20000-20999", "0-10", "FIRST-LAST"),
                ("20000-20999", "400-600", "port 500"),
                ("20000-20999", "4000-5000", "port 4500"),
                ("20000-20999", "x", "FIRST-LAST"),
                ("local_id = \"peer{n}.lt.example\"", "", "local_id"),
                ("address = \"2001:db8::2\"", "", "[underlay] address"),
                (
                    "source_port_range",
                    "source_range = \"2001:db8::1000/116\"\nsource_port_range",
                    "not both",
                ),
            ],
        );
        let none = EXAMPLE.replace("source_range = \"2001:db8::1000/116\"", "");
        let e = LoadtestConfig::parse(&none).err().unwrap();
        assert!(format!("{e:#}").contains("source_port_range"), "{e:#}");
    }

    #[test]
    fn ipv4_ranges_skip_network_and_broadcast() {
        let r = Range::parse("198.51.100.77/24").unwrap();
        assert_eq!(r.base, "198.51.100.0".parse::<IpAddr>().unwrap());
        assert_eq!(r.capacity(), 254);
        assert_eq!(r.nth(0), Some("198.51.100.1".parse().unwrap()));
        assert_eq!(r.nth(253), Some("198.51.100.254".parse().unwrap()));
        assert_eq!(r.nth(254), None);
    }

    #[test]
    fn mistakes_are_refused() {
        refused(
            EXAMPLE,
            &[
                ("encap = \"udp\"", "encap = \"gre\"", "encap"),
                ("psk = \"secret\"", "", "psk"),
                (
                    "gateway = \"2001:db8::1\"",
                    "gateway = \"198.51.100.1\"",
                    "family",
                ),
                (
                    "esp_proposals = [\"aes256gcm16\"]",
                    "esp_proposals = [\"rot13\"]",
                    "esp_proposals",
                ),
                (
                    "encap = \"udp\"",
                    "encap = \"udp\"\ntypo = 1",
                    "unknown field",
                ),
            ],
        );
    }

    /// `dpd_retry_seconds`: the peers' cores get it; out of IOS's 2 to 60
    /// or without `dpd_seconds` it is refused, naming the field.
    #[test]
    fn dpd_retry_seconds_reaches_the_peers() {
        let e = "encap = \"udp\"";
        let text = EXAMPLE.replace(e, &format!("{e}\ndpd_seconds = 10\ndpd_retry_seconds = 2"));
        let (_, _, p) = LoadtestConfig::parse(&text).unwrap().peer(3).unwrap();
        assert_eq!(p.dpd, Some(Duration::from_secs(10)));
        assert_eq!(p.dpd_retry, Some(Duration::from_secs(2)));
        let (_, _, p) = LoadtestConfig::parse(EXAMPLE).unwrap().peer(0).unwrap();
        assert_eq!((p.dpd, p.dpd_retry), (None, None));
        let retry = "dpd_retry_seconds = 2";
        refused(
            &text,
            &[
                (
                    retry,
                    "dpd_retry_seconds = 1",
                    "loadtest.dpd_retry_seconds = 1: give 2 to 60",
                ),
                (
                    retry,
                    "dpd_retry_seconds = 61",
                    "loadtest.dpd_retry_seconds = 61: give 2 to 60",
                ),
                (
                    "dpd_seconds = 10",
                    "",
                    "loadtest.dpd_retry_seconds needs loadtest.dpd_seconds",
                ),
                (
                    "dpd_seconds = 10",
                    "dpd_seconds = 0",
                    "loadtest.dpd_retry_seconds needs",
                ),
            ],
        );
    }

    /// A CA (`ca.crt`), another CA (`other.crt`) and leaves of the first
    /// `peer0`, `peer1` (`peerK.crt`, `peerK.key` mode 0600; subject
    /// `O=lt, CN=peerK`, SAN `peerK.lt.example`), ECDSA P-256, in a fresh
    /// directory (`xdpsec_testenv::pki`, the openssl command's).
    pub(crate) fn pki(name: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        use xdpsec_testenv::pki;
        let d = std::env::temp_dir().join(format!("xdpsec-lt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        pki::keys(&d, "p256", &["ca", "other", "peer0", "peer1"]);
        for ca in ["ca", "other"] {
            pki::ca(&d, ca);
        }
        for k in 0..2 {
            let peer = format!("peer{k}");
            std::fs::set_permissions(
                d.join(format!("{peer}.key")),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            pki::leaf(
                &d,
                &peer,
                &format!("/O=lt/CN={peer}"),
                &format!("subjectAltName=DNS:{peer}.lt.example\nkeyUsage=digitalSignature\n"),
                "ca",
                2,
            );
        }
        d
    }

    /// The issue's example with `auth = "cert"` and the files `cert`,
    /// `key` in `d` (the CA `ca.crt`), without `local_id`.
    fn cert_config(d: &Path, cert: &str, key: &str) -> String {
        let d = d.display();
        EXAMPLE
            .replace("local_id = \"peer{n}.lt.example\"\n", "")
            .replace(
                "psk = \"secret\"",
                &format!(
                    "auth = \"cert\"\ncert_file = \"{d}/{cert}\"\nkey_file = \"{d}/{key}\"\nca_file = \"{d}/ca.crt\""
                ),
            )
    }

    fn dn(s: &str) -> Identity {
        Identity::Dn(xdpsec_ike::cert::dn_from_text(s).unwrap())
    }

    #[test]
    fn one_certificate_for_every_peer() {
        let d = pki("one");
        let text = cert_config(&d, "peer0.crt", "peer0.key");
        let c = LoadtestConfig::parse(&text).unwrap();
        let (_, _, p0) = c.peer(0).unwrap();
        let (_, _, p9) = c.peer(9).unwrap();
        // The same credentials; the identity its subject DN, as a
        // `kind = "ike"` tunnel's default; no PSK.
        assert!(std::sync::Arc::ptr_eq(
            p0.cert.as_ref().unwrap(),
            p9.cert.as_ref().unwrap()
        ));
        assert_eq!(p0.local_id, dn("O=lt, CN=peer0"));
        assert_eq!(p9.local_id, p0.local_id);
        assert!(p0.psk.is_empty());
        // local_id: one its certificate carries (its SAN), or refused.
        let with_san = text.replace(
            "encap = \"udp\"",
            "encap = \"udp\"\nlocal_id = \"peer0.lt.example\"",
        );
        let (_, _, p) = LoadtestConfig::parse(&with_san).unwrap().peer(3).unwrap();
        assert_eq!(p.local_id, Identity::Fqdn("peer0.lt.example".into()));
        for id in ["peer1.lt.example", "O=lt, CN=peer1"] {
            let t = text.replace(
                "encap = \"udp\"",
                &format!("encap = \"udp\"\nlocal_id = \"{id}\""),
            );
            let e = LoadtestConfig::parse(&t).err().unwrap();
            assert!(
                format!("{e:#}").contains("does not carry it"),
                "{id}: {e:#}"
            );
        }
        // A pattern: peer 0's identity is in the certificate, peer 1's not.
        let t = text.replace(
            "encap = \"udp\"",
            "encap = \"udp\"\nlocal_id = \"peer{n}.lt.example\"",
        );
        let c = LoadtestConfig::parse(&t).unwrap();
        let e = c.peer(1).err().unwrap();
        assert!(format!("{e:#}").contains("peer 1"), "{e:#}");
        // remote_id as the daemon reads it: a DN.
        let t = text.replace(
            "encap = \"udp\"",
            "encap = \"udp\"\nremote_id = \"O=gw, CN=gateway\"",
        );
        let (_, _, p) = LoadtestConfig::parse(&t).unwrap().peer(0).unwrap();
        assert_eq!(p.remote_id, dn("O=gw, CN=gateway"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn n_in_cert_file_gives_each_peer_its_own() {
        let d = pki("own");
        let text = cert_config(&d, "peer{n}.crt", "peer{n}.key");
        let c = LoadtestConfig::parse(&text).unwrap();
        let (_, _, p0) = c.peer(0).unwrap();
        let (_, _, p1) = c.peer(1).unwrap();
        assert_eq!(p0.local_id, dn("O=lt, CN=peer0"));
        assert_eq!(p1.local_id, dn("O=lt, CN=peer1"));
        // A pattern identity is checked against each peer's own certificate.
        let t = text.replace(
            "encap = \"udp\"",
            "encap = \"udp\"\nlocal_id = \"peer{n}.lt.example\"",
        );
        let c2 = LoadtestConfig::parse(&t).unwrap();
        assert_eq!(
            c2.peer(1).unwrap().2.local_id,
            Identity::Fqdn("peer1.lt.example".into())
        );
        // Peer 2 has no files: the error names the file.
        let e = c.peer(2).err().unwrap();
        assert!(format!("{e:#}").contains("peer2.crt"), "{e:#}");
        // Ports: each peer's own certificate is its own identity, enough.
        let ports = text.replace(
            "source_range = \"2001:db8::1000/116\"",
            "source_port_range = \"20000-20999\"",
        );
        assert!(LoadtestConfig::parse(&ports).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn certificate_mistakes_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = pki("bad");
        let text = cert_config(&d, "peer0.crt", "peer0.key");
        let ds = d.display().to_string();
        refused(
            &text,
            &[
                ("auth = \"cert\"", "auth = \"cert\"\npsk = \"x\"", "no psk"),
                (
                    &format!("ca_file = \"{ds}/ca.crt\""),
                    "",
                    "needs loadtest.ca_file",
                ),
                ("peer0.key", "peer1.key", "key_file"),
                ("peer0.key", "peer{n}.key", "in both"),
                ("peer0.crt", "nothere.crt", "loadtest.cert_file"),
                (
                    "auth = \"cert\"",
                    "auth = \"rsa\"",
                    "give \"psk\" or \"cert\"",
                ),
                (
                    "auth = \"cert\"",
                    "auth = \"cert\"\nremote_id = \"XX=gw\"",
                    "not a distinguished name",
                ),
                (
                    "source_range = \"2001:db8::1000/116\"",
                    "source_port_range = \"20000-20999\"",
                    "loadtest.local_id",
                ),
            ],
        );
        // The certificate keys without auth = "cert".
        let psk = EXAMPLE.replace(
            "psk = \"secret\"",
            &format!("psk = \"secret\"\nca_file = \"{ds}/ca.crt\""),
        );
        let e = LoadtestConfig::parse(&psk).err().unwrap();
        assert!(format!("{e:#}").contains("ca_file needs auth"), "{e:#}");
        // A key readable by others.
        std::fs::set_permissions(d.join("peer0.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = LoadtestConfig::parse(&text).err().unwrap();
        assert!(format!("{e:#}").contains("chmod 600"), "{e:#}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
