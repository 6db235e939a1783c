//! Placeholders in profile entries and their expansion for one agent.
//!
//! | placeholder | value |
//! |---|---|
//! | `{home}` | the agent user's home directory (from the password database) |
//! | `{install_dir}` | the runtime's install directory (the agent's `install_dir`; required where used) |
//! | `{tmp}` | the agent's temp directory (`/tmp` unless set) |
//! | `{workspace}` | the directory the runtime works in (the agent's `workspace`) |
//! | `{node}` | the Node.js binary (`node` on the daemon's PATH, else `/usr/bin/node`) |
//! | `{user}` / `{uid}` | the agent user's name / numeric id |
//! | `{agentctl}` | the `agentctl` binary next to `agentd` (hooks run it) |
//! | `{model_endpoint}` | a whole `connect` entry: the agent's `model_api` (none if unset) |
//! | `{dns}` | a whole `connect` entry: port 53 of each `/etc/resolv.conf` nameserver |
//!
//! An entry whose `{home}`, `{workspace}` or `{agentctl}` has no value for
//! the agent is left out; one whose `{install_dir}` has none is refused
//! (the runtime could not start without it).
use std::path::{Component, Path};

use super::ProfileError;
use crate::grant_spec::parse_destination;

/// Every placeholder a profile entry may use.
pub const PLACEHOLDERS: &[&str] = &[
    "home",
    "install_dir",
    "tmp",
    "workspace",
    "node",
    "user",
    "uid",
    "agentctl",
    "model_endpoint",
    "dns",
];

/// Placeholders whose value is a path (a directory or a binary).
const PATH_PLACEHOLDERS: &[&str] = &[
    "home",
    "install_dir",
    "tmp",
    "workspace",
    "node",
    "agentctl",
];

/// Placeholders that stand for whole `connect` entries (zero or more).
const WHOLE_ENTRIES: &[&str] = &["dns", "model_endpoint"];

/// The values of the placeholders for one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// Home directory of the agent user.
    pub home: Option<String>,
    /// The runtime's install directory.
    pub install_dir: Option<String>,
    /// Temp directory.
    pub tmp: String,
    /// Agent user name.
    pub user: String,
    /// Agent user id.
    pub uid: u32,
    /// Path of agentctl, if found.
    pub agentctl: Option<String>,
    /// The runtime's working directory.
    pub workspace: Option<String>,
    /// The Node.js binary.
    pub node: String,
    /// Model API destinations (`IP/32:PORT`).
    pub model_endpoint: Vec<String>,
    /// Resolver destinations (`IP/32:53`).
    pub dns: Vec<String>,
}

impl Vars {
    /// Values that make every placeholder expand (for validation).
    fn dummy() -> Self {
        Vars {
            home: Some("/home/u".into()),
            install_dir: Some("/opt/rt".into()),
            tmp: "/tmp".into(),
            user: "u".into(),
            uid: 1000,
            agentctl: Some("/usr/bin/agentctl".into()),
            workspace: Some("/srv/w".into()),
            node: "/usr/bin/node".into(),
            model_endpoint: vec!["127.0.0.1/32:8080".into()],
            dns: vec!["127.0.0.53/32:53".into()],
        }
    }
}

