//! `agentctl audit`: verify, tail, export, prune, public-key. Works on the
//! files directly (admins only: they are root-owned 0600), so verification
//! needs no running daemon.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use agentd::audit::checkpoint::{self, Checkpoint};
use agentd::audit::{self, store, ExportLine, Record, VerifyError, VerifyReport};
use agentd::config::{Config, DEFAULT_CONFIG_PATH};

/// Arguments of `agentctl audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Verify the hash chain and signed checkpoints offline; exit code 0 = pass.
    Verify(VerifyArgs),
    /// Print the newest records, optionally following new ones.
    Tail(TailArgs),
    /// Export records and checkpoints (one JSON object a line, verifiable).
    Export(ExportArgs),
    /// Drop an old prefix of the log, cut at a signed checkpoint.
    Prune(PruneArgs),
    /// Print the Ed25519 checkpoint public key (PEM).
    PublicKey(Location),
    /// Print the newest signed checkpoint as JSON, to keep off the host and
    /// pass to `verify --checkpoint` later.
    Checkpoint(DbArgs),
}

#[derive(Debug, clap::Args)]
struct DbArgs {
    #[command(flatten)]
    loc: Location,
    /// Audit database file (default: STATE_DIR/audit.db).
    #[arg(long)]
    db: Option<PathBuf>,
}

/// Where the log is: `--db`, else `--state-dir`, else the config's state_dir.
#[derive(Debug, clap::Args)]
pub(crate) struct Location {
    /// Config file naming state_dir (default /etc/agentd/agentd.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// State directory holding audit.db and audit-signing.key.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    loc: Location,
    /// Audit database file (default: STATE_DIR/audit.db).
    #[arg(long, conflicts_with = "export")]
    db: Option<PathBuf>,
    /// Verify an export (JSON Lines or OCSF) instead of the database.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Ed25519 public key PEM (`agentctl audit public-key`), kept apart from the host.
    #[arg(long, required_unless_present = "postgres")]
    public_key: Option<PathBuf>,
    /// Fleet mode: verify every host's chain in PostgreSQL instead, with
    /// each host's registered key; this file holds the connection string
    /// (mode 0600).
    #[arg(long, conflicts_with_all = ["export", "db"])]
    postgres: Option<PathBuf>,
    /// With --postgres: only this host.
    #[arg(long, requires = "postgres")]
    host: Option<String>,
    /// With --postgres: HOST=FILE, a checkpoint `agentctl audit checkpoint`
    /// printed on that host; rows it covers that PostgreSQL lacks are a gap.
    #[arg(long, requires = "postgres")]
    witness: Vec<String>,
    /// Extra checkpoints held elsewhere (JSON or JSON Lines), to catch a
    /// truncation that also removed the stored checkpoints.
    #[arg(long)]
    checkpoint: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct TailArgs {
    #[command(flatten)]
    loc: Location,
    /// Audit database file (default: STATE_DIR/audit.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// How many of the newest records to print first.
    #[arg(short = 'n', long, default_value_t = 20)]
    lines: u64,
    /// Keep printing records as they are committed.
    #[arg(short, long)]
    follow: bool,
    /// One JSON object a line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// JSON Lines: records and checkpoints, one object a line.
    Jsonl,
    /// OCSF 1.8 events, one a line, each carrying its record (no
    /// checkpoints); `verify --export` checks its chain.
    Ocsf,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    loc: Location,
    /// Audit database file (default: STATE_DIR/audit.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Only records with seq greater than this.
    #[arg(long, default_value_t = 0)]
    since_seq: u64,
    /// Output file (default: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Host name OCSF events name as their device (default: this host's).
    #[arg(long)]
    hostname: Option<String>,
}

#[derive(Debug, clap::Args)]
struct PruneArgs {
    #[command(flatten)]
    loc: Location,
    /// Audit database file (default: STATE_DIR/audit.db).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Drop records below this seq, cut at the newest signed checkpoint
    /// under it (export them first if you must keep them).
    #[arg(long)]
    before_seq: u64,
    /// Public key PEM to check checkpoints (default: derived from the
    /// state directory's signing key).
    #[arg(long)]
    public_key: Option<PathBuf>,
}

/// Runs `agentctl audit`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Verify(a) => verify(a),
        Command::Tail(a) => tail(a),
        Command::Export(a) => export(a),
        Command::Prune(a) => prune(a),
        Command::Checkpoint(a) => {
            let db = a.loc.db(&a.db)?;
            let conn = store::open_ro(&db)?;
            let cps = store::checkpoints(&conn, &db)?;
            let newest = cps
                .last()
                .with_context(|| format!("{} has no checkpoint yet", db.display()))?;
            println!("{}", serde_json::to_string(newest)?);
            Ok(())
        }
        Command::PublicKey(loc) => {
            let key = checkpoint::load_key(&loc.state_dir()?)?;
            print!("{}", checkpoint::public_key_pem(&key.verifying_key()));
            Ok(())
        }
    }
}

impl Location {
    fn state_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.state_dir {
            return Ok(d.clone());
        }
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        if self.config.is_none() && !path.exists() {
            return Ok(Config::default().state_dir);
        }
        Ok(Config::load(&path)?.state_dir)
    }

    pub(crate) fn db(&self, db: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
        match db {
            Some(p) => Ok(p.clone()),
            None => Ok(store::db_path(&self.state_dir()?)),
        }
    }
}

fn read_public_key(path: &Path) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read public key {}", path.display()))?;
    checkpoint::parse_public_key_pem(&pem).with_context(|| format!("public key {}", path.display()))
}

