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

/// One v2 vector: the v1 inputs, the audience and the scope, with the
/// canonical bytes and signature `docs/protocol-vectors.py` computed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorV2 {
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
    /// Addressed agent, if any.
    pub for_agent: Option<String>,
    /// Addressed host, if any.
    pub for_host: Option<String>,
    /// Signed scope, if any.
    pub scope: Option<super::Scope>,
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
    vectors_v2: Vec<VectorV2>,
}

fn file() -> File {
    let f: File = serde_json::from_str(VECTORS_JSON).expect("docs/protocol-vectors.json is valid");
    assert_eq!(f.format, super::DOMAIN_TAG);
    f
}

/// Parses the embedded v1 vectors.
pub fn vectors() -> Vec<Vector> {
    file().vectors
}

/// Parses the embedded v2 vectors.
pub fn vectors_v2() -> Vec<VectorV2> {
    file().vectors_v2
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

    // As above, for v2: the values come from docs/protocol-vectors.py.
    #[test]
    fn v2_vectors_match_canonical_bytes_and_signatures() {
        let vs = vectors_v2();
        assert!(vs.len() >= 4);
        for v in &vs {
            let key = hex::decode(&v.key).unwrap();
            let fields = crate::protocol::V2Fields {
                for_agent: v.for_agent.as_deref(),
                for_host: v.for_host.as_deref(),
                scope: v.scope.as_ref(),
            };
            let c = crate::protocol::canonical_bytes_v2(
                &v.operator,
                &v.session,
                &v.nonce,
                v.timestamp,
                &v.body,
                fields,
            );
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
            // The message a client would send, parsed as the API parses it.
            let mut json = serde_json::json!({
                "v": 2, "operator": v.operator, "session": v.session, "nonce": v.nonce,
                "timestamp": v.timestamp, "body": v.body, "signature": v.signature,
            });
            for (k, val) in [
                ("for_agent", serde_json::to_value(&v.for_agent).unwrap()),
                ("for_host", serde_json::to_value(&v.for_host).unwrap()),
                ("scope", serde_json::to_value(&v.scope).unwrap()),
            ] {
                if !val.is_null() {
                    json[k] = val;
                }
            }
            let m: SignedMessage = serde_json::from_value(json).unwrap();
            let crate::protocol::message::Checked::Signed { signature, .. } = m
                .check()
                .unwrap_or_else(|e| panic!("vector {} fails structural checks: {e}", v.name))
            else {
                panic!("vector {} is not signed", v.name)
            };
            assert_eq!(m.canonical().as_deref(), Some(&c[..]), "{}", v.name);
            assert!(verify(&key, &c, &signature), "{}", v.name);
            // Re-addressed or re-scoped, the signature no longer verifies.
            let mut moved = m.clone();
            moved.for_agent = Some("another-agent".into());
            assert!(!verify(&key, &moved.canonical().unwrap(), &signature));
            let mut widened = m.clone();
            widened.scope = match m.scope {
                Some(_) => None,
                None => Some(crate::protocol::Scope::default()),
            };
            assert!(!verify(&key, &widened.canonical().unwrap(), &signature));
            let mut v1 = m.clone();
            v1.v = 1;
            assert!(!verify(&key, &v1.canonical().unwrap(), &signature));
        }
    }

    #[test]
    fn protocol_doc_quotes_v2_vectors_and_reference_implementation() {
        let doc = include_str!("../../../docs/protocol.md");
        for v in vectors_v2() {
            assert!(
                doc.contains(&v.signature),
                "docs/protocol.md lacks the signature of {}",
                v.name
            );
            assert!(
                doc.contains(&v.canonical_hex),
                "docs/protocol.md lacks the canonical bytes of {}",
                v.name
            );
        }
        let script = include_str!("../../../docs/protocol-vectors.py");
        let start = script
            .find("# --- v2 reference implementation ---\n")
            .unwrap();
        let end = script
            .find("# --- end of v2 reference implementation ---")
            .unwrap();
        let reference = &script[start..end];
        let body = reference.split_once('\n').unwrap().1;
        assert!(doc.contains(body), "docs/protocol.md §1.5 must quote docs/protocol-vectors.py's reference implementation verbatim");
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
