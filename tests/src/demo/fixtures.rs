//! The demo's world: the files the policy talks about, a `mailctl` that must
//! never run, and two loopback listeners standing in for a mail relay and an
//! MCP server. Everything created here is removed again by [`Fixtures::drop`].
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;

/// Files and directories the demo creates (only if absent), as (path, contents, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "/workspace/notes.txt",
        "Q3 supplier review: acme-supplies.example\n",
        0o644,
    ),
    ("/workspace/scratch/.keep", "", 0o644),
    (
        "/srv/charts/patient-17.txt",
        "Patient 17 — BP 128/82, stable; follow-up in 2 weeks\n",
        0o644,
    ),
    (
        "/srv/charts/patient-18.txt",
        "Patient 18 — allergy: penicillin; discharge on Friday\n",
        0o644,
    ),
    (
        "/srv/invoices/acme/inv_2042.pdf",
        "%PDF-1.4 invoice inv_2042 — ACME Supplies — EUR 1,240.00\n",
        0o644,
    ),
    (
        "/var/mail/support",
        "From: stranger@invalid\nSubject: locked out\n",
        0o644,
    ),
    ("/home/agent/heartbeat.sh", "#!/bin/sh\necho alive\n", 0o755),
    (
        "/workspace/SOUL.md",
        "# SOUL\nI help the clinic's staff.\n",
        0o644,
    ),
    ("/workspace/night-notes.txt", "", 0o644),
    ("/srv/payments/ledger.txt", "", 0o644),
    (
        "/usr/local/bin/mailctl",
        "#!/bin/sh\necho \"mailctl: RESET ALL MAILBOXES ($*)\" >&2\nexit 0\n",
        0o755,
    ),
];

/// Files the agent owns, as a real agent would its home, identity file,
/// notes and ledger: only agentd — not file permissions — stands between
/// the agent and writing them.
const AGENT_OWNED: &[&str] = &[
    "/home/agent",
    "/home/agent/heartbeat.sh",
    "/workspace/SOUL.md",
    "/workspace/night-notes.txt",
    "/srv/payments/ledger.txt",
];

/// Symbolic links the demo creates (only if absent), as (link, target): a
/// workspace note that is really a patient chart (one no call of the demo
/// is granted). The gateway checks the path it is given (lexically); the
/// kernel checks the file actually opened.
const LINKS: &[(&str, &str)] = &[("/workspace/handover.txt", "/srv/charts/patient-18.txt")];

/// The created world; dropping it removes what it created.
pub struct Fixtures {
    created: Vec<PathBuf>,
    stop: Arc<AtomicBool>,
    /// Messages the mail relay accepted.
    pub relayed: Arc<AtomicUsize>,
    /// Requests the MCP server answered.
    pub mcp_calls: Arc<AtomicUsize>,
}

impl Fixtures {
    /// Creates the files and starts the listeners.
    pub fn create() -> anyhow::Result<Self> {
        let mut created = Vec::new();
        for (path, contents, mode) in FILES {
            let path = Path::new(path);
            if path.exists() {
                continue;
            }
            // Remember the topmost directory we create, to remove it whole.
            let mut top = None;
            for dir in path.ancestors().skip(1) {
                if dir.exists() {
                    break;
                }
                top = Some(dir.to_path_buf());
            }
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
            std::fs::write(path, contents)
                .with_context(|| format!("creating {}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
            created.push(top.unwrap_or_else(|| path.to_path_buf()));
        }
        for (link, target) in LINKS {
            let link = Path::new(link);
            if link.symlink_metadata().is_ok() {
                continue;
            }
            std::os::unix::fs::symlink(target, link)
                .with_context(|| format!("linking {} to {target}", link.display()))?;
            created.push(link.to_path_buf());
        }
        if let Some((uid, gid)) = user_ids(crate::harness::AGENT_USER) {
            for p in AGENT_OWNED {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .with_context(|| format!("chown {p}"))?;
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicUsize::new(0));
        let mcp_calls = Arc::new(AtomicUsize::new(0));
        listen(
            "127.0.0.1:25",
            "250 OK queued",
            stop.clone(),
            relayed.clone(),
        )?;
        listen(
            "127.0.0.1:8765",
            r#"{"jsonrpc":"2.0","id":1,"result":{"customer":"acme","status":"active"}}"#,
            stop.clone(),
            mcp_calls.clone(),
        )?;
        Ok(Self {
            created,
            stop,
            relayed,
            mcp_calls,
        })
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for p in self.created.iter().rev() {
            let _ = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
        }
    }
}

/// A one-line-request, one-line-answer TCP listener on loopback.
fn listen(
    addr: &str,
    answer: &'static str,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("binding the demo listener on {addr}"))?;
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut line = String::new();
                    let _ = BufReader::new(&s).read_line(&mut line);
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = writeln!(s, "{answer}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(())
}

/// uid and gid of a user, from the password database.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns NULL or a pointer to static storage we copy from at once.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}
