//! Human approval, the pure part: what a pending approval is, how it ends,
//! the deadline arithmetic, and the signatures of the chat-ops webhook and
//! its callbacks. The waiting, storage and HTTP live in `gateway::approvals`.
//!
//! Precedence: a call is escalated only when every other check allowed it
//! ([`verdict`]); a call that would be denied is denied, never escalated.
use std::collections::HashMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::eval::{Allowed, Denial};
use crate::protocol::reason;

pub use crate::config::{
    APPROVAL_DEFAULT_TIMEOUT_SECS as DEFAULT_TIMEOUT_SECS,
    APPROVAL_MAX_TIMEOUT_SECS as MAX_TIMEOUT_SECS,
};
/// Header carrying the Unix-seconds timestamp a webhook body or callback was signed at.
pub const TIMESTAMP_HEADER: &str = "x-agentd-timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256 over "<timestamp>." + body>`.
pub const SIGNATURE_HEADER: &str = "x-agentd-signature";

/// What the policy says about one call, with every check applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Proceed now.
    Allow(Allowed),
    /// Every check passed, and the action needs a human's approval.
    Escalate(Allowed),
    /// Refused (a denial always wins over an escalation).
    Deny(Denial),
}

/// Combines the policy's answer with the action's approval rule: only an
/// allowed call can escalate.
pub fn verdict(result: Result<Allowed, Denial>) -> Verdict {
    match result {
        Ok(a) if a.approval_required => Verdict::Escalate(a),
        Ok(a) => Verdict::Allow(a),
        Err(d) => Verdict::Deny(d),
    }
}

/// The wait actually used for `configured` seconds (clamped to 1..=MAX).
pub fn effective_timeout(configured: u64) -> u64 {
    configured.clamp(1, MAX_TIMEOUT_SECS)
}

/// A human's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The call proceeds like an allowed call.
    Approve,
    /// The call is refused (`approval_denied`).
    Deny,
}

impl Answer {
    /// The reason code recorded with the approver's row.
    pub fn reason_code(self) -> &'static str {
        match self {
            Answer::Approve => reason::APPROVAL_GRANTED,
            Answer::Deny => reason::APPROVAL_DENIED,
        }
    }

    /// `allow` or `deny`, as audit rows say it.
    pub fn decision(self) -> &'static str {
        match self {
            Answer::Approve => "allow",
            Answer::Deny => "deny",
        }
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// `agentctl approvals` (the admin API on the Unix socket).
    Api,
    /// The web console.
    Console,
    /// The chat-ops webhook's signed callback.
    Webhook,
}

impl Channel {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Api => "api",
            Channel::Console => "console",
            Channel::Webhook => "webhook",
        }
    }
}

/// How a pending approval ended (stored; shown to a late approver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for an answer.
    Pending,
    /// An approver approved it.
    Approved,
    /// An approver denied it.
    Denied,
    /// Nobody answered before the deadline.
    TimedOut,
    /// The daemon restarted while it waited (denied).
    Expired,
    /// The caller went away before an answer (denied).
    Abandoned,
}

impl Status {
    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::TimedOut => "timed_out",
            Status::Expired => "expired",
            Status::Abandoned => "abandoned",
        }
    }

    /// Parses a stored name (unknown names read as expired: fail closed).
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => Status::Pending,
            "approved" => Status::Approved,
            "denied" => Status::Denied,
            "timed_out" => Status::TimedOut,
            "abandoned" => Status::Abandoned,
            _ => Status::Expired,
        }
    }
}

/// One call waiting for a human (the approval id is the call id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingApproval {
    /// Approval id = the tool call's call id (32 hex digits).
    pub id: String,
    /// Operator of the originating message.
    pub operator: String,
    /// Its session.
    pub session: String,
    /// The action asked for.
    pub action: String,
    /// The call's arguments.
    pub arguments: Map<String, Value>,
    /// The agent that asked (empty for an admin's or a non-agent's call).
    pub agent: String,
    /// The active message the call echoed.
    pub active_message_id: String,
    /// Policy that escalated it.
    pub policy_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; no answer by then is `approval_timeout`.
    pub deadline: i64,
    /// The call asks to elevate its read-only session (docs/effects.md):
    /// approving it lets these actions proceed in the session for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevation: Option<ElevationAsk>,
    /// The call's session tripped the anomaly check: the figures that did
    /// (approving resets the session's counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<String>,
}

/// An elevation an escalated call asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElevationAsk {
    /// Actions the session would be elevated for.
    pub actions: Vec<String>,
    /// The call's effect class (`mutating` or `destructive`).
    pub effect: String,
    /// For how long, seconds.
    pub secs: u64,
}

/// The deadline of an approval created at `created_at`.
pub fn deadline(created_at: i64, timeout_secs: u64) -> i64 {
    created_at.saturating_add(effective_timeout(timeout_secs) as i64)
}

