//! Protected files on the lsm backend: an agent's identity files and
//! start-up scripts (the policy's `[protected]` paths), by device+inode.
//! Every write-side file hook asks here before its scope walk: a write
//! that reaches a protected file — or a protected directory's subtree, or
//! (removing, renaming, replacing) a directory holding one — is covered
//! only by a grant naming that file as a protected write, never by the
//! baseline or a write scope that merely covers it.
use agentd_common::{
    lsm::{
        pending_scope_id, protected_scope_id, ProtectedWrite, ScopeKey, MAX_SCOPE_DEPTH,
        PROTECTED_ANY, PROTECTED_HOLDER, PROTECTED_SELF,
    },
    AgentCgroup, FileId, KernelReason,
};
use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::map, maps::HashMap};

use crate::lsm_scope::{dentry_inode, step_up};

/// (agent's protected id, dev, ino) → `PROTECTED_*` flags.
#[map]
pub static PROTECTED_INODES: HashMap<ScopeKey, u8> = HashMap::pinned(16384, 0);

/// (call or agent's pending id, dev, ino of a protected file) → who may write it.
#[map]
pub static PROTECTED_WRITES: HashMap<ScopeKey, ProtectedWrite> = HashMap::pinned(4096, 0);

/// What a protected-file check found: the protected inode the write
/// reaches (`hit`) and the written object itself (`target`, zero when the
/// name is new).
#[derive(Clone, Copy)]
pub struct ProtectedHit {
    pub hit: FileId,
    pub target: FileId,
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

/// The walk itself: the written object and each directory above it.
unsafe fn walk(
    id: u64,
    mut dentry: *const u8,
    mut mnt: *const u8,
    how: u8,
    out: &mut ProtectedHit,
) -> Result<bool, i32> {
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
    for file in [found.hit, found.target] {
        if let Some(w) = write_entry(call_id, file) {
            if w.expires_at_ns == 0 || w.expires_at_ns > now {
                return (KernelReason::Allowed, 0);
            }
            reason = KernelReason::GrantExpired;
        }
    }
    let pending = pending_scope_id(agent.agent_id);
    let mut slots = 0;
    for file in [found.hit, found.target] {
        slots |= write_entry(pending, file).map_or(0, |w| w.slots);
    }
    (reason, slots)
}
