//! A kernel grant: what one allowed tool call (or an agent's baseline) may do,
//! resolved from a [`GrantSpec`] into the forms the hooks compare against —
//! exec targets as device+inode, path scopes as normalised absolute paths,
//! connect destinations as address prefixes, expiry in CLOCK_BOOTTIME ns.
//!
//! The decision functions here are pure; only [`KernelGrant::from_spec`]
//! touches the filesystem (to stat exec targets).
use std::{
    net::Ipv6Addr,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

use agentd_common::FileId;

use crate::grant_spec::GrantSpec;

/// Errors turning a [`GrantSpec`] into a kernel grant.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// An exec target could not be resolved to a file.
    #[error("exec target {path}: {source}")]
    ExecTarget {
        /// The path as given in the grant.
        path: PathBuf,
        /// Why stat failed.
        source: std::io::Error,
    },
    /// A path scope is not absolute.
    #[error("path scope {path} must be absolute")]
    RelativeScope {
        /// The offending scope.
        path: PathBuf,
    },
    /// A path scope passes through a symlink not owned by root: whoever owns
    /// it (the agent?) could point the grant anywhere.
    #[error("path scope {path} passes through {link}, a symlink owned by uid {owner}")]
    UntrustedSymlink {
        /// The scope as given.
        path: PathBuf,
        /// The symlink met on the way.
        link: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// A connect destination does not parse.
    #[error("connect destination `{dest}`: {message}")]
    Destination {
        /// The destination as given.
        dest: String,
        /// What is wrong with it.
        message: String,
    },
}

impl GrantError {
    /// Stable reason code for refusing the grant.
    pub fn reason_code(&self) -> &'static str {
        match self {
            GrantError::ExecTarget { .. } => crate::protocol::reason::EXEC_TARGET_UNRESOLVABLE,
            GrantError::RelativeScope { .. } => crate::protocol::reason::PATH_SCOPE_INVALID,
            GrantError::UntrustedSymlink { .. } => crate::protocol::reason::PATH_UNRESOLVABLE,
            GrantError::Destination { .. } => crate::protocol::reason::DESTINATION_INVALID,
        }
    }
}

/// Kernel-internal device number of a stat()ed file, as the kernel keeps it
/// in `sb->s_dev` (`MKDEV(major, minor)` = `major << 20 | minor`), which is
/// what the tp_btf program reads. `st_dev` is the `new_encode_dev` form.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let major = libc::major(st_dev) as u64;
    let minor = libc::minor(st_dev) as u64;
    (major << 20) | minor
}

/// Device+inode of a file's metadata, in the kernel's encoding.
pub fn file_id(meta: &std::fs::Metadata) -> FileId {
    FileId {
        dev: kernel_dev(meta.dev()),
        ino: meta.ino(),
    }
}

pub use crate::grant_spec::{Destination, LISTEN_PREFIX};

/// A unix socket an agent names, as the supervisor resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixTarget {
    /// An abstract name (without its leading NUL), matched exactly
    /// against `unix:@name`.
    Abstract(Vec<u8>),
    /// A socket file, by device and inode (as `stat` reports them),
    /// matched against the file a `unix:/path` destination names now.
    File {
        /// `st_dev`.
        dev: u64,
        /// `st_ino`.
        ino: u64,
    },
}

impl From<crate::grant_spec::DestinationError> for GrantError {
    fn from(e: crate::grant_spec::DestinationError) -> Self {
        GrantError::Destination {
            dest: e.dest,
            message: e.message,
        }
    }
}

/// [`crate::grant_spec::parse_destination`], its refusal as a [`GrantError`].
pub fn parse_destination(dest: &str) -> Result<Option<Destination>, GrantError> {
    Ok(crate::grant_spec::parse_destination(dest)?)
}

