//! Signals and pidfds across agents: kill, tkill, tgkill, rt_sigqueueinfo,
//! rt_tgsigqueueinfo, pidfd_open and pidfd_send_signal are notified; a
//! target outside the agent's own cgroup (another agent, agentd, any other
//! process of the host) is refused with a row (`signal_outside_agent`).
//! Decisions read register values only (a pid), or the tracee's fd table
//! for a pidfd. Process-group and broadcast targets (pid ≤ 0) run: the
//! launcher's Landlock signal scope confines them to the agent's own
//! processes, and it also backs every decision here against a pid reused
//! or an fd swapped after the check.
use super::{Answer, Decided, Supervisor};
use crate::{
    enforce::{agent_cgroup, registry::Mode},
    protocol::reason,
};

/// Syscalls decided here.
pub const SYSCALLS: &[(i64, &str)] = &[
    (libc::SYS_kill, "kill"),
    (libc::SYS_tkill, "tkill"),
    (libc::SYS_tgkill, "tgkill"),
    (libc::SYS_rt_sigqueueinfo, "rt_sigqueueinfo"),
    (libc::SYS_rt_tgsigqueueinfo, "rt_tgsigqueueinfo"),
    (libc::SYS_pidfd_open, "pidfd_open"),
    (libc::SYS_pidfd_send_signal, "pidfd_send_signal"),
];

/// The target pid of a signal or pidfd syscall; `None` for group and
/// broadcast targets (pid ≤ 0) and for fds that are not process handles.
fn target(tid: u32, data: &libc::seccomp_data) -> Option<i32> {
    let a = data.args;
    let nr = data.nr as i64;
    let pid = match nr {
        libc::SYS_kill
        | libc::SYS_tkill
        | libc::SYS_tgkill
        | libc::SYS_rt_sigqueueinfo
        | libc::SYS_rt_tgsigqueueinfo
        | libc::SYS_pidfd_open => a[0] as i32,
        libc::SYS_pidfd_send_signal => pid_of_fd(tid, a[0] as i32)?,
        _ => return None,
    };
    (pid > 0).then_some(pid)
}

/// The process a tracee's pidfd (or `/proc/PID` directory fd) refers to.
fn pid_of_fd(tid: u32, fd: i32) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/{tid}/fdinfo/{fd}")).ok()?;
    if let Some(pid) = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(pid);
    }
    let link = std::fs::read_link(format!("/proc/{tid}/fd/{fd}")).ok()?;
    link.strip_prefix("/proc").ok()?.to_str()?.parse().ok()
}

/// Decides `n` if it is a signal or pidfd syscall.
pub(super) fn decide(
    sup: &Supervisor,
    n: &libc::seccomp_notif,
) -> Option<(Answer, Option<Decided>)> {
    let nr = n.data.nr as i64;
    let name = SYSCALLS.iter().find(|(s, _)| *s == nr)?.1;
    let Some(pid) = target(n.pid, &n.data) else {
        return Some((Answer::Continue, None));
    };
    let Some(cgroup) = agent_cgroup::cgroup_of_pid(pid as u32) else {
        // No such process (or it just exited): the kernel's answer.
        return Some((Answer::Errno(libc::ESRCH), None));
    };
    let reg = sup.registry.read().unwrap_or_else(|p| p.into_inner());
    let Some(agent) = reg.agents.get(&sup.agent) else {
        return Some((Answer::Errno(libc::EPERM), None));
    };
    let rel = cgroup.trim_start_matches('/');
    let inside = !rel.is_empty() && agent.cgroup.path.ends_with(rel);
    let audit_only = agent.mode == Mode::AuditOnly;
    drop(reg);
    if inside {
        return Some((Answer::Continue, None));
    }
    let decided = Decided {
        action: "signal",
        target: format!("{name} pid {pid} ({cgroup})"),
        allowed: false,
        reason: reason::SIGNAL_OUTSIDE_AGENT,
        call: None,
        access: None,
    };
    let answer = if audit_only {
        Answer::Continue
    } else {
        Answer::Errno(libc::EPERM)
    };
    Some((answer, Some(decided)))
}
