//! A 100-host fleet shipping into one PostgreSQL (a throwaway local
//! cluster on a Unix socket): each simulated host is a lightweight writer
//! with its own connection that chains audit records (`Record::seal`) and
//! ships them with the shipper's own statement (`ship::insert_batch`),
//! waking every 100 ms like the shipper's follower, its rows stamped with
//! the times they were committed over that interval. Printed: rows/s
//! sustained at a steady offered load and flat out, the shipping lag
//! (commit on the host → row in PostgreSQL, p50/p99), PostgreSQL's size
//! per million rows (`pg_total_relation_size`, indexes included), beside
//! the floor: one client inserting with the same statement, nothing else.
//! Under a minute. `cargo bench -p agentd --bench fleet_scale [-- HOSTS RATE]`.
#[path = "../tests/fleet_support/mod.rs"]
mod fleet_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::audit::timefmt;
use agentd::audit::{AuditEvent, Record, RecordKind, GENESIS_HASH};
use agentd::fleet::conn::PgSettings;
use agentd::fleet::{schema, ship};

/// How often a simulated host ships (the shipper's follower wakes at most
/// every 100 ms).
const TICK: Duration = Duration::from_millis(100);

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

/// One simulated host's chain.
struct Chain {
    host: String,
    seq: u64,
    prev: String,
}

impl Chain {
    /// `n` records committed evenly over the last `over` (timestamps in the past).
    fn next(&mut self, n: u64, over: Duration) -> Vec<Record> {
        let now = timefmt::parse_micros(&timefmt::now_rfc3339_micros()).unwrap();
        let span = over.as_micros() as i64;
        (0..n)
            .map(|j| {
                self.seq += 1;
                let at = now - span + span * (j as i64 + 1) / n as i64;
                let r = Record::seal(
                    self.seq,
                    timefmt::format_micros(at),
                    event(self.seq),
                    std::mem::take(&mut self.prev),
                );
                self.prev = r.hash.clone();
                r
            })
            .collect()
    }
}

/// Runs `hosts` writers for `secs`; `per_tick` rows each per tick (0: flat
/// out, batches of 500 back to back). Returns rows inserted.
async fn run(pgs: &PgSettings, prefix: &str, hosts: usize, per_tick: u64, secs: u64) -> u64 {
    let total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for h in 0..hosts {
        let (pgs, total) = (pgs.clone(), total.clone());
        let host = format!("{prefix}-{h:03}");
        tasks.push(tokio::spawn(async move {
            let conn = pgs.connect().await.expect("connect");
            let mut chain = Chain {
                host,
                seq: 0,
                prev: GENESIS_HASH.to_owned(),
            };
            let end = Instant::now() + Duration::from_secs(secs);
            let mut tick = tokio::time::interval(TICK);
            // Hosts do not all wake at once.
            tokio::time::sleep(TICK * h as u32 / hosts as u32).await;
            while Instant::now() < end {
                let rows = if per_tick == 0 {
                    chain.next(500, Duration::from_millis(1))
                } else {
                    tick.tick().await;
                    chain.next(per_tick, TICK)
                };
                let refs: Vec<&Record> = rows.iter().collect();
                let n = ship::insert_batch(&pgs, &conn.client, &chain.host, &refs)
                    .await
                    .expect("insert");
                total.fetch_add(n.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total.load(Ordering::Relaxed)
}

fn lag(pg: &fleet_support::PgCluster, prefix: &str) -> String {
    pg.sql(&format!(
        "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY l)::numeric, 1) || ' ms / ' ||
                round(percentile_cont(0.99) WITHIN GROUP (ORDER BY l)::numeric, 1) || ' ms'
         FROM (SELECT extract(epoch FROM shipped_at - ts::timestamptz) * 1000 AS l
               FROM agentd_audit WHERE host_id LIKE '{prefix}-%') x"
    ))
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let hosts = args.first().copied().unwrap_or(100) as usize;
    let rate = args.get(1).copied().unwrap_or(100);
    let pg = match fleet_support::PgCluster::start() {
        Ok(c) => c,
        Err(why) => {
            println!("SKIP fleet_scale bench: {why}");
            return;
        }
    };
    let conninfo = std::fs::read_to_string(pg.conninfo_file()).unwrap();
    let pgs = PgSettings::parse(conninfo.trim(), Duration::from_secs(30)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = pgs.connect().await.unwrap();
        schema::ensure(&pgs, &mut c.client).await.unwrap();
    });
    println!("fleet scale: {hosts} simulated hosts (one connection each, the shipper's INSERT … unnest) into one PostgreSQL 15 (Unix socket, fsync=off test cluster)");

    let secs = 15;
    let t = Instant::now();
    let n = rt.block_on(run(&pgs, "steady", hosts, rate / 10, secs));
    let el = t.elapsed().as_secs_f64();
    println!(
        "  steady: {hosts} hosts x {rate} rows/s offered for {secs} s: {n} rows, {:.0} rows/s sustained; lag p50 / p99 {}",
        n as f64 / el,
        lag(&pg, "steady")
    );

    let secs = 10;
    let t = Instant::now();
    let n = rt.block_on(run(&pgs, "burst", hosts, 0, secs));
    let el = t.elapsed().as_secs_f64();
    println!(
        "  flat out: {hosts} hosts, batches of 500 back to back for {secs} s: {n} rows, {:.0} rows/s",
        n as f64 / el
    );

    // Floor: one client, the same statement, batches of 1000, nothing else.
    let floor_rows = 200_000u64;
    let floor = rt.block_on(async {
        let c = pgs.connect().await.unwrap();
        let mut chain = Chain {
            host: "floor".into(),
            seq: 0,
            prev: GENESIS_HASH.to_owned(),
        };
        let batches: Vec<Vec<Record>> = (0..floor_rows / 1000)
            .map(|_| chain.next(1000, Duration::from_millis(1)))
            .collect();
        let t = Instant::now();
        for b in &batches {
            let refs: Vec<&Record> = b.iter().collect();
            ship::insert_batch(&pgs, &c.client, &chain.host, &refs)
                .await
                .unwrap();
        }
        t.elapsed()
    });
    println!(
        "  floor: {floor_rows} rows by one client, same statement (1000 a batch): {:.0} rows/s",
        floor_rows as f64 / floor.as_secs_f64()
    );
    let size = pg.sql(
        "SELECT pg_total_relation_size('agentd_audit') || ' ' || pg_relation_size('agentd_audit') || ' ' || count(*) FROM agentd_audit",
    );
    let v: Vec<f64> = size.split(' ').map(|x| x.parse().unwrap()).collect();
    println!(
        "  size: {:.0} rows in agentd_audit, {:.0} MB with indexes ({:.0} MB heap): {:.0} MB per million rows ({:.0} bytes a row)",
        v[2],
        v[0] / 1e6,
        v[1] / 1e6,
        v[0] / v[2],
        v[0] / v[2]
    );
    rt.shutdown_timeout(Duration::from_secs(2));
}
