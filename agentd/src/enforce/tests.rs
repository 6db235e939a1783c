//! Unit tests of the Enforcer's own logic over the recording fake kernel
//! (no root, no BPF): grant lifecycle, binding rules, restart
//! re-adoption, mode switches, and failing closed when a privileged
//! operation errors. Each asserts the privileged calls made (or not made)
//! and the audit rows written.
use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    bpf_state::Instance,
    claim::Requester,
    fake_kernel::FakeKernel,
    fdstore::{self, StoredFd},
    lifecycle::Assembly,
    Backend, Creds, Enforcer, MemorySink, Mode,
};
use crate::grant_spec::GrantSpec;
use agentd_common::access::{AccessKey, AccessSummary};

/// One agentd over the fake kernel, for one state directory.
struct Rig {
    kernel: FakeKernel,
    sink: MemorySink,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        Rig {
            kernel: FakeKernel::new(),
            sink: MemorySink::default(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn slice(&self) -> PathBuf {
        Path::new("/fakecg").join(Instance::for_state_dir(self.dir.path()).slice())
    }

    /// Starts an Enforcer; `adopted`: the kernel still held the pinned maps.
    fn start(&self, adopted: bool, stored: Vec<StoredFd>) -> Enforcer {
        let slice = self.slice();
        self.kernel.make_cgroup(&slice);
        let e = Enforcer::assemble(Assembly {
            backend: Backend::Seccomp,
            instance: Instance::for_state_dir(self.dir.path()),
            slice,
            state_dir: self.dir.path().to_owned(),
            ops: Arc::new(self.kernel.clone()),
            sink: Arc::new(self.sink.clone()),
            queue: 16,
        });
        e.resume(adopted, stored).expect("resumes");
        e
    }

    fn agent_dir(&self, agent: &str) -> PathBuf {
        self.slice().join(agent)
    }

    /// Lifecycle rows with `action`, as (target, reason).
    fn rows(&self, action: &str) -> Vec<(String, String)> {
        self.sink
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.action == action)
            .map(|r| (r.target.clone(), r.reason_code.clone()))
            .collect()
    }
}

fn spec(ttl_secs: u64, uses: u32) -> GrantSpec {
    GrantSpec {
        read: vec!["/srv/mail".into()],
        connect: vec!["127.0.0.1/32:25".into()],
        ttl_secs,
        uses,
        ..GrantSpec::default()
    }
}

fn requester(pid: u32) -> Option<Requester> {
    Some(Requester {
        chain: vec![pid],
        cgroup_id: 7,
        cgroup: String::new(),
    })
}

const SEC: u64 = 1_000_000_000;

#[test]
fn creating_an_agent_makes_its_cgroup_baseline_and_kernel_entry() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    rig.kernel.take_calls();
    let h = e.create_agent("mail", Mode::Enforce).unwrap();
    assert_eq!(h.cgroup, rig.agent_dir("mail"));
    assert_eq!(h.id, 1);
    let calls = rig.kernel.take_calls();
    assert_eq!(
        calls,
        vec![
            format!("cgroup_create {}", rig.agent_dir("mail").display()),
            format!("install_grant {}", agentd_common::baseline_call_id(1)),
            format!("set_agent cg={} agent=1 mode=0", h.cgroup_id),
        ]
    );
    // A second agent gets the next id; a bad name never reaches the kernel.
    assert_eq!(e.create_agent("web", Mode::Enforce).unwrap().id, 2);
    rig.kernel.take_calls();
    let bad = e.create_agent("../etc", Mode::Enforce).unwrap_err();
    assert_eq!(bad.reason_code(), "agent_name_invalid");
    assert!(rig.kernel.calls_of("install_grant").is_empty());
}

#[test]
fn a_grant_is_installed_pending_spent_by_binds_and_then_refused() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    rig.kernel.take_calls();
    e.install_grant_for("mail", "c1", "m1", &spec(60, 2), requester(10))
        .unwrap();
    assert_eq!(
        rig.kernel.take_calls(),
        vec![
            "install_grant 1".to_string(),
            "publish_pending agent=1 slot=0 handle=1".to_string(),
        ]
    );
    let pending = rig.kernel.state().pending[&(1, 0)];
    assert_eq!((pending.call_id, pending.uses_left), (1, 2));
    assert_eq!(pending.requesters[0], 10);
    // Two uses, then the grant is spent.
    e.bind_verified(10, 10, "c1").unwrap();
    e.bind(10, "c1").unwrap();
    let used = e.bind(10, "c1").unwrap_err();
    assert_eq!(used.reason_code(), "grant_used_up");
    assert_eq!(rig.kernel.calls_of("bind"), vec!["bind 10 1", "bind 10 1"]);
    assert_eq!(rig.kernel.state().bindings[&10].agent_id, 1);
    // The same call id twice is refused, and installs nothing.
    rig.kernel.take_calls();
    let dup = e
        .install_grant_for("mail", "c1", "m1", &spec(60, 2), None)
        .unwrap_err();
    assert_eq!(dup.reason_code(), "duplicate_call");
    assert!(rig.kernel.take_calls().is_empty());
    // An unknown agent's grant too.
    let unknown = e
        .install_grant("nobody", "c9", "m1", &spec(60, 0))
        .unwrap_err();
    assert_eq!(unknown.reason_code(), "unknown_agent");
}

