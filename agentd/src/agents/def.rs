//! One agent's settings as an administrator writes them (`agentctl agent
//! add`, `PUT /v1/agent-settings/NAME`): user, mode, profiles and extra
//! entries for its baseline, where it reaches its model API, the driver's
//! time limit. Pure validation; composition needs the profiles
//! ([`crate::profile`]).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::AgentsError;
use crate::enforce::{agent_cgroup, Mode};

/// Default time limit of one driver run, seconds.
pub const DEFAULT_TIME_LIMIT_SECS: u64 = 600;
/// Longest time limit of one driver run, seconds.
pub const MAX_TIME_LIMIT_SECS: u64 = 86_400;

/// One agent's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// Agent name (its cgroup under the slice).
    pub name: String,
    /// Unprivileged user the agent runs as.
    pub user: String,
    /// enforce or audit-only.
    #[serde(default)]
    pub mode: Mode,
    /// Profiles its baseline is built from, in order (empty = `generic`).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// The runtime's install directory (`{install_dir}`).
    #[serde(default)]
    pub install_dir: Option<PathBuf>,
    /// Temp directory (`{tmp}`; default `/tmp`).
    #[serde(default)]
    pub tmp: Option<PathBuf>,
    /// The runtime's working directory (`{workspace}`).
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    /// Where the runtime reaches its model API: a direct upstream
    /// `IP:PORT` / `host:PORT` (resolved when the baseline is built), or
    /// `proxy` for agentd's forward proxy.
    #[serde(default)]
    pub model_api: Option<String>,
    /// Extra executables.
    #[serde(default)]
    pub exec: Vec<String>,
    /// Extra read scopes.
    #[serde(default)]
    pub read: Vec<String>,
    /// Extra write scopes.
    #[serde(default)]
    pub write: Vec<String>,
    /// Extra connect destinations.
    #[serde(default)]
    pub connect: Vec<String>,
    /// The driver's time limit per message, seconds.
    #[serde(default)]
    pub time_limit_secs: Option<u64>,
    /// Run as a uid another configured agent also runs as. Off by default:
    /// agents sharing a uid may signal, trace and read each other's files
    /// wherever the kernel layer does not stand between them.
    #[serde(default)]
    pub share_user: bool,
}

/// Where the model API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelApi {
    /// agentd's forward proxy.
    Proxy,
    /// A direct upstream.
    Direct {
        /// Host name or IP literal.
        host: String,
        /// Port.
        port: u16,
    },
}

impl AgentDef {
    /// A definition with defaults for `name`, running as `user`.
    pub fn new(name: &str, user: &str) -> Self {
        AgentDef {
            name: name.into(),
            user: user.into(),
            mode: Mode::Enforce,
            profiles: vec![],
            install_dir: None,
            tmp: None,
            workspace: None,
            model_api: None,
            exec: vec![],
            read: vec![],
            write: vec![],
            connect: vec![],
            time_limit_secs: None,
            share_user: false,
        }
    }

    /// The profiles to compose (`generic` when none is named).
    pub fn profile_names(&self) -> Vec<String> {
        if self.profiles.is_empty() {
            vec!["generic".into()]
        } else {
            self.profiles.clone()
        }
    }

    /// The driver's time limit.
    pub fn time_limit(&self) -> u64 {
        self.time_limit_secs.unwrap_or(DEFAULT_TIME_LIMIT_SECS)
    }

