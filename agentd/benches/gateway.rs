//! Gateway benchmark (`cargo bench -p agentd --bench gateway`): the
//! in-process decision, then end-to-end tool-call checks against the real
//! `agentd` binary over its Unix socket (1 client p50/p99, 8 clients
//! throughput), beside a bare hyper HTTP/1.1 echo over the same kind of
//! socket measured in the same run as the floor. The 8-client table also
//! gives the server's and the clients' CPU per request, the audit rows per
//! commit, and the machine's CPU-bound ceiling at those costs.
//!
//! The echo server and the daemon both run as child processes, so the client
//! side is identical for both. Every agentd check goes through the full
//! pipeline: decision + durable audit append (group commit).
#[path = "../tests/gateway_support/mod.rs"]
mod gateway_support;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::api::client::Client;
use agentd::gateway::{unix_now, Gateway, Settings, ToolCallRequest};
use agentd::protocol::SignedMessage;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use serde_json::json;

const ECHO_ENV: &str = "AGENTD_BENCH_ECHO_SOCKET";
const SINGLE_N: usize = 20_000;
const WARMUP: usize = 2_000;
const LOAD_SECS: u64 = 3;
const CLIENTS: usize = 8;
/// Allowed calls per second with [`CLIENTS`] clients: the design target.
const ALLOW_TARGET: f64 = 50_000.0;

fn bench_policy() -> String {
    // The demo policy with rate limits out of the way (they would turn allows into rate_limited).
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/demo.toml"))
        .expect("policies/demo.toml")
        .replace("rate_per_minute = 60\n", "rate_per_minute = 4000000000\n")
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1e6;
    Stats {
        p50: pct(&v, 0.5),
        p99: pct(&v, 0.99),
        mean,
    }
}