/// The JSON body agentd POSTs to the webhook for each new pending approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEvent {
    /// Always `approval_pending`.
    pub event: String,
    /// The approval.
    pub approval: PendingApproval,
    /// Route to answer on (POST, signed body: [`CallbackBody`]).
    pub callback_path: String,
}

impl WebhookEvent {
    /// The event for `approval`.
    pub fn pending(approval: PendingApproval) -> Self {
        Self {
            event: "approval_pending".into(),
            callback_path: format!("/v1/approvals/{}/callback", approval.id),
            approval,
        }
    }
}

/// The body of `POST /v1/approvals/{id}/callback` (signed like the webhook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    /// Must equal the `{id}` of the route.
    pub approval_id: String,
    /// Approve or deny.
    pub answer: Answer,
    /// Who answered on the chat side (e.g. `slack:U024BE7LH`), recorded.
    pub approver: String,
    /// Why (recorded; optional).
    #[serde(default)]
    pub reason: String,
    /// Unix seconds; must equal the timestamp header.
    pub timestamp: i64,
    /// Single use: a second callback with the same nonce is a replay.
    pub nonce: String,
}

/// Why a callback was refused (nothing changes; the refusal is audited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// Missing or malformed header, or a body that is not a callback.
    #[error("malformed callback: {0}")]
    Malformed(String),
    /// The HMAC does not match the body and timestamp.
    #[error("the callback's signature does not match")]
    BadSignature,
    /// Signed too long ago (or too far ahead).
    #[error("the callback was signed at {timestamp}, outside ±{window} s of now ({now})")]
    Stale {
        timestamp: i64,
        now: i64,
        window: i64,
    },
    /// The nonce was seen before.
    #[error("the callback's nonce was already used")]
    Replayed,
    /// The body names another approval than the route.
    #[error("the body's approval_id `{body}` is not the route's `{route}`")]
    IdMismatch { body: String, route: String },
}

impl CallbackError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => reason::CALLBACK_MALFORMED,
            Self::BadSignature => reason::CALLBACK_BAD_SIGNATURE,
            Self::Stale { .. } => reason::CALLBACK_STALE,
            Self::Replayed => reason::CALLBACK_REPLAYED,
            Self::IdMismatch { .. } => reason::CALLBACK_MALFORMED,
        }
    }
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The signature header value for `body` signed at `timestamp`:
/// `sha256=` + hex HMAC-SHA256(secret, "<timestamp>." + body).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Checks a signed body: the timestamp header parses, the signature
/// matches (constant time), and the timestamp is within `window` seconds
/// of `now`. Returns the timestamp.
pub fn verify_signed(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    window: i64,
) -> Result<i64, CallbackError> {
    let ts: i64 = timestamp
        .ok_or_else(|| CallbackError::Malformed(format!("no {TIMESTAMP_HEADER} header")))?
        .trim()
        .parse()
        .map_err(|_| CallbackError::Malformed(format!("{TIMESTAMP_HEADER} is not an integer")))?;
    let sig = signature
        .ok_or_else(|| CallbackError::Malformed(format!("no {SIGNATURE_HEADER} header")))?
        .trim();
    let hex_sig = sig.strip_prefix("sha256=").ok_or_else(|| {
        CallbackError::Malformed(format!("{SIGNATURE_HEADER} must be sha256=<hex>"))
    })?;
    let raw = hex::decode(hex_sig).map_err(|_| CallbackError::BadSignature)?;
    mac(secret, ts, body)
        .verify_slice(&raw)
        .map_err(|_| CallbackError::BadSignature)?;
    if (now - ts).abs() > window {
        return Err(CallbackError::Stale {
            timestamp: ts,
            now,
            window,
        });
    }
    Ok(ts)
}

/// Parses a verified callback body for the route's `route_id`, signed at `ts`.
pub fn parse_callback(body: &[u8], route_id: &str, ts: i64) -> Result<CallbackBody, CallbackError> {
    let cb: CallbackBody =
        serde_json::from_slice(body).map_err(|e| CallbackError::Malformed(e.to_string()))?;
    if cb.approval_id != route_id {
        return Err(CallbackError::IdMismatch {
            body: cb.approval_id,
            route: route_id.to_owned(),
        });
    }
    if cb.timestamp != ts {
        return Err(CallbackError::Malformed(format!(
            "the body's timestamp {} is not the signed {ts}",
            cb.timestamp
        )));
    }
    let printable =
        |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.chars().all(|c| !c.is_control());
    if !printable(&cb.nonce, 128) || !printable(&cb.approver, 128) || cb.reason.len() > 512 {
        return Err(CallbackError::Malformed(
            "nonce and approver must be 1..=128 printable bytes, reason at most 512".into(),
        ));
    }
    Ok(cb)
}

/// Callback nonces seen within the window (bounded: when full, the oldest
/// still inside the window make a new callback wait for them to age out).
#[derive(Debug, Default)]
pub struct NonceMemory {
    seen: HashMap<String, i64>,
}

/// Most nonces remembered at once.
pub const MAX_NONCES: usize = 65_536;

