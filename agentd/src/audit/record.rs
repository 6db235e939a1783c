//! Audit records and their canonical, length-prefixed hash encoding.
//!
//! The encoding is the contract with offline verifiers (docs/audit.md):
//! `DOMAIN || field_1 || … || field_15`, each field `len: u32 BE || bytes`.
//! Integers are 8 bytes big-endian, hashes their 32 raw bytes, text UTF-8.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain separator hashed before the fields of every record.
pub const RECORD_DOMAIN: &[u8] = b"agentd.audit.record.v1\n";

/// `prev_hash` of the first record ever written (seq 1).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Largest accepted text field, in bytes; longer input is refused, never cut.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Errors building or checking a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A text field is longer than [`MAX_FIELD_BYTES`].
    #[error("audit field `{field}` is {len} bytes, more than the {max} allowed")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// A stored kind is not one of [`RecordKind`].
    #[error("unknown audit record kind `{kind}`")]
    UnknownKind { kind: String },
    /// A stored hash is not 64 lowercase hex digits.
    #[error("`{field}` is not a 64-digit hex SHA-256: `{value}`")]
    BadHash { field: &'static str, value: String },
    /// A latency does not fit SQLite's signed 64-bit integer.
    #[error("latency_us {value} does not fit in a signed 64-bit integer")]
    LatencyTooLarge { value: u64 },
}

/// What produced an audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// An operator message (accepted or refused).
    Message,
    /// A tool-call decision by the gateway.
    ToolCall,
    /// A kernel event matched (or not) to a grant.
    Kernel,
    /// Operator, policy or audit administration.
    Admin,
    /// Daemon start/stop and detected gaps.
    Lifecycle,
    /// One model-API exchange through the forward proxy.
    Model,
}

impl RecordKind {
    /// Stable snake_case name, as stored and hashed.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Message => "message",
            RecordKind::ToolCall => "tool_call",
            RecordKind::Kernel => "kernel",
            RecordKind::Admin => "admin",
            RecordKind::Lifecycle => "lifecycle",
            RecordKind::Model => "model",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        Ok(match s {
            "message" => RecordKind::Message,
            "tool_call" => RecordKind::ToolCall,
            "kernel" => RecordKind::Kernel,
            "admin" => RecordKind::Admin,
            "lifecycle" => RecordKind::Lifecycle,
            "model" => RecordKind::Model,
            other => {
                return Err(RecordError::UnknownKind {
                    kind: other.to_owned(),
                })
            }
        })
    }
}

/// One event to audit: everything except seq, timestamp, prev_hash and hash,
/// which the appender assigns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// What produced the record.
    pub kind: RecordKind,
    /// Operator id (empty if none).
    pub operator: String,
    /// Session id (empty if none).
    pub session: String,
    /// Active-message id the call echoed (empty if none).
    pub active_message_id: String,
    /// Tool-call id (empty if none).
    pub call_id: String,
    /// Action name, kernel hook name, or admin/lifecycle verb.
    pub action: String,
    /// What the action is applied to (path, destination, operator id, …).
    pub target: String,
    /// "allow" | "deny" | "escalate" | "would_deny" | "info".
    pub decision: String,
    /// Stable snake_case reason code.
    pub reason_code: String,
    /// Policy id that decided (empty if none).
    pub policy_id: String,
    /// Time the decision took, in microseconds.
    pub latency_us: u64,
}

impl AuditEvent {
    /// An event with every text field empty, `decision = "info"` and zero latency.
    pub fn new(kind: RecordKind, action: impl Into<String>) -> Self {
        Self {
            kind,
            operator: String::new(),
            session: String::new(),
            active_message_id: String::new(),
            call_id: String::new(),
            action: action.into(),
            target: String::new(),
            decision: "info".into(),
            reason_code: String::new(),
            policy_id: String::new(),
            latency_us: 0,
        }
    }

    /// Refuses fields the store could not keep exactly.
    pub fn validate(&self) -> Result<(), RecordError> {
        for (field, value) in self.text_fields() {
            if value.len() > MAX_FIELD_BYTES {
                return Err(RecordError::FieldTooLong {
                    field,
                    len: value.len(),
                    max: MAX_FIELD_BYTES,
                });
            }
        }
        if i64::try_from(self.latency_us).is_err() {
            return Err(RecordError::LatencyTooLarge {
                value: self.latency_us,
            });
        }
        Ok(())
    }

