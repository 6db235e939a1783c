//! `agentctl exec --call ID -- CMD`: binds this process to an allowed tool
//! call (agentd checks with SO_PEERCRED that it is in the call's agent),
//! then execs CMD; its children inherit the binding in the kernel.
use std::{ffi::OsString, path::PathBuf};

use agentd::enforce::launch;

/// Arguments of `agentctl exec`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tool-call id whose grant the command runs under.
    #[arg(long)]
    pub call: String,
    /// agentd's enforcement socket.
    #[arg(long, default_value = launch::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The command to run.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// Runs `agentctl exec` (does not return on success).
pub fn run(args: Args) -> anyhow::Result<()> {
    match launch::exec_bound(&args.socket, &args.call, &args.command)? {}
}
