//! The OCSF sink (`[ocsf] path`): every committed audit row, as an OCSF
//! event, appended to a JSON Lines file a SIEM shipper tails. It resumes
//! after the last event the file holds, or — when the file was rotated
//! away — after the position it last recorded in the state directory, so a
//! restart neither repeats nor skips rows.
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::follow::{follow, RowConsumer};
use crate::audit::{ocsf, AuditLog, Record};

/// Errors starting the sink.
#[derive(Debug, thiserror::Error)]
pub enum OcsfSinkError {
    /// The sink file or its position file could not be opened or read.
    #[error("OCSF sink {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

struct Sink {
    out: Mutex<File>,
    position: PathBuf,
    ctx: ocsf::Context,
}

impl RowConsumer for Sink {
    fn name(&self) -> &'static str {
        "ocsf"
    }

    fn take(&self, rows: &[Record]) -> Result<(), String> {
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let mut buf = Vec::with_capacity(rows.len() * 1024);
        for r in rows {
            serde_json::to_writer(&mut buf, &ocsf::event(r, &self.ctx))
                .map_err(|e| e.to_string())?;
            buf.push(b'\n');
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // One write per batch: a shipper never sees half a batch's line.
        out.write_all(&buf)
            .map_err(|e| format!("writing the OCSF file: {e}"))?;
        std::fs::write(&self.position, last.seq.to_string())
            .map_err(|e| format!("recording the OCSF position: {e}"))
    }
}

/// Starts appending OCSF events to `path` (created 0600) for rows committed
/// from now on and for any the file does not hold yet.
pub fn start(
    path: &Path,
    state_dir: &Path,
    audit: &AuditLog,
    stop: watch::Receiver<bool>,
) -> Result<(), OcsfSinkError> {
    let err = |p: &Path| {
        let p = p.to_owned();
        move |source| OcsfSinkError::File { path: p, source }
    };
    let position = state_dir.join("ocsf-sink.position");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(err(path))?;
    let after = match last_sequence(&mut file).map_err(err(path))? {
        Some(seq) => seq,
        None => match std::fs::read_to_string(&position) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(err(&position)(e)),
        },
    };
    tracing::info!(path = %path.display(), after, "OCSF sink appending audit rows");
    let sink = Arc::new(Sink {
        out: Mutex::new(file),
        position,
        ctx: ocsf::Context::local(),
    });
    tokio::spawn(follow(
        sink,
        audit.db_path().to_owned(),
        after,
        audit.subscribe(),
        stop,
    ));
    Ok(())
}

/// The `metadata.sequence` of the file's last complete event, if any.
fn last_sequence(file: &mut File) -> std::io::Result<Option<u64>> {
    let len = file.seek(SeekFrom::End(0))?;
    // Events are a few KiB at most; the last 256 KiB hold the last line.
    file.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)))?;
    let mut last = None;
    for line in BufReader::new(&mut *file).lines() {
        let line = line?;
        if let Some(seq) = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.pointer("/metadata/sequence").and_then(|s| s.as_u64()))
        {
            last = Some(seq);
        }
    }
    file.seek(SeekFrom::End(0))?;
    Ok(last)
}
