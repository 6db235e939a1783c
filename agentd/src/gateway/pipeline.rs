//! The request pipelines the API runs: ingest or decide, then the durable
//! audit record (no record ⇒ no allow), then the allow hooks.
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::call_ids::{CallKey, Decided};
use super::decide::claimed_operator;
use super::decide::{Decision, ToolCallRequest};
use super::hooks::{AllowedCall, HookError};
use super::ingest::{IngestOutcome, Refusal, RefusalClass, Trust};
use super::resolve::{FsCreds, HostResolver};
use super::shared_nonces::SharedNonceVerdict;
use super::{unix_now, Gateway};
use crate::audit::{clip, AuditEvent, RecordKind};
use crate::protocol::{reason, SignedMessage};

/// Who is calling, from SO_PEERCRED (None over TCP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caller {
    /// Process id.
    pub pid: Option<u32>,
    /// User id.
    pub uid: Option<u32>,
    /// Primary group id.
    pub gid: Option<u32>,
    /// The caller is an administrator (root or the admin group): outside
    /// every agent, it neither claims active messages nor is bound by claims.
    pub admin: bool,
}

impl Gateway {
    /// Ingests a message and records the outcome in the audit log. An audit
    /// failure refuses the message (`audit_unavailable`).
    pub async fn submit_message(&self, msg: &SignedMessage) -> Result<IngestOutcome, Refusal> {
        self.submit_message_from(msg, "local").await
    }

    /// [`Self::submit_message`] from `peer` (`uid:N` or `tcp`), whose
    /// unverified messages count against its flood limit. Only the first
    /// refusal of a flood is audited (the rest would grow the log without
    /// bound); the daemon logs how many it refused.
    pub async fn submit_message_from(
        &self,
        msg: &SignedMessage,
        peer: &str,
    ) -> Result<IngestOutcome, Refusal> {
        self.submit_message_inner(msg, peer, None).await
    }

    /// [`Self::submit_message`] for a message addressed to `agent` (its
    /// inbox): refused while that agent is suspended.
    pub async fn submit_message_to_agent(
        &self,
        msg: &SignedMessage,
        agent: &str,
    ) -> Result<IngestOutcome, Refusal> {
        self.submit_message_inner(msg, "local", Some(agent)).await
    }

    async fn submit_message_inner(
        &self,
        msg: &SignedMessage,
        peer: &str,
        agent: Option<&str>,
    ) -> Result<IngestOutcome, Refusal> {
        let started = Instant::now();
        // A suspension refuses before ingest: nothing of the message is stored.
        let result = match self.message_suspended(msg, agent) {
            Some(refused) => Err(refused),
            None => self.ingest_to(msg, unix_now(), peer, agent),
        };
        let result = self.claim_shared_nonce(msg, result).await;
        if let Err(Refusal {
            class: RefusalClass::Throttled { first: false },
            ..
        }) = &result
        {
            return result;
        }
        let latency_us = started.elapsed().as_micros() as u64;
        let Some(audit) = &self.audit else {
            return result;
        };
        // A nearly full audit disk: refuse (and record) what would be accepted.
        let result = match result {
            Ok(o) if audit.storage_low() => {
                self.forget_active(&o.active_message_id);
                Err(Refusal {
                    reason_code: reason::AUDIT_STORAGE_LOW,
                    message: STORAGE_LOW.into(),
                    class: RefusalClass::Unavailable,
                })
            }
            r => r,
        };
        let ev = self.message_row(msg, agent, &result, latency_us);
        if let Err(e) = audit.append(ev).await {
            tracing::error!(error = %e, "audit append failed; refusing the message");
            if let Ok(o) = &result {
                self.forget_active(&o.active_message_id);
            }
            return Err(Refusal {
                reason_code: reason::AUDIT_UNAVAILABLE,
                message: e.to_string(),
                class: RefusalClass::Unavailable,
            });
        }
        if let Ok(o) = &result {
            audit_rebind(audit, o).await;
        }
        result
    }

