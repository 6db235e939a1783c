//! Kernel events → audit records. Two sources feed one writer thread: the
//! BPF ring buffer (connect/sendmsg decisions, exec-verification kills:
//! already carried out, queued) and the seccomp supervisors (decisions made
//! in user space: each waits for its row's commit before it answers).
use std::{
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, RwLock,
    },
    thread::JoinHandle,
};

use agentd_common::{baseline_call_id, Hook, KernelEvent, KernelReason};
use aya::maps::{MapData, RingBuf};

use super::{grant::render_addr, registry::Registry};

/// One kernel decision as it goes to the audit log (`kind = kernel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRecord {
    /// Agent name.
    pub agent: String,
    /// Tool-call id the process was bound to ("" = baseline).
    pub call_id: String,
    /// Active-message id of that call ("" = baseline).
    pub active_message_id: String,
    /// Hook name: `exec`, `file_open`, `connect`, `sendmsg`, `exec_verify`, …
    pub action: String,
    /// Path or `address:port`.
    pub target: String,
    /// `allow`, `deny` or `would_deny`.
    pub decision: &'static str,
    /// Stable reason code.
    pub reason_code: String,
    /// Process that asked.
    pub pid: u32,
    /// Time spent deciding, where known.
    pub latency_us: u64,
    /// `read` or `write` for a file open where the backend knows it
    /// (seccomp); audited after the pid as `access:…`.
    pub access: Option<&'static str>,
}

/// Why a sink did not keep a record.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The audit log refused the row or could not commit it.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The sink's own state is unusable (an in-memory sink's lock was
    /// poisoned by a panicking writer).
    #[error("the audit sink is unusable: {what}")]
    Unusable {
        /// What broke.
        what: &'static str,
    },
}

/// Where kernel records go. Implemented for the audit log; tests may collect.
pub trait AuditSink: Send + Sync + 'static {
    /// Appends one record durably; an error is logged and counted.
    fn append_kernel(&self, rec: &KernelRecord) -> Result<(), SinkError>;
    /// Appends records in order; one result per record. The default calls
    /// [`Self::append_kernel`] for each; the audit log commits them together.
    fn append_kernel_batch(&self, recs: &[KernelRecord]) -> Vec<Result<(), SinkError>> {
        recs.iter().map(|r| self.append_kernel(r)).collect()
    }
    /// Appends a lifecycle record (start, restart gap, agent stopped).
    fn append_lifecycle(
        &self,
        action: &str,
        target: &str,
        reason_code: &str,
    ) -> Result<(), SinkError>;
}

/// The audit decision string for an outcome in a mode.
pub fn decision(allowed: bool, audit_only: bool) -> &'static str {
    match (allowed, audit_only) {
        (true, _) => "allow",
        (false, true) => "would_deny",
        (false, false) => "deny",
    }
}

/// How many kernel records may wait for the writer. A full queue slows
/// the agent down (the supervisor waits before it reads the next
/// notification, so the agent's next notified syscall waits too); no row
/// is ever dropped to make room.
pub const AUDIT_QUEUE: usize = 4096;

/// The audit writer thread is gone: the record was not queued (counted in
/// [`AUDIT_FAILURES`] and logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the kernel audit writer is gone")]
pub struct WriterGone;

/// Why a record's row was not committed (see [`AuditTx::commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotCommitted {
    /// The writer thread is gone: the record was not queued.
    #[error(transparent)]
    WriterGone(#[from] WriterGone),
    /// The sink refused the row or could not commit it (logged and
    /// counted in [`AUDIT_FAILURES`] by the writer).
    #[error("the audit log did not commit the record")]
    SinkFailed,
}

/// One record on its way to the writer, and who waits for its commit.
struct Queued {
    rec: KernelRecord,
    /// Told whether the row was committed (`None`: nobody waits).
    committed: Option<mpsc::SyncSender<bool>>,
}

/// Sender side of the audit writer: a bounded queue whose `send` waits
/// when it is full.
#[derive(Clone)]
pub struct AuditTx {
    tx: mpsc::SyncSender<Queued>,
}

impl std::fmt::Debug for AuditTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTx").finish_non_exhaustive()
    }
}

impl AuditTx {
    /// Queues `rec`; when the queue is full, waits for the writer (counted
    /// in [`AUDIT_BACKPRESSURE`]). Fails only when the writer is gone. For
    /// decisions the kernel already carried out (ring-buffer events).
    pub fn send(&self, rec: KernelRecord) -> Result<(), WriterGone> {
        self.queue(Queued {
            rec,
            committed: None,
        })
    }

