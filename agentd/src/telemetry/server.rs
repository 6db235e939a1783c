//! The metrics endpoint: a follower that counts every committed audit row
//! (woken by the writer's commit counter, reading the rows from the
//! database like the console's stream) and a loopback HTTP listener whose
//! `GET /metrics` adds the gauges read at that moment.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use tokio::sync::watch;

use super::metrics::{Metrics, MetricsError, Snapshot};
use crate::audit::{store, AuditLog};
use crate::enforce::EnforceSlot;
use crate::receipt::queue::ReceiptQueue;

/// Rows read per database round trip while catching up.
const CHUNK: u64 = 1_000;

/// What `/metrics` reads from.
#[derive(Clone)]
pub struct Sources {
    /// The audit log (rows counted, writer totals).
    pub audit: AuditLog,
    /// The enforcer (grants, kernel counters), once started.
    pub enforce: EnforceSlot,
    /// The receipt queue (backlog).
    pub receipts: Option<ReceiptQueue>,
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    sources: Sources,
}

/// Starts counting rows committed from now on and returns the router that
/// serves `/metrics`.
pub fn start(sources: Sources, stop: watch::Receiver<bool>) -> Result<Router, MetricsError> {
    let metrics = Arc::new(Metrics::new()?);
    tokio::spawn(follow(
        metrics.clone(),
        sources.audit.db_path().to_owned(),
        sources.audit.subscribe(),
        stop,
    ));
    Ok(Router::new()
        .route("/metrics", get(scrape))
        .with_state(Shared { metrics, sources }))
}

/// Counts rows as they are committed. Counting starts at the head when the
/// daemon starts (counters are per process, as Prometheus expects).
async fn follow(
    metrics: Arc<Metrics>,
    db: PathBuf,
    mut committed: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut after = *committed.borrow_and_update();
    loop {
        let head = *committed.borrow_and_update();
        while after < head {
            let (m, path) = (metrics.clone(), db.clone());
            let read = tokio::task::spawn_blocking(move || -> Result<u64, store::StoreError> {
                let conn = store::open_ro(&path)?;
                let rows = store::records_after(&conn, &path, after, CHUNK)?;
                let last = rows.last().map_or(after, |r| r.seq);
                rows.iter().for_each(|r| m.observe(r));
                Ok(last)
            })
            .await;
            match read {
                Ok(Ok(last)) if last > after => after = last,
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "metrics: reading audit rows failed; retrying");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: reader task failed");
                    break;
                }
            }
        }
        // At most every 100 ms: a burst of commits is one read.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

async fn scrape(State(s): State<Shared>) -> impl IntoResponse {
    let snapshot =
        tokio::task::spawn_blocking(move || snapshot(&s.sources).map(|n| (s.metrics, n)))
            .await
            .ok()
            .flatten();
    let rendered = snapshot.map(|(m, now)| m.render(&now));
    match rendered {
        Some(Ok(text)) => (
            axum::http::StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Some(Err(e)) => {
            tracing::error!(error = %e, "metrics: rendering failed");
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
        None => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics unavailable",
        )
            .into_response(),
    }
}

fn snapshot(s: &Sources) -> Option<Snapshot> {
    let (kernel, grants_live) = match s.enforce.get() {
        Some(e) => (
            Some(e.counters()),
            e.list_agents()
                .into_iter()
                .map(|a| (a.name, a.calls.len() as u64))
                .collect(),
        ),
        None => (None, Vec::new()),
    };
    let queue = s
        .receipts
        .as_ref()
        .and_then(|q| q.stats().ok())
        .unwrap_or_default();
    Some(Snapshot {
        audit: s.audit.stats(),
        grants_live,
        kernel,
        receipts_pending: queue.pending,
        receipts_failed: queue.failed,
        receipts_void: queue.void,
        receipts_rendered: s
            .receipts
            .as_ref()
            .map(|q| q.render_stats())
            .unwrap_or_default(),
    })
}
