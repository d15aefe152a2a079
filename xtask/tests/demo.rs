//! `cargo xtask demo` end to end: the transcript shows every step of the
//! seed as the demo promises, and nothing is left behind, also after a
//! Ctrl-C. Runs the xtask binary with `--no-build` (the xdpsec binary from
//! `XDPSEC_BIN` or the newest build) and a namespace prefix of its own.
use std::{
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A demo run in its own process group (as a terminal runs it), removed by
/// prefix on drop whatever happened.
struct Run {
    child: Child,
    prefix: String,
}

impl Run {
    fn start(tag: &str) -> Run {
        let prefix = format!("xsdemo{tag}{}", std::process::id() % 0xffff);
        let child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["demo", "--fast", "--no-build", "--prefix", &prefix])
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning xtask demo");
        Run { child, prefix }
    }

    /// Signal the whole process group, as Ctrl-C in a terminal does.
    fn signal_group(&self, sig: i32) {
        // SAFETY: our child leads its own process group (process_group(0)).
        unsafe { libc::kill(-(self.child.id() as i32), sig) };
    }

    /// Wait up to `within` for the exit; SIGKILL the group after that.
    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                self.signal_group(libc::SIGKILL);
                let s = self.child.wait().unwrap();
                panic!("the demo did not finish in {within:?} ({s})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Namespaces of this run that exist.
    fn namespaces(&self) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .map(String::from)
            .collect()
    }

    /// How the harness names the demo's scratch directories (by its pid).
    fn scratch_tags(&self) -> [String; 2] {
        let pid = self.child.id();
        [
            format!("xdpsec-daemon-{pid}-"),
            format!("xdpsec-controller-{pid}-"),
        ]
    }

    /// What the run left behind: namespaces, the daemons' scratch
    /// directories, processes whose command line names them.
    fn leftovers(&self) -> Vec<String> {
        let mut left = self.namespaces();
        let tags = self.scratch_tags();
        for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if tags.iter().any(|t| name.starts_with(t)) {
                left.push(format!("directory {name}"));
            }
        }
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if tags.iter().any(|t| cmd.contains(t.as_str())) {
                left.push(format!(
                    "process {}: {cmd}",
                    e.file_name().to_string_lossy()
                ));
            }
        }
        left
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal_group(libc::SIGKILL);
            let _ = self.child.wait();
        }
        xdpsec_e2e::sdwan::lab_down(&self.prefix);
        // A demo that died without cleaning up leaves its daemons' scratch
        // directories (their processes went with the namespaces above).
        let pid = self.child.id();
        for e in std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("xdpsec-daemon-{pid}-"))
                || name.starts_with(&format!("xdpsec-controller-{pid}-"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Stdout lines as they come, on a channel (the demo writes its transcript there).
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn stderr_of(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    })
}

