//! xdpsec's workers: the per-queue batch handler around the ESP core
//! (`xdpsec-datapath`), between the AF_XDP loop (`xdpsec-afxdp`) and
//! control. It does packet processing only; control state, commands and
//! platform set-up (XDP, rtnetlink, the TUN device) stay in control, which
//! sees the workers through [`Workers`].
//!
//! - [`handler`]: decap and encap around the core for one queue, delivery
//!   to the inside (TUN, sink, or the inside interface's AF_XDP socket).
//! - [`handoff`]: frames and inner packets for an SA another worker owns.
//! - [`punt`]: the punt (worker -> control) and inject (control -> worker)
//!   rings.
//! - [`taps`]: the workers' side of the packet trace and the drop capture.
//! - [`stats`]: the workers' I/O counters and what control reads per queue.
//! - [`routes`], [`neighbors`]: the tables workers read and control fills
//!   (inner routes into tunnels, next-hop MACs).
//! - [`frame`], [`tun`]: Ethernet framing and the TUN queue's I/O.
//! - [`offload`]: the TUN's virtio-net header, segmentation of GSO
//!   super-packets and coalescing of decrypted TCP segments (no I/O).
//! - [`traffic_gen`]: the traffic generator's framing.
#![warn(missing_docs)]

pub mod chain;
pub mod frame;
pub mod handler;
pub mod handoff;
pub mod neighbors;
pub mod offload;
pub mod punt;
pub mod routes;
pub mod stats;
pub mod taps;
pub mod traffic_gen;
pub mod tun;
mod workers;

#[cfg(test)]
mod testutil;

pub use handler::{DatapathHandler, InsideIo, InsideXdp, Published, TunVnet};
pub use workers::Workers;
