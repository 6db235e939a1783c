//! The approval queue: escalated calls waiting for a human. Each waits on
//! a oneshot channel, bounded in time and in number; the queue is also
//! written to `state_dir/approvals.db` so that a restart turns every call
//! that was waiting into an audited expiry — never into an allow (the
//! caller's connection died with the old daemon; nothing is resumed).
//!
//! Answers come from admins (`/v1/approvals/{id}/approve|deny`, the console)
//! and from the chat-ops webhook's signed callback; exactly one answer
//! wins (it takes the entry out of the map), later ones are refused.
//! Pure rules (deadlines, signatures) are in `policy::approval`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::audit::{AuditEvent, AuditLog, RecordKind};
use crate::policy::approval::{self as rules, CallbackError, NonceMemory};
pub use crate::policy::approval::{Answer, Channel, PendingApproval, Status};
use crate::protocol::reason;

/// Decided rows are kept this long (a late answer hears "already decided").
const KEEP_DECIDED_SECS: i64 = 7 * 24 * 3600;

/// Errors of the approval queue.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// `approvals.db` failed.
    #[error("approval store {path}: {context}: {source}")]
    Store {
        path: PathBuf,
        context: &'static str,
        source: rusqlite::Error,
    },
    /// Creating the store file failed.
    #[error("approval store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Too many calls wait already.
    #[error("{max} calls already wait for approval")]
    Full { max: usize },
    /// No approval has this id.
    #[error("no approval `{id}`")]
    Unknown { id: String },
    /// It was answered, timed out, expired or abandoned already.
    #[error("approval `{id}` is already {status}")]
    AlreadyDecided { id: String, status: &'static str },
    /// A webhook callback was refused.
    #[error(transparent)]
    Callback(#[from] CallbackError),
    /// Callbacks need `[approvals.webhook]`.
    #[error("no [approvals.webhook] is configured; callbacks are refused")]
    NoWebhook,
    /// The approver's row could not be recorded; the call was denied.
    #[error("the audit log could not record the answer ({0}); the call is denied")]
    Audit(String),
    /// agentd is stopping: no call starts waiting now.
    #[error("agentd is stopping; no call waits for approval now")]
    Stopping,
}

impl ApprovalError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Store { .. } | Self::Io { .. } => reason::STORE_ERROR,
            Self::Full { .. } => reason::APPROVAL_QUEUE_FULL,
            Self::Unknown { .. } => reason::UNKNOWN_APPROVAL,
            Self::AlreadyDecided { .. } => reason::APPROVAL_ALREADY_DECIDED,
            Self::Callback(e) => e.reason_code(),
            Self::NoWebhook => reason::WEBHOOK_NOT_CONFIGURED,
            Self::Audit(_) => reason::AUDIT_UNAVAILABLE,
            Self::Stopping => reason::APPROVAL_EXPIRED,
        }
    }
}

/// Queue settings (from `[approvals]`).
#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    /// Seconds a call waits.
    pub timeout_secs: u64,
    /// Calls waiting at once.
    pub max_pending: usize,
    /// The chat-ops webhook, if configured.
    pub webhook: Option<super::approval_webhook::Webhook>,
}

/// A human's answer as it reaches the waiting call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// Approve or deny.
    pub answer: Answer,
    /// Who (`uid:0`, `console:uid:0`, `slack:U1`).
    pub approver: String,
    /// Through what.
    pub channel: Channel,
    /// Why (may be empty).
    pub reason: String,
    /// The owner operator whose key signed this answer (verified), if any:
    /// only such an approval lets a call write a protected file.
    pub owner: Option<String>,
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A human answered.
    Answered(Answered),
    /// Nobody answered in time.
    TimedOut,
    /// agentd is stopping (denied; audited as `approval_expired`).
    Expired,
}

struct Waiting {
    info: PendingApproval,
    tx: oneshot::Sender<Resolution>,
}

