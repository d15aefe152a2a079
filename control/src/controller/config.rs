//! The controller's TOML configuration (`xdpsec controller --config FILE`):
//! parsed, then validated into [`ControllerConfig`]. Errors name the field
//! and the line; nothing is used from a file that fails validation.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use crate::config::{LineIndex, SecretText, node_and_socket, parse_toml, psk_field};

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
    /// Pre-shared key of the control connections; zeroized on drop.
    pub psk: Zeroizing<Vec<u8>>,
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
            .field("psk", &"<redacted>")
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
        let listen: SocketAddr = match raw.listen.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => a,
            _ => {
                return Err(format!(
                    "line {}: field `listen` = {:?}: give ADDR:PORT with a port 1-65535, e.g. \"198.51.100.10:23456\" or \"[2001:db8::10]:23456\"",
                    at(raw.listen.span()),
                    raw.listen.get_ref()
                ));
            }
        };
        let psk = psk_field(
            &raw.psk,
            &raw.psk_file,
            "",
            "",
            &|| {
                format!(
                    "line {}: the controller needs `psk` or `psk_file` (the edges' control-connection key)",
                    at(raw.node.span())
                )
            },
            &at,
        )?;
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
            psk,
            graceful_restart,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_takes_defaults() {
        let c = ControllerConfig::parse(
            "node = \"vsmart1\"\nlisten = \"198.51.100.10:23456\"\npsk = \"s3cret\"\n",
        )
        .unwrap();
        assert_eq!(c.node, "vsmart1");
        assert_eq!(c.socket, PathBuf::from("/run/xdpsec/vsmart1.sock"));
        assert_eq!(c.listen, "198.51.100.10:23456".parse().unwrap());
        assert_eq!(&c.psk[..], b"s3cret");
        assert_eq!(c.graceful_restart, Duration::from_secs(43_200));
        // The PSK never shows in debug output.
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn errors_name_field_and_line() {
        let cases = [
            (
                "node = \"c\"\nlisten = \"198.51.100.10\"\npsk = \"k\"\n",
                "line 2: field `listen`",
            ),
            (
                "node = \"c\"\nlisten = \"198.51.100.10:1\"\npsk = \"k\"\ngraceful_restart_seconds = 0\n",
                "line 4: field `graceful_restart_seconds` = 0",
            ),
            (
                "node = \"c\"\nlisten = \"198.51.100.10:1\"\npsk = \"\"\n",
                "line 3: field `psk` is empty",
            ),
            (
                "node = \"c\"\nlisten = \"198.51.100.10:1\"\n",
                "needs `psk` or `psk_file`",
            ),
            (
                "node = \"c\"\nlisten = \"198.51.100.10:1\"\npsk = \"k\"\npsk_file = \"/x\"\n",
                "line 4: fields `psk` and `psk_file`",
            ),
            (
                "node = \"c\"\nlisten = \"198.51.100.10:1\"\npsk = \"k\"\nbogus = 1\n",
                "line 4: unknown field `bogus`",
            ),
            (
                "node = \"a b\"\nlisten = \"198.51.100.10:1\"\npsk = \"k\"\n",
                "line 1: field `node`",
            ),
        ];
        for (text, want) in cases {
            let e = ControllerConfig::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn psk_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xdpsec-ctlcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("psk");
        std::fs::write(&f, "filekey\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "node = \"c\"\nlisten = \"198.51.100.10:1\"\npsk_file = \"{}\"\n",
            f.display()
        );
        let e = ControllerConfig::parse(&text).unwrap_err();
        assert!(
            e.contains("line 3: field `psk_file`") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = ControllerConfig::parse(&text).unwrap();
        assert_eq!(&c.psk[..], b"filekey");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
