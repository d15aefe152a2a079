//! `xdpsec run`: start-up, the workers, the control socket, and shutdown.
//!
//! Every resource is owned by a value whose drop releases it (the XDP link,
//! the AF_XDP sockets, the control socket file), so a start-up that fails
//! half-way leaves nothing attached.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use anyhow::{Context, Result, bail};
use tracing::{error, info};
use xdpsec_afxdp::{QueueConfig, XskQueue};

use crate::{
    commands::{Daemon, QueueInfo},
    config::Config,
    ctlsock::ControlSocket,
    loader::XdpSteering,
    worker::{ClassStats, ClassifyHandler},
};

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
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Run the daemon in the foreground until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<()> {
    check_privileges()?;
    let sigset = block_signals();
    let iface = &config.underlay.interface;
    let c_iface = std::ffi::CString::new(iface.as_str())?;
    // SAFETY: c_iface is a valid NUL-terminated string.
    if unsafe { libc::if_nametoindex(c_iface.as_ptr()) } == 0 {
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
    let mut steering = XdpSteering::attach(iface, &config.underlay.udp_ports)?;

    let mut queues = Vec::new();
    let mut infos = Vec::new();
    for q in 0..config.underlay.queues {
        let xsk = XskQueue::open(&QueueConfig::new(iface, q)).with_context(|| {
            format!(
                "opening AF_XDP queue {q} of {iface} (does it have {} rx queues?)",
                config.underlay.queues
            )
        })?;
        steering.set_socket(q, xsk.raw_fd())?;
        info!(queue = q, mode = xsk.mode().as_str(), "AF_XDP socket bound");
        let class = Arc::new(ClassStats::default());
        infos.push(QueueInfo {
            queue: q,
            mode: xsk.mode(),
            stats: xsk.stats(),
            class: Arc::clone(&class),
        });
        queues.push((xsk, class));
    }

    let daemon = Arc::new(Daemon::new(&config, steering, infos));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (mut xsk, class) in queues {
        let stop = Arc::clone(&stop);
        let q = xsk.queue();
        let h = thread::Builder::new()
            .name(format!("xdpsec-q{q}"))
            .spawn(move || {
                let mut handler = ClassifyHandler::new(class);
                if let Err(e) = xsk.run(&mut handler, &stop) {
                    error!(queue = q, error = %e, "AF_XDP worker failed");
                }
                // The socket closes here, in its own thread, once the loop ends.
            })
            .context("spawning a worker thread")?;
        workers.push(h);
    }
    let ctl_thread = {
        let stop = Arc::clone(&stop);
        let daemon = Arc::clone(&daemon);
        thread::Builder::new()
            .name("xdpsec-ctl".into())
            .spawn(move || ctl.serve(|| stop.load(Ordering::Relaxed), |r| daemon.execute(r)))
            .context("spawning the control thread")?
    };
    info!(
        node = %config.node,
        interface = %iface,
        queues = config.underlay.queues,
        socket = %config.socket.display(),
        "xdpsec running; SIGINT or SIGTERM stops it"
    );
    println!(
        "xdpsec {} running on {iface} ({} queue(s)); control socket {}",
        config.node,
        config.underlay.queues,
        config.socket.display()
    );

    let mut sig: libc::c_int = 0;
    // SAFETY: sigset holds SIGINT and SIGTERM, blocked in every thread.
    unsafe { libc::sigwait(&sigset, &mut sig) };
    info!(signal = sig, "stopping");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let _ = ctl_thread.join();
    daemon.shutdown();
    drop(daemon);
    info!("stopped: XDP program detached, sockets closed");
    println!("xdpsec {} stopped", config.node);
    Ok(())
}

/// Lock a mutex, recovering the data if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
