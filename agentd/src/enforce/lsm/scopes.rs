//! Turns a [`KernelGrant`]'s read/write scopes and `unix:` destinations into
//! the lsm backend's map entries: scopes become device+inode keys of the
//! directories (or files) they name, unix destinations a hash of the path.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use agentd_common::{
    lsm::{unix_path_hash, ScopeKey, ScopeRule, UnixKey, ACCESS_READ, ACCESS_WRITE},
    GrantExpiry,
};

use crate::enforce::grant::{file_id, KernelGrant};

/// Where a scope path points for the hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeTarget {
    /// Stat this path.
    Path(PathBuf),
    /// Not expressible by device+inode; the reason is logged.
    Skip(&'static str),
}

/// Maps a scope path to what gets stat()ed. `/proc/self` means "the asking
/// process's own entry", which has no fixed inode: it becomes procfs as a
/// whole (other processes' sensitive entries stay behind the ptrace hook).
pub fn scope_target(path: &Path) -> ScopeTarget {
    if path == Path::new("/proc/self") {
        return ScopeTarget::Path("/proc".into());
    }
    if path.starts_with("/proc/self") {
        return ScopeTarget::Skip("proc_self_subpath_unsupported");
    }
    ScopeTarget::Path(path.to_owned())
}

/// One scope that could not be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The scope as granted.
    pub path: PathBuf,
    /// Stable reason code.
    pub reason: &'static str,
}

/// Scope entries for `grant` (read scopes, and write scopes which imply
/// read), merged per inode. Paths that do not exist are skipped: a scope is
/// an existing directory or file.
pub fn scope_entries(grant: &KernelGrant) -> (Vec<(ScopeKey, ScopeRule)>, Vec<Skipped>) {
    let mut merged: BTreeMap<(u64, u64), u8> = BTreeMap::new();
    let mut skipped = Vec::new();
    let scopes = grant
        .read
        .iter()
        .map(|p| (p, ACCESS_READ))
        .chain(grant.write.iter().map(|p| (p, ACCESS_READ | ACCESS_WRITE)));
    for (path, access) in scopes {
        let target = match scope_target(path) {
            ScopeTarget::Path(t) => t,
            ScopeTarget::Skip(reason) => {
                skipped.push(Skipped {
                    path: path.clone(),
                    reason,
                });
                continue;
            }
        };
        match std::fs::metadata(&target) {
            Ok(meta) => {
                let id = file_id(&meta);
                *merged.entry((id.dev, id.ino)).or_default() |= access;
            }
            Err(_) => skipped.push(Skipped {
                path: path.clone(),
                reason: "scope_path_missing",
            }),
        }
    }
    let rule = |access| ScopeRule {
        expires_at_ns: grant.expires_at_ns,
        access,
        _pad: [0; 7],
    };
    let entries = merged
        .into_iter()
        .map(|((dev, ino), access)| {
            (
                ScopeKey {
                    call_id: grant.handle,
                    dev,
                    ino,
                },
                rule(access),
            )
        })
        .collect();
    (entries, skipped)
}

/// The hash the `socket_connect` hook computes for a `unix:` destination:
/// `unix:/path` (filesystem) or `unix:@name` (abstract).
pub fn unix_hash(dest: &str) -> Option<u64> {
    let addr = dest.strip_prefix("unix:")?;
    (!addr.is_empty()).then(|| unix_path_hash(addr.as_bytes()))
}

/// Unix-socket entries for `grant` plus `extra` socket paths.
pub fn unix_entries(grant: &KernelGrant, extra: &[String]) -> Vec<(UnixKey, GrantExpiry)> {
    grant
        .spec
        .connect
        .iter()
        .filter_map(|d| unix_hash(d))
        .chain(extra.iter().map(|p| unix_path_hash(p.as_bytes())))
        .map(|path_hash| {
            (
                UnixKey {
                    call_id: grant.handle,
                    path_hash,
                },
                GrantExpiry {
                    expires_at_ns: grant.expires_at_ns,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant_spec::GrantSpec;

    fn grant(read: &[&str], write: &[&str], connect: &[&str]) -> KernelGrant {
        let spec = GrantSpec {
            read: read.iter().map(PathBuf::from).collect(),
            write: write.iter().map(PathBuf::from).collect(),
            connect: connect.iter().map(|s| s.to_string()).collect(),
            ttl_secs: 0,
            ..Default::default()
        };
        KernelGrant::from_spec(&spec, 9, 0).expect("grant")
    }

    #[test]
    fn proc_self_maps_to_procfs_and_subpaths_are_skipped() {
        assert_eq!(
            scope_target(Path::new("/proc/self")),
            ScopeTarget::Path("/proc".into())
        );
        assert_eq!(
            scope_target(Path::new("/proc/self/status")),
            ScopeTarget::Skip("proc_self_subpath_unsupported")
        );
        assert_eq!(
            scope_target(Path::new("/usr")),
            ScopeTarget::Path("/usr".into())
        );
    }

    #[test]
    fn write_implies_read_and_same_inode_merges() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let g = grant(&[&d], &[&d], &[]);
        let (entries, skipped) = scope_entries(&g);
        assert!(skipped.is_empty());
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0.call_id, 9);
        assert_eq!(entries[0].1.access, ACCESS_READ | ACCESS_WRITE);
    }

    #[test]
    fn missing_scope_is_skipped_with_reason() {
        let g = grant(&["/nonexistent/agentd-scope"], &[], &[]);
        let (entries, skipped) = scope_entries(&g);
        assert!(entries.is_empty());
        assert_eq!(skipped[0].reason, "scope_path_missing");
    }

    #[test]
    fn unix_destinations_hash_like_the_hook() {
        assert_eq!(
            unix_hash("unix:/run/x.sock"),
            Some(unix_path_hash(b"/run/x.sock"))
        );
        assert_eq!(
            unix_hash("unix:@abstract"),
            Some(unix_path_hash(b"@abstract"))
        );
        assert_eq!(unix_hash("10.0.0.1:80"), None);
        let g = grant(&[], &[], &["unix:/a", "127.0.0.1:80"]);
        let e = unix_entries(&g, &["/run/agentd/agentd.sock".into()]);
        assert_eq!(e.len(), 2);
    }
}
