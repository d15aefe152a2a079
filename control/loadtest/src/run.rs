//! The shell of `xdpsec loadtest ike`: sockets on the IKE ports, the
//! source addresses, the loop that feeds the engine, the progress line
//! and the summary.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{IsTerminal, Write},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use xdpsec_ike::EspEncap;

use crate::{
    IkeArgs,
    config::{LoadtestConfig, Range, Sources},
    engine::{Engine, FaultKind, FaultSpec, Options},
    frames::{Other, probe_frame, probe_outer, reply_esp},
    net::{self, AddedAddrs, Socket},
    stats::{Summary, cpu_seconds},
    traffic::Traffic,
    xsk::EspWire,
};

/// Most datagrams read from one socket per pass of the loop (the timers
/// get their turn in between).
const RECV_BURST: usize = 256;
/// Most batches read from one AF_XDP socket per pass of the loop.
const XSK_BATCHES: usize = 8;
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// With `--fault`: how long after the fault (and a silent peer's restart)
/// the run waits for the tunnels to recover; the others count as not
/// recovered (a gateway's DPD gives up after 31 s to 3 min by default).
pub const FAILOVER_WAIT: Duration = Duration::from_secs(120);
/// How long the run waits for its DELETEs at the end at least; longer
/// when `--concurrency` rounds of unanswered ones (each given up after
/// 3.5 s) need it.
const CLOSING_MIN: Duration = Duration::from_secs(10);
/// ... and at most; those left then count as unanswered.
const CLOSING_MAX: Duration = Duration::from_secs(120);

fn check_args(a: &IkeArgs, cfg: &LoadtestConfig) -> Result<Options> {
    if a.tunnels == 0 || a.tunnels > cfg.capacity() {
        bail!(
            "--tunnels {}: give 1 to {} (the room in source_range and inside_range)",
            a.tunnels,
            cfg.capacity()
        );
    }
    if let Some(r) = a.rate
        && !(r > 0.0 && r.is_finite())
    {
        bail!("--rate {r}: give attempts per second > 0");
    }
    if a.concurrency == 0 {
        bail!("--concurrency 0: give at least 1");
    }
    if !(a.duration >= 0.0 && a.duration < 1e7) {
        bail!("--duration {}: give seconds >= 0", a.duration);
    }
    let fault = match &a.fault {
        None => None,
        Some(f) => {
            let spec = FaultSpec::parse(f).map_err(anyhow::Error::msg)?;
            if spec.tunnels as u64 > a.tunnels {
                bail!(
                    "--fault {f}: {} tunnels, more than --tunnels {}",
                    spec.tunnels,
                    a.tunnels
                );
            }
            if a.traffic.is_none() {
                bail!(
                    "--fault needs --traffic (recovery is the first reply through a new child SA)"
                );
            }
            Some(spec)
        }
    };
    if !(a.fault_after >= 0.0 && a.fault_after < 1e6) {
        bail!("--fault-after {}: give seconds >= 0", a.fault_after);
    }
    let rekey_every = match a.rekey_every {
        None => None,
        Some(s) if (1.0..1e7).contains(&s) => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("--rekey-every {s}: give seconds >= 1"),
    };
    Ok(Options {
        rate: a.rate,
        concurrency: a.concurrency,
        rekey_every,
        keep_logs: a.verbose,
        fault,
        ..Options::default()
    })
}

/// The sockets: two bound to any address (one source address per peer,
/// ports 500 and NAT-T), or one per peer (one source port per peer: the
/// peer's IKE, NAT-T and ESP all on it, as seen behind a NAT).
enum Wire {
    Shared { ike: Socket, nat_t: Socket },
    PerPeer(Vec<Socket>),
}

/// With --traffic: the probes and the replies, on the AF_XDP wire.
struct Probes {
    t: Traffic,
    /// Each peer's source address, and UDP source port for ESP in UDP.
    sources: Vec<IpAddr>,
    ports: Vec<u16>,
    /// Each peer's inside address, and where the probes go.
    insides: Vec<IpAddr>,
    target: IpAddr,
    gateway: IpAddr,
    /// The UDP ports steered as ESP; with `source_port_range` each port's peer.
    steered: BTreeSet<u16>,
    port_peer: HashMap<u16, usize>,
    /// Received frames that were no reply, by name.
    other: Other,
    /// Probes not sent: no transmit frame was free.
    tx_full: u64,
}

