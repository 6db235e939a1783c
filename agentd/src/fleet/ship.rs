//! Audit shipping: every committed row of this host's log, in order, into
//! `agentd_audit`, with the host's signed checkpoints. A row follower
//! (`telemetry::follow`) hands the rows over; the shipper resumes after the
//! highest seq PostgreSQL holds for this host, so a restart or an outage
//! neither loses nor repeats a row. A row already there is skipped only if
//! it is identical; a different row at the same (host, seq) is an alarm,
//! logged and audited, and never overwritten.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_postgres::Client;

use super::conn::{PgConn, PgSettings};
use super::{schema, FleetError};
use crate::audit::{store, AuditEvent, AuditLog, Checkpoint, Record, RecordKind};
use crate::telemetry::follow::{follow, RowConsumer};

/// Audit action of a fleet alarm row.
pub const ALARM_ACTION: &str = "fleet_alarm";
/// Reason code: PostgreSQL holds a different row at one of this host's seqs.
pub const REASON_ROW_CONFLICT: &str = "fleet_row_conflict";
/// Reason code: PostgreSQL has another public key registered for this host id.
pub const REASON_KEY_CONFLICT: &str = "fleet_key_conflict";

/// Counters of a shipper (for `agentd` logs and the benchmark).
#[derive(Debug, Default)]
pub struct ShipStats {
    /// Rows inserted into PostgreSQL.
    pub rows: AtomicU64,
    /// Rows PostgreSQL already held, identical (re-sent after an outage).
    pub already_there: AtomicU64,
    /// Rows PostgreSQL held differently (alarms).
    pub conflicts: AtomicU64,
    /// Checkpoints inserted.
    pub checkpoints: AtomicU64,
}

struct State {
    conn: Option<PgConn>,
    /// Highest seq PostgreSQL holds for this host.
    shipped: u64,
    /// Highest checkpoint count PostgreSQL holds for this host.
    cp_shipped: u64,
    /// Seqs already alarmed on (one alarm per row, not per retry).
    alarmed: BTreeSet<u64>,
    key_alarmed: bool,
}

/// The row consumer that ships to PostgreSQL.
pub struct Shipper {
    pg: PgSettings,
    host_id: String,
    public_key: String,
    db: PathBuf,
    audit: AuditLog,
    rt: tokio::runtime::Handle,
    state: Mutex<State>,
    resume: Mutex<Option<u64>>,
    /// The highest seq PostgreSQL holds for this host, for `/metrics`.
    position: crate::telemetry::ShippedSeq,
    /// What was shipped so far.
    pub stats: ShipStats,
}

/// Starts shipping `audit`'s rows as `host_id`; returns the shipper (its
/// counters) while a task follows the log until `stop`.
pub fn start(
    pg: PgSettings,
    host_id: String,
    audit: &AuditLog,
    stop: watch::Receiver<bool>,
) -> Arc<Shipper> {
    let shipper = Arc::new(Shipper {
        pg,
        host_id,
        public_key: audit.public_key_pem(),
        db: audit.db_path().to_owned(),
        audit: audit.clone(),
        rt: tokio::runtime::Handle::current(),
        state: Mutex::new(State {
            conn: None,
            shipped: 0,
            cp_shipped: 0,
            alarmed: BTreeSet::new(),
            key_alarmed: false,
        }),
        resume: Mutex::new(None),
        position: Default::default(),
        stats: ShipStats::default(),
    });
    // From the start of the local log: the first batch learns where
    // PostgreSQL stands and the follower jumps there (`resume_after`).
    tokio::spawn(follow(
        shipper.clone(),
        audit.db_path().to_owned(),
        0,
        audit.subscribe(),
        stop,
    ));
    shipper
}

impl Shipper {
    /// The highest seq PostgreSQL holds for this host (0 before the first
    /// contact), kept current as batches land.
    pub fn position(&self) -> crate::telemetry::ShippedSeq {
        self.position.clone()
    }
}

