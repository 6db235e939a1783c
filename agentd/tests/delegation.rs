//! Delegation end to end: the real daemon, the real `agentctl`, the real
//! socket and SQLite. An operator issues a sub-token; the delegate signs
//! messages with it; each call is bounded by the token's scope, its chain
//! and the issuer's current roles, counts a use (persisted across a
//! restart), and ends at expiry or revocation — each refusal checked with
//! its audit row beside a control that is allowed. Bad requests store
//! nothing and leave the daemon serving with an intact audit chain.
mod gateway_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gateway_support::{
    assert_decision, calls_of, demo_policy, enforcement_ready, in_agent, Daemon,
};
use hyper::Method;
use serde_json::Value;

const CHART: [&str; 1] = ["path=/srv/charts/p-0042.json"];
const OTHER_CHART: [&str; 1] = ["path=/srv/charts/q-7.json"];
const INVOICE: [&str; 1] = ["path=/srv/invoices/inv-1.pdf"];
const EMAIL: [&str; 3] = [
    "to=billing@acme-supplies.example",
    "subject=inv",
    "body=attached",
];

/// The decision row of one call.
fn row_of(d: &Daemon, decision: &Value) -> Value {
    d.audit_records()
        .into_iter()
        .rfind(|r| r["call_id"] == decision["call_id"])
        .unwrap_or_else(|| panic!("no audit row for {decision}"))
}

/// Admin rows with `action`.
fn admin_rows(d: &Daemon, action: &str) -> Vec<Value> {
    d.audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "admin" && r["action"] == action)
        .collect()
}

/// The audit chain verifies offline.
fn chain_intact(d: &Daemon) {
    let db = agentd::audit::store::db_path(&d.state);
    let key = agentd::audit::checkpoint::load_key(&d.state)
        .unwrap()
        .verifying_key();
    agentd::audit::verify_db(&db, &key, &[]).expect("the audit chain verifies");
}

/// Issues a token; returns (token name, secret file).
fn issue(d: &Daemon, signer: &[&str], to: &str, rest: &[&str]) -> (String, PathBuf) {
    let secret = d.dir.path().join(format!("{to}.secret"));
    let mut a = vec!["delegate", "issue"];
    a.extend_from_slice(signer);
    a.extend_from_slice(&["--to", to, "--secret-file", secret.to_str().unwrap()]);
    a.extend_from_slice(rest);
    let id = d.ok(&a).trim().to_owned();
    assert!(id.contains("/d-"), "{id}");
    (id, secret)
}

