//! The metrics endpoint: a follower that counts every committed audit row
//! (woken by the writer's commit counter, reading the rows from the
//! database like the console's stream) and a loopback HTTP listener whose
//! `GET /metrics` adds the gauges read at that moment.
use std::sync::Arc;

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use tokio::sync::watch;

use super::metrics::{Metrics, MetricsError, Shipping, Snapshot};
use crate::audit::AuditLog;
use crate::enforce::EnforceSlot;
use crate::receipt::queue::ReceiptQueue;

/// What `/metrics` reads from.
#[derive(Clone)]
pub struct Sources {
    /// The audit log (rows counted, writer totals).
    pub audit: AuditLog,
    /// The enforcer (grants, kernel counters), once started.
    pub enforce: EnforceSlot,
    /// The receipt queue (backlog).
    pub receipts: Option<ReceiptQueue>,
    /// Fleet mode: the highest seq PostgreSQL holds for this host.
    pub shipped: Option<super::ShippedSeq>,
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
    // Counting starts at the head when the daemon starts (counters are
    // per process, as Prometheus expects).
    let committed = sources.audit.subscribe();
    let head = *committed.borrow();
    tokio::spawn(super::follow::follow(
        metrics.clone(),
        sources.audit.db_path().to_owned(),
        head,
        committed,
        stop,
    ));
    Ok(Router::new()
        .route("/metrics", get(scrape))
        .with_state(Shared { metrics, sources }))
}

impl super::follow::RowConsumer for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn take(&self, rows: &[crate::audit::Record]) -> Result<(), String> {
        rows.iter().for_each(|r| self.observe(r));
        Ok(())
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
        shipping: s.shipped.as_ref().map(|p| shipping(&s.audit, p)),
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

/// How far shipping trails the log: rows, and the age of the oldest row
/// not shipped yet (read from the log; 0 when nothing waits).
fn shipping(audit: &AuditLog, position: &super::ShippedSeq) -> Shipping {
    let shipped = position.load(std::sync::atomic::Ordering::Relaxed);
    let head = *audit.subscribe().borrow();
    let lag_rows = head.saturating_sub(shipped);
    let oldest = (lag_rows > 0)
        .then(|| {
            let db = audit.db_path();
            let conn = crate::audit::store::open_ro(db).ok()?;
            crate::audit::store::record_at(&conn, db, shipped + 1).ok()?
        })
        .flatten();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let lag_secs = oldest
        .and_then(|r| crate::audit::timefmt::parse_micros(&r.timestamp))
        .map_or(0.0, |at| (now_us - at).max(0) as f64 / 1e6);
    Shipping {
        shipped_seq: shipped,
        lag_rows,
        lag_secs,
    }
}
