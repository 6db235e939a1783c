//! Fleet mode against real daemons and a real PostgreSQL (a throwaway
//! cluster on a Unix socket): three hosts ship their audit rows; a message
//! accepted on one host is refused on another (`replayed_nonce`, audited);
//! central verify passes, then names an edited row, a deleted row, a
//! duplicated row, reordered rows, an unknown host, and — given the host's
//! witness — newest rows deleted with their checkpoints. PostgreSQL killed
//! and restarted while a host keeps deciding: every row arrives exactly
//! once. Past the lease new messages are refused (`fleet_unavailable`,
//! audited) while calls on an accepted message are still decided; a frozen
//! server costs a message a bounded wait.
mod fleet_support;
mod gateway_support;

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_support::PgCluster;
use gateway_support::{assert_decision, free_port, sample, scrape, Daemon};
use hyper::Method;
use serde_json::Value;

fn cluster() -> Option<PgCluster> {
    match PgCluster::start() {
        Ok(c) => Some(c),
        Err(why) => {
            println!("SKIP fleet: {why}");
            None
        }
    }
}

fn fleet_daemon(conninfo: &Path, host: &str, lease_secs: u64) -> Daemon {
    Daemon::start_with(&format!(
        "[audit]\ncheckpoint_interval_secs = 1\n[fleet]\ncredentials_file = {conninfo:?}\nhost_id = {host:?}\nlease_secs = {lease_secs}\ntimeout_ms = 800\n"
    ))
}

/// The seqs PostgreSQL holds for `host`, ascending.
fn pg_seqs(pg: &PgCluster, host: &str) -> Vec<u64> {
    let out = pg.sql(&format!(
        "SELECT seq FROM agentd_audit WHERE host_id = '{host}' ORDER BY seq"
    ));
    out.lines().map(|l| l.parse().unwrap()).collect()
}

