//! `agentctl session list|release`: session bindings (admin). A binding
//! lapses on its own after `gateway.session_ttl_secs` without a message from
//! its operator; release ends it at once.
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
    /// List bound sessions and their operators.
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
                "{:<32} {:<24} {:>12} {:>12}",
                "SESSION", "OPERATOR", "BOUND_AT", "LAST_SEEN"
            );
            for s in &r.sessions {
                println!(
                    "{:<32} {:<24} {:>12} {:>12}",
                    s.session, s.operator, s.bound_at, s.last_seen
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