/// Splits `entry` into literal text and placeholder names.
fn tokens<'a>(entry: &'a str, at: &str) -> Result<Vec<(bool, &'a str)>, ProfileError> {
    let mut out = Vec::new();
    let mut rest = entry;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push((false, &rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| ProfileError::Invalid {
            at: at.into(),
            message: format!("`{entry}`: `{{` without a closing `}}`"),
        })?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(ProfileError::Invalid {
                at: at.into(),
                message: format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        out.push((true, name));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(ProfileError::Invalid {
            at: at.into(),
            message: format!("`{entry}`: `}}` without an opening `{{`"),
        });
    }
    if !rest.is_empty() {
        out.push((false, rest));
    }
    Ok(out)
}

/// Checks one entry of list `list` (`exec`, `read`, `write`, `connect`).
pub fn check_entry(entry: &str, list: &str, at: &str) -> Result<(), ProfileError> {
    expand_entry(entry, list, &Vars::dummy(), at).map(|_| ())
}

/// Expands one entry for an agent; `{dns}` may give zero or several entries.
pub fn expand_entry(
    entry: &str,
    list: &str,
    vars: &Vars,
    at: &str,
) -> Result<Vec<String>, ProfileError> {
    let toks = tokens(entry, at)?;
    check_directory_joins(&toks, entry, at)?;
    if let Some(whole) = whole_entries(&toks, list, vars, at)? {
        return Ok(whole);
    }
    // An unset optional placeholder (no home, workspace or agentctl) drops
    // the entry rather than leaving a path with a hole in it.
    let Some(s) = substitute(&toks, vars, at)? else {
        return Ok(vec![]);
    };
    if list == "connect" {
        parse_destination(&s).map_err(|e| invalid(at, format!("`{entry}`: {e}")))?;
    } else {
        check_path(&s).map_err(|m| invalid(at, format!("`{entry}`: {m}")))?;
    }
    Ok(vec![s])
}

fn invalid(at: &str, message: String) -> ProfileError {
    ProfileError::Invalid {
        at: at.into(),
        message,
    }
}

/// A directory placeholder joined to more name (`{workspace}./x`,
/// `{tmp}foo`) would make the path depend on how the value is spelt (a
/// trailing `/` turns `./x` into a `.` component): what follows one must
/// start a new component.
fn check_directory_joins(toks: &[(bool, &str)], entry: &str, at: &str) -> Result<(), ProfileError> {
    for pair in toks.windows(2) {
        if let [(true, name), (false, text)] = pair {
            if PATH_PLACEHOLDERS.contains(name) && !text.starts_with('/') {
                return Err(invalid(
                    at,
                    format!("`{entry}`: {{{name}}} must be followed by `/` or end the entry"),
                ));
            }
        }
    }
    Ok(())
}

/// `{dns}` and `{model_endpoint}` stand for whole `connect` entries: their
/// values, when the entry is one of them alone; `None` for any other entry.
fn whole_entries(
    toks: &[(bool, &str)],
    list: &str,
    vars: &Vars,
    at: &str,
) -> Result<Option<Vec<String>>, ProfileError> {
    for whole in WHOLE_ENTRIES {
        if toks.contains(&(true, whole)) {
            if list != "connect" || toks.len() != 1 {
                return Err(invalid(
                    at,
                    format!(
                        "{{{whole}}} stands for whole `connect` entries; write it alone in `connect`"
                    ),
                ));
            }
            return Ok(Some(if whole == &"dns" {
                vars.dns.clone()
            } else {
                vars.model_endpoint.clone()
            }));
        }
    }
    Ok(None)
}

/// The entry with every placeholder replaced by its value; `None` when an
/// optional one (home, workspace, agentctl) is unset for this agent.
fn substitute(
    toks: &[(bool, &str)],
    vars: &Vars,
    at: &str,
) -> Result<Option<String>, ProfileError> {
    let mut s = String::new();
    for &(is_var, text) in toks {
        if !is_var {
            s.push_str(text);
            continue;
        }
        let unset = |hint: &str| ProfileError::Unset {
            at: at.into(),
            placeholder: text.into(),
            hint: hint.into(),
        };
        match text {
            "home" => match vars.home.as_deref() {
                Some(h) => s.push_str(h),
                None => return Ok(None),
            },
            "workspace" => match vars.workspace.as_deref() {
                Some(w) => s.push_str(w),
                None => return Ok(None),
            },
            "node" => s.push_str(&vars.node),
            "install_dir" => s.push_str(vars.install_dir.as_deref().ok_or_else(|| {
                unset("set the agent's install_dir (agentctl agent add NAME --install-dir DIR)")
            })?),
            "tmp" => s.push_str(&vars.tmp),
            "user" => s.push_str(&vars.user),
            "uid" => s.push_str(&vars.uid.to_string()),
            "agentctl" => match vars.agentctl.as_deref() {
                Some(a) => s.push_str(a),
                None => return Ok(None),
            },
            _ => unreachable!("tokens() admits only known placeholders"),
        }
    }
    Ok(Some(s))
}

/// An expanded path must be absolute and clean: `..` and `.` would make a
/// scope mean something other than it reads.
pub fn check_path(s: &str) -> Result<(), String> {
    let p = Path::new(s);
    if !p.is_absolute() {
        return Err("paths must be absolute (start with `/` or a path placeholder)".into());
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || s.contains("/./")
        || s.ends_with("/.")
    {
        return Err("`..` and `.` are not allowed in paths".into());
    }
    if s.contains('\0') {
        return Err("NUL in path".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            home: Some("/home/agent".into()),
            install_dir: None,
            tmp: "/tmp".into(),
            user: "agent".into(),
            uid: 1001,
            agentctl: Some("/usr/bin/agentctl".into()),
            workspace: None,
            node: "/usr/bin/node".into(),
            model_endpoint: vec![],
            dns: vec!["10.0.0.2/32:53".into(), "10.0.0.3/32:53".into()],
        }
    }

    #[test]
    fn placeholders_expand() {
        let v = vars();
        assert_eq!(
            expand_entry("{home}/.claude", "write", &v, "x").unwrap(),
            ["/home/agent/.claude"]
        );
        assert_eq!(
            expand_entry("{tmp}/claude-{uid}", "write", &v, "x").unwrap(),
            ["/tmp/claude-1001"]
        );
        assert_eq!(expand_entry("{dns}", "connect", &v, "x").unwrap().len(), 2);
        assert_eq!(
            expand_entry("127.0.0.1:8080", "connect", &v, "x").unwrap(),
            ["127.0.0.1:8080"]
        );
    }

    #[test]
    fn unset_and_misused_placeholders_are_refused() {
        let v = vars();
        let e =
            expand_entry("{install_dir}/bin/claude", "exec", &v, "profiles.c.exec[0]").unwrap_err();
        assert_eq!(e.reason_code(), "profile_placeholder_unset");
        assert!(e.to_string().contains("profiles.c.exec[0]"), "{e}");
        assert!(expand_entry("{dns}", "read", &v, "x").is_err());
        // Optional placeholders leave their entry out; whole entries may be none.
        assert!(expand_entry("{workspace}/x", "read", &v, "x")
            .unwrap()
            .is_empty());
        assert!(expand_entry("{model_endpoint}", "connect", &v, "x")
            .unwrap()
            .is_empty());
        assert!(expand_entry("{node}", "exec", &v, "x").unwrap() == ["/usr/bin/node"]);
        assert!(expand_entry("x{dns}", "connect", &v, "x").is_err());
        assert!(expand_entry("{home", "read", &v, "x").is_err());
        assert!(expand_entry("/a}", "read", &v, "x").is_err());
        assert!(expand_entry("{home}/./x", "read", &v, "x").is_err());
    }
}
