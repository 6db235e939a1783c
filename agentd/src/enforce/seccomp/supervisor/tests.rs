//! The open decision without root or a listener: the supervisor decides
//! in the test's own thread for the test process itself (its /proc
//! entries are readable without privileges), with no claim maps (so no
//! pending grant is claimable) and a registry holding one agent.
use std::{
    os::fd::AsRawFd as _,
    sync::{Arc, Mutex, RwLock},
};

use agentd_common::baseline_call_id;

use super::{
    audit::commit_then_answer,
    open::{decide_open, OpenRequest},
    Answer, Decided, Supervisor,
};
use crate::{
    enforce::{
        agent_cgroup::AgentCgroupDir,
        events::{spawn_writer, AuditSink, KernelRecord, MemorySink, SinkError},
        grant::KernelGrant,
        registry::{AgentEntry, Creds, Mode, Registry},
    },
    grant_spec::GrantSpec,
};

pub(super) fn supervisor(baseline: GrantSpec, mode: Mode) -> Supervisor {
    supervisor_with(baseline, mode, Arc::new(MemorySink::default()))
}

fn supervisor_with(baseline: GrantSpec, mode: Mode, sink: Arc<dyn AuditSink>) -> Supervisor {
    let (audit, _writer) = spawn_writer(sink);
    let mut reg = Registry::default();
    let grant = KernelGrant::from_spec(&baseline, baseline_call_id(1), super::boot_ns()).unwrap();
    reg.agents.insert(
        "a".into(),
        AgentEntry {
            name: "a".into(),
            id: 1,
            cgroup: AgentCgroupDir {
                path: "/nonexistent".into(),
                id: 5,
            },
            mode,
            baseline: grant,
        },
    );
    Supervisor {
        agent: "a".into(),
        creds: Creds {
            uid: 0,
            gid: 0,
            groups: vec![],
        },
        registry: Arc::new(RwLock::new(reg)),
        audit,
        stop: Arc::new(super::stop::Stop::default()),
        sync_wakeup: false,
        stats: Arc::default(),
        pin_dir: "/nonexistent".into(),
        claims: Mutex::new(None),
    }
}

/// Opens `path` with `flags` as this process, through the supervisor.
fn open(sup: &Supervisor, path: &[u8], flags: i32) -> (Answer, Option<Decided>) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    decide_open(
        sup,
        &OpenRequest {
            tid,
            tgid: std::process::id(),
            dirfd: libc::AT_FDCWD,
            path,
            flags: flags as u64,
            mode: 0o600,
            resolve: 0,
            bound: None,
        },
    )
}

pub(super) fn bytes(p: &std::path::Path) -> Vec<u8> {
    p.to_str().unwrap().as_bytes().to_vec()
}

fn read_scope(dir: &std::path::Path) -> GrantSpec {
    GrantSpec {
        read: vec![dir.to_owned()],
        ..GrantSpec::default()
    }
}

#[test]
fn an_open_the_baseline_covers_is_injected_and_one_it_does_not_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let file = dir_path.join("f");
    std::fs::write(&file, b"x").unwrap();
    let sup = supervisor(read_scope(&dir_path), Mode::Enforce);
    // Read: covered by the baseline's read scope.
    let (answer, decided) = open(&sup, &bytes(&file), libc::O_RDONLY);
    let Answer::AddFd(fd, _) = answer else {
        panic!("not injected")
    };
    assert!(fd.as_raw_fd() >= 0);
    let d = decided.unwrap();
    assert!(d.allowed);
    assert_eq!((d.reason, d.access), ("baseline", Some("read")));
    assert_eq!(d.target, file.display().to_string());
    // Write: no write scope, no grant.
    let (answer, decided) = open(&sup, &bytes(&file), libc::O_WRONLY);
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    let d = decided.unwrap();
    assert_eq!(
        (d.allowed, d.reason, d.access),
        (false, "no_grant", Some("write"))
    );
    // The same write in audit-only mode goes through, still recorded as refused.
    let audit = supervisor(read_scope(&dir_path), Mode::AuditOnly);
    let (answer, decided) = open(&audit, &bytes(&file), libc::O_WRONLY);
    assert!(matches!(answer, Answer::AddFd(..)));
    assert!(!decided.unwrap().allowed);
}

