//! A running `xdpsec controller` in a namespace, for the SD-WAN tests.
use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cli, scratch_dir, xdpsec_bin};

/// A running `xdpsec controller`; stopped with SIGINT on drop.
pub struct Controller {
    child: Option<Child>,
    /// The control socket.
    pub socket: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The controller's stderr log.
    pub log: PathBuf,
    dir: PathBuf,
}

impl Controller {
    /// Write `config` (with `{socket}` replaced by a fresh socket path) and
    /// start `xdpsec controller` in `ns`; wait until its control socket
    /// answers.
    pub fn start(ns: &str, config: &str) -> Result<Controller> {
        let dir = scratch_dir("controller");
        let socket = dir.join("ctl.sock");
        let cfg_path = dir.join("controller.toml");
        let log = dir.join("controller.log");
        std::fs::write(
            &cfg_path,
            config.replace("{socket}", &socket.display().to_string()),
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(xdpsec_bin())
            .args(["controller", "--config"])
            .arg(&cfg_path)
            .env("XDPSEC_LOG", "debug")
            .stdout(File::create(dir.join("stdout"))?)
            .stderr(File::create(&log)?)
            .spawn()
            .context("spawning xdpsec controller")?;
        let mut c = Controller {
            child: Some(child),
            socket,
            config: cfg_path,
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.child.as_mut().unwrap().try_wait()? {
                bail!(
                    "xdpsec controller exited at start-up ({status}):\n{}",
                    c.log_text()
                );
            }
            if c.cli("show version").is_ok() {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!(
                    "xdpsec controller did not answer on its control socket in 20 s:\n{}",
                    c.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The controller's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run a CLI command; Ok(stdout) when it exits 0, Err(stderr) otherwise.
    pub fn cli(&self, command: &str) -> std::result::Result<String, String> {
        cli(&self.socket, command, false)
    }

    /// Run a CLI command with `--json` and parse the output.
    pub fn cli_json(&self, command: &str) -> Result<serde_json::Value> {
        let out = cli(&self.socket, command, true).map_err(|e| anyhow::anyhow!(e))?;
        serde_json::from_str(&out).with_context(|| format!("parsing JSON of `{command}`: {out}"))
    }

    /// Stop with SIGINT and wait (SIGKILL after 10 s); returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        crate::stop_child(self.child.take()?)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- xdpsec controller log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
