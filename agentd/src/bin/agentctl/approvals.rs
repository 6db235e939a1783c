//! `agentctl approvals list|approve|deny`: the calls waiting for a human
//! (admin). An answer here is recorded as this admin's approval (`uid:N`,
//! channel `api`), not as an operator's signature.
use hyper::Method;

use crate::SocketArg;
use agentd::api::approval_routes::{ApprovalAnswer, ApprovalDone, ApprovalList};
use agentd::api::client::blocking;

/// Arguments of `agentctl approvals`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List the calls waiting for approval.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a waiting call: it proceeds like an allowed call.
    Approve {
        /// Approval id (the call id).
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a waiting call (`approval_denied`).
    Deny {
        /// Approval id (the call id).
        id: String,
        /// Why (recorded in the audit log, and told to the caller).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Runs `agentctl approvals`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let socket = args.socket.path();
    let (id, reason, verb) = match args.command {
        Command::List { json } => return list(&socket, json),
        Command::Approve { id, reason } => (id, reason, "approve"),
        Command::Deny { id, reason } => (id, reason, "deny"),
    };
    let path = format!("/v1/approvals/{id}/{verb}");
    let r: ApprovalDone = blocking(&socket, |mut c| async move {
        c.call(Method::POST, &path, Some(&ApprovalAnswer { reason }))
            .await
    })?;
    println!(
        "{} {} ({} by {} in {})",
        r.outcome, r.approval.id, r.approval.action, r.approval.operator, r.approval.session
    );
    Ok(())
}

fn list(socket: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let r: ApprovalList = blocking(socket, |mut c| async move { c.get("/v1/approvals").await })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<16} {:<20} {:<16} {:>6}  ARGUMENTS",
        "ID", "OPERATOR", "ACTION", "AGENT", "LEFT_S"
    );
    let now = agentd::gateway::unix_now();
    for a in &r.approvals {
        println!(
            "{:<32} {:<16} {:<20} {:<16} {:>6}  {}",
            a.id,
            a.operator,
            a.action,
            if a.agent.is_empty() { "-" } else { &a.agent },
            (a.deadline - now).max(0),
            serde_json::to_string(&a.arguments).unwrap_or_default()
        );
        // What approving it also does, beyond this one call.
        if let Some(e) = &a.elevation {
            println!(
                "{:<32} elevation: approving lets {} ({}) proceed in session {} for {} s",
                "",
                e.actions.join(", "),
                e.effect,
                a.session,
                e.secs
            );
        }
        if let Some(figures) = &a.anomaly {
            println!(
                "{:<32} anomaly: the session tripped ({figures}); approving resets its counts",
                ""
            );
        }
    }
    Ok(())
}