    /// In fleet mode, a message that passed every local check claims its
    /// nonce fleet-wide: used on another host ⇒ `replayed_nonce`; the
    /// register unreachable past its lease ⇒ `fleet_unavailable`. Either
    /// way the message's active id is withdrawn.
    async fn claim_shared_nonce(
        &self,
        msg: &SignedMessage,
        result: Result<IngestOutcome, Refusal>,
    ) -> Result<IngestOutcome, Refusal> {
        let o = match result {
            Ok(o) if o.trust == Trust::Verified => o,
            other => return other,
        };
        let register = self
            .shared_nonces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (Some(register), Some(nonce)) = (register, msg.nonce.as_deref()) else {
            return Ok(o);
        };
        let now = unix_now();
        let expires_at = now + self.settings.nonce_ttl_secs;
        let refusal = match register.claim(&o.operator, nonce, now, expires_at).await {
            SharedNonceVerdict::Fresh => return Ok(o),
            SharedNonceVerdict::Replayed { host } => Refusal {
                reason_code: reason::REPLAYED_NONCE,
                message: format!("the nonce was already used by this operator on host `{host}`"),
                class: RefusalClass::Unverified,
            },
            SharedNonceVerdict::Unavailable { detail } => Refusal {
                reason_code: reason::FLEET_UNAVAILABLE,
                message: format!("the fleet-wide replay check cannot be made: {detail}"),
                class: RefusalClass::Unavailable,
            },
        };
        self.forget_active(&o.active_message_id);
        Err(refusal)
    }

    /// The message's audit row: who sent it (as claimed, unless verified),
    /// a digest of its body (never the text), and how it was taken.
    fn message_row(
        &self,
        msg: &SignedMessage,
        agent: Option<&str>,
        result: &Result<IngestOutcome, Refusal>,
        latency_us: u64,
    ) -> AuditEvent {
        let body_hash = hex::encode(&Sha256::digest(msg.body.as_bytes())[..8]);
        let mut ev = AuditEvent::new(RecordKind::Message, "message");
        let claimed = msg.operator.as_deref().unwrap_or("");
        // Only a verified message names its operator; anything else is a claim.
        ev.operator = match result {
            Ok(o) if o.trust == Trust::Verified => clip(claimed),
            _ => clip(&claimed_operator(claimed)),
        };
        ev.session = clip(&msg.session);
        // A message to an agent's inbox names that agent.
        ev.agent = agent.map(clip).unwrap_or_default();
        ev.target = message_target(msg, &body_hash);
        ev.policy_id = self
            .current_policy()
            .map(|p| p.id.clone())
            .unwrap_or_default();
        ev.latency_us = latency_us;
        match result {
            Ok(o) => {
                ev.active_message_id.clone_from(&o.active_message_id);
                ev.decision = if o.trust == Trust::Verified {
                    "allow"
                } else {
                    "deny"
                }
                .into();
                ev.reason_code.clone_from(&o.reason_code);
            }
            Err(r) => {
                ev.decision = "deny".into();
                ev.reason_code = r.reason_code.into();
            }
        }
        ev
    }

