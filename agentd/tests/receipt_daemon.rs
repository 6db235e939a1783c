//! Receipts the real daemon issues, end to end through the real socket:
//! the card shows the allowed call's target from its audit row, or
//! `[redacted]` where the policy says so (with the control: the same call
//! under the policy without `receipt_redact` shows it); `agentctl receipt
//! render` draws the same card at a larger size, and `agentctl receipt
//! verify` proves it, also from a JPEG copy.
mod gateway_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentd::receipt::{self, card, ExactCheck, Face, ReceiptClaims};
use gateway_support::{assert_decision, Daemon};
use serde_json::Value;

/// With `RECEIPT_CARD_DUMP=DIR`, keeps a daemon-issued card as DIR/NAME
/// (the README's cards come from here).
fn dump(name: &str, png: &[u8]) {
    if let Some(dir) = std::env::var_os("RECEIPT_CARD_DUMP") {
        std::fs::write(Path::new(&dir).join(name), png).unwrap();
    }
}

/// Waits for the worker to write the receipt of `call_id`.
fn daemon_card(d: &Daemon, call_id: &str) -> Vec<u8> {
    let path = d.state.join("receipts").join(format!("{call_id}.png"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "no receipt for {call_id}:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read(path).unwrap()
}

fn key_of(file: &Path) -> Vec<u8> {
    hex::decode(std::fs::read_to_string(file).unwrap().trim()).unwrap()
}

/// The claims in the card's text chunk, checked against the decision.
fn claims_of(png: &[u8], key: &[u8], dec: &Value) -> ReceiptClaims {
    let r = receipt::verify(png, key).unwrap();
    assert_eq!(r.exact, ExactCheck::Valid);
    assert!(r.watermark.verified, "{:?}", r.watermark);
    let c = r.document.unwrap().claims;
    assert_eq!(c.call_id, dec["call_id"].as_str().unwrap());
    assert_eq!(c.seq, dec["audit_seq"].as_u64().unwrap());
    assert_eq!(c.row_hash, dec["audit_hash"].as_str().unwrap());
    c
}

/// The target column of audit row `seq`.
fn audit_target(d: &Daemon, seq: u64) -> String {
    let db = rusqlite::Connection::open_with_flags(
        d.state.join("audit.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row(
        "SELECT target FROM audit_records WHERE seq = ?1",
        [seq as i64],
        |r| r.get(0),
    )
    .unwrap()
}

fn render(d: &Daemon, call_id: &str, key: &Path, size: &str, out: &Path, extra: &[&str]) -> String {
    let db = d.state.join("audit.db");
    let mut args = vec![
        "receipt",
        "render",
        "--audit-db",
        db.to_str().unwrap(),
        "--call-id",
        call_id,
        "--key-file",
        key.to_str().unwrap(),
        "--size",
        size,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = d.agentctl(&args);
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        text
    } else {
        format!("FAILED {:?}: {text}", o.status.code())
    }
}

fn verify(d: &Daemon, file: &Path, key: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "receipt",
        "verify",
        file.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = d.agentctl(&args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// The demo policy without `receipt_redact`, written into the daemon's dir.
fn unredacted_policy(d: &Daemon) -> PathBuf {
    let demo = std::fs::read_to_string(gateway_support::demo_policy()).unwrap();
    let plain = demo.replace("receipt_redact = true", "");
    assert_ne!(plain, demo, "the demo policy redacts chart paths");
    let path = d.dir.path().join("plain.toml");
    std::fs::write(&path, plain).unwrap();
    path
}

#[test]
fn daemon_cards_show_the_calls_target_unless_the_policy_redacts_it() {
    let d = Daemon::start();
    let chen = d.enroll("dr-chen", "clinician");
    let key = key_of(&chen);
    let m = d.send(
        "dr-chen",
        &chen,
        "slack:D-chen",
        "read chart 42, mail the ward",
    );

    // Not redacted: the recipient from the audit row is on the card.
    let mail = d.check(
        &m,
        "send_email",
        &["to=ward3@clinic.example", "subject=p42", "body=stable"],
    );
    assert_decision(&mail, "allow", "ok");
    let png = daemon_card(&d, mail["call_id"].as_str().unwrap());
    let c = claims_of(&png, &key, &mail);
    let target = audit_target(&d, c.seq);
    let shown = Face::of_call(&target, false);
    assert_eq!(shown.target, "ward3@clinic.example", "{target}");
    // The daemon's card is exactly the card drawn with that face (rendering
    // is deterministic), not the one without a target.
    assert_eq!(
        png,
        receipt::seal_card(&key, &c, &shown, card::SIZE).unwrap()
    );
    assert_ne!(png, receipt::seal(&key, &c).unwrap());
    dump("receipt-card.png", &png);

    // Redacted by the demo policy (`read_chart`): the same call's card
    // with the path differs from the daemon's, which is the redacted one.
    let chart = d.check(&m, "read_chart", &["path=/srv/charts/p-0042.json"]);
    assert_decision(&chart, "allow", "ok");
    let png = daemon_card(&d, chart["call_id"].as_str().unwrap());
    let c = claims_of(&png, &key, &chart);
    let target = audit_target(&d, c.seq);
    assert!(target.contains("/srv/charts/p-0042.json"), "{target}");
    let open = receipt::seal_card(&key, &c, &Face::of_call(&target, false), card::SIZE).unwrap();
    let hidden = receipt::seal_card(&key, &c, &Face::of_call(&target, true), card::SIZE).unwrap();
    assert_ne!(open, hidden);
    assert_eq!(png, hidden);
    dump("receipt-card-redacted.png", &png);
    // Neither the text chunk nor the file carries the path.
    assert!(!String::from_utf8_lossy(&png).contains("p-0042"));

    // Control: the same call under the policy without `receipt_redact`.
    let plain = unredacted_policy(&d);
    d.ok(&["policy", "load", plain.to_str().unwrap()]);
    let again = d.check(&m, "read_chart", &["path=/srv/charts/p-0042.json"]);
    assert_decision(&again, "allow", "ok");
    let png = daemon_card(&d, again["call_id"].as_str().unwrap());
    let c = claims_of(&png, &key, &again);
    let face = Face::of_call(&audit_target(&d, c.seq), false);
    assert_eq!(face.target, "/srv/charts/p-0042.json");
    assert_eq!(
        png,
        receipt::seal_card(&key, &c, &face, card::SIZE).unwrap()
    );
}

/// A plain HTTP/1.1 GET on the console: (status, headers, body).
fn http_get(base: &str, path: &str, cookie: Option<&str>) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

/// Logs in to the console with a fresh link: (base URL, session cookie).
fn console_session(d: &Daemon) -> (String, String) {
    let link = d.ok(&["console"]);
    let link = link
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no login link in {link:?}"));
    let base = link[..link.find("/login").unwrap()].to_owned();
    let (status, head, _) = http_get(&base, &link[base.len()..], None);
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie: {head}"))
        .to_owned();
    (base, cookie)
}

#[test]
fn render_draws_the_issued_card_at_a_larger_size_and_verify_proves_it() {
    let d = Daemon::start_with("[console]\nlisten = \"127.0.0.1:0\"\n");
    let chen = d.enroll("dr-chen", "clinician");
    let lee = d.enroll("dr-lee", "clinician");
    let key = key_of(&chen);
    let m = d.send(
        "dr-chen",
        &chen,
        "slack:D-chen",
        "read chart 42, mail the ward",
    );
    let mail = d.check(
        &m,
        "send_email",
        &["to=ward3@clinic.example", "subject=p42", "body=stable"],
    );
    let chart = d.check(&m, "read_chart", &["path=/srv/charts/p-0042.json"]);
    let mail_id = mail["call_id"].as_str().unwrap();
    let chart_id = chart["call_id"].as_str().unwrap();
    let issued = daemon_card(&d, mail_id);
    let c = claims_of(&issued, &key, &mail);
    let face = Face::of_call(&audit_target(&d, c.seq), false);

    // 512 px: the daemon's card, larger; both checks pass on it.
    let big = d.dir.path().join("big.png");
    let out = render(&d, mail_id, &chen, "512", &big, &[]);
    assert!(
        out.contains("(512x512)") && out.contains("target shown"),
        "{out}"
    );
    let png = std::fs::read(&big).unwrap();
    assert_eq!(png, receipt::seal_card(&key, &c, &face, 512).unwrap());
    let (code, out) = verify(&d, &big, &chen, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("survived: exact and watermark"), "{out}");
    // A JPEG copy of the large card, matched to its audit row by the watermark.
    let decoded = receipt::pngio::decode(&png).unwrap();
    let img = image::RgbImage::from_raw(512, 512, decoded.rgb).unwrap();
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 75)
        .encode_image(&img)
        .unwrap();
    let jpg_path = d.dir.path().join("big.jpg");
    std::fs::write(&jpg_path, &jpg).unwrap();
    let db = d.state.join("audit.db");
    let (code, out) = verify(&d, &jpg_path, &chen, &["--audit-db", db.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("audit row: seq={} call={mail_id}", c.seq)),
        "{out}"
    );
    assert!(out.contains("survived: watermark only"), "{out}");

    // The redacted receipt stays redacted; --redact hides a shown target.
    let red = d.dir.path().join("red.png");
    let out = render(&d, chart_id, &chen, "256", &red, &[]);
    assert!(out.contains("target redacted"), "{out}");
    assert_eq!(
        std::fs::read(&red).unwrap(),
        daemon_card(&d, chart_id),
        "the 256 render is the daemon's card"
    );
    let forced = d.dir.path().join("forced.png");
    let out = render(&d, mail_id, &chen, "256", &forced, &["--redact"]);
    assert!(out.contains("target redacted"), "{out}");
    assert_eq!(
        std::fs::read(&forced).unwrap(),
        receipt::seal_card(&key, &c, &Face::of_call("", true), 256).unwrap()
    );

    // Refusals, each with nothing written: another operator's key, a bad
    // size, a denied call (no receipt).
    let none = d.dir.path().join("none.png");
    let out = render(&d, mail_id, &lee, "256", &none, &[]);
    assert!(
        out.starts_with("FAILED") && out.contains("operator_key_changed"),
        "{out}"
    );
    let out = render(&d, mail_id, &chen, "300", &none, &[]);
    assert!(
        out.starts_with("FAILED") && out.contains("bad_card_size"),
        "{out}"
    );
    let denied = d.check(&m, "read_chart", &["path=/etc/shadow"]);
    assert_decision(&denied, "deny", "path_outside_scope");
    let out = render(
        &d,
        denied["call_id"].as_str().unwrap(),
        &chen,
        "256",
        &none,
        &[],
    );
    assert!(
        out.starts_with("FAILED") && out.contains("receipt_not_found"),
        "{out}"
    );
    assert!(!none.exists());

    // The console serves the same larger card (`?size=`), the issued one
    // without it, and refuses other sizes and callers without a session.
    let (base, cookie) = console_session(&d);
    let png_path = format!("/api/calls/{mail_id}/receipt.png");
    let (status, head, body) = http_get(&base, &format!("{png_path}?size=512"), Some(&cookie));
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, png);
    let (status, _, body) = http_get(&base, &png_path, Some(&cookie));
    assert_eq!((status, body), (200, issued));
    let (status, _, body) = http_get(&base, &format!("{png_path}?size=300"), Some(&cookie));
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("bad_card_size"));
    let (status, _, body) = http_get(
        &base,
        &format!(
            "/api/calls/{}/receipt.png?size=512",
            denied["call_id"].as_str().unwrap()
        ),
        Some(&cookie),
    );
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("receipt_not_found"));
    let (status, _, _) = http_get(&base, &format!("{png_path}?size=512"), None);
    assert_eq!(status, 401);
}
