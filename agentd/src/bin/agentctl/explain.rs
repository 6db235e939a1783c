//! `agentctl explain SEQ`: reads one audit row (the files, as `agentctl
//! audit` does), gathers its context from the daemon when it is up (the
//! policy in force, the operator's roles, the agent's profiles) and prints
//! what `agentd::explain` says about it.
use std::path::PathBuf;

use anyhow::Context as _;

use crate::SocketArg;
use agentd::agents::AgentView;
use agentd::api::client::blocking;
use agentd::api::server::OperatorList;
use agentd::audit::{kernel_row, store, RecordKind};
use agentd::explain::{explain, Context};
use agentd::gateway::PolicyInfo;

use crate::audit::Location;

/// Arguments of `agentctl explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sequence number of the audit row (`agentctl audit tail` shows them).
    seq: u64,
    #[command(flatten)]
    loc: Location,
    /// Audit database file (default: STATE_DIR/audit.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Propose changes against this policy file instead of the one in force.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Operator roles to assume (repeat) when the daemon cannot say.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    socket: SocketArg,
}

/// Runs `agentctl explain`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let db = a.loc.db(&a.db)?;
    let conn = store::open_ro(&db).with_context(|| format!("opening {}", db.display()))?;
    let Some(row) = store::record_at(&conn, &db, a.seq)? else {
        let range = store::seq_range(&conn, &db)?
            .map(|(lo, hi)| format!("rows {lo}..={hi}"))
            .unwrap_or_else(|| "no rows".into());
        anyhow::bail!("no audit row {} in {} ({range})", a.seq, db.display());
    };
    let sock = a.socket.path();
    let mut notes = Vec::new();
    // The policy: a file named on the command line, else the daemon's.
    let (source, policy_id) = match &a.policy {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let id = agentd::policy::compile(&text, &p.display().to_string())?.id;
            (Some(text), Some(id))
        }
        None => match blocking(&sock, |mut c| async move {
            c.get::<PolicyInfo>("/v1/policy").await
        }) {
            Ok(info) => (Some(info.source), Some(info.policy_id)),
            Err(e) => {
                notes.push(format!(
                    "agentd not reachable for the policy in force ({e})"
                ));
                (None, None)
            }
        },
    };
    let operator = row.event.operator.trim_start_matches("claimed:").to_owned();
    let mut roles = a.roles.clone();
    if roles.is_empty() && !operator.is_empty() && row.event.kind == RecordKind::ToolCall {
        match blocking(&sock, |mut c| async move {
            c.get::<OperatorList>("/v1/operators").await
        }) {
            Ok(list) => {
                if let Some(o) = list.operators.into_iter().find(|o| o.id == operator) {
                    roles = o.roles;
                }
            }
            Err(e) => notes.push(format!("operator roles unknown ({e}); pass --role")),
        }
    }
    let mut profiles = None;
    let mut call_row = None;
    if row.event.kind == RecordKind::Kernel {
        let agent = kernel_row::origin(&row.event).agent;
        if !agent.is_empty() {
            let path = format!("/v1/agent-settings/{agent}");
            match blocking(
                &sock,
                |mut c| async move { c.get::<AgentView>(&path).await },
            ) {
                Ok(v) => profiles = Some(v.def.profile_names()),
                Err(e) => notes.push(format!("agent `{agent}` settings unknown ({e})")),
            }
        }
        if !row.event.call_id.is_empty() {
            call_row = store::tool_call_row(&conn, &db, &row.event.call_id, row.seq)?;
        }
    }
    let ctx = Context {
        policy_source: source.as_deref(),
        policy_id: policy_id.as_deref(),
        operator_roles: (!roles.is_empty()).then_some(roles.as_slice()),
        agent_profiles: profiles.as_deref(),
        call_row: call_row.as_ref(),
    };
    let mut e = explain(&row, &ctx);
    e.notes.extend(notes);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", e.render_text());
    }
    Ok(())
}
