//! `agentctl`: the operator's and administrator's command line.
use agentd::cli;
use clap::{Parser, Subcommand};

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
    /// Enroll, list, rotate and revoke operators.
    Operator(cli::operator::Args),
    /// Validate, load and show policy.
    Policy(cli::policy::Args),
    /// Sign and submit an operator message.
    Send(cli::send::Args),
    /// Ask for a tool-call decision.
    Check(cli::check::Args),
    /// Verify, tail, export and prune the audit log.
    Audit(cli::audit::Args),
    /// Verify a receipt PNG.
    Receipt(cli::receipt::Args),
    /// Start an agent under agentd's control.
    Run(cli::run::Args),
    /// Run a command bound to an allowed tool call.
    Exec(cli::exec::Args),
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
        Command::Operator(a) => cli::operator::run(a),
        Command::Policy(a) => cli::policy::run(a),
        Command::Send(a) => cli::send::run(a),
        Command::Check(a) => cli::check::run(a),
        Command::Audit(a) => cli::audit::run(a),
        Command::Receipt(a) => cli::receipt::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Exec(a) => cli::exec::run(a),
    }
}
