//! The controller's TOML configuration (`xdpsec controller --config FILE`):
//! parsed, then validated into [`ControllerConfig`]. Errors name the field
//! and the line; nothing is used from a file that fails validation.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::config::sdwan::{TlsConfig, tls_fields, tls_fields_of};
use crate::config::{LineIndex, SecretText, addr_port_field, node_and_socket, parse_toml};

/// Default OMP graceful-restart time (Cisco SD-WAN `omp timers
/// graceful-restart-timer` default, 43200 s).
pub const DEFAULT_GRACEFUL_RESTART_SECONDS: u64 = 43_200;
/// Largest graceful-restart time accepted (Cisco's range is 1-604800 s).
pub const MAX_GRACEFUL_RESTART_SECONDS: i64 = 604_800;

/// A validated controller configuration.
#[derive(Clone)]
pub struct ControllerConfig {
    /// Node name, used in prompts and logs.
    pub node: String,
    /// Path of the control socket.
    pub socket: PathBuf,
    /// TCP address the edges' control connections arrive on.
    pub listen: SocketAddr,
    /// TLS: the CA, the controller's certificate and key, the organization.
    pub tls: TlsConfig,
    /// Authorized edges (`allowed_edges_file`): serial -> system-ip.
    pub allowed_edges: BTreeMap<String, Ipv4Addr>,
    /// Where the allowed edges came from.
    pub allowed_edges_file: PathBuf,
    /// Routes of an edge with no connection left are withdrawn after this.
    pub graceful_restart: Duration,
}

impl std::fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The PSK never appears in output.
        f.debug_struct("ControllerConfig")
            .field("node", &self.node)
            .field("socket", &self.socket)
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("allowed_edges", &self.allowed_edges.len())
            .field("graceful_restart", &self.graceful_restart)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControllerConfig {
    node: Spanned<String>,
    #[serde(default)]
    socket: Option<Spanned<String>>,
    listen: Spanned<String>,
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
    allowed_edges_file: Option<Spanned<String>>,
    #[serde(default)]
    graceful_restart_seconds: Option<Spanned<i64>>,
}

