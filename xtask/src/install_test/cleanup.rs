//! The guard that purges the package and deletes the accounts this run
//! created, on success and failure alike.
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

#[allow(unused_imports)]
use super::*;

/// Purges the package and deletes the accounts the test created, when
/// dropped (so also on an early return or a panic). The accounts to delete
/// are written to a marker file first, so a killed run is cleaned up by the
/// next one.
pub(super) struct Cleanup {
    pub(super) created: Vec<(String, String)>,
    pub(super) done: bool,
}

impl Cleanup {
    pub(super) fn arm() -> anyhow::Result<Self> {
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

    pub(super) fn from_marker() -> Self {
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
    pub(super) fn finish(mut self, checks: &mut Checks) {
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

    pub(super) fn cleanup(&mut self) {
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
