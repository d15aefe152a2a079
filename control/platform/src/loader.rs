//! Loads the XDP program, attaches it, and owns its maps.
//!
//! The program is attached through a BPF link: the kernel detaches it when
//! the link's file descriptor closes, so it never outlives the daemon, even
//! when the daemon is killed.
use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData, PerCpuArray, RingBuf, XskMap,
        lpm_trie::{Key as LpmKey, LpmTrie},
    },
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use tracing::{error, info};
use xdpsec_common::{
    INSIDE_COUNTER_COUNT, InsideCounter, MAP_COUNTERS, MAP_EARLY_DROP, MAP_INSIDE_COUNTERS,
    MAP_INSIDE_MULTI_BUFFER, MAP_INSIDE_ROUTES_V4, MAP_INSIDE_ROUTES_V6, MAP_SPI_SAMPLES, MAP_SPIS,
    MAP_UDP_PORTS, MAP_XSKS, PROG_NAME, PROG_NAME_INSIDE, SPI_LIVE, SpiSample, XDP_COUNTER_COUNT,
    XdpCounter,
};
use xdpsec_datapath::sa::{SaSnapshot, SpiObserver, SpiState};

use xdpsec_worker::routes::Cidr;

use crate::XdpAttach;

/// The XDP object built by build.rs.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpsec.bpf.o"));

/// The loaded and attached XDP program with its maps.
pub struct XdpSteering {
    // Dropping `ebpf` closes the program's link: the program detaches.
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    xsks: XskMap<MapData>,
    /// The UDP port map until [`XdpSteering::take_port_map`] hands it to the owner's shell.
    udp_ports: Option<PortMap>,
    counters: PerCpuArray<MapData, u64>,
    early_drop: Array<MapData, u32>,
    samples: RingBuf<MapData>,
    /// The SPI map until [`XdpSteering::take_spi_sync`] hands it to the SA table.
    spis: Option<HashMap<MapData, u32, u64>>,
    /// Set when the SPI map could not be kept in step (early drop stays off).
    spi_sync_failed: Arc<AtomicBool>,
    /// Gateway mode's program on the inside interface (dropped, and so
    /// detached, with this steering).
    inside: Option<InsideSteering>,
    /// Interface it is attached to.
    pub interface: String,
    /// "driver" or "generic".
    pub attach_mode: &'static str,
}

/// XDP's map of UDP destination ports steered as ESP (65536 entries).
pub struct PortMap {
    map: Array<MapData, u8>,
}

impl PortMap {
    /// Steer (or stop steering) UDP destination port `port` as UDP-encapsulated ESP.
    pub fn set(&mut self, port: u16, steer: bool) -> Result<()> {
        self.map
            .set(port as u32, u8::from(steer), 0)
            .with_context(|| format!("updating UDP port {port} in the steering map"))
    }
}

