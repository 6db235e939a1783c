//! An agent's baseline = its named profiles + its own extra entries, with
//! placeholders expanded, duplicates removed, and protected files taken out
//! of every write scope.
use std::path::{Path, PathBuf};

use super::{expand::expand_entry, ProfileDef, ProfileError, Vars};
use crate::grant_spec::GrantSpec;

/// Files no baseline may write, whatever its write scopes say (an agent's
/// identity files and start-up scripts: the policy's `[protected]` paths,
/// expanded for the agent by [`expand_protected`]). Composition applies
/// them (see [`Composed`]); the kernel enforces them.
pub trait ProtectedFiles {
    /// Absolute paths (files or directories) protected from writes.
    fn paths(&self) -> Vec<PathBuf>;
}

/// No protected files.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProtectedFiles;

impl ProtectedFiles for NoProtectedFiles {
    fn paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

impl ProtectedFiles for Vec<PathBuf> {
    fn paths(&self) -> Vec<PathBuf> {
        self.clone()
    }
}

/// The policy's `[protected] paths` for one agent: placeholders expanded;
/// an entry whose placeholder has no value for the agent (no workspace, no
/// home, no install directory) does not apply to it. Entries were checked
/// when the policy loaded; one that still fails to expand is left out
/// (logged), never turned into a wider path.
pub fn expand_protected(entries: &[String], vars: &Vars) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.contains("{install_dir}") && vars.install_dir.is_none() {
            continue;
        }
        match expand_entry(e, "write", vars, &format!("protected.paths[{i}]")) {
            Ok(paths) => {
                for p in paths {
                    push_unique(&mut out, PathBuf::from(p));
                }
            }
            Err(err) => tracing::warn!(entry = %e, error = %err, "protected path not expanded"),
        }
    }
    out
}

/// An agent's own additions to its profiles (same entry syntax).
pub type Extras = ProfileDef;

