//! pyATS/Unicon drives `xdpsec cli` as it drives an IOS XE router: the
//! testbed in tests/pyats/testbed.yaml (connection `xdpsec cli --socket S`,
//! `os: iosxe`, Unicon's defaults) connects, runs `show version`, parses
//! `show crypto ipsec sa` and the drop table with genie through the
//! connection (the numbers `--json` gives), filters output with `| include`
//! and the other IOS filters, enters and leaves configuration mode, and
//! receives a log line live after `terminal monitor`. The whole session's
//! transcript holds no terminal escape sequence.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use xdpsec_e2e::{
    Daemon, Lab, scapy_peer, scratch_dir, settle,
    tunnel::{BASE, scapy_peer_config, tunnel_config},
    venv_python, xdpsec_bin,
};

const SA: &str = "show crypto ipsec sa";
const DROPS_ALL: &str = "show platform hardware qfp active feature ipsec datapath drops all";

fn tunnel1(d: &Daemon) -> Value {
    let v = d.cli_json(SA).unwrap();
    v["sas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tunnel"] == "Tunnel1")
        .cloned()
        .unwrap_or_else(|| panic!("no Tunnel1 in {v}"))
}

fn drop_count(d: &Daemon, id: u64) -> u64 {
    let v = d.cli_json(DROPS_ALL).unwrap();
    v["drops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["packets"].as_u64())
        .unwrap()
}

#[test]
fn pyats_unicon_connects_parses_filters_and_monitors() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    // Traffic first, so the parsed counters are not all zero: five echo
    // requests through the tunnel (decapsulated, their replies encapsulated)
    // and one frame with a bad ICV (drop type 62).
    let mut cfg = scapy_peer_config(&lab, &BASE).unwrap();
    let r = scapy_peer(&lab.ns2, &cfg).unwrap();
    assert_eq!(r["matched"], json!([0, 1, 2, 3, 4]), "{r}");
    cfg["packets"] = json!([{"seq": 6, "tamper": true}]);
    scapy_peer(&lab.ns2, &cfg).unwrap();
    let counts = || {
        let t = tunnel1(&d);
        (
            t["pkts_decaps"].clone(),
            t["pkts_encaps"].clone(),
            drop_count(&d, 62),
        )
    };
    let want = (json!(5), json!(5), 1);
    assert_eq!(settle(&d, want.clone(), counts), want);

    let dir = scratch_dir("pyats");
    let marker = dir.join("monitor-on");
    let logfile = dir.join("unicon.log");
    let testbed = Path::new(env!("CARGO_MANIFEST_DIR")).join("pyats/testbed.yaml");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/pyats_session.py");
    let child = Command::new("timeout")
        .arg("150")
        .arg(venv_python())
        .arg(&script)
        .arg(&testbed)
        .arg("edge1")
        .arg(&marker)
        .arg(&logfile)
        .env("XDPSEC_BIN", xdpsec_bin())
        .env("XDPSEC_SOCKET", &d.socket)
        .env("TERM", "xterm-256color")
        .env("HOME", &dir)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the session has `terminal monitor` on, an ESP frame with an
    // unknown SPI: the daemon logs %CRYPTO-4-RECVD_PKT_INV_SPI.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if marker.exists() {
        cfg["packets"] = json!([{"seq": 1, "spi": 0xBEEF}]);
        scapy_peer(&lab.ns2, &cfg).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let transcript = std::fs::read_to_string(&logfile).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("pyats_session.py: {e}\n{stdout}\n{stderr}"));
    let ctx = format!("{report:#}\n--- unicon log:\n{transcript}\n--- stderr:\n{stderr}");
    assert!(report.get("error").is_none(), "{ctx}");
    assert_eq!(report["connected"], true, "{ctx}");
    assert_eq!(report["state"], "enable", "{ctx}");

    // show version: IOS layout, xdpsec named honestly, Autonomous mode.
    let ver = report["show_version"].as_str().unwrap();
    assert!(ver.contains("xdpsec Software, Version"), "{ctx}");
    assert!(ver.contains("edge1 uptime is"), "{ctx}");
    assert!(!ver.contains("Cisco IOS"), "{ctx}");
    assert_eq!(
        report["operating_mode"].as_str().unwrap().trim(),
        "Router operating mode: Autonomous",
        "{ctx}"
    );
    assert!(
        report["begin"]
            .as_str()
            .unwrap()
            .starts_with("Router operating mode: Autonomous"),
        "{ctx}"
    );

    // genie, through the connection, reads what --json says.
    let t = tunnel1(&d);
    let idents = &report["sa"]["interface"]["Tunnel1"]["ident"];
    let ident = idents
        .as_object()
        .and_then(|o| o.values().find(|v| v["peer_ip"] == t["peer"]))
        .unwrap_or_else(|| panic!("no ident with peer {} in {ctx}", t["peer"]));
    for (g, j) in [
        ("pkts_decaps", "pkts_decaps"),
        ("pkts_encaps", "pkts_encaps"),
    ] {
        assert_eq!(ident[g], t[j], "{g}: {ctx}");
    }
    assert_eq!(ident["pkts_decaps"], 5, "{ctx}");
    let spi = t["outbound_spi"].as_u64().unwrap();
    assert_eq!(
        ident["current_outbound_spi"],
        format!("0x{spi:X}({spi})"),
        "{ctx}"
    );
    let drops = &report["drops"]["drops"];
    assert_eq!(drops["IN_OCT_MAC_EXCEPTION"]["packets"], 1, "{ctx}");
    assert_eq!(
        drops["IN_US_V4_PKT_SA_NOT_FOUND_SPI"]["packets"], 0,
        "{ctx}"
    );

    // Filters, applied to the text the daemon sent.
    let sa_text = d.cli(SA).unwrap();
    let inc = report["include"].as_str().unwrap();
    let want_inc: Vec<&str> = sa_text
        .lines()
        .filter(|l| l.contains("pkts encaps") || l.contains("pkts decaps"))
        .collect();
    assert!(!want_inc.is_empty(), "{sa_text}");
    assert_eq!(inc.lines().collect::<Vec<_>>(), want_inc, "{ctx}");
    let spis = sa_text.lines().filter(|l| l.contains("spi:")).count();
    assert_eq!(
        report["count"].as_str().unwrap().trim(),
        format!("Number of lines which match regexp = {spis}"),
        "{ctx}"
    );
    // Only the non-zero drop rows are left by the exclude.
    let ex = report["exclude"].as_str().unwrap();
    assert_eq!(ex.lines().count(), 1, "{ctx}");
    assert!(ex.contains("62 IN_OCT_MAC_EXCEPTION"), "{ctx}");
    let sec = report["section"].as_str().unwrap();
    assert!(sec.trim_start().starts_with("inbound esp sas:"), "{ctx}");
    assert!(sec.contains("spi: 0x"), "{ctx}");
    assert!(!sec.contains("outbound esp sas"), "{ctx}");

    // Configuration mode entered and left; a log line streamed live.
    assert_eq!(report["after_configure"], "enable", "{ctx}");
    assert!(
        report["monitor"]
            .as_str()
            .unwrap_or("")
            .contains("%CRYPTO-4-RECVD_PKT_INV_SPI"),
        "{ctx}"
    );
    assert_eq!(report["final_prompt_ok"], true, "{ctx}");
    // Unicon sent its connect-time commands, and saw no escape sequence.
    for cmd in [
        "term length 0",
        "term width 0",
        "config term",
        "exec-timeout 0",
    ] {
        assert!(transcript.contains(cmd), "{cmd}: {ctx}");
    }
    assert!(!transcript.contains('\x1b'), "{ctx}");
    if std::env::var_os("XDPSEC_SHOW_TRANSCRIPT").is_some() {
        eprintln!("{transcript}");
    }
}

