//! `cargo xtask dist`: a Debian package of xdpsec built with `dpkg-deb`
//! (no extra tool to install): the binary, the systemd unit, an example
//! config, the man page and shell completions generated from the binary's
//! own clap definitions.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{root, run};

/// An example config installed as /etc/xdpsec/example.toml (not used by
/// itself: the unit runs /etc/xdpsec/NAME.toml for `xdpsec@NAME`).
const EXAMPLE: &str = r#"# xdpsec example: copy to /etc/xdpsec/edge1.toml, edit, then
#   systemctl enable --now xdpsec@edge1
node = "edge1"
[underlay]
interface = "eth0"
address = "198.51.100.1"
[inside]
mode = "tun"
name = "xs0"
address = "203.0.113.1/32"
[[tunnel]]
name = "Tunnel1"
kind = "manual"
peer = "198.51.100.2"
remote_subnets = ["203.0.113.2/32"]
[tunnel.inbound]
spi = 0x1001
key = "replace with 72 hex digits (AES-256-GCM key || salt)"
[tunnel.outbound]
spi = 0x1002
key = "replace with 72 other hex digits"
"#;

fn write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn output(bin: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(bin).args(args).output()?;
    if !out.status.success() {
        bail!("{} {} failed", bin.display(), args.join(" "));
    }
    Ok(out.stdout)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut c = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    c.stdin.take().expect("piped").write_all(data)?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

/// Build `target/debian/xdpsec_VERSION_ARCH.deb` from `bin`; returns its path.
pub fn package(bin: &Path) -> Result<PathBuf> {
    let version = String::from_utf8(output(bin, &["--version"])?)?
        .split_whitespace()
        .nth(1)
        .context("xdpsec --version")?
        .to_string();
    let arch = String::from_utf8(output(Path::new("dpkg"), &["--print-architecture"])?)?
        .trim()
        .to_string();
    let out_dir = root().join("target/debian");
    let stage = out_dir.join(format!("xdpsec_{version}_{arch}"));
    let _ = fs::remove_dir_all(&stage);
    write(&stage.join("usr/bin/xdpsec"), &fs::read(bin)?, 0o755)?;
    // Stripped, as Debian packages are (binutils comes with the toolchain).
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg(stage.join("usr/bin/xdpsec")))?;
    write(
        &stage.join("lib/systemd/system/xdpsec@.service"),
        &fs::read(root().join("dist/xdpsec@.service"))?,
        0o644,
    )?;
    write(
        &stage.join("etc/xdpsec/example.toml"),
        EXAMPLE.as_bytes(),
        0o600,
    )?;
    write(
        &stage.join("usr/share/man/man1/xdpsec.1.gz"),
        &gzip(&output(bin, &["man"])?)?,
        0o644,
    )?;
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/xdpsec"),
        ("zsh", "usr/share/zsh/vendor-completions/_xdpsec"),
        ("fish", "usr/share/fish/vendor_completions.d/xdpsec.fish"),
    ] {
        write(
            &stage.join(path),
            &output(bin, &["completions", shell])?,
            0o644,
        )?;
    }
    write(
        &stage.join("usr/share/doc/xdpsec/README.md"),
        &fs::read(root().join("README.md"))?,
        0o644,
    )?;
    let size_kb = walk_size(&stage)? / 1024 + 1;
    let control = format!(
        "Package: xdpsec\nVersion: {version}\nArchitecture: {arch}\nMaintainer: xdpsec developers <xdpsec@example.invalid>\nInstalled-Size: {size_kb}\nDepends: libc6, libelf1, zlib1g, iproute2\nRecommends: systemd\nSection: net\nPriority: optional\nDescription: userspace IPsec ESP datapath on XDP and AF_XDP\n An XDP program steers ESP to AF_XDP sockets; a userspace datapath finds\n the SA by SPI, checks anti-replay and decrypts; an IOS-style control plane\n (manual, IKEv2 and SD-WAN tunnels) reproduces the router's failure signals\n and recovery commands.\n"
    );
    write(&stage.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    write(
        &stage.join("DEBIAN/conffiles"),
        b"/etc/xdpsec/example.toml\n",
        0o644,
    )?;
    let deb = out_dir.join(format!("xdpsec_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(deb)
}

fn walk_size(p: &Path) -> Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            walk_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}