    /// Decides a tool call, records it durably, runs the allow hooks. A call
    /// with a runtime tool-call id is decided once per agent and active
    /// message: a repeat gets the first decision (see `call_ids`).
    pub async fn tool_call(&self, req: &ToolCallRequest, caller: Caller) -> Decision {
        let Some(tool_use_id) = &req.tool_use_id else {
            return self.decide_and_record(req, caller, None).await;
        };
        let now = unix_now();
        // Malformed ids and unknown or expired messages are denied by the
        // decision itself; nothing worth remembering.
        let expires_at = super::ingest::parse_active_id(&req.active_message_id).and_then(|k| {
            self.active
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&k)
                .map(|m| m.expires_at)
        });
        let (Some(expires_at), Ok(())) = (
            expires_at.filter(|e| *e > now),
            crate::runtime::check_tool_use_id(tool_use_id),
        ) else {
            return self.decide_and_record(req, caller, None).await;
        };
        let key = CallKey {
            agent: self
                .caller_agent(caller)
                .unwrap_or_else(|| match caller.uid {
                    Some(u) => format!("uid:{u}"),
                    None => "unknown".into(),
                }),
            active_message_id: req.active_message_id.clone(),
            tool_use_id: tool_use_id.clone(),
        };
        let Ok(slot) = self.call_ids.slot(key, expires_at, now) else {
            let d = Decision::denied(
                req,
                reason::TOO_MANY_TOOL_CALLS,
                "too many runtime tool-call ids are remembered; try again when active messages expire",
            );
            return self.decide_and_record(req, caller, Some(d)).await;
        };
        let first = std::sync::atomic::AtomicBool::new(false);
        let decided = slot
            .cell
            .get_or_init(|| async {
                first.store(true, std::sync::atomic::Ordering::Relaxed);
                Decided {
                    action: req.action.clone(),
                    arguments: req.arguments.clone(),
                    decision: self.decide_and_record(req, caller, None).await,
                }
            })
            .await;
        if first.load(std::sync::atomic::Ordering::Relaxed) {
            return decided.decision.clone();
        }
        if decided.action != req.action || decided.arguments != req.arguments {
            let d = Decision::denied(
                req,
                reason::TOOL_USE_ID_REUSED,
                &format!(
                    "tool-call id `{tool_use_id}` was decided for another call (call {}, action `{}`)",
                    decided.decision.call_id, decided.action
                ),
            );
            return self.decide_and_record(req, caller, Some(d)).await;
        }
        if let Some((code, detail)) = self.call_suspended(&decided.decision, caller) {
            let d = Decision::denied(req, code, &detail);
            return self.decide_and_record(req, caller, Some(d)).await;
        }
        tracing::debug!(call_id = %decided.decision.call_id, tool_use_id, "repeat of a decided tool call");
        decided.decision.clone()
    }

    /// Records a denial decided before the policy (a malformed MCP call, a
    /// call without an active message): audited like any decision, no hooks.
    pub async fn deny_and_record(
        &self,
        req: &ToolCallRequest,
        caller: Caller,
        reason_code: &str,
        detail: &str,
    ) -> Decision {
        let d = Decision::denied(req, reason_code, detail);
        self.decide_and_record(req, caller, Some(d)).await
    }

    /// Decides (or takes `preset`, a denial decided elsewhere), records the
    /// decision durably, runs the allow hooks.
    pub(super) async fn decide_and_record(
        &self,
        req: &ToolCallRequest,
        caller: Caller,
        preset: Option<Decision>,
    ) -> Decision {
        // Resolved once: the holder and the allow hooks both need it.
        // Its row is coming: the writer may hold a commit for it to share.
        let mut announced = self.audit.as_ref().map(crate::audit::AuditLog::announce);
        let agent = self.caller_agent(caller);
        let holder = self.holder_for(agent.as_deref(), caller);
        let generation = self.suspension_generation();
        let mut d = self.decide_or_take(req, caller, preset, holder.as_deref());
        if let (true, Some(holder)) = (d.claimed_message, holder.as_deref()) {
            self.record_holder(&mut d, holder);
        }
        self.record_delegation_uses(&mut d);
        if d.decision == super::decide::ESCALATE {
            // A person answers in seconds: no commit waits for that.
            announced = None;
            self.await_approval(&mut d, req, caller, agent.as_deref())
                .await;
        }
        if d.is_allow() && self.audit.as_ref().is_some_and(|a| a.storage_low()) {
            // Before any allow hook: no grant is installed for a call the
            // log might not be able to account for.
            d.overturn(reason::AUDIT_STORAGE_LOW, STORAGE_LOW);
        }
        let mut companions = self.allow_companions(&mut d, caller, agent.as_deref());
        drop(announced);
        let committed = match self
            .append_decision(&d, req, caller, agent.as_deref(), &mut companions)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, call_id = %d.call_id, "audit append failed; denying");
                d.overturn(
                    reason::AUDIT_UNAVAILABLE,
                    format!("the audit log could not record the decision: {e}"),
                );
                return d;
            }
        };
        if let Some(c) = &committed {
            d.audit_seq = Some(c.seq);
            d.audit_hash = Some(c.hash.clone());
        }
        // The call that tripped its session's anomaly check: once, after its row.
        self.audit_trip(&d).await;
        if d.is_allow() {
            match unstored_companion(committed.as_ref(), &companions) {
                Some(e) => {
                    tracing::error!(error = %e, call_id = %d.call_id, "an allow's companion row was not stored; denying");
                    self.overturn_recorded(
                        &mut d,
                        req,
                        caller,
                        agent.as_deref(),
                        committed.as_ref(),
                        e,
                    )
                    .await;
                }
                None => {
                    self.run_allow_hooks(&mut d, req, caller, agent.as_deref(), committed.as_ref())
                        .await;
                }
            }
            self.recheck_suspension(&mut d, req, caller, agent.as_deref(), generation)
                .await;
        }
        d
    }

    /// The policy's decision, or `preset` (a denial decided elsewhere),
    /// with the policy id filled in.
    fn decide_or_take(
        &self,
        req: &ToolCallRequest,
        caller: Caller,
        preset: Option<Decision>,
        holder: Option<&str>,
    ) -> Decision {
        // Path arguments resolve as the caller: what it could not reach
        // itself must not decide its call.
        let resolver = HostResolver {
            creds: caller
                .uid
                .zip(caller.gid)
                .map(|(uid, gid)| FsCreds { uid, gid }),
        };
        // A bug must deny with a reason, not drop the connection.
        let decided = match preset {
            Some(d) => Ok(d),
            None => std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.decide_with(req, unix_now(), &resolver, holder)
            })),
        };
        let mut d = decided.unwrap_or_else(|_| {
            tracing::error!(action = %req.action, "the decision panicked; denying");
            Decision::denied(
                req,
                reason::INTERNAL_ERROR,
                "the decision failed internally",
            )
        });
        if d.policy_id.is_empty() {
            if let Some(p) = self.current_policy() {
                d.policy_id.clone_from(&p.id);
            }
        }
        d
    }

    /// Stores which agent holds the active message the decision claimed.
    fn record_holder(&self, d: &mut Decision, holder: &str) {
        if let Err(e) = self.store.set_holder(&d.active_message_id, holder) {
            // Unrecorded, the claim would not survive a restart: fail closed.
            tracing::error!(error = %e, holder, "could not record the active message's holder; denying");
            d.overturn(
                reason::STORE_ERROR,
                format!("recording the message's holder: {e}"),
            );
        }
    }

    /// Persists the delegation uses the decision spent, before anything is
    /// answered: unrecorded, a restart would refill them (fail closed).
    fn record_delegation_uses(&self, d: &mut Decision) {
        if d.delegation_spent.is_empty() {
            return;
        }
        if let Err(e) = self.persist_delegation_uses(&d.delegation_spent) {
            tracing::error!(error = %e, call_id = %d.call_id, "could not record a delegation use; denying");
            d.overturn(
                reason::STORE_ERROR,
                format!("recording the delegation use: {e}"),
            );
        }
    }

    /// Appends the decision's row with the allow hooks' companion rows in
    /// one commit; `Ok(None)` when there is no audit log.
    async fn append_decision(
        &self,
        d: &Decision,
        req: &ToolCallRequest,
        caller: Caller,
        agent: Option<&str>,
        companions: &mut [PreparedCompanion],
    ) -> Result<Option<crate::audit::Committed>, crate::audit::AuditError> {
        let Some(audit) = &self.audit else {
            return Ok(None);
        };
        audit
            .append_with(
                event_of(d, req, agent, caller),
                companions
                    .iter_mut()
                    .filter_map(|p| p.companion.take())
                    .collect(),
            )
            .await
            .map(Some)
    }

    /// The rows the allow hooks store with an allow's audit row, each with
    /// the hook's name and reason code. A hook that cannot make its row
    /// overturns the allow before anything is written.
    fn allow_companions(
        &self,
        d: &mut Decision,
        caller: Caller,
        agent: Option<&str>,
    ) -> Vec<PreparedCompanion> {
        if !d.is_allow() || self.audit.is_none() {
            return Vec::new();
        }
        let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Vec::new();
        let mut failure = None;
        {
            let call = allowed_call(d, caller, agent, None);
            for hook in &hooks {
                let made = std::panic::catch_unwind(AssertUnwindSafe(|| hook.companion(&call)))
                    .unwrap_or_else(|_| Err(panicked(hook.name())));
                match made {
                    Ok(Some(c)) => out.push(PreparedCompanion {
                        hook: hook.clone(),
                        reason_code: c.reason_code,
                        companion: Some(c.companion),
                    }),
                    Ok(None) => {}
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failure {
            tracing::error!(hook = %e.hook, error = %e, call_id = %d.call_id, "allow hook could not prepare its row; denying");
            d.overturn(&e.reason_code, e.to_string());
            return Vec::new();
        }
        out
    }

    /// Who holds the active messages `caller` acts on: `agent:NAME` for a
    /// process of an agent (whatever its uid), else `uid:N` for a non-admin
    /// user; None for admins.
    pub(super) fn holder_of(&self, caller: Caller) -> Option<String> {
        self.holder_for(self.caller_agent(caller).as_deref(), caller)
    }

    /// [`Self::holder_of`] for a caller whose agent is already known.
    fn holder_for(&self, agent: Option<&str>, caller: Caller) -> Option<String> {
        if let Some(agent) = agent {
            return Some(super::ingest::agent_holder(agent));
        }
        if caller.admin {
            return None;
        }
        caller.uid.map(|u| format!("uid:{u}"))
    }

    /// Runs the allow hooks in order. When one fails, the hooks that already
    /// ran are rolled back (newest first) before the decision is overturned:
    /// a grant installed for a call answered "deny" must not stay bindable.
    async fn run_allow_hooks(
        &self,
        d: &mut Decision,
        req: &ToolCallRequest,
        caller: Caller,
        agent: Option<&str>,
        committed: Option<&crate::audit::Committed>,
    ) {
        let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut failure = None;
        {
            let call = allowed_call(d, caller, agent, committed);
            for (i, hook) in hooks.iter().enumerate() {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| hook.after_allow(&call)))
                    .unwrap_or_else(|_| Err(panicked(hook.name())));
                if let Err(e) = result {
                    tracing::error!(hook = hook.name(), error = %e, call_id = %d.call_id, "allow hook failed; rolling back and denying");
                    for done in hooks[..i].iter().rev() {
                        let undone =
                            std::panic::catch_unwind(AssertUnwindSafe(|| done.rollback(&call)))
                                .unwrap_or_else(|_| Err(panicked(done.name())));
                        if let Err(re) = undone {
                            tracing::error!(hook = done.name(), error = %re, call_id = %d.call_id, "rollback of an overturned allow failed");
                        }
                    }
                    failure = Some(e);
                    break;
                }
            }
        }
        let Some(e) = failure else {
            return;
        };
        self.overturn_recorded(d, req, caller, agent, committed, e)
            .await;
    }

    /// Turns an allow whose row is written into a denial, recorded in a
    /// second row that also voids what the hooks stored with the first.
    async fn overturn_recorded(
        &self,
        d: &mut Decision,
        req: &ToolCallRequest,
        caller: Caller,
        agent: Option<&str>,
        committed: Option<&crate::audit::Committed>,
        e: HookError,
    ) {
        let voids: Vec<Box<dyn crate::audit::Companion>> = {
            let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
            let call = allowed_call(d, caller, None, committed);
            hooks
                .iter()
                .filter_map(|h| h.void_companion(&call, &e.reason_code))
                .collect()
        };
        d.overturn(&e.reason_code, e.to_string());
        if let Some(audit) = &self.audit {
            // The allow row exists; this row records that it was overturned.
            if let Ok(c) = audit
                .append_with(event_of(d, req, agent, caller), voids)
                .await
            {
                d.audit_seq = Some(c.seq);
                d.audit_hash = Some(c.hash);
            }
        }
    }
}