fn main() {
    if let Ok(path) = std::env::var(ECHO_ENV) {
        return echo_server(&PathBuf::from(path));
    }
    // `cargo bench` passes --bench; `cargo test --benches` runs us with no flag: do a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    println!(
        "agentd gateway benchmark{}",
        if quick {
            " (quick smoke run; use cargo bench for figures)"
        } else {
            ""
        }
    );
    println!(
        "machine: {} CPUs, load average {}",
        num_cpus(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();

    let grants = grant_installs(dir.path(), quick);
    let mut inproc = in_process(dir.path(), quick);
    inproc.push(in_process_sessions(dir.path(), quick));
    inproc.extend(in_process_audited(dir.path(), quick));
    let policy = dir.path().join("bench-policy.toml");
    std::fs::write(&policy, bench_policy()).unwrap();

    let echo_sock = dir.path().join("echo.sock");
    let mut echo = spawn_echo(&echo_sock);
    let (daemon, id, metrics) = spawn_daemon(dir.path(), &policy, "normal");
    let mut daemon = daemon;
    let agentd = Server {
        pid: daemon.id(),
        metrics: Some(metrics),
    };
    let echo_server = Server {
        pid: echo.id(),
        metrics: None,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = if quick { 500 } else { SINGLE_N };
    // AGENTD_BENCH_LOAD_SECS lengthens the load runs (for profiling).
    let secs = std::env::var("AGENTD_BENCH_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { LOAD_SECS });
    let body = serde_json::to_vec(&json!({"active_message_id": id, "action": "read_chart", "arguments": {"path": "/srv/charts/p-0042.json"}})).unwrap();
    // A denial runs no allow hooks (grant install, receipt): decision + audit only.
    let deny_body = serde_json::to_vec(
        &json!({"active_message_id": id, "action": "shell", "arguments": {"command": "ls"}}),
    )
    .unwrap();

    // AGENTD_BENCH_PROFILE=allow|deny: only that 8-client load against the
    // daemon (pid printed), for a profiler to attach to.
    if let Ok(which) = std::env::var("AGENTD_BENCH_PROFILE") {
        let b = if which == "deny" { &deny_body } else { &body };
        println!("profiling {which}: agentd pid {}", daemon.id());
        let l = rt.block_on(load(
            &dir.path().join("agentd.sock"),
            "/v1/tool-calls",
            b,
            secs,
            agentd,
        ));
        println!(
            "{which}: {:.0}/s, p99 {:.1} µs, server CPU {:.1} µs/req, client CPU {:.1} µs/req, written {:.0} bytes/req, {} audit rows/commit",
            l.rate, l.p99, l.cpu_per_req, l.client_cpu_per_req, l.written_per_req, per_commit(l.rows_per_commit)
        );
        stop(&mut daemon);
        let _ = echo.kill();
        let _ = echo.wait();
        return;
    }
    let (echo1, health1, gw1, gwd1) = rt.block_on(async {
        // Interleave: echo, agentd, so both see the same machine conditions.
        let e = single_client(&echo_sock, "/echo", &body, n, Method::POST).await;
        let h = single_client(
            &dir.path().join("agentd.sock"),
            "/v1/health",
            &[],
            n,
            Method::GET,
        )
        .await;
        let g = single_client(
            &dir.path().join("agentd.sock"),
            "/v1/tool-calls",
            &body,
            n,
            Method::POST,
        )
        .await;
        let gd = single_client(
            &dir.path().join("agentd.sock"),
            "/v1/tool-calls",
            &deny_body,
            n,
            Method::POST,
        )
        .await;
        (e, h, g, gd)
    });
    let (echo8, gw8, gwd8) = rt.block_on(async {
        let e = load(&echo_sock, "/echo", &body, secs, echo_server).await;
        let g = load(
            &dir.path().join("agentd.sock"),
            "/v1/tool-calls",
            &body,
            secs,
            agentd,
        )
        .await;
        let gd = load(
            &dir.path().join("agentd.sock"),
            "/v1/tool-calls",
            &deny_body,
            secs,
            agentd,
        )
        .await;
        (e, g, gd)
    });

    // The render worker's backlog right after the allow load: receipts are
    // sealed with their rows; rendering catches up later (nice 10).
    let backlog = receipt_backlog(&dir.path().join("state"));
    stop(&mut daemon);
    // The same allow load with audit.durability = "full" (fsync per commit).
    let full_dir = dir.path().join("full");
    std::fs::create_dir_all(&full_dir).unwrap();
    let (mut full_daemon, full_id, full_metrics) = spawn_daemon(&full_dir, &policy, "full");
    let full_agentd = Server {
        pid: full_daemon.id(),
        metrics: Some(full_metrics),
    };
    let full_body = serde_json::to_vec(&json!({"active_message_id": full_id, "action": "read_chart", "arguments": {"path": "/srv/charts/p-0042.json"}})).unwrap();
    let (gw1_full, gw8_full) = rt.block_on(async {
        let g1 = single_client(
            &full_dir.join("agentd.sock"),
            "/v1/tool-calls",
            &full_body,
            n / 4,
            Method::POST,
        )
        .await;
        let g8 = load(
            &full_dir.join("agentd.sock"),
            "/v1/tool-calls",
            &full_body,
            secs,
            full_agentd,
        )
        .await;
        (g1, g8)
    });
    stop(&mut full_daemon);
    let _ = echo.kill();
    let _ = echo.wait();
    let render = render_rate(if quick { 5 } else { 50 });

    println!(
        "{:<58} {:>10} {:>10} {:>10}",
        "measurement", "p50 µs", "p99 µs", "mean µs"
    );
    for (name, s) in &inproc {
        println!(
            "{:<58} {:>10.2} {:>10.2} {:>10.2}",
            name, s.p50, s.p99, s.mean
        );
    }
    for (name, s) in &grants {
        println!(
            "{:<58} {:>10.2} {:>10.2} {:>10.2}",
            name, s.p50, s.p99, s.mean
        );
    }
    println!(
        "{:<58} {:>10.1} {:>10.1} {:>10.1}",
        "bare hyper echo, Unix socket, 1 client (floor)", echo1.p50, echo1.p99, echo1.mean
    );
    println!(
        "{:<58} {:>10.1} {:>10.1} {:>10.1}",
        "agentd GET /v1/health, Unix socket, 1 client (API only)",
        health1.p50,
        health1.p99,
        health1.mean
    );
    println!(
        "{:<58} {:>10.1} {:>10.1} {:>10.1}",
        "agentd tool-call check (allow + hooks), socket, 1 client", gw1.p50, gw1.p99, gw1.mean
    );
    println!(
        "{:<58} {:>10.1} {:>10.1} {:>10.1}",
        "agentd tool-call check (deny: no hooks), socket, 1 client", gwd1.p50, gwd1.p99, gwd1.mean
    );
    println!();
    println!(
        "{:<58} {:>12} {:>9} {:>13} {:>13} {:>13} {:>11}",
        "throughput, 8 concurrent clients",
        "requests/s",
        "p99 µs",
        "server µs/req",
        "client µs/req",
        "written B/req",
        "rows/commit"
    );
    for (name, l) in [
        ("bare hyper echo (floor)", echo8),
        (
            "agentd tool-call allows (decision + audit + grant + receipt)",
            gw8,
        ),
        (
            "agentd tool-call denials (decision + durable audit row)",
            gwd8,
        ),
        ("  the same allows with audit.durability = full", gw8_full),
    ] {
        println!(
            "{name:<58} {:>12.0} {:>9.1} {:>13.1} {:>13.1} {:>13.0} {:>11}",
            l.rate,
            l.p99,
            l.cpu_per_req,
            l.client_cpu_per_req,
            l.written_per_req,
            per_commit(l.rows_per_commit)
        );
    }
    println!(
        "{:<58} {:>10.1} {:>10.1} {:>10.1}",
        "  allow, 1 client, durability = full (p50/p99/mean µs)",
        gw1_full.p50,
        gw1_full.p99,
        gw1_full.mean
    );
    // The machine's CPUs are shared by the server and these clients: a
    // rate is bounded by both CPU costs per request, whatever the server does.
    let cpus = num_cpus() as f64;
    let budget = cpus * 1e6 / ALLOW_TARGET - gw8.client_cpu_per_req;
    println!(
        "CPU-bound ceilings on {cpus:.0} CPUs (CPUs ÷ (server + client CPU per request)): echo {:.0}/s, allows {:.0}/s, denials {:.0}/s; {ALLOW_TARGET:.0} allows/s here would leave the daemon {budget:.1} µs of CPU per allow beside this client's {:.1} µs (it uses {:.1} µs)",
        ceiling(cpus, &echo8),
        ceiling(cpus, &gw8),
        ceiling(cpus, &gwd8),
        gw8.client_cpu_per_req,
        gw8.cpu_per_req
    );
    println!();
    println!(
        "receipt cards: {render:.0} rendered/s per core (in process, 256 px); the 8-client allow rate needs {:.1} cores of rendering; backlog after the allow load: {} pending, {} done (sealed with their rows; the worker, SCHED_IDLE, renders them in idle time)",
        gw8.rate / render.max(f64::MIN_POSITIVE),
        backlog.0,
        backlog.1
    );
    println!();
    let decision = &inproc[0].1;
    println!("targets (allowed calls, all hooks): in-process decision p50 {:.2} µs (≤ 5: {}); socket p50 {:.2}× echo (≤ 1.5×: {}); socket p99 {:.0} µs (≤ 1000: {}); {:.0} checks/s with 8 clients (≥ {ALLOW_TARGET:.0}: {}), their p99 {:.0} µs (≤ 1000: {})",
        decision.p50, ok(decision.p50 <= 5.0), gw1.p50 / echo1.p50, ok(gw1.p50 <= 1.5 * echo1.p50), gw1.p99, ok(gw1.p99 <= 1000.0), gw8.rate, ok(gw8.rate >= ALLOW_TARGET), gw8.p99, ok(gw8.p99 <= 1000.0));
    println!("denied calls (gateway + audit only): socket p50 {:.2}× echo, p99 {:.0} µs, {:.0} checks/s with 8 clients",
        gwd1.p50 / echo1.p50, gwd1.p99, gwd8.rate);
    println!("published figures of comparable gateways: APort hosted p50 53 ms (53000 µs); aiAuthZ in-process evaluate 6–52 µs");
}

fn stop(daemon: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = daemon.wait();
}

/// (pending, done) rows of the daemon's receipt queue.
fn receipt_backlog(state: &Path) -> (u64, u64) {
    let db = rusqlite::Connection::open_with_flags(
        state.join("audit.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let count = |state: &str| -> u64 {
        db.query_row(
            "SELECT COUNT(*) FROM receipt_queue WHERE state = ?1",
            [state],
            |r| r.get(0),
        )
        .unwrap()
    };
    // Sealed rows the worker has not taken yet are pending too (builds
    // before the seals table have none).
    let sealed: u64 = db
        .query_row("SELECT COUNT(*) FROM receipt_seals", [], |r| r.get(0))
        .unwrap_or(0);
    (count("pending") + sealed, count("done"))
}

/// Receipt cards rendered per second on one core (what the worker does per row).
fn render_rate(n: u64) -> f64 {
    let key = b"bench-operator-key-0123456789abcdef";
    let t = Instant::now();
    for i in 0..n {
        let claims = agentd::receipt::ReceiptClaims {
            seq: i + 1,
            row_hash: format!("{:064x}", i + 1),
            operator: "dr-chen".into(),
            call_id: format!("{:032x}", i + 1),
            action: "read_chart".into(),
            timestamp: "2026-12-02T10:00:00.000000Z".into(),
        };
        std::hint::black_box(agentd::receipt::seal(key, &claims).unwrap());
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn ok(b: bool) -> &'static str {
    if b {
        "met"
    } else {
        "NOT met"
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn in_process(dir: &Path, quick: bool) -> Vec<(String, Stats)> {
    let state = dir.join("inproc");
    std::fs::create_dir_all(&state).unwrap();
    let g = Gateway::open(
        &state,
        Settings {
            timestamp_window_secs: 60,
            nonce_ttl_secs: 600,
            active_message_ttl_secs: 900,
            session_ttl_secs: 0,
            unverified_per_minute: 0,
        },
        None,
    )
    .unwrap();
    g.load_policy(&bench_policy(), "bench").unwrap();
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let n = if quick { 2_000 } else { 200_000 };
    let mut out = Vec::new();

    // Message ingest: HMAC verify + window + SQLite nonce/session/active-message transaction.
    let mut v = Vec::with_capacity(n / 20);
    let mut last = String::new();
    for i in 0..(n / 20).max(100) {
        let m = SignedMessage::new_signed(
            &key,
            "dr-chen",
            "dm:chen",
            &format!("bench-nonce-{i:012}"),
            now,
            "read chart 42 and mail the ward",
        );
        let t = Instant::now();
        let r = g.ingest(&m, now).unwrap();
        v.push(t.elapsed());
        last = r.active_message_id;
    }
    let id = last;
    let allow = ToolCallRequest {
        active_message_id: id.clone(),
        action: "read_chart".into(),
        tool_use_id: None,
        arguments: json!({"path": "/srv/charts/p-0042.json"})
            .as_object()
            .unwrap()
            .clone(),
    };
    let deny = ToolCallRequest {
        active_message_id: id.clone(),
        action: "shell".into(),
        tool_use_id: None,
        arguments: json!({"command": "ls -la /workspace"})
            .as_object()
            .unwrap()
            .clone(),
    };
    let mail = ToolCallRequest {
        active_message_id: id,
        action: "send_email".into(),
        tool_use_id: None,
        arguments: json!({"to": ["ward3@clinic.example", "nurse@clinic.example"], "subject": "p42", "body": "stable overnight"}).as_object().unwrap().clone(),
    };
    for (name, req, want) in [
        (
            "in-process decision: allow read_chart (path scope + grant)",
            &allow,
            true,
        ),
        (
            "in-process decision: allow send_email (2 recipients)",
            &mail,
            true,
        ),
        (
            "in-process decision: deny role_not_in_allowlist",
            &deny,
            false,
        ),
    ] {
        for _ in 0..WARMUP {
            assert_eq!(g.decide(req, now).is_allow(), want);
        }
        let mut d = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = g.decide(req, now);
            d.push(t.elapsed());
            std::hint::black_box(r);
        }
        out.push((name.to_owned(), stats(d)));
    }
    out.push((
        "in-process message ingest (HMAC + window + SQLite tx)".to_owned(),
        stats(v),
    ));
    out
}

/// The allowed read of `in_process` with the session checks on: a
/// read-only session (its effect class looked up, no elevation needed)
/// and the anomaly check counting every call.
fn in_process_sessions(dir: &Path, quick: bool) -> (String, Stats) {
    let state = dir.join("inproc-sessions");
    std::fs::create_dir_all(&state).unwrap();
    let g = Gateway::open(
        &state,
        Settings {
            timestamp_window_secs: 60,
            nonce_ttl_secs: 600,
            active_message_ttl_secs: 900,
            session_ttl_secs: 0,
            unverified_per_minute: 0,
        },
        None,
    )
    .unwrap();
    let policy = format!(
        "{}\n[sessions]\nstart = \"read_only\"\n\n[anomaly]\n",
        bench_policy()
    );
    g.load_policy(&policy, "bench-sessions").unwrap();
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let m = SignedMessage::new_signed(
        &key,
        "dr-chen",
        "dm:chen",
        "bench-nonce-sessions-000001",
        now,
        "read",
    );
    let id = g.ingest(&m, now).unwrap().active_message_id;
    let req = ToolCallRequest {
        active_message_id: id,
        action: "read_chart".into(),
        tool_use_id: None,
        arguments: json!({"path": "/srv/charts/p-0042.json"})
            .as_object()
            .unwrap()
            .clone(),
    };
    let n = if quick { 2_000 } else { 200_000 };
    for _ in 0..WARMUP {
        assert!(g.decide(&req, now).is_allow());
    }
    let mut d = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = g.decide(&req, now);
        d.push(t.elapsed());
        std::hint::black_box(r);
    }
    (
        "in-process decision: allow read_chart, read-only session + [anomaly]".to_owned(),
        stats(d),
    )
}

/// The daemon's pipeline without the socket: decision + durable audit append.
fn in_process_audited(dir: &Path, quick: bool) -> Vec<(String, Stats)> {
    let state = dir.join("inproc-audited");
    std::fs::create_dir_all(&state).unwrap();
    let audit = agentd::audit::AuditLog::open(&state, agentd::config::Durability::Normal).unwrap();
    let g = Arc::new(
        Gateway::open(
            &state,
            Settings {
                timestamp_window_secs: 60,
                nonce_ttl_secs: 600,
                active_message_ttl_secs: 900,
                session_ttl_secs: 0,
                unverified_per_minute: 0,
            },
            Some(audit.clone()),
        )
        .unwrap(),
    );
    g.load_policy(&bench_policy(), "bench").unwrap();
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let now = unix_now();
    let id = g
        .ingest(
            &SignedMessage::new_signed(
                &key,
                "dr-chen",
                "dm:chen",
                "bench-nonce-audited-1",
                now,
                "x",
            ),
            now,
        )
        .unwrap()
        .active_message_id;
    let req = ToolCallRequest {
        active_message_id: id,
        action: "read_chart".into(),
        tool_use_id: None,
        arguments: json!({"path": "/srv/charts/p-0042.json"})
            .as_object()
            .unwrap()
            .clone(),
    };
    let n = if quick { 500 } else { 20_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let single = rt.block_on(async {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let d = g.tool_call(&req, agentd::gateway::Caller::default()).await;
            v.push(t.elapsed());
            assert!(d.is_allow());
        }
        stats(v)
    });
    let eight = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (g, req) = (g.clone(), req.clone());
            tasks.push(tokio::spawn(async move {
                let mut v = Vec::with_capacity(n / CLIENTS);
                for _ in 0..n / CLIENTS {
                    let t = Instant::now();
                    let d = g.tool_call(&req, agentd::gateway::Caller::default()).await;
                    v.push(t.elapsed());
                    assert!(d.is_allow());
                }
                v
            }));
        }
        let t0 = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let rate = all.len() as f64 / t0.elapsed().as_secs_f64();
        (rate, stats(all))
    });
    audit.shutdown().unwrap();
    println!("in-process pipeline with 8 concurrent tasks: {:.0} decisions/s (each durably audited), p99 {:.1} µs", eight.0, eight.1.p99);
    vec![(
        "in-process pipeline: decision + durable audit append".to_owned(),
        single,
    )]
}

/// What the enforcement hook adds to an allow from inside an agent: the
/// grant written to the kernel's maps and recorded in the enforcer's state
/// file, by 1 and by 8 threads, while the live grants grow from 0 (a grant
/// of a spent call lives until its expiry). Needs root and a backend.
fn grant_installs(dir: &Path, quick: bool) -> Vec<(String, Stats)> {
    use agentd::enforce::{Enforcer, MemorySink, Mode};
    let backend = agentd::doctor::run().backend;
    if !nix::unistd::Uid::effective().is_root() || backend == agentd::doctor::Backend::None {
        println!("grant installs: skipped (needs root and an enforcement backend)");
        return Vec::new();
    }
    let state = dir.join("grants");
    let e = match Enforcer::start(backend, &state, MemorySink::default()) {
        Ok(e) => e,
        Err(err) => {
            println!("grant installs: skipped (the enforcer did not start: {err})");
            return Vec::new();
        }
    };
    let agent = format!("bench-{}", std::process::id());
    e.create_agent(&agent, Mode::Enforce).expect("agent");
    let spec = agentd::grant_spec::GrantSpec {
        read: vec![PathBuf::from("/srv/charts/p-0042.json")],
        ttl_secs: 60,
        uses: 1,
        ..Default::default()
    };
    let n = if quick { 200 } else { 2_000 };
    let mut out = Vec::new();
    let mut one = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        e.install_grant(&agent, &format!("{i:032x}"), "m", &spec)
            .unwrap();
        one.push(t.elapsed());
    }
    out.push((
        format!("grant install (maps + state file), 1 thread, live 0→{n}"),
        stats(one),
    ));
    let t0 = Instant::now();
    let eight: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (e, agent, spec) = (&e, &agent, &spec);
                s.spawn(move || {
                    let mut v = Vec::with_capacity(n / CLIENTS);
                    for i in 0..n / CLIENTS {
                        let t = Instant::now();
                        e.install_grant(agent, &format!("{:016x}{i:016x}", c + 1), "m", spec)
                            .unwrap();
                        v.push(t.elapsed());
                    }
                    v
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let rate = eight.len() as f64 / t0.elapsed().as_secs_f64();
    out.push((
        format!("grant install, 8 threads, live {n}→{}: {rate:.0}/s", 2 * n),
        stats(eight),
    ));
    e.uninstall();
    out
}

fn spawn_echo(sock: &Path) -> Child {
    let child = Command::new(std::env::current_exe().unwrap())
        .env(ECHO_ENV, sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_socket(sock);
    child
}

fn wait_socket(sock: &Path) {
    // The daemon probes the kernel and loads BPF before serving.
    for _ in 0..12_000 {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never accepted", sock.display());
}

/// Starts the real daemon, enrolls an operator and submits one message;
/// returns the active-message id and the loopback port of its metrics.
fn spawn_daemon(dir: &Path, policy: &Path, durability: &str) -> (Child, String, u16) {
    let sock = dir.join("agentd.sock");
    let config = dir.join("agentd.toml");
    // The daemon serves its metrics (the audit writer's rows and commits)
    // on a loopback port: AGENTD_BENCH_METRICS=PORT, or one free just now.
    let port = std::env::var("AGENTD_BENCH_METRICS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(gateway_support::free_port);
    std::fs::write(
        &config,
        format!(
            "[audit]\ndurability = \"{durability}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    // AGENTD_BENCH_BIN: another build of agentd, for A/B runs against this one.
    let bin = std::env::var_os("AGENTD_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_agentd")));
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(&sock)
        .arg("--policy")
        .arg(policy)
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
        wait_enforcement(&mut c).await;
        let r: serde_json::Value = c
            .call(
                Method::POST,
                "/v1/operators",
                Some(&json!({"id": "dr-chen", "roles": ["clinician"]})),
            )
            .await
            .unwrap();
        let key = hex::decode(r["key"].as_str().unwrap()).unwrap();
        let m = SignedMessage::new_signed(
            &key,
            "dr-chen",
            "dm:chen",
            &agentd::protocol::message::random_nonce(),
            unix_now(),
            "read chart 42",
        );
        c.submit_message(&m).await.unwrap().active_message_id
    });
    (child, id, port)
}

/// The audit log's (rows, commits) so far, from the daemon's metrics on
/// `port`: the head's seq and the commit-time histogram's count.
fn audit_counts(port: u16) -> Option<(f64, f64)> {
    let (status, text) = gateway_support::scrape(port);
    if status != 200 {
        return None;
    }
    Some((
        gateway_support::sample(&text, "agentd_audit_head_seq")?,
        gateway_support::sample(&text, "agentd_audit_commit_seconds_count")?,
    ))
}

/// Rows per commit for the table: "-" for a server without an audit log.
fn per_commit(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |r| format!("{r:.1}"))
}

/// The rate at which `l`'s server and clients together would use every
/// CPU: what the machine allows at these CPU costs per request.
fn ceiling(cpus: f64, l: &Load) -> f64 {
    cpus * 1e6 / (l.cpu_per_req + l.client_cpu_per_req).max(f64::MIN_POSITIVE)
}

/// Waits while the daemon's enforcer is still loading its BPF programs (the
/// verifier's CPU would otherwise land in the first measurements); an
/// enforcer that cannot start here is reported and the bench goes on.
async fn wait_enforcement(c: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = c
            .raw(Method::GET, "/v1/enforcement", Vec::new())
            .await
            .unwrap();
        if status.is_success() {
            return;
        }
        let body = String::from_utf8_lossy(&body);
        if !body.contains("starting") || Instant::now() > deadline {
            println!(
                "enforcement not running in the daemon ({status}: {body}); allows install no grant"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn single_client(sock: &Path, path: &str, body: &[u8], n: usize, method: Method) -> Stats {
    let mut c = Client::connect(sock).await.unwrap();
    for _ in 0..WARMUP.min(n) {
        let (s, _) = c.raw(method.clone(), path, body.to_vec()).await.unwrap();
        assert!(s.is_success());
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (s, b) = c.raw(method.clone(), path, body.to_vec()).await.unwrap();
        v.push(t.elapsed());
        assert!(s.is_success(), "{}", String::from_utf8_lossy(&b));
    }
    stats(v)
}

/// CPU time (user + system, all threads) the process `pid` has used, in µs.
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised name: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(14) + ticks(15)) / hz * 1e6
}

/// Bytes the process `pid` has passed to `write`-family system calls
/// (files and sockets: `wchar` of `/proc/PID/io`).
fn written_bytes(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What a load run measured: requests/s, p99 µs, the server's CPU time per
/// request (µs, every thread: the figure a noisy machine moves least), the
/// clients' (this process's), the bytes the server wrote per request (its
/// audit log's pages, its answers) and its audit rows per commit.
#[derive(Clone, Copy)]
struct Load {
    rate: f64,
    p99: f64,
    cpu_per_req: f64,
    client_cpu_per_req: f64,
    written_per_req: f64,
    rows_per_commit: Option<f64>,
}

/// A server under load: its process, and for agentd its metrics port.
#[derive(Clone, Copy)]
struct Server {
    pid: u32,
    metrics: Option<u16>,
}

/// 8 clients, each its own connection, for `secs` against `server`.
async fn load(sock: &Path, path: &str, body: &[u8], secs: u64, server: Server) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (sock, path, body, stop, count) = (
            sock.to_owned(),
            path.to_owned(),
            body.to_vec(),
            stop.clone(),
            count.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&sock).await.unwrap();
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (s, _) = c.raw(Method::POST, &path, body.clone()).await.unwrap();
                lat.push(t.elapsed());
                assert!(s.is_success());
                count.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    // Warm up briefly, then measure a fixed window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let me = std::process::id();
    let audit0 = server.metrics.and_then(audit_counts);
    let c0 = count.load(Ordering::Relaxed);
    let (t0, cpu0, w0) = (
        Instant::now(),
        cpu_us(server.pid),
        written_bytes(server.pid),
    );
    let client0 = cpu_us(me);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let c1 = count.load(Ordering::Relaxed);
    let (cpu1, w1) = (cpu_us(server.pid), written_bytes(server.pid));
    let client1 = cpu_us(me);
    let audit1 = server.metrics.and_then(audit_counts);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    Load {
        rate: (c1 - c0) as f64 / elapsed,
        p99: stats(all).p99,
        cpu_per_req: (cpu1 - cpu0) / (c1 - c0).max(1) as f64,
        client_cpu_per_req: (client1 - client0) / (c1 - c0).max(1) as f64,
        written_per_req: (w1 - w0) / (c1 - c0).max(1) as f64,
        rows_per_commit: match (audit0, audit1) {
            (Some((r0, k0)), Some((r1, k1))) if k1 > k0 => Some((r1 - r0) / (k1 - k0)),
            _ => None,
        },
    }
}

/// The floor: a bare hyper HTTP/1.1 server echoing the body, on a Unix socket,
/// with the same runtime shape as the daemon (multi-thread tokio).
fn echo_server(sock: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = std::fs::remove_file(sock);
        let l = tokio::net::UnixListener::bind(sock).unwrap();
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(body)))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}
