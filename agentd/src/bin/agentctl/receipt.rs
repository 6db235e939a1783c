//! `agentctl receipt verify FILE --key-file K`: checks a receipt offline;
//! `agentctl receipt render --audit-db DB --call-id ID --key-file K
//! [--size N] --out FILE`: draws a sealed receipt's card again, at a chosen
//! size, from the audit database.
//!
//! Prints the exact check (HMAC tag over the claims in the PNG text chunk)
//! and the watermark check (bit error rate and similarity of the payload read
//! from the pixels), and which of them survived. Exit code 0 when at least
//! one check proves the receipt, 1 otherwise (and on errors).
use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine;

use agentd::receipt::{self, ExactCheck, ReceiptClaims, VerifyReport};

/// Arguments of `agentctl receipt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Verify a receipt image (the PNG, or a re-encoded copy such as a JPEG).
    Verify(VerifyArgs),
    /// Render a sealed receipt's card from the audit database (any size the
    /// card comes in; the same face and claims as the daemon's card).
    Render(RenderArgs),
}

/// How the key file is encoded.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyFormat {
    /// Hex if the trimmed file is hex, else base64 if it is base64, else raw bytes.
    Auto,
    /// Hex digits (whitespace ignored).
    Hex,
    /// Standard base64 (whitespace ignored).
    Base64,
    /// The file's bytes as they are.
    Raw,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// Receipt image.
    file: PathBuf,
    /// File with the operator's HMAC key.
    #[arg(long)]
    key_file: PathBuf,
    /// Encoding of the key file.
    #[arg(long, value_enum, default_value = "auto")]
    key_format: KeyFormat,
    /// Receipt claims as JSON (seq, row_hash, operator, call_id, action,
    /// timestamp) to compare the watermark with, for a copy that lost its
    /// text chunk. Default: the claims in the text chunk.
    #[arg(long)]
    claims: Option<PathBuf>,
    /// Audit database (`audit.db`) to find the claims in, for a copy that
    /// lost its text chunk: the allowed tool-call row whose payload is within
    /// 2 bits of the one read from the pixels.
    #[arg(long, conflicts_with = "claims")]
    audit_db: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RenderArgs {
    /// Audit database (`state_dir/audit.db`), read only.
    #[arg(long)]
    audit_db: PathBuf,
    /// The allowed call whose receipt to render.
    #[arg(long)]
    call_id: String,
    /// File with the operator's HMAC key (the one the receipt was sealed under).
    #[arg(long)]
    key_file: PathBuf,
    /// Encoding of the key file.
    #[arg(long, value_enum, default_value = "auto")]
    key_format: KeyFormat,
    /// Card side in pixels: 256, 512, 768 or 1024.
    #[arg(long, default_value_t = receipt::card::SIZE)]
    size: usize,
    /// Hide the target even if the policy did not (a redacted receipt
    /// stays redacted either way).
    #[arg(long)]
    redact: bool,
    /// Where to write the PNG.
    #[arg(long)]
    out: PathBuf,
}

/// Largest Hamming distance at which an audit row is taken as the receipt's:
/// a random payload lands this close to a given row with probability ~1e-16.
const AUDIT_MATCH_BITS: u32 = 2;

/// Finds the allowed tool-call row whose receipt payload is closest to
/// `payload` (within [`AUDIT_MATCH_BITS`]).
fn claims_from_audit(db: &std::path::Path, payload: u64) -> anyhow::Result<Option<ReceiptClaims>> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", db.display()))?;
    let mut st = conn
        .prepare(
            "SELECT seq, hash, operator, call_id, action, timestamp FROM audit_records
             WHERE kind = 'tool_call' AND decision = 'allow' AND call_id != ''",
        )
        .with_context(|| format!("{} is not an agentd audit database", db.display()))?;
    let rows = st.query_map([], |r| {
        Ok(ReceiptClaims {
            seq: r.get::<_, i64>(0)? as u64,
            row_hash: r.get(1)?,
            operator: r.get(2)?,
            call_id: r.get(3)?,
            action: r.get(4)?,
            timestamp: r.get(5)?,
        })
    })?;
    let mut best: Option<(u32, ReceiptClaims)> = None;
    for row in rows {
        let c = row?;
        let d = (c.payload() ^ payload).count_ones();
        if d <= AUDIT_MATCH_BITS && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, c));
        }
    }
    Ok(best.map(|(_, c)| c))
}

