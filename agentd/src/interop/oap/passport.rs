//! An Open Agent Passport, checked against the rules of OAP 1.0's
//! `passport-schema.json` (transcribed: required members, types, enums,
//! `const`, `uuid` and `date-time` formats, patterns, minimums, the
//! `oneOf` of recipient lists, no unknown top-level member), then read
//! into the typed form the importer uses. Errors name the member by JSON
//! pointer, as JSON Schema validators do.
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::schema::{
    array, child, err, is_region, is_semver, object, one_of, pattern, string, uuid,
};
pub use super::schema::{is_capability_id, is_date_time, is_uuid, PassportError};

/// OAP assurance levels, lowest first (both level-4 kinds rank equal).
pub const ASSURANCE_LEVELS: [&str; 6] = ["L0", "L1", "L2", "L3", "L4KYC", "L4FIN"];

/// The rank of an assurance level (L4KYC and L4FIN are both 4).
pub fn assurance_rank(level: &str) -> Option<usize> {
    ASSURANCE_LEVELS
        .iter()
        .position(|l| *l == level)
        .map(|i| i.min(4))
}

/// One granted capability.
#[derive(Debug, Clone, PartialEq)]
pub struct Capability {
    /// Capability id (`finance.payment.refund`).
    pub id: String,
    /// Its parameters (free-form in the schema).
    pub params: Map<String, Value>,
}

/// A schema-valid passport: the members the importer uses, and the
/// document itself (its digest is over all of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Passport {
    /// `passport_id` (a UUID).
    pub passport_id: String,
    /// `owner_id`.
    pub owner_id: String,
    /// `assurance_level` (one of [`ASSURANCE_LEVELS`]).
    pub assurance_level: String,
    /// `status`: draft, active, suspended or revoked.
    pub status: String,
    /// `capabilities`, in order.
    pub capabilities: Vec<Capability>,
    /// `limits`, by capability id.
    pub limits: BTreeMap<String, Map<String, Value>>,
    /// `regions`.
    pub regions: Vec<String>,
    /// The whole document as parsed.
    pub document: Value,
}

const TOP_LEVEL: [&str; 16] = [
    "passport_id",
    "kind",
    "spec_version",
    "template_id",
    "owner_id",
    "owner_type",
    "assurance_level",
    "status",
    "capabilities",
    "limits",
    "regions",
    "metadata",
    "created_at",
    "updated_at",
    "version",
    "parent_agent_id",
];

const REQUIRED: [&str; 13] = [
    "passport_id",
    "kind",
    "spec_version",
    "owner_id",
    "owner_type",
    "status",
    "assurance_level",
    "capabilities",
    "limits",
    "regions",
    "created_at",
    "updated_at",
    "version",
];

/// Parses and checks a passport.
pub fn parse(text: &str) -> Result<Passport, PassportError> {
    let Strict(doc) = serde_json::from_str(text).map_err(|e| PassportError::Json(e.to_string()))?;
    validate(&doc)?;
    Ok(read(doc))
}

/// A JSON value read with duplicate object members refused: JSON parsers
/// keep one of them (which one varies), so a duplicate could hide a
/// constraint from one reader and not another.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(n.into())
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(n.into())
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(k.clone(), v).is_some() {
                return Err(serde::de::Error::custom(format!("duplicate member `{k}`")));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Checks a parsed document against the passport schema's rules.
pub fn validate(doc: &Value) -> Result<(), PassportError> {
    let top = object(doc, "")?;
    for key in top.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            return Err(err(
                &child("", key),
                "unknown member (the schema allows no additional properties)",
            ));
        }
    }
    for key in REQUIRED {
        if !top.contains_key(key) {
            return Err(err("", format!("required member `{key}` is missing")));
        }
    }
    for key in ["passport_id", "template_id", "parent_agent_id"] {
        if let Some(v) = top.get(key) {
            uuid(v, &child("", key))?;
        }
    }
    one_of(&top["kind"], "/kind", &["template", "instance"])?;
    if top["spec_version"] != Value::String("oap/1.0".into()) {
        return Err(err("/spec_version", "must be the constant \"oap/1.0\""));
    }
    string(&top["owner_id"], "/owner_id")?;
    one_of(&top["owner_type"], "/owner_type", &["org", "user"])?;
    one_of(
        &top["assurance_level"],
        "/assurance_level",
        &ASSURANCE_LEVELS,
    )?;
    one_of(
        &top["status"],
        "/status",
        &["draft", "active", "suspended", "revoked"],
    )?;
    capabilities(&top["capabilities"])?;
    super::limits::validate(&top["limits"], "/limits")?;
    for (i, r) in array(&top["regions"], "/regions")?.iter().enumerate() {
        pattern(
            r,
            &format!("/regions/{i}"),
            is_region,
            "^[A-Z]{2}(-[A-Z]{2})?$",
        )?;
    }
    if let Some(m) = top.get("metadata") {
        object(m, "/metadata")?;
    }
    for key in ["created_at", "updated_at"] {
        let at = child("", key);
        if !is_date_time(string(&top[key], &at)?) {
            return Err(err(&at, "is not an RFC 3339 date-time (format date-time)"));
        }
    }
    pattern(
        &top["version"],
        "/version",
        is_semver,
        "^\\d+\\.\\d+\\.\\d+$",
    )?;
    Ok(())
}

fn capabilities(v: &Value) -> Result<(), PassportError> {
    for (i, c) in array(v, "/capabilities")?.iter().enumerate() {
        let at = format!("/capabilities/{i}");
        let o = object(c, &at)?;
        let Some(id) = o.get("id") else {
            return Err(err(&at, "required member `id` is missing"));
        };
        pattern(
            id,
            &child(&at, "id"),
            is_capability_id,
            "^[a-z0-9]+(\\.[a-z0-9]+)*$",
        )?;
        if let Some(p) = o.get("params") {
            object(p, &child(&at, "params"))?;
        }
        // The schema leaves capability objects open; agentd refuses what
        // it would otherwise ignore, since an ignored member may have been
        // meant as a constraint.
        if let Some(k) = o.keys().find(|k| *k != "id" && *k != "params") {
            return Err(err(
                &child(&at, k),
                "unknown member of a capability (agentd knows `id` and `params`)",
            ));
        }
    }
    Ok(())
}

fn read(doc: Value) -> Passport {
    let s = |k: &str| doc[k].as_str().unwrap_or_default().to_owned();
    let capabilities = doc["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Capability {
            id: c["id"].as_str().unwrap_or_default().to_owned(),
            params: c["params"].as_object().cloned().unwrap_or_default(),
        })
        .collect();
    let limits = doc["limits"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_object()?.clone())))
        .collect();
    let regions = doc["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    Passport {
        passport_id: s("passport_id"),
        owner_id: s("owner_id"),
        assurance_level: s("assurance_level"),
        status: s("status"),
        capabilities,
        limits,
        regions,
        document: doc,
    }
}
