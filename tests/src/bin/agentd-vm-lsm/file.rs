//! `file_open` and the path hooks: reads and writes by scope (directory
//! device+inode), and the ways around a path check — symlinks, hard links,
//! `/proc/self/fd` reopen, rename out of scope — denied.
use std::{ffi::CString, fs, path::Path};

use agentd::enforce::lsm::file_id_of;
use agentd_common::{
    baseline_call_id,
    lsm::{ScopeKey, ScopeRule, ACCESS_READ, ACCESS_WRITE},
    Hook, KernelReason,
};

use crate::{
    harness::{drain, expect_code, expect_event, run_in, Report},
    Fixture, AGENT_ID,
};

const BASE: &str = "/tmp/lsm";
const CALL_RW: u64 = 42;
const CALL_ROOT: u64 = 43;
const CALL_EXPIRED: u64 = 44;

fn c(path: &str) -> CString {
    CString::new(path).unwrap()
}

fn grant_scope(
    fx: &mut Fixture,
    call_id: u64,
    path: &str,
    access: u8,
    expires_at_ns: u64,
) -> Result<(), String> {
    let id = file_id_of(Path::new(path)).map_err(|e| format!("stat {path}: {e}"))?;
    fx.scopes
        .insert(
            ScopeKey {
                call_id,
                dev: id.dev,
                ino: id.ino,
            },
            ScopeRule {
                expires_at_ns,
                access,
                _pad: [0; 7],
            },
            0,
        )
        .map_err(|e| e.to_string())
}

/// open(path, flags) in the child: 0 or errno.
fn open_op(path: &CString, flags: i32) -> impl FnOnce() -> i32 + '_ {
    move || {
        // SAFETY: NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), flags, 0o644) };
        if fd < 0 {
            crate::harness::errno()
        } else {
            0
        }
    }
}

/// A `before` hook binding the child to `call_id`.
fn bind_to(fx: &mut Fixture, call_id: u64) -> impl FnOnce(u32) + '_ {
    move |pid| fx.bind(pid, call_id)
}

fn rc(ret: i32) -> i32 {
    if ret < 0 {
        crate::harness::errno()
    } else {
        0
    }
}

fn setup() -> Result<(), String> {
    let _ = fs::remove_dir_all(BASE);
    for d in ["ro", "rw", "denied"] {
        fs::create_dir_all(format!("{BASE}/{d}")).map_err(|e| e.to_string())?;
    }
    for f in ["ro/f.txt", "rw/f.txt", "rw/g.txt", "denied/secret.txt"] {
        fs::write(format!("{BASE}/{f}"), b"data\n").map_err(|e| e.to_string())?;
    }
    std::os::unix::fs::symlink(
        format!("{BASE}/denied/secret.txt"),
        format!("{BASE}/ro/link"),
    )
    .map_err(|e| e.to_string())
}

