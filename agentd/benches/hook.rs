//! Hook adapter benchmark (`cargo bench -p agentd --bench hook`): what
//! `agentctl hook claude-code` adds to one tool call of a runtime — process
//! start, reading the hook JSON, the decision over the real socket, the
//! answer — beside, in the same run and interleaved round by round:
//!
//! - the same runtime call decided by a direct API client in this process
//!   (a fresh connection per call, as the hook makes, and a kept-alive one);
//! - a bare process start: fork + exec + wait of `/bin/true` (the floor any
//!   hook process pays), and of `agentctl --version` (the CLI's own start);
//! - the tool call itself with no hook (fork + exec + wait of `ls -la DIR`,
//!   what the runtime's Bash tool runs) and the same tool call behind the
//!   hook (hook process + decision, then the tool), so the added latency per
//!   tool call is measured beside the call it is added to.
//!
//! Every call carries a fresh `tool_use_id`, so no call is answered from the
//! one-decision-per-call memory: each is a full decision with its durable
//! audit row.
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentd::api::client::Client;
use agentd::gateway::unix_now;
use agentd::protocol::SignedMessage;
use agentd::runtime::{Runtime, RuntimeCallRequest};
use hyper::Method;
use serde_json::{json, Value};

fn bench_policy() -> String {
    // The demo policy with rate limits out of the way (they would turn allows into rate_limited).
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/demo.toml"),
    )
    .expect("policies/demo.toml");
    text.lines()
        .map(|l| {
            if l.starts_with("rate_per_minute = ") {
                "rate_per_minute = 4000000000".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Stats {
    p50: f64,
    p99: f64,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6;
    Stats {
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn wait_socket(sock: &Path) {
    for _ in 0..12_000 {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never accepted", sock.display());
}

/// Starts the real daemon, enrolls an owner and submits one signed message.
fn spawn_daemon(dir: &Path) -> (Child, String) {
    let policy = dir.join("bench-policy.toml");
    std::fs::write(&policy, bench_policy()).unwrap();
    let sock = dir.join("agentd.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args(["run", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&sock)
        .arg("--policy")
        .arg(&policy)
        .env("AGENTD_LOG", "warn")
        .spawn()
        .unwrap();
    wait_socket(&sock);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = rt.block_on(async {
        let mut c = Client::connect(&sock).await.unwrap();
        let r: Value = c
            .call(
                Method::POST,
                "/v1/operators",
                Some(&json!({"id": "olivia", "roles": ["owner"]})),
            )
            .await
            .unwrap();
        let key = hex::decode(r["key"].as_str().unwrap()).unwrap();
        let m = SignedMessage::new_signed(
            &key,
            "olivia",
            "dm:olivia",
            &agentd::protocol::message::random_nonce(),
            unix_now(),
            "list the workspace",
        );
        c.submit_message(&m).await.unwrap().active_message_id
    });
    (child, id)
}

fn hook_input(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "session_id": "bench", "transcript_path": "/tmp/t.jsonl", "cwd": "/workspace",
        "permission_mode": "bypassPermissions", "hook_event_name": "PreToolUse",
        "tool_name": "Bash", "tool_input": {"command": "ls -la /workspace"},
        "tool_use_id": format!("toolu_bench_{i}")
    }))
    .unwrap()
}

fn run_true() -> Duration {
    let t = Instant::now();
    let st = Command::new("/bin/true").status().unwrap();
    let d = t.elapsed();
    assert!(st.success());
    d
}

fn run_version() -> Duration {
    let t = Instant::now();
    let st = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let d = t.elapsed();
    assert!(st.success());
    d
}

/// The tool the runtime runs for the call: `ls -la DIR`.
fn run_tool(dir: &Path) -> Duration {
    let t = Instant::now();
    let st = Command::new("/usr/bin/ls")
        .arg("-la")
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let d = t.elapsed();
    assert!(st.success());
    d
}

fn run_hook(sock: &Path, msg: &str, i: usize) -> Duration {
    let input = hook_input(i);
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["hook", "claude-code"])
        .env("AGENTD_SOCKET", sock)
        .env("AGENTD_ACTIVE_MESSAGE", msg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let d = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"allow\""),
        "{out:?}"
    );
    d
}

fn request(msg: &str, i: usize) -> RuntimeCallRequest {
    RuntimeCallRequest {
        runtime: Runtime::ClaudeCode,
        active_message_id: Some(msg.to_owned()),
        tool_name: "Bash".into(),
        tool_input: json!({"command": "ls -la /workspace"})
            .as_object()
            .unwrap()
            .clone(),
        tool_use_id: Some(format!("toolu_direct_{i}")),
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 10 } else { 400 };
    println!(
        "agentd hook adapter benchmark{}",
        if quick {
            " (quick smoke run; use cargo bench for figures)"
        } else {
            ""
        }
    );
    println!(
        "machine: {} CPUs, load average {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, msg) = spawn_daemon(dir.path());
    let sock = dir.path().join("agentd.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut kept = rt.block_on(Client::connect(&sock)).unwrap();

    // What the tool lists: a directory like a small workspace.
    let work = dir.path().join("workspace");
    std::fs::create_dir_all(&work).unwrap();
    for i in 0..20 {
        std::fs::write(work.join(format!("file-{i}.txt")), "x").unwrap();
    }
    let (mut t_true, mut t_ver, mut t_hook, mut t_fresh, mut t_kept) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut t_tool, mut t_tool_hooked) = (Vec::new(), Vec::new());
    // Warm up the page cache and the daemon.
    for i in 0..5 {
        run_true();
        run_version();
        run_hook(&sock, &msg, 1_000_000 + i);
    }
    // Interleaved, so every variant sees the same machine conditions.
    for i in 0..rounds {
        t_true.push(run_true());
        t_ver.push(run_version());
        t_hook.push(run_hook(&sock, &msg, i));
        t_tool.push(run_tool(&work));
        // The same tool call behind the hook: the runtime waits for the
        // hook's answer, then runs the tool.
        let t = Instant::now();
        run_hook(&sock, &msg, 3_000_000 + i);
        run_tool(&work);
        t_tool_hooked.push(t.elapsed());
        let req = request(&msg, 2 * i);
        t_fresh.push(rt.block_on(async {
            let t = Instant::now();
            let mut c = Client::connect(&sock).await.unwrap();
            let a = c.runtime_call(&req).await.unwrap();
            let d = t.elapsed();
            assert!(a.decision.unwrap().is_allow());
            d
        }));
        let req = request(&msg, 2 * i + 1);
        t_kept.push(rt.block_on(async {
            let t = Instant::now();
            let a = kept.runtime_call(&req).await.unwrap();
            let d = t.elapsed();
            assert!(a.decision.unwrap().is_allow());
            d
        }));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = daemon.wait();

    let rows = [
        (
            "bare process start: /bin/true fork+exec+wait (floor)",
            stats(t_true),
        ),
        (
            "agentctl --version fork+exec+wait (CLI start)",
            stats(t_ver),
        ),
        (
            "direct API client, fresh connection (no hook process)",
            stats(t_fresh),
        ),
        ("direct API client, kept-alive connection", stats(t_kept)),
        (
            "agentctl hook claude-code: process + decision (allow)",
            stats(t_hook),
        ),
        ("tool call without a hook: ls -la DIR", stats(t_tool)),
        (
            "same tool call through the hook: hook, then ls -la DIR",
            stats(t_tool_hooked),
        ),
    ];
    println!();
    println!(
        "{:<58} {:>10} {:>10}",
        "one Claude Code Bash call, allowed", "p50 µs", "p99 µs"
    );
    for (name, s) in &rows {
        println!("{name:<58} {:>10.0} {:>10.0}", s.p50, s.p99);
    }
    let (floor, fresh, hook) = (&rows[0].1, &rows[2].1, &rows[4].1);
    println!();
    println!(
        "hook adds {:.0} µs p50 / {:.0} µs p99 per tool call over the same decision made directly ({:.1}× /bin/true's start); the decision itself (fresh connection) is {:.0} µs p50",
        hook.p50 - fresh.p50,
        hook.p99 - fresh.p99,
        hook.p50 / floor.p50,
        fresh.p50
    );
    let (bare, hooked) = (&rows[5].1, &rows[6].1);
    println!(
        "per tool call: {:.0} µs p50 / {:.0} µs p99 without a hook, {:.0} / {:.0} through it: the hook adds {:.0} µs p50 / {:.0} µs p99",
        bare.p50,
        bare.p99,
        hooked.p50,
        hooked.p99,
        hooked.p50 - bare.p50,
        hooked.p99 - bare.p99
    );
    println!(
        "rounds: {rounds}; every call a fresh tool_use_id (full decision + durable audit row)"
    );
}