/// Waits until PostgreSQL holds exactly the host's local rows.
fn shipped(pg: &PgCluster, d: &Daemon, host: &str) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let local: Vec<u64> = d
            .audit_records()
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        let remote = pg_seqs(pg, host);
        if remote == local {
            return remote;
        }
        assert!(
            Instant::now() < deadline,
            "{host}: PostgreSQL holds {} rows (last {:?}), the host {} (last {:?})\n{}",
            remote.len(),
            remote.last(),
            local.len(),
            local.last(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn some_calls(d: &Daemon, op: &str, key: &Path, session: &str) -> String {
    let m = d.send(op, key, session, "read the chart");
    assert_decision(
        &d.check(&m, "read_chart", &["path=/srv/charts/p1.txt"]),
        "allow",
        "ok",
    );
    assert_decision(
        &d.check(&m, "shell", &["command=ls"]),
        "deny",
        "role_not_in_allowlist",
    );
    m
}

/// A signed message JSON (not sent).
fn signed(d: &Daemon, op: &str, key: &Path, session: &str) -> Vec<u8> {
    d.ok(&[
        "send",
        "--operator",
        op,
        "--key-file",
        key.to_str().unwrap(),
        "--session",
        session,
        "--print-only",
        "read the chart",
    ])
    .into_bytes()
}

fn post_message(d: &Daemon, body: &[u8]) -> (u16, Value) {
    d.raw(Method::POST, "/v1/messages", body.to_vec())
}

fn message_rows(d: &Daemon, reason: &str) -> Vec<Value> {
    d.audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "message" && r["reason_code"] == reason)
        .collect()
}

fn verify(d: &Daemon, conninfo: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["audit", "verify", "--postgres", conninfo.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = d.agentctl(&args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn three_hosts_ship_refuse_cross_host_replay_and_verify_centrally() {
    let Some(pg) = cluster() else { return };
    let conninfo = pg.conninfo_file();
    let hosts = ["host-a", "host-b", "host-c"];
    let daemons: Vec<Daemon> = hosts
        .iter()
        .map(|h| fleet_daemon(&conninfo, h, 30))
        .collect();
    let (a, b) = (&daemons[0], &daemons[1]);

    // One operator, the same key on every host.
    let key = a.enroll("olivia", "clinician");
    for d in &daemons[1..] {
        d.ok(&[
            "operator",
            "add",
            "olivia",
            "--role",
            "clinician",
            "--import-key",
            key.to_str().unwrap(),
        ]);
    }
    for (i, d) in daemons.iter().enumerate() {
        some_calls(d, "olivia", &key, &format!("s{i}"));
    }

    // Control: the message is accepted on A, once.
    let msg = signed(a, "olivia", &key, "replay");
    let (status, body) = post_message(a, &msg);
    assert_eq!(status, 200, "{body}");
    // Replayed to B: refused there, and audited there.
    let (status, body) = post_message(b, &msg);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason_code"], "replayed_nonce", "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("host-a"),
        "names the first host: {body}"
    );
    let rows = message_rows(b, "replayed_nonce");
    assert_eq!(rows.len(), 1, "B audits the replay: {rows:?}");
    assert_eq!(rows[0]["decision"], "deny");
    // And a fresh message still works on B (the check refuses replays only).
    some_calls(b, "olivia", &key, "fresh-on-b");

    for (h, d) in hosts.iter().zip(&daemons) {
        let seqs = shipped(&pg, d, h);
        assert_eq!(seqs.first(), Some(&1), "{h} ships from seq 1");
    }
    let keys = pg.sql("SELECT count(*) FROM agentd_hosts");
    assert_eq!(keys, "3", "each host registered its key once");
    // Checkpoints travel too (interval 1 s: wait for at least one per host).
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.sql("SELECT count(DISTINCT host_id) FROM agentd_checkpoints") != "3" {
        some_calls(a, "olivia", &key, "tick-a");
        some_calls(b, "olivia", &key, "tick-b");
        some_calls(&daemons[2], "olivia", &key, "tick-c");
        assert!(Instant::now() < deadline, "no checkpoints shipped");
        std::thread::sleep(Duration::from_millis(500));
    }
    for (h, d) in hosts.iter().zip(&daemons) {
        shipped(&pg, d, h);
    }

    let (ok, text) = verify(a, &conninfo, &[]);
    assert!(ok, "central verify passes on an untouched fleet:\n{text}");
    assert!(text.contains("PASS: 3 hosts"), "{text}");

    // The witness: host C's newest signed checkpoint, taken on host C once
    // it has stopped (a running host keeps adding rows — lifecycle, link —
    // which would race the cut below).
    let mut daemons = daemons;
    daemons[2].stop();
    let (a, c) = (&daemons[0], &daemons[2]);
    let cp = c.ok(&[
        "audit",
        "checkpoint",
        "--state-dir",
        c.state.to_str().unwrap(),
    ]);
    let cp_json: Value = serde_json::from_str(cp.trim()).unwrap();
    let count = cp_json["count"].as_u64().unwrap();
    let witness = c.dir.path().join("witness-c.json");
    std::fs::write(&witness, &cp).unwrap();
    assert!(count >= 3, "host C's checkpoint covers {count} rows");

    // Tamper with PostgreSQL, one kind per place.
    pg.sql("UPDATE agentd_audit SET target = 'tampered' WHERE host_id = 'host-a' AND seq = 3");
    pg.sql("DELETE FROM agentd_audit WHERE host_id = 'host-a' AND seq = 5");
    // B: seq 6 overwritten with a copy of seq 5; seqs 8 and 9 swapped.
    pg.sql(
        "UPDATE agentd_audit t SET ts = s.ts, kind = s.kind, operator = s.operator, session = s.session,
           active_message_id = s.active_message_id, call_id = s.call_id, action = s.action,
           target = s.target, decision = s.decision, reason_code = s.reason_code,
           policy_id = s.policy_id, latency_us = s.latency_us, agent = s.agent, pid = s.pid,
           access = s.access, prev_hash = s.prev_hash, hash = s.hash
         FROM agentd_audit s
         WHERE t.host_id = 'host-b' AND t.seq = 6 AND s.host_id = 'host-b' AND s.seq = 5",
    );
    pg.sql(
        "BEGIN;
         UPDATE agentd_audit SET seq = -8 WHERE host_id = 'host-b' AND seq = 8;
         UPDATE agentd_audit SET seq = 8 WHERE host_id = 'host-b' AND seq = 9;
         UPDATE agentd_audit SET seq = 9 WHERE host_id = 'host-b' AND seq = -8;
         COMMIT;",
    );
    // A host that never registered.
    pg.sql(
        "INSERT INTO agentd_audit (host_id, seq, ts, kind, operator, session, active_message_id,
           call_id, action, target, decision, reason_code, policy_id, latency_us, agent, pid,
           access, prev_hash, hash)
         SELECT 'host-x', seq, ts, kind, operator, session, active_message_id, call_id, action,
           target, decision, reason_code, policy_id, latency_us, agent, pid, access, prev_hash, hash
         FROM agentd_audit WHERE host_id = 'host-c' AND seq = 1",
    );
    // C: the newest rows deleted together with the checkpoints covering them
    // (PostgreSQL may hold fewer than the witness: rows of C's shutdown it
    // had no time to ship).
    let cut = count - 2;
    let held = pg_seqs(&pg, "host-c").last().copied().unwrap_or(0);
    let gap_from = cut.min(held) + 1;
    pg.sql(&format!(
        "DELETE FROM agentd_audit WHERE host_id = 'host-c' AND seq > {cut};
         DELETE FROM agentd_checkpoints WHERE host_id = 'host-c' AND count > {cut};"
    ));

    let (ok, text) = verify(a, &conninfo, &[]);
    assert!(!ok, "central verify fails:\n{text}");
    for needle in [
        "FAIL host host-a",
        "edited_row: seq 3",
        "gap: seq 5 missing",
        "FAIL host host-b",
        "duplicated_row: the row at seq 6 is a copy of seq 5",
        "moved_row: the row at seq 8 is seq 9's row",
        "moved_row: the row at seq 9 is seq 8's row",
        "FAIL host host-x",
        "unknown_host: 1 rows",
        "PASS host host-c",
    ] {
        assert!(text.contains(needle), "`{needle}` in:\n{text}");
    }
    // Only the witness shows what was cut from C's end.
    let w = format!("host-c={}", witness.display());
    let (ok, text) = verify(a, &conninfo, &["--host", "host-c", "--witness", &w]);
    assert!(!ok, "{text}");
    let gap = if gap_from == count {
        format!("gap: seq {count} missing")
    } else {
        format!("gap: seq {gap_from}..={count} missing")
    };
    assert!(text.contains(&gap), "`{gap}` in:\n{text}");
    assert!(
        !text.contains("host-a"),
        "--host limits the report:\n{text}"
    );
    // JSON names the same findings by code.
    let (_, text) = verify(a, &conninfo, &["--json"]);
    let v: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["result"], "fail");
    let codes: Vec<String> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| h["findings"].as_array().unwrap().clone())
        .map(|f| f["finding"].as_str().unwrap().to_owned())
        .collect();
    for code in [
        "edited_row",
        "gap",
        "duplicated_row",
        "moved_row",
        "unknown_host",
    ] {
        assert!(codes.iter().any(|c| c == code), "{code} in {codes:?}");
    }
}

