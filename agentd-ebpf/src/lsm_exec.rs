//! BPF LSM `bprm_check_security`: an agent process may exec a file only if
//! its bound call, a pending grant it claims (binding it), or the agent's
//! baseline grants that device+inode. Where that grant names arguments,
//! `sched_process_exec` checks the new argv (`process_tree`).
use agentd_common::{ExecExpectation, FileId, Hook, KernelReason, EVENT_TARGET_LEN};
use aya_ebpf::{
    bindings::path, cty::c_char, helpers::generated::bpf_d_path, macros::lsm, programs::LsmContext,
};

use crate::{
    agent, kernel,
    maps::{ARGS_TO_CHECK, EXEC_ARGS},
};

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
    let mut call_id = agent::bound_call(tgid, &agent);
    // The real file's path (symlinks resolved) for the audit record; the
    // name as given to execve when the kernel cannot render one.
    let mut real = [0u8; EVENT_TARGET_LEN];
    let filename = if unsafe { exec_path(bprm, &mut real) } {
        real.as_ptr()
    } else {
        unsafe { kernel::bprm_filename(bprm) }.unwrap_or(core::ptr::null())
    };
    // Fail closed: an unreadable file identity is a denial.
    let mut object = agent::Object {
        a: 0,
        b: 0,
        port: 0,
        scope_hint: 0,
    };
    let reason = match unsafe { kernel::bprm_file(bprm).and_then(|f| kernel::file_id(f)) } {
        Ok(file) => {
            object.a = file.dev;
            object.b = file.ino;
            let baseline = agentd_common::baseline_call_id(agent.agent_id);
            let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_boot_ns() };
            let reason = if call_id != baseline
                && agent::exec_rule(call_id, file, now) == KernelReason::Allowed
            {
                KernelReason::Allowed
            } else {
                // A pending grant naming the file is claimed before the
                // baseline is asked: the claim binds the process to it.
                match agent::claim_exec(cgroup_id, &agent, file) {
                    Ok(claimed) => {
                        call_id = claimed;
                        KernelReason::Allowed
                    }
                    Err(why) => match agent::exec_permitted(call_id, &agent, file) {
                        KernelReason::Allowed => KernelReason::Allowed,
                        r if why == KernelReason::NoGrant => r,
                        _ => why,
                    },
                }
            };
            if reason == KernelReason::Allowed && call_id != baseline {
                args_to_check(tgid, call_id, file, now)
            } else {
                reason
            }
        }
        Err(_) => KernelReason::NoGrant,
    };
    // Repeated execs of one program under a grant are counted, not sent.
    agent::report_access(
        Hook::Exec,
        cgroup_id,
        &agent,
        call_id,
        reason,
        object,
        filename,
    );
    if agent::blocks(&agent, reason) {
        -EPERM
    } else {
        0
    }
}

/// An exec the call's own grant allowed, where that grant names arguments:
/// `sched_process_exec` checks the new argv (`ARGS_TO_CHECK`), since this
/// hook cannot read it. Arguments the kernel does not hold are refused here.
#[inline(always)]
fn args_to_check(tgid: u32, call_id: u64, file: FileId, now: u64) -> KernelReason {
    if agent::exec_rule(call_id, file, now) != KernelReason::Allowed {
        // Allowed by the baseline (a shell's own tools): no arguments named.
        return KernelReason::Allowed;
    }
    let Some(args) = (unsafe { EXEC_ARGS.get(&call_id) }) else {
        return KernelReason::Allowed;
    };
    if !args.verifiable() {
        return KernelReason::ExecArgsUnverifiable;
    }
    let expect = ExecExpectation { file, call_id };
    // Fail closed: an exec whose check cannot be recorded does not run.
    match ARGS_TO_CHECK.insert(&tgid, &expect, 0) {
        Ok(()) => KernelReason::Allowed,
        Err(_) => KernelReason::NoGrant,
    }
}

/// Renders `bprm->file->f_path` into `buf` with bpf_d_path (allowed in
/// bprm_check_security). False when the kernel cannot render it.
#[inline(always)]
unsafe fn exec_path(bprm: *const u8, buf: &mut [u8; EVENT_TARGET_LEN]) -> bool {
    let o = kernel::offsets();
    // A direct load, not probe_read: the verifier keeps the BTF type, so
    // `file` is a `struct file *` and `&file->f_path` a `struct path *`
    // bpf_d_path accepts. The offsets are constants from frozen .rodata.
    let file =
        unsafe { core::ptr::read_volatile(bprm.add(o.bprm_file as usize) as *const *const u8) };
    if file.is_null() {
        return false;
    }
    let f_path = unsafe { file.add(o.file_path as usize) } as *mut path;
    unsafe { bpf_d_path(f_path, buf.as_mut_ptr() as *mut c_char, buf.len() as u32) > 0 }
}
