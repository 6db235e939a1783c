//! Fleet-wide nonces: every verified message's (operator, nonce) is
//! inserted into `agentd_nonces` under a unique key, so the second host to
//! see the same message finds it there and refuses it (`replayed_nonce`).
//!
//! PostgreSQL unreachable (refused, or silent past `[fleet] timeout_ms`):
//! for `lease_secs` after the last successful contact new messages are
//! still accepted on the local check alone, and their nonces are recorded
//! when PostgreSQL returns (a replay found then is audited as
//! `fleet_late_replay`); past the lease — at once with `lease_secs = 0`,
//! and from start-up until the first contact — new messages are refused
//! (`fleet_unavailable`). Tool calls on messages already accepted never
//! ask PostgreSQL. Losing and regaining PostgreSQL are audited.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::conn::{PgConn, PgSettings};
use super::{schema, FleetError};
use crate::audit::{AuditEvent, AuditLog, RecordKind};
use crate::gateway::shared_nonces::{SharedNonceVerdict, SharedNonces};

/// Audit action of the rows recording PostgreSQL lost and regained.
pub const LINK_ACTION: &str = "fleet_link";
/// Reason code: PostgreSQL stopped answering.
pub const REASON_UNREACHABLE: &str = "fleet_unreachable";
/// Reason code: PostgreSQL answers again.
pub const REASON_REACHABLE: &str = "fleet_reachable";
/// Reason code: a nonce accepted under the lease had been used elsewhere.
pub const REASON_LATE_REPLAY: &str = "fleet_late_replay";

/// Most nonces remembered under the lease (beyond it, new messages are
/// refused as if the lease were over).
const MAX_PENDING: usize = 100_000;
/// How often the link is checked and expired nonces pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The fleet-wide nonce register.
pub struct FleetNonces {
    pg: PgSettings,
    host_id: String,
    lease: Duration,
    audit: AuditLog,
    conn: RwLock<Option<Arc<PgConn>>>,
    /// Serialises connection attempts (one at a time, at most one a second).
    connecting: tokio::sync::Mutex<Option<Instant>>,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last successful contact; 0: never.
    last_ok_ms: AtomicU64,
    /// Whether the link is down (for auditing the transitions once).
    down: AtomicBool,
    /// Nonces accepted under the lease, to record when PostgreSQL returns.
    pending: Mutex<Vec<(String, String, i64)>>,
}

/// Starts the register's link keeper (heartbeat, pruning, reconnecting).
pub fn start(
    pg: PgSettings,
    host_id: String,
    lease: Duration,
    audit: AuditLog,
    stop: watch::Receiver<bool>,
) -> Arc<FleetNonces> {
    let n = Arc::new(FleetNonces {
        pg,
        host_id,
        lease,
        audit,
        conn: RwLock::new(None),
        connecting: tokio::sync::Mutex::new(None),
        epoch: Instant::now(),
        last_ok_ms: AtomicU64::new(0),
        down: AtomicBool::new(false),
        pending: Mutex::new(Vec::new()),
    });
    tokio::spawn(keep_link(n.clone(), stop));
    n
}

impl SharedNonces for FleetNonces {
    fn claim<'a>(
        &'a self,
        operator: &'a str,
        nonce: &'a str,
        now: i64,
        expires_at: i64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = SharedNonceVerdict> + Send + 'a>> {
        Box::pin(self.claim_inner(operator, nonce, now, expires_at))
    }
}

impl FleetNonces {
    async fn claim_inner(
        &self,
        operator: &str,
        nonce: &str,
        now: i64,
        expires_at: i64,
    ) -> SharedNonceVerdict {
        let error = match self.link().await {
            Ok(conn) => match self.insert(&conn, operator, nonce, now, expires_at).await {
                Ok(verdict) => return verdict,
                Err(e) => {
                    self.lost(&conn, &e);
                    e
                }
            },
            Err(e) => e,
        };
        self.under_lease(operator, nonce, expires_at, &error)
    }