/// Runs `agentctl receipt`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Verify(a) => verify(a),
        Command::Render(a) => render(a),
    }
}

/// Decodes an operator key file.
pub fn read_key(raw: &[u8], format: KeyFormat) -> anyhow::Result<Vec<u8>> {
    let text = std::str::from_utf8(raw)
        .ok()
        .map(|s| s.split_whitespace().collect::<String>());
    let hex_key = || {
        text.as_deref()
            .and_then(|t| hex::decode(t).ok())
            .filter(|k| !k.is_empty())
    };
    let b64_key = || {
        text.as_deref()
            .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .filter(|k| !k.is_empty())
    };
    let key = match format {
        KeyFormat::Hex => hex_key().context("key file is not hex")?,
        KeyFormat::Base64 => b64_key().context("key file is not base64")?,
        KeyFormat::Raw => raw.to_vec(),
        KeyFormat::Auto => hex_key().or_else(b64_key).unwrap_or_else(|| raw.to_vec()),
    };
    if key.is_empty() {
        bail!("key file is empty");
    }
    Ok(key)
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let image = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let raw_key =
        std::fs::read(&a.key_file).with_context(|| format!("reading {}", a.key_file.display()))?;
    let key = read_key(&raw_key, a.key_format)?;
    let claims: Option<ReceiptClaims> = match &a.claims {
        Some(p) => {
            let s =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                serde_json::from_str(&s)
                    .with_context(|| format!("parsing claims in {}", p.display()))?,
            )
        }
        None => None,
    };
    let mut report = receipt::verify_with_claims(&image, &key, claims.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    // Keep stdout pure JSON under --json.
    let note = |line: String| {
        if a.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if let Some(db) = &a.audit_db {
        if report.exact != ExactCheck::Valid {
            match claims_from_audit(db, report.watermark.extracted_payload)? {
                Some(found) => {
                    note(format!(
                        "audit row: seq={} call={} (payload match in {})",
                        found.seq,
                        found.call_id,
                        db.display()
                    ));
                    report = receipt::verify_with_claims(&image, &key, Some(&found))
                        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
                }
                None => println!(
                    "audit row: none in {} matches the watermark payload",
                    db.display()
                ),
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report_json(&report))?);
    } else {
        print_report(&a.file, &report);
    }
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}

fn render(a: RenderArgs) -> anyhow::Result<()> {
    let raw_key =
        std::fs::read(&a.key_file).with_context(|| format!("reading {}", a.key_file.display()))?;
    let key = read_key(&raw_key, a.key_format)?;
    let conn = rusqlite::Connection::open_with_flags(
        &a.audit_db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", a.audit_db.display()))?;
    let (issued, png) = receipt::issued::render(&conn, &a.call_id, |_| Some(key), a.size, a.redact)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.audit_db.display()))?;
    std::fs::write(&a.out, &png).with_context(|| format!("writing {}", a.out.display()))?;
    let target = if issued.face.redacted {
        "redacted"
    } else if issued.face.target.is_empty() {
        "unknown"
    } else {
        "shown"
    };
    println!(
        "wrote {} ({size}x{size}): call {} seq {} by {}, target {target}",
        a.out.display(),
        issued.claims.call_id,
        issued.claims.seq,
        issued.claims.operator,
        size = a.size
    );
    Ok(())
}

fn survived(r: &VerifyReport) -> &'static str {
    match (r.exact == ExactCheck::Valid, r.watermark.verified) {
        (true, true) => "exact and watermark",
        (true, false) => "exact only",
        (false, true) => "watermark only",
        (false, false) => "none",
    }
}

