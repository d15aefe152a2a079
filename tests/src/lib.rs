//! Test harness for xdpsec end-to-end tests, shared with `cargo xtask lab`
//! and the demo: network namespaces joined by veth, a running daemon, code
//! run inside a namespace, and hand-built frames.
//!
//! Everything created here is removed by `Drop`, also when a test panics.
use std::{
    fs::File,
    io::Write,
    net::IpAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

pub mod controller;
pub mod frames;
pub mod gateway;
pub mod ike;
pub mod loadtest;
pub mod memscan;
pub mod sdwan;
pub mod strongswan;
pub mod tunnel;

/// Two network namespaces joined by one veth pair.
pub struct Lab {
    /// Namespace of node 1 (runs xdpsec).
    pub ns1: String,
    /// Namespace of node 2 (the peer).
    pub ns2: String,
    /// veth end in ns1.
    pub if1: String,
    /// veth end in ns2.
    pub if2: String,
    /// Underlay IPv4 addresses of node 1 and 2.
    pub v4: [IpAddr; 2],
    /// Underlay IPv6 addresses of node 1 and 2.
    pub v6: [IpAddr; 2],
    up: bool,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        // Not root: say so (and how), not just iproute2's EPERM.
        if let Some(m) = xdpsec_testenv::missing(&[xdpsec_testenv::Need::Root]) {
            bail!("ip {}: {m}", args.join(" "));
        }
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Wait (up to 5 s) until the veth end `ifname` in `ns` is operationally
/// up and IPv6 has configured it: its `ff00::/8` multicast route exists,
/// and the local route of its address `v6` (added with `nodad`: a source
/// at once, but accepted as a destination only once the address worker
/// inserted that route).
///
/// Until then a Neighbour Solicitation to the end's addresses is dropped
/// on arrival (`kfree_skb` reason `IP_INNOROUTES`: no route for the
/// solicited-node multicast address), so the first packet to them waits
/// a second in the sender's neighbour queue, for the next solicitation.
/// The end set up second gets its carrier in its own open, before its
/// qdisc is attached, and both ends have the same ifindex in their new
/// namespaces, so linkwatch takes that carrier change as not urgent and
/// defers it to a second after its previous run, the pair's creation;
/// operstate, the qdisc and IPv6's configuration of the end all wait for
/// it. An `ip link show dev` (RTM_GETLINK) runs the pending event at once
/// on recent kernels (`linkwatch_sync_dev`); on others this waits it out.
fn link_ready(ns: &str, ifname: &str, v6: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let show = |args: &[&str]| {
            Command::new("ip")
                .args(["-n", ns])
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let link = show(&["-o", "link", "show", "dev", ifname]);
        let routes = show(&["-6", "route", "show", "table", "local", "dev", ifname]);
        if link.contains("state UP")
            && routes.contains("ff00::/8")
            && routes.contains(&format!("local {v6} "))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{ifname} in {ns} not up with IPv6 within 5 s: {}",
                link.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// The lab of `cargo xtask lab` and the demo.
    pub fn default_names() -> Lab {
        Lab::named("xdpsec-edge1", "xdpsec-edge2", "xs-e1", "xs-e2", 100)
    }

    /// A lab with names unique to this process and call, for tests that run in parallel.
    pub fn unique() -> Lab {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{n}", std::process::id() % 0xffff);
        Lab::named(
            &format!("xst{id}a"),
            &format!("xst{id}b"),
            &format!("xt{id}a"),
            &format!("xt{id}b"),
            // Each test gets its own /30-ish pair inside 198.51.100.0/24 only
            // for readability; namespaces keep them apart anyway.
            100,
        )
    }

    fn named(ns1: &str, ns2: &str, if1: &str, if2: &str, _net: u8) -> Lab {
        Lab {
            ns1: ns1.into(),
            ns2: ns2.into(),
            if1: if1.into(),
            if2: if2.into(),
            v4: [
                "198.51.100.1".parse().unwrap(),
                "198.51.100.2".parse().unwrap(),
            ],
            v6: [
                "2001:db8:100::1".parse().unwrap(),
                "2001:db8:100::2".parse().unwrap(),
            ],
            up: false,
        }
    }

    /// Create both namespaces, the veth pair with `queues` rx/tx queues, and addresses.
    pub fn up(mut self, queues: u32) -> Result<Lab> {
        self.down();
        self.up = true; // from here on, Drop cleans up whatever exists
        let q = queues.to_string();
        ip(&["netns", "add", &self.ns1])?;
        ip(&["netns", "add", &self.ns2])?;
        ip(&[
            "link",
            "add",
            &self.if1,
            "netns",
            &self.ns1,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            &self.if2,
            "netns",
            &self.ns2,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        for (ns, ifname, i) in [(&self.ns1, &self.if1, 0), (&self.ns2, &self.if2, 1)] {
            let v4 = format!("{}/24", self.v4[i]);
            let v6 = format!("{}/64", self.v6[i]);
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &v4, "dev", ifname])?;
            ip(&["-n", ns, "addr", "add", &v6, "dev", ifname, "nodad"])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        for (ns, ifname, i) in [(&self.ns1, &self.if1, 0), (&self.ns2, &self.if2, 1)] {
            link_ready(ns, ifname, &self.v6[i].to_string())?;
        }
        Ok(self)
    }

    /// Remove the namespaces (the veth pair goes with them). Never fails.
    pub fn down(&self) {
        for ns in [&self.ns1, &self.ns2] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Print names and addresses.
    pub fn print(&self) {
        println!(
            "namespace {}: {} {} {}",
            self.ns1, self.if1, self.v4[0], self.v6[0]
        );
        println!(
            "namespace {}: {} {} {}",
            self.ns2, self.if2, self.v4[1], self.v6[1]
        );
    }

    /// Run `f` with this thread's network namespace switched to `ns`.
    pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: setns on a namespace fd affects only this (scoped) thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns({path}): {}", std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace {ns} panicked"))?
        })
    }

    /// Run a command inside `ns`, returning its output.
    pub fn exec(ns: &str, cmd: &[&str]) -> Result<std::process::Output> {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .output()
            .with_context(|| format!("ip netns exec {ns} {}", cmd.join(" ")))
    }

    /// Move node 2's end of the veth (`if2`) into namespace `ns` (another
    /// lab's, so that one process there reaches several labs' node 1) and
    /// set it up there; it keeps its MAC address, not its addresses. It goes
    /// when either lab does.
    pub fn move_peer_into(&self, ns: &str) -> Result<()> {
        ip(&["-n", &self.ns2, "link", "set", &self.if2, "netns", ns])?;
        ip(&["-n", ns, "link", "set", &self.if2, "up"])
    }

    /// Whether an XDP program is attached to `ifname` in `ns`.
    pub fn xdp_attached(ns: &str, ifname: &str) -> bool {
        Command::new("ip")
            .args(["-n", ns, "-d", "link", "show", ifname])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("prog/xdp"))
            .unwrap_or(false)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.up {
            self.down();
        }
    }
}

