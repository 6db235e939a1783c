//! The install test: builds both packages, inspects the .rpm (rpm -qp), then
//! installs the .deb on this machine (dpkg -i), checks files, modes, users,
//! the enable-but-not-start rule, the installed `agentd doctor` (also under
//! the unit's capability set) and `systemd-analyze verify`, removes and
//! purges it, and checks nothing is left.
//!
//! It never starts the daemon unless systemd is PID 1 (then it starts and
//! stops the unit). It refuses to touch an existing installation or state,
//! and it cleans up after itself on failure too: a guard purges the package
//! and deletes the accounts it created when dropped, and a marker file lets
//! the next run finish the job if this one was killed.
use std::{
    collections::BTreeMap,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use crate::{package, shell::step};

mod upgrade;

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The check ran and held.
    Pass,
    /// The check ran and did not hold: why.
    Fail(String),
    /// The check could not run here: why.
    Skip(String),
}

/// One named check and its outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it went.
    pub outcome: Outcome,
}

const PKG: &str = "agentd";
const MARKER: &str = "/var/tmp/agentd-install-test.marker";
const UNIT_DIR: &str = "/usr/lib/systemd/system";
const ENABLE_LINK: &str = "/etc/systemd/system/multi-user.target.wants/agentd.service";
const STATE_DIR: &str = "/var/lib/agentd";
const PIN_DIR: &str = "/sys/fs/bpf/agentd";
/// Where the default agentd instance records its state directory.
const INSTANCE_RECORD: &str = "/run/agentd-instances/agentd";
const ACCOUNTS: &[(&str, &str)] = &[
    ("passwd", "agentd-agent"),
    ("group", "agentd-agent"),
    ("group", "agentd-admin"),
];

/// Files (path, mode, is-conffile) both packages must install.
const EXPECTED_FILES: &[(&str, u32)] = &[
    ("/usr/bin/agentd", 0o755),
    ("/usr/bin/agentctl", 0o755),
    ("/usr/lib/systemd/system/agentd.service", 0o644),
    ("/usr/lib/systemd/system/agentd.slice", 0o644),
    ("/usr/lib/systemd/system/agent@.service", 0o644),
    ("/usr/lib/sysusers.d/agentd.conf", 0o644),
    ("/usr/lib/tmpfiles.d/agentd.conf", 0o644),
    ("/etc/agentd/agentd.toml", 0o644),
    ("/usr/share/agentd/agent.env.example", 0o644),
    ("/usr/share/agentd/policies/README", 0o644),
    ("/usr/share/doc/agentd/packaging.md", 0o644),
];

/// Collects checks and prints each as it completes.
#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn record(&mut self, name: &str, outcome: Outcome) {
        match &outcome {
            Outcome::Pass => println!("    ok      {name}"),
            Outcome::Fail(why) => println!("    FAILED  {name}: {why}"),
            Outcome::Skip(why) => println!("    SKIPPED: {name}: {why}"),
        }
        self.0.push(Check {
            name: name.to_owned(),
            outcome,
        });
    }

    fn check(&mut self, name: &str, result: anyhow::Result<()>) {
        self.record(
            name,
            match result {
                Ok(()) => Outcome::Pass,
                Err(e) => Outcome::Fail(format!("{e:#}")),
            },
        );
    }
}

/// Runs the install test. `Err` only when the test could not be run at all;
/// every check's outcome is in the returned list (and printed as it goes).
pub fn run() -> anyhow::Result<Vec<Check>> {
    let mut checks = Checks::default();

    step("install test: building the packages");
    let packages = match package::build() {
        Ok(p) => p,
        Err(e) => {
            checks.record("cargo xtask package", Outcome::Fail(format!("{e:#}")));
            return Ok(checks.0);
        }
    };
    checks.record("cargo xtask package", Outcome::Pass);

    step("install test: inspecting the .rpm (rpm -qp)");
    ensure_debian_package("rpm", "rpm")?;
    check_rpm(&packages.rpm, &mut checks);

    step("install test: inspecting the .deb (dpkg-deb)");
    check_deb_static(&packages.deb, &mut checks);

    step("install test: installing the .deb on this machine");
    if let Err(why) = preflight() {
        checks.record("install, remove and purge the .deb", Outcome::Skip(why));
        return Ok(checks.0);
    }
    let guard = Cleanup::arm()?;
    install_remove_purge(&packages.deb, &mut checks);
    guard.finish(&mut checks);
    Ok(checks.0)
}