/// Each step of the seed, in order: a line of the transcript must contain
/// all the strings of a step, after the line that matched the step before.
const STEPS: &[&[&str]] = &[
    &["--- The fabric is up"],
    &["edge1# show sdwan control connections"],
    &["biz-internet", "up"],
    &["edge1# show sdwan bfd sessions"],
    &["192.0.2.2", "up"],
    &["ip netns exec", "ping", "-I 203.0.113.1 203.0.113.2"],
    &["3 packets transmitted, 3 received"],
    &["edge1# request platform software xdpsec fault forget-sa peer 198.51.100.2"],
    &["-I 203.0.113.1 203.0.113.2"],
    &["3 packets transmitted, 0 received"],
    &["edge1# show platform hardware qfp active feature ipsec datapath drops"],
    &["4 IN_US_V4_PKT_SA_NOT_FOUND_SPI"],
    &["edge1# show logging"],
    &[
        "%CRYPTO-4-RECVD_PKT_INV_SPI",
        "srcaddr=198.51.100.2",
        "input interface=Tunnel10001",
    ],
    &["BFD_STATE_CHANGE", "192.0.2.2", "up -> down"],
    &["edge1# show sdwan bfd sessions"],
    &["192.0.2.2", "down"],
    &["-I 203.0.113.1 203.0.113.3"],
    &["3 packets transmitted, 3 received"],
    &["--- Scenario 1"],
    &["edge1# show sdwan ipsec local-sa 198.51.100.1"],
    &["edge1# request platform software sdwan security ipsec-rekey"],
    &["Tunnel10001", "->"],
    &["edge1# show sdwan ipsec local-sa 198.51.100.1"],
    &["edge1# show sdwan bfd sessions"],
    &["192.0.2.2", "up"],
    &["-I 203.0.113.1 203.0.113.2"],
    &["3 packets transmitted, 3 received"],
    &["--- Scenario 2"],
    &["edge1# clear crypto sa peer 198.51.100.2"],
    &["3 packets transmitted, 0 received"],
    &["edge1# show crypto ipsec sa peer 198.51.100.2"],
    &["interface: Tunnel10001"],
    &["local  ident", "(198.51.100.1/255.255.255.255/0/12346)"],
    &["remote ident", "(198.51.100.2/255.255.255.255/0/12346)"],
    &["current_peer 198.51.100.2 port 12346"],
    &["#pkts encaps: 0,"],
    &["#pkts decaps: 0,"],
    &["192.0.2.2", "down"],
    &["-I 203.0.113.1 203.0.113.3"],
    &["3 packets transmitted, 3 received"],
    &["edge1# request platform software sdwan security ipsec-rekey"],
    &["edge1# show sdwan bfd sessions"],
    &["192.0.2.2", "down"],
    &["3 packets transmitted, 0 received"],
    &["edge1# clear sdwan omp all"],
    &["192.0.2.2", "up"],
    &["3 packets transmitted, 3 received"],
    &["edge1# clear crypto sa peer 198.51.100.2"],
    &["192.0.2.2", "down"],
    &["edge1# request platform software sdwan port_hop biz-internet"],
    &["12346 -> 12366"],
    &["edge1# show sdwan control local-properties"],
    &["port-hopped", "TRUE"],
    &["e0", "198.51.100.1", "12366", "biz-internet"],
    &["192.0.2.2", "up"],
    &["3 packets transmitted, 3 received"],
    &["edge2# show sdwan bfd sessions"],
    &["192.0.2.1", "198.51.100.1", "12366", "up"],
    &["edge1# clear crypto sa peer 198.51.100.2"],
    &["192.0.2.2", "down"],
    &["edge1# clear sdwan control connections"],
    &["192.0.2.2", "up"],
    &["3 packets transmitted, 3 received"],
    &["demo ok"],
];

/// The whole demo: every step shown in order, exit 0, nothing left.
#[test]
fn demo_transcript_shows_every_step_and_leaves_nothing() {
    let mut run = Run::start("t");
    let rx = lines_of(&mut run.child);
    let err = stderr_of(&mut run.child);
    let status = run.wait(Duration::from_secs(180));
    let transcript: Vec<String> = rx.try_iter().collect();
    let text = transcript.join("\n");
    let stderr = err.join().unwrap();
    assert!(
        status.success(),
        "demo failed ({status}):\n{text}\n{stderr}"
    );
    let mut at = 0;
    for step in STEPS {
        match transcript[at..]
            .iter()
            .position(|l| step.iter().all(|s| l.contains(s)))
        {
            Some(p) => at += p + 1,
            None => panic!("step {step:?} not in the transcript after line {at}:\n{text}"),
        }
    }
    assert_eq!(run.leftovers(), Vec::<String>::new());
}

/// Ctrl-C while the daemons start (as soon as the namespaces exist), then
/// in another run once the fabric is up: each time the demo says it was
/// interrupted, exits non-zero and removes everything.
#[test]
fn demo_interrupted_by_ctrl_c_removes_everything() {
    for (tag, once_up) in [("s", false), ("u", true)] {
        let mut run = Run::start(tag);
        let rx = lines_of(&mut run.child);
        let err = stderr_of(&mut run.child);
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut seen = Vec::new();
        let mut fabric_up = false;
        loop {
            assert!(
                Instant::now() < deadline,
                "no fabric in time:\n{}",
                seen.join("\n")
            );
            while let Ok(l) = rx.try_recv() {
                fabric_up |= l.contains("--- The fabric is up");
                seen.push(l);
            }
            if if once_up {
                fabric_up
            } else {
                run.namespaces().len() == 5
            } {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The fabric exists: the check below can fail.
        assert_eq!(run.namespaces().len(), 5, "{:?}", run.namespaces());
        run.signal_group(libc::SIGINT);
        let status = run.wait(Duration::from_secs(30));
        let stderr = err.join().unwrap();
        assert!(!status.success(), "the demo exited 0 after Ctrl-C");
        assert!(stderr.contains("interrupted"), "stderr: {stderr}");
        assert_eq!(run.leftovers(), Vec::<String>::new(), "once_up {once_up}");
    }
}
