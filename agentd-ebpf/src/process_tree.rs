//! Process-tree binding: children inherit their parent's call binding at fork,
//! bindings die with the process, and (seccomp backend) every exec is
//! confirmed against what the supervisor approved.
use agentd_common::{Counter, Hook, KernelReason, EXEC_ARG_BYTES};
use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_probe_read_user, bpf_probe_read_user_str, bpf_send_signal},
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};

use agentd_common::{Lineage, PendingKey, ProcessCall, PENDING_SLOTS};

use crate::{
    agent, kernel,
    maps::{ARGS_TO_CHECK, BINDINGS, CLAIMANTS, EXEC_ARGS, EXEC_EXPECT, LINEAGE, PENDING},
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
    let Some((_, agent)) = agent::current_agent() else {
        return Ok(());
    };
    let parent_tgid = agent::current_tgid();
    let child: *const u8 = ctx.arg(1);
    let child_tgid = unsafe { kernel::task_tgid(child) }.map_err(|e| e as i64)?;
    if child_tgid == parent_tgid {
        // A new thread: same process, same lineage and binding.
        return Ok(());
    }
    let start_ns = unsafe { kernel::task_start_boottime(child) }.map_err(|e| e as i64)?;
    inherit_claims(agent.agent_id, parent_tgid, child_tgid, start_ns);
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

/// A child created after a pending grant's decision by a process that may
/// claim the grant may claim it too (`CLAIMANTS`): the claim rule's walk up
/// the creator path, done once here instead of at every file claim.
#[inline(always)]
fn inherit_claims(agent_id: u32, parent_tgid: u32, child_tgid: u32, child_start: u64) {
    let parent_start = agent::started_at(parent_tgid);
    let mut slot = 0;
    while slot < PENDING_SLOTS {
        let key = PendingKey { agent_id, slot };
        slot += 1;
        let Some(grant) = (unsafe { PENDING.get(&key) }) else {
            continue;
        };
        if child_start < grant.decided_at_ns
            || !agent::is_claimant(grant.call_id, parent_tgid, parent_start)
        {
            continue;
        }
        let child = ProcessCall {
            call_id: grant.call_id,
            tgid: child_tgid,
            _pad: 0,
        };
        // Best effort: without the record the child cannot claim (fails closed).
        let _ = CLAIMANTS.insert(&child, &child_start, 0);
    }
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
        let _ = ARGS_TO_CHECK.remove(&tgid);
    }
    0
}

/// Per-CPU buffer for one argv check (map memory: too large for the stack).
#[repr(C)]
pub struct ArgvScratch {
    pub buf: [u8; ARGV0_MAX],
}

/// Longest argv[0] an argv check reads past (a longer one fails the check).
const ARGV0_MAX: usize = 4096;

#[map]
static ARGV_SCRATCH: PerCpuArray<ArgvScratch> = PerCpuArray::with_max_entries(1, 0);

/// Whether the calling process's new argv, after argv[0], is byte for byte
/// the arguments grant `call_id` names (`EXEC_ARGS`). Fails closed.
#[inline(always)]
fn argv_matches(call_id: u64) -> bool {
    let Some(want) = (unsafe { EXEC_ARGS.get(&call_id) }) else {
        return false;
    };
    if !want.verifiable() {
        return false;
    }
    let Some(scratch) = ARGV_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let Ok((start, end)) = (unsafe { kernel::current_arg_area() }) else {
        return false;
    };
    let buf = unsafe { (*scratch).buf.as_mut_ptr() };
    // argv[0]'s length with its NUL (the helper scans; no loop to verify).
    let n0 = unsafe {
        bpf_probe_read_user_str(buf as *mut c_void, ARGV0_MAX as u32, start as *const c_void)
    };
    if n0 <= 0 || n0 as usize >= ARGV0_MAX {
        return false;
    }
    let args_at = start + n0 as u64;
    if end < args_at || end - args_at != want.len as u64 {
        return false;
    }
    let len = (end - args_at) as u32;
    // The mask only shows the verifier the bound checked above.
    let read = unsafe {
        bpf_probe_read_user(
            buf as *mut c_void,
            len & (2 * EXEC_ARG_BYTES as u32 - 1),
            args_at as *const c_void,
        )
    };
    if read != 0 {
        return false;
    }
    let mut i = 0;
    while i < EXEC_ARG_BYTES {
        if (i as u32) < len && unsafe { (*scratch).buf[i] } != want.bytes[i] {
            return false;
        }
        i += 1;
    }
    true
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
    if let Some(check) = unsafe { ARGS_TO_CHECK.get(&tgid) }.copied() {
        let _ = ARGS_TO_CHECK.remove(&tgid);
        let reason = match file {
            // The new image is the granted file: its argv is the exec's.
            Ok(f) if f == check.file => match argv_matches(check.call_id) {
                true => KernelReason::Allowed,
                false => KernelReason::ExecArgsMismatch,
            },
            // A script now running as its interpreter: the argv the kernel
            // built (interpreter, its option, the script) is not the exec's.
            _ => KernelReason::ExecArgsUnverifiable,
        };
        if reason != KernelReason::Allowed {
            agent::report(
                Hook::ExecVerify,
                cgroup_id,
                &agent,
                check.call_id,
                reason,
                filename,
            );
            if agent::blocks(&agent, reason) {
                agent::count(Counter::ExecKilled);
                unsafe { bpf_send_signal(SIGKILL) };
                return;
            }
        }
    }
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
