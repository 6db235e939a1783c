//! Tamper protection: no bpf syscall, no signals to agentd, no ptrace of
//! processes outside the agent's cgroup.
use agentd_common::{Hook, KernelReason};

use crate::{
    harness::{drain, errno, expect_code, expect_event, run_in, Report},
    Fixture,
};

/// bpf(BPF_MAP_CREATE) with an empty attr: EINVAL normally, EPERM when hooked.
fn bpf_op() -> i32 {
    let attr = [0u8; 128];
    // SAFETY: the kernel reads at most `attr.len()` bytes.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()) };
    if ret < 0 {
        errno()
    } else {
        0
    }
}

pub fn run(r: &mut Report, fx: &mut Fixture) -> Result<(), String> {
    let cgroup = fx.cgroup.clone();
    let cg = Some(cgroup.as_path());

    r.check(
        "tamper_bpf_syscall_outside_reaches_kernel",
        expect_code(run_in(None, |_| {}, bpf_op), libc::EINVAL),
    );
    drain(&mut fx.events);
    r.check(
        "tamper_bpf_syscall_denied",
        expect_code(run_in(cg, |_| {}, bpf_op), libc::EPERM).and_then(|_| {
            expect_event(&mut fx.events, Hook::Bpf, KernelReason::TamperAttempt, None)
        }),
    );

    // This test process plays agentd.
    let me = std::process::id();
    fx.protected.insert(me, 1, 0).map_err(|e| e.to_string())?;
    let kill_me = move || {
        // SAFETY: signal 0 only checks permission.
        let ret = unsafe { libc::kill(me as i32, 0) };
        if ret < 0 {
            errno()
        } else {
            0
        }
    };
    r.check(
        "tamper_signal_agentd_from_outside_ok",
        expect_code(run_in(None, |_| {}, kill_me), 0),
    );
    drain(&mut fx.events);
    r.check(
        "tamper_signal_agentd_denied",
        expect_code(run_in(cg, |_| {}, kill_me), libc::EPERM).and_then(|_| {
            expect_event(
                &mut fx.events,
                Hook::Signal,
                KernelReason::TamperAttempt,
                None,
            )
        }),
    );
    r.check(
        "tamper_signal_own_process_ok",
        expect_code(
            run_in(
                cg,
                |_| {},
                || {
                    // SAFETY: signal 0 to ourselves.
                    let ret = unsafe { libc::kill(libc::getpid(), 0) };
                    if ret < 0 {
                        errno()
                    } else {
                        0
                    }
                },
            ),
            0,
        ),
    );
    fx.protected.remove(&me).map_err(|e| e.to_string())?;

    // A bystander outside the agent cgroup.
    // SAFETY: the child only pauses until killed.
    let bystander = unsafe {
        match libc::fork() {
            0 => loop {
                libc::pause();
            },
            pid => pid,
        }
    };
    let attach = move |pid: i32| -> i32 {
        // SAFETY: PTRACE_ATTACH/DETACH on a pid; failure is reported.
        unsafe {
            if libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) < 0 {
                return errno();
            }
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
        }
        0
    };
    drain(&mut fx.events);
    r.check(
        "tamper_ptrace_outside_cgroup_denied",
        expect_code(run_in(cg, |_| {}, move || attach(bystander)), libc::EPERM).and_then(|_| {
            expect_event(
                &mut fx.events,
                Hook::Ptrace,
                KernelReason::TamperAttempt,
                None,
            )
        }),
    );
    r.check(
        "tamper_ptrace_own_child_ok",
        expect_code(
            run_in(
                cg,
                |_| {},
                move || {
                    // SAFETY: the grandchild pauses until killed.
                    let child = unsafe { libc::fork() };
                    if child == 0 {
                        loop {
                            unsafe { libc::pause() };
                        }
                    }
                    let code = attach(child);
                    unsafe {
                        libc::kill(child, libc::SIGKILL);
                        libc::waitpid(child, std::ptr::null_mut(), 0);
                    }
                    code
                },
            ),
            0,
        ),
    );
    // SAFETY: our own child.
    unsafe {
        libc::kill(bystander, libc::SIGKILL);
        libc::waitpid(bystander, std::ptr::null_mut(), 0);
    }
    Ok(())
}
