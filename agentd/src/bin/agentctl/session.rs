//! `agentctl session list|release`: session bindings (admin), with each
//! session's mode, elevations and anomaly state. A binding lapses on its
//! own after `gateway.session_ttl_secs` without a message from its
//! operator; release ends it at once (and its elevations and counts).
use hyper::Method;

use crate::SocketArg;
use agentd::api::client::blocking;
use agentd::api::server::{SessionList, SessionRelease};

/// Arguments of `agentctl session`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List bound sessions: operator, mode (full or read_only), elevations
    /// in force and anomaly state.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release a session's binding: the next verified message binds it again,
    /// and the old binding's messages lose their tool rights at once.
    Release {
        /// Session id.
        session: String,
    },
}

/// A session's elevations and anomaly state in a few words
/// (`elevated deploy until 1764680300 by uid:0; anomaly denials=3/7 …`).
fn state_text(s: &agentd::gateway::session_state::SessionView) -> String {
    let mut parts: Vec<String> = s
        .elevations
        .iter()
        .map(|e| format!("elevated {} until {} by {}", e.action, e.until, e.approver))
        .collect();
    if let Some(a) = &s.anomaly {
        parts.push(format!("anomaly {a}"));
    } else if s.calls > 0 {
        parts.push(format!(
            "calls={} denials={} writes={}",
            s.calls, s.denials, s.writes
        ));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

/// Runs `agentctl session`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let socket = args.socket.path();
    match args.command {
        Command::List { json } => {
            let r: SessionList =
                blocking(&socket, |mut c| async move { c.get("/v1/sessions").await })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!(
                "{:<32} {:<24} {:>12} {:>12} {:<9} STATE",
                "SESSION", "OPERATOR", "BOUND_AT", "LAST_SEEN", "MODE"
            );
            for s in &r.sessions {
                println!(
                    "{:<32} {:<24} {:>12} {:>12} {:<9} {}",
                    s.session,
                    s.operator,
                    s.bound_at,
                    s.last_seen,
                    s.mode,
                    state_text(&s.state)
                );
            }
            Ok(())
        }
        Command::Release { session } => {
            let r: SessionRelease = blocking(&socket, |mut c| async move {
                c.call(
                    Method::POST,
                    "/v1/sessions/release",
                    Some(&SessionRelease {
                        session,
                        operator: None,
                    }),
                )
                .await
            })?;
            println!(
                "session {} released (was bound to {})",
                r.session,
                r.operator.unwrap_or_default()
            );
            Ok(())
        }
    }
}
