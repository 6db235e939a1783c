//! What a receipt asserts, its canonical encoding, the HMAC tag and the
//! watermark payload derived from it.
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::ReceiptKeys;
use super::ReceiptError;

/// Bits of watermark payload (a truncated SHA-256 of the canonical claims).
pub const PAYLOAD_BITS: usize = 64;

/// The audit facts a receipt binds: one permitted tool call's audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptClaims {
    /// Sequence number of the audit row.
    pub seq: u64,
    /// Hash of the audit row (hex).
    pub row_hash: String,
    /// Operator whose message authorized the call.
    pub operator: String,
    /// Tool call id.
    pub call_id: String,
    /// Action of the tool call.
    pub action: String,
    /// Timestamp of the audit row (RFC 3339).
    pub timestamp: String,
}

/// The full receipt as stored in the PNG text chunk: the claims, the
/// watermark payload and the HMAC tag over the canonical claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptDocument {
    /// Format version (1).
    pub v: u32,
    /// The bound audit facts.
    #[serde(flatten)]
    pub claims: ReceiptClaims,
    /// Watermark payload: first 64 bits of SHA-256 over the canonical claims (hex).
    pub payload: String,
    /// HMAC-SHA256 (receipt tag key) over the canonical claims (hex).
    pub tag: String,
}

impl ReceiptClaims {
    /// Deterministic, unambiguous encoding: fixed field order, each value
    /// length-prefixed, so no two claim sets share an encoding.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"agentd-receipt-v1\n");
        let seq = self.seq.to_string();
        for (name, value) in [
            ("seq", seq.as_str()),
            ("row_hash", &self.row_hash),
            ("operator", &self.operator),
            ("call_id", &self.call_id),
            ("action", &self.action),
            ("timestamp", &self.timestamp),
        ] {
            out.extend_from_slice(format!("{name}={}:", value.len()).as_bytes());
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// The 64-bit watermark payload.
    pub fn payload(&self) -> u64 {
        let d = Sha256::digest(self.canonical());
        u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
    }

    /// Rejects claims that cannot name a receipt file or are empty.
    pub fn validate(&self) -> Result<(), ReceiptError> {
        let ok = !self.call_id.is_empty()
            && self.call_id.len() <= 128
            && self
                .call_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !self.call_id.starts_with('.');
        if !ok {
            return Err(ReceiptError::InvalidClaims {
                reason: "invalid_call_id",
                detail: format!(
                    "call id {:?} must be 1-128 of [A-Za-z0-9._-], not starting with '.'",
                    self.call_id
                ),
            });
        }
        if self.operator.is_empty() {
            return Err(ReceiptError::InvalidClaims {
                reason: "missing_operator",
                detail: "operator is empty".into(),
            });
        }
        Ok(())
    }
}

/// HMAC-SHA256 tag over the canonical claims, hex.
pub fn tag(keys: &ReceiptKeys, claims: &ReceiptClaims) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&keys.tag_key).expect("any key length");
    mac.update(&claims.canonical());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a hex tag.
pub fn tag_matches(keys: &ReceiptKeys, claims: &ReceiptClaims, tag_hex: &str) -> bool {
    let Ok(given) = hex::decode(tag_hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&keys.tag_key).expect("any key length");
    mac.update(&claims.canonical());
    mac.verify_slice(&given).is_ok()
}

impl ReceiptDocument {
    /// Builds the document for `claims`, tagged with `keys`.
    pub fn new(keys: &ReceiptKeys, claims: &ReceiptClaims) -> Self {
        Self {
            v: 2,
            claims: claims.clone(),
            payload: format!("{:016x}", claims.payload()),
            tag: tag(keys, claims),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> ReceiptClaims {
        ReceiptClaims {
            seq: 7,
            row_hash: "ab".repeat(32),
            operator: "alice".into(),
            call_id: "call-1".into(),
            action: "shell.exec".into(),
            timestamp: "2026-11-22T07:00:00.000001Z".into(),
        }
    }

    #[test]
    fn canonical_is_unambiguous() {
        let a = claims();
        let mut b = a.clone();
        // Moving a character between adjacent fields changes the encoding.
        b.operator = "alicec".into();
        b.call_id = "all-1".into();
        assert_ne!(a.canonical(), b.canonical());
        assert_ne!(a.payload(), b.payload());
    }

    #[test]
    fn tag_binds_every_field_and_key() {
        let k = ReceiptKeys::derive(b"operator-key-0123456789abcdef").unwrap();
        let c = claims();
        let t = tag(&k, &c);
        assert!(tag_matches(&k, &c, &t));
        let mut c2 = c.clone();
        c2.seq = 8;
        assert!(!tag_matches(&k, &c2, &t));
        let k2 = ReceiptKeys::derive(b"operator-key-0123456789abcdeX").unwrap();
        assert!(!tag_matches(&k2, &c, &t));
        assert!(!tag_matches(&k, &c, "zz"));
    }

    #[test]
    fn bad_call_ids_are_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            let mut c = claims();
            c.call_id = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(claims().validate().is_ok());
    }
}
