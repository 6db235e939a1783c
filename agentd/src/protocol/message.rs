//! The JSON message an operator's client submits, and its structural checks.
//! Structural checks run before any key lookup, so malformed input is refused
//! cheaply and with a precise reason, and never reaches the store.
use serde::{Deserialize, Serialize};

use super::canonical;
use super::scope::{Scope, ScopeError};

/// Wire-format version of a message without a `v` field.
pub const VERSION: u32 = 1;
/// The version with an audience (`for_agent`, `for_host`) and a `scope`.
pub const VERSION_2: u32 = 2;
/// Longest `for_agent`, in bytes (an agent name).
pub const MAX_AGENT_LEN: usize = 64;
/// Longest `for_host`, in bytes (a host name).
pub const MAX_HOST_LEN: usize = 253;
/// Longest operator id, in bytes.
pub const MAX_OPERATOR_LEN: usize = 64;
/// Longest session id, in bytes.
pub const MAX_SESSION_LEN: usize = 256;
/// Shortest nonce, in bytes (16 hex digits = 64 bits at the very least).
pub const MIN_NONCE_LEN: usize = 16;
/// Longest nonce, in bytes.
pub const MAX_NONCE_LEN: usize = 128;
/// Largest message body, in bytes.
pub const MAX_BODY_LEN: usize = 32 * 1024;

/// Errors in a message's structure; each maps to a stable reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// `v` is not a version this daemon speaks.
    #[error("unsupported message version {found} (this daemon speaks {VERSION} and {VERSION_2})")]
    UnsupportedVersion { found: u32 },
    /// A field needed for a signed message is absent.
    #[error("field `{field}` is required when `signature` is present")]
    MissingField { field: &'static str },
    /// A field is longer than its limit.
    #[error("field `{field}` is {len} bytes; the limit is {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// A field is shorter than its minimum.
    #[error("field `{field}` is {len} bytes; the minimum is {min}")]
    FieldTooShort {
        field: &'static str,
        len: usize,
        min: usize,
    },
    /// A field holds a character outside its alphabet.
    #[error("field `{field}` contains a character outside {alphabet}")]
    InvalidCharacter {
        field: &'static str,
        alphabet: &'static str,
    },
    /// The signature is not 64 (HMAC-SHA256) or 128 (Ed25519) hexadecimal digits.
    #[error("`signature` must be 64 hexadecimal digits (HMAC-SHA256) or 128 (Ed25519)")]
    InvalidSignatureEncoding,
    /// The timestamp is negative or absurdly far in the future.
    #[error("`timestamp` {value} is not a plausible Unix time in seconds")]
    TimestampOutOfRange { value: i64 },
    /// A v2 field in a v1 message (it would not be signed).
    #[error("field `{field}` exists only in version 2 messages (`\"v\": 2`)")]
    V2Only { field: &'static str },
    /// The scope is malformed or too large.
    #[error("{0}")]
    InvalidScope(#[from] ScopeError),
}

impl MessageError {
    /// Stable snake_case reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::MissingField { .. } => "missing_field",
            Self::FieldTooLong { .. } => "field_too_long",
            Self::FieldTooShort { .. } => "field_too_short",
            Self::InvalidCharacter { .. } => "invalid_character",
            Self::InvalidSignatureEncoding => "invalid_signature_encoding",
            Self::TimestampOutOfRange { .. } => "invalid_timestamp",
            Self::V2Only { .. } => "unknown_field",
            Self::InvalidScope(_) => super::reason::INVALID_SCOPE,
        }
    }
}

/// A message as submitted. `operator`, `nonce`, `timestamp` and `signature`
/// are absent on an unsigned message (e.g. a stranger's mail the runtime forwards).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedMessage {
    /// Wire-format version: 1, or 2 (audience and scope).
    #[serde(default = "default_version")]
    pub v: u32,
    /// Operator id the message claims to come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Session (chat thread, DM, call) the message belongs to.
    pub session: String,
    /// Single-use random string chosen by the signer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Unix time in seconds when the message was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// The instruction text.
    pub body: String,
    /// v2: the only agent whose tool calls may use the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_agent: Option<String>,
    /// v2: the only host (agentd's `gateway.host_id`) that accepts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_host: Option<String>,
    /// v2: the calls its tool calls may make (absent: whatever the
    /// operator's roles allow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// Lowercase hex HMAC-SHA256 over the canonical bytes (64 digits), or
    /// an Ed25519 signature over them (128 digits) for an operator enrolled
    /// with a public key (fleet mode, docs/fleet.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

fn default_version() -> u32 {
    VERSION
}

/// A decoded HMAC-SHA256 signature.
pub type Signature = [u8; 32];

