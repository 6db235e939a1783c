//! The tool-call decision. Reads only memory (active messages, operators,
//! sessions, the compiled policy, rate buckets): no I/O, so it is fast and
//! cannot block. Checks run in the documented order; the first failure decides.
use std::{sync::Arc, time::Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ingest::{parse_active_id, ActiveMessage};
use super::resolve::{HostResolver, PathResolver};
use super::{Gateway, Operator};
use crate::grant_spec::GrantSpec;
use crate::policy::eval::Allowed;
use crate::protocol::reason;
use crate::protocol::scope::ArgValue;

/// Longest action name accepted, in bytes.
pub const MAX_ACTION_LEN: usize = 64;

/// A tool call as submitted by the agent's runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallRequest {
    /// The active-message id the call acts on behalf of.
    pub active_message_id: String,
    /// Action name (as in the policy).
    pub action: String,
    /// Arguments, by name.
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// The runtime's own id of this tool call (`toolu_…`, `call_…`), if it
    /// has one: a second request with the same id from the same agent (the
    /// hook, then forward mode or the MCP gateway) gets the first decision
    /// and installs no second grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
}

/// The answer to a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// `allow` or `deny` (`escalate` only from [`Gateway::decide`]: the
    /// API's answer is the outcome of the wait for approval).
    pub decision: String,
    /// `ok` on allow, else the stable reason code.
    pub reason_code: String,
    /// Human explanation of a denial (empty on allow).
    pub detail: String,
    /// Policy that decided (empty if none was loaded).
    pub policy_id: String,
    /// Unique id of this call (32 hex digits); bind tool processes to it.
    pub call_id: String,
    /// The active-message id the call echoed.
    pub active_message_id: String,
    /// Operator of the originating message (claimed, if it was untrusted).
    pub operator: String,
    /// Session of the originating message.
    pub session: String,
    /// Action name.
    pub action: String,
    /// Role that allowed the call.
    pub role: Option<String>,
    /// What the kernel may let the tool do (allow only).
    pub grant: Option<GrantSpec>,
    /// Time the decision took, microseconds (audit and hooks excluded).
    pub latency_us: u64,
    /// Audit row of this decision.
    pub audit_seq: Option<u64>,
    /// Hash of that audit row, hex.
    pub audit_hash: Option<String>,
    /// This call made its caller the holder of the active message (the
    /// pipeline persists the claim; not part of the wire format).
    #[serde(skip)]
    pub claimed_message: bool,
    /// The policy hides this call's target on its receipt card (the
    /// action's `receipt_redact`; not part of the wire format).
    #[serde(skip)]
    pub receipt_redact: bool,
    /// The delegation tokens this call spent a use of (leaf first; the
    /// pipeline persists them; not part of the wire format).
    #[serde(skip)]
    pub delegation_spent: Vec<String>,
    /// What the session checks found (effect class, elevation, anomaly;
    /// not part of the wire format).
    #[serde(skip)]
    pub sessions: CallFacts,
    /// Protected files this escalated call would write: only an approval
    /// signed with an owner's key gives them (not part of the wire format).
    #[serde(skip)]
    pub protected_pending: Vec<std::path::PathBuf>,
}

impl Decision {
    /// True if the call is allowed.
    pub fn is_allow(&self) -> bool {
        self.decision == "allow"
    }

    /// A denial of `req` with a fresh call id (fields filled in by the caller).
    pub fn denied(req: &ToolCallRequest, reason_code: &str, detail: &str) -> Self {
        Decision {
            decision: "deny".into(),
            reason_code: reason_code.to_owned(),
            detail: detail.to_owned(),
            policy_id: String::new(),
            call_id: new_call_id(),
            active_message_id: req.active_message_id.clone(),
            operator: String::new(),
            session: String::new(),
            action: req.action.clone(),
            role: None,
            grant: None,
            latency_us: 0,
            audit_seq: None,
            audit_hash: None,
            claimed_message: false,
            receipt_redact: false,
            delegation_spent: Vec::new(),
            sessions: Default::default(),
            protected_pending: vec![],
        }
    }

