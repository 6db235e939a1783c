//! Pinned enforcement state is adopted only with the state file that names
//! its entries. A restart with the file re-adopts the agents (the control);
//! a restart over a wiped state directory stops them, drops the kernel
//! state and audits it, instead of numbering grants and agents from 1 again
//! over map entries nobody can see.
use agentd::{
    doctor::Backend,
    enforce::{default_baseline, AgentOptions, Enforcer, KernelRecord, MemorySink, Mode},
};

/// Root and a working backend, or SKIPPED with the reason.
fn backend() -> Option<Backend> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: needs root (creates cgroups, pins BPF maps)");
        return None;
    }
    let backend = agentd::doctor::run().backend;
    if backend == Backend::None {
        if let Ok(expected) = std::env::var("AGENTD_EXPECT_BACKEND") {
            panic!("the suite's opening doctor run chose {expected}, this test's probe found none");
        }
        eprintln!("SKIPPED: agentd doctor finds no enforcement backend on this kernel");
        return None;
    }
    Some(backend)
}

fn rows(sink: &MemorySink) -> Vec<KernelRecord> {
    sink.0.lock().unwrap().clone()
}

fn has_action(sink: &MemorySink, action: &str) -> bool {
    rows(sink).iter().any(|r| r.action == action)
}

fn agent_cgroup(state: &std::path::Path, agent: &str) -> std::path::PathBuf {
    let instance = agentd::enforce::bpf_state::Instance::for_state_dir(state);
    agentd::enforce::cgroup_root()
        .unwrap()
        .join(instance.slice())
        .join(agent)
}

fn start(backend: Backend, state: &std::path::Path) -> (Enforcer, MemorySink) {
    let sink = MemorySink::default();
    let e = Enforcer::start(backend, state, sink.clone()).expect("enforcer starts");
    (e, sink)
}

#[test]
fn pins_without_their_state_file_are_dropped_not_adopted() {
    let Some(backend) = backend() else { return };
    let state = tempfile::tempdir().unwrap();
    let (first, _) = start(backend, state.path());
    first
        .create_agent(
            "kept",
            AgentOptions::with_baseline(Mode::Enforce, default_baseline()),
        )
        .unwrap();
    first.shutdown();
    drop(first);

    // Control: with its state file, the restarted enforcer adopts the pins
    // and knows the agent.
    let (second, sink) = start(backend, state.path());
    assert!(has_action(&sink, "enforcer_restart"), "{:?}", rows(&sink));
    assert!(!has_action(&sink, "enforcer_state_dropped"));
    assert!(second.list_agents().iter().any(|a| a.name == "kept"));
    assert!(agent_cgroup(state.path(), "kept").exists());
    second.shutdown();
    drop(second);

    // The state file goes, as with a wiped state directory.
    std::fs::remove_file(state.path().join("enforce-state.json")).unwrap();
    let (third, sink) = start(backend, state.path());
    let dropped: Vec<KernelRecord> = rows(&sink)
        .into_iter()
        .filter(|r| r.action == "enforcer_state_dropped")
        .collect();
    assert_eq!(dropped.len(), 1, "{:?}", rows(&sink));
    assert_eq!(dropped[0].reason_code, "enforcer_state_unknown");
    assert!(
        dropped[0].target.contains("no state file") && dropped[0].target.contains("kept"),
        "{}",
        dropped[0].target
    );
    // Started fresh: nothing adopted, the old agent's cgroup is gone.
    assert!(has_action(&sink, "enforcer_start"), "{:?}", rows(&sink));
    assert!(!has_action(&sink, "enforcer_restart"));
    assert!(third.list_agents().is_empty());
    assert!(!agent_cgroup(state.path(), "kept").exists());
    // And it works: a new agent gets the first id and handle again, over
    // fresh maps.
    third
        .create_agent(
            "fresh",
            AgentOptions::with_baseline(Mode::Enforce, default_baseline()),
        )
        .unwrap();
    assert!(third.list_agents().iter().any(|a| a.name == "fresh"));
    third.uninstall();
}