/// The companion of the allow's row that was not stored, as the failure of
/// the hook that made it.
fn unstored_companion(
    committed: Option<&crate::audit::Committed>,
    companions: &[PreparedCompanion],
) -> Option<HookError> {
    let e = committed?.companion_error.as_ref()?;
    let made_by = companions.get(e.index);
    Some(HookError {
        hook: made_by.map_or("audit", |p| p.hook.name()).to_owned(),
        reason_code: made_by
            .map_or(reason::INTERNAL_ERROR, |p| p.reason_code)
            .to_owned(),
        message: format!("storing with the audit row: {}", e.message),
    })
}

/// The allowed call as hooks see it.
pub(super) fn allowed_call<'a>(
    d: &'a Decision,
    caller: Caller,
    agent: Option<&'a str>,
    committed: Option<&'a crate::audit::Committed>,
) -> AllowedCall<'a> {
    AllowedCall {
        call_id: &d.call_id,
        active_message_id: &d.active_message_id,
        operator: &d.operator,
        session: &d.session,
        action: &d.action,
        grant: d.grant.as_ref(),
        peer_pid: caller.pid,
        peer_uid: caller.uid,
        agent,
        audit: committed,
        receipt_redact: d.receipt_redact,
    }
}

/// A row an allow hook stores with the allow's audit row.
struct PreparedCompanion {
    /// The hook that made it (named only if storing fails).
    hook: std::sync::Arc<dyn super::AllowHook>,
    reason_code: &'static str,
    /// Taken when handed to the audit log.
    companion: Option<Box<dyn crate::audit::Companion>>,
}

