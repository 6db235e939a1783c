//! The scenarios. Each starts its own agent, runs probes inside it through
//! the real launcher, and checks both the outcome the agent saw and the
//! audit record the enforcer wrote. A scenario that cannot apply to the
//! backend under test says so (`Skip`) by name.
use std::time::Duration;

use agentd::{doctor::Backend, enforce::Mode};

use crate::{
    harness::{spec, Harness, Run},
    scenarios_side::{self as side, SKIPPED},
};

/// Outcome of one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Behaved as required.
    Pass,
    /// Did not; why.
    Fail(String),
    /// Does not apply here; why.
    Skip(String),
}

pub(crate) type Check = Result<(), String>;

pub(crate) fn expect(run: &Run, prefix: &str, what: &str) -> Check {
    if run.is(prefix) {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected result={prefix}…, got `{}` (launcher exit {})\n{}",
            run.result, run.code, run.output
        ))
    }
}

pub(crate) fn audited(
    h: &Harness,
    agent: &str,
    action: &str,
    target: &str,
    decision: &str,
    reason: Option<&str>,
) -> Check {
    match h.record(agent, action, target, decision) {
        Some(r) if reason.is_none_or(|want| r.reason_code == want) => Ok(()),
        Some(r) => Err(format!(
            "audit {action} {target} {decision}: reason {} (wanted {reason:?})",
            r.reason_code
        )),
        None => Err(format!("no audit record {action} {target} {decision}")),
    }
}

pub(crate) const EPERM: &str = "errno:1";
const TRUE: &str = "/usr/bin/true";

/// A named scenario.
pub struct Scenario {
    /// Stable name.
    pub name: &'static str,
    /// The body.
    pub run: fn(&Harness, &str) -> Check,
    /// Backends it applies to, with the reason it does not otherwise.
    pub only: Option<(Backend, &'static str)>,
}

/// Every scenario, in order (the restart scenario last: it restarts the enforcer).
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "exec_allowed_with_grant",
            run: exec_allowed,
            only: None,
        },
        Scenario {
            name: "exec_denied_without_grant",
            run: exec_denied,
            only: None,
        },
        Scenario {
            name: "open_read_within_scope",
            run: open_read_allowed,
            only: None,
        },
        Scenario {
            name: "open_read_outside_scope_denied",
            run: open_read_denied,
            only: None,
        },
        Scenario {
            name: "open_write_needs_write_scope",
            run: open_write_scope,
            only: None,
        },
        Scenario {
            name: "connect_allowed_and_denied",
            run: connect_gate,
            only: None,
        },
        Scenario {
            name: "inherit_fork",
            run: |h, a| inherit(h, a, "fork"),
            only: None,
        },
        Scenario {
            name: "inherit_double_fork_setsid",
            run: |h, a| inherit(h, a, "double-fork-setsid"),
            only: None,
        },
        Scenario {
            name: "inherit_vfork",
            run: inherit_vfork,
            only: None,
        },
        Scenario {
            name: "inherit_clone3",
            run: inherit_clone3,
            only: None,
        },
        Scenario {
            name: "grant_expiry",
            run: expiry,
            only: None,
        },
        Scenario {
            name: "bypass_memfd_execveat",
            run: bypass_memfd,
            only: None,
        },
        Scenario {
            name: "bypass_symlink_to_denied_binary",
            run: bypass_symlink,
            only: None,
        },
        Scenario {
            name: "bypass_hardlink_to_denied_binary",
            run: bypass_hardlink,
            only: None,
        },
        Scenario {
            name: "bypass_rename_denied_binary",
            run: bypass_rename,
            only: None,
        },
        Scenario {
            name: "bypass_shebang_denied_interpreter",
            run: bypass_shebang,
            only: None,
        },
        Scenario {
            name: "bypass_io_uring",
            run: bypass_io_uring,
            only: None,
        },
        Scenario {
            name: "bypass_proc_self_fd_reopen",
            run: bypass_proc_fd,
            only: None,
        },
        Scenario {
            name: "bypass_ld_preload",
            run: bypass_ld_preload,
            only: None,
        },
        Scenario {
            name: "bypass_setuid_binary",
            run: bypass_setuid,
            only: None,
        },
        Scenario {
            name: "tamper_ptrace_outside_agent",
            run: side::tamper_ptrace,
            only: None,
        },
        Scenario {
            name: "tamper_bpf_syscall",
            run: side::tamper_bpf,
            only: None,
        },
        Scenario {
            name: "side_userns_bind_mount_over_scope",
            run: side::userns_bind_mount,
            only: None,
        },
        Scenario {
            name: "side_attr_changes_need_write_scope",
            run: side::attr_changes,
            only: None,
        },
        Scenario {
            name: "side_socket_families_refused",
            run: side::socket_families,
            only: Some((
                Backend::Lsm,
                "on seccomp the supervisor refuses families with its own rows (socket_families_refused)",
            )),
        },
        Scenario {
            name: "side_inbound_listen_and_abstract_bind",
            run: side::inbound,
            only: None,
        },
        Scenario {
            name: "side_unix_socket_swapped_behind_grant",
            run: side::unix_swapped_socket,
            only: None,
        },
        Scenario {
            name: "side_proc_other_process_environ",
            run: side::proc_other_environ,
            only: None,
        },
        Scenario {
            name: "grant_use_count",
            run: use_count,
            only: None,
        },
        Scenario {
            name: "revoke_ends_grant_and_bindings",
            run: revoke,
            only: None,
        },
        Scenario {
            name: "denial_events_rate_limited_but_counted",
            run: rate_limit,
            only: None,
        },
        Scenario {
            name: "audit_only_mode",
            run: audit_only,
            only: None,
        },
        Scenario {
            name: "fail_closed_when_supervisor_dies",
            run: fail_closed,
            only: Some((
                Backend::Seccomp,
                "the lsm backend has no user-space supervisor in the decision path",
            )),
        },
        Scenario {
            name: "pending_grants_claimed_by_the_requesters_tree_only",
            run: pending_claims,
            only: None,
        },
        Scenario {
            name: "pending_claims_of_a_sibling_run_in_audit_only_mode",
            run: pending_claims_audit_only,
            only: None,
        },
        Scenario {
            name: "exec_claims_check_the_arguments_a_grant_names",
            run: exec_claim_args,
            only: None,
        },
        Scenario {
            name: "exec_claims_with_other_arguments_in_audit_only_mode",
            run: exec_claim_args_audit_only,
            only: None,
        },
        Scenario {
            name: "restart_stops_unsupervised_agents_and_audits_gap",
            run: restart,
            only: Some((
                Backend::Seccomp,
                "lsm re-adoption is covered by the VM suite's pinned-program test",
            )),
        },
    ]
}

