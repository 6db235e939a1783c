//! JSON Lines export: one flat object a line, records in seq order with
//! each checkpoint right after the row it covers, so the file verifies alone
//! (given the public key) and a SIEM can ingest it line by line.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::checkpoint::Checkpoint;
use super::line::ExportLine;
use super::record::Record;
use super::store::{self, StoreError};
use super::verify::{ChainVerifier, VerifyError, VerifyReport};
use ed25519_dalek::VerifyingKey;

/// Errors exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error("cannot write export: {source}")]
    Write { source: std::io::Error },
    /// A line of a checkpoint file is neither a checkpoint nor an export line.
    #[error("line {line}: not a checkpoint: {message}")]
    NotACheckpoint {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        message: String,
    },
}

/// Reads checkpoints from a file's text (`agentctl audit verify
/// --checkpoint`): a JSON object, a JSON array, or JSON Lines of checkpoints
/// and export lines (records are skipped).
pub fn parse_checkpoints(text: &str) -> Result<Vec<Checkpoint>, ExportError> {
    if let Ok(list) = serde_json::from_str::<Vec<Checkpoint>>(text) {
        return Ok(list);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(cp) = serde_json::from_str::<Checkpoint>(line) {
            out.push(cp);
            continue;
        }
        match serde_json::from_str::<ExportLine>(line) {
            Ok(ExportLine::Checkpoint(cp)) => out.push(cp),
            Ok(ExportLine::Record(_)) => {}
            Err(e) => {
                return Err(ExportError::NotACheckpoint {
                    line: i + 1,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// Rows fetched per read while exporting.
const PAGE: u64 = 4096;

/// Writes records with `seq > after` (and the checkpoints needed to verify
/// them) as JSON Lines; returns how many records were written.
pub fn export_jsonl(
    conn: &rusqlite::Connection,
    path: &Path,
    after: u64,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    // One snapshot, so a live writer cannot make the export inconsistent.
    conn.execute_batch("BEGIN")
        .map_err(store::sql(path, "begin read"))?;
    let result = export_in_tx(conn, path, after, out);
    let _ = conn.execute_batch("COMMIT");
    result
}

fn export_in_tx(
    conn: &rusqlite::Connection,
    path: &Path,
    after: u64,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    let cps = store::checkpoints(conn, path)?;
    let first = store::records_after(conn, path, after, 1)?
        .first()
        .map(|r| r.seq);
    let write = |out: &mut dyn Write, line: &ExportLine| -> Result<(), ExportError> {
        serde_json::to_writer(&mut *out, line)
            .map_err(|e| ExportError::Write { source: e.into() })?;
        out.write_all(b"\n")
            .map_err(|source| ExportError::Write { source })
    };
    let mut cp_iter = cps.into_iter().peekable();
    // Checkpoints before the first exported row anchor a pruned or partial start.
    if let Some(first) = first {
        while let Some(cp) = cp_iter.next_if(|c| c.count < first) {
            write(out, &ExportLine::Checkpoint(cp))?;
        }
    }
    let mut cursor = after;
    let mut n = 0;
    loop {
        let page = store::records_after(conn, path, cursor, PAGE)?;
        if page.is_empty() {
            break;
        }
        for r in page {
            cursor = r.seq;
            n += 1;
            let seq = r.seq;
            write(out, &ExportLine::Record(r))?;
            while let Some(cp) = cp_iter.next_if(|c| c.count <= seq) {
                write(out, &ExportLine::Checkpoint(cp))?;
            }
        }
    }
    for cp in cp_iter {
        write(out, &ExportLine::Checkpoint(cp))?;
    }
    out.flush()
        .map_err(|source| ExportError::Write { source })?;
    Ok(n)
}

/// Verifies an export file: records in line order, every checkpoint in the
/// file plus `extra_checkpoints`.
pub fn verify_export(
    path: &Path,
    key: &VerifyingKey,
    extra_checkpoints: &[Checkpoint],
) -> Result<VerifyReport, VerifyError> {
    verify_export_from(
        path,
        || std::fs::File::open(path).map(BufReader::new),
        key,
        extra_checkpoints,
    )
}

/// [`verify_export`] reading the export through `open`, called once per
/// pass (the fuzz target verifies bytes in memory); `path` labels errors.
pub fn verify_export_from<R: BufRead>(
    path: &Path,
    open: impl Fn() -> std::io::Result<R>,
    key: &VerifyingKey,
    extra_checkpoints: &[Checkpoint],
) -> Result<VerifyReport, VerifyError> {
    let open = || {
        open().map_err(|source| VerifyError::ExportRead {
            path: path.to_owned(),
            source,
        })
    };
    let read_err = |source| VerifyError::ExportRead {
        path: PathBuf::from(path),
        source,
    };
    // Pass 1: checkpoints (the chain walk needs them before the rows).
    let mut cps = extra_checkpoints.to_vec();
    for line in open()?.lines() {
        let line = line.map_err(read_err)?;
        if let Ok(ExportLine::Checkpoint(cp)) = serde_json::from_str::<ExportLine>(&line) {
            cps.push(cp);
        }
    }
    // Pass 2: records in file order.
    let mut v = ChainVerifier::new(key, cps);
    let mut last_seq = 0u64;
    for (i, line) in open()?.lines().enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let item = match serde_json::from_str::<ExportLine>(&line) {
            Ok(ExportLine::Record(r)) => {
                last_seq = r.seq;
                Ok(r)
            }
            Ok(ExportLine::Checkpoint(_)) => continue,
            // An OCSF export carries each record in its event.
            Err(e) => match ocsf_record(&line) {
                Some(r) => {
                    last_seq = r.seq;
                    Ok(r)
                }
                None => Err((last_seq + 1, format!("line {}: {e}", i + 1))),
            },
        };
        if !v.push(item) {
            break;
        }
    }
    v.finish().map_err(VerifyError::Tampered)
}

/// The record inside an OCSF event line (`agentctl audit export --format ocsf`).
fn ocsf_record(line: &str) -> Option<Record> {
    super::ocsf::record_of(&serde_json::from_str(line).ok()?)
}

/// Writes records with `seq > after` as OCSF events, one a line (no
/// checkpoints: OCSF has no place for them; verify such an export with the
/// database's checkpoints or a checkpoint file). Returns how many.
pub fn export_ocsf(
    conn: &rusqlite::Connection,
    path: &Path,
    after: u64,
    ctx: &super::ocsf::Context,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    conn.execute_batch("BEGIN")
        .map_err(store::sql(path, "begin read"))?;
    let result = (|| {
        let (mut cursor, mut n) = (after, 0);
        loop {
            let page = store::records_after(conn, path, cursor, PAGE)?;
            if page.is_empty() {
                break;
            }
            for r in page {
                cursor = r.seq;
                n += 1;
                serde_json::to_writer(&mut *out, &super::ocsf::event(&r, ctx))
                    .map_err(|e| ExportError::Write { source: e.into() })?;
                out.write_all(b"\n")
                    .map_err(|source| ExportError::Write { source })?;
            }
        }
        out.flush()
            .map_err(|source| ExportError::Write { source })?;
        Ok(n)
    })();
    let _ = conn.execute_batch("COMMIT");
    result
}
