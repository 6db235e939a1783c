//! The Prometheus endpoint on the real daemon: decisions made through the
//! real socket show up as counters equal to the audit log's own rows, the
//! gauges and the audit writer's commit histogram are there, and the text
//! passes `promtool check metrics` (Debian's prometheus package, installed by
//! `cargo xtask setup`).
mod gateway_support;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use gateway_support::{assert_decision, free_port, sample, scrape, Daemon};

fn start() -> (Daemon, u16) {
    let port = free_port();
    let d = Daemon::start_with(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "no metrics endpoint on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (d, port)
}

/// Tool-call rows in the audit log with this decision and reason.
fn audited(d: &Daemon, decision: &str, reason: &str) -> usize {
    d.audit_records()
        .iter()
        .filter(|r| {
            r["kind"] == "tool_call" && r["decision"] == decision && r["reason_code"] == reason
        })
        .count()
}

#[test]
fn decisions_are_counted_as_audited() {
    let (d, port) = start();
    let allowed = r#"agentd_decisions_total{decision="allow",kind="tool_call",reason="ok"}"#;
    let denied = r#"agentd_decisions_total{decision="deny",kind="tool_call",reason="role_not_in_allowlist"}"#;
    // The control: before any call, neither series exists.
    let (status, before) = scrape(port);
    assert_eq!(status, 200, "{before}");
    assert_eq!(sample(&before, allowed), None, "{before}");
    assert_eq!(sample(&before, denied), None, "{before}");

    let key = d.enroll("dr-chen", "clinician");
    let m = d.send("dr-chen", &key, "dm:metrics", "read the chart");
    for _ in 0..3 {
        assert_decision(
            &d.check(&m, "read_chart", &["path=/srv/charts/p-0042.json"]),
            "allow",
            "ok",
        );
    }
    for _ in 0..2 {
        assert_decision(
            &d.check(&m, "shell", &["command=ls"]),
            "deny",
            "role_not_in_allowlist",
        );
    }
    // The follower reads committed rows within ~100 ms; a generous bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = scrape(port);
        if sample(&text, allowed) == Some(3.0) && sample(&text, denied) == Some(2.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "counters never reached 3 and 2:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(audited(&d, "allow", "ok"), 3);
    assert_eq!(audited(&d, "deny", "role_not_in_allowlist"), 2);
    assert_eq!(
        sample(
            &text,
            r#"agentd_decision_latency_seconds_count{kind="tool_call"}"#
        ),
        Some(5.0),
        "{text}"
    );
    // Every commit of the audit writer is in its histogram.
    let commits = sample(&text, "agentd_audit_commit_seconds_count").unwrap_or(0.0);
    assert!(commits >= 1.0, "{text}");
    assert_eq!(
        sample(&text, r#"agentd_audit_commit_seconds_bucket{le="+Inf"}"#),
        Some(commits)
    );
    assert!(
        sample(&text, r#"agentd_receipt_queue{state="pending"}"#).is_some(),
        "{text}"
    );

    // Anything but GET /metrics: not found, and the endpoint keeps serving.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "POST /metrics/../admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(
        reply.starts_with("HTTP/1.1 404") || reply.starts_with("HTTP/1.1 405"),
        "{reply}"
    );
    assert_eq!(scrape(port).0, 200);
}

#[test]
fn the_exposition_passes_promtool() {
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        println!("SKIP promtool check metrics: /usr/bin/promtool is missing (`cargo xtask setup` installs Debian's prometheus package)");
        return;
    }
    let (d, port) = start();
    let key = d.enroll("dr-chen", "clinician");
    let m = d.send("dr-chen", &key, "dm:promtool", "read the chart");
    assert_decision(
        &d.check(&m, "shell", &["command=ls"]),
        "deny",
        "role_not_in_allowlist",
    );
    std::thread::sleep(Duration::from_millis(300));
    let (_, text) = scrape(port);
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
