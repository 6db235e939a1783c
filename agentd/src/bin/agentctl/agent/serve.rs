//! `agentctl agent serve NAME -- RUNTIME ARGS…`: the driver. Takes the
//! agent's queued messages in order; for each, starts the runtime under
//! agentd as that agent (`agentctl run`, in a fresh run cgroup under the
//! agent's) with the message text on its **stdin** — never in argv, where
//! any process could read it and a text starting with `--` would become a
//! flag — and `AGENTD_ACTIVE_MESSAGE` in its environment; kills the run's
//! cgroup at the time limit; records the outcome and the runtime's stdout
//! (bounded) as the reply.
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::Method;

use agentd::agents::inbox::{Outcome, MAX_REPLY_BYTES};
use agentd::agents::manager::NextRun;
use agentd::agents::{InboxEntry, RunResult};
use agentd::api::client::blocking;
use agentd::enforce::launch;

/// Arguments of `agentctl agent serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agent name.
    name: String,
    /// Stop when the inbox is empty (instead of waiting for messages).
    #[arg(long)]
    exit_when_empty: bool,
    /// How often to look for new messages, milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Override the agent's time limit per message, seconds.
    #[arg(long)]
    time_limit: Option<u64>,
    /// agentd's enforcement socket.
    #[arg(long, default_value = launch::DEFAULT_SOCKET)]
    enforce_socket: PathBuf,
    /// The runtime and its arguments; the message arrives on its stdin.
    #[arg(last = true, required = true)]
    runtime: Vec<OsString>,
}

/// Runs the driver loop.
pub fn run(sock: &Path, a: Args) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("finding agentctl itself")?;
    loop {
        let name = a.name.clone();
        let next: NextRun = blocking(sock, |mut c| async move {
            c.call::<(), _>(Method::POST, &format!("/v1/inbox/{name}/next"), None)
                .await
        })?;
        let (Some(entry), Some(cgroup)) = (next.entry, next.cgroup) else {
            if a.exit_when_empty {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(a.poll_ms));
            continue;
        };
        let limit = Duration::from_secs(a.time_limit.unwrap_or(next.time_limit_secs));
        let started = Instant::now();
        let res = run_one(&me, &a, &entry, &cgroup, &next.user, limit);
        let res = res.unwrap_or_else(|e| RunResult {
            outcome: Outcome::LaunchFailed,
            exit_code: None,
            reply: format!("driver: {e:#}"),
            reply_truncated: false,
        });
        eprintln!(
            "agentctl agent serve: {} #{}: {} exit={} reply={} B{} in {:.1} s",
            a.name,
            entry.id,
            serde_json::to_value(res.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            res.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            res.reply.len(),
            if res.reply_truncated {
                " (truncated)"
            } else {
                ""
            },
            started.elapsed().as_secs_f64()
        );
        let (name, id) = (a.name.clone(), entry.id);
        let _: InboxEntry = blocking(sock, |mut c| async move {
            c.call(
                Method::POST,
                &format!("/v1/inbox/{name}/{id}/result"),
                Some(&res),
            )
            .await
        })?;
    }
}

/// Reads a stream to its end, keeping at most `max` bytes (a runtime that
/// floods its output is drained, never blocked, and never fills memory).
fn bounded_reader(
    mut r: impl Read + Send + 'static,
    max: usize,
) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut cut = false;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max - kept.len();
                    if n > room {
                        cut = true;
                    }
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        (kept, cut)
    })
}

/// UTF-8 text of at most `max` bytes (cut at a character boundary).
fn text_within(bytes: &[u8], max: usize) -> (String, bool) {
    let s = String::from_utf8_lossy(bytes).into_owned();
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), true)
}