/// Keys typed at `xdpsec cli` on a pseudo-terminal: the output after each.
fn type_keys(socket: &Path, keys: &[&str]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/pty_keys.py");
    let dir = scratch_dir("pty");
    let out = Command::new("timeout")
        .arg("60")
        .arg(venv_python())
        .arg(&script)
        .arg(json!(keys).to_string())
        .arg(xdpsec_bin())
        .args(["cli", "--socket"])
        .arg(socket)
        .env("HOME", &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "pty_keys.py: {e}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_person_at_a_terminal_has_tab_help_history_and_no_escapes() {
    let lab = Lab::unique().up(1).unwrap();
    let d = Daemon::start(&lab.ns1, &tunnel_config(&lab, 0, &BASE)).unwrap();
    let keys = [
        "sh\t",                                  // 1: Tab completes "show "
        "ver\r",                                 // 2: show version runs
        "show crypto ?",                         // 3: ? lists the next words at once
        "\x15\x10",                              // 4: Ctrl-U clears, Ctrl-P recalls
        "\x15show versioX\x7f\x7fon | i mode\r", // 5: backspaces, a filter
        "\x1b[A\x1b[A",                          // 6: two arrows up
        "\x1b[B",                                // 7: one down
        "\x15\r\n",                              // 8: CR LF: one new prompt
        "conf t\rline vty 0 4\r",                // 9: configuration prompts
        "\x1a",                                  // 10: Ctrl-Z: back to EXEC
        "exit\r",
    ];
    let o = type_keys(&d.socket, &keys);
    let all = o.concat();
    let ctx = format!("{o:#?}");
    assert!(
        !all.contains('\x1b'),
        "an escape sequence was written: {ctx}"
    );
    assert_eq!(o[0], "edge1#", "{ctx}");
    assert_eq!(o[1], "show ", "{ctx}");
    assert!(o[2].starts_with("ver\r\nxdpsec Software"), "{ctx}");
    assert!(o[2].ends_with("\r\nedge1#"), "{ctx}");
    assert!(
        o[3].contains("?\r\n") && o[3].contains("  ipsec\r\n"),
        "{ctx}"
    );
    assert!(o[3].ends_with("\r\nedge1#show crypto "), "{ctx}");
    // Erased with backspace-space-backspace, one per character.
    assert_eq!(o[4], format!("{}show ver", "\x08 \x08".repeat(12)), "{ctx}");
    assert!(
        o[5].ends_with("on | i mode\r\nRouter operating mode: Autonomous\r\nedge1#"),
        "{ctx}"
    );
    assert!(o[6].ends_with("show ver"), "{ctx}");
    assert!(o[7].ends_with("show version | i mode"), "{ctx}");
    assert!(o[8].ends_with("\r\nedge1#"), "{ctx}");
    assert_eq!(o[8].matches("edge1#").count(), 1, "{ctx}");
    assert!(o[9].contains("\r\nedge1(config)#line vty 0 4"), "{ctx}");
    assert!(o[9].ends_with("\r\nedge1(config-line)#"), "{ctx}");
    assert_eq!(o[10], "\r\nedge1#", "{ctx}");
}