/// Path of the xdpsec binary under test: `$XDPSEC_BIN`, else the newer of
/// target/release/xdpsec and target/debug/xdpsec.
pub fn xdpsec_bin() -> PathBuf {
    if let Ok(p) = std::env::var("XDPSEC_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    ["target/release/xdpsec", "target/debug/xdpsec"]
        .iter()
        .map(|p| root.join(p))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect("no xdpsec binary: run `cargo build --release --bin xdpsec` or set XDPSEC_BIN")
}

/// A running `xdpsec run` in a namespace; stopped with SIGINT on drop.
pub struct Daemon {
    child: Option<Child>,
    /// The control socket.
    pub socket: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The daemon's stderr log.
    pub log: PathBuf,
    dir: PathBuf,
    kind: &'static Kind,
}

/// Which xdpsec program a [`Daemon`] runs.
pub(crate) struct Kind {
    /// The subcommand (`run`, `controller`).
    pub(crate) subcommand: &'static str,
    /// Its name in messages.
    pub(crate) name: &'static str,
    /// Its scratch directory's tag (`xdpsec-TAG-PID-N`).
    pub(crate) tag: &'static str,
    /// Its config and log file names, without the extension.
    pub(crate) file: &'static str,
    /// `XDPSEC_LOG` for it.
    pub(crate) log_filter: &'static str,
    /// A command it answers once it is up.
    pub(crate) probe: &'static str,
    /// Whether its config takes a `state_dir` (given one unless set).
    pub(crate) state_dir: bool,
}

/// `xdpsec run`.
const DAEMON: Kind = Kind {
    subcommand: "run",
    name: "xdpsec",
    tag: "daemon",
    file: "xdpsec",
    log_filter: "debug,aya=info,aya_obj=info",
    probe: "show platform hardware qfp active statistics",
    state_dir: true,
};

/// A scratch directory removed on drop.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("xdpsec-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Daemon {
    /// Write `config` (with `{socket}` replaced by a fresh socket path) and
    /// start `xdpsec run` in `ns`; wait until its control socket answers.
    pub fn start(ns: &str, config: &str) -> Result<Daemon> {
        Daemon::start_with_env(ns, config, &[])
    }

    /// [`Daemon::start`] with extra environment variables for the daemon
    /// (and for the `ip netns exec` that starts it).
    pub fn start_with_env(ns: &str, config: &str, env: &[(&str, &str)]) -> Result<Daemon> {
        Daemon::spawn(ns, &DAEMON, config, env)
    }

    /// Write `config` (with `{socket}` replaced by a fresh socket path) and
    /// start `xdpsec <kind.subcommand>` in `ns`; wait (20 s at most) until
    /// its control socket answers `kind.probe`.
    pub(crate) fn spawn(
        ns: &str,
        kind: &'static Kind,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let dir = scratch_dir(kind.tag);
        let socket = dir.join("ctl.sock");
        let cfg_path = dir.join(format!("{}.toml", kind.file));
        let log = dir.join(format!("{}.log", kind.file));
        let mut text = config.replace("{socket}", &socket.display().to_string());
        // Each daemon gets its own state_dir (sequence reservations) unless
        // the test gives one (to keep it across a restart).
        if kind.state_dir && !text.contains("state_dir") {
            let state = dir.join("state");
            text = format!("state_dir = \"{}\"\n{text}", state.display());
        }
        std::fs::write(&cfg_path, text)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(xdpsec_bin())
            .args([kind.subcommand, "--config"])
            .arg(&cfg_path)
            .env("XDPSEC_LOG", kind.log_filter)
            .envs(env.iter().copied())
            .stdout(File::create(dir.join("stdout"))?)
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("spawning {}", kind.name))?;
        let mut d = Daemon {
            child: Some(child),
            socket,
            config: cfg_path,
            log,
            dir,
            kind,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = d.child.as_mut().unwrap().try_wait()? {
                bail!(
                    "{} exited at start-up ({status}):\n{}",
                    kind.name,
                    d.log_text()
                );
            }
            if d.cli(kind.probe).is_ok() {
                return Ok(d);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer on its control socket in 20 s:\n{}",
                    kind.name,
                    d.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
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

    /// Send `signal` to the daemon (e.g. `libc::SIGHUP` to reload).
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    /// The daemon's process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kill with SIGKILL (a crash: nothing is said to anyone) and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop with SIGINT and wait (SIGKILL after 10 s); returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        stop_child(self.child.take()?)
    }
}

/// Stop an xdpsec started under `ip netns exec` (which execs it, so the
/// child pid is xdpsec's) with SIGINT and wait, SIGKILL after 10 s;
/// returns the exit status.
pub fn stop_child(mut child: Child) -> Option<std::process::ExitStatus> {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}) ---\n{}",
                self.kind.name,
                self.log.display(),
                self.log_text()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `xdpsec cli` against `socket`.
