//! Drop accounting from an independent sender (issue 16 item 3): scapy
//! builds every class of bad ESP itself (replayed, older than the window,
//! bad ICV, bad padding bytes, a pad length beyond the payload, truncated
//! below the ICV, AES-CBC ciphertext that is not whole blocks, an unknown
//! SPI, the SPI of an SA a reload deleted) for AES-GCM, ChaCha20-Poly1305,
//! AES-CBC + HMAC-SHA1-96 and AES-CBC + HMAC-SHA2-256, plain ESP and UDP
//! 4500, IPv4 and IPv6 outer, with early drop on and off. Each row of the
//! drop table rises by exactly what scapy sent for it, every other row
//! stays 0, and every valid frame is decrypted into the sink.
//!
//! Cheap by construction: one daemon per (family, early drop) with a tunnel
//! per (transform, encapsulation), and one scapy process that sends every
//! frame to all four daemons: their labs' peer ends all sit in one
//! namespace.
use std::collections::BTreeMap;

use serde_json::{Value, json};
use xdpsec_e2e::{Daemon, Lab, frames::mac_of, py_script, scratch_dir, settle};

/// A transform: xdpsec's cipher name, key lengths (encryption incl. the
/// AEADs' salt, integrity), scapy's `crypt_algo` and `auth_algo`.
struct Xform {
    cipher: &'static str,
    enc_len: usize,
    integ_len: usize,
    scapy: &'static str,
    scapy_auth: Option<&'static str>,
}

const XFORMS: [Xform; 4] = [
    Xform {
        cipher: "aes256-gcm",
        enc_len: 36,
        integ_len: 0,
        scapy: "AES-GCM",
        scapy_auth: None,
    },
    Xform {
        cipher: "chacha20-poly1305",
        enc_len: 36,
        integ_len: 0,
        scapy: "CHACHA20-POLY1305",
        scapy_auth: None,
    },
    Xform {
        cipher: "aes128-sha1",
        enc_len: 16,
        integ_len: 20,
        scapy: "AES-CBC",
        scapy_auth: Some("HMAC-SHA1-96"),
    },
    Xform {
        cipher: "aes256-sha256",
        enc_len: 32,
        integ_len: 32,
        scapy: "AES-CBC",
        scapy_auth: Some("SHA2-256-128"),
    },
];

/// One tunnel of the matrix: transform and encapsulation.
struct Tun {
    i: usize,
    x: &'static Xform,
    udp: bool,
}

/// Every (transform, encapsulation), tunnel i = 2 * transform + udp.
fn tunnels() -> Vec<Tun> {
    XFORMS
        .iter()
        .flat_map(|x| [false, true].map(|udp| (x, udp)))
        .enumerate()
        .map(|(i, (x, udp))| Tun { i, x, udp })
        .collect()
}

