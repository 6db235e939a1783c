//! agentd's tool-call decisions as OAP decision objects, Ed25519-signed
//! over their RFC 8785 (JCS) canonical JSON, carrying the passport's
//! digest (`sha256:` + hex SHA-256 of the passport's JCS form).
//!
//! The signed payload is the decision object without its `signature`
//! member (every other member, `kid` included, is covered).
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::packs::{oap_code, pack};
use super::passport::{is_date_time, is_uuid, Passport, ASSURANCE_LEVELS};
use crate::audit::{Record, RecordKind};
use crate::protocol::reason;

/// Why a decision cannot be made, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// Breaks a rule of the decision format.
    #[error("{at}: {message}")]
    Schema {
        /// JSON pointer of the member.
        at: String,
        /// The rule broken.
        message: String,
    },
    /// The signature does not verify under the key.
    #[error("the signature does not verify under the given public key")]
    BadSignature,
    /// The decision names another passport.
    #[error("passport_digest is {found}, the passport's is {expected}")]
    Digest {
        /// The given passport's digest.
        expected: String,
        /// The decision's.
        found: String,
    },
    /// A key file that is not an Ed25519 PKCS#8 key.
    #[error("signing key: {0}")]
    Key(String),
    /// JSON that did not serialize (a bug).
    #[error("canonical JSON: {0}")]
    Canonical(String),
}

/// One reason of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// OAP code (`oap.allowed`, `oap.limit_exceeded`, `agentd.<reason>`).
    pub code: String,
    /// Words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An OAP decision object (the members OAP 1.0's spec text requires).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// UUID (v4 layout), derived from the audit row's hash, so exporting
    /// twice gives the same id.
    pub decision_id: String,
    /// Policy pack id (`finance.payment.refund.v1`, `agentd.<action>.v1`).
    pub policy_id: String,
    /// The passport's id.
    pub agent_id: String,
    /// The passport's owner.
    pub owner_id: String,
    /// The passport's assurance level.
    pub assurance_level: String,
    /// Allowed?
    pub allow: bool,
    /// At least one reason.
    pub reasons: Vec<Reason>,
    /// When agentd decided (the audit row's timestamp).
    pub created_at: String,
    /// Seconds the decision may be cached.
    pub expires_in: u64,
    /// `sha256:` + hex SHA-256 of the passport's JCS form.
    pub passport_digest: String,
    /// `ed25519:` + base64 of the signature.
    pub signature: String,
    /// Key id (`oap:owner:NAME` or `oap:registry:NAME`).
    pub kid: String,
}

/// RFC 8785 canonical JSON of a value.
pub fn canonical<T: Serialize>(v: &T) -> Result<Vec<u8>, DecisionError> {
    serde_json_canonicalizer::to_vec(v).map_err(|e| DecisionError::Canonical(e.to_string()))
}

/// `sha256:<hex>` of a passport document's canonical JSON.
pub fn passport_digest(document: &Value) -> Result<String, DecisionError> {
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical(document)?))
    ))
}

/// The policy id an action's decisions carry: its pack's, or
/// `agentd.<action, other characters as dots>.v1`.
pub fn policy_id_for(action: &str) -> String {
    if let Some(pk) = pack(action) {
        return pk.policy_id.into();
    }
    let mut id = String::from("agentd");
    for part in action
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|p| !p.is_empty())
    {
        id.push('.');
        id.push_str(part);
    }
    id + ".v1"
}

/// A UUID with version-4 layout from the first bytes of SHA-256(seed).
fn uuid_from(seed: &[u8]) -> String {
    let mut b: [u8; 16] = Sha256::digest(seed)[..16].try_into().unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The role a passport is imported to when re-deciding exported rows.
pub const IMPORT_ROLE: &str = "agent";

/// What every exported decision shares.
pub struct Issuer<'a> {
    /// The passport the agent acted under.
    pub passport: &'a Passport,
    /// Its digest ([`passport_digest`]).
    pub digest: String,
    /// The signing key.
    pub key: &'a SigningKey,
    /// Its key id.
    pub kid: String,
    /// `expires_in` of every decision.
    pub expires_in: u64,
    /// The passport's own policy ([`Issuer::passport_policy`]): a denial
    /// of a value is re-decided with it from the row's arguments to name
    /// the refused argument (an audit row keeps the arguments, not which
    /// one failed), and so the pack's own code.
    pub policy: Option<crate::policy::CompiledPolicy>,
}

