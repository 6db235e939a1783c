//! The BPF LSM backend: loads every LSM hook from the embedded object and
//! attaches it. [`LsmState`] is the daemon's form (links pinned under
//! /sys/fs/bpf/agentd, so enforcement outlives agentd; grants' scopes and
//! unix destinations written to the lsm maps); [`LsmBackend`] is a
//! throw-away form for tests. Processes outside agent cgroups return at the
//! first map lookup, so attaching is safe on a live system.
pub mod protected;
pub mod scopes;

use std::path::{Path, PathBuf};

use agentd_common::{
    baseline_call_id,
    lsm::{
        maps as lsm_maps, pending_scope_id, protected_scope_id, PendingScope, ProtectedWrite,
        ScopeKey, ScopeRule, UnixKey, ACCESS_READ, ACCESS_WRITE,
    },
    FileId, GrantExpiry,
};
use aya::{
    maps::{HashMap, MapData, MapError},
    programs::{links::FdLink, BtfTracePoint, Lsm, ProgramError},
    Ebpf,
};

use super::{
    ebpf::{self, programs, LoadError, LoadedObject},
    grant::KernelGrant,
};

pub use super::btf_offsets::resolve_lsm_offsets as resolve_offsets;

/// One BPF LSM program in the object, and the kernel hook it attaches to.
#[derive(Debug, Clone, Copy)]
pub struct LsmHook {
    /// Program (function) name in the object.
    pub program: &'static str,
    /// `security_*` hook name, without the `bpf_lsm_` prefix.
    pub hook: &'static str,
}

const fn hook(name: &'static str) -> LsmHook {
    LsmHook {
        program: name,
        hook: name,
    }
}

/// Every LSM hook the lsm backend attaches, in attach order (the program
/// is named after its hook).
pub const LSM_HOOKS: &[LsmHook] = &[
    hook(programs::BPRM_CHECK_SECURITY),
    hook("file_open"),
    hook("path_unlink"),
    hook("path_rmdir"),
    hook("path_mkdir"),
    hook("path_mknod"),
    hook("path_truncate"),
    hook("path_symlink"),
    hook("path_link"),
    hook("path_rename"),
    hook("ptrace_access_check"),
    hook("bpf"),
    hook("task_kill"),
    hook("socket_connect"),
    hook("socket_sendmsg"),
    hook("inode_init_security_anon"),
    // Namespaces and mounts (lsm_guard.rs).
    hook("userns_create"),
    hook("sb_mount"),
    hook("move_mount"),
    // Attribute changes (lsm_attr.rs).
    hook("path_chmod"),
    hook("path_chown"),
    hook("inode_setattr"),
    hook("inode_setxattr"),
    hook("inode_removexattr"),
    // Socket families, inbound, and the unix peer actually reached (lsm_sock.rs).
    hook("socket_create"),
    hook("socket_bind"),
    hook("socket_listen"),
    hook("unix_stream_connect"),
    hook("unix_may_send"),
];

/// Unix sockets every agent may connect to: agentd's own API and
/// enforcement sockets (how tool runners bind themselves to calls).
pub const AGENTD_SOCKETS: &[&str] = &["/run/agentd/agentd.sock", "/run/agentd/enforce.sock"];

/// Tracepoints the lsm backend needs besides the LSM hooks.
pub const TRACEPOINTS: &[(&str, &str)] = &[
    (programs::SCHED_PROCESS_FORK, "sched_process_fork"),
    (programs::SCHED_PROCESS_EXIT, "sched_process_exit"),
];

/// Errors loading or attaching the lsm backend.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// The object did not open (BTF, offsets, maps).
    #[error(transparent)]
    Open(#[from] LoadError),
    /// A program is missing from the embedded object.
    #[error("program `{program}` is not in the eBPF object")]
    MissingProgram {
        /// Program name.
        program: &'static str,
    },
    /// A map is missing or could not be updated.
    #[error("map `{map}`: {message}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What failed.
        message: String,
    },
    /// A link could not be pinned.
    #[error("pin {path}: {message}")]
    Pin {
        /// Pin path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The kernel refused to load or attach a program.
    #[error("program `{program}`: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error (carries the verifier log or errno).
        #[source]
        source: ProgramError,
    },
}

