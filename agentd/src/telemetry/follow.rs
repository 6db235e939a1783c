//! Following the audit log: every row committed after a position, in
//! order, handed to a consumer (the metrics counters, the OCSF sink). Woken
//! by the writer's commit counter; rows are read from the database like the
//! console's stream, so the decision path carries no telemetry code.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::{store, Record};

/// Rows read per database round trip while catching up.
const CHUNK: u64 = 1_000;

/// Something that takes committed rows in order. An error leaves the
/// position where it was: the same rows come again after a pause.
pub trait RowConsumer: Send + Sync + 'static {
    /// Short name for logs.
    fn name(&self) -> &'static str;
    /// Takes the next rows (seq ascending, none skipped).
    fn take(&self, rows: &[Record]) -> Result<(), String>;
    /// Where the consumer's own store says it is, when it knows better than
    /// the follower (a remote store that already holds rows, or lost some):
    /// the next rows read are those after it. None: keep the position.
    fn resume_after(&self) -> Option<u64> {
        None
    }
}

/// First pause after a consumer's error; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between retries of a failing consumer.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Hands every row with seq > `after` to `consumer` as rows are committed,
/// until `stop` turns true or the log closes.
pub async fn follow(
    consumer: Arc<dyn RowConsumer>,
    db: PathBuf,
    mut after: u64,
    mut committed: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let head = *committed.borrow_and_update();
        let mut failed = false;
        while after < head {
            if let Some(at) = consumer.resume_after() {
                after = at;
                if after >= head {
                    break;
                }
            }
            let (c, path) = (consumer.clone(), db.clone());
            let read = tokio::task::spawn_blocking(move || -> Result<u64, String> {
                let conn = store::open_ro(&path).map_err(|e| e.to_string())?;
                let rows =
                    store::records_after(&conn, &path, after, CHUNK).map_err(|e| e.to_string())?;
                c.take(&rows)?;
                Ok(rows.last().map_or(after, |r| r.seq))
            })
            .await
            .unwrap_or_else(|e| Err(format!("reader task failed: {e}")));
            match read {
                Ok(last) if last > after => {
                    after = last;
                    backoff = FIRST_BACKOFF;
                }
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(consumer = consumer.name(), %error, retry_in_ms = backoff.as_millis() as u64,
                        "audit follower: retrying");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            // Retry without waiting for a new commit: rows already committed
            // must reach the consumer even if the log then stays quiet.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        // At most every 100 ms: a burst of commits is one read.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}
