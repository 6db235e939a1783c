//! Scenarios for the kernel boundary's hardening: listener takeover,
//! terminal injection, process memory, socket families, O_PATH opens,
//! directory listings, the launcher's session and fds. Each denial checks
//! the errno *and* the audit row, beside a control showing the same step
//! succeeds without enforcement (an audit-only agent, or the probe run
//! outside any agent).
use std::time::Duration;

use agentd::{doctor::Backend, enforce::Mode};

use crate::{
    harness::{spec, Harness, Run},
    scenarios::{audited, expect, Check, Scenario, EPERM},
};

const ENOSYS: &str = "errno:38";
const SECCOMP_ONLY: &str =
    "seccomp-filter rule; the lsm backend's hooks are tested in the VM suite";

/// The hardening scenarios, in order.
pub fn all() -> Vec<Scenario> {
    let seccomp = Some((Backend::Seccomp, SECCOMP_ONLY));
    vec![
        Scenario {
            name: "listener_takeover_refused",
            run: listener_takeover,
            only: seccomp,
        },
        Scenario {
            name: "tty_injection_refused",
            run: tty_injection,
            only: seccomp,
        },
        Scenario {
            name: "process_vm_readv_refused",
            run: vm_read,
            only: seccomp,
        },
        Scenario {
            name: "socket_families_refused",
            run: socket_families,
            only: seccomp,
        },
        Scenario {
            name: "unix_sockets_need_a_grant",
            run: unix_sockets,
            only: seccomp,
        },
        Scenario {
            name: "inbound_needs_a_listen_rule",
            run: inbound,
            only: seccomp,
        },
        Scenario {
            name: "metadata_ops_need_a_write_scope",
            run: metadata_ops,
            only: seccomp,
        },
        Scenario {
            name: "link_and_rename_cannot_move_files_into_a_scope",
            run: link_rename_across,
            only: seccomp,
        },
        Scenario {
            name: "signals_stay_inside_the_agent",
            run: signals,
            only: seccomp,
        },
        Scenario {
            name: "o_path_open_answered",
            run: o_path,
            only: None,
        },
        Scenario {
            name: "directory_listing_is_a_read",
            run: listing,
            only: None,
        },
        Scenario {
            name: "run_starts_a_session_without_inherited_fds",
            run: session,
            only: None,
        },
    ]
}

/// `name` with a suffix: the control agent beside the enforced one.
fn control(a: &str) -> String {
    format!("{a}c")
}

fn listener_takeover(h: &Harness, a: &str) -> Check {
    // Control: outside an agent the same filter installs. (Inside an agent
    // whose listener is alive the kernel itself answers EBUSY — one listener
    // per filter chain — so the attack starts once agentd's listener is gone;
    // the last step below is that moment.)
    expect(
        &h.run_unenforced(&["seccomp-listener"], None),
        "ok",
        "control: a listener filter outside any agent",
    )?;
    h.agent(a, Mode::Enforce)?;
    expect(
        &h.run(a, None, &["seccomp-listener"]),
        EPERM,
        "a listener filter in an enforced agent",
    )?;
    audited(
        h,
        a,
        "seccomp",
        "NEW_LISTENER",
        "deny",
        Some("seccomp_listener_refused"),
    )?;
    // The rule holds with no supervisor: the notified syscall fails.
    let run = h.run_with(a, None, &["sleep-then", "1200", "seccomp-listener"], |_| {
        std::thread::sleep(Duration::from_millis(600));
        h.enforcer.stop_supervisors(a);
    });
    expect(
        &run,
        ENOSYS,
        "a listener filter after the supervisor stopped",
    )
}

fn legacy_tiocsti() -> bool {
    std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti").is_ok_and(|s| s.trim() == "1")
}