#[test]
fn a_symlink_is_decided_as_its_target() {
    let inside = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let inside_path = inside.path().canonicalize().unwrap();
    let secret = outside.path().canonicalize().unwrap().join("secret");
    std::fs::write(&secret, b"s").unwrap();
    let link = inside_path.join("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let sup = supervisor(read_scope(&inside_path), Mode::Enforce);
    let (answer, decided) = open(&sup, &bytes(&link), libc::O_RDONLY);
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    assert_eq!(decided.unwrap().target, secret.display().to_string());
    // Control: a plain file beside the link opens.
    std::fs::write(inside_path.join("plain"), b"p").unwrap();
    let (answer, _) = open(&sup, &bytes(&inside_path.join("plain")), libc::O_RDONLY);
    assert!(matches!(answer, Answer::AddFd(..)));
}

#[test]
fn a_symlinked_directory_or_dotdot_on_the_way_is_decided_on_what_it_reaches() {
    let inside = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let inside_path = inside.path().canonicalize().unwrap();
    let outside_path = outside.path().canonicalize().unwrap();
    let secret = outside_path.join("secret");
    std::fs::write(&secret, b"s").unwrap();
    std::os::unix::fs::symlink(&outside_path, inside_path.join("sub")).unwrap();
    std::fs::create_dir(inside_path.join("x")).unwrap();
    let sup = supervisor(read_scope(&inside_path), Mode::Enforce);
    // Lexically inside the scope, really outside it.
    let via_link = inside_path.join("sub/secret");
    let name = outside_path.file_name().unwrap().to_str().unwrap();
    let via_dotdot = format!("{}/x/../../{name}/secret", inside_path.display());
    for path in [bytes(&via_link), via_dotdot.into_bytes()] {
        let (answer, decided) = open(&sup, &path, libc::O_RDONLY);
        assert!(matches!(answer, Answer::Errno(libc::EPERM)));
        assert_eq!(decided.unwrap().target, secret.display().to_string());
    }
    // Control: the same file is readable where the scope covers it.
    let sup = supervisor(read_scope(&outside_path), Mode::Enforce);
    let (answer, _) = open(&sup, &bytes(&via_link), libc::O_RDONLY);
    assert!(matches!(answer, Answer::AddFd(..)));
}

#[test]
fn a_plain_read_keeps_the_agents_flags_and_a_fifo_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let file = dir_path.join("f");
    std::fs::write(&file, b"x").unwrap();
    let fifo = dir_path.join("fifo");
    let c = std::ffi::CString::new(bytes(&fifo)).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let sup = supervisor(read_scope(&dir_path), Mode::Enforce);
    let status_flags = |answer: Answer| {
        let Answer::AddFd(fd, _) = answer else {
            panic!("not injected")
        };
        // SAFETY: F_GETFL on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) }
    };
    for path in [&file, &fifo] {
        let (answer, _) = open(&sup, &bytes(path), libc::O_RDONLY);
        assert_eq!(status_flags(answer) & libc::O_NONBLOCK, 0, "{path:?}");
        let (answer, _) = open(&sup, &bytes(path), libc::O_RDONLY | libc::O_NONBLOCK);
        assert_ne!(status_flags(answer) & libc::O_NONBLOCK, 0, "{path:?}");
    }
}

#[test]
fn o_creat_creates_exactly_the_decided_file_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let writable = dir_path.join("w");
    let other = dir_path.join("o");
    std::fs::create_dir(&writable).unwrap();
    std::fs::create_dir(&other).unwrap();
    let spec = GrantSpec {
        write: vec![writable.clone()],
        ..GrantSpec::default()
    };
    let sup = supervisor(spec, Mode::Enforce);
    let flags = libc::O_WRONLY | libc::O_CREAT;
    let (answer, decided) = open(&sup, &bytes(&other.join("new")), flags);
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    assert!(!decided.unwrap().allowed);
    assert!(
        !other.join("new").exists(),
        "a refused create leaves nothing"
    );
    let (answer, decided) = open(&sup, &bytes(&writable.join("new")), flags);
    assert!(matches!(answer, Answer::AddFd(..)));
    assert!(decided.unwrap().allowed);
    assert!(writable.join("new").is_file());
    // O_EXCL of what now exists.
    let (answer, _) = open(&sup, &bytes(&writable.join("new")), flags | libc::O_EXCL);
    assert!(matches!(answer, Answer::Errno(libc::EEXIST)));
}