#[test]
fn an_expired_grant_refuses_binds_and_is_removed_after_its_grace() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    e.install_grant_for("mail", "c1", "m1", &spec(5, 0), requester(10))
        .unwrap();
    // Control: within its life it binds.
    e.bind(10, "c1").unwrap();
    rig.kernel.advance(6 * SEC);
    assert_eq!(e.bind(10, "c1").unwrap_err().reason_code(), "grant_expired");
    // Inside the grace period the entry stays (denials still say why).
    e.expire_grants();
    assert!(rig.kernel.state().grants.contains(&1));
    rig.kernel.take_calls();
    rig.kernel.advance(super::GRANT_GRACE_NS);
    e.expire_grants();
    assert_eq!(
        rig.kernel.take_calls(),
        vec![
            "withdraw_pending agent=1 slot=0 handle=1".to_string(),
            "uninstall_grant 1".to_string(),
            "unbind_call 1".to_string(),
            "clear_tickets 1 0".to_string(),
            // Its counted accesses got their last rows; the kernel forgets them.
            "forget_access_summaries 1".to_string(),
        ]
    );
    let st = rig.kernel.state();
    assert!(!st.grants.contains(&1) && st.pending.is_empty() && st.bindings.is_empty());
    drop(st);
    assert_eq!(e.bind(10, "c1").unwrap_err().reason_code(), "no_grant");
    assert!(e.list_agents()[0].calls.is_empty());
}

#[test]
fn use_tickets_are_freed_once_a_few_seconds_after_expiry_not_after_the_grace() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    e.install_grant("mail", "c1", "m1", &spec(5, 3)).unwrap();
    e.install_grant("mail", "c2", "m1", &spec(5, 0)).unwrap();
    e.install_grant("mail", "c3", "m1", &spec(30, 1)).unwrap();
    let clears = |rig: &Rig| -> Vec<String> {
        rig.kernel
            .take_calls()
            .into_iter()
            .filter(|c| c.starts_with("clear_tickets"))
            .collect()
    };
    rig.kernel.take_calls();
    // Expired, but within the margin: a claim may still be taking one.
    rig.kernel.advance(5 * SEC + SEC);
    e.expire_grants();
    assert!(clears(&rig).is_empty());
    // Past the margin: c1's three tickets go (c2 counts no uses), once.
    rig.kernel.advance(5 * SEC);
    e.expire_grants();
    assert_eq!(clears(&rig), vec!["clear_tickets 1 3"]);
    e.expire_grants();
    assert!(clears(&rig).is_empty());
    // The grants themselves stay for their grace (denials say why).
    assert!(rig.kernel.state().grants.contains(&1));
    rig.kernel.advance(30 * SEC);
    e.expire_grants();
    assert_eq!(clears(&rig), vec!["clear_tickets 3 1"]);
}

#[test]
fn the_pending_slot_index_follows_installs_revocations_and_restarts() {
    let rig = Rig::new();
    let first = rig.start(false, vec![]);
    first.create_agent("mail", Mode::Enforce).unwrap();
    first.create_agent("web", Mode::Enforce).unwrap();
    for (agent, call) in [("mail", "c1"), ("mail", "c2"), ("web", "c3")] {
        first
            .install_grant_for(agent, call, "m1", &spec(60, 1), requester(10))
            .unwrap();
    }
    // An explicitly bound grant holds no slot.
    first
        .install_grant("mail", "c4", "m1", &spec(60, 1))
        .unwrap();
    let slots = |e: &Enforcer, agent: &str| -> Vec<String> {
        let reg = e.registry_r();
        let mut v: Vec<String> = reg
            .pending_of(agent)
            .into_iter()
            .map(|(h, s)| format!("{}@{s}", reg.calls[&h].call_id))
            .collect();
        v.sort();
        v
    };
    assert_eq!(slots(&first, "mail"), vec!["c1@0", "c2@1"]);
    assert_eq!(slots(&first, "web"), vec!["c3@0"]);
    first.revoke("c1").unwrap();
    assert_eq!(slots(&first, "mail"), vec!["c2@1"]);
    drop(first);
    let e = rig.start(true, vec![]);
    assert_eq!(slots(&e, "mail"), vec!["c2@1"]);
    assert_eq!(slots(&e, "web"), vec!["c3@0"]);
    // The freed slot is the next one taken.
    e.install_grant_for("mail", "c5", "m1", &spec(60, 1), requester(10))
        .unwrap();
    assert_eq!(slots(&e, "mail"), vec!["c2@1", "c5@0"]);
}

#[test]
fn an_expired_or_spent_pending_slot_is_reused_when_all_are_taken() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    let slots = agentd_common::PENDING_SLOTS;
    for i in 0..slots {
        e.install_grant_for("mail", &format!("c{i}"), "m1", &spec(5, 0), requester(10))
            .unwrap();
    }
    let full = e
        .install_grant_for("mail", "late", "m1", &spec(5, 0), requester(10))
        .unwrap_err();
    assert_eq!(full.reason_code(), "too_many_pending_calls");
    rig.kernel.advance(6 * SEC);
    rig.kernel.take_calls();
    e.install_grant_for("mail", "late", "m1", &spec(5, 0), requester(10))
        .unwrap();
    let calls = rig.kernel.take_calls();
    // An expired slot changed hands: withdrawn, then published anew.
    let slot = calls[0]
        .strip_prefix("withdraw_pending agent=1 slot=")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{calls:?}"))
        .to_string();
    assert_eq!(
        calls[1..],
        [
            format!("install_grant {}", slots as u64 + 1),
            format!(
                "publish_pending agent=1 slot={slot} handle={}",
                slots as u64 + 1
            ),
        ]
    );
}

