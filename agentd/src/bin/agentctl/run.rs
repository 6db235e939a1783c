//! `agentctl run --agent NAME [--user U] [--mode enforce|audit-only] -- CMD`:
//! starts an agent under agentd's enforcement (see `enforce::launch`).
use std::{ffi::OsString, path::PathBuf};

use agentd::enforce::{launch, Mode};

/// Arguments of `agentctl run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agent name (its cgroup under agentd.slice).
    #[arg(long)]
    pub agent: String,
    /// Unprivileged user the agent runs as.
    #[arg(long, default_value = "agentd-agent")]
    pub user: String,
    /// enforce (deny what no grant covers) or audit-only (record would-deny);
    /// default: the agent's current mode (enforce for a new agent).
    #[arg(long)]
    pub mode: Option<String>,
    /// agentd's enforcement socket.
    #[arg(long, default_value = launch::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The command to run.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// Runs `agentctl run`; exits with the agent's exit code.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mode = match &args.mode {
        Some(m) => Some(
            Mode::parse(m)
                .ok_or_else(|| anyhow::anyhow!("--mode must be enforce or audit-only"))?,
        ),
        None => None,
    };
    let creds = launch::creds_of_user(&args.user)?;
    if creds.uid == 0 {
        anyhow::bail!(
            "agents run as an unprivileged user; `{}` is root",
            args.user
        );
    }
    let spec = launch::LaunchSpec {
        socket: args.socket,
        agent: args.agent,
        mode,
        creds,
        argv: args.command,
    };
    let code = launch::run_agent(&spec)?;
    std::process::exit(code)
}
