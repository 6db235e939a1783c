//! BPF LSM file hooks: `file_open` (read vs write from `f_mode`) and the
//! path hooks for operations that change the tree (unlink, rmdir, mkdir,
//! mknod — which is how `open(O_CREAT)` creates —, rename, link, symlink,
//! truncate). Each needs the matching scope on the file or its directory,
//! of the process's bound call, the agent's baseline, or a pending grant of
//! the agent that the process claims (see `agent::claim_file`).
use agentd_common::{
    lsm::{ACCESS_READ, ACCESS_WRITE},
    AgentCgroup, Counter, FileId, Hook, KernelReason,
};
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};

use crate::{
    agent, kernel,
    lsm_protect::{protected_hit, protected_verdict, ProtectedHit, MOVES_NAME},
    lsm_scope::{self, dentry_name, path_parts, scope_permitted},
    maps::COUNTERS,
};

const EPERM: i32 = 1;
const FMODE_WRITE: u32 = 0x2;
/// `__FMODE_EXEC`: set in `f_flags` by the kernel's own exec opens
/// (`do_open_execat`); open(2) strips it from user flags.
const FMODE_EXEC: u32 = 0x20;

/// Counts an allowed decision that is not sent as an event: baseline
/// accesses (libraries, config) are too frequent to audit one by one.
#[inline(always)]
fn count_allowed() {
    if let Some(slot) = COUNTERS.get_ptr_mut(Counter::Allowed as u32) {
        unsafe { *slot += 1 };
    }
}

/// Reports and returns the verdict for one scope decision.
#[inline(always)]
pub(crate) fn decide(
    hook: Hook,
    cgroup_id: u64,
    agent: &AgentCgroup,
    call_id: u64,
    reason: KernelReason,
    target: *const u8,
) -> i32 {
    let baseline = agentd_common::baseline_call_id(agent.agent_id);
    if reason == KernelReason::Allowed && call_id == baseline {
        count_allowed();
        return 0;
    }
    agent::report(hook, cgroup_id, agent, call_id, reason, target);
    if agent::blocks(agent, reason) {
        -EPERM
    } else {
        0
    }
}

/// Checks `access` on `dentry` (seen through `mnt`) for the current agent task.
#[inline(always)]
pub(crate) fn check(hook: Hook, dentry: *const u8, mnt: *const u8, access: u8) -> i32 {
    check_as(hook, dentry, mnt, access, 0)
}

/// [`check`] for an operation that removes, moves or replaces the name
/// `dentry` (`lsm_protect::MOVES_NAME`).
#[inline(always)]
fn check_moving(hook: Hook, dir: *const u8, dentry: *const u8) -> i32 {
    match unsafe { path_parts(dir) } {
        Ok((_, mnt)) => check_as(hook, dentry, mnt, ACCESS_WRITE, MOVES_NAME),
        Err(_) => check(hook, core::ptr::null(), core::ptr::null(), ACCESS_WRITE),
    }
}

/// [`check`], with `how` the write's `lsm_protect` kind. A write first
/// meets the agent's protected files: one that reaches a protected file is
/// decided by `protected_verdict` alone, never by a scope.
#[inline(always)]
fn check_as(hook: Hook, dentry: *const u8, mnt: *const u8, access: u8, how: u8) -> i32 {
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    check_agent(hook, cgroup_id, agent, dentry, mnt, access, how)
}

