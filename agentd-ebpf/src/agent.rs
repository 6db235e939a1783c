//! Shared decision helpers: who is an agent, what it is bound to, and how a
//! decision is counted and reported.
//!
//! Used by both backends' programs (seccomp: `process_tree`, `cgroup_net`;
//! lsm: `lsm_*`). The contract for a hook: `current_agent()` → return early
//! for non-agents; `bound_call()` → the call (or baseline) to decide against;
//! one of the `*_permitted()` checks; `report()` (or `count_only()` for
//! decisions user space already audits); `blocks()` for the verdict.
use agentd_common::{
    access::{AccessKey, AccessSummary},
    baseline_call_id, AgentCgroup, Binding, ConnectKey, Counter, ExecKey, FileId, Hook,
    KernelEvent, KernelReason, Mode, PendingGrant, PendingKey, ProcessCall, RateWindow, UseTicket,
    CONNECT_FIXED_BITS, DENIAL_EVENTS_PER_SEC, EVENT_TARGET_LEN, PENDING_NAMES_ARGS, PENDING_SLOTS,
    TICKET_TRIES, UNLIMITED_USES,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::map,
    maps::{lpm_trie::Key, PerCpuArray},
};

use crate::maps::{
    ACCESS_SUMMARIES, AGENT_CGROUPS, BINDINGS, CLAIMANTS, CONNECT_RULES, COUNTERS, EVENTS,
    EVENT_RATE, EXEC_ARGS, EXEC_GRANTS, FILE_CLAIMS, LINEAGE, PENDING, USE_TICKETS,
};

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
        match exec_rule(id, file, now) {
            KernelReason::Allowed => return KernelReason::Allowed,
            KernelReason::GrantExpired => reason = KernelReason::GrantExpired,
            _ => {}
        }
    }
    reason
}

/// Whether `call_id`'s own exec grants name `file` at `now`.
#[inline(always)]
pub fn exec_rule(call_id: u64, file: FileId, now: u64) -> KernelReason {
    let key = ExecKey { call_id, file };
    match unsafe { EXEC_GRANTS.get(&key) } {
        Some(g) if g.expires_at_ns == 0 || g.expires_at_ns > now => KernelReason::Allowed,
        Some(_) => KernelReason::GrantExpired,
        None => KernelReason::NoGrant,
    }
}

/// A pending grant of the agent naming `file` for exec that the calling
/// process may claim: the oldest, with one use spent and the process bound
/// to it (children inherit). A grant that names arguments is claimed only
/// if the kernel holds them (`EXEC_ARGS`; else `ExecArgsUnverifiable`):
/// the caller then has `sched_process_exec` check the new argv.
#[inline(always)]
pub fn claim_exec(cgroup_id: u64, agent: &AgentCgroup, file: FileId) -> Result<u64, KernelReason> {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let tgid = current_tgid();
    let started = started_at(tgid);
    let mut best: *mut PendingGrant = core::ptr::null_mut();
    let mut best_at = u64::MAX;
    let mut refused = KernelReason::NoGrant;
    let mut slot = 0;
    while slot < PENDING_SLOTS {
        let key = PendingKey {
            agent_id: agent.agent_id,
            slot,
        };
        slot += 1;
        let Some(g) = PENDING.get_ptr_mut(&key) else {
            continue;
        };
        let grant = unsafe { &*g };
        if grant.decided_at_ns >= best_at {
            continue;
        }
        match exec_rule(grant.call_id, file, now) {
            KernelReason::Allowed => {}
            KernelReason::GrantExpired => {
                if refused == KernelReason::NoGrant {
                    refused = KernelReason::GrantExpired;
                }
                continue;
            }
            _ => continue,
        }
        if !claimable_by(tgid, started, cgroup_id, grant) {
            refused = KernelReason::NotRequesterTree;
            continue;
        }
        if grant.flags & PENDING_NAMES_ARGS != 0
            && !unsafe { EXEC_ARGS.get(&grant.call_id) }.is_some_and(|a| a.verifiable())
        {
            refused = KernelReason::ExecArgsUnverifiable;
            continue;
        }
        if !grant.live(now) {
            refused = KernelReason::GrantUsedUp;
            continue;
        }
        best = g;
        best_at = grant.decided_at_ns;
    }
    if best.is_null() {
        return Err(refused);
    }
    spend_use(best)?;
    let call_id = unsafe { (*best).call_id };
    let binding = Binding {
        call_id,
        agent_id: agent.agent_id,
        _pad: 0,
    };
    if BINDINGS.insert(&tgid, &binding, 0).is_err() {
        // Fail closed: a claim that cannot bind does not run.
        return Err(KernelReason::NoGrant);
    }
    Ok(call_id)
}

