//! The SD-WAN edge's show commands: IOS text in the layouts Cisco's
//! genieparser iosxe parsers read, and the `--json` values. Pure functions
//! of plain row structs the owner fills from live state, so they are tested
//! without sockets (as `show::omp` does for the controller).
//!
//! Each function returns `(text, json)`. JSON field names are genieparser's
//! keys for that parser, flattened into lists of rows; durations carry a
//! `_seconds` suffix and are numbers where genie holds `D:HH:MM:SS` text.
//! Keys never appear: only `*****` and four hex digits of a SHA-256 of the
//! key ([`key_hash`]), as IOS shows them.
use std::fmt::Write;

/// One line of a table: each cell left-aligned to its column's width, one
/// space between columns, no trailing blanks. Headers and rows both go
/// through it so they stay aligned; a wider cell (an IPv6 address) pushes
/// the rest right but always keeps a blank before the next cell.
fn table_line(widths: &[usize], cells: &[&str]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let w = widths.get(i).copied().unwrap_or(0);
        let _ = write!(line, "{cell:<w$}");
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// The dashes under a header: as long as its longest line.
fn dashes(header: &str) -> String {
    let n = header.lines().map(str::len).max().unwrap_or(0);
    format!("{}\n", "-".repeat(n))
}

/// `*****` and the last four hex digits of the key's SHA-256, as IOS masks
/// an SA's key in `show sdwan ipsec outbound-connections` and `local-sa`:
/// enough to tell two keys apart, nothing about the key.
pub fn key_hash(key: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key);
    let d = d.as_ref();
    format!("*****{:02x}{:02x}", d[d.len() - 2], d[d.len() - 1])
}

mod bfd;
mod ipsec;
mod local_properties;
#[cfg(test)]
mod tests;
mod tunnel;

pub use bfd::{BfdSessionRow, BfdSummary, bfd_sessions, bfd_summary};
pub use ipsec::{
    InboundConnectionRow, LocalSaRow, OutboundConnectionRow, ipsec_inbound_connections,
    ipsec_local_sa, ipsec_outbound_connections,
};
pub use local_properties::{LocalProperties, LocalTlocRow, control_local_properties};
pub use tunnel::{TunnelStatisticsRow, tunnel_statistics};
