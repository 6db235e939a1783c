//! Agent and profile definitions on arbitrary bytes: the body of `PUT
//! /v1/agent-settings/NAME` (JSON `AgentDef`) and a profile file (TOML
//! `ProfileDef`, also `[profiles.NAME]` in a policy). Properties: parsing
//! and validation never panic; what parses survives a JSON round trip; a
//! definition that validates composes into a baseline (the only failure
//! allowed is a placeholder the host leaves unset) whose every path is
//! absolute and free of `.`, `..` and NUL, and whose every destination parses — so nothing
//! accepted at `agent add` can fail or widen later at start.
#![no_main]
use std::collections::BTreeMap;
use std::sync::OnceLock;

use agentd::agents::AgentDef;
use agentd::api::json::parse;
use agentd::enforce::grant::parse_destination;
use agentd::profile::{self, NoProtectedFiles, ProfileDef, ProfileError, Vars};
use libfuzzer_sys::fuzz_target;

fn builtin() -> &'static BTreeMap<String, ProfileDef> {
    static B: OnceLock<BTreeMap<String, ProfileDef>> = OnceLock::new();
    B.get_or_init(|| profile::builtin::all().expect("built-in profiles are valid"))
}

fn vars(def: &AgentDef) -> Vars {
    let s = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
    Vars {
        home: Some("/home/agent".into()),
        install_dir: s(&def.install_dir),
        tmp: s(&def.tmp).unwrap_or_else(|| "/tmp".into()),
        user: def.user.clone(),
        uid: 1000,
        agentctl: Some("/usr/bin/agentctl".into()),
        workspace: s(&def.workspace),
        node: "/usr/bin/node".into(),
        model_endpoint: vec!["127.0.0.1/32:8080".into()],
        dns: vec!["127.0.0.53/32:53".into()],
    }
}

fn check_composed(profiles: &[(&str, &ProfileDef)], extras: &ProfileDef, vars: &Vars, what: &str) {
    match profile::compose(profiles, extras, vars, &NoProtectedFiles) {
        Ok(c) => {
            for p in c.spec.exec.iter().chain(&c.spec.read).chain(&c.spec.write) {
                let s = p.to_str().expect("entries are UTF-8");
                let clean = s.starts_with('/')
                    && !s.split('/').any(|c| c == ".." || c == ".")
                    && !s.contains('\0');
                assert!(clean, "{what}: unclean path {s:?}");
            }
            for d in &c.spec.connect {
                assert!(
                    parse_destination(d).is_ok(),
                    "{what}: bad destination {d:?}"
                );
            }
        }
        Err(ProfileError::Unset { .. }) => {}
        Err(e) => panic!("{what} validated but does not compose: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // The agents API body.
    if let Ok(def) = parse::<AgentDef>(data) {
        let back: AgentDef = serde_json::from_slice(&serde_json::to_vec(&def).unwrap()).unwrap();
        assert_eq!(back, def);
        if def.validate().is_ok() {
            let builtin = builtin();
            let chosen: Vec<(&str, &ProfileDef)> = def
                .profile_names()
                .iter()
                .filter_map(|n| builtin.get_key_value(n.as_str()))
                .map(|(n, p)| (n.as_str(), p))
                .collect();
            check_composed(&chosen, &def.extras(), &vars(&def), "agent definition");
        }
    }
    // A profile file.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = ProfileDef::parse(text, "fuzz.toml") {
        if p.validate("profiles.fuzz").is_ok() {
            let def = AgentDef::new("fuzz", "agent");
            check_composed(&[("fuzz", &p)], &def.extras(), &vars(&def), "profile");
        }
    }
});
