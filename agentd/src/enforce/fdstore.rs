//! systemd's file-descriptor store (`sd_notify` `FDSTORE=1`): where agentd
//! keeps a copy of each seccomp listener, so its agent stays supervised
//! across a restart of agentd.
//!
//! A listener stays open as long as some process holds it. Held by systemd
//! while agentd restarts, the agent's notified syscalls queue and wait (they
//! do not fail), and the next agentd gets the same listener back
//! (`LISTEN_FDS`/`LISTEN_FDNAMES`, as `sd_listen_fds_with_names(3)`) and
//! answers them. Without `NOTIFY_SOCKET` (not started by systemd) nothing
//! is stored and a restart stops the agents, as it must: their listeners
//! closed with the old process.
//!
//! Messages are sent with `sendmsg` + `SCM_RIGHTS` (nix); the fds handed
//! back are read with the `sd-notify` crate.
use std::{
    io::IoSlice,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
        unix::{ffi::OsStrExt as _, net::UnixDatagram},
    },
    sync::atomic::{AtomicU64, Ordering},
};

use nix::sys::socket::{self, ControlMessage, MsgFlags, UnixAddr};

use super::agent_cgroup::valid_name;

/// Prefix of every name agentd gives a stored listener.
const LISTENER_PREFIX: &str = "agentd-listener.";

/// What `/proc/self/fd/N` of a seccomp listener reads.
const LISTENER_LINK: &str = "anon_inode:seccomp notify";

/// Errors talking to the service manager.
#[derive(Debug, thiserror::Error)]
pub enum FdStoreError {
    /// `NOTIFY_SOCKET` is set but the message could not be sent.
    #[error("notify socket {path}: {message}")]
    Notify {
        /// The socket (`NOTIFY_SOCKET`).
        path: String,
        /// What failed.
        message: String,
    },
}

/// One fd the service manager handed back at start.
#[derive(Debug)]
pub struct StoredFd {
    /// Its `FDNAME`.
    pub name: String,
    /// The fd (ours now).
    pub fd: OwnedFd,
}

/// The store name of a listener of `agent`; `serial` makes it unique (a
/// remove drops every fd of a name).
pub fn listener_name(agent: &str, serial: u64) -> String {
    format!("{LISTENER_PREFIX}{serial:x}.{agent}")
}

/// The agent a stored listener's name names; `None` if the name is not
/// one agentd gives.
pub fn agent_of_name(name: &str) -> Option<&str> {
    let (serial, agent) = name.strip_prefix(LISTENER_PREFIX)?.split_once('.')?;
    let serial_ok = !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_hexdigit());
    (serial_ok && valid_name(agent)).then_some(agent)
}

/// A fresh serial: CLOCK_BOOTTIME nanoseconds, strictly increasing within
/// this process, so names never repeat within a boot — as long as the
/// store itself lives.
pub fn next_serial() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = super::seccomp::supervisor::boot_ns();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Whether a service manager is listening (`NOTIFY_SOCKET` is set).
pub fn available() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Hands a copy of `fd` to the service manager under `name`. `Ok(false)`:
/// there is no service manager (nothing stored).
///
/// `FDPOLL=0`: systemd would otherwise drop a listener by itself once its
/// agent's processes have all exited, and a listener missing at the next
/// start would then be indistinguishable from one that was lost; agentd
/// removes each one itself.
pub fn store(name: &str, fd: BorrowedFd<'_>) -> Result<bool, FdStoreError> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send(&path, &store_message(name), Some(fd.as_raw_fd())).map(|_| true),
        None => Ok(false),
    }
}

/// Tells the service manager to close and forget the fds stored as `name`.
pub fn remove(name: &str) -> Result<bool, FdStoreError> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send(&path, &remove_message(name), None).map(|_| true),
        None => Ok(false),
    }
}

fn store_message(name: &str) -> String {
    format!("FDSTORE=1\nFDNAME={name}\nFDPOLL=0\n")
}

fn remove_message(name: &str) -> String {
    format!("FDSTOREREMOVE=1\nFDNAME={name}\n")
}

