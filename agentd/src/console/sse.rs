//! The live audit stream: server-sent events, one `row` event per audit
//! row that passes the page's filters.
//!
//! The audit writer publishes only the seq of its newest commit (a watch
//! channel: one store per batch, nothing per row), so an open page costs
//! the decision path nothing; the stream's own task wakes on it and reads
//! the new rows from the database with a read-only connection. Nothing is
//! lost when a page is slow: it reads from where it stopped. A reconnecting
//! `EventSource` sends `Last-Event-ID` and resumes after that row.
use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame};
use rusqlite::Connection;
use tokio::sync::{mpsc, watch};

use super::filter::{RowFilter, RowView};
use crate::audit::store::{self, StoreError};
use crate::audit::Record;

/// Rows read from the database per query.
const CHUNK: u64 = 512;
/// Rows scanned backwards at most to fill the opening backlog.
const BACKLOG_SCAN: u64 = 50_000;
/// A comment line this often keeps proxies and the browser from timing out.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Reads of new rows are at least this far apart: under load one read
/// (and one write to the page) carries many commits' rows, so an open page
/// costs a bounded number of queries per second, not one per commit; a
/// row of a quiet log still goes out at once.
const MIN_READ_GAP: Duration = Duration::from_millis(20);

/// A response body fed by a channel (one frame per message).
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// One `row` event (the JSON has no newline, so it is one `data:` line).
pub fn row_event(r: &Record) -> Bytes {
    let json = serde_json::to_string(&RowView::from(r)).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("id: {}\nevent: row\ndata: {json}\n\n", r.seq))
}

/// What one stream shows and where it starts.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Filters.
    pub filter: RowFilter,
    /// Resume after this seq (no backlog); None: open with the backlog.
    pub after: Option<u64>,
    /// Rows of history shown first (the newest that match).
    pub backlog: usize,
}

/// A read-only connection shared with blocking reads.
#[derive(Clone)]
pub struct Reader {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Reader {
    /// Opens the audit database read-only.
    pub fn open(path: PathBuf) -> Result<Self, StoreError> {
        let conn = store::open_ro(&path)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &std::path::Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let c = me.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&c, &me.path)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Malformed {
                path: PathBuf::new(),
                seq: 0,
                message: format!("reader task failed: {e}"),
            })
        })
    }

    /// Rows after `after`, ascending, at most [`CHUNK`].
    pub async fn after(&self, after: u64) -> Result<Vec<Record>, StoreError> {
        self.blocking(move |c, p| store::records_after(c, p, after, CHUNK))
            .await
    }

    /// The newest `n` rows passing `filter` (scanning at most
    /// [`BACKLOG_SCAN`] rows back), ascending, and the newest seq seen.
    pub async fn backlog(
        &self,
        filter: RowFilter,
        n: usize,
    ) -> Result<(Vec<Record>, u64), StoreError> {
        self.blocking(move |c, p| {
            let head = store::seq_range(c, p)?.map_or(0, |(_, hi)| hi);
            let mut out = Vec::new();
            let mut before = head + 1;
            let mut scanned = 0;
            while out.len() < n && before > 1 && scanned < BACKLOG_SCAN {
                let rows = records_before(c, p, before, CHUNK)?;
                if rows.is_empty() {
                    break;
                }
                scanned += rows.len() as u64;
                before = rows.last().map_or(0, |r| r.seq);
                out.extend(
                    rows.into_iter()
                        .filter(|r| filter.matches(r))
                        .take(n - out.len()),
                );
            }
            out.reverse();
            Ok((out, head))
        })
        .await
    }
}

/// Rows with `seq < before`, descending, at most `limit`.
pub fn records_before(
    conn: &Connection,
    path: &std::path::Path,
    before: u64,
    limit: u64,
) -> Result<Vec<Record>, StoreError> {
    let q = format!(
        "SELECT {} FROM audit_records WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
        store::RECORD_COLUMNS
    );
    super::views::query(
        conn,
        path,
        &q,
        rusqlite::params![before as i64, limit as i64],
    )
}

/// Feeds one stream until the page goes away, the session ends
/// (`alive` turns false), or agentd stops.
pub async fn feed(
    reader: Reader,
    spec: StreamSpec,
    mut committed: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
    alive: impl Fn() -> bool + Send + 'static,
    tx: mpsc::Sender<Bytes>,
) {
    if !send(&tx, Bytes::from_static(b"retry: 2000\n\n")).await {
        return;
    }
    let Some(head) = send_backlog(&reader, &spec, &tx).await else {
        return;
    };
    // The page knows the history is complete and the rest is live.
    if !send(
        &tx,
        Bytes::from(format!("event: live\ndata: {{\"head\":{head}}}\n\n")),
    )
    .await
    {
        return;
    }
    let mut live = Live {
        last: head,
        last_read: tokio::time::Instant::now() - MIN_READ_GAP,
    };
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        // Catch up first: rows may have been committed while we sent.
        if !live.catch_up(&reader, &spec, &mut committed, &tx).await {
            return;
        }
        // Decide inside the select, act after it (the select's borrows
        // must not live across an await).
        let tick = tokio::select! {
            c = committed.changed() => if c.is_err() { return } else { false },
            _ = stop.wait_for(|s| *s) => return,
            _ = keepalive.tick() => true,
            _ = tx.closed() => return,
        };
        if tick && (!alive() || !send(&tx, Bytes::from_static(b": keep-alive\n\n")).await) {
            return;
        }
    }
}