/// A message's decoded signature: which kind is told by its length; which
/// kind is *accepted* is the operator's (its enrolled key), never the
/// message's, so no signature can pass for the other kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSig {
    /// HMAC-SHA256 under the operator's shared key.
    Hmac(Signature),
    /// Ed25519 under the operator's private key.
    Ed25519(Box<[u8; 64]>),
}

impl std::ops::Deref for MessageSig {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Hmac(s) => s,
            Self::Ed25519(s) => &s[..],
        }
    }
}

impl MessageSig {
    /// Decodes 64 (HMAC) or 128 (Ed25519) lowercase or uppercase hex digits.
    pub fn decode(hex_sig: &str) -> Result<Self, MessageError> {
        match hex_sig.len() {
            64 => {
                let mut s = [0u8; 32];
                hex::decode_to_slice(hex_sig, &mut s)
                    .map_err(|_| MessageError::InvalidSignatureEncoding)?;
                Ok(Self::Hmac(s))
            }
            128 => {
                let mut s = Box::new([0u8; 64]);
                hex::decode_to_slice(hex_sig, &mut s[..])
                    .map_err(|_| MessageError::InvalidSignatureEncoding)?;
                Ok(Self::Ed25519(s))
            }
            _ => Err(MessageError::InvalidSignatureEncoding),
        }
    }
}

/// What structural validation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked<'a> {
    /// No signature: the message can only ever be untrusted.
    Unsigned,
    /// All signed fields present and well-formed.
    Signed {
        /// Claimed operator id.
        operator: &'a str,
        /// Nonce.
        nonce: &'a str,
        /// Unix seconds.
        timestamp: i64,
        /// Decoded signature bytes.
        signature: MessageSig,
    },
}

// Upper bound for timestamps: year 2500. Keeps i64 arithmetic on windows safe.
const MAX_TIMESTAMP: i64 = 16_725_225_600;

fn check_len(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), MessageError> {
    if s.len() > max {
        return Err(MessageError::FieldTooLong {
            field,
            len: s.len(),
            max,
        });
    }
    if s.len() < min {
        return Err(MessageError::FieldTooShort {
            field,
            len: s.len(),
            min,
        });
    }
    Ok(())
}

/// Checks an operator id: 1–64 bytes of `A-Z a-z 0-9 . _ -`.
pub fn check_operator_id(s: &str) -> Result<(), MessageError> {
    check_len("operator", s, 1, MAX_OPERATOR_LEN)?;
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || s.starts_with('.')
    {
        return Err(MessageError::InvalidCharacter {
            field: "operator",
            alphabet: "[A-Za-z0-9._-] (not starting with '.')",
        });
    }
    Ok(())
}

/// Checks a nonce: 16–128 bytes of `A-Z a-z 0-9 _ -`.
pub fn check_nonce(nonce: &str) -> Result<(), MessageError> {
    check_len("nonce", nonce, MIN_NONCE_LEN, MAX_NONCE_LEN)?;
    if !nonce
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err(MessageError::InvalidCharacter {
            field: "nonce",
            alphabet: "[A-Za-z0-9_-]",
        });
    }
    Ok(())
}

/// Who signed a message or a request: an operator, or a delegation token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// An enrolled operator, by id.
    Operator(&'a str),
    /// A token named `root/d-<hex>`.
    Token {
        /// The root operator of the token's chain.
        root: &'a str,
        /// The whole name.
        id: &'a str,
    },
}

impl<'a> Principal<'a> {
    /// Parses an operator id or a token name.
    pub fn parse(s: &'a str) -> Result<Self, MessageError> {
        let Some((root, tail)) = s.split_once('/') else {
            check_operator_id(s)?;
            return Ok(Self::Operator(s));
        };
        check_operator_id(root)?;
        let hex = tail.strip_prefix("d-").unwrap_or("");
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(MessageError::InvalidCharacter {
                field: "operator",
                alphabet: "an operator id, or a token name OPERATOR/d-<32 lowercase hex>",
            });
        }
        Ok(Self::Token { root, id: s })
    }

    /// The root operator: the operator itself, or the token's chain's root.
    pub fn root(&self) -> &'a str {
        match self {
            Self::Operator(id) => id,
            Self::Token { root, .. } => root,
        }
    }
}