impl Probes {
    /// Send the probes due (to tunnels whose child SA is up).
    fn send_due(&mut self, e: &mut Engine, wire: &mut EspWire, now: Instant) {
        for i in e.take_ups() {
            self.t.tunnel_up(i, now);
        }
        for i in e.take_gone() {
            self.t.tunnel_gone(i);
        }
        let mut queued = false;
        for i in self.t.take_due(now) {
            let Some(out) = e.outbound(i) else {
                self.t.forget(i);
                continue;
            };
            let udp = match out.encap {
                EspEncap::Esp => None,
                EspEncap::Udp(_, port) => Some((self.ports[i], port)),
            };
            let outer = probe_outer(self.sources[i], self.gateway, udp, wire.macs);
            let Some(esp) = self.t.probe(
                i,
                &out.keys,
                self.insides[i],
                self.target,
                e.rekeying(i, now),
                now,
            ) else {
                continue;
            };
            if wire.send(|buf| probe_frame(buf, &outer, &esp)) {
                queued = true;
            } else {
                self.tx_full += 1;
            }
        }
        if queued {
            wire.flush();
        }
    }

    /// A frame from the AF_XDP sockets: a reply is opened and counted
    /// (its tunnel found by its SPI, else by its destination: ESP on a
    /// forgotten SPI is reported to that peer's core); IKE without the
    /// non-ESP marker to a peer's own port goes to its core; anything
    /// else is counted by name.
    fn frame(&mut self, e: &mut Engine, f: &mut [u8], t0: Instant) {
        let r = match reply_esp(f, |p| self.steered.contains(&p)) {
            Ok(r) => r,
            Err(what) => return self.other.count(what),
        };
        if r.sport == Some(xdpsec_ike::IKE_PORT)
            && let Some(i) = r.dport.and_then(|p| self.port_peer.get(&p).copied())
        {
            // IKE from the gateway's port 500 to a peer's own port
            // (source_port_range, before NAT-T floated) has no non-ESP
            // marker, so XDP took it for ESP: to that peer's core, as
            // its socket would have.
            let local = SocketAddr::new(r.dst, xdpsec_ike::IKE_PORT);
            let from = SocketAddr::new(r.src, xdpsec_ike::IKE_PORT);
            e.datagram_to(i, Instant::now(), local, from, &f[r.esp]);
            return;
        }
        let by_dst = match r.dport {
            Some(p) if !self.port_peer.is_empty() => self.port_peer.get(&p).copied(),
            _ => e.peer_at(r.dst),
        };
        let Some(i) = e.peer_of_spi(r.spi).or(by_dst) else {
            return self.other.count("no_peer");
        };
        let now = Instant::now();
        let Some(dir) = e.inbound(i, r.spi) else {
            // (Only --fault forget-sa makes the core answer it.)
            e.unknown_spi(now, i, r.spi);
            return self.other.count("unknown_spi");
        };
        let Some(first) = self
            .t
            .reply(i, &dir.keys, &mut f[r.esp], self.target, self.insides[i])
        else {
            return;
        };
        e.replied(i, now);
        if first && let Some(a) = e.attempt_of(i) {
            e.accounting_mut().attempts[a].first_reply = Some(now - t0);
        }
    }

    /// The frames counted as no reply (the replies that did not open or
    /// were no fresh echo reply as `bad_reply`).
    fn other(&self) -> BTreeMap<String, u64> {
        let mut m: BTreeMap<String, u64> = self
            .other
            .0
            .iter()
            .map(|(k, v)| ((*k).to_string(), *v))
            .collect();
        if self.t.bad > 0 {
            m.insert("bad_reply".into(), self.t.bad);
        }
        m
    }
}

struct Io {
    wire: Wire,
    nat_t_port: u16,
    send_errors: u64,
    t0: Instant,
    traffic: Option<(Probes, EspWire)>,
}

