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
mod counters;
pub mod effects;
mod ike;
mod reload;
mod show;

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use crossbeam::channel::{Receiver, Sender, select, tick};
pub use effects::{Effects, Send, Shell, ShellEvent, ShellOp, ShellParts};
pub(crate) use ike::esp_cipher;
pub use ike::ike_peers;
use tracing::{error, info, warn};
use xdpsec_common::XDP_COUNTER_COUNT;
use xdpsec_datapath::{
    DropCounters, DropStats,
    crypto::{Cipher, KeyMaterial},
    sa::{AddrSet, InboundSaConfig, OutboundSaConfig, OuterHeader, Prefix as DpPrefix, Selectors},
    sa::{OutboundEntry, SaChange, SaId, SaTable},
    worker::{SaCounters, WorkerShared},
};
use xdpsec_ike::{
    Action, Encr, EspEncap, EspProposal, Identity, Ike, IkeOffer, Input as IkeInput, Integ,
    PeerConfig,
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

/// One configured tunnel as the owner tracks it.
pub struct TunnelState {
    /// The tunnel's configuration in force.
    pub cfg: crate::config::Tunnel,
    /// Its inbound SAs in the table (a manual tunnel has one; an IKE
    /// tunnel none before negotiation, two during a rekey).
    pub inbound: Vec<SaId>,
    /// Its outbound SA in the table, if any.
    pub outbound: Option<SaId>,
    /// Manual tunnels: the fingerprint their outbound key's sequence
    /// reservations are filed under.
    pub out_key: Option<KeyId>,
}

impl TunnelState {
    /// The tunnel's SAs, inbound first.
    pub fn sa_ids(&self) -> impl Iterator<Item = SaId> + '_ {
        self.inbound.iter().copied().chain(self.outbound)
    }
}

/// One SA of the node, as [`Owner::all_sas`] lists them.
pub struct SaRef<'a> {
    /// Its tunnel's name (an SD-WAN peer's: its local TLOC's interface).
    pub tunnel: &'a str,
    /// Its peer: the address, or `address:port` for an SD-WAN peer.
    pub peer: String,
    /// True for an inbound SA.
    pub inbound: bool,
    /// Its id in the table.
    pub id: SaId,
    /// Its SPI (0 when the table no longer has it).
    pub spi: u32,
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
    pub node: String,
    /// Local underlay address.
    pub local: IpAddr,
    /// Underlay interface.
    pub interface: String,
    /// When the daemon started (uptime).
    pub started: Instant,
    /// The datapath's clock origin (`now` for the SA table).
    pub epoch: Instant,
    /// The config in force.
    pub config: Config,
    /// The config file (re-read by reloads).
    pub config_path: PathBuf,
    /// Tunnels, indexed as in the datapath.
    pub tunnels: Vec<TunnelState>,
    /// The SA table (control's master copy; publishes snapshots).
    pub table: SaTable,
    /// XDP steering (None once shut down).
    pub steering: Option<XdpSteering>,
    /// What control knows of each queue.
    pub queues: Vec<QueueInfo>,
    /// `clear platform hardware qfp active statistics` baseline.
    pub baseline: Baseline,
    /// Drop counters over all workers, with the `clear` baseline.
    pub drops: DropStats,
    /// Per-SA counters at the last `clear crypto sa counters`.
    pub sa_baseline: HashMap<SaId, SaCounters>,
    /// Each worker's shared counters and events.
    pub workers: Vec<Arc<WorkerShared>>,
    /// The `show logging` buffer.
    pub log: LogBuffer,
    /// Turns datapath events into rate-limited log lines.
    pub events: EventLogger,
    /// Outbound sequence reservations on disk.
    pub seq: SeqStore,
    /// What the kernel-socket shell received (reassembled fragments).
    pub kernel_rx: Arc<KernelRxStats>,
    /// The time of the input being handled.
    pub now: Instant,
    /// What the input being handled asks of the shell.
    pub(crate) fx: Effects,
    /// The UDP ports XDP steers (its port map, as the shell keeps it).
    pub steered: BTreeSet<u16>,
    /// Ports the shell is told to stop steering: the datapath keeps them
    /// until it says XDP did.
    unsteering: BTreeSet<u16>,
    /// The IKEv2 core for every IKE tunnel (None without IKE tunnels).
    pub ike: Option<Ike>,
    /// Negotiated SAs: when they were installed and their lifetime (for
    /// `show crypto ipsec sa`'s remaining key lifetime).
    pub lifetimes: HashMap<SaId, (Instant, Duration)>,
    /// Negotiated outbound SAs already asked to rekey for their sequence
    /// numbers (asked once each).
    seq_rekeyed: std::collections::HashSet<SaId>,
    /// When the last failed reservation write was logged (rate limit).
    seq_error_logged: Option<Instant>,
    /// The SD-WAN edge (`[sdwan]`), if this node is one.
    pub sdwan: Option<crate::sdwan::Sdwan>,
    /// The workers' inner route table (republished on SD-WAN route changes).
    pub routes: Arc<ArcSwap<RouteTable>>,
    /// Routes of the configured tunnels (`remote_subnets`).
    pub static_routes: Vec<(Cidr, u32)>,
    /// Next-hop MACs per tunnel index, and the peers they resolve.
    pub next_hops: Arc<NextHops>,
    /// The XDP program's early drops, mirrored into the drop table (part of `drops`).
    pub xdp_drops: Arc<DropCounters>,
    /// A drop capture or packet trace is armed: early drop stays off so
    /// they see every frame (set it, then call `sync_early_drop`).
    pub early_drop_hold: bool,
    /// Whether early drop is armed in XDP now.
    pub early_drop_armed: bool,
    /// Packet trace and drop capture, shared with the workers.
    pub taps: Arc<Taps>,
    /// The running `monitor capture drops` writer, if any.
    pub capture: Option<Capture>,
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
) -> Result<(SaTable, Vec<TunnelState>)> {
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
    let tunnels = cfg
        .tunnels
        .iter()
        .zip(keys)
        .map(|(t, out_key)| {
            let (inbound, outbound) = match out_key {
                Some(_) => (
                    vec![ids.next().expect("one id per SA")],
                    Some(ids.next().expect("one id per SA")),
                ),
                None => (Vec::new(), None),
            };
            TunnelState {
                cfg: t.clone(),
                inbound,
                outbound,
                out_key,
            }
        })
        .collect();
    Ok((table, tunnels))
}