    /// The decision when PostgreSQL cannot be asked.
    fn under_lease(
        &self,
        operator: &str,
        nonce: &str,
        expires_at: i64,
        error: &FleetError,
    ) -> SharedNonceVerdict {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        let since = self
            .epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(last));
        let in_lease = last != 0 && !self.lease.is_zero() && since <= self.lease;
        if in_lease {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if p.len() < MAX_PENDING {
                p.push((operator.to_owned(), nonce.to_owned(), expires_at));
                tracing::warn!(host_id = %self.host_id, %error, since_ms = since.as_millis() as u64,
                    "fleet: PostgreSQL unreachable; message accepted under the lease");
                return SharedNonceVerdict::Fresh;
            }
        }
        let detail = if last == 0 {
            format!("PostgreSQL has not been reached since agentd started ({error})")
        } else {
            format!(
                "PostgreSQL last answered {} s ago, past the {} s lease ({error})",
                since.as_secs(),
                self.lease.as_secs()
            )
        };
        SharedNonceVerdict::Unavailable { detail }
    }

    /// The live connection, connecting if there is none (at most one
    /// attempt a second, each within the time bound).
    async fn link(&self) -> Result<Arc<PgConn>, FleetError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let wait = tokio::time::timeout(self.pg.timeout, self.connecting.lock()).await;
        let mut last_try = wait.map_err(|_| FleetError::Timeout("waiting for a connection"))?;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        if last_try.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Err(FleetError::Postgres("unreachable (retrying)".into()));
        }
        *last_try = Some(Instant::now());
        let mut conn = self.pg.connect().await?;
        schema::ensure(&self.pg, &mut conn.client).await?;
        let conn = Arc::new(conn);
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        self.touch();
        self.regained(&conn).await;
        Ok(conn)
    }

    fn current(&self) -> Option<Arc<PgConn>> {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis().max(1) as u64;
        self.last_ok_ms.store(ms, Ordering::Relaxed);
    }

    /// Claims one nonce: Fresh, or Replayed with the host that has it.
    async fn insert(
        &self,
        conn: &PgConn,
        operator: &str,
        nonce: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<SharedNonceVerdict, FleetError> {
        let c = &conn.client;
        // An expired row may be reused; a live one means replay.
        let n = self
            .pg
            .bounded(
                "claiming a nonce",
                c.execute(
                    "INSERT INTO agentd_nonces (operator, nonce, host_id, expires_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (operator, nonce) DO UPDATE
                       SET host_id = excluded.host_id, expires_at = excluded.expires_at
                       WHERE agentd_nonces.expires_at <= $5",
                    &[&operator, &nonce, &self.host_id, &expires_at, &now],
                ),
            )
            .await?;
        self.touch();
        if n == 1 {
            return Ok(SharedNonceVerdict::Fresh);
        }
        let host = self
            .pg
            .bounded(
                "reading a nonce's host",
                c.query_opt(
                    "SELECT host_id FROM agentd_nonces WHERE operator = $1 AND nonce = $2",
                    &[&operator, &nonce],
                ),
            )
            .await?
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default();
        Ok(SharedNonceVerdict::Replayed { host })
    }

    /// Drops `conn` after a failure (unless another already replaced it)
    /// and audits the loss once.
    fn lost(&self, conn: &Arc<PgConn>, error: &FleetError) {
        {
            let mut cur = self.conn.write().unwrap_or_else(|p| p.into_inner());
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *cur = None;
            }
        }
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(host_id = %self.host_id, %error, "fleet: PostgreSQL unreachable");
            self.audit_link(REASON_UNREACHABLE, error.to_string());
        }
    }

    /// After a (re)connection: records the nonces accepted under the
    /// lease, and audits the return if the link had been down.
    async fn regained(&self, conn: &PgConn) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let now = crate::gateway::unix_now();
        let mut late = Vec::new();
        for (i, (op, nonce, exp)) in pending.iter().enumerate() {
            match self.insert(conn, op, nonce, now, *exp).await {
                Ok(SharedNonceVerdict::Replayed { host }) => {
                    late.push(format!("{op}/{nonce}@{host}"))
                }
                Ok(_) => {}
                Err(_) => {
                    // Down again: keep what is left for the next return.
                    self.pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(pending[i..].iter().cloned());
                    return;
                }
            }
        }
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(host_id = %self.host_id, recorded = pending.len(),
                "fleet: PostgreSQL reachable again");
            self.audit_link(
                REASON_REACHABLE,
                format!("recorded {} nonces accepted under the lease", pending.len()),
            );
        }
        for what in late {
            tracing::error!(host_id = %self.host_id, nonce = %what,
                "fleet: a message accepted under the lease had been used on another host");
            self.audit_link(REASON_LATE_REPLAY, what);
        }
    }

    fn audit_link(&self, reason: &str, target: String) {
        let mut ev = AuditEvent::new(RecordKind::Lifecycle, LINK_ACTION);
        ev.decision = if reason == REASON_REACHABLE {
            "info"
        } else {
            "deny"
        }
        .into();
        ev.reason_code = reason.into();
        ev.target = target;
        let audit = self.audit.clone();
        tokio::spawn(async move {
            if let Err(e) = audit.append(ev).await {
                tracing::error!(error = %e, "fleet: could not audit a link change");
            }
        });
    }

    /// One heartbeat: keeps the lease fresh while the link works, notices
    /// a dead link without waiting for a message, prunes expired nonces.
    async fn heartbeat(&self, prune: bool) {
        let conn = match self.link().await {
            Ok(c) => c,
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::error!(host_id = %self.host_id, error = %e, "fleet: PostgreSQL unreachable");
                    self.audit_link(REASON_UNREACHABLE, e.to_string());
                }
                return;
            }
        };
        let c = &conn.client;
        let result = if prune {
            self.pg
                .bounded(
                    "pruning expired nonces",
                    c.execute(
                        "DELETE FROM agentd_nonces WHERE expires_at < $1",
                        &[&crate::gateway::unix_now()],
                    ),
                )
                .await
                .map(|_| ())
        } else {
            self.pg
                .bounded("heartbeat", c.simple_query("SELECT 1"))
                .await
                .map(|_| ())
        };
        match result {
            Ok(()) => self.touch(),
            Err(e) => self.lost(&conn, &e),
        }
    }
}

