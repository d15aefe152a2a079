//! `cargo xtask dist`: the Debian package holds the binary, the systemd
//! unit, an example config, the man page and shell completions, and
//! installs with `dpkg -i` (into a scratch root here, not the test machine).
use std::{path::PathBuf, process::Command};

/// The binary to package: `XDPSEC_BIN` (set by `cargo xtask test`) or the
/// workspace's release or debug build.
fn xdpsec_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("XDPSEC_BIN") {
        return p.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    ["target/release/xdpsec", "target/debug/xdpsec"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.exists())
        .expect("an xdpsec build (cargo build --bin xdpsec)")
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_debian_package_installs_with_dpkg_and_holds_what_it_should() {
    let out = ok(Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["dist", "--bin"])
        .arg(xdpsec_bin()));
    let deb = PathBuf::from(out.lines().last().unwrap().trim());
    assert!(deb.extension().is_some_and(|e| e == "deb"), "{out}");
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for field in ["Package: xdpsec", "Depends: libc6", "Section: net"] {
        assert!(info.contains(field), "{field} in\n{info}");
    }
    // Install into a scratch root with its own dpkg database.
    let root = std::env::temp_dir().join(format!("xdpsec-dpkg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    ok(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-depends", "-i"])
        .arg(&deb));
    let status = ok(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "xdpsec"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    let version = ok(Command::new(root.join("usr/bin/xdpsec")).arg("--version"));
    assert!(version.starts_with("xdpsec "), "{version}");
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/xdpsec@.service")).unwrap();
    assert!(unit.contains("Type=notify"), "{unit}");
    let man = ok(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/man/man1/xdpsec.1.gz")));
    assert!(man.contains(".TH xdpsec 1"), "{man}");
    assert!(
        man.contains("check\\-config") || man.contains("check-config"),
        "subcommands in the man page"
    );
    let bash =
        std::fs::read_to_string(root.join("usr/share/bash-completion/completions/xdpsec")).unwrap();
    assert!(
        bash.contains("_xdpsec()") && bash.contains("check-config"),
        "bash completion"
    );
    assert!(
        root.join("usr/share/zsh/vendor-completions/_xdpsec")
            .exists()
    );
    assert!(
        root.join("usr/share/fish/vendor_completions.d/xdpsec.fish")
            .exists()
    );
    // The example config is a conffile, readable by root only (it will hold keys).
    let meta = std::fs::metadata(root.join("etc/xdpsec/example.toml")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    // And it goes away again.
    ok(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--purge", "xdpsec"]));
    assert!(!root.join("usr/bin/xdpsec").exists());
    let _ = std::fs::remove_dir_all(&root);
}
