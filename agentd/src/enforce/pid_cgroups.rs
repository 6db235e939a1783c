//! The cgroup of a calling process, read from `/proc/PID/cgroup` once per
//! process and kept while it lives. Every tool call asks which agent its
//! caller is (the gateway, the MCP-server check, the grant hook): re-reading
//! `/proc` each time cost two file reads per call.
//!
//! An entry holds a pidfd of the process it was read for. A pid is reused
//! only after its process exited and was reaped, so while that pidfd does
//! not report an exit the pid still names the same process; an exited
//! entry is read again. A process changes cgroup only when it is moved:
//! agentd's own moves ([`super::agent_cgroup::join`]) drop every entry, and
//! the processes agentd places in agents are new (forked, then moved before
//! they exec), so no entry of theirs exists yet.
use super::pidfd;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Most processes remembered (each holds a pidfd): callers of the API are a
/// few runtimes and hooks, not thousands.
const MAX_ENTRIES: usize = 256;

/// Bumped by every move agentd makes; entries of an older generation are stale.
static GENERATION: AtomicU64 = AtomicU64::new(0);

struct Entry {
    pidfd: OwnedFd,
    cgroup: Arc<str>,
    generation: u64,
}

fn entries() -> std::sync::MutexGuard<'static, HashMap<u32, Arc<Entry>>> {
    static MAP: OnceLock<Mutex<HashMap<u32, Arc<Entry>>>> = OnceLock::new();
    MAP.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A process was moved between cgroups: forget every cached cgroup.
pub fn moved() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The cgroup path of live process `pid` (as `/proc/PID/cgroup` says it),
/// cached while the process lives; None if it cannot be read.
pub fn cgroup_of(pid: u32) -> Option<Arc<str>> {
    let generation = GENERATION.load(Ordering::SeqCst);
    let cached = entries().get(&pid).cloned();
    if let Some(e) = cached {
        if e.generation == generation && pidfd::alive(&e.pidfd) {
            return Some(e.cgroup.clone());
        }
    }
    // The pidfd first: what is read next belongs to the process it names
    // if that process has not exited by the time the read is done.
    let Some(pidfd) = pidfd::open(pid, 0) else {
        return cgroup_of_pid(pid).map(Arc::from);
    };
    let cgroup: Arc<str> = cgroup_of_pid(pid)?.into();
    if pidfd::alive(&pidfd) && GENERATION.load(Ordering::SeqCst) == generation {
        remember(
            pid,
            Entry {
                pidfd,
                cgroup: cgroup.clone(),
                generation,
            },
        );
    }
    Some(cgroup)
}

fn remember(pid: u32, entry: Entry) {
    let mut map = entries();
    if map.len() >= MAX_ENTRIES && !map.contains_key(&pid) {
        map.retain(|_, e| pidfd::alive(&e.pidfd));
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(pid, Arc::new(entry));
}

/// The cgroup v2 path of a process relative to the hierarchy root
/// (`/agentd.slice/NAME`), from `/proc/PID/cgroup`.
pub fn cgroup_of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_proc_cgroup(&text)
}

/// The v2 entry (`0::PATH`) of a `/proc/PID/cgroup` text.
pub(crate) fn parse_proc_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: a move (the generation) is global to the process.
    #[test]
    fn a_live_process_is_read_once_until_it_exits_or_agentd_moves_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let first = cgroup_of(pid).expect("a live child's cgroup");
        assert_eq!(Some(first.as_ref()), super::cgroup_of_pid(pid).as_deref());
        let again = cgroup_of(pid).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "served from the cache");
        moved();
        let after = cgroup_of(pid).unwrap();
        assert_eq!(first, after);
        assert!(!Arc::ptr_eq(&first, &after), "read again after a move");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(cgroup_of(pid).is_none(), "an exited process has none");
    }
}