fn exec_allowed(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    h.grant(a, "c-exec", spec(&[TRUE], &[], &[], &[], 60))?;
    expect(
        &h.run(a, Some("c-exec"), &["exec", TRUE]),
        "exit:0",
        "granted exec",
    )?;
    audited(h, a, "exec", TRUE, "allow", Some("grant_matched"))
}

fn exec_denied(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    expect(&h.run(a, None, &["exec", TRUE]), EPERM, "unbound exec")?;
    audited(h, a, "exec", TRUE, "deny", Some("no_grant"))
}

fn open_read_allowed(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let f = h.file("readable.txt", b"hello agent\n", 0o644);
    h.grant(a, "c-read", spec(&[], &[&Harness::s(&f)], &[], &[], 60))?;
    expect(
        &h.run(a, Some("c-read"), &["open", &Harness::s(&f), "r"]),
        "ok hello agent",
        "read in scope",
    )?;
    audited(
        h,
        a,
        "file_open",
        "readable.txt",
        "allow",
        Some("grant_matched"),
    )
}

fn open_read_denied(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let ok = h.file("scope-ok.txt", b"ok\n", 0o644);
    let secret = h.file("secret.txt", b"secret\n", 0o644);
    h.grant(a, "c-read2", spec(&[], &[&Harness::s(&ok)], &[], &[], 60))?;
    expect(
        &h.run(a, Some("c-read2"), &["open", &Harness::s(&secret), "r"]),
        EPERM,
        "read outside scope",
    )?;
    audited(
        h,
        a,
        "file_open",
        "secret.txt",
        "deny",
        Some("path_outside_scope"),
    )?;
    // Unbound: the baseline does not cover the work directory either.
    expect(
        &h.run(a, None, &["open", &Harness::s(&ok), "r"]),
        EPERM,
        "unbound read",
    )?;
    audited(h, a, "file_open", "scope-ok.txt", "deny", Some("no_grant"))
}

fn open_write_scope(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let ro = h.file("ro.txt", b"ro\n", 0o666);
    let outdir = h.work.join("out");
    std::fs::create_dir_all(&outdir).map_err(|e| e.to_string())?;
    std::os::unix::fs::chown(&outdir, Some(uid_of_agent()?), None).map_err(|e| e.to_string())?;
    h.grant(
        a,
        "c-write",
        spec(&[], &[&Harness::s(&ro)], &[&Harness::s(&outdir)], &[], 60),
    )?;
    expect(
        &h.run(a, Some("c-write"), &["open", &Harness::s(&ro), "w"]),
        EPERM,
        "write with read scope",
    )?;
    let created = outdir.join("new.txt");
    expect(
        &h.run(a, Some("c-write"), &["open", &Harness::s(&created), "c"]),
        "ok",
        "create in write scope",
    )?;
    let text = std::fs::read_to_string(&created).map_err(|e| format!("created file: {e}"))?;
    if text != "written by agent\n" {
        return Err(format!("created file holds {text:?}"));
    }
    audited(
        h,
        a,
        "file_open",
        "ro.txt",
        "deny",
        Some("path_outside_scope"),
    )
}

pub(crate) fn uid_of_agent() -> Result<u32, String> {
    agentd::enforce::launch::creds_of_user(crate::harness::AGENT_USER)
        .map(|c| c.uid)
        .map_err(|e| e.to_string())
}

