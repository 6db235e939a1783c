//! Propagation of a central change to three hosts (a throwaway local
//! PostgreSQL on a Unix socket): each host is a real `Gateway` with its
//! own state directory and audit log, followed by `fleet::sync` exactly as
//! in the daemon; an administrator pushes a policy (`central::push_policy`)
//! again and again, and each host's policy listener notes when the new
//! policy is in force. Printed: push → in force on each host and on all
//! three (p50/p99/max), beside the floor: a bare NOTIFY → notification
//! round trip on the same server in the same run. Under a minute.
//! `cargo bench -p agentd --bench fleet_central [-- CHANGES]`.
#[path = "../tests/fleet_support/mod.rs"]
mod fleet_support;

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use agentd::audit::AuditLog;
use agentd::config::Durability;
use agentd::fleet::conn::PgSettings;
use agentd::fleet::{central, schema, sync};
use agentd::gateway::{Gateway, Settings};

const DEMO: &str = include_str!("../../policies/demo.toml");
const HOSTS: usize = 3;

fn settings() -> Settings {
    Settings {
        timestamp_window_secs: 60,
        nonce_ttl_secs: 600,
        active_message_ttl_secs: 900,
        session_ttl_secs: 0,
        unverified_per_minute: 0,
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn line(what: &str, v: &mut [f64]) {
    println!(
        "  {what:<46} p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  (n={})",
        pct(v, 0.5),
        pct(v, 0.99),
        pct(v, 1.0),
        v.len()
    );
}

fn main() {
    let changes: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let pg = match fleet_support::PgCluster::start() {
        Ok(c) => c,
        Err(why) => {
            println!("SKIP fleet_central bench: {why}");
            return;
        }
    };
    let conninfo = std::fs::read_to_string(pg.conninfo_file()).unwrap();
    let pgs = PgSettings::parse(conninfo.trim(), Duration::from_secs(10)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut admin = rt.block_on(async {
        let mut c = pgs.connect().await.unwrap();
        schema::ensure(&pgs, &mut c.client).await.unwrap();
        c
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (tx, rx) = mpsc::channel::<(usize, Instant)>();
    let dirs: Vec<tempfile::TempDir> = (0..HOSTS).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut audits = Vec::new();
    let syncs: Vec<Arc<sync::CentralSync>> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let audit = AuditLog::open(d.path(), Durability::Normal).unwrap();
            let gw = Arc::new(Gateway::open(d.path(), settings(), Some(audit.clone())).unwrap());
            let tx = tx.clone();
            gw.add_policy_listener(Arc::new(move || {
                let _ = tx.send((i, Instant::now()));
            }));
            audits.push(audit.clone());
            let _guard = rt.enter();
            sync::start(
                pgs.clone(),
                format!("bench-{i}"),
                gw,
                audit,
                Duration::from_secs(30),
                stop_rx.clone(),
            )
        })
        .collect();
    // Every follower has connected and read once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while syncs
        .iter()
        .any(|s| s.reads.load(std::sync::atomic::Ordering::Relaxed) == 0)
    {
        assert!(Instant::now() < deadline, "the followers never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("central change propagation: 1 administrator, {HOSTS} hosts (Gateway + fleet::sync each, in one process), PostgreSQL 15 on a Unix socket");

    let (mut push, mut per_host, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..changes {
        while rx.try_recv().is_ok() {}
        let source = format!("{DEMO}\n# change {k}\n");
        let t0 = Instant::now();
        rt.block_on(central::push_policy(
            &pgs,
            &mut admin.client,
            &source,
            "bench",
        ))
        .unwrap();
        push.push(t0.elapsed().as_secs_f64() * 1e3);
        let mut seen = [None; HOSTS];
        while seen.iter().any(Option::is_none) {
            let (i, at) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("a host did not apply the change within 10 s");
            seen[i] = Some(at.duration_since(t0).as_secs_f64() * 1e3);
        }
        per_host.extend(seen.iter().flatten());
        all.push(seen.iter().flatten().fold(0.0, |a: f64, b| a.max(*b)));
        std::thread::sleep(Duration::from_millis(30));
    }
    line("push (compile, validate, commit)", &mut push);
    line("push -> policy in force, each host", &mut per_host);
    line("push -> policy in force on all 3 hosts", &mut all);

    // Floor: NOTIFY on one connection, the notification on another.
    let floor = rt.block_on(async {
        let (listen, mut notes) = pgs.connect_listening().await.unwrap();
        listen
            .client
            .batch_execute("LISTEN agentd_bench_floor")
            .await
            .unwrap();
        let sender = pgs.connect().await.unwrap();
        let mut v = Vec::new();
        for k in 0..changes * 3 {
            let t0 = Instant::now();
            sender
                .client
                .batch_execute(&format!("NOTIFY agentd_bench_floor, '{k}'"))
                .await
                .unwrap();
            notes.recv().await.unwrap();
            v.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        v
    });
    let mut floor = floor;
    line("floor: bare NOTIFY -> notification", &mut floor);
    let _ = stop_tx.send(true);
    for a in &audits {
        let _ = a.shutdown();
    }
    rt.shutdown_timeout(Duration::from_secs(2));
}
