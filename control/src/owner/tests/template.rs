//! A responder template (`peer_range`): owners in memory, no kernel. A
//! gateway with one template and initiators of their own: each peer of
//! the range that authenticates becomes an instance in the registry with
//! its SAs and routes; a peer outside the range, or beyond `max_peers`,
//! is refused; `clear crypto ikev2 sa remote ADDR` removes one
//! instance's SAs in one snapshot.
use super::*;

const GATEWAY: &str = r#"node = "gw"
socket = "/nonexistent/gw.sock"
[underlay]
interface = "veth-gw"
address = "198.51.100.1"
[[tunnel]]
name = "Tunnel1"
kind = "ike"
peer_range = "198.51.100.16/28"
max_peers = 2
psk = "not-a-real-secret"
ike_proposals = ["aes256gcm16-prfsha256-x25519"]
esp_proposals = ["aes256gcm16"]
initiate = false
local_subnets = ["192.0.2.0/24"]
remote_subnets = ["203.0.113.0/24"]
"#;

/// An initiator at 198.51.100.`host` with inside address 203.0.113.`host`.
fn initiator(host: u8) -> String {
    format!(
        r#"node = "p{host}"
socket = "/nonexistent/p{host}.sock"
[underlay]
interface = "veth-p{host}"
address = "198.51.100.{host}"
[[tunnel]]
name = "Tunnel1"
kind = "ike"
peer = "198.51.100.1"
psk = "not-a-real-secret"
ike_proposals = ["aes256gcm16-prfsha256-x25519"]
esp_proposals = ["aes256gcm16"]
initiate = true
local_subnets = ["203.0.113.{host}/32"]
remote_subnets = ["192.0.2.0/24"]
"#
    )
}

/// Owner 0 the gateway, the others initiators; datagrams go by address.
struct Lab {
    now: Instant,
    o: Vec<Owner>,
}

impl Lab {
    fn new(name: &str, hosts: &[u8]) -> Lab {
        let now = Instant::now();
        let mut o = vec![owner(&format!("{name}-gw"), GATEWAY, now)];
        for h in hosts {
            o.push(owner(&format!("{name}-p{h}"), &initiator(*h), now));
        }
        Lab { now, o }
    }

    /// Deliver `fx`'s IKE datagrams to the owners they are addressed to,
    /// and what those send, until nothing is sent.
    fn deliver(&mut self, fx: Effects) {
        let mut queue = ike_sends(&fx);
        for _ in 0..256 {
            let Some(d) = queue.pop() else {
                return;
            };
            let Some(to) = self.o.iter().position(|o| o.local == d.remote.ip()) else {
                continue;
            };
            let fx = self.o[to].handle(self.now, Input::Ike(as_received(d)));
            queue.extend(ike_sends(&fx));
        }
        panic!("IKE did not settle");
    }

    /// Tick every owner for `secs` seconds, delivering what they send.
    fn run(&mut self, secs: u64) {
        for _ in 0..secs * 10 {
            self.now += TICK;
            for i in 0..self.o.len() {
                let fx = self.o[i].handle(self.now, Input::Tick);
                self.deliver(fx);
            }
        }
    }

    /// The gateway's instances: (name, peer, inbound SPIs, outbound SPI).
    fn instances(&self) -> Vec<(String, IpAddr, Vec<u32>, Option<u32>)> {
        let g = &self.o[0];
        g.registry
            .iter()
            .filter(|e| e.instance.is_some())
            .map(|e| {
                let spi = |s: &SaSlot| g.table.cold(s.id).map(|c| c.spi).unwrap_or(0);
                (
                    e.name.clone(),
                    e.peer,
                    e.inbound.iter().map(spi).collect(),
                    e.outbound.as_ref().map(spi),
                )
            })
            .collect()
    }

    /// Initiator `k`'s tunnel and the gateway's instance for it have each
    /// other's SPIs.
    fn up(&self, k: usize) -> bool {
        let (inb, out) = spis(&self.o[k], 0);
        let me = self.o[k].local;
        self.instances().iter().any(|(_, peer, gi, go)| {
            *peer == me
                && matches!((go, out), (Some(x), Some(y)) if inb.contains(x) && gi.contains(&y))
        })
    }
}

