//! The profiles shipped with agentd, embedded from `policies/profiles/`.
//! A policy's `[profiles.NAME]` replaces a built-in profile of that name.
use std::collections::BTreeMap;

use super::{ProfileDef, ProfileError};

/// (name, TOML source) of every built-in profile.
pub const SOURCES: &[(&str, &str)] = &[
    (
        "generic",
        include_str!("../../../policies/profiles/generic.toml"),
    ),
    (
        "claude-code",
        include_str!("../../../policies/profiles/claude-code.toml"),
    ),
    (
        "codex",
        include_str!("../../../policies/profiles/codex.toml"),
    ),
    (
        "gemini-cli",
        include_str!("../../../policies/profiles/gemini-cli.toml"),
    ),
];

/// The built-in profiles, parsed and validated.
pub fn all() -> Result<BTreeMap<String, ProfileDef>, ProfileError> {
    let mut out = BTreeMap::new();
    for (name, src) in SOURCES {
        let def = ProfileDef::parse(src, &format!("policies/profiles/{name}.toml"))?;
        def.validate(&format!("profiles.{name}"))?;
        out.insert((*name).to_string(), def);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_profile_parses_and_validates() {
        let all = super::all().unwrap();
        for n in ["generic", "claude-code", "codex", "gemini-cli"] {
            assert!(all.contains_key(n), "{n}");
        }
    }
}