impl Issuer<'_> {
    /// The signed decision of an audit row: tool-call rows decided allow
    /// or deny; other rows (messages, kernel events, a call waiting for
    /// approval) are no OAP decision.
    pub fn decision(&self, r: &Record) -> Result<Option<Decision>, DecisionError> {
        let argument = self.refused_argument(r);
        self.decision_naming(r, argument.as_deref())
    }

    /// The passport imported as a policy (role [`IMPORT_ROLE`]), for
    /// [`Issuer::policy`]; None if it does not convert.
    pub fn passport_policy(passport: &Passport) -> Option<crate::policy::CompiledPolicy> {
        let converted = super::import(passport, IMPORT_ROLE).ok()?;
        let source = converted.to_toml("passport", true).ok()?;
        crate::policy::compile(&source, "passport").ok()
    }

    /// The argument a value denial refused: the row's arguments (its
    /// target, as compact JSON) decided again by the passport's policy,
    /// trusted only if that gives the row's own reason.
    fn refused_argument(&self, r: &Record) -> Option<String> {
        let e = &r.event;
        let on_value = matches!(
            e.reason_code.as_str(),
            reason::VALUE_NOT_ALLOWED | reason::VALUE_OUT_OF_RANGE | reason::SIZE_LIMIT_EXCEEDED
        );
        if !on_value || e.decision != "deny" {
            return None;
        }
        let args: serde_json::Map<String, Value> = serde_json::from_str(&e.target).ok()?;
        let denial = self
            .policy
            .as_ref()?
            .evaluate(&e.operator, &[IMPORT_ROLE.into()], &e.action, &args)
            .err()?;
        (denial.reason == e.reason_code)
            .then(|| crate::interop::denied_argument(&denial.detail).map(str::to_owned))
            .flatten()
    }

    /// [`Issuer::decision`], knowing which argument a denial refused (the
    /// evaluator's detail names it; an audit row does not keep it), for
    /// the policy pack's own deny code.
    pub fn decision_naming(
        &self,
        r: &Record,
        argument: Option<&str>,
    ) -> Result<Option<Decision>, DecisionError> {
        let e = &r.event;
        let allow = match (e.kind, e.decision.as_str()) {
            (RecordKind::ToolCall, "allow") => true,
            (RecordKind::ToolCall, "deny") => false,
            _ => return Ok(None),
        };
        let code = oap_code(&e.action, &e.reason_code, argument);
        let message = format!(
            "agentd {} {} (reason {}, policy {}, audit seq {}, operator {})",
            e.decision, e.action, e.reason_code, e.policy_id, r.seq, e.operator
        );
        let mut d = Decision {
            decision_id: uuid_from(format!("agentd-oap-decision:{}", r.hash).as_bytes()),
            policy_id: policy_id_for(&e.action),
            agent_id: self.passport.passport_id.clone(),
            owner_id: self.passport.owner_id.clone(),
            assurance_level: self.passport.assurance_level.clone(),
            allow,
            reasons: vec![Reason {
                code,
                message: Some(message),
            }],
            created_at: r.timestamp.clone(),
            expires_in: self.expires_in,
            passport_digest: self.digest.clone(),
            signature: String::new(),
            kid: self.kid.clone(),
        };
        sign(&mut d, self.key)?;
        Ok(Some(d))
    }
}

/// The bytes a decision's signature covers: its canonical JSON without
/// `signature`.
pub fn signed_payload(decision: &Value) -> Result<Vec<u8>, DecisionError> {
    let mut v = decision.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signature");
    }
    canonical(&v)
}

/// Signs a decision in place.
pub fn sign(d: &mut Decision, key: &SigningKey) -> Result<(), DecisionError> {
    let v = serde_json::to_value(&*d).map_err(|e| DecisionError::Canonical(e.to_string()))?;
    let sig = key.sign(&signed_payload(&v)?);
    d.signature = format!(
        "ed25519:{}",
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
    );
    Ok(())
}

/// Checks a decision's format and signature, and with `passport_digest`
/// (a passport's [`passport_digest`], computed once for many decisions)
/// that the decision carries it.
pub fn verify(
    decision: &Value,
    key: &VerifyingKey,
    passport_digest: Option<&str>,
) -> Result<(), DecisionError> {
    validate(decision)?;
    let sig = decision["signature"].as_str().unwrap_or_default();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&sig["ed25519:".len()..])
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| schema("/signature", "is not 64 bytes of base64"))?;
    key.verify(
        &signed_payload(decision)?,
        &ed25519_dalek::Signature::from_bytes(&raw),
    )
    .map_err(|_| DecisionError::BadSignature)?;
    if let Some(expected) = passport_digest {
        let found = decision["passport_digest"].as_str().unwrap_or_default();
        if expected != found {
            return Err(DecisionError::Digest {
                expected: expected.into(),
                found: found.into(),
            });
        }
    }
    Ok(())
}

fn schema(at: &str, message: impl Into<String>) -> DecisionError {
    DecisionError::Schema {
        at: at.into(),
        message: message.into(),
    }
}

/// The members of a decision and whether OAP 1.0's spec text requires them
/// (its `decision-schema.json` lists another set; see docs/interop.md).
const MEMBERS: [(&str, bool); 13] = [
    ("decision_id", true),
    ("policy_id", true),
    ("agent_id", true),
    ("owner_id", true),
    ("assurance_level", true),
    ("allow", true),
    ("reasons", true),
    ("created_at", true),
    ("expires_in", true),
    ("passport_digest", true),
    ("signature", true),
    ("kid", true),
    ("decision_token", false),
];

/// A member, its pattern as a check, and the pattern as the schema shows it.
type PatternCheck = (&'static str, fn(&str) -> bool, &'static str);

