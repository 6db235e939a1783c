//! `agentctl suspend` and `agentctl resume`: the kill switch. A suspension
//! of an operator, an agent or everything refuses new messages and tool
//! calls in its scope, ends the kernel grants already installed there and,
//! with `--stop`, kills the agents' processes; it lasts until resumed
//! (across daemon restarts).
use hyper::Method;

use crate::SocketArg;
use agentd::api::client::blocking;
use agentd::api::suspend_routes::{ResumeAnswer, ResumeRequest, SuspendRequest, SuspensionList};
use agentd::gateway::{SuspendOutcome, Suspension};

/// Arguments of `agentctl suspend`.
#[derive(Debug, clap::Args)]
pub struct SuspendArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Also kill the processes of the agents in scope (for an operator:
    /// the agents holding its messages).
    #[arg(long, global = true)]
    stop: bool,
    /// Why (kept with the suspension and in the audit log).
    #[arg(long, global = true, default_value = "")]
    reason: String,
    #[command(subcommand)]
    scope: SuspendScope,
}

#[derive(Debug, clap::Subcommand)]
enum SuspendScope {
    /// Suspend one operator: its messages and the calls on them.
    Operator {
        /// Operator id.
        name: String,
    },
    /// Suspend one agent: its tool calls and messages addressed to it.
    Agent {
        /// Agent name.
        name: String,
    },
    /// Suspend everything: every message and every tool call.
    All,
    /// List the suspensions in force.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `agentctl resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    socket: SocketArg,
    #[command(subcommand)]
    scope: ResumeScope,
}

#[derive(Debug, clap::Subcommand)]
enum ResumeScope {
    /// Lift an operator's suspension.
    Operator {
        /// Operator id.
        name: String,
    },
    /// Lift an agent's suspension.
    Agent {
        /// Agent name.
        name: String,
    },
    /// Lift the suspension of everything (operators' and agents' own stay).
    All,
}

fn scope_text(s: &Suspension) -> String {
    match &s.name {
        Some(n) => format!("{} {n}", s.scope),
        None => s.scope.clone(),
    }
}

fn print_list(list: &[Suspension]) {
    if list.is_empty() {
        println!("no suspensions");
        return;
    }
    println!(
        "{:<28} {:<10} {:<5} {:<12} REASON",
        "SCOPE", "BY", "STOP", "SINCE"
    );
    for s in list {
        println!(
            "{:<28} {:<10} {:<5} {:<12} {}",
            scope_text(s),
            s.by,
            s.stop,
            s.since,
            s.reason
        );
    }
}

/// Runs `agentctl suspend`.
pub fn run_suspend(args: SuspendArgs) -> anyhow::Result<()> {
    let socket = args.socket.path();
    let (scope, name) = match args.scope {
        SuspendScope::Operator { name } => ("operator", Some(name)),
        SuspendScope::Agent { name } => ("agent", Some(name)),
        SuspendScope::All => ("all", None),
        SuspendScope::List { json } => {
            let r: SuspensionList =
                blocking(
                    &socket,
                    |mut c| async move { c.get("/v1/suspensions").await },
                )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_list(&r.suspensions);
            }
            return Ok(());
        }
    };
    let req = SuspendRequest {
        scope: scope.into(),
        name,
        reason: args.reason,
        stop: args.stop,
    };
    let r: SuspendOutcome = blocking(&socket, |mut c| async move {
        c.call(Method::POST, "/v1/suspensions", Some(&req)).await
    })?;
    println!(
        "suspended {}: {} grant(s) revoked, {} process(es) stopped",
        scope_text(&r.suspension),
        r.grants_revoked,
        r.processes_stopped
    );
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// Runs `agentctl resume`.
pub fn run_resume(args: ResumeArgs) -> anyhow::Result<()> {
    let socket = args.socket.path();
    let (scope, name) = match args.scope {
        ResumeScope::Operator { name } => ("operator", Some(name)),
        ResumeScope::Agent { name } => ("agent", Some(name)),
        ResumeScope::All => ("all", None),
    };
    let req = ResumeRequest {
        scope: scope.into(),
        name,
    };
    let r: ResumeAnswer = blocking(&socket, |mut c| async move {
        c.call(Method::POST, "/v1/suspensions/resume", Some(&req))
            .await
    })?;
    println!("resumed {}", scope_text(&r.resumed));
    Ok(())
}
