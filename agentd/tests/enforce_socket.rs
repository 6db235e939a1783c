//! The enforcement socket's bounds, against the real server: only root and
//! the agents' group reach it, connections are capped (callers other than
//! root leave root its slots), idle connections time out, and the server
//! keeps serving after a flood.
use std::{
    io::{Read as _, Write as _},
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    path::Path,
    time::{Duration, Instant},
};

use agentd::{
    doctor::Backend,
    enforce::{conn_limit::Limits, launch, Enforcer, MemorySink},
};

const USER: &str = "agentd-agent";

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root".into());
    }
    let report = agentd::doctor::run();
    if report.backend == Backend::None {
        if let Ok(expected) = std::env::var("AGENTD_EXPECT_BACKEND") {
            panic!(
                "the suite's opening doctor run chose {expected}, this test's probe found none: {}",
                report.reason
            );
        }
        return Some(format!("no enforcement backend: {}", report.reason));
    }
    None
}

fn agent_ids() -> (u32, u32) {
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        let _ = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status();
    }
    let u = nix::unistd::User::from_name(USER)
        .unwrap()
        .expect("agent user");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Connects to `path` from a thread running as `uid`/`gid` with no
/// supplementary groups (raw syscalls change the calling thread only).
fn connect_as(path: &Path, uid: u32, gid: u32) -> std::io::Result<UnixStream> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        // SAFETY: per-thread credential syscalls with integer arguments.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
                0
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, -1i32), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, -1i32), 0);
        }
        UnixStream::connect(&path)
    })
    .join()
    .unwrap()
}

/// Sends a `list` request and returns the reply line.
fn list(mut s: UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"{\"op\":\"list\"}\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Reads whatever arrives within `wait` (the busy reply comes at once).
fn read_within(s: &mut UnixStream, wait: Duration) -> String {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("read: {e}"),
    }
}

fn conn_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == "agentd-enf-conn")
        .count()
}

/// Waits (at most 1.5 s, less than the test's 2 s idle timeout) until at
/// least `n` connection handlers run.
fn wait_for_handlers(n: usize) {
    let deadline = Instant::now() + Duration::from_millis(1500);
    while conn_threads() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn enforce_socket_is_private_capped_and_times_out() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let (uid, gid) = agent_ids();
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sock = state.path().join("enforce.sock");
    let enforcer =
        Enforcer::start(Backend::Seccomp, state.path(), MemorySink::default()).expect("enforcer");
    let limits = Limits {
        max_conns: 4,
        max_unprivileged: 2,
        // Long enough that a loaded machine still has the first agent
        // connections open when the third arrives.
        io_timeout: Duration::from_secs(2),
        request_deadline: Duration::from_secs(4),
    };
    launch::serve_for(enforcer.clone(), &sock, USER, limits).expect("serve");

    // Owner root, the agents' group, nobody else.
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660, "socket mode");
    assert_eq!((meta.uid(), meta.gid()), (0, gid), "socket owner");
    let nobody = connect_as(&sock, 65534, 65534);
    assert_eq!(
        nobody.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::EACCES),
        "a user outside the agents' group"
    );
    // Control: the agent user reaches the server (which refuses it the
    // root-only request by its credentials).
    let reply = list(connect_as(&sock, uid, gid).expect("agent user connects"));
    assert!(reply.contains("not_admin"), "{reply}");

    // Unprivileged callers hold at most their share, root still gets in.
    let a1 = connect_as(&sock, uid, gid).unwrap();
    let a2 = connect_as(&sock, uid, gid).unwrap();
    // The server must have taken both before the third arrives (a fixed
    // pause was too short once on a loaded machine).
    wait_for_handlers(2);
    let mut a3 = connect_as(&sock, uid, gid).unwrap();
    let busy = read_within(&mut a3, Duration::from_secs(1));
    assert!(
        busy.contains("enforce_socket_busy"),
        "third agent connection: {busy}"
    );
    let r1 = UnixStream::connect(&sock).unwrap();
    let r2 = UnixStream::connect(&sock).unwrap();
    wait_for_handlers(4);
    let peak = conn_threads();
    let mut r3 = UnixStream::connect(&sock).unwrap();
    let busy = read_within(&mut r3, Duration::from_secs(1));
    assert!(
        busy.contains("enforce_socket_busy"),
        "fifth connection: {busy}"
    );
    assert!(
        peak <= limits.max_conns,
        "{peak} handler threads for a cap of 4"
    );

    // Idle connections are closed by the read deadline, their slots freed.
    let started = Instant::now();
    let mut idle = a1;
    let closed = read_within(&mut idle, Duration::from_secs(8));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "an idle connection must time out ({closed})"
    );
    drop((idle, a2, r1, r2));
    std::thread::sleep(Duration::from_millis(2500));
    // The server still serves: root's request is answered.
    let reply = list(UnixStream::connect(&sock).unwrap());
    assert!(reply.contains("\"ok\":true"), "{reply}");
    enforcer.uninstall();
}