pub fn run(r: &mut Report, fx: &mut Fixture) -> Result<(), String> {
    setup()?;
    let cgroup = fx.cgroup.clone();
    let cg = Some(cgroup.as_path());
    let baseline = baseline_call_id(AGENT_ID);
    grant_scope(fx, baseline, &format!("{BASE}/ro"), ACCESS_READ, 0)?;
    grant_scope(
        fx,
        CALL_RW,
        &format!("{BASE}/rw"),
        ACCESS_READ | ACCESS_WRITE,
        0,
    )?;
    let ro_f = c(&format!("{BASE}/ro/f.txt"));
    let ro_link = c(&format!("{BASE}/ro/link"));
    let secret = c(&format!("{BASE}/denied/secret.txt"));
    let rw_f = c(&format!("{BASE}/rw/f.txt"));
    let rw_g = c(&format!("{BASE}/rw/g.txt"));
    let rw_new = c(&format!("{BASE}/rw/new.txt"));
    let rw_moved = c(&format!("{BASE}/rw/moved.txt"));
    let denied_new = c(&format!("{BASE}/denied/new.txt"));
    let denied_dir = c(&format!("{BASE}/denied/sub"));
    let rw_link = c(&format!("{BASE}/rw/secret-link"));

    r.check(
        "file_read_outside_agent_cgroup_ok",
        expect_code(run_in(None, |_| {}, open_op(&secret, libc::O_RDONLY)), 0),
    );
    r.check(
        "file_read_in_baseline_scope_ok",
        expect_code(run_in(cg, |_| {}, open_op(&ro_f, libc::O_RDONLY)), 0),
    );
    r.check(
        "file_write_in_read_scope_denied",
        expect_code(
            run_in(cg, |_| {}, open_op(&ro_f, libc::O_WRONLY)),
            libc::EPERM,
        ),
    );
    drain(&mut fx.events);
    r.check(
        "file_read_outside_scope_denied_no_grant",
        expect_code(
            run_in(cg, |_| {}, open_op(&secret, libc::O_RDONLY)),
            libc::EPERM,
        )
        .and_then(|_| expect_event(&mut fx.events, Hook::FileOpen, KernelReason::NoGrant, None))
        .and_then(|d| {
            if d.contains("secret.txt") {
                Ok(d)
            } else {
                Err(format!("target missing: {d}"))
            }
        }),
    );
    r.check(
        "file_symlink_in_scope_to_file_outside_denied",
        expect_code(
            run_in(cg, |_| {}, open_op(&ro_link, libc::O_RDONLY)),
            libc::EPERM,
        ),
    );
    // An O_PATH fd (no file_open) opened outside, reopened inside via /proc.
    let opath = unsafe { libc::open(secret.as_ptr(), libc::O_PATH) };
    let reopen = c(&format!("/proc/self/fd/{opath}"));
    r.check(
        "file_reopen_via_proc_self_fd_denied",
        expect_code(
            run_in(cg, |_| {}, open_op(&reopen, libc::O_RDONLY)),
            libc::EPERM,
        ),
    );
    unsafe { libc::close(opath) };

    // Write scope of a bound call: create, rename inside, unlink.
    r.check(
        "file_create_in_bound_write_scope_ok",
        expect_code(
            run_in(
                cg,
                bind_to(fx, CALL_RW),
                open_op(&rw_new, libc::O_CREAT | libc::O_WRONLY),
            ),
            0,
        ),
    );
    drain(&mut fx.events);
    r.check(
        "file_create_unbound_denied",
        expect_code(
            run_in(
                cg,
                |_| {},
                open_op(
                    &c(&format!("{BASE}/rw/x.txt")),
                    libc::O_CREAT | libc::O_WRONLY,
                ),
            ),
            libc::EPERM,
        )
        .and_then(|_| {
            expect_event(
                &mut fx.events,
                Hook::PathCreate,
                KernelReason::NoGrant,
                None,
            )
        }),
    );
    r.check(
        "file_rename_within_write_scope_ok",
        expect_code(
            run_in(cg, bind_to(fx, CALL_RW), || {
                rc(unsafe { libc::rename(rw_new.as_ptr(), rw_moved.as_ptr()) })
            }),
            0,
        ),
    );
    drain(&mut fx.events);
    r.check(
        "file_rename_out_of_write_scope_denied",
        expect_code(
            run_in(cg, bind_to(fx, CALL_RW), || {
                rc(unsafe { libc::rename(rw_moved.as_ptr(), denied_new.as_ptr()) })
            }),
            libc::EPERM,
        )
        .and_then(|_| {
            expect_event(
                &mut fx.events,
                Hook::PathRename,
                KernelReason::PathOutsideScope,
                None,
            )
        }),
    );
    r.check(
        "file_unlink_in_write_scope_ok",
        expect_code(
            run_in(cg, bind_to(fx, CALL_RW), || {
                rc(unsafe { libc::unlink(rw_g.as_ptr()) })
            }),
            0,
        ),
    );
    r.check(
        "file_unlink_in_read_scope_denied",
        expect_code(
            run_in(cg, bind_to(fx, CALL_RW), || {
                rc(unsafe { libc::unlink(ro_f.as_ptr()) })
            }),
            libc::EPERM,
        ),
    );
    r.check(
        "file_hardlink_of_file_outside_scope_denied",
        expect_code(
            run_in(cg, bind_to(fx, CALL_RW), || {
                rc(unsafe { libc::link(secret.as_ptr(), rw_link.as_ptr()) })
            }),
            libc::EPERM,
        ),
    );
    r.check(
        "file_truncate_in_read_scope_denied",
        expect_code(
            run_in(cg, bind_to(fx, CALL_RW), || {
                rc(unsafe { libc::truncate(ro_f.as_ptr(), 0) })
            }),
            libc::EPERM,
        ),
    );
    r.check(
        "file_truncate_in_write_scope_ok",
        expect_code(
            run_in(cg, bind_to(fx, CALL_RW), || {
                rc(unsafe { libc::truncate(rw_f.as_ptr(), 1) })
            }),
            0,
        ),
    );
    r.check(
        "file_mkdir_outside_scope_denied",
        expect_code(
            run_in(cg, bind_to(fx, CALL_RW), || {
                rc(unsafe { libc::mkdir(denied_dir.as_ptr(), 0o755) })
            }),
            libc::EPERM,
        ),
    );
    r.check(
        "file_symlink_create_outside_scope_denied",
        expect_code(
            run_in(cg, bind_to(fx, CALL_RW), || {
                rc(unsafe { libc::symlink(ro_f.as_ptr(), denied_new.as_ptr()) })
            }),
            libc::EPERM,
        ),
    );

    // A scope on / covers files on other mounts below it (/tmp is tmpfs).
    grant_scope(fx, CALL_ROOT, "/", ACCESS_READ, 0)?;
    r.check(
        "file_scope_crosses_mount_points",
        expect_code(
            run_in(
                cg,
                |pid| fx.bind(pid, CALL_ROOT),
                open_op(&secret, libc::O_RDONLY),
            ),
            0,
        ),
    );

    // An expired scope denies with its own reason.
    grant_scope(fx, CALL_EXPIRED, &format!("{BASE}/denied"), ACCESS_READ, 1)?;
    drain(&mut fx.events);
    r.check(
        "file_expired_scope_denied",
        expect_code(
            run_in(
                cg,
                |pid| fx.bind(pid, CALL_EXPIRED),
                open_op(&secret, libc::O_RDONLY),
            ),
            libc::EPERM,
        )
        .and_then(|_| {
            expect_event(
                &mut fx.events,
                Hook::FileOpen,
                KernelReason::GrantExpired,
                None,
            )
        }),
    );
    Ok(())
}
