//! Usage thresholds end to end: the real daemon, `agentctl` and socket, the
//! demo policy with a threshold on one (role, action). Uses up to
//! `max_uses` are allowed, the next is denied `usage_threshold` (with its
//! audit row) while another operator and another action still pass; a
//! malformed threshold is refused at load and the policy in force stays.
mod gateway_support;

use gateway_support::{assert_decision, demo_policy, Daemon};

const CHART: [&str; 1] = ["path=/srv/charts/p-0042.json"];

fn limited(max_uses: u32, window_secs: u64) -> String {
    format!(
        "{}\n[roles.clinician.limits.read_chart]\nmax_uses = {max_uses}\nwindow_secs = {window_secs}\n",
        std::fs::read_to_string(demo_policy()).unwrap()
    )
}

#[test]
fn above_max_uses_is_denied_until_the_window_slides() {
    let d = Daemon::start_full("", |dir| {
        let p = dir.join("policy.toml");
        std::fs::write(&p, limited(2, 2)).unwrap();
        p
    });
    let chen = d.enroll("dr-chen", "clinician");
    let other = d.enroll("dr-who", "clinician");
    let m = d.send(
        "dr-chen",
        &chen,
        "slack:D-chen",
        "read chart 42 a few times",
    );
    let o = d.send("dr-who", &other, "slack:D-who", "read chart 42");
    assert_decision(&d.check(&m, "read_chart", &CHART), "allow", "ok");
    assert_decision(&d.check(&m, "read_chart", &CHART), "allow", "ok");
    let denied = d.check(&m, "read_chart", &CHART);
    assert_decision(&denied, "deny", "usage_threshold");
    let row = d
        .audit_records()
        .into_iter()
        .find(|r| r["call_id"] == denied["call_id"])
        .expect("audit row of the denial");
    assert_eq!(row["reason_code"], "usage_threshold");
    assert_eq!(row["operator"], "dr-chen");
    // Controls: another operator of the role, another action of the operator.
    assert_decision(&d.check(&o, "read_chart", &CHART), "allow", "ok");
    assert_decision(
        &d.check(
            &m,
            "send_email",
            &["to=ward3@clinic.example", "subject=p42", "body=stable"],
        ),
        "allow",
        "ok",
    );
    // The window slides: two seconds later the operator may again.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_decision(&d.check(&m, "read_chart", &CHART), "allow", "ok");

    // A bad threshold is refused with its location; the old policy stays.
    let bad = d.dir.path().join("bad.toml");
    std::fs::write(&bad, limited(0, 60)).unwrap();
    let before = d.ok(&["policy", "show", "--json"]);
    let out = d.agentctl(&["policy", "load", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("roles.clinician.limits.read_chart.max_uses"),
        "{err}"
    );
    assert_eq!(d.ok(&["policy", "show", "--json"]), before);
}
