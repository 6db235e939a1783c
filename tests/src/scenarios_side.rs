//! Scenarios for the side doors around path and address checks: user
//! namespaces and mounts, attribute changes, socket families, inbound
//! sockets, a unix socket swapped behind its granted path, other processes'
//! `/proc` entries, ptrace and bpf. Each runs the step in an enforced agent
//! (refused, `errno:1`, with its `deny` audit row) and, as the control, the
//! same step as the same user with no enforcement at all (it succeeds), so a
//! scenario cannot pass because the step fails anyway.
use std::{
    io::{BufRead as _, BufReader},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    process::{Child, Command, Stdio},
};

use agentd::{doctor::Backend, enforce::Mode};

use crate::harness::{spec, Harness, Run, AGENT_USER};

type Check = Result<(), String>;

const EPERM: &str = "errno:1";

/// Prefix of an `Err` that means "cannot apply here" (reported as SKIP).
pub const SKIPPED: &str = "SKIPPED: ";

fn expect(run: &Run, prefix: &str, what: &str) -> Check {
    if run.is(prefix) {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected result={prefix}…, got `{}` (launcher exit {})\n{}",
            run.result, run.code, run.output
        ))
    }
}

fn audited(h: &Harness, agent: &str, action: &str, target: &str, decision: &str) -> Check {
    match h.record(agent, action, target, decision) {
        Some(_) => Ok(()),
        None => {
            let seen: Vec<String> = h
                .sink
                .0
                .lock()
                .map(|rows| {
                    rows.iter()
                        .filter(|r| r.agent == agent)
                        .map(|r| {
                            format!("{} {} {} {}", r.action, r.target, r.decision, r.reason_code)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Err(format!(
                "no audit row {action} …{target} {decision} for {agent}; rows: [{}]",
                seen.join("; ")
            ))
        }
    }
}

/// The enforced agent `a`.
fn enforced(h: &Harness, a: &str) -> Check {
    h.agent(a, Mode::Enforce)
}

/// Runs the probe `op` as the agent user outside any agent: no enforcement
/// at all (the control).
fn run_unconfined(h: &Harness, op: &[&str]) -> Run {
    let creds = match agentd::enforce::launch::creds_of_user(AGENT_USER) {
        Ok(c) => c,
        Err(e) => {
            return Run {
                result: String::new(),
                code: -1,
                output: e.to_string(),
            }
        }
    };
    let (uid, gid) = (creds.uid, creds.gid);
    let mut cmd = Command::new(&h.exe);
    cmd.arg("probe").args(op).current_dir(&h.work);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.output() {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            Run {
                result: stdout
                    .lines()
                    .find_map(|l| l.strip_prefix("result="))
                    .unwrap_or("")
                    .trim()
                    .to_string(),
                code: out.status.code().unwrap_or(-1),
                output: format!(
                    "stdout: {stdout}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }
        Err(e) => Run {
            result: String::new(),
            code: -1,
            output: e.to_string(),
        },
    }
}

/// Runs `op` unconfined (must succeed: the control) and in the enforced
/// agent `a`, bound to `call` when given (refused, with a `deny` row).
fn refused_with_control(
    h: &Harness,
    a: &str,
    call: Option<&str>,
    op: &[&str],
    action: &str,
    target: &str,
    what: &str,
) -> Check {
    let ok = run_unconfined(h, op);
    expect(&ok, "ok", &format!("{what} (unenforced control)"))?;
    let denied = h.run(a, call, op);
    expect(&denied, EPERM, what)?;
    audited(h, a, action, target, "deny")
}

/// User namespace + bind mount over a baseline read scope: refused at the
/// namespace, so the mount never happens.
pub fn userns_bind_mount(h: &Harness, a: &str) -> Check {
    enforced(h, a)?;
    let scope = h.work.join("scope");
    let evil = h.work.join("evil");
    for d in [&scope, &evil] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    for (d, text) in [(&scope, "scoped\n"), (&evil, "planted\n")] {
        let f = d.join("f.txt");
        std::fs::write(&f, text).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;
    }
    let (s, e) = (Harness::s(&scope), Harness::s(&evil));
    let op = ["userns-bind", e.as_str(), s.as_str(), "f.txt"];
    let ok = run_unconfined(h, &op);
    if ok.result.starts_with("errno:") && ok.result.ends_with("unshare") {
        return Err(format!(
            "{SKIPPED}this kernel refuses user namespaces to unprivileged users anyway ({}): no control possible",
            ok.result
        ));
    }
    expect(
        &ok,
        "ok planted",
        "user namespace + bind mount (unenforced control)",
    )?;
    let denied = h.run(a, None, &op);
    expect(&denied, EPERM, "user namespace creation")?;
    audited(h, a, "userns_create", "", "deny")
}

/// chmod, utimes (and user xattrs where the filesystem has them) on a file
/// the agent user owns: allowed by file permissions, refused without a
/// write scope.
pub fn attr_changes(h: &Harness, a: &str) -> Check {
    enforced(h, a)?;
    let uid = agentd::enforce::launch::creds_of_user(AGENT_USER)
        .map_err(|e| e.to_string())?
        .uid;
    let f = h.file(&format!("owned-{a}.txt"), b"mine\n", 0o644);
    std::os::unix::fs::chown(&f, Some(uid), None).map_err(|e| e.to_string())?;
    let p = Harness::s(&f);
    let name = format!("owned-{a}.txt");
    // The backends name these rows differently (lsm: its hook; seccomp: the
    // syscall the supervisor performed).
    let lsm = h.backend == Backend::Lsm;
    let (chmod, utimes, xattr) = if lsm {
        ("path_chmod", "path_setattr", "path_xattr")
    } else {
        ("chmod", "utimes", "setxattr")
    };
    for (op, action) in [("chmod", chmod), ("utimes", utimes)] {
        refused_with_control(h, a, None, &[op, &p, "384"], action, &name, op)?;
    }
    // User xattrs: only where the work directory's filesystem supports them.
    if run_unconfined(h, &["setxattr", &p, "user.agentd"]).is("errno:95") {
        return Ok(());
    }
    refused_with_control(
        h,
        a,
        None,
        &["setxattr", &p, "user.agentd"],
        xattr,
        &name,
        "setxattr",
    )
}

/// vsock (refused before the family is even looked up) and ICMP ("ping")
/// sockets, with a control where the kernel lets the agent's group open
/// them at all.
pub fn socket_families(h: &Harness, a: &str) -> Check {
    enforced(h, a)?;
    let vsock = ["socket-num", "40", "1", "0"];
    let ctl = run_unconfined(h, &vsock);
    if ctl.is(EPERM) {
        return Err(format!("vsock refused with no enforcement: {}", ctl.result));
    }
    expect(&h.run(a, None, &vsock), EPERM, "vsock socket")?;
    audited(h, a, "socket_create", "40/1/0", "deny")?;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap_or_default();
    let gid = agentd::enforce::launch::creds_of_user(AGENT_USER)
        .map_err(|e| e.to_string())?
        .gid;
    let mut bounds = range
        .split_whitespace()
        .filter_map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (bounds.next().unwrap_or(1), bounds.next().unwrap_or(0));
    if !(lo..=hi).contains(&(gid as u64)) {
        return Err(format!(
            "{SKIPPED}vsock refused and audited; ICMP not checked: net.ipv4.ping_group_range is `{}` here, so the kernel refuses ping sockets to the agent's group anyway (no control possible)",
            range.trim()
        ));
    }
    refused_with_control(
        h,
        a,
        None,
        &["socket-num", "2", "2", "1"],
        "socket_create",
        "2/2/1",
        "ICMP ping socket",
    )
}

/// Inbound: a TCP listener (any port) and an abstract unix name.
pub fn inbound(h: &Harness, a: &str) -> Check {
    enforced(h, a)?;
    refused_with_control(h, a, None, &["listen", "0"], "listen", "", "TCP listen")?;
    let name = format!("@agentd-scenario-{a}");
    refused_with_control(
        h,
        a,
        None,
        &["unix-bind", &name],
        "bind",
        &name[1..],
        "abstract unix bind",
    )
}

/// Starts `agentd-scenarios probe unix-serve PATHS…` outside any agent (a
/// listener that is not agentd) and waits until it listens.
fn serve_unix(h: &Harness, paths: &[&str]) -> Result<Child, String> {
    let mut child = Command::new(&h.exe)
        .arg("probe")
        .arg("unix-serve")
        .args(paths)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "result=ready" {
        let _ = child.kill();
        return Err(format!("unix-serve: {line}"));
    }
    Ok(child)
}

/// A granted unix socket path swapped for a symlink to another socket: the
/// address string still matches the grant, the socket reached does not.
pub fn unix_swapped_socket(h: &Harness, a: &str) -> Check {
    enforced(h, a)?;
    let granted = h.work.join(format!("granted-{a}.sock"));
    let other = h.work.join(format!("other-{a}.sock"));
    let (g, o) = (Harness::s(&granted), Harness::s(&other));
    let mut server = serve_unix(h, &[&g, &o])?;
    let dest = format!("unix:{g}");
    let call = format!("c-unix-{a}");
    let result = (|| {
        h.grant(a, &call, spec(&[], &[], &[], &[&dest], 60))?;
        expect(
            &h.run(a, Some(&call), &["unix-connect", &g]),
            "ok",
            "connect to the granted socket",
        )?;
        // Swap: the granted path now leads to the other socket.
        let moved = h.work.join(format!("granted-{a}.real"));
        std::fs::rename(&granted, &moved).map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(&other, &granted).map_err(|e| e.to_string())?;
        refused_with_control(
            h,
            a,
            Some(&call),
            &["unix-connect", &g],
            "connect",
            &format!("other-{a}.sock"),
            "connect through a swapped socket path",
        )
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// `/proc/self` in the baseline covers the agent's own pid directory, not
/// its sibling's: reading another process's environ is refused.
pub fn proc_other_environ(h: &Harness, a: &str) -> Check {
    enforced(h, a)?;
    expect(
        &h.run(a, None, &["open", "/proc/self/status", "r"]),
        "ok Name",
        "own /proc/self/status",
    )?;
    refused_with_control(
        h,
        a,
        None,
        &["proc-other-environ"],
        "file_open",
        "environ",
        "sibling's /proc/<pid>/environ",
    )
}

/// Starts a process as the agent user outside any agent that lets any
/// same-user tracer attach; returns it and its pid.
fn ptracee(h: &Harness) -> Result<(Child, u32), String> {
    let creds = agentd::enforce::launch::creds_of_user(AGENT_USER).map_err(|e| e.to_string())?;
    let (uid, gid) = (creds.uid, creds.gid);
    let mut cmd = Command::new(&h.exe);
    cmd.args(["probe", "ptracee", "30"]).stdout(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    match line.trim().strip_prefix("result=ready ") {
        Some(pid) => Ok((child, pid.parse().map_err(|_| line.clone())?)),
        None => {
            let _ = child.kill();
            Err(format!("ptracee: {line}"))
        }
    }
}

/// ptrace of a same-user process outside the agent: succeeds unenforced,
/// refused and audited enforced.
pub fn tamper_ptrace(h: &Harness, a: &str) -> Check {
    enforced(h, a)?;
    let (mut target, pid) = ptracee(h)?;
    let pid = pid.to_string();
    let what = "ptrace of a same-user process outside the agent";
    let op = ["ptrace-pid", pid.as_str()];
    let result = (|| {
        expect(
            &run_unconfined(h, &op),
            "ok",
            &format!("{what} (unenforced control)"),
        )?;
        expect(&h.run(a, None, &op), EPERM, what)?;
        audited(h, a, "ptrace", "", "deny")
    })();
    let _ = target.kill();
    let _ = target.wait();
    result
}

/// A valid bpf() call (an array map): succeeds unenforced where the kernel
/// lets unprivileged users call bpf() at all, refused and audited enforced.
pub fn tamper_bpf(h: &Harness, a: &str) -> Check {
    enforced(h, a)?;
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap_or_default();
    if disabled.trim() != "0" {
        // The kernel refuses bpf() to unprivileged users before any hook.
        return Err(format!(
            "{SKIPPED}kernel.unprivileged_bpf_disabled is {} here, so the kernel refuses bpf() to the agent user anyway (no control possible)",
            disabled.trim()
        ));
    }
    refused_with_control(h, a, None, &["bpf-map"], "bpf", "", "bpf map create")
}