fn print_report(file: &std::path::Path, r: &VerifyReport) {
    println!("receipt: {}", file.display());
    if let Some(d) = &r.document {
        let c = &d.claims;
        println!(
            "claims: seq={} call={} operator={} action={} timestamp={} row_hash={}",
            c.seq, c.call_id, c.operator, c.action, c.timestamp, c.row_hash
        );
    }
    match &r.exact {
        ExactCheck::Valid => println!("exact check:     PASS (HMAC tag over the claims is valid)"),
        ExactCheck::Invalid { reason } => println!("exact check:     FAIL ({reason})"),
        ExactCheck::Missing => {
            println!("exact check:     MISSING (no receipt text chunk; image re-encoded?)")
        }
    }
    let w = &r.watermark;
    let verdict = match (w.verified, w.expected_payload) {
        (true, _) => "PASS",
        (false, Some(_)) => "FAIL",
        (false, None) if w.pilot_correlation >= receipt::PILOT_PRESENT => {
            "PRESENT (no claims to compare)"
        }
        (false, None) => "NOT FOUND (no claims to compare)",
    };
    print!("watermark check: {verdict}");
    if let (Some(ber), Some(sim)) = (w.bit_error_rate, w.similarity) {
        print!(
            "  BER {:.2}% ({}/{} bits)  similarity {:.3}",
            100.0 * ber,
            (ber * receipt::PAYLOAD_BITS as f32).round(),
            receipt::PAYLOAD_BITS,
            sim
        );
    }
    println!("  pilot {:.3}", w.pilot_correlation);
    print!(
        "                 extracted payload {:016x}",
        w.extracted_payload
    );
    if let Some(e) = w.expected_payload {
        print!(", expected {e:016x}");
    }
    println!();
    println!("geometry:        {}", correction_text(&w.correction));
    println!("survived: {}", survived(r));
    println!(
        "result: {}",
        if r.passed() {
            "VERIFIED"
        } else {
            "NOT VERIFIED"
        }
    );
}

/// The geometric correction in words: what was undone to read the copy.
fn correction_text(c: &receipt::Correction) -> String {
    let mut parts = Vec::new();
    if c.rotation != 0.0 {
        parts.push(format!("rotated {:+.1}°", c.rotation));
    }
    if (c.scale - 1.0).abs() >= 0.005 {
        parts.push(format!("scaled ×{:.3}", c.scale));
    }
    if c.mirrored {
        parts.push("mirrored".to_string());
    }
    let (dx, dy) = c.offset;
    if dx.abs() >= 0.5 || dy.abs() >= 0.5 {
        parts.push(format!("card origin at ({dx:.0}, {dy:.0})"));
    }
    if parts.is_empty() {
        "none (copy read as sealed)".to_string()
    } else {
        format!("undid {}", parts.join(", "))
    }
}

fn report_json(r: &VerifyReport) -> serde_json::Value {
    let w = &r.watermark;
    let (exact, reason) = match &r.exact {
        ExactCheck::Valid => ("valid", None),
        ExactCheck::Invalid { reason } => ("invalid", Some(*reason)),
        ExactCheck::Missing => ("missing", None),
    };
    serde_json::json!({
        "document": r.document,
        "exact": { "result": exact, "reason": reason },
        "watermark": {
            "verified": w.verified,
            "bit_error_rate": w.bit_error_rate,
            "similarity": w.similarity,
            "pilot_correlation": w.pilot_correlation,
            "extracted_payload": format!("{:016x}", w.extracted_payload),
            "expected_payload": w.expected_payload.map(|p| format!("{p:016x}")),
            "correction": {
                "rotation_degrees": w.correction.rotation,
                "scale": w.correction.scale,
                "mirrored": w.correction.mirrored,
                "offset": [w.correction.offset.0, w.correction.offset.1],
            },
        },
        "survived": survived(r),
        "verified": r.passed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats() {
        assert_eq!(
            read_key(b"00ff10\n", KeyFormat::Auto).unwrap(),
            vec![0, 255, 16]
        );
        assert_eq!(
            read_key(b"AAEC\n", KeyFormat::Base64).unwrap(),
            vec![0, 1, 2]
        );
        assert_eq!(
            read_key(b"not hex!", KeyFormat::Auto).unwrap(),
            b"not hex!".to_vec()
        );
        assert!(read_key(b"zz", KeyFormat::Hex).is_err());
        assert!(read_key(b"", KeyFormat::Raw).is_err());
    }
}
