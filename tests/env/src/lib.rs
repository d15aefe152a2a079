//! What a test needs from the machine, and one policy for when it is not
//! there:
//!
//! - under `cargo xtask test` (which sets `XDPSEC_REQUIRE_ALL=1`) and
//!   whenever `CI` is set, a missing prerequisite FAILS the test, with a
//!   message naming what is missing and how to get it (`cargo xtask setup`);
//! - otherwise (a developer's plain `cargo test`) the test is reported as
//!   *ignored*, with the reason, never as ok.
//!
//! libtest decides "ignored" at compile time only, so the test files that
//! need the machine use this crate's harness (`harness = false`, built on
//! libtest-mimic: same output and flags as libtest): [`main`] with
//! [`trial`]s. Tests that always run where they are built (the e2e crate,
//! only run by `cargo xtask test`) call [`require`], which fails the same way.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

pub mod pki;

/// The command that installs every tool, package and the venv.
pub const SETUP: &str = "cargo xtask setup";

/// One thing a test needs.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Root (namespaces, veth, XDP, raw sockets).
    Root,
    /// The project's Python venv (scapy, genie, ...): [`venv_python`].
    Venv,
    /// An installed program: what it is and its path (absolute, or a name
    /// looked up in `PATH`).
    Tool(&'static str, &'static str),
}

/// strongSwan's IKE daemon (Debian's strongswan-charon).
pub const CHARON: Need = Need::Tool("strongSwan's charon", "/usr/lib/ipsec/charon");
/// strongSwan's control tool (Debian's strongswan-swanctl).
pub const SWANCTL: Need = Need::Tool("strongSwan's swanctl", "swanctl");

/// True when a missing prerequisite must fail the test: `cargo xtask test`
/// (`XDPSEC_REQUIRE_ALL`) or a CI run (`CI`), either set and not empty.
pub fn required() -> bool {
    ["XDPSEC_REQUIRE_ALL", "CI"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// The project's Python venv: `$XDPSEC_VENV`, else `<workspace>/.venv`.
pub fn venv() -> PathBuf {
    std::env::var_os("XDPSEC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../.venv")
                .components()
                .collect()
        })
}

/// The venv's python (whether or not it exists: see [`require`]).
pub fn venv_python() -> PathBuf {
    venv().join("bin/python")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

fn on_path(prog: &str) -> bool {
    if prog.contains('/') {
        return Path::new(prog).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

impl Need {
    /// Why this need is not met, naming it and how to meet it; None when met.
    pub fn missing(self) -> Option<String> {
        match self {
            Need::Root => (!is_root()).then(|| {
                "root is missing (network namespaces, veth, XDP): run the tests as root".to_string()
            }),
            Need::Venv => {
                let py = venv_python();
                (!py.exists()).then(|| {
                    format!(
                        "the Python venv is missing ({} does not exist; XDPSEC_VENV={}): install it with `{SETUP}`",
                        py.display(),
                        std::env::var("XDPSEC_VENV").unwrap_or_else(|_| "unset".into())
                    )
                })
            }
            Need::Tool(what, prog) => (!on_path(prog))
                .then(|| format!("{what} ({prog}) is missing: install it with `{SETUP}`")),
        }
    }
}

/// Everything of `needs` that is missing, one line each.
pub fn missing(needs: &[Need]) -> Option<String> {
    let m: Vec<String> = needs.iter().filter_map(|n| n.missing()).collect();
    (!m.is_empty()).then(|| m.join("; "))
}

/// For tests that always run where they are built (`cargo xtask test`):
/// panic, naming what is missing and how to get it, unless all of `needs`
/// is there.
pub fn require(needs: &[Need]) {
    if let Some(m) = missing(needs) {
        panic!("{m}");
    }
}

/// A test that needs `needs`: runs `test` when all of it is there;
/// otherwise fails when [`required`], and is reported ignored (with the
/// reason) when not.
pub fn trial(name: &str, needs: &'static [Need], test: fn()) -> Trial {
    Trial::ignorable_test(name, move || match missing(needs) {
        None => {
            test();
            Ok(Completion::Completed)
        }
        Some(m) if required() => Err(Failed::from(format!(
            "{m} (XDPSEC_REQUIRE_ALL or CI is set: a missing prerequisite is a failure)"
        ))),
        Some(m) => Ok(Completion::ignored_with(m)),
    })
}

/// The test binary's `main`: parse libtest's arguments, run `trials`, exit
/// with libtest's status.
pub fn main(trials: Vec<Trial>) {
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}

/// Run `openssl ARGS` in `dir` (the tests make their keys and certificates
/// with it, an independent implementation); panics naming the arguments and
/// openssl's error output when it fails. Returns what it wrote to stdout.
pub fn openssl(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_installer() {
        let m = Need::Tool("a tool", "/nonexistent/xdpsec-tool")
            .missing()
            .unwrap();
        assert!(
            m.contains("a tool (/nonexistent/xdpsec-tool)") && m.contains(SETUP),
            "{m}"
        );
        assert!(Need::Tool("sh", "sh").missing().is_none());
    }
}
