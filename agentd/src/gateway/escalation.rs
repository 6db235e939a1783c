//! A call the policy escalates: recorded (`escalate` row), queued for a
//! human, and waited for; the answer turns it into an allow (the pipeline
//! then audits it and runs the allow hooks like any allowed call) or a
//! denial (`approval_denied`, `approval_timeout`, `approval_queue_full`).
use std::sync::Arc;

use super::approvals::{Answer, Approvals, PendingApproval, Resolution, Ticket};
use super::{Caller, Decision, Gateway, ToolCallRequest};
use crate::policy::approval::ElevationAsk;
use crate::protocol::reason;

impl Gateway {
    /// Waits for a human's answer to the escalated decision `d` and turns
    /// it into allow or deny. Every step is audited; any failure denies.
    pub(super) async fn await_approval(
        &self,
        d: &mut Decision,
        req: &ToolCallRequest,
        caller: Caller,
        agent: Option<&str>,
    ) {
        let Some(queue) = self.approvals() else {
            d.overturn(
                reason::APPROVAL_UNAVAILABLE,
                "the action needs a human's approval and this daemon has no approval queue",
            );
            return;
        };
        let Some((info, ticket)) = self
            .register_escalation(d, req, caller, agent, &queue)
            .await
        else {
            return;
        };
        tracing::info!(approval = %info.id, action = %info.action, operator = %info.operator, deadline = info.deadline, "tool call waits for approval");
        if let Some(hook) = queue.webhook().cloned() {
            let q = queue.clone();
            let p = info.clone();
            tokio::spawn(async move {
                let r = hook.deliver(&p).await;
                if let Err(e) = &r {
                    tracing::warn!(approval = %p.id, error = %e, "approval webhook delivery failed");
                }
                q.audit_delivery(&p, &r).await;
            });
        }
        let resolution = ticket.wait().await;
        let approver = match &resolution {
            Resolution::Answered(a) => a.approver.clone(),
            _ => String::new(),
        };
        self.apply_resolution(d, caller, resolution, queue.timeout_secs());
        if d.is_allow() {
            self.after_approval(d, &approver, agent).await;
        }
    }

    /// Queues the call for a human and audits the `escalate` row; `None`
    /// (with `d` overturned) when either fails, so nothing waits unrecorded.
    async fn register_escalation(
        &self,
        d: &mut Decision,
        req: &ToolCallRequest,
        caller: Caller,
        agent: Option<&str>,
        queue: &Arc<Approvals>,
    ) -> Option<(PendingApproval, Ticket)> {
        let created_at = super::unix_now();
        let info = PendingApproval {
            id: d.call_id.clone(),
            operator: d.operator.clone(),
            session: d.session.clone(),
            action: d.action.clone(),
            arguments: req.arguments.clone(),
            agent: agent.unwrap_or_default().to_owned(),
            active_message_id: d.active_message_id.clone(),
            policy_id: d.policy_id.clone(),
            created_at,
            deadline: crate::policy::approval::deadline(created_at, queue.timeout_secs()),
            elevation: Self::elevation_ask(d),
            anomaly: d.sessions.anomaly.clone(),
        };
        // The place first (a full queue refuses with no escalation row),
        // then the row, then the approval: one that can be seen, answered
        // or expired by a restart always has its row.
        let place = match queue.reserve() {
            Ok(p) => p,
            Err(e) => {
                d.overturn(e.reason_code(), e.to_string());
                return None;
            }
        };
        if let Some(audit) = &self.audit {
            let mut ev = super::pipeline::event_of(d, req, agent, caller);
            let elevation = match &info.elevation {
                Some(e) => format!("elevation:{} effect:{} ", e.actions.join(","), e.effect),
                None => String::new(),
            };
            ev.target = crate::audit::clip(&format!(
                "approval:{} deadline:{} {elevation}{}",
                info.id, info.deadline, ev.target
            ));
            if let Err(e) = audit.append(ev).await {
                d.overturn(
                    reason::AUDIT_UNAVAILABLE,
                    format!("the audit log could not record the escalation: {e}"),
                );
                return None;
            }
        }
        match place.register(info.clone()) {
            Ok(ticket) => Some((info, ticket)),
            Err(e) => {
                d.overturn(e.reason_code(), e.to_string());
                None
            }
        }
    }

    /// What an escalation for an elevation asks for: the call's action,
    /// for the policy's `[sessions] elevation_secs`.
    fn elevation_ask(d: &Decision) -> Option<ElevationAsk> {
        if !d.sessions.elevation {
            return None;
        }
        Some(ElevationAsk {
            actions: vec![d.action.clone()],
            effect: d
                .sessions
                .effect
                .map_or("mutating", |e| e.as_str())
                .to_owned(),
            secs: d.sessions.elevation_secs,
        })
    }

    /// Turns the human's answer (or its absence) into allow or deny. An
    /// approval still needs the message that authorised the call to vouch
    /// for it now.
    fn apply_resolution(
        &self,
        d: &mut Decision,
        caller: Caller,
        resolution: Resolution,
        timeout_secs: u64,
    ) {
        match resolution {
            Resolution::Answered(a) if a.answer == Answer::Approve => {
                if let Err((code, detail)) = self.still_vouched(
                    &d.active_message_id,
                    self.holder_of(caller).as_deref(),
                    super::unix_now(),
                ) {
                    d.overturn(code, format!("approved by {}, but {detail}", a.approver));
                    return;
                }
                if let Err((code, detail)) = protected_by_owner(d, &a) {
                    d.overturn(code, detail);
                    return;
                }
                d.decision = "allow".into();
                d.reason_code = reason::OK.into();
                d.detail = String::new();
            }
            Resolution::Answered(a) => {
                let why = if a.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.reason)
                };
                d.overturn(
                    reason::APPROVAL_DENIED,
                    format!("denied by {} ({}){why}", a.approver, a.channel.as_str()),
                );
            }
            Resolution::Expired => d.overturn(
                reason::APPROVAL_EXPIRED,
                "agentd stopped while the call waited for approval",
            ),
            Resolution::TimedOut => d.overturn(
                reason::APPROVAL_TIMEOUT,
                format!("no approver answered within {timeout_secs} s"),
            ),
        }
    }
}

/// An approved call that writes protected files gets them in its grant
/// only when an owner signed the approval; otherwise it is refused
/// (`protected_file_needs_owner`) and no grant is installed.
fn protected_by_owner(
    d: &mut Decision,
    a: &super::approvals::Answered,
) -> Result<(), (&'static str, String)> {
    if d.protected_pending.is_empty() {
        return Ok(());
    }
    let files = std::mem::take(&mut d.protected_pending);
    if a.owner.is_none() {
        let list = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err((
            reason::PROTECTED_FILE_NEEDS_OWNER,
            format!(
                "approved by {} without an owner's signature; {list} is protected (approve with `agentctl approvals approve ID --operator OWNER --key-file K`)",
                a.approver
            ),
        ));
    }
    if let Some(g) = d.grant.as_mut() {
        g.protected_write = files;
    }
    Ok(())
}
