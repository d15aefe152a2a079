//! The lab lives in the test harness crate so tests, the demo and
//! `cargo xtask lab` build the same topology.
use std::time::Duration;

use anyhow::{Result, bail};
pub use xdpsec_e2e::Lab;
use xdpsec_e2e::sdwan::{self, Timers};

/// Namespaces of the SD-WAN lab: `xdpsec-sd-br`, `xdpsec-sd-vsmart`,
/// `xdpsec-sd-edge1` .. `xdpsec-sd-edge3`.
const SDWAN_PREFIX: &str = "xdpsec-sd";

/// `cargo xtask lab up --sdwan`: build xdpsec, bring up the controller and
/// three edges with the default timers, wait for BFD, leave them running.
pub fn sdwan_up() -> Result<()> {
    let bin = crate::build_xdpsec()?;
    // SAFETY: no other thread runs yet; the harness reads XDPSEC_BIN to find the binary.
    unsafe { std::env::set_var("XDPSEC_BIN", &bin) };
    // BFD at the default 1 s x 7 comes up within a few seconds.
    sdwan::lab_up(SDWAN_PREFIX, Timers::defaults(), Duration::from_secs(60))?;
    println!("remove it with: cargo xtask lab down");
    Ok(())
}

/// `cargo xtask lab show --sdwan`.
pub fn sdwan_show() -> Result<()> {
    match sdwan::lab_show(SDWAN_PREFIX) {
        Some(info) => {
            print!("{info}");
            Ok(())
        }
        None => bail!("no SD-WAN lab is running (cargo xtask lab up --sdwan)"),
    }
}

/// The SD-WAN part of `cargo xtask lab down`.
pub fn sdwan_down() {
    sdwan::lab_down(SDWAN_PREFIX);
}