    /// Queues `rec` and returns once its row is committed: for a decision
    /// whose answer can wait for its row, so that no decision takes effect
    /// without one (an agentd killed in between leaves it unanswered).
    pub fn commit(&self, rec: KernelRecord) -> Result<(), NotCommitted> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.queue(Queued {
            rec,
            committed: Some(tx),
        })?;
        match rx.recv() {
            Ok(true) => Ok(()),
            Ok(false) => Err(NotCommitted::SinkFailed),
            Err(_) => {
                lost();
                Err(NotCommitted::WriterGone(WriterGone))
            }
        }
    }

    fn queue(&self, q: Queued) -> Result<(), WriterGone> {
        match self.tx.try_send(q) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(q)) => {
                AUDIT_BACKPRESSURE.fetch_add(1, Ordering::Relaxed);
                self.tx.send(q).map_err(|_| {
                    lost();
                    WriterGone
                })
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                lost();
                Err(WriterGone)
            }
        }
    }
}

fn lost() {
    AUDIT_FAILURES.fetch_add(1, Ordering::Relaxed);
    tracing::error!("the kernel audit writer is gone; record lost");
}

/// Audit records that could not be written (the sink failed).
pub static AUDIT_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Times a sender found the audit queue full and waited for the writer.
pub static AUDIT_BACKPRESSURE: AtomicU64 = AtomicU64::new(0);

/// Starts the writer with an [`AUDIT_QUEUE`]-deep queue.
pub fn spawn_writer(sink: Arc<dyn AuditSink>) -> (AuditTx, JoinHandle<()>) {
    spawn_writer_with_queue(sink, AUDIT_QUEUE)
}

/// Starts the writer: records are appended in arrival order. A ring-buffer
/// reader waits only when `queue` records are already waiting; a supervisor
/// waits for its own row's commit ([`AuditTx::commit`]) before it answers.
pub fn spawn_writer_with_queue(
    sink: Arc<dyn AuditSink>,
    queue: usize,
) -> (AuditTx, JoinHandle<()>) {
    let (tx, rx) = mpsc::sync_channel::<Queued>(queue.max(1));
    let handle = std::thread::Builder::new()
        .name("agentd-kaudit".into())
        .spawn(move || {
            // Hand over whatever has queued up at once: the audit log
            // commits a batch in one transaction.
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(q) => batch.push(q),
                        Err(_) => break,
                    }
                }
                let (recs, waiting): (Vec<KernelRecord>, Vec<_>) =
                    batch.into_iter().map(|q| (q.rec, q.committed)).unzip();
                let results = sink.append_kernel_batch(&recs);
                for ((rec, res), waiter) in recs.iter().zip(results).zip(waiting) {
                    if let Err(e) = &res {
                        AUDIT_FAILURES.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, action = %rec.action, target = %rec.target, "kernel audit record lost");
                    }
                    if let Some(w) = waiter {
                        let _ = w.send(res.is_ok());
                    }
                }
            }
        })
        .expect("spawn audit writer thread");
    (AuditTx { tx }, handle)
}

/// `a.b.c.d:port`, or `[v6]:port`, for 16 address bytes (IPv4-mapped for IPv4).
pub fn render_destination(addr: [u8; 16], port: u16) -> String {
    let a = render_addr(addr);
    if a.contains(':') {
        format!("[{a}]:{port}")
    } else {
        format!("{a}:{port}")
    }
}

/// Turns one ring-buffer event into a record (pure apart from the registry read).
pub fn record_of(ev: &KernelEvent, reg: &Registry) -> KernelRecord {
    let agent = reg
        .agent_by_id(ev.agent_id)
        .map(|a| a.name.clone())
        .unwrap_or_else(|| format!("agent#{}", ev.agent_id));
    let (call_id, active_message_id) = if ev.call_id == baseline_call_id(ev.agent_id) {
        (String::new(), String::new())
    } else {
        match reg.call(ev.call_id) {
            Some(c) => (c.call_id.clone(), c.active_message_id.clone()),
            None => (format!("#{}", ev.call_id), String::new()),
        }
    };
    let hook = Hook::from_u8(ev.hook);
    let len = (ev.target_len as usize).min(ev.target.len());
    let target = match hook {
        Some(Hook::Connect | Hook::SendMsg | Hook::Bind | Hook::Listen) if len == 18 => {
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&ev.target[..16]);
            render_destination(addr, u16::from_be_bytes([ev.target[16], ev.target[17]]))
        }
        _ => String::from_utf8_lossy(&ev.target[..len]).into_owned(),
    };
    KernelRecord {
        agent,
        call_id,
        active_message_id,
        action: hook.map(Hook::name).unwrap_or("unknown").to_string(),
        target,
        decision: decision(
            ev.allowed == 1,
            ev.mode == agentd_common::Mode::AuditOnly as u8,
        ),
        reason_code: KernelReason::from_u8(ev.reason)
            .map(|r| r.code())
            .unwrap_or("unknown")
            .to_string(),
        pid: ev.tgid,
        latency_us: 0,
        access: None,
    }
}