/// What the queue's lock guards.
#[derive(Default)]
struct Queue {
    /// Calls waiting, by approval id.
    waiting: HashMap<String, Waiting>,
    /// Places held by [`Reservation`]s, counted against `max_pending`.
    reserved: usize,
    /// Set by [`Approvals::expire_all`]: a call whose place was reserved
    /// before is refused, not left waiting unanswered.
    stopping: bool,
}

/// The queue. Share it behind an `Arc`.
pub struct Approvals {
    settings: ApprovalSettings,
    pending: Mutex<Queue>,
    db: Mutex<Connection>,
    path: PathBuf,
    nonces: Mutex<NonceMemory>,
    audit: Option<AuditLog>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now() -> i64 {
    super::unix_now()
}

impl Approvals {
    /// Opens `state_dir/approvals.db`. Approvals a previous daemon left
    /// pending are marked expired here and returned (the caller audits
    /// them with [`Self::audit_expired`]).
    pub fn open(
        state_dir: &Path,
        settings: ApprovalSettings,
        audit: Option<AuditLog>,
    ) -> Result<(Self, Vec<PendingApproval>), ApprovalError> {
        let path = state_dir.join("approvals.db");
        let io = |source| ApprovalError::Io {
            path: path.clone(),
            source,
        };
        crate::audit::store::create_private(&path).map_err(io)?;
        let sql = |context| {
            let path = path.clone();
            move |source| ApprovalError::Store {
                path,
                context,
                source,
            }
        };
        let conn = Connection::open(&path).map_err(sql("open"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS approvals (
               id TEXT PRIMARY KEY, body TEXT NOT NULL, status TEXT NOT NULL,
               created_at INTEGER NOT NULL, decided_at INTEGER,
               decided_by TEXT, channel TEXT);",
        )
        .map_err(sql("schema"))?;
        let mut leftovers = Vec::new();
        {
            let mut stmt = conn
                .prepare("SELECT body FROM approvals WHERE status = 'pending'")
                .map_err(sql("read pending"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql("read pending"))?;
            for body in rows {
                let body = body.map_err(sql("read pending"))?;
                // A row that no longer parses is still expired below; only
                // its audit row is lost (logged).
                match serde_json::from_str::<PendingApproval>(&body) {
                    Ok(p) => leftovers.push(p),
                    Err(e) => {
                        tracing::error!(error = %e, "unreadable pending approval; expiring it")
                    }
                }
            }
        }
        let t = now();
        conn.execute(
            "UPDATE approvals SET status = 'expired', decided_at = ?1, decided_by = 'agentd', channel = 'restart' WHERE status = 'pending'",
            params![t],
        )
        .map_err(sql("expire"))?;
        conn.execute(
            "DELETE FROM approvals WHERE status != 'pending' AND decided_at < ?1",
            params![t - KEEP_DECIDED_SECS],
        )
        .map_err(sql("prune"))?;
        Ok((
            Self {
                settings,
                pending: Mutex::default(),
                db: Mutex::new(conn),
                path,
                nonces: Mutex::new(NonceMemory::default()),
                audit,
            },
            leftovers,
        ))
    }

    /// Denies every waiting call because agentd is stopping (each audited
    /// `approval_expired`, each caller answered); returns how many.
    pub async fn expire_all(&self) -> usize {
        let all: Vec<Waiting> = {
            let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            q.stopping = true;
            q.waiting.drain().map(|(_, w)| w).collect()
        };
        for w in &all {
            self.finish(&w.info.id, Status::Expired, "agentd", "shutdown");
        }
        let n = all.len();
        for w in all {
            let _ = self
                .audit_row(
                    &w.info,
                    "approval_expire",
                    "agentd",
                    "shutdown",
                    "deny",
                    reason::APPROVAL_EXPIRED,
                    "agentd stopped while the call waited",
                )
                .await;
            let _ = w.tx.send(Resolution::Expired);
        }
        n
    }

    /// Audits approvals found pending at start (denied: the daemon restarted).
    pub async fn audit_expired(&self, expired: &[PendingApproval]) {
        for p in expired {
            let _ = self
                .audit_row(
                    p,
                    "approval_expire",
                    "agentd",
                    "restart",
                    "deny",
                    reason::APPROVAL_EXPIRED,
                    "the daemon restarted while the call waited",
                )
                .await;
        }
    }

    /// Seconds a call waits.
    pub fn timeout_secs(&self) -> u64 {
        rules::effective_timeout(self.settings.timeout_secs)
    }

    /// The webhook, if configured.
    pub fn webhook(&self) -> Option<&super::approval_webhook::Webhook> {
        self.settings.webhook.as_ref()
    }

    fn sql_err(&self, context: &'static str) -> impl FnOnce(rusqlite::Error) -> ApprovalError {
        let path = self.path.clone();
        move |source| ApprovalError::Store {
            path,
            context,
            source,
        }
    }

    /// Holds a place in the queue (bounded) for a call about to wait: the
    /// escalation's audit row is written first, then
    /// [`Reservation::register`] stores and lists the approval. So nothing
    /// can be answered, and no restart can expire it, before that row is
    /// durable. A reservation dropped unused gives its place back.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, ApprovalError> {
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if q.stopping {
            return Err(ApprovalError::Stopping);
        }
        if q.waiting.len() + q.reserved >= self.settings.max_pending {
            return Err(ApprovalError::Full {
                max: self.settings.max_pending,
            });
        }
        q.reserved += 1;
        Ok(Reservation {
            queue: self.clone(),
            held: true,
        })
    }

    /// Every approval waiting now, oldest first.
    pub fn list(&self) -> Vec<PendingApproval> {
        let q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<PendingApproval> = q.waiting.values().map(|w| w.info.clone()).collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    fn stored_status(&self, id: &str) -> Result<Option<Status>, ApprovalError> {
        let s: Option<String> = self
            .db
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .query_row(
                "SELECT status FROM approvals WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql_err("read status"))?;
        Ok(s.as_deref().map(Status::parse))
    }

    fn finish(&self, id: &str, status: Status, by: &str, channel: &str) {
        let r = self.db.lock().unwrap_or_else(|p| p.into_inner()).execute(
            "UPDATE approvals SET status = ?2, decided_at = ?3, decided_by = ?4, channel = ?5 WHERE id = ?1 AND status = 'pending'",
            params![id, status.as_str(), now(), by, channel],
        );
        if let Err(e) = r {
            // The row stays pending: a restart expires it (never an allow).
            tracing::error!(error = %e, approval = id, "could not store an approval's end");
        }
    }

    /// Answers approval `id`: the first answer wins. The approver's row is
    /// audited before the waiting call hears it; if it cannot be, the call
    /// is denied instead and the approver told so.
    pub async fn answer(&self, id: &str, a: Answered) -> Result<PendingApproval, ApprovalError> {
        let taken = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .remove(id);
        let Some(w) = taken else {
            return Err(match self.stored_status(id)? {
                Some(s) => ApprovalError::AlreadyDecided {
                    id: id.to_owned(),
                    status: s.as_str(),
                },
                None => ApprovalError::Unknown { id: id.to_owned() },
            });
        };
        let status = match a.answer {
            Answer::Approve => Status::Approved,
            Answer::Deny => Status::Denied,
        };
        let action = match a.answer {
            Answer::Approve => "approval_approve",
            Answer::Deny => "approval_deny",
        };
        let recorded = self
            .audit_row(
                &w.info,
                action,
                &a.approver,
                a.channel.as_str(),
                a.answer.decision(),
                a.answer.reason_code(),
                &a.reason,
            )
            .await;
        if let Err(e) = recorded {
            self.finish(id, Status::Denied, "agentd", "audit_unavailable");
            let _ = w.tx.send(Resolution::Answered(Answered {
                answer: Answer::Deny,
                approver: "agentd".into(),
                channel: a.channel,
                reason: format!("the answer could not be audited: {e}"),
                owner: None,
            }));
            return Err(ApprovalError::Audit(e));
        }
        self.finish(id, status, &a.approver, a.channel.as_str());
        if w.tx.send(Resolution::Answered(a)).is_err() {
            // The waiter is gone (its wait was cancelled between our take
            // and this send): nothing proceeds; say so.
            return Err(ApprovalError::AlreadyDecided {
                id: id.to_owned(),
                status: Status::Abandoned.as_str(),
            });
        }
        Ok(w.info)
    }

    /// Checks a webhook callback (signature, window, nonce, body) and
    /// answers with it. Every refusal is audited; nothing changes.
    pub async fn callback(
        &self,
        route_id: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<PendingApproval, ApprovalError> {
        let result = self.checked_callback(route_id, timestamp, signature, body);
        let cb = match result {
            Ok(cb) => cb,
            Err(e) => {
                self.audit_refused_callback(route_id, &e).await;
                return Err(e);
            }
        };
        let approver = format!("webhook:{}", cb.approver);
        let r = self
            .answer(
                route_id,
                Answered {
                    answer: cb.answer,
                    approver,
                    channel: Channel::Webhook,
                    reason: cb.reason,
                    owner: None,
                },
            )
            .await;
        if let Err(e) = &r {
            self.audit_refused_callback(route_id, e).await;
        }
        r
    }

    fn checked_callback(
        &self,
        route_id: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<rules::CallbackBody, ApprovalError> {
        let hook = self.webhook().ok_or(ApprovalError::NoWebhook)?;
        let t = now();
        let window = hook.window_secs();
        let ts = rules::verify_signed(hook.secret(), timestamp, signature, body, t, window)?;
        let cb = rules::parse_callback(body, route_id, ts)?;
        self.nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(&cb.nonce, ts, t, window)?;
        Ok(cb)
    }

    /// Audits an answer refused because its owner signature did not hold
    /// (`approval_sign`, deny): nothing was answered.
    pub async fn audit_refused_owner(&self, route_id: &str, who: &str, code: &str, detail: &str) {
        let Some(audit) = &self.audit else {
            return;
        };
        let mut ev = AuditEvent::new(RecordKind::Admin, "approval_sign");
        ev.operator = clip(&format!("claimed:{who}"), 256);
        ev.call_id = clip(route_id, 64);
        ev.target = clip(detail, 512);
        ev.decision = "deny".into();
        ev.reason_code = code.into();
        if let Err(err) = audit.append(ev).await {
            tracing::error!(error = %err, "could not audit a refused owner signature");
        }
    }

    async fn audit_refused_callback(&self, route_id: &str, e: &ApprovalError) {
        let Some(audit) = &self.audit else {
            return;
        };
        let mut ev = AuditEvent::new(RecordKind::Admin, "approval_callback");
        ev.operator = "webhook".into();
        ev.call_id = clip(route_id, 64);
        ev.target = clip(&e.to_string(), 512);
        ev.decision = "deny".into();
        ev.reason_code = e.reason_code().into();
        if let Err(err) = audit.append(ev).await {
            tracing::error!(error = %err, "could not audit a refused approval callback");
        }
    }

    /// Records one row about approval `p` (kind admin, call id = approval id).
    #[allow(clippy::too_many_arguments)]
    async fn audit_row(
        &self,
        p: &PendingApproval,
        action: &str,
        who: &str,
        channel: &str,
        decision: &str,
        reason_code: &str,
        detail: &str,
    ) -> Result<(), String> {
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        let mut ev = AuditEvent::new(RecordKind::Admin, action);
        ev.operator = clip(who, 256);
        ev.session = clip(&p.session, 1024);
        ev.active_message_id = p.active_message_id.clone();
        ev.call_id = p.id.clone();
        ev.target = clip(
            &format!(
                "channel:{channel} action:{} operator:{} reason:{detail}",
                p.action, p.operator
            ),
            1024,
        );
        ev.decision = decision.into();
        ev.reason_code = reason_code.into();
        ev.policy_id = p.policy_id.clone();
        ev.agent = clip(&p.agent, 1024);
        audit.append(ev).await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, approval = %p.id, action, "could not audit an approval event");
            e.to_string()
        })
    }

    /// Audits a webhook delivery's outcome (info; a failure approves nothing).
    pub async fn audit_delivery(&self, p: &PendingApproval, result: &Result<u16, String>) {
        let (code, detail) = match result {
            Ok(status) => (reason::WEBHOOK_DELIVERED, format!("http {status}")),
            Err(e) => (reason::WEBHOOK_FAILED, e.clone()),
        };
        let _ = self
            .audit_row(
                p,
                "approval_webhook",
                "agentd",
                "webhook",
                "info",
                code,
                &detail,
            )
            .await;
    }

    /// Takes `id` out of the queue unless an answer already did; returns
    /// it if this call took it (then the wait ends as `status`).
    fn withdraw(&self, id: &str, status: Status) -> Option<PendingApproval> {
        let taken = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .remove(id)
            .map(|w| w.info);
        if taken.is_some() {
            self.finish(id, status, "agentd", "deadline");
        }
        taken
    }
}

/// A place held in the queue ([`Approvals::reserve`]).
pub struct Reservation {
    queue: Arc<Approvals>,
    held: bool,
}

impl Reservation {
    /// Stores `info` and lists it in the reserved place; the ticket waits
    /// for its answer. A store that fails gives the place back.
    pub fn register(mut self, info: PendingApproval) -> Result<Ticket, ApprovalError> {
        let queue = self.queue.clone();
        let (tx, rx) = oneshot::channel();
        {
            let mut q = queue.pending.lock().unwrap_or_else(|p| p.into_inner());
            q.reserved -= 1;
            self.held = false;
            if q.stopping {
                return Err(ApprovalError::Stopping);
            }
            let body = serde_json::to_string(&info).unwrap_or_default();
            queue
                .db
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .execute(
                    "INSERT INTO approvals (id, body, status, created_at) VALUES (?1, ?2, 'pending', ?3)",
                    params![info.id, body, info.created_at],
                )
                .map_err(queue.sql_err("insert"))?;
            q.waiting.insert(
                info.id.clone(),
                Waiting {
                    info: info.clone(),
                    tx,
                },
            );
        }
        Ok(Ticket {
            id: info.id.clone(),
            deadline: info.deadline,
            queue,
            rx: Some(rx),
            done: false,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            let mut q = self.queue.pending.lock().unwrap_or_else(|p| p.into_inner());
            q.reserved -= 1;
        }
    }
}

/// One queued approval's wait. Dropped unfinished (the caller went away),
/// it withdraws the approval and audits the abandonment.
pub struct Ticket {
    id: String,
    deadline: i64,
    queue: Arc<Approvals>,
    rx: Option<oneshot::Receiver<Resolution>>,
    done: bool,
}

impl Ticket {
    /// Waits for the answer until the deadline.
    pub async fn wait(mut self) -> Resolution {
        let Some(mut rx) = self.rx.take() else {
            return Resolution::TimedOut;
        };
        let left = (self.deadline - now()).max(0) as u64;
        let r = tokio::time::timeout(Duration::from_secs(left), &mut rx).await;
        self.done = true;
        match r {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Resolution::Expired,
            Err(_) => {
                if self.queue.withdraw(&self.id, Status::TimedOut).is_some() {
                    return Resolution::TimedOut;
                }
                // An answer took the entry just now: it is on its way.
                rx.await.unwrap_or(Resolution::Expired)
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(p) = self.queue.withdraw(&self.id, Status::Abandoned) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let queue = self.queue.clone();
        rt.spawn(async move {
            let _ = queue
                .audit_row(
                    &p,
                    "approval_abandon",
                    "agentd",
                    "caller",
                    "deny",
                    reason::APPROVAL_ABANDONED,
                    "the caller went away before an answer",
                )
                .await;
        });
    }
}

fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