impl XdpSteering {
    /// Load the program, fill the port map, attach to `interface` in driver
    /// mode (generic mode if the driver has no XDP support), or in generic
    /// mode only when `mode` says so.
    pub fn attach(interface: &str, ports: &BTreeSet<u16>, mode: XdpAttach) -> Result<XdpSteering> {
        let mut ebpf = Ebpf::load(XDP_OBJECT).context("loading the XDP object into the kernel")?;
        let xsks: XskMap<MapData> = XskMap::try_from(
            ebpf.take_map(MAP_XSKS)
                .context("XDP object has no XSKS map")?,
        )?;
        let udp_ports: Array<MapData, u8> = Array::try_from(
            ebpf.take_map(MAP_UDP_PORTS)
                .context("XDP object has no UDP_PORTS map")?,
        )?;
        let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
            ebpf.take_map(MAP_COUNTERS)
                .context("XDP object has no COUNTERS map")?,
        )?;
        let early_drop: Array<MapData, u32> = Array::try_from(
            ebpf.take_map(MAP_EARLY_DROP)
                .context("XDP object has no EARLY_DROP map")?,
        )?;
        let samples = RingBuf::try_from(
            ebpf.take_map(MAP_SPI_SAMPLES)
                .context("XDP object has no SPI_SAMPLES map")?,
        )?;
        let spis: HashMap<MapData, u32, u64> = HashMap::try_from(
            ebpf.take_map(MAP_SPIS)
                .context("XDP object has no SPIS map")?,
        )?;
        let mut s = XdpSteering {
            ebpf,
            link: None,
            xsks,
            udp_ports: Some(PortMap { map: udp_ports }),
            counters,
            early_drop,
            samples,
            spis: Some(spis),
            spi_sync_failed: Arc::new(AtomicBool::new(false)),
            inside: None,
            interface: interface.to_string(),
            attach_mode: "driver",
        };
        for &p in ports {
            s.set_udp_port(p, true)?;
        }
        let prog: &mut Xdp = s
            .ebpf
            .program_mut(PROG_NAME)
            .context("XDP object has no xdpsec program")?
            .try_into()?;
        let (link, attach_mode) = load_and_attach(prog, interface, mode)?;
        s.attach_mode = attach_mode;
        s.link = Some(link);
        info!(interface, mode = s.attach_mode, "XDP program attached");
        Ok(s)
    }

    /// Gateway mode: load the inside-role program on `interface`, steering
    /// inner packets towards `prefixes` (the tunnels' remote subnets) to
    /// the queues' sockets, in `mode` (`inside.xdp_mode`). It stays
    /// attached as long as this steering.
    pub fn attach_inside(
        &mut self,
        interface: &str,
        prefixes: &[Cidr],
        mode: XdpAttach,
    ) -> Result<()> {
        self.inside = Some(InsideSteering::attach(interface, prefixes, mode)?);
        Ok(())
    }

    /// The inside-role program, when gateway mode attached one.
    pub fn inside(&mut self) -> Option<&mut InsideSteering> {
        self.inside.as_mut()
    }

    /// Put an AF_XDP socket into the XSKMAP slot of its rx queue.
    pub fn set_socket(&mut self, queue: u32, fd: std::os::fd::RawFd) -> Result<()> {
        struct Raw(std::os::fd::RawFd);
        impl std::os::fd::AsRawFd for Raw {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.0
            }
        }
        self.xsks
            .set(queue, Raw(fd), 0)
            .with_context(|| format!("putting queue {queue}'s AF_XDP socket into the XSKMAP"))
    }

    /// Remove queue `queue`'s socket from the XSKMAP (its frames pass to the kernel).
    pub fn unset_socket(&mut self, queue: u32) {
        let _ = self.xsks.unset(queue);
    }

    /// Steer (or stop steering) UDP destination port `port` as UDP-encapsulated ESP.
    pub fn set_udp_port(&mut self, port: u16, steer: bool) -> Result<()> {
        match self.udp_ports.as_mut() {
            Some(m) => m.set(port, steer),
            None => anyhow::bail!("the UDP port map was handed over"),
        }
    }

    /// The UDP port map, for the owner's shell (once; `None` after).
    pub fn take_port_map(&mut self) -> Option<PortMap> {
        self.udp_ports.take()
    }

    /// The SPI map's keeper, for [`xdpsec_datapath::SaTable::set_spi_observer`]
    /// (once; `None` after). Early drop stays disarmed until
    /// [`XdpSteering::set_early_drop`], so install it first.
    pub fn take_spi_sync(&mut self) -> Option<XdpSpiSync> {
        Some(XdpSpiSync {
            map: self.spis.take()?,
            failed: Arc::clone(&self.spi_sync_failed),
        })
    }

    /// Arm (or disarm) early drop of unknown SPIs in XDP. It is never armed
    /// after the SPI map failed to follow the SA table (it could drop a
    /// live SPI); returns whether it is armed.
    pub fn set_early_drop(&mut self, on: bool) -> Result<bool> {
        let on = on && !self.spi_sync_failed.load(Ordering::Relaxed);
        self.early_drop
            .set(0, u32::from(on), 0)
            .context("updating the XDP early-drop switch")?;
        Ok(on)
    }

    /// Whether early drop is armed (read back from the kernel map).
    pub fn early_drop(&self) -> bool {
        self.early_drop.get(&0, 0).is_ok_and(|v| v != 0)
    }

    /// Take up to `max` samples of early-dropped frames (never blocks).
    pub fn drain_samples(&mut self, max: usize) -> Vec<SpiSample> {
        let mut v = Vec::new();
        while v.len() < max {
            let Some(item) = self.samples.next() else {
                break;
            };
            if item.len() >= std::mem::size_of::<SpiSample>() {
                // SAFETY: the XDP program writes whole `SpiSample`s
                // (repr(C), every bit pattern valid); read unaligned.
                v.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SpiSample>()) });
            }
        }
        v
    }

    /// The per-CPU counters summed, in `XdpCounter` slot order.
    pub fn counters(&self) -> Result<[u64; XDP_COUNTER_COUNT as usize]> {
        let mut out = [0u64; XDP_COUNTER_COUNT as usize];
        for c in XdpCounter::ALL {
            let per_cpu = self.counters.get(&(c as u32), 0)?;
            out[c as usize] = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

/// Load `prog` and attach it to `interface` in driver mode, or generic
/// mode if the driver has no XDP support; returns the link and the mode.
/// Load `prog` and attach it to `interface`: in driver mode, generic if
/// the driver refuses (`XdpAttach::Driver`), or in generic mode only; the
/// link and the mode it got.
fn load_and_attach(
    prog: &mut Xdp,
    interface: &str,
    mode: XdpAttach,
) -> Result<(XdpLinkId, &'static str)> {
    prog.load()
        .context("the kernel refused the XDP program (verifier)")?;
    let (first, name) = match mode {
        XdpAttach::Driver => (XdpMode::Driver, "driver"),
        XdpAttach::Generic => (XdpMode::Skb, "generic"),
    };
    let first_err = match prog.attach(interface, first) {
        Ok(l) => return Ok((l, name)),
        Err(e) => e,
    };
    if mode == XdpAttach::Driver {
        // Driver mode refused (no native XDP): generic mode instead.
        if let Ok(l) = prog.attach(interface, XdpMode::Skb) {
            return Ok((l, "generic"));
        }
    }
    let hint = match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            " (another XDP program is attached: remove it with `ip link set dev IFACE xdp off`)"
        }
        _ => "",
    };
    bail!(
        "attaching the XDP program to {interface} was refused: {}{}",
        error_chain(&first_err),
        hint.replace("IFACE", interface)
    );
}