impl Owner {
    /// Every SA of the node: the configured tunnels' (inbound first), then
    /// the SD-WAN peers'.
    pub fn all_sas(&self) -> impl Iterator<Item = SaRef<'_>> + '_ {
        let configured = self.tunnels.iter().flat_map(move |t| {
            t.sa_ids().map(move |id| SaRef {
                tunnel: &t.cfg.name,
                peer: t.cfg.peer.to_string(),
                inbound: t.inbound.contains(&id),
                id,
                spi: self.table.cold(id).map_or(0, |c| c.spi),
            })
        });
        let sdwan = self.sdwan.iter().flat_map(|s| {
            s.peers.values().flat_map(move |p| {
                let tunnel = s.tloc(&p.sa.local_color).map_or("", |t| t.name.as_str());
                let peer = format!("{}:{}", p.sa.remote_ip, p.sa.remote_port);
                let sa = move |inbound, spi, id| SaRef {
                    tunnel,
                    peer: peer.clone(),
                    inbound,
                    id,
                    spi,
                };
                let sa2 = sa.clone();
                p.inbound
                    .iter()
                    .map(move |&(spi, id)| sa(true, spi, id))
                    .chain(p.outbound.map(move |(spi, id, _)| sa2(false, spi, id)))
            })
        });
        configured.chain(sdwan)
    }

