//! Config text: TOML with the line of an error, the `node` and `socket`
//! fields every config starts with, ADDR:PORT fields, line numbers, hex
//! keys.
use std::{net::SocketAddr, path::PathBuf};

use toml::Spanned;

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

/// An ADDR:PORT field (a port 1-65535): the error is `line N: field
/// `FIELD` = "VALUE": HINT`.
pub(crate) fn addr_port_field(
    v: &Spanned<String>,
    field: &str,
    hint: &str,
    at: &dyn Fn(std::ops::Range<usize>) -> usize,
) -> Result<SocketAddr, String> {
    match v.get_ref().parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(format!(
            "line {}: field `{field}` = {:?}: {hint}",
            at(v.span()),
            v.get_ref()
        )),
    }
}

/// Decode hex digits (an optional 0x prefix, no separators) into zeroizing bytes.
pub(super) fn decode_hex(s: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
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
