//! `agentctl policy validate|load|show|test|import`.
use std::path::PathBuf;

use anyhow::Context;
use hyper::Method;

use crate::SocketArg;
use agentd::api::client::blocking;
use agentd::api::server::PolicySource;
use agentd::gateway::{Gateway, PolicyInfo};

/// Arguments of `agentctl policy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check a policy file locally (no daemon needed); prints its id and roles.
    Validate {
        /// Policy file (TOML).
        file: PathBuf,
    },
    /// Load a policy file into the daemon (atomic; a bad file changes nothing).
    Load {
        /// Policy file (TOML).
        file: PathBuf,
    },
    /// Run a file of test cases against a policy file locally (no daemon
    /// needed): each case's message and tool call go through the real
    /// gateway on a temporary state directory. Exit status 1 if any fails.
    Test {
        /// Policy file (TOML).
        policy: PathBuf,
        /// Case file (TOML; see docs/policy-tests.md).
        cases: PathBuf,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Convert another tool's policy into an agentd policy file (no daemon
    /// needed). Prints where the result departs from its source; nothing is
    /// written if the source is refused.
    Import(crate::interop::ImportArgs),
    /// Show the policy in force.
    Show {
        /// Print JSON (includes the source).
        #[arg(long)]
        json: bool,
    },
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// Runs `agentctl policy`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Validate { file } => {
            let source = read(&file)?;
            let info = Gateway::validate_policy(&source, &file.display().to_string())?;
            println!(
                "{}: valid, policy id {} (roles: {})",
                file.display(),
                info.policy_id,
                info.roles.join(", ")
            );
            print!("{}", effect_lines(&source));
            Ok(())
        }
        Command::Test {
            policy,
            cases,
            json,
        } => test(&policy, &cases, json),
        Command::Import(a) => crate::interop::import(a),
        Command::Load { file } => {
            let body = PolicySource {
                source: read(&file)?,
                origin: Some(file.display().to_string()),
            };
            let info: PolicyInfo = blocking(&args.socket.path(), |mut c| async move {
                c.call(Method::PUT, "/v1/policy", Some(&body)).await
            })?;
            println!(
                "loaded policy {} from {} (roles: {})",
                info.policy_id,
                info.origin,
                info.roles.join(", ")
            );
            Ok(())
        }
        Command::Show { json } => {
            let info: PolicyInfo = blocking(&args.socket.path(), |mut c| async move {
                c.get("/v1/policy").await
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!(
                    "# policy {} from {} (loaded at {} Unix time)\n# sha256 {}\n{}{}",
                    info.policy_id,
                    info.origin,
                    info.loaded_at,
                    info.sha256,
                    effect_lines(&info.source),
                    info.source
                );
            }
            Ok(())
        }
    }
}

/// `# effect ACTION = CLASS (source)` for every action the policy defines
/// (docs/effects.md); empty if it does not compile here.
fn effect_lines(source: &str) -> String {
    let Ok(p) = agentd::policy::compile(source, "policy") else {
        return String::new();
    };
    let mut out = String::new();
    for (action, class, from) in p.effects() {
        out.push_str(&format!("# effect {action} = {class} ({from})\n"));
    }
    out
}

fn test(policy: &PathBuf, cases: &PathBuf, json: bool) -> anyhow::Result<()> {
    let file = agentd::policy_test::parse(&read(cases)?, &cases.display().to_string())?;
    let results = agentd::policy_test::run(&read(policy)?, &policy.display().to_string(), &file)?;
    let failed = results.iter().filter(|r| !r.passed).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            let want = match &r.expect_reason {
                Some(reason) => format!("{} ({reason})", r.expect),
                None => r.expect.clone(),
            };
            if r.passed {
                println!("PASS {}: {} ({})", r.name, r.decision, r.reason);
            } else {
                println!(
                    "FAIL {}: expected {want}, got {} ({}): {}",
                    r.name, r.decision, r.reason, r.detail
                );
            }
        }
        println!(
            "{} passed, {failed} failed ({} cases, policy {})",
            results.len() - failed,
            results.len(),
            policy.display()
        );
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
