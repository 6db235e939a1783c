//! `agentctl fleet`: the fleet's central operators, policy, suspensions
//! and delegation revocations, changed in PostgreSQL (validated first:
//! a refused change stores nothing); every host applies them within
//! moments (LISTEN/NOTIFY). Also the database set-up with one
//! least-privilege role per host (`init-db`).
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ed25519_dalek::pkcs8::EncodePrivateKey;

use agentd::fleet::central::{self, CentralError};
use agentd::fleet::conn::{PgConn, PgSettings};
use agentd::gateway::Scope;

/// Arguments of `agentctl fleet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The administrator's connection-string file (0600), as for
    /// `[fleet] credentials_file` but with a role that may change the
    /// central tables.
    #[arg(long, env = "AGENTD_FLEET_POSTGRES", value_name = "FILE")]
    postgres: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create the fleet tables, and a least-privilege role for each --host.
    InitDb {
        /// A host id to make a PostgreSQL role for (repeatable):
        /// `agentd_host_<id>`, allowed to insert only its own rows.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Push or show the central policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Add, remove or list central operators (Ed25519 public keys).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Suspend an operator, an agent or everything on every host.
    Suspend {
        /// Also kill the processes of the agents in scope.
        #[arg(long, global = true)]
        stop: bool,
        /// Why (kept with the suspension and in each host's audit log).
        #[arg(long, global = true, default_value = "")]
        reason: String,
        #[command(subcommand)]
        scope: ScopeArg,
    },
    /// Lift a central suspension on every host.
    Resume {
        #[command(subcommand)]
        scope: ScopeArg,
    },
    /// Revoke a delegation token (and those below it) on every host.
    RevokeDelegation {
        /// The token's name (`ROOT/d-…`).
        token: String,
    },
    /// The central revision, policy and operators.
    Status,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    /// Validate and push a policy file; refused (nothing stored) if it
    /// does not compile or drops a role a central operator holds.
    Push {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Print the central policy in force.
    Show,
}

#[derive(Debug, clap::Subcommand)]
enum OperatorCommand {
    /// Add an operator. Either a fresh Ed25519 key pair (the private key
    /// written to --key-file, PKCS#8 PEM, 0600), or the operator's own
    /// public key (--public-key: PEM, or 64 hex digits).
    Add {
        /// Operator id ([A-Za-z0-9._-], up to 64).
        id: String,
        /// Role (repeatable); must exist in the central policy.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Write the new private key here (must not exist).
        #[arg(
            long,
            required_unless_present = "public_key",
            conflicts_with = "public_key"
        )]
        key_file: Option<PathBuf>,
        /// Enrol this public key instead.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Replace an operator's roles on every host (its grants ended).
    SetRoles {
        /// Operator id.
        id: String,
        /// Role (repeatable); must exist in the central policy.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// Remove an operator: revoked on every host, its grants ended.
    Remove {
        /// Operator id.
        id: String,
    },
    /// List central operators.
    List,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum ScopeArg {
    /// One operator.
    Operator {
        /// Operator id.
        name: String,
    },
    /// One agent.
    Agent {
        /// Agent name.
        name: String,
    },
    /// Everything.
    All,
}

impl ScopeArg {
    fn scope(&self) -> anyhow::Result<Scope> {
        let (kind, name) = match self {
            Self::Operator { name } => ("operator", Some(name.as_str())),
            Self::Agent { name } => ("agent", Some(name.as_str())),
            Self::All => ("all", None),
        };
        Scope::parse(kind, name).map_err(|e| anyhow::anyhow!("{}", e.0))
    }
}

/// Runs `agentctl fleet`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let pg = PgSettings::from_file(&args.postgres, Duration::from_secs(10))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut conn = pg.connect().await.context("connecting to PostgreSQL")?;
        run_command(&pg, &mut conn, args.command).await
    })
}