#[test]
fn a_magic_link_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let file = std::fs::File::create(dir_path.join("held")).unwrap();
    let sup = supervisor(read_scope(&dir_path), Mode::Enforce);
    let magic = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
    let (answer, decided) = open(&sup, magic.as_bytes(), libc::O_RDONLY);
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    assert_eq!(decided.unwrap().reason, "magic_link_refused");
    // Control: the same file by its path opens.
    let (answer, _) = open(&sup, &bytes(&dir_path.join("held")), libc::O_RDONLY);
    assert!(matches!(answer, Answer::AddFd(..)));
}

#[test]
fn an_agent_the_registry_no_longer_knows_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    std::fs::write(dir_path.join("f"), b"x").unwrap();
    let sup = supervisor(read_scope(&dir_path), Mode::Enforce);
    sup.registry.write().unwrap().agents.clear();
    let (answer, decided) = open(&sup, &bytes(&dir_path.join("f")), libc::O_RDONLY);
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    assert_eq!(decided.unwrap().reason, "no_grant");
}

/// Records expectations instead of writing EXEC_EXPECT; can be told to fail.
#[derive(Default)]
struct Expected {
    rows: Vec<(u32, agentd_common::ExecExpectation)>,
    fail: bool,
}

impl super::exec::ExpectExec for Expected {
    fn expect(&mut self, tgid: u32, exp: agentd_common::ExecExpectation) -> Result<(), String> {
        if self.fail {
            return Err("injected failure".into());
        }
        self.rows.push((tgid, exp));
        Ok(())
    }
}

/// Execs `path` as this process, through the supervisor.
fn exec(sup: &Supervisor, path: &[u8], expected: &mut Expected) -> (Answer, Option<Decided>) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let req = super::exec::ExecRequest {
        tid,
        tgid: std::process::id(),
        dirfd: libc::AT_FDCWD,
        path,
        flags: 0,
        bound: None,
    };
    super::exec::decide_exec(sup, &req, expected, &|| Some(vec![]))
}

fn exec_spec(program: &std::path::Path) -> GrantSpec {
    GrantSpec {
        exec: vec![program.to_owned()],
        ..GrantSpec::default()
    }
}

#[test]
fn an_exec_the_baseline_names_goes_on_with_its_expectation_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let granted = dir.path().canonicalize().unwrap().join("granted");
    let other = dir.path().canonicalize().unwrap().join("other");
    std::fs::write(&granted, b"#!/bin/sh\n").unwrap();
    std::fs::write(&other, b"#!/bin/sh\n").unwrap();
    let sup = supervisor(exec_spec(&granted), Mode::Enforce);
    let mut expected = Expected::default();
    let (answer, decided) = exec(&sup, &bytes(&granted), &mut expected);
    assert!(matches!(answer, Answer::Continue));
    let d = decided.unwrap();
    assert_eq!((d.allowed, d.reason, d.action), (true, "baseline", "exec"));
    // The kernel is told which file, under the baseline's call id.
    assert_eq!(expected.rows.len(), 1);
    let (tgid, exp) = expected.rows[0];
    assert_eq!(tgid, std::process::id());
    assert_eq!(exp.call_id, baseline_call_id(1));
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(exp.file.ino, std::fs::metadata(&granted).unwrap().ino());
    // Another file: refused, nothing expected.
    let (answer, decided) = exec(&sup, &bytes(&other), &mut expected);
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    assert_eq!(decided.unwrap().reason, "no_grant");
    assert_eq!(expected.rows.len(), 1);
    // A directory is no program.
    let (answer, _) = exec(&sup, &bytes(dir.path()), &mut expected);
    assert!(matches!(answer, Answer::Errno(libc::EACCES)));
}

