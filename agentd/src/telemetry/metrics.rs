//! The metric families and how audit rows and state snapshots feed them.
//! Decisions are counted from the committed audit rows (every decision is
//! one), so the hot paths carry no metric code; gauges are read at scrape.
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram as HistogramProto, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder as _, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::audit::{AppendStats, Record, RecordKind, COMMIT_BUCKETS_US};

/// Why a metric could not be registered or rendered.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Decision-latency buckets, seconds (the gateway decides in microseconds;
/// approvals wait for minutes).
const DECISION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 1.0, 10.0, 300.0,
];

/// What the daemon's parts say at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The audit writer's totals (with its commit-time buckets).
    pub audit: AppendStats,
    /// Kernel grants installed for tool calls, per agent.
    pub grants_live: Vec<(String, u64)>,
    /// Kernel and supervisor counters (`Enforcer::counters`), if enforcing.
    pub kernel: Option<crate::enforce::Counters>,
    /// Receipts waiting to be rendered, and those given up.
    pub receipts_pending: u64,
    /// Receipts whose rendering failed.
    pub receipts_failed: u64,
    /// Receipts voided (their allow was overturned after its row).
    pub receipts_void: u64,
    /// Receipts the worker rendered since start, and the time it spent.
    pub receipts_rendered: crate::receipt::queue::RenderStats,
    /// Fleet mode: how far audit shipping to PostgreSQL trails the log.
    pub shipping: Option<Shipping>,
}

/// Audit shipping's position against the log's head.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shipping {
    /// The highest seq PostgreSQL holds for this host.
    pub shipped_seq: u64,
    /// Committed rows not shipped yet.
    pub lag_rows: u64,
    /// Age of the oldest row not shipped yet, seconds (0: none waits).
    pub lag_secs: f64,
}

/// Every family agentd exports.
pub struct Metrics {
    registry: Registry,
    decisions: IntCounterVec,
    kernel_denials: IntCounterVec,
    decision_latency: HistogramVec,
    audit_seq: IntGauge,
    grants_live: IntGaugeVec,
    kernel: IntGaugeVec,
    receipts: IntGaugeVec,
    receipt_worker: GaugeVec,
    fleet_shipping: GaugeVec,
    audit_commits: AuditCommits,
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Result<Self, MetricsError> {
        let m = Self {
            registry: Registry::new_custom(Some("agentd".into()), None)?,
            decisions: int_counters(
                "decisions_total",
                "Audited decisions by row kind, result and reason code.",
                &["kind", "decision", "reason"],
            )?,
            kernel_denials: int_counters(
                "kernel_denials_total",
                "Kernel-layer denials (and audit-only would-denies) by hook.",
                &["hook", "decision"],
            )?,
            decision_latency: HistogramVec::new(
                HistogramOpts::new(
                    "decision_latency_seconds",
                    "Time to decide, as audited (tool calls include an approval wait).",
                )
                .buckets(DECISION_BUCKETS.to_vec()),
                &["kind"],
            )?,
            audit_seq: IntGauge::new(
                "audit_head_seq",
                "Sequence number of the newest audit row counted.",
            )?,
            grants_live: int_gauges(
                "grants_live",
                "Kernel grants installed for tool calls, per agent.",
                &["agent"],
            )?,
            kernel: int_gauges(
                "enforcer_events",
                "Enforcer totals since it started (kernel allowed/denied, events dropped or suppressed, exec kills, supervisor notifications and decisions).",
                &["event"],
            )?,
            receipts: int_gauges(
                "receipt_queue",
                "Receipt queue rows by state (pending = backlog).",
                &["state"],
            )?,
            receipt_worker: GaugeVec::new(
                Opts::new(
                    "receipt_worker",
                    "The receipt render worker since start: receipts rendered, seconds spent rendering, receipts per second of one busy core.",
                ),
                &["stat"],
            )?,
            fleet_shipping: GaugeVec::new(
                Opts::new(
                    "fleet_shipping",
                    "Fleet mode: audit shipping to PostgreSQL (shipped_seq, lag_rows, lag_seconds: age of the oldest row not shipped).",
                ),
                &["stat"],
            )?,
            audit_commits: AuditCommits::new(),
        };
        m.register_all()?;
        Ok(m)
    }

