//! The session checks of the decision (docs/protocol.md §3, 7c and 7d):
//! a read-only session lets only `read`-class calls through without an
//! elevation, and a session whose calls look wrong (denial rate, write
//! ratio) needs a human — or is denied — for its next calls. Both read
//! memory only ([`SessionStates`]); the pipeline audits what they start
//! (an elevation granted, a trip).
use super::decide::{Decision, Refused};
use super::ingest::ActiveMessage;
use super::session_state::{Elevation, SessionStates};
use super::Gateway;
use crate::audit::{AuditEvent, RecordKind};
use crate::policy::eval::Allowed;
use crate::policy::schema::AnomalyThen;
use crate::policy::{effect::Effect, CompiledPolicy};
use crate::protocol::reason;

impl Gateway {
    /// The per-session state (elevations, anomaly counts).
    pub(super) fn sessions_state(&self) -> &SessionStates {
        &self.session_states
    }

    /// Checks 7c and 7d for an allowed call: the session's mode, then its
    /// anomaly state. Ok(true): the call needs a human (an elevation, or
    /// the anomaly check's approval); the reasons are in `d.sessions`.
    pub(super) fn session_gate(
        &self,
        policy: &CompiledPolicy,
        msg: &ActiveMessage,
        action: &str,
        allowed: &Allowed,
        now: i64,
        d: &mut Decision,
    ) -> Result<bool, Refused> {
        let read_only = allowed.read_only_session;
        if !read_only && policy.anomaly.is_none() {
            // Neither check is on: the decision costs nothing more.
            return Ok(false);
        }
        let (session, operator) = (msg.session.as_str(), msg.operator.as_str());
        let (class, source) = policy.effect_of(action);
        let effect = if allowed.destructive {
            class.max(Effect::Destructive)
        } else {
            class
        };
        d.sessions.effect = Some(effect);
        let mut ask = false;
        if read_only && effect != Effect::Read {
            if effect == Effect::Admin {
                return Err((
                    reason::ADMIN_NOT_ELEVATABLE,
                    format!("`{action}` is class admin ({source}): a read-only session never elevates it"),
                ));
            }
            if self
                .session_states
                .elevated_until(session, action, operator, now)
                .is_none()
            {
                d.sessions.elevation = true;
                d.sessions.elevation_secs = policy.sessions.elevation_secs;
                ask = true;
            }
        }
        let Some(rules) = &policy.anomaly else {
            return Ok(ask);
        };
        if let Some(figures) = self.session_states.tripped(session) {
            if rules.then == AnomalyThen::Deny {
                return Err((
                    reason::ANOMALY_DENIED,
                    format!("session `{session}` tripped the anomaly check ({figures}); its calls are denied until it is released"),
                ));
            }
            d.sessions.anomaly = Some(figures);
            ask = true;
        }
        Ok(ask)
    }

    /// Counts a decided call for its session's anomaly check (when the
    /// policy has one). Calls the anomaly check itself denied are not
    /// counted.
    pub(super) fn count_call(
        &self,
        policy: Option<&CompiledPolicy>,
        session: &str,
        action: &str,
        out: &Result<bool, Refused>,
        d: &mut Decision,
    ) {
        let Some((policy, rules)) = policy.and_then(|p| p.anomaly.as_ref().map(|r| (p, r))) else {
            return;
        };
        let denied = match out {
            Err((code, _)) if *code == reason::ANOMALY_DENIED => return,
            Err(_) => true,
            Ok(_) => false,
        };
        let effect = d
            .sessions
            .effect
            .unwrap_or_else(|| policy.effect_of(action).0);
        d.sessions.tripped = self
            .session_states
            .count(session, denied, effect.is_write(), rules);
    }

    /// After an approver approved the escalated call `d`: its session is
    /// elevated for the call's action (audited first: an elevation nobody
    /// can account for is not granted), and an anomaly trip is reset.
    pub(super) async fn after_approval(&self, d: &Decision, approver: &str, agent: Option<&str>) {
        if d.sessions.anomaly.is_some() {
            self.session_states.reset_anomaly(&d.session);
        }
        if !d.sessions.elevation {
            return;
        }
        let secs = i64::try_from(d.sessions.elevation_secs).unwrap_or(i64::MAX);
        let e = Elevation {
            action: d.action.clone(),
            until: super::unix_now().saturating_add(secs),
            approver: approver.to_owned(),
            operator: d.operator.clone(),
            agent: agent.unwrap_or_default().to_owned(),
        };
        if let Some(audit) = &self.audit {
            let mut ev = AuditEvent::new(RecordKind::Admin, "session_elevate");
            ev.operator = crate::audit::clip(approver);
            ev.session = crate::audit::clip(&d.session);
            ev.active_message_id.clone_from(&d.active_message_id);
            ev.call_id.clone_from(&d.call_id);
            ev.agent = crate::audit::clip(&e.agent);
            ev.target = crate::audit::clip(&format!(
                "actions:{} until:{} operator:{} effect:{}",
                e.action,
                e.until,
                e.operator,
                d.sessions.effect.unwrap_or(Effect::Mutating)
            ));
            ev.decision = "allow".into();
            ev.reason_code = reason::ELEVATION_GRANTED.into();
            ev.policy_id.clone_from(&d.policy_id);
            if let Err(err) = audit.append(ev).await {
                tracing::error!(error = %err, session = %d.session, "could not audit an elevation; not granted");
                return;
            }
        }
        tracing::info!(session = %d.session, action = %e.action, until = e.until, approver, "session elevated");
        self.session_states.elevate(&d.session, e);
    }

    /// Audits the trip of `d`'s session, once, with the figures that
    /// tripped it.
    pub(super) async fn audit_trip(&self, d: &Decision) {
        let (Some(figures), Some(audit)) = (&d.sessions.tripped, &self.audit) else {
            return;
        };
        let deny = self
            .current_policy()
            .and_then(|p| p.anomaly.as_ref().map(|a| a.then == AnomalyThen::Deny))
            .unwrap_or(true);
        let mut ev = AuditEvent::new(RecordKind::Admin, "session_anomaly");
        ev.operator = crate::audit::clip(&d.operator);
        ev.session = crate::audit::clip(&d.session);
        ev.active_message_id.clone_from(&d.active_message_id);
        ev.call_id.clone_from(&d.call_id);
        ev.target = crate::audit::clip(&format!(
            "{figures} then:{}",
            if deny { "deny" } else { "approval" }
        ));
        (ev.decision, ev.reason_code) = if deny {
            ("deny".into(), reason::ANOMALY_DENIED.into())
        } else {
            ("escalate".into(), reason::ANOMALY_ESCALATED.into())
        };
        ev.policy_id.clone_from(&d.policy_id);
        tracing::warn!(session = %d.session, figures = %figures, "session tripped the anomaly check");
        if let Err(err) = audit.append(ev).await {
            tracing::error!(error = %err, session = %d.session, "could not audit an anomaly trip");
        }
    }
}
