//! Delegation wire format: the name a sub-token signs messages under, and
//! the signed requests that issue and revoke sub-tokens. Pure: no I/O, no
//! clock. docs/delegation.md is the language-neutral description.
//!
//! A token is named `ROOT/d-<32 hex>`: the root operator of its chain, a
//! slash, and 128 random bits. Operator ids cannot contain `/`, so a token
//! name never collides with an operator id; the delegate puts it in a
//! message's `operator` field and signs with the token's secret.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::canonical;
pub use super::message::Principal;
use super::message::{check_nonce, check_operator_id, MessageError, Signature, VERSION};

/// Domain tag of an issuance request's canonical bytes.
pub const ISSUE_TAG: &str = "agentd-delegation-issue-v1";
/// Domain tag of a revocation request's canonical bytes.
pub const REVOKE_TAG: &str = "agentd-delegation-revoke-v1";
/// Shortest token lifetime, seconds.
pub const MIN_TTL_SECS: i64 = 1;
/// Longest token lifetime, seconds (7 days).
pub const MAX_TTL_SECS: i64 = 7 * 24 * 3600;
/// Most tool calls one token may allow.
pub const MAX_USES: u32 = 1_000_000;
/// Most actions one token's scope may name.
pub const MAX_ACTIONS: usize = 64;
/// Most argument patterns per action.
pub const MAX_PATTERNS: usize = 16;
/// Longest action or argument name, bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest argument pattern, bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Longest chain: a root operator's token is depth 1, its sub-token 2, ….
pub const MAX_DEPTH: u32 = 5;

/// A token's scope: action → argument name → pattern (an exact value, or
/// a prefix when it ends with `*`). An action with no patterns allows any
/// arguments the issuer's own permissions allow.
pub type ScopeMap = BTreeMap<String, BTreeMap<String, String>>;

/// The root operator named by a principal string, if it parses as a token
/// name; None for a plain operator id (or anything else).
pub fn token_root(s: &str) -> Option<&str> {
    match Principal::parse(s) {
        Ok(Principal::Token { root, .. }) => Some(root),
        _ => None,
    }
}

/// A fresh token name under `root`.
pub fn new_token_id(root: &str) -> String {
    format!("{root}/d-{:032x}", rand::random::<u128>())
}

/// Errors in a delegation request's structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationFormatError {
    /// A field shared with messages is malformed (nonce, names, signature).
    #[error(transparent)]
    Field(#[from] MessageError),
    /// The scope, TTL or use count is out of bounds.
    #[error("{0}")]
    Invalid(String),
}

impl DelegationFormatError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Field(e) => e.reason_code(),
            Self::Invalid(_) => super::reason::INVALID_DELEGATION,
        }
    }
}

fn invalid(msg: impl Into<String>) -> DelegationFormatError {
    DelegationFormatError::Invalid(msg.into())
}

/// `POST /v1/delegations` body: an issuer's signed request for a sub-token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// Wire-format version; 1.
    #[serde(default = "default_version")]
    pub v: u32,
    /// The operator, or the token (for a sub-sub-token), that issues it.
    pub issuer: String,
    /// Who receives it (operator-id alphabet): never the issuer nor anyone
    /// up its chain.
    pub to: String,
    /// Actions (and argument patterns) the token may use.
    pub scope: ScopeMap,
    /// Lifetime from issue, seconds (1 s to 7 days).
    pub ttl_secs: i64,
    /// Tool calls it allows.
    pub uses: u32,
    /// Single-use random string (as a message's).
    pub nonce: String,
    /// Unix seconds when signed.
    pub timestamp: i64,
    /// HMAC-SHA256 over [`IssueRequest::canonical`], keyed with the
    /// issuer's key (an operator's key, or the issuing token's secret).
    pub signature: String,
}

/// `POST /v1/delegations/revoke` body: an admin's (fields after `id`
/// absent) or a chain member's signed revocation of one token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Wire-format version; 1.
    #[serde(default = "default_version")]
    pub v: u32,
    /// The token to revoke (with every token below it).
    pub id: String,
    /// The signer: the token's root operator or a token up its chain (or itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Single-use random string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Unix seconds when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// HMAC-SHA256 over [`RevokeRequest::canonical`] with `by`'s key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

