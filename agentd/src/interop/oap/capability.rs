//! One passport capability being converted into an agentd action: its
//! arguments, action and usage threshold, with what could not be kept
//! noted on the conversion. Used by the importer and the policy packs.
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::passport::Passport;
use crate::interop::Converted;
use crate::policy::compile::is_identifier_value;
use crate::policy::schema::{ActionDef, ArgKind, ArgRule, UsageLimit};

pub(crate) type Args = BTreeMap<String, ArgRule>;

pub(crate) fn string(values: Option<Vec<String>>, optional: bool) -> ArgRule {
    ArgRule {
        values,
        optional,
        ..ArgRule::of(ArgKind::String)
    }
}

/// One capability being converted: its arguments, action and usage
/// threshold, with the notes going to `out`.
pub(crate) struct Capability<'a> {
    pub out: &'a mut Converted,
    /// JSON pointer of the capability's limits.
    pub at: String,
    pub limits: &'a Map<String, Value>,
    /// The capability's `params`.
    pub params: &'a Map<String, Value>,
    pub args: Args,
    pub action: ActionDef,
    pub usage: Option<UsageLimit>,
}

impl Capability<'_> {
    /// The limit named `key`, if the passport sets it.
    pub fn limit(&self, key: &str) -> Option<&Value> {
        self.limits.get(key)
    }

    /// Notes every limit not in `known` as unenforced.
    pub fn unknown_limits(&mut self, known: &[&str]) {
        let unknown: Vec<String> = self
            .limits
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            self.out.unenforced(
                format!("{}/{k}", self.at),
                "a limit agentd has no equivalent for",
            );
        }
    }

    /// A string argument, optionally restricted to `values` (values that
    /// are not identifiers cannot be passed to agentd at all: dropped,
    /// noted).
    pub fn string_arg(&mut self, name: &str, values: Option<(&str, &Value)>, optional: bool) {
        let values = values.map(|(key, v)| self.identifiers(key, v));
        self.args.insert(name.to_owned(), string(values, optional));
    }

    /// The identifier strings of the array limit `key` (others noted).
    pub fn identifiers(&mut self, key: &str, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for (i, s) in v.as_array().into_iter().flatten().enumerate() {
            let s = s.as_str().unwrap_or_default();
            if is_identifier_value(s) {
                out.push(s.to_owned());
            } else {
                self.out.narrowed(
                    format!("{}/{key}/{i}", self.at),
                    format!("`{s}` is not an identifier ([A-Za-z0-9._:@+-]): agentd cannot match it, so it allows nothing here"),
                );
            }
        }
        out
    }

    /// The passport's regions as the `region` argument.
    pub fn region(&mut self, p: &Passport, optional: bool) {
        self.args
            .insert("region".into(), string(Some(p.regions.clone()), optional));
    }

    /// A usage threshold of `max` calls per `window_secs`, a sliding
    /// window (stricter than a calendar day: never 2×max around midnight).
    pub fn usage(&mut self, key: &str, max: &Value, window_secs: u64) {
        self.out.narrowed(
            format!("{}/{key}", self.at),
            format!("counted per operator over any {window_secs} s (a sliding window), not per calendar period"),
        );
        let max = max.as_u64().unwrap_or(1);
        let capped = max.min(10_000) as u32;
        if max > 10_000 {
            self.out.narrowed(
                format!("{}/{key}", self.at),
                format!("{max} exceeds agentd's largest usage threshold: 10000"),
            );
        }
        self.usage = Some(UsageLimit {
            max_uses: capped,
            window_secs,
            escalate_after: None,
        });
    }
}
