//! `agentctl delegate issue|list|revoke`: sub-tokens for part of an
//! operator's (or a token's) permissions, signed by the issuer's key; the
//! daemon answers the token's name and secret, shown once.
use std::path::PathBuf;

use anyhow::{bail, Context};
use hyper::Method;

use crate::send::read_key;
use crate::SocketArg;
use agentd::api::client::{blocking, ClientError};
use agentd::api::delegation_routes::DelegationList;
use agentd::gateway::delegation::{DelegationInfo, Issued, Revoked};
use agentd::gateway::unix_now;
use agentd::protocol::delegation::{IssueRequest, RevokeRequest, ScopeMap};
use agentd::protocol::message::random_nonce;

/// Exit code when the daemon refuses.
const EXIT_REFUSED: i32 = 2;

/// Arguments of `agentctl delegate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    #[command(subcommand)]
    command: Command,
}

/// Who signs: an operator with its key, or a token with its secret.
#[derive(Debug, Clone, clap::Args)]
struct Signer {
    /// The issuing (or revoking) operator.
    #[arg(long)]
    operator: Option<String>,
    /// The operator's key file (hex).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Sign as this token (`alice/d-…`): a sub-token under it, or a
    /// revocation by it.
    #[arg(long = "parent", visible_alias = "token")]
    token: Option<String>,
    /// The token's secret file (hex).
    #[arg(long)]
    token_key_file: Option<PathBuf>,
}