fn connect_gate(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let open = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let other = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = open.local_addr().map_err(|e| e.to_string())?.port();
    let other_port = other.local_addr().map_err(|e| e.to_string())?.port();
    h.grant(
        a,
        "c-net",
        spec(&[], &[], &[], &[&format!("127.0.0.0/8:{port}")], 60),
    )?;
    expect(
        &h.run(a, Some("c-net"), &["connect", &format!("127.0.0.1:{port}")]),
        "ok",
        "granted connect",
    )?;
    expect(
        &h.run(
            a,
            Some("c-net"),
            &["connect", &format!("127.0.0.1:{other_port}")],
        ),
        EPERM,
        "other port",
    )?;
    expect(
        &h.run(a, None, &["connect", &format!("127.0.0.1:{port}")]),
        EPERM,
        "unbound connect",
    )?;
    audited(
        h,
        a,
        "connect",
        &format!("127.0.0.1:{port}"),
        "allow",
        Some("grant_matched"),
    )?;
    audited(
        h,
        a,
        "connect",
        &format!("127.0.0.1:{other_port}"),
        "deny",
        Some("no_grant"),
    )
}

fn inherit(h: &Harness, a: &str, how: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let secret = h.file(&format!("inherit-{how}.txt"), b"x\n", 0o644);
    h.grant(a, &format!("c-inh-{a}"), spec(&[TRUE], &[], &[], &[], 60))?;
    let call = format!("c-inh-{a}");
    let run = h.run(
        a,
        Some(&call),
        &[
            "descendant",
            how,
            "seq",
            "exec",
            TRUE,
            "--",
            "open",
            &Harness::s(&secret),
            "r",
        ],
    );
    expect(
        &run,
        "exit:0",
        &format!("granted exec in a {how} descendant"),
    )?;
    if !run.result.ends_with(EPERM) {
        return Err(format!(
            "the {how} descendant read outside its grant: {}",
            run.result
        ));
    }
    Ok(())
}

fn inherit_vfork(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    h.grant(a, "c-vf", spec(&[TRUE], &[], &[], &[], 60))?;
    expect(
        &h.run(a, Some("c-vf"), &["vfork-exec", TRUE]),
        "exit:0",
        "granted exec after vfork",
    )?;
    expect(
        &h.run(a, None, &["vfork-exec", TRUE]),
        EPERM,
        "unbound exec after vfork",
    )?;
    audited(h, a, "exec", TRUE, "deny", Some("no_grant"))
}

fn inherit_clone3(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    h.grant(a, "c-c3", spec(&[TRUE], &[], &[], &[], 60))?;
    let run = h.run(a, Some("c-c3"), &["descendant", "clone3", "exec", TRUE]);
    if h.backend == Backend::Seccomp && run.is("errno:38") {
        // The filter refuses clone3 (its flags live in memory a filter
        // cannot read); glibc falls back to clone, whose child inherits.
        return inherit(h, a, "fork");
    }
    expect(&run, "exit:0", "granted exec in a clone3 child")
}

fn expiry(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    // Long enough for the launch and bind to fit inside the TTL under
    // emulation (the VM), short enough to keep the suite quick.
    h.grant(a, "c-ttl", spec(&[TRUE], &[], &[], &[], 5))?;
    let run = h.run(
        a,
        Some("c-ttl"),
        &[
            "seq",
            "exec",
            TRUE,
            "--",
            "sleep-then",
            "5300",
            "exec",
            TRUE,
        ],
    );
    if run.result != format!("exit:0 | {EPERM}") {
        return Err(format!(
            "expected `exit:0 | {EPERM}`, got `{}`\n{}",
            run.result, run.output
        ));
    }
    audited(h, a, "exec", TRUE, "deny", Some("grant_expired"))
}

fn bypass_memfd(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    h.grant(a, "c-memfd", spec(&[TRUE], &[TRUE], &[], &[], 60))?;
    expect(
        &h.run(a, Some("c-memfd"), &["memfd-exec", TRUE]),
        EPERM,
        "execveat of a memfd copy",
    )?;
    // The row names the memfd, not just any exec.
    audited_where(h, a, "exec", "deny", |t| {
        t.contains("memfd:agentd-scenario")
    })
}

