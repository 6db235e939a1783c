//! `agentctl policy import oap|agentgate` and `agentctl oap
//! keygen|decisions|verify`: the file and key handling around the pure
//! conversions of `agentd::interop`.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use crate::audit::Location;
use agentd::audit::store;
use agentd::interop::oap::{self, decision};
use agentd::interop::{agentgate, Converted, NoteKind};

/// The formats `policy import` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Source {
    /// An Open Agent Passport (OAP 1.0 JSON): capabilities and limits.
    Oap,
    /// An AgentGate policy (YAML from agent-gatekeeper 1.0.0's to_yaml).
    Agentgate,
}

/// Arguments of `agentctl policy import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// What the file is.
    #[arg(value_enum)]
    source: Source,
    /// The passport (JSON) or AgentGate policy (YAML).
    file: PathBuf,
    /// Write the policy here (default: stdout). Nothing is written when the
    /// source is refused.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The role that gets the converted permissions.
    #[arg(long, default_value = "agent")]
    role: String,
    /// Accept a policy that leaves out constraints agentd cannot enforce
    /// (each is listed, and written into the policy as a comment).
    #[arg(long)]
    drop_unenforced: bool,
}

/// Runs `agentctl policy import`.
pub fn import(a: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let origin = a.file.display().to_string();
    let converted: Converted = match a.source {
        Source::Oap => {
            let p = oap::parse(&text).with_context(|| format!("{origin}: passport refused"))?;
            oap::import(&p, &a.role).with_context(|| format!("{origin}: passport refused"))?
        }
        Source::Agentgate => {
            let p = agentgate::parse(&text)
                .with_context(|| format!("{origin}: AgentGate policy refused"))?;
            agentgate::convert(&p, &a.role)
                .with_context(|| format!("{origin}: AgentGate policy refused"))?
        }
    };
    let label = match a.source {
        Source::Oap => format!("Open Agent Passport {origin}"),
        Source::Agentgate => format!("AgentGate policy {origin}"),
    };
    let toml = converted
        .to_toml(&label, a.drop_unenforced)
        .with_context(|| format!("{origin}: nothing written"))?;
    for n in &converted.notes {
        eprintln!("{n}");
    }
    match &a.out {
        Some(path) => {
            write_new_or_replace(path, toml.as_bytes(), 0o644)?;
            let dropped = converted
                .notes
                .iter()
                .filter(|n| n.kind == NoteKind::Unenforced)
                .count();
            eprintln!(
                "wrote {} (policy id {}, role {}; {} note(s), {dropped} not enforced)",
                path.display(),
                converted.policy.id,
                a.role,
                converted.notes.len()
            );
        }
        None => print!("{toml}"),
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`, so a reader never sees half a file.
fn write_new_or_replace(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp-agentctl");
    // A leftover from an interrupted run; removing it (a symlink included)
    // never touches what it points to.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Arguments of `agentctl oap`.
#[derive(Debug, clap::Args)]
pub struct OapArgs {
    #[command(subcommand)]
    command: OapCommand,
}

#[derive(Debug, clap::Subcommand)]
enum OapCommand {
    /// Make an Ed25519 signing key (PKCS#8 PEM, mode 0600) for decisions;
    /// writes KEY.pub (SPKI PEM) beside it and prints its kid and JWKS.
    Keygen {
        /// The private key file to create (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Export the audit log's tool-call decisions as signed OAP decision
    /// objects, one JSON object a line.
    Decisions(DecisionsArgs),
    /// Verify OAP decisions (JSON Lines): format, signature, and with
    /// --passport that they carry that passport's digest.
    Verify {
        /// The decisions (one JSON object a line).
        file: PathBuf,
        /// Ed25519 public key, SPKI PEM (KEY.pub from `oap keygen`).
        #[arg(long)]
        public_key: PathBuf,
        /// The passport the decisions must name.
        #[arg(long)]
        passport: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct DecisionsArgs {
    #[command(flatten)]
    loc: Location,
    /// Audit database file (default: STATE_DIR/audit.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// The passport the agent acted under (OAP 1.0 JSON).
    #[arg(long)]
    passport: PathBuf,
    /// Ed25519 signing key, PKCS#8 PEM (`agentctl oap keygen`).
    #[arg(long)]
    signing_key: PathBuf,
    /// Key id (`oap:owner:NAME` or `oap:registry:NAME`; default derived
    /// from the public key).
    #[arg(long)]
    kid: Option<String>,
    /// `expires_in` of every decision, seconds.
    #[arg(long, default_value_t = 3600)]
    expires_in: u64,
    /// Only records with seq greater than this.
    #[arg(long, default_value_t = 0)]
    since_seq: u64,
    /// Output file (default: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Runs `agentctl oap`.
pub fn run_oap(a: OapArgs) -> anyhow::Result<()> {
    match a.command {
        OapCommand::Keygen { out } => keygen(&out),
        OapCommand::Decisions(d) => decisions(d),
        OapCommand::Verify {
            file,
            public_key,
            passport,
        } => verify(&file, &public_key, passport.as_deref()),
    }
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    let (key, pem) = decision::new_key_pem()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    f.write_all(pem.as_bytes())?;
    let public = agentd::audit::checkpoint::public_key_pem(&key.verifying_key());
    let pub_path = PathBuf::from(format!("{}.pub", out.display()));
    std::fs::write(&pub_path, public).with_context(|| format!("writing {}", pub_path.display()))?;
    let kid = decision::default_kid(&key.verifying_key());
    eprintln!(
        "wrote {} and {} (kid {kid})",
        out.display(),
        pub_path.display()
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&decision::jwks(&key.verifying_key(), &kid))?
    );
    Ok(())
}

fn read_passport(path: &Path) -> anyhow::Result<oap::Passport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    oap::parse(&text).with_context(|| format!("{}: passport refused", path.display()))
}

fn decisions(a: DecisionsArgs) -> anyhow::Result<()> {
    let passport = read_passport(&a.passport)?;
    let pem = std::fs::read_to_string(&a.signing_key)
        .with_context(|| format!("reading {}", a.signing_key.display()))?;
    let key = decision::read_key_pem(&pem).with_context(|| a.signing_key.display().to_string())?;
    let kid = a
        .kid
        .clone()
        .unwrap_or_else(|| decision::default_kid(&key.verifying_key()));
    anyhow::ensure!(
        decision::is_kid(&kid),
        "--kid `{kid}` does not match ^oap:(registry|owner):[a-zA-Z0-9._-]+$"
    );
    let issuer = decision::Issuer {
        digest: decision::passport_digest(&passport.document)?,
        passport: &passport,
        key: &key,
        kid,
        expires_in: a.expires_in,
        policy: decision::Issuer::passport_policy(&passport),
    };
    let db = a.loc.db(&a.db)?;
    let conn = store::open_ro(&db)?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let (mut after, mut n) = (a.since_seq, 0u64);
    loop {
        let batch = store::records_after(&conn, &db, after, 1000)?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for r in &batch {
            if let Some(d) = issuer.decision(r)? {
                serde_json::to_writer(&mut out, &d)?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
    }
    out.flush()?;
    eprintln!("exported {n} decisions from {}", db.display());
    Ok(())
}

fn verify(file: &Path, public_key: &Path, passport: Option<&Path>) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(public_key)
        .with_context(|| format!("reading {}", public_key.display()))?;
    let key = agentd::audit::checkpoint::parse_public_key_pem(&pem)
        .with_context(|| public_key.display().to_string())?;
    let digest = match passport {
        Some(p) => Some(decision::passport_digest(&read_passport(p)?.document)?),
        None => None,
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut n = 0;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("{}:{}", file.display(), i + 1);
        let v: Value = serde_json::from_str(line).with_context(|| format!("{at}: not JSON"))?;
        decision::verify(&v, &key, digest.as_deref())
            .with_context(|| format!("{at}: decision refused"))?;
        n += 1;
    }
    anyhow::ensure!(n > 0, "{}: no decisions", file.display());
    println!("{n} decisions verified ({})", file.display());
    Ok(())
}