impl RowConsumer for Shipper {
    fn name(&self) -> &'static str {
        "fleet"
    }

    fn take(&self, rows: &[Record]) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.rt.block_on(self.ship(&mut st, rows));
        let alarms = match result {
            Ok(alarms) => alarms,
            Err(FleetError::KeyConflict { registered }) => {
                let first = !std::mem::replace(&mut st.key_alarmed, true);
                st.conn = None;
                drop(st);
                if first {
                    self.alarm(
                        REASON_KEY_CONFLICT,
                        format!("host_id={} registered_key_fp={registered}", self.host_id),
                    );
                }
                return Err(format!(
                    "PostgreSQL has another checkpoint key registered for host `{}`; \
                     not shipping (remove its agentd_hosts row if this host was reinstalled)",
                    self.host_id
                ));
            }
            Err(e) => {
                // Reconnect next time; the follower retries the same rows.
                st.conn = None;
                return Err(e.to_string());
            }
        };
        drop(st);
        for seq in alarms {
            self.alarm(
                REASON_ROW_CONFLICT,
                format!("host_id={} seq={seq}", self.host_id),
            );
        }
        Ok(())
    }

    fn resume_after(&self) -> Option<u64> {
        self.resume.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Shipper {
    /// Ships what of `rows` PostgreSQL does not hold yet; returns the seqs
    /// it holds differently (to alarm on).
    async fn ship(&self, st: &mut State, rows: &[Record]) -> Result<Vec<u64>, FleetError> {
        if st.conn.is_none() {
            self.connect(st).await?;
            if rows.first().is_some_and(|r| r.seq > st.shipped + 1)
                && self.local_has(st.shipped + 1)
            {
                // PostgreSQL is behind what the follower read (restored,
                // or emptied): go back and send from where it stands.
                tracing::warn!(host_id = %self.host_id, from = st.shipped + 1,
                    "fleet: PostgreSQL is behind this host's shipping position; re-sending");
                return Ok(Vec::new());
            }
        }
        // Taken out while in use; put back only when everything succeeded.
        let conn = st.conn.take().ok_or(FleetError::Timeout("connecting"))?;
        let new: Vec<&Record> = rows.iter().filter(|r| r.seq > st.shipped).collect();
        let mut alarms = Vec::new();
        if let Some(last) = new.last() {
            if new[0].seq > st.shipped + 1 {
                tracing::warn!(host_id = %self.host_id, from = st.shipped + 1, to = new[0].seq - 1,
                    "fleet: rows missing from the local log (pruned before they were shipped)");
            }
            for seq in self.insert_rows(&conn.client, &new).await? {
                if st.alarmed.insert(seq) {
                    alarms.push(seq);
                }
            }
            st.shipped = last.seq;
            self.position.store(last.seq, Ordering::Relaxed);
        }
        self.ship_checkpoints(&conn.client, st).await?;
        st.conn = Some(conn);
        Ok(alarms)
    }

    /// Connects, creates the tables, registers the key, reads the position.
    async fn connect(&self, st: &mut State) -> Result<(), FleetError> {
        let mut conn = self.pg.connect().await?;
        schema::ensure(&self.pg, &mut conn.client).await?;
        let c = &conn.client;
        self.pg
            .bounded(
                "registering the host",
                c.execute(
                    "INSERT INTO agentd_hosts (host_id, public_key) VALUES ($1, $2)
                     ON CONFLICT (host_id) DO NOTHING",
                    &[&self.host_id, &self.public_key],
                ),
            )
            .await?;
        let registered: String = self
            .pg
            .bounded(
                "reading the host's key",
                c.query_one(
                    "SELECT public_key FROM agentd_hosts WHERE host_id = $1",
                    &[&self.host_id],
                ),
            )
            .await?
            .get(0);
        if registered.trim() != self.public_key.trim() {
            let fp = crate::audit::checkpoint::parse_public_key_pem(&registered)
                .map(|k| crate::audit::checkpoint::fingerprint(&k))
                .unwrap_or_else(|_| "unreadable".into());
            return Err(FleetError::KeyConflict { registered: fp });
        }
        let row = self
            .pg
            .bounded(
                "reading the shipping position",
                c.query_one(
                    "SELECT coalesce((SELECT max(seq) FROM agentd_audit WHERE host_id = $1), 0),
                            coalesce((SELECT max(count) FROM agentd_checkpoints WHERE host_id = $1), 0)",
                    &[&self.host_id],
                ),
            )
            .await?;
        st.shipped = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        st.cp_shipped = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
        self.position.store(st.shipped, Ordering::Relaxed);
        *self.resume.lock().unwrap_or_else(|p| p.into_inner()) = Some(st.shipped);
        tracing::info!(host_id = %self.host_id, after = st.shipped, "fleet: shipping audit rows to PostgreSQL");
        st.conn = Some(conn);
        Ok(())
    }

    /// Whether the local log still holds row `seq`.
    fn local_has(&self, seq: u64) -> bool {
        store::open_ro(&self.db)
            .and_then(|c| store::record_at(&c, &self.db, seq))
            .is_ok_and(|r| r.is_some())
    }

    /// Inserts `rows` in one statement; returns the seqs PostgreSQL held
    /// with different contents.
    async fn insert_rows(&self, c: &Client, rows: &[&Record]) -> Result<Vec<u64>, FleetError> {
        let inserted = insert_batch(&self.pg, c, &self.host_id, rows).await?;
        self.stats
            .rows
            .fetch_add(inserted.len() as u64, Ordering::Relaxed);
        if inserted.len() == rows.len() {
            return Ok(Vec::new());
        }
        let fresh: BTreeSet<i64> = inserted.iter().map(|r| r.get(0)).collect();
        let held: Vec<i64> = rows
            .iter()
            .map(|r| r.seq as i64)
            .filter(|s| !fresh.contains(s))
            .collect();
        let there = self
            .pg
            .bounded(
                "reading rows already shipped",
                c.query(
                    &format!(
                        "SELECT {} FROM agentd_audit WHERE host_id = $1 AND seq = ANY($2)",
                        super::verify::ROW_COLUMNS
                    ),
                    &[&self.host_id, &held],
                ),
            )
            .await?;
        let mut conflicts = Vec::new();
        for row in &there {
            let theirs = super::verify::record_of(row);
            let seq = row.get::<_, i64>("seq") as u64;
            let ours = rows.iter().find(|r| r.seq == seq);
            if matches!((&theirs, ours), (Ok(t), Some(o)) if t == *o) {
                self.stats.already_there.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(host_id = %self.host_id, seq,
                    "fleet: PostgreSQL holds a different audit row at this seq; not overwritten");
                conflicts.push(seq);
            }
        }
        Ok(conflicts)
    }

    /// Inserts the local checkpoints PostgreSQL lacks that cover shipped rows.
    async fn ship_checkpoints(&self, c: &Client, st: &mut State) -> Result<(), FleetError> {
        let cps: Vec<Checkpoint> = store::open_ro(&self.db)
            .and_then(|conn| store::checkpoints(&conn, &self.db))
            .map_err(|e| FleetError::Local(e.to_string()))?
            .into_iter()
            .filter(|cp| cp.count > st.cp_shipped && cp.count <= st.shipped)
            .collect();
        for cp in &cps {
            self.pg
                .bounded(
                    "inserting a checkpoint",
                    c.execute(
                        "INSERT INTO agentd_checkpoints (host_id, count, head_hash, ts, signature)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (host_id, count) DO NOTHING",
                        &[
                            &self.host_id,
                            &(cp.count as i64),
                            &cp.head_hash,
                            &cp.timestamp,
                            &cp.signature,
                        ],
                    ),
                )
                .await?;
            st.cp_shipped = cp.count;
            self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Audits a fleet alarm on this host (the row is shipped like any other).
    fn alarm(&self, reason: &str, target: String) {
        let mut ev = AuditEvent::new(RecordKind::Lifecycle, ALARM_ACTION);
        ev.decision = "deny".into();
        ev.reason_code = reason.into();
        ev.target = target;
        if let Err(e) = self.audit.append_blocking(ev) {
            tracing::error!(error = %e, reason, "fleet: could not audit an alarm");
        }
    }
}

/// Inserts `rows` as `host_id`'s in one statement (rows already there are
/// left as they are); returns the seqs inserted. The shipper's statement,
/// public for the benchmark's floor.
pub async fn insert_batch(
    pg: &PgSettings,
    c: &Client,
    host_id: &String,
    rows: &[&Record],
) -> Result<Vec<tokio_postgres::Row>, FleetError> {
    let cols = Columns::of(rows);
    pg.bounded(
        "inserting audit rows",
        c.query(
            "INSERT INTO agentd_audit (host_id, seq, ts, kind, operator, session,
                active_message_id, call_id, action, target, decision, reason_code,
                policy_id, latency_us, agent, pid, access, prev_hash, hash)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],
                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                $12::text[], $13::text[], $14::bigint[], $15::text[], $16::bigint[],
                $17::text[], $18::text[], $19::text[])
             ON CONFLICT (host_id, seq) DO NOTHING
             RETURNING seq",
            &cols.params(host_id),
        ),
    )
    .await
}