    /// Turns this decision into a denial (keeps ids for the record).
    pub fn overturn(&mut self, reason_code: &str, detail: impl Into<String>) {
        self.decision = "deny".into();
        self.reason_code = reason_code.to_owned();
        self.detail = detail.into();
        self.grant = None;
    }
}

/// A fresh call id: 32 hex digits, the decision's Unix time in ms (48 bits)
/// then 80 random bits. Later ids sort after earlier ones, so the receipt
/// queue's unique index of call ids grows at its end: a batch of allows
/// dirties one index page instead of one per call. 80 random bits keep an
/// id unguessable.
fn new_call_id() -> String {
    call_id_at(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
        rand::random::<u128>(),
    )
}

/// The call id of millisecond `ms` with randomness `random` (its low 80 bits).
fn call_id_at(ms: u128, random: u128) -> String {
    const RANDOM_BITS: u32 = 80;
    let time = ms & ((1 << (128 - RANDOM_BITS)) - 1);
    let random = random & ((1 << RANDOM_BITS) - 1);
    format!("{:032x}", (time << RANDOM_BITS) | random)
}

impl Gateway {
    /// The roles of the verified operator behind `active_message_id` at
    /// Unix time `now`: what that operator could call at all. Empty when
    /// the message is unknown, expired or untrusted, or its operator is
    /// gone, revoked or rotated since (the operator could call nothing).
    pub fn operator_roles(&self, active_message_id: &str, now: i64) -> Vec<String> {
        let Some(msg) = parse_active_id(active_message_id).and_then(|k| {
            self.active
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&k)
                .cloned()
        }) else {
            return Vec::new();
        };
        if msg.expires_at <= now || msg.key_gen.is_none() {
            return Vec::new();
        }
        match self
            .operators
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(msg.authority())
        {
            Some(op) if !op.revoked && Some(op.key_gen) == msg.key_gen => op.roles.clone(),
            _ => Vec::new(),
        }
    }

    /// Decides a tool call at Unix time `now`, resolving path arguments as
    /// agentd itself. Never fails: every error is a denial with a reason code.
    pub fn decide(&self, req: &ToolCallRequest, now: i64) -> Decision {
        self.decide_with(req, now, &HostResolver::default(), None)
    }

    /// [`Self::decide`] with the resolver of path arguments chosen by the
    /// caller (the API resolves with the caller's credentials) and the
    /// identity of the calling agent (`holder`; None for admins), which
    /// claims an active message at first use and must match it afterwards.
    pub fn decide_with(
        &self,
        req: &ToolCallRequest,
        now: i64,
        resolver: &dyn PathResolver,
        holder: Option<&str>,
    ) -> Decision {
        let started = Instant::now();
        let mut d = Decision::denied(req, "", "");
        let policy = self.current_policy();
        if let Some(p) = &policy {
            d.policy_id.clone_from(&p.id);
        }
        match self.check(req, now, policy.as_deref(), resolver, holder, &mut d) {
            Ok(false) => {
                d.decision = "allow".into();
                d.reason_code = reason::OK.into();
            }
            Ok(true) => {
                d.decision = ESCALATE.into();
                (d.reason_code, d.detail) = escalation_reason(req, &d.sessions);
            }
            Err((code, detail)) => {
                d.reason_code = code.into();
                d.detail = detail;
            }
        }
        d.latency_us = started.elapsed().as_micros() as u64;
        d
    }

    /// The documented checks in order; the first failure decides. Ok(true):
    /// every check passed and the action needs a human's approval.
    fn check(
        &self,
        req: &ToolCallRequest,
        now: i64,
        policy: Option<&crate::policy::CompiledPolicy>,
        resolver: &dyn PathResolver,
        holder: Option<&str>,
        d: &mut Decision,
    ) -> Result<bool, Refused> {
        let msg = self.active_message(req, now, holder, d)?;
        self.not_suspended(&msg, holder)?;
        let op = self.verified_operator(&msg)?;
        self.session_bound(&msg)?;
        // From here the call is the session's: the anomaly check counts it.
        let out = self.check_in_session(req, now, policy, resolver, &msg, &op, d);
        self.count_call(policy, &msg.session, &req.action, &out, d);
        out
    }

    /// Checks 3a to 10 of a call on a verified message of a bound session.
    #[allow(clippy::too_many_arguments)]
    fn check_in_session(
        &self,
        req: &ToolCallRequest,
        now: i64,
        policy: Option<&crate::policy::CompiledPolicy>,
        resolver: &dyn PathResolver,
        msg: &ActiveMessage,
        op: &Operator,
        d: &mut Decision,
    ) -> Result<bool, Refused> {
        if let Some(id) = &req.tool_use_id {
            crate::runtime::check_tool_use_id(id)
                .map_err(|e| (reason::INVALID_TOOL_USE_ID, e.to_string()))?;
        }
        // 3a: a message signed under a delegation token is bounded by
        // every link's scope; 4 onwards use the root operator's roles now.
        let chain =
            self.delegation_for_call(&msg.operator, op, &req.action, &req.arguments, now)?;
        let (mut allowed, resolved) = policy_allows(policy, msg, op, req, resolver)?;
        if let (Some(chain), Some(resolved)) = (&chain, &resolved) {
            // The token's patterns hold for the objects the paths really name.
            super::delegation::chain::within_every_link(chain, &req.action, resolved)
                .map_err(|(code, why)| (code, format!("{why} (after resolving symlinks)")))?;
        }
        let mut ask = false;
        if let Some(policy) = policy {
            within_scope(policy, msg, &allowed.role, req, resolved.as_ref())?;
            ask = self.session_gate(policy, msg, &req.action, &allowed, now, d)?;
        }
        let protected_pending = match policy {
            Some(p) => self.protected_writes(p, msg, op, &req.action, &mut allowed)?,
            None => vec![],
        };
        self.within_rate(msg.authority(), &allowed)?;
        if self.within_usage(msg.authority(), &req.action, &allowed)? {
            // Past the threshold's `escalate_after`: a human decides.
            allowed.approval_required = true;
        }
        // An elevation or a tripped session asks a human (step 10).
        allowed.approval_required |= ask;
        // Only here, after every check: a call that would be denied is
        // denied, never escalated.
        let (allowed, escalate) = match crate::policy::approval::verdict(Ok(allowed)) {
            crate::policy::approval::Verdict::Allow(a) => (a, false),
            crate::policy::approval::Verdict::Escalate(a) => (a, true),
            crate::policy::approval::Verdict::Deny(den) => return Err((den.reason, den.detail)),
        };
        if let Some(chain) = &chain {
            // Last: only a call that passed everything spends a use.
            d.delegation_spent = self.take_delegation_use(chain, now)?;
        }
        d.role = Some(allowed.role);
        d.grant = allowed.grant;
        d.receipt_redact = allowed.receipt_redact;
        d.protected_pending = protected_pending;
        Ok(escalate)
    }

    /// After a wait for approval: the call's message still vouches for it
    /// (unexpired, its operator neither revoked nor rotated, the session
    /// still bound to it, nothing suspended in its scope). An approval does
    /// not outlive the authority of
    /// the message it was asked on.
    pub(super) fn still_vouched(
        &self,
        active_message_id: &str,
        holder: Option<&str>,
        now: i64,
    ) -> Result<(), Refused> {
        let msg = parse_active_id(active_message_id)
            .and_then(|k| {
                self.active
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&k)
                    .cloned()
            })
            .ok_or((
                reason::UNKNOWN_ACTIVE_MESSAGE,
                "the active message is gone".to_owned(),
            ))?;
        if msg.expires_at <= now {
            return Err((
                reason::ACTIVE_MESSAGE_EXPIRED,
                format!("the active message expired at {}", msg.expires_at),
            ));
        }
        let op = self.verified_operator(&msg)?;
        // A token revoked or expired while the call waited ends it too.
        self.delegation_still_vouches(&msg.operator, &op, now)?;
        self.not_suspended(&msg, holder)?;
        self.session_bound(&msg)
    }

    /// Checks 1 and 1b: the active message exists and is unexpired, and
    /// the first agent to use it holds it (the id is not a bearer token).
    fn active_message(
        &self,
        req: &ToolCallRequest,
        now: i64,
        holder: Option<&str>,
        d: &mut Decision,
    ) -> Result<Arc<ActiveMessage>, Refused> {
        let msg = parse_active_id(&req.active_message_id)
            .and_then(|k| {
                self.active
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&k)
                    .cloned()
            })
            .ok_or((
                reason::UNKNOWN_ACTIVE_MESSAGE,
                "no such active-message id".to_owned(),
            ))?;
        d.operator = if msg.key_gen.is_some() {
            msg.operator.clone()
        } else {
            claimed_operator(&msg.operator)
        };
        d.session.clone_from(&msg.session);
        if msg.expires_at <= now {
            return Err((
                reason::ACTIVE_MESSAGE_EXPIRED,
                format!("the active message expired at {}", msg.expires_at),
            ));
        }
        if let (Some(audience), Some(me)) = (&msg.audience, holder) {
            if *me != super::ingest::agent_holder(audience) {
                return Err((
                    reason::MESSAGE_OTHER_AUDIENCE,
                    format!("the operator signed the message for agent `{audience}`, not {me}"),
                ));
            }
        }
        if let Some(me) = holder {
            if msg.holder.get().is_none() && msg.holder.set(me.to_owned()).is_ok() {
                d.claimed_message = true;
            }
            match msg.holder.get() {
                Some(h) if h == me => {}
                other => {
                    return Err((
                        reason::ACTIVE_MESSAGE_OTHER_AGENT,
                        format!(
                            "the active message is held by {}, not {me}",
                            other.map(String::as_str).unwrap_or("another agent")
                        ),
                    ))
                }
            }
        }
        Ok(msg)
    }

    /// Check 2: the originating message was verified, by a key still in force.
    fn verified_operator(&self, msg: &ActiveMessage) -> Result<Arc<Operator>, Refused> {
        let Some(key_gen) = msg.key_gen else {
            let code = untrusted_reason(&msg.reason);
            return Err((
                code,
                format!("the originating message is untrusted ({})", msg.reason),
            ));
        };
        let op = self
            .operators
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(msg.authority())
            .cloned()
            .ok_or((
                reason::UNKNOWN_OPERATOR,
                format!("operator `{}` no longer exists", msg.authority()),
            ))?;
        if op.revoked {
            return Err((
                reason::OPERATOR_REVOKED,
                format!("operator `{}` is revoked", msg.authority()),
            ));
        }
        if op.key_gen != key_gen {
            return Err((
                reason::SIGNATURE_MISMATCH,
                format!(
                    "operator `{}`'s key was rotated after the message was signed",
                    msg.authority()
                ),
            ));
        }
        Ok(op)
    }

    /// Check 3: the session is bound to the same operator.
    fn session_bound(&self, msg: &ActiveMessage) -> Result<(), Refused> {
        let bound_ok = self
            .sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&msg.session)
            .is_some_and(|o| *o == msg.operator);
        if bound_ok {
            return Ok(());
        }
        Err((
            reason::SESSION_OPERATOR_MISMATCH,
            format!(
                "session `{}` is not bound to `{}`",
                msg.session, msg.operator
            ),
        ))
    }

    /// Check 8: the rate limit of the allowing role.
    fn within_rate(&self, operator: &str, allowed: &Allowed) -> Result<(), Refused> {
        if self.rates.take(
            operator,
            &allowed.role,
            allowed.rate_per_minute,
            allowed.burst,
            Instant::now(),
        ) {
            return Ok(());
        }
        Err((
            reason::RATE_LIMITED,
            format!(
                "role `{}` allows {} calls per minute",
                allowed.role, allowed.rate_per_minute
            ),
        ))
    }
}