/// The tunnel the datapath routes an inner packet to `dst` into.
fn route(o: &Owner, dst: &str) -> Option<u32> {
    let dst: std::net::Ipv4Addr = dst.parse().unwrap();
    let mut p = [0u8; 28];
    p[0] = 0x45;
    p[9] = 17;
    p[16..20].copy_from_slice(&dst.octets());
    o.routes.load().lookup_packet(&p)
}

#[test]
fn peers_of_the_range_become_instances_within_max_peers() {
    // 17 and 18 in the range; 40 outside it; 19 in it, beyond max_peers.
    let mut lab = Lab::new("tpl", &[17, 18, 40, 19]);
    // The template itself is no tunnel of the registry, and nothing a
    // peer sends before it authenticated makes one.
    assert!(lab.o[0].registry.iter().next().is_none());
    // 17 and 18 first.
    let (p40, p19) = (lab.o.remove(3), lab.o.remove(3));
    lab.run(2);
    assert!(lab.up(1) && lab.up(2), "{:?}", lab.instances());
    let inst = lab.instances();
    assert_eq!(
        inst.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(),
        ["Tunnel1/198.51.100.17", "Tunnel1/198.51.100.18"]
    );
    // Each is routed its own inside address, the peer's selector
    // narrowed within remote_subnets; others of the subnet go nowhere.
    let idx = |name: &str| {
        lab.o[0]
            .registry
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.index)
    };
    assert_eq!(
        route(&lab.o[0], "203.0.113.17"),
        idx("Tunnel1/198.51.100.17")
    );
    assert_eq!(
        route(&lab.o[0], "203.0.113.18"),
        idx("Tunnel1/198.51.100.18")
    );
    assert_ne!(idx("Tunnel1/198.51.100.17"), idx("Tunnel1/198.51.100.18"));
    assert_eq!(route(&lab.o[0], "203.0.113.20"), Some(0));
    // Their outbound SAs go to their own peers.
    let snap = lab.o[0].table.shared().load();
    for (name, peer) in [
        ("Tunnel1/198.51.100.17", "198.51.100.17"),
        ("Tunnel1/198.51.100.18", "198.51.100.18"),
    ] {
        let Some(OutboundEntry::Active(sa)) = snap.outbound(idx(name).unwrap()) else {
            panic!("{name}: no outbound SA");
        };
        assert_eq!(sa.outer.dst, peer.parse::<IpAddr>().unwrap());
    }
    // The shows list each instance as a tunnel.
    let fx = cmd(&mut lab.o[0], lab.now, "show crypto session");
    let text = ok(&fx);
    for a in ["Tunnel1/198.51.100.17", "Tunnel1/198.51.100.18"] {
        assert!(text.contains(&format!("Interface: {a}")), "{text}");
    }
    assert_eq!(text.matches("UP-ACTIVE").count(), 2, "{text}");
    let fx = cmd(&mut lab.o[0], lab.now, "show crypto ikev2 sa");
    assert_eq!(ok(&fx).matches("READY").count(), 2, "{}", ok(&fx));

    // A peer outside the range: no tunnel has it.
    lab.o.push(p40);
    lab.run(2);
    assert!(!lab.up(3));
    assert_eq!(lab.instances().len(), 2);
    // A third peer of the range: max_peers = 2 are up, it is refused.
    lab.o.push(p19);
    // Its IKE_SA_INIT is answered NO_ADDITIONAL_SAS, before any state.
    let mut refused = false;
    for _ in 0..30 {
        lab.now += TICK;
        let fx = lab.o[4].handle(lab.now, Input::Tick);
        for d in ike_sends(&fx) {
            for r in ike_sends(&lab.o[0].handle(lab.now, Input::Ike(as_received(d)))) {
                let m = xdpsec_ike::wire::Message::parse(&r.data).unwrap();
                refused |= m
                    .notify(xdpsec_ike::wire::notify::NO_ADDITIONAL_SAS)
                    .is_some();
            }
        }
        if refused {
            break;
        }
    }
    assert!(refused, "no NO_ADDITIONAL_SAS");
    assert_eq!(lab.o[0].ike.as_ref().unwrap().footprint().ike_sas, 2);
    lab.run(2);
    assert!(!lab.up(4));
    assert_eq!(lab.instances().len(), 2, "{:?}", lab.instances());
    assert!(lab.o[0].ike.as_ref().unwrap().footprint().ike_sas <= 3);

    // clear crypto ikev2 sa remote 17: that instance and its SAs go, in
    // one snapshot; 18's stay as they were.
    let before18 = lab.instances()[1].clone();
    let ids17: Vec<SaId> = lab.o[0]
        .registry
        .iter()
        .find(|e| e.peer == lab.o[1].local)
        .unwrap()
        .sa_ids()
        .collect();
    assert_eq!(ids17.len(), 2);
    let now = lab.now;
    let fx = cmd(
        &mut lab.o[0],
        now,
        "clear crypto ikev2 sa remote 198.51.100.17",
    );
    ok(&fx);
    assert_eq!(fx.publishes, 1, "one SA snapshot for the command");
    assert!(!ike_sends(&fx).is_empty(), "the peer is told");
    assert_eq!(lab.instances(), vec![before18.clone()]);
    for id in ids17 {
        assert!(
            lab.o[0].table.cold(id).is_none(),
            "SA {id:?} still in the table"
        );
    }
    assert_eq!(
        route(&lab.o[0], "203.0.113.17"),
        Some(0),
        "its route went with it"
    );
    // Its slot is free again: 19 comes up now (17 too, initiating again
    // after the DELETE; one of them gets the slot).
    lab.deliver(fx);
    lab.run(8);
    assert_eq!(lab.instances().len(), 2, "{:?}", lab.instances());
    assert!(lab.up(2), "18 untouched");
    assert!(lab.up(1) ^ lab.up(4), "{:?}", lab.instances());
}

