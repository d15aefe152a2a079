//! `cargo xtask demo`: the seed's recovery from `%CRYPTO-4-RECVD_PKT_INV_SPI`
//! on an SD-WAN fabric, walked through as an engineer at the router would
//! see it: each command as `edge1# ...` with the real output of the running
//! daemons (filtered to the relevant lines where it is long, and saying so).
//!
//! The fabric is the harness's (`xdpsec_e2e::sdwan`): a controller and the
//! lab's three edges in namespaces `xdpsec-demo-*`, BFD at 200 ms x 3. Each
//! step checks that the fabric does what the seed says, so the demo fails
//! (non-zero exit) when a step misbehaves: it doubles as a smoke test.
//!
//! Cleanup: the [`Fabric`]'s `Drop` stops the daemons and removes the
//! namespaces (the veths, the bridge and the XDP programs go with them) when
//! the demo ends, fails or panics. Ctrl-C (SIGINT), SIGTERM and SIGHUP only
//! set a flag that every pause and wait checks, so the demo returns an error
//! and the same `Drop` runs; the terminal's Ctrl-C also reaches the daemons
//! (same process group), which stop by themselves and detach XDP.
use std::{
    collections::BTreeSet,
    io::Write,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use xdpsec_e2e::{
    Daemon,
    sdwan::{Fabric, Timers, lab_edges},
};

/// The demo's namespaces are `{PREFIX}-br`, `{PREFIX}-vsmart`, `{PREFIX}-edge1..3`.
pub const PREFIX: &str = "xdpsec-demo";

/// Set by SIGINT, SIGTERM or SIGHUP.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From here on SIGINT, SIGTERM and SIGHUP set [`INTERRUPTED`] instead of
/// killing the process, so the fabric's `Drop` still runs.
pub(crate) fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; the demo fabric was removed");
    }
    Ok(())
}

/// How the demo runs.
pub struct Options {
    /// No pauses (CI); also `XDPSEC_DEMO_FAST=1`.
    pub fast: bool,
    /// Namespace prefix (the tests give a unique one).
    pub prefix: String,
}

