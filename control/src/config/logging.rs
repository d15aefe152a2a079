//! The `[logging]` section (remote syslog, run by `crate::syslog`).
use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

/// The wire format of the lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// RFC 3164 / IOS layout.
    Rfc3164,
    /// RFC 5424.
    Rfc5424,
}

/// A validated `[logging]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingConfig {
    /// The collector.
    pub host: SocketAddr,
    /// Syslog facility number (local7 = 23).
    pub facility: u8,
    /// Wire format.
    pub format: Format,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogging {
    host: Spanned<String>,
    #[serde(default)]
    facility: Option<Spanned<String>>,
    #[serde(default)]
    format: Option<Spanned<String>>,
}

/// Validate `[logging]`.
pub(crate) fn parse_logging(
    l: &Spanned<RawLogging>,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
) -> Result<LoggingConfig, String> {
    let r = l.get_ref();
    let h = r.host.get_ref();
    let host = h
        .parse::<SocketAddr>()
        .or_else(|_| h.parse::<std::net::IpAddr>().map(|a| SocketAddr::new(a, 514)))
        .map_err(|_| {
            format!(
                "line {}: field `logging.host` = {h:?}: give the collector's ADDR or ADDR:PORT (port 514 by default)",
                at(r.host.span())
            )
        })?;
    let facility = match &r.facility {
        None => 23,
        Some(f) => {
            let name = f.get_ref();
            let n = match name.as_str() {
                "kern" => Some(0),
                "user" => Some(1),
                "daemon" => Some(3),
                "auth" => Some(4),
                "syslog" => Some(5),
                _ => name
                    .strip_prefix("local")
                    .and_then(|d| d.parse::<u8>().ok())
                    .filter(|d| *d <= 7)
                    .map(|d| 16 + d),
            };
            n.ok_or_else(|| {
                format!(
                    "line {}: field `logging.facility` = {name:?}: give local0 .. local7 (IOS's default local7), daemon, user, ...",
                    at(f.span())
                )
            })?
        }
    };
    let format = match r.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("rfc3164", _)) => Format::Rfc3164,
        Some(("rfc5424", _)) => Format::Rfc5424,
        Some((other, span)) => {
            return Err(format!(
                "line {}: field `logging.format` = {other:?}: give \"rfc3164\" (the default, IOS's layout) or \"rfc5424\"",
                at(span)
            ));
        }
    };
    Ok(LoggingConfig {
        host,
        facility,
        format,
    })
}