fn panicked(hook: &str) -> HookError {
    HookError {
        hook: hook.to_owned(),
        reason_code: reason::INTERNAL_ERROR.into(),
        message: "the hook panicked".into(),
    }
}

/// A lapsed session binding that changed hands says so on a row of its own.
async fn audit_rebind(audit: &crate::audit::AuditLog, o: &IngestOutcome) {
    let IngestOutcome {
        rebound_from: Some(previous),
        operator,
        session,
        ..
    } = o
    else {
        return;
    };
    let mut ev = AuditEvent::new(RecordKind::Admin, "session_rebind");
    ev.operator = clip(operator);
    ev.session = clip(session);
    ev.target = format!("previous_operator:{}", clip(previous));
    ev.decision = "allow".into();
    ev.reason_code = reason::SESSION_LAPSED.into();
    if let Err(e) = audit.append(ev).await {
        tracing::error!(error = %e, session = %session, "could not audit a session rebind");
    }
}

/// A message row's target: its body's digest and, for a well-formed v2
/// message, what the operator signed beyond it (audience and scope, the
/// scope as compact JSON, or its digest when that would not fit the row).
fn message_target(msg: &SignedMessage, body_hash: &str) -> String {
    let mut t = format!("body_sha256:{body_hash}");
    if msg.v != crate::protocol::message::VERSION_2 || msg.check().is_err() {
        return t;
    }
    if let Some(a) = &msg.for_agent {
        t.push_str(&format!(" for_agent:{a}"));
    }
    if let Some(h) = &msg.for_host {
        t.push_str(&format!(" for_host:{h}"));
    }
    if let Some(scope) = &msg.scope {
        let json = serde_json::to_string(scope).unwrap_or_default();
        if t.len() + json.len() + 7 <= 1024 {
            t.push_str(&format!(" scope:{json}"));
        } else {
            let digest = hex::encode(&Sha256::digest(json.as_bytes())[..8]);
            t.push_str(&format!(" scope_sha256:{digest}"));
        }
    }
    t
}