/// `cargo xtask demo`: build xdpsec (unless `build` is false: then the
/// harness's `XDPSEC_BIN` or newest build is used), then walk through the seed.
pub fn run(opts: &Options, build: bool) -> Result<()> {
    catch_signals();
    if build {
        let bin = crate::build_xdpsec()?;
        // SAFETY: no other thread runs yet; the harness reads XDPSEC_BIN to find the binary.
        unsafe { std::env::set_var("XDPSEC_BIN", &bin) };
    }
    let t0 = Instant::now();
    let r = walkthrough(opts);
    // The fabric is gone here (dropped inside `walkthrough`), also on error.
    check_interrupt()?;
    r?;
    println!(
        "\ndemo ok in {:.0} s; the fabric is removed (namespaces, daemons, XDP programs)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Edge 2's TLOC address: the peer edge 1 loses.
const PEER: &str = "198.51.100.2";
/// Edge 2's system-ip (its BFD sessions' `system_ip`).
const PEER_SYSTEM_IP: &str = "192.0.2.2";
/// Edge 1's TLOC address.
const EDGE1_TLOC: &str = "198.51.100.1";

/// Which lines of an output to print: what they are (for the note) and the test.
type Filter<'a> = (&'a str, &'a dyn Fn(&str) -> bool);

/// The running fabric and the pace of the walk-through.
struct Walk {
    f: Fabric,
    fast: bool,
}

impl Walk {
    /// Let a person read what was just printed: longer for longer output.
    fn pause(&self, lines: usize) -> Result<()> {
        let ms = if self.fast {
            0
        } else {
            (500 + 80 * lines as u64).min(2500)
        };
        sleep(Duration::from_millis(ms))
    }

    /// An explanation line before a step.
    fn say(&self, text: &str) -> Result<()> {
        println!("\n{text}");
        flush();
        self.pause(6)
    }

    fn edge(&self, i: usize) -> &Daemon {
        self.f.edge(i)
    }

    /// `edgeI# command` and its whole output.
    fn cmd(&self, i: usize, command: &str) -> Result<String> {
        self.cmd_filtered(i, command, None)
    }

    /// `edgeI# command`; with `keep`, only the lines it keeps are printed,
    /// with a note saying how many were left out (never other text).
    fn cmd_filtered(&self, i: usize, command: &str, keep: Option<Filter<'_>>) -> Result<String> {
        check_interrupt()?;
        println!("\nedge{i}# {command}");
        let out = self
            .edge(i)
            .cli(command)
            .map_err(|e| anyhow::anyhow!("edge{i}# {command}: {}", e.trim()))?;
        let shown = match keep {
            None => {
                print!("{out}");
                out.lines().count()
            }
            Some((what, keep)) => {
                let lines: Vec<&str> = out.lines().filter(|l| keep(l)).collect();
                for l in &lines {
                    println!("{l}");
                }
                println!(
                    "  [{what}; {} other lines not shown]",
                    out.lines().count() - lines.len()
                );
                lines.len()
            }
        };
        flush();
        self.pause(shown)?;
        Ok(out)
    }

    /// A ping from edge `i`'s inside address to edge `j`'s, as a shell
    /// command; its reply and summary lines. Returns (transmitted, received).
    fn ping(&self, i: usize, j: usize) -> Result<(u32, u32)> {
        check_interrupt()?;
        let (ns, src, dst) = (
            &self.f.edge_ns[i - 1],
            Fabric::inside_ip(i),
            Fabric::inside_ip(j),
        );
        let args = [
            "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-I", &src, &dst,
        ];
        println!("\n# ip netns exec {ns} {}", args.join(" "));
        let out = std::process::Command::new("timeout")
            .args(["20", "ip", "netns", "exec", ns])
            .args(args)
            .output()
            .context("running ping")?;
        check_interrupt()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut result = None;
        for l in text.lines() {
            if l.contains("bytes from") || l.contains("packets transmitted") {
                println!("{l}");
            }
            if l.contains("packets transmitted") {
                let num = |word: &str| -> Option<u32> {
                    l[..l.find(word)?].split_whitespace().last()?.parse().ok()
                };
                result = num("packets transmitted").zip(num("received"));
            }
        }
        flush();
        self.pause(4)?;
        result.with_context(|| format!("no ping summary: {text}"))
    }

    /// Wait (up to `within`) until every BFD session of edge `i` to the
    /// edge with system-ip `system_ip` is in `state` (there is one at least).
    fn wait_bfd(&self, i: usize, system_ip: &str, state: &str, within: Duration) -> Result<bool> {
        let deadline = Instant::now() + within;
        loop {
            check_interrupt()?;
            let rows: Vec<Value> = self
                .f
                .bfd_sessions(i)
                .into_iter()
                .filter(|r| r["system_ip"] == system_ip)
                .collect();
            if !rows.is_empty() && rows.iter().all(|r| r["state"] == state) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            sleep(Duration::from_millis(50))?;
        }
    }

    /// Whether every edge has its control connections and all the BFD
    /// sessions of the full mesh up (ports not compared: a port hop moves one).
    fn all_up(&self) -> bool {
        let all: Vec<usize> = (1..=self.f.len()).collect();
        all.iter().all(|&i| {
            let conns = self.f.control_state(i);
            let bfd = self.f.bfd_state(i);
            conns.len() == self.f.colors(i).len()
                && conns.iter().all(|c| c.2 == "up")
                && bfd.len() == self.f.expected_bfd(i, &all).len()
                && bfd.iter().all(|(_, s)| s == "up")
        })
    }

    /// Wait (up to `within`) until [`Walk::all_up`] holds for 300 ms.
    // Not the harness's `settle_for`: that polls on until `within` has
    // passed when the state is not reached, and a Ctrl-C must end the wait.
    fn wait_all_up(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut up_since: Option<Instant> = None;
        loop {
            check_interrupt()?;
            let now = Instant::now();
            if self.all_up() {
                let since = *up_since.get_or_insert(now);
                if now >= since + Duration::from_millis(300) {
                    return Ok(());
                }
            } else {
                up_since = None;
            }
            if now >= deadline {
                bail!(
                    "the fabric did not come (back) up within {within:?}: edge1 BFD {:?}",
                    self.f.bfd_state(1)
                );
            }
            sleep(Duration::from_millis(50))?;
        }
    }

    /// `show sdwan bfd sessions` on edge 1, after waiting until its
    /// sessions to edge 2 are `state`; fails when they do not get there.
    fn bfd_to_peer_is(&self, state: &str, within: Duration) -> Result<()> {
        let ok = self.wait_bfd(1, PEER_SYSTEM_IP, state, within)?;
        let out = self.cmd(1, "show sdwan bfd sessions")?;
        ensure!(
            ok,
            "edge1's BFD session to {PEER_SYSTEM_IP} is not {state}:\n{out}"
        );
        Ok(())
    }

    /// Ping edge 1 -> edge `j` and require `want` replies of 3.
    fn ping_expect(&self, j: usize, want: u32) -> Result<()> {
        let (tx, rx) = self.ping(1, j)?;
        ensure!(
            tx == 3 && rx == want,
            "ping edge1 -> edge{j}: {rx} of {tx} replies, expected {want} of 3"
        );
        Ok(())
    }

    /// Edge 1's inbound SPIs on biz-internet, from `show sdwan ipsec
    /// local-sa` (after a rekey the old one stays for the grace time).
    fn local_spis(&self) -> Result<BTreeSet<u64>> {
        let v = self
            .edge(1)
            .cli_json(&format!("show sdwan ipsec local-sa {EDGE1_TLOC}"))?;
        Ok(v["local_sa"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["spi"].as_u64())
            .collect())
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// Sleep in short slices, returning early with an error when interrupted.
fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// The walk-through itself; the fabric is removed when it returns.
pub fn walkthrough(opts: &Options) -> Result<()> {
    let fast = opts.fast || std::env::var("XDPSEC_DEMO_FAST").is_ok_and(|v| v == "1");
    println!(
        "xdpsec demo: the seed's %CRYPTO-4-RECVD_PKT_INV_SPI and its recoveries on an SD-WAN fabric\n\
         A controller (vsmart, 198.51.100.10) and three edges in network namespaces {p}-*,\n\
         on a bridge (underlay 198.51.100.0/24), BFD 200 ms x 3 so that failures show within a second:",
        p = opts.prefix
    );
    let f = Fabric::named(&opts.prefix, lab_edges(), Timers::fast());
    for i in 1..=f.len() {
        let tlocs: Vec<String> = f
            .colors(i)
            .iter()
            .enumerate()
            .map(|(k, c)| {
                format!(
                    "{} {c} {}:{}",
                    Fabric::tunnel_name(k),
                    f.tloc_ip(i, k),
                    Fabric::tloc_port(k)
                )
            })
            .collect();
        println!(
            "  edge{i}: system-ip {}, inside {}, TLOC {}",
            Fabric::system_ip(i),
            Fabric::inside_ip(i),
            tlocs.join(", ")
        );
    }
    println!(
        "Every output below is the running daemons' (xdpsec cli); ping runs in the edges' namespaces."
    );
    flush();
    check_interrupt()?;
    let mut f = f.up()?;
    check_interrupt()?;
    f.start()?;
    let w = Walk { f, fast };
    w.wait_all_up(Duration::from_secs(30))?;

    w.say("--- The fabric is up: edge1 has a control connection to the vsmart and a BFD session per remote TLOC")?;
    w.cmd(1, "show sdwan control connections")?;
    w.cmd(1, "show sdwan bfd sessions")?;
    w.ping_expect(2, 3)?;

    w.say(&format!(
        "--- The failure: edge1's datapath loses its inbound SA for edge2 ({PEER}) (fault injection).\n\
         Nobody is told: edge2 keeps encrypting to the SPI edge1 advertised, and edge1 no longer knows it."
    ))?;
    w.cmd(
        1,
        "clear platform hardware qfp active feature ipsec datapath drops",
    )?;
    w.cmd(
        1,
        &format!("request platform software xdpsec fault forget-sa peer {PEER}"),
    )?;
    w.say("--- edge2's replies (and its BFD packets) are now dropped on edge1")?;
    w.ping_expect(2, 0)?;
    let drops = w.cmd(
        1,
        "show platform hardware qfp active feature ipsec datapath drops",
    )?;
    // The seed's signature: a forgotten SPI is unknown (4), never a
    // recently deleted SA (1), and nothing else is dropped.
    let rows: Vec<&str> = drops
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    ensure!(
        rows.len() == 1 && rows[0].starts_with("4 IN_US_V4_PKT_SA_NOT_FOUND_SPI "),
        "expected only 4 IN_US_V4_PKT_SA_NOT_FOUND_SPI:\n{drops}"
    );
    // BFD to edge2 goes down within its detect time (600 ms); wait for it
    // so that the log shows the state change too.
    let down = w.wait_bfd(1, PEER_SYSTEM_IP, "down", Duration::from_secs(5))?;
    let inv_spi = |l: &str| l.contains("%CRYPTO-4-RECVD_PKT_INV_SPI");
    let log = w.cmd_filtered(
        1,
        "show logging",
        Some((
            "the %CRYPTO-4-RECVD_PKT_INV_SPI lines and BFD sessions going down",
            &|l: &str| inv_spi(l) || (l.contains("BFD_STATE_CHANGE") && l.contains("up -> down")),
        )),
    )?;
    ensure!(
        log.lines().any(|l| inv_spi(l)
            && l.contains(&format!("srcaddr={PEER}"))
            && l.contains("input interface=Tunnel10001")),
        "no %CRYPTO-4-RECVD_PKT_INV_SPI line from {PEER} on Tunnel10001:\n{log}"
    );
    ensure!(
        down,
        "edge1's BFD session to {PEER_SYSTEM_IP} did not go down"
    );
    w.bfd_to_peer_is("down", Duration::from_secs(5))?;
    w.say("--- The other peers are not affected")?;
    w.ping_expect(3, 3)?;

    w.say(
        "--- Scenario 1: SD-WAN tunnels have no IKE (the controller distributes the keys), so clearing\n\
         would not renegotiate. ipsec-rekey generates a new SPI and key now and advertises them.",
    )?;
    let before = w.local_spis()?;
    w.cmd(1, &format!("show sdwan ipsec local-sa {EDGE1_TLOC}"))?;
    w.cmd(1, "request platform software sdwan security ipsec-rekey")?;
    w.cmd(1, &format!("show sdwan ipsec local-sa {EDGE1_TLOC}"))?;
    let after = w.local_spis()?;
    ensure!(
        !before.is_empty() && after.difference(&before).count() == 1,
        "ipsec-rekey gave no new SPI: {before:x?} before, {after:x?} after"
    );
    w.bfd_to_peer_is("up", Duration::from_secs(10))?;
    w.wait_all_up(Duration::from_secs(10))?;
    w.ping_expect(2, 3)?;

    w.say(
        "--- Scenario 2: clear crypto sa peer on an SD-WAN tunnel deletes the SAs with edge2, and with no IKE\n\
         nothing negotiates new ones: encaps and decaps stay at 0, BFD stays down.",
    )?;
    w.cmd(1, &format!("clear crypto sa peer {PEER}"))?;
    w.ping_expect(2, 0)?;
    w.show_sa_stuck()?;
    w.bfd_to_peer_is("down", Duration::from_secs(5))?;
    w.ping_expect(3, 3)?;

    w.say(
        "--- ipsec-rekey does not bring it back: edge1 advertises a new SPI, but the cleared tunnel to edge2\n\
         takes no new keys from OMP until it is rebuilt",
    )?;
    w.cmd(1, "request platform software sdwan security ipsec-rekey")?;
    // BFD at 200 ms would be up within a second if the rekey had helped.
    let came_up = w.wait_bfd(1, PEER_SYSTEM_IP, "up", Duration::from_secs(3))?;
    w.cmd(1, "show sdwan bfd sessions")?;
    ensure!(
        !came_up,
        "BFD to {PEER_SYSTEM_IP} came up after ipsec-rekey"
    );
    w.ping_expect(2, 0)?;

    w.say("--- Recovery 1 of 3: clear sdwan omp all withdraws and relearns every OMP route; every tunnel is rebuilt\n\
         (all BFD sessions of the device flap)")?;
    w.cmd(1, "clear sdwan omp all")?;
    w.recovered()?;

    w.say("--- Recovery 2 of 3: port_hop moves the biz-internet TLOC to its next port (12346 -> 12366);\n\
         the control connection and BFD sessions of that color flap, the peers learn the new port.\n\
         First, break it again:")?;
    w.break_again()?;
    w.cmd(1, "request platform software sdwan port_hop biz-internet")?;
    let props = w.cmd_filtered(
        1,
        "show sdwan control local-properties",
        Some(("the port-hop and WAN interface lines", &|l: &str| {
            l.starts_with("port-hopped")
                || l.starts_with("time-since-last-port-hop")
                || l.starts_with("INTERFACE")
                || l.contains("PUBLIC")
                || l.contains("STUN")
                || l.starts_with("---")
                || l.contains("biz-internet")
        })),
    )?;
    ensure!(
        props
            .lines()
            .any(|l| l.starts_with("e0 ") && l.contains(" 12366 ") && l.contains("biz-internet")),
        "port 12366 not in local-properties after port_hop:\n{props}"
    );
    w.recovered()?;
    w.say("--- edge2 reaches edge1's TLOC on its new port")?;
    let bfd2 = w.cmd(2, "show sdwan bfd sessions")?;
    ensure!(
        bfd2.lines().any(|l| l.contains(&format!(" {EDGE1_TLOC} "))
            && l.contains(" 12366 ")
            && l.contains(" up ")),
        "edge2 has no BFD session up to {EDGE1_TLOC}:12366:\n{bfd2}"
    );

    w.say("--- Recovery 3 of 3: clear sdwan control connections flaps every control connection and BFD session;\n\
         everything is relearned. Break it again first:")?;
    w.break_again()?;
    w.cmd(1, "clear sdwan control connections")?;
    w.recovered()?;

    w.say("--- Done: removing the fabric (daemons, namespaces, XDP programs)")?;
    drop(w);
    Ok(())
}

impl Walk {
    /// `show crypto ipsec sa peer` after the clear: the relevant lines, and
    /// encaps and decaps at 0 as in the seed.
    fn show_sa_stuck(&self) -> Result<()> {
        let keep = |l: &str| {
            let t = l.trim_start();
            // The lines of the seed's abridged output.
            [
                "interface:",
                "Crypto map tag:",
                "protected vrf:",
                "local  ident",
                "remote ident",
                "current_peer",
                "PERMIT,",
                "#pkts encaps",
                "#pkts decaps",
                "#send errors",
            ]
            .iter()
            .any(|p| t.starts_with(p))
        };
        let out = self.cmd_filtered(
            1,
            &format!("show crypto ipsec sa peer {PEER}"),
            Some(("the lines of the seed's abridged output", &keep)),
        )?;
        ensure!(
            out.contains("#pkts encaps: 0,") && out.contains("#pkts decaps: 0,"),
            "encaps/decaps are not 0 after clear crypto sa peer:\n{out}"
        );
        Ok(())
    }

    /// `clear crypto sa peer` again, BFD to edge2 down.
    fn break_again(&self) -> Result<()> {
        self.cmd(1, &format!("clear crypto sa peer {PEER}"))?;
        self.bfd_to_peer_is("down", Duration::from_secs(5))
    }

    /// After a recovery command: BFD to edge2 up, the whole fabric up, ping OK.
    fn recovered(&self) -> Result<()> {
        self.bfd_to_peer_is("up", Duration::from_secs(20))?;
        // Edge 1's session is up once it hears edge 2; edge 2's side (and
        // its route to edge 1, installed at BFD up) may follow a moment
        // later: wait for the whole fabric before pinging.
        self.wait_all_up(Duration::from_secs(20))?;
        self.ping_expect(2, 3)
    }
}
