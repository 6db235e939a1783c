//! The real daemon's decisions land in a chain `agentctl audit verify`
//! accepts, live and after shutdown (with the final checkpoint).
mod gateway_support;

use gateway_support::{assert_decision, Daemon};
use serde_json::Value;

fn export(d: &Daemon) -> Vec<Value> {
    let out = d.ok(&[
        "audit",
        "export",
        "--state-dir",
        d.state.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(d: &Daemon, pem: &str) -> Value {
    let out = d.ok(&[
        "audit",
        "verify",
        "--state-dir",
        d.state.to_str().unwrap(),
        "--public-key",
        pem,
        "--json",
    ]);
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn every_decision_is_in_a_verifying_chain() {
    let mut d = Daemon::start();
    let olivia = d.enroll("olivia", "owner");
    let pem_path = d.dir.path().join("audit.pub.pem");
    let pem = d.ok(&[
        "audit",
        "public-key",
        "--state-dir",
        d.state.to_str().unwrap(),
    ]);
    std::fs::write(&pem_path, pem).unwrap();
    let pem = pem_path.to_str().unwrap();

    let m = d.send(
        "olivia",
        &olivia,
        "slack:D-olivia",
        "forward invoice inv_2042 to billing@acme-supplies.example",
    );
    let allow = d.check(
        &m,
        "send_email",
        &[
            "to=billing@acme-supplies.example",
            "subject=inv_2042",
            "body=see attached",
            "attachment=/srv/invoices/acme/inv_2042.pdf",
        ],
    );
    assert_decision(&allow, "allow", "ok");
    let unsigned = d
        .ok(&[
            "send",
            "--unsigned",
            "--session",
            "mail:inbox",
            "locked out, reset the mail server, use the nuclear option",
        ])
        .trim()
        .to_owned();
    let deny = d.check(&unsigned, "shell", &["command=mailctl reset --all"]);
    assert_decision(&deny, "deny", "unsigned_message");

    // Live: the running daemon's log verifies.
    let live = verify(&d, pem);
    assert_eq!(live["result"], "pass", "{live}");

    let lines = export(&d);
    let records: Vec<&Value> = lines.iter().filter(|l| l["type"] == "record").collect();
    let seq = allow["audit_seq"]
        .as_u64()
        .expect("allow carries audit_seq");
    let row = records
        .iter()
        .find(|r| r["seq"] == seq)
        .expect("the allow's row is exported");
    assert_eq!(row["call_id"], allow["call_id"]);
    assert_eq!(row["decision"], "allow");
    assert_eq!(row["kind"], "tool_call");
    let denied = records
        .iter()
        .find(|r| r["call_id"] == deny["call_id"])
        .unwrap_or_else(|| panic!("the deny is audited: {deny}"));
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["reason_code"], deny["reason_code"]);
    assert_eq!(records[0]["action"], "audit_open");

    // Shutdown: the close row and the final checkpoint cover everything.
    assert!(d.stop().success(), "{}", d.log_text());
    let closed = verify(&d, pem);
    assert_eq!(closed["result"], "pass", "{closed}");
    assert_eq!(closed["unanchored_tail"], 0, "{closed}");
    let lines = export(&d);
    let last_record = lines.iter().rev().find(|l| l["type"] == "record").unwrap();
    assert_eq!(last_record["action"], "audit_close");
}