// ---------------------------------------------------------------- rpm ----

fn check_rpm(rpm: &Path, checks: &mut Checks) {
    checks.check(
        "rpm: files and modes (rpm -qp --dump)",
        (|| {
            let dump = capture(Command::new("rpm").arg("-qp").arg("--dump").arg(rpm))?;
            // path size mtime digest mode owner group isconfig isdoc rdev symlink
            let mut listed = BTreeMap::new();
            for line in dump.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 9 {
                    let mode = u32::from_str_radix(f[4], 8).unwrap_or(0);
                    listed.insert(
                        f[0].to_owned(),
                        (mode & 0o7777, f[7] == "1", f[5].to_owned()),
                    );
                }
            }
            for (path, mode) in EXPECTED_FILES {
                let (m, _, owner) = listed
                    .get(*path)
                    .with_context(|| format!("{path} is not in the .rpm"))?;
                if m != mode || owner != "root" {
                    bail!("{path}: mode {m:o} owner {owner}, want {mode:o} root");
                }
            }
            if !listed.get("/etc/agentd/agentd.toml").is_some_and(|e| e.1) {
                bail!("/etc/agentd/agentd.toml is not marked %config");
            }
            Ok(())
        })(),
    );

    checks.check("rpm: maintainer scripts (rpm -qp --scripts)", (|| {
        let scripts = capture(Command::new("rpm").arg("-qp").arg("--scripts").arg(rpm))?;
        for needle in [
            "postinstall scriptlet",
            "systemd-sysusers agentd.conf",
            "systemd-tmpfiles --create agentd.conf",
            "systemctl enable agentd.service",
            "preuninstall scriptlet",
            "systemctl stop agentd.slice agentd.service",
            "postuninstall scriptlet",
            "rm -rf /sys/fs/bpf/agentd",
        ] {
            if !scripts.contains(needle) {
                bail!("scripts lack `{needle}` (a script path that did not resolve is packaged as its own text)");
            }
        }
        starts_agentd(&scripts)
    })());

    checks.check(
        "rpm: requires systemd",
        (|| {
            let req = capture(Command::new("rpm").arg("-qp").arg("--requires").arg(rpm))?;
            if !req.lines().any(|l| l.trim().starts_with("systemd")) {
                bail!("Requires lacks systemd:\n{req}");
            }
            Ok(())
        })(),
    );
}

// ---------------------------------------------------------------- deb ----

fn check_deb_static(deb: &Path, checks: &mut Checks) {
    checks.check(
        "deb: control (Depends systemd, conffile)",
        (|| {
            let info = capture(Command::new("dpkg-deb").arg("--info").arg(deb))?;
            let depends = info
                .lines()
                .find(|l| l.trim_start().starts_with("Depends:"))
                .context("no Depends field")?;
            if !depends.contains("systemd") {
                bail!("{depends} lacks systemd");
            }
            let conffiles = capture(
                Command::new("sh")
                    .arg("-c")
                    .arg("dpkg-deb --ctrl-tarfile \"$1\" | tar -xO ./conffiles")
                    .arg("sh")
                    .arg(deb),
            )?;
            if !conffiles
                .lines()
                .any(|l| l.trim() == "/etc/agentd/agentd.toml")
            {
                bail!("/etc/agentd/agentd.toml is not a conffile: {conffiles:?}");
            }
            Ok(())
        })(),
    );
    checks.check(
        "deb: maintainer scripts enable, never start",
        (|| {
            let scripts = capture(
                Command::new("sh")
                    .arg("-c")
                    .arg("dpkg-deb --ctrl-tarfile \"$1\" | tar -xO ./postinst ./prerm ./postrm")
                    .arg("sh")
                    .arg(deb),
            )?;
            for needle in [
                "systemd-sysusers agentd.conf",
                "systemd-tmpfiles --create agentd.conf",
                "systemctl enable agentd.service",
                "systemctl stop agentd.slice agentd.service",
                "rm -rf /sys/fs/bpf/agentd",
                "rm -rf /var/lib/agentd",
            ] {
                if !scripts.contains(needle) {
                    bail!("scripts lack `{needle}`");
                }
            }
            starts_agentd(&scripts)
        })(),
    );
}

