//! A nearly full audit disk, for real: the daemon's state directory is a
//! small tmpfs this test mounts (and removes). Filled below
//! `audit.min_free_mb`, the gateway denies what it would allow with
//! `audit_storage_low` — messages and tool calls — and those denial rows
//! are written (the reserve file was given back for them) in a chain that
//! verifies; freed again, calls are allowed again.
mod gateway_support;

use std::{path::PathBuf, process::Command};

use gateway_support::{assert_decision, demo_policy, Daemon};

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill_to(dir: &std::path::Path, free_target: u64) -> PathBuf {
    let free = agentd::audit::storage::free_bytes(dir).unwrap();
    let filler = dir.join("filler");
    let size = free.saturating_sub(free_target);
    let f = std::fs::File::create(&filler).unwrap();
    use std::os::fd::AsRawFd as _;
    // SAFETY: fallocate on a file this test owns.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size as libc::off_t) };
    assert_eq!(
        r,
        0,
        "fallocate {size}: {}",
        std::io::Error::last_os_error()
    );
    filler
}

#[test]
fn a_nearly_full_audit_disk_denies_and_still_records() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: needs root (mounts a tmpfs for the state directory)");
        return;
    }
    let mut mount = None;
    let mut mount_error = None;
    let d = Daemon::start_full("[audit]\nmin_free_mb = 8\nreserve_mb = 2\n", |dir| {
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        match Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs"])
            .arg(&state)
            .output()
        {
            Ok(o) if o.status.success() => mount = Some(Mount(state)),
            Ok(o) => mount_error = Some(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => mount_error = Some(e.to_string()),
        }
        demo_policy().canonicalize().unwrap()
    });
    let Some(_mount) = mount else {
        eprintln!("SKIPPED: cannot mount a tmpfs here: {mount_error:?}");
        return;
    };
    let reserve = d.state.join(agentd::audit::storage::RESERVE_FILE);
    assert_eq!(
        std::fs::metadata(&reserve).map(|m| m.len()).ok(),
        Some(2 << 20),
        "the reserve is taken while there is room"
    );
    let olivia = d.enroll("olivia", "owner");
    let text = "forward invoice inv_2042 to billing@acme-supplies.example";
    let args = [
        "to=billing@acme-supplies.example",
        "subject=inv_2042",
        "body=see attached",
        "attachment=/srv/invoices/acme/inv_2042.pdf",
    ];
    // Control: with room, the call is allowed.
    let m = d.send("olivia", &olivia, "slack:D-olivia", text);
    assert_decision(&d.check(&m, "send_email", &args), "allow", "ok");

    // Nearly full: 4 MiB left, under the 8 MiB threshold.
    let filler = fill_to(&d.state, 4 << 20);
    std::thread::sleep(std::time::Duration::from_millis(250));
    let denied = d.check(&m, "send_email", &args);
    assert_decision(&denied, "deny", "audit_storage_low");
    assert!(
        denied["audit_seq"].as_u64().is_some_and(|s| s > 0),
        "the denial has its row: {denied}"
    );
    assert!(!reserve.exists(), "the reserve was given back for the rows");
    let out = d.agentctl(&[
        "send",
        "--operator",
        "olivia",
        "--key-file",
        olivia.to_str().unwrap(),
        "--session",
        "slack:D-olivia",
        text,
    ]);
    assert!(!out.status.success(), "a message is refused too");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit_storage_low"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every refusal is in the log, and the chain verifies.
    let db = agentd::audit::store::db_path(&d.state);
    let conn = agentd::audit::store::open_ro(&db).unwrap();
    let rows = agentd::audit::store::records_after(&conn, &db, 0, 100_000).unwrap();
    let low: Vec<_> = rows
        .iter()
        .filter(|r| r.event.reason_code == "audit_storage_low" && r.event.decision == "deny")
        .map(|r| r.event.kind)
        .collect();
    assert_eq!(
        low,
        vec![
            agentd::audit::RecordKind::ToolCall,
            agentd::audit::RecordKind::Message
        ],
        "one deny row for the call, one for the message"
    );
    let key = agentd::audit::checkpoint::load_key(&d.state)
        .unwrap()
        .verifying_key();
    agentd::audit::verify_db(&db, &key, &[]).expect("the chain verifies");

    // Space freed: allowed again.
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert_decision(&d.check(&m, "send_email", &args), "allow", "ok");
}
