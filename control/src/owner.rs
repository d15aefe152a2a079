//! The owner of control state.
//!
//! One thread owns the configuration in force, the tunnels, the SA table,
//! the outbound sequence reservations, the log buffer, the XDP steering
//! handle and every `clear` baseline. Everything that changes state reaches
//! it as a [`Msg`] over one channel (control-socket commands with a reply
//! channel, SIGHUP reloads) or is done on its own tick (datapath events
//! into log lines, sequence reservations). No other thread writes control
//! state, so there are no locks and no lock order to get wrong; workers
//! only ever see published SA snapshots and read nothing the owner holds.
//!
//! The owner is a core: [`Owner::handle`] takes the time and one [`Input`]
//! and returns [`Effects`] (sends, XDP and route work, the reply), which
//! the [`Shell`] carries out; the owner does no I/O itself. The SA table
//! changes of one input reach the workers as one published snapshot.
mod commands;
mod counters;
mod early_drop;
pub mod effects;
mod ike;
mod metrics;
pub mod registry;
mod reload;
mod reserve;
mod sa_commands;
mod sdwan;
mod sdwan_commands;
mod sdwan_show;
mod show;
mod taps;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use crossbeam::channel::{Receiver, Sender, select, tick};
pub use effects::{Effects, Send, Shell, ShellEvent, ShellOp, ShellParts};
pub(crate) use ike::esp_cipher;
pub use ike::{ike_peers, ike_templates, index_end};
pub use registry::{Key, Kind, Registry, SaRef, SaSlot, TunnelEntry};
use tracing::{error, info, warn};
use xdpsec_common::XDP_COUNTER_COUNT;
use xdpsec_datapath::{
    DropCounters, DropStats,
    crypto::{Cipher, KeyMaterial},
    sa::{AddrSet, InboundSaConfig, OutboundSaConfig, OuterHeader, Prefix as DpPrefix, Selectors},
    sa::{OutboundEntry, OutboundSa, SaChange, SaId, SaTable},
    worker::WorkerShared,
};
use xdpsec_ike::{
    Action, Encr, EspEncap, EspProposal, Identity, Ike, IkeOffer, Input as IkeInput,
    InstanceChange, Integ, PeerConfig, TemplateConfig,
};

use arc_swap::ArcSwap;
use xdpsec_worker::{
    routes::RouteTable,
    stats::{N_QUEUE_FIELDS, QueueInfo},
    taps::{Capture, Taps},
};

use crate::{
    config::{Cidr, Config, Tunnel, TunnelKind},
    ctlsock::{Reply, Request},
    platform::kernelrx::{IkeDatagram, KernelRxStats},
    platform::loader::XdpSteering,
    platform::neighbor::NextHops,
    seqstore::{self, KeyId, SeqStore},
    state::{EventLogger, LogBuffer, tunnel_endpoint, tunnel_sa_changes},
};

/// How often the owner drains datapath events and checks reservations.
pub const TICK: Duration = Duration::from_millis(100);

/// What the owner is asked to do.
pub enum Msg {
    /// A control-socket request; the reply goes back on the channel.
    Command(Request, Sender<Reply>),
    /// SIGHUP: re-read the config file (as `request platform software xdpsec reload`).
    Reload,
    /// Stop serving and hand the state back (the workers have stopped).
    Shutdown,
    /// The daemon is about to stop (before anything else stops): delete
    /// every IKE SA, the DELETEs handed to the kernel-socket thread, then
    /// reply.
    StopIke(Sender<()>),
    /// A Prometheus scrape: the OpenMetrics text goes back on the channel.
    Metrics(Sender<String>),
}

/// One input of the owner core ([`Owner::handle`]).
pub enum Input {
    /// A control-socket command, parsed (the reply is in the effects).
    Command {
        /// The command.
        command: crate::grammar::Command,
        /// Reply with JSON instead of IOS text.
        json: bool,
    },
    /// SIGHUP: re-read the config file.
    Reload,
    /// A Prometheus scrape (the text is the reply's output).
    Metrics,
    /// The daemon stops: delete every IKE SA (the DELETEs are sends).
    StopIke,
    /// An IKE message from the kernel sockets.
    Ike(IkeDatagram),
    /// An event of the SD-WAN I/O shell.
    Sdwan(crate::sdwan::io::IoEvent),
    /// The SD-WAN cores' timers.
    Timers,
    /// The periodic tick ([`TICK`]).
    Tick,
    /// Start the SD-WAN edge (ports, control connections).
    Start,
    /// What the owner's shell did.
    Shell(ShellEvent),
}