async fn run_command(pg: &PgSettings, conn: &mut PgConn, command: Command) -> anyhow::Result<()> {
    let by = format!("uid:{}", nix::unistd::getuid().as_raw());
    let c = &mut conn.client;
    match command {
        Command::InitDb { hosts } => {
            agentd::fleet::roles::init_db(pg, c, &hosts).await?;
            println!("fleet tables ready");
            for h in &hosts {
                println!(
                    "host {h}: role {} (set its password or certificate, then use it in that host's credentials file)",
                    agentd::fleet::roles::role_name(h)
                );
            }
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Push { file },
        } => {
            let source = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let (rev, id) = refused(central::push_policy(pg, c, &source, &by).await)?;
            println!("pushed policy {id} as revision {rev}");
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Show,
        } => {
            agentd::fleet::schema::ensure(pg, c).await?;
            let st = central::read(pg, c).await?;
            match st.policy {
                Some(p) => {
                    println!("# revision {}", p.rev);
                    print!("{}", p.source);
                    Ok(())
                }
                None => anyhow::bail!("no central policy has been pushed"),
            }
        }
        Command::Operator { command } => operator(pg, c, command, &by).await,
        Command::Suspend {
            stop,
            reason,
            scope,
        } => {
            let s = scope.scope()?;
            let rev = refused(central::suspend(pg, c, &s, &reason, stop, &by).await)?;
            println!("suspended {s} on every host (revision {rev})");
            Ok(())
        }
        Command::Resume { scope } => {
            let s = scope.scope()?;
            let rev = refused(central::resume(pg, c, &s, &by).await)?;
            println!("resumed {s} on every host (revision {rev})");
            Ok(())
        }
        Command::RevokeDelegation { token } => {
            let rev = refused(central::revoke_delegation(pg, c, &token, &by).await)?;
            println!("revoked {token} on every host holding it (revision {rev})");
            Ok(())
        }
        Command::Status => {
            agentd::fleet::schema::ensure(pg, c).await?;
            let st = central::read(pg, c).await?;
            println!("central revision {}", st.rev);
            match &st.policy {
                Some(p) => println!("policy: revision {} sha256 {}", p.rev, p.sha256()),
                None => println!("policy: none pushed (hosts keep their own)"),
            }
            let live = st.operators.iter().filter(|o| !o.removed).count();
            println!("operators: {live} ({} removed)", st.operators.len() - live);
            let held = st.suspensions.iter().filter(|s| !s.lifted).count();
            println!("suspensions in force: {held}");
            println!("delegations revoked: {}", st.revoked_delegations.len());
            let hosts = central::host_status(pg, c).await?;
            let behind = hosts.iter().filter(|h| h.applied_rev < st.rev).count();
            println!("hosts: {} ({behind} behind)", hosts.len());
            for h in &hosts {
                println!(
                    "  {}	revision {}	{}	reported {} s ago",
                    h.host_id,
                    h.applied_rev,
                    if h.applied_rev < st.rev {
                        "BEHIND"
                    } else {
                        "current"
                    },
                    h.age_secs
                );
            }
            Ok(())
        }
    }
}

async fn operator(
    pg: &PgSettings,
    c: &mut tokio_postgres::Client,
    command: OperatorCommand,
    by: &str,
) -> anyhow::Result<()> {
    match command {
        OperatorCommand::Add {
            id,
            roles,
            key_file,
            public_key,
        } => {
            let (public_hex, new_key) = match (&key_file, &public_key) {
                (_, Some(file)) => (read_public_key(file)?, None),
                (Some(_), None) => {
                    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
                    (hex::encode(key.verifying_key().as_bytes()), Some(key))
                }
                (None, None) => anyhow::bail!("--key-file or --public-key is required"),
            };
            // The key file first: a key the operator never received is no use.
            if let (Some(path), Some(key)) = (&key_file, &new_key) {
                write_private_key(path, key)?;
            }
            let result = central::add_operator(pg, c, &id, &roles, &public_hex, by).await;
            if result.is_err() {
                if let Some(path) = &key_file {
                    let _ = std::fs::remove_file(path);
                }
            }
            let rev = refused(result)?;
            println!("added operator {id} (Ed25519 public key {public_hex}) as revision {rev}");
            if let Some(path) = key_file {
                println!(
                    "private key written to {} (PKCS#8 PEM); sign with agentctl send --key-file",
                    path.display()
                );
            }
            Ok(())
        }
        OperatorCommand::SetRoles { id, roles } => {
            let rev = refused(central::set_roles(pg, c, &id, &roles, by).await)?;
            println!(
                "operator {id} now has roles {} on every host (revision {rev})",
                roles.join(",")
            );
            Ok(())
        }
        OperatorCommand::Remove { id } => {
            let rev = refused(central::remove_operator(pg, c, &id, by).await)?;
            println!("removed operator {id}: revoked on every host (revision {rev})");
            Ok(())
        }
        OperatorCommand::List => {
            agentd::fleet::schema::ensure(pg, c).await?;
            let st = central::read(pg, c).await?;
            for o in &st.operators {
                println!(
                    "{}\troles={}\tkey={}\t{}\trev={}",
                    o.id,
                    o.roles.join(","),
                    o.public_key,
                    if o.removed { "removed" } else { "active" },
                    o.rev
                );
            }
            Ok(())
        }
    }
}

/// A refused change exits non-zero with the reason.
fn refused<T>(r: Result<T, CentralError>) -> anyhow::Result<T> {
    r.map_err(|e| match e {
        CentralError::Refused(why) => anyhow::anyhow!("refused, nothing stored: {why}"),
        CentralError::Fleet(e) => anyhow::anyhow!("PostgreSQL: {e}"),
    })
}

fn write_private_key(path: &Path, key: &ed25519_dalek::SigningKey) -> anyhow::Result<()> {
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
    crate::operator::write_private_file(path, pem.as_bytes())
}

/// A public key file: PEM (SubjectPublicKeyInfo) or 64 hex digits.
fn read_public_key(path: &Path) -> anyhow::Result<String> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with("-----BEGIN") {
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 public key: {e}", path.display()))?;
        return Ok(hex::encode(key.as_bytes()));
    }
    central::parse_public_key(text.trim())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(text.trim().to_ascii_lowercase())
}
