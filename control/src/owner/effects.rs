//! What the owner core asks of the outside world, and the shell that does it.
//!
//! [`crate::owner::Owner::handle`] does no I/O: it returns [`Effects`]. The
//! SA table batch of the input is already published when they are
//! returned (one snapshot), so the [`Shell`] carries them out after it, in
//! this order:
//! - sends (IKE datagrams, OMP bytes, BFD hellos to inject, the kernel
//!   socket's ports) on the owner's thread: each is a push into a bounded
//!   queue that never blocks;
//! - everything that can take time (XDP port-map edits, kernel routes over
//!   netlink, remote syslog, the sequence reservation file) on the shell's
//!   own thread, then the reply to the command that asked for them. What
//!   the owner must learn back (a port XDP no longer steers, a reservation
//!   now on disk) comes back as [`Input::Shell`].
//!
//! So no disk, netlink or map write can stall BFD on the owner's thread.
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    thread::{self, JoinHandle},
};

use anyhow::{Context, Result};
use crossbeam::channel::{Receiver, Sender};
use tracing::{error, info};
use xdpsec_datapath::sa::SharedSnapshot;
use xdpsec_worker::punt::PuntHub;

use crate::{
    config::Cidr,
    ctlsock::Reply,
    platform::{
        kernelrx::{self, IkeDatagram},
        loader::{InsideRoutes, PortMap},
        route::DeviceRoutes,
    },
    sdwan::io::{IoCmd, IoHandle},
    seqstore::SeqWrite,
    syslog::RemoteSyslog,
};

/// A message for another thread, handed over without waiting.
pub enum Send {
    /// An IKE message for the kernel-socket thread to send.
    Ike(IkeDatagram),
    /// A command for the SD-WAN control-connection shell.
    Omp(IoCmd),
    /// An inner packet for the workers to encrypt on `tunnel` (BFD hellos).
    Inject {
        /// Datapath tunnel index.
        tunnel: u32,
        /// The inner IPv4 packet.
        packet: Vec<u8>,
    },
    /// The UDP ports the kernel's fragment socket listens on.
    KernelPorts(Vec<u16>),
}

/// Work for the shell's thread, done in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOp {
    /// Steer (true) or stop steering (false) UDP destination port as
    /// ESP in XDP's port map.
    SteerPort(u16, bool),
    /// `ip route replace|del PREFIX dev DEV`.
    Route {
        /// The device (the TUN).
        dev: String,
        /// The prefix.
        prefix: Cidr,
        /// Add (replace) or delete.
        add: bool,
    },
    /// Gateway mode: the prefixes the inside XDP program steers to the
    /// datapath, exactly these.
    InsideRoutes(BTreeSet<Cidr>),
    /// A line for the remote syslog collector.
    Syslog(String),
    /// Write the outbound sequence reservations durably, then tell the
    /// owner ([`ShellEvent::Reserved`]).
    Reserve(SeqWrite),
    /// Tell the owner what was done (after the ops before it).
    Notify(ShellEvent),
}

/// What the shell tells the owner back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellEvent {
    /// XDP stopped steering these ports: the datapath may forget them.
    PortsUnsteered(Vec<u16>),
    /// The reservations of this generation are on disk (`error: None`),
    /// or could not be written.
    Reserved {
        /// The [`SeqWrite::generation`] written.
        generation: u64,
        /// Why the write failed.
        error: Option<String>,
    },
}

/// What one input asks for.
#[derive(Default)]
pub struct Effects {
    /// SA snapshots published for this input (at most one).
    pub publishes: u64,
    /// SA table batches applied for this input (published together).
    pub batches: u64,
    /// Messages for other threads.
    pub sends: Vec<Send>,
    /// Slow work for the shell's thread.
    pub shell: Vec<ShellOp>,
    /// The answer to a command (or the metrics text), sent after `shell`.
    pub reply: Option<Reply>,
}

/// One job for the shell's thread.
struct Job {
    ops: Vec<ShellOp>,
    reply: Option<(Sender<Reply>, Reply)>,
}

/// Jobs queued for the shell's thread at most (beyond: logged and dropped).
const SHELL_QUEUE: usize = 4096;

