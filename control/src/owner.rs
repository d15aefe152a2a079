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
//! IKE, OMP and BFD cores will be further producers of messages to it.
use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use crossbeam::channel::{Receiver, Sender, select, tick};
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
    Action, Encr, EspEncap, EspProposal, Identity, Ike, IkeOffer, Input, Integ, PeerConfig,
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
    platform::kernelrx::{self, IkeDatagram, KernelRxStats},
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
    /// Tells the kernel-socket shell about UDP port changes and IKE
    /// messages to send.
    pub kernel_ctl: kernelrx::CtlHandle,
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
    /// XDP steering.
    pub steering: XdpSteering,
    /// Per-queue views.
    pub queues: Vec<QueueInfo>,
    /// The workers' shared parts.
    pub workers: Vec<Arc<WorkerShared>>,
    /// Drop counters of other datapath threads (the kernel-socket shell).
    pub extra_drops: Vec<Arc<DropCounters>>,
    /// The kernel-socket shell's counters.
    pub kernel_rx: Arc<KernelRxStats>,
    /// The kernel-socket shell's control channel.
    pub kernel_ctl: kernelrx::CtlHandle,
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
    ) -> Owner {
        let n = s.queues.len();
        let ike = (!ike_peers.is_empty()).then(|| {
            let mut ike = Ike::new(ike_peers);
            // Negotiated SPIs never collide with manual ones.
            ike.reserve_spis(tunnels_manual_spis(&s.config));
            ike
        });
        let mut log = LogBuffer::default();
        if let Some(l) = &s.config.logging {
            match crate::syslog::RemoteSyslog::new(l.clone(), &s.config.node) {
                Ok(r) => log.remote = Some(r),
                Err(e) => error!("remote syslog to {}: {e}", l.host),
            }
        }
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
        let spi_sync = steering.take_spi_sync();
        if let Some(sync) = spi_sync {
            table.set_spi_observer(Box::new(sync), s.epoch.elapsed());
        }
        let mut owner = Owner {
            node: s.config.node.clone(),
            local: s.config.underlay.address,
            interface: s.config.underlay.interface.clone(),
            started: Instant::now(),
            epoch: s.epoch,
            events,
            config: s.config,
            config_path: s.config_path,
            tunnels,
            table,
            steering: Some(steering),
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
            kernel_ctl: s.kernel_ctl,
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
    /// then hand the state back for an orderly teardown.
    pub fn run(
        mut self,
        rx: Receiver<Msg>,
        mut ike_rx: Receiver<IkeDatagram>,
        mut sdwan_rx: Receiver<crate::sdwan::io::IoEvent>,
    ) -> Owner {
        let ticker = tick(TICK);
        if self.sdwan.is_some() {
            // Ports, control connections: the edge starts at once.
            self.sdwan_omp(xdpsec_omp::edge::Input::Timer);
        }
        loop {
            // The SD-WAN cores' next timer (BFD hellos need better than the tick).
            let timer = match self.sdwan.as_ref().and_then(|s| s.next_timeout()) {
                Some(t) => crossbeam::channel::at(t),
                None => crossbeam::channel::never(),
            };
            select! {
                recv(sdwan_rx) -> m => match m {
                    Ok(ev) => self.sdwan_io(ev),
                    Err(_) => sdwan_rx = crossbeam::channel::never(),
                },
                recv(timer) -> _ => self.sdwan_timers(),
                recv(ike_rx) -> m => match m {
                    Ok(d) => self.ike_input(Input::Datagram {
                        local: d.local,
                        remote: d.remote,
                        data: &d.data,
                    }),
                    // The kernel-socket thread has stopped: stop listening
                    // (a closed channel would be ready forever).
                    Err(_) => ike_rx = crossbeam::channel::never(),
                },
                recv(rx) -> m => match m {
                    Ok(Msg::Command(req, reply)) => {
                        let r = self.execute(&req);
                        // The client may have gone; nothing to do then.
                        let _ = reply.send(r);
                    }
                    Ok(Msg::Reload) => match self.reload() {
                        Ok(t) => info!("SIGHUP: {}", t.trim_end()),
                        Err(e) => error!("SIGHUP: {e}"),
                    },
                    Ok(Msg::Metrics(reply)) => {
                        let _ = reply.send(self.metrics_text());
                    }
                    Ok(Msg::StopIke(reply)) => {
                        self.ike_input(Input::Command(xdpsec_ike::Command::Shutdown));
                        let _ = reply.send(());
                    }
                    Ok(Msg::Shutdown) | Err(_) => break,
                },
                recv(ticker) -> _ => self.tick(),
            }
        }
        // Lines the workers queued before they stopped.
        self.tick();
        self
    }

    /// Periodic work: datapath events into log lines, sequence reservations.
    pub fn tick(&mut self) {
        let now = self.epoch.elapsed();
        let mut unknown = self.events.drain(&self.workers, &mut self.log, now);
        self.early_drop_tick(&mut unknown);
        if self.ike.is_some() {
            // Samples, at most one per (peer, SPI) a tick: the core rate-limits further.
            for (peer, spi) in unknown {
                self.ike_input(Input::UnknownSpi { peer, spi });
            }
        }
        self.extend_reservations();
        self.rekey_before_sequence_runs_out();
        self.sdwan_timers();
        if self
            .ike
            .as_ref()
            .and_then(|i| i.next_timeout())
            .is_some_and(|t| t <= Instant::now())
        {
            self.ike_input(Input::Timer);
        }
    }

    /// Negotiated SAs rekey long before their 32-bit sequence numbers run
    /// out (RFC 4303 3.3.3: they never wrap), whatever their lifetime: at
    /// half the space, a new child SA is negotiated at once.
    fn rekey_before_sequence_runs_out(&mut self) {
        const REKEY_AT: u64 = 1 << 31;
        if self.ike.is_none() {
            return;
        }
        let snap = self.table.snapshot();
        let mut due = Vec::new();
        for (i, t) in self.tunnels.iter().enumerate() {
            if t.out_key.is_some() {
                continue; // manual keys: reservations instead
            }
            let Some(OutboundEntry::Active(sa)) = snap.outbound(i as u32) else {
                continue;
            };
            if sa.last_seq() >= REKEY_AT && self.seq_rekeyed.insert(sa.id) {
                due.push(t.cfg.peer);
            }
        }
        self.seq_rekeyed
            .retain(|id| self.tunnels.iter().any(|t| t.outbound == Some(*id)));
        for peer in due {
            info!("{peer}: child SA used half its sequence numbers: rekeying now");
            let actions =
                self.ike
                    .as_mut()
                    .expect("checked above")
                    .rekey_now(Instant::now(), peer, false);
            for a in actions {
                self.ike_action(a);
            }
        }
    }

    /// The tunnel of a negotiated child SA and the datapath's cipher for its
    /// transform (None, logged, when either is missing).
    fn ike_child(
        &self,
        tunnel: u32,
        keys: &xdpsec_ike::ChildKeys,
    ) -> Option<(&TunnelState, Cipher)> {
        let t = self.tunnels.get(tunnel as usize)?;
        let Some(cipher) = esp_cipher(keys.encr, keys.integ) else {
            error!(
                "{}: negotiated ESP transform {:?}/{:?} is not in the datapath",
                t.cfg.name, keys.encr, keys.integ
            );
            return None;
        };
        Some((t, cipher))
    }

    /// `request platform software xdpsec rekey child-sa|ike-sa peer ADDR`:
    /// start the CREATE_CHILD_SA rekey that the lifetime would start, now.
    pub fn rekey_now(&mut self, peer: IpAddr, ike_sa: bool) -> Result<(String, serde_json::Value)> {
        let what = if ike_sa { "IKE SA" } else { "child SAs" };
        let Some(core) = self.ike.as_mut() else {
            return Err(anyhow!("no IKE tunnel"));
        };
        if !self
            .tunnels
            .iter()
            .any(|t| t.cfg.peer == peer && matches!(t.cfg.kind, TunnelKind::Ike(_)))
        {
            return Err(anyhow!("no IKE tunnel has peer {peer}"));
        }
        let actions = core.rekey_now(Instant::now(), peer, ike_sa);
        let sent = actions
            .iter()
            .filter(|a| matches!(a, Action::Send { .. }))
            .count();
        for a in actions {
            self.ike_action(a);
        }
        info!("{peer}: rekeying the {what} on request");
        Ok((
            format!("Rekeying the {what} of peer {peer}: {sent} CREATE_CHILD_SA request(s) sent\n"),
            serde_json::json!({"peer": peer.to_string(), "ike_sa": ike_sa, "requests": sent}),
        ))
    }

    /// Feed the IKE core one input and carry out what it returns.
    pub fn ike_input(&mut self, input: Input<'_>) {
        let Some(ike) = self.ike.as_mut() else {
            return;
        };
        let actions = ike.handle(Instant::now(), input);
        for a in actions {
            self.ike_action(a);
        }
    }

    /// Carry out one IKE action: a datagram to send, an SA change, a log line.
    fn ike_action(&mut self, a: Action) {
        let now = self.epoch.elapsed();
        match a {
            Action::Send {
                local,
                remote,
                data,
            } => self.kernel_ctl.send(kernelrx::Ctl::Send(IkeDatagram {
                local,
                remote,
                data,
            })),
            Action::Log { ios, line } => {
                info!(target: "ike", "{line}");
                if ios {
                    self.log.push(format!(
                        "{}{line}",
                        crate::state::ios_timestamp(std::time::SystemTime::now())
                    ));
                }
            }
            Action::AddInbound {
                tunnel,
                encap: _,
                keys,
                replay_window,
                local_ts,
                remote_ts,
                lifetime,
                ..
            } => {
                let Some((t, cipher)) = self.ike_child(tunnel, &keys) else {
                    return;
                };
                let change = SaChange::AddInbound(InboundSaConfig {
                    spi: keys.spi,
                    peer: None,
                    tunnel,
                    owner: t.cfg.worker as u16,
                    cipher,
                    key: KeyMaterial::new(keys.key.to_vec()),
                    esn: false,
                    window: replay_window,
                    selectors: ts_selectors(&local_ts, &remote_ts),
                    name: crate::state::crypto_map_tag(&t.cfg),
                });
                match self.table.apply(vec![change], now) {
                    Ok(ids) => {
                        for &id in &ids {
                            self.lifetimes.insert(id, (Instant::now(), lifetime));
                        }
                        self.tunnels[tunnel as usize].inbound.extend(ids);
                    }
                    Err(e) => error!("installing an IKE inbound SA: {e}"),
                }
            }
            Action::SetOutbound {
                tunnel,
                peer,
                encap,
                keys,
                lifetime,
            } => {
                let Some((t, cipher)) = self.ike_child(tunnel, &keys) else {
                    return;
                };
                let change = SaChange::SetOutbound(OutboundSaConfig {
                    spi: keys.spi,
                    tunnel,
                    owner: t.cfg.worker as u16,
                    cipher,
                    key: KeyMaterial::new(keys.key.to_vec()),
                    esn: false,
                    outer: OuterHeader {
                        src: self.local,
                        dst: peer,
                        udp: match encap {
                            EspEncap::Esp => None,
                            EspEncap::Udp(l, p) => Some((l, p)),
                        },
                        ethernet: None,
                        ttl: 64,
                    },
                    // A fresh key per negotiated SA: its numbers start at 1.
                    // The IKE core rekeys long before they run out.
                    last_seq: 0,
                    seq_limit: u64::MAX,
                    name: crate::state::crypto_map_tag(&t.cfg),
                });
                match self.table.apply(vec![change], now) {
                    Ok(ids) => {
                        if let Some(old) = self.tunnels[tunnel as usize].outbound.take() {
                            self.lifetimes.remove(&old);
                        }
                        for &id in &ids {
                            self.lifetimes.insert(id, (Instant::now(), lifetime));
                        }
                        self.tunnels[tunnel as usize].outbound = ids.first().copied();
                    }
                    Err(e) => error!("installing an IKE outbound SA: {e}"),
                }
            }
            Action::RemoveInbound { tunnel, spi } => {
                let Some(t) = self.tunnels.get_mut(tunnel as usize) else {
                    return;
                };
                let table = &self.table;
                let Some(pos) = t
                    .inbound
                    .iter()
                    .position(|&id| table.cold(id).is_some_and(|c| c.spi == spi))
                else {
                    return;
                };
                let id = t.inbound.remove(pos);
                self.lifetimes.remove(&id);
                if let Err(e) = self.table.apply(vec![SaChange::RemoveInbound(id)], now) {
                    error!("removing an IKE inbound SA: {e}");
                }
            }
            Action::RemoveOutbound { tunnel } => {
                if let Some(id) = self
                    .tunnels
                    .get_mut(tunnel as usize)
                    .and_then(|t| t.outbound.take())
                {
                    self.lifetimes.remove(&id);
                }
                let change = SaChange::RemoveOutbound {
                    tunnel,
                    keep_invalid: false,
                };
                if let Err(e) = self.table.apply(vec![change], now) {
                    error!("removing an IKE outbound SA: {e}");
                }
            }
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
                if self
                    .seq_error_logged
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    error!(
                        "cannot extend outbound sequence reservations: {e:#}; tunnels stop sending when their reserved numbers run out"
                    );
                    self.seq_error_logged = Some(Instant::now());
                }
            }
        }
    }

    /// Re-read the config file and apply what changed in the tunnels' SAs
    /// as one atomic SA-table update. Anything else that changed needs a
    /// restart and is refused, naming the field; nothing is half-applied.
    pub fn reload(&mut self) -> Result<String> {
        let new = Config::load(&self.config_path).map_err(|e| anyhow!("reload refused: {e}"))?;
        let cur = &self.config;
        let refuse = |field: &str, why: &str| -> Result<String> {
            Err(anyhow!("reload refused: `{field}` changed; {why}"))
        };
        let restart = "restart xdpsec to apply it";
        if new.node != cur.node {
            return refuse("node", restart);
        }
        if new.socket != cur.socket {
            return refuse("socket", restart);
        }
        if new.state_dir != cur.state_dir {
            return refuse("state_dir", restart);
        }
        let (u, v) = (&new.underlay, &cur.underlay);
        if u.interface != v.interface
            || u.address != v.address
            || u.queues != v.queues
            || u.udp_ports != v.udp_ports
            || u.xdp_mode != v.xdp_mode
            || u.busy_poll_us != v.busy_poll_us
        {
            return refuse("underlay", restart);
        }
        if new.inside != cur.inside {
            return refuse("inside", restart);
        }
        if new.metrics != cur.metrics {
            return refuse("metrics", restart);
        }
        if new.logging != cur.logging {
            return refuse("logging", restart);
        }
        if new.sdwan != cur.sdwan {
            return refuse(
                "sdwan",
                "restart xdpsec to apply it (its TLOC keys come from the controller; `request platform software sdwan security ipsec-rekey` rekeys without a restart)",
            );
        }
        if new.tunnels.len() != cur.tunnels.len() {
            return refuse("tunnel (tunnels added or removed)", restart);
        }
        let mut changes = Vec::new();
        let mut summary = Vec::new();
        let mut replaced = Vec::with_capacity(new.tunnels.len());
        for (i, (n, ts)) in new.tunnels.iter().zip(&self.tunnels).enumerate() {
            let o = &ts.cfg;
            if n.name != o.name {
                return refuse("tunnel.name", restart);
            }
            if n.peer != o.peer
                || n.encap != o.encap
                || n.remote_subnets != o.remote_subnets
                || n.local_subnets != o.local_subnets
                || n.kind.name() != o.kind.name()
            {
                return refuse(
                    &format!(
                        "tunnel {} (kind, peer, encap, remote_subnets or local_subnets)",
                        n.name
                    ),
                    restart,
                );
            }
            let (TunnelKind::Manual(nm), TunnelKind::Manual(om)) = (&n.kind, &o.kind) else {
                // IKE settings take effect when the tunnel next negotiates
                // after a restart; nothing to swap here.
                if format!("{:?}", n.kind) != format!("{:?}", o.kind)
                    || *ike_psk(n) != *ike_psk(o)
                    || ike_cert_files(n) != ike_cert_files(o)
                    || n.replay_window != o.replay_window
                    || n.worker != o.worker
                {
                    return refuse(&format!("tunnel {} (IKE settings)", n.name), restart);
                }
                replaced.push((false, false));
                continue;
            };
            let same_params = nm.cipher == om.cipher && nm.esn == om.esn;
            let in_key_same = *nm.inbound.key == *om.inbound.key;
            let out_key_same = *nm.outbound.key == *om.outbound.key;
            // A new SA under the same inbound key would start with an empty
            // replay window: packets the old window rejected would be
            // accepted again.
            if in_key_same && n.replay_window != o.replay_window {
                return refuse(
                    &format!("tunnel.replay_window in tunnel {}", n.name),
                    "with the same tunnel.inbound.key the replay window's state would be lost and old packets accepted again: change inbound.key with it",
                );
            }
            if in_key_same && n.worker != o.worker {
                return refuse(
                    &format!("tunnel.worker in tunnel {}", n.name),
                    "with the same tunnel.inbound.key the replay window's state would be lost and old packets accepted again: change inbound.key with it",
                );
            }
            // The peer starts a new replay window for a new SPI; sequence
            // numbers under the old key would have to start again at 1,
            // reusing nonces. A new SPI needs a new key.
            if out_key_same && nm.outbound.spi != om.outbound.spi {
                return refuse(
                    &format!("tunnel.outbound.spi in tunnel {}", n.name),
                    "a new outbound SPI needs a new tunnel.outbound.key (sequence numbers restart for the peer, and AEAD nonces must never repeat under a key)",
                );
            }
            let in_changed = !same_params || nm.inbound.spi != om.inbound.spi || !in_key_same;
            let out_changed = !same_params || !out_key_same;
            replaced.push((in_changed, out_changed));
            if !(in_changed || out_changed) {
                continue;
            }
            let out_key = KeyId::of(&nm.outbound.key);
            let (last, limit) = if out_changed {
                seqstore::start(&mut self.seq, out_key)
            } else {
                (0, 0)
            };
            let c = tunnel_sa_changes(&new, i as u32, last, limit).expect("a manual tunnel");
            if in_changed {
                changes.extend(ts.inbound.iter().map(|&id| SaChange::RemoveInbound(id)));
                changes.push(c.inbound);
                summary.push(format!(
                    "{}: inbound SA 0x{:X} -> 0x{:X}",
                    n.name, om.inbound.spi, nm.inbound.spi
                ));
            }
            if out_changed {
                changes.push(c.outbound);
                summary.push(format!(
                    "{}: outbound SA 0x{:X} -> 0x{:X}",
                    n.name, om.outbound.spi, nm.outbound.spi
                ));
            }
        }
        if changes.is_empty() {
            self.config = new;
            self.sync_early_drop();
            return Ok("Reloaded: no SA changed\n".into());
        }
        self.seq
            .commit()
            .map_err(|e| anyhow!("reload refused: recording sequence reservations: {e:#}"))?;
        let added = self
            .table
            .apply(changes, self.epoch.elapsed())
            .map_err(|e| anyhow!("reload refused by the SA table: {e}"))?;
        // `added` lists new SAs in change order: inbound before outbound per tunnel.
        let mut added = added.into_iter();
        for (i, (inc, outc)) in replaced.into_iter().enumerate() {
            let ts = &mut self.tunnels[i];
            if inc {
                ts.inbound = vec![added.next().expect("one id per added SA")];
            }
            if outc {
                ts.outbound = Some(added.next().expect("one id per added SA"));
                if let TunnelKind::Manual(m) = &new.tunnels[i].kind {
                    ts.out_key = Some(KeyId::of(&m.outbound.key));
                }
            }
            ts.cfg = new.tunnels[i].clone();
        }
        self.config = new;
        self.sync_early_drop();
        let text = format!("Reloaded: {}\n", summary.join("; "));
        info!("{}", text.trim_end());
        Ok(text)
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
            .apply(changes, self.epoch.elapsed())
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
            .apply(changes, self.epoch.elapsed())
            .map_err(|e| anyhow!("clear crypto sa: {e}"))?;
        for id in ids {
            let now = xdpsec_datapath::worker::sa_counters(&self.workers, id);
            self.sa_baseline.insert(id, now);
        }
        for p in ike_peers {
            self.ike_input(Input::Command(xdpsec_ike::Command::ClearChildSas(p)));
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
    /// workers have stopped); dropping it detaches the program.
    pub fn shutdown(&mut self) -> Option<XdpSteering> {
        let mut s = self.steering.take()?;
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
        self.sdwan_shutdown();
        Some(s)
    }
}

/// The datapath cipher for a negotiated ESP transform, if it has one.
pub(crate) fn esp_cipher(encr: Encr, integ: Option<Integ>) -> Option<Cipher> {
    use xdpsec_datapath::crypto::{AesKeySize, Integrity};
    let integrity = |i: Integ| match i {
        Integ::HmacSha1_96 => Integrity::HmacSha1_96,
        Integ::HmacSha256_128 => Integrity::HmacSha256_128,
        Integ::HmacSha384_192 => Integrity::HmacSha384_192,
        Integ::HmacSha512_256 => Integrity::HmacSha512_256,
    };
    match (encr, integ) {
        (Encr::AesGcm16_128, None) => Some(Cipher::Aes128Gcm),
        (Encr::AesGcm16_256, None) => Some(Cipher::Aes256Gcm),
        (Encr::ChaCha20Poly1305, None) => Some(Cipher::ChaCha20Poly1305),
        (Encr::AesCbc128, Some(i)) => Some(Cipher::AesCbc(AesKeySize::Aes128, integrity(i))),
        (Encr::AesCbc256, Some(i)) => Some(Cipher::AesCbc(AesKeySize::Aes256, integrity(i))),
        _ => None,
    }
}

/// The inbound policy for negotiated traffic selectors.
fn ts_selectors(local: &[xdpsec_ike::Prefix], remote: &[xdpsec_ike::Prefix]) -> Arc<Selectors> {
    let set = |l: &[xdpsec_ike::Prefix]| {
        AddrSet::from_prefixes(l.iter().filter_map(|p| DpPrefix::new(p.addr, p.len)))
    };
    Arc::new(Selectors {
        local: set(local),
        remote: set(remote),
    })
}

/// The inbound SPIs of the manual tunnels (IKE must not pick them).
fn tunnels_manual_spis(cfg: &Config) -> Vec<u32> {
    cfg.tunnels
        .iter()
        .filter_map(|t| match &t.kind {
            TunnelKind::Manual(m) => Some(m.inbound.spi),
            TunnelKind::Ike(_) => None,
        })
        .collect()
}

/// The IKE core's configuration of every `kind = "ike"` tunnel of `cfg`.
pub fn ike_peers(cfg: &Config) -> Result<Vec<PeerConfig>> {
    let mut peers = Vec::new();
    for (i, t) in cfg.tunnels.iter().enumerate() {
        let TunnelKind::Ike(k) = &t.kind else {
            continue;
        };
        // Not wired into the exchanges yet: refuse rather than
        // authenticate with an empty pre-shared key.
        if k.cert.is_some() {
            return Err(anyhow!(
                "tunnel {}: auth = \"cert\" is not supported by the IKE exchanges yet (the certificate and key load, but only pre-shared keys authenticate)",
                t.name
            ));
        }
        let id = |s: &Option<String>, default: IpAddr| match s {
            None => Identity::Addr(default),
            Some(v) => crate::config::ike_identity(v),
        };
        // Each offer as its single proposals, in order of preference.
        let ike_proposals = k
            .ike_proposals
            .iter()
            .map(|p| IkeOffer::parse(p).map(|o| o.expand()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("tunnel {}: ike_proposals: {}", t.name, e.0))?
            .concat();
        let esp_proposals = k
            .esp_proposals
            .iter()
            .map(|p| EspProposal::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("tunnel {}: esp_proposals: {}", t.name, e.0))?;
        let prefixes = |l: &[crate::config::Cidr]| {
            l.iter()
                .map(|c| xdpsec_ike::Prefix {
                    addr: c.addr,
                    len: c.len,
                })
                .collect::<Vec<_>>()
        };
        peers.push(PeerConfig {
            tunnel: t.name.clone(),
            tunnel_index: i as u32,
            local: cfg.underlay.address,
            remote: t.peer,
            psk: k.psk.clone(),
            // With a certificate and no local_id: its subject DN.
            local_id: match (&k.cert, &k.local_id) {
                (Some(c), None) => Identity::Dn(c.subject_der()),
                _ => id(&k.local_id, cfg.underlay.address),
            },
            cert: k.cert.clone(),
            remote_id: id(&k.remote_id, t.peer),
            ike_proposals,
            esp_proposals,
            ike_lifetime: k.ike_lifetime,
            child_lifetime: k.lifetime,
            dpd: k.dpd,
            initiate: k.initiate,
            force_encap: matches!(t.encap, crate::config::Encap::Udp { .. }),
            nat_t_port: k.nat_t_port,
            local_ts: prefixes(&t.local_selectors(&cfg.inside)),
            remote_ts: prefixes(&t.remote_subnets),
            replay_window: t.replay_window,
            invalid_spi_recovery: k.invalid_spi_recovery,
        });
    }
    Ok(peers)
}

/// An IKE tunnel's pre-shared key (empty for other kinds).
fn ike_psk(t: &Tunnel) -> &[u8] {
    match &t.kind {
        TunnelKind::Ike(i) => &i.psk,
        TunnelKind::Manual(_) => &[],
    }
}

/// An IKE tunnel's certificate files (None for PSK and other kinds).
fn ike_cert_files(t: &Tunnel) -> Option<&[String; 3]> {
    match &t.kind {
        TunnelKind::Ike(i) => i.cert_files.as_ref(),
        TunnelKind::Manual(_) => None,
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
