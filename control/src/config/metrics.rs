//! The `[metrics]` section (Prometheus `/metrics`, served by `crate::metrics`).
use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use crate::config::addr_port_field;

/// A validated `[metrics]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where `/metrics` is served.
    pub listen: SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    listen: Spanned<String>,
}

/// Validate `[metrics]`.
pub(crate) fn parse_metrics(
    m: &Spanned<RawMetrics>,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
) -> Result<MetricsConfig, String> {
    let listen = addr_port_field(
        &m.get_ref().listen,
        "metrics.listen",
        "give ADDR:PORT, e.g. \"198.51.100.1:9273\"",
        at,
    )?;
    Ok(MetricsConfig { listen })
}
