//! Tamper protection: an agent's process tree may not trace processes
//! outside its own cgroup, may not use the bpf syscall at all, may not
//! signal agentd (the tgids in `PROTECTED_TGIDS`), and may not create
//! io_uring or userfaultfd instances (the "secure" anonymous inodes).
use agentd_common::{Hook, KernelReason};
use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{
    agent, kernel,
    lsm_scope::{self, task_cgroup_id, PROTECTED_TGIDS},
};

const EPERM: i32 = 1;

#[inline(always)]
fn deny(hook: Hook, cgroup_id: u64, agent: &agentd_common::AgentCgroup) -> i32 {
    let call_id = agent::bound_call(agent::current_tgid(), agent);
    agent::report(
        hook,
        cgroup_id,
        agent,
        call_id,
        KernelReason::TamperAttempt,
        core::ptr::null(),
    );
    if agent::blocks(agent, KernelReason::TamperAttempt) {
        -EPERM
    } else {
        0
    }
}

#[inline(always)]
fn protected(task: *const u8) -> bool {
    match unsafe { kernel::task_tgid(task) } {
        Ok(tgid) => unsafe { PROTECTED_TGIDS.get(&tgid) }.is_some(),
        // Unreadable target: treat as protected (fail closed).
        Err(_) => true,
    }
}

/// `ptrace_access_check(child, mode)`: also covers /proc/<pid>/mem and
/// friends, which check ptrace access.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    let child: *const u8 = ctx.arg(0);
    let same_cgroup = unsafe { task_cgroup_id(child) }.is_ok_and(|id| id == cgroup_id);
    if same_cgroup && !protected(child) {
        return 0;
    }
    deny(Hook::Ptrace, cgroup_id, &agent)
}

/// `bpf(cmd, attr, size)`: agents never need the bpf syscall.
#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    deny(Hook::Bpf, cgroup_id, &agent)
}

/// `task_kill(p, info, sig, cred)`: no signals to agentd.
#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    let target: *const u8 = ctx.arg(0);
    if !protected(target) {
        return 0;
    }
    deny(Hook::Signal, cgroup_id, &agent)
}

/// `inode_init_security_anon(inode, name, context_inode)`: on 6.1 only
/// io_uring and userfaultfd create "secure" anonymous inodes. Agents get
/// neither: io_uring is refused by both backends (its operations would be
/// checked here anyway), userfaultfd is a kernel-exploit helper.
#[lsm(hook = "inode_init_security_anon")]
pub fn inode_init_security_anon(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    let name: *const u8 = ctx.arg(1);
    let target = unsafe { lsm_scope::read_ptr(name, lsm_scope::offsets().qstr_name) }
        .unwrap_or(core::ptr::null());
    let call_id = agent::bound_call(agent::current_tgid(), &agent);
    agent::report(
        Hook::IoUring,
        cgroup_id,
        &agent,
        call_id,
        KernelReason::NoGrant,
        target,
    );
    if agent::blocks(&agent, KernelReason::NoGrant) {
        -EPERM
    } else {
        0
    }
}
