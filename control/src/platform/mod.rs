//! Platform code: everything that talks to the Linux kernel on the control
//! side. The XDP loader (aya), rtnetlink next hops and neighbours and
//! device links live in `xdpsec-platform` (the load tester shares them)
//! and are re-exported here; the TUN device, routes over rtnetlink and the
//! kernel sockets that receive reassembled ESP are the binary's own. The
//! owner of control state and the workers use these through small,
//! explicit calls; nothing here holds control state.
pub mod kernelrx;
pub mod route;
pub mod tun;

pub use xdpsec_platform::{ifindex, link, loader, neighbor};
