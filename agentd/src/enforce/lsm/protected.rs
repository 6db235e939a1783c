//! Turns an agent's protected paths and a call's protected writes into
//! the lsm backend's map entries (`PROTECTED_INODES`, `PROTECTED_WRITES`):
//! each protected path becomes its device+inode if it exists (a hard link
//! shares it) and its name in its directory if that exists (so a missing
//! one cannot be created, and a replaced one stays protected); each
//! directory above one is marked as holding it (so it cannot be renamed or
//! removed to put another file in its place).
use std::{
    collections::BTreeMap,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use agentd_common::{
    lsm::{
        pending_scope_id, protected_name_hash, protected_name_ino, protected_scope_id,
        ProtectedWrite, ScopeKey, PROTECTED_ANY, PROTECTED_HOLDER, PROTECTED_SELF,
    },
    FileId,
};

use crate::enforce::grant::{file_id, KernelGrant};

/// Device+inode of `path` (following symlinks, as the hooks see the file).
fn stat(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| file_id(&m))
}

/// The stand-in id of `path`'s name in its directory, as the hooks compute
/// it from a dentry (`protected_name_ino`); `None` when the directory does
/// not exist.
pub fn name_id(path: &Path) -> Option<FileId> {
    let dir = stat(path.parent()?)?;
    let hash = protected_name_hash(path.file_name()?.as_bytes());
    Some(FileId {
        dev: dir.dev,
        ino: protected_name_ino(dir.ino, hash),
    })
}

/// `PROTECTED_INODES` entries for agent `agent_id` whose protected paths
/// (real paths, as `grant::Protected` resolves them) are `paths`: the
/// marker that the agent has any, `PROTECTED_SELF` on each path that
/// exists and on each path's name in its directory, `PROTECTED_HOLDER` on
/// every existing directory above one. A path whose directory does not
/// exist either is protected only by that: its nearest existing ancestor
/// holds it (see docs/lsm.md "Protected files").
pub fn inode_entries(agent_id: u32, paths: &[PathBuf]) -> Vec<(ScopeKey, u8)> {
    let mut flags: BTreeMap<(u64, u64), u8> = BTreeMap::new();
    if paths.is_empty() {
        return Vec::new();
    }
    flags.insert((0, 0), PROTECTED_ANY);
    for p in paths {
        for id in stat(p).into_iter().chain(name_id(p)) {
            *flags.entry((id.dev, id.ino)).or_default() |= PROTECTED_SELF;
        }
        for dir in p.ancestors().skip(1) {
            if let Some(id) = stat(dir) {
                *flags.entry((id.dev, id.ino)).or_default() |= PROTECTED_HOLDER;
            }
        }
    }
    let call_id = protected_scope_id(agent_id);
    flags
        .into_iter()
        .map(|((dev, ino), f)| (ScopeKey { call_id, dev, ino }, f))
        .collect()
}

/// Device+inode of each existing protected file `grant` may write, and
/// each one's name in its directory (so the call may create it).
pub fn write_files(grant: &KernelGrant) -> Vec<FileId> {
    let mut out: Vec<FileId> = grant
        .protected_write
        .iter()
        .flat_map(|p| stat(p).into_iter().chain(name_id(p)))
        .collect();
    out.sort_by_key(|f| (f.dev, f.ino));
    out.dedup();
    out
}

/// `PROTECTED_WRITES` entries of call `grant` (under its handle).
pub fn write_entries(grant: &KernelGrant) -> Vec<(ScopeKey, ProtectedWrite)> {
    write_files(grant)
        .into_iter()
        .map(|f| {
            (
                ScopeKey {
                    call_id: grant.handle,
                    dev: f.dev,
                    ino: f.ino,
                },
                ProtectedWrite {
                    expires_at_ns: grant.expires_at_ns,
                    slots: 0,
                    _pad: 0,
                },
            )
        })
        .collect()
}