/// An issuance agentd refuses; returns agentctl's stderr.
fn issue_refused(d: &Daemon, signer: &[&str], to: &str, rest: &[&str]) -> String {
    let mut a = vec!["delegate", "issue"];
    a.extend_from_slice(signer);
    a.extend_from_slice(&["--to", to]);
    a.extend_from_slice(rest);
    let out = d.agentctl(&a);
    assert_eq!(out.status.code(), Some(2), "issued: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn op_signer(op: &str, key: &Path) -> Vec<String> {
    vec![
        "--operator".into(),
        op.into(),
        "--key-file".into(),
        key.to_str().unwrap().into(),
    ]
}

fn token_signer(token: &str, secret: &Path) -> Vec<String> {
    vec![
        "--parent".into(),
        token.into(),
        "--token-key-file".into(),
        secret.to_str().unwrap().into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Sends a message signed with a token's secret; returns the active-message id.
fn send_as(d: &Daemon, token: &str, secret: &Path, session: &str) -> String {
    d.ok(&[
        "send",
        "--token",
        token,
        "--token-key-file",
        secret.to_str().unwrap(),
        "--session",
        session,
        "do it",
    ])
    .trim()
    .to_owned()
}

/// Waits for the receipt worker to write the card of `call_id`.
fn wait_for_card(d: &Daemon, call_id: &str) -> PathBuf {
    let path = d.state.join("receipts").join(format!("{call_id}.png"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no receipt for {call_id}");
        std::thread::sleep(Duration::from_millis(50));
    }
    path
}

fn tokens_in_db(d: &Daemon) -> i64 {
    let c = rusqlite::Connection::open(d.state.join("gateway.db")).unwrap();
    c.query_row("SELECT count(*) FROM delegations", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_token_is_bounded_by_its_scope_the_issuers_roles_and_its_uses() {
    let mut d = Daemon::start();
    let olivia = d.enroll("olivia", "owner");
    let me = op_signer("olivia", &olivia);
    let (t, secret) = issue(
        &d,
        &strs(&me),
        "bob",
        &[
            "--actions",
            "read_chart,read_invoice",
            "--arg",
            "read_chart:path=/srv/charts/p-*",
            "--ttl",
            "10m",
            "--uses",
            "3",
        ],
    );
    let issued = admin_rows(&d, "delegation_issue");
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["operator"], "olivia");
    assert_eq!(issued[0]["reason_code"], "ok");
    let target = issued[0]["target"].as_str().unwrap();
    assert!(
        target.starts_with(&t) && target.contains("uses=3"),
        "{target}"
    );
    assert!(!d
        .log_text()
        .contains(&std::fs::read_to_string(&secret).unwrap().trim().to_owned()));

    let m = send_as(&d, &t, &secret, "slack:D-bob");
    let own = d.send("olivia", &olivia, "slack:D-olivia", "same things");
    // In scope: allowed, and the row names the token.
    let ok = d.check(&m, "read_chart", &CHART);
    assert_decision(&ok, "allow", "ok");
    assert_eq!(row_of(&d, &ok)["operator"], t.as_str());
    // Its receipt is sealed with the root operator's key (not the token's).
    let card = wait_for_card(&d, ok["call_id"].as_str().unwrap());
    let verify = |key: &Path| {
        d.agentctl(&[
            "receipt",
            "verify",
            card.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ])
    };
    let by_root = verify(&olivia);
    assert!(by_root.status.success(), "{by_root:?}");
    assert!(
        String::from_utf8_lossy(&by_root.stdout).contains(&t),
        "{by_root:?}"
    );
    assert!(
        !verify(&secret).status.success(),
        "the token's secret does not verify it"
    );
    // Outside the token's argument pattern and outside its actions; the
    // issuer's own message is allowed both (control).
    let out = d.check(&m, "read_chart", &OTHER_CHART);
    assert_decision(&out, "deny", "outside_delegation");
    let row = row_of(&d, &out);
    assert_eq!(row["reason_code"], "outside_delegation");
    let ex = d.ok(&[
        "explain",
        &row["seq"].to_string(),
        "--state-dir",
        d.state.to_str().unwrap(),
    ]);
    assert!(
        ex.contains("outside the scope")
            && ex.contains("agentctl delegate issue --operator olivia"),
        "{ex}"
    );
    assert_decision(&d.check(&own, "read_chart", &OTHER_CHART), "allow", "ok");
    let out = d.check(&m, "send_email", &EMAIL);
    assert_decision(&out, "deny", "outside_delegation");
    assert_decision(&d.check(&own, "send_email", &EMAIL), "allow", "ok");

    // The issuer's role loses read_invoice: so does the token, at its next call.
    assert_decision(&d.check(&m, "read_invoice", &INVOICE), "allow", "ok");
    let narrowed = d.dir.path().join("narrowed.toml");
    let src = std::fs::read_to_string(demo_policy()).unwrap();
    let cut = src.replace(
        "[roles.owner.allow.read_invoice]\npath = { type = \"path\", scopes = [\"/srv/invoices\"] }\n",
        "",
    );
    assert_ne!(cut, src, "the demo policy changed shape");
    std::fs::write(&narrowed, cut).unwrap();
    d.ok(&["policy", "load", narrowed.to_str().unwrap()]);
    let lost = d.check(&m, "read_invoice", &INVOICE);
    assert_decision(&lost, "deny", "role_not_in_allowlist");

    // Third use; then none left — and a restart does not refill them.
    assert_decision(&d.check(&m, "read_chart", &CHART), "allow", "ok");
    let spent = d.check(&m, "read_chart", &CHART);
    assert_decision(&spent, "deny", "delegation_used_up");
    assert_eq!(row_of(&d, &spent)["reason_code"], "delegation_used_up");
    d.stop();
    d.spawn();
    assert_decision(
        &d.check(&m, "read_chart", &CHART),
        "deny",
        "delegation_used_up",
    );
    assert_decision(&d.check(&own, "read_chart", &CHART), "allow", "ok");
    let listed = d.ok(&["delegate", "list"]);
    assert!(
        listed.contains(&t) && listed.contains("uses=0/3"),
        "{listed}"
    );

    // Expiry: a 5 s token works, then stops.
    let issued_at = Instant::now();
    let (short, ss) = issue(
        &d,
        &strs(&me),
        "carol",
        &["--actions", "read_chart", "--ttl", "5s", "--uses", "5"],
    );
    let ms = send_as(&d, &short, &ss, "slack:D-carol");
    assert_decision(&d.check(&ms, "read_chart", &CHART), "allow", "ok");
    std::thread::sleep(
        (issued_at + Duration::from_secs(6)).saturating_duration_since(Instant::now()),
    );
    let late = d.check(&ms, "read_chart", &CHART);
    assert_decision(&late, "deny", "delegation_expired");
    assert_eq!(row_of(&d, &late)["reason_code"], "delegation_expired");
    // An expired token issues nothing either; nothing is stored.
    let before = tokens_in_db(&d);
    let err = issue_refused(
        &d,
        &strs(&token_signer(&short, &ss)),
        "dan",
        &["--actions", "read_chart", "--ttl", "1s", "--uses", "1"],
    );
    assert!(err.contains("delegation_expired"), "{err}");
    assert_eq!(tokens_in_db(&d), before);
    chain_intact(&d);
    d.stop();
}

#[test]
fn chains_only_narrow_stop_at_five_and_never_loop() {
    let d = Daemon::start();
    let olivia = d.enroll("olivia", "owner");
    let me = op_signer("olivia", &olivia);
    let wide = [
        "--actions",
        "read_chart",
        "--arg",
        "read_chart:path=/srv/charts/*",
    ];
    let mut rest: Vec<&str> = wide.to_vec();
    rest.extend_from_slice(&["--ttl", "1h", "--uses", "20"]);
    let (t1, s1) = issue(&d, &strs(&me), "p1", &rest);

    // Widening refused, each with its code; nothing stored.
    let by1 = token_signer(&t1, &s1);
    let before = tokens_in_db(&d);
    for (args, code) in [
        (
            vec!["--actions", "shell", "--ttl", "1m", "--uses", "1"],
            "delegation_scope_too_wide",
        ),
        (
            vec![
                "--actions",
                "read_chart",
                "--arg",
                "read_chart:path=/srv/*",
                "--ttl",
                "1m",
                "--uses",
                "1",
            ],
            "delegation_scope_too_wide",
        ),
        (
            vec!["--actions", "read_chart", "--ttl", "1m", "--uses", "1"],
            "delegation_scope_too_wide",
        ),
        (
            vec![
                "--actions",
                "read_chart",
                "--arg",
                "read_chart:path=/srv/charts/a",
                "--ttl",
                "2h",
                "--uses",
                "1",
            ],
            "delegation_ttl_too_long",
        ),
        (
            vec![
                "--actions",
                "read_chart",
                "--arg",
                "read_chart:path=/srv/charts/a",
                "--ttl",
                "1m",
                "--uses",
                "21",
            ],
            "delegation_uses_too_many",
        ),
    ] {
        let err = issue_refused(&d, &strs(&by1), "q", &args);
        assert!(err.contains(code), "{args:?}: {err}");
    }
    // Self and loops: back to the token's holder, to the root, by the root to itself.
    // Each link lives a little shorter than its parent has left.
    let narrow_for = |minutes: u32| -> Vec<String> {
        [
            "--actions",
            "read_chart",
            "--arg",
            "read_chart:path=/srv/charts/p-*",
            "--ttl",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([format!("{minutes}m"), "--uses".into(), "10".into()])
        .collect()
    };
    let n50 = narrow_for(50);
    let narrow = strs(&n50);
    for to in ["p1", "olivia"] {
        let err = issue_refused(&d, &strs(&by1), to, &narrow);
        assert!(err.contains("delegation_loop"), "{to}: {err}");
    }
    let err = issue_refused(&d, &strs(&me), "olivia", &narrow);
    assert!(err.contains("delegation_loop"), "{err}");
    // Beyond every role of the operator.
    let err = issue_refused(
        &d,
        &strs(&me),
        "z",
        &["--actions", "no_such_action", "--ttl", "1m", "--uses", "1"],
    );
    assert!(err.contains("delegation_scope_too_wide"), "{err}");
    assert_eq!(tokens_in_db(&d), before);

    // A chain of five, each link narrower; the sixth is refused.
    let mut chain = vec![(t1.clone(), s1.clone())];
    for n in 2..=5 {
        let (parent, ps) = chain.last().unwrap().clone();
        let args = narrow_for(55 - 5 * n);
        let (t, s) = issue(
            &d,
            &strs(&token_signer(&parent, &ps)),
            &format!("p{n}"),
            &strs(&args),
        );
        chain.push((t, s));
    }
    let (t5, s5) = chain[4].clone();
    let n10 = narrow_for(10);
    let err = issue_refused(&d, &strs(&token_signer(&t5, &s5)), "p6", &strs(&n10));
    assert!(err.contains("delegation_chain_too_deep"), "{err}");
    let m5 = send_as(&d, &t5, &s5, "slack:D-p5");
    assert_decision(&d.check(&m5, "read_chart", &CHART), "allow", "ok");
    // The leaf's scope holds even where the root's would allow.
    assert_decision(
        &d.check(&m5, "read_chart", &OTHER_CHART),
        "deny",
        "outside_delegation",
    );

    // A sibling branch under t2, which has 9 uses left (t5's call spent
    // one of every link above it).
    let (t2, s2) = chain[1].clone();
    let mut n30 = narrow_for(30);
    *n30.last_mut().unwrap() = "9".into();
    let (sib, ss) = issue(&d, &strs(&token_signer(&t2, &s2)), "q3", &strs(&n30));
    let msib = send_as(&d, &sib, &ss, "slack:D-q3");
    assert_decision(&d.check(&msib, "read_chart", &CHART), "allow", "ok");

    // Revoking the middle link (t3, by olivia, signed) stops t3..t5 only.
    let (t3, _) = chain[2].clone();
    let mut a = vec!["delegate", "revoke", t3.as_str()];
    a.extend(strs(&me));
    let out = d.ok(&a);
    assert!(out.contains("tokens=3"), "{out}");
    let stopped = d.check(&m5, "read_chart", &CHART);
    assert_decision(&stopped, "deny", "delegation_revoked");
    assert_eq!(row_of(&d, &stopped)["reason_code"], "delegation_revoked");
    assert_decision(&d.check(&msib, "read_chart", &CHART), "allow", "ok");
    let rows = admin_rows(&d, "delegation_revoke");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["operator"], "olivia");
    let target = rows[0]["target"].as_str().unwrap();
    assert!(
        target.starts_with(&format!("{t3} tokens_ended=3 grants_revoked=")),
        "{target}"
    );
    // t5 can sign no new message either.
    let out = d.agentctl(&[
        "send",
        "--token",
        &t5,
        "--token-key-file",
        s5.to_str().unwrap(),
        "--session",
        "slack:D-p5",
        "again",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("delegation_revoked"),
        "{out:?}"
    );
    // Someone outside the chain cannot revoke a link.
    let chen = d.enroll("dr-chen", "owner");
    let mut a = vec!["delegate", "revoke", sib.as_str()];
    let other = op_signer("dr-chen", &chen);
    a.extend(strs(&other));
    let out = d.agentctl(&a);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("delegation_not_issuer"),
        "{out:?}"
    );
    assert_decision(&d.check(&msib, "read_chart", &CHART), "allow", "ok");
    chain_intact(&d);
}

#[test]
fn bad_issuance_requests_store_nothing() {
    let d = Daemon::start();
    let olivia = d.enroll("olivia", "owner");
    let key = hex::decode(std::fs::read_to_string(&olivia).unwrap().trim()).unwrap();
    let scope: agentd::protocol::delegation::ScopeMap =
        [("read_chart".to_owned(), Default::default())].into();
    let now = agentd::gateway::unix_now();
    let sign = |ts: i64, nonce: &str| {
        agentd::protocol::delegation::IssueRequest::new_signed(
            &key,
            "olivia",
            "bob",
            scope.clone(),
            60,
            1,
            nonce,
            ts,
        )
    };
    let post = |body: Vec<u8>| d.raw(Method::POST, "/v1/delegations", body);
    let json = |r: &agentd::protocol::delegation::IssueRequest| serde_json::to_vec(r).unwrap();
    let rows_before = d.audit_records().len();

    // Forged: a bit flipped in the signature.
    let mut forged = sign(now, "forged-nonce-000001");
    let mut sig = hex::decode(&forged.signature).unwrap();
    sig[0] ^= 1;
    forged.signature = hex::encode(sig);
    let (s, b) = post(json(&forged));
    assert_eq!(
        (s, b["reason_code"].as_str()),
        (403, Some("signature_mismatch")),
        "{b}"
    );
    // Expired (outside the timestamp window).
    let (s, b) = post(json(&sign(now - 3600, "stale-nonce-0000001")));
    assert_eq!(
        (s, b["reason_code"].as_str()),
        (403, Some("stale_timestamp")),
        "{b}"
    );
    // Over-scoped TTL, unknown fields, loops.
    let mut long = sign(now, "long-nonce-00000001");
    long.ttl_secs = 8 * 86_400;
    let (s, b) = post(json(&long));
    assert_eq!(
        (s, b["reason_code"].as_str()),
        (400, Some("invalid_delegation")),
        "{b}"
    );
    let mut v: Value = serde_json::from_slice(&json(&sign(now, "extra-nonce-0000001"))).unwrap();
    v["admin"] = true.into();
    let (s, b) = post(serde_json::to_vec(&v).unwrap());
    assert_eq!(
        (s, b["reason_code"].as_str()),
        (400, Some("unknown_field")),
        "{b}"
    );
    let self_issue = agentd::protocol::delegation::IssueRequest::new_signed(
        &key,
        "olivia",
        "olivia",
        scope.clone(),
        60,
        1,
        "loop-nonce-00000001",
        now,
    );
    let (s, b) = post(json(&self_issue));
    assert_eq!(
        (s, b["reason_code"].as_str()),
        (403, Some("delegation_loop")),
        "{b}"
    );
    assert_eq!(tokens_in_db(&d), 0);

    // Control: a good request is issued; replaying it is refused.
    let good = sign(now, "good-nonce-00000001");
    let (s, b) = post(json(&good));
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["secret"].as_str().map(str::len), Some(64));
    let (s, b) = post(json(&good));
    assert_eq!(
        (s, b["reason_code"].as_str()),
        (403, Some("replayed_nonce")),
        "{b}"
    );
    assert_eq!(tokens_in_db(&d), 1);

    // Each refusal is audited, the daemon still serves, the chain verifies.
    let codes: Vec<String> = d.audit_records()[rows_before..]
        .iter()
        .filter(|r| r["action"] == "delegation_issue")
        .map(|r| r["reason_code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        codes,
        ["signature_mismatch", "stale_timestamp", "invalid_delegation", "delegation_loop", "ok", "replayed_nonce"],
        "one row per refusal that reached the handler (unknown fields are refused by the JSON layer, like every route's)"
    );
    let (s, _) = d.raw(Method::GET, "/v1/health", vec![]);
    assert_eq!(s, 200);
    let looped = d
        .audit_records()
        .into_iter()
        .find(|r| r["reason_code"] == "delegation_loop")
        .unwrap();
    let ex = d.ok(&[
        "explain",
        &looped["seq"].to_string(),
        "--state-dir",
        d.state.to_str().unwrap(),
    ]);
    assert!(ex.contains("back to its own issuer"), "{ex}");
    // A non-admin cannot revoke unsigned; an admin can.
    let id = b_id(&d);
    let (s, b) = d.raw(
        Method::POST,
        "/v1/delegations/revoke",
        serde_json::to_vec(&serde_json::json!({"id": id})).unwrap(),
    );
    assert_eq!(s, 200, "{b}");
    chain_intact(&d);
}

/// The one token's id, from the list.
fn b_id(d: &Daemon) -> String {
    let (s, b) = d.raw(Method::GET, "/v1/delegations", vec![]);
    assert_eq!(s, 200, "{b}");
    b["delegations"][0]["id"].as_str().unwrap().to_owned()
}

#[test]
fn revoking_a_link_ends_the_grants_of_calls_below_it() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: needs root (agent cgroups, BPF)");
        return;
    }
    let d = Daemon::start();
    if enforcement_ready(&d).is_none() {
        return;
    }
    let agent = agentd::enforce::launch::call(
        &d.socket.with_file_name("enforce.sock"),
        &agentd::enforce::launch::Request::CreateAgent {
            agent: "deleg".into(),
            mode: None,
            command: Some(env!("CARGO_BIN_EXE_agentctl").into()),
            baseline: None,
        },
        None,
    )
    .unwrap()
    .unwrap();
    let cg = agent["cgroup"].as_str().unwrap().to_owned();
    let olivia = d.enroll("olivia", "owner");
    let me = op_signer("olivia", &olivia);
    let mail = ["--actions", "send_email", "--ttl", "10m", "--uses", "5"];
    let (t1, s1) = issue(&d, &strs(&me), "bob", &mail);
    let under = ["--actions", "send_email", "--ttl", "5m", "--uses", "2"];
    let (t2, s2) = issue(&d, &strs(&token_signer(&t1, &s1)), "carol", &under);
    let (sib, ss) = issue(&d, &strs(&me), "dave", &mail);
    let send_email = |m: &str| -> Value {
        let mut a = vec!["check", "--json", "--message", m, "send_email"];
        a.extend_from_slice(&EMAIL);
        let out = in_agent(&d, &cg, &a);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    };
    let m2 = send_as(&d, &t2, &s2, "slack:D-carol");
    let msib = send_as(&d, &sib, &ss, "slack:D-dave");
    let below = send_email(&m2);
    let sibling = send_email(&msib);
    assert_decision(&below, "allow", "ok");
    assert_decision(&sibling, "allow", "ok");
    let calls = calls_of(&d, "deleg");
    assert!(calls.iter().any(|c| *c == below["call_id"]), "{calls:?}");

    // Revoke t1 (an admin, unsigned): t2's call's grant ends, the sibling's stays.
    let out = d.ok(&["delegate", "revoke", &t1]);
    assert!(out.contains("tokens=2 grants_revoked=1"), "{out}");
    let calls = calls_of(&d, "deleg");
    assert!(!calls.iter().any(|c| *c == below["call_id"]), "{calls:?}");
    assert!(calls.iter().any(|c| *c == sibling["call_id"]), "{calls:?}");
    let row = admin_rows(&d, "delegation_revoke").pop().unwrap();
    assert_eq!(row["operator"], "uid:0");
    assert_eq!(
        row["target"].as_str().unwrap(),
        format!("{t1} tokens_ended=2 grants_revoked=1")
    );
    assert_decision(&send_email(&m2), "deny", "delegation_revoked");
    assert_decision(&send_email(&msib), "allow", "ok");
    chain_intact(&d);
}
