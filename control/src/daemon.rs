//! `xdpsec run`: start-up, the workers, the control socket, and shutdown.
//! This module only wires the pieces together: the owner of control state
//! (`owner`), the per-queue workers, the control socket and the platform
//! shells; it holds no control state itself.
//!
//! Every resource is owned by a value whose drop releases it (the XDP link,
//! the AF_XDP sockets, the control socket file), so a start-up that fails
//! half-way leaves nothing attached.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use tracing::{error, info};
use xdpsec_afxdp::{QueueConfig, XskQueue};
use xdpsec_datapath::{DropCounters, WorkerState};
use xdpsec_worker::{
    InsideIo, InsideXdp, Published, Workers, neighbors::InsideNeighbors, routes::RouteTable,
    stats::QueueInfo,
};

use crate::{
    config::{Config, Inside},
    ctlsock::ControlSocket,
    owner::{Msg, Owner, OwnerHandle, Shell, ShellParts, Started, build_tunnels},
    platform::kernelrx::{self, CtlHandle, KernelRxStats},
    platform::loader::XdpSteering,
    platform::neighbor::{self, NextHops, inside},
    platform::tun::Tun,
    seqstore::SeqStore,
};

/// How often control re-reads the peers' next-hop MACs from the kernel.
const NEXT_HOP_REFRESH: Duration = Duration::from_secs(2);

/// Capabilities `xdpsec run` needs (bit numbers from linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Check the effective capabilities before touching anything.
fn check_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (or CAP_SYS_ADMIN)");
    }
    if !has(CAP_IPC_LOCK) {
        missing.push("CAP_IPC_LOCK");
    }
    if !missing.is_empty() {
        bail!(
            "xdpsec run needs {} to load XDP and bind AF_XDP sockets: run it as root (sudo) or grant them with setcap",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Block SIGINT and SIGTERM in this thread (and every thread it spawns), so
/// that the main thread can wait for them with `sigwait`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Keys are in memory from here on: no core dumps, and no ptrace attach
/// by unprivileged processes of the same user (PR_SET_DUMPABLE 0).
fn forbid_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit and prctl with valid arguments; they only change
    // this process's own limits and flags.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &zero) != 0 {
            tracing::warn!("could not disable core dumps (RLIMIT_CORE)");
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            tracing::warn!("could not mark the process non-dumpable");
        }
    }
}

/// Tell systemd (`Type=notify`) about our state: `READY=1`, `STOPPING=1`.
/// Nothing happens without `NOTIFY_SOCKET` (not started by systemd).
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket name.
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name,
        )
        .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state}: {e}");
    }
}