/// The decision of a call that waits for a human (`decide` only; the
/// pipeline turns it into allow or deny).
pub const ESCALATE: &str = "escalate";
impl Gateway {
    /// Check 9: the role's usage threshold for the action, if it has one
    /// (counted only once every other check passed: a use is an allow, or
    /// an escalation). Ok(true): this use is past `escalate_after`.
    fn within_usage(
        &self,
        operator: &str,
        action: &str,
        allowed: &Allowed,
    ) -> Result<bool, Refused> {
        let Some(limit) = allowed.usage else {
            return Ok(false);
        };
        if let Some(nth) = self
            .usage
            .take(operator, &allowed.role, action, limit, Instant::now())
        {
            return Ok(limit.escalate_after.is_some_and(|n| nth > n as usize));
        }
        Err((
            reason::USAGE_THRESHOLD,
            format!(
                "role `{}` allows `{action}` at most {} times per {} s per operator",
                allowed.role, limit.max_uses, limit.window_secs
            ),
        ))
    }
}

/// What the session checks found about one call (not on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFacts {
    /// The call's effect class (the action's, raised to `destructive` for
    /// a call naming a destructive path or command).
    pub effect: Option<crate::policy::effect::Effect>,
    /// The call escalates for an elevation of its read-only session.
    pub elevation: bool,
    /// How long that elevation would last, seconds (the policy's when the
    /// call was decided, so the approver approves what was asked).
    pub elevation_secs: u64,
    /// The call escalates because its session tripped the anomaly check
    /// (the figures that did).
    pub anomaly: Option<String>,
    /// This call tripped its session's anomaly check (the figures; the
    /// pipeline audits them once).
    pub tripped: Option<String>,
}

