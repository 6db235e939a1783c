//! Resolving path arguments to the objects they name, so a call is decided
//! on the file the kernel would really open rather than on the string the
//! agent wrote: a planted symlink (`/workspace/n -> /home/agent/.profile`)
//! must not widen a scope.
//!
//! Resolution follows ordinary symlinks (the agent may have planted them;
//! the result is what gets re-checked against the policy) but never magic
//! links (`/proc/PID/root`, `/proc/PID/fd/N`), and runs with the caller's
//! filesystem credentials, so it cannot reach through directories the agent
//! cannot traverse. A path that does not exist yet resolves through its
//! deepest existing ancestor; a dangling symlink anywhere is refused (a
//! create through it would land wherever it points).
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};

/// Why a path could not be resolved (the call is denied `path_unresolvable`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A component is a symlink whose target does not exist.
    #[error("`{path}` is a dangling symlink")]
    DanglingSymlink {
        /// The symlink.
        path: String,
    },
    /// The kernel refused the walk (magic link, permission, loop, …).
    #[error("resolving `{path}`: {errno}")]
    Walk {
        /// The path or ancestor being opened.
        path: String,
        /// What openat2 said.
        errno: Errno,
    },
}

/// Filesystem credentials a resolution runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsCreds {
    /// fsuid.
    pub uid: u32,
    /// fsgid.
    pub gid: u32,
}

/// Turns a normalised absolute path into the real path of what it names.
pub trait PathResolver {
    /// Resolves `path` (already lexically normalised and absolute).
    fn resolve(&self, path: &str) -> Result<String, ResolveError>;
}

/// Leaves paths as written (unit tests and benches that decide on strings).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lexical;

impl PathResolver for Lexical {
    fn resolve(&self, path: &str) -> Result<String, ResolveError> {
        Ok(path.to_owned())
    }
}

/// Resolves on this host's filesystem, as `creds` (None: agentd's own).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostResolver {
    /// Credentials of the caller (from SO_PEERCRED).
    pub creds: Option<FsCreds>,
}

impl PathResolver for HostResolver {
    fn resolve(&self, path: &str) -> Result<String, ResolveError> {
        match self.creds {
            Some(c) if c.uid != 0 => {
                let _guard = FsCredsGuard::switch(c);
                resolve_host(path)
            }
            _ => resolve_host(path),
        }
    }
}

/// Switches this thread's fsuid/fsgid and restores them on drop. Linux keeps
/// filesystem credentials per thread (the raw syscalls, which glibc does not
/// broadcast), so no other thread of the daemon is affected; the switch
/// lasts only for the synchronous walk, with no await in between.
struct FsCredsGuard {
    uid: u32,
    gid: u32,
}

impl FsCredsGuard {
    fn switch(c: FsCreds) -> Self {
        // SAFETY: setfsuid/setfsgid only change this thread's credentials and
        // return the previous value.
        unsafe {
            let gid = libc::setfsgid(c.gid) as u32;
            let uid = libc::setfsuid(c.uid) as u32;
            FsCredsGuard { uid, gid }
        }
    }
}

impl Drop for FsCredsGuard {
    fn drop(&mut self) {
        // SAFETY: as above; going back to agentd's own ids always succeeds.
        unsafe {
            libc::setfsuid(self.uid);
            libc::setfsgid(self.gid);
        }
    }
}

fn open_path(path: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(libc::AT_FDCWD, path, how)?;
    // SAFETY: openat2 returned a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn real_path(fd: &OwnedFd) -> Result<PathBuf, Errno> {
    use std::os::fd::AsRawFd as _;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Whether `path` names what it says without any symlink on the way: one
/// `openat2` refusing every symlink. `Some(true)`: it exists and its real
/// path is `path` itself; `Some(false)`: a component is missing and none
/// before it is a symlink (a dangling one would have been refused as a
/// symlink), so the missing tail keeps its names under the same real
/// prefix; `None`: a symlink, or any other refusal, needs the full walk.
fn symlink_free(path: &str) -> Option<bool> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(libc::AT_FDCWD, path, how) {
        Ok(fd) => {
            // SAFETY: openat2 returned a fresh descriptor we own.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Some(true)
        }
        Err(Errno::ENOENT) => Some(false),
        Err(_) => None,
    }
}

/// The host walk (see the module doc).
pub fn resolve_host(path: &str) -> Result<String, ResolveError> {
    // The common case (no symlink anywhere) in one system call: `path` is
    // lexically normalised and absolute, so without symlinks it is already
    // the real path, whether or not its tail exists yet.
    if symlink_free(path).is_some() {
        return Ok(path.to_owned());
    }
    let mut existing = PathBuf::from(path);
    let mut missing: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match open_path(&existing) {
            Ok(fd) => {
                let mut real = real_path(&fd).map_err(|errno| ResolveError::Walk {
                    path: existing.display().to_string(),
                    errno,
                })?;
                for name in missing.iter().rev() {
                    real.push(name);
                }
                return Ok(real.to_string_lossy().into_owned());
            }
            Err(Errno::ENOENT) => {
                let is_link =
                    std::fs::symlink_metadata(&existing).is_ok_and(|m| m.file_type().is_symlink());
                if is_link {
                    return Err(ResolveError::DanglingSymlink {
                        path: existing.display().to_string(),
                    });
                }
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(ResolveError::Walk {
                        path: existing.display().to_string(),
                        errno: Errno::ENOENT,
                    });
                };
                missing.push(name.to_owned());
                existing = parent.to_owned();
            }
            Err(errno) => {
                return Err(ResolveError::Walk {
                    path: existing.display().to_string(),
                    errno,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_to_their_target_and_missing_tails_keep_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("ws")).unwrap();
        std::fs::create_dir(root.join("home")).unwrap();
        std::fs::write(root.join("home/.profile"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("home/.profile"), root.join("ws/n")).unwrap();
        std::os::unix::fs::symlink(root.join("home"), root.join("ws/h")).unwrap();
        std::os::unix::fs::symlink(root.join("home/nothing"), root.join("ws/d")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root/etc", root.join("ws/m")).unwrap();
        let s = |p: &str| root.join(p).to_string_lossy().into_owned();
        assert_eq!(resolve_host(&s("ws/n")).unwrap(), s("home/.profile"));
        assert_eq!(resolve_host(&s("ws/h/new/f")).unwrap(), s("home/new/f"));
        assert_eq!(resolve_host(&s("ws/plain")).unwrap(), s("ws/plain"));
        assert!(matches!(
            resolve_host(&s("ws/d")),
            Err(ResolveError::DanglingSymlink { .. })
        ));
        assert!(matches!(
            resolve_host(&s("ws/m/passwd")),
            Err(ResolveError::Walk {
                errno: Errno::ELOOP,
                ..
            })
        ));
        assert_eq!(Lexical.resolve("/a/b").unwrap(), "/a/b");
        // Without symlinks, existing or not, the path is its own real path;
        // a missing tail under a symlinked directory still resolves.
        assert_eq!(
            resolve_host(&s("home/.profile")).unwrap(),
            s("home/.profile")
        );
        assert_eq!(resolve_host(&s("home/a/b/c")).unwrap(), s("home/a/b/c"));
        assert_eq!(resolve_host(&s("ws/h/a/b")).unwrap(), s("home/a/b"));
        assert_eq!(symlink_free(&s("ws/n")), None);
        assert_eq!(symlink_free(&s("ws/d/x")), None);
        assert_eq!(symlink_free(&s("home/none/x")), Some(false));
    }
}
