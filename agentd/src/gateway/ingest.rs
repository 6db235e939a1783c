//! Message ingest: structure, operator, HMAC, timestamp window, nonce,
//! session binding — then an active-message id, or a refusal with a reason.
use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::store::{AcceptOutcome, ActiveRow};
use super::{Gateway, GatewayError};
use crate::policy::schema::{Delivery, VersionRule};
use crate::protocol::message::{Checked, VERSION_2};
use crate::protocol::{reason, verify, verify_ed25519, MessageSig, Scope, SignedMessage};

/// A key kind's name in refusals.
pub(crate) fn kind_name(kind: super::KeyKind) -> &'static str {
    match kind {
        super::KeyKind::Hmac => "an HMAC-SHA256 key",
        super::KeyKind::Ed25519 => "an Ed25519 key",
    }
}

/// How far a message is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Signature, window, nonce and session all checked.
    Verified,
    /// Delivered for the agent to read, with no tool rights.
    Untrusted,
}

/// An accepted (or untrusted-delivered) message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestOutcome {
    /// Hand this to the agent; every tool call must echo it.
    pub active_message_id: String,
    /// Verified or untrusted.
    pub trust: Trust,
    /// `ok`, or why the message is untrusted.
    pub reason_code: String,
    /// Operator (claimed, for untrusted messages; may be empty).
    pub operator: String,
    /// Session id.
    pub session: String,
    /// Unix seconds when the id stops being accepted.
    pub expires_at: i64,
    /// This message bound the session to its operator.
    pub session_bound: bool,
    /// The operator whose lapsed binding this message replaced (audited; not
    /// part of the wire format).
    #[serde(skip)]
    pub rebound_from: Option<String>,
}

/// A refused message. Nothing was stored (except the audit record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable reason code.
    pub reason_code: &'static str,
    /// Human explanation.
    pub message: String,
    /// Malformed input (HTTP 400) rather than a verification failure (403),
    /// or a server-side failure (503).
    pub class: RefusalClass,
}

/// What kind of refusal, for the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalClass {
    /// The request itself is malformed.
    Malformed,
    /// The message failed verification.
    Unverified,
    /// The daemon could not do its job (store or audit).
    Unavailable,
    /// Too many unverified messages from this peer or for this claimed
    /// operator (HTTP 429). Only the first of a run is audited.
    Throttled {
        /// First refusal of a run.
        first: bool,
    },
}

fn refuse(reason_code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason_code,
        message: message.into(),
        class: RefusalClass::Unverified,
    }
}

/// An active message in memory.
#[derive(Debug)]
pub(crate) struct ActiveMessage {
    pub operator: String,
    pub session: String,
    /// Key generation that verified it, or None for untrusted messages.
    pub key_gen: Option<u32>,
    /// Ingest reason code: `ok` or why it is untrusted.
    pub reason: String,
    pub expires_at: i64,
    /// The agent that first used it; others are refused
    /// (`active_message_other_agent`). A v2 message for an agent is held
    /// by that agent from ingest.
    pub holder: std::sync::OnceLock<String>,
    /// v2: the agent the operator addressed it to (`for_agent`); any
    /// other caller is refused (`message_other_audience`).
    pub audience: Option<String>,
    /// v2: the operator's signed scope; a call outside it is refused
    /// (`outside_message_scope`, step 7b). None: whatever the role allows.
    /// Later checks ask it about one object with
    /// [`crate::protocol::scope_names_path`].
    pub scope: Option<Scope>,
}

impl ActiveMessage {
    /// The operator whose authority the message carries: its signer, or
    /// for a message signed under a token, the token's root operator.
    pub(crate) fn authority(&self) -> &str {
        crate::protocol::delegation::token_root(&self.operator).unwrap_or(&self.operator)
    }

    pub(crate) fn from_row(row: ActiveRow) -> Option<(u128, Self)> {
        let id = parse_active_id(&row.id)?;
        // A stored scope that no longer parses would widen the message to
        // its role: drop the message instead (its calls are then refused).
        let scope = match row.scope.as_deref().map(serde_json::from_str::<Scope>) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                tracing::error!(id = %row.id, error = %e, "stored message scope does not parse; dropping the message");
                return None;
            }
        };
        Some((
            id,
            Self {
                operator: row.operator,
                session: row.session,
                key_gen: row.key_gen,
                reason: row.reason,
                expires_at: row.expires_at,
                holder: row
                    .holder
                    .map(std::sync::OnceLock::from)
                    .unwrap_or_default(),
                audience: row.audience,
                scope,
            },
        ))
    }
}