/// Per-CPU scratch of one file claim (`claim_file`): the claim's choice so
/// far. It lives in map memory, whose contents the verifier does not track
/// per path: what would otherwise be a different constant on every path
/// through the slots (and make the verifier walk each of them apart) is one
/// unknown value.
#[repr(C)]
pub struct PendingScratch {
    /// The chosen slot; [`PENDING_SLOTS`] = none yet.
    pub best_slot: u32,
    /// Whether the process already claimed it (no use to spend).
    pub best_claimed: u32,
    /// Its call and decision time.
    pub best_call: u64,
    pub best_at: u64,
    /// Why a covering grant was not chosen (a `KernelReason`).
    pub refused: u32,
    pub _pad: u32,
}

/// One scratch value per CPU: a hook's decision runs to its end on one CPU.
#[map]
pub static PENDING_SCRATCH: PerCpuArray<PendingScratch> = PerCpuArray::with_max_entries(1, 0);

/// Whether process `tgid` (started at `started`, its `LINEAGE` start time
/// or 0) may claim grant `call_id`: it is on the grant's requester chain,
/// or was created after the decision by a process that may (`CLAIMANTS`,
/// kept by user space and the fork tracepoint — the claim rule of
/// `agentd_common::may_claim`, decided once per process instead of walked
/// at every claim).
#[inline(always)]
pub fn is_claimant(call_id: u64, tgid: u32, started: u64) -> bool {
    let key = ProcessCall {
        call_id,
        tgid,
        _pad: 0,
    };
    unsafe { CLAIMANTS.get(&key) }.is_some_and(|v| *v == started)
}

/// The process's start time as its lineage record has it (0 without one):
/// what `CLAIMANTS` and `FILE_CLAIMS` entries are checked against, so a
/// reused pid inherits nothing.
#[inline(always)]
pub(crate) fn started_at(tgid: u32) -> u64 {
    unsafe { LINEAGE.get(&tgid) }.map_or(0, |l| l.start_ns)
}

/// The claim rule in the kernel: the process is in the grant's cgroup and
/// among its claimants ([`is_claimant`]).
#[inline(always)]
fn claimable_by(tgid: u32, started: u64, cgroup_id: u64, grant: &PendingGrant) -> bool {
    grant.cgroup_id == cgroup_id && is_claimant(grant.call_id, tgid, started)
}

