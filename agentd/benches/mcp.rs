//! MCP gateway benchmark (`cargo bench -p agentd --bench mcp`; root, an
//! enforcement backend and the MCP Python SDK in `target/mcp-venv` from
//! `cargo xtask setup` needed, else it prints SKIPPED): what agentd adds to
//! one `tools/call`, measured against the same real MCP server (written with
//! the official SDK, `tests/mcp/server.py`) called directly, interleaved
//! call by call in one run:
//!
//! - direct: the client speaks JSON-RPC to the server's stdio (the floor);
//! - through agentd: the same client through `agentctl mcp proxy`, agentd
//!   deciding the call (durable audit row) and relaying to the server it
//!   started in the agent;
//! - the decision alone: the same action decided over the API
//!   (`POST /v1/tool-calls`, kept-alive connection).
//!
//! Then throughput: 8 concurrent callers, each on its own session, direct
//! and through agentd.
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use agentd::api::client::Client;
use agentd::gateway::{unix_now, ToolCallRequest};
use agentd::protocol::SignedMessage;
use hyper::Method;
use serde_json::{json, Value};

const POLICY: &str = r#"id = "mcp-bench"
description = "MCP gateway benchmark."

[actions."mcp.bench.echo"]
description = "Echo text."

[roles.owner]
description = "Calls the benchmark's echo."
rate_per_minute = 4000000000

[roles.owner.allow."mcp.bench.echo"]
text = { type = "text", max_bytes = 1000 }
"#;

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

/// One JSON-RPC session over a child's stdio.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
}