impl SignedMessage {
    /// Structural validation: version, lengths, alphabets, signature encoding.
    pub fn check(&self) -> Result<Checked<'_>, MessageError> {
        if self.v != VERSION && self.v != VERSION_2 {
            return Err(MessageError::UnsupportedVersion { found: self.v });
        }
        self.check_v2_fields()?;
        check_len("session", &self.session, 1, MAX_SESSION_LEN)?;
        if self.session.chars().any(char::is_control) {
            return Err(MessageError::InvalidCharacter {
                field: "session",
                alphabet: "printable characters",
            });
        }
        check_len("body", &self.body, 0, MAX_BODY_LEN)?;
        if let Some(op) = &self.operator {
            // An operator id, or a delegation token's name (docs/delegation.md).
            Principal::parse(op)?;
        }
        if let Some(nonce) = &self.nonce {
            check_nonce(nonce)?;
        }
        if let Some(ts) = self.timestamp {
            if !(0..=MAX_TIMESTAMP).contains(&ts) {
                return Err(MessageError::TimestampOutOfRange { value: ts });
            }
        }
        let Some(sig_hex) = &self.signature else {
            return Ok(Checked::Unsigned);
        };
        let signature = MessageSig::decode(sig_hex)?;
        let operator = self
            .operator
            .as_deref()
            .ok_or(MessageError::MissingField { field: "operator" })?;
        let nonce = self
            .nonce
            .as_deref()
            .ok_or(MessageError::MissingField { field: "nonce" })?;
        let timestamp = self
            .timestamp
            .ok_or(MessageError::MissingField { field: "timestamp" })?;
        Ok(Checked::Signed {
            operator,
            nonce,
            timestamp,
            signature,
        })
    }

    /// The v2 fields: only in a v2 message; a named agent is an agent
    /// name, a named host a host name; a scope within its bounds.
    fn check_v2_fields(&self) -> Result<(), MessageError> {
        if self.v != VERSION_2 {
            let present = [
                ("for_agent", self.for_agent.is_some()),
                ("for_host", self.for_host.is_some()),
                ("scope", self.scope.is_some()),
            ];
            if let Some((field, _)) = present.into_iter().find(|(_, p)| *p) {
                return Err(MessageError::V2Only { field });
            }
            return Ok(());
        }
        if let Some(agent) = &self.for_agent {
            check_len("for_agent", agent, 1, MAX_AGENT_LEN)?;
            if !agent
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                || agent.starts_with('.')
            {
                return Err(MessageError::InvalidCharacter {
                    field: "for_agent",
                    alphabet: "[A-Za-z0-9._-] (not starting with '.')",
                });
            }
        }
        if let Some(host) = &self.for_host {
            check_len("for_host", host, 1, MAX_HOST_LEN)?;
            if !host.bytes().all(is_host_byte) {
                return Err(MessageError::InvalidCharacter {
                    field: "for_host",
                    alphabet: "[A-Za-z0-9._-]",
                });
            }
        }
        if let Some(scope) = &self.scope {
            scope.check()?;
        }
        Ok(())
    }

    /// Canonical bytes of a signed message (operator/nonce/timestamp must
    /// be set): the v1 encoding, or for `v: 2` the v2 one.
    pub fn canonical(&self) -> Option<Vec<u8>> {
        let (operator, nonce, timestamp) = (
            self.operator.as_deref()?,
            self.nonce.as_deref()?,
            self.timestamp?,
        );
        if self.v == VERSION_2 {
            return Some(canonical::canonical_bytes_v2(
                operator,
                &self.session,
                nonce,
                timestamp,
                &self.body,
                canonical::V2Fields {
                    for_agent: self.for_agent.as_deref(),
                    for_host: self.for_host.as_deref(),
                    scope: self.scope.as_ref(),
                },
            ));
        }
        Some(canonical::canonical_bytes(
            operator,
            &self.session,
            nonce,
            timestamp,
            &self.body,
        ))
    }

    /// (Re)signs the message under `key` over its canonical bytes, of
    /// whichever version it is; false (unchanged) if operator, nonce or
    /// timestamp is missing.
    pub fn sign_with(&mut self, key: &[u8]) -> bool {
        let Some(c) = self.canonical() else {
            return false;
        };
        self.signature = Some(hex::encode(canonical::sign(key, &c)));
        true
    }

    /// (Re)signs the message with an Ed25519 key (an operator enrolled with
    /// its public key); false (unchanged) if a signed field is missing.
    pub fn sign_ed25519(&mut self, key: &ed25519_dalek::SigningKey) -> bool {
        use ed25519_dalek::Signer;
        let Some(c) = self.canonical() else {
            return false;
        };
        self.signature = Some(hex::encode(key.sign(&c).to_bytes()));
        true
    }

    /// A v2 message signed under `key`: `msg`'s v1 fields with an audience
    /// and a scope (used by `agentctl send --for-agent/--for-host/--scope`).
    pub fn new_signed_v2(
        key: &[u8],
        msg: &SignedMessage,
        for_agent: Option<String>,
        for_host: Option<String>,
        scope: Option<Scope>,
    ) -> Self {
        let mut m = Self {
            v: VERSION_2,
            for_agent,
            for_host,
            scope,
            ..msg.clone()
        };
        m.sign_with(key);
        m
    }

    /// An unsigned message (claimed operator optional): at most untrusted.
    pub fn unsigned(operator: Option<String>, session: &str, body: &str) -> Self {
        Self {
            v: VERSION,
            operator,
            session: session.to_owned(),
            nonce: None,
            timestamp: None,
            body: body.to_owned(),
            for_agent: None,
            for_host: None,
            scope: None,
            signature: None,
        }
    }

    /// Builds and signs a message (used by `agentctl send`, tests and benches).
    pub fn new_signed(
        key: &[u8],
        operator: &str,
        session: &str,
        nonce: &str,
        timestamp: i64,
        body: &str,
    ) -> Self {
        let sig = canonical::sign(
            key,
            &canonical::canonical_bytes(operator, session, nonce, timestamp, body),
        );
        Self {
            v: VERSION,
            operator: Some(operator.to_owned()),
            session: session.to_owned(),
            nonce: Some(nonce.to_owned()),
            timestamp: Some(timestamp),
            body: body.to_owned(),
            for_agent: None,
            for_host: None,
            scope: None,
            signature: Some(hex::encode(sig)),
        }
    }
}

