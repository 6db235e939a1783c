//! `agentctl operator add|list|rotate|revoke`: enrolment on the daemon, which
//! generates the key and shows it exactly once.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hyper::Method;

use crate::SocketArg;
use agentd::api::client::blocking;
use agentd::api::server::{AddOperator, OperatorList, OperatorWithKey};
use agentd::gateway::OperatorInfo;

/// Arguments of `agentctl operator`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Enroll an operator; agentd generates the key and shows it once.
    Add {
        /// Operator id ([A-Za-z0-9._-], up to 64).
        id: String,
        /// Role (repeatable); must exist in the loaded policy.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Write the key (hex) to this new file (0600) instead of printing it.
        #[arg(long, conflicts_with = "import_key")]
        key_file: Option<PathBuf>,
        /// Enrol with the key in this file (hex, as `--key-file` wrote it on
        /// another host of the fleet) instead of a fresh one.
        #[arg(long)]
        import_key: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List operators (never keys).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace an operator's key; outstanding active messages lose their tool rights.
    Rotate {
        /// Operator id.
        id: String,
        /// Write the new key (hex) to this new file (0600) instead of printing it.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an operator.
    Revoke {
        /// Operator id.
        id: String,
    },
}

pub(crate) fn write_key_file(path: &Path, key_hex: &str) -> anyhow::Result<()> {
    write_private_file(path, format!("{key_hex}\n").as_bytes())
}

/// Creates `path` (refusing one that exists) with mode 0600 and writes
/// `contents`: where agentctl puts a new secret key.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating key file {} (it must not exist yet)",
                path.display()
            )
        })?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn show_key(
    r: &OperatorWithKey,
    key_file: Option<&Path>,
    json: bool,
    verb: &str,
) -> anyhow::Result<()> {
    if let Some(path) = key_file {
        write_key_file(path, &r.key)?;
    }
    if json {
        let mut v = serde_json::to_value(r)?;
        if key_file.is_some() {
            v["key"] = serde_json::Value::Null;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "operator {} {verb} (roles: {}, key generation {})",
        r.operator.id,
        r.operator.roles.join(", "),
        r.operator.key_gen
    );
    match key_file {
        Some(p) => println!("key written to {}", p.display()),
        None => println!("key: {}\n(shown once; store it now)", r.key),
    }
    Ok(())
}

fn print_list(ops: &[OperatorInfo]) {
    println!(
        "{:<24} {:<28} {:>7} {:<8} {:<8}",
        "OPERATOR", "ROLES", "KEY_GEN", "KEY", "STATUS"
    );
    for o in ops {
        println!(
            "{:<24} {:<28} {:>7} {:<8} {:<8}",
            o.id,
            o.roles.join(","),
            o.key_gen,
            o.key_kind.as_str(),
            if o.revoked { "revoked" } else { "active" }
        );
    }
}

/// Runs `agentctl operator`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let socket = args.socket.path();
    match args.command {
        Command::Add {
            id,
            roles,
            key_file,
            import_key,
            json,
        } => {
            let key = match &import_key {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            let r: OperatorWithKey = blocking(&socket, |mut c| async move {
                c.call(
                    Method::POST,
                    "/v1/operators",
                    Some(&AddOperator { id, roles, key }),
                )
                .await
            })?;
            if import_key.is_some() {
                println!(
                    "operator {} enrolled with the imported key (roles: {})",
                    r.operator.id,
                    r.operator.roles.join(", ")
                );
                return Ok(());
            }
            show_key(&r, key_file.as_deref(), json, "enrolled")
        }
        Command::List { json } => {
            let r: OperatorList =
                blocking(&socket, |mut c| async move { c.get("/v1/operators").await })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_list(&r.operators);
            }
            Ok(())
        }
        Command::Rotate { id, key_file, json } => {
            let path = format!("/v1/operators/{id}/rotate");
            let r: OperatorWithKey = blocking(&socket, |mut c| async move {
                c.call::<(), _>(Method::POST, &path, None).await
            })?;
            show_key(&r, key_file.as_deref(), json, "rotated")
        }
        Command::Revoke { id } => {
            let path = format!("/v1/operators/{id}/revoke");
            let r: OperatorInfo = blocking(&socket, |mut c| async move {
                c.call::<(), _>(Method::POST, &path, None).await
            })?;
            println!("operator {} revoked", r.id);
            Ok(())
        }
    }
}
