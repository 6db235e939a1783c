//! Audit records and their canonical, length-prefixed hash encoding.
//!
//! The encoding is the contract with offline verifiers (docs/audit.md):
//! `DOMAIN || field_1 || … || field_14`, each field `len: u32 BE || bytes`.
//! Integers are 8 bytes big-endian, hashes their 32 raw bytes, text UTF-8.
//! A record that names its subject (agent, pid, access) is format v2: the
//! v2 domain, the same 14 fields, then the 3 subject fields. One without is
//! hashed exactly as before (v1), so every row and export written before v2
//! still verifies, and a subject cannot be added to or removed from a row
//! without changing its hash (either the fields or the domain differ).
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain separator hashed before the fields of a record without a subject
/// (format v1).
pub const RECORD_DOMAIN: &[u8] = b"agentd.audit.record.v1\n";

/// Domain separator of a record that names its subject (format v2).
pub const RECORD_DOMAIN_V2: &[u8] = b"agentd.audit.record.v2\n";

/// `prev_hash` of the first record ever written (seq 1).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Largest accepted text field, in bytes; longer input is refused, never cut.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Copies a request-supplied field for an audit row, cut at 1 KiB on a
/// character boundary: rows stay small however long the input (message
/// fields are already far below this; [`MAX_FIELD_BYTES`] refuses longer).
pub fn clip(s: &str) -> String {
    let mut end = s.len().min(1024);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

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
    /// The agent the event is about: the caller of a tool call, the agent
    /// whose process a kernel event saw (empty if none). Rows written
    /// before record format v2 have it empty.
    #[serde(default)]
    pub agent: String,
    /// The process that asked (0 if none or unknown).
    #[serde(default)]
    pub pid: u32,
    /// `read` or `write` for a file open whose mode the backend recorded
    /// (empty otherwise).
    #[serde(default)]
    pub access: String,
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
            agent: String::new(),
            pid: 0,
            access: String::new(),
        }
    }

    /// Whether the event names its subject (agent, pid or access): such a
    /// row is hashed as record format v2.
    pub fn has_subject(&self) -> bool {
        !self.agent.is_empty() || self.pid != 0 || !self.access.is_empty()
    }

    /// Refuses fields the store could not keep exactly.
    pub fn validate(&self) -> Result<(), RecordError> {
        let subject = [("agent", self.agent.as_str()), ("access", &self.access)];
        for (field, value) in self.text_fields().into_iter().chain(subject) {
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

    /// The record format its hash follows: 2 when the event names its
    /// subject ([`AuditEvent::has_subject`]), else 1.
    pub fn format(&self) -> u8 {
        if self.event.has_subject() {
            2
        } else {
            1
        }
    }

    /// Recomputes the hash from the fields (ignoring the stored `hash`).
    /// A `prev_hash` that is not 64 hex digits is hashed as its text bytes,
    /// so a malformed row still yields a (mismatching) hash, never a panic.
    pub fn compute_hash_bytes(&self) -> [u8; 32] {
        let v2 = self.format() == 2;
        let mut h = Sha256::new();
        h.update(if v2 { RECORD_DOMAIN_V2 } else { RECORD_DOMAIN });
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
        if v2 {
            put(&mut h, self.event.agent.as_bytes());
            put_int(&mut h, u64::from(self.event.pid));
            put(&mut h, self.event.access.as_bytes());
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

    /// The encoding of docs/audit.md, written out independently of
    /// `compute_hash_bytes`: the contract offline verifiers implement.
    fn spec_hash(r: &Record) -> String {
        fn f(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        let e = &r.event;
        let v2 = !e.agent.is_empty() || e.pid != 0 || !e.access.is_empty();
        let mut m = if v2 {
            b"agentd.audit.record.v2\n".to_vec()
        } else {
            b"agentd.audit.record.v1\n".to_vec()
        };
        f(&mut m, &r.seq.to_be_bytes());
        for t in [&r.timestamp, e.kind.as_str()] {
            f(&mut m, t.as_bytes());
        }
        for t in [
            &e.operator,
            &e.session,
            &e.active_message_id,
            &e.call_id,
            &e.action,
            &e.target,
            &e.decision,
            &e.reason_code,
            &e.policy_id,
        ] {
            f(&mut m, t.as_bytes());
        }
        f(&mut m, &e.latency_us.to_be_bytes());
        f(&mut m, &hex::decode(&r.prev_hash).unwrap());
        if v2 {
            f(&mut m, e.agent.as_bytes());
            f(&mut m, &u64::from(e.pid).to_be_bytes());
            f(&mut m, e.access.as_bytes());
        }
        hex::encode(Sha256::digest(&m))
    }

    #[test]
    fn both_formats_hash_as_documented() {
        let v1 = Record::seal(3, "t".into(), ev(), "2".repeat(64));
        assert_eq!(v1.format(), 1);
        assert_eq!(v1.hash, spec_hash(&v1));
        let mut e = ev();
        e.agent = "claude".into();
        e.pid = 4242;
        e.access = "read".into();
        let v2 = Record::seal(3, "t".into(), e, "2".repeat(64));
        assert_eq!(v2.format(), 2);
        assert_eq!(v2.hash, spec_hash(&v2));
        // Any one subject field makes a v2 row.
        for set in [
            |e: &mut AuditEvent| e.agent = "a".into(),
            |e: &mut AuditEvent| e.pid = 1,
            |e: &mut AuditEvent| e.access = "write".into(),
        ] {
            let mut e = ev();
            set(&mut e);
            let r = Record::seal(1, "t".into(), e, GENESIS_HASH.into());
            assert_eq!((r.format(), r.hash.clone()), (2, spec_hash(&r)));
        }
    }

    /// A row hashed by the code before format v2 (agentd 2527253): the same
    /// fields still give the same hash.
    #[test]
    fn a_v1_row_keeps_its_hash() {
        let mut e = AuditEvent::new(RecordKind::ToolCall, "shell");
        e.operator = "olivia".into();
        e.session = "C1".into();
        e.active_message_id = "am-1".into();
        e.call_id = "call-1".into();
        e.target = r#"{"cmd":"ls"}"#.into();
        e.decision = "allow".into();
        e.reason_code = "ok".into();
        e.policy_id = "demo@0123456789ab".into();
        e.latency_us = 42;
        let r = Record::seal(
            2,
            "2026-12-02T20:18:57.117128Z".into(),
            e,
            "4cc0decb49c8f4a33cdaec16d5697ac6a8401e2195212b943472ff40dbc55692".into(),
        );
        assert_eq!(
            r.hash,
            "81bbd7a7c230df4c61829b2691d3001ad663c192de3eaf92f7e1cb61bc44b2b5"
        );
    }

    #[test]
    fn the_subject_is_bound_into_the_hash() {
        let mut e = ev();
        e.agent = "claude".into();
        e.pid = 7;
        e.access = "read".into();
        let base = Record::seal(5, "t".into(), e, GENESIS_HASH.into());
        assert!(base.hash_is_valid());
        let edits: [fn(&mut AuditEvent); 6] = [
            |e| e.agent = "codex".into(),
            |e| e.agent.clear(),
            |e| e.pid = 8,
            |e| e.access = "write".into(),
            // Stripping the whole subject turns it into a v1 row: another hash.
            |e| {
                e.agent.clear();
                e.pid = 0;
                e.access.clear();
            },
            |e| e.policy_id = "agent:claude pid:7".into(),
        ];
        for edit in edits {
            let mut r = base.clone();
            edit(&mut r.event);
            assert!(!r.hash_is_valid(), "change not covered: {:?}", r.event);
        }
        // And a subject cannot be added to a v1 row.
        let mut v1 = Record::seal(5, "t".into(), ev(), GENESIS_HASH.into());
        v1.event.agent = "claude".into();
        assert!(!v1.hash_is_valid());
    }

    #[test]
    fn rows_without_the_subject_fields_read_as_v1() {
        let r = Record::seal(1, "t".into(), ev(), GENESIS_HASH.into());
        let mut v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["agent"], "");
        assert_eq!(v["pid"], 0);
        let o = v.as_object_mut().unwrap();
        for k in ["agent", "pid", "access"] {
            o.remove(k);
        }
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert!(back.hash_is_valid());
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
        let mut e = ev();
        e.agent = "x".repeat(MAX_FIELD_BYTES + 1);
        let err = e.validate().unwrap_err();
        assert!(err.to_string().contains("agent"), "{err}");
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