#[test]
fn postgres_outage_loses_and_repeats_nothing_and_the_lease_holds() {
    let Some(pg) = cluster() else { return };
    let conninfo = pg.conninfo_file();
    let metrics = free_port();
    let d = Daemon::start_with(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[audit]\ncheckpoint_interval_secs = 1\n[fleet]\ncredentials_file = {conninfo:?}\nhost_id = \"host-a\"\nlease_secs = 3\ntimeout_ms = 800\n"
    ));
    let key = d.enroll("olivia", "clinician");
    let earlier = some_calls(&d, "olivia", &key, "s1");
    let seqs = shipped(&pg, &d, "host-a");
    let lag = |stat: &str| {
        let (status, text) = scrape(metrics);
        assert_eq!(status, 200, "{text}");
        sample(&text, &format!("agentd_fleet_shipping{{stat=\"{stat}\"}}"))
            .unwrap_or_else(|| panic!("no {stat} in\n{text}"))
    };
    // All shipped: /metrics says so.
    assert_eq!(lag("shipped_seq"), *seqs.last().unwrap() as f64);
    assert_eq!(lag("lag_rows"), 0.0);
    assert_eq!(lag("lag_seconds"), 0.0);

    pg.server_kill();
    // The host keeps deciding calls on an accepted message, PostgreSQL or not.
    for _ in 0..5 {
        assert_decision(
            &d.check(&earlier, "read_chart", &["path=/srv/charts/p1.txt"]),
            "allow",
            "ok",
        );
    }
    // Past the lease (3 s), a new message is refused, and audited.
    std::thread::sleep(Duration::from_secs(4));
    let msg = signed(&d, "olivia", &key, "s2");
    let started = Instant::now();
    let (status, body) = post_message(&d, &msg);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason_code"], "fleet_unavailable", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused promptly"
    );
    assert_eq!(message_rows(&d, "fleet_unavailable").len(), 1);
    // /metrics shows the backlog waiting for PostgreSQL, and its age.
    assert!(lag("lag_rows") >= 6.0, "rows decided while down");
    assert!(
        lag("lag_seconds") >= 3.0,
        "the oldest waited past the lease"
    );
    // Control: a call on the earlier message is still decided.
    assert_decision(
        &d.check(&earlier, "read_chart", &["path=/srv/charts/p1.txt"]),
        "allow",
        "ok",
    );
    assert_decision(
        &d.check(&earlier, "shell", &["command=ls"]),
        "deny",
        "role_not_in_allowlist",
    );

    pg.server_start();
    // Back: new messages are accepted again, and every row arrives once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let fresh = loop {
        let (status, body) = post_message(&d, &signed(&d, "olivia", &key, "s3"));
        if status == 200 {
            break body["active_message_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "still refused: {body}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_decision(
        &d.check(&fresh, "read_chart", &["path=/srv/charts/p1.txt"]),
        "allow",
        "ok",
    );
    let seqs = shipped(&pg, &d, "host-a");
    let n = seqs.len() as u64;
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    // Caught up: no backlog left (rows audited after `shipped` read the log
    // may still be in flight, so wait for it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while lag("lag_rows") != 0.0 {
        assert!(Instant::now() < deadline, "backlog never drained");
        std::thread::sleep(Duration::from_millis(200));
    }
    let dupes = pg.sql("SELECT count(*) - count(DISTINCT hash) FROM agentd_audit");
    assert_eq!(dupes, "0");
    let link: Vec<String> = d
        .audit_records()
        .iter()
        .filter(|r| r["action"] == "fleet_link")
        .map(|r| r["reason_code"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        link.contains(&"fleet_unreachable".to_owned())
            && link.contains(&"fleet_reachable".to_owned()),
        "losing and regaining PostgreSQL is audited: {link:?}"
    );

    // A server that accepts connections and then stops answering: the
    // message path waits a bounded time (timeout_ms 800), never hangs.
    let pids = pg.server_pids();
    for &p in &pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
    }
    let m4 = signed(&d, "olivia", &key, "s4");
    let nonce = serde_json::from_slice::<Value>(&m4).unwrap()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let (status, body) = post_message(&d, &m4);
    let waited = started.elapsed();
    for &p in &pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGCONT,
        )
        .unwrap();
    }
    // Within the lease, accepted on the local check alone.
    assert_eq!(status, 200, "{body}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    println!("frozen PostgreSQL: the message waited {waited:?}");
    // After the thaw its nonce is recorded fleet-wide, and the chain is whole.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.sql(&format!(
        "SELECT count(*) FROM agentd_nonces WHERE nonce = '{nonce}'"
    )) != "1"
    {
        assert!(
            Instant::now() < deadline,
            "the lease's nonce never reached PostgreSQL"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    shipped(&pg, &d, "host-a");
    let (ok, text) = verify(&d, &conninfo, &[]);
    assert!(ok, "{text}");
}

/// A CA and a server certificate for `localhost` signed by it, in PEM:
/// (CA certificate, server certificate, server key).
fn tls_pki(ca_name: &str) -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca_cert, &ca_key)
        .unwrap();
    (ca_cert.pem(), server.pem(), server_key.serialize_pem())
}