/// Like [`audited`], matching the target with `target` instead of a suffix.
fn audited_where(
    h: &Harness,
    agent: &str,
    action: &str,
    decision: &str,
    target: impl Fn(&str) -> bool,
) -> Check {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let rows = h.sink.0.lock().map_err(|e| e.to_string())?.clone();
        let mine: Vec<_> = rows.iter().filter(|r| r.agent == agent).collect();
        if mine
            .iter()
            .any(|r| r.action == action && r.decision == decision && target(&r.target))
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "no matching {action} {decision} row; rows: [{}]",
                mine.iter()
                    .map(|r| format!("{} {} {}", r.action, r.target, r.decision))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bypass_symlink(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let link = h.work.join("innocent-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/usr/bin/id", &link).map_err(|e| e.to_string())?;
    h.grant(a, "c-sym", spec(&[TRUE], &[], &[], &[], 60))?;
    expect(
        &h.run(a, Some("c-sym"), &["exec", &Harness::s(&link)]),
        EPERM,
        "exec through a symlink",
    )?;
    audited(h, a, "exec", "/usr/bin/id", "deny", Some("no_grant"))
}

fn bypass_hardlink(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let denied = h.copy("/usr/bin/id", "denied-id", 0o755);
    let allowed = h.copy(TRUE, "allowed-true", 0o755);
    let link = h.work.join("hl-to-denied");
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link(&denied, &link).map_err(|e| e.to_string())?;
    h.grant(a, "c-hl", spec(&[&Harness::s(&allowed)], &[], &[], &[], 60))?;
    expect(
        &h.run(a, Some("c-hl"), &["exec", &Harness::s(&allowed)]),
        "exit:0",
        "the allowed copy",
    )?;
    expect(
        &h.run(a, Some("c-hl"), &["exec", &Harness::s(&link)]),
        EPERM,
        "exec through a hard link",
    )?;
    audited(h, a, "exec", "hl-to-denied", "deny", None)
}

fn bypass_rename(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let allowed = h.copy(TRUE, "will-be-renamed-allowed", 0o755);
    let denied = h.copy("/usr/bin/id", "denied-to-rename", 0o755);
    h.grant(a, "c-mv", spec(&[&Harness::s(&allowed)], &[], &[], &[], 60))?;
    // Put the denied binary where the allowed one was: the grant names the
    // file (device+inode), not the path.
    let _ = std::fs::remove_file(&allowed);
    std::fs::rename(&denied, &allowed).map_err(|e| e.to_string())?;
    expect(
        &h.run(a, Some("c-mv"), &["exec", &Harness::s(&allowed)]),
        EPERM,
        "exec of a renamed denied binary",
    )?;
    audited(h, a, "exec", "will-be-renamed-allowed", "deny", None)
}

fn bypass_shebang(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let script = h.file("script.sh", b"#!/usr/bin/dash\nexit 0\n", 0o755);
    h.grant(
        a,
        "c-sh",
        spec(
            &[&Harness::s(&script)],
            &[&Harness::s(&script)],
            &[],
            &[],
            60,
        ),
    )?;
    let run = h.run(a, Some("c-sh"), &["exec", &Harness::s(&script)]);
    // Denied either before the exec (EPERM) or at exec verification, before
    // the interpreter's first instruction (SIGKILL).
    if !(run.is("signal:9") || run.is(EPERM)) {
        return Err(format!(
            "script with an ungranted interpreter ran: `{}`\n{}",
            run.result, run.output
        ));
    }
    if h.backend == Backend::Seccomp {
        // The supervisor approved the script (it is granted); the kernel then
        // executed the interpreter, and exec verification killed it.
        expect(&run, "signal:9", "exec verification of the interpreter")?;
        return audited(
            h,
            a,
            "exec_verify",
            "script.sh",
            "deny",
            Some("exec_target_mismatch"),
        );
    }
    let action = if run.is("signal:9") {
        "exec_verify"
    } else {
        "exec"
    };
    audited(h, a, action, "", "deny", None)
}

fn bypass_io_uring(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    expect(&h.run(a, None, &["io-uring"]), EPERM, "io_uring_setup")?;
    audited(h, a, "io_uring", "", "deny", None)
}

fn bypass_proc_fd(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let f = h.file("ro-for-reopen.txt", b"ro\n", 0o666);
    h.grant(a, "c-pfd", spec(&[], &[&Harness::s(&f)], &[], &[], 60))?;
    let run = h.run(a, Some("c-pfd"), &["proc-fd-reopen", &Harness::s(&f)]);
    if !(run.is(EPERM) || run.is("errno:40")) {
        return Err(format!(
            "reopen for writing through /proc/self/fd: `{}`\n{}",
            run.result, run.output
        ));
    }
    let text = std::fs::read_to_string(&f).map_err(|e| e.to_string())?;
    if text != "ro\n" {
        return Err("the file was written".into());
    }
    audited_where(h, a, "file_open", "deny", |t| {
        t.ends_with("ro-for-reopen.txt") || t.contains("/fd/")
    })
}

fn bypass_ld_preload(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let lib = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .ok_or("no libm to copy")?;
    let evil = h.copy(lib, "evil-preload.so", 0o755);
    h.grant(a, "c-pre", spec(&[TRUE], &[], &[], &[], 60))?;
    let run = h.run(
        a,
        Some("c-pre"),
        &["exec-preload", &Harness::s(&evil), TRUE],
    );
    expect(&run, "exit:0", "granted program with LD_PRELOAD")?;
    audited(
        h,
        a,
        "file_open",
        "evil-preload.so",
        "deny",
        Some("path_outside_scope"),
    )
}

fn bypass_setuid(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    // A setuid-root copy of a program that fails unless it really is root.
    let suid = h.copy("/usr/bin/touch", "suid-touch", 0o755);
    std::os::unix::fs::chown(&suid, Some(0), Some(0)).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755))
        .map_err(|e| e.to_string())?;
    let target = "/root/agentd-scenario-setuid-proof";
    let _ = std::fs::remove_file(target);
    h.grant(
        a,
        "c-suid",
        spec(&[&Harness::s(&suid)], &[], &["/root"], &[], 60),
    )?;
    let run = h.run(a, Some("c-suid"), &["exec", &Harness::s(&suid), target]);
    let escaped = std::path::Path::new(target).exists();
    let _ = std::fs::remove_file(target);
    if escaped {
        return Err(format!("the setuid binary wrote as root: {}", run.result));
    }
    expect(&run, "exit:1", "setuid binary runs without privileges")
}

