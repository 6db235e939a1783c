//! A receipt re-encoded as JPEG (quality 75) loses its text chunk but its
//! watermark still verifies against the claims.
use agentd::receipt::{self, pngio, ExactCheck, ReceiptClaims};

const KEY: &[u8] = b"bob-hmac-key-0123456789abcdef012";

#[test]
fn jpeg_75_copy_verifies_by_watermark() {
    let c = ReceiptClaims {
        seq: 9001,
        row_hash: "a1".repeat(32),
        operator: "bob".into(),
        call_id: "call-jpeg".into(),
        action: "files.write".into(),
        timestamp: "2026-11-22T08:00:00.000001Z".into(),
    };
    let png = receipt::seal(KEY, &c).unwrap();
    let d = pngio::decode(&png).unwrap();
    let img = image::RgbImage::from_raw(256, 256, d.rgb).unwrap();
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 75)
        .encode_image(&img)
        .unwrap();

    // Without claims: the exact proof is gone, the payload is still readable.
    let blind = receipt::verify(&jpg, KEY).unwrap();
    assert_eq!(blind.exact, ExactCheck::Missing);
    assert_eq!(blind.watermark.extracted_payload, c.payload());
    assert!(blind.watermark.pilot_correlation >= receipt::PILOT_PRESENT);
    assert!(!blind.watermark.verified, "nothing to compare with");

    // With the claims (e.g. from the audit row): verified, no bit errors.
    let r = receipt::verify_with_claims(&jpg, KEY, Some(&c)).unwrap();
    assert!(r.watermark.verified, "{:?}", r.watermark);
    assert_eq!(r.watermark.bit_error_rate, Some(0.0));
    assert!(r.passed());
}
