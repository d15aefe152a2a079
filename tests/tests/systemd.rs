//! Running under systemd: `Type=notify` readiness (`READY=1` once XDP is
//! attached and the control socket answers, `STOPPING=1` on the way out),
//! and the unit file in dist/ passes `systemd-analyze verify`.
use std::{os::unix::net::UnixDatagram, path::Path, time::Duration};

use xdpsec_e2e::{Daemon, Lab, base_config, scratch_dir, xdpsec_bin};

#[test]
fn sd_notify_ready_after_start_and_stopping_on_the_way_out() {
    let lab = Lab::unique().up(1).unwrap();
    let dir = scratch_dir("notify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut d = Daemon::start_with_env(
        &lab.ns1,
        &base_config("edge1", &lab.if1, lab.v4[0], 1),
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means ready: the control socket answers.
    d.cli("show version").unwrap();
    d.stop();
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/xdpsec@.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Type=notify") && text.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(text.contains("ExecStartPre=/usr/bin/xdpsec check-config --quiet"));
    // Verify a copy that points at the binary under test (the unit names
    // /usr/bin/xdpsec, where the package installs it).
    let dir = scratch_dir("unit");
    let copy = dir.join("xdpsec@.service");
    let bin = xdpsec_bin();
    std::fs::write(
        &copy,
        text.replace("/usr/bin/xdpsec", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args([
            "verify",
            &format!("{}", dir.join("xdpsec@test.service").display()),
        ])
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    // Only complaints about the unit itself count (the machine's own units
    // and a missing systemd as PID 1 are not ours).
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("xdpsec")).collect();
    assert!(ours.is_empty(), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
