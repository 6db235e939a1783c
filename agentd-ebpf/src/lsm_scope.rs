//! Path scopes for the BPF LSM hooks: a file is within a scope when the file
//! itself or one of its ancestor directories — walking dentries up, crossing
//! mount points — is a scope directory granted to the call (or baseline),
//! identified by device+inode. No strings are compared, so symlinks,
//! `..`, renamed paths and `/proc/self/fd` reopens all resolve to the real
//! directory chain.
use agentd_common::{
    access::{hint_level, scope_hint, SCOPE_HINT_LEVELS},
    baseline_call_id,
    lsm::{
        pending_scope_id, LsmOffsets, PendingScope, ScopeKey, ScopeRule, UnixKey, MAX_SCOPE_DEPTH,
        PROC_SELF_INO, PROC_SUPER_MAGIC,
    },
    AgentCgroup, GrantExpiry, KernelReason,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel,
    },
    macros::map,
    maps::{HashMap, PerCpuArray},
};

use crate::kernel;

// Pinned by name next to the shared maps (see maps.rs), so grants outlive a
// daemon restart.

/// (call, dev, ino) → read/write scope.
#[map]
pub static PATH_SCOPES: HashMap<ScopeKey, ScopeRule> = HashMap::pinned(65536, 0);

/// (agent's pending id, dev, ino) → the pending slots scoped there.
#[map]
pub static PENDING_SCOPES: HashMap<ScopeKey, PendingScope> = HashMap::pinned(65536, 0);

/// (call, unix path hash) → connect permission.
#[map]
pub static UNIX_RULES: HashMap<UnixKey, GrantExpiry> = HashMap::pinned(4096, 0);

/// tgids agents may not signal or trace (agentd itself).
#[map]
pub static PROTECTED_TGIDS: HashMap<u32, u8> = HashMap::pinned(64, 0);

/// Filled in by the loader before load, like `KERNEL_OFFSETS`.
#[unsafe(no_mangle)]
static LSM_OFFSETS: LsmOffsets = LsmOffsets {
    path_mnt: 0,
    path_dentry: 0,
    dentry_parent: 0,
    dentry_inode: 0,
    dentry_name: 0,
    vfsmount_root: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    msghdr_name: 0,
    msghdr_namelen: 0,
    file_flags: 0,
    qstr_name: 0,
    sb_magic: 0,
    proc_inode_vfs_inode: 0,
    proc_inode_pid: 0,
    pid_numbers: 0,
    unix_sock_path: 0,
    socket_sk: 0,
    sock_family: 0,
    sock_peer_pid: 0,
    task_cred: 0,
    task_real_cred: 0,
    setattr_idmap: 0,
};

#[inline(always)]
pub fn offsets() -> LsmOffsets {
    // Volatile: patched into .rodata at load time.
    unsafe { core::ptr::read_volatile(&LSM_OFFSETS) }
}

#[inline(always)]
pub unsafe fn read_ptr(base: *const u8, offset: u32) -> Result<*const u8, i32> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const *const u8) }
}

/// `path->dentry` and `path->mnt`.
#[inline(always)]
pub unsafe fn path_parts(path: *const u8) -> Result<(*const u8, *const u8), i32> {
    let o = offsets();
    unsafe { Ok((read_ptr(path, o.path_dentry)?, read_ptr(path, o.path_mnt)?)) }
}

/// The component name of a dentry (a kernel string), for event targets.
#[inline(always)]
pub unsafe fn dentry_name(dentry: *const u8) -> *const u8 {
    unsafe { read_ptr(dentry, offsets().dentry_name) }.unwrap_or(core::ptr::null())
}

/// A dentry's inode, as the scope walk reads it.
#[derive(Clone, Copy)]
pub struct InodeId {
    pub inode: *const u8,
    pub sb: *const u8,
    pub dev: u64,
    pub ino: u64,
}

