//! `agentctl approvals list|approve|deny`: the calls waiting for a human
//! (admin). An answer here is recorded as this admin's approval (`uid:N`,
//! channel `api`), not as an operator's signature — unless `--operator`
//! and `--key-file` sign it with an owner's key (the only approval that
//! lets a call write a protected file).
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hyper::Method;

use crate::SocketArg;
use agentd::api::approval_routes::{ApprovalAnswer, ApprovalDone, ApprovalList};
use agentd::api::client::blocking;
use agentd::policy::approval::Answer;
use agentd::policy::owner_approval::{self, OwnerSignature};

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
        #[command(flatten)]
        owner: OwnerArgs,
    },
    /// Deny a waiting call (`approval_denied`).
    Deny {
        /// Approval id (the call id).
        id: String,
        /// Why (recorded in the audit log, and told to the caller).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        owner: OwnerArgs,
    },
}

/// Signing the answer with an owner operator's key.
#[derive(Debug, clap::Args)]
struct OwnerArgs {
    /// The owner operator who signs the answer (needs `--key-file`).
    #[arg(long, requires = "key_file")]
    operator: Option<String>,
    /// That operator's key file (hex, as `operator add --key-file` wrote it).
    #[arg(long, requires = "operator")]
    key_file: Option<PathBuf>,
}

/// Signs the answer when `--operator` and `--key-file` are given.
fn owner_signature(
    owner: &OwnerArgs,
    id: &str,
    answer: Answer,
) -> anyhow::Result<Option<OwnerSignature>> {
    let (Some(op), Some(file)) = (&owner.operator, &owner.key_file) else {
        return Ok(None);
    };
    let key = read_hex_key(file)?;
    let nonce = agentd::protocol::message::random_nonce();
    Ok(Some(owner_approval::sign(
        &key,
        op,
        id,
        answer,
        agentd::gateway::unix_now(),
        &nonce,
    )))
}

fn read_hex_key(file: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading key file {}", file.display()))?;
    hex::decode(text.trim()).with_context(|| format!("{} does not hold a hex key", file.display()))
}

/// Runs `agentctl approvals`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let socket = args.socket.path();
    let (id, reason, owner, answer) = match args.command {
        Command::List { json } => return list(&socket, json),
        Command::Approve { id, reason, owner } => (id, reason, owner, Answer::Approve),
        Command::Deny { id, reason, owner } => (id, reason, owner, Answer::Deny),
    };
    let signed = owner_signature(&owner, &id, answer)?;
    let path = format!(
        "/v1/approvals/{id}/{}",
        owner_approval::decision_word(answer)
    );
    let r: ApprovalDone = blocking(&socket, |mut c| async move {
        c.call(
            Method::POST,
            &path,
            Some(&ApprovalAnswer { reason, signed }),
        )
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