/// Claims for the calling process a file operation that the agent's
/// pending grants in `covered` (a bit per slot) cover: the oldest live one
/// it may claim ([`is_claimant`]). A process spends one use per grant for
/// its file operations, as under the seccomp supervisor: a grant it already
/// claimed (`FILE_CLAIMS`) is chosen again without spending, so one tool
/// call's in-process work (mkdir, temp file, rename) is one use. Otherwise
/// why not: `NotRequesterTree`, `GrantUsedUp` or `NoGrant`.
#[inline(always)]
pub fn claim_file(cgroup_id: u64, agent: &AgentCgroup, covered: u32) -> Result<u64, KernelReason> {
    let s = PENDING_SCRATCH
        .get_ptr_mut(0)
        .ok_or(KernelReason::NoGrant)?;
    let tgid = current_tgid();
    let started = started_at(tgid);
    let now = unsafe { bpf_ktime_get_boot_ns() };
    unsafe {
        (*s).best_slot = PENDING_SLOTS;
        (*s).best_call = 0;
        (*s).best_at = u64::MAX;
        (*s).best_claimed = 0;
        (*s).refused = KernelReason::NoGrant as u32;
    }
    let mut slot = 0;
    while slot < PENDING_SLOTS {
        let key = PendingKey {
            agent_id: agent.agent_id,
            slot,
        };
        let this = slot;
        slot += 1;
        if covered & (1u32 << this) == 0 {
            continue;
        }
        let Some(grant) = (unsafe { PENDING.get(&key) }) else {
            continue;
        };
        if grant.expires_at_ns != 0 && grant.expires_at_ns <= now {
            continue;
        }
        if grant.decided_at_ns >= unsafe { (*s).best_at } {
            continue;
        }
        if !claimable_by(tgid, started, cgroup_id, grant) {
            unsafe { (*s).refused = KernelReason::NotRequesterTree as u32 };
            continue;
        }
        let claim = ProcessCall {
            call_id: grant.call_id,
            tgid,
            _pad: 0,
        };
        let claimed = unsafe { FILE_CLAIMS.get(&claim) }.is_some_and(|v| *v == started);
        if !claimed && grant.uses_left == 0 {
            unsafe { (*s).refused = KernelReason::GrantUsedUp as u32 };
            continue;
        }
        unsafe {
            (*s).best_slot = this;
            (*s).best_call = grant.call_id;
            (*s).best_at = grant.decided_at_ns;
            (*s).best_claimed = claimed as u32;
        }
    }
    let (best_slot, call_id) = unsafe { ((*s).best_slot, (*s).best_call) };
    if best_slot >= PENDING_SLOTS {
        let refused = unsafe { (*s).refused };
        return Err(if refused == KernelReason::NotRequesterTree as u32 {
            KernelReason::NotRequesterTree
        } else if refused == KernelReason::GrantUsedUp as u32 {
            KernelReason::GrantUsedUp
        } else {
            KernelReason::NoGrant
        });
    }
    let key = PendingKey {
        agent_id: agent.agent_id,
        slot: best_slot,
    };
    // Fail closed: the slot changed hands since it was chosen.
    let Some(g) = PENDING.get_ptr_mut(&key) else {
        return Err(KernelReason::NoGrant);
    };
    if unsafe { (*g).call_id } != call_id {
        return Err(KernelReason::NoGrant);
    }
    if unsafe { (*s).best_claimed } != 0 {
        return Ok(call_id);
    }
    spend_use(g)?;
    let claim = ProcessCall {
        call_id,
        tgid,
        _pad: 0,
    };
    // Best effort: without the record, the process's next file operation
    // under this grant spends another use (never one more than it has).
    let _ = FILE_CLAIMS.insert(&claim, &started, 0);
    Ok(call_id)
}

/// Whether a decision blocks: denials block unless the agent is audit-only.
#[inline(always)]
pub fn blocks(agent: &AgentCgroup, reason: KernelReason) -> bool {
    reason != KernelReason::Allowed && agent.mode != Mode::AuditOnly as u8
}

/// Whether `call_id` (or, failing that, the agent's baseline) may connect to
/// `addr` (IPv4-mapped for IPv4) on `port`; a rule with port 0 covers any port.
#[inline(always)]
pub fn connect_permitted(
    call_id: u64,
    agent: &AgentCgroup,
    addr: [u8; 16],
    port: u16,
) -> KernelReason {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut reason = KernelReason::NoGrant;
    for id in [call_id, baseline_call_id(agent.agent_id)] {
        match connect_rule(id, addr, port, now) {
            KernelReason::Allowed => return KernelReason::Allowed,
            KernelReason::GrantExpired => reason = KernelReason::GrantExpired,
            _ => {}
        }
    }
    reason
}

/// Whether `call_id`'s own rules cover (`addr`, `port`) at `now`.
#[inline(always)]
fn connect_rule(call_id: u64, addr: [u8; 16], port: u16, now: u64) -> KernelReason {
    let mut reason = KernelReason::NoGrant;
    for p in [port, 0] {
        let key = Key::new(CONNECT_FIXED_BITS + 128, ConnectKey::new(call_id, p, addr));
        if let Some(rule) = CONNECT_RULES.get(&key) {
            if rule.expires_at_ns == 0 || rule.expires_at_ns > now {
                return KernelReason::Allowed;
            }
            reason = KernelReason::GrantExpired;
        }
    }
    reason
}

/// `BPF_NOEXIST`: insert only if the key is absent (atomic).
const BPF_NOEXIST: u64 = 1;

/// `E2BIG`: what a hash map update returns when the map is full.
const E2BIG: i32 = 7;