/// Counter values at the last `clear platform hardware qfp active statistics`.
pub struct Baseline {
    /// XDP steering counters.
    pub xdp: [u64; XDP_COUNTER_COUNT as usize],
    /// Per-queue values, in `QUEUE_FIELDS` order.
    pub queues: Vec<[u64; N_QUEUE_FIELDS]>,
    /// Dummy packets summed over workers.
    pub dummy_packets: u64,
    /// The kernel-socket shell's values, in `KernelRxStats::values` order.
    pub kernel: [u64; 9],
    /// Gateway mode: the inside XDP program's counters.
    pub inside_xdp: [u64; xdpsec_common::INSIDE_COUNTER_COUNT as usize],
}

/// The control state and its single owner.
pub struct Owner {
    /// Node name.
    node: String,
    /// Local underlay address.
    local: IpAddr,
    /// Underlay interface.
    interface: String,
    /// When the daemon started (uptime).
    started: Instant,
    /// The datapath's clock origin (`now` for the SA table).
    epoch: Instant,
    /// The config in force.
    config: Config,
    /// The config file (re-read by reloads).
    config_path: PathBuf,
    /// Every tunnel (manual, IKE, SD-WAN peer) and its SAs' bookkeeping.
    registry: Registry,
    /// The SA table (control's master copy; publishes snapshots).
    table: SaTable,
    /// XDP steering (None once shut down).
    steering: Option<XdpSteering>,
    /// What control knows of each queue.
    queues: Vec<QueueInfo>,
    /// `clear platform hardware qfp active statistics` baseline.
    baseline: Baseline,
    /// Drop counters over all workers, with the `clear` baseline.
    drops: DropStats,
    /// Each worker's shared counters and events.
    workers: Vec<Arc<WorkerShared>>,
    /// The `show logging` buffer.
    log: LogBuffer,
    /// Turns datapath events into rate-limited log lines.
    events: EventLogger,
    /// Outbound sequence reservations (in memory; the shell writes them,
    /// see `reserve`).
    seq: SeqStore,
    /// What the kernel-socket shell received (reassembled fragments).
    kernel_rx: Arc<KernelRxStats>,
    /// The time of the input being handled.
    now: Instant,
    /// What the input being handled asks of the shell.
    fx: Effects,
    /// The UDP ports XDP steers (its port map, as the shell keeps it).
    steered: BTreeSet<u16>,
    /// Ports the shell is told to stop steering: the datapath keeps them
    /// until it says XDP did.
    unsteering: BTreeSet<u16>,
    /// The IKEv2 core for every IKE tunnel (None without IKE tunnels).
    ike: Option<Ike>,
    /// Negotiated outbound SAs already asked to rekey for their sequence
    /// numbers (asked once each).
    seq_rekeyed: std::collections::HashSet<SaId>,
    /// Outbound SAs waiting for their reservation to be on disk.
    seq_wait: reserve::SeqWait,
    /// The SD-WAN edge (`[sdwan]`), if this node is one.
    sdwan: Option<crate::sdwan::Sdwan>,
    /// The workers' inner route table (republished on SD-WAN route changes).
    routes: Arc<ArcSwap<RouteTable>>,
    /// Routes of the configured tunnels (`remote_subnets`).
    static_routes: Vec<(Cidr, u32)>,
    /// Next-hop MACs per tunnel index, and the peers they resolve.
    next_hops: Arc<NextHops>,
    /// The XDP program's early drops, mirrored into the drop table (part of `drops`).
    xdp_drops: Arc<DropCounters>,
    /// A drop capture or packet trace is armed: early drop stays off so
    /// they see every frame (set it, then call `sync_early_drop`).
    early_drop_hold: bool,
    /// Whether early drop is armed in XDP now.
    early_drop_armed: bool,
    /// Packet trace and drop capture, shared with the workers.
    taps: Arc<Taps>,
    /// The running `monitor capture drops` writer, if any.
    capture: Option<Capture>,
}