impl ControllerConfig {
    /// Read and validate the file at `path`; the error names the file.
    pub fn load(path: &Path) -> Result<ControllerConfig, String> {
        // The file text may hold the PSK: zeroized when dropped.
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read the config file: {e}", path.display()))?,
        );
        ControllerConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse and validate config text.
    pub fn parse(text: &str) -> Result<ControllerConfig, String> {
        let raw: RawControllerConfig = parse_toml(text)?;
        let lines = LineIndex::new(text);
        let at = |span: std::ops::Range<usize>| lines.line(span.start);
        let (node, socket) = node_and_socket(&raw.node, &raw.socket, &at)?;
        let listen = addr_port_field(
            &raw.listen,
            "listen",
            "give ADDR:PORT with a port 1-65535, e.g. \"198.51.100.10:23456\" or \"[2001:db8::10]:23456\"",
            &at,
        )?;
        let tls = tls_fields(&tls_fields_of!(raw, "", raw.node.span()), true, &at)?;
        let Some(af) = &raw.allowed_edges_file else {
            return Err(format!(
                "line {}: field `allowed_edges_file` is missing: the controller needs the authorized edge list (`xdpsec pki allow`)",
                at(raw.node.span())
            ));
        };
        let allowed_edges = std::fs::read_to_string(af.get_ref())
            .map_err(|e| e.to_string())
            .and_then(|t| crate::pki::parse_allowed_edges(&t).map_err(|e| e.to_string()))
            .map_err(|e| {
                format!(
                    "line {}: field `allowed_edges_file` = {:?}: {e}",
                    at(af.span()),
                    af.get_ref()
                )
            })?;
        let graceful_restart = match &raw.graceful_restart_seconds {
            None => Duration::from_secs(DEFAULT_GRACEFUL_RESTART_SECONDS),
            Some(g) => {
                let v = *g.get_ref();
                if !(1..=MAX_GRACEFUL_RESTART_SECONDS).contains(&v) {
                    return Err(format!(
                        "line {}: field `graceful_restart_seconds` = {v}: give 1-{MAX_GRACEFUL_RESTART_SECONDS} (default {DEFAULT_GRACEFUL_RESTART_SECONDS})",
                        at(g.span())
                    ));
                }
                Duration::from_secs(v as u64)
            }
        };
        Ok(ControllerConfig {
            node,
            socket,
            listen,
            tls,
            allowed_edges,
            allowed_edges_file: PathBuf::from(af.get_ref()),
            graceful_restart,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn base(dir: &Path) -> String {
        format!(
            "node = \"vsmart1\"\nlisten = \"198.51.100.10:23456\"\nca_file = \"{d}/ca/ca.crt\"\ncert_file = \"{d}/ctl/device.crt\"\nkey_file = \"{d}/ctl/device.key\"\norganization = \"xdpsec-test\"\nallowed_edges_file = \"{d}/allowed.toml\"\n",
            d = dir.display()
        )
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let dir = crate::pki::test_pki_dir("min");
        let c = ControllerConfig::parse(&base(&dir)).unwrap();
        assert_eq!(c.node, "vsmart1");
        assert_eq!(c.socket, PathBuf::from("/run/xdpsec/vsmart1.sock"));
        assert_eq!(c.listen, "198.51.100.10:23456".parse().unwrap());
        assert_eq!(c.tls.organization, "xdpsec-test");
        assert_eq!(
            c.allowed_edges["E1"],
            "192.0.2.1".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(c.graceful_restart, Duration::from_secs(43_200));
        // The key never shows in debug output.
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_field_and_line() {
        let dir = crate::pki::test_pki_dir("err");
        let b = base(&dir);
        let cases = [
            (
                b.replace("198.51.100.10:23456", "198.51.100.10"),
                "line 2: field `listen`".to_string(),
            ),
            (
                format!("{b}graceful_restart_seconds = 0\n"),
                "line 8: field `graceful_restart_seconds` = 0".into(),
            ),
            (
                format!("{b}psk = \"k\"\n"),
                "line 8: field `psk` is no longer supported".into(),
            ),
            (
                format!("{b}psk_file = \"/x\"\n"),
                "line 8: field `psk_file` is no longer supported".into(),
            ),
            (
                b.replace("organization = \"xdpsec-test\"\n", ""),
                "field `organization` is missing".into(),
            ),
            (
                b.replace("ctl/device.key", "edge/device.key"),
                "do not go together".into(),
            ),
            (
                format!("{b}bogus = 1\n"),
                "line 8: unknown field `bogus`".into(),
            ),
            (b.replace("vsmart1", "a b"), "line 1: field `node`".into()),
        ];
        for (text, want) in cases {
            let e = ControllerConfig::parse(&text).unwrap_err();
            assert!(e.contains(&want), "{text:?}: got {e:?}, want {want:?}");
        }
        // The ADDR:PORT error, whole (`text::addr_port_field`).
        for bad in ["198.51.100.10", "198.51.100.10:0", "[2001:db8::10]"] {
            assert_eq!(
                ControllerConfig::parse(&b.replace("198.51.100.10:23456", bad)).unwrap_err(),
                format!(
                    "line 2: field `listen` = {bad:?}: give ADDR:PORT with a port 1-65535, e.g. \"198.51.100.10:23456\" or \"[2001:db8::10]:23456\""
                )
            );
        }
        let e = ControllerConfig::parse(&format!("{b}psk = \"k\"\n")).unwrap_err();
        assert!(
            e.contains("`ca_file`")
                && !e.contains("`allowed_edges_file`")
                && e.contains("`key_file`"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::pki::test_pki_dir("mode");
        let key = dir.join("ctl/device.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ControllerConfig::parse(&base(&dir)).unwrap_err();
        assert!(
            e.contains("line 5: field `key_file`") && e.contains("chmod 600"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