impl Io {
    /// The socket peer `i` sends from: for IKE on port 500 (`ike`) or not.
    fn socket(&self, i: usize, ike: bool) -> &Socket {
        match &self.wire {
            Wire::Shared { ike: s, .. } if ike => s,
            Wire::Shared { nat_t, .. } => nat_t,
            Wire::PerPeer(v) => &v[i],
        }
    }

    fn flush(&mut self, e: &mut Engine) {
        for l in e.take_logs() {
            eprintln!("{:9.3} {l}", self.t0.elapsed().as_secs_f64());
        }
        for s in e.take_sends() {
            let ike = s.local.port() == xdpsec_ike::IKE_PORT;
            // RFC 3948 2.2: the non-ESP marker off port 500.
            let marker: &[u8] = if ike { &[] } else { &[0; 4] };
            if self
                .socket(s.peer, ike)
                .send(s.local.ip(), s.remote, marker, &s.data)
                .is_err()
            {
                self.send_errors += 1;
            }
        }
    }

    /// Send the probes due (with --traffic).
    fn probes(&mut self, e: &mut Engine, now: Instant) {
        if let Some((p, wire)) = &mut self.traffic {
            wire.follow_next_hop(now);
            p.send_due(e, wire, now);
        }
    }

    /// Wait for a datagram until `wake` (from `now`), then read what came.
    fn wait(&mut self, e: &mut Engine, buf: &mut [u8], now: Instant, wake: Instant) {
        let ms = wake
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000) as i32;
        let mut fds: Vec<_> = match &self.wire {
            Wire::Shared { ike, nat_t } => vec![ike.raw(), nat_t.raw()],
            Wire::PerPeer(v) => v.iter().map(Socket::raw).collect(),
        };
        let sockets = fds.len();
        if let Some((_, wire)) = &self.traffic {
            fds.extend(wire.fds());
        }
        let ready = net::poll_readable(&fds, ms);
        self.receive(e, buf, &ready[..sockets]);
        if let Some((p, wire)) = &mut self.traffic {
            let t0 = self.t0;
            wire.receive(XSK_BATCHES, |f| p.frame(e, f, t0));
        }
    }

    /// Read what has come (at most a burst per socket) on the sockets
    /// `ready` marks into the engine.
    fn receive(&mut self, e: &mut Engine, buf: &mut [u8], ready: &[bool]) {
        for (k, _) in ready.iter().enumerate().filter(|r| *r.1) {
            for _ in 0..RECV_BURST {
                let (s, shared_nat_t) = match &self.wire {
                    Wire::Shared { ike, nat_t } => {
                        if k == 0 {
                            (ike, false)
                        } else {
                            (nat_t, true)
                        }
                    }
                    Wire::PerPeer(v) => (&v[k], false),
                };
                let Some((n, from, to)) = s.recv(buf) else {
                    break;
                };
                let (peer, nat_t, local) = match &self.wire {
                    Wire::Shared { .. } => {
                        (e.peer_at(to), shared_nat_t, SocketAddr::new(to, s.port))
                    }
                    Wire::PerPeer(_) => {
                        // Where the peer's core is: 500, or NAT-T once it floated.
                        let nat_t = from.port() != xdpsec_ike::IKE_PORT;
                        let port = if nat_t {
                            self.nat_t_port
                        } else {
                            xdpsec_ike::IKE_PORT
                        };
                        (Some(k), nat_t, SocketAddr::new(to, port))
                    }
                };
                let Some(i) = peer else {
                    continue;
                };
                self.deliver(e, i, local, from, &mut buf[..n], nat_t);
            }
        }
    }

    /// One datagram for peer `i`: IKE to its core. (ESP in UDP goes to
    /// the AF_XDP sockets with --traffic; without, or when it reaches the
    /// kernel's socket all the same, it is not read.)
    fn deliver(
        &mut self,
        e: &mut Engine,
        i: usize,
        local: SocketAddr,
        from: SocketAddr,
        d: &mut [u8],
        nat_t: bool,
    ) {
        let now = Instant::now();
        if !nat_t {
            e.datagram_to(i, now, local, from, d);
        } else if d.len() >= 4 && d[..4] == [0; 4] {
            e.datagram_to(i, now, local, from, &d[4..]);
        } else if let Some((p, _)) = &mut self.traffic {
            p.other.count("udp_to_kernel_socket");
        }
    }
}