/// Spends one use of a pending grant: takes the highest free ticket at or
/// below the `uses_left` hint (see `agentd_common::UseTicket`). Refused
/// `GrantUsedUp` when every ticket is taken, `UseTicketsFull` when the map
/// has no room for one (the grant may have uses left).
#[inline(always)]
fn spend_use(g: *mut PendingGrant) -> Result<(), KernelReason> {
    let (call_id, hint) = unsafe { ((*g).call_id, (*g).uses_left) };
    if hint == UNLIMITED_USES {
        return Ok(());
    }
    let mut n = hint;
    let mut tries = 0;
    while tries < TICKET_TRIES && n > 0 {
        let ticket = UseTicket {
            call_id,
            n,
            _pad: 0,
        };
        match USE_TICKETS.insert(&ticket, &1u8, BPF_NOEXIST) {
            Ok(()) => {
                unsafe { (*g).uses_left = n - 1 };
                return Ok(());
            }
            Err(e) if e == -E2BIG => return Err(KernelReason::UseTicketsFull),
            Err(_) => {}
        }
        n -= 1;
        tries += 1;
    }
    if n == 0 {
        unsafe { (*g).uses_left = 0 };
    }
    Err(KernelReason::GrantUsedUp)
}

/// A pending grant of the agent that covers a connect to (`addr`, `port`)
/// and that the calling process may claim ([`claimable_by`]):
/// the oldest such grant, with one use spent. Otherwise why not:
/// `NoGrant` (none covers), `NotRequesterTree` (one covers, but this
/// process may not claim it), `GrantUsedUp` (the chosen one was spent).
#[inline(always)]
pub fn claim_connect(
    cgroup_id: u64,
    agent: &AgentCgroup,
    addr: [u8; 16],
    port: u16,
) -> Result<u64, KernelReason> {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let tgid = current_tgid();
    let started = started_at(tgid);
    let mut best: *mut PendingGrant = core::ptr::null_mut();
    let mut best_at = u64::MAX;
    let mut refused = KernelReason::NoGrant;
    let mut slot = 0;
    while slot < PENDING_SLOTS {
        let key = PendingKey {
            agent_id: agent.agent_id,
            slot,
        };
        slot += 1;
        let Some(g) = PENDING.get_ptr_mut(&key) else {
            continue;
        };
        let grant = unsafe { &*g };
        if grant.decided_at_ns >= best_at {
            continue;
        }
        match connect_rule(grant.call_id, addr, port, now) {
            KernelReason::Allowed => {}
            KernelReason::GrantExpired => {
                if refused == KernelReason::NoGrant {
                    refused = KernelReason::GrantExpired;
                }
                continue;
            }
            _ => continue,
        }
        if !claimable_by(tgid, started, cgroup_id, grant) {
            refused = KernelReason::NotRequesterTree;
            continue;
        }
        if !grant.live(now) {
            refused = KernelReason::GrantUsedUp;
            continue;
        }
        best = g;
        best_at = grant.decided_at_ns;
    }
    if best.is_null() {
        return Err(refused);
    }
    spend_use(best)?;
    Ok(unsafe { (*best).call_id })
}

/// Adds one to a never-rate-limited counter.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        unsafe { *slot += 1 };
    }
}

/// Counts a decision without sending an event (user space audits it itself).
#[inline(always)]
pub fn count_only(reason: KernelReason) {
    count(if reason == KernelReason::Allowed {
        Counter::Allowed
    } else {
        Counter::Denied
    });
}

/// Whether another denial event of this agent may enter the ring buffer in
/// the current one-second window.
#[inline(always)]
fn denial_event_budget(agent_id: u32) -> bool {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    match EVENT_RATE.get_ptr_mut(&agent_id) {
        Some(w) => unsafe {
            if now.wrapping_sub((*w).window_start_ns) >= 1_000_000_000 {
                (*w).window_start_ns = now;
                (*w).emitted = 1;
                true
            } else if (*w).emitted < DENIAL_EVENTS_PER_SEC {
                (*w).emitted += 1;
                true
            } else {
                false
            }
        },
        None => {
            let w = RateWindow {
                window_start_ns: now,
                emitted: 1,
                _pad: 0,
            };
            let _ = EVENT_RATE.insert(&agent_id, &w, 0);
            true
        }
    }
}