impl NonceMemory {
    /// Remembers `nonce` signed at `ts`; refuses one seen before. Entries
    /// older than the window are forgotten (a replay of them is stale).
    pub fn check(
        &mut self,
        nonce: &str,
        ts: i64,
        now: i64,
        window: i64,
    ) -> Result<(), CallbackError> {
        if self.seen.contains_key(nonce) {
            return Err(CallbackError::Replayed);
        }
        if self.seen.len() >= MAX_NONCES {
            self.seen.retain(|_, t| (now - *t).abs() <= window);
            if self.seen.len() >= MAX_NONCES {
                return Err(CallbackError::Malformed(
                    "too many callbacks within the window; try again later".into(),
                ));
            }
        }
        self.seen.insert(nonce.to_owned(), ts);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::eval::{Allowed, Denial};

    fn allowed(approval_required: bool) -> Allowed {
        Allowed {
            role: "member".into(),
            rate_per_minute: 60,
            burst: 60,
            grant: None,
            destructive: false,
            approval_required,
            usage: None,
            receipt_redact: false,
            read_only_session: false,
        }
    }

    #[test]
    fn deny_beats_escalate_and_only_allowed_calls_escalate() {
        assert!(matches!(verdict(Ok(allowed(true))), Verdict::Escalate(_)));
        assert!(matches!(verdict(Ok(allowed(false))), Verdict::Allow(_)));
        let d = Denial {
            reason: reason::PATH_OUTSIDE_SCOPE,
            detail: String::new(),
        };
        assert_eq!(verdict(Err(d.clone())), Verdict::Deny(d));
    }

    #[test]
    fn timeouts_are_clamped_and_deadlines_computed() {
        assert_eq!(effective_timeout(0), 1);
        assert_eq!(effective_timeout(120), 120);
        assert_eq!(effective_timeout(100_000), MAX_TIMEOUT_SECS);
        assert_eq!(deadline(1_000, 5), 1_005);
        assert_eq!(deadline(i64::MAX - 1, 5), i64::MAX);
    }

    /// Fixed vector: HMAC-SHA256(key "secret", "1700000000.{}") — computed
    /// independently with `printf '1700000000.{}' | openssl dgst -sha256 -hmac secret`.
    #[test]
    fn signature_fixed_vector() {
        assert_eq!(
            sign(b"secret", 1_700_000_000, b"{}"),
            "sha256=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn verification_refuses_bad_signature_stale_and_malformed() {
        let body = br#"{"a":1}"#;
        let sig = sign(b"k", 1000, body);
        assert_eq!(
            verify_signed(b"k", Some("1000"), Some(&sig), body, 1010, 300),
            Ok(1000)
        );
        assert_eq!(
            verify_signed(b"other", Some("1000"), Some(&sig), body, 1010, 300),
            Err(CallbackError::BadSignature)
        );
        // The timestamp is signed: moving it breaks the signature.
        assert_eq!(
            verify_signed(b"k", Some("1001"), Some(&sig), body, 1010, 300),
            Err(CallbackError::BadSignature)
        );
        assert_eq!(
            verify_signed(b"k", Some("1000"), Some(&sig), br#"{"a":2}"#, 1010, 300),
            Err(CallbackError::BadSignature)
        );
        assert!(matches!(
            verify_signed(b"k", Some("1000"), Some(&sig), body, 1400, 300),
            Err(CallbackError::Stale { .. })
        ));
        assert!(matches!(
            verify_signed(b"k", None, Some(&sig), body, 1000, 300),
            Err(CallbackError::Malformed(_))
        ));
        assert!(matches!(
            verify_signed(b"k", Some("1000"), Some("md5=00"), body, 1000, 300),
            Err(CallbackError::Malformed(_))
        ));
    }

    #[test]
    fn callback_body_must_match_route_and_timestamp() {
        let body = serde_json::to_vec(&CallbackBody {
            approval_id: "a1".into(),
            answer: Answer::Approve,
            approver: "slack:U1".into(),
            reason: String::new(),
            timestamp: 5,
            nonce: "n1".into(),
        })
        .unwrap();
        assert!(parse_callback(&body, "a1", 5).is_ok());
        assert!(matches!(
            parse_callback(&body, "a2", 5),
            Err(CallbackError::IdMismatch { .. })
        ));
        assert!(matches!(
            parse_callback(&body, "a1", 6),
            Err(CallbackError::Malformed(_))
        ));
        assert!(matches!(
            parse_callback(br#"{"approval_id":"a1","extra":1}"#, "a1", 5),
            Err(CallbackError::Malformed(_))
        ));
    }

    #[test]
    fn nonces_are_single_use() {
        let mut m = NonceMemory::default();
        assert_eq!(m.check("n", 10, 10, 300), Ok(()));
        assert_eq!(m.check("n", 10, 11, 300), Err(CallbackError::Replayed));
        assert_eq!(m.check("m", 10, 11, 300), Ok(()));
    }
}