#[test]
fn an_exec_whose_expectation_cannot_be_written_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let granted = dir.path().canonicalize().unwrap().join("granted");
    std::fs::write(&granted, b"#!/bin/sh\n").unwrap();
    let sup = supervisor(exec_spec(&granted), Mode::Enforce);
    let mut failing = Expected {
        fail: true,
        ..Expected::default()
    };
    let (answer, decided) = exec(&sup, &bytes(&granted), &mut failing);
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    let d = decided.unwrap();
    assert_eq!((d.allowed, d.reason), (false, "enforcer_error"));
    // Audit-only: a refused exec goes on, recorded as refused, and the
    // kernel still learns what runs.
    let other = dir.path().canonicalize().unwrap().join("other");
    std::fs::write(&other, b"#!/bin/sh\n").unwrap();
    let audit = supervisor(exec_spec(&granted), Mode::AuditOnly);
    let mut expected = Expected::default();
    let (answer, decided) = exec(&audit, &bytes(&other), &mut expected);
    assert!(matches!(answer, Answer::Continue));
    assert!(!decided.unwrap().allowed);
    assert_eq!(expected.rows.len(), 1);
}

/// A sink that keeps nothing: every row fails to commit.
struct Refusing;

impl AuditSink for Refusing {
    fn append_kernel(&self, _: &KernelRecord) -> Result<(), SinkError> {
        Err(SinkError::Unusable { what: "test" })
    }
    fn append_lifecycle(&self, _: &str, _: &str, _: &str) -> Result<(), SinkError> {
        Err(SinkError::Unusable { what: "test" })
    }
}

fn notif() -> libc::seccomp_notif {
    // SAFETY: plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn decided(allowed: bool, call: Option<u64>) -> Decided {
    Decided {
        action: "exec",
        target: "/usr/bin/id".into(),
        allowed,
        reason: if allowed { "grant_matched" } else { "no_grant" },
        call,
        access: None,
    }
}

#[test]
fn an_answer_waits_for_its_row_and_a_row_not_committed_refuses_what_has_not_happened() {
    let now = std::time::Instant::now;
    // The row is in the sink by the time the answer is returned.
    let sink = MemorySink::default();
    let sup = supervisor_with(GrantSpec::default(), Mode::Enforce, Arc::new(sink.clone()));
    let answer = commit_then_answer(
        &sup,
        &notif(),
        &decided(false, None),
        now(),
        Answer::Errno(libc::EPERM),
    );
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    let rows = sink.0.lock().unwrap().clone();
    assert_eq!(rows.len(), 1, "committed before the answer");
    assert_eq!(
        (rows[0].target.as_str(), rows[0].decision),
        ("/usr/bin/id", "deny")
    );
    // Control: an allowed answer stands when its row is committed.
    let answer = commit_then_answer(
        &sup,
        &notif(),
        &decided(true, Some(9)),
        now(),
        Answer::Continue,
    );
    assert!(matches!(answer, Answer::Continue));
    assert_eq!(sink.0.lock().unwrap().len(), 2);

    // A log that commits nothing: what is not yet carried out is refused.
    let sup = supervisor_with(GrantSpec::default(), Mode::Enforce, Arc::new(Refusing));
    let answer = commit_then_answer(
        &sup,
        &notif(),
        &decided(true, Some(9)),
        now(),
        Answer::Continue,
    );
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    let file: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let answer = commit_then_answer(
        &sup,
        &notif(),
        &decided(true, Some(9)),
        now(),
        Answer::AddFd(file, true),
    );
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    // Audit-only would-deny: no row, no pass.
    let audit_only = supervisor_with(GrantSpec::default(), Mode::AuditOnly, Arc::new(Refusing));
    let answer = commit_then_answer(
        &audit_only,
        &notif(),
        &decided(false, None),
        now(),
        Answer::Continue,
    );
    assert!(matches!(answer, Answer::Errno(libc::EPERM)));
    // A refusal stays one; an operation already performed keeps its result.
    let answer = commit_then_answer(
        &sup,
        &notif(),
        &decided(false, None),
        now(),
        Answer::Errno(libc::EACCES),
    );
    assert!(matches!(answer, Answer::Errno(libc::EACCES)));
    let answer = commit_then_answer(
        &sup,
        &notif(),
        &decided(true, Some(9)),
        now(),
        Answer::Value(0),
    );
    assert!(matches!(answer, Answer::Value(0)));
    // Baseline allows have no row: the log is not asked.
    let answer = commit_then_answer(
        &sup,
        &notif(),
        &decided(true, None),
        now(),
        Answer::Continue,
    );
    assert!(matches!(answer, Answer::Continue));
}