#[test]
fn ending_a_call_revokes_its_grant_and_bindings_and_only_its_own() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    rig.kernel.put_process(&rig.agent_dir("mail"), 11);
    e.install_grant("mail", "a", "m1", &spec(60, 0)).unwrap();
    e.install_grant("mail", "b", "m1", &spec(60, 0)).unwrap();
    e.install_grant("mail", "c", "m2", &spec(60, 0)).unwrap();
    e.bind(10, "a").unwrap();
    e.bind(11, "c").unwrap();
    let ids: std::collections::HashSet<&str> = ["m1"].into();
    let mut revoked = e.revoke_calls_of_messages(&ids).unwrap();
    revoked.sort();
    assert_eq!(revoked, vec!["a", "b"]);
    let st = rig.kernel.state();
    assert!(st.grants.contains(&3) && !st.grants.contains(&1) && !st.grants.contains(&2));
    assert_eq!(st.bindings.keys().copied().collect::<Vec<_>>(), vec![11]);
    drop(st);
    assert_eq!(e.list_agents()[0].calls, vec!["c"]);
    // Revoking what is gone is a no-op.
    rig.kernel.take_calls();
    e.revoke("a").unwrap();
    assert!(rig.kernel.take_calls().is_empty());
}

#[test]
fn only_processes_of_the_calls_agent_may_bind_it() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    e.create_agent("web", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    rig.kernel.put_process(&rig.agent_dir("web"), 20);
    e.install_grant("mail", "c1", "m1", &spec(60, 0)).unwrap();
    rig.kernel.take_calls();
    // Another agent's process, a process of no agent, or a pid it names
    // outside the agent: refused, nothing bound.
    for (peer, pid) in [(20, 20), (30, 30), (10, 20), (20, 10)] {
        let err = e.bind_verified(peer, pid, "c1").unwrap_err();
        assert_eq!(err.reason_code(), "peer_not_in_agent", "{peer} {pid}");
    }
    assert!(rig.kernel.calls_of("bind").is_empty());
    // A run cgroup of the agent is the agent.
    let leaf = e.create_leaf("mail", "run-1").unwrap();
    rig.kernel.put_process(&leaf.cgroup, 12);
    e.bind_verified(10, 12, "c1").unwrap();
    assert_eq!(rig.kernel.calls_of("bind"), vec!["bind 12 1"]);
    // The run cgroup was registered with the agent's id and mode.
    assert_eq!(rig.kernel.state().agents[&leaf.cgroup_id].agent_id, 1);
    assert_eq!(e.bind(10, "nope").unwrap_err().reason_code(), "no_grant");
}

#[test]
fn mode_switches_reach_the_kernel_and_survive_recreation() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    let h = e.create_agent("mail", Mode::Enforce).unwrap();
    let leaf = e.create_leaf("mail", "run-1").unwrap();
    rig.kernel.take_calls();
    e.set_mode("mail", Mode::AuditOnly).unwrap();
    let calls = rig.kernel.take_calls();
    assert!(calls.contains(&format!("set_agent cg={} agent=1 mode=1", h.cgroup_id)));
    assert!(calls.contains(&format!("set_agent cg={} agent=1 mode=1", leaf.cgroup_id)));
    assert_eq!(e.list_agents()[0].mode, Mode::AuditOnly);
    // `None` keeps the mode; an explicit one changes it back.
    let kept = e
        .create_agent("mail", super::AgentOptions::default())
        .unwrap();
    assert_eq!(kept.mode, Mode::AuditOnly);
    e.create_agent("mail", Mode::Enforce).unwrap();
    assert_eq!(rig.kernel.state().agents[&h.cgroup_id].mode, 0);
    assert_eq!(rig.kernel.state().agents[&leaf.cgroup_id].mode, 0);
    assert_eq!(
        e.set_mode("nobody", Mode::Enforce)
            .unwrap_err()
            .reason_code(),
        "unknown_agent"
    );
}

#[test]
fn a_failed_mode_switch_leaves_the_agent_enforcing_everywhere() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    let h = e.create_agent("mail", Mode::Enforce).unwrap();
    let leaf = e.create_leaf("mail", "run-1").unwrap();
    // The agent's own entry is written, its run cgroup's fails.
    rig.kernel.fail_after("set_agent", 1, 1);
    let calls_before = rig.kernel.calls_of("set_agent").len();
    let err = e.set_mode("mail", Mode::AuditOnly).unwrap_err();
    assert_eq!(err.reason_code(), "enforcer_error");
    let st = rig.kernel.state();
    assert_eq!(st.agents[&h.cgroup_id].mode, 0, "restored to enforce");
    assert_eq!(st.agents[&leaf.cgroup_id].mode, 0);
    assert!(st.calls.len() > calls_before);
    drop(st);
    assert_eq!(e.list_agents()[0].mode, Mode::Enforce);
    // Control: the same switch succeeds once the kernel does.
    e.set_mode("mail", Mode::AuditOnly).unwrap();
    assert_eq!(rig.kernel.state().agents[&leaf.cgroup_id].mode, 1);
}

