//! The packaged /etc/agentd/agentd.toml must parse, must equal
//! `Config::default()`, and must mention every key, so the shipped file and
//! the schema in `agentd::config` never drift apart.
use std::{collections::BTreeSet, path::Path};

use agentd::config::Config;

const SHIPPED: &str = include_str!("../../packaging/agentd.toml");

/// Dotted keys of every leaf in a JSON object ("gateway.nonce_ttl_secs").
fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// Dotted keys actually written (uncommented) in a TOML document.
fn written_keys(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
    if let toml::Value::Table(t) = value {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_table() {
                written_keys(&key, v, out);
            } else {
                out.insert(key);
            }
        }
    }
}

#[test]
fn shipped_config_parses_to_the_defaults() {
    let parsed = Config::parse(SHIPPED, Path::new("packaging/agentd.toml"))
        .expect("packaging/agentd.toml must be accepted by Config::parse");
    let parsed = serde_json::to_value(&parsed).unwrap();
    let default = serde_json::to_value(Config::default()).unwrap();
    assert_eq!(
        parsed, default,
        "packaging/agentd.toml must state exactly the defaults of Config::default()"
    );
}

#[test]
fn shipped_config_documents_every_key() {
    let mut defaults = Vec::new();
    leaves(
        "",
        &serde_json::to_value(Config::default()).unwrap(),
        &mut defaults,
    );
    let doc: toml::Value = toml::from_str(SHIPPED).unwrap();
    let mut written = BTreeSet::new();
    written_keys("", &doc, &mut written);

    for (key, value) in &defaults {
        if value.is_null() {
            // An unset option cannot be written as a TOML value; it must be
            // shown commented out, under its own table.
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                SHIPPED
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("# {leaf} ="))),
                "packaging/agentd.toml must show the unset key `{key}` as a commented example"
            );
        } else {
            assert!(
                written.contains(key),
                "packaging/agentd.toml must write `{key}` with its default"
            );
        }
    }
    let known: BTreeSet<_> = defaults.iter().map(|(k, _)| k.clone()).collect();
    let unknown: Vec<_> = written.difference(&known).collect();
    assert!(unknown.is_empty(), "keys not in the schema: {unknown:?}");
}

#[test]
fn a_typo_in_the_shipped_file_is_refused_by_name() {
    let broken = SHIPPED.replace("nonce_ttl_secs = ", "nonce_ttl_sec = ");
    let err = Config::parse(&broken, Path::new("agentd.toml")).unwrap_err();
    assert!(err.to_string().contains("nonce_ttl_sec"), "{err}");
}
