//! `agentctl check --message ID ACTION [ARGS]`: ask for a tool-call decision.
//! ARGS are `name=value` (a string) or `name:=json` (any JSON value).
use anyhow::{bail, Context};
use serde_json::{Map, Value};

use crate::SocketArg;
use agentd::api::client::blocking;
use agentd::gateway::ToolCallRequest;

/// Exit code for a denial.
pub const EXIT_DENIED: i32 = 2;

/// Arguments of `agentctl check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    /// Active-message id the call acts on behalf of.
    #[arg(long = "message")]
    message: String,
    /// Print the whole decision as JSON.
    #[arg(long)]
    json: bool,
    /// Action name, e.g. read_chart.
    action: String,
    /// Arguments: name=value (string) or name:=json.
    args: Vec<String>,
}

/// Parses `name=value` / `name:=json` pairs.
pub fn parse_args(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for p in pairs {
        // The first `=` splits; `name:=json` when the name ends in `:`.
        let Some((n, v)) = p.split_once('=') else {
            bail!("argument `{p}` must be name=value or name:=json");
        };
        let (name, value) = match n.strip_suffix(':') {
            Some(n) => (
                n,
                serde_json::from_str(v)
                    .with_context(|| format!("`{p}`: the value after := must be JSON"))?,
            ),
            None => (n, Value::String(v.to_owned())),
        };
        if name.is_empty() {
            bail!("argument `{p}` has an empty name");
        }
        if map.insert(name.to_owned(), value).is_some() {
            bail!("argument `{name}` given twice");
        }
    }
    Ok(map)
}

/// Runs `agentctl check`. Exit code 0 = allow, 2 = deny.
pub fn run(args: Args) -> anyhow::Result<()> {
    let req = ToolCallRequest {
        active_message_id: args.message.clone(),
        action: args.action.clone(),
        tool_use_id: None,
        arguments: parse_args(&args.args)?,
    };
    let d = blocking(&args.socket.path(), |mut c| async move {
        c.tool_call(&req).await
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        println!(
            "{} {} policy={} call={} latency_us={}{}",
            d.decision,
            d.reason_code,
            d.policy_id,
            d.call_id,
            d.latency_us,
            if d.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", d.detail)
            }
        );
    }
    if !d.is_allow() {
        std::process::exit(EXIT_DENIED);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strings_and_json() {
        let m = parse_args(&[
            "path=/a=b".into(),
            "limit:=5".into(),
            "to:=[\"a@b.c\"]".into(),
            "cmd=x:=y".into(),
        ])
        .unwrap();
        assert_eq!(m["path"], "/a=b");
        assert_eq!(m["limit"], 5);
        assert_eq!(m["to"][0], "a@b.c");
        assert_eq!(m["cmd"], "x:=y");
        assert!(parse_args(&["=x".into()]).is_err());
        assert!(parse_args(&["novalue".into()]).is_err());
        assert!(parse_args(&["a=1".into(), "a=2".into()]).is_err());
    }
}