/// Reads checkpoints from a JSON object, a JSON array, or JSON Lines
/// (export lines of other types are skipped).
fn read_checkpoints(path: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read checkpoint file {}", path.display()))?;
    audit::export::parse_checkpoints(&text).with_context(|| format!("{}", path.display()))
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    if let Some(conninfo) = &a.postgres {
        let mut witnesses = Vec::new();
        for w in &a.witness {
            let (host, file) = w
                .split_once('=')
                .with_context(|| format!("--witness {w}: expected HOST=FILE"))?;
            let cps = read_checkpoints(Path::new(file))?;
            let newest = cps
                .into_iter()
                .max_by_key(|c| c.count)
                .with_context(|| format!("--witness {w}: no checkpoint in {file}"))?;
            witnesses.push((host.to_owned(), newest));
        }
        return crate::audit_fleet::verify(conninfo, a.host.as_deref(), &witnesses, a.json);
    }
    let public_key = a
        .public_key
        .as_deref()
        .context("--public-key is required")?;
    let key = read_public_key(public_key)?;
    let mut extra = Vec::new();
    for p in &a.checkpoint {
        extra.extend(read_checkpoints(p)?);
    }
    let (what, result) = match &a.export {
        Some(p) => (p.clone(), audit::verify_export(p, &key, &extra)),
        None => {
            let db = a.loc.db(&a.db)?;
            let r = audit::verify_db(&db, &key, &extra);
            (db, r)
        }
    };
    match result {
        Ok(report) => {
            print_pass(&what, &report, a.json)?;
            Ok(())
        }
        Err(VerifyError::Tampered(f)) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"result": "fail", "file": what, "first_bad_seq": f.seq(),
                        "reason_code": f.code(), "message": f.to_string()})
                );
            } else {
                println!("FAIL {}: first bad seq {}: {f}", what.display(), f.seq());
            }
            anyhow::bail!(
                "audit verification failed: first bad seq {} ({})",
                f.seq(),
                f.code()
            )
        }
        Err(e) => Err(e).context("audit verification could not run"),
    }
}

fn print_pass(what: &Path, r: &VerifyReport, json: bool) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(r)?;
        v["result"] = "pass".into();
        v["file"] = what.display().to_string().into();
        println!("{v}");
        return Ok(());
    }
    match (r.first_seq, r.last_seq) {
        (Some(first), Some(last)) => println!(
            "PASS {}: {} records (seq {first}..={last}), {} checkpoints, signed through seq {}",
            what.display(),
            r.records,
            r.checkpoints,
            r.anchored_through
        ),
        _ => println!(
            "PASS {}: empty log, {} checkpoints",
            what.display(),
            r.checkpoints
        ),
    }
    if r.unanchored_tail > 0 {
        println!(
            "note: the last {} records are not yet covered by a signed checkpoint; \
             their truncation would not be detectable",
            r.unanchored_tail
        );
    }
    Ok(())
}

fn format_record(r: &Record) -> String {
    let e = &r.event;
    // The subject (record format v2) goes last: the fields before keep their places.
    let mut subject = String::new();
    if !e.agent.is_empty() {
        subject += &format!(" agent={}", e.agent);
    }
    if e.pid != 0 {
        subject += &format!(" pid={}", e.pid);
    }
    if !e.access.is_empty() {
        subject += &format!(" access={}", e.access);
    }
    format!(
        "{:>8} {} {:<9} {:<10} {} {} reason={} op={} session={} msg={} call={} policy={} {}µs{subject}",
        r.seq,
        r.timestamp,
        e.kind.as_str(),
        e.decision,
        e.action,
        if e.target.is_empty() { "-" } else { &e.target },
        e.reason_code,
        e.operator,
        e.session,
        e.active_message_id,
        e.call_id,
        e.policy_id,
        e.latency_us
    )
}

fn tail(a: TailArgs) -> anyhow::Result<()> {
    let db = a.loc.db(&a.db)?;
    let conn = store::open_ro(&db)?;
    let last = store::seq_range(&conn, &db)?.map_or(0, |(_, hi)| hi);
    let mut cursor = last.saturating_sub(a.lines);
    let stdout = std::io::stdout();
    loop {
        let page = store::records_after(&conn, &db, cursor, 1000)?;
        let mut out = stdout.lock();
        for r in &page {
            cursor = r.seq;
            let line = if a.json {
                serde_json::to_string(&ExportLine::Record(r.clone()))?
            } else {
                format_record(r)
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // reader went away (e.g. `| head`)
            }
        }
        out.flush().ok();
        drop(out);
        if page.len() == 1000 {
            continue;
        }
        if !a.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    let db = a.loc.db(&a.db)?;
    let conn = store::open_ro(&db)?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let n = match a.format {
        Format::Jsonl => audit::export_jsonl(&conn, &db, a.since_seq, &mut out)?,
        Format::Ocsf => {
            let mut ctx = audit::ocsf::Context::local();
            if let Some(h) = a.hostname {
                ctx.hostname = h;
            }
            audit::export::export_ocsf(&conn, &db, a.since_seq, &ctx, &mut out)?
        }
    };
    eprintln!("exported {n} records from {}", db.display());
    Ok(())
}

fn prune(a: PruneArgs) -> anyhow::Result<()> {
    let db = a.loc.db(&a.db)?;
    let key = match &a.public_key {
        Some(p) => read_public_key(p)?,
        None => checkpoint::load_key(&a.loc.state_dir()?)?.verifying_key(),
    };
    let r = audit::prune_before(&db, &key, a.before_seq)?;
    println!(
        "pruned {} records (seq ≤ {}); the log now starts at seq {}, anchored to the checkpoint signed {}",
        r.deleted,
        r.pruned_through,
        r.pruned_through + 1,
        r.anchor.timestamp
    );
    Ok(())
}