/// The rows as column arrays, for one `unnest` insert.
struct Columns<'a> {
    seq: Vec<i64>,
    text: [Vec<&'a str>; 15],
    latency: Vec<i64>,
    pid: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn of(rows: &[&'a Record]) -> Self {
        let mut c = Columns {
            seq: Vec::with_capacity(rows.len()),
            text: Default::default(),
            latency: Vec::with_capacity(rows.len()),
            pid: Vec::with_capacity(rows.len()),
        };
        for r in rows {
            let e = &r.event;
            c.seq.push(r.seq as i64);
            c.latency.push(e.latency_us as i64);
            c.pid.push(i64::from(e.pid));
            let fields = [
                r.timestamp.as_str(),
                e.kind.as_str(),
                &e.operator,
                &e.session,
                &e.active_message_id,
                &e.call_id,
                &e.action,
                &e.target,
                &e.decision,
                &e.reason_code,
                &e.policy_id,
                &e.agent,
                &e.access,
                &r.prev_hash,
                &r.hash,
            ];
            for (col, v) in c.text.iter_mut().zip(fields) {
                col.push(v);
            }
        }
        c
    }

    /// Parameters $1..$19 in the insert's column order.
    fn params<'b>(
        &'b self,
        host_id: &'b String,
    ) -> Vec<&'b (dyn tokio_postgres::types::ToSql + Sync)>
    where
        'a: 'b,
    {
        let t = &self.text;
        vec![
            host_id,
            &self.seq,
            &t[0],
            &t[1],
            &t[2],
            &t[3],
            &t[4],
            &t[5],
            &t[6],
            &t[7],
            &t[8],
            &t[9],
            &t[10],
            &self.latency,
            &t[11],
            &self.pid,
            &t[12],
            &t[13],
            &t[14],
        ]
    }
}