/// The pieces `Owner::start` needs from start-up.
pub struct Started {
    /// The validated config.
    pub config: Config,
    /// Its path.
    pub config_path: PathBuf,
    /// The datapath's clock origin.
    pub epoch: Instant,
    /// XDP steering (None in tests: counters read zero, early drop stays off).
    pub steering: Option<XdpSteering>,
    /// Per-queue views.
    pub queues: Vec<QueueInfo>,
    /// The workers' shared parts.
    pub workers: Vec<Arc<WorkerShared>>,
    /// Drop counters of other datapath threads (the kernel-socket shell).
    pub extra_drops: Vec<Arc<DropCounters>>,
    /// The kernel-socket shell's counters.
    pub kernel_rx: Arc<KernelRxStats>,
    /// The SD-WAN edge, if configured.
    pub sdwan: Option<crate::sdwan::Sdwan>,
    /// The workers' route table.
    pub routes: Arc<ArcSwap<RouteTable>>,
    /// Routes of the configured tunnels.
    pub static_routes: Vec<(Cidr, u32)>,
    /// Next-hop MACs.
    pub next_hops: Arc<NextHops>,
    /// Packet trace and drop capture, shared with the workers.
    pub taps: Arc<Taps>,
}

/// Build the SA table for `cfg`: one publish, sequence numbers resumed above
/// the reservations in `seq` (made durable before anything is published).
/// Linear in the number of tunnels.
pub fn build_tunnels(
    cfg: &Config,
    seq: &mut SeqStore,
    now: Duration,
) -> Result<(SaTable, Registry)> {
    let mut table = SaTable::new();
    let mut changes = Vec::with_capacity(cfg.tunnels.len() * 2 + 2);
    let mut endpoints = Vec::with_capacity(cfg.tunnels.len());
    let mut keys = Vec::with_capacity(cfg.tunnels.len());
    for (i, t) in cfg.tunnels.iter().enumerate() {
        endpoints.push(tunnel_endpoint(cfg, i as u32));
        let TunnelKind::Manual(m) = &t.kind else {
            keys.push(None);
            continue;
        };
        let key = KeyId::of(&m.outbound.key);
        let (last, limit) = seqstore::start(seq, key);
        let c = tunnel_sa_changes(cfg, i as u32, last, limit).expect("a manual tunnel");
        changes.push(c.inbound);
        changes.push(c.outbound);
        keys.push(Some(key));
    }
    let ports: Vec<_> = cfg.underlay.udp_ports.iter().map(|&p| p..=p).collect();
    changes.push(SaChange::SetUdpPorts(ports));
    changes.push(SaChange::SetEndpoints(endpoints));
    // Durable before any SA can send: a crash after this point resumes
    // above these reservations.
    seq.commit()
        .context("recording outbound sequence reservations in state_dir")?;
    let ids = table
        .apply(changes, now)
        .map_err(|e| anyhow!("installing the configured SAs: {e}"))?;
    // `apply` returns the added SAs in order: inbound, outbound per manual tunnel.
    let mut ids = ids.into_iter();
    let mut registry = Registry::default();
    for (i, (t, out_key)) in cfg.tunnels.iter().zip(keys).enumerate() {
        let (kind, inbound, outbound) = match &t.kind {
            TunnelKind::Manual(m) => (
                Kind::Manual,
                vec![SaSlot {
                    spi: m.inbound.spi,
                    id: ids.next().expect("one id per SA"),
                }],
                Some(SaSlot {
                    spi: m.outbound.spi,
                    id: ids.next().expect("one id per SA"),
                }),
            ),
            // A template (`peer_range`) is no tunnel of its own: its
            // instances come with their peers.
            TunnelKind::Ike(k) if k.template.is_some() => continue,
            TunnelKind::Ike(_) => (Kind::Ike, Vec::new(), None),
        };
        registry.insert(TunnelEntry {
            index: i as u32,
            kind,
            name: t.name.clone(),
            local: cfg.underlay.address,
            peer: t.peer,
            peer_port: None,
            worker: t.worker as u16,
            inbound,
            outbound,
            out_key,
            instance: None,
        });
    }
    Ok((table, registry))
}

impl Owner {
    /// Every SA of the node: the configured tunnels' (inbound first), then
    /// the SD-WAN peers'.
    fn all_sas(&self) -> impl Iterator<Item = SaRef<'_>> + '_ {
        self.registry.sas()
    }