/// Fails if a maintainer script runs `systemctl start`/`restart` (echoed
/// advice and comments aside): the packages enable agentd, never start it.
fn starts_agentd(scripts: &str) -> anyhow::Result<()> {
    for line in scripts.lines() {
        let code = line.split('#').next().unwrap_or_default();
        if code.contains("echo") {
            continue;
        }
        if code.contains("systemctl start") || code.contains("systemctl restart") {
            bail!("a maintainer script starts agentd: `{}`", line.trim());
        }
    }
    Ok(())
}

/// Why the install part cannot run here, if it cannot.
fn preflight() -> Result<(), String> {
    if capture(Command::new("id").arg("-u"))
        .map(|s| s.trim() != "0")
        .unwrap_or(true)
    {
        return Err("needs root (dpkg -i)".into());
    }
    if !command_exists("dpkg") {
        return Err("dpkg is not installed: not a Debian-family machine".into());
    }
    if Path::new(MARKER).exists() {
        println!("    a previous install test left {MARKER}: cleaning up after it first");
        Cleanup::from_marker().cleanup();
    }
    if let Some(status) = dpkg_status() {
        return Err(format!(
            "package {PKG} is already on this machine ({status}); the test does not touch an existing installation"
        ));
    }
    for p in [
        "/usr/bin/agentd",
        "/etc/agentd",
        STATE_DIR,
        PIN_DIR,
        "/run/agentd",
        INSTANCE_RECORD,
    ] {
        if Path::new(p).exists() {
            return Err(format!(
                "{p} exists and is not from this test; purging the package would delete it"
            ));
        }
    }
    Ok(())
}

fn install_remove_purge(deb: &Path, checks: &mut Checks) {
    let installed = run_quiet(Command::new("dpkg").arg("-i").arg(deb));
    let ok = installed.is_ok();
    checks.check("dpkg -i", installed);
    if !ok {
        return;
    }

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
        (|| {
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
        })(),
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
    checks.check(
        "after purge: nothing is left",
        (|| {
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
        })(),
    );
    checks.check(
        "after purge: users and groups kept (Debian practice)",
        check_accounts(),
    );
}

