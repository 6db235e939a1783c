//! Naming the agent behind a loopback TCP connection: a process in an
//! agent's cgroup connects, and the Enforcer names that agent and that
//! process from the kernel's record of the connecting socket; a process
//! outside every agent cgroup is named by no agent.
use std::{
    io::Write as _,
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
};

use agentd::{
    doctor::Backend,
    enforce::{Enforcer, MemorySink, Mode},
};

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root".into());
    }
    let report = agentd::doctor::run();
    if report.backend == Backend::None {
        return Some(format!("no enforcement backend: {}", report.reason));
    }
    None
}

#[test]
fn a_connection_from_an_agent_cgroup_names_the_agent_and_the_process() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let enforcer = Enforcer::start(
        agentd::doctor::run().backend,
        state.path(),
        MemorySink::default(),
    )
    .expect("enforcer starts");
    // Audit-only: the baseline would refuse this port under enforcement,
    // which is not what this test is about.
    enforcer.create_agent("tcppeer", Mode::AuditOnly).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    // The child connects only after it is in the agent's cgroup: a socket
    // belongs to the cgroup its creator was in.
    let mut child = Command::new("bash")
        .args([
            "-c",
            &format!("read _; exec 3<>/dev/tcp/127.0.0.1/{port}; read _"),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    enforcer.join("tcppeer", child.id()).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let (agent_conn, agent_peer) = listener.accept().unwrap();

    // Control: the test process itself, in no agent cgroup.
    let _own = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (own_conn, own_peer) = listener.accept().unwrap();

    let local = agent_conn.local_addr().unwrap();
    let named = enforcer.agent_of_tcp_peer(local, agent_peer).unwrap();
    let outsider = enforcer
        .agent_of_tcp_peer(own_conn.local_addr().unwrap(), own_peer)
        .unwrap();

    stdin.write_all(b"done\n").unwrap();
    let _ = child.wait();
    enforcer.remove_agent("tcppeer").ok();
    enforcer.shutdown();

    let named = named.expect("the agent's connection is named");
    assert_eq!(named.agent, "tcppeer");
    assert_eq!(
        named.pid,
        Some(child.id()),
        "the process holding the socket"
    );
    assert_eq!(named.uid, 0);
    assert_eq!(outsider, None, "a process outside every agent is no agent");
}