/// The inode behind a dentry; `None` for a negative dentry.
#[inline(always)]
pub unsafe fn dentry_inode(dentry: *const u8) -> Result<Option<InodeId>, i32> {
    let k = kernel::offsets();
    unsafe {
        let inode = read_ptr(dentry, offsets().dentry_inode)?;
        if inode.is_null() {
            return Ok(None);
        }
        let ino = bpf_probe_read_kernel(inode.add(k.inode_ino as usize) as *const u64)?;
        let sb = read_ptr(inode, k.inode_sb)?;
        let dev = bpf_probe_read_kernel(sb.add(k.sb_dev as usize) as *const u32)? as u64;
        Ok(Some(InodeId {
            inode,
            sb,
            dev,
            ino,
        }))
    }
}

/// The pid number (initial namespace) of a `struct pid *`.
#[inline(always)]
pub unsafe fn pid_nr(pid: *const u8) -> Result<u32, i32> {
    unsafe {
        bpf_probe_read_kernel(pid.add(offsets().pid_numbers as usize) as *const i32)
            .map(|nr| nr as u32)
    }
}

/// Whether a procfs inode belongs to the calling process's own
/// `/proc/<pid>` tree (or its own thread's `/proc/<pid>/task/<tid>`): procfs
/// keeps the owning `struct pid` in every per-process inode.
#[inline(always)]
unsafe fn is_own_proc_inode(id: &InodeId) -> bool {
    let o = offsets();
    unsafe {
        match bpf_probe_read_kernel(id.sb.add(o.sb_magic as usize) as *const u64) {
            Ok(magic) if magic == PROC_SUPER_MAGIC => {}
            _ => return false,
        }
        let proc_inode = id.inode.sub(o.proc_inode_vfs_inode as usize);
        let Ok(pid) = read_ptr(proc_inode, o.proc_inode_pid) else {
            return false;
        };
        if pid.is_null() {
            return false;
        }
        let Ok(nr) = pid_nr(pid) else {
            return false;
        };
        let pid_tgid = bpf_get_current_pid_tgid();
        nr == (pid_tgid >> 32) as u32 || nr == pid_tgid as u32
    }
}

/// Whether the kernel is acting with borrowed credentials for the current
/// task (`override_creds`: overlayfs copy-up, for one): such inode changes
/// are the kernel's, not the agent's, and the syscall that caused them was
/// already decided.
#[inline(always)]
pub fn creds_overridden() -> bool {
    let o = offsets();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    match unsafe {
        (
            read_ptr(task, o.task_cred),
            read_ptr(task, o.task_real_cred),
        )
    } {
        (Ok(cred), Ok(real)) => cred != real,
        _ => false,
    }
}

/// One lookup: does `call_id` hold `access` on (dev, ino)?
#[inline(always)]
pub fn lookup(call_id: u64, dev: u64, ino: u64, access: u8, now: u64) -> Option<KernelReason> {
    let key = ScopeKey { call_id, dev, ino };
    let rule = unsafe { PATH_SCOPES.get(&key) }?;
    if rule.access & access == 0 {
        return None;
    }
    if rule.expires_at_ns == 0 || rule.expires_at_ns > now {
        Some(KernelReason::Allowed)
    } else {
        Some(KernelReason::GrantExpired)
    }
}

/// What one scope walk found for a file operation.
pub struct ScopeVerdict {
    /// The bound call's or the baseline's verdict.
    pub reason: KernelReason,
    /// The agent's pending slots (a bit each) whose scopes hold the access
    /// on the file or a directory above it; only filled when `reason` is
    /// not `Allowed` (a claim is only looked for then).
    pub pending: u32,
}

/// Per-CPU scratch: where this CPU's last walk found the scope that
/// allowed it (`agentd_common::access::scope_hint`; 0 = not allowed,
/// allowed through `/proc/self`, or further up than a hint can name). In
/// map memory, not on the stack: the verifier does not track its value
/// per path — a constant per level would make it verify everything after
/// the walk once per level (`path_link` went past the 1M-instruction
/// limit). A hook's decision runs to its end on one CPU; a hint is never
/// trusted anyway ([`hinted_scope_allows`]).
#[map]
pub static WALK_HINT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The hint this CPU's last walk left ([`WALK_HINT`]).
#[inline(always)]
pub fn last_walk_hint() -> u8 {
    WALK_HINT.get(0).map_or(0, |h| *h as u8)
}