/// Renders a mapped address for audit rows.
pub fn render_addr(addr: [u8; 16]) -> String {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

/// Lexically normalises an absolute path (`.`/`..` removed, no symlinks read).
pub fn normalise(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

/// A scope as stored: symlinks in existing prefixes resolved, so it compares
/// against the real paths of opened files. Only root's symlinks are
/// followed: the gateway decided on the real object, so a symlink owned by
/// anyone else on the way means one was planted since (refused).
fn scope(path: &Path) -> Result<PathBuf, GrantError> {
    let norm = normalise(path).ok_or_else(|| GrantError::RelativeScope {
        path: path.to_owned(),
    })?;
    // `/proc/self` is kept symbolic: it means the tracee's own /proc entry.
    if norm.starts_with("/proc/self") {
        return Ok(norm);
    }
    check_symlink_owners(&norm)?;
    Ok(canonical_prefix(&norm))
}

/// The real path of `norm`'s deepest existing ancestor, with the missing
/// tail appended (a file the tool will create still matches its scope).
pub fn canonical_prefix(norm: &Path) -> PathBuf {
    let mut existing = norm.to_path_buf();
    let mut missing = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            return missing.iter().rev().fold(real, |p, n| p.join(n));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return norm.to_path_buf(),
        }
    }
}

/// Refuses a path whose components include a symlink not owned by root.
fn check_symlink_owners(norm: &Path) -> Result<(), GrantError> {
    let mut prefix = PathBuf::from("/");
    for c in norm.components().skip(1) {
        prefix.push(c);
        let Ok(meta) = std::fs::symlink_metadata(&prefix) else {
            // Nothing further exists to follow.
            return Ok(());
        };
        if meta.file_type().is_symlink() && meta.uid() != 0 {
            return Err(GrantError::UntrustedSymlink {
                path: norm.to_owned(),
                link: prefix,
                owner: meta.uid(),
            });
        }
    }
    Ok(())
}

/// Whether a file is opened for reading only or (also) for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// O_RDONLY without O_CREAT/O_TRUNC.
    Read,
    /// Anything that can change the file or create one.
    Write,
}

impl Access {
    /// Stable name, as audited (`access:read` / `access:write`).
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    /// Classifies `open` flags.
    pub fn of_flags(flags: u64) -> Self {
        let flags = flags as i32;
        // O_TMPFILE includes O_DIRECTORY: test all of its bits, or every
        // O_DIRECTORY open (a directory listing) would count as a write.
        if flags & libc::O_ACCMODE != libc::O_RDONLY
            || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
            || flags & libc::O_TMPFILE == libc::O_TMPFILE
        {
            Access::Write
        } else {
            Access::Read
        }
    }
}

/// A resolved grant, ready for the supervisor (paths) and the BPF maps
/// (exec files, destinations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelGrant {
    /// Numeric handle used as `call_id` in the BPF maps.
    pub handle: u64,
    /// Exec targets by device+inode.
    pub exec: Vec<FileId>,
    /// Exec targets as given (for audit rows and re-resolution).
    pub exec_paths: Vec<PathBuf>,
    /// Read scopes.
    pub read: Vec<PathBuf>,
    /// Write scopes (imply read).
    pub write: Vec<PathBuf>,
    /// IP destinations.
    pub connect: Vec<Destination>,
    /// The socket files `unix:/path` destinations named when the grant was
    /// installed (`st_dev`, `st_ino`): a path swapped for a symlink later
    /// does not carry the grant to another socket.
    pub unix_files: Vec<(u64, u64)>,
    /// CLOCK_BOOTTIME ns after which the grant is void; 0 = never.
    pub expires_at_ns: u64,
    /// The spec it was resolved from (persisted; re-resolved on restart).
    pub spec: GrantSpec,
    /// A baseline's protected files, resolved like scopes, and the
    /// device+inode of each that exists (so another name of the same file
    /// — a hard link — is protected too). See [`Protected`].
    pub protected: Protected,
    /// Protected files this call may write (resolved like scopes).
    pub protected_write: Vec<PathBuf>,
}

/// An agent's protected files, as the supervisor compares them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// Real paths (a directory protects its subtree).
    pub paths: Vec<PathBuf>,
    /// Device+inode of each protected path that existed at install, with
    /// its path.
    pub files: Vec<(FileId, PathBuf)>,
}

/// What a write reaches, for the protected-file check.
#[derive(Debug, Clone, Copy)]
pub struct WriteTarget<'a> {
    /// Its real path.
    pub real: &'a Path,
    /// The object written, when it exists and was resolved.
    pub file: Option<FileId>,
    /// The operation moves or removes the name (rename, unlink, rmdir): a
    /// directory holding a protected file is protected from it too, or
    /// renaming the directory away would let the agent put its own file
    /// in its place.
    pub moves_name: bool,
}

