//! Installing the .deb, checking what it put in place (files, modes,
//! accounts, the state directory, enable-but-not-start, config refusals),
//! removing and purging it.
use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::Command,
};

use anyhow::{bail, Context as _};

#[allow(unused_imports)]
use super::*;

pub(super) fn install_remove_purge(deb: &Path, checks: &mut Checks) {
    let installed = run_quiet(Command::new("dpkg").arg("-i").arg(deb));
    let ok = installed.is_ok();
    checks.check("dpkg -i", installed);
    if !ok {
        return;
    }
    check_installed_package(checks);
    check_installed_doctor(checks);
    check_service(deb, checks);

    // Simulate a running agentd's leftovers: a real pinned BPF map and a
    // non-empty state directory.
    let pinned = pin_test_object();
    let have_pin = pinned.is_ok();
    checks.check(
        "pin a BPF map under /sys/fs/bpf/agentd (as agentd does)",
        pinned,
    );
    let owned = package_files();

    let removed = run_quiet(Command::new("dpkg").arg("-r").arg(PKG));
    let ok = removed.is_ok();
    checks.check("dpkg -r", removed);
    if !ok {
        return;
    }
    checks.check(
        "after remove: binaries and units gone, config and state kept",
        check_removed(),
    );
    if have_pin {
        checks.check("after remove: pinned BPF objects gone", gone(PIN_DIR));
        let _ = pin_test_object();
    }
    let _ = std::fs::write(Path::new(STATE_DIR).join("audit.db"), b"test");

    let purged = run_quiet(Command::new("dpkg").arg("--purge").arg(PKG));
    let ok = purged.is_ok();
    checks.check("dpkg --purge", purged);
    if !ok {
        return;
    }
    checks.check("after purge: nothing is left", check_purged(&owned));
    checks.check(
        "after purge: users and groups kept (Debian practice)",
        check_accounts(),
    );
}

/// What the install put in place: files, state directory, accounts, the
/// unit enabled but not started, config refusals.
fn check_installed_package(checks: &mut Checks) {
    checks.check("installed files and modes", check_installed_files());
    checks.check(
        "state directory /var/lib/agentd 0700 root",
        check_state_dir(),
    );
    checks.check(
        "users and groups agentd-agent, agentd-admin",
        check_accounts(),
    );
    checks.check("agentd.service enabled", check_enabled());
    checks.check("agentd not started", check_not_started());

    checks.check(
        "installed agentd refuses an unknown key and a bad value, naming the key",
        check_config_refusals(),
    );
}

/// The installed `agentd doctor`, as root and under the unit's capabilities.
fn check_installed_doctor(checks: &mut Checks) {
    let doctor = run_doctor(&mut Command::new("/usr/bin/agentd"));
    let full = match &doctor {
        Ok(r) => Some(r.clone()),
        Err(_) => None,
    };
    checks.check(
        "installed `agentd doctor --json`",
        doctor.map(|r| println!("            backend: {} — {}", r.backend, r.reason)),
    );
    if let Some(full) = full {
        for (name, outcome) in doctor_under_unit_caps(&full) {
            checks.record(&name, outcome);
        }
    }
}

/// The service: its units, its start (real or emulated), and an upgrade
/// over it.
fn check_service(deb: &Path, checks: &mut Checks) {
    let (name, outcome) = verify_units();
    checks.record(&name, outcome);
    let (name, outcome) = security_exposure();
    checks.record(&name, outcome);
    let (name, outcome) = start_unit();
    checks.record(&name, outcome);
    for (name, outcome) in emulated_start() {
        checks.record(&name, outcome);
    }
    // The same package again with a bumped version, over the running
    // (emulated) service with state and an agent: state kept, agent kept.
    for (name, outcome) in upgrade::upgrade_keeps_state_and_agents(deb) {
        if outcome != Outcome::Pass {
            checks.record(&name, outcome);
        } else {
            // Already printed as it passed.
            checks.0.push(Check { name, outcome });
        }
    }
}

/// After `dpkg -r`: binaries and units gone, config and state kept, the
/// package in config-files.
fn check_removed() -> anyhow::Result<()> {
    for p in [
        "/usr/bin/agentd",
        "/usr/bin/agentctl",
        "/usr/lib/systemd/system/agentd.service",
    ] {
        if Path::new(p).exists() {
            bail!("{p} still exists");
        }
    }
    for p in ["/etc/agentd/agentd.toml", STATE_DIR] {
        if !Path::new(p).exists() {
            bail!("{p} was deleted by remove (only purge may)");
        }
    }
    match dpkg_status().as_deref() {
        Some("config-files") => Ok(()),
        other => bail!("dpkg status {other:?}, want config-files"),
    }
}

/// After `dpkg --purge`: dpkg forgets the package and none of its files
/// (`owned`, listed before) or directories is left.
fn check_purged(owned: &[String]) -> anyhow::Result<()> {
    if let Some(status) = dpkg_status() {
        bail!("dpkg still knows {PKG}: {status}");
    }
    let mut left: Vec<String> = owned
        .iter()
        .filter(|p| {
            // Shared directories (/usr/bin, /etc, ...) stay, of course.
            let path = Path::new(p);
            path.exists() && !path.is_dir()
        })
        .cloned()
        .collect();
    for p in [
        "/etc/agentd",
        STATE_DIR,
        PIN_DIR,
        "/run/agentd",
        INSTANCE_RECORD,
        "/usr/share/agentd",
        "/usr/share/doc/agentd",
        ENABLE_LINK,
    ] {
        if Path::new(p).exists() || Path::new(p).is_symlink() {
            left.push(p.to_owned());
        }
    }
    if !left.is_empty() {
        bail!("left behind: {}", left.join(", "));
    }
    Ok(())
}

