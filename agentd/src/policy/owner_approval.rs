//! An approval signed with an owner operator's key: the only approval that
//! lets a call write a protected file. Pure: the signed bytes, signing and
//! the shape checks; the daemon's checks against its operators, clock and
//! nonces are `gateway::protected`.
//!
//! The signed bytes are six fields, each a 4-byte big-endian length and
//! its UTF-8 bytes (as messages are, docs/protocol.md §1.1): the domain tag
//! `agentd-approval-v1`, the approval id, the call id, the decision
//! (`approve` or `deny`), the timestamp (ASCII decimal), the nonce.
use serde::{Deserialize, Serialize};

use super::approval::Answer;
use crate::protocol::canonical;

/// Domain-separation tag: a message signature is never an approval's.
pub const DOMAIN_TAG: &str = "agentd-approval-v1";

/// An owner's signature over one answer, as the API carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerSignature {
    /// The signing operator (must hold an owner role).
    pub operator: String,
    /// Unix seconds when signed (within the gateway's timestamp window).
    pub timestamp: i64,
    /// Single use per operator: 16–128 bytes of `A-Z a-z 0-9 _ -`.
    pub nonce: String,
    /// 64 hex digits: HMAC-SHA256 of [`canonical_bytes`] under the operator's key.
    pub signature: String,
}

fn push(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

/// `approve` / `deny`, as signed.
pub fn decision_word(a: Answer) -> &'static str {
    match a {
        Answer::Approve => "approve",
        Answer::Deny => "deny",
    }
}

/// The bytes an owner signs for answering approval `approval_id` (of call
/// `call_id`) with `answer`.
pub fn canonical_bytes(
    approval_id: &str,
    call_id: &str,
    answer: Answer,
    timestamp: i64,
    nonce: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    for f in [
        DOMAIN_TAG,
        approval_id,
        call_id,
        decision_word(answer),
        &timestamp.to_string(),
        nonce,
    ] {
        push(&mut out, f.as_bytes());
    }
    out
}

/// Signs an answer with `key` (the operator's raw key bytes).
pub fn sign(
    key: &[u8],
    operator: &str,
    approval_id: &str,
    answer: Answer,
    timestamp: i64,
    nonce: &str,
) -> OwnerSignature {
    let c = canonical_bytes(approval_id, approval_id, answer, timestamp, nonce);
    OwnerSignature {
        operator: operator.to_owned(),
        timestamp,
        nonce: nonce.to_owned(),
        signature: hex::encode(canonical::sign(key, &c)),
    }
}

/// Whether `s` is a well-formed nonce (the messages' rule).
pub fn nonce_ok(s: &str) -> bool {
    (16..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks `sig` against `key` for this answer (constant time); false on
/// a malformed signature.
pub fn verify(key: &[u8], sig: &OwnerSignature, approval_id: &str, answer: Answer) -> bool {
    let Ok(raw) = hex::decode(&sig.signature) else {
        return false;
    };
    let c = canonical_bytes(approval_id, approval_id, answer, sig.timestamp, &sig.nonce);
    canonical::verify(key, &c, &raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_the_approval_the_decision_and_the_nonce() {
        let key = [7u8; 32];
        let s = sign(
            &key,
            "olivia",
            "ab12",
            Answer::Approve,
            1_800_000_000,
            "n0n0n0n0n0n0n0n0",
        );
        assert!(verify(&key, &s, "ab12", Answer::Approve));
        assert!(
            !verify(&key, &s, "ab13", Answer::Approve),
            "another approval"
        );
        assert!(!verify(&key, &s, "ab12", Answer::Deny), "another decision");
        assert!(
            !verify(&[8u8; 32], &s, "ab12", Answer::Approve),
            "another key"
        );
        let mut t = s.clone();
        t.nonce = "n1n1n1n1n1n1n1n1".into();
        assert!(!verify(&key, &t, "ab12", Answer::Approve), "another nonce");
        t = s.clone();
        t.timestamp += 1;
        assert!(!verify(&key, &t, "ab12", Answer::Approve), "another time");
        t = s;
        t.signature = "zz".into();
        assert!(!verify(&key, &t, "ab12", Answer::Approve), "malformed");
        // Domain separation from messages: the tag is the first field.
        let c = canonical_bytes("a", "a", Answer::Approve, 0, "n");
        assert_eq!(&c[4..4 + DOMAIN_TAG.len()], DOMAIN_TAG.as_bytes());
        assert!(
            nonce_ok("0123456789abcdef") && !nonce_ok("short") && !nonce_ok("bad nonce value!")
        );
    }
}