fn default_version() -> u32 {
    VERSION
}

fn push(out: &mut Vec<u8>, field: &[u8]) {
    // Every field is bounded far below 4 GiB by the checks.
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

fn decode_signature(s: &str) -> Result<Signature, MessageError> {
    let mut sig = [0u8; 32];
    if s.len() != 64 || hex::decode_to_slice(s, &mut sig).is_err() {
        return Err(MessageError::InvalidSignatureEncoding);
    }
    Ok(sig)
}

fn check_timestamp(ts: i64) -> Result<(), MessageError> {
    // Year 2500, as for messages: keeps window arithmetic safe.
    if !(0..=16_725_225_600).contains(&ts) {
        return Err(MessageError::TimestampOutOfRange { value: ts });
    }
    Ok(())
}

fn check_name(what: &str, s: &str, arg: bool) -> Result<(), DelegationFormatError> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':');
    if s.is_empty() || s.len() > MAX_NAME_LEN || !s.bytes().all(ok_char) || (arg && s.contains(':'))
    {
        return Err(invalid(format!(
            "{what} `{}` must be 1-{MAX_NAME_LEN} bytes of [A-Za-z0-9_.-{}]",
            s.escape_debug(),
            if arg { "" } else { ":" }
        )));
    }
    Ok(())
}

/// Checks a scope's bounds: names, pattern lengths, `*` only at the end.
pub fn check_scope(scope: &ScopeMap) -> Result<(), DelegationFormatError> {
    if scope.is_empty() {
        return Err(invalid("the scope names no action"));
    }
    if scope.len() > MAX_ACTIONS {
        return Err(invalid(format!(
            "the scope names more than {MAX_ACTIONS} actions"
        )));
    }
    for (action, args) in scope {
        check_name("action", action, false)?;
        if args.len() > MAX_PATTERNS {
            return Err(invalid(format!(
                "action `{action}` has more than {MAX_PATTERNS} argument patterns"
            )));
        }
        for (name, pattern) in args {
            check_name("argument", name, true)?;
            let stars = pattern.matches('*').count();
            if pattern.is_empty()
                || pattern.len() > MAX_PATTERN_LEN
                || pattern.chars().any(char::is_control)
                || stars > 1
                || (stars == 1 && !pattern.ends_with('*'))
            {
                return Err(invalid(format!(
                    "pattern of `{action}:{name}` must be 1-{MAX_PATTERN_LEN} printable bytes, with `*` only as its last character"
                )));
            }
        }
    }
    Ok(())
}

impl IssueRequest {
    /// Structural validation; returns the decoded signature.
    pub fn check(&self) -> Result<Signature, DelegationFormatError> {
        if self.v != VERSION {
            return Err(MessageError::UnsupportedVersion { found: self.v }.into());
        }
        Principal::parse(&self.issuer)?;
        check_operator_id(&self.to).map_err(|_| {
            invalid("`to` must be 1-64 bytes of [A-Za-z0-9._-] (not starting with '.')")
        })?;
        check_scope(&self.scope)?;
        if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&self.ttl_secs) {
            return Err(invalid(format!(
                "ttl_secs {} is outside {MIN_TTL_SECS}..={MAX_TTL_SECS}",
                self.ttl_secs
            )));
        }
        if !(1..=MAX_USES).contains(&self.uses) {
            return Err(invalid(format!(
                "uses {} is outside 1..={MAX_USES}",
                self.uses
            )));
        }
        check_nonce(&self.nonce)?;
        check_timestamp(self.timestamp)?;
        Ok(decode_signature(&self.signature)?)
    }

    /// The signed bytes: tag, issuer, to, ttl, uses, nonce, timestamp,
    /// then the number of actions and, per action in byte order, its name,
    /// its number of patterns and each (argument, pattern) in byte order.
    /// Every field is length-prefixed (4-byte big-endian) like a message's.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for f in [
            ISSUE_TAG,
            &self.issuer,
            &self.to,
            &self.ttl_secs.to_string(),
            &self.uses.to_string(),
            &self.nonce,
            &self.timestamp.to_string(),
            &self.scope.len().to_string(),
        ] {
            push(&mut out, f.as_bytes());
        }
        for (action, args) in &self.scope {
            push(&mut out, action.as_bytes());
            push(&mut out, args.len().to_string().as_bytes());
            for (name, pattern) in args {
                push(&mut out, name.as_bytes());
                push(&mut out, pattern.as_bytes());
            }
        }
        out
    }

    /// Builds and signs a request (agentctl, tests).
    #[allow(clippy::too_many_arguments)]
    pub fn new_signed(
        key: &[u8],
        issuer: &str,
        to: &str,
        scope: ScopeMap,
        ttl_secs: i64,
        uses: u32,
        nonce: &str,
        timestamp: i64,
    ) -> Self {
        let mut r = Self {
            v: VERSION,
            issuer: issuer.to_owned(),
            to: to.to_owned(),
            scope,
            ttl_secs,
            uses,
            nonce: nonce.to_owned(),
            timestamp,
            signature: String::new(),
        };
        r.signature = hex::encode(canonical::sign(key, &r.canonical()));
        r
    }
}