/// Sends one frame; false once the page has gone.
async fn send(tx: &mpsc::Sender<Bytes>, b: Bytes) -> bool {
    tx.send(b).await.is_ok()
}

/// Sends the backlog the page asked for (none when it resumes after a
/// known row) and returns the row it ends at; `None` when the stream ends.
async fn send_backlog(reader: &Reader, spec: &StreamSpec, tx: &mpsc::Sender<Bytes>) -> Option<u64> {
    if let Some(after) = spec.after {
        return Some(after);
    }
    match reader.backlog(spec.filter.clone(), spec.backlog).await {
        Ok((rows, head)) => {
            for r in &rows {
                if !send(tx, row_event(r)).await {
                    return None;
                }
            }
            Some(head)
        }
        Err(e) => {
            tracing::warn!(error = %e, "console stream: reading the backlog failed");
            let _ = send(tx, error_event(&e.to_string())).await;
            None
        }
    }
}

/// Where a live stream stands: the last row sent and when it last read.
struct Live {
    last: u64,
    last_read: tokio::time::Instant,
}

impl Live {
    /// Sends every committed row after the last one sent that the filter
    /// matches, reading at most once per [`MIN_READ_GAP`]; false when the
    /// stream ends.
    async fn catch_up(
        &mut self,
        reader: &Reader,
        spec: &StreamSpec,
        committed: &mut watch::Receiver<u64>,
        tx: &mpsc::Sender<Bytes>,
    ) -> bool {
        while *committed.borrow_and_update() > self.last {
            tokio::time::sleep_until(self.last_read + MIN_READ_GAP).await;
            self.last_read = tokio::time::Instant::now();
            let rows = match reader.after(self.last).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "console stream: reading new rows failed");
                    let _ = send(tx, error_event(&e.to_string())).await;
                    return false;
                }
            };
            let Some(end) = rows.last().map(|r| r.seq) else {
                break;
            };
            // One frame (one write) for the whole read.
            let mut batch = Vec::new();
            for r in rows.iter().filter(|r| spec.filter.matches(r)) {
                batch.extend_from_slice(&row_event(r));
            }
            if !batch.is_empty() && !send(tx, Bytes::from(batch)).await {
                return false;
            }
            self.last = end;
        }
        true
    }
}

fn error_event(msg: &str) -> Bytes {
    let json = serde_json::json!({ "message": msg }).to_string();
    Bytes::from(format!("event: failure\ndata: {json}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog, RecordKind};
    use crate::config::Durability;

    async fn next_rows(rx: &mut mpsc::Receiver<Bytes>, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("an event within 10 s")
                .expect("stream open");
            let s = String::from_utf8_lossy(&b).into_owned();
            for ev in s.split_terminator("\n\n") {
                if ev.contains("event: row") {
                    out.push(format!("{ev}\n\n"));
                }
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backlog_then_live_rows_filtered_and_none_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Durability::Normal).unwrap();
        for i in 0..5 {
            let mut e = AuditEvent::new(RecordKind::ToolCall, "shell");
            e.decision = if i % 2 == 0 { "deny" } else { "allow" }.into();
            log.append(e).await.unwrap();
        }
        let reader = Reader::open(log.db_path().to_owned()).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let (_stop_tx, stop) = watch::channel(false);
        let spec = StreamSpec {
            filter: RowFilter {
                decision: Some("deny".into()),
                ..Default::default()
            },
            after: None,
            backlog: 2,
        };
        tokio::spawn(feed(reader, spec, log.subscribe(), stop, || true, tx));
        // The backlog: the two newest denials (seq 4 and 6; seq 1 is audit_open).
        let first = next_rows(&mut rx, 2).await;
        assert!(
            first[0].starts_with("id: 4\n") && first[1].starts_with("id: 6\n"),
            "{first:?}"
        );
        // Live: 300 more rows in bursts; every denial arrives, in order, once.
        for i in 0..300 {
            let mut e = AuditEvent::new(RecordKind::Kernel, "exec");
            e.decision = if i % 3 == 0 { "deny" } else { "allow" }.into();
            e.target = "<script>alert(1)</script>".into();
            log.append(e).await.unwrap();
        }
        let live = next_rows(&mut rx, 100).await;
        let seqs: Vec<u64> = live
            .iter()
            .map(|s| s[4..s.find('\n').unwrap()].parse().unwrap())
            .collect();
        assert_eq!(seqs, (0..100).map(|k| 7 + 3 * k).collect::<Vec<u64>>());
        // The payload travels as JSON text; the page puts it in as text.
        assert!(live[0].contains(r#""target":"<script>alert(1)</script>""#));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resumed_stream_starts_after_the_last_event_and_stop_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Durability::Normal).unwrap();
        for _ in 0..4 {
            log.append(AuditEvent::new(RecordKind::Admin, "x"))
                .await
                .unwrap();
        }
        let reader = Reader::open(log.db_path().to_owned()).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let (stop_tx, stop) = watch::channel(false);
        let spec = StreamSpec {
            filter: RowFilter::default(),
            after: Some(3),
            backlog: 100,
        };
        let task = tokio::spawn(feed(reader, spec, log.subscribe(), stop, || true, tx));
        let rows = next_rows(&mut rx, 2).await;
        assert!(rows[0].starts_with("id: 4\n") && rows[1].starts_with("id: 5\n"));
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the stream ends when agentd stops")
            .unwrap();
    }
}