/// Drains the ring buffer into the audit writer until `stop` is set.
pub fn spawn_ring_reader(
    mut ring: RingBuf<MapData>,
    registry: Arc<RwLock<Registry>>,
    tx: AuditTx,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("agentd-ringbuf".into())
        .spawn(move || {
            let fd = ring.as_raw_fd();
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd we own.
                unsafe { libc::poll(&mut pfd, 1, 200) };
                while let Some(item) = ring.next() {
                    if item.len() < std::mem::size_of::<KernelEvent>() {
                        continue;
                    }
                    // SAFETY: the kernel side writes exactly a KernelEvent (repr(C), any bit pattern valid).
                    let ev: KernelEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    let rec = {
                        let reg = registry.read().unwrap_or_else(|p| p.into_inner());
                        record_of(&ev, &reg)
                    };
                    let _ = tx.send(rec);
                }
            }
        })
        .expect("spawn ring buffer thread")
}

/// An in-memory sink for tests and benchmarks (no audit log in the loop).
#[derive(Default, Clone)]
pub struct MemorySink(pub Arc<std::sync::Mutex<Vec<KernelRecord>>>);

/// The memory sink's lock was poisoned.
fn poisoned<T>(_: T) -> SinkError {
    SinkError::Unusable {
        what: "memory sink lock poisoned",
    }
}

impl AuditSink for MemorySink {
    fn append_kernel(&self, rec: &KernelRecord) -> Result<(), SinkError> {
        self.0.lock().map_err(poisoned)?.push(rec.clone());
        Ok(())
    }
    fn append_lifecycle(
        &self,
        action: &str,
        target: &str,
        reason_code: &str,
    ) -> Result<(), SinkError> {
        self.0.lock().map_err(poisoned)?.push(KernelRecord {
            agent: String::new(),
            call_id: String::new(),
            active_message_id: String::new(),
            action: action.into(),
            target: target.into(),
            decision: "info",
            reason_code: reason_code.into(),
            pid: 0,
            latency_us: 0,
            access: None,
        });
        Ok(())
    }
}

/// The audit-log row of a kernel record.
fn kernel_event(rec: &KernelRecord) -> crate::audit::AuditEvent {
    use crate::audit::{AuditEvent, RecordKind};
    let mut ev = AuditEvent::new(RecordKind::Kernel, rec.action.clone());
    ev.call_id = rec.call_id.clone();
    ev.active_message_id = rec.active_message_id.clone();
    ev.target = rec.target.clone();
    ev.decision = rec.decision.into();
    ev.reason_code = rec.reason_code.clone();
    // Kernel rows are decided by the agent's grants or baseline, not by a
    // policy: the row names the agent, the process that asked and the
    // access mode, and leaves `policy_id` empty.
    ev.agent = rec.agent.clone();
    ev.pid = rec.pid;
    ev.access = rec.access.unwrap_or_default().into();
    ev.latency_us = rec.latency_us;
    ev
}

impl AuditSink for crate::audit::AuditLog {
    fn append_kernel(&self, rec: &KernelRecord) -> Result<(), SinkError> {
        self.append_blocking(kernel_event(rec))?;
        Ok(())
    }

    fn append_kernel_batch(&self, recs: &[KernelRecord]) -> Vec<Result<(), SinkError>> {
        self.append_all_blocking(recs.iter().map(kernel_event).collect())
            .into_iter()
            .map(|r| r.map(|_| ()).map_err(SinkError::from))
            .collect()
    }

    fn append_lifecycle(
        &self,
        action: &str,
        target: &str,
        reason_code: &str,
    ) -> Result<(), SinkError> {
        use crate::audit::{AuditEvent, RecordKind};
        let mut ev = AuditEvent::new(RecordKind::Lifecycle, action);
        ev.target = target.into();
        ev.reason_code = reason_code.into();
        self.append_blocking(ev)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_mode() {
        assert_eq!(decision(true, false), "allow");
        assert_eq!(decision(false, false), "deny");
        assert_eq!(decision(false, true), "would_deny");
    }

    #[test]
    fn connect_event_renders_address_and_reason() {
        let mut target = [0u8; agentd_common::EVENT_TARGET_LEN];
        target[10] = 0xff;
        target[11] = 0xff;
        target[12..16].copy_from_slice(&[127, 0, 0, 1]);
        target[16..18].copy_from_slice(&8080u16.to_be_bytes());
        let ev = KernelEvent {
            ktime_ns: 1,
            cgroup_id: 2,
            call_id: baseline_call_id(3),
            tgid: 99,
            agent_id: 3,
            hook: Hook::Connect as u8,
            allowed: 0,
            reason: KernelReason::NoGrant as u8,
            mode: 0,
            target_len: 18,
            target,
        };
        let rec = record_of(&ev, &Registry::default());
        assert_eq!(rec.target, "127.0.0.1:8080");
        assert_eq!(rec.action, "connect");
        assert_eq!(rec.decision, "deny");
        assert_eq!(rec.reason_code, "no_grant");
        assert_eq!(rec.call_id, "");
    }
}
