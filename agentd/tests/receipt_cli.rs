//! `agentctl receipt verify`: output and exit codes on a real receipt, a
//! JPEG copy (with claims from a file), a tampered copy and a wrong key.
use std::path::Path;
use std::process::Command;

use agentd::receipt::{self, pngio, ReceiptClaims, ReceiptDocument};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff0011223344556677";

fn claims() -> ReceiptClaims {
    ReceiptClaims {
        seq: 314,
        row_hash: "c0".repeat(32),
        operator: "dave".into(),
        call_id: "call-cli".into(),
        action: "payments.refund".into(),
        timestamp: "2026-11-22T08:30:00.000000Z".into(),
    }
}

fn verify(file: &Path, key_file: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["receipt", "verify"])
        .arg(file)
        .arg("--key-file")
        .arg(key_file)
        .args(extra)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn verify_reports_each_check_and_exits_accordingly() {
    let dir = tempfile::tempdir().unwrap();
    let key = hex::decode(KEY_HEX).unwrap();
    let key_file = dir.path().join("dave.key");
    std::fs::write(&key_file, format!("{KEY_HEX}\n")).unwrap();
    let png = receipt::seal(&key, &claims()).unwrap();
    let png_path = dir.path().join("r.png");
    std::fs::write(&png_path, &png).unwrap();

    let (code, out) = verify(&png_path, &key_file, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("exact check:     PASS"), "{out}");
    assert!(
        out.contains("watermark check: PASS  BER 0.00% (0/64 bits)"),
        "{out}"
    );
    assert!(out.contains("survived: exact and watermark"), "{out}");

    // JPEG copy: exact proof gone; watermark verified against claims given on the side.
    let d = pngio::decode(&png).unwrap();
    let img = image::RgbImage::from_raw(256, 256, d.rgb.clone()).unwrap();
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 75)
        .encode_image(&img)
        .unwrap();
    let jpg_path = dir.path().join("r.jpg");
    std::fs::write(&jpg_path, &jpg).unwrap();
    let claims_path = dir.path().join("claims.json");
    std::fs::write(&claims_path, serde_json::to_string(&claims()).unwrap()).unwrap();
    let (code, out) = verify(
        &jpg_path,
        &key_file,
        &["--claims", claims_path.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("exact check:     MISSING"), "{out}");
    assert!(out.contains("survived: watermark only"), "{out}");
    // Without claims nothing can be compared: not verified, exit 1.
    let (code, out) = verify(&jpg_path, &key_file, &["--json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["watermark"]["extracted_payload"],
        format!("{:016x}", claims().payload())
    );

    // Tampered text chunk: exact fails, and the watermark disagrees with the forged claims.
    let mut doc: ReceiptDocument = serde_json::from_str(d.text.as_deref().unwrap()).unwrap();
    doc.claims.action = "payments.send".into();
    let forged = pngio::encode(&d.rgb, 256, 256, &serde_json::to_string(&doc).unwrap()).unwrap();
    let forged_path = dir.path().join("forged.png");
    std::fs::write(&forged_path, forged).unwrap();
    let (code, out) = verify(&forged_path, &key_file, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("exact check:     FAIL (tag_mismatch)"),
        "{out}"
    );
    assert!(out.contains("survived: none"), "{out}");

    // Wrong key.
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, "ffeeddccbbaa99887766554433221100ffeeddccbbaa9988").unwrap();
    let (code, out) = verify(&png_path, &wrong, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("result: NOT VERIFIED"), "{out}");

    // Not an image: a clear error, exit 1.
    let (code, out) = verify(&key_file, &key_file, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("undecodable_image"), "{out}");
}

