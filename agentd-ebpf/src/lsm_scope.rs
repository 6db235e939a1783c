//! Path scopes for the BPF LSM hooks: a file is within a scope when the file
//! itself or one of its ancestor directories — walking dentries up, crossing
//! mount points — is a scope directory granted to the call (or baseline),
//! identified by device+inode. No strings are compared, so symlinks,
//! `..`, renamed paths and `/proc/self/fd` reopens all resolve to the real
//! directory chain.
use agentd_common::{
    baseline_call_id,
    lsm::{LsmOffsets, ScopeKey, ScopeRule, UnixKey, MAX_SCOPE_DEPTH},
    AgentCgroup, GrantExpiry, KernelReason,
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel},
    macros::map,
    maps::HashMap,
};

use crate::kernel;

// Pinned by name next to the shared maps (see maps.rs), so grants outlive a
// daemon restart.

/// (call, dev, ino) → read/write scope.
#[map]
pub static PATH_SCOPES: HashMap<ScopeKey, ScopeRule> = HashMap::pinned(65536, 0);

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
    _pad: 0,
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

/// Device+inode of a dentry's inode; `None` for a negative dentry.
#[inline(always)]
unsafe fn dentry_id(dentry: *const u8) -> Result<Option<(u64, u64)>, i32> {
    let k = kernel::offsets();
    unsafe {
        let inode = read_ptr(dentry, offsets().dentry_inode)?;
        if inode.is_null() {
            return Ok(None);
        }
        let ino = bpf_probe_read_kernel(inode.add(k.inode_ino as usize) as *const u64)?;
        let sb = read_ptr(inode, k.inode_sb)?;
        let dev = bpf_probe_read_kernel(sb.add(k.sb_dev as usize) as *const u32)? as u64;
        Ok(Some((dev, ino)))
    }
}

/// One lookup: does `call_id` hold `access` on (dev, ino)?
#[inline(always)]
fn lookup(call_id: u64, dev: u64, ino: u64, access: u8, now: u64) -> Option<KernelReason> {
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

/// Whether `call_id` (or the agent's baseline) holds `access` on `dentry`
/// (seen through `mnt`; null `mnt` stops the walk at the filesystem root).
/// Fails closed: an unreadable kernel struct is a denial.
#[inline(always)]
pub unsafe fn scope_permitted(
    call_id: u64,
    agent: &AgentCgroup,
    dentry: *const u8,
    mnt: *const u8,
    access: u8,
) -> KernelReason {
    let baseline = baseline_call_id(agent.agent_id);
    let walked = unsafe { walk(call_id, baseline, dentry, mnt, access) };
    match walked {
        Ok(KernelReason::Allowed) => KernelReason::Allowed,
        Ok(KernelReason::GrantExpired) => KernelReason::GrantExpired,
        // A bound call's scopes were consulted and missed.
        _ if call_id != baseline => KernelReason::PathOutsideScope,
        _ => KernelReason::NoGrant,
    }
}

unsafe fn walk(
    call_id: u64,
    baseline: u64,
    mut dentry: *const u8,
    mut mnt: *const u8,
    access: u8,
) -> Result<KernelReason, i32> {
    let o = offsets();
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut reason = KernelReason::NoGrant;
    for _ in 0..MAX_SCOPE_DEPTH {
        if let Some((dev, ino)) = unsafe { dentry_id(dentry)? } {
            for id in [call_id, baseline] {
                match lookup(id, dev, ino, access, now) {
                    Some(KernelReason::Allowed) => return Ok(KernelReason::Allowed),
                    Some(r) => reason = r,
                    None => {}
                }
            }
        }
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
                break;
            }
            dentry = unsafe { read_ptr(mount, o.mount_mountpoint)? };
            mnt = unsafe { parent_mount.add(o.mount_mnt as usize) };
        } else if parent == dentry || parent.is_null() {
            break;
        } else {
            dentry = parent;
        }
    }
    Ok(reason)
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