    /// Registers the families in the registry (in the order a scrape
    /// lists them).
    fn register_all(&self) -> Result<(), MetricsError> {
        for c in [
            Box::new(self.decisions.clone()) as Box<dyn Collector>,
            Box::new(self.kernel_denials.clone()),
            Box::new(self.decision_latency.clone()),
            Box::new(self.audit_seq.clone()),
            Box::new(self.grants_live.clone()),
            Box::new(self.kernel.clone()),
            Box::new(self.receipts.clone()),
            Box::new(self.receipt_worker.clone()),
            Box::new(self.fleet_shipping.clone()),
            Box::new(self.audit_commits.clone()),
        ] {
            self.registry.register(c)?;
        }
        Ok(())
    }

    /// Counts one committed audit row.
    pub fn observe(&self, r: &Record) {
        let e = &r.event;
        let kind = e.kind.as_str();
        self.decisions
            .with_label_values(&[kind, &e.decision, &e.reason_code])
            .inc();
        if e.kind == RecordKind::Kernel && matches!(e.decision.as_str(), "deny" | "would_deny") {
            self.kernel_denials
                .with_label_values(&[&e.action, &e.decision])
                .inc();
        }
        if matches!(e.kind, RecordKind::ToolCall | RecordKind::Message) {
            self.decision_latency
                .with_label_values(&[kind])
                .observe(e.latency_us as f64 / 1e6);
        }
        self.audit_seq.set(i64::try_from(r.seq).unwrap_or(i64::MAX));
    }

