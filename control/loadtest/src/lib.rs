//! `xdpsec loadtest`: a test peer that measures an IPsec gateway, after
//! the IETF BMWG's IPsec metrics (draft-ietf-bmwg-ipsec-term/-meth):
//! tunnels per second, time to first packet, rekeys per second.
//!
//! - [`config`]: the config file (`[underlay]`, `[loadtest]`).
//! - [`engine`]: I/O-free: one IKE core per emulated peer, pacing,
//!   concurrency cap, rekeys, the attempts' accounting.
//! - [`stats`]: accounting, percentiles, the `--json` summary.
//! - [`traffic`]: `--traffic`: echo requests through each tunnel, replies
//!   counted, time to first packet.
//! - [`report`]: `--report`: an offline HTML page with plots.
//! - [`frames`]: the probes' and replies' Ethernet frames (the datapath's framing).
//! - [`xsk`]: `--traffic`'s wire: the XDP program and AF_XDP sockets for the run.
//! - [`net`]: sockets, the source addresses on the interface, signals.
//! - [`run`]: the shell's loop and the progress line.
#![deny(unsafe_code)]

pub mod config;
pub mod engine;
pub mod frames;
pub mod net;
pub mod report;
pub mod run;
pub mod stats;
pub mod traffic;
pub mod xsk;

use std::path::PathBuf;

/// `xdpsec loadtest ...`.
#[derive(clap::Subcommand, Debug)]
pub enum LoadtestCommand {
    /// Emulate N IKEv2 initiators (each its own source and inside
    /// address) against one gateway: setup rate, failures by notify type,
    /// rekeys; `--json` for the figures.
    Ike(IkeArgs),
}

/// `xdpsec loadtest ike` options.
#[derive(clap::Args, Debug, Clone)]
pub struct IkeArgs {
    /// The config file: `[underlay]` and `[loadtest]` (README, "xdpsec loadtest").
    #[arg(long, short)]
    pub config: PathBuf,
    /// Emulated peers, one attempt each.
    #[arg(long, default_value_t = 1)]
    pub tunnels: u64,
    /// New IKE_SA_INIT exchanges per second (default: as fast as --concurrency allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Exchanges in flight at most.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Hold the tunnels this many seconds once every attempt has ended
    /// (rekeys happen then), then delete them.
    #[arg(long, default_value_t = 0.0)]
    pub duration: f64,
    /// Rekey each tunnel's child SA this many seconds after it came up, and
    /// again every so many seconds.
    #[arg(long)]
    pub rekey_every: Option<f64>,
    /// Send this many ICMP echo requests a second through each tunnel once
    /// its child SA is up (over AF_XDP: xdpsec's XDP program goes on the
    /// interface for the run; ESP in UDP or plain ESP, as `encap` says)
    /// and count the replies; gives time to first packet.
    #[arg(long, value_name = "PPS")]
    pub traffic: Option<f64>,
    /// Tunnel Failover Time: once every attempt has ended (and
    /// --fault-after more), `silent:N[:S]` kills the first N tunnels up
    /// (nothing answered, nothing sent; they restart S seconds later,
    /// default 10, with no memory of their SAs) or `forget-sa:N` makes
    /// their datapath forget the inbound child SAs (INVALID_SPI to the
    /// gateway's ESP); the time until traffic flows again through a new
    /// child SA is timed. Needs --traffic.
    #[arg(long, value_name = "KIND:N[:S]")]
    pub fault: Option<String>,
    /// Seconds between the end of the setup phase and the fault.
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub fault_after: f64,
    /// Print the IKE cores' log lines on stderr.
    #[arg(long, short)]
    pub verbose: bool,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write an HTML page with the figures and plots (viewable offline).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// Run a `loadtest` subcommand; the process's exit code (0: ran, 1: ran
/// with failed attempts, 2: could not run).
pub fn main(cmd: LoadtestCommand) -> std::process::ExitCode {
    match cmd {
        LoadtestCommand::Ike(a) => match run::ike(&a) {
            Ok(s) if s.up == s.attempts => std::process::ExitCode::SUCCESS,
            Ok(_) => std::process::ExitCode::from(1),
            Err(e) => {
                let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
                eprintln!("xdpsec loadtest: {}", chain.join(": "));
                std::process::ExitCode::from(2)
            }
        },
    }
}
