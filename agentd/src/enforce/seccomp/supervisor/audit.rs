//! The audit row of a supervisor decision, committed before the answer.
//!
//! The answer is what lets the decision take effect (or tells the agent it
//! was refused), so it waits for the row: an agentd killed in between
//! leaves the syscall unanswered, and the next agentd restarts it and
//! decides it again (its row then comes from that agentd) — no decision is
//! ever seen by the agent without its row. A row the log cannot commit
//! turns what has not happened yet into a refusal (fail closed).
use std::{sync::atomic::Ordering, time::Instant};

use super::{Answer, Decided, Supervisor};
use crate::enforce::{
    events::{decision, KernelRecord},
    registry::Mode,
};

/// Counts `d`, commits its row (baseline allows have none: counted only)
/// and returns the answer to send: `answer`, or EPERM when the row of a
/// decision not yet carried out could not be committed. A `Value` answer
/// (an operation the supervisor already performed) and a refusal are kept.
pub(super) fn commit_then_answer(
    sup: &Supervisor,
    n: &libc::seccomp_notif,
    d: &Decided,
    started: Instant,
    answer: Answer,
) -> Answer {
    if d.allowed {
        sup.stats.allowed.fetch_add(1, Ordering::Relaxed);
    } else {
        sup.stats.denied.fetch_add(1, Ordering::Relaxed);
    }
    // Baseline allows (the loader reading libc, …) are counted, not logged row by row.
    if d.allowed && d.call.is_none() {
        return answer;
    }
    let rec = record(sup, n, d, started);
    match sup.audit.commit(rec) {
        Ok(()) => answer,
        Err(e) => {
            tracing::error!(agent = %sup.agent, action = d.action, target = %d.target, error = %e,
                "decision not audited; refused unless already carried out");
            match answer {
                Answer::Continue | Answer::AddFd(..) => Answer::Errno(libc::EPERM),
                kept @ (Answer::Errno(_) | Answer::Value(_)) => kept,
            }
        }
    }
}

/// After the answer failed (other than for a task that is gone): the
/// syscall was refused with that failure, so an allow already recorded
/// gets a refusal row (`enforcer_error`) after it. Queued, not waited for:
/// the refusal has already happened.
pub(super) fn answer_failed(
    sup: &Supervisor,
    n: &libc::seccomp_notif,
    d: Decided,
    started: Instant,
) {
    if !d.allowed {
        return;
    }
    let refused = Decided {
        allowed: false,
        reason: crate::protocol::reason::ENFORCER_ERROR,
        ..d
    };
    let _ = sup.audit.send(record(sup, n, &refused, started));
}

/// The kernel row of `d` (the grant it used, the agent's mode).
fn record(
    sup: &Supervisor,
    n: &libc::seccomp_notif,
    d: &Decided,
    started: Instant,
) -> KernelRecord {
    let reg = sup.registry.read().unwrap_or_else(|p| p.into_inner());
    let audit_only = reg
        .agents
        .get(&sup.agent)
        .is_some_and(|a| a.mode == Mode::AuditOnly);
    let (call_id, active_message_id) = d
        .call
        .and_then(|h| reg.call(h))
        .map(|c| (c.call_id.clone(), c.active_message_id.clone()))
        .unwrap_or_default();
    drop(reg);
    KernelRecord {
        agent: sup.agent.clone(),
        call_id,
        active_message_id,
        action: d.action.into(),
        target: d.target.clone(),
        decision: decision(d.allowed, audit_only),
        reason_code: d.reason.into(),
        pid: n.pid,
        latency_us: started.elapsed().as_micros() as u64,
        access: d.access,
    }
}