/// Counts a decision and sends it to user space (denials rate-limited per
/// agent; the counters always count). `target` is a kernel string or null.
#[inline(always)]
pub fn report(
    hook: Hook,
    cgroup_id: u64,
    agent: &AgentCgroup,
    call_id: u64,
    reason: KernelReason,
    target: *const u8,
) {
    let Some(event) = begin_event(hook, cgroup_id, agent, call_id, reason) else {
        return;
    };
    let mut entry = event;
    let e = entry.as_mut_ptr();
    unsafe {
        if !target.is_null() {
            let buf: &mut [u8; EVENT_TARGET_LEN] = &mut (*e).target;
            if let Ok(s) = bpf_probe_read_kernel_str_bytes(target, buf) {
                (*e).target_len = s.len() as u32;
            }
        }
    }
    entry.submit(wakeup(reason));
}

/// What an allowed access under a grant is counted as: the object (see
/// [`AccessKey`]) and how its event would name it.
#[derive(Clone, Copy)]
pub struct Object {
    pub a: u64,
    pub b: u64,
    pub port: u16,
    /// Where the scope that allowed it was found (a bound call's file
    /// reads: `agentd_common::access::scope_hint`), 0 otherwise: kept in
    /// the summary so a repeat can ask that scope alone
    /// ([`repeat_entry`]).
    pub scope_hint: u8,
}

/// The summary key of `object` under `call_id` seen by `hook`.
#[inline(always)]
fn access_key(hook: Hook, call_id: u64, object: Object) -> AccessKey {
    AccessKey {
        call_id,
        a: object.a,
        b: object.b,
        hook: hook as u8,
        _pad: 0,
        port: object.port,
        _pad2: 0,
    }
}

/// This CPU's summary entry of `object` under `call_id` (seen by `hook`)
/// and the scope hint it holds, if this CPU counted the object before.
/// The hint is for the caller to re-check, never to trust.
#[inline(always)]
pub fn repeat_entry(hook: Hook, call_id: u64, object: Object) -> Option<(*mut AccessSummary, u8)> {
    let key = access_key(hook, call_id, object);
    let v = ACCESS_SUMMARIES.get_ptr_mut(&key)?;
    let hint = unsafe {
        if (*v).count == 0 {
            return None;
        }
        (*v).scope_hint
    };
    Some((v, hint))
}

/// Counts one more allowed access into an entry [`repeat_entry`] found
/// (this CPU's value: no other CPU writes it).
#[inline(always)]
pub fn count_repeat(v: *mut AccessSummary) {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    unsafe {
        (*v).count += 1;
        (*v).last_ns = now;
    }
    count(Counter::Allowed);
    count(Counter::ReadsByScopeHint);
}

/// Per-CPU scratch of a new [`AccessSummary`] (larger than a hook can keep
/// on its BPF stack beside its own state).
#[map]
pub static SUMMARY_SCRATCH: PerCpuArray<AccessSummary> = PerCpuArray::with_max_entries(1, 0);

/// Counts an allowed access of `object` under `call_id` in
/// `ACCESS_SUMMARIES`. True when an entry already counted this object: its
/// first access had its own event, and this one needs none. False for the
/// first access (the entry is made; the caller sends its event) and when
/// the map is full (sent as an event, never lost).
#[inline(always)]
fn counted(
    hook: Hook,
    agent: &AgentCgroup,
    call_id: u64,
    object: Object,
    target: *const u8,
) -> bool {
    let key = access_key(hook, call_id, object);
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if add_to(&key, agent, now, object.scope_hint) {
        return true;
    }
    let Some(v) = SUMMARY_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    unsafe {
        (*v).count = 1;
        (*v).first_ns = now;
        (*v).last_ns = now;
        (*v).tgid = current_tgid();
        (*v).agent_id = agent.agent_id;
        (*v).mode = agent.mode;
        (*v).scope_hint = object.scope_hint;
        (*v).target_len = 0;
        if !target.is_null() {
            let buf: &mut [u8; EVENT_TARGET_LEN] = &mut (*v).target;
            if let Ok(s) = bpf_probe_read_kernel_str_bytes(target, buf) {
                (*v).target_len = s.len() as u32;
            }
        }
        if ACCESS_SUMMARIES.insert(&key, &*v, BPF_NOEXIST).is_ok() {
            return false;
        }
    }
    // Another CPU made the entry in between (or the map is full).
    add_to(&key, agent, now, object.scope_hint)
}

