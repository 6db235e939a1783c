//! Fleet mode's central state against three real daemons and a real
//! PostgreSQL: a policy pushed with `agentctl fleet policy push` reaches
//! every host (LISTEN/NOTIFY, well inside 10 s) and changes its decisions;
//! a policy that does not compile is refused on push (nothing stored) and,
//! slipped into the table by hand, refused by every host (old policy kept,
//! audited); a central operator (Ed25519, the database holds only its
//! public key) signs with `agentctl send` on every host; its removal, a
//! change of its roles, a delegation revocation and a
//! central suspension take effect on all three. PostgreSQL down, the hosts
//! keep enforcing their copy (across a restart); back up, they catch up.
//! Each host connects as its own role: row-level security lets it insert
//! its own rows only. Without NOTIFY the periodic re-read brings a change;
//! an older database still takes a restricted host's rows.
mod fleet_support;
mod gateway_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet_support::PgCluster;
use gateway_support::{assert_decision, demo_policy, Daemon};
use serde_json::Value;

const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];

fn cluster() -> Option<PgCluster> {
    match PgCluster::start() {
        Ok(c) => Some(c),
        Err(why) => {
            println!("SKIP fleet_central: {why}");
            None
        }
    }
}

fn fleet(d: &Daemon, admin: &Path, args: &[&str]) -> std::process::Output {
    let mut a = vec!["fleet", "--postgres", admin.to_str().unwrap()];
    a.extend_from_slice(args);
    d.agentctl(&a)
}

