//! The published protocol test vectors (`docs/protocol-vectors.json`), so that
//! the doc, the code and other-language clients cannot drift apart silently.
use serde::Deserialize;

/// The vector file, embedded at build time.
pub const VECTORS_JSON: &str = include_str!("../../../docs/protocol-vectors.json");

/// One vector: inputs, canonical bytes and expected signature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// Human label.
    pub name: String,
    /// HMAC key, hex.
    pub key: String,
    /// Operator id.
    pub operator: String,
    /// Session id.
    pub session: String,
    /// Nonce.
    pub nonce: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// Body text.
    pub body: String,
    /// Expected canonical bytes, hex.
    pub canonical_hex: String,
    /// Expected signature, lowercase hex.
    pub signature: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    vectors: Vec<Vector>,
}

/// Parses the embedded vectors.
pub fn vectors() -> Vec<Vector> {
    let f: File = serde_json::from_str(VECTORS_JSON).expect("docs/protocol-vectors.json is valid");
    assert_eq!(f.format, super::DOMAIN_TAG);
    f.vectors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{canonical_bytes, sign, verify, SignedMessage};

    // The expected values were produced by the independent Python reference
    // implementation printed in docs/protocol.md, not by this crate.
    #[test]
    fn vectors_match_canonical_bytes_and_signatures() {
        let vs = vectors();
        assert!(vs.len() >= 3);
        for v in &vs {
            let key = hex::decode(&v.key).unwrap();
            let c = canonical_bytes(&v.operator, &v.session, &v.nonce, v.timestamp, &v.body);
            assert_eq!(
                hex::encode(&c),
                v.canonical_hex,
                "canonical bytes of {}",
                v.name
            );
            assert_eq!(
                hex::encode(sign(&key, &c)),
                v.signature,
                "signature of {}",
                v.name
            );
            assert!(
                verify(&key, &c, &hex::decode(&v.signature).unwrap()),
                "{}",
                v.name
            );
            let m = SignedMessage::new_signed(
                &key,
                &v.operator,
                &v.session,
                &v.nonce,
                v.timestamp,
                &v.body,
            );
            assert_eq!(m.signature.as_deref(), Some(v.signature.as_str()));
            m.check()
                .unwrap_or_else(|e| panic!("vector {} fails structural checks: {e}", v.name));
        }
    }

    #[test]
    fn protocol_doc_quotes_every_vector() {
        let doc = include_str!("../../../docs/protocol.md");
        for v in vectors() {
            assert!(
                doc.contains(&v.signature),
                "docs/protocol.md lacks the signature of {}",
                v.name
            );
        }
    }
}