    /// Take over the started pieces and the SA table built for them.
    pub fn new(
        s: Started,
        mut table: SaTable,
        registry: Registry,
        seq: SeqStore,
        ike_peers: Vec<PeerConfig>,
        now: Instant,
    ) -> Owner {
        let n = s.queues.len();
        let ike = (!ike_peers.is_empty()).then(|| {
            let mut ike = Ike::new(ike_peers);
            // Negotiated SPIs never collide with manual ones.
            ike.reserve_spis(ike::tunnels_manual_spis(&s.config));
            for (i, t) in ike_templates(&s.config) {
                ike.set_template(i, t);
                // A template has no peer of its own to resolve.
                s.next_hops.set_peer(i as usize, None);
            }
            ike
        });
        let mut log = LogBuffer::default();
        // The shell sends the lines to the collector.
        log.forward = s.config.logging.is_some();
        let mut events =
            EventLogger::new(s.config.tunnels.iter().map(|t| t.name.clone()).collect());
        for t in s.sdwan.iter().flat_map(|e| e.tlocs.iter()) {
            events.set_name(t.index, t.name.clone());
        }
        let xdp_drops = Arc::new(DropCounters::new());
        let mut steering = s.steering;
        // Before the owner serves anything: the SPI map complete, then
        // early drop armed (sync_early_drop below). Until then XDP sends
        // every SPI up, as without early drop.
        let spi_sync = steering.as_mut().and_then(|s| s.take_spi_sync());
        if let Some(sync) = spi_sync {
            table.set_spi_observer(Box::new(sync), now.duration_since(s.epoch));
        }
        let steered = s.config.underlay.udp_ports.clone();
        // What start-up wrote (`build_tunnels`) is on disk.
        let durable = seq.committed();
        let mut owner = Owner {
            node: s.config.node.clone(),
            local: s.config.underlay.address,
            interface: s.config.underlay.interface.clone(),
            started: now,
            epoch: s.epoch,
            events,
            config: s.config,
            config_path: s.config_path,
            registry,
            table,
            steering,
            queues: s.queues,
            baseline: Baseline {
                xdp: [0; XDP_COUNTER_COUNT as usize],
                queues: vec![[0; N_QUEUE_FIELDS]; n],
                dummy_packets: 0,
                kernel: [0; 9],
                inside_xdp: [0; xdpsec_common::INSIDE_COUNTER_COUNT as usize],
            },
            drops: DropStats::new(
                s.workers
                    .iter()
                    .map(|w| Arc::clone(&w.drops))
                    .chain(s.extra_drops)
                    .chain([Arc::clone(&xdp_drops)])
                    .collect(),
            ),
            workers: s.workers,
            log,
            seq,
            kernel_rx: s.kernel_rx,
            now,
            fx: Effects::default(),
            steered,
            unsteering: BTreeSet::new(),
            ike,
            seq_rekeyed: std::collections::HashSet::new(),
            seq_wait: reserve::SeqWait::new(durable),
            sdwan: s.sdwan,
            routes: s.routes,
            static_routes: s.static_routes,
            next_hops: s.next_hops,
            xdp_drops,
            early_drop_hold: false,
            early_drop_armed: false,
            taps: s.taps,
            capture: None,
        };
        owner.sync_early_drop();
        owner
    }

    /// Serve messages until [`Msg::Shutdown`] (or every sender is gone),
    /// each handled as one [`Input`] whose effects `shell` carries out,
    /// then hand the state back for an orderly teardown.
    pub fn run(
        mut self,
        mut shell: Shell,
        rx: Receiver<Msg>,
        mut ike_rx: Receiver<IkeDatagram>,
        mut sdwan_rx: Receiver<crate::sdwan::io::IoEvent>,
        mut shell_rx: Receiver<ShellEvent>,
    ) -> (Owner, Shell) {
        let ticker = tick(TICK);
        if self.sdwan.is_some() {
            // Ports, control connections: the edge starts at once.
            let fx = self.handle(Instant::now(), Input::Start);
            shell.apply(fx, None);
        }
        loop {
            // The SD-WAN cores' next timer (BFD hellos need better than the tick).
            let timer = match self.sdwan.as_ref().and_then(|s| s.next_timeout()) {
                Some(t) => crossbeam::channel::at(t),
                None => crossbeam::channel::never(),
            };
            let mut reply = None;
            let mut metrics = None;
            let input = select! {
                recv(sdwan_rx) -> m => match m {
                    Ok(ev) => Input::Sdwan(ev),
                    Err(_) => {
                        sdwan_rx = crossbeam::channel::never();
                        continue;
                    }
                },
                recv(timer) -> _ => Input::Timers,
                recv(ike_rx) -> m => match m {
                    Ok(d) => Input::Ike(d),
                    // The kernel-socket thread has stopped: stop listening
                    // (a closed channel would be ready forever).
                    Err(_) => {
                        ike_rx = crossbeam::channel::never();
                        continue;
                    }
                },
                recv(shell_rx) -> m => match m {
                    Ok(ev) => Input::Shell(ev),
                    Err(_) => {
                        shell_rx = crossbeam::channel::never();
                        continue;
                    }
                },
                recv(rx) -> m => match m {
                    Ok(Msg::Command(req, tx)) => match req.parsed() {
                        Ok(command) => {
                            reply = Some(tx);
                            Input::Command { command, json: req.json }
                        }
                        Err(e) => {
                            let _ = tx.send(Reply::error(e));
                            continue;
                        }
                    },
                    Ok(Msg::Reload) => Input::Reload,
                    Ok(Msg::Metrics(tx)) => {
                        metrics = Some(tx);
                        Input::Metrics
                    }
                    Ok(Msg::StopIke(tx)) => {
                        // Replied once the DELETEs are queued for sending.
                        let fx = self.handle(Instant::now(), Input::StopIke);
                        shell.apply(fx, None);
                        let _ = tx.send(());
                        continue;
                    }
                    Ok(Msg::Shutdown) | Err(_) => break,
                },
                recv(ticker) -> _ => Input::Tick,
            };
            let mut fx = self.handle(Instant::now(), input);
            if let Some(tx) = metrics {
                let _ = tx.send(fx.reply.take().map(|r| r.output).unwrap_or_default());
            }
            shell.apply(fx, reply);
        }
        // Lines the workers queued before they stopped.
        let fx = self.handle(Instant::now(), Input::Tick);
        shell.apply(fx, None);
        (self, shell)
    }