#[test]
fn a_grant_the_kernel_refuses_is_denied_rolled_back_and_audited() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.take_calls();
    rig.kernel.fail("publish_pending", 1);
    let err = e
        .install_grant_for("mail", "c1", "m1", &spec(60, 1), requester(10))
        .unwrap_err();
    assert_eq!(err.reason_code(), "enforcer_error");
    // What was written is taken back: nothing of the refused grant stays.
    assert_eq!(
        rig.kernel.take_calls(),
        vec![
            "install_grant 1".to_string(),
            "publish_pending agent=1 slot=0 handle=1".to_string(),
            "withdraw_pending agent=1 slot=0 handle=1".to_string(),
            "uninstall_grant 1".to_string(),
        ]
    );
    assert!(rig.kernel.state().grants.len() == 1, "only the baseline");
    assert!(e.list_agents()[0].calls.is_empty());
    let rows = rig.rows("grant_not_installed");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].0.contains("agent=mail call=c1"), "{rows:?}");
    assert_eq!(rows[0].1, "enforcer_error");
    // Control: the same call installs once the kernel takes it, under a
    // fresh handle (the failed one never comes back).
    e.install_grant_for("mail", "c1", "m1", &spec(60, 1), requester(10))
        .unwrap();
    assert_eq!(
        rig.kernel.calls_of("install_grant"),
        vec!["install_grant 2"]
    );
    assert_eq!(rig.rows("grant_not_installed").len(), 1);
}

#[test]
fn the_gateway_hook_turns_a_kernel_failure_into_a_denial() {
    use crate::gateway::{AllowHook as _, AllowedCall};
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    let pid = std::process::id();
    rig.kernel.put_process(&rig.agent_dir("mail"), pid);
    let hook = super::gateway_hook::EnforceHook {
        slot: super::EnforceSlot::ready(e.clone()),
    };
    let grant = spec(60, 0);
    let call = |id: &'static str| AllowedCall {
        call_id: id,
        active_message_id: "m1",
        operator: "op",
        session: "s",
        action: "send_mail",
        grant: Some(&grant),
        peer_pid: Some(pid),
        peer_uid: Some(1000),
        agent: Some("mail"),
        audit: None,
        receipt_redact: false,
    };
    rig.kernel.fail("install_grant", 1);
    let err = hook.after_allow(&call("c1")).unwrap_err();
    assert_eq!(err.reason_code, "enforcer_error");
    assert_eq!(rig.rows("grant_not_installed")[0].1, "enforcer_error");
    // Control: the same allow goes through with a working kernel.
    hook.after_allow(&call("c2")).unwrap();
    assert_eq!(e.list_agents()[0].calls, vec!["c2"]);
}

#[test]
fn a_restart_over_pinned_maps_readopts_agents_grants_and_modes() {
    let rig = Rig::new();
    let first = rig.start(false, vec![]);
    first.create_agent("mail", Mode::AuditOnly).unwrap();
    first
        .install_grant_for("mail", "c1", "m1", &spec(60, 3), requester(10))
        .unwrap();
    first.shutdown();
    drop(first);
    let e = rig.start(true, vec![]);
    let agents = e.list_agents();
    assert_eq!(agents.len(), 1);
    assert_eq!(
        (agents[0].name.as_str(), agents[0].mode),
        ("mail", Mode::AuditOnly)
    );
    assert_eq!(agents[0].calls, vec!["c1"]);
    let restart = rig.rows("enforcer_restart");
    assert_eq!(restart.len(), 1);
    assert_eq!(restart[0].1, "daemon_restart");
    // Handles carry on: a new grant never reuses a re-adopted one's.
    e.install_grant("mail", "c2", "m1", &spec(60, 0)).unwrap();
    assert!(rig
        .kernel
        .calls_of("install_grant")
        .last()
        .unwrap()
        .ends_with(" 2"));
    // The re-adopted grant still binds (its pending use count came back).
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    e.bind(10, "c1").unwrap();
    assert_eq!(rig.kernel.state().pending[&(1, 0)].uses_left, 2);
}

#[test]
fn grant_changes_journaled_since_the_last_snapshot_survive_a_crash() {
    let rig = Rig::new();
    let first = rig.start(false, vec![]);
    first.create_agent("mail", Mode::Enforce).unwrap();
    // After the agent's snapshot, only the journal records these.
    first
        .install_grant_for("mail", "c1", "m1", &spec(60, 3), requester(10))
        .unwrap();
    first
        .install_grant("mail", "c2", "m1", &spec(60, 0))
        .unwrap();
    first
        .install_grant("mail", "c3", "m1", &spec(60, 0))
        .unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    first.bind(10, "c1").unwrap();
    first.revoke("c2").unwrap();
    let journal =
        std::fs::read_to_string(rig.dir.path().join(super::journal::JOURNAL_FILE)).unwrap();
    assert_eq!(journal.lines().count(), 5, "{journal}");
    // No shutdown: the process is gone as if killed.
    drop(first);
    let e = rig.start(true, vec![]);
    let mut calls = e.list_agents()[0].calls.clone();
    calls.sort();
    assert_eq!(calls, vec!["c1", "c3"]);
    // The bind's spent use came back with it, and handles carry on.
    let saved = super::journal::load(rig.dir.path()).unwrap().unwrap();
    let c1 = saved.calls.iter().find(|c| c.call_id == "c1").unwrap();
    assert_eq!(c1.uses_left, Some(2));
    e.install_grant("mail", "c4", "m1", &spec(60, 0)).unwrap();
    assert!(rig
        .kernel
        .calls_of("install_grant")
        .last()
        .unwrap()
        .ends_with(" 4"));
    // The restart's snapshot emptied the journal; growth past the live
    // grants plus its slack compacts it into the state file again.
    let lines = || {
        std::fs::read_to_string(rig.dir.path().join(super::journal::JOURNAL_FILE))
            .unwrap_or_default()
            .lines()
            .count() as u64
    };
    assert_eq!(lines(), 1);
    for i in 0..super::journal::COMPACT_SLACK / 2 + 8 {
        let id = format!("t{i}");
        e.install_grant("mail", &id, "m1", &spec(60, 0)).unwrap();
        e.revoke(&id).unwrap();
    }
    assert!(lines() < super::journal::COMPACT_SLACK, "{}", lines());
    let saved = super::journal::load(rig.dir.path()).unwrap().unwrap();
    let mut ids: Vec<_> = saved.calls.iter().map(|c| c.call_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["c1", "c3", "c4"]);
}

