//! Agent cgroups: one cgroup v2 per agent under `<cgroup root>/agentd.slice`,
//! created and tracked by agentd (root-owned, so an agent cannot make
//! sub-cgroups or move itself out).
use std::path::{Path, PathBuf};

/// Name of the parent cgroup of every agent of the default instance.
pub const SLICE: &str = "agentd.slice";

/// Errors managing agent cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The agent name cannot be a cgroup name.
    #[error("agent name `{name}` is invalid: use 1-64 of [A-Za-z0-9_.-], not starting with `.`")]
    BadName {
        /// The refused name.
        name: String,
    },
    /// A cgroup file operation failed.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `name` is acceptable as an agent (and cgroup directory) name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// An agentd slice (`agentd.slice`, or an instance's) under a cgroup v2
/// root, created if missing.
pub fn ensure_slice(root: &Path, slice_name: &str) -> Result<PathBuf, CgroupError> {
    let slice = root.join(slice_name);
    std::fs::create_dir_all(&slice).map_err(io(&slice))?;
    Ok(slice)
}

/// One agent's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCgroupDir {
    /// Directory in the cgroup filesystem.
    pub path: PathBuf,
    /// Kernel cgroup id (the directory's inode number), as
    /// `bpf_get_current_cgroup_id()` returns it.
    pub id: u64,
}

/// Creates (or re-opens) the cgroup of agent `name` under `slice`.
pub fn create(slice: &Path, name: &str) -> Result<AgentCgroupDir, CgroupError> {
    if !valid_name(name) {
        return Err(CgroupError::BadName { name: name.into() });
    }
    let path = slice.join(name);
    match std::fs::create_dir(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(&path)(e)),
    }
    open(&path)
}

/// Reads an existing agent cgroup's id.
pub fn open(path: &Path) -> Result<AgentCgroupDir, CgroupError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(io(path))?;
    Ok(AgentCgroupDir {
        path: path.to_owned(),
        id: meta.ino(),
    })
}

/// Moves process `pid` into the cgroup.
pub fn join(cg: &AgentCgroupDir, pid: u32) -> Result<(), CgroupError> {
    let procs = cg.path.join("cgroup.procs");
    let joined = std::fs::write(&procs, pid.to_string()).map_err(io(&procs));
    super::pid_cgroups::moved();
    joined
}

/// Processes currently in the cgroup.
pub fn procs(cg: &AgentCgroupDir) -> Result<Vec<u32>, CgroupError> {
    let procs = cg.path.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).map_err(io(&procs))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Kills every process in the cgroup (`cgroup.kill`, kernel ≥ 5.14).
pub fn kill_all(cg: &AgentCgroupDir) -> Result<(), CgroupError> {
    let kill = cg.path.join("cgroup.kill");
    std::fs::write(&kill, "1").map_err(io(&kill))
}

/// Freezes the cgroup and thaws it again. Freezing interrupts every task's
/// interruptible wait as a signal would, without one being delivered: a
/// syscall waiting for a seccomp supervisor's answer is restarted on thaw
/// and notified afresh (one whose notification a dead supervisor had
/// received would otherwise wait for ever). Waits at most a second for the
/// freeze; thaws in any case.
pub fn restart_waiting_syscalls(cg: &AgentCgroupDir) -> Result<(), CgroupError> {
    let freeze = cg.path.join("cgroup.freeze");
    let events = cg.path.join("cgroup.events");
    std::fs::write(&freeze, "1").map_err(io(&freeze))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        let frozen = std::fs::read_to_string(&events)
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "frozen 1"));
        if frozen {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::fs::write(&freeze, "0").map_err(io(&freeze))
}

/// Removes an empty agent cgroup.
pub fn remove(cg: &AgentCgroupDir) -> Result<(), CgroupError> {
    std::fs::remove_dir(&cg.path).map_err(io(&cg.path))
}

pub use super::pid_cgroups::cgroup_of_pid;
#[cfg(test)]
use super::pid_cgroups::parse_proc_cgroup;

/// The agent a process belongs to: the name of its cgroup directly under
/// the slice `slice_name`, if any.
pub fn agent_name_of_pid(slice_name: &str, pid: u32) -> Option<String> {
    agent_name_in(slice_name, &cgroup_of_pid(pid)?)
}

/// [`agent_name_of_pid`] for an API caller: its cgroup read once while it
/// lives ([`super::pid_cgroups`]).
pub fn caller_agent_name(slice_name: &str, pid: u32) -> Option<String> {
    agent_name_in(slice_name, &super::pid_cgroups::cgroup_of(pid)?)
}

/// The agent whose cgroup (directly under the slice) is or holds `path`.
fn agent_name_in(slice_name: &str, path: &str) -> Option<String> {
    let rest = path
        .strip_prefix('/')?
        .strip_prefix(slice_name)?
        .strip_prefix('/')?;
    let name = rest.split('/').next()?;
    valid_name(name).then(|| name.to_string())
}

/// Names of the existing agent cgroups under the slice.
pub fn existing(slice: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(slice) else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| valid_name(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("mail-agent_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("../x"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn proc_cgroup_v2_line_is_found_in_hybrid_layout() {
        let text = "12:pids:/user.slice\n1:name=systemd:/x\n0::/agentd.slice/mail\n";
        assert_eq!(
            parse_proc_cgroup(text).as_deref(),
            Some("/agentd.slice/mail")
        );
        assert_eq!(parse_proc_cgroup("1:cpu:/\n"), None);
    }
}
