//! Small helpers: dpkg status, accounts, commands, running and capturing
//! processes.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

#[allow(unused_imports)]
use super::*;

/// dpkg's status of the package ("installed", "config-files", ...), or None
/// when dpkg does not know it.
pub(super) fn dpkg_status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", PKG])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !s.is_empty() && s != "not-installed").then_some(s)
}

/// Files the installed package owns (dpkg -L).
pub(super) fn package_files() -> Vec<String> {
    capture(Command::new("dpkg").args(["-L", PKG]))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with('/'))
        .collect()
}

pub(super) fn account_exists(db: &str, name: &str) -> bool {
    Command::new("getent")
        .args([db, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(super) fn gone(path: &str) -> anyhow::Result<()> {
    if Path::new(path).exists() {
        bail!("{path} still exists");
    }
    Ok(())
}

pub(super) fn command_exists(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Installs a Debian package if `command` is missing, saying so.
pub(super) fn ensure_debian_package(command: &str, package: &str) -> anyhow::Result<()> {
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
pub(super) fn run_quiet(cmd: &mut Command) -> anyhow::Result<()> {
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
pub(super) fn capture(cmd: &mut Command) -> anyhow::Result<String> {
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
pub(super) fn capture_any(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
