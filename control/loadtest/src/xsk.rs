//! `--traffic`'s wire: xdpsec's XDP program on the underlay interface for
//! the run, steering plain ESP and ESP in UDP to the steered ports (the
//! NAT-T port, or each peer's own) into AF_XDP sockets, one per receive
//! queue; the probes leave through the first socket as whole Ethernet
//! frames to the next hop toward the gateway. IKE (the non-ESP marker)
//! and NAT keepalives pass to the kernel's sockets. Dropping the wire
//! closes the sockets and detaches the program (also on an error, a
//! panic's unwinding or after Ctrl-C; the kernel detaches it too when the
//! process dies: it holds the program by a BPF link).
use std::{
    collections::BTreeSet,
    net::IpAddr,
    os::fd::RawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use xdpsec_afxdp::{QueueConfig, XskQueue};
use xdpsec_platform::{
    XdpAttach,
    loader::XdpSteering,
    neighbor::{NextHops, interface_mac},
};

/// How long the gateway's next hop may take to resolve at the start.
const NEXT_HOP_WAIT: Duration = Duration::from_secs(3);
/// How often the run reads the kernel's neighbour table again (without
/// soliciting) to follow a next hop whose MAC changed (a gateway failover
/// announced by an unsolicited NA or a gratuitous ARP).
const NEXT_HOP_EVERY: Duration = Duration::from_secs(1);
/// UMEM frames per socket (half receive, half transmit) and ring size:
/// room for bursts of a few hundred probes and replies.
const FRAMES: u32 = 2048;
const RING: u32 = 512;

/// The AF_XDP sockets and the XDP program that feeds them.
pub struct EspWire {
    // Dropped first: the sockets close, then the program detaches.
    queues: Vec<XskQueue>,
    _steering: XdpSteering,
    /// The next hop's MAC toward the gateway, then the interface's own.
    pub macs: [[u8; 6]; 2],
    /// The next hop toward the gateway, read again every [`NEXT_HOP_EVERY`].
    hops: NextHops,
    interface: String,
    next_hop_at: Instant,
    /// How often the next hop's MAC changed during the run.
    pub next_hop_changes: u64,
    /// "driver" or "generic", as the kernel took the program.
    pub attach_mode: &'static str,
}

/// The receive queues of `interface` (its `queues/rx-N` in sysfs; 1 when
/// sysfs does not say).
fn rx_queues(interface: &str) -> u32 {
    xdpsec_platform::queue_counts(interface).map_or(1, |(rx, _)| rx.max(1))
}

impl EspWire {
    /// Resolve the next hop toward `gateway` on `interface`, attach the
    /// XDP program there (`mode`) steering UDP destination `ports` as ESP,
    /// and bind a socket to each receive queue.
    pub fn open(
        interface: &str,
        mode: XdpAttach,
        ports: &BTreeSet<u16>,
        gateway: IpAddr,
    ) -> Result<EspWire> {
        let own = interface_mac(interface).ok_or_else(|| {
            anyhow!("interface {interface}: no MAC address (is it an Ethernet device?)")
        })?;
        let hops = NextHops::new(vec![Some(gateway)]);
        hops.refresh(interface, NEXT_HOP_WAIT);
        let hop = hops.get(0).and_then(|m| m.get()).ok_or_else(|| {
            anyhow!(
                "--traffic: the next hop toward the gateway {gateway} on {interface} has no MAC address (not resolved within {} s): is the gateway reachable on {interface}?",
                NEXT_HOP_WAIT.as_secs()
            )
        })?;
        let mut steering = XdpSteering::attach(interface, ports, mode)
            .with_context(|| format!("--traffic: attaching xdpsec's XDP program to {interface}"))?;
        let mut queues = Vec::new();
        for q in 0..rx_queues(interface) {
            let cfg = QueueConfig {
                frames: FRAMES,
                ring_size: RING,
                ..QueueConfig::new(interface, q)
            };
            let x = XskQueue::open(&cfg).context("--traffic: AF_XDP socket")?;
            steering.set_socket(q, x.raw_fd())?;
            queues.push(x);
        }
        Ok(EspWire {
            queues,
            attach_mode: steering.attach_mode,
            _steering: steering,
            macs: [hop, own],
            hops,
            interface: interface.to_string(),
            next_hop_at: Instant::now() + NEXT_HOP_EVERY,
            next_hop_changes: 0,
        })
    }

    /// Every [`NEXT_HOP_EVERY`]: one route and one neighbour dump of the
    /// kernel's tables (no solicitation, no wait), taking the next hop's
    /// MAC when it changed for the probes that follow. A next hop the
    /// kernel lost keeps its last MAC.
    pub fn follow_next_hop(&mut self, now: Instant) {
        if now < self.next_hop_at {
            return;
        }
        self.next_hop_at = now + NEXT_HOP_EVERY;
        self.hops.refresh(&self.interface, Duration::ZERO);
        if let Some(mac) = self.hops.get(0).and_then(|m| m.get())
            && mac != self.macs[0]
        {
            self.macs[0] = mac;
            self.next_hop_changes += 1;
        }
    }

    /// When [`EspWire::follow_next_hop`] reads the kernel's tables next.
    pub fn next_hop_at(&self) -> Instant {
        self.next_hop_at
    }

    /// The sockets' descriptors, to wait on.
    pub fn fds(&self) -> Vec<RawFd> {
        self.queues.iter().map(XskQueue::raw_fd).collect()
    }

    /// Build one frame with `build` (the whole frame buffer in, the
    /// length out; `None`: nothing to send) and queue it; false when no
    /// transmit frame was free or `build` gave nothing.
    pub fn send(&mut self, build: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        self.queues[0].tx().send_with(build)
    }

    /// Put the queued frames on the wire.
    pub fn flush(&mut self) {
        self.queues[0].tx().flush();
    }

    /// Hand every frame received (up to `batches` batches per socket) to
    /// `each`; how many there were.
    pub fn receive(&mut self, batches: usize, mut each: impl FnMut(&mut [u8])) -> usize {
        let mut n = 0;
        for q in &mut self.queues {
            for _ in 0..batches {
                let got = q.poll_batch(|b, _| {
                    for k in 0..b.len() {
                        each(b.frame_mut(k));
                    }
                });
                n += got;
                if got == 0 {
                    break;
                }
            }
        }
        n
    }
}