pub(super) fn check_installed_files() -> anyhow::Result<()> {
    for (path, mode) in EXPECTED_FILES {
        let md = std::fs::metadata(path).with_context(|| format!("{path} missing"))?;
        let m = md.permissions().mode() & 0o7777;
        if m != *mode || md.uid() != 0 || md.gid() != 0 {
            bail!(
                "{path}: mode {m:o} uid {} gid {}, want {mode:o} root:root",
                md.uid(),
                md.gid()
            );
        }
    }
    // Every policy of this checkout is shipped as an example.
    let src = crate::shell::workspace_root().join("policies");
    if let Ok(entries) = std::fs::read_dir(&src) {
        for e in entries.flatten() {
            let shipped = Path::new("/usr/share/agentd/policies").join(e.file_name());
            if e.path().is_file() && !shipped.is_file() {
                bail!("example policy {} not installed", shipped.display());
            }
        }
    }
    Ok(())
}

/// `agentd run` with a broken copy of the installed config must exit at
/// once, naming the key. (A good config would start the daemon, so only
/// broken ones are tried, under a timeout.)
pub(super) fn check_config_refusals() -> anyhow::Result<()> {
    let shipped = std::fs::read_to_string("/etc/agentd/agentd.toml")?;
    let cases = [
        (
            shipped.replace("socket_path = ", "socket_pth = "),
            "socket_pth",
        ),
        (
            shipped.replace("nonce_ttl_secs = 600", "nonce_ttl_secs = 10"),
            "gateway.nonce_ttl_secs",
        ),
    ];
    let dir = std::env::temp_dir().join(format!("agentd-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        for (i, (text, key)) in cases.iter().enumerate() {
            if text == &shipped {
                bail!("case {i}: the shipped file no longer has the line to break");
            }
            let path = dir.join(format!("bad{i}.toml"));
            std::fs::write(&path, text)?;
            let out = Command::new("timeout")
                .args(["10", "/usr/bin/agentd", "run", "--config"])
                .arg(&path)
                .output()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() == Some(124) {
                bail!("agentd started with a broken config ({key}) instead of refusing it");
            }
            if out.status.success() || !stderr.contains(key) {
                bail!(
                    "broken `{key}`: exit {}, stderr does not name it: {}",
                    out.status,
                    stderr.trim()
                );
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

pub(super) fn check_state_dir() -> anyhow::Result<()> {
    let md = std::fs::metadata(STATE_DIR).with_context(|| format!("{STATE_DIR} missing"))?;
    let m = md.permissions().mode() & 0o7777;
    if !md.is_dir() || m != 0o700 || md.uid() != 0 || md.gid() != 0 {
        bail!(
            "{STATE_DIR}: mode {m:o} uid {} gid {}, want a 0700 root:root directory",
            md.uid(),
            md.gid()
        );
    }
    Ok(())
}

pub(super) fn check_accounts() -> anyhow::Result<()> {
    for (db, name) in ACCOUNTS {
        if !account_exists(db, name) {
            bail!("{db} entry {name} missing");
        }
    }
    let pw = capture(Command::new("getent").args(["passwd", "agentd-agent"]))?;
    let f: Vec<&str> = pw.trim().split(':').collect();
    let uid: u32 = f
        .get(2)
        .and_then(|u| u.parse().ok())
        .context("bad passwd line")?;
    if uid == 0 || uid >= 1000 {
        bail!("agentd-agent has uid {uid}, want a system uid (1..999)");
    }
    if !f.get(6).is_some_and(|s| s.ends_with("nologin")) {
        bail!("agentd-agent has a login shell: {pw}");
    }
    Ok(())
}

pub(super) fn check_enabled() -> anyhow::Result<()> {
    let state = capture_any(Command::new("systemctl").args(["is-enabled", "agentd.service"]))?;
    if state.trim() != "enabled" {
        bail!("systemctl is-enabled says {:?}", state.trim());
    }
    let target =
        std::fs::read_link(ENABLE_LINK).with_context(|| format!("{ENABLE_LINK} missing"))?;
    if !target.ends_with("agentd.service") {
        bail!("{ENABLE_LINK} points to {}", target.display());
    }
    Ok(())
}

pub(super) fn check_not_started() -> anyhow::Result<()> {
    for e in std::fs::read_dir("/proc")?.flatten() {
        if let Ok(exe) = std::fs::read_link(e.path().join("exe")) {
            if exe.to_string_lossy().starts_with("/usr/bin/agentd") {
                bail!(
                    "an installed agentd runs as pid {}",
                    e.file_name().to_string_lossy()
                );
            }
        }
    }
    if Path::new("/run/agentd/agentd.sock").exists() {
        bail!("/run/agentd/agentd.sock exists");
    }
    Ok(())
}

// ------------------------------------------------------------- doctor ----
