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
fn raw_sqlite(durability: Durability, per_tx: u64, dur: Duration) -> (f64, u64, tempfile::TempDir) {
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
    (seq as f64 / start.elapsed().as_secs_f64(), seq, dir)
}

struct Run {
    rows_per_s: f64,
    /// CPU time the writer thread spent per committed row.
    writer_cpu_us: f64,
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
    let before = (log.stats(), writer_cpu_ticks());
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
    let before = (log.stats(), writer_cpu_ticks());
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

/// utime + stime (clock ticks) of this process's `audit-writer` thread.
fn writer_cpu_ticks() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != "audit-writer" {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that closes comm: state is field 3; utime/stime are 14/15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        return n(11) + n(12);
    }
    0
}

fn finish(
    log: &AuditLog,
    before: (agentd::audit::AppendStats, u64),
    start: Instant,
    mut lat: Vec<u64>,
) -> Run {
    let elapsed = start.elapsed().as_secs_f64();
    let after = log.stats();
    let ticks = writer_cpu_ticks().saturating_sub(before.1);
    let (before, _) = before;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
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
        writer_cpu_us: ticks as f64 / hz * 1e6 / rows.max(1) as f64,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn k(x: f64) -> String {
    format!("{:.1}k", x / 1000.0)
}

#[allow(clippy::too_many_arguments)]
fn line(sync: &str, case: &str, rows: f64, batch: f64, p50: &str, p99: &str, cpu: f64, note: &str) {
    println!(
        "{sync:<7} {case:<35} {:>9} {batch:>7.1} {p50:>8} {p99:>8} {:>8.2}  {note}",
        k(rows),
        cpu
    );
}

fn verdict(rows: f64, target: f64) -> String {
    format!(
        "target ≥{} {}",
        k(target),
        if rows >= target { "MET" } else { "MISSED" }
    )
}

/// CPU time of the calling thread, in µs.
fn thread_cpu_us() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let t = |v: libc::timeval| v.tv_sec as f64 * 1e6 + v.tv_usec as f64;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let dur = secs();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "audit appender benchmark ({:.1} s per case, rows ≈ 200 B; load average {})",
        dur.as_secs_f64(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "cpu µs/row: CPU time of the single SQLite writer (the appender's writer thread) per row"
    );
    println!();
    println!(
        "{:<7} {:<35} {:>9} {:>7} {:>8} {:>8} {:>8}  issue floor / target",
        "sync", "case", "rows/s", "batch", "p50 µs", "p99 µs", "cpu µs"
    );
    for (d, name, floor1, floor64, target) in [
        (Durability::Normal, "NORMAL", "46k", "410k", 100_000.0),
        (Durability::Full, "FULL", "5-6.5k", "200k", 50_000.0),
    ] {
        for (per_tx, floor) in [(1, floor1), (64, floor64)] {
            let c0 = thread_cpu_us();
            let (rate, rows, dir) = raw_sqlite(d, per_tx, dur);
            let cpu = (thread_cpu_us() - c0) / rows.max(1) as f64;
            line(
                name,
                &format!("raw sqlite, {per_tx} row(s)/tx, 1 thread"),
                rate,
                per_tx as f64,
                "-",
                "-",
                cpu,
                &format!("floor {floor}"),
            );
            if per_tx == 64 && d == Durability::Normal {
                // Offline verification speed over the file just written.
                let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
                let t0 = Instant::now();
                let rep = agentd::audit::verify_db(&store::db_path(dir.path()), &key, &[])
                    .expect("verify");
                let secs = t0.elapsed().as_secs_f64();
                line(
                    name,
                    "verify_db (offline check), 1 thread",
                    rep.records as f64 / secs,
                    0.0,
                    "-",
                    "-",
                    secs * 1e6 / rep.records.max(1) as f64,
                    &format!("{} rows in {secs:.2} s", rep.records),
                );
            }
        }
        for tasks in [64, 256, 1024] {
            let r = appender_async(d, tasks, dur);
            line(
                name,
                &format!("AuditLog::append, {tasks} async tasks"),
                r.rows_per_s,
                r.mean_batch,
                &r.p50_us.to_string(),
                &r.p99_us.to_string(),
                r.writer_cpu_us,
                &verdict(r.rows_per_s, target),
            );
        }
        let r = appender_threads(d, 16, dur);
        line(
            name,
            "AuditLog::append_blocking, 16 thr",
            r.rows_per_s,
            r.mean_batch,
            &r.p50_us.to_string(),
            &r.p99_us.to_string(),
            r.writer_cpu_us,
            &verdict(r.rows_per_s, target),
        );
    }
}