#[test]
fn a_fresh_start_knows_nothing_and_stops_agents_nobody_recorded() {
    let rig = Rig::new();
    let first = rig.start(false, vec![]);
    first.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    drop(first);
    // The maps were not pinned any more (reboot-like): the state file's
    // agents are not re-adopted, and the running one is stopped, audited.
    rig.kernel.take_calls();
    let e = rig.start(false, vec![]);
    assert!(e.list_agents().is_empty());
    assert_eq!(rig.rows("enforcer_start").len(), 2);
    let stopped = rig.rows("agent_stopped");
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0].0, "agent=mail pids=1");
    assert_eq!(stopped[0].1, "agent_unknown_on_restart");
    let calls = rig.kernel.take_calls();
    let dir = rig.agent_dir("mail");
    assert!(calls.contains(&format!("cgroup_kill {}", dir.display())));
    assert!(calls.contains(&format!("cgroup_remove {}", dir.display())));
    // systemd's units in the slice are not agentd's to stop.
    rig.kernel.make_cgroup(&rig.slice().join("agent@x.service"));
    let _again = rig.start(false, vec![]);
    assert_eq!(rig.rows("agent_stopped").len(), 1);
}

/// A pipe's read end, which the fake is told is a seccomp listener.
fn fake_listener(kernel: &FakeKernel) -> OwnedFd {
    let (r, _w) = nix::unistd::pipe().unwrap();
    kernel.state().listeners.insert(r.as_raw_fd());
    r
}

fn creds() -> Creds {
    Creds {
        uid: 1000,
        gid: 1000,
        groups: vec![],
    }
}

#[test]
fn supervised_agents_are_readopted_with_their_listeners_after_a_restart() {
    let rig = Rig::new();
    let first = rig.start(false, vec![]);
    first.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    rig.kernel.state().filtered.insert(10);
    first
        .adopt_listener("mail", fake_listener(&rig.kernel), creds())
        .unwrap();
    let name = rig.kernel.state().stored.iter().next().cloned().unwrap();
    assert_eq!(
        rig.kernel.calls_of("supervise"),
        vec!["supervise mail uid=1000"]
    );
    // An unclean stop: the supervisor did not get to answer.
    drop(first);
    rig.kernel.take_calls();
    let back = StoredFd {
        name: name.clone(),
        fd: fake_listener(&rig.kernel),
    };
    let e = rig.start(true, vec![back]);
    assert_eq!(
        rig.kernel.calls_of("supervise"),
        vec!["supervise mail uid=1000"]
    );
    let dir = rig.agent_dir("mail");
    // Not a clean stop: waiting syscalls are restarted for the new supervisor.
    assert_eq!(
        rig.kernel.calls_of("cgroup_restart_waiting"),
        vec![format!("cgroup_restart_waiting {}", dir.display())]
    );
    let readopted = rig.rows("agent_readopted");
    assert_eq!(readopted.len(), 1);
    assert_eq!(readopted[0].1, "supervisor_readopted");
    assert!(rig.kernel.calls_of("cgroup_kill").is_empty());
    e.shutdown();
}

#[test]
fn an_agent_whose_supervision_cannot_be_restored_is_stopped() {
    let rig = Rig::new();
    let first = rig.start(false, vec![]);
    first.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    rig.kernel.put_process(&rig.agent_dir("mail"), 11);
    rig.kernel.state().filtered.insert(10);
    first
        .adopt_listener("mail", fake_listener(&rig.kernel), creds())
        .unwrap();
    let name = rig.kernel.state().stored.iter().next().cloned().unwrap();
    drop(first);
    rig.kernel.take_calls();
    // Process 11 runs without a filter: the agent cannot be fully supervised.
    let back = StoredFd {
        name,
        fd: fake_listener(&rig.kernel),
    };
    let _e = rig.start(true, vec![back]);
    assert!(rig.kernel.calls_of("supervise").is_empty());
    assert_eq!(
        rig.kernel.calls_of("cgroup_kill"),
        vec![format!("cgroup_kill {}", rig.agent_dir("mail").display())]
    );
    let stopped = rig.rows("agent_stopped");
    assert_eq!(stopped.len(), 1);
    assert!(stopped[0].0.contains("unfiltered=1"), "{stopped:?}");
    assert_eq!(stopped[0].1, "supervisor_lost_on_restart");
    // A stored fd that is no listener is closed and removed from the store
    // (fd numbers are reused: the fake forgets the closed listeners').
    rig.kernel.state().listeners.clear();
    let (junk, _w) = nix::unistd::pipe().unwrap();
    let name = fdstore::listener_name("mail", 99);
    let _f = rig.start(
        true,
        vec![StoredFd {
            name: name.clone(),
            fd: junk,
        }],
    );
    assert_eq!(rig.rows("stored_fd_closed")[0].1, "stored_fd_unknown");
    assert!(rig
        .kernel
        .calls_of("remove_stored_fd")
        .contains(&format!("remove_stored_fd {name}")));
}