fn progress(e: &Engine, tunnels: u64, t0: Instant, done: bool) {
    let acc = e.accounting();
    let up = acc.up();
    let failed: u64 = acc.failed().values().sum();
    let secs = t0.elapsed().as_secs_f64().max(1e-3);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r{:>6.1} s  attempts {}/{}  up {}  failed {}  in flight {}  {:.0} up/s   {}",
        secs,
        acc.attempts.len(),
        tunnels,
        up,
        failed,
        e.in_flight(),
        up as f64 / secs,
        if done { "\n" } else { "" }
    );
    let _ = err.flush();
}

/// Run `xdpsec loadtest ike`: the summary (printed too).
pub fn ike(a: &IkeArgs) -> Result<Summary> {
    let cfg = LoadtestConfig::load(&a.config)?;
    let opts = check_args(a, &cfg)?;
    let mut sources = Vec::new();
    let mut peers = Vec::new();
    for k in 0..a.tunnels {
        let (src, _inside, p) = cfg.peer(k)?;
        sources.push(src);
        peers.push(p);
    }
    let traffic = match a.traffic {
        None => None,
        Some(pps) if !(pps > 0.0 && pps <= 10_000.0) => {
            bail!("--traffic {pps}: give 0 < PPS <= 10000 (per tunnel)")
        }
        Some(pps) => {
            let g = cfg.gateway_subnets[0];
            let target = Range {
                base: g.addr,
                len: g.len,
            }
            .nth(0)
            .ok_or_else(|| anyhow::anyhow!("gateway_subnets[0] has no address for traffic"))?;
            let insides = (0..a.tunnels)
                .map(|k| cfg.inside(k))
                .collect::<Result<Vec<_>>>()?;
            // ESP in UDP from the peer's own port (source_port_range) or NAT-T's.
            let ports: Vec<u16> = (0..a.tunnels)
                .map(|k| {
                    cfg.sources
                        .nth(k)
                        .and_then(|s| s.1)
                        .unwrap_or(cfg.nat_t_port)
                })
                .collect();
            let port_peer = match cfg.sources {
                Sources::Ports { .. } => ports.iter().enumerate().map(|(i, p)| (*p, i)).collect(),
                Sources::Addrs(_) => HashMap::new(),
            };
            Some(Probes {
                t: Traffic::new(pps, a.tunnels as usize),
                sources: sources.clone(),
                steered: ports.iter().copied().chain([cfg.nat_t_port]).collect(),
                ports,
                insides,
                target,
                gateway: cfg.gateway,
                port_peer,
                other: Other::default(),
                tx_full: 0,
            })
        }
    };
    let v6 = cfg.gateway.is_ipv6();
    net::catch_stop_signals();
    // Each address once (one for all peers with source_port_range).
    let mut unique = sources.clone();
    unique.sort_unstable();
    unique.dedup();
    let addrs = AddedAddrs::add(&cfg.interface, &unique)?;
    let wire = match cfg.sources {
        Sources::Addrs(_) => Wire::Shared {
            ike: Socket::bind(v6, xdpsec_ike::IKE_PORT)?,
            nat_t: Socket::bind(v6, cfg.nat_t_port)?,
        },
        Sources::Ports { .. } => {
            net::room_for_files(a.tunnels)?;
            (0..a.tunnels)
                .map(|k| {
                    let (ip, port) = cfg.sources.nth(k).expect("checked against capacity");
                    Socket::bind_on(SocketAddr::new(ip, port.unwrap_or(0)))
                })
                .collect::<Result<Vec<_>>>()
                .map(Wire::PerPeer)?
        }
    };
    // With --traffic: the XDP program on the interface and the AF_XDP
    // sockets, until `io` is dropped (the addresses go after them).
    let traffic = match traffic {
        None => None,
        Some(p) => {
            let w = EspWire::open(&cfg.interface, cfg.xdp_mode, &p.steered, cfg.gateway)?;
            Some((p, w))
        }
    };
    let t0 = Instant::now();
    let mut io = Io {
        wire,
        nat_t_port: cfg.nat_t_port,
        send_errors: 0,
        t0,
        traffic,
    };
    let show = std::io::stderr().is_terminal();
    let opts_fault = opts.fault;
    let mut e = Engine::new(peers, opts, t0);
    let hold = Duration::from_secs_f64(a.duration);
    let fault_after = Duration::from_secs_f64(a.fault_after);
    // With --fault: when it was injected and when the run stops waiting
    // for the tunnels to recover.
    let mut fault_at: Option<(Instant, Instant)> = None;
    let mut setup_end: Option<Instant> = None;
    let mut next_progress = t0;
    let mut buf = vec![0u8; 65536];
    let interrupted = loop {
        if net::stop_requested() {
            break true;
        }
        let now = Instant::now();
        e.tick(now);
        io.flush(&mut e);
        io.probes(&mut e, now);
        if setup_end.is_none() && e.setup_done() {
            setup_end = Some(now);
        }
        if let (Some(s), Some(spec), None) = (setup_end, opts_fault, fault_at)
            && now >= s + fault_after
        {
            e.inject_fault(now);
            let restart = match spec.kind {
                FaultKind::Silent { restart_after } => restart_after,
                FaultKind::ForgetSa => Duration::ZERO,
            };
            fault_at = Some((now, now + restart + FAILOVER_WAIT));
        }
        // The fault's part is over once it has been injected and every
        // tunnel it hit recovered (or the wait ran out).
        let fault_over = opts_fault.is_none()
            || fault_at.is_some_and(|(_, until)| now >= until || e.all_recovered());
        if let Some(s) = setup_end
            && now >= s + hold
            && fault_over
        {
            break false;
        }
        if show && now >= next_progress {
            progress(&e, a.tunnels, t0, false);
            next_progress = now + PROGRESS_EVERY;
        }
        let mut wake = now + PROGRESS_EVERY;
        if let Some(w) = e.next_wakeup() {
            wake = wake.min(w);
        }
        if let Some(s) = setup_end {
            // (Past ones are done with: a wait on them would spin.)
            if now < s + hold {
                wake = wake.min(s + hold);
            }
            if fault_at.is_none() && opts_fault.is_some() {
                wake = wake.min(s + fault_after);
            }
        }
        if let Some((p, wire)) = &io.traffic {
            wake = wake.min(wire.next_hop_at());
            if let Some(t) = p.t.next_due() {
                wake = wake.min(t);
            }
        }
        io.wait(&mut e, &mut buf, now, wake);
        io.flush(&mut e);
    };
    let end = Instant::now();
    e.finish(end);
    // The DELETEs: until each is answered or given up (bounded by
    // BYE_RESEND, `concurrency` at a time); those left count as unanswered.
    let linger = if interrupted {
        Duration::from_secs(1)
    } else {
        (e.closing_bound() + Duration::from_secs(1)).clamp(CLOSING_MIN, CLOSING_MAX)
    };
    while !e.closing_done() && end.elapsed() < linger {
        let now = Instant::now();
        e.tick(now);
        io.flush(&mut e);
        let wake = e
            .next_wakeup()
            .unwrap_or(now + PROGRESS_EVERY)
            .min(now + PROGRESS_EVERY);
        io.wait(&mut e, &mut buf, now, wake);
    }
    io.flush(&mut e);
    e.end_closing();
    if show {
        progress(&e, a.tunnels, t0, true);
    }
    let held = setup_end.map_or(Duration::ZERO, |s| end.saturating_duration_since(s));
    let totals = io.traffic.as_ref().map(|t| t.0.t.totals(end));
    if let Some(t) = totals {
        e.accounting_mut().lost_in_rekeys = t.lost_in_rekeys;
    }
    e.accounting_mut().retransmissions = e.retransmissions();
    let mut summary = Summary::of(
        e.accounting(),
        a.tunnels,
        held,
        cpu_seconds(),
        totals.is_some(),
    );
    // The AF_XDP sockets close and the XDP program comes off; then the addresses.
    let (tx_full, xdp_mode, next_hop_changes) = match io.traffic.take() {
        Some((p, wire)) => {
            summary.traffic_other = Some(p.other());
            summary.next_hop_changes = Some(wire.next_hop_changes);
            (p.tx_full, wire.attach_mode, wire.next_hop_changes)
        }
        None => (0, "", 0),
    };
    drop(addrs);
    if let Some(path) = &a.report {
        let notes = vec![
            format!(
                "gateway {}, {} tunnels asked, --rate {}, --concurrency {}",
                cfg.gateway,
                a.tunnels,
                a.rate.map_or("unlimited".to_string(), |r| r.to_string()),
                a.concurrency
            ),
            format!("config {}", a.config.display()),
        ];
        let page = crate::report::html(&summary, e.accounting(), "xdpsec loadtest ike", &notes);
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_text(&summary, io.send_errors, interrupted);
        if let Some(t) = totals {
            println!(
                "traffic: {} probes sent, {} replies, {} of {} tunnels answered (AF_XDP on {}, XDP {xdp_mode} mode), next_hop_changes {next_hop_changes}",
                t.sent, t.replies, t.tunnels_answered, summary.up, cfg.interface
            );
            if let Some(o) = summary.traffic_other.as_ref().filter(|o| !o.is_empty()) {
                let v: Vec<String> = o.iter().map(|(k, n)| format!("{k} {n}")).collect();
                println!("traffic: received, not a reply: {}", v.join(", "));
            }
            if tx_full > 0 {
                println!("traffic: {tx_full} probes not sent (no AF_XDP transmit frame free)");
            }
            if let Some(q) = summary.ttfp_ms {
                println!(
                    "time to first packet: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
                    q.p50, q.p90, q.p99, q.max
                );
            }
        }
    }
    Ok(summary)
}