#[test]
fn jpeg_copy_is_matched_to_its_audit_row() {
    use agentd::audit::{AuditEvent, AuditLog, RecordKind};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let log = AuditLog::open(&state, agentd::config::Durability::Normal).unwrap();
    let mut committed = Vec::new();
    for i in 0..5 {
        let mut ev = AuditEvent::new(RecordKind::ToolCall, "payments.refund");
        ev.operator = "dave".into();
        ev.call_id = format!("call-db-{i}");
        ev.decision = "allow".into();
        committed.push((ev.call_id.clone(), log.append_blocking(ev).unwrap()));
    }
    log.shutdown().unwrap();
    drop(log);

    let (call_id, row) = &committed[3];
    let c = ReceiptClaims {
        seq: row.seq,
        row_hash: row.hash.clone(),
        operator: "dave".into(),
        call_id: call_id.clone(),
        action: "payments.refund".into(),
        timestamp: row.timestamp.clone(),
    };
    let key = hex::decode(KEY_HEX).unwrap();
    let key_file = dir.path().join("dave.key");
    std::fs::write(&key_file, KEY_HEX).unwrap();
    let d = pngio::decode(&receipt::seal(&key, &c).unwrap()).unwrap();
    let img = image::RgbImage::from_raw(256, 256, d.rgb).unwrap();
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 75)
        .encode_image(&img)
        .unwrap();
    let jpg_path = dir.path().join("r.jpg");
    std::fs::write(&jpg_path, &jpg).unwrap();

    let db = state.join("audit.db");
    let (code, out) = verify(&jpg_path, &key_file, &["--audit-db", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("audit row: seq={} call={call_id}", row.seq)),
        "{out}"
    );
    assert!(out.contains("survived: watermark only"), "{out}");

    // A receipt for a row that is not in the database matches nothing.
    let mut other = c.clone();
    other.seq = 999;
    let d = pngio::decode(&receipt::seal(&key, &other).unwrap()).unwrap();
    let img = image::RgbImage::from_raw(256, 256, d.rgb).unwrap();
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 75)
        .encode_image(&img)
        .unwrap();
    std::fs::write(&jpg_path, &jpg).unwrap();
    let (code, out) = verify(&jpg_path, &key_file, &["--audit-db", db.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("matches the watermark payload"), "{out}");
}

#[test]
fn verify_says_which_geometric_correction_it_applied() {
    use image::{imageops, Rgb, RgbImage};
    use imageproc::geometric_transformations::{rotate_about_center, Interpolation};
    let dir = tempfile::tempdir().unwrap();
    let key = hex::decode(KEY_HEX).unwrap();
    let key_file = dir.path().join("dave.key");
    std::fs::write(&key_file, KEY_HEX).unwrap();
    let claims_path = dir.path().join("claims.json");
    std::fs::write(&claims_path, serde_json::to_string(&claims()).unwrap()).unwrap();
    let png = receipt::seal(&key, &claims()).unwrap();
    let d = pngio::decode(&png).unwrap();
    let img = RgbImage::from_raw(256, 256, d.rgb).unwrap();
    let save = |name: &str, copy: &RgbImage| {
        let path = dir.path().join(name);
        copy.save(&path).unwrap();
        path
    };
    let claims_arg = ["--claims", claims_path.to_str().unwrap()];

    // The card as sealed: no correction.
    let plain = dir.path().join("plain.png");
    std::fs::write(&plain, &png).unwrap();
    let (code, out) = verify(&plain, &key_file, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("geometry:        none (copy read as sealed)"),
        "{out}"
    );

    // Mirrored: said so.
    let mirrored = save("mirrored.png", &imageops::flip_horizontal(&img));
    let (code, out) = verify(&mirrored, &key_file, &claims_arg);
    assert_eq!(code, 0, "{out}");
    let line = out.lines().find(|l| l.starts_with("geometry:")).unwrap();
    assert!(line.contains("undid") && line.contains("mirrored"), "{out}");
    assert!(!line.contains("rotated"), "{out}");

    // Rotated 3.5°: the rotation it undid, within 0.3°, also under --json.
    let rotated = rotate_about_center(
        &img,
        3.5f32.to_radians(),
        Interpolation::Bilinear,
        Rgb([0; 3]),
    );
    let rotated = save("rotated.png", &rotated);
    let (code, out) = verify(&rotated, &key_file, &claims_arg);
    assert_eq!(code, 0, "{out}");
    let line = out.lines().find(|l| l.starts_with("geometry:")).unwrap();
    let deg: f32 = line
        .split("rotated ")
        .nth(1)
        .and_then(|r| r.split('°').next())
        .unwrap_or_else(|| panic!("no rotation in {line:?}"))
        .parse()
        .unwrap();
    assert!((deg.abs() - 3.5).abs() <= 0.3, "{line}");
    assert!(!line.contains("mirrored"), "{line}");
    let mut json_args = claims_arg.to_vec();
    json_args.push("--json");
    let (code, out) = verify(&rotated, &key_file, &json_args);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v["watermark"]["correction"];
    assert!(
        (c["rotation_degrees"].as_f64().unwrap().abs() - 3.5).abs() <= 0.3,
        "{c}"
    );
    assert_eq!(c["mirrored"], false);
}