/// The program to load for `h` on the running kernel: hooks whose
/// signature changed between kernels have one program per signature.
fn for_this_kernel(h: &LsmHook) -> LsmHook {
    let idmap = resolve_offsets().is_ok_and(|o| o.setattr_idmap != 0);
    match h.program {
        "inode_setattr" if idmap => LsmHook {
            program: "inode_setattr_idmap",
            hook: h.hook,
        },
        _ => *h,
    }
}

fn load_hook<'a>(
    obj: &'a mut LoadedObject,
    h: &LsmHook,
    loads: &mut Vec<HookLoad>,
) -> Result<&'a mut Lsm, LsmError> {
    let h = &for_this_kernel(h);
    let err = |source| LsmError::Program {
        program: h.program,
        source,
    };
    let prog: &mut Lsm = obj
        .ebpf
        .program_mut(h.program)
        .ok_or(LsmError::MissingProgram { program: h.program })?
        .try_into()
        .map_err(err)?;
    let started = std::time::Instant::now();
    prog.load(h.hook, &obj.btf).map_err(err)?;
    let load = HookLoad {
        program: h.program,
        verified_insns: prog
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count()),
        load_ms: started.elapsed().as_millis() as u64,
    };
    tracing::debug!(program = load.program, verified_insns = ?load.verified_insns, load_ms = load.load_ms, "lsm hook loaded");
    loads.push(load);
    Ok(prog)
}

/// What loading one hook cost (the verifier's work dominates start-up on a
/// slow machine).
#[derive(Debug, Clone, Copy)]
pub struct HookLoad {
    pub program: &'static str,
    /// Instructions the verifier processed (kernel 5.16+).
    pub verified_insns: Option<u32>,
    pub load_ms: u64,
}

/// The attached lsm backend, for tests. Dropping it detaches every program.
pub struct LsmBackend {
    obj: LoadedObject,
}

impl LsmBackend {
    /// Loads and attaches every LSM hook and tracepoint.
    pub fn attach() -> Result<Self, LsmError> {
        let mut obj = ebpf::open_for_running_kernel()?;
        for h in LSM_HOOKS {
            load_hook(&mut obj, h, &mut Vec::new())?
                .attach()
                .map_err(|source| LsmError::Program {
                    program: h.program,
                    source,
                })?;
        }
        for &(program, tracepoint) in TRACEPOINTS {
            let prog: &mut BtfTracePoint = obj
                .ebpf
                .program_mut(program)
                .ok_or(LsmError::MissingProgram { program })?
                .try_into()
                .map_err(|source| LsmError::Program { program, source })?;
            prog.load(tracepoint, &obj.btf)
                .map_err(|source| LsmError::Program { program, source })?;
            prog.attach()
                .map_err(|source| LsmError::Program { program, source })?;
        }
        tracing::info!(hooks = LSM_HOOKS.len(), "lsm backend attached");
        Ok(Self { obj })
    }

    /// The object, for map access.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.obj.ebpf
    }
}