fn print_text(s: &Summary, send_errors: u64, interrupted: bool) {
    println!(
        "attempts {}  up {}  failed {}{}",
        s.attempts,
        s.up,
        s.failed.values().sum::<u64>(),
        if interrupted { "  (interrupted)" } else { "" }
    );
    for (k, v) in &s.failed {
        println!("  {k}: {v}");
    }
    println!(
        "setup {:.3} s: {:.1} tunnels/s sustained, {:.1} peak, {:.1} attempts/s",
        s.seconds,
        s.tunnels_per_second,
        s.peak_tunnels_per_second,
        if s.seconds > 0.0 {
            s.attempts as f64 / s.seconds
        } else {
            0.0
        }
    );
    if s.rekeys > 0 {
        println!(
            "rekeys {} ({:.1}/s), lost in rekeys {}",
            s.rekeys, s.rekeys_per_second, s.lost_in_rekeys
        );
    }
    if let Some(f) = &s.failover {
        println!(
            "fault {}: {} tunnels, {} recovered, {} not recovered, {} got a DPD request",
            f.fault, f.tunnels, f.recovered, f.not_recovered, f.dpd_seen
        );
        for (what, q) in [
            ("failover time", &s.failover_ms),
            ("to the first DPD request", &s.dpd_ms),
        ] {
            if let Some(q) = q {
                println!(
                    "{what}: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
                    q.p50, q.p90, q.p99, q.max
                );
            }
        }
    }
    println!(
        "gone during the run: {} deleted by the gateway, {} dead (no answer to our requests); at the end {} DELETEs unanswered",
        s.deleted_by_gateway, s.dead_by_dpd, s.unanswered_deletes
    );
    let per = if s.up > 0 {
        s.cpu_seconds / s.up as f64 * 1000.0
    } else {
        0.0
    };
    println!("cpu {:.3} s ({per:.3} ms per tunnel up)", s.cpu_seconds);
    println!("IKE retransmissions {}", s.retransmissions);
    if send_errors > 0 {
        println!("send errors {send_errors}");
    }
}
