//! Audit shipping into one PostgreSQL (a throwaway local cluster on a Unix
//! socket): N hosts' audit logs append rows while their shippers follow
//! them; printed are the rows/s PostgreSQL took and the shipping lag
//! (commit on the host → row in PostgreSQL, p50/p99), first in a burst,
//! then at a steady rate, beside a floor: the same rows inserted by one
//! client with the shipper's own batched statement and nothing else.
//! Under a minute. `cargo bench -p agentd --bench fleet [-- HOSTS ROWS]`.
#[path = "../tests/fleet_support/mod.rs"]
mod fleet_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::audit::{AuditEvent, AuditLog, Record, RecordKind};
use agentd::config::Durability;
use agentd::fleet::conn::PgSettings;
use agentd::fleet::{schema, ship};

fn event(i: u64) -> AuditEvent {
    let mut e = AuditEvent::new(RecordKind::ToolCall, "read_chart");
    e.operator = "olivia".into();
    e.session = "C1".into();
    e.active_message_id = format!("{i:032x}");
    e.call_id = format!("call-{i}");
    e.target = r#"{"path":"/srv/charts/p1.txt"}"#.into();
    e.decision = "allow".into();
    e.reason_code = "ok".into();
    e.policy_id = "demo@0123456789ab".into();
    e.latency_us = 40;
    e
}

fn count(pg: &fleet_support::PgCluster, hosts: &str) -> u64 {
    pg.sql(&format!(
        "SELECT count(*) FROM agentd_audit WHERE host_id LIKE '{hosts}'"
    ))
    .parse()
    .unwrap()
}

/// Lag percentiles (ms) of rows of hosts LIKE `hosts`.
fn lag(pg: &fleet_support::PgCluster, hosts: &str) -> (f64, f64) {
    let out = pg.sql(&format!(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l)
         FROM (SELECT extract(epoch FROM shipped_at - ts::timestamptz) * 1000 AS l
               FROM agentd_audit WHERE host_id LIKE '{hosts}') x"
    ));
    let mut it = out.split('|').map(|v| v.parse::<f64>().unwrap_or(f64::NAN));
    (it.next().unwrap(), it.next().unwrap())
}

/// Appends `rows` to each log from its own thread (64 per group commit),
/// at most `per_sec` rows a second each (0: as fast as it goes).
fn append(logs: &[AuditLog], rows: u64, per_sec: u64) {
    std::thread::scope(|s| {
        for log in logs {
            s.spawn(move || {
                let started = Instant::now();
                let mut i = 0;
                while i < rows {
                    let n = 64.min(rows - i);
                    let evs = (i..i + n).map(event).collect();
                    for r in log.append_all_blocking(evs) {
                        r.expect("append");
                    }
                    i += n;
                    if per_sec > 0 {
                        let due = Duration::from_secs_f64(i as f64 / per_sec as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
            });
        }
    });
}

fn wait_for(pg: &fleet_support::PgCluster, hosts: &str, want: u64) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if count(pg, hosts) >= want {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "shipping stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let hosts = args.first().copied().unwrap_or(4);
    let rows = args.get(1).copied().unwrap_or(5_000);
    let pg = match fleet_support::PgCluster::start() {
        Ok(c) => c,
        Err(why) => {
            println!("SKIP fleet bench: {why}");
            return;
        }
    };
    let conninfo = std::fs::read_to_string(pg.conninfo_file()).unwrap();
    let settings = PgSettings::parse(conninfo.trim(), Duration::from_secs(10)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The tables first, so the progress queries below find them.
    rt.block_on(async {
        let mut c = settings.connect().await.unwrap();
        schema::ensure(&settings, &mut c.client).await.unwrap();
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let dirs: Vec<tempfile::TempDir> = (0..hosts).map(|_| tempfile::tempdir().unwrap()).collect();
    let logs: Vec<AuditLog> = dirs
        .iter()
        .map(|d| AuditLog::open(d.path(), Durability::Normal).unwrap())
        .collect();
    let shippers: Vec<Arc<ship::Shipper>> = rt.block_on(async {
        logs.iter()
            .enumerate()
            .map(|(i, l)| ship::start(settings.clone(), format!("bench-{i}"), l, stop_rx.clone()))
            .collect()
    });
    // The audit_open rows: wait until they are there (connected, tables made).
    wait_for(&pg, "bench-%", hosts);
    println!("fleet shipping: {hosts} hosts into one PostgreSQL 15 (Unix socket, fsync=off test cluster)");

    let t0 = Instant::now();
    append(&logs, rows, 0);
    let appended = t0.elapsed();
    let done = wait_for(&pg, "bench-%", hosts * (rows + 1));
    let total = hosts * rows;
    let secs = (done - t0).as_secs_f64();
    let (p50, p99) = lag(&pg, "bench-%");
    println!(
        "  burst:  {total} rows appended in {:.2} s ({:.0} rows/s local), shipped in {secs:.2} s: {:.0} rows/s; lag p50 {p50:.1} ms p99 {p99:.1} ms",
        appended.as_secs_f64(),
        total as f64 / appended.as_secs_f64(),
        total as f64 / secs
    );

    // Steady: each host at 500 rows/s for 4 s; lag of those rows only.
    let before = count(&pg, "bench-%");
    let mark = pg.sql("SELECT now()");
    let steady_rows = 2_000;
    append(&logs, steady_rows, 500);
    wait_for(&pg, "bench-%", before + hosts * steady_rows);
    let out = pg.sql(&format!(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l)
         FROM (SELECT extract(epoch FROM shipped_at - ts::timestamptz) * 1000 AS l
               FROM agentd_audit WHERE host_id LIKE 'bench-%' AND ts::timestamptz > '{mark}') x"
    ));
    println!("  steady: {hosts} hosts x 500 rows/s for 4 s: lag p50|p99 {out} ms");

    // Floor: the same statement, one client, batches of 1000, nothing else.
    let records: Vec<Record> = {
        let conn = agentd::audit::store::open_ro(logs[0].db_path()).unwrap();
        agentd::audit::store::records_after(&conn, logs[0].db_path(), 0, rows).unwrap()
    };
    let floor = rt.block_on(async {
        let c = settings.connect().await.unwrap();
        let refs: Vec<&Record> = records.iter().collect();
        let t = Instant::now();
        for h in 0..hosts {
            let host = format!("floor-{h}");
            for chunk in refs.chunks(1000) {
                ship::insert_batch(&settings, &c.client, &host, chunk)
                    .await
                    .unwrap();
            }
        }
        t.elapsed()
    });
    let n = hosts * records.len() as u64;
    println!(
        "  floor:  {n} rows by one client, batched INSERT … unnest (1000 a statement): {:.2} s, {:.0} rows/s",
        floor.as_secs_f64(),
        n as f64 / floor.as_secs_f64()
    );
    let shipped: u64 = shippers
        .iter()
        .map(|s| s.stats.rows.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    println!("  shippers inserted {shipped} rows in all");
    let _ = stop_tx.send(true);
    for l in &logs {
        let _ = l.shutdown();
    }
    rt.shutdown_timeout(Duration::from_secs(2));
}