/// The inside program's route tries: the destinations it steers to the
/// queues' sockets.
pub struct InsideRoutes {
    v4: LpmTrie<MapData, [u8; 4], u8>,
    v6: LpmTrie<MapData, [u8; 16], u8>,
    /// The prefixes in the tries.
    routes: BTreeSet<Cidr>,
}

impl InsideRoutes {
    /// Make the route tries hold exactly `want` (SD-WAN routes come and go).
    pub fn sync(&mut self, want: &BTreeSet<Cidr>) -> Result<()> {
        for c in want.difference(&self.routes.clone()) {
            let r = match c.addr {
                IpAddr::V4(a) => self
                    .v4
                    .insert(&LpmKey::new(u32::from(c.len), a.octets()), 1, 0),
                IpAddr::V6(a) => self
                    .v6
                    .insert(&LpmKey::new(u32::from(c.len), a.octets()), 1, 0),
            };
            r.with_context(|| format!("adding {c} to the inside route map"))?;
            self.routes.insert(*c);
        }
        for c in self.routes.clone().difference(want) {
            let r = match c.addr {
                IpAddr::V4(a) => self.v4.remove(&LpmKey::new(u32::from(c.len), a.octets())),
                IpAddr::V6(a) => self.v6.remove(&LpmKey::new(u32::from(c.len), a.octets())),
            };
            match r {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing {c} from the inside route map"));
                }
            }
            self.routes.remove(c);
        }
        Ok(())
    }
}

/// Gateway mode's XDP program on the inside interface (its own load of
/// the object, so its own maps): inner packets whose destination a tunnel
/// route covers go to the queue's AF_XDP socket, the rest to the kernel.
pub struct InsideSteering {
    // Never read: kept because dropping it closes the program's link (the
    // program detaches).
    _ebpf: Ebpf,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    multi_buffer: Array<MapData, u32>,
    /// The route tries until [`InsideSteering::take_routes`] hands them to
    /// the owner's shell.
    routes: Option<InsideRoutes>,
    /// Interface it is attached to.
    pub interface: String,
    /// "driver" or "generic".
    pub attach_mode: &'static str,
}