impl Tun {
    /// The inbound SPI before the reload (deleted by it) and after.
    fn spi(&self, reloaded: bool) -> u32 {
        0x3000 + if reloaded { 0x100 } else { 0 } + self.i as u32
    }
    /// Key material for `dir` (0 inbound, 1 outbound), as hex: every
    /// tunnel and direction its own.
    fn key(&self, dir: usize) -> String {
        let start = (0x10 + 0x40 * dir + 7 * self.i) as u8;
        (0..self.x.enc_len + self.x.integ_len)
            .map(|k| format!("{:02x}", start.wrapping_add(k as u8)))
            .collect()
    }
    fn inner_src(&self) -> String {
        format!("203.0.113.{}", 16 + self.i)
    }
    fn config(&self, peer: &str) -> String {
        let encap = if self.udp {
            "encap = \"udp\"\nlocal_port = 4500\npeer_port = 4500"
        } else {
            "encap = \"esp\""
        };
        format!(
            "[[tunnel]]\nname = \"Tunnel{n}\"\nkind = \"manual\"\npeer = \"{peer}\"\n{encap}\ncipher = \"{c}\"\nreplay_window = 64\nremote_subnets = [\"{src}/32\"]\n[tunnel.inbound]\nspi = {spi:#x}\nkey = \"{kin}\"\n[tunnel.outbound]\nspi = {out:#x}\nkey = \"{kout}\"\n",
            n = self.i + 1,
            c = self.x.cipher,
            src = self.inner_src(),
            spi = self.spi(false),
            kin = self.key(0),
            out = 0x4000 + self.i,
            kout = self.key(1),
        )
    }
    /// scapy's view of the inbound SA (after the reload).
    fn scapy_sa(&self) -> Value {
        let k = self.key(0);
        let (enc, auth) = k.split_at(2 * self.x.enc_len);
        json!({
            "spi": self.spi(true),
            "cipher": self.x.scapy,
            "key": enc,
            "auth_algo": self.x.scapy_auth,
            "auth_key": auth,
            "udp": if self.udp { json!([4500, 4500]) } else { Value::Null },
            "inner_src": self.inner_src(),
            "inner_dst": "203.0.113.1",
        })
    }
    /// The frames scapy sends on this tunnel, in order, each with its class.
    fn frames(&self) -> Vec<Value> {
        let f = |class: &str, seq: u64, fault: Value| {
            let mut v = json!({"sa": self.i, "class": class, "seq": seq});
            if let Value::Object(m) = fault {
                v.as_object_mut().unwrap().extend(m);
            }
            v
        };
        let none = Value::Null;
        let mut v = vec![
            f("valid", 1, none.clone()),
            f("valid", 2, none.clone()),
            f("valid", 3, none.clone()),
            f("valid", 4, none.clone()),
            f("replayed", 2, none.clone()),
            // Moves the 64-packet window to 37..100.
            f("valid", 100, none.clone()),
            f("too_old", 10, none.clone()),
            f("bad_icv", 101, json!({"tamper": true})),
            // The forged copy did not move the window.
            f("valid", 101, none.clone()),
            f("bad_pad_bytes", 102, json!({"bad_pad_bytes": true})),
            f("pad_beyond_payload", 103, json!({"padlen": 255})),
            // ESP header and 8 bytes: below IV + ICV.
            f("truncated", 104, json!({"truncate": 16})),
            // Not even SPI and sequence number whole.
            f("truncated_header", 104, json!({"truncate": 6})),
            f("unknown_spi", 105, json!({"spi": 0xBE00 + self.i})),
            f("deleted_spi", 1, json!({"spi": self.spi(false)})),
            f("deleted_spi", 2, json!({"spi": self.spi(false)})),
        ];
        if self.x.scapy_auth.is_some() {
            v.push(f("cbc_not_whole_blocks", 106, json!({"cut_ciphertext": 4})));
        }
        v.push(f("valid", 107, none));
        v
    }
}

/// The drop row a class must land in (None: delivered).
fn row(class: &str, v6: bool) -> Option<u64> {
    Some(match class {
        "valid" => return None,
        "replayed" | "too_old" => 19,
        "bad_icv" => 62,
        "bad_pad_bytes"
        | "pad_beyond_payload"
        | "truncated"
        | "truncated_header"
        | "cbc_not_whole_blocks" => 23,
        "unknown_spi" if v6 => 12,
        "unknown_spi" => 4,
        "deleted_spi" if v6 => 9,
        "deleted_spi" => 1,
        other => panic!("no row for class {other}"),
    })
}

/// One receiver: its lab, family and early-drop setting, its daemon.
struct Receiver {
    lab: Lab,
    v6: bool,
    early: bool,
    d: Option<Daemon>,
}

impl Receiver {
    fn addrs(&self) -> (String, String) {
        let a = if self.v6 { self.lab.v6 } else { self.lab.v4 };
        (a[0].to_string(), a[1].to_string())
    }
    fn daemon(&self) -> &Daemon {
        self.d.as_ref().unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // The daemon before its lab: it detaches its XDP program.
        self.d.take();
    }
}