#[test]
fn a_listener_is_refused_when_its_supervisor_cannot_start() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.fail("supervise", 1);
    let err = e
        .adopt_listener("mail", fake_listener(&rig.kernel), creds())
        .unwrap_err();
    assert_eq!(err.reason_code(), "enforcer_error");
    // Its copy in the fd store goes too (else the agent's syscalls would
    // wait for a supervisor instead of failing).
    let st = rig.kernel.state();
    assert!(st.stored.is_empty());
    assert!(st.supervisors.is_empty());
    drop(st);
    // Control.
    e.adopt_listener("mail", fake_listener(&rig.kernel), creds())
        .unwrap();
    assert_eq!(rig.kernel.state().supervisors, vec!["mail"]);
    assert_eq!(
        e.adopt_listener("nobody", fake_listener(&rig.kernel), creds())
            .unwrap_err()
            .reason_code(),
        "unknown_agent"
    );
    e.shutdown();
}

#[test]
fn an_agent_is_removed_only_once_its_processes_are_gone() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    let h = e.create_agent("mail", Mode::Enforce).unwrap();
    e.install_grant("mail", "c1", "m1", &spec(60, 0)).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    let busy = e.remove_agent("mail").unwrap_err();
    assert_eq!(busy.reason_code(), "agent_running");
    assert!(rig.kernel.calls_of("uninstall_grant").is_empty());
    rig.kernel
        .state()
        .cgroups
        .get_mut(&h.cgroup)
        .unwrap()
        .1
        .clear();
    e.remove_agent("mail").unwrap();
    let st = rig.kernel.state();
    assert!(st.grants.is_empty(), "grant and baseline gone");
    assert!(!st.agents.contains_key(&h.cgroup_id));
    assert!(!st.cgroups.contains_key(&h.cgroup));
    drop(st);
    assert!(e.list_agents().is_empty());
}

#[test]
fn a_call_with_a_protected_write_refreshes_protected_files_when_it_ends() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    let baseline = agentd_common::baseline_call_id(1);
    // Control: an ordinary call's end leaves the protected files alone.
    e.install_grant("mail", "c1", "m1", &spec(60, 0)).unwrap();
    e.revoke("c1").unwrap();
    assert!(rig.kernel.calls_of("refresh_protected").is_empty());
    // A call that may write a protected file may have replaced it (a new
    // inode): its end protects what is there now.
    let owner = GrantSpec {
        write: vec!["/srv/ws".into()],
        protected_write: vec!["/srv/ws/SOUL.md".into()],
        ..spec(60, 0)
    };
    e.install_grant("mail", "c2", "m2", &owner).unwrap();
    e.revoke("c2").unwrap();
    assert_eq!(
        rig.kernel.calls_of("refresh_protected"),
        vec![format!("refresh_protected {baseline}")]
    );
    e.remove_agent("mail").unwrap();
    assert_eq!(
        rig.kernel.calls_of("clear_protected"),
        vec!["clear_protected agent=1".to_string()]
    );
}

#[test]
fn join_moves_a_process_unless_it_is_already_in_a_run_cgroup() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    let leaf = e.create_leaf("mail", "run-1").unwrap();
    rig.kernel.put_process(&leaf.cgroup, 12);
    rig.kernel.take_calls();
    e.join("mail", 12).unwrap();
    assert!(rig.kernel.take_calls().is_empty());
    e.join("mail", 13).unwrap();
    assert_eq!(
        rig.kernel.take_calls(),
        vec![format!(
            "cgroup_join {} 13",
            rig.agent_dir("mail").display()
        )]
    );
    assert_eq!(e.agent_of_pid(13).as_deref(), Some("mail"));
    // A leaf is removed with what runs in it.
    e.remove_leaf("mail", "run-1").unwrap();
    let calls = rig.kernel.take_calls();
    assert_eq!(calls[0], format!("cgroup_kill {}", leaf.cgroup.display()));
    assert!(calls.contains(&format!("remove_agent cg={}", leaf.cgroup_id)));
}

