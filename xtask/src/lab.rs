//! The lab lives in the test harness crate so tests, the demo and
//! `cargo xtask lab` build the same topology.
pub use xdpsec_e2e::Lab;