pub fn cli(socket: &Path, command: &str, json: bool) -> std::result::Result<String, String> {
    let mut c = Command::new(xdpsec_bin());
    c.arg("cli").arg("--socket").arg(socket);
    if json {
        c.arg("--json");
    }
    let out = c.arg(command).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A minimal config for node `node` on `ifname` with `address` and `queues`
/// (no tunnels, `early_drop = false`).
pub fn base_config(node: &str, ifname: &str, address: IpAddr, queues: u32) -> String {
    // No tunnels, and early drop off: every ESP frame (no SA has its SPI)
    // reaches the AF_XDP sockets whose steering these configs test.
    format!(
        "node = \"{node}\"\nsocket = \"{{socket}}\"\n[underlay]\ninterface = \"{ifname}\"\naddress = \"{address}\"\nqueues = {queues}\nearly_drop = false\n"
    )
}

/// Write bytes to a file, creating parent directories.
pub fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    File::create(path)?.write_all(data)?;
    Ok(())
}

/// The project's Python venv (with scapy), from `$XDPSEC_VENV` or
/// `<root>/.venv`; panics, naming it and `cargo xtask setup`, when missing.
pub fn venv_python() -> PathBuf {
    xdpsec_testenv::require(&[xdpsec_testenv::Need::Venv]);
    xdpsec_testenv::venv_python()
}