impl Protected {
    /// Resolves protected paths as scopes are resolved; stats those that exist.
    pub fn resolve(paths: &[PathBuf]) -> Result<Self, GrantError> {
        let mut out = Protected::default();
        for p in paths {
            let real = scope(p)?;
            if let Ok(meta) = std::fs::metadata(&real) {
                out.files.push((file_id(&meta), real.clone()));
            }
            out.paths.push(real);
        }
        Ok(out)
    }

    /// The protected path a write to `t` touches, if any: `t` is inside a
    /// protected path, is a protected file under another name (same
    /// device+inode), or (when it moves a name) holds one.
    pub fn hit(&self, t: &WriteTarget<'_>) -> Option<&Path> {
        if let Some(p) = self.paths.iter().find(|p| t.real.starts_with(p)) {
            return Some(p);
        }
        if let Some((_, p)) = t
            .file
            .and_then(|f| self.files.iter().find(|(id, _)| *id == f))
        {
            return Some(p);
        }
        if t.moves_name {
            return self
                .paths
                .iter()
                .find(|p| p.starts_with(t.real))
                .map(PathBuf::as_path);
        }
        None
    }
}

/// Outcome of checking one path or exec against a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Covered and not expired.
    Covered,
    /// Would be covered, but the grant has expired.
    Expired,
    /// Not covered.
    NotCovered,
}

impl KernelGrant {
    /// Resolves a [`GrantSpec`]: exec targets are stat()ed (following
    /// symlinks, so the grant names the real file), scopes normalised.
    pub fn from_spec(spec: &GrantSpec, handle: u64, now_boot_ns: u64) -> Result<Self, GrantError> {
        let mut exec = Vec::new();
        for path in &spec.exec {
            let meta = std::fs::metadata(path).map_err(|source| GrantError::ExecTarget {
                path: path.clone(),
                source,
            })?;
            exec.push(file_id(&meta));
        }
        let read = spec
            .read
            .iter()
            .map(|p| scope(p))
            .collect::<Result<_, _>>()?;
        let write = spec
            .write
            .iter()
            .map(|p| scope(p))
            .collect::<Result<_, _>>()?;
        let mut connect = Vec::new();
        let mut unix_files = Vec::new();
        for d in &spec.connect {
            if let Some(dest) = parse_destination(d)? {
                connect.push(dest);
            } else if let Some(path) = d.strip_prefix("unix:").filter(|p| !p.starts_with('@')) {
                // A socket missing now is not granted (as in the lsm backend).
                if let Ok(m) = std::fs::metadata(path) {
                    unix_files.push((m.dev(), m.ino()));
                }
            }
        }
        let expires_at_ns = if spec.ttl_secs == 0 {
            0
        } else {
            now_boot_ns.saturating_add(spec.ttl_secs.saturating_mul(1_000_000_000))
        };
        let protected_write = spec
            .protected_write
            .iter()
            .map(|p| scope(p))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            handle,
            exec,
            exec_paths: spec.exec.clone(),
            read,
            write,
            connect,
            unix_files,
            expires_at_ns,
            spec: spec.clone(),
            protected: Protected::resolve(&spec.protected)?,
            protected_write,
        })
    }

    /// Whether this grant names the protected file `hit` (or the write
    /// target `real`) as one it may write.
    pub fn may_write_protected(&self, hit: &Path, real: &Path) -> bool {
        self.protected_write
            .iter()
            .any(|w| hit.starts_with(w) || real.starts_with(w))
    }

    /// Whether the grant has expired at `now_boot_ns`.
    pub fn expired(&self, now_boot_ns: u64) -> bool {
        self.expires_at_ns != 0 && self.expires_at_ns <= now_boot_ns
    }

    fn verdict(&self, covered: bool, now_boot_ns: u64) -> Verdict {
        match (covered, self.expired(now_boot_ns)) {
            (false, _) => Verdict::NotCovered,
            (true, true) => Verdict::Expired,
            (true, false) => Verdict::Covered,
        }
    }

    /// Checks an opened file's real path. `tgid` gives `/proc/self` scopes
    /// their meaning for the process asking.
    pub fn check_path(
        &self,
        real_path: &Path,
        access: Access,
        tgid: u32,
        now_boot_ns: u64,
    ) -> Verdict {
        let within = |scopes: &[PathBuf]| scopes.iter().any(|s| in_scope(real_path, s, tgid));
        let covered = match access {
            Access::Read => within(&self.read) || within(&self.write),
            Access::Write => within(&self.write),
        };
        self.verdict(covered, now_boot_ns)
    }

    /// Checks an open of `file` (device+inode) at its real path: the path
    /// scopes, and for reading also the grant's own exec targets, which an
    /// interpreter must read to run a granted script (`#!/bin/sh`).
    pub fn check_open(
        &self,
        real_path: &Path,
        file: Option<FileId>,
        access: Access,
        tgid: u32,
        now_boot_ns: u64,
    ) -> Verdict {
        let reads_own_exec = access == Access::Read && file.is_some_and(|f| self.exec.contains(&f));
        if reads_own_exec {
            return self.verdict(true, now_boot_ns);
        }
        self.check_path(real_path, access, tgid, now_boot_ns)
    }

    /// Checks a unix socket: an abstract name must be listed exactly
    /// (`unix:@name`); a socket file must be the very file a `unix:/path`
    /// destination named when the grant was installed (the supervisor
    /// resolved the agent's path to `File` already).
    pub fn check_unix(&self, target: &UnixTarget, now_boot_ns: u64) -> Verdict {
        let covered = match target {
            UnixTarget::Abstract(name) => self
                .spec
                .connect
                .iter()
                .filter_map(|d| d.strip_prefix("unix:@"))
                .any(|n| n.as_bytes() == name.as_slice()),
            UnixTarget::File { dev, ino } => self.unix_files.contains(&(*dev, *ino)),
        };
        self.verdict(covered, now_boot_ns)
    }

    /// Checks inbound service on local `port` (bind to it, listen on it).
    pub fn check_inbound(&self, port: u16, now_boot_ns: u64) -> Verdict {
        let covered = self
            .spec
            .connect
            .iter()
            .filter_map(|d| d.strip_prefix(LISTEN_PREFIX))
            .filter_map(|p| p.parse::<u16>().ok())
            .any(|p| p == 0 || p == port);
        self.verdict(covered, now_boot_ns)
    }

    /// Checks an exec target by device+inode.
    pub fn check_exec(&self, file: FileId, now_boot_ns: u64) -> Verdict {
        self.verdict(self.exec.contains(&file), now_boot_ns)
    }
}