/// Counters of `show platform hardware qfp active statistics`, by JSON
/// pointer (`/xdp/pass_truncated`, `/queues/0/sink`, ...).
fn stats<const N: usize>(d: &Daemon, at: [&str; N]) -> [u64; N] {
    let v = d
        .cli_json("show platform hardware qfp active statistics")
        .unwrap();
    at.map(|p| {
        v.pointer(p)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {p} in {v}"))
    })
}

#[test]
fn every_class_of_bad_esp_from_scapy_lands_in_its_drop_row_exactly_once() {
    let tuns = tunnels();
    let mut rx = Vec::new();
    for (v6, early) in [(false, true), (false, false), (true, true), (true, false)] {
        let lab = Lab::unique().up(1).unwrap();
        let mut r = Receiver {
            lab,
            v6,
            early,
            d: None,
        };
        let (local, peer) = r.addrs();
        let mut cfg = format!(
            "node = \"rx\"\nsocket = \"{{socket}}\"\n[underlay]\ninterface = \"{}\"\naddress = \"{local}\"\nqueues = 1\nearly_drop = {early}\n",
            r.lab.if1
        );
        for t in &tuns {
            cfg += &t.config(&peer);
        }
        let d = Daemon::start(&r.lab.ns1, &cfg).unwrap();
        // A reload gives every tunnel a new inbound SPI: the old ones are
        // deleted SAs (rows 1/9 for 120 s).
        let mut text = std::fs::read_to_string(&d.config).unwrap();
        for t in &tuns {
            text = text.replace(
                &format!("spi = {:#x}", t.spi(false)),
                &format!("spi = {:#x}", t.spi(true)),
            );
        }
        std::fs::write(&d.config, text).unwrap();
        let out = d.cli("request platform software xdpsec reload").unwrap();
        for t in &tuns {
            let want = format!("inbound SA {:#x} -> {:#x}", t.spi(false), t.spi(true));
            assert!(out.contains(&want), "{want} in {out}");
        }
        r.d = Some(d);
        rx.push(r);
    }
    assert!(rx.iter().all(|r| {
        r.daemon()
            .cli_json("show platform hardware qfp active statistics")
            .unwrap()["early_drop"]
            == r.early
    }));

    // Every lab's peer end into the first lab's node-2 namespace, where
    // scapy runs once for all.
    let ns = rx[0].lab.ns2.clone();
    let mut targets = Vec::new();
    for r in &rx {
        let (local, peer) = r.addrs();
        let fmt = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
        let src_mac = fmt(mac_of(&r.lab.ns2, &r.lab.if2).unwrap());
        let dst_mac = fmt(mac_of(&r.lab.ns1, &r.lab.if1).unwrap());
        if r.lab.ns2 != ns {
            r.lab.move_peer_into(&ns).unwrap();
        }
        targets.push(json!({
            "iface": r.lab.if2,
            "src_mac": src_mac,
            "dst_mac": dst_mac,
            "outer_src": peer,
            "outer_dst": local,
            "sas": tuns.iter().map(Tun::scapy_sa).collect::<Vec<_>>(),
            "frames": tuns.iter().flat_map(Tun::frames).collect::<Vec<_>>(),
        }));
    }
    let dir = scratch_dir("drops");
    let job = dir.join("job.json");
    std::fs::write(&job, json!({"gap": 0.002, "targets": targets}).to_string()).unwrap();
    let report = py_script(&ns, "esp_drops.py", job.to_str().unwrap(), 120).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    // What scapy says it sent, per (receiver, tunnel, class).
    let mut sent: BTreeMap<(usize, usize, String), u64> = BTreeMap::new();
    for e in report["by_class"].as_array().unwrap() {
        let k = (
            e[0].as_u64().unwrap() as usize,
            e[1].as_u64().unwrap() as usize,
            e[2].as_str().unwrap().to_string(),
        );
        sent.insert(k, e[3].as_u64().unwrap());
    }
    let mut asked: BTreeMap<(usize, usize, String), u64> = BTreeMap::new();
    for ti in 0..rx.len() {
        for t in &tuns {
            for f in t.frames() {
                *asked
                    .entry((ti, t.i, f["class"].as_str().unwrap().to_string()))
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(sent, asked, "scapy sent every frame asked for: {report}");

    for (ti, r) in rx.iter().enumerate() {
        let d = r.daemon();
        let what = format!(
            "outer IPv{}, early drop {}",
            if r.v6 { 6 } else { 4 },
            r.early
        );
        // Expected from scapy's report: rows, per-tunnel decaps, and the
        // classes XDP drops when armed.
        let mut rows: BTreeMap<u64, u64> = BTreeMap::new();
        let mut decaps: BTreeMap<String, u64> = BTreeMap::new();
        let (mut early_unknown, mut early_deleted, mut short, mut total) = (0, 0, 0, 0);
        for ((t, i, class), n) in &sent {
            if *t != ti {
                continue;
            }
            total += n;
            match row(class, r.v6) {
                Some(id) => *rows.entry(id).or_default() += n,
                None => *decaps.entry(format!("Tunnel{}", i + 1)).or_default() += n,
            }
            match class.as_str() {
                "unknown_spi" => early_unknown += n,
                "deleted_spi" => early_deleted += n,
                "truncated_header" => short += n,
                _ => {}
            }
        }
        let sink: u64 = decaps.values().sum();
        println!("{what}: {total} frames sent, rows {rows:?}, {sink} delivered");
        let got = settle(d, (rows.clone(), sink), || {
            (xdpsec_e2e::drop_rows(d), stats(d, ["/queues/0/sink"])[0])
        });
        assert_eq!(
            got,
            (rows, sink),
            "{what}: (drop rows, sink) vs what scapy sent"
        );
        // Per tunnel: exactly its valid frames decrypted, one duplicate,
        // one too old, one failed ICV.
        let sas = d.cli_json("show crypto ipsec sa").unwrap();
        for s in sas["sas"].as_array().unwrap() {
            let name = s["tunnel"].as_str().unwrap();
            assert_eq!(
                (
                    s["pkts_decaps"].as_u64(),
                    s["pkts_replay_duplicate"].as_u64(),
                    s["pkts_replay_too_old"].as_u64(),
                    s["pkts_verify_failed"].as_u64(),
                ),
                (decaps.get(name).copied(), Some(1), Some(1), Some(1)),
                "{what}: {s}"
            );
        }
        assert_eq!(sas["sas"].as_array().unwrap().len(), tuns.len());
        // Where the unknown and deleted SPIs were dropped: in XDP when
        // armed (never reaching the AF_XDP socket), else in userspace. ESP
        // too short for its SPI and sequence number goes to the kernel,
        // and reaches the datapath through xdpsec's kernel sockets.
        let fam = if r.v6 { "v6" } else { "v4" };
        let [
            unknown_xdp,
            deleted_xdp,
            truncated_xdp,
            rx_frames,
            kernel_esp,
            kernel_udp,
        ] = stats(
            d,
            [
                &format!("/xdp/drop_unknown_spi_{fam}"),
                &format!("/xdp/drop_deleted_spi_{fam}"),
                "/xdp/pass_truncated",
                "/queues/0/rx_frames",
                &format!("/kernel/kernel_esp_{fam}"),
                &format!("/kernel/kernel_udp_esp_{fam}"),
            ],
        );
        let (want_u, want_d) = if r.early {
            (early_unknown, early_deleted)
        } else {
            (0, 0)
        };
        assert_eq!(
            (
                unknown_xdp,
                deleted_xdp,
                truncated_xdp,
                kernel_esp + kernel_udp,
                rx_frames
            ),
            (
                want_u,
                want_d,
                short,
                short,
                total - want_u - want_d - short
            ),
            "{what}: (XDP unknown, XDP deleted, XDP truncated, kernel ESP, AF_XDP rx_frames)"
        );
    }
}
