//! An agent's baseline = its named profiles + its own extra entries, with
//! placeholders expanded, duplicates removed, and protected files taken out
//! of every write scope.
use std::path::{Path, PathBuf};

use super::{expand::expand_entry, ProfileDef, ProfileError, Vars};
use crate::grant_spec::GrantSpec;

/// Files no baseline may write, whatever its write scopes say (agentd's own
/// state, an agent's start-up scripts). The policy-depth feature supplies
/// the real list; composition already applies it (see [`Composed`]).
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

/// An agent's own additions to its profiles (same entry syntax).
pub type Extras = ProfileDef;

/// The composed baseline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Composed {
    /// What unbound processes of the agent may do.
    pub spec: GrantSpec,
    /// Protected paths lying inside a write scope of `spec`: the write scope
    /// stays (the kernel cannot carve a hole in a scope yet); the protected
    /// files feature enforces these exceptions.
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
