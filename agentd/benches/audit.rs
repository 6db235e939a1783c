//! Audit appender throughput under concurrent writers, for both durability
//! settings, printed beside raw SQLite floors measured in the same run.
//!
//! `cargo bench -p agentd --bench audit` (env `AUDIT_BENCH_SECS`, default 3).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::audit::{store, AuditEvent, AuditLog, AuditOptions, Record, RecordKind};
use agentd::config::Durability;

/// An event whose stored row is about 200 bytes, like the floor.
fn event(i: u64) -> AuditEvent {
    let mut e = AuditEvent::new(RecordKind::ToolCall, "mail.send");
    e.operator = "alice".into();
    e.session = "C0123456789".into();
    e.active_message_id = format!("am-{:016x}", i);
    e.call_id = format!("call-{:016x}", i);
    e.target = "bob@example.org".into();
    e.decision = "allow".into();
    e.reason_code = "allowed".into();
    e.policy_id = "default".into();
    e.latency_us = 42;
    e
}

fn bench_dir() -> tempfile::TempDir {
    // The target dir is on the real disk (tmpfs would make FULL's fsync free).
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

fn secs() -> Duration {
    let s = std::env::var("AUDIT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

/// Raw SQLite inserts of sealed records, `per_tx` rows per transaction, one thread.
fn raw_sqlite(durability: Durability, per_tx: u64, dur: Duration) -> f64 {
    let dir = bench_dir();
    let path = store::db_path(dir.path());
    let conn = store::open_rw(&path, durability).expect("open");
    let start = Instant::now();
    let mut seq = 0u64;
    let mut prev = agentd::audit::GENESIS_HASH.to_owned();
    while start.elapsed() < dur {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for _ in 0..per_tx {
            seq += 1;
            let r = Record::seal(
                seq,
                agentd::audit::timefmt::now_rfc3339_micros(),
                event(seq),
                prev,
            );
            store::insert_record(&conn, &r).expect("insert");
            prev = r.hash;
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    seq as f64 / start.elapsed().as_secs_f64()
}

struct Run {
    rows_per_s: f64,
    mean_batch: f64,
    p50_us: u64,
    p99_us: u64,
}

/// `tasks` async writers on a 2-thread runtime, each appending in a loop.
fn appender_async(durability: Durability, tasks: usize, dur: Duration) -> Run {
    let dir = bench_dir();
    let log = AuditLog::open_with(
        dir.path(),
        AuditOptions {
            durability,
            checkpoint_interval: Duration::from_secs(1),
        },
    )
    .expect("open");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let before = log.stats();
    let start = Instant::now();
    let lat = rt.block_on(async {
        let mut handles = Vec::new();
        for t in 0..tasks {
            let log = log.clone();
            let stop = stop.clone();
            let counter = counter.clone();
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = (t as u64) << 32;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    log.append(event(i)).await.expect("append");
                    lat.push(t0.elapsed().as_micros() as u64);
                    counter.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                lat
            }));
        }
        tokio::time::sleep(dur).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.expect("task"));
        }
        all
    });
    finish(&log, before, start, lat)
}

/// `threads` OS threads calling `append_blocking` in a loop.
fn appender_threads(durability: Durability, threads: usize, dur: Duration) -> Run {
    let dir = bench_dir();
    let log = AuditLog::open_with(
        dir.path(),
        AuditOptions {
            durability,
            checkpoint_interval: Duration::from_secs(1),
        },
    )
    .expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let before = log.stats();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = (t as u64) << 32;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    log.append_blocking(event(i)).expect("append");
                    lat.push(t0.elapsed().as_micros() as u64);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.join().expect("thread"));
    }
    finish(&log, before, start, lat)
}

fn finish(
    log: &AuditLog,
    before: agentd::audit::AppendStats,
    start: Instant,
    mut lat: Vec<u64>,
) -> Run {
    let elapsed = start.elapsed().as_secs_f64();
    let after = log.stats();
    log.shutdown().expect("shutdown");
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let rows = after.rows - before.rows;
    Run {
        rows_per_s: rows as f64 / elapsed,
        mean_batch: rows as f64 / (after.commits - before.commits).max(1) as f64,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn k(x: f64) -> String {
    format!("{:.1}k", x / 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let dur = secs();
    println!(
        "audit appender benchmark ({:.1} s per case, rows ≈ 200 B)",
        dur.as_secs_f64()
    );
    println!();
    println!(
        "{:<8} {:<34} {:>10} {:>10} {:>9} {:>9}  issue floor / target",
        "sync", "case", "rows/s", "batch", "p50 µs", "p99 µs"
    );
    for (d, name, floor1, floor64, target) in [
        (Durability::Normal, "NORMAL", "46k", "410k", 100_000.0),
        (Durability::Full, "FULL", "5-6.5k", "200k", 50_000.0),
    ] {
        let r1 = raw_sqlite(d, 1, dur);
        println!(
            "{name:<8} {:<34} {:>10} {:>10} {:>9} {:>9}  floor {floor1}",
            "raw sqlite, 1 row/tx",
            k(r1),
            "1",
            "-",
            "-"
        );
        let r64 = raw_sqlite(d, 64, dur);
        println!(
            "{name:<8} {:<34} {:>10} {:>10} {:>9} {:>9}  floor {floor64}",
            "raw sqlite, 64 rows/tx",
            k(r64),
            "64",
            "-",
            "-"
        );
        for tasks in [64, 256, 1024] {
            let r = appender_async(d, tasks, dur);
            println!(
                "{name:<8} {:<34} {:>10} {:>10.1} {:>9} {:>9}  target ≥{} {}",
                format!("AuditLog::append, {tasks} async tasks"),
                k(r.rows_per_s),
                r.mean_batch,
                r.p50_us,
                r.p99_us,
                k(target),
                if r.rows_per_s >= target {
                    "MET"
                } else {
                    "MISSED"
                }
            );
        }
        let r = appender_threads(d, 16, dur);
        println!(
            "{name:<8} {:<34} {:>10} {:>10.1} {:>9} {:>9}  target ≥{} {}",
            "AuditLog::append_blocking, 16 thr",
            k(r.rows_per_s),
            r.mean_batch,
            r.p50_us,
            r.p99_us,
            k(target),
            if r.rows_per_s >= target {
                "MET"
            } else {
                "MISSED"
            }
        );
    }
}
