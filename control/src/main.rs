//! `xdpsec`: the daemon (`run`) and the IOS-style client (`cli`).
mod cli;
mod config;
mod controller;
mod ctlsock;
mod daemon;
mod filter;
mod grammar;
mod metrics;
mod owner;
mod pki;
mod platform;
mod sdwan;
mod seqstore;
mod session;
mod show;
mod state;
mod syslog;
mod traffic_gen;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Every heap block is wiped before it is freed, and a reallocation never
/// leaves the old block unwiped (`xdpsec-zalloc`): keys that pass through
/// memory we do not own (rustls's record buffers, ring's key schedules,
/// a `Vec` that grew) are gone once their owner frees it.
#[global_allocator]
static ALLOCATOR: xdpsec_zalloc::ZeroOnFree<std::alloc::System> =
    xdpsec_zalloc::ZeroOnFree(std::alloc::System);

/// A userspace IPsec ESP datapath on XDP and AF_XDP, with an IOS-style control plane.
#[derive(Parser)]
#[command(name = "xdpsec", version)]
struct Args {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the datapath in the foreground until SIGINT or SIGTERM.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run one IOS-style command against a running daemon, or start a prompt.
    Cli {
        /// The daemon's control socket.
        #[arg(long, short)]
        socket: PathBuf,
        /// Print JSON instead of IOS text.
        #[arg(long)]
        json: bool,
        /// The command, e.g. "show platform hardware qfp active statistics".
        /// Without it, an interactive NODE# prompt reads commands.
        command: Vec<String>,
    },
    /// Run the SD-WAN controller (OMP route reflector) in the foreground
    /// until SIGINT or SIGTERM.
    Controller {
        /// The controller's TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Send ESP for a configured manual tunnel through AF_XDP (a traffic
    /// generator); stops by itself at --count or --duration (default 10 s).
    Gen {
        /// An xdpsec config for the sending side (underlay, the tunnel's keys, state_dir).
        #[arg(long, short)]
        config: PathBuf,
        /// The tunnel (default: the first manual one).
        #[arg(long)]
        tunnel: Option<String>,
        /// Inner UDP payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Frames per second (default: flat out).
        #[arg(long)]
        rate: Option<f64>,
        /// Stop after this many frames.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Extra frames per valid one: unknown-spi=F,replay=F,old=F,bad-icv=F.
        #[arg(long, default_value = "")]
        mix: String,
        /// AF_XDP queues to send on.
        #[arg(long, default_value_t = 1)]
        queues: u32,
        /// The first queue to send on: queues Q..Q+N-1 with N = --queues
        /// (on a veth, a frame sent on queue Q arrives on the peer's queue Q).
        #[arg(long, value_name = "Q", default_value_t = 0)]
        first_queue: u32,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load tests against a gateway (`loadtest ike`: N emulated IKEv2 peers).
    Loadtest {
        #[command(subcommand)]
        cmd: xdpsec_loadtest::LoadtestCommand,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    Man,
    /// Certificates: an enterprise root CA, device certificates, the
    /// controller's authorized edge list.
    Pki {
        #[command(subcommand)]
        cmd: pki::PkiCommand,
    },
    /// Check a configuration file and print what it means (exit 2 if invalid).
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print nothing when the config is valid (for scripts, ExecStartPre).
        #[arg(long, short)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.cmd {
        Command::Run { config } => {
            init_logging();
            let cfg = match config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("xdpsec: invalid config: {e}");
                    return ExitCode::from(2);
                }
            };
            match daemon::run(cfg, &config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xdpsec: {}", format_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Controller { config } => {
            init_logging();
            let cfg = match controller::ControllerConfig::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("xdpsec: invalid config: {e}");
                    return ExitCode::from(2);
                }
            };
            match controller::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xdpsec: {}", format_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Gen {
            config,
            tunnel,
            size,
            rate,
            count,
            duration,
            mix,
            queues,
            first_queue,
            json,
        } => {
            let run = || -> anyhow::Result<traffic_gen::Sent> {
                let args = traffic_gen::GenArgs {
                    tunnel,
                    size,
                    rate: rate.filter(|r| *r > 0.0),
                    count,
                    duration: duration
                        .map(|d| {
                            std::time::Duration::try_from_secs_f64(d)
                                .map_err(|_| anyhow::anyhow!("--duration {d}: give seconds >= 0"))
                        })
                        .transpose()?,
                    mix: traffic_gen::Mix::parse(&mix)?,
                    queues,
                    first_queue,
                };
                traffic_gen::run(&config, &args, json)
            };
            match run() {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xdpsec gen: {}", format_chain(&e));
                    ExitCode::from(2)
                }
            }
        }
        Command::Completions { shell } => {
            let mut cmd = <Args as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "xdpsec", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Args as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xdpsec man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Pki { cmd } => pki::main(cmd),
        Command::Loadtest { cmd } => xdpsec_loadtest::main(cmd),
        Command::CheckConfig { config, quiet } => match config::Config::load(&config) {
            Ok(c) => {
                if !quiet {
                    println!("{c:#?}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xdpsec: invalid config: {e}");
                ExitCode::from(2)
            }
        },
        Command::Cli {
            socket,
            json,
            command,
        } => {
            if command.is_empty() {
                interactive(&socket, json)
            } else {
                session::one_command(&socket, &command.join(" "), json)
            }
        }
    }
}

/// Logs to stderr (the journal under systemd), filtered by `XDPSEC_LOG`.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XDPSEC_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn format_chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn interactive(socket: &std::path::Path, json: bool) -> ExitCode {
    let session = match session::Session::connect(socket, json) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xdpsec: {}", format_chain(&e));
            return ExitCode::from(2);
        }
    };
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        session.interactive()
    } else {
        session::scripted(session)
    }
}
