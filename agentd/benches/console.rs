//! Web console benchmark (`cargo bench -p agentd --bench console`): how
//! fast a decision reaches an open console, and whether an open console
//! slows decisions.
//!
//! In process, on a real gateway with a real audit log (decision + durable
//! append, group commit) and the real console router on a loopback
//! listener, read by a plain HTTP client holding `/api/events` open:
//!
//! 1. floors, measured in the same run: a plain audit append, and a
//!    decision with no console;
//! 2. one call at a time: the call's start to its row arriving on the
//!    stream (and the part after the decision returned);
//! 3. 5,000 decisions/s for a few seconds, with the console closed and
//!    open: decision p50/p99 both ways, rows delivered, and the stream's lag.
use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use agentd::audit::{AuditEvent, AuditLog, RecordKind};
use agentd::config::{ConsoleConfig, Durability};
use agentd::console::{Console, Parts};
use agentd::gateway::{unix_now, Caller, Gateway, Settings, ToolCallRequest};
use agentd::protocol::SignedMessage;
use serde_json::json;

fn bench_policy() -> String {
    // The demo policy with rate limits out of the way.
    let mut p = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/demo.toml"),
    )
    .expect("policies/demo.toml");
    for n in ["60", "120"] {
        p = p.replace(
            &format!("rate_per_minute = {n}\n"),
            "rate_per_minute = 4000000000\n",
        );
    }
    p
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn line(what: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "  {what:<58} n={:<6} p50 {:>8.1} µs   p99 {:>8.1} µs",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.99)
    );
}