fn use_count(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let mut g = spec(&[TRUE], &[], &[], &[], 60);
    g.uses = 1;
    h.grant(a, "c-once", g)?;
    expect(
        &h.run(a, Some("c-once"), &["exec", TRUE]),
        "exit:0",
        "first use",
    )?;
    let second = h.run(a, Some("c-once"), &["exec", TRUE]);
    if !(second.is("bind_failed") && second.result.contains("grant_used_up")) {
        return Err(format!("second bind: `{}`", second.result));
    }
    Ok(())
}

fn revoke(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    // The read of `mark` comes after the first exec has finished: revoking
    // once its allow row appears cannot land between an exec's check and
    // its verification (which kills the task, rightly, as the grant is gone).
    let mark = h.file("revoke-mark.txt", b"first exec done\n", 0o644);
    let mark = Harness::s(&mark);
    h.grant(a, "c-rev", spec(&[TRUE], &[&mark], &[], &[], 60))?;
    let call = "c-rev".to_string();
    let run = h.run_with(
        a,
        Some(&call),
        &[
            "seq",
            "exec",
            TRUE,
            "--",
            "open",
            &mark,
            "r",
            "--",
            "sleep-then",
            "3000",
            "exec",
            TRUE,
        ],
        |_| {
            // Revoke once the first exec is over (not after a fixed delay:
            // under emulation the launch alone can take seconds).
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while h
                .record(a, "file_open", "revoke-mark.txt", "allow")
                .is_none()
                && std::time::Instant::now() < deadline
            {}
            let _ = h.enforcer.revoke("c-rev");
        },
    );
    let want = format!("exit:0 | ok first exec done | {EPERM}");
    if run.result != want {
        return Err(format!(
            "expected `{want}`, got `{}`\n{}",
            run.result, run.output
        ));
    }
    audited(h, a, "exec", TRUE, "deny", Some("no_grant"))
}

fn rate_limit(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let before = h.enforcer.counters();
    let n = 400;
    let run = h.run(
        a,
        None,
        &["repeat", &n.to_string(), "connect", "127.0.0.1:9"],
    );
    expect(&run, EPERM, "repeated unbound connect")?;
    std::thread::sleep(Duration::from_millis(500));
    let after = h.enforcer.counters();
    let denied = after.kernel_denied - before.kernel_denied;
    let suppressed = after.events_suppressed - before.events_suppressed;
    let rows = h
        .sink
        .0
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|r| r.agent == a && r.action == "connect" && r.decision == "deny")
        .count() as u64;
    if denied < n {
        return Err(format!("only {denied} of {n} denials counted"));
    }
    if suppressed == 0 || rows + suppressed < n || rows > n - suppressed {
        return Err(format!(
            "{rows} audit rows, {suppressed} suppressed, {denied} counted"
        ));
    }
    Ok(())
}

fn audit_only(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::AuditOnly)?;
    expect(
        &h.run(a, None, &["exec", TRUE]),
        "exit:0",
        "unbound exec in audit-only mode",
    )?;
    audited(h, a, "exec", TRUE, "would_deny", Some("no_grant"))?;
    h.enforcer
        .set_mode(a, Mode::Enforce)
        .map_err(|e| e.to_string())?;
    expect(
        &h.run(a, None, &["exec", TRUE]),
        EPERM,
        "after switching to enforce",
    )
}

fn fail_closed(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    h.grant(a, "c-fc", spec(&[TRUE], &[], &[], &[], 60))?;
    let run = h.run_with(
        a,
        Some("c-fc"),
        &["sleep-then", "1200", "exec", TRUE],
        |_| {
            std::thread::sleep(Duration::from_millis(600));
            h.enforcer.stop_supervisors(a);
        },
    );
    // With no supervisor, the notified execve fails (ENOSYS) instead of passing.
    expect(&run, "errno:38", "granted exec after the supervisor died")
}

/// A cgroup under the instance's slice that no state file names, holding a
/// sleeping process: what a lost or stale enforce-state.json leaves behind.
fn ghost_agent(h: &Harness, name: &str) -> Result<std::process::Child, String> {
    let root = agentd::enforce::cgroup_root().map_err(|e| e.to_string())?;
    let slice = agentd::enforce::bpf_state::Instance::for_state_dir(&h.state_dir).slice();
    let dir = root.join(slice).join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("cgroup.procs"), child.id().to_string())
        .map_err(|e| format!("join {}: {e}", dir.display()))?;
    Ok(child)
}