fn tty_injection(h: &Harness, a: &str) -> Check {
    let c = control(a);
    h.agent(&c, Mode::AuditOnly)?;
    let run = h.run(&c, None, &["tiocsti"]);
    if legacy_tiocsti() {
        expect(
            &run,
            "ok",
            "control: TIOCSTI on its own terminal, audit-only",
        )?;
    } else {
        // The kernel refuses TIOCSTI itself (dev.tty.legacy_tiocsti = 0).
        expect(&run, "errno:", "control: TIOCSTI with legacy_tiocsti=0")?;
    }
    audited(
        h,
        &c,
        "ioctl",
        "",
        "would_deny",
        Some("tty_injection_refused"),
    )?;
    h.agent(a, Mode::Enforce)?;
    h.grant(a, "c-pty", spec(&[], &[], &["/dev/ptmx"], &[], 60))?;
    expect(
        &h.run(a, Some("c-pty"), &["tiocsti"]),
        EPERM,
        "TIOCSTI in an enforced agent",
    )?;
    audited(h, a, "ioctl", "", "deny", Some("tty_injection_refused"))
}

fn vm_read(h: &Harness, a: &str) -> Check {
    let c = control(a);
    h.agent(&c, Mode::AuditOnly)?;
    expect(
        &h.run(&c, None, &["vm-read-self"]),
        "ok",
        "control: process_vm_readv, audit-only",
    )?;
    audited(
        h,
        &c,
        "process_vm_readv",
        "",
        "would_deny",
        Some("process_access_refused"),
    )?;
    h.agent(a, Mode::Enforce)?;
    expect(
        &h.run(a, None, &["vm-read-self"]),
        EPERM,
        "process_vm_readv in an enforced agent",
    )?;
    audited(
        h,
        a,
        "process_vm_readv",
        "",
        "deny",
        Some("process_access_refused"),
    )
}

/// In the launcher's process (root): a network namespace of its own whose
/// ping_group_range lets every group open ICMP sockets — the host's setting
/// is left alone.
fn own_netns_with_ping() -> std::io::Result<()> {
    // SAFETY: raw syscalls with static arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let path = c"/proc/sys/net/ipv4/ping_group_range";
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let v = b"0 2147483647\n";
        let n = libc::write(fd, v.as_ptr().cast(), v.len());
        libc::close(fd);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn socket_families(h: &Harness, a: &str) -> Check {
    let icmp = [
        "socket",
        &libc::AF_INET.to_string(),
        &libc::SOCK_DGRAM.to_string(),
        &libc::IPPROTO_ICMP.to_string(),
    ]
    .map(String::from);
    let icmp: Vec<&str> = icmp.iter().map(String::as_str).collect();
    let c = control(a);
    h.agent(&c, Mode::AuditOnly)?;
    let run = h.run_prepared(&c, None, &icmp, Some(own_netns_with_ping), |_| {});
    expect(
        &run,
        "ok",
        "control: an ICMP socket in a netns allowing ping, audit-only",
    )?;
    audited(
        h,
        &c,
        "socket",
        "inet/dgram/icmp",
        "would_deny",
        Some("socket_family_refused"),
    )?;
    h.agent(a, Mode::Enforce)?;
    let run = h.run_prepared(a, None, &icmp, Some(own_netns_with_ping), |_| {});
    expect(&run, EPERM, "an ICMP socket in an enforced agent")?;
    audited(
        h,
        a,
        "socket",
        "inet/dgram/icmp",
        "deny",
        Some("socket_family_refused"),
    )?;
    for (family, ty, proto, target) in [
        (libc::AF_PACKET, libc::SOCK_RAW, 0, "packet/raw/0"),
        (libc::AF_VSOCK, libc::SOCK_STREAM, 0, "vsock/stream/0"),
        (
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_TCP,
            "inet/raw/6",
        ),
    ] {
        let args = [family, ty, proto].map(|n| n.to_string());
        let run = h.run(a, None, &["socket", &args[0], &args[1], &args[2]]);
        expect(&run, EPERM, &format!("socket {target}"))?;
        audited(
            h,
            a,
            "socket",
            target,
            "deny",
            Some("socket_family_refused"),
        )?;
    }
    // TCP and UDP sockets stay (their destinations are decided at connect).
    for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM] {
        let run = h.run(a, None, &["socket", "2", &ty.to_string(), "0"]);
        expect(&run, "ok", "an inet socket")?;
    }
    Ok(())
}