    /// The exposition text (Prometheus text format 0.0.4) with `now`'s gauges.
    pub fn render(&self, now: &Snapshot) -> Result<String, MetricsError> {
        self.grants_live.reset();
        for (agent, n) in &now.grants_live {
            self.grants_live.with_label_values(&[agent]).set(gauge(*n));
        }
        self.kernel.reset();
        if let Some(k) = &now.kernel {
            for (event, n) in [
                ("kernel_allowed", k.kernel_allowed),
                ("kernel_denied", k.kernel_denied),
                ("events_dropped", k.events_dropped),
                ("events_suppressed", k.events_suppressed),
                ("exec_killed", k.exec_killed),
                ("reads_by_scope_hint", k.reads_by_scope_hint),
                ("notifications", k.notifications),
                ("supervisor_allowed", k.supervisor_allowed),
                ("supervisor_denied", k.supervisor_denied),
            ] {
                self.kernel.with_label_values(&[event]).set(gauge(n));
            }
        }
        self.receipts
            .with_label_values(&["pending"])
            .set(gauge(now.receipts_pending));
        self.receipts
            .with_label_values(&["failed"])
            .set(gauge(now.receipts_failed));
        self.receipts
            .with_label_values(&["void"])
            .set(gauge(now.receipts_void));
        let r = &now.receipts_rendered;
        for (stat, v) in [
            ("rendered", r.rendered as f64),
            ("render_seconds", r.render_secs),
            ("per_core_per_second", r.per_core_per_sec()),
        ] {
            self.receipt_worker.with_label_values(&[stat]).set(v);
        }
        self.fleet_shipping.reset();
        if let Some(s) = &now.shipping {
            for (stat, v) in [
                ("shipped_seq", s.shipped_seq as f64),
                ("lag_rows", s.lag_rows as f64),
                ("lag_seconds", s.lag_secs),
            ] {
                self.fleet_shipping.with_label_values(&[stat]).set(v);
            }
        }
        self.audit_commits.set(&now.audit);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// An integer counter family with the given labels.
fn int_counters(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    Ok(IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// An integer gauge family with the given labels.
fn int_gauges(name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
    Ok(IntGaugeVec::new(Opts::new(name, help), labels)?)
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The audit writer's commit-time histogram, kept by the writer itself
/// (atomics beside its other totals) and exported as it stands.
#[derive(Clone)]
struct AuditCommits {
    desc: Desc,
    now: std::sync::Arc<std::sync::Mutex<AppendStats>>,
}

impl AuditCommits {
    fn new() -> Self {
        let desc = Desc::new(
            "audit_commit_seconds".into(),
            "Time the audit writer took to commit one group of rows (one transaction).".into(),
            vec![],
            Default::default(),
        )
        .expect("a constant, valid descriptor");
        Self {
            desc,
            now: Default::default(),
        }
    }

    fn set(&self, s: &AppendStats) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = *s;
    }
}

impl Collector for AuditCommits {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = *self.now.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = HistogramProto::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(COMMIT_BUCKETS_US.len());
        for (bound, n) in COMMIT_BUCKETS_US.iter().zip(s.commit_buckets) {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_upper_bound(*bound as f64 / 1e6);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        let total = cumulative + s.commit_buckets[COMMIT_BUCKETS_US.len()];
        h.set_bucket(buckets);
        h.set_sample_count(total);
        h.set_sample_sum(s.commit_us_sum as f64 / 1e6);
        let mut m = Metric::default();
        m.set_histogram(h);
        let mut mf = MetricFamily::default();
        mf.set_name(self.desc.fq_name.clone());
        mf.set_help(self.desc.help.clone());
        mf.set_field_type(MetricType::HISTOGRAM);
        mf.set_metric(vec![m]);
        vec![mf]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;

    fn row(seq: u64, kind: RecordKind, action: &str, decision: &str, reason: &str) -> Record {
        let mut e = AuditEvent::new(kind, action);
        e.decision = decision.into();
        e.reason_code = reason.into();
        e.latency_us = 40;
        Record::seal(seq, "2026-12-02T10:00:00.000000Z".into(), e, String::new())
    }

    #[test]
    fn rows_become_counters_and_snapshots_gauges() {
        let m = Metrics::new().unwrap();
        m.observe(&row(1, RecordKind::ToolCall, "shell", "allow", "ok"));
        m.observe(&row(
            2,
            RecordKind::ToolCall,
            "shell",
            "deny",
            "role_not_in_allowlist",
        ));
        m.observe(&row(
            3,
            RecordKind::ToolCall,
            "shell",
            "deny",
            "role_not_in_allowlist",
        ));
        m.observe(&row(4, RecordKind::Kernel, "file_open", "deny", "no_grant"));
        let mut audit = AppendStats::default();
        audit.commit_buckets[2] = 3;
        audit.commit_buckets[COMMIT_BUCKETS_US.len()] = 1;
        audit.commit_us_sum = 2_000_900;
        let text = m
            .render(&Snapshot {
                audit,
                grants_live: vec![("claude".into(), 2)],
                receipts_pending: 5,
                receipts_rendered: crate::receipt::queue::RenderStats {
                    rendered: 10,
                    render_secs: 0.04,
                },
                ..Default::default()
            })
            .unwrap();
        for line in [
            r#"agentd_receipt_worker{stat="rendered"} 10"#,
            r#"agentd_receipt_worker{stat="per_core_per_second"} 250"#,
            r#"agentd_decisions_total{decision="deny",kind="tool_call",reason="role_not_in_allowlist"} 2"#,
            r#"agentd_decisions_total{decision="allow",kind="tool_call",reason="ok"} 1"#,
            r#"agentd_kernel_denials_total{decision="deny",hook="file_open"} 1"#,
            r#"agentd_decision_latency_seconds_count{kind="tool_call"} 3"#,
            r#"agentd_grants_live{agent="claude"} 2"#,
            r#"agentd_receipt_queue{state="pending"} 5"#,
            "agentd_audit_head_seq 4",
            r#"agentd_audit_commit_seconds_bucket{le="0.0005"} 3"#,
            r#"agentd_audit_commit_seconds_bucket{le="1"} 3"#,
            r#"agentd_audit_commit_seconds_bucket{le="+Inf"} 4"#,
            "agentd_audit_commit_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // A later snapshot replaces the gauges (an agent gone is gone).
        let text = m.render(&Snapshot::default()).unwrap();
        assert!(!text.contains("claude"), "{text}");
    }
}