/// The holder name of an agent's tool calls (see `Gateway::holder_of`).
pub(crate) fn agent_holder(agent: &str) -> String {
    format!("agent:{agent}")
}

/// Parses a 32-hex-digit active-message id.
pub(crate) fn parse_active_id(s: &str) -> Option<u128> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

impl Gateway {
    /// Verifies and records a message at Unix time `now`. Store I/O happens
    /// here (nonce, session, active message); auditing is the pipeline's.
    pub fn ingest(&self, msg: &SignedMessage, now: i64) -> Result<IngestOutcome, Refusal> {
        self.ingest_from(msg, now, "local")
    }

    /// [`Self::ingest`] for a message from `peer` (`uid:N`, `tcp`): messages
    /// that do not verify count against the peer's and the claimed
    /// operator's flood limits.
    pub fn ingest_from(
        &self,
        msg: &SignedMessage,
        now: i64,
        peer: &str,
    ) -> Result<IngestOutcome, Refusal> {
        self.ingest_to(msg, now, peer, None)
    }

    /// [`Self::ingest_from`] for a message posted to `inbox` (an agent's
    /// inbox), if any: a v2 message for another agent is refused there.
    pub(crate) fn ingest_to(
        &self,
        msg: &SignedMessage,
        now: i64,
        peer: &str,
        inbox: Option<&str>,
    ) -> Result<IngestOutcome, Refusal> {
        let claimed_name = msg.operator.as_deref().unwrap_or("");
        let checked = match msg.check() {
            Ok(c) => c,
            Err(e) => {
                self.throttle(peer, claimed_name)?;
                return Err(Refusal {
                    reason_code: e.reason_code(),
                    message: e.to_string(),
                    class: RefusalClass::Malformed,
                });
            }
        };
        let rules = self
            .current_policy()
            .map(|p| p.messages.clone())
            .unwrap_or_default();
        let claimed = msg.operator.clone().unwrap_or_default();
        let (operator, nonce, timestamp, signature) = match checked {
            Checked::Unsigned => {
                return self.untrusted_or_refuse(
                    peer,
                    rules.unsigned,
                    reason::UNSIGNED_MESSAGE,
                    "the message has no signature",
                    &claimed,
                    msg,
                    now,
                );
            }
            Checked::Signed {
                operator,
                nonce,
                timestamp,
                signature,
            } => (operator, nonce, timestamp, signature),
        };
        let op = match self.verified_by(msg, operator, &signature, now) {
            Ok(op) => op,
            Err((code, detail)) => {
                return self.untrusted_or_refuse(
                    peer,
                    rules.invalid,
                    code,
                    detail,
                    &claimed,
                    msg,
                    now,
                )
            }
        };
        self.addressed_here(msg, rules.v1, inbox)?;
        self.within_window(timestamp, now)?;
        self.accept(msg, operator, nonce, op.key_gen, now)
    }

    /// A verified message is for this daemon: its version is one the
    /// policy accepts, its `for_host` (if any) is this host, and its
    /// `for_agent` (if any) the inbox it was posted to (if any).
    fn addressed_here(
        &self,
        msg: &SignedMessage,
        v1: VersionRule,
        inbox: Option<&str>,
    ) -> Result<(), Refusal> {
        if msg.v != VERSION_2 && v1 == VersionRule::Refuse {
            return Err(refuse(
                reason::MESSAGE_VERSION_REFUSED,
                "the policy accepts only v2 messages ([messages] v1 = \"refuse\")",
            ));
        }
        if let Some(host) = msg.for_host.as_deref() {
            let here = self.host_id();
            if host != here {
                return Err(refuse(
                    reason::MESSAGE_WRONG_HOST,
                    format!("the message is for host `{host}`; this host is `{here}`"),
                ));
            }
        }
        match (msg.for_agent.as_deref(), inbox) {
            (Some(agent), Some(inbox)) if agent != inbox => Err(refuse(
                reason::MESSAGE_OTHER_AUDIENCE,
                format!("the message is for agent `{agent}`, not `{inbox}`"),
            )),
            _ => Ok(()),
        }
    }

