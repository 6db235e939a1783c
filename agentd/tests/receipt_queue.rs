//! The persisted receipt queue: durable enqueue, survives reopen, worker
//! renders verifiable receipts, unknown operators fail with a reason.
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::receipt::{self, queue::KeyLookup, ExactCheck, ReceiptClaims, ReceiptQueue};

const KEY: &[u8] = b"carol-hmac-key-0123456789abcdef0";

fn claims(i: u64, operator: &str) -> ReceiptClaims {
    ReceiptClaims {
        seq: i,
        row_hash: format!("{i:064x}"),
        operator: operator.into(),
        call_id: format!("call-{i}"),
        action: "shell.exec".into(),
        timestamp: "2026-11-22T08:10:00.000000Z".into(),
    }
}

fn keys() -> KeyLookup {
    Arc::new(|op: &str| (op == "carol").then(|| KEY.to_vec()))
}

#[test]
fn queue_survives_reopen_and_worker_renders() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = ReceiptQueue::open(dir.path()).unwrap();
        for i in 1..=3 {
            q.enqueue(&claims(i, "carol")).unwrap();
        }
        q.enqueue(&claims(4, "nobody")).unwrap();
        // Same call, same claims: idempotent. Different claims: refused.
        q.enqueue(&claims(1, "carol")).unwrap();
        let mut other = claims(1, "carol");
        other.seq = 99;
        assert_eq!(
            q.enqueue(&other).unwrap_err().reason_code(),
            "duplicate_call_id"
        );
        // Dropped without any worker: as if the daemon stopped here.
    }
    let q = ReceiptQueue::open(dir.path()).unwrap();
    assert_eq!(q.stats().unwrap().pending, 4);

    let worker = q.spawn_worker(keys());
    q.enqueue(&claims(5, "carol")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = q.stats().unwrap();
        if s.pending == 0 {
            assert_eq!((s.done, s.failed), (4, 1));
            break;
        }
        assert!(Instant::now() < deadline, "worker did not finish: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    q.shutdown();
    worker.join().unwrap();

    for i in [1u64, 2, 3, 5] {
        let path = q.receipt_path(&format!("call-{i}"));
        let png = std::fs::read(&path).unwrap();
        let r = receipt::verify(&png, KEY).unwrap();
        assert_eq!(r.exact, ExactCheck::Valid);
        assert_eq!(r.document.unwrap().claims, claims(i, "carol"));
        assert!(r.watermark.verified);
    }
    assert!(!q.receipt_path("call-4").exists());
    let why = q.failure_of("call-4").unwrap().unwrap();
    assert!(why.starts_with("operator_key_unknown"), "{why}");
}

#[test]
fn bad_claims_are_refused_at_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let q = ReceiptQueue::open(dir.path()).unwrap();
    let mut c = claims(1, "carol");
    c.call_id = "a/b".into();
    assert_eq!(q.enqueue(&c).unwrap_err().reason_code(), "invalid_call_id");
    assert_eq!(q.stats().unwrap().pending, 0);
}

