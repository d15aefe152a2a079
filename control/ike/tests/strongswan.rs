//! Interop with strongSwan 5.9.8 (charon with kernel-libipsec, so it does
//! ESP in userspace): the core, in the `ike_peer` example's thin shell,
//! negotiates with charon in two network namespaces, as initiator and as
//! responder, and proves the child keys by exchanging ESP-in-UDP pings
//! (our echo request decrypted by charon, its reply decrypted by us).
//! Without root, charon or swanctl: ignored, or a failure under `cargo
//! xtask test` and CI (`xdpsec_testenv`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const CHARON: &str = "/usr/lib/ipsec/charon";

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Lab {
    a: String,
    b: String,
    dir: PathBuf,
    charon: Option<Child>,
    /// The example shell ([`peer`]).
    peer: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        eprintln!("strongswan interop: setting up namespaces");
        let id = std::process::id() % 100000;
        let (a, b) = (format!("xike{id}a"), format!("xike{id}b"));
        let dir = std::env::temp_dir().join(format!("xike{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            a: a.clone(),
            b: b.clone(),
            dir,
            charon: None,
            peer: peer(),
        };
        let (va, vb) = (format!("xike{id}va"), format!("xike{id}vb"));
        for cmd in [
            vec!["ip", "netns", "add", &a],
            vec!["ip", "netns", "add", &b],
            vec![
                "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
            ],
            vec!["ip", "link", "set", &va, "netns", &a],
            vec!["ip", "link", "set", &vb, "netns", &b],
            vec!["ip", "-n", &a, "addr", "add", "198.51.100.1/24", "dev", &va],
            vec!["ip", "-n", &b, "addr", "add", "198.51.100.2/24", "dev", &vb],
            vec!["ip", "-n", &a, "link", "set", &va, "up"],
            vec!["ip", "-n", &b, "link", "set", &vb, "up"],
            vec!["ip", "-n", &a, "link", "set", "lo", "up"],
            vec!["ip", "-n", &b, "link", "set", "lo", "up"],
            // charon's side of the inner network: its traffic selector.
            vec!["ip", "-n", &b, "addr", "add", "203.0.113.2/32", "dev", "lo"],
            vec![
                "ip",
                "netns",
                "exec",
                &b,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.rp_filter=0",
            ],
        ] {
            assert!(sh(&cmd), "{cmd:?}");
        }
        lab
    }

    /// Start charon in namespace b (own mount namespace, tmpfs /run) with
    /// this swanctl.conf; returns once charon lists the connection.
    fn start_charon(&mut self, swanctl: &str) {
        self.stop_charon();
        let d = self.dir.display();
        std::fs::write(
            self.dir.join("strongswan.conf"),
            format!(
                "charon {{\n  load = random nonce openssl aesni aes sha1 sha2 hmac gcm kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici\n  install_routes = yes\n  retransmit_tries = 3\n  plugins {{\n    vici {{ socket = unix://{d}/charon.vici }}\n  }}\n  filelog {{\n    f {{ path = {d}/charon.log\n        default = 1\n        ike = 2\n        append = no\n        flush_line = yes\n    }}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        std::fs::write(self.dir.join("swanctl.conf"), swanctl).unwrap();
        // The shell becomes charon (exec): our child is charon itself.
        std::fs::write(
            self.dir.join("run.sh"),
            format!(
                "mount -t tmpfs tmpfs /run\nexport STRONGSWAN_CONF={d}/strongswan.conf\nexec {CHARON}\n"
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.b, "unshare", "-m", "sh"])
            .arg(self.dir.join("run.sh"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start charon");
        self.charon = Some(child);
        // charon answers on its vici socket, loads the connection, lists it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let wait = |what: &str, ok: &mut dyn FnMut() -> bool| {
            while !ok() {
                assert!(
                    Instant::now() < deadline,
                    "charon: {what} within 10 s\n{}",
                    self.charon_log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        wait("vici answers", &mut || {
            self.swanctl(&["--stats"]).status.success()
        });
        let conf = self.dir.join("swanctl.conf");
        let load = self.swanctl(&["--load-all", "--file", conf.to_str().unwrap()]);
        assert!(
            load.status.success(),
            "swanctl --load-all: {}{}",
            String::from_utf8_lossy(&load.stdout),
            String::from_utf8_lossy(&load.stderr)
        );
        wait("connection x listed", &mut || {
            String::from_utf8_lossy(&self.swanctl(&["--list-conns"]).stdout)
                .lines()
                .any(|l| l.starts_with("x: "))
        });
    }

    /// `swanctl ARGS` against our charon's vici socket.
    fn swanctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("swanctl")
            .args(args)
            .arg("--uri")
            .arg(format!("unix://{}/charon.vici", self.dir.display()))
            .stdin(Stdio::null())
            .output()
            .expect("running swanctl")
    }

    /// SIGTERM to charon; SIGKILL if it has not exited in 5 s.
    fn stop_charon(&mut self) {
        if let Some(mut c) = self.charon.take() {
            let _ = sh(&["kill", "-TERM", &c.id().to_string()]);
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().is_ok_and(|s| s.is_none()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run the example shell in namespace a; returns its events.
    fn run_peer(&self, cfg: Value) -> Vec<Value> {
        let bin = &self.peer;
        assert!(bin.exists(), "{} missing", bin.display());
        eprintln!("strongswan interop: running ike_peer {cfg}");
        let out = Command::new("timeout")
            .args(["120", "ip", "netns", "exec", &self.a])
            .arg(bin)
            .arg(cfg.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ike_peer: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn charon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_charon();
        let _ = sh(&["ip", "netns", "del", &self.a]);
        let _ = sh(&["ip", "netns", "del", &self.b]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn swanctl(ike: &str, esp: &str, extra_ike: &str, extra_child: &str) -> String {
    format!(
        r#"connections {{
  x {{
    version = 2
    local_addrs = 198.51.100.2
    remote_addrs = 198.51.100.1
    proposals = {ike}
    encap = yes
    {extra_ike}
    local {{
      auth = psk
      id = 198.51.100.2
    }}
    remote {{
      auth = psk
      id = 198.51.100.1
    }}
    children {{
      c {{
        local_ts = 203.0.113.2/32
        remote_ts = 203.0.113.1/32
        esp_proposals = {esp}
        {extra_child}
      }}
    }}
  }}
}}
secrets {{
  ike-1 {{
    id-1 = 198.51.100.1
    id-2 = 198.51.100.2
    secret = "an example psk"
  }}
}}
"#
    )
}

fn peer_cfg(ike: &str, esp: &str, initiate: bool, seconds: u64, schedule: Value) -> Value {
    json!({"local": "198.51.100.1", "remote": "198.51.100.2", "psk": "an example psk", "ike": ike, "esp": esp,
        "local_ts": "203.0.113.1/32", "remote_ts": "203.0.113.2/32", "seconds": seconds,
        "initiate": initiate, "force_encap": initiate, "schedule": schedule})
}

/// Each ping sent got its echo reply decrypted on the inbound SA of the
/// same child (the last one installed before it).
fn check_pings(ev: &[Value], log: &str) {
    let mut sent = 0;
    let mut ok = 0;
    let mut last_in = None;
    for (i, e) in ev.iter().enumerate() {
        match e["ev"].as_str().unwrap() {
            "add_inbound" => last_in = e["spi"].as_u64(),
            "ping_sent" => {
                sent += 1;
                let reply = ev[i + 1..].iter().find(|x| {
                    x["ev"] == "esp_ok" || x["ev"] == "esp_bad" || x["ev"] == "ping_sent"
                });
                let r = reply.unwrap_or_else(|| panic!("no reply to ping {e}\n{ev:#?}\n{log}"));
                assert_eq!(r["ev"], "esp_ok", "{r}\n{ev:#?}");
                assert_eq!(r["icmp_type"], 0);
                assert_eq!(r["src"], "203.0.113.2");
                assert_eq!(
                    r["spi"].as_u64(),
                    last_in,
                    "reply on another SA than the newest"
                );
                ok += 1;
            }
            "esp_bad" => panic!("ESP from charon we could not decrypt: {e}\n{ev:#?}"),
            _ => {}
        }
    }
    assert!(sent > 0 && ok == sent);
}

fn lines(ev: &[Value]) -> String {
    ev.iter()
        .filter(|e| e["ev"] == "log")
        .map(|e| e["line"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The example shell: the one `XDPSEC_IKE_PEER` names (`cargo xtask test`
/// passes the one its workspace build just compiled), else built here with
/// this test's profile (`cargo test --test strongswan` alone does not build
/// examples; a stale one would test old code).
fn peer() -> PathBuf {
    if let Some(p) = std::env::var_os("XDPSEC_IKE_PEER") {
        return PathBuf::from(p);
    }
    build_peer();
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/ike_peer")
}

fn build_peer() {
    let mut c = Command::new(env!("CARGO"));
    c.args([
        "build",
        "--quiet",
        "-p",
        "xdpsec-ike",
        "--example",
        "ike_peer",
        "--manifest-path",
    ])
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if !cfg!(debug_assertions) {
        c.arg("--release");
    }
    assert!(
        c.status().is_ok_and(|s| s.success()),
        "building examples/ike_peer failed"
    );
}

fn strongswan_interop() {
    let mut lab = Lab::new();

    // 1. We initiate (AES-GCM-256, X25519); our rekeys of the child and
    //    the IKE SA, and `clear crypto sa peer`, with pings between.
    lab.start_charon(&swanctl(
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        "",
        "start_action = none",
    ));
    let sched = json!([
        [1, "ping"],
        [2, "rekey-child"],
        [3, "ping"],
        [4, "rekey-ike"],
        [5, "ping"],
        [6, "clear-child"],
        [7, "ping"]
    ]);
    let ev = lab.run_peer(peer_cfg(
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        true,
        8,
        sched,
    ));
    let log = lines(&ev);
    check_pings(&ev, &lab.charon_log());
    assert!(
        log.contains("IKE SA established as initiator") && log.contains("NAT-T"),
        "{log}"
    );
    assert!(
        log.contains("child SA rekeyed") && log.contains("IKE SA rekeyed"),
        "{log}"
    );
    assert!(log.contains("clearing 2 child SA(s)"), "{log}");
    let end = ev.last().unwrap();
    assert_eq!(end["sas"].as_array().unwrap().len(), 1, "{end}");
    assert_eq!(end["sas"][0]["status"], "Ready");
    let clog = lab.charon_log();
    assert!(
        clog.contains("CHILD_SA c{") && !clog.contains("AUTHENTICATION_FAILED"),
        "{clog}"
    );

    // 2. charon initiates (AES-CBC-256 + HMAC-SHA2-256, ECP-256) and
    //    rekeys the child every 4 s and the IKE SA after 9 s.
    lab.start_charon(&swanctl(
        "aes256-sha256-ecp256",
        "aes256-sha256",
        "rekey_time = 9s\n    over_time = 5s\n    rand_time = 0",
        "start_action = start\n        rekey_time = 4s\n        rand_time = 0\n        life_time = 30s",
    ));
    let sched = json!([[2, "ping"], [6, "ping"], [11, "ping"], [13, "ping"]]);
    let ev = lab.run_peer(peer_cfg(
        "aes256-sha256-ecp256",
        "aes256-sha256",
        false,
        14,
        sched,
    ));
    let log = lines(&ev);
    check_pings(&ev, &lab.charon_log());
    assert!(
        log.contains("IKE SA established as responder")
            && log.contains("AES-CBC-256 HMAC-SHA2-256-128 PRF-HMAC-SHA2-256 DH group 19"),
        "{log}"
    );
    assert!(log.matches("child SA rekeyed").count() >= 2, "{log}");
    assert!(log.contains("IKE SA rekeyed"), "{log}");

    // 3. A wrong PSK: refused with a clear line on both sides.
    lab.start_charon(
        &swanctl(
            "aes256gcm16-prfsha256-x25519",
            "aes256gcm16",
            "",
            "start_action = none",
        )
        .replace("an example psk", "another psk"),
    );
    let ev = lab.run_peer(peer_cfg(
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        true,
        3,
        json!([]),
    ));
    let log = lines(&ev);
    assert!(log.contains("AUTHENTICATION_FAILED"), "{log}");
    assert!(!ev.iter().any(|e| e["ev"] == "add_inbound"));
    let clog = lab.charon_log();
    assert!(
        clog.contains("MAC mismatched") || clog.contains("AUTHENTICATION_FAILED"),
        "{clog}"
    );
}

fn main() {
    use xdpsec_testenv::{Need, trial};
    xdpsec_testenv::main(vec![trial(
        "strongswan_interop",
        &[Need::Root, xdpsec_testenv::CHARON, xdpsec_testenv::SWANCTL],
        strongswan_interop,
    )]);
}
