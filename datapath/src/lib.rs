//! Pure IPsec ESP datapath core for xdpsec: no I/O, no threads, no clocks.
//!
//! The caller (the AF_XDP worker, the TUN reader, the control plane) owns the
//! sockets, buffers and time; this crate parses frames, finds SAs, checks
//! anti-replay, runs the AEAD and says what to do with each frame.
//!
//! Layout, following the house style (smoltcp wire views, VPP's batched ESP
//! decrypt node, boringtun's I/O-free protocol core):
//! - [`wire`]: zero-copy packet views (Ethernet, IPv4, IPv6, UDP, ESP).
//! - [`drop`]: the closed set of IOS QFP drop reasons and per-worker counters.
//! - [`replay`]: RFC 6479 anti-replay window with RFC 4303 ESN inference.
//! - [`crypto`]: RFC 4106 / RFC 7634 AEAD ESP open/seal on top of `ring`.
//! - [`sa`]: the SA table published to workers as immutable snapshots.
//! - [`worker`]: worker-local state (replay windows, per-SA counters).
//! - [`pipeline`]: batched decap and single-packet encap.
//! - [`events`] and [`ioslog`]: drop events and IOS-style log lines.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod crypto;
pub mod drop;
pub mod events;
pub mod ioslog;
mod layout;
pub mod outer;
pub mod pipeline;
mod pmap;
mod prefetch;
pub mod replay;
pub mod sa;
pub mod wire;
pub mod worker;

#[cfg(test)]
mod kat;
#[cfg(test)]
mod memory_tests;
#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod testutil;

pub use drop::{DropCounters, DropReason, DropStats};
pub use pipeline::{EncapOutput, MAX_BATCH, Verdict, decap_batch, drop_frame, encap};
pub use sa::{SaSnapshot, SaTable};
pub use worker::WorkerState;