/// Reads the stream on its own thread; sends (call_id, arrival) per row.
fn stream_reader(port: u16, cookie: &str) -> mpsc::Receiver<(String, Instant)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the console");
    s.set_nodelay(true).ok();
    write!(
        s,
        "GET /api/events?backlog=0&kind=tool_call HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: agentd_console={cookie}\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut l = String::new();
        loop {
            l.clear();
            match r.read_line(&mut l) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Some(data) = l.strip_prefix("data: ") {
                let at = Instant::now();
                let v: serde_json::Value = serde_json::from_str(data.trim()).unwrap_or_default();
                if v.get("head").is_some() {
                    // `event: live`: the history is sent, what follows is new.
                    if tx.send(("<live>".into(), at)).is_err() {
                        return;
                    }
                } else if let Some(c) = v["call_id"].as_str() {
                    if tx.send((c.to_owned(), at)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

struct Setup {
    gateway: Arc<Gateway>,
    audit: AuditLog,
    req: ToolCallRequest,
}

fn setup(dir: &Path) -> Setup {
    let audit = AuditLog::open(dir, Durability::Normal).unwrap();
    let g = Arc::new(
        Gateway::open(
            dir,
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
                "console-bench-nonce-1",
                now,
                "x",
            ),
            now,
        )
        .unwrap()
        .active_message_id;
    Setup {
        gateway: g,
        audit,
        req: ToolCallRequest {
            active_message_id: id,
            action: "read_chart".into(),
            tool_use_id: None,
            arguments: json!({"path": "/srv/charts/p-0042.json"})
                .as_object()
                .unwrap()
                .clone(),
        },
    }
}

/// Decisions paced at `rate`/s for `secs`: their latencies, and the
/// achieved rate.
async fn paced(
    g: &Arc<Gateway>,
    req: &ToolCallRequest,
    rate: u64,
    secs: u64,
) -> (Vec<Duration>, f64, Vec<(String, Instant)>) {
    let n = rate * secs;
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..n {
        tick.tick().await;
        let (g, req) = (g.clone(), req.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let d = g.tool_call(&req, Caller::default()).await;
            assert!(d.is_allow(), "{d:?}");
            (t.elapsed(), (d.call_id, Instant::now()))
        });
    }
    let mut lat = Vec::with_capacity(n as usize);
    let mut ids = Vec::with_capacity(n as usize);
    while let Some(r) = tasks.join_next().await {
        let (l, id) = r.unwrap();
        lat.push(l);
        ids.push(id);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    (lat, rate, ids)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (single_n, rate, secs) = if quick {
        (100, 1000, 1)
    } else {
        (2000, 5000, 3)
    };
    println!(
        "agentd console benchmark{}",
        if quick {
            " (quick smoke run; use cargo bench for figures)"
        } else {
            ""
        }
    );
    println!(
        "machine: load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async { setup(dir.path()) });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let console = Console::new(
        ConsoleConfig {
            listen: Some("127.0.0.1:0".into()),
            ..ConsoleConfig::default()
        },
        Parts {
            gateway: s.gateway.clone(),
            audit: s.audit.clone(),
            enforce: agentd::enforce::EnforceSlot::starting("bench".into()),
            agents: None,
            receipts: None,
        },
        stop_rx.clone(),
    );
    let port = rt.block_on(async {
        let l = console.bind().await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(agentd::api::serve(
            agentd::api::Listener::Tcp(l),
            agentd::console::routes::router(console.clone()),
            stop_rx.clone(),
            Duration::from_secs(1),
        ));
        port
    });
    let (cookie, _) = console.session_for_bench("uid:0");

    println!("\nfloors (same run, console closed):");
    let (append, closed_single) = rt.block_on(async {
        let mut a = Vec::new();
        for _ in 0..single_n {
            let t = Instant::now();
            s.audit
                .append(AuditEvent::new(RecordKind::Admin, "bench"))
                .await
                .unwrap();
            a.push(t.elapsed());
        }
        let mut c = Vec::new();
        for _ in 0..single_n {
            let t = Instant::now();
            assert!(s
                .gateway
                .tool_call(&s.req, Caller::default())
                .await
                .is_allow());
            c.push(t.elapsed());
        }
        (a, c)
    });
    line("plain audit append (durable, group commit)", append);
    line("decision + audit append, one at a time", closed_single);

    // The load with no console open, before any stream connects.
    let (closed, closed_rate, _) = rt.block_on(paced(&s.gateway, &s.req, rate, secs));

    // The same pace as the open-console case below, console closed.
    let spaced_closed = rt.block_on(async {
        let mut c = Vec::new();
        for _ in 0..single_n / 20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t = Instant::now();
            assert!(s
                .gateway
                .tool_call(&s.req, Caller::default())
                .await
                .is_allow());
            c.push(t.elapsed());
        }
        c
    });
    line("decision + audit append, one every 50 ms", spaced_closed);

    println!("\none call every 50 ms, console open (its row on the stream):");
    let rx = stream_reader(port, &cookie);
    let (live, _) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the stream goes live");
    assert_eq!(live, "<live>");
    let (mut to_row, mut after_decision, mut decide) = (Vec::new(), Vec::new(), Vec::new());
    // Calls 50 ms apart, as a person watching would see them (back to
    // back they would share the stream's reads: see the load below).
    for _ in 0..single_n / 20 {
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        let d = rt.block_on(async { s.gateway.tool_call(&s.req, Caller::default()).await });
        let decided = Instant::now();
        loop {
            let (id, at) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("row on the stream");
            if id == d.call_id {
                to_row.push(at - t);
                after_decision.push(at.saturating_duration_since(decided));
                decide.push(decided - t);
                break;
            }
        }
    }
    line(
        "decision + audit append, one every 50 ms (console open)",
        decide,
    );
    line("tool call -> its row delivered on the stream", to_row);
    line("  of which after the decision returned", after_decision);

    println!("\n{rate} decisions/s for {secs} s, console closed vs open:");
    let drain = Arc::new(AtomicU64::new(0));
    // Open: the reader records arrivals while the load runs.
    let arrivals: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let (a2, d2) = (arrivals.clone(), drain.clone());
    let collector = std::thread::spawn(move || {
        while let Ok((id, at)) = rx.recv_timeout(Duration::from_secs(3)) {
            a2.lock().unwrap().insert(id, at);
            d2.fetch_add(1, Ordering::Relaxed);
        }
    });
    let t_open = Instant::now();
    let (open, open_rate, ids) = rt.block_on(paced(&s.gateway, &s.req, rate, secs));
    let load_end = Instant::now();
    collector.join().unwrap();
    let got = arrivals.lock().unwrap();
    let lags: Vec<Duration> = ids
        .iter()
        .filter_map(|(id, done)| got.get(id).map(|at| at.saturating_duration_since(*done)))
        .collect();
    let delivered = lags.len();
    println!("  console closed: achieved {closed_rate:>7.0} decisions/s");
    line("decision latency, console closed", closed);
    println!("  console open:   achieved {open_rate:>7.0} decisions/s");
    line(
        "decision latency, console open (stream reading every row)",
        open,
    );
    line(
        "stream lag: a row on the stream after its decision returned",
        lags,
    );
    println!(
        "  stream: {delivered} of {} rows delivered ({:.1} s run)",
        ids.len(),
        load_end.duration_since(t_open).as_secs_f64()
    );
    let _ = stop_tx.send(true);
    s.audit.shutdown().ok();
}