/// A byte of a host name: letters, digits, `.`, `_`, `-`.
pub fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A fresh random nonce: 32 hex digits (128 bits).
pub fn random_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> SignedMessage {
        SignedMessage::new_signed(
            b"k",
            "alice",
            "slack:C1",
            "0123456789abcdef",
            1_795_000_000,
            "hi",
        )
    }

    #[test]
    fn signed_message_checks_and_verifies() {
        let m = signed();
        let Checked::Signed { signature, .. } = m.check().unwrap() else {
            panic!("not signed")
        };
        assert!(canonical::verify(b"k", &m.canonical().unwrap(), &signature));
    }

    #[test]
    fn huge_nonce_is_refused_by_length() {
        let mut m = signed();
        m.nonce = Some("a".repeat(10_000));
        assert_eq!(m.check().unwrap_err().reason_code(), "field_too_long");
    }

    #[test]
    fn bad_alphabets_are_refused() {
        let mut m = signed();
        m.operator = Some("al ice".into());
        assert_eq!(m.check().unwrap_err().reason_code(), "invalid_character");
        let mut m = signed();
        m.session = "a\nb".into();
        assert_eq!(m.check().unwrap_err().reason_code(), "invalid_character");
        let mut m = signed();
        m.nonce = Some("0123456789abcdef/".into());
        assert_eq!(m.check().unwrap_err().reason_code(), "invalid_character");
    }

    #[test]
    fn signature_needs_all_signed_fields() {
        let mut m = signed();
        m.nonce = None;
        assert_eq!(
            m.check().unwrap_err(),
            MessageError::MissingField { field: "nonce" }
        );
        let mut m = signed();
        m.signature = Some("zz".repeat(32));
        assert_eq!(
            m.check().unwrap_err(),
            MessageError::InvalidSignatureEncoding
        );
    }

    #[test]
    fn a_signature_is_hmac_or_ed25519_by_length() {
        let mut m = signed();
        let Checked::Signed { signature, .. } = m.check().unwrap() else {
            panic!("signed")
        };
        assert!(matches!(signature, MessageSig::Hmac(_)));
        let sk = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        assert!(m.sign_ed25519(&sk));
        let Checked::Signed { signature, .. } = m.check().unwrap() else {
            panic!("signed")
        };
        assert!(matches!(signature, MessageSig::Ed25519(_)));
        let pk = sk.verifying_key().to_bytes();
        let c = m.canonical().unwrap();
        assert!(canonical::verify_ed25519(&pk, &c, &signature));
        let mut edited = m.clone();
        edited.body.push('!');
        assert!(!canonical::verify_ed25519(
            &pk,
            &edited.canonical().unwrap(),
            &signature
        ));
        for bad in ["ab".repeat(33), "ab".repeat(63), "zz".repeat(64)] {
            m.signature = Some(bad);
            assert_eq!(
                m.check().unwrap_err(),
                MessageError::InvalidSignatureEncoding
            );
        }
    }

    #[test]
    fn unsigned_message_is_recognised() {
        let m: SignedMessage =
            serde_json::from_str(r#"{"session":"mail","body":"reset it"}"#).unwrap();
        assert_eq!(m.check().unwrap(), Checked::Unsigned);
    }

    #[test]
    fn unknown_json_field_is_refused() {
        let e = serde_json::from_str::<SignedMessage>(r#"{"session":"s","body":"b","admin":true}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn negative_timestamp_is_refused() {
        let mut m = signed();
        m.timestamp = Some(-5);
        assert_eq!(m.check().unwrap_err().reason_code(), "invalid_timestamp");
    }
}