impl Session {
    fn start(argv: &[String], active: &str) -> Session {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("AGENTD_ACTIVE_MESSAGE", active)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the MCP server (or the proxy)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut s = Session {
            child,
            stdin,
            stdout,
            next: 1,
        };
        s.call(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}),
        );
        s.notify("notifications/initialized");
        let tools = s.call("tools/list", json!({}));
        assert!(tools["result"]["tools"].is_array(), "tools/list: {tools}");
        s
    }

    fn notify(&mut self, method: &str) {
        let line = json!({"jsonrpc": "2.0", "method": method}).to_string();
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
        loop {
            let mut l = String::new();
            assert!(
                self.stdout.read_line(&mut l).unwrap() > 0,
                "the session closed"
            );
            let v: Value = serde_json::from_str(&l).unwrap();
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    /// One echo call; panics unless it answered with the text.
    fn echo(&mut self) -> Duration {
        let t = Instant::now();
        let v = self.call(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi"}}),
        );
        let d = t.elapsed();
        assert_eq!(v["result"]["content"][0]["text"], "hi", "{v}");
        d
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_socket(sock: &Path) {
    for _ in 0..12_000 {
        if std::os::unix::net::UnixStream::connect(sock).is_ok()
            && sock.with_file_name("enforce.sock").exists()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never accepted", sock.display());
}

fn throughput(argvs: &[Vec<String>], active: &str, secs: f64) -> f64 {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(argvs.len()));
    let handles: Vec<_> = argvs
        .iter()
        .cloned()
        .map(|argv| {
            let (active, barrier) = (active.to_owned(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = Session::start(&argv, &active);
                barrier.wait();
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut n = 0u64;
                while Instant::now() < end {
                    s.echo();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / secs
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the MCP benchmark needs root (agentd starts the server in an agent)");
        return;
    }
    let report = agentd::doctor::run();
    if report.backend == agentd::doctor::Backend::None {
        println!("SKIPPED: no enforcement backend: {}", report.reason);
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("AGENTD_MCP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/mcp-venv"));
    let python = venv.join("bin/python");
    if !Command::new(&python)
        .args(["-c", "import mcp"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!(
            "SKIPPED: the MCP Python SDK is not in {} (cargo xtask setup)",
            venv.display()
        );
        return;
    }
    let rounds = if quick { 10 } else { 400 };
    let secs = if quick { 0.5 } else { 5.0 };
    println!(
        "agentd MCP gateway benchmark{}",
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
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let srv = dir.path().join("srv");
    std::fs::create_dir(&srv).unwrap();
    std::fs::copy(repo.join("tests/mcp/server.py"), srv.join("server.py")).unwrap();
    std::fs::set_permissions(&srv, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        srv.join("server.py"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let sock = dir.path().join("agentd.sock");
    let state = dir.path().join("state");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args(["run", "--state-dir"])
        .arg(&state)
        .arg("--socket")
        .arg(&sock)
        .arg("--policy")
        .arg(&policy)
        .env("AGENTD_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_socket(&sock);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut api = rt.block_on(Client::connect(&sock)).unwrap();
    let active = rt.block_on(async {
        let r: Value = api
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
            "echo things",
        );
        let mut baseline = agentd::enforce::default_baseline();
        baseline.read.push(venv.clone());
        baseline.read.push(srv.clone());
        let (status, body) = api
            .raw(
                Method::POST,
                "/v1/agents",
                serde_json::to_vec(
                    &json!({"name": "bench", "mode": "enforce", "baseline": baseline}),
                )
                .unwrap(),
            )
            .await
            .unwrap();
        assert!(
            status.is_success(),
            "POST /v1/agents: {}",
            String::from_utf8_lossy(&body)
        );
        api.submit_message(&m).await.unwrap().active_message_id
    });
    let server: Vec<String> = vec![
        python.display().to_string(),
        srv.join("server.py").display().to_string(),
    ];
    let proxied = |name: &str| -> Vec<String> {
        let mut v: Vec<String> = vec![
            Path::new(env!("CARGO_BIN_EXE_agentctl"))
                .display()
                .to_string(),
            "mcp".into(),
            "proxy".into(),
            "--socket".into(),
            sock.display().to_string(),
            "--agent".into(),
            "bench".into(),
            "--server".into(),
            name.into(),
            "--".into(),
        ];
        v.extend(server.iter().cloned());
        v
    };
    let mut direct = Session::start(&server, &active);
    let mut through = Session::start(&proxied("bench"), &active);
    for _ in 0..5 {
        direct.echo();
        through.echo();
    }
    let decision = ToolCallRequest {
        active_message_id: active.clone(),
        action: "mcp.bench.echo".into(),
        arguments: json!({"text": "hi"}).as_object().unwrap().clone(),
        tool_use_id: None,
    };
    let (mut t_direct, mut t_through, mut t_decide) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        t_direct.push(direct.echo());
        t_through.push(through.echo());
        t_decide.push(rt.block_on(async {
            let t = Instant::now();
            let d = api.tool_call(&decision).await.unwrap();
            let e = t.elapsed();
            assert!(d.is_allow(), "{d:?}");
            e
        }));
    }
    drop((direct, through));
    let tp_direct = throughput(&vec![server.clone(); 8], &active, secs);
    let tp_through = throughput(&vec![proxied("bench"); 8], &active, secs);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
    drop(dir);
    // The daemon's instance (slice, pins) is an orphan once its state
    // directory is gone: remove it now.
    if let Ok(cg) = agentd::enforce::cgroup_root() {
        agentd::enforce::bpf_state::gc_orphans(&cg);
    }

    let (d, t, x) = (stats(t_direct), stats(t_through), stats(t_decide));
    println!();
    println!(
        "{:<62} {:>10} {:>10}",
        format!("one tools/call (echo), {rounds} rounds"),
        "p50 µs",
        "p99 µs"
    );
    println!(
        "{:<62} {:>10.0} {:>10.0}",
        "direct to the server's stdio (floor)", d.p50, d.p99
    );
    println!(
        "{:<62} {:>10.0} {:>10.0}",
        "through agentctl mcp proxy + agentd (decided, audited)", t.p50, t.p99
    );
    println!(
        "{:<62} {:>10.0} {:>10.0}",
        "the decision alone (POST /v1/tool-calls, kept-alive)", x.p50, x.p99
    );
    println!();
    println!(
        "agentd adds {:.0} µs p50 / {:.0} µs p99 per tools/call ({:.1}× the direct call's p50)",
        t.p50 - d.p50,
        t.p99 - d.p99,
        t.p50 / d.p50
    );
    println!(
        "throughput, 8 concurrent callers (one session each), {secs} s: direct {tp_direct:.0} calls/s, through agentd {tp_through:.0} calls/s ({:.0}%)",
        100.0 * tp_through / tp_direct
    );
}