#[test]
fn drain_renders_on_the_calling_thread() {
    let dir = tempfile::tempdir().unwrap();
    let q = ReceiptQueue::open(dir.path()).unwrap();
    q.enqueue(&claims(7, "carol")).unwrap();
    assert_eq!(q.drain(&keys()).unwrap(), 1);
    assert_eq!(q.stats().unwrap().done, 1);
    assert!(q.receipt_path("call-7").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(q.receipt_path("call-7"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// A gateway with an audit log and the daemon's receipt hook; `after` runs
/// after the receipt hook (as the enforcement hook does in the daemon).
fn sealed_gateway(
    dir: &std::path::Path,
    after: Option<Arc<dyn agentd::gateway::AllowHook>>,
) -> (
    Arc<agentd::gateway::Gateway>,
    agentd::audit::AuditLog,
    ReceiptQueue,
    String,
    Vec<u8>,
) {
    use agentd::gateway::{Gateway, Settings};
    let audit = agentd::audit::AuditLog::open(dir, agentd::config::Durability::Normal).unwrap();
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
    let policy = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/demo.toml"),
    )
    .unwrap();
    g.load_policy(&policy, "demo").unwrap();
    let (_, key) = g.add_operator("dr-chen", &["clinician".into()]).unwrap();
    let (hook, queue) = receipt::gateway_hook::start(dir, g.clone()).unwrap();
    // Stop the daemon's worker: the test renders with drain() when it wants to.
    queue.shutdown();
    g.add_allow_hook(hook);
    if let Some(after) = after {
        g.add_allow_hook(after);
    }
    let now = agentd::gateway::unix_now();
    let m = agentd::protocol::SignedMessage::new_signed(
        &key,
        "dr-chen",
        "dm:chen",
        "receipt-seal-nonce-1",
        now,
        "read chart 42",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = rt.block_on(g.submit_message(&m)).unwrap().active_message_id;
    (g, audit, queue, id, key)
}

fn read_chart(id: &str) -> agentd::gateway::ToolCallRequest {
    agentd::gateway::ToolCallRequest {
        active_message_id: id.into(),
        action: "read_chart".into(),
        tool_use_id: None,
        arguments: serde_json::json!({"path": "/srv/charts/p-0042.json"})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn tool_call(
    g: &agentd::gateway::Gateway,
    req: &agentd::gateway::ToolCallRequest,
) -> agentd::gateway::Decision {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(g.tool_call(req, agentd::gateway::Caller::default()))
}

fn queue_row(dir: &std::path::Path, call_id: &str) -> (String, Option<String>, Option<String>) {
    let db = rusqlite::Connection::open(dir.join("audit.db")).unwrap();
    db.query_row(
        // Sealed with the audit row (pending until the worker takes it), or
        // in the render history.
        "SELECT 'pending', tag, NULL FROM receipt_seals WHERE call_id = ?1
         UNION ALL SELECT state, tag, last_error FROM receipt_queue WHERE call_id = ?1",
        [call_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

#[test]
fn an_allow_is_sealed_in_its_audit_rows_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (g, audit, queue, id, key) = sealed_gateway(dir.path(), None);
    let d = tool_call(&g, &read_chart(&id));
    assert!(d.is_allow(), "{d:?}");
    // The queue row exists as soon as the answer does, with the row's claims and their tag.
    let (state, tag, _) = queue_row(dir.path(), &d.call_id);
    assert_eq!(state, "pending");
    let tag = tag.expect("sealed with its tag");
    let keys = agentd::receipt::keys::ReceiptKeys::derive(&key).unwrap();
    let claims = ReceiptClaims {
        seq: d.audit_seq.unwrap(),
        row_hash: d.audit_hash.clone().unwrap(),
        operator: "dr-chen".into(),
        call_id: d.call_id.clone(),
        action: "read_chart".into(),
        timestamp: {
            let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
            db.query_row(
                "SELECT timestamp FROM audit_records WHERE seq = ?1",
                [d.audit_seq.unwrap() as i64],
                |r| r.get::<_, String>(0),
            )
            .unwrap()
        },
    };
    assert!(agentd::receipt::claims::tag_matches(&keys, &claims, &tag));
    // The demo policy redacts chart paths: sealed with the row's flag.
    let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    let redact: bool = db
        .query_row(
            "SELECT redact FROM receipt_seals WHERE call_id = ?1",
            [&d.call_id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(redact);
    // Rendered off the path, it verifies against the same claims, and its
    // face is the redacted one.
    let lookup: KeyLookup = Arc::new(move |op: &str| (op == "dr-chen").then(|| key.clone()));
    assert_eq!(queue.drain(&lookup).unwrap(), 1);
    let png = std::fs::read(queue.receipt_path(&d.call_id)).unwrap();
    let r = receipt::verify(&png, &keys_raw(&lookup)).unwrap();
    assert_eq!(r.exact, ExactCheck::Valid);
    assert_eq!(r.document.unwrap().claims, claims);
    let hidden = receipt::Face::of_call("", true);
    assert_eq!(
        png,
        receipt::seal_card(&keys_raw(&lookup), &claims, &hidden, 256).unwrap()
    );
    let issued = receipt::issued::read(&db, &d.call_id).unwrap();
    assert_eq!((issued.claims, issued.face), (claims, hidden));
    audit.shutdown().unwrap();
}

/// Rows of `call_id` in the seals (written with the audit row) and in the
/// render history.
fn seal_and_history_rows(dir: &std::path::Path, call_id: &str) -> (u64, u64) {
    let db = rusqlite::Connection::open(dir.join("audit.db")).unwrap();
    let count = |table: &str| -> u64 {
        db.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE call_id = ?1"),
            [call_id],
            |r| r.get(0),
        )
        .unwrap()
    };
    (count("receipt_seals"), count("receipt_queue"))
}

#[test]
fn a_sealed_receipt_moves_to_the_render_history_when_the_worker_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (g, audit, queue, id, key) = sealed_gateway(dir.path(), None);
    let d = tool_call(&g, &read_chart(&id));
    assert!(d.is_allow(), "{d:?}");
    // Sealed with its row only: the allow path writes nothing else.
    assert_eq!(seal_and_history_rows(dir.path(), &d.call_id), (1, 0));
    assert_eq!(queue.stats().unwrap().pending, 1);
    let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    let sealed = receipt::issued::read(&db, &d.call_id).unwrap();
    assert_eq!(sealed.state, "pending");
    // A tool re-enqueueing the call with other claims is refused against
    // the seal; with the same claims it is a no-op.
    let mut other = sealed.claims.clone();
    other.seq += 1;
    assert_eq!(
        queue.enqueue(&other).unwrap_err().reason_code(),
        "duplicate_call_id"
    );
    assert_eq!(seal_and_history_rows(dir.path(), &d.call_id), (0, 1));
    let lookup: KeyLookup = Arc::new(move |op: &str| (op == "dr-chen").then(|| key.clone()));
    // A second allow, still sealed, is taken by the worker with the first.
    let d2 = tool_call(&g, &read_chart(&id));
    assert!(d2.is_allow(), "{d2:?}");
    assert_eq!(seal_and_history_rows(dir.path(), &d2.call_id), (1, 0));
    assert_eq!(queue.drain(&lookup).unwrap(), 2);
    assert_eq!(seal_and_history_rows(dir.path(), &d2.call_id), (0, 1));
    let s = queue.stats().unwrap();
    assert_eq!((s.pending, s.done), (0, 2), "{s:?}");
    let rendered = receipt::issued::read(&db, &d2.call_id).unwrap();
    assert_eq!(
        (rendered.state.as_str(), rendered.tag.is_some()),
        ("done", true)
    );
    assert!(queue.receipt_path(&d2.call_id).exists());
    // Same claims as sealed: nothing changes.
    queue.enqueue(&rendered.claims).unwrap();
    assert_eq!(queue.stats().unwrap().done, 2);
    audit.shutdown().unwrap();
}

fn keys_raw(lookup: &KeyLookup) -> Vec<u8> {
    lookup("dr-chen").unwrap()
}

/// Fails every allow, as an enforcement hook that cannot install a grant.
struct RefusingHook;

impl agentd::gateway::AllowHook for RefusingHook {
    fn name(&self) -> &str {
        "enforce"
    }
    fn after_allow(
        &self,
        _call: &agentd::gateway::AllowedCall<'_>,
    ) -> Result<(), agentd::gateway::HookError> {
        Err(agentd::gateway::HookError {
            hook: "enforce".into(),
            reason_code: "enforcement_unavailable".into(),
            message: "test: no grant".into(),
        })
    }
}

#[test]
fn an_allow_overturned_after_its_row_voids_its_receipt() {
    // Control: without the refusing hook the same call is allowed and rendered.
    let control = tempfile::tempdir().unwrap();
    let (g, audit, queue, id, key) = sealed_gateway(control.path(), None);
    let d = tool_call(&g, &read_chart(&id));
    assert!(d.is_allow());
    let lookup: KeyLookup = Arc::new(move |op: &str| (op == "dr-chen").then(|| key.clone()));
    assert_eq!(queue.drain(&lookup).unwrap(), 1);
    assert!(queue.receipt_path(&d.call_id).exists());
    audit.shutdown().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (g, audit, queue, id, key) = sealed_gateway(dir.path(), Some(Arc::new(RefusingHook)));
    let d = tool_call(&g, &read_chart(&id));
    assert_eq!(
        (d.decision.as_str(), d.reason_code.as_str()),
        ("deny", "enforcement_unavailable")
    );
    let (state, _, why) = queue_row(dir.path(), &d.call_id);
    assert_eq!(state, "void");
    assert_eq!(why.as_deref(), Some("overturned: enforcement_unavailable"));
    // Nothing draws it again either.
    let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    assert_eq!(
        receipt::issued::read(&db, &d.call_id)
            .unwrap_err()
            .reason_code(),
        "receipt_void"
    );
    let lookup: KeyLookup = Arc::new(move |op: &str| (op == "dr-chen").then(|| key.clone()));
    assert_eq!(queue.drain(&lookup).unwrap(), 0);
    assert!(!queue.receipt_path(&d.call_id).exists());
    assert_eq!(queue.stats().unwrap().void, 1);
    let vk = audit.verifying_key();
    audit.shutdown().unwrap();
    let report = agentd::audit::verify_db(&dir.path().join("audit.db"), &vk, &[]).unwrap();
    assert!(report.records >= 4, "{report:?}");
}

#[test]
fn a_receipt_that_cannot_be_sealed_denies_the_call_and_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (g, audit, queue, id, _key) = sealed_gateway(dir.path(), None);
    // Control: sealed and allowed.
    assert!(tool_call(&g, &read_chart(&id)).is_allow());
    let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_seal BEFORE INSERT ON receipt_seals
         BEGIN SELECT RAISE(ABORT, 'receipt table refuses'); END;",
    )
    .unwrap();
    let d = tool_call(&g, &read_chart(&id));
    assert_eq!(
        (d.decision.as_str(), d.reason_code.as_str()),
        ("deny", "receipt_unavailable"),
        "{d:?}"
    );
    let rows: Vec<(String, String)> = {
        let mut st = db
            .prepare(
                "SELECT decision, reason_code FROM audit_records WHERE call_id = ?1 ORDER BY seq",
            )
            .unwrap();
        st.query_map([&d.call_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        rows,
        vec![
            ("allow".to_string(), "ok".to_string()),
            ("deny".to_string(), "receipt_unavailable".to_string())
        ]
    );
    assert_eq!(queue.stats().unwrap().pending, 1, "only the control's");
    let vk = audit.verifying_key();
    audit.shutdown().unwrap();
    let report = agentd::audit::verify_db(&dir.path().join("audit.db"), &vk, &[]).unwrap();
    assert!(report.records >= 4, "{report:?}");
}

#[test]
fn a_queue_kept_in_receipts_db_moves_into_the_audit_database() {
    let dir = tempfile::tempdir().unwrap();
    // The layout of earlier versions: the queue in its own database.
    let legacy = rusqlite::Connection::open(dir.path().join("receipts.db")).unwrap();
    legacy
        .execute_batch(
            "CREATE TABLE receipt_queue (
                id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL UNIQUE,
                claims TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
                attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                enqueued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                done_at TEXT);",
        )
        .unwrap();
    legacy
        .execute(
            "INSERT INTO receipt_queue (call_id, claims) VALUES (?1, ?2)",
            rusqlite::params![
                "call-9",
                serde_json::to_string(&claims(9, "carol")).unwrap()
            ],
        )
        .unwrap();
    drop(legacy);
    let q = ReceiptQueue::open(dir.path()).unwrap();
    assert_eq!(q.stats().unwrap().pending, 1);
    assert!(!dir.path().join("receipts.db").exists());
    assert!(dir.path().join("receipts.db.migrated").exists());
    assert_eq!(q.drain(&keys()).unwrap(), 1);
    let r = receipt::verify(&std::fs::read(q.receipt_path("call-9")).unwrap(), KEY).unwrap();
    assert_eq!(r.exact, ExactCheck::Valid);
    // Opening again moves nothing twice.
    let q = ReceiptQueue::open(dir.path()).unwrap();
    assert_eq!(q.stats().unwrap().done, 1);
}

#[test]
fn a_queue_made_before_redaction_gains_the_column_and_shows_targets() {
    let dir = tempfile::tempdir().unwrap();
    let db = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    // The table as the previous version made it in the audit database.
    db.execute_batch(
        "CREATE TABLE receipt_queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL UNIQUE,
            claims TEXT NOT NULL, tag TEXT,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed', 'void')),
            attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
            enqueued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            done_at TEXT);",
    )
    .unwrap();
    db.execute(
        "INSERT INTO receipt_queue (call_id, claims) VALUES (?1, ?2)",
        rusqlite::params![
            "call-3",
            serde_json::to_string(&claims(3, "carol")).unwrap()
        ],
    )
    .unwrap();
    // Before the queue opens, `issued::read` reads it as unredacted.
    let before = receipt::issued::read(&db, "call-3").unwrap();
    assert!(!before.face.redacted);
    let q = ReceiptQueue::open(dir.path()).unwrap();
    let redact: bool = db
        .query_row(
            "SELECT redact FROM receipt_queue WHERE call_id = 'call-3'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!redact);
    assert_eq!(q.drain(&keys()).unwrap(), 1);
    // No audit table here: the target is unknown and the card shows `-`.
    let png = std::fs::read(q.receipt_path("call-3")).unwrap();
    assert_eq!(png, receipt::seal(KEY, &claims(3, "carol")).unwrap());
    // Opening again changes nothing; unknown and voided calls are refused.
    drop(ReceiptQueue::open(dir.path()).unwrap());
    assert_eq!(
        receipt::issued::read(&db, "call-nope")
            .unwrap_err()
            .reason_code(),
        "receipt_not_found"
    );
}
