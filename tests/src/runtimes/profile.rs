//! Runtime profiles (`policies/profiles/<name>.toml`): what an agent runtime
//! needs to live, as exec/read/write/connect lists with placeholders, and
//! their expansion into a baseline [`GrantSpec`].
use std::path::{Path, PathBuf};

use agentd::grant_spec::GrantSpec;
use serde::Deserialize;

/// The profiles shipped in `policies/profiles/`, embedded.
pub const PROFILES: &[(&str, &str)] = &[
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

/// Errors loading a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No profile by that name.
    #[error("no runtime profile named {0:?}")]
    Unknown(String),
    /// The TOML did not parse.
    #[error("profile {name}: {source}")]
    Parse {
        /// Profile name.
        name: String,
        /// Parser error.
        source: toml::de::Error,
    },
}

/// One profile as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// One line.
    pub description: String,
    /// Executables.
    #[serde(default)]
    pub exec: Vec<String>,
    /// Read scopes.
    #[serde(default)]
    pub read: Vec<String>,
    /// Write scopes.
    #[serde(default)]
    pub write: Vec<String>,
    /// Connect destinations.
    #[serde(default)]
    pub connect: Vec<String>,
}

/// What the placeholders stand for, for one agent.
#[derive(Debug, Clone)]
pub struct Context {
    /// `{home}`.
    pub home: PathBuf,
    /// `{install_dir}`.
    pub install_dir: PathBuf,
    /// `{tmp}`.
    pub tmp: PathBuf,
    /// `{workspace}`.
    pub workspace: PathBuf,
    /// `{node}`.
    pub node: PathBuf,
    /// `{model_endpoint}` (`CIDR:PORT`).
    pub model_endpoint: String,
    /// `{dns}`: nameserver destinations (`CIDR:53`).
    pub dns: Vec<String>,
}

impl Context {
    /// Nameservers of `/etc/resolv.conf` as connect destinations.
    pub fn resolv_conf_dns() -> Vec<String> {
        std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .map(str::trim)
            .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
            .map(|ip| match ip {
                std::net::IpAddr::V4(v4) => format!("{v4}/32:53"),
                std::net::IpAddr::V6(v6) => format!("[{v6}/128]:53"),
            })
            .collect()
    }

    fn expand(&self, entry: &str) -> Vec<String> {
        if entry == "{dns}" {
            return self.dns.clone();
        }
        let s = entry
            .replace("{home}", &self.home.to_string_lossy())
            .replace("{install_dir}", &self.install_dir.to_string_lossy())
            .replace("{tmp}", &self.tmp.to_string_lossy())
            .replace("{workspace}", &self.workspace.to_string_lossy())
            .replace("{node}", &self.node.to_string_lossy())
            .replace("{model_endpoint}", &self.model_endpoint);
        vec![s]
    }
}

/// Loads an embedded profile by name.
pub fn load(name: &str) -> Result<Profile, ProfileError> {
    let (_, text) = PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ProfileError::Unknown(name.into()))?;
    toml::from_str(text).map_err(|source| ProfileError::Parse {
        name: name.into(),
        source,
    })
}

/// The agent baseline for `profiles` (plus `generic` and agentd's default
/// baseline): placeholders expanded, paths that do not exist dropped.
pub fn baseline(profiles: &[&str], ctx: &Context) -> Result<GrantSpec, ProfileError> {
    let mut spec = agentd::enforce::default_baseline();
    let mut names = vec!["generic"];
    names.extend(profiles.iter().copied().filter(|n| *n != "generic"));
    for name in names {
        let p = load(name)?;
        let paths = |list: &[String]| -> Vec<PathBuf> {
            list.iter()
                .flat_map(|e| ctx.expand(e))
                .map(PathBuf::from)
                .filter(|p| Path::new(p).exists())
                .collect()
        };
        spec.exec.extend(paths(&p.exec));
        spec.read.extend(paths(&p.read));
        spec.write.extend(paths(&p.write));
        spec.connect
            .extend(p.connect.iter().flat_map(|e| ctx.expand(e)));
    }
    for list in [&mut spec.exec, &mut spec.read, &mut spec.write] {
        list.sort();
        list.dedup();
    }
    spec.connect.sort();
    spec.connect.dedup();
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            home: "/tmp".into(),
            install_dir: "/usr".into(),
            tmp: "/tmp".into(),
            workspace: "/tmp".into(),
            node: "/usr/bin/node".into(),
            model_endpoint: "127.0.0.1/32:9999".into(),
            dns: vec!["10.0.0.1/32:53".into()],
        }
    }

    #[test]
    fn every_shipped_profile_parses() {
        for (name, _) in PROFILES {
            let p = load(name).unwrap();
            assert!(!p.description.is_empty(), "{name}");
        }
    }

    #[test]
    fn placeholders_expand_and_missing_paths_drop() {
        let spec = baseline(&["claude-code"], &ctx()).unwrap();
        assert!(spec.connect.contains(&"127.0.0.1/32:9999".to_string()));
        assert!(spec.connect.contains(&"10.0.0.1/32:53".to_string()));
        assert!(spec.write.contains(&PathBuf::from("/tmp")));
        assert!(spec.exec.iter().all(|p| p.exists()));
        assert!(!spec.read.iter().any(|p| p.to_string_lossy().contains('{')));
    }

    #[test]
    fn unknown_profile_is_an_error() {
        assert!(matches!(load("nope"), Err(ProfileError::Unknown(_))));
    }
}
