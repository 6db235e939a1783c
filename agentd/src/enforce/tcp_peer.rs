//! Who is at the other end of an accepted loopback TCP connection.
//!
//! A Unix socket tells its server the peer's credentials (SO_PEERCRED); TCP
//! tells nothing. On loopback both ends live in this kernel, so agentd asks
//! it (NETLINK_SOCK_DIAG, an exact lookup by the connection's four-tuple)
//! for the *connecting* socket: its owner uid, inode and the cgroup it was
//! created in. The cgroup is what names the agent, as it does for the
//! kernel hooks; a token in the environment would not do, since every
//! process of the same uid can read another's environment.
//!
//! The pid comes last and is only a hint: the process holding the socket,
//! found among the processes of that cgroup by the socket's inode.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

/// `INET_DIAG_CGROUP_ID` (linux/inet_diag.h, since 5.9): the cgroup v2 id of
/// the socket, sent with every answer when the kernel keeps socket cgroups.
const INET_DIAG_CGROUP_ID: u16 = 21;

/// The connecting end of a loopback TCP connection, as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPeer {
    /// The cgroup v2 id of the cgroup the connecting socket was created in
    /// (the inode number of its directory).
    pub cgroup_id: u64,
    /// The socket's owner.
    pub uid: u32,
    /// The socket's inode (`socket:[N]` in `/proc/PID/fd`).
    pub inode: u32,
}

/// Why the peer of a connection could not be named. Every variant means the
/// caller is unknown: the connection is refused.
#[derive(Debug, thiserror::Error)]
pub enum TcpPeerError {
    /// Only loopback connections have their other end in this kernel.
    #[error("{peer} is not a loopback address: only loopback callers can be identified")]
    NotLoopback {
        /// The remote address of the accepted connection.
        peer: SocketAddr,
    },
    /// The netlink exchange failed.
    #[error("sock_diag lookup of {peer} -> {local}: {source}")]
    Netlink {
        /// The connection's remote end.
        peer: SocketAddr,
        /// The connection's local end.
        local: SocketAddr,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The kernel has no such socket (closed already) or would not say.
    #[error("the kernel knows no socket {peer} -> {local} (closed before it was looked up?)")]
    NotFound {
        /// The connection's remote end.
        peer: SocketAddr,
        /// The connection's local end.
        local: SocketAddr,
    },
    /// The answer had no cgroup id: a kernel without socket cgroups.
    #[error(
        "the kernel did not report the cgroup of {peer} (needs Linux 5.9+ with socket cgroups)"
    )]
    NoCgroup {
        /// The connection's remote end.
        peer: SocketAddr,
    },
}

/// Looks up the socket that connected from `peer` to `local` (the accepted
/// connection's remote and local addresses).
pub fn peer_of(local: SocketAddr, peer: SocketAddr) -> Result<TcpPeer, TcpPeerError> {
    if !is_loopback(peer.ip()) {
        return Err(TcpPeerError::NotLoopback { peer });
    }
    let netlink = |source: io::Error| TcpPeerError::Netlink {
        peer,
        local,
        source,
    };
    let request = request_for(local, peer);
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(netlink)?;
    socket.bind_auto().map_err(netlink)?;
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(netlink)?;
    socket.send(&request, 0).map_err(netlink)?;
    let mut buf = vec![0u8; 8192];
    let n = socket.recv(&mut &mut buf[..], 0).map_err(netlink)?;
    match parse_answer(&buf[..n]) {
        Answer::Found {
            uid,
            inode,
            cgroup_id,
        } => Ok(TcpPeer {
            cgroup_id: cgroup_id.ok_or(TcpPeerError::NoCgroup { peer })?,
            uid,
            inode,
        }),
        Answer::NotFound => Err(TcpPeerError::NotFound { peer, local }),
        Answer::Malformed(why) => Err(netlink(io::Error::new(io::ErrorKind::InvalidData, why))),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The exact-lookup request: the connecting socket's source is the accepted
/// connection's peer, its destination our local end.
fn request_for(local: SocketAddr, peer: SocketAddr) -> Vec<u8> {
    // An IPv4 client reaching a dual-stack listener shows up as a mapped
    // address; the client's own socket is AF_INET.
    let unmap = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        IpAddr::V4(_) => a,
    };
    let (local, peer) = (unmap(local), unmap(peer));
    let family = if peer.is_ipv4() { AF_INET } else { AF_INET6 };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: peer.port(),
                destination_port: local.port(),
                source_address: peer.ip(),
                destination_address: local.ip(),
                interface_id: 0,
                // INET_DIAG_NOCOOKIE: match by the four-tuple alone.
                cookie: [0xff; 8],
            },
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

enum Answer {
    Found {
        uid: u32,
        inode: u32,
        cgroup_id: Option<u64>,
    },
    NotFound,
    Malformed(String),
}

fn parse_answer(bytes: &[u8]) -> Answer {
    match NetlinkMessage::<SockDiagMessage>::deserialize(bytes) {
        Ok(message) => match message.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => Answer::Found {
                uid: r.header.uid,
                inode: r.header.inode,
                cgroup_id: cgroup_id_of(&r),
            },
            // ENOENT: no such socket; any other error is also "not named".
            NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => Answer::NotFound,
            other => Answer::Malformed(format!("unexpected sock_diag answer {other:?}")),
        },
        Err(e) => Answer::Malformed(format!("undecodable sock_diag answer: {e}")),
    }
}

