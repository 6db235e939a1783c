//! Shared decision helpers: who is an agent, what it is bound to, and how a
//! decision is counted and reported.
use agentd_common::{
    baseline_call_id, AgentCgroup, Binding, Counter, ExecKey, FileId, Hook, KernelEvent,
    KernelReason, Mode, EVENT_TARGET_LEN,
};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
    bpf_probe_read_kernel_str_bytes,
};

use crate::maps::{AGENT_CGROUPS, BINDINGS, COUNTERS, EVENTS, EXEC_GRANTS};

/// The calling task's agent, if its cgroup is an agent cgroup.
#[inline(always)]
pub fn current_agent() -> Option<(u64, AgentCgroup)> {
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out before the map can change it.
    let agent = unsafe { AGENT_CGROUPS.get(&cgroup_id) }.copied()?;
    Some((cgroup_id, agent))
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The call this tgid is bound to, or the agent's baseline.
#[inline(always)]
pub fn bound_call(tgid: u32, agent: &AgentCgroup) -> u64 {
    match unsafe { BINDINGS.get(&tgid) } {
        Some(Binding { call_id, .. }) => *call_id,
        None => baseline_call_id(agent.agent_id),
    }
}

/// Whether `call_id` (or, failing that, the agent's baseline) may exec `file`.
#[inline(always)]
pub fn exec_permitted(call_id: u64, agent: &AgentCgroup, file: FileId) -> KernelReason {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut reason = KernelReason::NoGrant;
    for id in [call_id, baseline_call_id(agent.agent_id)] {
        let key = ExecKey { call_id: id, file };
        if let Some(grant) = unsafe { EXEC_GRANTS.get(&key) } {
            if grant.expires_at_ns == 0 || grant.expires_at_ns > now {
                return KernelReason::Allowed;
            }
            reason = KernelReason::GrantExpired;
        }
    }
    reason
}

/// Whether a decision blocks: denials block unless the agent is audit-only.
#[inline(always)]
pub fn blocks(agent: &AgentCgroup, reason: KernelReason) -> bool {
    reason != KernelReason::Allowed && agent.mode != Mode::AuditOnly as u8
}

fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        unsafe { *slot += 1 };
    }
}

/// Counts a decision and sends it to user space. `target` is a kernel string.
#[inline(always)]
pub fn report(
    hook: Hook,
    cgroup_id: u64,
    agent: &AgentCgroup,
    call_id: u64,
    reason: KernelReason,
    target: *const u8,
) {
    let allowed = reason == KernelReason::Allowed;
    count(if allowed {
        Counter::Allowed
    } else {
        Counter::Denied
    });
    let Some(mut entry) = EVENTS.reserve::<KernelEvent>(0) else {
        count(Counter::EventsDropped);
        return;
    };
    let event = entry.as_mut_ptr();
    unsafe {
        (*event).ktime_ns = bpf_ktime_get_boot_ns();
        (*event).cgroup_id = cgroup_id;
        (*event).call_id = call_id;
        (*event).tgid = current_tgid();
        (*event).agent_id = agent.agent_id;
        (*event).hook = hook as u8;
        (*event).allowed = allowed as u8;
        (*event).reason = reason as u8;
        (*event).mode = agent.mode;
        (*event).target_len = 0;
        if !target.is_null() {
            let buf: &mut [u8; EVENT_TARGET_LEN] = &mut (*event).target;
            if let Ok(s) = bpf_probe_read_kernel_str_bytes(target, buf) {
                (*event).target_len = s.len() as u32;
            }
        }
    }
    entry.submit(0);
}