/// [`check_as`] for a task already known to be `agent`'s (in `cgroup_id`).
#[inline(always)]
fn check_agent(
    hook: Hook,
    cgroup_id: u64,
    agent: AgentCgroup,
    dentry: *const u8,
    mnt: *const u8,
    access: u8,
    how: u8,
) -> i32 {
    let mut call_id = agent::bound_call(agent::current_tgid(), &agent);
    if hook == Hook::FileOpen
        && access == ACCESS_READ
        && call_id != agentd_common::baseline_call_id(agent.agent_id)
        && unsafe { repeated_read(call_id, &agent, dentry, mnt) }
    {
        return 0;
    }
    let mut reason = KernelReason::NoGrant;
    // Where the allowing scope was, for the next read of the same file.
    let mut hint = 0;
    // Pending slots that would cover the operation, for one claim below.
    let mut pending = 0;
    let mut protected = false;
    if !dentry.is_null() && access & ACCESS_WRITE != 0 {
        let mut found = ProtectedHit {
            hit: FileId { dev: 0, ino: 0 },
            target: FileId { dev: 0, ino: 0 },
            name: FileId { dev: 0, ino: 0 },
        };
        match unsafe { protected_hit(agent.agent_id, dentry, mnt, how, &mut found) } {
            Ok(false) => {}
            Ok(true) => {
                protected = true;
                (reason, pending) = protected_verdict(&agent, call_id, &found);
            }
            // Fail closed: a walk that could not read the tree denies.
            Err(_) => protected = true,
        }
    }
    if !dentry.is_null() && !protected {
        let verdict = unsafe { scope_permitted(call_id, &agent, dentry, mnt, access) };
        reason = verdict.reason;
        pending = verdict.pending;
        if access == ACCESS_READ && reason == KernelReason::Allowed {
            hint = lsm_scope::last_walk_hint();
        }
    }
    // What neither the bound call nor the baseline covers, a pending
    // grant of the agent may: claimed if this process may claim it.
    if reason != KernelReason::Allowed && pending != 0 {
        match agent::claim_file(cgroup_id, &agent, pending) {
            Ok(claimed) => {
                call_id = claimed;
                reason = KernelReason::Allowed;
            }
            Err(KernelReason::NoGrant) if protected => reason = KernelReason::ProtectedFile,
            Err(why) => reason = why,
        }
    }
    let target = if dentry.is_null() {
        core::ptr::null()
    } else {
        unsafe { dentry_name(dentry) }
    };
    if hook == Hook::FileOpen
        && reason == KernelReason::Allowed
        && call_id != agentd_common::baseline_call_id(agent.agent_id)
        && !dentry.is_null()
    {
        // Opens are the hot path: repeats of a file under a grant are
        // counted, not sent (changes to the tree stay one event each).
        if let Ok(Some(id)) = unsafe { lsm_scope::dentry_inode(dentry) } {
            let object = agent::Object {
                a: id.dev,
                b: id.ino,
                port: 0,
                scope_hint: hint,
            };
            agent::report_access(hook, cgroup_id, &agent, call_id, reason, object, target);
            return 0;
        }
    }
    decide(hook, cgroup_id, &agent, call_id, reason, target)
}

/// A read of a file the bound call `call_id` already read on this CPU
/// (its `ACCESS_SUMMARIES` entry): allowed and counted without the scope
/// walk when the scope the entry's hint names still allows it
/// (`lsm_scope::hinted_scope_allows` re-checks it on the file's current
/// path and in `PATH_SCOPES`). False sends the caller down the full
/// decision. Reads only: writes meet the protected files first.
#[inline(always)]
unsafe fn repeated_read(
    call_id: u64,
    agent: &AgentCgroup,
    dentry: *const u8,
    mnt: *const u8,
) -> bool {
    if dentry.is_null() {
        return false;
    }
    let Ok(Some(id)) = (unsafe { lsm_scope::dentry_inode(dentry) }) else {
        return false;
    };
    let object = agent::Object {
        a: id.dev,
        b: id.ino,
        port: 0,
        scope_hint: 0,
    };
    let Some((entry, hint)) = agent::repeat_entry(Hook::FileOpen, call_id, object) else {
        return false;
    };
    if !unsafe { lsm_scope::hinted_scope_allows(call_id, agent, dentry, mnt, ACCESS_READ, hint) } {
        return false;
    }
    agent::count_repeat(entry);
    true
}

/// `path` is a `const struct path *`.
#[inline(always)]
pub(crate) fn check_path(hook: Hook, path: *const u8, access: u8) -> i32 {
    match unsafe { path_parts(path) } {
        Ok((dentry, mnt)) => check(hook, dentry, mnt, access),
        // Fail closed for agents; others never get here with a bad pointer.
        Err(_) => check(hook, core::ptr::null(), core::ptr::null(), access),
    }
}