    /// The enrolled, unrevoked operator whose key made `signature` over the
    /// message; else the reason it is not verified, and why.
    fn verified_by(
        &self,
        msg: &SignedMessage,
        operator: &str,
        signature: &crate::protocol::MessageSig,
        now: i64,
    ) -> Result<Arc<super::Operator>, (&'static str, String)> {
        if crate::protocol::delegation::token_root(operator).is_some() {
            // Signed under a delegation token: its secret, its chain in force.
            let canonical = msg
                .canonical()
                .expect("checked signed message has all fields");
            return self
                .verify_signer(operator, &canonical, signature, now)
                .map(|a| a.op);
        }
        let op = self
            .operators
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(operator)
            .cloned();
        let Some(op) = op else {
            return Err((
                reason::UNKNOWN_OPERATOR,
                format!("no operator `{operator}` is enrolled"),
            ));
        };
        if op.revoked {
            return Err((
                reason::OPERATOR_REVOKED,
                format!("operator `{operator}` is revoked"),
            ));
        }
        let canonical = msg
            .canonical()
            .expect("checked signed message has all fields");
        // The operator's enrolled key decides which kind is accepted.
        let good = match (op.key_kind, signature) {
            (super::KeyKind::Hmac, MessageSig::Hmac(s)) => verify(&op.key, &canonical, s),
            (super::KeyKind::Ed25519, MessageSig::Ed25519(s)) => {
                verify_ed25519(&op.key, &canonical, &s[..])
            }
            (kind, _) => {
                return Err((
                    reason::SIGNATURE_MISMATCH,
                    format!(
                        "operator `{operator}` signs with {}; the message carries the other kind of signature",
                        kind_name(kind)
                    ),
                ))
            }
        };
        if !good {
            return Err((
                reason::SIGNATURE_MISMATCH,
                format!("the signature does not match operator `{operator}`'s key"),
            ));
        }
        Ok(op)
    }

    /// The timestamp lies within the window around `now`.
    pub(super) fn within_window(&self, timestamp: i64, now: i64) -> Result<(), Refusal> {
        let window = self.settings.timestamp_window_secs;
        if now - timestamp > window {
            return Err(refuse(
                reason::STALE_TIMESTAMP,
                format!(
                    "timestamp is {} s old; the window is {window} s",
                    now - timestamp
                ),
            ));
        }
        if timestamp - now > window {
            return Err(refuse(
                reason::FUTURE_TIMESTAMP,
                format!(
                    "timestamp is {} s in the future; the window is {window} s",
                    timestamp - now
                ),
            ));
        }
        Ok(())
    }

