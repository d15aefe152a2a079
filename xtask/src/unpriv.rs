//! The owner core's unit tests as an unprivileged user (issue 17: they
//! need no root, XDP or sockets). `cargo xtask test` runs them so, after
//! its first build: control's unit-test binary, copied into a fresh
//! directory that `nobody` owns (its HOME, TMPDIR and working directory),
//! run under `setpriv` as uid and gid 65534 with no groups and no
//! capabilities. It fails if any fails or none ran. Run alone:
//! `cargo xtask owner-tests` (as root; as another user it runs as that user).
use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{built_executables, cargo, plain_packages};

/// `nobody`.
const NOBODY: u32 = 65534;

/// The test filter: the owner core's tests.
const FILTER: &str = "owner::";

/// Build control's unit-test binary as the workspace's plain test run builds
/// it (same packages and features, so nothing is compiled twice) and return
/// its path.
fn unit_test_binary() -> Result<PathBuf> {
    let mut build = cargo();
    build.args(["test", "--release", "--no-run"]);
    plain_packages(&mut build, true);
    build.args(["--bin", "xdpsec"]);
    built_executables(&mut build)
        .context("building control's unit tests")?
        .into_iter()
        .find(|(p, t, test, _)| p == "xdpsec-control" && t == "xdpsec" && *test)
        .map(|(.., path)| path)
        .context("cargo named no unit-test binary of xdpsec-control")
}

/// The owner's unit tests as `nobody` (or as this user when not root).
pub fn owner_tests() -> Result<()> {
    let bin = unit_test_binary()?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let dir = std::env::temp_dir().join(format!("xdpsec-owner-tests-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let r = run_in(&bin, &dir, root);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_in(bin: &Path, dir: &Path, root: bool) -> Result<()> {
    let exe = dir.join("xdpsec-unit-tests");
    std::fs::copy(bin, &exe).with_context(|| format!("copying {}", bin.display()))?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    let as_user = |program: &Path| {
        let mut c = if root {
            for p in [dir, &exe] {
                std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY))
                    .with_context(|| format!("giving {} to uid {NOBODY}", p.display()))?;
            }
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={NOBODY}"))
                .arg(format!("--regid={NOBODY}"))
                .args([
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                    "--no-new-privs",
                ])
                .arg(program);
            c
        } else {
            Command::new(program)
        };
        c.current_dir(dir)
            .env_clear()
            .env("HOME", dir)
            .env("TMPDIR", dir)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        anyhow::Ok(c)
    };
    // Who the tests run as, asked the same way.
    let id = as_user(Path::new("/usr/bin/id"))?
        .arg("-u")
        .output()
        .context("running id under setpriv")?;
    let uid = String::from_utf8_lossy(&id.stdout).trim().to_string();
    if root && uid != NOBODY.to_string() {
        bail!("the owner's tests would run as uid {uid:?}, not {NOBODY}");
    }
    println!("[test] the owner's unit tests as uid {uid} (no groups, no capabilities)");
    let out = as_user(&exe)?
        .args([FILTER, "--test-threads=2"])
        .stderr(Stdio::inherit())
        .output()
        .context("running control's unit tests")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let passed = text
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .next();
    match passed {
        _ if !out.status.success() => {
            bail!("the owner's unit tests failed as uid {uid}: {}", out.status)
        }
        None | Some(0) => bail!("no owner unit test ran (filter {FILTER:?})"),
        Some(n) => {
            println!("[test] {n} owner unit tests passed as uid {uid}");
            Ok(())
        }
    }
}