fn cgroup_id_of(response: &InetResponse) -> Option<u64> {
    response.nlas.iter().find_map(|nla| match nla {
        Nla::Other(other) if other.kind() == INET_DIAG_CGROUP_ID && other.value_len() == 8 => {
            let mut value = [0u8; 8];
            other.emit_value(&mut value);
            Some(u64::from_ne_bytes(value))
        }
        _ => None,
    })
}

/// The cgroup directory under `root` (searched `depth` levels down) whose
/// id is `cgroup_id`: cgroup v2 ids are the directories' inode numbers.
pub fn cgroup_dir_with_id(root: &Path, cgroup_id: u64, depth: usize) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::metadata(root).ok()?.ino() == cgroup_id {
        return Some(root.to_path_buf());
    }
    if depth == 0 {
        return None;
    }
    std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| cgroup_dir_with_id(&e.path(), cgroup_id, depth - 1))
}

/// The process among `pids` that holds the socket with inode `inode`.
pub fn pid_holding_socket(pids: impl IntoIterator<Item = u32>, inode: u32) -> Option<u32> {
    let wanted = format!("socket:[{inode}]");
    pids.into_iter().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.filter_map(Result::ok).any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.as_os_str() == wanted.as_str())
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
        os::unix::fs::MetadataExt as _,
    };

    use super::*;

    /// Our own cgroup's id, from /proc/self/cgroup.
    fn own_cgroup_id() -> Option<u64> {
        let rel = crate::enforce::agent_cgroup::cgroup_of_pid(std::process::id())?;
        let root = crate::enforce::cgroup_root::cgroup_root().ok()?;
        Some(
            std::fs::metadata(root.join(rel.trim_start_matches('/')))
                .ok()?
                .ino(),
        )
    }

    #[test]
    fn names_the_connecting_socket_of_a_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let found = match peer_of(server.local_addr().unwrap(), peer) {
            Err(TcpPeerError::NoCgroup { .. }) => {
                eprintln!("SKIPPED: this kernel reports no socket cgroups");
                return;
            }
            other => other.unwrap(),
        };
        assert_eq!(found.uid, nix::unistd::getuid().as_raw());
        // The client's socket, not the accepted one.
        let client_fd = std::os::fd::AsRawFd::as_raw_fd(&client);
        let target = std::fs::read_link(format!("/proc/self/fd/{client_fd}")).unwrap();
        assert_eq!(
            target.to_str().unwrap(),
            format!("socket:[{}]", found.inode)
        );
        if let Some(id) = own_cgroup_id() {
            assert_eq!(found.cgroup_id, id);
        }
        assert_eq!(
            pid_holding_socket([std::process::id()], found.inode),
            Some(std::process::id())
        );
        drop((client, server));
    }

    #[test]
    fn an_ipv6_loopback_connection_is_named_too() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            eprintln!("SKIPPED: no IPv6 loopback here");
            return;
        };
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, peer) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        match peer_of(server.local_addr().unwrap(), peer) {
            Err(TcpPeerError::NoCgroup { .. }) => eprintln!("SKIPPED: no socket cgroups"),
            other => assert_eq!(other.unwrap().uid, nix::unistd::getuid().as_raw()),
        }
    }

    #[test]
    fn a_closed_connection_is_not_found_and_a_remote_one_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        // A four-tuple nobody uses.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(matches!(
            peer_of(local, nobody),
            Err(TcpPeerError::NotFound { .. })
        ));
        let remote: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        assert!(matches!(
            peer_of(local, remote),
            Err(TcpPeerError::NotLoopback { .. })
        ));
    }

    #[test]
    fn mapped_ipv4_addresses_are_looked_up_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let local: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert!(is_loopback(mapped.ip()));
        let bytes = request_for(local, mapped);
        // nlmsghdr (16) then family: AF_INET.
        assert_eq!(bytes[16], AF_INET);
    }

    #[test]
    fn finds_a_cgroup_directory_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a/b");
        std::fs::create_dir_all(&inner).unwrap();
        let id = std::fs::metadata(&inner).unwrap().ino();
        assert_eq!(cgroup_dir_with_id(dir.path(), id, 2), Some(inner));
        assert_eq!(cgroup_dir_with_id(dir.path(), id, 1), None);
    }
}
