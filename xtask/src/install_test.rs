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
use std::{path::Path, process::Command};

use crate::{package, shell::step};

mod cleanup;
mod doctor;
mod inspect;
mod install;
mod sys;
mod units;
mod upgrade;

use cleanup::*;
use doctor::*;
use inspect::*;
use install::*;
use sys::*;
use units::*;

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