/// One message: starts the runtime under `agentctl run`, feeds it the
/// message text, waits up to `limit` and turns what it did into a result.
fn run_one(
    me: &Path,
    a: &Args,
    entry: &InboxEntry,
    cgroup: &Path,
    user: &str,
    limit: Duration,
) -> anyhow::Result<RunResult> {
    let pw = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .with_context(|| format!("no user `{user}`"))?;
    let mut child = runtime_command(me, a, entry, cgroup, user, &pw.dir)
        .spawn()
        .context("starting agentctl run")?;
    let mut stdin = child.stdin.take().expect("piped");
    let text = entry.text.clone();
    // A runtime that never reads its stdin must not block the driver.
    std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let out = bounded_reader(child.stdout.take().expect("piped"), MAX_REPLY_BYTES);
    let err = bounded_reader(child.stderr.take().expect("piped"), 8 * 1024);
    let (status, timed_out) = wait_within(&mut child, cgroup, limit)?;
    let (stdout, cut) = out.join().unwrap_or_default();
    let (stderr, _) = err.join().unwrap_or_default();
    if !stderr.is_empty() {
        let _ = std::io::stderr().write_all(&stderr);
    }
    let (reply, cut2) = text_within(&stdout, MAX_REPLY_BYTES);
    Ok(RunResult {
        outcome: outcome_of(status, timed_out),
        exit_code: exit_code_of(status),
        reply,
        reply_truncated: cut || cut2,
    })
}

/// `agentctl run` as the agent's user, in the run's cgroup, with all three
/// standard streams piped (the message goes in on stdin, never in argv).
fn runtime_command(
    me: &Path,
    a: &Args,
    entry: &InboxEntry,
    cgroup: &Path,
    user: &str,
    home: &Path,
) -> Command {
    let mut cmd = Command::new(me);
    cmd.arg("run")
        .arg("--agent")
        .arg(&a.name)
        .arg("--user")
        .arg(user)
        .arg("--message")
        .arg(&entry.active_message_id)
        .arg("--run-cgroup")
        .arg(cgroup)
        .arg("--socket")
        .arg(&a.enforce_socket)
        .arg("--")
        .args(&a.runtime)
        // The runtime's own environment: the agent user's home, not ours.
        .env("HOME", home)
        .env("USER", user)
        .env("LOGNAME", user)
        .env("AGENTD_INBOX_ENTRY", entry.id.to_string())
        .env("AGENTD_SESSION", &entry.session)
        .env("AGENTD_MESSAGE_TRUST", &entry.trust)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for the run to end; at `limit` kills its whole cgroup. Returns
/// the exit status and whether the time limit ended it.
fn wait_within(
    child: &mut std::process::Child,
    cgroup: &Path,
    limit: Duration,
) -> anyhow::Result<(std::process::ExitStatus, bool)> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok((s, false));
        }
        if Instant::now() >= deadline {
            // Everything of the run goes at once: the runtime, its tools,
            // anything they left in the background.
            if let Err(e) = std::fs::write(cgroup.join("cgroup.kill"), "1") {
                eprintln!("agentctl agent serve: killing {}: {e}", cgroup.display());
            }
            let _ = child.kill();
            return Ok((child.wait()?, true));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The exit code, or 128 + the signal for a run a signal ended (the
/// shell's convention, so a reader sees a number either way).
fn exit_code_of(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.code().or(status.signal().map(|s| 128 + s))
}

fn outcome_of(status: std::process::ExitStatus, timed_out: bool) -> Outcome {
    if timed_out {
        Outcome::TimedOut
    } else if status.success() {
        Outcome::Ok
    } else {
        Outcome::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        let (s, cut) = text_within("aé".as_bytes(), 2);
        assert_eq!((s.as_str(), cut), ("a", true));
        let (s, cut) = text_within(b"abc", 3);
        assert_eq!((s.as_str(), cut), ("abc", false));
    }

    #[test]
    fn a_flood_is_drained_and_bounded() {
        let flood = std::io::repeat(b'x').take(10 * 1024 * 1024);
        let (kept, cut) = bounded_reader(flood, 1000).join().unwrap();
        assert_eq!(kept.len(), 1000);
        assert!(cut);
    }
}