/// Adds one access at `now` to an existing entry of `key` (this CPU's
/// value), with the scope hint of the decision that allowed it.
#[inline(always)]
fn add_to(key: &AccessKey, agent: &AgentCgroup, now: u64, hint: u8) -> bool {
    let Some(v) = ACCESS_SUMMARIES.get_ptr_mut(key) else {
        return false;
    };
    unsafe {
        if (*v).count == 0 {
            // This CPU's first: the object was named by the entry's maker.
            (*v).first_ns = now;
            (*v).tgid = current_tgid();
            (*v).agent_id = agent.agent_id;
            (*v).mode = agent.mode;
        }
        (*v).count += 1;
        (*v).last_ns = now;
        (*v).scope_hint = hint;
    }
    true
}

/// [`report`] for an access that may be counted instead: an allowed one
/// under a grant (not the baseline) of an object already seen under it
/// is only counted ([`counted`]); anything else is reported as before.
#[inline(always)]
pub fn report_access(
    hook: Hook,
    cgroup_id: u64,
    agent: &AgentCgroup,
    call_id: u64,
    reason: KernelReason,
    object: Object,
    target: *const u8,
) {
    if reason == KernelReason::Allowed
        && call_id != baseline_call_id(agent.agent_id)
        && counted(hook, agent, call_id, object, target)
    {
        count(Counter::Allowed);
        return;
    }
    report(hook, cgroup_id, agent, call_id, reason, target);
}

/// [`report_addr`] for an access that may be counted instead (see
/// [`report_access`]); the summary's object is the address and port.
#[inline(always)]
pub fn report_access_addr(
    hook: Hook,
    cgroup_id: u64,
    agent: &AgentCgroup,
    call_id: u64,
    reason: KernelReason,
    addr: [u8; 16],
    port: u16,
) {
    if reason == KernelReason::Allowed && call_id != baseline_call_id(agent.agent_id) {
        let object = Object {
            a: u64::from_ne_bytes([
                addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
            ]),
            b: u64::from_ne_bytes([
                addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
            ]),
            port,
            scope_hint: 0,
        };
        if counted(hook, agent, call_id, object, core::ptr::null()) {
            count(Counter::Allowed);
            return;
        }
    }
    report_addr(hook, cgroup_id, agent, call_id, reason, addr, port);
}

/// `BPF_RB_NO_WAKEUP`: the reader polls every 200 ms anyway.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// Denials wake the reader at once; allows ride along with the next wakeup
/// or poll (waking user space per allowed open would dominate their cost).
#[inline(always)]
fn wakeup(reason: KernelReason) -> u64 {
    if reason == KernelReason::Allowed {
        BPF_RB_NO_WAKEUP
    } else {
        0
    }
}

/// Like [`report`] for network hooks: the target is the destination as 16
/// address bytes (IPv4-mapped) followed by the port, big-endian (18 bytes).
#[inline(always)]
pub fn report_addr(
    hook: Hook,
    cgroup_id: u64,
    agent: &AgentCgroup,
    call_id: u64,
    reason: KernelReason,
    addr: [u8; 16],
    port: u16,
) {
    let Some(mut entry) = begin_event(hook, cgroup_id, agent, call_id, reason) else {
        return;
    };
    let e = entry.as_mut_ptr();
    unsafe {
        let t = &mut (*e).target;
        let mut i = 0;
        while i < 16 {
            t[i] = addr[i];
            i += 1;
        }
        let p = port.to_be_bytes();
        t[16] = p[0];
        t[17] = p[1];
        (*e).target_len = 18;
    }
    entry.submit(wakeup(reason));
}

/// Counts the decision and reserves a filled-in event, unless the ring
/// buffer is full or the agent's denial budget is spent (both counted).
#[inline(always)]
fn begin_event(
    hook: Hook,
    cgroup_id: u64,
    agent: &AgentCgroup,
    call_id: u64,
    reason: KernelReason,
) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<KernelEvent>> {
    let allowed = reason == KernelReason::Allowed;
    count(if allowed {
        Counter::Allowed
    } else {
        Counter::Denied
    });
    if !allowed && !denial_event_budget(agent.agent_id) {
        count(Counter::EventsSuppressed);
        return None;
    }
    let Some(mut entry) = EVENTS.reserve::<KernelEvent>(0) else {
        count(Counter::EventsDropped);
        return None;
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
    }
    Some(entry)
}