/// The `PROTECTED_WRITES` keys of agent `agent_id`'s pending grant `grant`.
pub fn pending_keys(agent_id: u32, grant: &KernelGrant) -> Vec<ScopeKey> {
    write_files(grant)
        .into_iter()
        .map(|f| ScopeKey {
            call_id: pending_scope_id(agent_id),
            dev: f.dev,
            ino: f.ino,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant_spec::GrantSpec;

    fn id(p: &std::path::Path) -> (u64, u64) {
        let f = stat(p).unwrap();
        (f.dev, f.ino)
    }

    #[test]
    fn protected_files_their_directories_and_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let soul = ws.join("SOUL.md");
        std::fs::write(&soul, "be kind\n").unwrap();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        let missing = ws.join("RULES.md");
        let e = inode_entries(3, &[soul.clone(), hooks.clone(), missing]);
        let deep = inode_entries(3, &[dir.path().join("no/such/file")]);
        assert!(
            deep.iter().all(|(_, f)| *f & PROTECTED_SELF == 0),
            "no name without its directory, only holders: {deep:?}"
        );
        let get = |k: (u64, u64)| {
            e.iter()
                .find(|(key, _)| (key.dev, key.ino) == k)
                .map(|(_, f)| *f)
        };
        assert!(e.iter().all(|(k, _)| k.call_id == protected_scope_id(3)));
        assert_eq!(get((0, 0)), Some(PROTECTED_ANY), "the agent has some");
        assert_eq!(get(id(&soul)), Some(PROTECTED_SELF));
        assert_eq!(get(id(&hooks)), Some(PROTECTED_SELF), "a directory too");
        // By name too, the missing file included: the hooks hash the name
        // of the dentry in the workspace directory.
        let ws_ino = id(&ws).1;
        let by_name = |n: &str| {
            let ino = protected_name_ino(ws_ino, protected_name_hash(n.as_bytes()));
            get((id(&ws).0, ino))
        };
        assert_eq!(by_name("SOUL.md"), Some(PROTECTED_SELF));
        assert_eq!(by_name("RULES.md"), Some(PROTECTED_SELF), "missing file");
        assert_eq!(by_name("notes.md"), None);
        // The workspace holds SOUL.md (and the missing RULES.md): not
        // protected itself, but not to be moved away or removed.
        assert_eq!(get(id(&ws)), Some(PROTECTED_HOLDER));
        assert_eq!(get(id(dir.path())), Some(PROTECTED_HOLDER));
        assert_eq!(get(id(std::path::Path::new("/"))), Some(PROTECTED_HOLDER));
        // A hard link is the same inode: nothing to add for it.
        let link = dir.path().join("link");
        std::fs::hard_link(&soul, &link).unwrap();
        assert_eq!(get(id(&link)), Some(PROTECTED_SELF));
        assert!(inode_entries(3, &[]).is_empty(), "no marker without paths");
    }

    #[test]
    fn protected_write_entries_per_call_and_per_pending_slot() {
        let dir = tempfile::tempdir().unwrap();
        let soul = dir.path().join("SOUL.md");
        std::fs::write(&soul, "x").unwrap();
        let spec = GrantSpec {
            write: vec![dir.path().to_owned()],
            protected_write: vec![soul.clone(), dir.path().join("missing.md")],
            ttl_secs: 60,
            ..Default::default()
        };
        let g = KernelGrant::from_spec(&spec, 12, 1_000).unwrap();
        let e = write_entries(&g);
        // SOUL.md by inode and by name; the missing file by name only.
        let want = [
            id(&soul),
            name_id(&soul).map(|f| (f.dev, f.ino)).unwrap(),
            name_id(&dir.path().join("missing.md"))
                .map(|f| (f.dev, f.ino))
                .unwrap(),
        ];
        assert_eq!(e.len(), 3, "{e:?}");
        for w in want {
            assert!(e.iter().any(|(k, _)| (k.dev, k.ino) == w), "{w:?} in {e:?}");
        }
        assert!(e
            .iter()
            .all(|(k, v)| k.call_id == 12 && v.expires_at_ns == g.expires_at_ns && v.slots == 0));
        assert_ne!(e[0].1.expires_at_ns, 0);
        let k = pending_keys(5, &g);
        assert_eq!(k.len(), 3);
        assert!(k.iter().all(|k| k.call_id == pending_scope_id(5)));
        assert!(k.iter().any(|k| (k.dev, k.ino) == id(&soul)));
        let plain = KernelGrant::from_spec(&GrantSpec::default(), 13, 0).unwrap();
        assert!(write_entries(&plain).is_empty());
    }
}