/// Run the scapy ESP peer (tests/py/esp_peer.py) in `ns` with `cfg`; its JSON report.
pub fn scapy_peer(ns: &str, cfg: &serde_json::Value) -> Result<serde_json::Value> {
    py_tool(ns, "esp_peer.py", cfg)
}

/// Run tests/py/`script` with the venv's Python in `ns` with one argument,
/// killed after `timeout_s` seconds; the JSON object on the last line of
/// its stdout.
pub fn py_script(ns: &str, script: &str, arg: &str, timeout_s: u32) -> Result<serde_json::Value> {
    let out = py_command_with(ns, script, arg, timeout_s)
        .output()
        .with_context(|| format!("running {script}"))?;
    py_report(script, out)
}

/// Run `tests/py/<script>` in `ns` with the JSON argument `cfg` (at most
/// 60 s); the JSON report on its last line of output.
pub fn py_tool(ns: &str, script: &str, cfg: &serde_json::Value) -> Result<serde_json::Value> {
    py_script(ns, script, &cfg.to_string(), 60)
}

/// The command that runs `tests/py/<script>` in `ns` with the JSON
/// argument `cfg`, killed after 60 s (for [`py_tool`], or to spawn).
pub fn py_command(ns: &str, script: &str, cfg: &serde_json::Value) -> Command {
    py_command_with(ns, script, &cfg.to_string(), 60)
}

/// `timeout T ip netns exec NS <venv python> tests/py/<script> ARG`.
fn py_command_with(ns: &str, script: &str, arg: &str, timeout_s: u32) -> Command {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script);
    let mut c = Command::new("timeout");
    c.args([&timeout_s.to_string(), "ip", "netns", "exec", ns])
        .arg(venv_python())
        .arg(&path)
        .arg(arg);
    c
}