/// Listening unix sockets the agent user may reach by file permissions
/// (path, abstract, datagram): each is refused without a grant, audited,
/// and succeeds outside the agent and audit-only.
fn unix_sockets(h: &Harness, a: &str) -> Check {
    use std::os::{
        linux::net::SocketAddrExt as _,
        unix::{
            fs::PermissionsExt as _,
            net::{SocketAddr, UnixDatagram, UnixListener},
        },
    };
    let io = |e: std::io::Error| e.to_string();
    let dir = h.work.join("unix");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
    let granted = dir.join("granted.sock");
    let other = dir.join("other.sock");
    let dgram = dir.join("dgram.sock");
    let third = dir.join("third.sock");
    let _third = UnixListener::bind(&third).map_err(io)?;
    let _granted = UnixListener::bind(&granted).map_err(io)?;
    let _other = UnixListener::bind(&other).map_err(io)?;
    let _dgram = UnixDatagram::bind(&dgram).map_err(io)?;
    for p in [&granted, &other, &dgram, &third] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
    }
    let abs = format!("@agentd-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(&abs.as_bytes()[1..]).map_err(io)?;
    let _abs = UnixListener::bind_addr(&addr).map_err(io)?;
    // A symlink to an ungranted socket, where the agent could have planted it.
    let planted = dir.join("planted");
    std::os::unix::fs::symlink(&third, &planted).map_err(io)?;
    let (granted, other, dgram, planted) = (
        Harness::s(&granted),
        Harness::s(&other),
        Harness::s(&dgram),
        Harness::s(&planted),
    );
    let new_sock = Harness::s(&dir.join("new.sock"));
    let abs_bind = format!("{abs}-bind");
    // Controls: outside any agent, then inside an audit-only one.
    for (op, addr) in [
        ("connect", &other),
        ("connect", &abs),
        ("connect", &planted),
        ("sendto", &dgram),
        ("sendmsg", &dgram),
    ] {
        expect(
            &h.run_unenforced(&["unix", op, addr], None),
            "ok",
            &format!("control: unix {op} {addr} outside any agent"),
        )?;
    }
    let c = control(a);
    h.agent(&c, Mode::AuditOnly)?;
    for (op, addr, target) in [
        ("connect", &other, "other.sock"),
        ("connect", &abs, abs.as_str()),
        ("sendto", &dgram, "dgram.sock"),
        ("bind", &abs_bind, abs_bind.as_str()),
    ] {
        expect(
            &h.run(&c, None, &["unix", op, addr]),
            "ok",
            &format!("control: unix {op} {addr}, audit-only"),
        )?;
        audited(h, &c, op, target, "would_deny", Some("no_grant"))?;
    }
    h.agent(a, Mode::Enforce)?;
    let bind_target = format!("{abs}-bind");
    for (op, addr, target) in [
        ("connect", &other, "other.sock"),
        ("connect", &abs, abs.as_str()),
        ("sendto", &dgram, "dgram.sock"),
        ("bind", &abs_bind, bind_target.as_str()),
        ("bind", &new_sock, "new.sock"),
    ] {
        expect(
            &h.run(a, None, &["unix", op, addr]),
            EPERM,
            &format!("unix {op} {addr} in an enforced agent"),
        )?;
        audited(h, a, op, target, "deny", Some("no_grant"))?;
    }
    // sendmsg names its address in a msghdr the filter cannot read: the
    // cgroup sendmsg_unix program refuses it in the kernel (no row).
    expect(
        &h.run(a, None, &["unix", "sendmsg", &dgram]),
        EPERM,
        "addressed unix sendmsg in an enforced agent (kernel refusal)",
    )?;
    // Granted: the socket file itself (by device+inode) and the abstract
    // name exactly. The planted symlink resolves to the third socket, so it
    // stays refused: the decision is on the resolved object.
    h.grant(
        a,
        "c-unix",
        spec(
            &[],
            &[],
            &[],
            &[&format!("unix:{granted}"), &format!("unix:{abs}")],
            60,
        ),
    )?;
    expect(
        &h.run(a, Some("c-unix"), &["unix", "connect", &granted]),
        "ok",
        "connect to the granted socket",
    )?;
    audited(
        h,
        a,
        "connect",
        "granted.sock",
        "allow",
        Some("grant_matched"),
    )?;
    expect(
        &h.run(a, Some("c-unix"), &["unix", "connect", &abs]),
        "ok",
        "connect to the granted abstract name",
    )?;
    expect(
        &h.run(a, Some("c-unix"), &["unix", "connect", &planted]),
        EPERM,
        "connect through a symlink to an ungranted socket",
    )?;
    audited(
        h,
        a,
        "connect",
        "third.sock",
        "deny",
        Some("path_outside_scope"),
    )
}