/// A revocation as checked: by an admin, or signed by a chain member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckedRevoke<'a> {
    /// No signature: only an admin may send it.
    Unsigned,
    /// Signed by `by`.
    Signed {
        /// The signer.
        by: &'a str,
        /// Nonce.
        nonce: &'a str,
        /// Unix seconds.
        timestamp: i64,
        /// Decoded signature.
        signature: Signature,
    },
}

impl RevokeRequest {
    /// Structural validation.
    pub fn check(&self) -> Result<CheckedRevoke<'_>, DelegationFormatError> {
        if self.v != VERSION {
            return Err(MessageError::UnsupportedVersion { found: self.v }.into());
        }
        if !matches!(Principal::parse(&self.id)?, Principal::Token { .. }) {
            return Err(invalid("`id` must be a token name OPERATOR/d-<32 hex>"));
        }
        let (by, nonce, timestamp, signature) =
            match (&self.by, &self.nonce, self.timestamp, &self.signature) {
                (None, None, None, None) => return Ok(CheckedRevoke::Unsigned),
                (Some(b), Some(n), Some(t), Some(s)) => (b, n, t, s),
                _ => {
                    return Err(invalid(
                        "a signed revocation needs `by`, `nonce`, `timestamp` and `signature`",
                    ))
                }
            };
        Principal::parse(by)?;
        check_nonce(nonce)?;
        check_timestamp(timestamp)?;
        Ok(CheckedRevoke::Signed {
            by,
            nonce,
            timestamp,
            signature: decode_signature(signature)?,
        })
    }

    /// The signed bytes: tag, by, id, nonce, timestamp (length-prefixed).
    pub fn canonical(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for f in [
            REVOKE_TAG,
            self.by.as_deref()?,
            &self.id,
            self.nonce.as_deref()?,
            &self.timestamp?.to_string(),
        ] {
            push(&mut out, f.as_bytes());
        }
        Some(out)
    }

    /// Builds and signs a revocation (agentctl, tests).
    pub fn new_signed(key: &[u8], by: &str, id: &str, nonce: &str, timestamp: i64) -> Self {
        let mut r = Self {
            v: VERSION,
            id: id.to_owned(),
            by: Some(by.to_owned()),
            nonce: Some(nonce.to_owned()),
            timestamp: Some(timestamp),
            signature: None,
        };
        let sig = canonical::sign(key, &r.canonical().expect("all fields set"));
        r.signature = Some(hex::encode(sig));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> ScopeMap {
        let mut s = ScopeMap::new();
        s.insert(
            "read_chart".into(),
            [("path".to_owned(), "/srv/charts/p-*".to_owned())].into(),
        );
        s.insert("send_email".into(), BTreeMap::new());
        s
    }

    #[test]
    fn principal_syntax_cannot_collide_with_operator_ids() {
        assert_eq!(
            Principal::parse("alice").unwrap(),
            Principal::Operator("alice")
        );
        let t = format!("alice/d-{}", "ab".repeat(16));
        assert_eq!(Principal::parse(&t).unwrap().root(), "alice");
        for bad in ["alice/", "alice/d-", "alice/x-00", "/d-00", "alice/d-ABCD"] {
            assert!(Principal::parse(bad).is_err(), "{bad}");
        }
        assert!(Principal::parse(&format!("al ice/d-{}", "0".repeat(32))).is_err());
        assert!(Principal::parse(&format!("{t}/d-{}", "0".repeat(32))).is_err());
        assert!(new_token_id("bob").starts_with("bob/d-"));
        assert!(token_root(&new_token_id("bob")).is_some());
        assert_eq!(token_root("bob"), None);
    }

    #[test]
    fn issue_request_round_trip_and_bounds() {
        let r =
            IssueRequest::new_signed(b"k", "alice", "bob", scope(), 600, 5, "0123456789abcdef", 1);
        let sig = r.check().unwrap();
        assert!(canonical::verify(b"k", &r.canonical(), &sig));
        // Order of JSON keys does not matter: the scope is sorted.
        let json = serde_json::to_string(&r).unwrap();
        let back: IssueRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.canonical(), r.canonical());
        for (ttl, uses) in [(0, 1), (MAX_TTL_SECS + 1, 1), (10, 0), (10, MAX_USES + 1)] {
            let mut b = r.clone();
            b.ttl_secs = ttl;
            b.uses = uses;
            assert_eq!(b.check().unwrap_err().reason_code(), "invalid_delegation");
        }
        let mut b = r.clone();
        b.scope
            .insert("x".into(), [("a".to_owned(), "/x*/y".to_owned())].into());
        assert_eq!(b.check().unwrap_err().reason_code(), "invalid_delegation");
        let mut b = r.clone();
        b.scope.clear();
        assert_eq!(b.check().unwrap_err().reason_code(), "invalid_delegation");
        let mut b = r;
        b.signature = "zz".into();
        assert_eq!(
            b.check().unwrap_err().reason_code(),
            "invalid_signature_encoding"
        );
        let e = serde_json::from_str::<IssueRequest>(
            &json.replace("\"v\":1", "\"v\":1,\"admin\":true"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    /// The vector docs/delegation.md publishes (and fuzz/seeds quotes).
    #[test]
    fn published_issue_vector() {
        let key: Vec<u8> = (0u8..32).collect();
        let r = IssueRequest::new_signed(
            &key,
            "alice",
            "bob",
            scope(),
            600,
            5,
            "4f1c2e9a7b3d5f60",
            1_795_000_000,
        );
        assert_eq!(
            r.signature,
            "733912f5bee0bf95af6237cb068bb4c33e16ff40bf49ceee316ae606c116c113"
        );
        let doc = include_str!("../../../docs/delegation.md");
        assert!(
            doc.contains(&r.signature),
            "docs/delegation.md quotes the vector"
        );
        // The fuzz seed is the same request, and checks.
        let seed: IssueRequest = serde_json::from_str(include_str!(
            "../../../fuzz/seeds/delegation_request/issue.json"
        ))
        .unwrap();
        assert_eq!(seed, r);
        let revoke: RevokeRequest = serde_json::from_str(include_str!(
            "../../../fuzz/seeds/delegation_request/revoke.json"
        ))
        .unwrap();
        let CheckedRevoke::Signed { signature, .. } = revoke.check().unwrap() else {
            panic!("the revoke seed is signed")
        };
        assert!(canonical::verify(
            &key,
            &revoke.canonical().unwrap(),
            &signature
        ));
    }

    #[test]
    fn canonical_fields_cannot_shift() {
        let a =
            IssueRequest::new_signed(b"k", "alice", "bo", scope(), 60, 1, "0123456789abcdef", 1);
        let mut b = a.clone();
        b.to = "b".into();
        b.issuer = "alice".into();
        assert_ne!(a.canonical(), b.canonical());
        let r =
            RevokeRequest::new_signed(b"k", "alice", &new_token_id("alice"), "0123456789abcdef", 5);
        assert!(matches!(r.check().unwrap(), CheckedRevoke::Signed { .. }));
        let mut half = r.clone();
        half.signature = None;
        assert_eq!(
            half.check().unwrap_err().reason_code(),
            "invalid_delegation"
        );
        let admin = RevokeRequest {
            v: 1,
            id: r.id.clone(),
            by: None,
            nonce: None,
            timestamp: None,
            signature: None,
        };
        assert_eq!(admin.check().unwrap(), CheckedRevoke::Unsigned);
    }
}