#[test]
fn tls_to_postgres_is_verified_and_required() {
    let Some(pg) = cluster() else { return };
    let (ca, cert, key) = tls_pki("agentd fleet test CA");
    let port = pg.enable_tls(&cert, &key);
    let tcp = pg.private_file(
        "fleet-postgres-tls",
        &format!("host=localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres\n"),
    );
    let ca_file = pg.private_file("fleet-ca.pem", &ca);
    let (other_ca, _, _) = tls_pki("someone else's CA");
    let other_ca_file = pg.private_file("other-ca.pem", &other_ca);
    let daemon = |host: &str, ca: Option<&Path>| {
        let tls = ca.map_or(String::new(), |c| format!("tls_ca_file = {c:?}\n"));
        Daemon::start_with(&format!(
            "[fleet]\ncredentials_file = {tcp:?}\nhost_id = {host:?}\nlease_secs = 0\ntimeout_ms = 800\n{tls}"
        ))
    };

    // Over TLS with the server's CA: messages take the fleet-wide check and
    // rows arrive, on a connection PostgreSQL itself reports as TLS.
    let a = daemon("tls-host", Some(&ca_file));
    let key_a = a.enroll("olivia", "clinician");
    some_calls(&a, "olivia", &key_a, "s1");
    shipped(&pg, &a, "tls-host");
    assert_eq!(
        pg.sql("SELECT count(*) > 0 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.client_addr IS NOT NULL"),
        "t",
        "the host's connection is TLS"
    );

    // Without TLS (the server admits no plain TCP client), and over TLS
    // with a CA that did not sign the server's certificate: no link, so
    // with lease 0 every new message is refused, and audited.
    for (host, ca) in [
        ("plain-host", None),
        ("wrong-ca-host", Some(&*other_ca_file)),
    ] {
        let d = daemon(host, ca);
        let key = d.enroll("olivia", "clinician");
        let (status, body) = post_message(&d, &signed(&d, "olivia", &key, "s1"));
        assert_eq!(status, 503, "{host}: {body}");
        assert_eq!(body["reason_code"], "fleet_unavailable", "{host}: {body}");
        assert_eq!(message_rows(&d, "fleet_unavailable").len(), 1, "{host}");
        assert!(pg_seqs(&pg, host).is_empty(), "{host}: nothing shipped");
        // The operator is told why (not just "db error").
        let log = d.log_text();
        let why = if ca.is_none() {
            "pg_hba.conf"
        } else {
            "UnknownIssuer"
        };
        assert!(log.contains(why), "{host}: the log names {why}:\n{log}");
    }
}
