//! Protected files in the supervisor's write decisions, for the test
//! process itself (see `tests`): the baseline's write scope covers a
//! directory holding a protected file; reads pass, every write to the
//! file (by its name, a hard link, a create of a missing one, a rename of
//! the directory) is refused `protected_file` unless the bound call's
//! grant names it as a protected write.
use std::path::{Path, PathBuf};

use super::open::{decide_open, OpenRequest};
use super::tests::{bytes, supervisor};
use super::{write_verdicts, Answer, Decided, Supervisor};
use crate::enforce::grant::{KernelGrant, WriteTarget};
use crate::enforce::registry::{CallEntry, Mode};
use crate::grant_spec::GrantSpec;

fn open_as(sup: &Supervisor, path: &Path, flags: i32, bound: Option<u64>) -> (Answer, Decided) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let (a, d) = decide_open(
        sup,
        &OpenRequest {
            tid,
            tgid: std::process::id(),
            dirfd: libc::AT_FDCWD,
            path: &bytes(path),
            flags: flags as u64,
            mode: 0o600,
            resolve: 0,
            bound,
        },
    );
    (a, d.expect("a decided open has a row"))
}

/// A workspace directory with SOUL.md and notes.txt; the baseline writes
/// the workspace and protects SOUL.md and RULES.md (missing).
fn workspace() -> (tempfile::TempDir, PathBuf, GrantSpec) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    std::fs::write(ws.join("SOUL.md"), b"be kind").unwrap();
    std::fs::write(ws.join("notes.txt"), b"n").unwrap();
    let spec = GrantSpec {
        write: vec![ws.clone()],
        protected: vec![ws.join("SOUL.md"), ws.join("RULES.md")],
        ..GrantSpec::default()
    };
    (dir, ws, spec)
}

/// Installs a call whose grant is `spec` and returns its handle.
fn install(sup: &Supervisor, spec: &GrantSpec) -> u64 {
    let handle = 77;
    let grant = KernelGrant::from_spec(spec, handle, super::boot_ns()).unwrap();
    let mut reg = sup.registry.write().unwrap();
    reg.insert_call(
        handle,
        CallEntry {
            call_id: "c".into(),
            active_message_id: "m".into(),
            agent: "a".into(),
            grant,
            uses_left: None,
            pending: None,
        },
    );
    handle
}

#[test]
fn the_baseline_reads_but_never_writes_a_protected_file() {
    let (_d, ws, spec) = workspace();
    let sup = supervisor(spec, Mode::Enforce);
    // Control: the write scope covers an ordinary file.
    let (a, d) = open_as(&sup, &ws.join("notes.txt"), libc::O_WRONLY, None);
    assert!(matches!(a, Answer::AddFd(..)));
    assert_eq!((d.allowed, d.reason), (true, "baseline"));
    // Reading the protected file is the policy's ordinary read.
    let (a, d) = open_as(&sup, &ws.join("SOUL.md"), libc::O_RDONLY, None);
    assert!(matches!(a, Answer::AddFd(..)));
    assert_eq!(d.reason, "baseline");
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        let (a, d) = open_as(&sup, &ws.join("SOUL.md"), flags, None);
        assert!(matches!(a, Answer::Errno(libc::EPERM)), "flags {flags:#x}");
        assert_eq!(
            (d.allowed, d.reason, d.access),
            (false, "protected_file", Some("write"))
        );
    }
    assert_eq!(std::fs::read(ws.join("SOUL.md")).unwrap(), b"be kind");
    // Another name of the same file (made before the agent started).
    std::fs::hard_link(ws.join("SOUL.md"), ws.join("alias")).unwrap();
    let (a, d) = open_as(&sup, &ws.join("alias"), libc::O_WRONLY, None);
    assert!(matches!(a, Answer::Errno(libc::EPERM)));
    assert_eq!(d.reason, "protected_file");
    // A protected file that does not exist yet cannot be created.
    let (a, d) = open_as(
        &sup,
        &ws.join("RULES.md"),
        libc::O_WRONLY | libc::O_CREAT,
        None,
    );
    assert!(matches!(a, Answer::Errno(libc::EPERM)));
    assert_eq!(d.reason, "protected_file");
    assert!(!ws.join("RULES.md").exists());
}

#[test]
fn only_a_grant_naming_the_file_as_a_protected_write_writes_it() {
    let (_d, ws, spec) = workspace();
    let sup = supervisor(spec, Mode::Enforce);
    // A grant whose write scope merely covers the file does not.
    let covers = install(
        &sup,
        &GrantSpec {
            write: vec![ws.join("SOUL.md")],
            ..GrantSpec::default()
        },
    );
    let (a, d) = open_as(&sup, &ws.join("SOUL.md"), libc::O_WRONLY, Some(covers));
    assert!(matches!(a, Answer::Errno(libc::EPERM)));
    assert_eq!(d.reason, "protected_file");
    sup.registry.write().unwrap().calls.clear();
    let names = install(
        &sup,
        &GrantSpec {
            write: vec![ws.join("SOUL.md")],
            protected_write: vec![ws.join("SOUL.md")],
            ..GrantSpec::default()
        },
    );
    let (a, d) = open_as(&sup, &ws.join("SOUL.md"), libc::O_WRONLY, Some(names));
    assert!(matches!(a, Answer::AddFd(..)));
    assert_eq!(
        (d.allowed, d.reason, d.call),
        (true, "grant_matched", Some(77))
    );
    // It names SOUL.md only: RULES.md stays protected under the same grant.
    let (a, d) = open_as(
        &sup,
        &ws.join("RULES.md"),
        libc::O_WRONLY | libc::O_CREAT,
        Some(names),
    );
    assert!(matches!(a, Answer::Errno(libc::EPERM)));
    assert_eq!(d.reason, "protected_file");
}

#[test]
fn audit_only_records_the_would_deny_and_lets_the_write_through() {
    let (_d, ws, spec) = workspace();
    let sup = supervisor(spec, Mode::AuditOnly);
    let (a, d) = open_as(&sup, &ws.join("SOUL.md"), libc::O_WRONLY, None);
    assert!(matches!(a, Answer::AddFd(..)));
    assert_eq!((d.allowed, d.reason), (false, "protected_file"));
}

#[test]
fn moving_a_name_away_covers_the_directory_holding_a_protected_file() {
    let (_d, ws, spec) = workspace();
    let sup = supervisor(spec, Mode::Enforce);
    let tgid = std::process::id();
    let check = |t: &WriteTarget<'_>| {
        write_verdicts(&sup, tgid, None, t, |g| {
            g.check_path(t.real, crate::enforce::grant::Access::Write, tgid, 0)
        })
    };
    fn target(real: &Path, moves_name: bool) -> WriteTarget<'_> {
        WriteTarget {
            real,
            file: None,
            moves_name,
        }
    }
    // rename/unlink of the file itself, and of the directory holding it.
    let v = check(&target(&ws.join("SOUL.md"), true));
    assert_eq!((v.allowed, v.reason), (false, "protected_file"));
    let v = check(&target(&ws, true));
    assert_eq!((v.allowed, v.reason), (false, "protected_file"));
    let sub = ws.join("sub");
    let v = check(&target(&sub, true));
    assert_eq!((v.allowed, v.reason), (true, "baseline"), "control");
    // A chmod of the directory does not move the file's name.
    let v = check(&target(&ws.join("notes.txt"), false));
    assert!(v.allowed);
}
