//! BPF LSM hooks that keep an agent inside the filesystem view its scopes
//! were computed for: no new user namespaces (an unprivileged user gets
//! mount rights only inside one, and a bind mount over a scope directory
//! would move the scope walk onto the agent's own tree) and no mount
//! operations at all.
use agentd_common::{AgentCgroup, Hook, KernelReason};
use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{
    agent,
    lsm_scope::{dentry_name, path_parts},
};

const EPERM: i32 = 1;

/// Reports a refused namespace or mount operation and returns the verdict.
#[inline(always)]
fn refuse(hook: Hook, cgroup_id: u64, agent: &AgentCgroup, target: *const u8) -> i32 {
    let call_id = agent::bound_call(agent::current_tgid(), agent);
    agent::report(
        hook,
        cgroup_id,
        agent,
        call_id,
        KernelReason::TamperAttempt,
        target,
    );
    if agent::blocks(agent, KernelReason::TamperAttempt) {
        -EPERM
    } else {
        0
    }
}

/// The last component of a `struct path *`, for the audit target.
#[inline(always)]
fn path_target(path: *const u8) -> *const u8 {
    match unsafe { path_parts(path) } {
        Ok((dentry, _)) if !dentry.is_null() => unsafe { dentry_name(dentry) },
        _ => core::ptr::null(),
    }
}

/// `userns_create(cred)`: agents never get a user namespace (`unshare`,
/// `clone(CLONE_NEWUSER)`); runtimes' own sandboxes that need one
/// (bubblewrap) therefore cannot start inside an agent.
#[lsm(hook = "userns_create")]
pub fn userns_create(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    refuse(Hook::Userns, cgroup_id, &agent, core::ptr::null())
}

/// `sb_mount(dev_name, path, type, flags, data)`: every mount(2) operation
/// (new mounts, bind mounts, remounts, propagation changes, moves).
#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(5);
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    refuse(Hook::Mount, cgroup_id, &agent, path_target(ctx.arg(1)))
}

/// `move_mount(from_path, to_path)`: attaching a detached tree
/// (`open_tree`/`fsmount`) or moving a mount with the new mount API.
#[lsm(hook = "move_mount")]
pub fn move_mount(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    refuse(Hook::Mount, cgroup_id, &agent, path_target(ctx.arg(1)))
}