/// The JSON report on the last line of a Python tool's output.
pub fn py_report(script: &str, out: std::process::Output) -> Result<serde_json::Value> {
    if !out.status.success() {
        bail!(
            "{script} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("{script} report: {stdout}"))
}

/// `GET path` over HTTP/1.0 from `listen` inside `ns`: the response's
/// head and body.
pub fn http_get(ns: &str, listen: &str, path: &str) -> Result<(String, String)> {
    let body = Lab::in_ns(ns, || -> Result<String> {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(listen)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
        let mut r = String::new();
        s.read_to_string(&mut r)?;
        Ok(r)
    })??;
    let (head, text) = body
        .split_once("\r\n\r\n")
        .with_context(|| format!("not an HTTP response: {body}"))?;
    Ok((head.to_string(), text.to_string()))
}

/// `GET /metrics` from `listen` inside `ns` (200, OpenMetrics content
/// type), parsed by the Prometheus project's own OpenMetrics parser
/// (tests/py/openmetrics_parse.py): its samples, `{"name", "labels",
/// "value", "type"}`.
pub fn scrape_metrics(ns: &str, listen: &str) -> Result<Vec<serde_json::Value>> {
    let (head, text) = http_get(ns, listen, "/metrics")?;
    if !head.contains(" 200 ") {
        bail!("GET /metrics: {head}");
    }
    if !head
        .to_ascii_lowercase()
        .contains("content-type: application/openmetrics-text")
    {
        bail!("GET /metrics: not OpenMetrics text: {head}");
    }
    let dir = scratch_dir("metrics");
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &text)?;
    let out = Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("py/openmetrics_parse.py"))
        .arg(&file)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if !out.status.success() {
        bail!(
            "the OpenMetrics parser refused it: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The sum of the samples named `name` whose labels include `labels`
/// (None when there is none).
pub fn metric(samples: &[serde_json::Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut hits = samples
        .iter()
        .filter(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap_or(f64::NAN))
        .peekable();
    hits.peek()?;
    Some(hits.sum())
}

/// Config text `text` (a node's, `socket = "{socket}"` in it) written to
/// `dir/gen.toml` as a generator's config, with `state` as its
/// `state_dir` (the sequence-number reservations: keep one across runs
/// that use the same key); its path.
pub fn gen_config(text: &str, dir: &Path, state: &Path) -> PathBuf {
    let text = text.replace(
        "socket = \"{socket}\"",
        &format!(
            "socket = \"{}\"\nstate_dir = \"{}\"",
            dir.join("unused.sock").display(),
            state.display()
        ),
    );
    let p = dir.join("gen.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Start `xdpsec gen --config CONFIG --json ARGS` in `ns`, killed after
/// `timeout_s` seconds at the latest; collect its report with
/// [`gen_report`].
pub fn spawn_gen(ns: &str, config: &Path, args: &[&str], timeout_s: u32) -> Result<Child> {
    Command::new("timeout")
        .args([&timeout_s.to_string(), "ip", "netns", "exec", ns])
        .arg(xdpsec_bin())
        .args(["gen", "--config"])
        .arg(config)
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning xdpsec gen")
}

/// Wait for a generator from [`spawn_gen`]: its `--json` report, or what
/// it said on stderr when it failed.
pub fn gen_report(child: Child) -> Result<serde_json::Value> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "xdpsec gen failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// [`spawn_gen`], then [`gen_report`].
pub fn run_gen(
    ns: &str,
    config: &Path,
    args: &[&str],
    timeout_s: u32,
) -> Result<serde_json::Value> {
    gen_report(spawn_gen(ns, config, args, timeout_s)?)
}

/// One per-queue counter of `show platform hardware qfp active
/// statistics` (`--json`), summed over the queues.
pub fn queue_counter(d: &Daemon, name: &str) -> u64 {
    let st = d
        .cli_json("show platform hardware qfp active statistics")
        .unwrap();
    st["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q[name].as_u64().unwrap())
        .sum()
}

/// Packets decapsulated, summed over every SA of `show crypto ipsec sa`.
pub fn sa_decaps(d: &Daemon) -> Result<u64> {
    let sa = d.cli_json("show crypto ipsec sa")?;
    Ok(sa["sas"]
        .as_array()
        .context("no `sas` in show crypto ipsec sa")?
        .iter()
        .filter_map(|r| r["pkts_decaps"].as_u64())
        .sum())
}

/// The daemon's non-zero QFP drop rows as {id: packets} (`show platform
/// hardware qfp active feature ipsec datapath drops --json`).
pub fn drop_rows(d: &Daemon) -> std::collections::BTreeMap<u64, u64> {
    d.cli_json("show platform hardware qfp active feature ipsec datapath drops")
        .unwrap()["drops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["packets"] != 0)
        .map(|r| (r["id"].as_u64().unwrap(), r["packets"].as_u64().unwrap()))
        .collect()
}

/// Poll `ok` (every 20 ms) until it holds; panic naming `what` after `within`.
pub fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// ICMP echo requests the kernel of namespace `ns` received (`InEchos` of
/// its /proc/net/snmp): pings that got through, whatever else a tunnel
/// carries.
pub fn icmp_in_echos(ns: &str) -> u64 {
    let out = Lab::exec(ns, &["cat", "/proc/net/snmp"]).expect("/proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut icmp = text.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().unwrap_or(""), icmp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InEchos")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no Icmp InEchos in {ns}'s /proc/net/snmp:\n{text}"))
}

/// Time between the first line of `log` (`show logging`, IOS stamps
/// `*Mon dd hh:mm:ss.mmm: `) containing `from` and the first after it
/// containing `to`, by those stamps (the daemon's clock when it logged
/// them, not the test's); None when either is missing.
pub fn log_interval(log: &str, from: &str, to: &str) -> Option<Duration> {
    let ms_of_day = |l: &str| -> Option<u64> {
        // "*Dec  5 22:03:01.123: ..." -> the hh:mm:ss.mmm field.
        let t = l
            .strip_prefix('*')?
            .split(": ")
            .next()?
            .split_whitespace()
            .nth(2)?;
        let (hms, ms) = t.split_once('.')?;
        let mut f = hms.split(':').map(|x| x.parse::<u64>().ok());
        let (h, m, s) = (f.next()??, f.next()??, f.next()??);
        Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<u64>().ok()?)
    };
    let mut lines = log.lines();
    let a = ms_of_day(lines.by_ref().find(|l| l.contains(from))?)?;
    let b = ms_of_day(lines.find(|l| l.contains(to))?)?;
    // Across midnight: the later stamp is on the next day.
    Some(Duration::from_millis((b + 86_400_000 - a) % 86_400_000))
}

/// How long [`settle`] waits for a counter to reach its expected value, and
/// then for the datapath to drain (each its own deadline).
pub const REACH: Duration = Duration::from_secs(5);

/// What one daemon's datapath has seen and done: the frames its XDP
/// programs and kernel sockets counted (every frame bumps one XDP counter),
/// and each worker's `idle_polls` (`show platform hardware qfp active
/// statistics --json`).
fn pipeline(d: &Daemon) -> (u64, Vec<u64>) {
    let st = d
        .cli_json("show platform hardware qfp active statistics")
        .expect("show platform hardware qfp active statistics");
    let sum = |v: &serde_json::Value| -> u64 {
        v.as_object()
            .map_or(0, |m| m.values().filter_map(|x| x.as_u64()).sum())
    };
    let seen = sum(&st["xdp"]) + sum(&st["kernel"]) + sum(&st["inside_xdp"]);
    let idle = st["queues"]
        .as_array()
        .expect("queues in show platform hardware qfp active statistics")
        .iter()
        .map(|q| {
            q["idle_polls"]
                .as_u64()
                .expect("idle_polls per queue (an older xdpsec binary?)")
        })
        .collect();
    (seen, idle)
}

/// Wait until the datapath of every daemon in `ds` has drained: each worker
/// finished an idle poll (100 ms with nothing on its rx ring, handoff queue
/// or inside socket) that began after this call, so every frame queued to
/// it before was handled; and no new frame reached XDP or a kernel socket
/// meanwhile (else once more). Panics after [`REACH`], naming what kept
/// moving (a test that settles under steady traffic cannot use this).
///
/// A frame the sender has handed to its veth but that the receiving side's
/// softirq has not yet run for is not seen; the sender (scapy, `xdpsec gen`,
/// a packet socket) has returned from every send by the time a test settles.
pub fn drain(ds: &[&Daemon]) {
    let deadline = Instant::now() + REACH;
    loop {
        let before: Vec<_> = ds.iter().map(|d| pipeline(d)).collect();
        let mut now = before.clone();
        while now
            .iter()
            .zip(&before)
            .any(|((_, i1), (_, i0))| i1.iter().zip(i0).any(|(a, b)| a <= b))
        {
            assert!(
                Instant::now() < deadline,
                "the datapath did not drain within {REACH:?}: idle polls {before:?} -> {now:?} (frames seen, per-worker idle polls)"
            );
            std::thread::sleep(Duration::from_millis(20));
            now = ds.iter().map(|d| pipeline(d)).collect();
        }
        if now.iter().zip(&before).all(|((s1, _), (s0, _))| s1 == s0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the datapath did not drain within {REACH:?}: frames kept arriving ({before:?} -> {now:?})"
        );
    }
}

/// Poll `f` (every 20 ms, up to [`REACH`]) until it returns `want`, then
/// wait until `d`'s datapath has drained ([`drain`]) and return `f` read
/// once more: a frame the test sent that was still in a ring or a worker's
/// batch when `want` was first seen is counted by then, so a zero-count
/// check sees a late frame and an exact count an extra one. When `want` is
/// never reached, the last value (the assertion shows the difference).
/// Settle a tuple of every counter a step checks in one call.
pub fn settle<T: PartialEq>(d: &Daemon, want: T, f: impl FnMut() -> T) -> T {
    settle_on(&[d], want, f)
}

/// [`settle`], draining every daemon in `ds` (traffic that crosses from
/// one to the other).
pub fn settle_on<T: PartialEq>(ds: &[&Daemon], want: T, mut f: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + REACH;
    let mut v = f();
    while v != want {
        if Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
        v = f();
    }
    drain(ds);
    f()
}

/// Poll `f` until it returns `want` and has not changed for `quiet`; give
/// up (returning the last value) when `want` was not reached within
/// `reach`, or after `reach + quiet + 1 s` in all. With `quiet` zero, a
/// plain wait for a value. A non-zero `quiet` is for protocol state that
/// must hold still (sessions that stay up, a counter that has stopped
/// while traffic goes on), never for counting frames a test sent: that is
/// [`settle`].
pub fn settle_for<T: PartialEq>(
    want: T,
    quiet: Duration,
    reach: Duration,
    mut f: impl FnMut() -> T,
) -> T {
    let start = Instant::now();
    let cap = start + reach + quiet + Duration::from_secs(1);
    let mut last = f();
    let mut changed = start;
    loop {
        let now = Instant::now();
        if last == want && now >= changed + quiet {
            return last;
        }
        if (last != want && now >= start + reach) || now >= cap {
            return last;
        }
        std::thread::sleep(Duration::from_millis(20));
        let v = f();
        if v != last {
            changed = Instant::now();
            last = v;
        }
    }
}

/// Run tests/py/genie_parse.py (Cisco's genieparser, from the venv) on
/// `cases`: `[{"sa": TEXT, "drops": TEXT}, ...]`; returns its list of
/// `{"sa": {"parsed"|"error": ...}, "drops": {...}}`.
pub fn genie_parse(cases: &serde_json::Value) -> Result<serde_json::Value> {
    let dir = scratch_dir("genie");
    let input = dir.join("cases.json");
    std::fs::write(&input, serde_json::json!({ "cases": cases }).to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/genie_parse.py");
    let out = Command::new("timeout")
        .arg("120")
        .arg(venv_python())
        .arg(&script)
        .arg(&input)
        .output()
        .context("running genie_parse.py");
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if !out.status.success() {
        bail!(
            "genie_parse.py failed ({}): is genie installed in the venv (`cargo xtask setup`)?\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("genie_parse.py output: {stdout}"))
}

/// `ping -c count -i interval -I src dst` inside `ns`, bounded to 40 s;
/// (transmitted, received) from its summary line.
pub fn ping(ns: &str, src: &str, dst: &str, count: u32, interval: &str) -> (u32, u32) {
    let out = Command::new("timeout")
        .args([
            "40", "ip", "netns", "exec", ns, "ping", "-n", "-q", "-W", "1",
        ])
        .args(["-c", &count.to_string(), "-i", interval, "-I", src, dst])
        .output()
        .expect("running ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let num = |word: &str| -> u32 {
        let before = &line[..line.find(word).unwrap()];
        before.split_whitespace().last().unwrap().parse().unwrap()
    };
    (num("packets transmitted"), num("received"))
}

/// tshark capturing in `ns` with `args` (interface, filter, count...) to
/// `out`, stopped by SIGINT after `limit_s` seconds at most (`timeout`
/// passes a SIGINT sent to the child on); returns once tshark says it is
/// capturing.
pub fn start_tshark(ns: &str, args: &[&str], out: &Path, limit_s: u32) -> Child {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("timeout")
        .args([
            "-s",
            "INT",
            &limit_s.to_string(),
            "ip",
            "netns",
            "exec",
            ns,
            "tshark",
        ])
        .args(args)
        .arg("-w")
        .arg(out)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("tshark (Debian tshark; xtask/setup.sh installs it)");
    let mut err = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap_or(0) > 0, "tshark ended");
        if line.contains("Capturing on") {
            break;
        }
    }
    child
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that is 0 for 150 ms, then 1 (a late change): a zero check held still must see the 1.
    #[test]
    fn settle_for_waits_for_a_late_change() {
        let quiet = Duration::from_millis(500);
        let t0 = Instant::now();
        let late = || u32::from(t0.elapsed() > Duration::from_millis(150));
        assert_eq!(settle_for(0, quiet, Duration::from_secs(1), late), 1);
        // A value that reaches `want` and holds returns after the quiet period, not at the cap.
        let t0 = Instant::now();
        let v = settle_for(3, quiet, Duration::from_secs(3), || {
            (t0.elapsed().as_millis() / 100).min(3) as u32
        });
        assert_eq!(v, 3);
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // Never reached: give up after the reach time.
        let t0 = Instant::now();
        assert_eq!(settle_for(1, quiet, Duration::from_millis(300), || 0), 0);
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
