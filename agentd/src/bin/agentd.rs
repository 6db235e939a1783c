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
        /// Config file.
        #[arg(long, default_value = agentd::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
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
        Command::Run { config } => {
            let _config = agentd::config::Config::load(&config)?;
            anyhow::bail!("the daemon is not built yet")
        }
    }
}