#[inline(always)]
fn set_walk_hint(hint: u8) {
    if let Some(h) = WALK_HINT.get_ptr_mut(0) {
        unsafe { *h = hint as u32 };
    }
}

/// Whether `call_id` (or the agent's baseline) holds `access` on `dentry`
/// (seen through `mnt`; null `mnt` stops the walk at the filesystem root),
/// and which of the agent's pending grants would. Fails closed: an
/// unreadable kernel struct is a denial and covers nothing.
#[inline(always)]
pub unsafe fn scope_permitted(
    call_id: u64,
    agent: &AgentCgroup,
    dentry: *const u8,
    mnt: *const u8,
    access: u8,
) -> ScopeVerdict {
    let baseline = baseline_call_id(agent.agent_id);
    let asked = WalkFor {
        call_id,
        baseline,
        pending_id: pending_scope_id(agent.agent_id),
        access,
    };
    let mut pending = 0;
    let walked = unsafe { walk(&asked, dentry, mnt, &mut pending) };
    let reason = match walked {
        Ok(KernelReason::Allowed) => KernelReason::Allowed,
        Ok(KernelReason::GrantExpired) => KernelReason::GrantExpired,
        // A bound call's scopes were consulted and missed.
        _ if call_id != baseline => KernelReason::PathOutsideScope,
        _ => KernelReason::NoGrant,
    };
    ScopeVerdict {
        reason,
        pending: if walked.is_ok() { pending } else { 0 },
    }
}

/// Whether the scope a hint names (`agentd_common::access::scope_hint`:
/// `level` directories above the file, the bound call's or the
/// baseline's) holds `access` on `dentry` now. The hint only says where to
/// look: the path is stepped up again from the file as it is now (renames,
/// links and mounts included) and the directory found there is asked in
/// `PATH_SCOPES` (revocation, expiry, baseline changes included), so a
/// true answer is a scope the full walk would also have found. Anything
/// unreadable, or a path shorter than the hint, is false (the caller then
/// walks).
#[inline(always)]
pub unsafe fn hinted_scope_allows(
    call_id: u64,
    agent: &AgentCgroup,
    dentry: *const u8,
    mnt: *const u8,
    access: u8,
    hint: u8,
) -> bool {
    let Some((level, from_baseline)) = hint_level(hint) else {
        return false;
    };
    let call = if from_baseline {
        baseline_call_id(agent.agent_id)
    } else {
        call_id
    };
    let (mut d, mut m) = (dentry, mnt);
    let mut i = 0;
    while i < SCOPE_HINT_LEVELS {
        if i >= level {
            break;
        }
        match unsafe { step_up(d, m) } {
            Ok(Some((up, up_mnt))) => (d, m) = (up, up_mnt),
            _ => return false,
        }
        i += 1;
    }
    let Ok(Some(id)) = (unsafe { dentry_inode(d) }) else {
        return false;
    };
    let now = unsafe { bpf_ktime_get_boot_ns() };
    lookup(call, id.dev, id.ino, access, now) == Some(KernelReason::Allowed)
}

/// The pending slots holding `access` at one level of the walk.
#[inline(always)]
fn pending_at(pending_id: u64, id: &InodeId, own_proc: bool, access: u8) -> u32 {
    let key = ScopeKey {
        call_id: pending_id,
        dev: id.dev,
        ino: id.ino,
    };
    let mut slots = unsafe { PENDING_SCOPES.get(&key) }.map_or(0, |p| p.slots(access));
    if own_proc {
        let key = ScopeKey {
            call_id: pending_id,
            dev: id.dev,
            ino: PROC_SELF_INO,
        };
        slots |= unsafe { PENDING_SCOPES.get(&key) }.map_or(0, |p| p.slots(access));
    }
    slots
}