/// Inbound TCP/UDP: bind to a fixed port and listen need a `listen:PORT`
/// rule; a client's port-0 bind runs.
fn inbound(h: &Harness, a: &str) -> Check {
    let port = (20000 + std::process::id() % 20000).to_string();
    let port_target = format!("port {port}");
    expect(
        &h.run_unenforced(&["inbound", "tcp-listen", &port], None),
        "ok",
        "control: listen outside any agent",
    )?;
    let c = control(a);
    h.agent(&c, Mode::AuditOnly)?;
    expect(
        &h.run(&c, None, &["inbound", "tcp-listen", &port]),
        "ok",
        "control: listen, audit-only",
    )?;
    audited(h, &c, "bind", &port_target, "would_deny", Some("no_grant"))?;
    audited(
        h,
        &c,
        "listen",
        &port_target,
        "would_deny",
        Some("no_grant"),
    )?;
    h.agent(a, Mode::Enforce)?;
    for op in ["tcp-bind", "udp-bind"] {
        expect(
            &h.run(a, None, &["inbound", op, &port]),
            EPERM,
            &format!("{op} to a fixed port in an enforced agent"),
        )?;
    }
    audited(h, a, "bind", &port_target, "deny", Some("no_grant"))?;
    expect(
        &h.run(a, None, &["inbound", "tcp-listen", "0"]),
        EPERM,
        "listen on an ephemeral port in an enforced agent",
    )?;
    audited(h, a, "listen", "(ephemeral)", "deny", Some("no_grant"))?;
    expect(
        &h.run(a, None, &["inbound", "tcp-bind", "0"]),
        "ok",
        "a client's ephemeral bind",
    )?;
    h.grant(
        a,
        "c-listen",
        spec(&[], &[], &[], &[&format!("listen:{port}")], 60),
    )?;
    expect(
        &h.run(a, Some("c-listen"), &["inbound", "tcp-listen", &port]),
        "ok",
        "listen with a listen: rule",
    )?;
    audited(h, a, "listen", &port_target, "allow", Some("grant_matched"))
}

fn o_path(h: &Harness, a: &str) -> Check {
    let f = h.file("o-path-target.txt", b"not granted\n", 0o644);
    let path = Harness::s(&f);
    expect(
        &h.run_unenforced(&["open-o-path", &path], None),
        "ok",
        "control: O_PATH outside any agent",
    )?;
    h.agent(a, Mode::Enforce)?;
    // An O_PATH handle reads and writes nothing (the lsm file_open hook
    // does not see it either): it is answered at once, not hung.
    expect(
        &h.run(a, None, &["open-o-path", &path]),
        "ok",
        "O_PATH open in an enforced agent",
    )?;
    let run = h.run(a, None, &["openat2-o-path", &path]);
    if h.backend == Backend::Seccomp {
        // ADDFD cannot pass an O_PATH handle and CONTINUE would race on
        // `how`: ENOSYS sends callers back to openat.
        expect(&run, ENOSYS, "openat2(O_PATH) in an enforced agent")?;
    } else {
        expect(&run, "ok", "openat2(O_PATH) in an enforced agent")?;
    }
    // The handle's existence granted nothing: reading is still refused.
    expect(
        &h.run(a, None, &["open", &path, "r"]),
        EPERM,
        "reading the O_PATH target",
    )?;
    audited(
        h,
        a,
        "file_open",
        "o-path-target.txt",
        "deny",
        Some("no_grant"),
    )
}

fn listing(h: &Harness, a: &str) -> Check {
    let dir = h.work.join("listing");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for n in ["one", "two"] {
        std::fs::write(dir.join(n), n).map_err(|e| e.to_string())?;
    }
    let d = Harness::s(&dir);
    h.agent(a, Mode::Enforce)?;
    // Without a scope the listing is refused: enforcement is on.
    expect(&h.run(a, None, &["list-dir", &d]), EPERM, "unbound listing")?;
    audited(h, a, "file_open", "listing", "deny", Some("no_grant"))?;
    h.grant(a, "c-ls", spec(&["/usr/bin/ls"], &[&d], &[], &[], 60))?;
    expect(
        &h.run(a, Some("c-ls"), &["list-dir", &d]),
        "ok 2",
        "listing a read scope",
    )?;
    audited(h, a, "file_open", "listing", "allow", Some("grant_matched"))?;
    expect(
        &h.run(a, Some("c-ls"), &["exec", "/usr/bin/ls", &d]),
        "exit:0",
        "`ls` of a read scope",
    )
}