    /// Parses `model_api`.
    pub fn model_api(&self) -> Result<Option<ModelApi>, AgentsError> {
        let Some(m) = self.model_api.as_deref() else {
            return Ok(None);
        };
        if m == "proxy" {
            return Ok(Some(ModelApi::Proxy));
        }
        let bad = |why: &str| AgentsError::Invalid {
            agent: self.name.clone(),
            field: "model_api".into(),
            message: format!("`{m}`: {why} (write HOST:PORT, [IPv6]:PORT or proxy)"),
        };
        let (host, port) = if let Some(rest) = m.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| bad("missing `]:PORT`"))?;
            (h, p)
        } else {
            m.rsplit_once(':').ok_or_else(|| bad("missing `:PORT`"))?
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("port must be 1..=65535"))?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
        if !host_ok {
            return Err(bad("bad host"));
        }
        Ok(Some(ModelApi::Direct {
            host: host.into(),
            port,
        }))
    }

    /// Checks everything that needs no profile or system lookup.
    pub fn validate(&self) -> Result<(), AgentsError> {
        let invalid = |field: &str, message: String| AgentsError::Invalid {
            agent: self.name.clone(),
            field: field.into(),
            message,
        };
        if !agent_cgroup::valid_name(&self.name) {
            return Err(invalid(
                "name",
                "use 1-64 of [A-Za-z0-9_.-], not starting with `.`".into(),
            ));
        }
        if self.user.is_empty() || self.user == "root" {
            return Err(invalid(
                "user",
                "agents run as an unprivileged user (not root)".into(),
            ));
        }
        for (field, p) in [
            ("install_dir", &self.install_dir),
            ("tmp", &self.tmp),
            ("workspace", &self.workspace),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(invalid(field, format!("{} must be absolute", p.display())));
                }
                // The same cleanliness composition demands of every scope
                // built from it (no `.` or `..`).
                crate::profile::expand::check_path(&p.to_string_lossy())
                    .map_err(|m| invalid(field, format!("{}: {m}", p.display())))?;
            }
        }
        if let Some(t) = self.time_limit_secs {
            if t == 0 || t > MAX_TIME_LIMIT_SECS {
                return Err(invalid(
                    "time_limit_secs",
                    format!("must be 1..={MAX_TIME_LIMIT_SECS}"),
                ));
            }
        }
        let mut seen = Vec::new();
        for p in &self.profiles {
            if seen.contains(&p) {
                return Err(invalid("profiles", format!("`{p}` is named twice")));
            }
            seen.push(p);
        }
        self.model_api()?;
        self.extras()
            .validate("agent")
            .map_err(|e| invalid("baseline", e.to_string()))?;
        Ok(())
    }

    /// The agent's own entries, as a profile.
    pub fn extras(&self) -> crate::profile::ProfileDef {
        crate::profile::ProfileDef {
            description: String::new(),
            exec: self.exec.clone(),
            read: self.read.clone(),
            write: self.write.clone(),
            connect: self.connect.clone(),
            model_api: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_api_forms() {
        let mut d = AgentDef::new("a", "agentd-agent");
        d.model_api = Some("127.0.0.1:8080".into());
        assert_eq!(
            d.model_api().unwrap(),
            Some(ModelApi::Direct {
                host: "127.0.0.1".into(),
                port: 8080
            })
        );
        d.model_api = Some("[::1]:443".into());
        assert!(matches!(
            d.model_api().unwrap(),
            Some(ModelApi::Direct { port: 443, .. })
        ));
        d.model_api = Some("proxy".into());
        assert_eq!(d.model_api().unwrap(), Some(ModelApi::Proxy));
        for bad in ["api.example.com", "h:0", "h:x", ":80", "a b:80"] {
            d.model_api = Some(bad.into());
            assert!(d.model_api().is_err(), "{bad}");
        }
    }

    #[test]
    fn unclean_directories_are_refused_before_composition() {
        // Found by the agent_def fuzz target: `/srv//./work` validated, then
        // failed to compose.
        let mut d = AgentDef::new("a", "agentd-agent");
        for bad in ["/srv//./work", "/srv/../etc", "/srv/."] {
            d.workspace = Some(bad.into());
            let e = d.validate().unwrap_err().to_string();
            assert!(e.contains("workspace"), "{bad}: {e}");
        }
        d.workspace = Some("/srv/work".into());
        d.validate().unwrap();
    }

    #[test]
    fn a_directory_placeholder_glued_to_more_name_is_refused() {
        // Found by the agent_def fuzz target: with workspace `/s//`,
        // `{workspace}./d` validated, then composed to `/s//./d` and failed.
        let mut d = AgentDef::new("a", "agentd-agent");
        d.workspace = Some("/s//".into());
        for bad in ["{workspace}./d", "{tmp}x", "{home}.cache"] {
            d.read = vec![bad.into()];
            let e = d.validate().unwrap_err().to_string();
            assert!(
                e.contains("agent.read[0]") && e.contains("must be followed by `/`"),
                "{bad}: {e}"
            );
        }
        // The control: the same directories joined with `/` are fine.
        d.read = vec![
            "{workspace}/d".into(),
            "{tmp}/x".into(),
            "{home}/.cache".into(),
        ];
        d.validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let mut d = AgentDef::new("../x", "u");
        assert!(d.validate().unwrap_err().to_string().contains("name"));
        d.name = "ok".into();
        d.user = "root".into();
        assert!(d.validate().unwrap_err().to_string().contains("user"));
        d.user = "u".into();
        d.read = vec!["{nope}/x".into()];
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains("agent.read[0]") && e.contains("{nope}"), "{e}");
        d.read = vec![];
        d.time_limit_secs = Some(0);
        assert!(d.validate().is_err());
    }
}