    /// Records a verified message: spends its nonce, binds (or checks) its
    /// session, and makes it the active message the agent's calls echo.
    fn accept(
        &self,
        msg: &SignedMessage,
        operator: &str,
        nonce: &str,
        key_gen: u32,
        now: i64,
    ) -> Result<IngestOutcome, Refusal> {
        let id = new_active_id();
        let row = ActiveRow {
            id: format!("{id:032x}"),
            operator: operator.to_owned(),
            session: msg.session.clone(),
            key_gen: Some(key_gen),
            reason: reason::OK.to_owned(),
            created_at: now,
            expires_at: now + self.settings.active_message_ttl_secs,
            // Addressed to an agent: held by it from the start, so no other
            // caller can claim it first.
            holder: msg.for_agent.as_deref().map(agent_holder),
            audience: msg.for_agent.clone(),
            scope: msg
                .scope
                .as_ref()
                .map(|s| serde_json::to_string(s).expect("a scope serialises")),
        };
        let outcome = self
            .store
            .accept_verified(
                nonce,
                now + self.settings.nonce_ttl_secs,
                &row,
                self.settings.session_ttl_secs,
            )
            .map_err(|e| {
                tracing::error!(error = %e, "gateway store failed on ingest");
                Refusal {
                    reason_code: reason::STORE_ERROR,
                    message: e.to_string(),
                    class: RefusalClass::Unavailable,
                }
            })?;
        let (session_bound, rebound_from) = match outcome {
            AcceptOutcome::Replayed => {
                return Err(refuse(
                    reason::REPLAYED_NONCE,
                    "the nonce was already used by this operator",
                ))
            }
            AcceptOutcome::SessionMismatch => {
                return Err(refuse(
                    reason::SESSION_OPERATOR_MISMATCH,
                    format!("session `{}` is bound to another operator", msg.session),
                ));
            }
            AcceptOutcome::Accepted {
                newly_bound,
                rebound_from,
            } => (newly_bound, rebound_from),
        };
        if session_bound {
            self.sessions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(row.session.clone(), row.operator.clone());
        }
        let out = IngestOutcome {
            active_message_id: row.id.clone(),
            trust: Trust::Verified,
            reason_code: reason::OK.to_owned(),
            operator: row.operator.clone(),
            session: row.session.clone(),
            expires_at: row.expires_at,
            session_bound,
            rebound_from,
        };
        let (_, active) = ActiveMessage::from_row(row).expect("formatted id parses");
        self.active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(active));
        Ok(out)
    }

    /// Spends a token of the flood limit for an unverified message.
    fn throttle(&self, peer: &str, claimed: &str) -> Result<(), Refusal> {
        match self.flood.take(peer, claimed, std::time::Instant::now()) {
            super::flood::FloodVerdict::Pass => Ok(()),
            super::flood::FloodVerdict::Limited { first } => Err(Refusal {
                reason_code: reason::RATE_LIMITED,
                message: format!(
                    "too many unverified messages from {peer} or claiming `{claimed}`; try later"
                ),
                class: RefusalClass::Throttled { first },
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn untrusted_or_refuse(
        &self,
        peer: &str,
        delivery: Delivery,
        reason_code: &'static str,
        message: impl Into<String>,
        claimed: &str,
        msg: &SignedMessage,
        now: i64,
    ) -> Result<IngestOutcome, Refusal> {
        self.throttle(peer, claimed)?;
        if delivery == Delivery::Refuse {
            return Err(refuse(reason_code, message));
        }
        let id = new_active_id();
        let row = ActiveRow {
            id: format!("{id:032x}"),
            operator: claimed.to_owned(),
            session: msg.session.clone(),
            key_gen: None,
            reason: reason_code.to_owned(),
            created_at: now,
            expires_at: now + self.settings.active_message_ttl_secs,
            holder: None,
            audience: None,
            scope: None,
        };
        self.store.insert_untrusted(&row).map_err(|e| Refusal {
            reason_code: reason::STORE_ERROR,
            message: e.to_string(),
            class: RefusalClass::Unavailable,
        })?;
        let out = IngestOutcome {
            active_message_id: row.id.clone(),
            trust: Trust::Untrusted,
            reason_code: reason_code.to_owned(),
            operator: row.operator.clone(),
            session: row.session.clone(),
            expires_at: row.expires_at,
            session_bound: false,
            rebound_from: None,
        };
        let (_, active) = ActiveMessage::from_row(row).expect("formatted id parses");
        self.active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(active));
        Ok(out)
    }

    /// Addresses an active message to `agent` at ingest (an inbox message):
    /// only that agent's tool calls may then use it, even if another agent
    /// learns the id first (`active_message_other_agent`). Recorded in the
    /// store before it takes effect, so it survives a restart.
    pub fn address_to_agent(&self, id: &str, agent: &str) -> Result<(), GatewayError> {
        let holder = agent_holder(agent);
        self.store.set_holder(id, &holder)?;
        if let Some(k) = parse_active_id(id) {
            if let Some(m) = self
                .active
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&k)
            {
                let _ = m.holder.set(holder);
            }
        }
        Ok(())
    }

    /// Removes an active message (used when its audit record could not be written).
    pub(crate) fn forget_active(&self, id: &str) {
        if let Some(k) = parse_active_id(id) {
            self.active
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&k);
        }
        if let Err(e) = self.store.delete_active(id) {
            tracing::error!(error = %e, "could not delete an unaudited active message");
        }
    }
}

/// 128 bits from the thread's CSPRNG (ChaCha, seeded from the OS).
fn new_active_id() -> u128 {
    rand::thread_rng().gen::<u128>()
}
