//! `xdpsec`: the daemon (`run`) and the IOS-style client (`cli`).
mod cli;
mod commands;
mod config;
mod ctlsock;
mod daemon;
mod datapath;
mod loader;
mod neighbor;
mod state;
mod tun;
mod worker;

use std::{
    io::{BufRead, Write},
    path::PathBuf,
    process::ExitCode,
};

use clap::{Parser, Subcommand};

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
    /// Check a configuration file and print what it means.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.cmd {
        Command::Run { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("XDPSEC_LOG")
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
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
        Command::CheckConfig { config } => match config::Config::load(&config) {
            Ok(c) => {
                println!("{c:#?}");
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
                one_command(&socket, &command.join(" "), json)
            }
        }
    }
}

fn format_chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn one_command(socket: &std::path::Path, command: &str, json: bool) -> ExitCode {
    match ctlsock::request(socket, command, json) {
        Ok(reply) => {
            let out = reply.output;
            if reply.ok {
                print!("{out}");
                if !out.is_empty() && !out.ends_with('\n') {
                    println!();
                }
                ExitCode::SUCCESS
            } else {
                eprintln!("{out}");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("xdpsec: {}", format_chain(&e));
            ExitCode::from(2)
        }
    }
}

fn interactive(socket: &std::path::Path, json: bool) -> ExitCode {
    let node = socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "xdpsec".into());
    let stdin = std::io::stdin();
    loop {
        print!("{node}#");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => {
                println!();
                return ExitCode::SUCCESS;
            }
            Ok(_) => {}
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if matches!(line, "exit" | "quit" | "end") {
            return ExitCode::SUCCESS;
        }
        let _ = one_command(socket, line, json);
    }
}