impl InsideSteering {
    /// Load the inside-role program, fill its route tries with `prefixes`,
    /// and attach it to `interface` in `mode` (driver mode falls back to
    /// generic where the driver has none).
    pub fn attach(interface: &str, prefixes: &[Cidr], mode: XdpAttach) -> Result<InsideSteering> {
        let mut ebpf = Ebpf::load(XDP_OBJECT).context("loading the XDP object into the kernel")?;
        let xsks: XskMap<MapData> = XskMap::try_from(
            ebpf.take_map(MAP_XSKS)
                .context("XDP object has no XSKS map")?,
        )?;
        let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
            ebpf.take_map(MAP_INSIDE_COUNTERS)
                .context("XDP object has no INSIDE_COUNTERS map")?,
        )?;
        let v4: LpmTrie<MapData, [u8; 4], u8> = LpmTrie::try_from(
            ebpf.take_map(MAP_INSIDE_ROUTES_V4)
                .context("XDP object has no INSIDE_ROUTES_V4 map")?,
        )?;
        let v6: LpmTrie<MapData, [u8; 16], u8> = LpmTrie::try_from(
            ebpf.take_map(MAP_INSIDE_ROUTES_V6)
                .context("XDP object has no INSIDE_ROUTES_V6 map")?,
        )?;
        let multi_buffer: Array<MapData, u32> = Array::try_from(
            ebpf.take_map(MAP_INSIDE_MULTI_BUFFER)
                .context("XDP object has no INSIDE_MULTI_BUFFER map")?,
        )?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_NAME_INSIDE)
            .context("XDP object has no xdpsec_inside program")?
            .try_into()?;
        let (_link, attach_mode) = load_and_attach(prog, interface, mode)?;
        info!(
            interface,
            mode = attach_mode,
            prefixes = prefixes.len(),
            "inside XDP program attached"
        );
        let mut s = InsideSteering {
            _ebpf: ebpf,
            xsks,
            counters,
            multi_buffer,
            routes: Some(InsideRoutes {
                v4,
                v6,
                routes: BTreeSet::new(),
            }),
            interface: interface.to_string(),
            attach_mode,
        };
        if let Some(r) = s.routes.as_mut() {
            r.sync(&prefixes.iter().copied().collect())?;
        }
        Ok(s)
    }

    /// The route tries, for the owner's shell (once; `None` after).
    pub fn take_routes(&mut self) -> Option<InsideRoutes> {
        self.routes.take()
    }

    /// Put queue `queue`'s inside AF_XDP socket into the XSKMAP.
    pub fn set_socket(&mut self, queue: u32, fd: std::os::fd::RawFd) -> Result<()> {
        self.xsks.set(queue, RawFdRef(fd), 0).with_context(|| {
            format!("putting queue {queue}'s inside AF_XDP socket into the XSKMAP")
        })
    }

    /// Tell the program whether the sockets take chained frames
    /// (`XDP_USE_SG`): multi-buffer frames are then redirected whole, up
    /// to `INSIDE_MAX_FRAME`; otherwise they are dropped and counted.
    pub fn set_multi_buffer(&mut self, on: bool) -> Result<()> {
        self.multi_buffer
            .set(0, u32::from(on), 0)
            .context("updating the inside program's multi-buffer switch")
    }

    /// Remove queue `queue`'s inside socket (its frames pass to the kernel).
    pub fn unset_socket(&mut self, queue: u32) {
        let _ = self.xsks.unset(queue);
    }

    /// The per-CPU inside counters summed, in `InsideCounter` slot order.
    pub fn counters(&self) -> Result<[u64; INSIDE_COUNTER_COUNT as usize]> {
        let mut out = [0u64; INSIDE_COUNTER_COUNT as usize];
        for c in InsideCounter::ALL {
            let per_cpu = self.counters.get(&(c as u32), 0)?;
            out[c as usize] = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

/// A raw fd for the XSKMAP, which takes anything `AsRawFd`.
struct RawFdRef(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Keeps the XDP program's `SPIS` map in step with the SA table: installed
/// as its [`SpiObserver`], it is told of every changed SPI before the
/// snapshot is published, so a new SA's SPI is live in XDP before any
/// worker can decrypt with it.
pub struct XdpSpiSync {
    map: HashMap<MapData, u32, u64>,
    failed: Arc<AtomicBool>,
}

impl XdpSpiSync {
    fn sync(
        &mut self,
        next: &SaSnapshot,
        spi: u32,
        now: Duration,
    ) -> Result<(), aya::maps::MapError> {
        match next.spi_state(spi, now) {
            SpiState::Live => self.map.insert(spi, SPI_LIVE, 0),
            SpiState::Deleted { until } => {
                // XDP compares with bpf_ktime_get_ns (CLOCK_MONOTONIC).
                let left = until.saturating_sub(now).as_nanos() as u64;
                let value = monotonic_ns().saturating_add(left).max(SPI_LIVE + 1);
                self.map.insert(spi, value, 0)
            }
            SpiState::Unknown => match self.map.remove(&spi) {
                Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                r => r,
            },
        }
    }
}

impl SpiObserver for XdpSpiSync {
    fn spis_changed(&mut self, next: &SaSnapshot, spis: &[u32], now: Duration) {
        for &spi in spis {
            if let Err(e) = self.sync(next, spi, now) {
                // A live SPI missing from the map would be dropped: disarm
                // for good (the owner re-reads this flag every tick).
                if !self.failed.swap(true, Ordering::Relaxed) {
                    error!("XDP SPI map out of step (SPI {spi:#x}): {e}; early drop disabled");
                }
            }
        }
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