/// `dentry` in the directory `dir` (a `const struct path *`): uses the
/// directory's mount for the walk.
#[inline(always)]
fn check_in_dir(hook: Hook, dir: *const u8, dentry: *const u8, access: u8) -> i32 {
    match unsafe { path_parts(dir) } {
        Ok((_, mnt)) => check(hook, dentry, mnt, access),
        Err(_) => check(hook, core::ptr::null(), core::ptr::null(), access),
    }
}

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    // Cheap exit for non-agents before touching the file.
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    let file: *const u8 = ctx.arg(0);
    let k = kernel::offsets();
    let Ok(mode) = (unsafe { bpf_probe_read_kernel(file.add(k.file_mode as usize) as *const u32) })
    else {
        return check(
            Hook::FileOpen,
            core::ptr::null(),
            core::ptr::null(),
            ACCESS_WRITE,
        );
    };
    let flags = unsafe {
        bpf_probe_read_kernel(file.add(lsm_scope::offsets().file_flags as usize) as *const u32)
    }
    .unwrap_or(0);
    // The exec gate (bprm_check_security, by device+inode) decides executables.
    if (mode | flags) & FMODE_EXEC != 0 {
        return 0;
    }
    let access = if mode & FMODE_WRITE != 0 {
        ACCESS_WRITE
    } else {
        ACCESS_READ
    };
    // The agent is known: the check does not look it up again.
    match unsafe { path_parts(file.add(k.file_path as usize)) } {
        Ok((dentry, mnt)) => check_agent(Hook::FileOpen, cgroup_id, agent, dentry, mnt, access, 0),
        Err(_) => check(Hook::FileOpen, core::ptr::null(), core::ptr::null(), access),
    }
}

#[lsm(hook = "path_unlink")]
pub fn path_unlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    check_moving(Hook::PathUnlink, ctx.arg(0), ctx.arg(1))
}

#[lsm(hook = "path_rmdir")]
pub fn path_rmdir(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    check_moving(Hook::PathUnlink, ctx.arg(0), ctx.arg(1))
}

#[lsm(hook = "path_mkdir")]
pub fn path_mkdir(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    check_in_dir(Hook::PathCreate, ctx.arg(0), ctx.arg(1), ACCESS_WRITE)
}

/// Also how `open(O_CREAT)` creates a regular file (`may_o_create`).
#[lsm(hook = "path_mknod")]
pub fn path_mknod(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    check_in_dir(Hook::PathCreate, ctx.arg(0), ctx.arg(1), ACCESS_WRITE)
}

#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    check_path(Hook::PathTruncate, ctx.arg(0), ACCESS_WRITE)
}

#[lsm(hook = "path_symlink")]
pub fn path_symlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    check_in_dir(Hook::PathSymlink, ctx.arg(0), ctx.arg(1), ACCESS_WRITE)
}

/// `path_link(old_dentry, new_dir, new_dentry)`: the new name needs write in
/// its directory, and the linked file write scope too — otherwise a hard link
/// would move a read-only file into a writable scope.
#[lsm(hook = "path_link")]
pub fn path_link(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let old_dentry: *const u8 = ctx.arg(0);
    let new_dir: *const u8 = ctx.arg(1);
    let new_dentry: *const u8 = ctx.arg(2);
    let verdict = check_in_dir(Hook::PathLink, new_dir, new_dentry, ACCESS_WRITE);
    if verdict != 0 {
        return verdict;
    }
    check_in_dir(Hook::PathLink, new_dir, old_dentry, ACCESS_WRITE)
}

/// `path_rename(old_dir, old_dentry, new_dir, new_dentry, ...)`: the moved
/// entry and the destination directory both need write; neither the moved
/// entry nor an existing entry it replaces may be (or hold) a protected
/// file. The destination is checked as its new name in the destination
/// directory (a new name has no inode: the walk starts at the directory).
#[lsm(hook = "path_rename")]
pub fn path_rename(ctx: LsmContext) -> i32 {
    let old_dir: *const u8 = ctx.arg(0);
    let old_dentry: *const u8 = ctx.arg(1);
    let new_dir: *const u8 = ctx.arg(2);
    let new_dentry: *const u8 = ctx.arg(3);
    let verdict = check_moving(Hook::PathRename, old_dir, old_dentry);
    if verdict != 0 {
        return verdict;
    }
    check_moving(Hook::PathRename, new_dir, new_dentry)
}
