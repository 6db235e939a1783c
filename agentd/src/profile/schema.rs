//! The profile file format (`policies/profiles/<name>.toml`, or
//! `[profiles.NAME]` in a policy). Every list entry may use placeholders
//! (see [`super::expand`]); unknown keys are refused.
use serde::{Deserialize, Serialize};

use super::{expand, ProfileError};

/// One runtime profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDef {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Executables (files, matched by device+inode) the runtime runs.
    #[serde(default)]
    pub exec: Vec<String>,
    /// Path scopes it reads (a directory covers its subtree).
    #[serde(default)]
    pub read: Vec<String>,
    /// Path scopes it writes (implies read).
    #[serde(default)]
    pub write: Vec<String>,
    /// Destinations: `CIDR:PORT`, `[v6CIDR]:PORT`, `unix:/path`, or `{dns}`.
    #[serde(default)]
    pub connect: Vec<String>,
    /// How the runtime is pointed at its model API (documentation for `agent show`).
    #[serde(default)]
    pub model_api: Option<ModelApiInfo>,
}

/// Where a runtime reaches its model, as documented by its profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelApiInfo {
    /// Environment variable that sets the API base URL (`ANTHROPIC_BASE_URL`).
    #[serde(default)]
    pub env: String,
    /// The vendor's upstream `host:port`, for a direct connection.
    #[serde(default)]
    pub upstream: String,
}

impl ProfileDef {
    /// Parses a profile file; `origin` labels errors (a file name).
    pub fn parse(source: &str, origin: &str) -> Result<Self, ProfileError> {
        let def: ProfileDef = toml::from_str(source).map_err(|e| ProfileError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        Ok(def)
    }

    /// Checks every entry: placeholders known, paths absolute and clean,
    /// destinations well-formed. `at` is the profile's location
    /// (`profiles.claude-code`).
    pub fn validate(&self, at: &str) -> Result<(), ProfileError> {
        for (list, entries) in self.lists() {
            for (i, e) in entries.iter().enumerate() {
                let here = format!("{at}.{list}[{i}]");
                expand::check_entry(e, list, &here)?;
            }
        }
        Ok(())
    }

    /// The four lists with their names.
    pub fn lists(&self) -> [(&'static str, &Vec<String>); 4] {
        [
            ("exec", &self.exec),
            ("read", &self.read),
            ("write", &self.write),
            ("connect", &self.connect),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let e = ProfileDef::parse("reed = [\"/x\"]\n", "p.toml").unwrap_err();
        assert_eq!(e.reason_code(), "invalid_profile");
        assert!(e.to_string().contains("reed"), "{e}");
    }

    #[test]
    fn entries_are_validated_with_their_place() {
        let p = ProfileDef::parse("read = [\"/usr\", \"{hoem}/.x\"]\n", "p").unwrap();
        let e = p.validate("profiles.x").unwrap_err();
        assert!(e.to_string().contains("profiles.x.read[1]"), "{e}");
        assert!(e.to_string().contains("{hoem}"), "{e}");
        let p = ProfileDef::parse("write = [\"relative/dir\"]\n", "p").unwrap();
        assert!(p
            .validate("p")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        let p = ProfileDef::parse("connect = [\"10.0.0.1\"]\n", "p").unwrap();
        assert!(p.validate("p").unwrap_err().to_string().contains("PORT"));
        let p = ProfileDef::parse("read = [\"/a/../etc\"]\n", "p").unwrap();
        assert!(p.validate("p").unwrap_err().to_string().contains(".."));
    }
}
