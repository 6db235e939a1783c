//! BPF LSM `bprm_check_security`: an agent process may exec a file only if
//! its bound call (or the agent's baseline) grants that device+inode.
use agentd_common::{Hook, KernelReason};
use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{agent, kernel};

const EPERM: i32 = 1;

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    try_bprm_check_security(&ctx)
}

fn try_bprm_check_security(ctx: &LsmContext) -> i32 {
    // A previous LSM program's verdict stands.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return 0;
    };
    let bprm: *const u8 = ctx.arg(0);
    let tgid = agent::current_tgid();
    let call_id = agent::bound_call(tgid, &agent);
    let filename = unsafe { kernel::bprm_filename(bprm) }.unwrap_or(core::ptr::null());
    // Fail closed: an unreadable file identity is a denial.
    let reason = match unsafe { kernel::bprm_file(bprm).and_then(|f| kernel::file_id(f)) } {
        Ok(file) => agent::exec_permitted(call_id, &agent, file),
        Err(_) => KernelReason::NoGrant,
    };
    agent::report(Hook::Exec, cgroup_id, &agent, call_id, reason, filename);
    if agent::blocks(&agent, reason) {
        -EPERM
    } else {
        0
    }
}