/// Carries out the owner's effects: sends at once, the rest on its thread.
pub struct Shell {
    kernel_ctl: kernelrx::CtlHandle,
    omp: Option<IoHandle>,
    punt: Option<Arc<PuntHub>>,
    snap: SharedSnapshot,
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// What the shell's thread owns.
pub struct ShellParts {
    /// XDP's UDP port map.
    pub ports: Option<PortMap>,
    /// Gateway mode: the inside program's route tries.
    pub inside_routes: Option<InsideRoutes>,
    /// The remote syslog collector (`[logging]`).
    pub syslog: Option<RemoteSyslog>,
}

impl Shell {
    /// Start the shell's thread; what the owner must learn back goes to `events`.
    pub fn spawn(
        parts: ShellParts,
        kernel_ctl: kernelrx::CtlHandle,
        omp: Option<IoHandle>,
        punt: Option<Arc<PuntHub>>,
        snap: SharedSnapshot,
        events: Sender<ShellEvent>,
    ) -> Result<Shell> {
        let (tx, rx) = crossbeam::channel::bounded(SHELL_QUEUE);
        let thread = thread::Builder::new()
            .name("xdpsec-shell".into())
            .spawn(move || serve(parts, rx, events))
            .context("spawning the owner's shell thread")?;
        Ok(Shell {
            kernel_ctl,
            omp,
            punt,
            snap,
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Carry out `fx`; the reply (if any) goes to `reply_to` after the
    /// shell's work for it.
    pub fn apply(&mut self, fx: Effects, reply_to: Option<Sender<Reply>>) {
        for s in fx.sends {
            match s {
                Send::Ike(d) => self.kernel_ctl.send(kernelrx::Ctl::Send(d)),
                Send::KernelPorts(p) => self.kernel_ctl.send(kernelrx::Ctl::SetPorts(p)),
                Send::Omp(c) => {
                    if let Some(io) = &self.omp {
                        io.send(c);
                    }
                }
                Send::Inject { tunnel, packet } => {
                    // A full inject queue is counted by the worker.
                    if let Some(p) = &self.punt {
                        p.inject(&self.snap.load(), tunnel, &packet);
                    }
                }
            }
        }
        let reply = reply_to.zip(fx.reply);
        if fx.shell.is_empty() {
            if let Some((tx, r)) = reply {
                // The client may have gone; nothing to do then.
                let _ = tx.send(r);
            }
            return;
        }
        let job = Job {
            ops: fx.shell,
            reply,
        };
        let Some(jobs) = &self.jobs else {
            return;
        };
        if let Err(e) = jobs.try_send(job) {
            error!("the owner's shell is {SHELL_QUEUE} jobs behind: work dropped");
            if let Some((tx, r)) = e.into_inner().reply {
                let _ = tx.send(r);
            }
        }
    }

    /// Wait for the shell's thread to finish what is queued, then stop it.
    pub fn stop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shell's thread: jobs in order until the owner drops its end.
fn serve(mut parts: ShellParts, jobs: Receiver<Job>, events: Sender<ShellEvent>) {
    let mut routes: HashMap<String, DeviceRoutes> = HashMap::new();
    for job in jobs {
        for op in job.ops {
            match op {
                ShellOp::SteerPort(port, steer) => match parts.ports.as_mut() {
                    Some(m) => {
                        if let Err(e) = m.set(port, steer) {
                            error!("{e:#}");
                        }
                    }
                    None => error!("steering UDP port {port}: no XDP port map"),
                },
                ShellOp::Route { dev, prefix, add } => route(&mut routes, &dev, prefix, add),
                ShellOp::InsideRoutes(want) => {
                    if let Some(r) = parts.inside_routes.as_mut()
                        && let Err(e) = r.sync(&want)
                    {
                        error!("updating the inside XDP route map: {e:#}");
                    }
                }
                ShellOp::Syslog(line) => {
                    if let Some(s) = parts.syslog.as_mut() {
                        s.send(&line);
                    }
                }
                ShellOp::Reserve(w) => {
                    let error = w.write().err().map(|e| format!("{e:#}"));
                    let _ = events.send(ShellEvent::Reserved {
                        generation: w.generation,
                        error,
                    });
                }
                ShellOp::Notify(ev) => {
                    let _ = events.send(ev);
                }
            }
        }
        if let Some((tx, r)) = job.reply {
            let _ = tx.send(r);
        }
    }
}

/// One route into `dev` over rtnetlink (the socket kept per device).
fn route(routes: &mut HashMap<String, DeviceRoutes>, dev: &str, prefix: Cidr, add: bool) {
    if !routes.contains_key(dev) {
        match DeviceRoutes::open(dev) {
            Ok(r) => {
                routes.insert(dev.to_string(), r);
            }
            Err(e) => {
                error!("routing {prefix} into {dev}: {e:#}");
                return;
            }
        }
    }
    let r = routes.get_mut(dev).expect("inserted above");
    if add {
        match r.replace(prefix) {
            Ok(()) => info!("SD-WAN route {prefix} via {dev}"),
            Err(e) => error!("routing {prefix} into {dev}: {e}"),
        }
    } else {
        // Gone already (e.g. the device) is fine.
        let _ = r.delete(prefix);
        info!("SD-WAN route {prefix} removed (no BFD-up tunnel)");
    }
}
