//! Loads the XDP program, attaches it, and owns its maps.
//!
//! The program is attached through a BPF link: the kernel detaches it when
//! the link's file descriptor closes, so it never outlives the daemon, even
//! when the daemon is killed.
use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, XskMap},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use tracing::info;
use xdpsec_common::{
    MAP_COUNTERS, MAP_UDP_PORTS, MAP_XSKS, PROG_NAME, XDP_COUNTER_COUNT, XdpCounter,
};

/// The XDP object built by build.rs.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpsec.bpf.o"));

/// The loaded and attached XDP program with its maps.
pub struct XdpSteering {
    // Dropping `ebpf` closes the program's link: the program detaches.
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    xsks: XskMap<MapData>,
    udp_ports: Array<MapData, u8>,
    counters: PerCpuArray<MapData, u64>,
    /// Interface it is attached to.
    pub interface: String,
    /// "driver" or "generic".
    pub attach_mode: &'static str,
}

impl XdpSteering {
    /// Load the program, fill the port map, attach to `interface` in driver
    /// mode (generic mode if the driver has no XDP support).
    pub fn attach(interface: &str, ports: &BTreeSet<u16>) -> Result<XdpSteering> {
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
        let mut s = XdpSteering {
            ebpf,
            link: None,
            xsks,
            udp_ports,
            counters,
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
        prog.load()
            .context("the kernel refused the XDP program (verifier)")?;
        let link = match prog.attach(interface, XdpMode::Driver) {
            Ok(l) => l,
            Err(driver_err) => match prog.attach(interface, XdpMode::Skb) {
                Ok(l) => {
                    s.attach_mode = "generic";
                    l
                }
                Err(_) => {
                    let hint = match std::io::Error::last_os_error().raw_os_error() {
                        Some(libc::EBUSY) | Some(libc::EEXIST) => {
                            " (another XDP program is attached: remove it with `ip link set dev IFACE xdp off`)"
                        }
                        _ => "",
                    };
                    bail!(
                        "attaching the XDP program to {interface} was refused: {}{}",
                        error_chain(&driver_err),
                        hint.replace("IFACE", interface)
                    );
                }
            },
        };
        s.link = Some(link);
        info!(interface, mode = s.attach_mode, "XDP program attached");
        Ok(s)
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
        self.udp_ports
            .set(port as u32, u8::from(steer), 0)
            .with_context(|| format!("updating UDP port {port} in the steering map"))
    }

    /// The ports currently steered, read back from the kernel map.
    pub fn udp_ports(&self) -> Result<BTreeSet<u16>> {
        let mut set = BTreeSet::new();
        for (i, v) in self.udp_ports.iter().enumerate() {
            if v? != 0 {
                set.insert(i as u16);
            }
        }
        Ok(set)
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