/// The reason code and detail of an escalation: an elevation first (its
/// approval also answers the rest), then a tripped session, then the
/// action's (or usage threshold's) own need for approval.
fn escalation_reason(req: &ToolCallRequest, s: &CallFacts) -> (String, String) {
    if s.elevation {
        let class = s.effect.map_or("mutating", |e| e.as_str());
        return (
            reason::ELEVATION_REQUIRED.into(),
            format!(
                "the session is read-only and `{}` is class {class}: an approver may elevate the session for it",
                req.action
            ),
        );
    }
    if let Some(figures) = &s.anomaly {
        return (
            reason::ANOMALY_ESCALATED.into(),
            format!("the session tripped the anomaly check ({figures}): its calls need a human's approval"),
        );
    }
    (
        reason::APPROVAL_REQUIRED.into(),
        format!("`{}` needs a human's approval", req.action),
    )
}

/// A refusal: reason code and detail.
pub(super) type Refused = (&'static str, String);

/// Checks 4 to 7: the policy's role allow-list, argument shape,
/// destructive class and constraints, then the same decision on the real
/// objects the paths name (a planted symlink must not carry a scope, or
/// the grant, elsewhere). Also the resolved arguments, when resolution
/// changed any.
fn policy_allows(
    policy: Option<&crate::policy::CompiledPolicy>,
    msg: &ActiveMessage,
    op: &Operator,
    req: &ToolCallRequest,
    resolver: &dyn PathResolver,
) -> Result<(Allowed, Option<Map<String, Value>>), Refused> {
    let policy = policy.ok_or((reason::NO_POLICY, "no policy is loaded".to_owned()))?;
    if req.action.len() > MAX_ACTION_LEN {
        return Err((
            reason::UNKNOWN_ACTION,
            format!("action name longer than {MAX_ACTION_LEN} bytes"),
        ));
    }
    let allowed = policy
        .evaluate(msg.authority(), &op.roles, &req.action, &req.arguments)
        .map_err(|den| (den.reason, den.detail))?;
    let Some(resolved) = resolved_arguments(policy, &allowed.role, req, resolver)? else {
        return Ok((allowed, None));
    };
    let allowed = policy
        .evaluate(msg.authority(), &op.roles, &req.action, &resolved)
        .map_err(|den| {
            (
                den.reason,
                format!("{} (after resolving symlinks)", den.detail),
            )
        })?;
    Ok((allowed, Some(resolved)))
}

/// Check 7b: a v2 message's signed scope covers the call, its path
/// arguments taken as the policy decided them (normalised, then resolved),
/// never as the caller wrote them.
fn within_scope(
    policy: &crate::policy::CompiledPolicy,
    msg: &ActiveMessage,
    role: &str,
    req: &ToolCallRequest,
    resolved: Option<&Map<String, Value>>,
) -> Result<(), Refused> {
    let Some(scope) = &msg.scope else {
        return Ok(());
    };
    let args = resolved.unwrap_or(&req.arguments);
    // Path arguments as the policy decided them: normalised (resolution
    // already replaced what it changed). The policy accepted each, so each
    // normalises; one that did not would match nothing (fail closed).
    let paths: Vec<(&str, Option<String>)> = policy
        .path_arguments(role, &req.action)
        .into_iter()
        .map(|name| {
            let normal = match args.get(name) {
                Some(Value::String(raw)) => crate::policy::path::normalize(raw).ok(),
                _ => None,
            };
            (name, normal)
        })
        .collect();
    let in_scope = scope.allows(&req.action, |name| {
        match paths.iter().find(|(n, _)| *n == name) {
            Some((_, p)) => p.as_deref().map(ArgValue::Text),
            None => args.get(name).map(ArgValue::Json),
        }
    });
    if in_scope {
        return Ok(());
    }
    let actions: Vec<&str> = scope.entries.iter().map(|e| e.action.as_str()).collect();
    Err((
        reason::OUTSIDE_MESSAGE_SCOPE,
        format!(
            "`{}` with these arguments is outside the scope the operator signed (entries for: {})",
            req.action,
            if actions.is_empty() {
                "no action".to_owned()
            } else {
                actions.join(", ")
            }
        ),
    ))
}

/// The call's arguments with every path argument replaced by the real path
/// it names, or None when resolution changes nothing.
fn resolved_arguments(
    policy: &crate::policy::CompiledPolicy,
    role: &str,
    req: &ToolCallRequest,
    resolver: &dyn PathResolver,
) -> Result<Option<Map<String, Value>>, (&'static str, String)> {
    let mut out: Option<Map<String, Value>> = None;
    for name in policy.path_arguments(role, &req.action) {
        let Some(Value::String(raw)) = req.arguments.get(name) else {
            continue;
        };
        // Evaluation accepted it, so it normalises.
        let Ok(lexical) = crate::policy::path::normalize(raw) else {
            continue;
        };
        let real = resolver
            .resolve(&lexical)
            .map_err(|e| (reason::PATH_UNRESOLVABLE, format!("argument `{name}`: {e}")))?;
        if real != lexical {
            out.get_or_insert_with(|| req.arguments.clone())
                .insert(name.to_owned(), Value::String(real));
        }
    }
    Ok(out)
}

/// How an unverified message's operator appears in decisions and audit rows:
/// marked as a claim, never as an operator id (which cannot contain `:`).
pub fn claimed_operator(claimed: &str) -> String {
    if claimed.is_empty() {
        String::new()
    } else {
        format!("claimed:{claimed}")
    }
}

/// Maps a stored ingest reason back to its static code (fail closed on anything unknown).
fn untrusted_reason(stored: &str) -> &'static str {
    [
        reason::UNSIGNED_MESSAGE,
        reason::UNKNOWN_OPERATOR,
        reason::OPERATOR_REVOKED,
        reason::SIGNATURE_MISMATCH,
        reason::UNKNOWN_DELEGATION,
        reason::DELEGATION_REVOKED,
        reason::DELEGATION_EXPIRED,
        reason::DELEGATION_USED_UP,
    ]
    .into_iter()
    .find(|c| *c == stored)
    .unwrap_or(reason::SIGNATURE_MISMATCH)
}

#[cfg(test)]
mod call_id_tests {
    use super::*;

    #[test]
    fn call_ids_sort_by_time_and_keep_80_random_bits() {
        let earlier = call_id_at(1_764_700_000_000, u128::MAX);
        let later = call_id_at(1_764_700_000_001, 0);
        assert!(earlier < later, "{earlier} {later}");
        assert_eq!((earlier.len(), later.len()), (32, 32));
        assert!(earlier.ends_with(&"f".repeat(20)), "{earlier}");
        assert!(later.ends_with(&"0".repeat(20)), "{later}");
        let (a, b) = (new_call_id(), new_call_id());
        assert_ne!(a, b);
        assert!(a.len() == 32 && a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