/// A symlink made in `/` for one test (the direct open follows only a
/// first component), removed on drop. `None` without the right to make it.
struct TopLink(std::path::PathBuf);

impl TopLink {
    fn new(tag: &str, target: &std::path::Path) -> Option<TopLink> {
        let link = std::path::PathBuf::from(format!("/agentd-t-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).ok()?;
        Some(TopLink(link))
    }
}

impl Drop for TopLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A path through a symlinked first component (`/lib` → `usr/lib`) takes
/// the direct way as the path the link names, and is decided there: a
/// scope naming the link's own path covers nothing behind it, and a link
/// whose target is not plain (`..`) goes the general way, decided on the
/// real path all the same.
#[test]
fn a_symlinked_first_component_is_decided_on_what_it_names() {
    let inside = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let inside_path = inside.path().canonicalize().unwrap();
    let outside_path = outside.path().canonicalize().unwrap();
    std::fs::write(inside_path.join("f"), b"i").unwrap();
    let secret = outside_path.join("secret");
    std::fs::write(&secret, b"s").unwrap();
    let Some(good) = TopLink::new("in", &inside_path) else {
        eprintln!("SKIPPED: cannot make a symlink in /");
        return;
    };
    // Control: the link names a directory the scope covers.
    let through_good = good.0.join("f");
    assert_eq!(
        super::open::through_first_symlink(&bytes(&through_good)),
        Some(bytes(&inside_path.join("f")))
    );
    let sup = supervisor(read_scope(&inside_path), Mode::Enforce);
    let (answer, decided) = open(&sup, &bytes(&through_good), libc::O_RDONLY);
    assert!(matches!(answer, Answer::AddFd(..)), "{decided:?}");
    let d = decided.unwrap();
    assert_eq!((d.allowed, d.reason), (true, "baseline"));
    assert_eq!(d.target, inside_path.join("f").display().to_string());
    // The escape: the scope names a path (and the inside) that becomes,
    // after the grant was made, a link leading outside. Refused, the row
    // naming the real file.
    let escape_path = std::path::PathBuf::from(format!("/agentd-t-out-{}", std::process::id()));
    let spec = GrantSpec {
        read: vec![escape_path.clone(), inside_path.clone()],
        ..GrantSpec::default()
    };
    let sup = supervisor(spec, Mode::Enforce);
    let escape = TopLink::new("out", &outside_path).unwrap();
    assert_eq!(escape.0, escape_path);
    let (answer, decided) = open(&sup, &bytes(&escape.0.join("secret")), libc::O_RDONLY);
    assert!(matches!(answer, Answer::Errno(libc::EPERM)), "{decided:?}");
    let d = decided.unwrap();
    assert_eq!((d.allowed, d.reason), (false, "no_grant"));
    assert_eq!(d.target, secret.display().to_string());
    // A target with `..` is not followed by the direct way; the general
    // way still decides on the real path.
    std::fs::create_dir(outside_path.join("sub")).unwrap();
    let dotdot = TopLink::new("dd", &outside_path.join("sub/..")).unwrap();
    assert_eq!(
        super::open::through_first_symlink(&bytes(&dotdot.0.join("secret"))),
        None
    );
    let (answer, decided) = open(&sup, &bytes(&dotdot.0.join("secret")), libc::O_RDONLY);
    assert!(matches!(answer, Answer::Errno(libc::EPERM)), "{decided:?}");
    assert_eq!(decided.unwrap().target, secret.display().to_string());
    // Not a symlink, or no first component to follow: nothing to rewrite.
    assert_eq!(super::open::through_first_symlink(b"/usr"), None);
    assert_eq!(super::open::through_first_symlink(b"/proc/self/x"), None);
}
