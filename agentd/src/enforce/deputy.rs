//! Connections the seccomp supervisor makes on an agent's behalf. The
//! supervisor performs an agent's unix `connect` itself (so no pointer is
//! read twice), which makes agentd's own pid the connection's SO_PEERCRED
//! pid. For agentd's own sockets (the API, the enforcement socket) the pid
//! matters — it names the agent and the process tree claiming grants — so
//! the supervisor records who really asked, keyed by the client socket's
//! name, and agentd's servers look it up when a peer claims to be agentd.
//! Peers other than agentd see the agent's uid and gid with agentd's pid.
use std::{
    collections::HashMap,
    os::fd::RawFd,
    path::PathBuf,
    sync::{Mutex, RwLock},
    time::{Duration, Instant},
};

/// Who really connected: the agent process the supervisor acted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeputyPeer {
    /// The agent's process (thread group) id.
    pub pid: u32,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
}

/// Entries older than this were never accepted (the connect failed or the
/// server never got to it) and are dropped.
const STALE: Duration = Duration::from_secs(60);

/// Client socket name → (who it connects for, when it was recorded).
type Peers = HashMap<Vec<u8>, (DeputyPeer, Instant)>;

static PEERS: Mutex<Option<Peers>> = Mutex::new(None);
static OWN_SOCKETS: RwLock<Vec<PathBuf>> = RwLock::new(Vec::new());

/// Records that the client socket named `name` connects for `peer`.
pub fn register(name: Vec<u8>, peer: DeputyPeer) {
    let mut g = PEERS.lock().unwrap_or_else(|p| p.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    map.retain(|_, (_, at)| at.elapsed() < STALE);
    map.insert(name, (peer, Instant::now()));
}

/// Forgets `name` (its connect failed).
pub fn forget(name: &[u8]) {
    let mut g = PEERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(map) = g.as_mut() {
        map.remove(name);
    }
}

/// Takes the record of the client socket named `name`, if any.
pub fn take(name: &[u8]) -> Option<DeputyPeer> {
    let mut g = PEERS.lock().unwrap_or_else(|p| p.into_inner());
    g.as_mut()?.remove(name).map(|(p, _)| p)
}

/// The real peer of an accepted connection whose SO_PEERCRED says
/// `pid`/`uid`/`gid`: a deputy connection (pid is agentd's own) is replaced
/// by the agent process it was made for.
pub fn real_peer(fd: RawFd, pid: u32, uid: u32, gid: u32) -> DeputyPeer {
    let kernel = DeputyPeer { pid, uid, gid };
    if pid != std::process::id() {
        return kernel;
    }
    match peer_name(fd).and_then(|n| take(&n)) {
        Some(p) => p,
        None => kernel,
    }
}

/// Declares `path` one of agentd's own listening sockets: every agent may
/// connect to it (it is in every baseline), and connections to it record
/// their real peer.
pub fn add_own_socket(path: PathBuf) {
    let mut g = OWN_SOCKETS.write().unwrap_or_else(|p| p.into_inner());
    if !g.contains(&path) {
        g.push(path);
    }
}

/// agentd's own listening sockets.
pub fn own_sockets() -> Vec<PathBuf> {
    OWN_SOCKETS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

fn name_of(fd: RawFd, peer: bool) -> Option<Vec<u8>> {
    // SAFETY: a zeroed sockaddr_un is valid; the kernel writes at most `len`.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = &mut addr as *mut libc::sockaddr_un as *mut libc::sockaddr;
    // SAFETY: getsockname/getpeername into our buffer.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r != 0 || addr.sun_family != libc::AF_UNIX as libc::sa_family_t || len as usize <= 2 {
        return None;
    }
    let n = (len as usize - 2).min(addr.sun_path.len());
    Some(addr.sun_path[..n].iter().map(|c| *c as u8).collect())
}

/// The name a unix socket is bound to (abstract names keep their leading NUL).
pub fn local_name(fd: RawFd) -> Option<Vec<u8>> {
    name_of(fd, false)
}

/// The name of a connected unix socket's peer.
pub fn peer_name(fd: RawFd) -> Option<Vec<u8>> {
    name_of(fd, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::{fd::AsRawFd as _, unix::net::UnixListener};

    #[test]
    fn a_deputy_connection_is_answered_with_the_agent_it_was_made_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        // The client autobinds (as the supervisor does), registers, connects.
        // SAFETY: plain socket syscalls on fds this test owns.
        let sock =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(sock >= 0);
        let fam = libc::AF_UNIX as libc::sa_family_t;
        // SAFETY: autobind with a bare family.
        assert_eq!(
            unsafe { libc::bind(sock, &fam as *const _ as *const libc::sockaddr, 2) },
            0
        );
        let name = local_name(sock).expect("autobound name");
        assert_eq!(name[0], 0, "abstract");
        let agent = DeputyPeer {
            pid: 4242,
            uid: 1001,
            gid: 1002,
        };
        register(name.clone(), agent);
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: sockaddr_un built in place.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sa.sun_family = fam;
        for (d, s) in sa.sun_path.iter_mut().zip(c.as_bytes()) {
            *d = *s as libc::c_char;
        }
        let r = unsafe {
            libc::connect(
                sock,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as u32,
            )
        };
        assert_eq!(r, 0);
        let (server, _) = listener.accept().unwrap();
        let me = std::process::id();
        assert_eq!(real_peer(server.as_raw_fd(), me, 0, 0), agent);
        // Taken once: a second lookup sees the kernel's answer.
        assert_eq!(
            real_peer(server.as_raw_fd(), me, 0, 0),
            DeputyPeer {
                pid: me,
                uid: 0,
                gid: 0
            }
        );
        // Another process's connection is never looked up.
        assert_eq!(
            real_peer(server.as_raw_fd(), 1, 5, 6),
            DeputyPeer {
                pid: 1,
                uid: 5,
                gid: 6
            }
        );
        unsafe { libc::close(sock) };
    }
}