fn fleet_ok(d: &Daemon, admin: &Path, args: &[&str]) -> String {
    let out = fleet(d, admin, args);
    assert!(
        out.status.success(),
        "agentctl fleet {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The revision a `fleet` command printed (`… revision N …`).
fn revision(out: &str) -> u64 {
    let after = out.split("revision ").nth(1).expect("a revision");
    after
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Rows of the host's `fleet_central` audit rows with `reason` at `rev`.
fn central_rows(d: &Daemon, reason: &str, rev: u64) -> Vec<Value> {
    let needle = format!("rev={rev} ");
    d.audit_records()
        .into_iter()
        .filter(|r| r["action"] == "fleet_central" && r["reason_code"] == reason)
        .filter(|r| {
            r["target"]
                .as_str()
                .is_some_and(|t| t.starts_with(&needle) || t == needle.trim())
        })
        .collect()
}

/// Waits until every host audited `reason` at `rev`; returns how long it took.
fn on_every_host(daemons: &[Daemon], reason: &str, rev: u64, started: Instant) -> Duration {
    let deadline = started + Duration::from_secs(10);
    let mut pending: Vec<&Daemon> = daemons.iter().collect();
    while !pending.is_empty() {
        pending.retain(|d| central_rows(d, reason, rev).is_empty());
        assert!(
            Instant::now() < deadline,
            "{} hosts have not applied {reason} rev {rev} within 10 s:\n{}",
            pending.len(),
            pending[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn read_chart(d: &Daemon, msg: &str) -> Value {
    d.check(msg, "read_chart", &["path=/srv/charts/p1.txt"])
}

/// The demo policy without the clinician's read_chart.
fn narrowed_policy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(demo_policy()).unwrap();
    let start = text.find("[roles.clinician.allow.read_chart]").unwrap();
    let end = start
        + text[start..]
            .find("[roles.clinician.allow.send_email]")
            .unwrap();
    let narrowed = format!("{}{}", &text[..start], &text[end..]);
    let p = dir.join("narrowed.toml");
    std::fs::write(&p, narrowed).unwrap();
    p
}

fn host_daemon(pg: &PgCluster, host: &str) -> Daemon {
    let role = format!("agentd_host_{}", host.replace('-', "_"));
    let conninfo = pg.conninfo_file_as(&role);
    Daemon::start_with(&format!(
        "[fleet]\ncredentials_file = {conninfo:?}\nhost_id = {host:?}\nlease_secs = 300\ntimeout_ms = 800\nresync_secs = 300\n"
    ))
}

#[test]
fn central_policy_operators_and_suspensions_reach_every_host() {
    let Some(pg) = cluster() else { return };
    let admin = pg.conninfo_file();
    // The database first, with one least-privilege role per host.
    let setup = Daemon::start();
    let mut init = vec!["init-db"];
    for h in HOSTS {
        init.extend(["--host", h]);
    }
    let out = fleet_ok(&setup, &admin, &init);
    assert!(out.contains("role agentd_host_host_a"), "{out}");
    drop(setup);
    let daemons: Vec<Daemon> = HOSTS.iter().map(|h| host_daemon(&pg, h)).collect();
    let a = &daemons[0];

    // A central policy: pushed, validated, on every host.
    let started = Instant::now();
    let out = fleet_ok(
        a,
        &admin,
        &["policy", "push", demo_policy().to_str().unwrap()],
    );
    let rev = revision(&out);
    let took = on_every_host(&daemons, "fleet_policy_applied", rev, started);
    println!("central policy rev {rev} on 3 hosts after {took:?}");

    // A central operator: the database holds its public key only.
    let key = a.dir.path().join("olivia.pem");
    let out = fleet_ok(
        a,
        &admin,
        &[
            "operator",
            "add",
            "olivia",
            "--role",
            "clinician",
            "--key-file",
            key.to_str().unwrap(),
        ],
    );
    let rev = revision(&out);
    on_every_host(&daemons, "fleet_operator_added", rev, Instant::now());
    let stored = pg.sql("SELECT public_key FROM agentd_central_operators WHERE id = 'olivia'");
    assert_eq!(stored.len(), 64, "a public key: {stored}");
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    // Every host verifies its Ed25519 signature; the decisions follow the policy.
    let msgs: Vec<String> = daemons
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let m = d.send("olivia", &key, &format!("s{i}"), "read the chart");
            assert_decision(&read_chart(d, &m), "allow", "ok");
            m
        })
        .collect();
    // Under the hosts' own roles the fleet-wide replay check still works:
    // accepted on A, refused on B.
    let signed = a.ok(&[
        "send",
        "--operator",
        "olivia",
        "--key-file",
        key.to_str().unwrap(),
        "--session",
        "replay",
        "--print-only",
        "read the chart",
    ]);
    let (status, body) = a.raw(
        hyper::Method::POST,
        "/v1/messages",
        signed.clone().into_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = daemons[1].raw(hyper::Method::POST, "/v1/messages", signed.into_bytes());
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason_code"], "replayed_nonce", "{body}");
    // An HMAC signature in olivia's name is not hers.
    let hmac = a.dir.path().join("fake.key");
    std::fs::write(&hmac, "00".repeat(32)).unwrap();
    let fake = a.send("olivia", &hmac, "s-fake", "read the chart");
    assert_decision(&read_chart(a, &fake), "deny", "signature_mismatch");

    // Refused on push, nothing stored: a policy that does not compile,
    // and one dropping the role olivia holds.
    let before = pg.sql("SELECT count(*) FROM agentd_central_policy");
    let broken = a.dir.path().join("broken.toml");
    std::fs::write(&broken, "id = \"x\"\n[roles.clinician.allow.nope]\n").unwrap();
    let out = fleet(a, &admin, &["policy", "push", broken.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not compile"),
        "{err}"
    );
    let no_clinician = a.dir.path().join("no-clinician.toml");
    let text = std::fs::read_to_string(demo_policy()).unwrap();
    std::fs::write(
        &no_clinician,
        text.replace("roles.clinician", "roles.nurse"),
    )
    .unwrap();
    let out = fleet(
        a,
        &admin,
        &["policy", "push", no_clinician.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("operator `olivia` holds role `clinician`"),
        "{err}"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM agentd_central_policy"), before);

    // A narrower policy: every host stops allowing the clinician's read.
    let started = Instant::now();
    let narrowed = narrowed_policy(a.dir.path());
    let out = fleet_ok(a, &admin, &["policy", "push", narrowed.to_str().unwrap()]);
    let rev = revision(&out);
    let took = on_every_host(&daemons, "fleet_policy_applied", rev, started);
    println!("narrowed policy rev {rev} on 3 hosts after {took:?}");
    for (d, m) in daemons.iter().zip(&msgs) {
        assert_decision(&read_chart(d, m), "deny", "role_not_in_allowlist");
        assert_decision(
            &d.check(
                m,
                "send_email",
                &["to=ward@clinic.example", "subject=hi", "body=x"],
            ),
            "allow",
            "ok",
        );
    }

    // Slipped in by hand (past agentctl's check): each host refuses it,
    // audits why, and keeps the policy it had.
    let rev: u64 = pg
        .sql(
            "INSERT INTO agentd_central_policy (source, sha256, policy_id, pushed_by)
             VALUES ('id = \"bad\"\n[roles.x.allow.nothing]\n', 'x', 'bad', 'psql') RETURNING rev",
        )
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    on_every_host(&daemons, "fleet_policy_refused", rev, Instant::now());
    for (d, m) in daemons.iter().zip(&msgs) {
        assert_decision(&read_chart(d, m), "deny", "role_not_in_allowlist");
    }
    // Back to the demo policy (a fresh revision above the bad one).
    let out = fleet_ok(
        a,
        &admin,
        &["policy", "push", demo_policy().to_str().unwrap()],
    );
    let rev = revision(&out);
    on_every_host(&daemons, "fleet_policy_applied", rev, Instant::now());
    for (d, m) in daemons.iter().zip(&msgs) {
        assert_decision(&read_chart(d, m), "allow", "ok");
    }

    // A central suspension of olivia: refused on every host; lifted: allowed.
    let out = fleet_ok(
        a,
        &admin,
        &["suspend", "--reason", "audit", "operator", "olivia"],
    );
    let rev = revision(&out);
    on_every_host(&daemons, "fleet_suspended", rev, Instant::now());
    for (d, m) in daemons.iter().zip(&msgs) {
        assert_decision(&read_chart(d, m), "deny", "operator_suspended");
    }
    let out = fleet_ok(a, &admin, &["resume", "operator", "olivia"]);
    let rev = revision(&out);
    on_every_host(&daemons, "fleet_resumed", rev, Instant::now());
    for (d, m) in daemons.iter().zip(&msgs) {
        assert_decision(&read_chart(d, m), "allow", "ok");
    }

    // Central role changes: olivia as a member cannot read charts anywhere;
    // back as a clinician she can. An unknown role is refused, nothing stored.
    let out = fleet(
        a,
        &admin,
        &["operator", "set-roles", "olivia", "--role", "nobody"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("role `nobody` is not defined"),
        "{err}"
    );
    let out = fleet_ok(
        a,
        &admin,
        &["operator", "set-roles", "olivia", "--role", "member"],
    );
    on_every_host(
        &daemons,
        "fleet_operator_roles",
        revision(&out),
        Instant::now(),
    );
    for (d, m) in daemons.iter().zip(&msgs) {
        assert_decision(&read_chart(d, m), "deny", "role_not_in_allowlist");
    }
    let out = fleet_ok(
        a,
        &admin,
        &["operator", "set-roles", "olivia", "--role", "clinician"],
    );
    on_every_host(
        &daemons,
        "fleet_operator_roles",
        revision(&out),
        Instant::now(),
    );
    for (d, m) in daemons.iter().zip(&msgs) {
        assert_decision(&read_chart(d, m), "allow", "ok");
    }

    // A central delegation revocation reaches the host holding the token.
    let root = a.enroll("root-op", "clinician");
    let secret = a.dir.path().join("carol.secret");
    let token = a
        .ok(&[
            "delegate",
            "issue",
            "--operator",
            "root-op",
            "--key-file",
            root.to_str().unwrap(),
            "--to",
            "carol",
            "--secret-file",
            secret.to_str().unwrap(),
            "--actions",
            "read_chart",
            "--ttl",
            "10m",
            "--uses",
            "5",
        ])
        .trim()
        .to_owned();
    let send_token = |session: &str| {
        a.ok(&[
            "send",
            "--token",
            &token,
            "--token-key-file",
            secret.to_str().unwrap(),
            "--session",
            session,
            "read it",
        ])
        .trim()
        .to_owned()
    };
    let tm = send_token("carol-1");
    assert_decision(&read_chart(a, &tm), "allow", "ok");
    let out = fleet_ok(a, &admin, &["revoke-delegation", &token]);
    on_every_host(
        &daemons[..1],
        "fleet_delegation_revoked",
        revision(&out),
        Instant::now(),
    );
    assert_decision(&read_chart(a, &tm), "deny", "delegation_revoked");
    let out = fleet(a, &admin, &["revoke-delegation", "not-a-token"]);
    assert!(!out.status.success(), "a malformed token name is refused");

    // PostgreSQL down: every host keeps enforcing its copy, across a restart.
    let sam_key = a.dir.path().join("sam.pem");
    let out = fleet_ok(
        a,
        &admin,
        &[
            "operator",
            "add",
            "sam",
            "--role",
            "clinician",
            "--key-file",
            sam_key.to_str().unwrap(),
        ],
    );
    on_every_host(
        &daemons,
        "fleet_operator_added",
        revision(&out),
        Instant::now(),
    );
    let sam_msgs: Vec<String> = daemons
        .iter()
        .enumerate()
        .map(|(i, d)| d.send("sam", &sam_key, &format!("sam{i}"), "read"))
        .collect();
    let out = fleet_ok(a, &admin, &["policy", "push", narrowed.to_str().unwrap()]);
    on_every_host(
        &daemons,
        "fleet_policy_applied",
        revision(&out),
        Instant::now(),
    );
    pg.server_kill();
    let mut daemons = daemons;
    daemons[1].stop();
    daemons[1].spawn();
    for (d, m) in daemons.iter().zip(&sam_msgs) {
        assert_decision(&read_chart(d, m), "deny", "role_not_in_allowlist");
        assert_decision(
            &d.check(
                m,
                "send_email",
                &["to=ward@clinic.example", "subject=hi", "body=x"],
            ),
            "allow",
            "ok",
        );
    }
    pg.server_start();

    // Back up: a central removal reaches every host (after reconnecting).
    let started = Instant::now();
    let out = fleet_ok(&daemons[0], &admin, &["operator", "remove", "sam"]);
    let rev = revision(&out);
    let took = on_every_host(&daemons, "fleet_operator_removed", rev, started);
    println!("operator removal rev {rev} on 3 hosts after {took:?} (PostgreSQL restarted)");
    for (d, m) in daemons.iter().zip(&sam_msgs) {
        assert_decision(
            &d.check(
                m,
                "send_email",
                &["to=ward@clinic.example", "subject=hi", "body=x"],
            ),
            "deny",
            "operator_revoked",
        );
    }
    // Control: olivia, not removed, still acts.
    for (d, m) in daemons.iter().zip(&msgs) {
        assert_decision(
            &d.check(
                m,
                "send_email",
                &["to=ward@clinic.example", "subject=hi", "body=x"],
            ),
            "allow",
            "ok",
        );
    }
    // Every host reports the revision it applied.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = fleet_ok(&daemons[0], &admin, &["status"]);
        if status.contains("hosts: 3 (0 behind)") {
            assert!(
                status.contains(&format!("host-b\trevision {rev}")),
                "{status}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    rls_keeps_each_host_to_its_own_rows(&pg, &daemons);
    // A host cannot move another's reported revision.
    let updated = pg
        .sql_as(
            "agentd_host_host_a",
            "UPDATE agentd_host_central SET applied_rev = 0 WHERE host_id = 'host-b'",
        )
        .unwrap();
    assert_eq!(updated, "UPDATE 0", "{updated}");
}

/// Each host ships as its own role; a host's role inserts its own rows
/// and not another host's, and changes nothing central.
fn rls_keeps_each_host_to_its_own_rows(pg: &PgCluster, daemons: &[Daemon]) {
    // The daemons shipped under their roles.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (h, d) in HOSTS.iter().zip(daemons) {
        loop {
            let local = d.audit_records().len().to_string();
            let remote = pg.sql(&format!(
                "SELECT count(*) FROM agentd_audit WHERE host_id = '{h}'"
            ));
            if local == remote {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{h}: {remote} of {local} rows shipped"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let insert = |host: &str, seq: u64| {
        format!(
            "INSERT INTO agentd_audit (host_id, seq, ts, kind, operator, session, active_message_id,
               call_id, action, target, decision, reason_code, policy_id, latency_us, agent, pid,
               access, prev_hash, hash)
             VALUES ('{host}', {seq}, '2026-01-01T00:00:00Z', 'lifecycle', '', '', '', '', 'x', '',
               'info', 'ok', '', 0, '', 0, '', '', '')"
        )
    };
    let role_a = "agentd_host_host_a";
    // Control: its own row inserts.
    pg.sql_as(role_a, &insert("host-a", 1_000_000))
        .expect("a host inserts its own row");
    // Another host's row: refused by row-level security.
    let err = pg.sql_as(role_a, &insert("host-b", 1_000_000)).unwrap_err();
    assert!(err.contains("row-level security"), "{err}");
    assert_eq!(
        pg.sql("SELECT count(*) FROM agentd_audit WHERE host_id = 'host-b' AND seq = 1000000"),
        "0"
    );
    // It cannot see, change or delete another host's rows, nor its own.
    assert_eq!(
        pg.sql_as(
            role_a,
            "SELECT count(*) FROM agentd_audit WHERE host_id = 'host-b'"
        )
        .unwrap(),
        "0"
    );
    for sql in [
        "UPDATE agentd_audit SET target = 'x' WHERE host_id = 'host-a'",
        "DELETE FROM agentd_audit WHERE host_id = 'host-a'",
        "INSERT INTO agentd_checkpoints VALUES ('host-b', 1, 'h', 't', 's')",
        "INSERT INTO agentd_central_operators (id, roles, public_key, changed_by) VALUES ('eve', '{owner}', 'k', 'x')",
        "UPDATE agentd_central_policy SET source = ''",
        "INSERT INTO agentd_nonces VALUES ('olivia', 'nonce-for-b-0000', 'host-b', 9999999999)",
        "INSERT INTO agentd_host_central VALUES ('host-x', 999999)",
        "DELETE FROM agentd_nonces",
        "CREATE TABLE agentd_evil (x int)",
    ] {
        let r = pg.sql_as(role_a, sql);
        let refused = match &r {
            Err(e) => e.contains("permission denied") || e.contains("row-level security"),
            // A DELETE the policies filter to nothing removes nothing.
            Ok(_) => sql.starts_with("DELETE FROM agentd_nonces"),
        };
        assert!(refused, "{sql}: {r:?}");
    }
    assert_ne!(
        pg.sql("SELECT count(*) FROM agentd_nonces"),
        "0",
        "no live nonce deleted"
    );
}

/// A database an earlier agentd made (the four host tables, no central
/// ones) and a role that may only insert: the host still ships and checks
/// nonces, and says the central tables are missing.
#[test]
fn an_older_database_keeps_shipping_for_a_role_that_may_not_create_tables() {
    let Some(pg) = cluster() else { return };
    let admin = pg.conninfo_file();
    let setup = Daemon::start();
    fleet_ok(&setup, &admin, &["init-db"]);
    drop(setup);
    pg.sql(
        "DROP TABLE agentd_central_policy, agentd_central_operators, agentd_central_suspensions,
                    agentd_central_delegation_revocations, agentd_host_roles CASCADE;
         ALTER TABLE agentd_hosts DISABLE ROW LEVEL SECURITY;
         ALTER TABLE agentd_audit DISABLE ROW LEVEL SECURITY;
         ALTER TABLE agentd_checkpoints DISABLE ROW LEVEL SECURITY;
         ALTER TABLE agentd_nonces DISABLE ROW LEVEL SECURITY;
         CREATE ROLE agentd_old LOGIN;
         GRANT SELECT, INSERT ON agentd_hosts, agentd_audit, agentd_checkpoints, agentd_nonces TO agentd_old;
         GRANT UPDATE, DELETE ON agentd_nonces TO agentd_old;",
    );
    let conninfo = pg.conninfo_file_as("agentd_old");
    let d = Daemon::start_with(&format!(
        "[fleet]\ncredentials_file = {conninfo:?}\nhost_id = \"old-host\"\nlease_secs = 0\ntimeout_ms = 800\n"
    ));
    let key = d.enroll("olivia", "clinician");
    // lease_secs = 0: accepted only because the fleet-wide check was made.
    let m = d.send("olivia", &key, "s1", "read the chart");
    assert_decision(&read_chart(&d, &m), "allow", "ok");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let local = d.audit_records().len().to_string();
        let remote = pg.sql("SELECT count(*) FROM agentd_audit WHERE host_id = 'old-host'");
        if local == remote {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{remote} of {local} rows shipped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        pg.sql("SELECT count(*) FROM agentd_nonces WHERE host_id = 'old-host'"),
        "1"
    );
    assert!(
        d.log_text().contains("cannot create the central tables"),
        "{}",
        d.log_text()
    );
}

/// Without NOTIFY (the trigger disabled), the periodic re-read still
/// brings a central change (`resync_secs = 1`).
#[test]
fn the_periodic_reread_applies_a_change_nobody_announced() {
    let Some(pg) = cluster() else { return };
    let admin = pg.conninfo_file();
    let d = Daemon::start_with(&format!(
        "[fleet]\ncredentials_file = {admin:?}\nhost_id = \"host-r\"\nlease_secs = 300\ntimeout_ms = 800\nresync_secs = 1\n"
    ));
    let out = fleet_ok(
        &d,
        &admin,
        &["policy", "push", demo_policy().to_str().unwrap()],
    );
    on_every_host(
        std::slice::from_ref(&d),
        "fleet_policy_applied",
        revision(&out),
        Instant::now(),
    );
    pg.sql("ALTER TABLE agentd_central_policy DISABLE TRIGGER agentd_central_notify");
    let narrowed = narrowed_policy(d.dir.path());
    let started = Instant::now();
    let out = fleet_ok(&d, &admin, &["policy", "push", narrowed.to_str().unwrap()]);
    let took = on_every_host(
        std::slice::from_ref(&d),
        "fleet_policy_applied",
        revision(&out),
        started,
    );
    println!("unannounced change applied after {took:?} (resync_secs = 1)");
    let key = d.enroll("dr-lee", "clinician");
    let m = d.send("dr-lee", &key, "s1", "read");
    assert_decision(&read_chart(&d, &m), "deny", "role_not_in_allowlist");

    // A public key changed in place (by hand) is not taken: audited, and
    // the key the host enrolled still signs.
    let pat = d.dir.path().join("pat.pem");
    let out = fleet_ok(
        &d,
        &admin,
        &[
            "operator",
            "add",
            "pat",
            "--role",
            "clinician",
            "--key-file",
            pat.to_str().unwrap(),
        ],
    );
    on_every_host(
        std::slice::from_ref(&d),
        "fleet_operator_added",
        revision(&out),
        Instant::now(),
    );
    let other = d.dir.path().join("other.pem");
    fleet_ok(
        &d,
        &admin,
        &[
            "operator",
            "add",
            "other",
            "--role",
            "clinician",
            "--key-file",
            other.to_str().unwrap(),
        ],
    );
    let rev: u64 = pg
        .sql(
            "UPDATE agentd_central_operators SET rev = nextval('agentd_central_rev'),
               public_key = (SELECT public_key FROM agentd_central_operators WHERE id = 'other')
             WHERE id = 'pat' RETURNING rev",
        )
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    on_every_host(
        std::slice::from_ref(&d),
        "fleet_operator_refused",
        rev,
        Instant::now(),
    );
    let row = central_rows(&d, "fleet_operator_refused", rev);
    assert!(
        row[0]["target"]
            .as_str()
            .unwrap()
            .contains("another public key"),
        "{row:?}"
    );
    let m = d.send("pat", &pat, "s-pat", "read");
    assert_decision(
        &d.check(
            &m,
            "send_email",
            &["to=ward@clinic.example", "subject=hi", "body=x"],
        ),
        "allow",
        "ok",
    );
}
