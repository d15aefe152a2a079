//! Platform code: everything that talks to the Linux kernel on the control
//! side. The XDP loader (aya), rtnetlink next hops and neighbours, the TUN
//! device, and the kernel sockets that receive reassembled ESP. The owner of
//! control state and the workers use these through small, explicit calls;
//! nothing here holds control state.
pub mod kernelrx;
pub mod loader;
pub mod neighbor;
pub mod tun;
