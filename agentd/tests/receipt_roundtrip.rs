//! Seal → verify round trip, wrong key, and a tampered text chunk.
use agentd::receipt::{self, pngio, ExactCheck, ReceiptClaims, ReceiptDocument};

const KEY: &[u8] = b"alice-hmac-key-0123456789abcdef";

fn claims() -> ReceiptClaims {
    ReceiptClaims {
        seq: 42,
        row_hash: "5f".repeat(32),
        operator: "alice".into(),
        call_id: "call-7f3a".into(),
        action: "mail.send".into(),
        timestamp: "2026-11-22T07:31:02.123456Z".into(),
    }
}

#[test]
fn sealed_receipt_verifies_exactly_and_by_watermark() {
    let c = claims();
    let png = receipt::seal(KEY, &c).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let r = receipt::verify(&png, KEY).unwrap();
    assert_eq!(r.exact, ExactCheck::Valid);
    let doc = r.document.as_ref().unwrap();
    assert_eq!(doc.claims, c);
    assert_eq!(doc.payload, format!("{:016x}", c.payload()));
    let w = &r.watermark;
    assert!(w.verified, "{w:?}");
    assert_eq!(w.extracted_payload, c.payload());
    assert_eq!(w.bit_error_rate, Some(0.0));
    assert!(w.similarity.unwrap() > 0.8, "{w:?}");
    assert!(w.pilot_correlation > 0.8, "{w:?}");
    assert!(r.passed());

    // Deterministic: the same claims and key give the same pixels.
    let again = pngio::decode(&receipt::seal(KEY, &c).unwrap()).unwrap();
    assert_eq!(again.rgb, pngio::decode(&png).unwrap().rgb);
}

#[test]
fn wrong_key_fails_both_checks() {
    let png = receipt::seal(KEY, &claims()).unwrap();
    let r = receipt::verify(&png, b"mallory-hmac-key-0123456789abcd").unwrap();
    assert_eq!(
        r.exact,
        ExactCheck::Invalid {
            reason: "tag_mismatch"
        }
    );
    let w = &r.watermark;
    assert!(!w.verified, "{w:?}");
    assert!(w.bit_error_rate.unwrap() > receipt::MAX_BER, "{w:?}");
    assert!(w.similarity.unwrap() < 0.3, "{w:?}");
    assert!(!r.passed());
}

#[test]
fn tampered_text_chunk_fails_exact_check_and_watermark_disagrees() {
    let c = claims();
    let png = receipt::seal(KEY, &c).unwrap();
    let decoded = pngio::decode(&png).unwrap();
    let mut doc: ReceiptDocument = serde_json::from_str(decoded.text.as_deref().unwrap()).unwrap();
    // The forger moves the receipt to another audit row, keeping the tag.
    doc.claims.seq = 43;
    doc.payload = format!("{:016x}", doc.claims.payload());
    let forged = pngio::encode(
        &decoded.rgb,
        256,
        256,
        &serde_json::to_string(&doc).unwrap(),
    )
    .unwrap();
    let r = receipt::verify(&forged, KEY).unwrap();
    assert_eq!(
        r.exact,
        ExactCheck::Invalid {
            reason: "tag_mismatch"
        }
    );
    // The pixels still carry the genuine row's payload, not the forged one.
    assert_eq!(r.watermark.extracted_payload, c.payload());
    assert!(!r.watermark.verified);
    assert!(!r.passed());

    // Garbage in the chunk: a clear reason, nothing panics.
    let junk = pngio::encode(&decoded.rgb, 256, 256, "{not json").unwrap();
    let r = receipt::verify(&junk, KEY).unwrap();
    assert_eq!(
        r.exact,
        ExactCheck::Invalid {
            reason: "bad_receipt_json"
        }
    );
}

#[test]
fn bad_inputs_get_reason_codes() {
    let e = receipt::seal(b"short", &claims()).unwrap_err();
    assert_eq!(e.reason_code(), "key_too_short");
    let mut c = claims();
    c.call_id = "../etc/passwd".into();
    assert_eq!(
        receipt::seal(KEY, &c).unwrap_err().reason_code(),
        "invalid_call_id"
    );
    let e = receipt::verify(b"not an image", KEY).unwrap_err();
    assert_eq!(e.reason_code(), "undecodable_image");
}
