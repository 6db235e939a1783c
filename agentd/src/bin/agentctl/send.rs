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
use agentd::protocol::{Scope, ScopeEntry, SignedMessage};

/// Exit code when the daemon refuses the message.
pub const EXIT_REFUSED: i32 = 2;

/// Arguments of `agentctl send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    /// Operator id (claimed operator when --unsigned), or a delegation
    /// token's name (`alice/d-…`, signed with the token's secret).
    #[arg(long, conflicts_with = "token")]
    operator: Option<String>,
    /// Sign as this delegation token (`alice/d-…`) instead of an operator.
    #[arg(long, requires = "token_key_file")]
    token: Option<String>,
    /// File holding the token's secret as hex (from `agentctl delegate issue`).
    #[arg(long, conflicts_with = "key_file")]
    token_key_file: Option<PathBuf>,
    /// File holding the operator's key: hex (from `agentctl operator add
    /// --key-file`), or an Ed25519 private key, PEM (from `agentctl fleet
    /// operator add --key-file`).
    #[arg(long, required_unless_present_any = ["unsigned", "token"])]
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
    /// Sign a v2 message only this agent may use (docs/protocol.md §1.5).
    #[arg(long, value_name = "NAME", conflicts_with = "unsigned")]
    for_agent: Option<String>,
    /// Sign a v2 message only the agentd with this `gateway.host_id` accepts.
    #[arg(long, value_name = "HOST", conflicts_with = "unsigned")]
    for_host: Option<String>,
    /// Sign a v2 message whose tool calls are limited to this scope entry:
    /// `ACTION`, or `ACTION:ARG=PATTERN[:ARG=PATTERN…]` (a pattern is an
    /// exact value, or a prefix ending in `*`; a `:` followed by `NAME=`
    /// starts the next argument). Repeatable.
    #[arg(
        long,
        value_name = "ACTION[:ARG=PATTERN]…",
        conflicts_with = "unsigned"
    )]
    scope: Vec<String>,
    /// Sign a v2 message even without --for-agent, --for-host or --scope.
    #[arg(long, conflicts_with = "unsigned")]
    v2: bool,
    /// The message text.
    text: String,
}

fn build(args: &Args) -> anyhow::Result<SignedMessage> {
    if args.unsigned {
        return Ok(SignedMessage::unsigned(
            args.operator.clone(),
            &args.session,
            &args.text,
        ));
    }
    let operator = args
        .token
        .as_deref()
        .or(args.operator.as_deref())
        .context("--operator (or --token) is required for a signed message")?;
    let key_file = args
        .token_key_file
        .as_ref()
        .or(args.key_file.as_ref())
        .context("--key-file (or --token-key-file) is required for a signed message")?;
    // An Ed25519 private key (PEM, from `agentctl fleet operator add`)
    // signs the same canonical bytes; an HMAC key is hex.
    let ed25519 = read_ed25519_key(key_file)?;
    let key = match ed25519 {
        Some(_) => Vec::new(),
        None => read_key(key_file)?,
    };
    let nonce = args.nonce.clone().unwrap_or_else(random_nonce);
    let ts = args.timestamp.unwrap_or_else(unix_now);
    let v1 = SignedMessage::new_signed(&key, operator, &args.session, &nonce, ts, &args.text);
    if !(args.v2 || args.for_agent.is_some() || args.for_host.is_some() || !args.scope.is_empty()) {
        return Ok(signed_by(v1, ed25519.as_ref()));
    }
    let scope = if args.scope.is_empty() {
        None
    } else {
        let entries = args
            .scope
            .iter()
            .map(|s| parse_scope_entry(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Some(Scope { entries })
    };
    let msg = SignedMessage::new_signed_v2(
        &key,
        &v1,
        args.for_agent.clone(),
        args.for_host.clone(),
        scope,
    );
    let msg = signed_by(msg, ed25519.as_ref());
    // Refuse here what the daemon would refuse, with the same words.
    msg.check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.reason_code()))?;
    Ok(msg)
}

/// `msg` re-signed with `key` when the operator signs with Ed25519.
fn signed_by(mut msg: SignedMessage, key: Option<&ed25519_dalek::SigningKey>) -> SignedMessage {
    if let Some(k) = key {
        msg.sign_ed25519(k);
    }
    msg
}

/// The Ed25519 private key in a PKCS#8 PEM key file; None if the file is
/// not PEM (then it is a hex HMAC key).
pub(crate) fn read_ed25519_key(
    path: &std::path::Path,
) -> anyhow::Result<Option<ed25519_dalek::SigningKey>> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    if !text.trim_start().starts_with("-----BEGIN") {
        return Ok(None);
    }
    ed25519_dalek::SigningKey::from_pkcs8_pem(text.trim())
        .map(Some)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: not an Ed25519 private key (PKCS#8 PEM): {e}",
                path.display()
            )
        })
}

/// Parses `ACTION` or `ACTION:ARG=PATTERN[:ARG=PATTERN…]`. A `:` starts
/// the next argument only when `NAME=` follows it, so patterns may hold
/// colons (`session=slack:C1`).
fn parse_scope_entry(spec: &str) -> anyhow::Result<ScopeEntry> {
    let (action, rest) = match spec.split_once(':') {
        Some((a, r)) => (a, Some(r)),
        None => (spec, None),
    };
    let mut args = std::collections::BTreeMap::new();
    if let Some(rest) = rest {
        for part in split_args(rest) {
            let (name, pattern) = part
                .split_once('=')
                .with_context(|| format!("--scope {spec}: `{part}` is not ARG=PATTERN"))?;
            if args.insert(name.to_owned(), pattern.to_owned()).is_some() {
                anyhow::bail!("--scope {spec}: argument `{name}` is given twice");
            }
        }
    }
    Ok(ScopeEntry {
        action: action.to_owned(),
        args,
    })
}

/// Splits `a=1:b=x:y:c=2` into `a=1`, `b=x:y`, `c=2`.
fn split_args(rest: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in rest.match_indices(':') {
        let next = &rest[i + 1..];
        let name_len = next
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if name_len > 0 && next.as_bytes().get(name_len) == Some(&b'=') {
            parts.push(&rest[start..i]);
            start = i + 1;
        }
    }
    parts.push(&rest[start..]);
    parts
}

/// Reads a hex key file (an operator's key or a token's secret).
pub(crate) fn read_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let key_hex = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    hex::decode(key_hex.trim())
        .with_context(|| format!("{} does not hold a hex key", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_entries_parse_with_colons_in_patterns() {
        let e = parse_scope_entry("read_chart:path=/srv/charts/patient-7*").unwrap();
        assert_eq!(e.action, "read_chart");
        assert_eq!(e.args["path"], "/srv/charts/patient-7*");
        let e = parse_scope_entry("post:channel=slack:C1:text=hi: there*").unwrap();
        assert_eq!(e.args["channel"], "slack:C1");
        assert_eq!(e.args["text"], "hi: there*");
        let e = parse_scope_entry("list_files").unwrap();
        assert!(e.args.is_empty());
        assert!(parse_scope_entry("a:nonsense").is_err());
        assert!(parse_scope_entry("a:p=1:p=2").is_err());
    }
}
