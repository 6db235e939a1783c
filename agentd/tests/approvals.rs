//! Human approval end to end: the real daemon, the real `agentctl`, the real
//! socket. A call whose action needs approval waits; an admin's answer
//! (`agentctl approvals approve|deny`) or the deadline ends it; every step
//! is in the audit chain, which still verifies.
mod gateway_support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use gateway_support::{assert_decision, Daemon};
use serde_json::Value;

/// `deploy` needs approval; `target = dev` is outside the allowed values.
const POLICY: &str = r#"
id = "approvals-test"

[actions.deploy]
description = "Deploy a service."
approval = "required"

[actions.status]
description = "Read a service's status."

[roles.owner]
[roles.owner.allow.deploy.target]
type = "string"
values = ["prod", "staging"]
[roles.owner.allow.status.target]
type = "string"
"#;

fn policy_file(dir: &Path, text: &str, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn start(extra: &str) -> Daemon {
    Daemon::start_full(extra, |dir| policy_file(dir, POLICY, "approvals.toml"))
}

/// `agentctl check` in a thread (it blocks while the call waits).
fn check_async(d: &Daemon, msg: &str, args: &[&str]) -> std::thread::JoinHandle<Output> {
    let mut a = vec!["check", "--json", "--message", msg, "deploy"];
    a.extend_from_slice(args);
    let mut cmd = d.agentctl_cmd(&a);
    std::thread::spawn(move || cmd.output().unwrap())
}

fn decision_of(out: Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "decision JSON: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn pending(d: &Daemon) -> Vec<Value> {
    let v: Value = serde_json::from_str(&d.ok(&["approvals", "list", "--json"])).unwrap();
    v["approvals"].as_array().unwrap().clone()
}

/// Waits until `n` approvals are pending; returns them.
fn wait_pending(d: &Daemon, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pending(d);
        if p.len() == n {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} pending, have {p:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rows_of(d: &Daemon, call_id: &str) -> Vec<Value> {
    d.audit_records()
        .into_iter()
        .filter(|r| r["call_id"] == call_id)
        .collect()
}

/// (kind, action, decision, reason_code) of each row, in order.
fn summary(rows: &[Value]) -> Vec<(String, String, String, String)> {
    rows.iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("").to_owned(),
                r["action"].as_str().unwrap_or("").to_owned(),
                r["decision"].as_str().unwrap_or("").to_owned(),
                r["reason_code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn row(kind: &str, action: &str, decision: &str, reason: &str) -> (String, String, String, String) {
    (kind.into(), action.into(), decision.into(), reason.into())
}

#[test]
fn approve_and_deny_by_an_admin_with_the_control_and_the_audit_chain() {
    let d = start("[approvals]\ntimeout_secs = 60\n");
    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-olivia", "deploy prod please");

    // A call that would be denied is denied at once, never escalated.
    assert_decision(
        &d.check(&m, "deploy", &["target=dev"]),
        "deny",
        "value_not_allowed",
    );
    assert!(pending(&d).is_empty());

    // Approve: the call waits, then returns allowed with its receipt.
    let waiting = check_async(&d, &m, &["target=prod"]);
    let p = wait_pending(&d, 1);
    let id = p[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(p[0]["operator"], "olivia");
    assert_eq!(p[0]["session"], "slack:D-olivia");
    assert_eq!(p[0]["action"], "deploy");
    assert_eq!(p[0]["arguments"]["target"], "prod");
    assert!(p[0]["deadline"].as_i64().unwrap() > p[0]["created_at"].as_i64().unwrap());
    let said = d.ok(&[
        "approvals",
        "approve",
        &id,
        "--reason",
        "change window open",
    ]);
    assert!(said.contains("approved"), "{said}");
    let out = waiting.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "allowed call exits 0");
    let dec = decision_of(out);
    assert_decision(&dec, "allow", "ok");
    assert_eq!(dec["call_id"], id.as_str());
    let receipt = d.state.join("receipts").join(format!("{id}.png"));
    let until = Instant::now() + Duration::from_secs(60);
    while !receipt.exists() {
        assert!(
            Instant::now() < until,
            "no receipt at {}",
            receipt.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows = rows_of(&d, &id);
    assert_eq!(
        summary(&rows),
        vec![
            row("tool_call", "deploy", "escalate", "approval_required"),
            row("admin", "approval_approve", "allow", "approval_granted"),
            row("tool_call", "deploy", "allow", "ok"),
        ],
        "{rows:#?}"
    );
    // Recorded as an admin's approval: who and through what, not an operator.
    assert_eq!(rows[1]["operator"], "uid:0");
    assert!(rows[1]["target"].as_str().unwrap().contains("channel:api"));
    assert!(rows[1]["target"]
        .as_str()
        .unwrap()
        .contains("change window open"));
    assert_eq!(rows[2]["seq"], dec["audit_seq"]);
    // `agentctl explain` on the escalation row reads its arguments past
    // the approval prefix and names the approval to answer.
    let explained: Value = serde_json::from_str(&d.ok(&[
        "explain",
        &rows[0]["seq"].to_string(),
        "--state-dir",
        d.state.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(explained["outcome"], "escalated", "{explained:#}");
    let notes = explained["notes"].to_string();
    assert!(!notes.contains("not JSON"), "{explained:#}");
    assert!(notes.contains(&format!("approval {id}")), "{explained:#}");
    assert_eq!(
        explained["fixes"][0]["command"],
        format!("agentctl approvals list; agentctl approvals approve {id}").as_str()
    );
    // A second answer is refused, and changes nothing.
    let again = d.agentctl(&["approvals", "deny", &id]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("approval_already_decided"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let unknown = d.agentctl(&["approvals", "approve", "00000000000000000000000000000000"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown_approval"));

    // Deny: the call is refused with approval_denied.
    let waiting = check_async(&d, &m, &["target=staging"]);
    let id2 = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    d.ok(&["approvals", "deny", &id2, "--reason", "not today"]);
    let out = waiting.join().unwrap();
    assert_eq!(out.status.code(), Some(2), "denied call exits 2");
    let dec = decision_of(out);
    assert_decision(&dec, "deny", "approval_denied");
    assert!(
        dec["detail"].as_str().unwrap().contains("not today"),
        "{dec}"
    );
    assert_eq!(
        summary(&rows_of(&d, &id2)),
        vec![
            row("tool_call", "deploy", "escalate", "approval_required"),
            row("admin", "approval_deny", "deny", "approval_denied"),
            row("tool_call", "deploy", "deny", "approval_denied"),
        ]
    );
    assert!(!d.state.join("receipts").join(format!("{id2}.png")).exists());

    // Suspended while it waits: an approval cannot carry it past the kill switch.
    let waiting = check_async(&d, &m, &["target=prod"]);
    let id3 = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    d.ok(&["suspend", "operator", "olivia", "--reason", "incident"]);
    d.ok(&["approvals", "approve", &id3]);
    let dec = decision_of(waiting.join().unwrap());
    assert_decision(&dec, "deny", "operator_suspended");
    d.ok(&["resume", "operator", "olivia"]);

    // Control: the same call under a policy without `approval` is allowed at once.
    let control = policy_file(
        d.dir.path(),
        &POLICY.replace("approval = \"required\"\n", ""),
        "control.toml",
    );
    d.ok(&["policy", "load", control.to_str().unwrap()]);
    let started = Instant::now();
    let dec = d.check(&m, "deploy", &["target=prod"]);
    assert_decision(&dec, "allow", "ok");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(pending(&d).is_empty());
    assert_eq!(
        summary(&rows_of(&d, dec["call_id"].as_str().unwrap())),
        vec![row("tool_call", "deploy", "allow", "ok")]
    );

    // Approvals are admin-only: the agent user's uid is refused.
    let nobody = d
        .agentctl_cmd(&["approvals", "list"])
        .uid(65534)
        .output()
        .unwrap();
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("permission_denied"));
    d.verify_chain();
}

#[test]
fn no_answer_times_out_a_full_queue_refuses_and_a_restart_expires() {
    let mut d = start("[approvals]\ntimeout_secs = 2\nmax_pending = 1\n");
    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-olivia", "deploy");

    // Nobody answers: approval_timeout after the configured 2 s. Meanwhile
    // the queue (max 1) refuses a second call at once.
    let started = Instant::now();
    let waiting = check_async(&d, &m, &["target=prod"]);
    let id = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    let full = d.check(&m, "deploy", &["target=staging"]);
    assert_decision(&full, "deny", "approval_queue_full");
    let dec = decision_of(waiting.join().unwrap());
    assert_decision(&dec, "deny", "approval_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert_eq!(
        summary(&rows_of(&d, &id)),
        vec![
            row("tool_call", "deploy", "escalate", "approval_required"),
            row("tool_call", "deploy", "deny", "approval_timeout"),
        ]
    );
    // Too late to answer.
    let late = d.agentctl(&["approvals", "approve", &id]);
    assert!(String::from_utf8_lossy(&late.stderr).contains("approval_already_decided"));

    // SIGTERM while a call waits: the caller hears approval_expired.
    let waiting = check_async(&d, &m, &["target=prod"]);
    let id = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    assert!(d.stop().success(), "{}", d.log_text());
    let dec = decision_of(waiting.join().unwrap());
    assert_decision(&dec, "deny", "approval_expired");

    // A crash (SIGKILL) while a call waits: the next start expires it, audited.
    d.spawn();
    let m = d.send("olivia", &key, "slack:D-olivia", "deploy again");
    let waiting = check_async(&d, &m, &["target=prod"]);
    let crashed = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    d.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = waiting.join().unwrap();
    let _ = d.stop_killed();
    d.spawn();
    assert!(pending(&d).is_empty());
    let rows = summary(&rows_of(&d, &crashed));
    assert_eq!(
        rows,
        vec![
            row("tool_call", "deploy", "escalate", "approval_required"),
            row("admin", "approval_expire", "deny", "approval_expired"),
        ]
    );
    assert!(summary(&rows_of(&d, &id)).contains(&row(
        "admin",
        "approval_expire",
        "deny",
        "approval_expired"
    )));
    let never = d.agentctl(&["approvals", "approve", &crashed]);
    assert!(String::from_utf8_lossy(&never.stderr).contains("approval_already_decided"));
    d.verify_chain();
}

/// One request the test's webhook server received.
struct Delivery {
    head: String,
    body: Vec<u8>,
}

/// A real HTTP server on loopback standing in for the chat bridge: hands
/// each request to the test and answers with the next status of `statuses`.
fn webhook_server(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<Delivery>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/agentd", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for status in statuses {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let _ = tx.send(Delivery { head, body });
            let mut w = stream;
            let _ = write!(
                w,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, rx)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// HMAC-SHA256(secret, "<ts>." + body), computed here independently of agentd.
fn hmac_hex(secret: &[u8], ts: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    m.update(format!("{ts}.").as_bytes());
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// POSTs a callback over the daemon's Unix socket with raw headers.
fn post_callback(d: &Daemon, route_id: &str, ts: i64, sig: &str, body: &[u8]) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "POST /v1/approvals/{route_id}/callback HTTP/1.1\r\nhost: agentd\r\ncontent-type: application/json\r\nx-agentd-timestamp: {ts}\r\nx-agentd-signature: {sig}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text[9..12].parse().unwrap();
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn callback_body(id: &str, answer: &str, ts: i64, nonce: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "approval_id": id, "answer": answer, "approver": "slack:U024BE7LH",
        "reason": "ok in #ops", "timestamp": ts, "nonce": nonce,
    }))
    .unwrap()
}

#[test]
fn webhook_delivers_signed_and_only_a_valid_signed_callback_answers() {
    const SECRET: &[u8] = b"0123456789abcdef-chatops-secret";
    let (url, deliveries) = webhook_server(vec![200, 500]);
    let keep = tempfile::tempdir().unwrap();
    let secret = keep.path().join("approvals.secret");
    std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
    let d = start(&format!(
        "[approvals]\ntimeout_secs = 60\n[approvals.webhook]\nurl = {url:?}\nsecret_file = {secret:?}\n"
    ));
    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-olivia", "deploy prod");
    let waiting = check_async(&d, &m, &["target=prod"]);

    // The bridge receives the signed event and checks it independently.
    let got = deliveries
        .recv_timeout(Duration::from_secs(60))
        .expect("webhook POST");
    assert!(
        got.head.starts_with("POST /agentd HTTP/1.1"),
        "{}",
        got.head
    );
    let ts: i64 = header(&got.head, "x-agentd-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!((unix_now() - ts).abs() < 60);
    assert_eq!(
        header(&got.head, "x-agentd-signature").unwrap(),
        hmac_hex(SECRET, ts, &got.body)
    );
    let event: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(event["event"], "approval_pending");
    let id = event["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(event["approval"]["operator"], "olivia");
    assert_eq!(event["approval"]["arguments"]["target"], "prod");
    assert_eq!(
        event["callback_path"],
        format!("/v1/approvals/{id}/callback")
    );

    // Bad callbacks: each refused precisely, the approval still waits.
    let now = unix_now();
    let good = callback_body(&id, "approve", now, "nonce-1");
    let refusals = [
        (
            id.clone(),
            now,
            hmac_hex(b"not-the-secret-at-all", now, &good),
            good.clone(),
            401,
            "callback_bad_signature",
        ),
        (
            id.clone(),
            now - 1000,
            hmac_hex(
                SECRET,
                now - 1000,
                &callback_body(&id, "approve", now - 1000, "n-stale"),
            ),
            callback_body(&id, "approve", now - 1000, "n-stale"),
            401,
            "callback_stale",
        ),
        (
            "0".repeat(32),
            now,
            hmac_hex(
                SECRET,
                now,
                &callback_body(&"0".repeat(32), "approve", now, "n-unknown"),
            ),
            callback_body(&"0".repeat(32), "approve", now, "n-unknown"),
            404,
            "unknown_approval",
        ),
        (
            id.clone(),
            now,
            hmac_hex(
                SECRET,
                now,
                &callback_body("other", "approve", now, "n-other"),
            ),
            callback_body("other", "approve", now, "n-other"),
            400,
            "callback_malformed",
        ),
        (
            id.clone(),
            now,
            "sha256=zz".to_owned(),
            good.clone(),
            401,
            "callback_bad_signature",
        ),
    ];
    for (route, ts, sig, body, status, code) in &refusals {
        let (s, v) = post_callback(&d, route, *ts, sig, body);
        assert_eq!(
            (s, v["reason_code"].as_str()),
            (*status, Some(*code)),
            "{v}"
        );
        assert_eq!(pending(&d).len(), 1, "a refused callback changes nothing");
    }

    // The valid callback approves; the call returns allowed.
    let (s, v) = post_callback(&d, &id, now, &hmac_hex(SECRET, now, &good), &good);
    assert_eq!((s, v["outcome"].as_str()), (200, Some("approved")), "{v}");
    let dec = decision_of(waiting.join().unwrap());
    assert_decision(&dec, "allow", "ok");
    assert_eq!(dec["call_id"], id.as_str());

    // Replayed (same nonce) and a second answer (fresh nonce): refused.
    let (s, v) = post_callback(&d, &id, now, &hmac_hex(SECRET, now, &good), &good);
    assert_eq!(
        (s, v["reason_code"].as_str()),
        (409, Some("callback_replayed")),
        "{v}"
    );
    let again = callback_body(&id, "deny", now, "nonce-2");
    let (s, v) = post_callback(&d, &id, now, &hmac_hex(SECRET, now, &again), &again);
    assert_eq!(
        (s, v["reason_code"].as_str()),
        (409, Some("approval_already_decided")),
        "{v}"
    );

    let rows = rows_of(&d, &id);
    let s = summary(&rows);
    assert_eq!(
        s[0],
        row("tool_call", "deploy", "escalate", "approval_required")
    );
    // Refused callbacks on this id are rows under it too; the outcome is
    // the allow row, after the webhook approver's row.
    let pos = |r| {
        s.iter()
            .position(|x| *x == r)
            .unwrap_or_else(|| panic!("{s:?}"))
    };
    assert!(
        pos(row(
            "admin",
            "approval_approve",
            "allow",
            "approval_granted"
        )) < pos(row("tool_call", "deploy", "allow", "ok"))
    );
    assert!(
        s.contains(&row(
            "admin",
            "approval_webhook",
            "info",
            "webhook_delivered"
        )),
        "{s:?}"
    );
    let approve = rows
        .iter()
        .find(|r| r["action"] == "approval_approve")
        .unwrap();
    assert_eq!(approve["operator"], "webhook:slack:U024BE7LH");
    assert!(approve["target"]
        .as_str()
        .unwrap()
        .contains("channel:webhook"));
    let refused: Vec<String> = d
        .audit_records()
        .iter()
        .filter(|r| r["action"] == "approval_callback")
        .map(|r| r["reason_code"].as_str().unwrap().to_owned())
        .collect();
    for code in [
        "callback_bad_signature",
        "callback_stale",
        "unknown_approval",
        "callback_malformed",
        "callback_replayed",
        "approval_already_decided",
    ] {
        assert!(
            refused.iter().any(|c| c == code),
            "{code} audited: {refused:?}"
        );
    }

    // A delivery that fails (HTTP 500) is audited and approves nothing.
    let waiting = check_async(&d, &m, &["target=staging"]);
    let failed = deliveries
        .recv_timeout(Duration::from_secs(60))
        .expect("second POST");
    let event: Value = serde_json::from_slice(&failed.body).unwrap();
    let id2 = event["approval"]["id"].as_str().unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(30);
    while !summary(&rows_of(&d, &id2)).contains(&row(
        "admin",
        "approval_webhook",
        "info",
        "webhook_failed",
    )) {
        assert!(Instant::now() < until, "webhook failure not audited");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        pending(&d).len(),
        1,
        "still waiting after the failed delivery"
    );
    d.ok(&["approvals", "deny", &id2]);
    assert_decision(
        &decision_of(waiting.join().unwrap()),
        "deny",
        "approval_denied",
    );
    d.verify_chain();
}

/// One HTTP/1.1 exchange with the console on loopback: (status, head, body).
fn console_http(port: u16, request: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), body.to_owned())
}

#[test]
fn the_console_lists_and_answers_approvals_with_its_csrf_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = start(&format!(
        "[approvals]\ntimeout_secs = 60\n[console]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let host = format!("127.0.0.1:{port}");
    // Sign in with a one-time link; the page carries the CSRF token.
    let link: Value = serde_json::from_str(&d.ok(&["console", "--json"])).unwrap();
    let url = link["url"].as_str().unwrap();
    let path = url.split_once(&host).unwrap().1;
    let (status, head, _) = console_http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .split_once("agentd_console=")
        .and_then(|(_, rest)| rest.split(';').next())
        .unwrap()
        .to_owned();
    let get = |p: &str| {
        console_http(
            port,
            &format!("GET {p} HTTP/1.1\r\nHost: {host}\r\nCookie: agentd_console={cookie}\r\nConnection: close\r\n\r\n"),
        )
    };
    let (_, _, page) = get("/");
    let csrf = page
        .split_once("name=\"csrf-token\" content=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .unwrap()
        .to_owned();
    let post = |p: &str, extra: &str, body: &str| {
        console_http(
            port,
            &format!("POST {p} HTTP/1.1\r\nHost: {host}\r\nCookie: agentd_console={cookie}\r\nOrigin: http://{host}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
        )
    };

    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-olivia", "deploy prod");
    let waiting = check_async(&d, &m, &["target=prod"]);
    let id = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    let (status, _, body) = get("/api/approvals");
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["approvals"][0]["id"], id.as_str());

    // Without the CSRF token: refused, nothing changes.
    let route = format!("/api/approvals/{id}/approve");
    let (status, _, body) = post(&route, "", r#"{"reason":"x"}"#);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("console_csrf_invalid"), "{body}");
    assert_eq!(pending(&d).len(), 1);
    // With it: approved, recorded as the console admin's approval.
    let (status, _, body) = post(
        &route,
        &format!("X-CSRF-Token: {csrf}\r\n"),
        r#"{"reason":"looks fine"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"outcome\":\"approved\""), "{body}");
    assert_decision(&decision_of(waiting.join().unwrap()), "allow", "ok");
    let rows = rows_of(&d, &id);
    let approve = rows
        .iter()
        .find(|r| r["action"] == "approval_approve")
        .unwrap();
    assert_eq!(approve["operator"], "console:uid:0");
    let target = approve["target"].as_str().unwrap();
    assert!(
        target.contains("channel:console") && target.contains("looks fine"),
        "{target}"
    );
    // A second answer from the console is refused like any other.
    let (status, _, body) = post(
        &format!("/api/approvals/{id}/deny"),
        &format!("X-CSRF-Token: {csrf}\r\n"),
        "{}",
    );
    assert_eq!(status, 409, "{body}");
    d.verify_chain();
}

#[test]
fn a_caller_that_goes_away_abandons_its_approval() {
    let d = start("[approvals]\ntimeout_secs = 60\n");
    let key = d.enroll("olivia", "owner");
    let m = d.send("olivia", &key, "slack:D-olivia", "deploy prod");
    let mut child = d
        .agentctl_cmd(&["check", "--json", "--message", &m, "deploy", "target=prod"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_pending(&d, 1)[0]["id"].as_str().unwrap().to_owned();
    child.kill().unwrap();
    let _ = child.wait();
    // The daemon notices the closed connection: the approval is withdrawn
    // (an answer now changes nothing), and audited.
    let until = Instant::now() + Duration::from_secs(30);
    while !summary(&rows_of(&d, &id)).contains(&row(
        "admin",
        "approval_abandon",
        "deny",
        "approval_abandoned",
    )) {
        assert!(Instant::now() < until, "not abandoned: {:?}", pending(&d));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pending(&d).is_empty());
    let late = d.agentctl(&["approvals", "approve", &id]);
    assert!(String::from_utf8_lossy(&late.stderr).contains("approval_already_decided"));
    d.verify_chain();
}