    /// Handle one input at `now`: the state changes, the SA table's
    /// changes are published as one snapshot, and what the outside world
    /// must do is returned (nothing here does I/O).
    pub fn handle(&mut self, now: Instant, input: Input) -> Effects {
        self.now = now;
        let before = self.table.publishes();
        let batches = self.table.batches();
        self.table.hold();
        match input {
            Input::Command { command, json } => {
                let r = self.execute(command, json);
                self.fx.reply = Some(r);
            }
            Input::Reload => match self.reload() {
                Ok(t) => info!("SIGHUP: {}", t.trim_end()),
                Err(e) => error!("SIGHUP: {e}"),
            },
            Input::Metrics => {
                let text = self.metrics_text();
                self.fx.reply = Some(Reply {
                    ok: true,
                    output: text,
                });
            }
            Input::StopIke => {
                self.ike_input(xdpsec_ike::Input::Command(xdpsec_ike::Command::Shutdown))
            }
            Input::Ike(d) => self.ike_input(xdpsec_ike::Input::Datagram {
                local: d.local,
                remote: d.remote,
                data: &d.data,
            }),
            Input::Sdwan(ev) => self.sdwan_io(ev),
            Input::Timers => self.sdwan_timers(),
            Input::Tick => self.tick(),
            Input::Start => self.sdwan_omp(xdpsec_omp::edge::Input::Timer),
            Input::Shell(ShellEvent::PortsUnsteered(ports)) => self.ports_unsteered(&ports),
            Input::Shell(ShellEvent::Reserved { generation, error }) => {
                self.reservations_written(generation, error)
            }
        }
        self.flush_reservations();
        if !self.hold_publish() {
            self.table.release(self.now.duration_since(self.epoch));
        }
        let lines = self.log.take_outbox();
        self.fx.shell.extend(lines.into_iter().map(ShellOp::Syslog));
        self.fx.publishes = self.table.publishes() - before;
        self.fx.batches = self.table.batches() - batches;
        std::mem::take(&mut self.fx)
    }

    /// Publish the UDP ports the datapath takes as ESP: those XDP steers,
    /// and those it is being told to stop steering.
    fn publish_udp_ports(&mut self) -> Result<()> {
        // XDP must not steer a port before the workers know it.
        self.publish_now();
        let ports: BTreeSet<u16> = self.steered.union(&self.unsteering).copied().collect();
        self.table
            .apply(
                vec![SaChange::SetUdpPorts(
                    ports.iter().map(|&p| p..=p).collect(),
                )],
                self.now.duration_since(self.epoch),
            )
            .map(|_| ())
            .map_err(|e| anyhow!("updating the datapath's UDP ports: {e}"))
    }

