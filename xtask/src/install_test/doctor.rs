//! The installed `agentd doctor`: run as root and under the unit's
//! capability bounding set, and what a refusal at the cgroup root means.
use std::{collections::BTreeMap, os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use anyhow::{bail, Context as _};

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone)]
pub(super) struct Doctor {
    pub(super) backend: String,
    pub(super) reason: String,
    /// probe name → (ok, detail)
    pub(super) probes: BTreeMap<String, (bool, String)>,
}

pub(super) fn run_doctor(cmd: &mut Command) -> anyhow::Result<Doctor> {
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
pub(super) fn bounding_set_of(unit: &str) -> anyhow::Result<String> {
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
pub(super) fn doctor_under_unit_caps(full: &Doctor) -> Vec<(String, Outcome)> {
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
pub(super) fn cgroup_root_not_owner_writable(detail: &str) -> Option<String> {
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