/// Run the daemon in the foreground until SIGINT or SIGTERM.
pub fn run(config: Config, config_path: &std::path::Path) -> Result<()> {
    check_privileges()?;
    forbid_core_dumps();
    let sigset = block_signals();
    let iface = &config.underlay.interface;
    if crate::platform::ifindex(iface).is_err() {
        bail!(
            "interface {iface} (underlay.interface) does not exist in this network namespace: create it or fix the config"
        );
    }
    // Old kernels charge BPF maps and UMEMs to RLIMIT_MEMLOCK.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        // Current kernels account BPF and UMEM memory to the memory cgroup;
        // CAP_IPC_LOCK (checked above) exempts the UMEM from the limit.
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }

    // The control socket first: a second daemon on the same path stops here,
    // before it touches the interface.
    let ctl = ControlSocket::bind(&config.socket)?;
    // The metrics listener too: a bind failure is a start-up error.
    let metrics_server = config
        .metrics
        .as_ref()
        .map(crate::metrics::bind)
        .transpose()?;
    let epoch = Instant::now();
    // Sequence reservations and SAs next: a damaged state file or a key the
    // cipher refuses stops start-up before anything is attached.
    let mut seq = SeqStore::open(&config.state_dir).with_context(|| {
        format!(
            "opening state_dir {} (outbound sequence numbers must survive restarts)",
            config.state_dir.display()
        )
    })?;
    let (table, registry) = build_tunnels(&config, &mut seq, epoch.elapsed())?;
    let snap = table.shared();

    let tun = match &config.inside {
        Inside::Tun {
            name,
            address,
            offloads,
        } => {
            let t = Tun::create(name, config.underlay.queues, *address, *offloads)?;
            let subnets: Vec<_> = config
                .tunnels
                .iter()
                .flat_map(|t| t.remote_subnets.iter().copied())
                .collect();
            t.add_routes(&subnets)
                .with_context(|| format!("routing the tunnels' remote_subnets into {name}"))?;
            Some(t)
        }
        Inside::Sink | Inside::Xdp { .. } => None,
    };
    // Gateway mode: the inside interface must exist, and its MAC is the
    // source of every frame sent there.
    let inside_neighbors = match &config.inside {
        Inside::Xdp { interface, .. } => {
            if crate::platform::ifindex(interface).is_err() {
                bail!(
                    "interface {interface} (inside.interface) does not exist in this network namespace: create it or fix the config"
                );
            }
            let mac = neighbor::interface_mac(interface).with_context(|| {
                format!("reading the MAC address of {interface} (inside.interface)")
            })?;
            Some(Arc::new(InsideNeighbors::new(interface, mac)))
        }
        _ => None,
    };
    // Gateway mode: inner packets must fit the underlay after the largest
    // ESP overhead, as the TUN's MTU does on a 1500-byte underlay.
    let max_inner = {
        let overhead = 1500 - crate::platform::tun::TUN_MTU;
        let underlay_mtu = inside::interface_mtu(iface).unwrap_or(1500);
        let max = underlay_mtu.saturating_sub(overhead);
        if let Inside::Xdp { interface, .. } = &config.inside
            && let Some(mtu) = inside::interface_mtu(interface)
            && mtu > max
        {
            tracing::warn!(
                "inside.interface {interface} has MTU {mtu}: inner packets over {max} bytes would not fit the underlay's MTU {underlay_mtu} after ESP and are dropped (inside_too_big); give it and its hosts MTU {max}"
            );
        }
        max as usize
    };
    let mut routes = Vec::new();
    for (i, t) in config.tunnels.iter().enumerate() {
        for s in &t.remote_subnets {
            routes.push((*s, i as u32));
        }
    }
    let static_routes = routes.clone();
    let routes = Arc::new(ArcSwap::from_pointee(RouteTable::new(routes)));
    let local_mac = neighbor::interface_mac(iface)
        .with_context(|| format!("reading the MAC address of {iface}"))?;
    // Tunnel indices: the configured tunnels, then the SD-WAN TLOCs and
    // room for their peers, then the templates' instances.
    let n_tunnels = config.tunnels.len() as u32;
    let index_end = crate::owner::index_end(&config);
    let next_hops = Arc::new(NextHops::new(
        (0..index_end)
            .map(|i| config.tunnels.get(i as usize).map(|t| t.peer))
            .collect(),
    ));

    let mut steering =
        XdpSteering::attach(iface, &config.underlay.udp_ports, config.underlay.xdp_mode)?;
    if let Inside::Xdp {
        interface,
        xdp_mode,
    } = &config.inside
    {
        // Only destinations a tunnel route covers are taken from the
        // kernel: the gateway's own and unrouted traffic stay there.
        let prefixes: Vec<_> = static_routes.iter().map(|(c, _)| *c).collect();
        steering
            .attach_inside(interface, &prefixes, *xdp_mode)
            .with_context(|| format!("attaching the inside XDP program to {interface}"))?;
    }

    let pool = Workers::new(config.underlay.queues as usize)?;
    let published = Published {
        snap: snap.clone(),
        routes: Arc::clone(&routes),
        next_hops: next_hops.macs(),
        local_mac,
        epoch,
    };
    let mut queues = Vec::new();
    let mut infos = Vec::new();
    let mut workers_shared = Vec::new();
    for q in 0..config.underlay.queues {
        let qcfg = QueueConfig {
            busy_poll_us: config.underlay.busy_poll_us,
            ..QueueConfig::new(iface, q)
        };
        let xsk = XskQueue::open(&qcfg).with_context(|| {
            format!(
                "opening AF_XDP queue {q} of {iface} (does it have {} rx queues?)",
                config.underlay.queues
            )
        })?;
        steering.set_socket(q, xsk.raw_fd())?;
        info!(queue = q, mode = xsk.mode().as_str(), "AF_XDP socket bound");
        let io = pool.io(q as usize);
        let ws = WorkerState::new(q as u16);
        workers_shared.push(ws.shared());
        let xsk_fd = xsk
            .stats_fd()
            .map_err(|e| error!(queue = q, error = %e, "no AF_XDP ring counters for this queue"))
            .ok();
        let inside = match (&tun, &config.inside, &inside_neighbors) {
            (Some(t), _, _) if t.vnet_hdr => InsideIo::TunVnet(xdpsec_worker::TunVnet {
                fd: t.queue_fd(q as usize),
                max_inner: crate::platform::tun::TUN_MTU as usize,
            }),
            (Some(t), _, _) => InsideIo::Tun(t.queue_fd(q as usize)),
            (None, Inside::Xdp { interface, .. }, Some(neighbors)) => {
                // Chained frames: a host's super-packets (generic mode on
                // veth) and frames over a UMEM frame (a jumbo inside MTU).
                let qcfg = QueueConfig {
                    busy_poll_us: config.underlay.busy_poll_us,
                    multi_buffer: true,
                    ..QueueConfig::new(interface, q)
                };
                let xsk = XskQueue::open(&qcfg).with_context(|| {
                    format!(
                        "opening AF_XDP queue {q} of {interface} (inside.interface; does it have {} rx queues?)",
                        config.underlay.queues
                    )
                })?;
                if let Some(i) = steering.inside() {
                    i.set_socket(q, xsk.raw_fd())?;
                    // Every queue asks the same of the same kernel: the
                    // last one's answer stands for all.
                    i.set_multi_buffer(xsk.multi_buffer())?;
                }
                info!(queue = q, interface = %interface, mode = xsk.mode().as_str(), multi_buffer = xsk.multi_buffer(), "inside AF_XDP socket bound");
                let seg_max = inside::interface_mtu(interface)
                    .map_or(max_inner, |m| (m as usize).min(max_inner));
                InsideIo::Xdp(Box::new(InsideXdp {
                    xsk,
                    neighbors: Arc::clone(neighbors),
                    max_inner,
                    seg_max,
                    chain: xdpsec_worker::chain::Chain::new(),
                }))
            }
            _ => InsideIo::Sink,
        };
        let inside_xsk_fd = match &inside {
            InsideIo::Xdp(x) => x
                .xsk
                .stats_fd()
                .map_err(|e| error!(queue = q, error = %e, "no AF_XDP ring counters for this inside queue"))
                .ok(),
            _ => None,
        };
        infos.push(QueueInfo {
            queue: q,
            mode: xsk.mode(),
            stats: xsk.stats(),
            worker: ws.shared(),
            io: Arc::clone(&io),
            xsk_fd,
            inside_xsk_fd,
        });
        queues.push((xsk, pool.handler(ws, &published, inside)));
    }
    // Fragments the kernel reassembles, and ESP it received, come back
    // through worker 0 (which hands frames on to their SA's owner).
    let stop = Arc::new(AtomicBool::new(false));
    let kernel_drops = Arc::new(DropCounters::new());
    let kernel_rx = Arc::new(KernelRxStats::default());
    let (kernel_ctl, kernel_ctl_rx, kernel_wake) =
        CtlHandle::new().context("creating the kernel-socket thread's wake-up")?;
    let ports: Vec<u16> = config.underlay.udp_ports.iter().copied().collect();
    // IKE messages from the kernel sockets to the owner (IKE tunnels only).
    let ike_peers = crate::owner::ike_peers(&config)?;
    let (ike_tx, ike_rx) = if ike_peers.is_empty() {
        (None, crossbeam::channel::never())
    } else {
        let (tx, rx) = crossbeam::channel::bounded(1024);
        (Some(tx), rx)
    };
    let kernel_thread = kernelrx::spawn(
        &ports,
        pool.handoff(0),
        Arc::clone(&kernel_drops),
        Arc::clone(&kernel_rx),
        kernel_ctl_rx,
        kernel_wake,
        ike_tx,
        Arc::clone(&stop),
    )
    .context("spawning the kernel-socket thread")?;
    // The peers' next hops the kernel knows already (read only: one it
    // lacks is resolved when traffic needs it, see `NextHops::refresh`).
    next_hops.refresh(iface, Duration::ZERO);
    if let Some(n) = &inside_neighbors {
        inside::refresh(n, Duration::ZERO);
    }
    // The SD-WAN edge: its I/O shell (control connections, punted BFD).
    let (sdwan, sdwan_rx, sdwan_thread) = match &config.sdwan {
        Some(cfg) => {
            let (tx, rx) = crossbeam::channel::bounded(crate::sdwan::io::EVENT_QUEUE);
            let (io, h) = crate::sdwan::io::spawn(pool.punt(), tx, Arc::clone(&stop))?;
            let edge = crate::sdwan::Sdwan::new(cfg.clone(), n_tunnels, Instant::now());
            (Some((edge, io)), rx, Some(h))
        }
        None => (None, crossbeam::channel::never(), None),
    };
    let (sdwan, sdwan_io) = sdwan.unzip();
    // The owner's shell: XDP's port map, kernel routes, remote syslog.
    let syslog = config.logging.as_ref().and_then(|l| {
        crate::syslog::RemoteSyslog::new(l.clone(), &config.node)
            .map_err(|e| error!("remote syslog to {}: {e}", l.host))
            .ok()
    });
    let (shell_tx, shell_rx) = crossbeam::channel::unbounded();
    let shell = Shell::spawn(
        ShellParts {
            ports: steering.take_port_map(),
            inside_routes: steering.inside().and_then(|i| i.take_routes()),
            syslog,
        },
        kernel_ctl,
        sdwan_io,
        Some(pool.punt()),
        snap.clone(),
        shell_tx,
    )?;

    let owner = Owner::new(
        Started {
            config: config.clone(),
            config_path: config_path.to_path_buf(),
            epoch,
            steering: Some(steering),
            queues: infos,
            workers: workers_shared,
            extra_drops: vec![kernel_drops, next_hops.held_drops()],
            kernel_rx,
            sdwan,
            routes: Arc::clone(&routes),
            static_routes,
            next_hops: Arc::clone(&next_hops),
            taps: pool.taps(),
        },
        table,
        registry,
        seq,
        ike_peers,
        Instant::now(),
    );
    let (handle, inbox) = OwnerHandle::channel();
    let owner_thread = thread::Builder::new()
        .name("xdpsec-owner".into())
        .spawn(move || owner.run(shell, inbox, ike_rx, sdwan_rx, shell_rx))
        .context("spawning the control-state owner")?;
    let workers = Workers::spawn(queues, &stop)?;
    // Platform shell: keeps the peers' next-hop MACs fresh for the workers.
    let next_hop_thread = {
        let stop = Arc::clone(&stop);
        let iface = iface.clone();
        let next_hops = Arc::clone(&next_hops);
        let inside = inside_neighbors.clone();
        thread::Builder::new()
            .name("xdpsec-nh".into())
            .spawn(move || {
                let mut last = Instant::now();
                // Frames the workers encrypted before their next hop had a MAC.
                let mut held = neighbor::held::HeldFrames::new(&iface);
                while !stop.load(Ordering::Relaxed) {
                    // Gateway mode: inside next hops workers found no MAC
                    // for are resolved now; all are re-read with the rest.
                    if let Some(n) = &inside
                        && (n.has_requests() || last.elapsed() >= NEXT_HOP_REFRESH)
                    {
                        let wait = if n.has_requests() {
                            Duration::from_millis(500)
                        } else {
                            Duration::ZERO
                        };
                        inside::refresh(n, wait);
                    }
                    // A new peer (SD-WAN) is resolved at once, waiting up
                    // to a second for the kernel's answer; held frames are
                    // sent as soon as their next hop is known.
                    let wait = held.wait(Instant::now(), Duration::from_millis(100));
                    if next_hops.wait(wait) == neighbor::Wake::Poke {
                        next_hops.refresh(&iface, Duration::from_secs(1));
                        last = Instant::now();
                    }
                    held.serve(&next_hops, Instant::now());
                    if last.elapsed() >= NEXT_HOP_REFRESH {
                        next_hops.refresh(&iface, Duration::ZERO);
                        last = Instant::now();
                    }
                }
                held.drop_all(&next_hops);
            })
            .context("spawning the next-hop thread")?
    };
    let ctl_thread = {
        let stop = Arc::clone(&stop);
        let handle = handle.clone();
        thread::Builder::new()
            .name("xdpsec-ctl".into())
            .spawn(move || ctl.serve(|| stop.load(Ordering::Relaxed), move |r| handle.request(r)))
            .context("spawning the control thread")?
    };
    let metrics_thread = match metrics_server {
        Some(server) => {
            let owner = handle.clone();
            Some(crate::metrics::spawn(
                server,
                move || owner.scrape(),
                Arc::clone(&stop),
            )?)
        }
        None => None,
    };
    info!(
        node = %config.node,
        interface = %iface,
        queues = config.underlay.queues,
        socket = %config.socket.display(),
        "xdpsec running; SIGINT or SIGTERM stops it"
    );
    sd_notify("READY=1");
    println!(
        "xdpsec {} running on {iface} ({} queue(s)); control socket {}",
        config.node,
        config.underlay.queues,
        config.socket.display()
    );

    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: sigset holds SIGINT, SIGTERM and SIGHUP, blocked in every thread.
        unsafe { libc::sigwait(&sigset, &mut sig) };
        if sig != libc::SIGHUP {
            break;
        }
        // SIGHUP: reload the config file, as `request platform software xdpsec reload`.
        handle.send(Msg::Reload);
    }
    info!(signal = sig, "stopping");
    sd_notify("STOPPING=1");
    // IKE peers hear at once that our IKE SAs end (a DELETE each), not
    // by DPD: the owner queues them to the kernel-socket thread, which
    // sends what is queued before it stops. Bounded: a stuck owner does
    // not hold the stop up.
    let (tx, rx) = crossbeam::channel::bounded(1);
    if handle.send(Msg::StopIke(tx)) {
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let _ = ctl_thread.join();
    if let Some(h) = metrics_thread {
        let _ = h.join();
    }
    let _ = next_hop_thread.join();
    let _ = kernel_thread.join();
    if let Some(h) = sdwan_thread {
        let _ = h.join();
    }
    handle.send(Msg::Shutdown);
    let (mut owner, mut shell) = owner_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the control-state owner panicked"))?;
    // SD-WAN routes out of the kernel, then the shell stops.
    let (steering, fx) = owner.shutdown(Instant::now());
    shell.apply(fx, None);
    shell.stop();
    // Dropping the steering detaches the XDP program.
    drop(steering);
    drop(owner);
    drop(tun);
    info!("stopped: XDP program detached, sockets closed");
    println!("xdpsec {} stopped", config.node);
    Ok(())
}
