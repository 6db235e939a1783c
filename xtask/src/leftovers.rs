//! What test runs leave behind on the host: pinned BPF state under
//! `/sys/fs/bpf/agentd-*`, cgroup slices `agentd-*.slice` and the doctor's
//! probe cgroups. `cargo xtask test` removes stale ones before it starts and
//! fails if its own run left any (a suite must clean up after itself).
//!
//! An instance belongs to a state directory (`/run/agentd-instances/<name>`
//! records which); it is stale when that directory no longer exists (its
//! test finished) or nothing records it. Probe leftovers name their pid.
//! Instances whose owner still exists are live (a concurrent run) and are
//! never touched. The system instance `agentd` is never touched.
use std::path::{Path, PathBuf};

const BPFFS: &str = "/sys/fs/bpf";
const INSTANCES: &str = "/run/agentd-instances";

/// One stale leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Where it is.
    pub path: PathBuf,
    /// Why it is stale.
    pub why: String,
}

fn pid_alive(pid: &str) -> bool {
    pid.parse::<u32>().is_ok() && Path::new("/proc").join(pid).exists()
}

/// Why the instance `name` is stale, or `None` if it is live or not ours.
fn instance_stale(name: &str) -> Option<String> {
    if name == "agentd" || !name.starts_with("agentd-") {
        return None;
    }
    if let Some(rest) = name.strip_prefix("agentd-probe-") {
        // `agentd-probe-PID-N`: the pid is the part before the counter.
        let pid = rest.split('-').next().unwrap_or("");
        return (!pid_alive(pid)).then(|| format!("probe pin of dead pid {pid}"));
    }
    if let Some(rest) = name.strip_prefix("agentd-doctor-") {
        let pid = rest.split('-').next().unwrap_or("");
        return (!pid_alive(pid)).then(|| format!("probe cgroup of dead pid {pid}"));
    }
    match std::fs::read_to_string(Path::new(INSTANCES).join(name)) {
        Ok(owner) if Path::new(&owner).exists() => None,
        Ok(owner) => Some(format!("its state directory {owner} is gone")),
        Err(_) => Some("no state directory recorded".into()),
    }
}

fn cgroup_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every stale leftover on this host now.
pub fn find() -> Vec<Leftover> {
    let mut out = Vec::new();
    for name in names(Path::new(BPFFS)) {
        if let Some(why) = instance_stale(&name) {
            out.push(Leftover {
                path: Path::new(BPFFS).join(&name),
                why,
            });
        }
    }
    if let Some(root) = cgroup_root() {
        for name in names(&root) {
            let instance = name.strip_suffix(".slice").unwrap_or(&name);
            if let Some(why) = instance_stale(instance) {
                out.push(Leftover {
                    path: root.join(&name),
                    why,
                });
            }
        }
    }
    out
}

/// Removes a leftover: kills what runs in a cgroup (and its children) and
/// removes it, or removes a pin directory. Returns what failed.
pub fn remove(l: &Leftover) -> Result<(), String> {
    if l.path.starts_with(BPFFS) {
        return std::fs::remove_dir_all(&l.path).map_err(|e| e.to_string());
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(&l.path)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    children.push(l.path.clone());
    for cg in &children {
        let _ = std::fs::write(cg.join("cgroup.kill"), "1");
    }
    for cg in &children {
        let mut last = Ok(());
        for _ in 0..50 {
            last = std::fs::remove_dir(cg);
            if last.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        last.map_err(|e| format!("{}: {e}", cg.display()))?;
    }
    if let Some(name) = l.path.file_name().and_then(|n| n.to_str()) {
        let _ = std::fs::remove_file(
            Path::new(INSTANCES).join(name.strip_suffix(".slice").unwrap_or(name)),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_instance_and_foreign_names_are_never_stale() {
        assert_eq!(instance_stale("agentd"), None);
        assert_eq!(instance_stale("docker"), None);
        // This process is alive.
        let me = std::process::id();
        assert_eq!(instance_stale(&format!("agentd-probe-{me}")), None);
        assert_eq!(instance_stale(&format!("agentd-probe-{me}-3")), None);
        assert_eq!(instance_stale(&format!("agentd-doctor-{me}-0")), None);
    }

    #[test]
    fn dead_probes_and_unowned_instances_are_stale() {
        // Pids above the kernel's limit never exist.
        assert!(instance_stale("agentd-probe-99999999").is_some());
        assert!(instance_stale("agentd-doctor-99999999-3").is_some());
        assert!(instance_stale("agentd-nosuchinstance0").is_some());
    }
}