impl Signer {
    /// (signer name, key).
    fn resolve(&self) -> anyhow::Result<(String, Vec<u8>)> {
        match (
            &self.operator,
            &self.key_file,
            &self.token,
            &self.token_key_file,
        ) {
            (_, _, Some(t), Some(f)) => Ok((t.clone(), read_key(f)?)),
            (Some(o), Some(k), None, None) => Ok((o.clone(), read_key(k)?)),
            (_, _, Some(_), None) => bail!("--parent/--token needs --token-key-file"),
            _ => {
                bail!("sign with --operator ID --key-file K, or --parent TOKEN --token-key-file F")
            }
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Issue a sub-token (signed by the operator, or by a parent token).
    Issue {
        #[command(flatten)]
        signer: Signer,
        /// Who receives it (never the issuer nor anyone up its chain).
        #[arg(long)]
        to: String,
        /// Actions it may use, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        actions: Vec<String>,
        /// An argument pattern ACTION:NAME=VALUE (exact, or a prefix ending in `*`); repeatable.
        #[arg(long = "arg")]
        args: Vec<String>,
        /// Lifetime: seconds, or a number with s, m, h or d (1 s to 7 d).
        #[arg(long)]
        ttl: String,
        /// Tool calls it allows.
        #[arg(long)]
        uses: u32,
        /// Write the secret (hex) to this new file (0600) instead of printing it.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (admin; never secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token and every token below it (admin, or signed by the
    /// token or a link up its chain).
    Revoke {
        /// The token (`alice/d-…`).
        id: String,
        #[command(flatten)]
        signer: Signer,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parses `90`, `30s`, `10m`, `2h`, `7d` into seconds.
pub(crate) fn parse_ttl(s: &str) -> anyhow::Result<i64> {
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: i64 = num
        .parse()
        .with_context(|| format!("--ttl {s:?}: not a number"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        other => bail!("--ttl {s:?}: unknown unit `{other}` (s, m, h, d)"),
    };
    n.checked_mul(mult).context("--ttl is too large")
}

/// Builds the scope from `--actions` and `--arg ACTION:NAME=VALUE`.
fn scope_of(actions: &[String], args: &[String]) -> anyhow::Result<ScopeMap> {
    let mut scope: ScopeMap = actions
        .iter()
        .map(|a| (a.clone(), Default::default()))
        .collect();
    for a in args {
        let (action, rest) = a
            .split_once(':')
            .with_context(|| format!("--arg {a:?}: expected ACTION:NAME=VALUE"))?;
        let (name, value) = rest
            .split_once('=')
            .with_context(|| format!("--arg {a:?}: expected ACTION:NAME=VALUE"))?;
        let Some(patterns) = scope.get_mut(action) else {
            bail!("--arg {a:?}: `{action}` is not among --actions");
        };
        patterns.insert(name.to_owned(), value.to_owned());
    }
    Ok(scope)
}

/// Prints a refusal and exits 2, or passes other errors on.
fn refused<T>(e: ClientError) -> anyhow::Result<T> {
    if let ClientError::Api {
        reason_code,
        message,
        ..
    } = &e
    {
        eprintln!("refused: {reason_code}: {message}");
        std::process::exit(EXIT_REFUSED);
    }
    Err(e.into())
}

fn print_list(list: &[DelegationInfo]) {
    if list.is_empty() {
        println!("no delegations");
    }
    for d in list {
        let state = if d.revoked {
            "revoked"
        } else if d.expires_at <= unix_now() {
            "expired"
        } else {
            "active"
        };
        let actions: Vec<&str> = d.scope.keys().map(String::as_str).collect();
        println!(
            "{} to={} depth={} uses={}/{} expires_at={} {state} actions={}",
            d.id,
            d.to,
            d.depth,
            d.uses_left,
            d.uses,
            d.expires_at,
            actions.join(",")
        );
    }
}

/// Runs `agentctl delegate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let socket = args.socket.path();
    match args.command {
        Command::Issue {
            signer,
            to,
            actions,
            args: patterns,
            ttl,
            uses,
            secret_file,
            json,
        } => {
            let (issuer, key) = signer.resolve()?;
            let req = IssueRequest::new_signed(
                &key,
                &issuer,
                &to,
                scope_of(&actions, &patterns)?,
                parse_ttl(&ttl)?,
                uses,
                &random_nonce(),
                unix_now(),
            );
            let issued: Issued = match blocking(&socket, |mut c| async move {
                c.call(Method::POST, "/v1/delegations", Some(&req)).await
            }) {
                Ok(i) => i,
                Err(e) => return refused(e),
            };
            if let Some(f) = &secret_file {
                crate::operator::write_key_file(f, &issued.secret)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&issued)?);
            } else {
                println!("{}", issued.delegation.id);
                if secret_file.is_none() {
                    println!("{}", issued.secret);
                }
            }
            Ok(())
        }
        Command::List { json } => {
            let list: DelegationList =
                match blocking(
                    &socket,
                    |mut c| async move { c.get("/v1/delegations").await },
                ) {
                    Ok(l) => l,
                    Err(e) => return refused(e),
                };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_list(&list.delegations);
            }
            Ok(())
        }
        Command::Revoke { id, signer, json } => {
            let unsigned = signer.operator.is_none() && signer.token.is_none();
            let req = if unsigned {
                RevokeRequest {
                    v: 1,
                    id,
                    by: None,
                    nonce: None,
                    timestamp: None,
                    signature: None,
                }
            } else {
                let (by, key) = signer.resolve()?;
                RevokeRequest::new_signed(&key, &by, &id, &random_nonce(), unix_now())
            };
            let done: Revoked = match blocking(&socket, |mut c| async move {
                c.call(Method::POST, "/v1/delegations/revoke", Some(&req))
                    .await
            }) {
                Ok(d) => d,
                Err(e) => return refused(e),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!(
                    "revoked {} tokens={} grants_revoked={}",
                    done.id,
                    done.tokens.len(),
                    done.grants_revoked
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("10m").unwrap(), 600);
        assert_eq!(parse_ttl("2h").unwrap(), 7200);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        assert!(parse_ttl("5y").is_err());
        assert!(parse_ttl("m").is_err());
    }

    #[test]
    fn scope_from_flags() {
        let s = scope_of(
            &["read_chart".into(), "send_email".into()],
            &["read_chart:path=/srv/charts/*".into()],
        )
        .unwrap();
        assert_eq!(s["read_chart"]["path"], "/srv/charts/*");
        assert!(s["send_email"].is_empty());
        assert!(scope_of(&["a".into()], &["b:x=1".into()]).is_err());
        assert!(scope_of(&["a".into()], &["a:x".into()]).is_err());
    }
}