/// In the launcher's process: an fd the agent must not inherit.
fn inherit_an_fd() -> std::io::Result<()> {
    // SAFETY: open without O_CLOEXEC, deliberately leaked into the exec.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn session(h: &Harness, a: &str) -> Check {
    let control_run: Run = h.run_unenforced(&["session"], Some(inherit_an_fd));
    if !control_run.is("ok leader=false fds=[") || control_run.result.ends_with("fds=[]") {
        return Err(format!(
            "control: the probe outside an agent should share the caller's session and hold the leaked fd, got `{}`",
            control_run.result
        ));
    }
    h.agent(a, Mode::Enforce)?;
    let run = h.run_prepared(a, None, &["session"], Some(inherit_an_fd), |_| {});
    expect(&run, "ok leader=true fds=[]", "the agent's session and fds")
}

/// A directory tree owned by the agent user (so file permissions allow every
/// metadata operation, and only enforcement can refuse one): `ro/`, `rw/`,
/// `out/`, each with one file per operation and a directory to remove.
fn meta_tree(h: &Harness, name: &str) -> Result<std::path::PathBuf, String> {
    let uid = crate::scenarios::uid_of_agent()?;
    let root = h.work.join(name);
    let _ = std::fs::remove_dir_all(&root);
    let chown = |p: &std::path::Path| {
        std::os::unix::fs::chown(p, Some(uid), None)
            .map_err(|e| format!("chown {}: {e}", p.display()))
    };
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    chown(&root)?;
    for d in ["ro", "rw", "out"] {
        let dir = root.join(d);
        std::fs::create_dir_all(dir.join("rmdir")).map_err(|e| e.to_string())?;
        chown(&dir)?;
        chown(&dir.join("rmdir"))?;
        for f in [
            "trunc", "unlink", "chmod", "fchmod", "chown", "utimes", "setx", "rmx", "link", "ren",
            "secret",
        ] {
            let p = dir.join(f);
            std::fs::write(&p, b"data\n").map_err(|e| e.to_string())?;
            chown(&p)?;
        }
        let rmx =
            std::ffi::CString::new(Harness::s(&dir.join("rmx"))).map_err(|e| e.to_string())?;
        // SAFETY: setxattr with C strings and a byte value we own.
        let r =
            unsafe { libc::setxattr(rmx.as_ptr(), c"user.k".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
        if r != 0 {
            return Err(format!(
                "setxattr user.k: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(root)
}

/// The operations, as `seq` probe arguments, on directory `d`, with the
/// action and target suffix each audit row must carry.
fn meta_ops(d: &str, uid: u32, gid: u32) -> Vec<(Vec<String>, &'static str, String)> {
    let f = |n: &str| format!("{d}/{n}");
    let ops: Vec<(Vec<String>, &'static str, String)> = vec![
        (
            vec!["truncate".into(), f("trunc"), "0".into()],
            "truncate",
            f("trunc"),
        ),
        (vec!["unlink".into(), f("unlink")], "unlink", f("unlink")),
        (vec!["rmdir".into(), f("rmdir")], "rmdir", f("rmdir")),
        (vec!["mkdir".into(), f("newdir")], "mkdir", f("newdir")),
        (vec!["mkfifo".into(), f("fifo")], "mknod", f("fifo")),
        (
            vec!["symlink".into(), "/etc/passwd".into(), f("sym")],
            "symlink",
            f("sym"),
        ),
        (
            vec!["link".into(), f("link"), f("linked")],
            "link",
            f("linked"),
        ),
        (
            vec!["rename".into(), f("ren"), f("renamed")],
            "rename",
            f("renamed"),
        ),
        (
            vec!["chmod".into(), f("chmod"), "384".into()],
            "chmod",
            f("chmod"),
        ),
        (
            vec!["fchmod".into(), f("fchmod"), "384".into()],
            "chmod",
            f("fchmod"),
        ),
        (
            vec!["chown".into(), f("chown"), uid.to_string(), gid.to_string()],
            "chown",
            f("chown"),
        ),
        (vec!["utimes".into(), f("utimes")], "utimes", f("utimes")),
        (
            vec![
                "setxattr".into(),
                f("setx"),
                "user.agentd".into(),
                "v".into(),
            ],
            "setxattr",
            f("setx"),
        ),
        (
            vec!["removexattr".into(), f("rmx"), "user.k".into()],
            "removexattr",
            f("rmx"),
        ),
    ];
    ops
}

/// `seq meta OP… -- meta OP… …` for one launch.
fn seq_of(ops: &[(Vec<String>, &'static str, String)]) -> Vec<String> {
    let mut argv = vec!["seq".to_string()];
    for (i, (op, _, _)) in ops.iter().enumerate() {
        if i > 0 {
            argv.push("--".into());
        }
        argv.push("meta".into());
        argv.extend(op.iter().cloned());
    }
    argv
}

fn results(run: &Run, n: usize, want: &str, what: &str) -> Check {
    let got: Vec<&str> = run.result.split(" | ").collect();
    if got.len() != n || got.iter().any(|r| !r.starts_with(want)) {
        return Err(format!(
            "{what}: wanted {n}× {want}, got `{}`\n{}",
            run.result, run.output
        ));
    }
    Ok(())
}

fn metadata_ops(h: &Harness, a: &str) -> Check {
    let creds = agentd::enforce::launch::creds_of_user(crate::harness::AGENT_USER)
        .map_err(|e| e.to_string())?;
    // Control: an audit-only agent performs every operation (rows: would_deny).
    let c = control(a);
    let croot = meta_tree(h, &format!("meta-{c}"))?;
    let cops = meta_ops(&Harness::s(&croot.join("ro")), creds.uid, creds.gid);
    h.agent(&c, Mode::AuditOnly)?;
    let argv = seq_of(&cops);
    let run = h.run(
        &c,
        None,
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    results(&run, cops.len(), "ok", "control: metadata ops, audit-only")?;
    for (_, action, target) in &cops {
        audited(h, &c, action, target, "would_deny", Some("no_grant"))?;
    }
    // Enforced: refused in a read scope, performed in a write scope.
    let root = meta_tree(h, &format!("meta-{a}"))?;
    let ro = Harness::s(&root.join("ro"));
    let rw = Harness::s(&root.join("rw"));
    h.agent(a, Mode::Enforce)?;
    h.grant(a, "c-meta", spec(&[], &[&ro], &[&rw], &[], 60))?;
    let denied = meta_ops(&ro, creds.uid, creds.gid);
    let argv = seq_of(&denied);
    let run = h.run(
        a,
        Some("c-meta"),
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    results(&run, denied.len(), EPERM, "metadata ops in a read scope")?;
    for (_, action, target) in &denied {
        audited(h, a, action, target, "deny", Some("path_outside_scope"))?;
    }
    let untouched = std::fs::read(root.join("ro/trunc")).map_err(|e| e.to_string())?;
    if untouched != b"data\n" || !root.join("ro/unlink").exists() || root.join("ro/newdir").exists()
    {
        return Err("a refused operation changed the read scope".into());
    }
    let allowed = meta_ops(&rw, creds.uid, creds.gid);
    let argv = seq_of(&allowed);
    let run = h.run(
        a,
        Some("c-meta"),
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    results(&run, allowed.len(), "ok", "metadata ops in a write scope")?;
    for (_, action, target) in &allowed {
        audited(h, a, action, target, "allow", Some("grant_matched"))?;
    }
    let rw = root.join("rw");
    let truncated = std::fs::metadata(rw.join("trunc"))
        .map_err(|e| e.to_string())?
        .len();
    if truncated != 0
        || rw.join("unlink").exists()
        || !rw.join("newdir").is_dir()
        || !rw.join("renamed").exists()
        || std::fs::read_link(rw.join("sym")).map_err(|e| e.to_string())?
            != std::path::Path::new("/etc/passwd")
    {
        return Err("a performed operation did not take effect".into());
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(rw.join("chmod"))
            .map_err(|e| e.to_string())?
            .permissions(),
    );
    if mode & 0o777 != 0o600 {
        return Err(format!("chmod in the write scope left mode {mode:o}"));
    }
    Ok(())
}

fn link_rename_across(h: &Harness, a: &str) -> Check {
    let c = control(a);
    let croot = meta_tree(h, &format!("xmeta-{c}"))?;
    let steps = |root: &std::path::Path| -> Vec<String> {
        let s = |p: &str| Harness::s(&root.join(p));
        vec![
            "seq",
            "meta",
            "link",
            &s("out/secret"),
            &s("ro/linked-secret"),
            "--",
            "meta",
            "link",
            &s("out/secret"),
            &s("rw/linked-secret"),
            "--",
            "meta",
            "rename",
            &s("out/secret"),
            &s("ro/moved-secret"),
        ]
        .into_iter()
        .map(String::from)
        .collect()
    };
    h.agent(&c, Mode::AuditOnly)?;
    let argv = steps(&croot);
    let run = h.run(
        &c,
        None,
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    results(
        &run,
        3,
        "ok",
        "control: moving a file into a scope, audit-only",
    )?;
    audited(
        h,
        &c,
        "rename",
        "ro/moved-secret",
        "would_deny",
        Some("no_grant"),
    )?;
    let root = meta_tree(h, &format!("xmeta-{a}"))?;
    let ro = Harness::s(&root.join("ro"));
    let rw = Harness::s(&root.join("rw"));
    h.agent(a, Mode::Enforce)?;
    h.grant(a, "c-xmeta", spec(&[], &[&ro], &[&rw], &[], 60))?;
    let argv = steps(&root);
    let run = h.run(
        a,
        Some("c-xmeta"),
        &argv.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    results(&run, 3, EPERM, "moving an out-of-scope file into a scope")?;
    audited(
        h,
        a,
        "link",
        "ro/linked-secret",
        "deny",
        Some("path_outside_scope"),
    )?;
    audited(
        h,
        a,
        "link",
        "rw/linked-secret",
        "deny",
        Some("path_outside_scope"),
    )?;
    audited(
        h,
        a,
        "rename",
        "ro/moved-secret",
        "deny",
        Some("path_outside_scope"),
    )?;
    // And nothing can read it there.
    expect(
        &h.run(
            a,
            Some("c-xmeta"),
            &["open", &format!("{ro}/moved-secret"), "r"],
        ),
        "errno:2",
        "the secret did not arrive in the read scope",
    )
}

/// A process of the agent user outside every agent (what another agent's
/// process looks like to the kernel's permission check).
fn bystander() -> Result<std::process::Child, String> {
    let uid = crate::scenarios::uid_of_agent()?;
    std::os::unix::process::CommandExt::uid(&mut std::process::Command::new("sleep"), uid)
        .arg("30")
        .spawn()
        .map_err(|e| format!("spawn the bystander: {e}"))
}

fn signals(h: &Harness, a: &str) -> Check {
    let mut other = bystander()?;
    let pid = other.id().to_string();
    let outcome = (|| {
        let c = control(a);
        h.agent(&c, Mode::AuditOnly)?;
        let run = h.run(
            &c,
            None,
            &["seq", "kill", &pid, "0", "--", "pidfd-signal", &pid],
        );
        if run.result != "ok | ok" {
            return Err(format!(
                "control: signalling a same-uid process from an audit-only agent: `{}`\n{}",
                run.result, run.output
            ));
        }
        audited(
            h,
            &c,
            "signal",
            "",
            "would_deny",
            Some("signal_outside_agent"),
        )?;
        h.agent(a, Mode::Enforce)?;
        let run = h.run(
            a,
            None,
            &[
                "seq",
                "kill",
                &pid,
                "15",
                "--",
                "pidfd-signal",
                &pid,
                "--",
                "kill-own-child",
            ],
        );
        if run.result != format!("{EPERM} | {EPERM} | ok") {
            return Err(format!(
                "enforced: wanted `{EPERM} | {EPERM} | ok`, got `{}`\n{}",
                run.result, run.output
            ));
        }
        audited(h, a, "signal", "", "deny", Some("signal_outside_agent"))?;
        if other.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Err("the bystander was killed".into());
        }
        Ok(())
    })();
    let _ = other.kill();
    let _ = other.wait();
    outcome
}