/// The composed baseline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Composed {
    /// What unbound processes of the agent may do.
    pub spec: GrantSpec,
    /// Protected paths lying inside a write scope of `spec`: the write scope
    /// stays, and the kernel carves these out of it (`spec.protected`).
    pub write_exceptions: Vec<PathBuf>,
    /// Write scopes that were inside a protected path and became read-only.
    pub demoted: Vec<PathBuf>,
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// Composes `profiles` (name, definition) and `extras` for one agent.
pub fn compose(
    profiles: &[(&str, &ProfileDef)],
    extras: &Extras,
    vars: &Vars,
    protected: &dyn ProtectedFiles,
) -> Result<Composed, ProfileError> {
    let mut spec = GrantSpec::default();
    let sources = profiles
        .iter()
        .map(|(n, d)| (format!("profiles.{n}"), *d))
        .chain(std::iter::once(("agent".to_string(), extras)));
    for (at, def) in sources {
        for (list, entries) in def.lists() {
            for (i, e) in entries.iter().enumerate() {
                for x in expand_entry(e, list, vars, &format!("{at}.{list}[{i}]"))? {
                    match list {
                        "exec" => push_unique(&mut spec.exec, PathBuf::from(x)),
                        "read" => push_unique(&mut spec.read, PathBuf::from(x)),
                        "write" => push_unique(&mut spec.write, PathBuf::from(x)),
                        _ => push_unique(&mut spec.connect, x),
                    }
                }
            }
        }
    }
    let mut out = Composed::default();
    spec.protected = protected.paths();
    for p in protected.paths() {
        let (inside, rest): (Vec<_>, Vec<_>) =
            spec.write.drain(..).partition(|w| w.starts_with(&p));
        spec.write = rest;
        for w in inside {
            push_unique(&mut spec.read, w.clone());
            out.demoted.push(w);
        }
        if spec.write.iter().any(|w| Path::new(&p).starts_with(w)) {
            out.write_exceptions.push(p);
        }
    }
    out.spec = spec;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Prot(Vec<&'static str>);
    impl ProtectedFiles for Prot {
        fn paths(&self) -> Vec<PathBuf> {
            self.0.iter().map(PathBuf::from).collect()
        }
    }

    fn vars() -> Vars {
        Vars {
            home: Some("/home/a".into()),
            tmp: "/tmp".into(),
            user: "a".into(),
            uid: 7,
            ..Vars::default()
        }
    }

    #[test]
    fn profiles_and_extras_merge_without_duplicates() {
        let p = ProfileDef {
            read: vec!["/usr".into(), "{home}/.cfg".into()],
            write: vec!["{tmp}".into()],
            ..ProfileDef::default()
        };
        let x = ProfileDef {
            read: vec!["/usr".into(), "/srv/data".into()],
            exec: vec!["/usr/bin/python3".into()],
            connect: vec!["127.0.0.1:8080".into()],
            ..ProfileDef::default()
        };
        let c = compose(&[("p", &p)], &x, &vars(), &NoProtectedFiles).unwrap();
        assert_eq!(
            c.spec.read,
            [
                PathBuf::from("/usr"),
                "/home/a/.cfg".into(),
                "/srv/data".into()
            ]
        );
        assert_eq!(c.spec.write, [PathBuf::from("/tmp")]);
        assert_eq!(c.spec.connect, ["127.0.0.1:8080"]);
        assert_eq!((c.spec.ttl_secs, c.spec.uses), (0, 0));
    }

    #[test]
    fn protected_files_override_write_scopes() {
        let p = ProfileDef {
            write: vec!["{home}".into(), "{home}/.bashrc".into()],
            ..ProfileDef::default()
        };
        let c = compose(
            &[("p", &p)],
            &ProfileDef::default(),
            &vars(),
            &Prot(vec!["/home/a/.bashrc"]),
        )
        .unwrap();
        assert_eq!(c.spec.write, [PathBuf::from("/home/a")]);
        assert!(c.spec.read.contains(&PathBuf::from("/home/a/.bashrc")));
        assert_eq!(c.demoted, [PathBuf::from("/home/a/.bashrc")]);
        assert_eq!(c.write_exceptions, [PathBuf::from("/home/a/.bashrc")]);
        assert_eq!(c.spec.protected, [PathBuf::from("/home/a/.bashrc")]);
    }

    #[test]
    fn protected_entries_expand_per_agent_and_unset_ones_do_not_apply() {
        let entries = [
            "{workspace}/SOUL.md".to_string(),
            "{home}/.bashrc".into(),
            "{install_dir}/hooks".into(),
            "/etc/agent/RULES.md".into(),
        ];
        let mut v = vars();
        assert_eq!(
            expand_protected(&entries, &v),
            [
                PathBuf::from("/home/a/.bashrc"),
                "/etc/agent/RULES.md".into()
            ]
        );
        v.workspace = Some("/srv/w".into());
        v.install_dir = Some("/opt/rt".into());
        let p = expand_protected(&entries, &v);
        assert_eq!(
            p,
            [
                PathBuf::from("/srv/w/SOUL.md"),
                "/home/a/.bashrc".into(),
                "/opt/rt/hooks".into(),
                "/etc/agent/RULES.md".into()
            ]
        );
        // Composed with a workspace write scope: the scope stays, the
        // files are carved out of it for the kernel.
        let prof = ProfileDef {
            write: vec!["{workspace}".into()],
            ..ProfileDef::default()
        };
        let c = compose(&[("p", &prof)], &ProfileDef::default(), &v, &p).unwrap();
        assert_eq!(c.spec.write, [PathBuf::from("/srv/w")]);
        assert_eq!(c.write_exceptions, [PathBuf::from("/srv/w/SOUL.md")]);
        assert_eq!(c.spec.protected.len(), 4);
    }

    #[test]
    fn errors_name_the_profile_entry() {
        let p = ProfileDef {
            exec: vec!["{install_dir}/bin/x".into()],
            ..ProfileDef::default()
        };
        let e = compose(
            &[("codex", &p)],
            &ProfileDef::default(),
            &vars(),
            &NoProtectedFiles,
        )
        .unwrap_err();
        assert!(e.to_string().contains("profiles.codex.exec[0]"), "{e}");
    }
}
