//! A tunnel's IKEv2 fields (`kind = "ike"`): proposals, lifetimes,
//! identities, the pre-shared key or certificates, and key files.

use toml::Spanned;

use super::{Cidr, IkeTemplate, IkeTunnel, RawTunnel, SecretText};

/// Default IKE SA lifetime (IOS IKEv2 profile default: 86400 s).
const DEFAULT_IKE_LIFETIME: u64 = 86400;
/// Default child SA lifetime (IOS `crypto ipsec security-association
/// lifetime seconds` default: 3600 s).
const DEFAULT_CHILD_LIFETIME: u64 = 3600;
/// Default proposals: IOS XE 17's smart defaults, so that a tunnel with
/// no proposals configured meets a router with none (the IKEv2 proposal
/// `default`; the transform set `default`, `esp-aes esp-sha-hmac`).
pub(super) const DEFAULT_IKE_PROPOSAL: &str = xdpsec_ike::IkeOffer::IOS_DEFAULT;
const DEFAULT_ESP_PROPOSAL: &str = xdpsec_ike::EspProposal::IOS_DEFAULT;

/// The `kind = "ike"` fields of a tunnel.
pub(super) fn parse_ike(
    t: &RawTunnel,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
    name: &str,
    nat_t_port: u16,
    range: Option<Cidr>,
) -> Result<IkeTunnel, String> {
    let template = parse_template(t, at, name, range)?;
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
    let dpd_retry = match &t.dpd_retry_seconds {
        None => None,
        Some(v) => {
            use xdpsec_ike::timers::{DPD_RETRY_SECONDS as R, DpdRetryRefused};
            match xdpsec_ike::timers::dpd_retry(dpd, *v.get_ref()) {
                Ok(d) => u8::try_from(d.as_secs()).ok(),
                Err(DpdRetryRefused::NoDpd) => {
                    return Err(format!(
                        "line {}: field `tunnel.dpd_retry_seconds` in tunnel {name} needs `dpd_seconds` > 0 (the retry interval of DPD's liveness checks)",
                        at(v.span())
                    ));
                }
                Err(DpdRetryRefused::OutOfRange) => {
                    return Err(format!(
                        "line {}: field `tunnel.dpd_retry_seconds` = {} in tunnel {name}: give {} to {} seconds (IOS's DPD retry interval)",
                        at(v.span()),
                        v.get_ref(),
                        R.start(),
                        R.end()
                    ));
                }
            }
        }
    };
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
        dpd_retry,
        initiate: t.initiate.as_ref().is_none_or(|v| *v.get_ref()),
        nat_t_port,
        invalid_spi_recovery: t
            .invalid_spi_recovery
            .as_ref()
            .is_some_and(|v| *v.get_ref()),
        fragmentation: t.fragmentation.as_ref().is_none_or(|v| *v.get_ref()),
        fragment_size,
        template: template.map(Box::new),
    })
}

/// The default `max_peers` of a template (at most its range's size).
pub const DEFAULT_MAX_PEERS: u32 = 1024;
/// The largest `max_peers`: each instance holds state (an IKE SA, child
/// SAs, a datapath index and next-hop slot) that a peer of the range
/// makes by authenticating.
pub const MAX_TEMPLATE_PEERS: u32 = 16384;

/// `peer_range`: a network address with its prefix length, of the
/// underlay's family.
pub(super) fn parse_peer_range(
    r: &Spanned<String>,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
    name: &str,
    local: std::net::IpAddr,
) -> Result<Cidr, String> {
    let bad = |why: &str| {
        format!(
            "line {}: field `tunnel.peer_range` = {:?} in tunnel {name}: {why}",
            at(r.span()),
            r.get_ref()
        )
    };
    let c: Cidr = r
        .get_ref()
        .parse()
        .map_err(|_| bad("give an IPv4 or IPv6 prefix, e.g. \"2001:db8::1000/116\""))?;
    if c.addr.is_ipv4() != local.is_ipv4() {
        return Err(bad(&format!(
            "not of the same family as underlay.address {local}"
        )));
    }
    if masked(c.addr, c.len) != masked(c.addr, if c.addr.is_ipv4() { 32 } else { 128 }) {
        return Err(bad("give the network address (no host bits set)"));
    }
    Ok(c)
}

/// `addr` with the bits beyond `len` cleared, as a u128.
pub(super) fn masked(addr: std::net::IpAddr, len: u8) -> u128 {
    match addr {
        std::net::IpAddr::V4(a) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u128::from(u32::from(a) & keep)
        }
        std::net::IpAddr::V6(a) => {
            u128::from(a)
                & u128::MAX
                    .checked_shl(128 - u32::from(len.min(128)))
                    .unwrap_or(0)
        }
    }
}

/// The number of addresses of `c` (saturating).
pub fn range_size(c: &Cidr) -> u64 {
    let bits = u32::from(if c.addr.is_ipv4() { 32 } else { 128 } - c.len);
    1u64.checked_shl(bits)
        .filter(|_| bits < 64)
        .unwrap_or(u64::MAX)
}

/// A template's `max_peers`, `initiate = false` and `remote_subnets`
/// (None without `peer_range`).
fn parse_template(
    t: &RawTunnel,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
    name: &str,
    range: Option<Cidr>,
) -> Result<Option<IkeTemplate>, String> {
    let Some(range) = range else {
        if let Some(m) = &t.max_peers {
            return Err(format!(
                "line {}: field `tunnel.max_peers` in tunnel {name} applies to a template (`peer_range`) only",
                at(m.span())
            ));
        }
        return Ok(None);
    };
    if t.initiate.as_ref().is_none_or(|v| *v.get_ref()) {
        let span = t.initiate.as_ref().map_or(t.name.span(), |v| v.span());
        return Err(format!(
            "line {}: field `tunnel.initiate` in tunnel {name}: a template (`peer_range`) only answers its peers: give initiate = false",
            at(span)
        ));
    }
    if t.remote_subnets
        .as_ref()
        .is_none_or(|l| l.get_ref().is_empty())
    {
        return Err(format!(
            "line {}: field `tunnel.remote_subnets` in tunnel {name}: a template (`peer_range`) needs it: the prefixes its peers' traffic selectors must fall within",
            at(t.name.span())
        ));
    }
    let size = range_size(&range);
    let most = size.min(u64::from(MAX_TEMPLATE_PEERS));
    let max_peers = match &t.max_peers {
        None => u64::from(DEFAULT_MAX_PEERS).min(size) as u32,
        Some(m) if (1..=most as i64).contains(m.get_ref()) => *m.get_ref() as u32,
        Some(m) => {
            return Err(format!(
                "line {}: field `tunnel.max_peers` = {} in tunnel {name}: give 1 to {most} (at most the {size} address(es) of peer_range {range} and at most {MAX_TEMPLATE_PEERS})",
                at(m.span()),
                m.get_ref()
            ));
        }
    };
    Ok(Some(IkeTemplate { range, max_peers }))
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

/// The identity a `local_id`/`remote_id` string names
/// ([`xdpsec_ike::Identity::from_config`], which the load tester shares).
pub fn ike_identity(v: &str) -> xdpsec_ike::Identity {
    xdpsec_ike::Identity::from_config(v)
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