#[test]
fn a_suspension_ends_only_the_grants_in_scope_and_stops_only_its_agents() {
    use crate::gateway::{GrantTarget, KillSwitch};
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    e.create_agent("web", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    rig.kernel.put_process(&rig.agent_dir("web"), 20);
    e.install_grant_for("mail", "c1", "m1", &spec(60, 0), requester(10))
        .unwrap();
    e.install_grant_for("mail", "c2", "m2", &spec(60, 0), requester(10))
        .unwrap();
    e.install_grant_for("web", "c3", "m3", &spec(60, 0), requester(20))
        .unwrap();
    e.bind(10, "c1").unwrap();
    let k = super::EnforceKillSwitch {
        slot: super::EnforceSlot::ready(e.clone()),
    };
    // Control: nothing of another agent's is touched.
    assert_eq!(k.end_grants(GrantTarget::Agent("nobody")).unwrap(), 0);
    assert_eq!(
        rig.kernel.state().grants.len(),
        3 + 2,
        "3 grants + 2 baselines"
    );
    // The agent: both its grants and the binding to one go; web's stays.
    assert_eq!(k.end_grants(GrantTarget::Agent("mail")).unwrap(), 2);
    assert_eq!(e.bind(10, "c1").unwrap_err().reason_code(), "no_grant");
    assert!(rig.kernel.state().bindings.is_empty());
    e.bind(20, "c3").unwrap();
    // By message (an operator's), then everything.
    assert_eq!(
        k.end_grants(GrantTarget::Messages(&["m9".to_owned()]))
            .unwrap(),
        0
    );
    assert_eq!(k.end_grants(GrantTarget::All).unwrap(), 1);
    assert!(e.list_agents().iter().all(|a| a.calls.is_empty()));
    // Stop: only the named agent's cgroup is killed.
    rig.kernel.take_calls();
    assert_eq!(k.stop_agents(Some(&["web".to_owned()])).unwrap(), 1);
    assert_eq!(
        rig.kernel.calls_of("cgroup_kill"),
        vec![format!("cgroup_kill {}", rig.agent_dir("web").display())]
    );
    assert_eq!(k.stop_agents(None).unwrap(), 1, "mail's process is left");
}

#[test]
fn concurrent_installs_each_return_with_their_grant_saved() {
    // Saves are shared between concurrent installs: each must still return
    // only once a written state file holds its grant (a restart right
    // after the answer finds it).
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (e, dir) = (&e, rig.dir.path());
            s.spawn(move || {
                for i in 0..25 {
                    let call = format!("c{t}-{i}");
                    e.install_grant("mail", &call, "m1", &spec(60, 1)).unwrap();
                    let saved = super::journal::load(dir).unwrap().unwrap();
                    assert!(
                        saved.calls.iter().any(|c| c.call_id == call),
                        "{call} answered before it was saved"
                    );
                }
            });
        }
    });
    e.shutdown();
    drop(e);
    let again = rig.start(true, vec![]);
    assert_eq!(again.list_agents()[0].calls.len(), 200);
}

/// One counted file: `count` opens of `f.txt` under grant `handle`.
fn counted_opens(handle: u64, count: u64) -> (AccessKey, AccessSummary) {
    let mut s = AccessSummary::EMPTY;
    s.count = count;
    s.first_ns = 2 * SEC;
    s.last_ns = 3 * SEC;
    s.tgid = 4242;
    s.agent_id = 1;
    s.target[..5].copy_from_slice(b"f.txt");
    s.target_len = 5;
    let key = AccessKey {
        call_id: handle,
        a: 8,
        b: 1234,
        hook: agentd_common::Hook::FileOpen as u8,
        _pad: 0,
        port: 0,
        _pad2: 0,
    };
    (key, s)
}

#[test]
fn counted_accesses_are_written_when_they_grow_and_when_their_grant_ends() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    e.install_grant("mail", "call-1", "msg-1", &spec(60, 0))
        .unwrap();
    let handle = *e.registry_r().handles.get("call-1").unwrap();
    let summaries = || -> Vec<crate::enforce::KernelRecord> {
        rig.sink
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.reason_code == "access_summary")
            .cloned()
            .collect()
    };
    // Only the first access (which has its own row): nothing to write.
    rig.kernel.state().summaries = vec![counted_opens(handle, 1)];
    e.flush_access_summaries(true);
    assert!(summaries().is_empty());
    rig.kernel.state().summaries = vec![counted_opens(handle, 40)];
    e.flush_access_summaries(true);
    let rows = summaries();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (
            r.agent.as_str(),
            r.call_id.as_str(),
            r.active_message_id.as_str()
        ),
        ("mail", "call-1", "msg-1")
    );
    assert_eq!(
        (r.action.as_str(), r.decision, r.pid),
        ("file_open", "allow", 4242)
    );
    let (object, count, first, last) = crate::audit::kernel_row::access_summary(&r.target).unwrap();
    assert_eq!((object, count), ("f.txt", 40));
    assert_eq!(last - first, SEC, "boot-time stamps keep their distance");
    // Nothing grew: no row.
    e.flush_access_summaries(true);
    assert_eq!(summaries().len(), 1);
    // Revoking writes the last count, then the kernel forgets the call.
    rig.kernel.state().summaries = vec![counted_opens(handle, 45)];
    e.revoke("call-1").unwrap();
    let rows = summaries();
    assert_eq!(rows.len(), 2);
    assert!(rows[1].target.contains("[count=45 "), "{}", rows[1].target);
    assert_eq!(rows[1].call_id, "call-1", "named although the call is gone");
    assert_eq!(
        rig.kernel.calls_of("forget_access_summaries"),
        vec![format!("forget_access_summaries {handle}")]
    );
    assert!(rig.kernel.state().summaries.is_empty());
    // Shutdown writes what grew under calls still live.
    e.install_grant("mail", "call-2", "msg-2", &spec(60, 0))
        .unwrap();
    let h2 = *e.registry_r().handles.get("call-2").unwrap();
    rig.kernel.state().summaries = vec![counted_opens(h2, 7)];
    e.shutdown();
    let rows = summaries();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].call_id, "call-2");
}

#[test]
fn counts_under_a_call_agentd_does_not_know_are_written_then_dropped() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    // Left in the kernel by an access decided while its grant was revoked.
    rig.kernel.state().summaries = vec![counted_opens(77, 3)];
    e.flush_access_summaries(true);
    assert_eq!(
        rig.kernel.calls_of("forget_access_summaries"),
        vec!["forget_access_summaries 77".to_string()]
    );
    assert!(rig.kernel.state().summaries.is_empty());
    e.shutdown();
    let rows: Vec<_> = rig
        .sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.reason_code == "access_summary")
        .cloned()
        .collect();
    assert_eq!(rows.len(), 1, "its row is written once");
    assert_eq!(
        (rows[0].agent.as_str(), rows[0].call_id.as_str()),
        ("mail", "#77")
    );
}

