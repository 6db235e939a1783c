//! Inspecting the built packages without installing them: the .rpm's
//! metadata and scripts (rpm -qp), the .deb's contents and maintainer scripts.
use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::{bail, Context as _};

#[allow(unused_imports)]
use super::*;

pub(super) fn check_rpm(rpm: &Path, checks: &mut Checks) {
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

pub(super) fn check_deb_static(deb: &Path, checks: &mut Checks) {
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
pub(super) fn starts_agentd(scripts: &str) -> anyhow::Result<()> {
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
