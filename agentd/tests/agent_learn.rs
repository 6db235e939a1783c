//! `agentctl agent learn` and `agentctl explain` end to end, through the
//! real daemon on the seccomp (or lsm) backend: an audit-only agent runs a
//! small script touching a few paths; learn proposes exactly those; enforced
//! without the learned profile the script is denied (and audited), with it
//! the same script runs with no denial. Needs root: otherwise SKIPPED.
mod gateway_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gateway_support::Daemon;
use hyper::Method;

const USER: &str = "agentd-agent";

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (agent cgroups, seccomp, BPF)".into());
    }
    let r = agentd::doctor::run();
    match r.backend {
        agentd::doctor::Backend::Seccomp => None,
        agentd::doctor::Backend::None => Some(format!("no enforcement backend here: {}", r.reason)),
        // lsm rows do not record whether a file was opened for writing, so
        // learn cannot tell its read scopes from its write scopes there.
        _ => Some("learn needs the seccomp backend's access mode in file_open rows".into()),
    }
}

fn ensure_user() {
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        let st = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .expect("useradd");
        assert!(st.success() || nix::unistd::User::from_name(USER).ok().flatten().is_some());
    }
}

fn wait_enforcement(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while d.raw(Method::GET, "/v1/enforcement", vec![]).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "enforcement never started:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn records(d: &Daemon) -> Vec<agentd::audit::Record> {
    let db = agentd::audit::store::db_path(&d.state);
    let conn = agentd::audit::store::open_ro(&db).unwrap();
    agentd::audit::store::records_after(&conn, &db, 0, 1_000_000).unwrap()
}

fn last_seq(d: &Daemon) -> u64 {
    records(d).last().map_or(0, |r| r.seq)
}

/// The agent's kernel rows after `since` (the writer is asynchronous: wait
/// until `until` holds, or the deadline).
fn kernel_rows(
    d: &Daemon,
    agent: &str,
    since: u64,
    until: impl Fn(&[agentd::audit::Record]) -> bool,
) -> Vec<agentd::audit::Record> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Vec<_> = records(d)
            .into_iter()
            .filter(|r| r.seq > since && r.event.kind == agentd::audit::RecordKind::Kernel)
            .filter(|r| r.event.agent == agent)
            .collect();
        if until(&rows) || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_script(d: &Daemon, agent: &str, script: &Path) -> std::process::Output {
    d.agentctl_cmd(&[
        "run",
        "--socket",
        d.socket.with_file_name("enforce.sock").to_str().unwrap(),
        "--agent",
        agent,
        "--user",
        USER,
        "--",
        "/bin/sh",
        script.to_str().unwrap(),
    ])
    .output()
    .unwrap()
}

fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn learn_proposes_what_an_audit_only_run_needed_and_the_profile_holds_when_enforced() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    ensure_user();
    let d = Daemon::start();
    wait_enforcement(&d);
    let state = d.state.to_str().unwrap().to_owned();
    // Outside every scope of the `generic` profile (its temp dir is /tmp).
    let root = PathBuf::from(format!("/var/tmp/agentd-learn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    mkdir(&root, 0o755);
    mkdir(&root.join("bin"), 0o755);
    mkdir(&root.join("data"), 0o755);
    mkdir(&root.join("out"), 0o777);
    std::fs::write(root.join("data/in.txt"), "learned-content\n").unwrap();
    std::fs::set_permissions(
        root.join("data/in.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let script = root.join("bin/agent.sh");
    let result = root.join("out/result.txt");
    std::fs::write(
        &script,
        format!(
            "/usr/bin/cat {} > {}\n",
            root.join("data/in.txt").display(),
            result.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let name = format!("p-learn-{}", std::process::id() % 100000);
    d.ok(&[
        "agent",
        "add",
        &name,
        "--user",
        USER,
        "--profile",
        "generic",
        "--mode",
        "audit-only",
    ]);

    // 1. Audit-only: the script runs through; what it would have been denied is audited.
    let since = last_seq(&d);
    let out = run_script(&d, &name, &script);
    assert!(
        out.status.success(),
        "audit-only run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "learned-content\n"
    );
    let rows = kernel_rows(&d, &name, since, |rows| {
        rows.iter().any(|r| r.event.target == "/usr/bin/cat")
            && rows
                .iter()
                .any(|r| r.event.target == result.to_str().unwrap())
    });
    assert!(
        rows.iter().all(|r| r.event.decision != "deny"),
        "audit-only denies nothing: {rows:#?}"
    );
    let cat_row = rows
        .iter()
        .find(|r| r.event.target == "/usr/bin/cat" && r.event.decision == "would_deny")
        .unwrap_or_else(|| panic!("exec of cat audited as would_deny: {rows:#?}"));
    let write_row = rows
        .iter()
        .find(|r| r.event.target == result.to_str().unwrap())
        .unwrap_or_else(|| panic!("the write audited: {rows:#?}"));
    assert_eq!(
        (
            write_row.event.access.as_str(),
            write_row.event.policy_id.as_str()
        ),
        ("write", ""),
        "{write_row:?}"
    );
    assert!(write_row.event.pid != 0, "{write_row:?}");

    // 2. learn proposes exactly those paths, grouped by directory.
    let proposal = d.dir.path().join("learned.toml");
    d.ok(&[
        "agent",
        "learn",
        &name,
        "--since",
        &since.to_string(),
        "--state-dir",
        &state,
        "--out",
        proposal.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&proposal).unwrap();
    println!("{text}");
    let v: toml::Table = toml::from_str(&text).unwrap();
    let def: agentd::profile::ProfileDef = v["profiles"][&format!("{name}-learned")]
        .clone()
        .try_into()
        .unwrap();
    let dir = |p: &str| root.join(p).display().to_string();
    assert_eq!(def.exec, ["/usr/bin/cat"], "{text}");
    assert_eq!(def.read, [dir("bin"), dir("data")], "{text}");
    assert_eq!(def.write, [dir("out")], "{text}");
    assert!(def.connect.is_empty(), "{text}");
    assert!(text.contains("# executed"), "every line explained: {text}");

    // explain, on the real kernel row of the exec: the profile line that allows it.
    let ex = d.ok(&["explain", &cat_row.seq.to_string(), "--state-dir", &state]);
    assert!(ex.contains("WOULD BE DENIED"), "{ex}");
    assert!(
        ex.contains(&format!("agent `{name}` ran the program `/usr/bin/cat`")),
        "{ex}"
    );
    assert!(
        ex.contains(&format!("[profiles.{name}-extra]"))
            && ex.contains("exec = [\"/usr/bin/cat\"]"),
        "{ex}"
    );

    // 3. Enforced without the learned profile: denied, and audited as such.
    d.ok(&["agent", "mode", &name, "enforce"]);
    std::fs::remove_file(&result).unwrap();
    let since = last_seq(&d);
    let out = run_script(&d, &name, &script);
    assert!(
        !out.status.success(),
        "enforced without the profile, the script must fail"
    );
    assert!(!result.exists(), "nothing written without the profile");
    let rows = kernel_rows(&d, &name, since, |rows| {
        rows.iter().any(|r| r.event.decision == "deny")
    });
    assert!(
        rows.iter().any(|r| r.event.decision == "deny"
            && r.event.reason_code == "no_grant"
            && r.event.target.starts_with(root.to_str().unwrap())),
        "the denial is audited: {rows:#?}"
    );

    // 4. The learned profile applied, enforced: the same script, no denial.
    let demo = std::fs::read_to_string(gateway_support::demo_policy()).unwrap();
    let pol = d.dir.path().join("with-learned.toml");
    std::fs::write(&pol, format!("{demo}\n{text}")).unwrap();
    d.ok(&["policy", "load", pol.to_str().unwrap()]);
    d.ok(&[
        "agent",
        "add",
        &name,
        "--replace",
        "--user",
        USER,
        "--profile",
        "generic",
        "--profile",
        &format!("{name}-learned"),
        "--mode",
        "enforce",
    ]);
    let since = last_seq(&d);
    let out = run_script(&d, &name, &script);
    assert!(
        out.status.success(),
        "with the learned profile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "learned-content\n"
    );
    std::thread::sleep(Duration::from_millis(500));
    let rows = kernel_rows(&d, &name, since, |_| false);
    assert!(
        rows.iter()
            .all(|r| r.event.decision != "deny" && r.event.decision != "would_deny"),
        "no denial with the learned profile: {rows:#?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