fn check_installed_files() -> anyhow::Result<()> {
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
fn check_config_refusals() -> anyhow::Result<()> {
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

fn check_state_dir() -> anyhow::Result<()> {
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

fn check_accounts() -> anyhow::Result<()> {
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

fn check_enabled() -> anyhow::Result<()> {
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

fn check_not_started() -> anyhow::Result<()> {
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

#[derive(Debug, Clone)]
struct Doctor {
    backend: String,
    reason: String,
    /// probe name → (ok, detail)
    probes: BTreeMap<String, (bool, String)>,
}

fn run_doctor(cmd: &mut Command) -> anyhow::Result<Doctor> {
    let out = capture(cmd.args(["doctor", "--json"]))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("doctor printed no JSON")?;
    let probes: BTreeMap<_, _> = v["probes"]
        .as_array()
        .context("no probes")?
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                (
                    p["ok"].as_bool().unwrap_or(false),
                    p["detail"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect();
    if probes.is_empty() {
        bail!("doctor ran no probe");
    }
    Ok(Doctor {
        backend: v["backend"].as_str().context("no backend")?.to_owned(),
        reason: v["reason"].as_str().unwrap_or_default().to_owned(),
        probes,
    })
}

/// The unit's CapabilityBoundingSet as setpriv arguments ("-all,+bpf,...").
fn bounding_set_of(unit: &str) -> anyhow::Result<String> {
    let caps: Vec<String> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CapabilityBoundingSet="))
        .flat_map(|v| v.split_whitespace())
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    if caps.is_empty() {
        bail!("agentd.service has no CapabilityBoundingSet=");
    }
    Ok(format!("-all,{}", caps.join(",")))
}

/// Runs the installed doctor with only the unit's capabilities (and
/// NoNewPrivileges), and compares each probe with the fully privileged run.
fn doctor_under_unit_caps(full: &Doctor) -> Vec<(String, Outcome)> {
    let name = "`agentd doctor` with only agentd.service's capabilities: probes as for full root";
    let fail = |why: String| vec![(name.to_owned(), Outcome::Fail(why))];
    if !command_exists("setpriv") {
        return vec![(
            name.to_owned(),
            Outcome::Skip("setpriv (util-linux) is not installed".into()),
        )];
    }
    let unit =
        std::fs::read_to_string(Path::new(UNIT_DIR).join("agentd.service")).unwrap_or_default();
    let set = match bounding_set_of(&unit) {
        Ok(s) => s,
        Err(e) => return fail(format!("{e:#}")),
    };
    let reduced = match run_doctor(
        Command::new("setpriv")
            .args([
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set",
                &set,
                "--",
            ])
            .arg("/usr/bin/agentd"),
    ) {
        Ok(r) => r,
        Err(e) => return fail(format!("{e:#}")),
    };
    println!(
        "            unit set: {set}; backend {} (full root: {})",
        reduced.backend, full.backend
    );
    let mut results = Vec::new();
    let mut compared = 0;
    for (probe, (ok, _)) in &full.probes {
        let (rok, rdetail) = reduced.probes.get(probe).cloned().unwrap_or_default();
        if *ok && !rok {
            match cgroup_root_not_owner_writable(&rdetail) {
                // This probe cannot be compared here; the others still are.
                Some(why) => results.push((
                    format!("`agentd doctor` with the unit's capabilities: probe {probe}"),
                    Outcome::Skip(why),
                )),
                None => {
                    return fail(format!(
                        "probe {probe} passes as full root but fails with the unit's set ({set}): {rdetail}"
                    ))
                }
            }
        } else {
            compared += 1;
        }
    }
    let mut out = vec![(
        format!("{name} ({compared} of {} compared)", full.probes.len()),
        Outcome::Pass,
    )];
    out.extend(results);
    out
}

/// A probe that failed only because this machine's cgroup2 root directory
/// lacks the owner-write bit (so root needs CAP_DAC_OVERRIDE to mkdir there,
/// which the unit rightly lacks), explained; None for any other failure.
fn cgroup_root_not_owner_writable(detail: &str) -> Option<String> {
    let rest = detail.strip_prefix("mkdir ")?;
    let (path, err) = rest.split_once(": ")?;
    if !err.contains("Permission denied") {
        return None;
    }
    let parent = Path::new(path).parent()?;
    let mode = std::fs::metadata(parent).ok()?.permissions().mode() & 0o7777;
    (mode & 0o200 == 0).then(|| {
        format!(
            "the cgroup2 root {} is mode {mode:o} on this machine (0755 on systemd hosts), so creating a cgroup there needs CAP_DAC_OVERRIDE, which agentd.service deliberately lacks",
            parent.display()
        )
    })
}

// ------------------------------------------------------------ systemd ----

fn verify_units() -> (String, Outcome) {
    let name =
        "systemd-analyze verify agentd.service agentd.slice agent@example.service".to_owned();
    if let Err(e) = ensure_debian_package("systemd-analyze", "systemd") {
        return (
            name,
            Outcome::Skip(format!("systemd-analyze unavailable: {e:#}")),
        );
    }
    // A template verifies through an instance; copy it under an instance name.
    let tmp = std::env::temp_dir().join(format!("agentd-verify-{}", std::process::id()));
    let result = (|| -> anyhow::Result<Outcome> {
        std::fs::create_dir_all(&tmp)?;
        let inst = tmp.join("agent@example.service");
        std::fs::copy(Path::new(UNIT_DIR).join("agent@.service"), &inst)?;
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(Path::new(UNIT_DIR).join("agentd.service"))
            .arg(Path::new(UNIT_DIR).join("agentd.slice"))
            .arg(&inst)
            .output()
            .context("running systemd-analyze")?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.trim().is_empty() {
            Ok(Outcome::Pass)
        } else if out.status.success() {
            Ok(Outcome::Fail(format!("warnings: {}", text.trim())))
        } else if text.contains("Failed to initialize manager")
            || text.contains("Failed to setup working directory")
        {
            Ok(Outcome::Skip(format!(
                "systemd-analyze cannot run here: {}",
                text.trim()
            )))
        } else {
            Ok(Outcome::Fail(text.trim().to_owned()))
        }
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    match result {
        Ok(o) => (name, o),
        Err(e) => (name, Outcome::Fail(format!("{e:#}"))),
    }
}

/// Highest exposure score (systemd's 0–10 scale) accepted for agentd.service.
/// `--threshold` takes tenths: 50 means 5.0 (the unit rates 4.6 now).
const MAX_EXPOSURE_TENTHS: u32 = 50;

fn security_exposure() -> (String, Outcome) {
    let name = format!(
        "systemd-analyze security --offline: agentd.service exposure <= {}.{}",
        MAX_EXPOSURE_TENTHS / 10,
        MAX_EXPOSURE_TENTHS % 10
    );
    let out = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=yes",
            "--no-pager",
            &format!("--threshold={MAX_EXPOSURE_TENTHS}"),
        ])
        .arg(Path::new(UNIT_DIR).join("agentd.service"))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return (name, Outcome::Skip(format!("systemd-analyze: {e}"))),
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let level = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_default();
    if level.is_empty() {
        return (
            name,
            Outcome::Skip(format!("no exposure level printed: {}", text.trim())),
        );
    }
    println!("            {level}");
    if out.status.success() {
        (name, Outcome::Pass)
    } else {
        (name, Outcome::Fail(level))
    }
}

/// Starts and stops the unit where systemd is PID 1; says why not otherwise.
fn start_unit() -> (String, Outcome) {
    let name = "systemctl start agentd (Type=notify readiness, socket)".to_owned();
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if pid1.trim() != "systemd" || !Path::new("/run/systemd/system").exists() {
        return (
            name,
            Outcome::Skip(format!(
                "systemd is not PID 1 on this machine (PID 1 is `{}`), so no unit can be started; the units are verified offline instead",
                pid1.trim()
            )),
        );
    }
    let result = (|| -> anyhow::Result<()> {
        run_quiet(Command::new("systemctl").args(["daemon-reload"]))?;
        // Type=notify: `start` returns only after READY=1 (or fails).
        run_quiet(Command::new("timeout").args(["60", "systemctl", "start", "agentd.service"]))
            .context("agentd.service did not become ready (journalctl -u agentd)")?;
        if !Path::new("/run/agentd/agentd.sock").exists() {
            bail!("active, but /run/agentd/agentd.sock is missing");
        }
        Ok(())
    })();
    let _ = run_quiet(Command::new("systemctl").args(["stop", "agentd.service"]));
    match result {
        Ok(()) => (name, Outcome::Pass),
        Err(e) => (name, Outcome::Fail(format!("{e:#}"))),
    }
}

/// Without systemd as PID 1, runs what the unit would run as the unit would
/// run it: the installed binary, only the unit's capabilities,
/// NoNewPrivileges, NOTIFY_SOCKET for Type=notify. A throwaway instance (its
/// own state directory and socket under /tmp), never the service's state;
/// its pins, cgroup slice and instance record are removed afterwards.
fn emulated_start() -> Vec<(String, Outcome)> {
    let name = "emulated unit start: READY=1 with the unit's capabilities, socket bound, clean SIGTERM stop";
    let dir = std::env::temp_dir().join(format!("agentd-unit-emul-{}", std::process::id()));
    let unit =
        std::fs::read_to_string(Path::new(UNIT_DIR).join("agentd.service")).unwrap_or_default();
    let mut stderr_text = String::new();
    let result = (|| -> anyhow::Result<()> {
        let set = bounding_set_of(&unit)?;
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("run/agentd.sock");
        let config = dir.join("agentd.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\nsocket_path = \"{}\"\n",
                dir.join("state").display(),
                socket.display()
            ),
        )?;
        let notify_path = dir.join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)?;
        notify.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        let log = std::fs::File::create(dir.join("stderr.log"))?;
        let mut child = Command::new("setpriv")
            .args([
                "--no-new-privs",
                "--inh-caps=-all",
                "--bounding-set",
                &set,
                "--",
            ])
            .args(["/usr/bin/agentd", "run", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting agentd under setpriv")?;
        let outcome = (|| -> anyhow::Result<()> {
            let mut buf = [0u8; 4096];
            let started = std::time::Instant::now();
            loop {
                let n = notify.recv(&mut buf).context("no READY=1 within 60 s")?;
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    println!(
                        "            READY=1 after {:.2} s",
                        started.elapsed().as_secs_f64()
                    );
                    break;
                }
            }
            if !socket.exists() {
                bail!("READY=1 sent but {} is missing", socket.display());
            }
            // Enforcement loads in the background after READY=1: wait until
            // enforce.sock appears or agentd says it is unavailable.
            let enforce_sock = socket.with_file_name("enforce.sock");
            let log_path = dir.join("stderr.log");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !enforce_sock.exists()
                && std::time::Instant::now() < deadline
                && !std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .contains("enforcement unavailable")
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if enforce_sock.exists() {
                println!(
                    "            enforce.sock after {:.2} s",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(())
        })();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break Some(st);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        stderr_text =
            strip_ansi(&std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default());
        outcome?;
        match status {
            Some(st) if st.success() => Ok(()),
            Some(st) => bail!("exit {st} after SIGTERM"),
            None => bail!("did not stop within 30 s of SIGTERM"),
        }
    })();
    cleanup_instances(&stderr_text);
    let _ = std::fs::remove_dir_all(&dir);

    let mut out = vec![(
        name.to_owned(),
        match result {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(format!(
                "{e:#}; agentd said: {}",
                stderr_text
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ")
            )),
        },
    )];
    if out[0].1 == Outcome::Pass {
        let enforcing =
            "emulated unit start: enforcement backend loads with the unit's capabilities";
        let failed = stderr_text
            .lines()
            .find(|l| l.contains("enforcement unavailable"));
        out.push((
            enforcing.to_owned(),
            match failed {
                None if stderr_text.contains("enforcement running") => Outcome::Pass,
                None => Outcome::Fail(
                    "agentd logged neither `enforcement running` nor `enforcement unavailable`"
                        .into(),
                ),
                Some(line) => match cgroup_root_mode_quirk() {
                    Some(why) => Outcome::Skip(format!("{why} (agentd: {})", line.trim())),
                    None => Outcome::Fail(line.trim().to_owned()),
                },
            },
        ));
    }
    out
}

/// Why enforcement cannot start with the unit's capabilities on this
/// machine, if the cgroup2 root lacks the owner-write bit.
fn cgroup_root_mode_quirk() -> Option<String> {
    let root = cgroup2_root()?;
    let mode = std::fs::metadata(&root).ok()?.permissions().mode() & 0o7777;
    (mode & 0o200 == 0).then(|| {
        format!(
            "the cgroup2 root {} is mode {mode:o} here (0755 on systemd hosts): creating agent cgroups there needs CAP_DAC_OVERRIDE, which agentd.service deliberately lacks",
            root.display()
        )
    })
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
fn cgroup2_root() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    })
}

/// Removes what the throwaway instance(s) named in the log left: pins,
/// instance record, (empty) cgroup slice.
fn cleanup_instances(log: &str) {
    for inst in log
        .split("instance=")
        .skip(1)
        .filter_map(|rest| rest.trim_start_matches('"').split(['"', ' ']).next())
        .filter(|i| i.starts_with("agentd-") && !i.contains('/'))
    {
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{inst}"));
        let _ = std::fs::remove_file(format!("/run/agentd-instances/{inst}"));
        if let Some(root) = cgroup2_root() {
            let slice = root.join(format!("{inst}.slice"));
            if let Ok(children) = std::fs::read_dir(&slice) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(&slice);
        }
    }
}

/// Drops ANSI colour sequences from a log.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------- bpf ----

/// Pins a one-entry array map at /sys/fs/bpf/agentd/install-test, mounting
/// bpffs at /sys/fs/bpf first if nothing is mounted there (systemd does that
/// at boot on a real host).
fn pin_test_object() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        println!("            mounting bpffs at /sys/fs/bpf (as systemd does at boot)");
        run_quiet(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    std::fs::create_dir_all(PIN_DIR)?;
    let path = std::ffi::CString::new(format!("{PIN_DIR}/install-test"))?;

    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_MAP_CREATE of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreate,
            std::mem::size_of::<MapCreate>(),
        )
    };
    if fd < 0 {
        bail!("BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    }
    let pin = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
    };
    // SAFETY: pin points at a NUL-terminated path that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &pin as *const ObjPin,
            std::mem::size_of::<ObjPin>(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours; the pin keeps the map alive.
    unsafe { libc::close(fd as i32) };
    if rc < 0 {
        bail!("BPF_OBJ_PIN {}: {err}", path.to_string_lossy());
    }
    Ok(())
}

// ------------------------------------------------------------ cleanup ----

/// Purges the package and deletes the accounts the test created, when
/// dropped (so also on an early return or a panic). The accounts to delete
/// are written to a marker file first, so a killed run is cleaned up by the
/// next one.
struct Cleanup {
    created: Vec<(String, String)>,
    done: bool,
}

impl Cleanup {
    fn arm() -> anyhow::Result<Self> {
        let created: Vec<(String, String)> = ACCOUNTS
            .iter()
            .filter(|(db, name)| !account_exists(db, name))
            .map(|(db, name)| (db.to_string(), name.to_string()))
            .collect();
        let text: String = created
            .iter()
            .map(|(db, n)| format!("{db} {n}\n"))
            .collect();
        std::fs::write(MARKER, text).with_context(|| format!("writing {MARKER}"))?;
        Ok(Self {
            created,
            done: false,
        })
    }

    fn from_marker() -> Self {
        let created = std::fs::read_to_string(MARKER)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(db, n)| (db.to_owned(), n.to_owned()))
            .collect();
        Self {
            created,
            done: false,
        }
    }

    /// Cleans up and records whether the machine is back as it was.
    fn finish(mut self, checks: &mut Checks) {
        self.cleanup();
        checks.check(
            "cleanup: package purged, test accounts and pins removed",
            (|| {
                if let Some(status) = dpkg_status() {
                    bail!("{PKG} still {status}");
                }
                for (db, name) in &self.created {
                    if account_exists(db, name) {
                        bail!("{db} entry {name} created by the test is still there");
                    }
                }
                gone(PIN_DIR)
            })(),
        );
    }

    fn cleanup(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if dpkg_status().is_some() {
            let _ = run_quiet(Command::new("dpkg").arg("--purge").arg(PKG));
        }
        if Path::new(ENABLE_LINK).is_symlink() {
            let _ = std::fs::remove_file(ENABLE_LINK);
        }
        let _ = std::fs::remove_dir_all(PIN_DIR);
        // Users first: userdel also drops the user's own group.
        for (db, name) in self.created.iter().filter(|(db, _)| db == "passwd") {
            if account_exists(db, name) {
                let _ = run_quiet(Command::new("userdel").arg(name));
            }
        }
        for (db, name) in self.created.iter().filter(|(db, _)| db == "group") {
            if account_exists(db, name) {
                let _ = run_quiet(Command::new("groupdel").arg(name));
            }
        }
        let _ = std::fs::remove_file(MARKER);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.cleanup();
    }
}

// ------------------------------------------------------------ helpers ----

/// dpkg's status of the package ("installed", "config-files", ...), or None
/// when dpkg does not know it.
fn dpkg_status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", PKG])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !s.is_empty() && s != "not-installed").then_some(s)
}

/// Files the installed package owns (dpkg -L).
fn package_files() -> Vec<String> {
    capture(Command::new("dpkg").args(["-L", PKG]))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with('/'))
        .collect()
}

fn account_exists(db: &str, name: &str) -> bool {
    Command::new("getent")
        .args([db, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn gone(path: &str) -> anyhow::Result<()> {
    if Path::new(path).exists() {
        bail!("{path} still exists");
    }
    Ok(())
}

fn command_exists(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Installs a Debian package if `command` is missing, saying so.
fn ensure_debian_package(command: &str, package: &str) -> anyhow::Result<()> {
    if command_exists(command) {
        return Ok(());
    }
    println!("    {command} missing: apt-get install {package}");
    run_quiet(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", package]))
        .or_else(|_| {
            run_quiet(Command::new("apt-get").arg("update"))?;
            run_quiet(Command::new("apt-get").args([
                "install",
                "-y",
                "--no-install-recommends",
                package,
            ]))
        })?;
    if !command_exists(command) {
        bail!("{package} installed but {command} is still missing");
    }
    Ok(())
}

/// Runs a command; stdout and stderr are kept and shown only on failure.
fn run_quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command and returns its stdout; fails with its stderr.
fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and returns its stdout whatever its exit status.
fn capture_any(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mode_problem_at_the_cgroup_root_is_explained() {
        assert_eq!(cgroup_root_not_owner_writable("load failed: EPERM"), None);
        assert_eq!(
            cgroup_root_not_owner_writable(
                "mkdir /proc/agentd-doctor-1: No such file or directory"
            ),
            None
        );
        // /proc is 0555: a Permission denied under it is the explained case.
        assert!(cgroup_root_not_owner_writable(
            "mkdir /proc/agentd-doctor-1: Permission denied (os error 13)"
        )
        .is_some());
        // /tmp is writable by its owner: not explained, a real failure.
        assert_eq!(
            cgroup_root_not_owner_writable(
                "mkdir /tmp/agentd-doctor-1: Permission denied (os error 13)"
            ),
            None
        );
    }

    #[test]
    fn starting_agentd_is_caught_but_advice_is_not() {
        assert!(starts_agentd("systemctl enable agentd.service\n").is_ok());
        assert!(
            starts_agentd("echo \"then: systemctl start agentd\"\n# systemctl start x\n").is_ok()
        );
        assert!(starts_agentd("    systemctl start agentd.service || true\n").is_err());
        assert!(starts_agentd("true; systemctl restart agentd\n").is_err());
    }

    #[test]
    fn ansi_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2minstance\u{1b}[0m=\"agentd-1\""),
            "instance=\"agentd-1\""
        );
    }

    #[test]
    fn unit_caps_become_a_setpriv_bounding_set() {
        let set = bounding_set_of(include_str!("../../packaging/agentd.service")).unwrap();
        assert!(set.starts_with("-all,+"), "{set}");
        for cap in [
            "+bpf",
            "+perfmon",
            "+net_admin",
            "+sys_ptrace",
            "+setuid",
            "+setgid",
            "+dac_read_search",
            "+kill",
        ] {
            assert!(set.split(',').any(|c| c == cap), "{cap} missing from {set}");
        }
        assert!(
            !set.contains("sys_admin") && !set.contains("dac_override"),
            "{set}"
        );
        assert!(bounding_set_of("[Service]\nUser=root\n").is_err());
    }
}
