//! `bprm_check_security`: exec by device+inode.
use std::path::Path;

use agentd::enforce::lsm::file_id_of;
use agentd_common::{baseline_call_id, ExecKey, GrantExpiry, Hook, KernelReason, Mode};

use crate::{
    harness::{drain, event, exec_in, expect, expect_event, ExecResult, Report},
    Fixture, AGENT_ID,
};

/// busybox's `true` applet inside the VM.
const TARGET: &str = "/bin/true";

pub fn run(r: &mut Report, fx: &mut Fixture) -> Result<(), String> {
    let target = file_id_of(Path::new(TARGET)).map_err(|e| format!("stat {TARGET}: {e}"))?;
    let cg = fx.cgroup.clone();
    let cg = Some(cg.as_path());

    // Before registration the cgroup is an ordinary one.
    r.check(
        "exec_in_unregistered_cgroup_runs",
        expect(exec_in(cg, TARGET, |_| {}), ExecResult::Ran(0)),
    );
    fx.set_mode(Mode::Enforce)?;
    drain(&mut fx.events);

    r.check(
        "exec_outside_agent_cgroup_runs",
        expect(exec_in(None, TARGET, |_| {}), ExecResult::Ran(0)),
    );
    r.check(
        "exec_inside_agent_cgroup_denied_eperm",
        expect(
            exec_in(cg, TARGET, |_| {}),
            ExecResult::Refused(libc::EPERM),
        ),
    );
    r.check(
        "exec_deny_reported_no_grant",
        event(&mut fx.events, Hook::Exec, None).and_then(|e| {
            let d = crate::harness::describe(&e);
            let ok = e.allowed == 0
                && e.reason == KernelReason::NoGrant as u8
                && e.call_id == baseline_call_id(AGENT_ID)
                // The real file, symlinks resolved (bpf_d_path), not the name given.
                && d.ends_with("target=/bin/busybox");
            if ok {
                Ok(d)
            } else {
                Err(d)
            }
        }),
    );

    // Baseline grant for the file's device+inode.
    let baseline = ExecKey {
        call_id: baseline_call_id(AGENT_ID),
        file: target,
    };
    fx.grants
        .insert(baseline, GrantExpiry { expires_at_ns: 0 }, 0)
        .map_err(|e| e.to_string())?;
    r.check(
        "exec_with_baseline_grant_runs",
        expect(exec_in(cg, TARGET, |_| {}), ExecResult::Ran(0)),
    );
    // The same file under another name (the busybox applet link) is the same inode.
    r.check(
        "exec_grant_follows_inode_not_path",
        match exec_in(cg, "/bin/busybox", |_| {}) {
            // busybox without an applet prints usage; any exit status means it ran.
            Ok(ExecResult::Ran(code)) => Ok(format!("/bin/busybox ran (status {code})")),
            other => Err(format!("expected the exec to run, got {other:?}")),
        },
    );
    fx.grants.remove(&baseline).map_err(|e| e.to_string())?;

    // A grant for call 42 covers only processes bound to call 42.
    let call = 42u64;
    let key = ExecKey {
        call_id: call,
        file: target,
    };
    fx.grants
        .insert(key, GrantExpiry { expires_at_ns: 0 }, 0)
        .map_err(|e| e.to_string())?;
    r.check(
        "exec_bound_to_granted_call_runs",
        expect(
            exec_in(cg, TARGET, |pid| fx.bind(pid, call)),
            ExecResult::Ran(0),
        ),
    );
    r.check(
        "exec_unbound_with_other_calls_grant_denied",
        expect(
            exec_in(cg, TARGET, |_| {}),
            ExecResult::Refused(libc::EPERM),
        ),
    );

    // An expired grant denies, with its own reason.
    fx.grants
        .insert(key, GrantExpiry { expires_at_ns: 1 }, 0)
        .map_err(|e| e.to_string())?;
    drain(&mut fx.events);
    let mut bound_pid = 0;
    let got = exec_in(cg, TARGET, |pid| {
        bound_pid = pid;
        fx.bind(pid, call);
    });
    r.check(
        "exec_expired_grant_denied",
        expect(got, ExecResult::Refused(libc::EPERM)).and_then(|_| {
            expect_event(
                &mut fx.events,
                Hook::Exec,
                KernelReason::GrantExpired,
                Some(bound_pid),
            )
        }),
    );
    fx.grants.remove(&key).map_err(|e| e.to_string())?;

    // Audit-only: nothing blocked, the would-deny still reported.
    fx.set_mode(Mode::AuditOnly)?;
    drain(&mut fx.events);
    r.check(
        "audit_only_mode_runs_and_reports_would_deny",
        expect(exec_in(cg, TARGET, |_| {}), ExecResult::Ran(0)).and_then(|_| {
            let e = event(&mut fx.events, Hook::Exec, None)?;
            if e.allowed == 0 && e.mode == Mode::AuditOnly as u8 {
                Ok(crate::harness::describe(&e))
            } else {
                Err(crate::harness::describe(&e))
            }
        }),
    );

    // Unregistering the cgroup ends enforcement at once.
    fx.unregister()?;
    r.check(
        "exec_after_unregister_runs",
        expect(exec_in(cg, TARGET, |_| {}), ExecResult::Ran(0)),
    );
    fx.set_mode(Mode::Enforce)?;
    Ok(())
}