/// What one walk looks for (one argument: BPF functions take at most five).
#[derive(Clone, Copy)]
struct WalkFor {
    call_id: u64,
    baseline: u64,
    pending_id: u64,
    access: u8,
}

unsafe fn walk(
    asked: &WalkFor,
    mut dentry: *const u8,
    mut mnt: *const u8,
    pending: &mut u32,
) -> Result<KernelReason, i32> {
    let WalkFor {
        call_id,
        baseline,
        pending_id,
        access,
    } = *asked;
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut reason = KernelReason::NoGrant;
    set_walk_hint(0);
    for level in 0..MAX_SCOPE_DEPTH {
        if let Some(id) = unsafe { dentry_inode(dentry)? } {
            // A `/proc/self` scope covers only the asking process's own pid directory.
            let own_proc = unsafe { is_own_proc_inode(&id) };
            for (i, call) in [call_id, baseline].into_iter().enumerate() {
                // Unbound, the call is the baseline: ask it once.
                if i == 1 && call_id == baseline {
                    break;
                }
                let hit = lookup(call, id.dev, id.ino, access, now);
                if hit == Some(KernelReason::Allowed) {
                    set_walk_hint(scope_hint(level, call == baseline));
                    return Ok(KernelReason::Allowed);
                }
                if let Some(r) = hit {
                    reason = r;
                }
                if hit.is_none() && own_proc {
                    // Allowed through `/proc/self`: no hint (the hint's
                    // re-check asks the directory's own inode only).
                    match lookup(call, id.dev, PROC_SELF_INO, access, now) {
                        Some(KernelReason::Allowed) => return Ok(KernelReason::Allowed),
                        Some(r) => reason = r,
                        None => {}
                    }
                }
            }
            *pending |= pending_at(pending_id, &id, own_proc, access);
        }
        match unsafe { step_up(dentry, mnt)? } {
            Some((d, m)) => (dentry, mnt) = (d, m),
            None => break,
        }
    }
    Ok(reason)
}

/// One level up from `dentry` (seen through `mnt`; null `mnt` stops at
/// the filesystem root): its parent directory, or — at a mount's root —
/// the mount point in the parent mount. `None` at the top.
#[inline(always)]
pub unsafe fn step_up(
    dentry: *const u8,
    mnt: *const u8,
) -> Result<Option<(*const u8, *const u8)>, i32> {
    let o = offsets();
    let parent = unsafe { read_ptr(dentry, o.dentry_parent)? };
    let mount_root = if mnt.is_null() {
        core::ptr::null()
    } else {
        unsafe { read_ptr(mnt, o.vfsmount_root)? }
    };
    if dentry == mount_root {
        // Cross into the parent mount at this mount's mount point.
        let mount = unsafe { mnt.sub(o.mount_mnt as usize) };
        let parent_mount = unsafe { read_ptr(mount, o.mount_parent)? };
        if parent_mount == mount {
            return Ok(None);
        }
        let point = unsafe { read_ptr(mount, o.mount_mountpoint)? };
        Ok(Some((point, unsafe {
            parent_mount.add(o.mount_mnt as usize)
        })))
    } else if parent == dentry || parent.is_null() {
        Ok(None)
    } else {
        Ok(Some((parent, mnt)))
    }
}

/// The cgroup v2 id of `task` (`task->cgroups->dfl_cgrp->kn->id`).
#[inline(always)]
pub unsafe fn task_cgroup_id(task: *const u8) -> Result<u64, i32> {
    let o = offsets();
    unsafe {
        let css_set = read_ptr(task, o.task_cgroups)?;
        let cgroup = read_ptr(css_set, o.css_set_dfl_cgrp)?;
        let kn = read_ptr(cgroup, o.cgroup_kn)?;
        bpf_probe_read_kernel(kn.add(o.kernfs_node_id as usize) as *const u64)
    }
}