    /// Take over the started pieces and the SA table built for them.
    pub fn new(
        s: Started,
        mut table: SaTable,
        tunnels: Vec<TunnelState>,
        seq: SeqStore,
        ike_peers: Vec<PeerConfig>,
        now: Instant,
    ) -> Owner {
        let n = s.queues.len();
        let ike = (!ike_peers.is_empty()).then(|| {
            let mut ike = Ike::new(ike_peers);
            // Negotiated SPIs never collide with manual ones.
            ike.reserve_spis(ike::tunnels_manual_spis(&s.config));
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
        let mut owner = Owner {
            node: s.config.node.clone(),
            local: s.config.underlay.address,
            interface: s.config.underlay.interface.clone(),
            started: now,
            epoch: s.epoch,
            events,
            config: s.config,
            config_path: s.config_path,
            tunnels,
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
            sa_baseline: HashMap::new(),
            workers: s.workers,
            log,
            seq,
            kernel_rx: s.kernel_rx,
            now,
            fx: Effects::default(),
            steered,
            unsteering: BTreeSet::new(),
            ike,
            lifetimes: HashMap::new(),
            seq_rekeyed: std::collections::HashSet::new(),
            seq_error_logged: None,
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
        }
        self.table.release(self.now.duration_since(self.epoch));
        let lines = self.log.take_outbox();
        self.fx.shell.extend(lines.into_iter().map(ShellOp::Syslog));
        self.fx.publishes = self.table.publishes() - before;
        std::mem::take(&mut self.fx)
    }

    /// Publish the UDP ports the datapath takes as ESP: those XDP steers,
    /// and those it is being told to stop steering.
    fn publish_udp_ports(&mut self) -> Result<()> {
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
    pub fn tick(&mut self) {
        let now = self.now.duration_since(self.epoch);
        let mut unknown = self.events.drain(&self.workers, &mut self.log, now);
        self.early_drop_tick(&mut unknown);
        if self.ike.is_some() {
            // Samples, at most one per (peer, SPI) a tick: the core rate-limits further.
            for (peer, spi) in unknown {
                self.ike_input(IkeInput::UnknownSpi { peer, spi });
            }
        }
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

    /// Reserve the next block for every outbound SA that has used half of
    /// its current one: one durable write for all of them, then the new
    /// limits are handed to the datapath.
    fn extend_reservations(&mut self) {
        let snap = self.table.snapshot();
        let mut raise = Vec::new();
        // Manual tunnels and SD-WAN peers (negotiated keys are rekeyed
        // long before the end instead).
        let reserved = self
            .tunnels
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i as u32, t.out_key?)))
            .chain(self.sdwan.iter().flat_map(|s| {
                s.peers
                    .values()
                    .filter_map(|p| Some((p.index, p.outbound?.2)))
            }));
        for (i, out_key) in reserved {
            let Some(OutboundEntry::Active(sa)) = snap.outbound(i) else {
                continue;
            };
            let limit = sa.seq_limit();
            let end = sa.max_seq();
            if limit >= end || limit.saturating_sub(sa.last_seq()) >= seqstore::LOW_WATER {
                continue;
            }
            let next = limit.saturating_add(seqstore::BLOCK).min(end);
            self.seq.reserve(out_key, next);
            raise.push((Arc::clone(sa), next));
        }
        if raise.is_empty() {
            return;
        }
        match self.seq.commit() {
            Ok(()) => {
                for (sa, limit) in raise {
                    sa.raise_limit(limit);
                }
            }
            Err(e) => {
                // The datapath stops at its current limit (counted as 45)
                // rather than risk a nonce that is not on disk.
                if self.seq_error_logged.is_none_or(|t| {
                    self.now.saturating_duration_since(t) >= Duration::from_secs(60)
                }) {
                    error!(
                        "cannot extend outbound sequence reservations: {e:#}; tunnels stop sending when their reserved numbers run out"
                    );
                    self.seq_error_logged = Some(self.now);
                }
            }
        }
    }

    /// `request platform software xdpsec fault forget-sa peer ADDR`: the
    /// datapath loses every inbound SA with that peer. Nothing else is
    /// told: the owner's view (and `show crypto ipsec sa`) keeps them and
    /// the peer keeps sending on their SPIs, which now count as unknown
    /// (4/12) with `%CRYPTO-4-RECVD_PKT_INV_SPI`, as in the seed.
    pub fn forget_sa(&mut self, peer: IpAddr) -> Result<(String, serde_json::Value)> {
        let mut changes = Vec::new();
        let mut spis = Vec::new();
        let mut any = false;
        for t in self.tunnels.iter().filter(|t| t.cfg.peer == peer) {
            any = true;
            for &id in &t.inbound {
                if !self.table.is_forgotten(id) {
                    changes.push(SaChange::ForgetInbound(id));
                    let spi = self.table.cold(id).map_or(0, |c| c.spi);
                    spis.push((t.cfg.name.clone(), spi));
                }
            }
        }
        let (sd_any, sd_changes, sd_spis) = self.sdwan_forget(peer);
        changes.extend(sd_changes);
        spis.extend(sd_spis);
        if !any && !sd_any {
            return Err(anyhow!("no tunnel has peer {peer}"));
        }
        self.table
            .apply(changes, self.now.duration_since(self.epoch))
            .map_err(|e| anyhow!("forget-sa: {e}"))?;
        let mut text = String::new();
        for (t, spi) in &spis {
            text.push_str(&format!(
                "Fault injected: the datapath forgot inbound SA 0x{spi:08X} of {t} (peer {peer}); the control plane still lists it\n"
            ));
        }
        if spis.is_empty() {
            text = format!("The datapath has no inbound SA of peer {peer} left to forget\n");
        }
        warn!(
            "fault injection: forget-sa peer {peer}: {} inbound SA(s)",
            spis.len()
        );
        let json = serde_json::json!({
            "peer": peer.to_string(),
            "forgotten_spis": spis.iter().map(|(_, s)| s).collect::<Vec<_>>(),
        });
        Ok((text, json))
    }

    /// `clear crypto sa [peer ADDR]`: delete and re-create the SAs with
    /// that peer (every peer without one). Manual tunnels re-install their
    /// SAs from the config: an inbound SA the datapath lost comes back (the
    /// same SA, so its replay window carries on), and the tunnel's SA
    /// counters start again from zero, as after a clear on IOS.
    pub fn clear_sa(&mut self, peer: Option<IpAddr>) -> Result<(String, serde_json::Value)> {
        let mut changes = Vec::new();
        let mut cleared = Vec::new();
        let mut ike_peers = Vec::new();
        for t in &self.tunnels {
            if peer.is_some_and(|p| p != t.cfg.peer) {
                continue;
            }
            if matches!(t.cfg.kind, TunnelKind::Ike(_)) {
                // IKE deletes the child SAs (telling the peer) and
                // negotiates new ones at once, with new SPIs.
                ike_peers.push(t.cfg.peer);
                cleared.push(t);
                continue;
            }
            for &id in &t.inbound {
                if self.table.is_forgotten(id) {
                    changes.push(SaChange::RestoreInbound(id));
                }
            }
            cleared.push(t);
        }
        let sdwan_has = |o: &Owner| {
            o.sdwan.as_ref().is_some_and(|s| {
                s.peers
                    .values()
                    .any(|x| peer.is_none_or(|a| a == x.sa.remote_ip))
            })
        };
        if let (true, Some(p)) = (cleared.is_empty() && !sdwan_has(self), peer) {
            return Err(anyhow!("no tunnel has peer {p}"));
        }
        let names: Vec<String> = cleared.iter().map(|t| t.cfg.name.clone()).collect();
        let kinds: Vec<&'static str> = cleared.iter().map(|t| t.cfg.kind.name()).collect();
        let ids: Vec<SaId> = cleared.iter().flat_map(|t| t.sa_ids()).collect();
        self.table
            .apply(changes, self.now.duration_since(self.epoch))
            .map_err(|e| anyhow!("clear crypto sa: {e}"))?;
        for id in ids {
            let now = xdpsec_datapath::worker::sa_counters(&self.workers, id);
            self.sa_baseline.insert(id, now);
        }
        for p in ike_peers {
            self.ike_input(IkeInput::Command(xdpsec_ike::Command::ClearChildSas(p)));
        }
        let sdwan_lines = self.sdwan_clear_sa(peer);
        let text = names
            .iter()
            .zip(&kinds)
            .map(|(n, k)| match *k {
                "ike" => format!("{n}: child SAs deleted; IKEv2 negotiates new ones\n"),
                _ => format!("{n}: manual SAs re-installed from the configuration\n"),
            })
            .chain(sdwan_lines.iter().cloned())
            .collect::<String>();
        info!(
            "clear crypto sa{}: {}",
            peer.map(|p| format!(" peer {p}")).unwrap_or_default(),
            names.join(", ")
        );
        let mut cleared_names = names;
        if let Some(s) = &self.sdwan {
            for p in s
                .peers
                .values()
                .filter(|p| p.cleared && peer.is_none_or(|a| a == p.sa.remote_ip))
            {
                if let Some(t) = s.tloc(&p.sa.local_color)
                    && !cleared_names.contains(&t.name)
                {
                    cleared_names.push(t.name.clone());
                }
            }
        }
        Ok((text, serde_json::json!({ "cleared": cleared_names })))
    }

    /// Detach the XDP program's sockets and hand the steering back (the
    /// workers have stopped; dropping it detaches the program), with the
    /// last effects (SD-WAN routes out of the kernel) for the shell.
    pub fn shutdown(&mut self, now: Instant) -> (Option<XdpSteering>, Effects) {
        self.now = now;
        self.sdwan_shutdown();
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
        if let Err(e) = self.seq.commit() {
            warn!("writing sequence reservations at shutdown: {e:#}");
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
