//! `agentctl`: the operator's and administrator's command line. One module
//! per subcommand; this file only dispatches. It is its own module tree, so
//! the root daemon does not link it.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod agent;
mod approvals;
mod audit;
mod audit_fleet;
mod check;
mod console;
mod delegate;
mod exec;
mod explain;
mod fleet;
mod hook;
mod interop;
mod mcp;
mod operator;
mod policy;
mod receipt;
mod run;
mod send;
mod session;
mod suspend;

#[derive(Parser)]
#[command(
    name = "agentctl",
    version,
    about = "Control agentd: operators, messages, policy, audit, agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open Agent Passport: signing keys, decisions exported from the audit
    /// log, and their verification.
    Oap(interop::OapArgs),
    /// Enroll, list, rotate and revoke operators.
    Operator(operator::Args),
    /// Validate, load and show policy.
    Policy(policy::Args),
    /// Sign and submit an operator message.
    Send(send::Args),
    /// List and release session bindings.
    Session(session::Args),
    /// Ask for a tool-call decision.
    Check(check::Args),
    /// List, approve and deny tool calls waiting for a human.
    Approvals(approvals::Args),
    /// Verify, tail, export and prune the audit log.
    Audit(audit::Args),
    /// A one-time login link to the web console (or a confirmation token).
    Console(console::Args),
    /// Say why an audit row was denied (or allowed) and what would allow it.
    Explain(explain::Args),
    /// Verify a receipt PNG.
    Receipt(receipt::Args),
    /// Start an agent under agentd's control.
    Run(run::Args),
    /// Run a command bound to an allowed tool call.
    Exec(exec::Args),
    /// Configure agents, read their inboxes, drive their runtime.
    Agent(agent::Args),
    /// A runtime's pre-tool hook (claude-code, codex, gemini, cursor), and its installer.
    Hook(hook::Args),
    /// MCP through agentd: `mcp proxy` stands in for an MCP server's command.
    Mcp(mcp::Args),
    /// The kill switch: suspend an operator, an agent or everything.
    Suspend(suspend::SuspendArgs),
    /// Lift a suspension.
    Resume(suspend::ResumeArgs),
    /// Issue, list and revoke delegation sub-tokens.
    Delegate(delegate::Args),
    /// Fleet mode: central operators, policy and suspensions in PostgreSQL.
    Fleet(fleet::Args),
}

/// Where `agentctl` finds the daemon: `--socket`, else `$AGENTD_SOCKET`,
/// else the default from agentd.toml's defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SocketArg {
    /// Unix socket of the agentd API.
    #[arg(long, env = "AGENTD_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    /// The socket path to use.
    pub fn path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| agentd::config::Config::default().socket_path)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTCTL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Oap(a) => interop::run_oap(a),
        Command::Operator(a) => operator::run(a),
        Command::Policy(a) => policy::run(a),
        Command::Send(a) => send::run(a),
        Command::Session(a) => session::run(a),
        Command::Check(a) => check::run(a),
        Command::Approvals(a) => approvals::run(a),
        Command::Audit(a) => audit::run(a),
        Command::Console(a) => console::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Receipt(a) => receipt::run(a),
        Command::Run(a) => run::run(a),
        Command::Exec(a) => exec::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Hook(a) => hook::run(a),
        Command::Mcp(a) => mcp::run(a),
        Command::Suspend(a) => suspend::run_suspend(a),
        Command::Resume(a) => suspend::run_resume(a),
        Command::Delegate(a) => delegate::run(a),
        Command::Fleet(a) => fleet::run(a),
    }
}