/// The audit event of a decision. Target: the call's arguments as compact
/// JSON (clipped). The row names its caller: `agent` (resolved once per
/// call, empty outside every agent) and the calling process.
pub(super) fn event_of(
    d: &Decision,
    req: &ToolCallRequest,
    agent: Option<&str>,
    caller: Caller,
) -> AuditEvent {
    let mut ev = AuditEvent::new(RecordKind::ToolCall, clip(&d.action));
    ev.agent = agent.map(clip).unwrap_or_default();
    ev.pid = caller.pid.unwrap_or(0);
    ev.operator = clip(&d.operator);
    ev.session = clip(&d.session);
    ev.active_message_id = clip(&d.active_message_id);
    ev.call_id.clone_from(&d.call_id);
    ev.target = clip(&serde_json::to_string(&req.arguments).unwrap_or_default());
    ev.decision.clone_from(&d.decision);
    ev.reason_code.clone_from(&d.reason_code);
    ev.policy_id.clone_from(&d.policy_id);
    ev.latency_us = d.latency_us;
    ev
}

/// Why a call or message is refused while the audit disk is nearly full.
const STORAGE_LOW: &str = "the audit log's filesystem is nearly full (free space below audit.min_free_mb): what would be allowed is denied, and recorded, until space is freed";
