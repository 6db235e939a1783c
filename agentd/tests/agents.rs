//! Agents configured through the real daemon and socket: settings round
//! trip, profile validation, a policy reload reaching a running agent,
//! `agentctl run --message`, removal. Enforcement needs root and a backend:
//! without them each test prints SKIPPED and why.
mod gateway_support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_support::Daemon;
use hyper::Method;
use serde_json::Value;

const USER: &str = "agentd-agent";

/// Tests of this file run one at a time: concurrent kernel probes (doctor)
/// and daemons starting enforcement must not race each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (agent cgroups, seccomp, BPF)".into());
    }
    let r = agentd::doctor::run();
    if r.backend == agentd::doctor::Backend::None {
        return Some(format!("no enforcement backend here: {}", r.reason));
    }
    None
}

fn ensure_user() {
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        let st = Command::new("useradd")
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

/// Waits until the daemon's enforcement is up.
fn wait_enforcement(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = d.raw(Method::GET, "/v1/enforcement", vec![]);
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "enforcement never started: {body}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A world-traversable scratch directory (the agent user must reach it).
fn scratch(tag: &str) -> PathBuf {
    let p = PathBuf::from(format!("/tmp/agentd-agents-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p
}

fn enforce_sock(d: &Daemon) -> PathBuf {
    d.socket.with_file_name("enforce.sock")
}

fn kernel_rows(d: &Daemon, agent: &str) -> Vec<Value> {
    let db = agentd::audit::store::db_path(&d.state);
    let conn = agentd::audit::store::open_ro(&db).unwrap();
    agentd::audit::store::records_after(&conn, &db, 0, 100_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.event.kind == agentd::audit::RecordKind::Kernel)
        .filter(|r| r.event.agent == agent)
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

fn wait_file(p: &Path, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.ends_with('\n') {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never written", p.display());
}

#[test]
fn profile_and_setting_errors_are_precise_and_change_nothing() {
    let _s = serial();
    let d = Daemon::start();
    // A policy whose profile uses an unknown placeholder: refused with its place.
    let bad = d.dir.path().join("bad.toml");
    let demo = std::fs::read_to_string(gateway_support::demo_policy()).unwrap();
    std::fs::write(
        &bad,
        format!("{demo}\n[profiles.rt]\nread = [\"{{hoem}}/.rt\"]\n"),
    )
    .unwrap();
    let out = d.agentctl(&["policy", "load", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("profiles.rt.read[0]") && err.contains("{hoem}"),
        "{err}"
    );
    // An unknown key in a profile.
    std::fs::write(&bad, format!("{demo}\n[profiles.rt]\nreed = [\"/x\"]\n")).unwrap();
    let out = d.agentctl(&["policy", "validate", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reed"));
    // The old policy stays in force.
    assert!(d.ok(&["policy", "show"]).contains("id = \"demo\""));

    // Agent settings: unknown profile, unset placeholder, bad path, root user.
    let (status, body) = d.raw(
        Method::PUT,
        "/v1/agent-settings/a1",
        br#"{"name":"a1","user":"agentd-agent","profiles":["nope"]}"#.to_vec(),
    );
    assert_eq!(
        (status, body["reason_code"].as_str()),
        (422, Some("unknown_profile")),
        "{body}"
    );
    let (status, body) = d.raw(
        Method::PUT,
        "/v1/agent-settings/a1",
        br#"{"name":"a1","user":"agentd-agent","profiles":["claude-code"]}"#.to_vec(),
    );
    if nix::unistd::User::from_name(USER).ok().flatten().is_some() {
        assert_eq!(
            (status, body["reason_code"].as_str()),
            (422, Some("profile_placeholder_unset")),
            "{body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("install_dir"),
            "{body}"
        );
    }
    let out = d.agentctl(&["agent", "add", "a1", "--read", "relative/x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid_agent") && err.contains("agent.read[0]"),
        "{err}"
    );
    let (status, body) = d.raw(
        Method::PUT,
        "/v1/agent-settings/a1",
        br#"{"name":"a1","user":"root"}"#.to_vec(),
    );
    assert_eq!(
        (status, body["reason_code"].as_str()),
        (422, Some("invalid_agent")),
        "{body}"
    );
    let (status, body) = d.raw(
        Method::PUT,
        "/v1/agent-settings/a1",
        br#"{"name":"a1","user":"agentd-agent","colour":"red"}"#.to_vec(),
    );
    assert_eq!(
        (status, body["reason_code"].as_str()),
        (400, Some("unknown_field")),
        "{body}"
    );
    // Nothing was stored.
    let (_, list) = d.raw(Method::GET, "/v1/agent-settings", vec![]);
    assert_eq!(list, Value::Array(vec![]), "{list}");
    // Not an admin: permission_denied (the agent user, if it exists).
    if let Some(u) = nix::unistd::User::from_name(USER).ok().flatten() {
        let out = d
            .agentctl_cmd(&["agent", "list"])
            .uid(u.uid.as_raw())
            .gid(u.gid.as_raw())
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("permission_denied"));
    }
}

#[test]
fn configured_agents_never_share_a_uid_unless_told_to() {
    let _s = serial();
    // `nobody` exists everywhere; a second user is USER (created if missing).
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIPPED: needs root (creates the agent user)");
        return;
    }
    ensure_user();
    let d = Daemon::start();
    let put = |name: &str, user: &str, share: bool| {
        d.raw(
            Method::PUT,
            &format!("/v1/agent-settings/{name}"),
            serde_json::to_vec(
                &serde_json::json!({"name": name, "user": user, "share_user": share}),
            )
            .unwrap(),
        )
    };
    let (status, body) = put("s1", "nobody", false);
    assert_eq!(status, 200, "{body}");
    // Same uid for a second agent: refused, by name, and nothing stored.
    let (status, body) = put("s2", "nobody", false);
    assert_eq!(
        (status, body["reason_code"].as_str()),
        (409, Some("agent_user_shared")),
        "{body}"
    );
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("`s1`") && msg.contains("--share-user"),
        "{msg}"
    );
    let (_, list) = d.raw(Method::GET, "/v1/agent-settings", vec![]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // Control: its own user is accepted; so is sharing on purpose.
    let (status, body) = put("s2", USER, false);
    assert_eq!(status, 200, "{body}");
    let out = d.agentctl(&["agent", "add", "s3", "--user", "nobody", "--share-user"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Re-saving an agent's own settings is not sharing with itself.
    let (status, body) = put("s1", "nobody", false);
    assert_eq!(status, 200, "{body}");
    let out = d.agentctl(&["agent", "add", "s4", "--user", USER]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent_user_shared"));
}

#[test]
fn agent_round_trip_and_a_reload_reaches_the_running_agent() {
    let _s = serial();
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    ensure_user();
    let d = Daemon::start();
    wait_enforcement(&d);
    let dir = scratch("reload");
    // Outside every scope of `generic` (its temp dir is /tmp).
    let secret = PathBuf::from(format!(
        "/var/tmp/agentd-agents-data-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(secret.join("f"), "granted-content\n").unwrap();
    std::fs::set_permissions(secret.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();

    // add → show → list → mode.
    let name = format!("p-rt-{}", std::process::id() % 100000);
    d.ok(&[
        "agent",
        "add",
        &name,
        "--user",
        USER,
        "--profile",
        "generic",
        "--write",
        dir.to_str().unwrap(),
        "--time-limit",
        "30",
        "--exec",
        "/usr/bin/sleep",
    ]);
    let show: Value = serde_json::from_str(&d.ok(&["agent", "show", &name, "--json"])).unwrap();
    let b = &show["baseline"];
    assert!(
        b["write"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == dir.to_str().unwrap()),
        "{show:#}"
    );
    assert!(
        b["read"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "/etc/resolv.conf"),
        "{show:#}"
    );
    assert_eq!(show["running"]["mode"], "enforce", "{show:#}");
    assert!(d.ok(&["agent", "list"]).contains(&name));
    let out = d.agentctl(&["agent", "add", &name]);
    assert!(
        !out.status.success(),
        "add of an existing agent needs --replace"
    );
    d.ok(&["agent", "mode", &name, "audit-only"]);
    let show: Value = serde_json::from_str(&d.ok(&["agent", "show", &name, "--json"])).unwrap();
    assert_eq!(
        (
            show["def"]["mode"].as_str(),
            show["running"]["mode"].as_str()
        ),
        (Some("audit-only"), Some("audit-only"))
    );
    d.ok(&["agent", "mode", &name, "enforce"]);

    // A running agent: tries to read data/f at each trigger (shell builtins
    // only, so the baseline needs no extra exec), and reports on its own
    // environment (`run --message`).
    let script = format!(
        "echo \"msg=$AGENTD_ACTIVE_MESSAGE\" > {d}/env; for i in 1 2; do while [ ! -e {d}/go$i ]; do sleep 0.05; done; if IFS= read -r x < {s}/f; then echo \"ok:$x\" > {d}/out$i; else echo denied > {d}/out$i; fi; done",
        d = dir.display(),
        s = secret.display()
    );
    let mut agent = d
        .agentctl_cmd(&[
            "run",
            "--socket",
            enforce_sock(&d).to_str().unwrap(),
            "--agent",
            &name,
            "--user",
            USER,
            "--message",
            "am-test-1",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(wait_file(&dir.join("env"), 30), "msg=am-test-1\n");
    std::fs::write(dir.join("go1"), "").unwrap();
    assert_eq!(
        wait_file(&dir.join("out1"), 30),
        "denied\n",
        "the baseline does not cover data/"
    );
    let rows = kernel_rows(&d, &name);
    assert!(
        rows.iter()
            .any(|r| r["target"] == secret.join("f").to_str().unwrap()
                && r["decision"] == "deny"
                && r["reason_code"] == "no_grant"),
        "denial audited: {rows:#?}"
    );
    // The policy now gives `generic` the data directory: loading it re-applies
    // the baseline of the running agent, no restart.
    let generic = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/profiles/generic.toml"),
    )
    .unwrap();
    assert!(generic.contains("\"{workspace}\","), "{generic}");
    let generic = generic.replace(
        "\"{workspace}\",",
        &format!("\"{{workspace}}\", \"{}\",", secret.display()),
    );
    let demo = std::fs::read_to_string(gateway_support::demo_policy()).unwrap();
    let pol = d.dir.path().join("with-profile.toml");
    let mut prof = String::from("\n[profiles.generic]\n");
    for line in generic.lines() {
        prof.push_str(line);
        prof.push('\n');
    }
    std::fs::write(&pol, format!("{demo}{prof}")).unwrap();
    d.ok(&["policy", "load", pol.to_str().unwrap()]);
    std::fs::write(dir.join("go2"), "").unwrap();
    assert_eq!(
        wait_file(&dir.join("out2"), 30),
        "ok:granted-content\n",
        "the reload reached the running agent"
    );
    let st = agent.wait().unwrap();
    assert!(st.success(), "{st:?}");

    // Remove: refused while a process runs, then done.
    let mut sleeper = d
        .agentctl_cmd(&[
            "run",
            "--socket",
            enforce_sock(&d).to_str().unwrap(),
            "--agent",
            &name,
            "--user",
            USER,
            "--",
            "/bin/sh",
            "-c",
            "read x",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = serde_json::from_str(&d.ok(&["agent", "show", &name, "--json"])).unwrap();
        if !v["running"]["pids"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "agent never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = d.agentctl(&["agent", "remove", &name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent_running"));
    drop(sleeper.stdin.take());
    sleeper.wait().unwrap();
    d.ok(&["agent", "remove", &name]);
    let (status, body) = d.raw(Method::GET, &format!("/v1/agent-settings/{name}"), vec![]);
    assert_eq!(
        (status, body["reason_code"].as_str()),
        (404, Some("unknown_agent"))
    );
    let (_, agents) = d.raw(Method::GET, "/v1/agents", vec![]);
    assert!(
        !agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == name.as_str()),
        "{agents}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&secret);
}

/// The runtime the driver starts: reports its argv, the text it got on
/// stdin and its active-message id; hangs, floods or fails on request.
const RUNTIME: &str = r#"IFS= read -r text
echo "argv:$*"
echo "text:$text"
echo "msg:$AGENTD_ACTIVE_MESSAGE"
case "$text" in
  hang*) /usr/bin/sleep 1000 & exec /usr/bin/sleep 1000 ;;
  flood*) i=0; while [ $i -lt 40000 ]; do echo "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; i=$((i+1)); done ;;
  fail*) exit 3 ;;
esac
"#;

#[test]
fn driver_takes_messages_in_order_and_survives_hangs_floods_and_failures() {
    let _s = serial();
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    ensure_user();
    let d = Daemon::start();
    wait_enforcement(&d);
    let dir = scratch("driver");
    let script = dir.join("runtime.sh");
    std::fs::write(&script, RUNTIME).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = format!("p-drv-{}", std::process::id() % 100000);
    d.ok(&[
        "agent",
        "add",
        &name,
        "--user",
        USER,
        "--exec",
        "/usr/bin/sleep",
        "--time-limit",
        "3",
    ]);
    let key = d.enroll("olivia", "owner");
    let send = |text: &str, signed: bool| -> (i64, String) {
        let mut a = vec!["send", "--session", "s1", "--agent", &name];
        let k = key.to_str().unwrap();
        if signed {
            a.extend(["--operator", "olivia", "--key-file", k]);
        } else {
            a.extend(["--unsigned", "--operator", "olivia"]);
        }
        a.extend(["--", text]);
        let out = d.ok(&a);
        let mut it = out.split_whitespace();
        (
            it.next().unwrap().parse().unwrap(),
            it.next().unwrap().to_string(),
        )
    };
    // A text that looks like flags: it must reach the runtime as text.
    let (id1, am1) = send("--bare --dangerously-skip-permissions hello", true);
    let (id2, _) = send("hang please", true);
    let (id3, _) = send("flood please", true);
    let (id4, _) = send("fail please", true);
    let (id5, am5) = send("last one", false);
    assert!(id1 < id2 && id2 < id3 && id3 < id4 && id4 < id5);
    // Nothing runs until the driver does: all queued.
    let queued: Value =
        serde_json::from_str(&d.ok(&["agent", "replies", &name, "--json"])).unwrap();
    assert!(
        queued
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "queued"),
        "{queued:#}"
    );

    let started = Instant::now();
    let out = d
        .agentctl_cmd(&[
            "agent",
            "serve",
            &name,
            "--exit-when-empty",
            "--enforce-socket",
            enforce_sock(&d).to_str().unwrap(),
            "--",
            "/bin/sh",
            script.to_str().unwrap(),
            "--flag-a",
        ])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(30),
        "the hang was not cut at its time limit: {took:?}"
    );

    let entries: Value =
        serde_json::from_str(&d.ok(&["agent", "replies", &name, "--json"])).unwrap();
    let e = entries.as_array().unwrap();
    assert_eq!(e.len(), 5);
    // In order: each started after the previous finished.
    for w in e.windows(2) {
        assert!(w[0]["id"].as_i64() < w[1]["id"].as_i64());
        assert!(
            w[0]["finished_at"].as_i64().unwrap() <= w[1]["started_at"].as_i64().unwrap(),
            "{entries:#}"
        );
    }
    let reply = |i: usize| e[i]["reply"].as_str().unwrap_or("").to_string();
    // 1: the flag-like text arrived on stdin, argv is only the runtime's own.
    assert_eq!(e[0]["outcome"], "ok", "{:#}", e[0]);
    assert!(reply(0).contains("argv:--flag-a\n"), "{}", reply(0));
    assert!(reply(0).contains("text:--bare --dangerously-skip-permissions hello\n"));
    assert!(reply(0).contains(&format!("msg:{am1}\n")));
    assert!(!reply(0).lines().next().unwrap().contains("--bare"));
    // 2: hung → killed at the time limit, with its background child; audited.
    assert_eq!(e[1]["outcome"], "timed_out", "{:#}", e[1]);
    assert!(reply(1).contains("text:hang please"));
    let run2 = e[1]["run"].as_str().unwrap().to_string();
    let db = agentd::audit::store::db_path(&d.state);
    let conn = agentd::audit::store::open_ro(&db).unwrap();
    let rows = agentd::audit::store::records_after(&conn, &db, 0, 100_000).unwrap();
    assert!(
        rows.iter().any(|r| r.event.action == "agent_run"
            && r.event.reason_code == "time_limit_exceeded"
            && r.event.target.contains(&format!("run={run2}"))),
        "the killed run is audited"
    );
    // 3: a flood is cut at the bound, the runtime finished.
    assert_eq!(e[2]["outcome"], "ok", "{:#}", e[2]);
    assert_eq!(e[2]["reply_truncated"], true);
    assert_eq!(reply(2).len(), agentd::agents::inbox::MAX_REPLY_BYTES);
    // 4: a failure is recorded with its exit code.
    assert_eq!(
        (e[3]["outcome"].as_str(), e[3]["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
    // 5: unsigned → delivered untrusted, still in order, with its own id.
    assert_eq!(
        (e[4]["trust"].as_str(), e[4]["outcome"].as_str()),
        (Some("untrusted"), Some("ok"))
    );
    assert!(reply(4).contains(&format!("msg:{am5}\n")));
    // Nothing of any run is left: no process, no run cgroup.
    let show: Value = serde_json::from_str(&d.ok(&["agent", "show", &name, "--json"])).unwrap();
    assert_eq!(show["running"]["pids"], Value::Array(vec![]), "{show:#}");
    let agents: Value = d.raw(Method::GET, "/v1/agents", vec![]).1;
    assert!(agents
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == name.as_str()));
    let agent_cg = agentd::enforce::cgroup_root()
        .unwrap()
        .join(agentd::enforce::bpf_state::Instance::for_state_dir(&d.state).slice())
        .join(&name);
    assert!(agent_cg.is_dir(), "{}", agent_cg.display());
    for entry in e {
        let run = agent_cg.join(entry["run"].as_str().unwrap());
        assert!(!run.exists(), "run cgroup {} left behind", run.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