#[test]
fn a_reload_keeps_an_unchanged_template_s_instances_and_drops_a_changed_one_s() {
    let mut lab = Lab::new("tpl-reload", &[17, 18]);
    lab.run(2);
    assert!(lab.up(1) && lab.up(2), "{:?}", lab.instances());
    let before = lab.instances();
    let dir = state_dir("tpl-reload-gw");
    let path = lab.o[0].config_path.clone();
    let write = |text: &str| {
        std::fs::write(&path, format!("state_dir = \"{}\"\n{text}", dir.display())).unwrap()
    };
    let reload = |lab: &mut Lab| {
        let now = lab.now;
        let fx = cmd(
            &mut lab.o[0],
            now,
            "request platform software xdpsec reload",
        );
        let text = ok(&fx).to_string();
        (text, fx)
    };
    // Unchanged: the instances and their SAs stay.
    write(GATEWAY);
    let (text, fx) = reload(&mut lab);
    assert_eq!(text, "Reloaded: no SA changed\n");
    assert!(ike_sends(&fx).is_empty());
    assert_eq!(lab.instances(), before);
    // max_peers or peer_range changed: a restart, nothing applied.
    write(&GATEWAY.replace("max_peers = 2", "max_peers = 3"));
    let now = lab.now;
    let fx = cmd(
        &mut lab.o[0],
        now,
        "request platform software xdpsec reload",
    );
    let r = fx.reply.unwrap();
    assert!(
        !r.ok && r.output.contains("peer_range, max_peers"),
        "{}",
        r.output
    );
    assert_eq!(lab.instances(), before);
    // Another key: the instances go (a DELETE to each peer), in one
    // snapshot; the peers come back only with the new key.
    write(&GATEWAY.replace("not-a-real-secret", "another-secret"));
    let (text, fx) = reload(&mut lab);
    assert!(
        text.contains("Tunnel1: template changed, 2 instance(s) deleted"),
        "{text}"
    );
    assert_eq!(fx.publishes, 1);
    assert_eq!(ike_sends(&fx).len(), 2, "a DELETE to each peer");
    assert!(lab.instances().is_empty(), "{:?}", lab.instances());
    lab.deliver(fx);
    lab.run(3);
    assert!(
        lab.instances().is_empty(),
        "the old key no longer authenticates"
    );
}