/// Heartbeats a few times per lease (at least once every 5 s).
async fn keep_link(n: Arc<FleetNonces>, mut stop: watch::Receiver<bool>) {
    let every = (n.lease / 3).clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut last_prune = Instant::now();
    loop {
        let prune = last_prune.elapsed() >= PRUNE_EVERY;
        if prune {
            last_prune = Instant::now();
        }
        n.heartbeat(prune).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register whose PostgreSQL does not exist (connections refused at once).
    fn register(lease_secs: u64, dir: &std::path::Path) -> Arc<FleetNonces> {
        let pg = PgSettings::parse(
            &format!(
                "host={} user=nobody dbname=none",
                dir.join("nowhere").display()
            ),
            Duration::from_millis(300),
        )
        .unwrap();
        let audit = AuditLog::open(dir, crate::config::Durability::Normal).unwrap();
        Arc::new(FleetNonces {
            pg,
            host_id: "h".into(),
            lease: Duration::from_secs(lease_secs),
            audit,
            conn: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(None),
            epoch: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn the_lease_decides_while_postgres_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let n = register(30, dir.path());
        // Never reached since start: no lease.
        let v = n.claim("olivia", "n1", 100, 700).await;
        assert!(
            matches!(v, SharedNonceVerdict::Unavailable { ref detail } if detail.contains("not been reached")),
            "{v:?}"
        );
        // Reached a moment ago: accepted under the lease, remembered for later.
        n.touch();
        assert_eq!(
            n.claim("olivia", "n2", 100, 700).await,
            SharedNonceVerdict::Fresh
        );
        assert_eq!(n.pending.lock().unwrap().len(), 1);
        // The lease over: refused.
        n.last_ok_ms.store(1, Ordering::Relaxed);
        let n_old = FleetNonces {
            epoch: Instant::now() - Duration::from_secs(31),
            ..Arc::try_unwrap(n).ok().unwrap()
        };
        let v = n_old.claim("olivia", "n3", 100, 700).await;
        assert!(
            matches!(v, SharedNonceVerdict::Unavailable { ref detail } if detail.contains("lease")),
            "{v:?}"
        );
    }

    #[tokio::test]
    async fn lease_zero_refuses_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let n = register(0, dir.path());
        n.touch();
        let v = n.claim("olivia", "n1", 100, 700).await;
        assert!(matches!(v, SharedNonceVerdict::Unavailable { .. }), "{v:?}");
        assert!(n.pending.lock().unwrap().is_empty());
    }
}
