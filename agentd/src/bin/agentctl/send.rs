//! `agentctl send`: sign a message with the operator's key and submit it;
//! prints the active-message id the agent must echo.
use std::path::PathBuf;

use anyhow::Context;

use hyper::Method;

use crate::SocketArg;
use agentd::agents::InboxEntry;
use agentd::api::client::{blocking, ClientError};
use agentd::gateway::{unix_now, Trust};
use agentd::protocol::message::random_nonce;
use agentd::protocol::SignedMessage;

/// Exit code when the daemon refuses the message.
pub const EXIT_REFUSED: i32 = 2;

/// Arguments of `agentctl send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    /// Operator id (claimed operator when --unsigned).
    #[arg(long)]
    operator: Option<String>,
    /// File holding the operator's key as hex (from `agentctl operator add --key-file`).
    #[arg(long, required_unless_present = "unsigned")]
    key_file: Option<PathBuf>,
    /// Session (chat thread, DM, call) id.
    #[arg(long)]
    session: String,
    /// Send without a signature (as a stranger's message would arrive).
    #[arg(long, conflicts_with = "key_file")]
    unsigned: bool,
    /// Use this nonce instead of a random one (to demonstrate replay refusal).
    #[arg(long)]
    nonce: Option<String>,
    /// Use this Unix timestamp instead of now (to demonstrate the window).
    #[arg(long, allow_hyphen_values = true)]
    timestamp: Option<i64>,
    /// Print the message JSON instead of sending it.
    #[arg(long)]
    print_only: bool,
    /// Print the daemon's JSON answer.
    #[arg(long)]
    json: bool,
    /// Queue the message in this agent's inbox (its driver runs it)
    /// instead of only handing back an active-message id.
    #[arg(long)]
    agent: Option<String>,
    /// The message text.
    text: String,
}

fn build(args: &Args) -> anyhow::Result<SignedMessage> {
    if args.unsigned {
        return Ok(SignedMessage {
            v: 1,
            operator: args.operator.clone(),
            session: args.session.clone(),
            nonce: None,
            timestamp: None,
            body: args.text.clone(),
            signature: None,
        });
    }
    let operator = args
        .operator
        .as_deref()
        .context("--operator is required for a signed message")?;
    let key_file = args
        .key_file
        .as_ref()
        .context("--key-file is required for a signed message")?;
    let key_hex = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading key file {}", key_file.display()))?;
    let key = hex::decode(key_hex.trim())
        .with_context(|| format!("{} does not hold a hex key", key_file.display()))?;
    let nonce = args.nonce.clone().unwrap_or_else(random_nonce);
    let ts = args.timestamp.unwrap_or_else(unix_now);
    Ok(SignedMessage::new_signed(
        &key,
        operator,
        &args.session,
        &nonce,
        ts,
        &args.text,
    ))
}

/// Runs `agentctl send`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let msg = build(&args)?;
    if args.print_only {
        println!("{}", serde_json::to_string(&msg)?);
        return Ok(());
    }
    if let Some(agent) = &args.agent {
        return send_to_inbox(&args, agent, &msg);
    }
    match blocking(&args.socket.path(), |mut c| async move {
        c.submit_message(&msg).await
    }) {
        Ok(out) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{}", out.active_message_id);
            }
            if out.trust == Trust::Untrusted {
                eprintln!(
                    "message delivered UNTRUSTED ({}): its tool calls will be denied",
                    out.reason_code
                );
            }
            Ok(())
        }
        Err(ClientError::Api {
            status,
            reason_code,
            message,
        }) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"refused": true, "status": status, "reason_code": reason_code, "message": message})
                );
            }
            eprintln!("message refused: {reason_code}: {message}");
            std::process::exit(EXIT_REFUSED);
        }
        Err(e) => Err(e.into()),
    }
}

fn send_to_inbox(args: &Args, agent: &str, msg: &SignedMessage) -> anyhow::Result<()> {
    let path = format!("/v1/inbox/{agent}");
    match blocking(&args.socket.path(), |mut c| async move {
        c.call::<_, InboxEntry>(Method::POST, &path, Some(msg))
            .await
    }) {
        Ok(e) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                println!("{} {}", e.id, e.active_message_id);
            }
            if e.trust != "verified" {
                eprintln!("message queued UNTRUSTED: its tool calls will be denied");
            }
            Ok(())
        }
        Err(ClientError::Api {
            reason_code,
            message,
            ..
        }) => {
            eprintln!("message refused: {reason_code}: {message}");
            std::process::exit(EXIT_REFUSED);
        }
        Err(e) => Err(e.into()),
    }
}