/// Device+inode of `path` (following symlinks) as the hooks see it.
pub fn file_id_of(path: &Path) -> std::io::Result<FileId> {
    Ok(super::grant::file_id(&std::fs::metadata(path)?))
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> LsmError {
    move |e| LsmError::Map {
        map,
        message: e.to_string(),
    }
}

/// Pins `link` at `<pin_dir>/links/<name>`, atomically replacing the pin of
/// a previous agentd (whose program then detaches): never a moment without
/// a hook.
fn pin_link(pin_dir: &Path, link: FdLink, name: &str) -> Result<(), LsmError> {
    let dir = pin_dir.join("links");
    let pin_err = |path: &Path, e: &dyn std::fmt::Display| LsmError::Pin {
        path: path.to_owned(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| pin_err(&dir, &e))?;
    // bpffs refuses names with dots.
    let tmp = dir.join(format!("lsm_{name}_new"));
    let _ = std::fs::remove_file(&tmp);
    let pinned = link.pin(&tmp).map_err(|e| pin_err(&tmp, &e))?;
    let dest = dir.join(format!("lsm_{name}"));
    std::fs::rename(&tmp, &dest).map_err(|e| pin_err(&dest, &e))?;
    drop(pinned);
    Ok(())
}

/// The daemon's lsm backend: hooks attached with pinned links, and handles
/// to the lsm maps, pinned next to the shared maps in the instance's pin
/// directory ([`super::bpf_state::PIN_DIR`] for the system daemon).
pub struct LsmState {
    _object: LoadedObject,
    scopes: HashMap<MapData, ScopeKey, ScopeRule>,
    pending_scopes: HashMap<MapData, ScopeKey, PendingScope>,
    unix: HashMap<MapData, UnixKey, GrantExpiry>,
    protected: HashMap<MapData, u32, u8>,
    protected_inodes: HashMap<MapData, ScopeKey, u8>,
    protected_writes: HashMap<MapData, ScopeKey, ProtectedWrite>,
    /// Unix sockets added to every agent's baseline.
    baseline_sockets: Vec<String>,
    /// What loading each hook cost.
    pub loads: Vec<HookLoad>,
}

impl LsmState {
    /// Loads every LSM hook over the maps pinned in `pin_dir` (the shared
    /// maps are created there by `BpfState::start`), attaches and pins the
    /// links, and protects this process from agents.
    pub fn start_in(pin_dir: &Path) -> Result<Self, LsmError> {
        ebpf::ensure_bpffs()?;
        std::fs::create_dir_all(pin_dir).map_err(|e| LsmError::Pin {
            path: pin_dir.to_owned(),
            message: e.to_string(),
        })?;
        let mut obj = ebpf::open_pinned(pin_dir)?;
        let mut loads = Vec::with_capacity(LSM_HOOKS.len());
        for h in LSM_HOOKS {
            let prog = load_hook(&mut obj, h, &mut loads)?;
            let err = |source| LsmError::Program {
                program: h.program,
                source,
            };
            let id = prog.attach().map_err(err)?;
            let link: FdLink = prog.take_link(id).map_err(err)?.into();
            pin_link(pin_dir, link, h.program)?;
        }
        let mut take = |name: &'static str| {
            obj.ebpf.take_map(name).ok_or(LsmError::Map {
                map: name,
                message: "missing from the object".into(),
            })
        };
        let scopes = HashMap::try_from(take(lsm_maps::PATH_SCOPES)?)
            .map_err(map_err(lsm_maps::PATH_SCOPES))?;
        let pending_scopes = HashMap::try_from(take(lsm_maps::PENDING_SCOPES)?)
            .map_err(map_err(lsm_maps::PENDING_SCOPES))?;
        let unix = HashMap::try_from(take(lsm_maps::UNIX_RULES)?)
            .map_err(map_err(lsm_maps::UNIX_RULES))?;
        let protected = HashMap::try_from(take(lsm_maps::PROTECTED_TGIDS)?)
            .map_err(map_err(lsm_maps::PROTECTED_TGIDS))?;
        let protected_inodes = HashMap::try_from(take(lsm_maps::PROTECTED_INODES)?)
            .map_err(map_err(lsm_maps::PROTECTED_INODES))?;
        let protected_writes = HashMap::try_from(take(lsm_maps::PROTECTED_WRITES)?)
            .map_err(map_err(lsm_maps::PROTECTED_WRITES))?;
        let mut me = Self {
            _object: obj,
            scopes,
            pending_scopes,
            unix,
            protected,
            protected_inodes,
            protected_writes,
            baseline_sockets: AGENTD_SOCKETS.iter().map(|s| s.to_string()).collect(),
            loads,
        };
        me.protect(std::process::id())?;
        tracing::info!(hooks = LSM_HOOKS.len(), pin_dir = %pin_dir.display(), "lsm backend attached");
        Ok(me)
    }

    /// Agents may not signal or trace `tgid` (agentd itself).
    pub fn protect(&mut self, tgid: u32) -> Result<(), LsmError> {
        // Entries of dead agentd processes are harmless; keep the map small.
        let stale: Vec<u32> = self
            .protected
            .keys()
            .filter_map(Result::ok)
            .filter(|t| !Path::new(&format!("/proc/{t}")).exists())
            .collect();
        for t in stale {
            let _ = self.protected.remove(&t);
        }
        self.protected
            .insert(tgid, 1, 0)
            .map_err(map_err(lsm_maps::PROTECTED_TGIDS))
    }

    /// Adds a unix socket to every agent baseline installed from now on.
    pub fn allow_baseline_socket(&mut self, path: &str) {
        if !self.baseline_sockets.iter().any(|p| p == path) {
            self.baseline_sockets.push(path.to_string());
        }
    }

    /// Writes `grant`'s scopes and unix destinations. Scopes that cannot be
    /// expressed (missing paths, `/proc/self/...`) are returned, not fatal.
    pub fn install(&mut self, grant: &KernelGrant) -> Result<Vec<scopes::Skipped>, LsmError> {
        let extra: &[String] = if is_baseline(grant.handle) {
            &self.baseline_sockets
        } else {
            &[]
        };
        let (entries, skipped) = scopes::scope_entries_with(grant, extra);
        for (key, rule) in entries {
            self.scopes
                .insert(key, rule, 0)
                .map_err(map_err(lsm_maps::PATH_SCOPES))?;
        }
        for (key, expiry) in scopes::unix_entries(grant, extra) {
            self.unix
                .insert(key, expiry, 0)
                .map_err(map_err(lsm_maps::UNIX_RULES))?;
        }
        for s in &skipped {
            tracing::warn!(handle = grant.handle, path = %s.path.display(), reason = s.reason, "scope not installed");
        }
        if is_baseline(grant.handle) {
            self.install_protected(grant)?;
        } else {
            for (key, w) in protected::write_entries(grant) {
                self.protected_writes
                    .insert(key, w, 0)
                    .map_err(map_err(lsm_maps::PROTECTED_WRITES))?;
            }
        }
        Ok(skipped)
    }

    /// Replaces the protected inodes of `baseline`'s agent with its
    /// protected paths as they are now (stat()ed again: a protected file
    /// replaced under a new inode is protected again from here). The new
    /// entries go in before stale ones leave, so no moment has neither.
    pub fn install_protected(&mut self, baseline: &KernelGrant) -> Result<(), LsmError> {
        let agent_id = baseline.handle as u32;
        let entries = protected::inode_entries(agent_id, &baseline.protected.paths);
        for (key, flags) in &entries {
            self.protected_inodes
                .insert(key, flags, 0)
                .map_err(map_err(lsm_maps::PROTECTED_INODES))?;
        }
        let id = protected_scope_id(agent_id);
        let stale: Vec<ScopeKey> = self
            .protected_inodes
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.call_id == id && !entries.iter().any(|(e, _)| e == k))
            .collect();
        for k in stale {
            let _ = self.protected_inodes.remove(&k);
        }
        tracing::debug!(
            agent_id,
            entries = entries.len(),
            "protected inodes installed"
        );
        Ok(())
    }

    /// Removes agent `agent_id`'s protected inodes (the agent is gone).
    pub fn clear_protected(&mut self, agent_id: u32) {
        let id = protected_scope_id(agent_id);
        let keys: Vec<ScopeKey> = self
            .protected_inodes
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.call_id == id)
            .collect();
        for k in keys {
            let _ = self.protected_inodes.remove(&k);
        }
    }

    /// Publishes `grant`'s path scopes as pending slot `slot` of agent
    /// `agent_id` (`PENDING_SCOPES`), so the file hooks find it in their
    /// scope walk. Call [`Self::clear_pending_scopes`] for the slot first:
    /// a bit left from the slot's previous grant would let the new grant be
    /// claimed where only the old one reached.
    pub fn add_pending_scopes(
        &mut self,
        agent_id: u32,
        slot: u32,
        grant: &KernelGrant,
    ) -> Result<(), LsmError> {
        let (entries, _) = scopes::scope_entries_with(grant, &[]);
        for (key, rule) in entries {
            if rule.access & (ACCESS_READ | ACCESS_WRITE) == 0 {
                continue;
            }
            let key = ScopeKey {
                call_id: pending_scope_id(agent_id),
                ..key
            };
            let mut scope = self.pending_scopes.get(&key, 0).unwrap_or_default();
            scope.add(slot, rule.access);
            self.pending_scopes
                .insert(key, scope, 0)
                .map_err(map_err(lsm_maps::PENDING_SCOPES))?;
        }
        for key in protected::pending_keys(agent_id, grant) {
            let mut w = self.protected_writes.get(&key, 0).unwrap_or_default();
            w.slots |= 1 << slot;
            self.protected_writes
                .insert(key, w, 0)
                .map_err(map_err(lsm_maps::PROTECTED_WRITES))?;
        }
        Ok(())
    }

    /// Withdraws pending slot `slot` of agent `agent_id` from every path
    /// scope (found by scanning, so also what a previous agentd wrote).
    pub fn clear_pending_scopes(&mut self, agent_id: u32, slot: u32) {
        let id = pending_scope_id(agent_id);
        let keys: Vec<ScopeKey> = self
            .pending_scopes
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.call_id == id)
            .collect();
        for key in keys {
            let Ok(mut scope) = self.pending_scopes.get(&key, 0) else {
                continue;
            };
            scope.read_slots &= !(1 << slot);
            scope.write_slots &= !(1 << slot);
            if scope == PendingScope::default() {
                let _ = self.pending_scopes.remove(&key);
            } else {
                let _ = self.pending_scopes.insert(key, scope, 0);
            }
        }
        let writes: Vec<ScopeKey> = self
            .protected_writes
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.call_id == id)
            .collect();
        for key in writes {
            let Ok(mut w) = self.protected_writes.get(&key, 0) else {
                continue;
            };
            w.slots &= !(1 << slot);
            if w.slots == 0 {
                let _ = self.protected_writes.remove(&key);
            } else {
                let _ = self.protected_writes.insert(key, w, 0);
            }
        }
    }

    /// Removes every scope, unix and protected-write entry of `handle`
    /// (also those written by a previous agentd: found by scanning, not
    /// remembered). A baseline's protected inodes stay: the next install
    /// of the agent's baseline replaces them, [`Self::clear_protected`]
    /// removes them with the agent.
    pub fn uninstall(&mut self, handle: u64) {
        let scopes: Vec<ScopeKey> = self
            .scopes
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.call_id == handle)
            .collect();
        for k in scopes {
            let _ = self.scopes.remove(&k);
        }
        let unix: Vec<UnixKey> = self
            .unix
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.call_id == handle)
            .collect();
        for k in unix {
            let _ = self.unix.remove(&k);
        }
        let writes: Vec<ScopeKey> = self
            .protected_writes
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.call_id == handle)
            .collect();
        for k in writes {
            let _ = self.protected_writes.remove(&k);
        }
    }
}

/// Whether `handle` is an agent's baseline (see `agentd_common::baseline_call_id`).
pub fn is_baseline(handle: u64) -> bool {
    handle == baseline_call_id(handle as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_offsets_resolve_on_this_kernel_or_skip() {
        if !std::path::Path::new(crate::enforce::btf_offsets::VMLINUX_BTF).exists() {
            eprintln!(
                "SKIPPED: {} missing (kernel built without BTF)",
                crate::enforce::btf_offsets::VMLINUX_BTF
            );
            return;
        }
        let o = resolve_offsets().expect("offsets");
        // struct path is { mnt, dentry }; the others are pointers deep inside.
        assert_eq!((o.path_mnt, o.path_dentry), (0, 8));
        assert_ne!(o.dentry_parent, 0);
        assert_eq!(o.mount_parent % 8, 0);
        assert_ne!(o.kernfs_node_id, 0);
    }
}