/// Sends one notification datagram (with `fd` attached, if any) to `path`.
fn send(path: &std::ffi::OsStr, message: &str, fd: Option<RawFd>) -> Result<(), FdStoreError> {
    let fail = |message: String| FdStoreError::Notify {
        path: path.to_string_lossy().into_owned(),
        message,
    };
    // `@name` is an abstract socket (sd_notify(3)).
    let addr = match path.as_bytes().strip_prefix(b"@") {
        Some(abstract_name) => UnixAddr::new_abstract(abstract_name),
        None => UnixAddr::new(path),
    }
    .map_err(|e| fail(e.to_string()))?;
    let sock = UnixDatagram::unbound().map_err(|e| fail(e.to_string()))?;
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    let sent = socket::sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(message.as_bytes())],
        &cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )
    .map_err(|e| fail(format!("sendmsg: {e}")))?;
    if sent != message.len() {
        return Err(fail(format!("sent {sent} of {} bytes", message.len())));
    }
    Ok(())
}

/// Takes the fds the service manager passed to this process
/// (`LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES`) and unsets those variables.
/// Call once, early, while the process has one thread (it changes the
/// environment).
pub fn take_inherited() -> Vec<StoredFd> {
    match sd_notify::listen_fds_with_names(true) {
        Ok(fds) => fds
            .map(|(fd, name)| StoredFd {
                name,
                // SAFETY: sd_listen_fds(3): fds 3..3+LISTEN_FDS were passed
                // to this very process (LISTEN_PID was checked) and nothing
                // else in it owns them; this runs once.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "the fds the service manager passed cannot be read; none adopted");
            vec![]
        }
    }
}

/// Whether `fd` is a seccomp user-notification listener.
pub fn is_seccomp_listener(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|target| target.as_os_str() == LISTENER_LINK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_refused() {
        let name = listener_name("mail.bot-1", 0x1f2e);
        assert_eq!(name, "agentd-listener.1f2e.mail.bot-1");
        assert_eq!(agent_of_name(&name), Some("mail.bot-1"));
        assert_eq!(agent_of_name("agentd-listener.zz.mail"), None);
        assert_eq!(agent_of_name("agentd-listener..mail"), None);
        assert_eq!(agent_of_name("agentd-listener.12./etc"), None);
        assert_eq!(agent_of_name("stored"), None);
        assert!(name.len() < 256 && !name.contains(':'));
    }

    #[test]
    fn serials_increase() {
        let a = next_serial();
        let b = next_serial();
        assert!(b > a);
    }

    #[test]
    fn only_listeners_are_listeners() {
        let file = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd as _;
        assert!(!is_seccomp_listener(file.as_fd()));
    }

    #[test]
    fn store_and_remove_reach_the_notify_socket_with_the_fd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let name = "agentd-listener.1.a";
        send(
            path.as_os_str(),
            &store_message(name),
            Some(file.as_raw_fd()),
        )
        .unwrap();
        let mut buf = [0u8; 256];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(
            server.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        let fds: Vec<RawFd> = msg
            .cmsgs()
            .unwrap()
            .filter_map(|c| match c {
                socket::ControlMessageOwned::ScmRights(f) => Some(f),
                _ => None,
            })
            .flatten()
            .collect();
        let n = msg.bytes;
        assert_eq!(fds.len(), 1);
        // SAFETY: received just now, ours.
        let received = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        assert_eq!(
            std::fs::read_link(format!("/proc/self/fd/{}", received.as_raw_fd())).unwrap(),
            std::path::Path::new("/dev/null")
        );
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "FDSTORE=1\nFDNAME=agentd-listener.1.a\nFDPOLL=0\n"
        );
        send(path.as_os_str(), &remove_message(name), None).unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "FDSTOREREMOVE=1\nFDNAME=agentd-listener.1.a\n"
        );
        // An abstract socket (`@name`) is reached too.
        let abstract_name = format!("agentd-fdstore-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        send(
            std::ffi::OsStr::new(&format!("@{abstract_name}")),
            &remove_message(name),
            None,
        )
        .unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n])
            .unwrap()
            .starts_with("FDSTOREREMOVE=1"));
    }
}
