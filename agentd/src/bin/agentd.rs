//! `agentd`: the privileged daemon, and its `doctor` self-check.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentd",
    version,
    about = "Identity, authorization and kernel enforcement for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report what this kernel supports for enforcement, by probing.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon.
    Run {
        /// Config file (default /etc/agentd/agentd.toml; built-in defaults if that is absent).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override `state_dir`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Override `socket_path`.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Override `gateway.policy_file` (loaded at start and on SIGHUP).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Doctor { json } => {
            let report = agentd::doctor::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        Command::Run {
            config,
            state_dir,
            socket,
            policy,
        } => {
            let default = PathBuf::from(agentd::config::DEFAULT_CONFIG_PATH);
            let loaded = match config {
                Some(path) => agentd::config::Config::load(&path)?,
                None if default.exists() => agentd::config::Config::load(&default)?,
                None => agentd::config::Config::default(),
            };
            agentd::daemon::run(agentd::daemon::apply_overrides(
                loaded, state_dir, socket, policy,
            )?)
        }
    }
}
