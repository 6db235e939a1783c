//! Protected files on the lsm backend: an agent's identity files and
//! start-up scripts (the policy's `[protected]` paths), by device+inode.
//! Every write-side file hook asks here before its scope walk: a write
//! that reaches a protected file — or a protected directory's subtree, or
//! (removing, renaming, replacing) a directory holding one — is covered
//! only by a grant naming that file as a protected write, never by the
//! baseline or a write scope that merely covers it. A protected path is
//! known by its inode and by its name in its directory (a stand-in inode,
//! `agentd_common::lsm::protected_name_ino`): so it cannot be created
//! while missing, and stays protected when replaced under a new inode.
use agentd_common::{
    lsm::{
        fnv1a_step, pending_scope_id, protected_name_ino, protected_scope_id, ProtectedWrite,
        ScopeKey, MAX_SCOPE_DEPTH, PROTECTED_ANY, PROTECTED_HOLDER, PROTECTED_NAME_BYTES,
        PROTECTED_SELF, UNIX_HASH_START,
    },
    AgentCgroup, FileId, KernelReason,
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes},
    macros::map,
    maps::HashMap,
};

use crate::lsm_scope::{dentry_inode, dentry_name, offsets, read_ptr, step_up};

/// (agent's protected id, dev, ino) → `PROTECTED_*` flags.
#[map]
pub static PROTECTED_INODES: HashMap<ScopeKey, u8> = HashMap::pinned(16384, 0);

/// (call or agent's pending id, dev, ino of a protected file) → who may write it.
#[map]
pub static PROTECTED_WRITES: HashMap<ScopeKey, ProtectedWrite> = HashMap::pinned(4096, 0);

/// What a protected-file check found: the protected inode (or name) the
/// write reaches (`hit`), the written object itself (`target`, zero when
/// the name is new) and its name's stand-in id (`name`).
#[derive(Clone, Copy)]
pub struct ProtectedHit {
    pub hit: FileId,
    pub target: FileId,
    pub name: FileId,
}

/// The operation removes, moves or replaces the name (unlink, rmdir,
/// rename): a directory holding a protected path is protected from it too.
pub const MOVES_NAME: u8 = 1;

/// Whether a write to `dentry` (seen through `mnt`) reaches one of the
/// agent's protected paths. Fails closed: an unreadable kernel struct is
/// an error, which the caller turns into a denial.
#[inline(always)]
pub unsafe fn protected_hit(
    agent_id: u32,
    dentry: *const u8,
    mnt: *const u8,
    how: u8,
    out: &mut ProtectedHit,
) -> Result<bool, i32> {
    let id = protected_scope_id(agent_id);
    let any = ScopeKey {
        call_id: id,
        dev: 0,
        ino: 0,
    };
    if unsafe { PROTECTED_INODES.get(&any) }.is_none_or(|f| *f & PROTECTED_ANY == 0) {
        return Ok(false);
    }
    unsafe { walk(id, dentry, mnt, how, out) }
}

/// The stand-in id of `dentry`'s name in its parent directory (zero when
/// either cannot be read: the inode checks still apply).
unsafe fn name_id(dentry: *const u8, out: &mut FileId) -> Result<(), i32> {
    let parent = unsafe { read_ptr(dentry, offsets().dentry_parent)? };
    let Some(dir) = (unsafe { dentry_inode(parent)? }) else {
        return Ok(());
    };
    let name = unsafe { dentry_name(dentry) };
    if name.is_null() {
        return Ok(());
    }
    let mut buf = [0u8; PROTECTED_NAME_BYTES + 1];
    if unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }.is_err() {
        return Ok(());
    }
    let mut h = UNIX_HASH_START;
    for &b in buf.iter().take(PROTECTED_NAME_BYTES) {
        if b == 0 {
            break;
        }
        h = fnv1a_step(h, b);
    }
    *out = FileId {
        dev: dir.dev,
        ino: protected_name_ino(dir.ino, h),
    };
    Ok(())
}

/// The walk itself: the written name, then the object and each directory
/// above it.
unsafe fn walk(
    id: u64,
    mut dentry: *const u8,
    mut mnt: *const u8,
    how: u8,
    out: &mut ProtectedHit,
) -> Result<bool, i32> {
    unsafe { name_id(dentry, &mut out.name)? };
    if out.name.dev != 0 || out.name.ino != 0 {
        let key = ScopeKey {
            call_id: id,
            dev: out.name.dev,
            ino: out.name.ino,
        };
        if unsafe { PROTECTED_INODES.get(&key) }.is_some_and(|f| *f & PROTECTED_SELF != 0) {
            out.hit = out.name;
            return Ok(true);
        }
    }
    let mut level = 0;
    while level < MAX_SCOPE_DEPTH {
        if let Some(inode) = unsafe { dentry_inode(dentry)? } {
            let here = FileId {
                dev: inode.dev,
                ino: inode.ino,
            };
            if level == 0 {
                out.target = here;
            }
            let key = ScopeKey {
                call_id: id,
                dev: inode.dev,
                ino: inode.ino,
            };
            if let Some(flags) = unsafe { PROTECTED_INODES.get(&key) } {
                let moved = level == 0 && how & MOVES_NAME != 0;
                if *flags & PROTECTED_SELF != 0 || (moved && *flags & PROTECTED_HOLDER != 0) {
                    out.hit = here;
                    return Ok(true);
                }
            }
        }
        level += 1;
        match unsafe { step_up(dentry, mnt)? } {
            Some((d, m)) => (dentry, mnt) = (d, m),
            None => break,
        }
    }
    Ok(false)
}

/// One lookup: does `call_id` (a handle, or an agent's pending id) name
/// `file` as a protected write?
#[inline(always)]
fn write_entry(call_id: u64, file: FileId) -> Option<ProtectedWrite> {
    let key = ScopeKey {
        call_id,
        dev: file.dev,
        ino: file.ino,
    };
    unsafe { PROTECTED_WRITES.get(&key) }.copied()
}

/// The verdict on a write that reaches a protected file under `call_id`
/// (the bound call or the baseline): `Allowed` when the call's grant names
/// the protected file (or the written file itself) as a protected write,
/// else `ProtectedFile` (or `GrantExpired`) with the agent's pending slots
/// whose grants name it — allowed only if the process claims one of them
/// (the caller's one `claim_file`, shared with the scope path).
#[inline(always)]
pub fn protected_verdict(
    agent: &AgentCgroup,
    call_id: u64,
    found: &ProtectedHit,
) -> (KernelReason, u32) {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut reason = KernelReason::ProtectedFile;
    for file in [found.hit, found.target, found.name] {
        if let Some(w) = write_entry(call_id, file) {
            if w.expires_at_ns == 0 || w.expires_at_ns > now {
                return (KernelReason::Allowed, 0);
            }
            reason = KernelReason::GrantExpired;
        }
    }
    let pending = pending_scope_id(agent.agent_id);
    let mut slots = 0;
    for file in [found.hit, found.target, found.name] {
        slots |= write_entry(pending, file).map_or(0, |w| w.slots);
    }
    (reason, slots)
}