    fn text_fields(&self) -> [(&'static str, &str); 9] {
        [
            ("operator", &self.operator),
            ("session", &self.session),
            ("active_message_id", &self.active_message_id),
            ("call_id", &self.call_id),
            ("action", &self.action),
            ("target", &self.target),
            ("decision", &self.decision),
            ("reason_code", &self.reason_code),
            ("policy_id", &self.policy_id),
        ]
    }
}

/// One stored audit row: the event plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 1-based, contiguous sequence number.
    pub seq: u64,
    /// RFC 3339 UTC with microseconds, e.g. `2026-11-22T07:15:57.123456Z`.
    pub timestamp: String,
    /// The audited event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hex SHA-256 of the previous record ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// Hex SHA-256 of this record's canonical encoding.
    pub hash: String,
}

impl Record {
    /// Builds a record chained to `prev_hash`, computing its hash.
    pub fn seal(seq: u64, timestamp: String, event: AuditEvent, prev_hash: String) -> Self {
        let mut r = Record {
            seq,
            timestamp,
            event,
            prev_hash,
            hash: String::new(),
        };
        r.hash = hex::encode(r.compute_hash_bytes());
        r
    }

    /// Recomputes the hash from the fields (ignoring the stored `hash`).
    /// A `prev_hash` that is not 64 hex digits is hashed as its text bytes,
    /// so a malformed row still yields a (mismatching) hash, never a panic.
    pub fn compute_hash_bytes(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(RECORD_DOMAIN);
        put_int(&mut h, self.seq);
        put(&mut h, self.timestamp.as_bytes());
        put(&mut h, self.event.kind.as_str().as_bytes());
        for (_, value) in self.event.text_fields() {
            put(&mut h, value.as_bytes());
        }
        put_int(&mut h, self.event.latency_us);
        match decode_hash(&self.prev_hash) {
            Some(raw) => put(&mut h, &raw),
            None => put(&mut h, self.prev_hash.as_bytes()),
        }
        h.finalize().into()
    }

    /// Whether the stored hash matches the fields.
    pub fn hash_is_valid(&self) -> bool {
        decode_hash(&self.hash) == Some(self.compute_hash_bytes())
    }
}

/// Decodes a 64-digit lowercase hex SHA-256.
pub fn decode_hash(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn put(h: &mut Sha256, bytes: &[u8]) {
    // Fields are capped far below 4 GiB, so the length always fits.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(bytes);
}

fn put_int(h: &mut Sha256, v: u64) {
    put(h, &v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> AuditEvent {
        let mut e = AuditEvent::new(RecordKind::ToolCall, "mail.send");
        e.operator = "alice".into();
        e.target = "bob@example.org".into();
        e.decision = "allow".into();
        e
    }

    #[test]
    fn hash_covers_every_field() {
        let base = Record::seal(7, "t".into(), ev(), GENESIS_HASH.into());
        assert!(base.hash_is_valid());
        let mut variants = Vec::new();
        let mut r = base.clone();
        r.seq = 8;
        variants.push(r);
        let mut r = base.clone();
        r.timestamp = "u".into();
        variants.push(r);
        let mut r = base.clone();
        r.event.kind = RecordKind::Kernel;
        variants.push(r);
        let mut r = base.clone();
        r.event.latency_us = 1;
        variants.push(r);
        let mut r = base.clone();
        r.prev_hash = "1".repeat(64);
        variants.push(r);
        let mut r = base.clone();
        r.event.policy_id = "p".into();
        variants.push(r);
        for v in variants {
            assert!(!v.hash_is_valid(), "change not covered: {v:?}");
        }
    }

    #[test]
    fn length_prefix_makes_field_boundaries_unambiguous() {
        let mut a = ev();
        a.operator = "ab".into();
        a.session = "c".into();
        let mut b = ev();
        b.operator = "a".into();
        b.session = "bc".into();
        let ra = Record::seal(1, "t".into(), a, GENESIS_HASH.into());
        let rb = Record::seal(1, "t".into(), b, GENESIS_HASH.into());
        assert_ne!(ra.hash, rb.hash);
    }

    #[test]
    fn overlong_field_is_refused_by_name() {
        let mut e = ev();
        e.target = "x".repeat(MAX_FIELD_BYTES + 1);
        let err = e.validate().unwrap_err();
        assert!(err.to_string().contains("target"), "{err}");
    }

    #[test]
    fn kind_names_round_trip() {
        for k in [
            RecordKind::Message,
            RecordKind::ToolCall,
            RecordKind::Kernel,
            RecordKind::Admin,
            RecordKind::Lifecycle,
            RecordKind::Model,
        ] {
            assert_eq!(RecordKind::parse(k.as_str()).unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert!(RecordKind::parse("Kernel").is_err());
    }
}
