//! Canonical message bytes and HMAC-SHA256 over them.
//!
//! Every field is written as a 4-byte big-endian length followed by its UTF-8
//! bytes, after a domain tag encoded the same way. Length prefixes make the
//! encoding unambiguous (no delimiter can be smuggled inside a field), and the
//! tag keeps these signatures from being valid for any other agentd format.
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Domain-separation tag, the first field of the canonical bytes.
pub const DOMAIN_TAG: &str = "agentd-message-v1";

type HmacSha256 = Hmac<Sha256>;

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded far below 4 GiB by `message::limits`; the cast is exact.
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

/// The bytes an operator signs: tag, operator, session, nonce, timestamp (decimal), body.
pub fn canonical_bytes(
    operator: &str,
    session: &str,
    nonce: &str,
    timestamp: i64,
    body: &str,
) -> Vec<u8> {
    let ts = timestamp.to_string();
    let mut out = Vec::with_capacity(
        5 * 4
            + DOMAIN_TAG.len()
            + operator.len()
            + session.len()
            + nonce.len()
            + ts.len()
            + body.len()
            + 4,
    );
    for field in [
        DOMAIN_TAG.as_bytes(),
        operator.as_bytes(),
        session.as_bytes(),
        nonce.as_bytes(),
        ts.as_bytes(),
        body.as_bytes(),
    ] {
        push_field(&mut out, field);
    }
    out
}

/// HMAC-SHA256 of `canonical` under `key`.
pub fn sign(key: &[u8], canonical: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(canonical);
    mac.finalize().into_bytes().into()
}

/// Constant-time check that `signature` is the HMAC-SHA256 of `canonical` under `key`.
pub fn verify(key: &[u8], canonical: &[u8], signature: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(canonical);
    // verify_slice compares in constant time (subtle) and rejects wrong lengths.
    mac.verify_slice(signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_shift_into_each_other() {
        let a = canonical_bytes("ab", "c", "n", 1, "");
        let b = canonical_bytes("a", "bc", "n", 1, "");
        assert_ne!(a, b);
    }

    #[test]
    fn layout_is_length_prefixed() {
        let c = canonical_bytes("op", "s", "nn", 42, "hi");
        let mut expect = Vec::new();
        for f in [DOMAIN_TAG, "op", "s", "nn", "42", "hi"] {
            expect.extend_from_slice(&(f.len() as u32).to_be_bytes());
            expect.extend_from_slice(f.as_bytes());
        }
        assert_eq!(c, expect);
    }

    #[test]
    fn verify_rejects_flipped_bit_and_short_signature() {
        let c = canonical_bytes("op", "s", "nonce-0123456789", 1, "body");
        let mut sig = sign(b"key", &c);
        assert!(verify(b"key", &c, &sig));
        assert!(!verify(b"other", &c, &sig));
        assert!(!verify(b"key", &c, &sig[..31]));
        sig[7] ^= 1;
        assert!(!verify(b"key", &c, &sig));
    }
}