fn restart(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let mut ghost = ghost_agent(h, &format!("{a}-ghost"))?;
    // Loading the BPF object can take many seconds on a loaded machine: the
    // agent sleeps far longer, and what is measured is how soon it stops
    // once the new enforcer is up.
    let restarted = std::cell::Cell::new(None);
    let run = h.run_with(a, None, &["sleep-then", "120000", "exec", TRUE], |_| {
        std::thread::sleep(Duration::from_millis(700));
        // "agentd dies": every supervisor stops; then a new enforcer starts
        // over the same state directory and pinned maps.
        h.enforcer.shutdown();
        std::thread::sleep(Duration::from_millis(200));
        let sink = agentd::enforce::MemorySink::default();
        let started = agentd::enforce::Enforcer::start(h.backend, &h.state_dir, sink.clone());
        restarted.set(Some(std::time::Instant::now()));
        match started {
            Ok(e) => {
                let rows = sink.0.lock().map(|r| r.clone()).unwrap_or_default();
                h.sink.0.lock().expect("sink").extend(rows);
                std::mem::forget(e);
            }
            Err(e) => eprintln!("restart failed: {e}"),
        }
    });
    let stopped_after = restarted.get().map(|t| t.elapsed());
    if stopped_after.is_none_or(|d| d > Duration::from_secs(10)) {
        return Err(format!(
            "the unsupervised agent kept running after the restart ({}; {stopped_after:?} after it)",
            run.result
        ));
    }
    // Killed by the re-adopting enforcer: 128 + SIGKILL.
    if run.code != 137 {
        return Err(format!(
            "launcher exit {} (wanted 137)\n{}",
            run.code, run.output
        ));
    }
    for (action, why) in [
        ("agent_stopped", "supervisor_lost_on_restart"),
        ("enforcer_restart", "daemon_restart"),
    ] {
        match h.lifecycle(action) {
            Some(r) if r.reason_code == why => {}
            other => return Err(format!("lifecycle {action}: {other:?}")),
        }
    }
    // The agent the state file never named was stopped too, and audited.
    let mut ghost_status = None;
    for _ in 0..40 {
        ghost_status = ghost.try_wait().map_err(|e| e.to_string())?;
        if ghost_status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if ghost_status.is_none() {
        let _ = ghost.kill();
        return Err("an agent missing from enforce-state.json kept running".into());
    }
    let found = h.sink.0.lock().map_err(|e| e.to_string())?.iter().any(|r| {
        r.action == "agent_stopped"
            && r.reason_code == "agent_unknown_on_restart"
            && r.target.contains(&format!("{a}-ghost"))
    });
    if !found {
        return Err("no agent_stopped/agent_unknown_on_restart row for the unknown agent".into());
    }
    Ok(())
}

/// `all` with the hardening scenarios inserted before the supervisor-death
/// and restart scenarios (which must stay last).
fn with_hardening(mut all: Vec<Scenario>) -> Vec<Scenario> {
    let at = all
        .iter()
        .position(|s| s.name == "fail_closed_when_supervisor_dies")
        .unwrap_or(all.len());
    let tail = all.split_off(at);
    all.extend(crate::hardening::all());
    all.extend(tail);
    all
}

/// Runs the scenarios whose names contain `filter` (all if empty).
pub fn run_all(h: &Harness, filter: &str) -> Vec<(&'static str, Outcome)> {
    let mut out = Vec::new();
    run_each(h, filter, |name, outcome| out.push((name, outcome.clone())));
    out
}

/// Like [`run_all`], handing each outcome to `report` as soon as it is
/// known (a slow or hung scenario then shows which one it is).
pub fn run_each(h: &Harness, filter: &str, mut report: impl FnMut(&'static str, &Outcome)) {
    for (i, s) in with_hardening(all()).into_iter().enumerate() {
        if !s.name.contains(filter) {
            continue;
        }
        let outcome = match s.only {
            Some((b, why)) if b != h.backend => Outcome::Skip(why.into()),
            _ => match (s.run)(h, &format!("scn{i:02}")) {
                Ok(()) => Outcome::Pass,
                Err(e) => match e.strip_prefix(SKIPPED) {
                    Some(why) => Outcome::Skip(why.to_string()),
                    None => Outcome::Fail(e),
                },
            },
        };
        report(s.name, &outcome);
    }
}

/// The claim race of the pending-claims scenarios: an exec, two opens of
/// `file` in-process and one in a fresh child, and a connect, each under a
/// pending grant of its own.
fn claim_race_run(h: &Harness, a: &str, file: &str) -> Result<Run, String> {
    let server = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let dest = format!(
        "127.0.0.1:{}",
        server.local_addr().map_err(|e| e.to_string())?.port()
    );
    let mut exec = spec(&[TRUE], &[], &[], &[], 60);
    exec.uses = 1;
    // One use: a process's file claims spend one use per grant.
    let mut read = spec(&[], &[file], &[], &[], 60);
    read.uses = 1;
    let grants = [
        (format!("{a}-exec"), exec),
        (format!("{a}-read"), read),
        (format!("{a}-net"), spec(&[], &[], &[], &[&dest], 60)),
    ];
    let ops = [
        "seq",
        "exec",
        TRUE,
        "--",
        "open",
        file,
        "r",
        "--",
        "open",
        file,
        "r",
        "--",
        "descendant",
        "fork",
        "open",
        file,
        "r",
        "--",
        "connect",
        &dest,
    ];
    claim_race_with(h, a, &ops, &grants)
}

/// Runs `claim-race OPS` in agent `a`: once the probe and its background
/// sibling are both in the agent, `grants` are installed pending with the
/// probe as requester (so after the sibling started), then both run OPS.
fn claim_race_with(
    h: &Harness,
    a: &str,
    ops: &[&str],
    grants: &[(String, agentd::grant_spec::GrantSpec)],
) -> Result<Run, String> {
    let go = h.work.join(format!("go-{a}"));
    let _ = std::fs::remove_file(&go);
    let go_s = Harness::s(&go);
    let mut installed: Result<(), String> = Ok(());
    let mut args = vec!["claim-race", go_s.as_str()];
    args.extend_from_slice(ops);
    let run = h.run_with(a, None, &args, |_| {
        installed = (|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let top = loop {
                let pids = h
                    .enforcer
                    .list_agents()
                    .into_iter()
                    .find(|i| i.name == a)
                    .map(|i| i.pids)
                    .unwrap_or_default();
                let top = pids.iter().copied().find(|p| {
                    agentd::enforce::claim::ppid_of(*p).is_some_and(|pp| !pids.contains(&pp))
                });
                if let (true, Some(top)) = (pids.len() >= 2, top) {
                    break top;
                }
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "the probe and its sibling never appeared: {pids:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let requester = h
                .enforcer
                .requester_of(a, top)
                .ok_or("no requester for the probe")?;
            for (call, g) in grants {
                let call = call.as_str();
                h.enforcer
                    .install_grant_for(a, call, &format!("msg-{call}"), g, Some(requester.clone()))
                    .map_err(|e| e.to_string())?;
            }
            std::fs::write(&go, "").map_err(|e| e.to_string())
        })();
        if installed.is_err() {
            let _ = std::fs::write(&go, "");
        }
    });
    let _ = std::fs::remove_file(&go);
    installed?;
    Ok(run)
}

fn call_of(h: &Harness, a: &str, action: &str, target: &str, decision: &str) -> Option<String> {
    h.record(a, action, target, decision).map(|r| r.call_id)
}

fn pending_claims(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let f = h.file("claimable.txt", b"claim me\n", 0o644);
    let run = claim_race_run(h, a, &Harness::s(&f))?;
    // The sibling (started before the decision) and its fresh child claim
    // nothing; the requester's fresh child execs (binding it), the
    // requester opens in-process twice on the single-use read grant (one
    // process's file claims spend one use), after which a fresh child of
    // the requester finds that grant spent.
    let want = format!(
        "sib:{EPERM} | {EPERM} | {EPERM} | {EPERM} | {EPERM} \
         own:exit:0 | ok claim me | ok claim me | {EPERM} | ok"
    );
    if run.result != want {
        return Err(format!(
            "claim race: expected `{want}`, got `{}`\n{}",
            run.result, run.output
        ));
    }
    audited(h, a, "exec", TRUE, "deny", Some("claim_not_requester_tree"))?;
    audited(
        h,
        a,
        "file_open",
        "claimable.txt",
        "deny",
        Some("claim_not_requester_tree"),
    )?;
    audited(h, a, "exec", TRUE, "allow", Some("grant_matched"))?;
    audited(
        h,
        a,
        "file_open",
        "claimable.txt",
        "allow",
        Some("grant_matched"),
    )?;
    let exec_call = call_of(h, a, "exec", TRUE, "allow");
    let open_call = call_of(h, a, "file_open", "claimable.txt", "allow");
    let net_call = wait_row(h, |r| {
        r.agent == a && r.action == "connect" && r.decision == "allow"
    })
    .map(|r| r.call_id);
    if net_call != Some(format!("{a}-net")) {
        return Err(format!("the claimed connect row names {net_call:?}"));
    }
    if wait_row(h, |r| {
        r.agent == a && r.action == "connect" && r.reason_code == "claim_not_requester_tree"
    })
    .is_none()
    {
        return Err("no connect row refusing the sibling (claim_not_requester_tree)".into());
    }
    if exec_call != Some(format!("{a}-exec")) || open_call != Some(format!("{a}-read")) {
        return Err(format!(
            "claimed rows name the wrong calls: exec {exec_call:?}, open {open_call:?}"
        ));
    }
    // The fresh child's open came last: once its refusal is in, both of the
    // requester's claimed opens are too (the reader drains in order).
    if wait_row(h, |r| {
        r.agent == a
            && r.action == "file_open"
            && r.target.ends_with("claimable.txt")
            && r.decision == "deny"
            && r.reason_code == "grant_used_up"
    })
    .is_none()
    {
        return Err("no file_open row refusing the spent read grant (grant_used_up)".into());
    }
    let claimed_opens = h
        .sink
        .0
        .lock()
        .map_err(|_| "audit sink poisoned")?
        .iter()
        .filter(|r| {
            r.agent == a
                && r.action == "file_open"
                && r.target.ends_with("claimable.txt")
                && r.decision == "allow"
        })
        .map(|r| r.call_id.clone())
        .collect::<Vec<_>>();
    let read = format!("{a}-read");
    if claimed_opens == [read.clone(), read.clone()] {
        return Ok(());
    }
    // The lsm backend audits the first open of the file under the grant and
    // counts the second: an `access_summary` row of count 2 (written within
    // a second, or at the latest when the grant ends).
    let counted = || {
        h.sink.0.lock().ok().is_some_and(|rows| {
            rows.iter().any(|r| {
                r.agent == a
                    && r.call_id == read
                    && r.reason_code == "access_summary"
                    && agentd::audit::kernel_row::access_summary(&r.target)
                        .is_some_and(|(o, n, ..)| o.ends_with("claimable.txt") && n == 2)
            })
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !counted() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if claimed_opens == [read.clone()] && counted() {
        return Ok(());
    }
    Err(format!(
        "the requester's two in-process opens should both name {read} (two rows, or one and an access_summary row of count 2): {claimed_opens:?}"
    ))
}

/// A pending exec grant naming arguments: the requester's child that runs
/// the program with other arguments is refused (seccomp: at the exec; lsm:
/// killed before its first instruction, where the new argv is readable),
/// the one with the named arguments runs, the sibling claims nothing.
fn exec_claim_args(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)?;
    let mut exec = spec(&[TRUE], &[], &[], &[], 60);
    exec.args = Some(vec!["named".into(), "args".into()]);
    let grants = [(format!("{a}-exec"), exec)];
    let ops = [
        "seq", "exec", TRUE, "other", "--", "exec", TRUE, "named", "args",
    ];
    let run = claim_race_with(h, a, &ops, &grants)?;
    let refused = match h.backend {
        Backend::Lsm => "signal:9",
        _ => EPERM,
    };
    let want = format!("sib:{EPERM} | {EPERM} own:{refused} | exit:0");
    if run.result != want {
        return Err(format!(
            "argument claim: expected `{want}`, got `{}`\n{}",
            run.result, run.output
        ));
    }
    if wait_row(h, |r| {
        r.agent == a && r.decision == "deny" && r.reason_code == "exec_args_mismatch"
    })
    .is_none()
    {
        return Err("no row refusing the exec with other arguments (exec_args_mismatch)".into());
    }
    audited(h, a, "exec", TRUE, "deny", Some("claim_not_requester_tree"))?;
    audited(h, a, "exec", TRUE, "allow", Some("grant_matched"))?;
    let call = call_of(h, a, "exec", TRUE, "allow");
    if call != Some(format!("{a}-exec")) {
        return Err(format!("the allowed exec row names {call:?}"));
    }
    Ok(())
}

/// The control of [`exec_claim_args`]: the same steps without enforcement
/// all succeed, and the rows name what enforcement would have refused.
fn exec_claim_args_audit_only(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::AuditOnly)?;
    let mut exec = spec(&[TRUE], &[], &[], &[], 60);
    exec.args = Some(vec!["named".into(), "args".into()]);
    let grants = [(format!("{a}-exec"), exec)];
    let ops = [
        "seq", "exec", TRUE, "other", "--", "exec", TRUE, "named", "args",
    ];
    let run = claim_race_with(h, a, &ops, &grants)?;
    let want = "sib:exit:0 | exit:0 own:exit:0 | exit:0";
    if run.result != want {
        return Err(format!(
            "audit-only argument claim: expected `{want}`, got `{}`\n{}",
            run.result, run.output
        ));
    }
    if wait_row(h, |r| {
        r.agent == a && r.decision == "would_deny" && r.reason_code == "exec_args_mismatch"
    })
    .is_none()
    {
        return Err("no would_deny row for the exec with other arguments".into());
    }
    audited(
        h,
        a,
        "exec",
        TRUE,
        "would_deny",
        Some("claim_not_requester_tree"),
    )
}

fn pending_claims_audit_only(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::AuditOnly)?;
    let f = h.file("claimable-ao.txt", b"claim me\n", 0o644);
    let run = claim_race_run(h, a, &Harness::s(&f))?;
    // Without enforcement the sibling's steps succeed, recorded as what
    // enforcement would refuse.
    let want = "sib:exit:0 | ok claim me | ok claim me | ok claim me | ok \
                own:exit:0 | ok claim me | ok claim me | ok claim me | ok";
    if run.result != want {
        return Err(format!(
            "audit-only claim race: expected `{want}`, got `{}`\n{}",
            run.result, run.output
        ));
    }
    audited(
        h,
        a,
        "exec",
        TRUE,
        "would_deny",
        Some("claim_not_requester_tree"),
    )?;
    audited(
        h,
        a,
        "file_open",
        "claimable-ao.txt",
        "would_deny",
        Some("claim_not_requester_tree"),
    )
}

/// Waits (up to 2 s) for a kernel record matching `pred`.
fn wait_row(
    h: &Harness,
    pred: impl Fn(&agentd::enforce::KernelRecord) -> bool,
) -> Option<agentd::enforce::KernelRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let found = h
            .sink
            .0
            .lock()
            .ok()
            .and_then(|recs| recs.iter().find(|r| pred(r)).cloned());
        if found.is_some() || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
