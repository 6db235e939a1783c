//! Canonical message bytes and HMAC-SHA256 over them.
//!
//! Every field is written as a 4-byte big-endian length followed by its UTF-8
//! bytes, after a domain tag encoded the same way. Length prefixes make the
//! encoding unambiguous (no delimiter can be smuggled inside a field), and the
//! tag keeps these signatures from being valid for any other agentd format.
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::scope::Scope;

/// Domain-separation tag, the first field of a v1 message's canonical bytes.
pub const DOMAIN_TAG: &str = "agentd-message-v1";
/// Domain-separation tag of a v2 message (audience and scope).
pub const DOMAIN_TAG_V2: &str = "agentd-message-v2";

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

/// What a v2 message signs beyond the v1 fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct V2Fields<'a> {
    /// The agent the message is for (None: any agent).
    pub for_agent: Option<&'a str>,
    /// The host the message is for (None: any host).
    pub for_host: Option<&'a str>,
    /// The calls its tool calls may make (None: whatever the role allows).
    pub scope: Option<&'a Scope>,
}

/// The bytes an operator signs in a v2 message: the v2 tag, the v1 fields
/// in the v1 order, then `for_agent` and `for_host` (empty when absent;
/// present ones are never empty), then the scope's fields
/// ([`super::scope::canonical_fields`]).
pub fn canonical_bytes_v2(
    operator: &str,
    session: &str,
    nonce: &str,
    timestamp: i64,
    body: &str,
    v2: V2Fields<'_>,
) -> Vec<u8> {
    let ts = timestamp.to_string();
    let mut out = Vec::with_capacity(256 + body.len());
    for field in [
        DOMAIN_TAG_V2.as_bytes(),
        operator.as_bytes(),
        session.as_bytes(),
        nonce.as_bytes(),
        ts.as_bytes(),
        body.as_bytes(),
        v2.for_agent.unwrap_or("").as_bytes(),
        v2.for_host.unwrap_or("").as_bytes(),
    ] {
        push_field(&mut out, field);
    }
    for field in super::scope::canonical_fields(v2.scope) {
        push_field(&mut out, &field);
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

/// Whether `signature` is `public`'s Ed25519 signature of `canonical`
/// (strict verification: no malleable or small-order encodings).
pub fn verify_ed25519(public: &[u8], canonical: &[u8], signature: &[u8]) -> bool {
    let Ok(public) = <[u8; 32]>::try_from(public) else {
        return false;
    };
    let Ok(sig) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&public) else {
        return false;
    };
    key.verify_strict(canonical, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
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
    fn v2_layout_is_the_v1_fields_then_audience_then_scope() {
        let scope: Scope = serde_json::from_str(r#"[{"action":"a","args":{"p":"/x*"}}]"#).unwrap();
        let c = canonical_bytes_v2(
            "op",
            "s",
            "nn",
            42,
            "hi",
            V2Fields {
                for_agent: Some("ag"),
                for_host: None,
                scope: Some(&scope),
            },
        );
        let mut expect = Vec::new();
        for f in [
            DOMAIN_TAG_V2,
            "op",
            "s",
            "nn",
            "42",
            "hi",
            "ag",
            "",
            "1",
            "a",
            "1",
            "p",
            "/x*",
        ] {
            expect.extend_from_slice(&(f.len() as u32).to_be_bytes());
            expect.extend_from_slice(f.as_bytes());
        }
        assert_eq!(c, expect);
        // Unscoped, scoped to nothing, and addressed differently all differ.
        let plain = canonical_bytes_v2("op", "s", "nn", 42, "hi", V2Fields::default());
        let empty = Scope::default();
        let nothing = canonical_bytes_v2(
            "op",
            "s",
            "nn",
            42,
            "hi",
            V2Fields {
                scope: Some(&empty),
                ..V2Fields::default()
            },
        );
        let host = canonical_bytes_v2(
            "op",
            "s",
            "nn",
            42,
            "hi",
            V2Fields {
                for_host: Some("ag"),
                ..V2Fields::default()
            },
        );
        let agent = canonical_bytes_v2(
            "op",
            "s",
            "nn",
            42,
            "hi",
            V2Fields {
                for_agent: Some("ag"),
                ..V2Fields::default()
            },
        );
        assert_ne!(plain, nothing);
        assert_ne!(host, agent);
        assert_ne!(plain, canonical_bytes("op", "s", "nn", 42, "hi"));
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
