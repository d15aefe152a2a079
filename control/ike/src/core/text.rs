//! Text for log lines: identities, prefixes and traffic selectors,
//! network-supplied text escaped.

use std::net::IpAddr;

use crate::{
    Prefix,
    timers::LOG_TEXT_MAX,
    wire::{self, TsRepr},
};

pub(super) fn id_payload(id: &crate::Identity) -> (u8, Vec<u8>) {
    crate::cert::id_payload(id)
}

/// Addresses ordered as numbers (IPv4 before IPv6).
pub(super) fn addr_key(a: IpAddr) -> (u8, u128) {
    match a {
        IpAddr::V4(a) => (4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (6, u128::from(a)),
    }
}

pub(super) fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn id_text(t: u8, d: &[u8]) -> String {
    match (t, d.len()) {
        (wire::id_type::IPV4, 4) => {
            IpAddr::from(<[u8; 4]>::try_from(d).unwrap_or([0; 4])).to_string()
        }
        (wire::id_type::IPV6, 16) => {
            IpAddr::from(<[u8; 16]>::try_from(d).unwrap_or([0; 16])).to_string()
        }
        (wire::id_type::FQDN | wire::id_type::RFC822, _) => escape_text(d),
        (wire::id_type::DER_ASN1_DN, _) => {
            escape_text_max(crate::cert::dn_text(d).as_bytes(), 2 * LOG_TEXT_MAX)
        }
        _ => format!("(type {t}, {} bytes)", d.len()),
    }
}

/// Network-supplied text for a log line: printable ASCII as it is (a
/// backslash doubled), every other byte as `\xNN` (control characters,
/// terminal escapes, newlines that would forge log lines, invalid or
/// look-alike UTF-8), cut to [`LOG_TEXT_MAX`] characters.
pub(super) fn escape_text(d: &[u8]) -> String {
    escape_text_max(d, LOG_TEXT_MAX)
}

/// [`escape_text`], cut to `max` characters.
pub(super) fn escape_text_max(d: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in d {
        let piece = match b {
            b'\\' => "\\\\".to_string(),
            0x20..=0x7e => char::from(b).to_string(),
            _ => format!("\\x{b:02x}"),
        };
        if out.len() + piece.len() > max {
            out.push_str(&format!("...({} bytes)", d.len()));
            break;
        }
        out.push_str(&piece);
    }
    out
}

pub(super) fn ident_text(i: &crate::Identity) -> String {
    let (t, d) = id_payload(i);
    id_text(t, &d)
}

pub(super) fn prefixes(p: &[Prefix]) -> String {
    let v: Vec<String> = p.iter().map(|x| format!("{}/{}", x.addr, x.len)).collect();
    format!("[{}]", v.join(", "))
}

pub(super) fn ts_text(t: Option<&[TsRepr]>) -> String {
    let Some(t) = t else { return "(none)".into() };
    let v: Vec<String> = t
        .iter()
        .map(|x| match x.to_prefix() {
            Some(p) => format!("{}/{}", p.addr, p.len),
            None => format!("{}-{}", x.start, x.end),
        })
        .collect();
    format!("[{}]", v.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_text_is_escaped_and_cut() {
        assert_eq!(escape_text(b"vpn.example.com"), "vpn.example.com");
        assert_eq!(
            escape_text(b"a\nfake: line\x1b[31m\\\xff"),
            "a\\x0afake: line\\x1b[31m\\\\\\xff"
        );
        let long = escape_text(&[b'\n'; 1000]);
        assert!(long.len() <= LOG_TEXT_MAX + 20, "{long}");
        assert!(long.ends_with("...(1000 bytes)"), "{long}");
        assert_eq!(
            id_text(wire::id_type::FQDN, b"x\r\nTunnel9: SA UP"),
            "x\\x0d\\x0aTunnel9: SA UP"
        );
    }
}