/// The kernel rows the audit writer has committed with `reason` (waits up
/// to 5 s for `n` of them: queued ones are written by another thread), as
/// (call id, action, decision).
fn kernel_rows(rig: &Rig, reason: &str, n: usize) -> Vec<(String, String, &'static str)> {
    let rows = || -> Vec<_> {
        rig.sink
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.reason_code == reason)
            .map(|r| (r.call_id.clone(), r.action.clone(), r.decision))
            .collect()
    };
    for _ in 0..250 {
        if rows().len() >= n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    rows()
}

#[test]
fn a_spent_grant_is_dropped_once_no_process_that_claimed_it_lives() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    // c1: bound by its one use (an exec claim); c2: one use claimed by
    // process 20 for its file operations; c3: two uses, one spent;
    // c4: no use count.
    e.install_grant_for("mail", "c1", "m1", &spec(60, 1), requester(10))
        .unwrap();
    e.install_grant_for("mail", "c2", "m1", &spec(60, 1), requester(10))
        .unwrap();
    e.install_grant_for("mail", "c3", "m1", &spec(60, 2), requester(10))
        .unwrap();
    e.install_grant_for("mail", "c4", "m1", &spec(60, 0), requester(10))
        .unwrap();
    e.bind(10, "c1").unwrap();
    e.bind(10, "c3").unwrap();
    e.bind(10, "c4").unwrap();
    {
        let mut st = rig.kernel.state();
        st.bindings.clear();
        // Process 10 is bound to c1 only; 20 claimed c2 for its opens.
        st.bindings.insert(
            10,
            agentd_common::Binding {
                call_id: 1,
                agent_id: 1,
                _pad: 0,
            },
        );
        st.tickets.insert(2, 1);
        st.file_claims.insert((2, 20));
    }
    // Spent, but not yet settled: a claim may still be recording itself.
    assert!(e.drop_spent_grants().is_empty());
    rig.kernel.advance(super::spent::SPENT_SETTLE_NS);
    // Settled, but each is held by a live claimant.
    assert!(e.drop_spent_grants().is_empty());
    let ids = |e: &Enforcer| {
        let mut c = e.list_agents()[0].calls.clone();
        c.sort();
        c
    };
    assert_eq!(ids(&e), vec!["c1", "c2", "c3", "c4"]);
    // Process 10 exits (the exit tracepoint unbinds it): c1 goes, and
    // only c1; c2's claimant still lives.
    rig.kernel.state().bindings.clear();
    rig.kernel.take_calls();
    assert_eq!(e.drop_spent_grants(), vec!["c1"]);
    assert_eq!(
        rig.kernel.take_calls(),
        vec![
            "withdraw_pending agent=1 slot=0 handle=1".to_string(),
            "uninstall_grant 1".to_string(),
            "clear_tickets 1 1".to_string(),
        ]
    );
    assert_eq!(ids(&e), vec!["c2", "c3", "c4"]);
    // Process 20 exits: c2 goes too, its file claim forgotten.
    rig.kernel.state().exited.insert(20);
    assert_eq!(e.drop_spent_grants(), vec!["c2"]);
    assert_eq!(
        rig.kernel.calls_of("forget_file_claims"),
        vec!["forget_file_claims [(2, 20)]"]
    );
    {
        let st = rig.kernel.state();
        assert!(!st.grants.contains(&1) && !st.grants.contains(&2));
        assert!(st.grants.contains(&3) && st.grants.contains(&4));
        assert!(st.file_claims.is_empty() && !st.tickets.contains_key(&2));
        let slots: Vec<u64> = st.pending.values().map(|g| g.call_id).collect();
        assert_eq!(slots, vec![3, 4]);
    }
    // The journal agrees: a restart (no snapshot since) does not bring
    // them back.
    let saved = super::journal::load(rig.dir.path()).unwrap().unwrap();
    let mut kept: Vec<_> = saved.calls.iter().map(|c| c.call_id.clone()).collect();
    kept.sort();
    assert_eq!(kept, vec!["c3", "c4"]);
    // Each drop has its row, naming the call.
    let mut rows = kernel_rows(&rig, "grant_spent", 2);
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("c1".to_string(), "grant_dropped".to_string(), "info"),
            ("c2".to_string(), "grant_dropped".to_string(), "info"),
        ]
    );
    // Control: the unspent and the unlimited grants stay, however long.
    rig.kernel.advance(10 * SEC);
    assert!(e.drop_spent_grants().is_empty());
    drop(e);
    let e = rig.start(true, vec![]);
    assert_eq!(ids(&e), vec!["c3", "c4"]);
}

#[test]
fn a_spent_grant_that_expired_is_left_to_its_expiry() {
    let rig = Rig::new();
    let e = rig.start(false, vec![]);
    e.create_agent("mail", Mode::Enforce).unwrap();
    rig.kernel.put_process(&rig.agent_dir("mail"), 10);
    e.install_grant_for("mail", "c1", "m1", &spec(1, 1), requester(10))
        .unwrap();
    e.bind(10, "c1").unwrap();
    rig.kernel.state().bindings.clear();
    // Expired before it settled: kept a minute so denials say
    // `grant_expired`, then revoked by the expiry as before.
    rig.kernel.advance(2 * SEC);
    assert!(e.drop_spent_grants().is_empty());
    rig.kernel.advance(super::spent::SPENT_SETTLE_NS);
    assert!(e.drop_spent_grants().is_empty());
    assert_eq!(e.list_agents()[0].calls, vec!["c1"]);
}
