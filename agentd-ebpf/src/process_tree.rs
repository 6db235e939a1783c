//! Process-tree binding: children inherit their parent's call binding at fork,
//! bindings die with the process, and (seccomp backend) every exec is
//! confirmed against what the supervisor approved.
use agentd_common::{Counter, Hook, KernelReason};
use aya_ebpf::{
    helpers::generated::bpf_send_signal, macros::btf_tracepoint, programs::BtfTracePointContext,
};

use agentd_common::Lineage;

use crate::{
    agent, kernel,
    maps::{BINDINGS, EXEC_EXPECT, LINEAGE},
};

const SIGKILL: u32 = 9;

/// A forked child inherits its parent's binding (`sched_process_fork(parent, child)`),
/// and every new agent process gets a lineage record (creator, start time)
/// for the claim rule of pending grants.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_process_fork(&ctx);
    0
}

fn try_sched_process_fork(ctx: &BtfTracePointContext) -> Result<(), i64> {
    if agent::current_agent().is_none() {
        return Ok(());
    }
    let parent_tgid = agent::current_tgid();
    let child: *const u8 = ctx.arg(1);
    let child_tgid = unsafe { kernel::task_tgid(child) }.map_err(|e| e as i64)?;
    if child_tgid == parent_tgid {
        // A new thread: same process, same lineage and binding.
        return Ok(());
    }
    let start_ns = unsafe { kernel::task_start_boottime(child) }.map_err(|e| e as i64)?;
    let lineage = Lineage {
        start_ns,
        creator: parent_tgid,
        _pad: 0,
    };
    LINEAGE.insert(&child_tgid, &lineage, 0)?;
    if let Some(binding) = (unsafe { BINDINGS.get(&parent_tgid) }).copied() {
        BINDINGS.insert(&child_tgid, &binding, 0)?;
    }
    Ok(())
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = ctx;
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    // Only the group leader's exit ends the process.
    if (pid_tgid >> 32) as u32 == pid_tgid as u32 {
        let tgid = (pid_tgid >> 32) as u32;
        let _ = BINDINGS.remove(&tgid);
        let _ = EXEC_EXPECT.remove(&tgid);
        let _ = LINEAGE.remove(&tgid);
    }
    0
}

/// Confirms, after the point of no return but before the first user
/// instruction, that the file being executed is the one that was approved.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    try_sched_process_exec(&ctx);
    0
}

fn try_sched_process_exec(ctx: &BtfTracePointContext) {
    let Some((cgroup_id, agent)) = agent::current_agent() else {
        return;
    };
    let tgid = agent::current_tgid();
    let call_id = agent::bound_call(tgid, &agent);
    let bprm: *const u8 = ctx.arg(2);
    let filename = unsafe { kernel::bprm_filename(bprm) }.unwrap_or(core::ptr::null());
    let file = unsafe { kernel::bprm_file(bprm).and_then(|f| kernel::file_id(f)) };
    let reason = match (file, unsafe { EXEC_EXPECT.get(&tgid) }.copied()) {
        (Ok(file), Some(expect)) if expect.file == file => KernelReason::Allowed,
        (Ok(file), _) => match agent::exec_permitted(call_id, &agent, file) {
            KernelReason::Allowed => KernelReason::Allowed,
            _ => KernelReason::ExecMismatch,
        },
        (Err(_), _) => KernelReason::ExecMismatch,
    };
    let _ = EXEC_EXPECT.remove(&tgid);
    // An allowed exec was already audited by whoever approved it (the
    // supervisor); only mismatches become events.
    if reason == KernelReason::Allowed {
        agent::count_only(reason);
        return;
    }
    agent::report(
        Hook::ExecVerify,
        cgroup_id,
        &agent,
        call_id,
        reason,
        filename,
    );
    if agent::blocks(&agent, reason) {
        agent::count(Counter::ExecKilled);
        unsafe { bpf_send_signal(SIGKILL) };
    }
}
