//! A stand-in for systemd's file-descriptor store, for the install test
//! where systemd is not PID 1: a `NOTIFY_SOCKET` datagram socket that keeps
//! the fds sent with `FDSTORE=1` under their `FDNAME`, closes them on
//! `FDSTOREREMOVE=1`, and passes them to the next start of the daemon as
//! fds 3.. with `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` — what
//! systemd does for a unit with `FileDescriptorStoreMax=`.
use std::{
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{net::UnixDatagram, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

/// The emulated store; stops listening when dropped (closing the fds).
pub struct FdStore {
    path: PathBuf,
    kept: Arc<Mutex<Kept>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Kept {
    fds: Vec<(String, OwnedFd)>,
    messages: Vec<String>,
}

impl FdStore {
    /// Listens on `path` (the `NOTIFY_SOCKET` to give the daemon).
    pub fn start(path: &Path) -> anyhow::Result<Self> {
        let sock = UnixDatagram::bind(path)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let kept = Arc::new(Mutex::new(Kept::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (kept, stop) = (kept.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((text, fds)) = receive(&sock) {
                        let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                        apply(&mut kept, &text, fds);
                    }
                }
            })
        };
        Ok(FdStore {
            path: path.to_owned(),
            kept,
            stop,
            thread: Some(thread),
        })
    }

    /// The names stored now.
    pub fn names(&self) -> Vec<String> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.fds.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Whether some message held this exact line (`READY=1`, …).
    pub fn saw(&self, line: &str) -> bool {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.messages.iter().any(|m| m.lines().any(|l| l == line))
    }

    /// Prepares `cmd` (whose program must exec the daemon in place, keeping
    /// its pid: `$0` of the shell wrapper below) to start as systemd starts
    /// the unit: `NOTIFY_SOCKET`, the stored fds as 3.. with their names,
    /// `LISTEN_PID` exported by a shell that then execs the daemon.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let sources: Vec<RawFd> = kept.fds.iter().map(|(_, f)| f.as_raw_fd()).collect();
        let names: Vec<&str> = kept.fds.iter().map(|(n, _)| n.as_str()).collect();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#)
            .arg(program)
            .args(args)
            .env("NOTIFY_SOCKET", &self.path)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES");
        if !sources.is_empty() {
            cmd.env("LISTEN_FDS", sources.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
        }
        // SAFETY: only fcntl and dup2 (async-signal-safe) between fork and
        // exec. Every source first moves above 1000 (close-on-exec), so no
        // dup2 below overwrites a source not yet placed; then each lands on
        // 3+i without close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut high = Vec::with_capacity(sources.len());
                for &fd in &sources {
                    let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 1000);
                    if h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high.push(h);
                }
                for (i, &h) in high.iter().enumerate() {
                    if libc::dup2(h, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd
    }
}

impl Drop for FdStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One notification datagram and the fds attached to it.
fn receive(sock: &UnixDatagram) -> Option<(String, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 32]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: received just now; ours alone.
            fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    let n = msg.bytes;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), fds))
}

/// What systemd does with one message (sd_notify(3)).
fn apply(kept: &mut Kept, text: &str, fds: Vec<OwnedFd>) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
    };
    let name = field("FDNAME=").unwrap_or_else(|| "stored".into());
    if field("FDSTORE=").as_deref() == Some("1") {
        kept.fds.extend(fds.into_iter().map(|f| (name.clone(), f)));
    }
    if field("FDSTOREREMOVE=").as_deref() == Some("1") {
        kept.fds.retain(|(n, _)| n != &name);
    }
    kept.messages.push(text.to_owned());
}