/// Whether `path` lies within `scope` (component-wise prefix).
pub fn in_scope(path: &Path, scope: &Path, tgid: u32) -> bool {
    if let Ok(rest) = scope.strip_prefix("/proc/self") {
        let own = Path::new("/proc").join(tgid.to_string()).join(rest);
        return path.starts_with(own);
    }
    path.starts_with(scope)
}

/// Reason code and whether it allows, for an open or exec decided against a
/// bound call's grant (if any) and then the agent's baseline.
pub fn decide(call: Option<Verdict>, baseline: Verdict) -> (bool, &'static str) {
    match (call, baseline) {
        (Some(Verdict::Covered), _) => (true, crate::protocol::reason::GRANT_MATCHED),
        (_, Verdict::Covered) => (true, crate::protocol::reason::BASELINE),
        (Some(Verdict::Expired), _) | (None, Verdict::Expired) => {
            (false, crate::protocol::reason::GRANT_EXPIRED)
        }
        (Some(Verdict::NotCovered), _) => (false, crate::protocol::reason::PATH_OUTSIDE_SCOPE),
        (None, Verdict::NotCovered) => (false, crate::protocol::reason::NO_GRANT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(read: &[&str], write: &[&str], expires: u64) -> KernelGrant {
        KernelGrant {
            handle: 1,
            exec: vec![FileId { dev: 1, ino: 2 }],
            exec_paths: vec![],
            read: read.iter().map(PathBuf::from).collect(),
            write: write.iter().map(PathBuf::from).collect(),
            connect: vec![],
            unix_files: vec![],
            expires_at_ns: expires,
            spec: GrantSpec::default(),
            protected: Protected::default(),
            protected_write: vec![],
        }
    }

    #[test]
    fn scopes_are_component_wise() {
        let g = grant(&["/srv/data"], &["/tmp/out"], 0);
        assert_eq!(
            g.check_path(Path::new("/srv/data/a.txt"), Access::Read, 1, 5),
            Verdict::Covered
        );
        assert_eq!(
            g.check_path(Path::new("/srv/database"), Access::Read, 1, 5),
            Verdict::NotCovered
        );
        assert_eq!(
            g.check_path(Path::new("/srv/data/a.txt"), Access::Write, 1, 5),
            Verdict::NotCovered
        );
        assert_eq!(
            g.check_path(Path::new("/tmp/out/x"), Access::Read, 1, 5),
            Verdict::Covered
        );
        assert_eq!(
            g.check_path(Path::new("/tmp/out/x"), Access::Write, 1, 5),
            Verdict::Covered
        );
    }

    #[test]
    fn proc_self_means_the_asking_process() {
        let g = grant(&["/proc/self/status"], &[], 0);
        assert_eq!(
            g.check_path(Path::new("/proc/42/status"), Access::Read, 42, 0),
            Verdict::Covered
        );
        assert_eq!(
            g.check_path(Path::new("/proc/43/status"), Access::Read, 42, 0),
            Verdict::NotCovered
        );
    }

    #[test]
    fn expiry_is_reported_as_such() {
        let g = grant(&["/srv"], &[], 100);
        assert_eq!(
            g.check_path(Path::new("/srv/x"), Access::Read, 1, 99),
            Verdict::Covered
        );
        assert_eq!(
            g.check_path(Path::new("/srv/x"), Access::Read, 1, 100),
            Verdict::Expired
        );
        assert_eq!(
            g.check_exec(FileId { dev: 1, ino: 2 }, 200),
            Verdict::Expired
        );
        assert_eq!(
            g.check_exec(FileId { dev: 1, ino: 3 }, 50),
            Verdict::NotCovered
        );
    }
    #[test]
    fn an_exec_target_may_be_read_but_not_written_through_the_grant() {
        let g = KernelGrant {
            handle: 7,
            exec: vec![FileId { dev: 1, ino: 2 }],
            exec_paths: vec![PathBuf::from("/opt/tool.sh")],
            read: vec![],
            write: vec![],
            connect: vec![],
            unix_files: vec![],
            expires_at_ns: 0,
            spec: GrantSpec::default(),
            protected: Protected::default(),
            protected_write: vec![],
        };
        let script = Path::new("/opt/tool.sh");
        let id = Some(FileId { dev: 1, ino: 2 });
        assert_eq!(
            g.check_open(script, id, Access::Read, 1, 5),
            Verdict::Covered
        );
        assert_eq!(
            g.check_open(script, id, Access::Write, 1, 5),
            Verdict::NotCovered
        );
        let other = Some(FileId { dev: 1, ino: 3 });
        assert_eq!(
            g.check_open(script, other, Access::Read, 1, 5),
            Verdict::NotCovered
        );
        assert_eq!(
            g.check_open(script, None, Access::Read, 1, 5),
            Verdict::NotCovered
        );
    }

    #[test]
    fn decide_prefers_call_then_baseline() {
        assert_eq!(
            decide(Some(Verdict::Covered), Verdict::NotCovered),
            (true, "grant_matched")
        );
        assert_eq!(
            decide(Some(Verdict::NotCovered), Verdict::Covered),
            (true, "baseline")
        );
        assert_eq!(
            decide(Some(Verdict::NotCovered), Verdict::NotCovered),
            (false, "path_outside_scope")
        );
        assert_eq!(
            decide(Some(Verdict::Expired), Verdict::NotCovered),
            (false, "grant_expired")
        );
        assert_eq!(decide(None, Verdict::NotCovered), (false, "no_grant"));
    }

    #[test]
    fn destinations_parse_and_mask() {
        let d = parse_destination("10.1.2.3/24:443").unwrap().unwrap();
        assert_eq!(d.prefix_bits, 120);
        assert_eq!(d.port, 443);
        assert_eq!(render_addr(d.addr), "10.1.2.0");
        let d = parse_destination("127.0.0.1:0").unwrap().unwrap();
        assert_eq!((d.prefix_bits, d.port), (128, 0));
        let d = parse_destination("[2001:db8::1/32]:80").unwrap().unwrap();
        assert_eq!(d.prefix_bits, 32);
        assert_eq!(render_addr(d.addr), "2001:db8::");
        assert_eq!(parse_destination("unix:/run/x.sock").unwrap(), None);
        assert_eq!(parse_destination("listen:8080").unwrap(), None);
        assert!(parse_destination("listen:http").is_err());
        let e = parse_destination("10.0.0.1/33:1").unwrap_err();
        assert_eq!(e.reason_code(), "destination_invalid");
        assert!(parse_destination("10.0.0.1").is_err());
        assert!(parse_destination("host:80").is_err());
    }

    #[test]
    fn access_from_flags() {
        assert_eq!(Access::of_flags(libc::O_RDONLY as u64), Access::Read);
        assert_eq!(
            Access::of_flags((libc::O_RDONLY | libc::O_CLOEXEC) as u64),
            Access::Read
        );
        assert_eq!(Access::of_flags(libc::O_RDWR as u64), Access::Write);
        assert_eq!(
            Access::of_flags((libc::O_RDONLY | libc::O_CREAT) as u64),
            Access::Write
        );
        assert_eq!(
            Access::of_flags((libc::O_RDONLY | libc::O_TRUNC) as u64),
            Access::Write
        );
        // A directory listing reads; an unnamed temporary file writes.
        assert_eq!(
            Access::of_flags((libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64),
            Access::Read
        );
        assert_eq!(
            Access::of_flags((libc::O_RDWR | libc::O_TMPFILE) as u64),
            Access::Write
        );
    }

    #[test]
    fn scopes_through_a_non_root_symlink_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        let link = root.join("link");
        std::os::unix::fs::symlink(root.join("real"), &link).unwrap();
        // Root's symlink (the test runs as root in CI; skip the check otherwise).
        if nix::unistd::geteuid().is_root() {
            let spec = GrantSpec {
                write: vec![link.join("f")],
                ttl_secs: 1,
                ..Default::default()
            };
            let g = KernelGrant::from_spec(&spec, 1, 0).unwrap();
            assert_eq!(g.write, vec![root.join("real/f")]);
            std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        } else {
            println!("SKIPPED: not root (cannot own a symlink as root and chown it)");
            return;
        }
        let spec = GrantSpec {
            write: vec![link.join("f")],
            ttl_secs: 1,
            ..Default::default()
        };
        let e = KernelGrant::from_spec(&spec, 1, 0).unwrap_err();
        assert_eq!(e.reason_code(), "path_unresolvable");
    }

    #[test]
    fn kernel_dev_matches_mkdev() {
        // /dev/sda1 is 8:1: st_dev 0x801, kernel 8<<20|1.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 300)), (259 << 20) | 300);
    }

    #[test]
    fn exec_targets_resolve_or_fail_by_name() {
        let spec = GrantSpec {
            exec: vec!["/nonexistent/agentd-test".into()],
            ttl_secs: 5,
            ..Default::default()
        };
        let e = KernelGrant::from_spec(&spec, 1, 0).unwrap_err();
        assert_eq!(e.reason_code(), "exec_target_unresolvable");
        let spec = GrantSpec {
            exec: vec!["/bin/sh".into()],
            read: vec!["/etc".into()],
            ttl_secs: 5,
            ..Default::default()
        };
        let g = KernelGrant::from_spec(&spec, 7, 1_000).unwrap();
        assert_eq!(g.expires_at_ns, 1_000 + 5_000_000_000);
        assert_eq!(g.exec.len(), 1);
    }

    #[test]
    fn unix_and_inbound_rules() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let other = dir.path().join("o.sock");
        let _o = std::os::unix::net::UnixListener::bind(&other).unwrap();
        let spec = GrantSpec {
            connect: vec![
                format!("unix:{}", sock.display()),
                "unix:@granted".into(),
                "listen:8080".into(),
            ],
            ttl_secs: 0,
            ..GrantSpec::default()
        };
        let g = KernelGrant::from_spec(&spec, 1, 0).unwrap();
        let file = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            UnixTarget::File {
                dev: m.dev(),
                ino: m.ino(),
            }
        };
        assert_eq!(g.check_unix(&file(&sock), 0), Verdict::Covered);
        assert_eq!(g.check_unix(&file(&other), 0), Verdict::NotCovered);
        let abs = |n: &str| UnixTarget::Abstract(n.as_bytes().to_vec());
        assert_eq!(g.check_unix(&abs("granted"), 0), Verdict::Covered);
        assert_eq!(g.check_unix(&abs("granted2"), 0), Verdict::NotCovered);
        assert_eq!(g.check_inbound(8080, 0), Verdict::Covered);
        assert_eq!(g.check_inbound(8081, 0), Verdict::NotCovered);
        let any = KernelGrant::from_spec(
            &GrantSpec {
                connect: vec!["listen:0".into()],
                ..GrantSpec::default()
            },
            2,
            0,
        )
        .unwrap();
        assert_eq!(any.check_inbound(9999, 0), Verdict::Covered);
    }
}
