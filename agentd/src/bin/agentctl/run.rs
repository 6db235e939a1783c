//! `agentctl run --agent NAME [--user U] [--mode enforce|audit-only]
//! [--message ID] -- CMD`: starts an agent under agentd's enforcement (see
//! `enforce::launch`); `--message` hands the command the active-message id
//! its tool calls echo (`AGENTD_ACTIVE_MESSAGE`).
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
    /// Active-message id the agent works on (set as AGENTD_ACTIVE_MESSAGE).
    #[arg(long)]
    pub message: Option<String>,
    /// A run cgroup under the agent's (from the driver) to start in.
    #[arg(long, hide = true)]
    pub run_cgroup: Option<PathBuf>,
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
    if let Some(id) = &args.message {
        // Single-threaded here: setting the environment is safe, and the
        // agent inherits it through exec.
        std::env::set_var("AGENTD_ACTIVE_MESSAGE", id);
    }
    if let Some(cg) = &args.run_cgroup {
        // Join the run cgroup before the launcher forks: the agent's
        // process (and everything it starts) is created inside it, and the
        // launcher's join into the agent leaves it there.
        let procs = cg.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(|e| anyhow::anyhow!("joining run cgroup {}: {e}", cg.display()))?;
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
