//! The daemon's TOML configuration: parsed, then validated into [`Config`].
//!
//! Errors name the field and the line, and say how to fix it. Nothing is
//! applied from a config that fails validation.
use std::{
    collections::BTreeSet,
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
    /// The underlay: where ESP arrives and leaves.
    pub underlay: Underlay,
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
    underlay: Spanned<RawUnderlay>,
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
}

/// Largest `underlay.queues` accepted (the XDP program's XSKMAP size).
pub const MAX_QUEUES: u32 = xdpsec_common::MAX_QUEUES;

impl Config {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            msg: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text).map_err(|msg| ConfigError {
            path: path.display().to_string(),
            msg,
        })
    }

    /// Parse and validate config text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            format!("line {line}: {}", e.message().trim_end().replace('\n', " "))
        })?;
        let at = |span: std::ops::Range<usize>| line_of(text, span.start);

        let node = raw.node.get_ref().trim().to_string();
        if node.is_empty()
            || node.len() > 63
            || !node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(format!(
                "line {}: field `node` = {:?}: give 1-63 characters from A-Z a-z 0-9 - _ .",
                at(raw.node.span()),
                raw.node.get_ref()
            ));
        }
        let socket = match &raw.socket {
            Some(s) if s.get_ref().is_empty() => {
                return Err(format!(
                    "line {}: field `socket` is empty: give a path or leave it out for /run/xdpsec/{node}.sock",
                    at(s.span())
                ));
            }
            Some(s) => PathBuf::from(s.get_ref()),
            None => PathBuf::from(format!("/run/xdpsec/{node}.sock")),
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
        Ok(Config {
            node,
            socket,
            underlay: Underlay {
                interface,
                address,
                queues,
                udp_ports,
            },
        })
    }
}

/// 1-based line number of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
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
}
