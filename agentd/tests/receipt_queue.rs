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