/// Checks a decision object against the decision schema's property rules.
pub fn validate(v: &Value) -> Result<(), DecisionError> {
    let o = v
        .as_object()
        .ok_or_else(|| schema("/", "must be an object"))?;
    if let Some(k) = o.keys().find(|k| !MEMBERS.iter().any(|(m, _)| m == k)) {
        return Err(schema(
            &format!("/{k}"),
            "unknown member (additionalProperties: false)",
        ));
    }
    if let Some((m, _)) = MEMBERS.iter().find(|(m, req)| *req && !o.contains_key(*m)) {
        return Err(schema("/", format!("required member `{m}` is missing")));
    }
    let s = |k: &str| {
        o[k].as_str()
            .ok_or_else(|| schema(&format!("/{k}"), "must be a string"))
    };
    for k in ["decision_id", "agent_id"] {
        if !is_uuid(s(k)?) {
            return Err(schema(&format!("/{k}"), "is not a UUID (format uuid)"));
        }
    }
    let checks: [PatternCheck; 4] = [
        (
            "policy_id",
            is_policy_id,
            "^[a-z0-9]+(\\.[a-z0-9]+)*\\.v[0-9]+$",
        ),
        ("passport_digest", is_digest, "^sha256:[a-f0-9]{64}$"),
        ("signature", is_signature, "^ed25519:[A-Za-z0-9+/=]+$"),
        ("kid", is_kid, "^oap:(registry|owner):[a-zA-Z0-9._-]+$"),
    ];
    for (k, ok, shown) in checks {
        if !ok(s(k)?) {
            return Err(schema(
                &format!("/{k}"),
                format!("does not match the pattern {shown}"),
            ));
        }
    }
    s("owner_id")?;
    if !ASSURANCE_LEVELS.contains(&s("assurance_level")?) {
        return Err(schema(
            "/assurance_level",
            format!("must be one of {}", ASSURANCE_LEVELS.join(", ")),
        ));
    }
    if !o["allow"].is_boolean() {
        return Err(schema("/allow", "must be a boolean"));
    }
    if !is_date_time(s("created_at")?) {
        return Err(schema("/created_at", "is not an RFC 3339 date-time"));
    }
    if o["expires_in"].as_u64().is_none() {
        return Err(schema("/expires_in", "must be an integer >= 0"));
    }
    reasons(&o["reasons"])?;
    if o.contains_key("decision_token") {
        s("decision_token")?;
    }
    Ok(())
}

fn reasons(v: &Value) -> Result<(), DecisionError> {
    let list = v
        .as_array()
        .ok_or_else(|| schema("/reasons", "must be an array"))?;
    if list.is_empty() {
        return Err(schema("/reasons", "must have at least 1 item"));
    }
    for (i, r) in list.iter().enumerate() {
        let at = format!("/reasons/{i}");
        let o = r
            .as_object()
            .ok_or_else(|| schema(&at, "must be an object"))?;
        if !o.get("code").is_some_and(Value::is_string) {
            return Err(schema(
                &format!("{at}/code"),
                "is required and must be a string",
            ));
        }
        if o.get("message").is_some_and(|m| !m.is_string()) {
            return Err(schema(&format!("{at}/message"), "must be a string"));
        }
    }
    Ok(())
}

/// `^[a-z0-9]+(\.[a-z0-9]+)*\.v[0-9]+$`
pub fn is_policy_id(s: &str) -> bool {
    let Some((head, ver)) = s.rsplit_once(".v") else {
        return false;
    };
    !ver.is_empty()
        && ver.bytes().all(|b| b.is_ascii_digit())
        && super::passport::is_capability_id(head)
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn is_signature(s: &str) -> bool {
    s.strip_prefix("ed25519:").is_some_and(|b| {
        !b.is_empty()
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    })
}

/// `^oap:(registry|owner):[a-zA-Z0-9._-]+$`
pub fn is_kid(s: &str) -> bool {
    let rest = s
        .strip_prefix("oap:registry:")
        .or_else(|| s.strip_prefix("oap:owner:"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    })
}

/// The default key id of a public key: `oap:owner:agentd-` + the first 8
/// bytes of its SHA-256, hex.
pub fn default_kid(key: &VerifyingKey) -> String {
    format!(
        "oap:owner:agentd-{}",
        hex::encode(&Sha256::digest(key.as_bytes())[..8])
    )
}

/// A new signing key as PKCS#8 PEM.
pub fn new_key_pem() -> Result<(SigningKey, String), DecisionError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| DecisionError::Key(e.to_string()))?;
    Ok((key, pem.to_string()))
}

/// Reads a PKCS#8 PEM signing key.
pub fn read_key_pem(pem: &str) -> Result<SigningKey, DecisionError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| DecisionError::Key(e.to_string()))
}

/// The public key as a JWKS (`/.well-known/oap/jwks.json`'s shape).
pub fn jwks(key: &VerifyingKey, kid: &str) -> Value {
    serde_json::json!({"keys": [{
        "kid": kid,
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes()),
        "use": "sig",
        "alg": "EdDSA",
    }]})
}
