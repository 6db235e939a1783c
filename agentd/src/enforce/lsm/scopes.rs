//! Turns a [`KernelGrant`]'s read/write scopes and `unix:` destinations into
//! the lsm backend's map entries: scopes become device+inode keys of the
//! directories (or files) they name; unix destinations become a hash of the
//! address (matched at connect) and, for socket files, the socket's own
//! device+inode (matched on the socket the kernel actually reached).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use agentd_common::{
    lsm::{
        unix_path_hash, ScopeKey, ScopeRule, UnixKey, ACCESS_CONNECT, ACCESS_READ, ACCESS_WRITE,
        PROC_SELF_INO,
    },
    GrantExpiry,
};

use crate::enforce::grant::{file_id, KernelGrant};

/// Where a scope path points for the hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeTarget {
    /// Stat this path.
    Path(PathBuf),
    /// The asking process's own `/proc/<pid>` tree: procfs's device with
    /// [`PROC_SELF_INO`] (the hooks compare the procfs inode's pid).
    ProcSelf,
    /// Not expressible by device+inode; the reason is logged.
    Skip(&'static str),
}

/// Maps a scope path to what gets stat()ed. `/proc/self` means "the asking
/// process's own entry", which has no fixed inode: it becomes a marker the
/// hooks match against the pid procfs keeps in each per-process inode, so
/// other processes' `/proc/<pid>` entries stay outside it.
pub fn scope_target(path: &Path) -> ScopeTarget {
    if path == Path::new("/proc/self") {
        return ScopeTarget::ProcSelf;
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
    scope_entries_with(grant, &[])
}

/// Like [`scope_entries`], plus [`ACCESS_CONNECT`] on the inode of every
/// unix socket file among the grant's `unix:/…` destinations and `extra`
/// socket paths. A destination that is not an existing socket file is
/// skipped (`unix_socket_missing`; `extra` ones silently: agentd's own
/// sockets are recognised by their listener instead).
pub fn scope_entries_with(
    grant: &KernelGrant,
    extra: &[String],
) -> (Vec<(ScopeKey, ScopeRule)>, Vec<Skipped>) {
    let mut merged = Merged::new();
    let mut skipped = Vec::new();
    add_unix_sockets(grant, extra, &mut merged, &mut skipped);
    add_path_scopes(grant, &mut merged, &mut skipped);
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

/// Access bits per inode (dev, ino), merged across a grant's scopes.
type Merged = BTreeMap<(u64, u64), u8>;

/// [`ACCESS_CONNECT`] on each unix socket file the grant (reported when
/// missing) or `extra` (silently skipped when missing) names.
fn add_unix_sockets(
    grant: &KernelGrant,
    extra: &[String],
    merged: &mut Merged,
    skipped: &mut Vec<Skipped>,
) {
    use std::os::unix::fs::FileTypeExt as _;
    let granted = grant
        .spec
        .connect
        .iter()
        .filter_map(|d| d.strip_prefix("unix:"))
        .filter(|a| a.starts_with('/'))
        .map(|a| (a, true));
    for (addr, report) in granted.chain(extra.iter().map(|a| (a.as_str(), false))) {
        match std::fs::metadata(addr) {
            Ok(meta) if meta.file_type().is_socket() => {
                let id = file_id(&meta);
                *merged.entry((id.dev, id.ino)).or_default() |= ACCESS_CONNECT;
            }
            _ if report => skipped.push(Skipped {
                path: PathBuf::from(addr),
                reason: crate::protocol::reason::UNIX_SOCKET_MISSING,
            }),
            _ => {}
        }
    }
}

/// Read (and read+write) access on the inode of each scope path; a path
/// that does not exist, or that no inode can stand for, is skipped.
fn add_path_scopes(grant: &KernelGrant, merged: &mut Merged, skipped: &mut Vec<Skipped>) {
    let scopes = grant
        .read
        .iter()
        .map(|p| (p, ACCESS_READ))
        .chain(grant.write.iter().map(|p| (p, ACCESS_READ | ACCESS_WRITE)));
    for (path, access) in scopes {
        let missing = || Skipped {
            path: path.clone(),
            reason: crate::protocol::reason::SCOPE_PATH_MISSING,
        };
        let key = match scope_target(path) {
            ScopeTarget::Path(target) => std::fs::metadata(&target).map(|meta| {
                let id = file_id(&meta);
                (id.dev, id.ino)
            }),
            ScopeTarget::ProcSelf => {
                std::fs::metadata("/proc").map(|meta| (file_id(&meta).dev, PROC_SELF_INO))
            }
            ScopeTarget::Skip(reason) => {
                skipped.push(Skipped {
                    path: path.clone(),
                    reason,
                });
                continue;
            }
        };
        match key {
            Ok(key) => *merged.entry(key).or_default() |= access,
            Err(_) => skipped.push(missing()),
        }
    }
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
    fn proc_self_is_the_marker_and_subpaths_are_skipped() {
        assert_eq!(scope_target(Path::new("/proc/self")), ScopeTarget::ProcSelf);
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
    fn proc_self_is_a_marker_on_procfs() {
        let g = grant(&["/proc/self"], &[], &[]);
        let (entries, skipped) = scope_entries(&g);
        assert!(skipped.is_empty());
        assert_eq!(entries.len(), 1);
        let proc_dev = file_id(&std::fs::metadata("/proc").unwrap()).dev;
        assert_eq!(
            (entries[0].0.dev, entries[0].0.ino),
            (proc_dev, PROC_SELF_INO)
        );
        // Not the procfs root: other processes' entries stay outside.
        use std::os::unix::fs::MetadataExt as _;
        assert_ne!(entries[0].0.ino, std::fs::metadata("/proc").unwrap().ino());
    }

    #[test]
    fn unix_socket_files_get_connect_on_their_inode() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let dests = [
            format!("unix:{}", sock.display()),
            format!("unix:{}", plain.display()),
            "unix:@abstract".to_string(),
        ];
        let dests: Vec<&str> = dests.iter().map(String::as_str).collect();
        let g = grant(&[], &[], &dests);
        let (entries, skipped) = scope_entries_with(&g, &["/nonexistent/agentd.sock".into()]);
        let id = file_id(&std::fs::metadata(&sock).unwrap());
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].0.dev, entries[0].0.ino), (id.dev, id.ino));
        assert_eq!(entries[0].1.access, ACCESS_CONNECT);
        // The plain file is reported; the missing extra socket is not.
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].reason, "unix_socket_missing");
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