    /// Steer UDP ports `add` as ESP and stop steering `remove`: the
    /// datapath learns a new port before XDP steers it (this input's
    /// snapshot goes out before the shell's work), and forgets a removed
    /// one only after XDP stopped steering it (the shell says so): a
    /// steered frame always finds its port in the snapshot (never passed
    /// back as "not ESP"). The kernel's fragment socket follows.
    pub(crate) fn steer_udp_ports(&mut self, add: &[u16], remove: &[u16]) -> Result<()> {
        let add: Vec<u16> = add
            .iter()
            .copied()
            .filter(|p| !self.steered.contains(p))
            .collect();
        let remove: Vec<u16> = remove
            .iter()
            .copied()
            .filter(|p| self.steered.contains(p) && !add.contains(p))
            .collect();
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        self.steered.extend(add.iter().copied());
        for p in &remove {
            self.steered.remove(p);
            self.unsteering.insert(*p);
        }
        self.publish_udp_ports()?;
        self.fx
            .shell
            .extend(add.iter().map(|&p| ShellOp::SteerPort(p, true)));
        if remove.is_empty() {
            self.fx
                .sends
                .push(Send::KernelPorts(self.steered.iter().copied().collect()));
        } else {
            self.fx
                .shell
                .extend(remove.iter().map(|&p| ShellOp::SteerPort(p, false)));
            self.fx
                .shell
                .push(ShellOp::Notify(ShellEvent::PortsUnsteered(remove)));
        }
        Ok(())
    }

    /// The shell stopped steering `ports` in XDP: the datapath forgets
    /// them (unless steered again since), the kernel socket follows.
    fn ports_unsteered(&mut self, ports: &[u16]) {
        for p in ports {
            self.unsteering.remove(p);
        }
        if let Err(e) = self.publish_udp_ports() {
            error!("{e:#}");
        }
        self.fx
            .sends
            .push(Send::KernelPorts(self.steered.iter().copied().collect()));
    }

    /// Periodic work: datapath events into log lines, sequence reservations.
    fn tick(&mut self) {
        let now = self.now.duration_since(self.epoch);
        let mut unknown = self.events.drain(&self.workers, &mut self.log, now);
        self.early_drop_tick(&mut unknown);
        if self.ike.is_some() {
            // Samples, at most one per (peer, SPI) a tick: the core rate-limits further.
            for (peer, spi) in unknown {
                self.ike_input(IkeInput::UnknownSpi { peer, spi });
            }
        }
        self.retry_reservations();
        self.extend_reservations();
        self.rekey_before_sequence_runs_out();
        self.sdwan_timers();
        if self
            .ike
            .as_ref()
            .and_then(|i| i.next_timeout())
            .is_some_and(|t| t <= self.now)
        {
            self.ike_input(IkeInput::Timer);
        }
    }

    /// Detach the XDP program's sockets and hand the steering back (the
    /// workers have stopped; dropping it detaches the program), with the
    /// last effects (SD-WAN routes out of the kernel) for the shell.
    pub fn shutdown(&mut self, now: Instant) -> (Option<XdpSteering>, Effects) {
        self.now = now;
        self.sdwan_shutdown();
        // What is reserved in memory goes to disk before the shell stops.
        self.flush_reservations();
        let fx = std::mem::take(&mut self.fx);
        let Some(mut s) = self.steering.take() else {
            return (None, fx);
        };
        for q in &self.queues {
            s.unset_socket(q.queue);
            if let Some(i) = s.inside() {
                i.unset_socket(q.queue);
            }
        }
        // A running drop capture: write what is queued and close the file.
        if let Some(c) = self.capture.take()
            && let Err(e) = c.stop(&self.taps)
        {
            warn!("closing the drop capture at shutdown: {e:#}");
        }
        (Some(s), fx)
    }
}

/// The owner's inbox, as the control socket and signal handling hold it.
#[derive(Clone)]
pub struct OwnerHandle {
    tx: Sender<Msg>,
}

impl OwnerHandle {
    /// A handle and the receiving end for [`Owner::run`].
    pub fn channel() -> (OwnerHandle, Receiver<Msg>) {
        // Bounded: a flood of requests waits at the socket, not in memory.
        let (tx, rx) = crossbeam::channel::bounded(256);
        (OwnerHandle { tx }, rx)
    }

    /// Send a message (false when the owner has stopped).
    pub fn send(&self, m: Msg) -> bool {
        self.tx.send(m).is_ok()
    }

    /// Run one control-socket request on the owner and wait for its reply.
    pub fn request(&self, req: Request) -> Reply {
        let (tx, rx) = crossbeam::channel::bounded(1);
        if !self.send(Msg::Command(req, tx)) {
            return Reply::error("% The daemon is shutting down");
        }
        rx.recv()
            .unwrap_or_else(|_| Reply::error("% The daemon is shutting down"))
    }
}

#[cfg(test)]
mod tests;
