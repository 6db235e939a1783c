//! Who may call what: Unix credentials of the connecting process (SO_PEERCRED)
//! mapped to admin (root or the admin group), the agent user, or anyone local.
use nix::unistd::{Gid, Group, Uid, User};

/// How the caller reached the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The Unix socket; credentials are known.
    Unix,
    /// The optional TCP listener; no credentials (messages only).
    Tcp,
    /// The forward proxy's loopback TCP listener: the kernel named the
    /// connecting socket's agent (sock_diag), and the process holding it.
    Loopback,
}

/// The caller of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Transport.
    pub transport: Transport,
    /// Process id (Unix socket only).
    pub pid: Option<u32>,
    /// User id (Unix socket only).
    pub uid: Option<u32>,
    /// Primary group id (Unix socket only).
    pub gid: Option<u32>,
}

impl Peer {
    /// Reads SO_PEERCRED of an accepted Unix stream (a connection the
    /// seccomp supervisor made for an agent is the agent's: see
    /// [`crate::enforce::deputy`]).
    pub fn of_unix(stream: &tokio::net::UnixStream) -> Self {
        match stream.peer_cred() {
            Ok(c) => {
                let pid = c.pid().and_then(|p| u32::try_from(p).ok());
                let real = pid.map(|p| {
                    use std::os::fd::AsRawFd as _;
                    crate::enforce::deputy::real_peer(stream.as_raw_fd(), p, c.uid(), c.gid())
                });
                Self {
                    transport: Transport::Unix,
                    pid: real.map(|r| r.pid).or(pid),
                    uid: Some(real.map_or(c.uid(), |r| r.uid)),
                    gid: Some(real.map_or(c.gid(), |r| r.gid)),
                }
            }
            // Unknown credentials get no privileges.
            Err(e) => {
                tracing::warn!(error = %e, "SO_PEERCRED failed; treating the caller as unprivileged");
                Self {
                    transport: Transport::Unix,
                    pid: None,
                    uid: None,
                    gid: None,
                }
            }
        }
    }

    /// A loopback TCP caller the kernel named (`pid`: the process holding
    /// the connecting socket, in an agent's cgroup), or an unknown one
    /// (`pid` and `uid` None: no privileges).
    pub fn loopback(pid: Option<u32>, uid: Option<u32>) -> Self {
        Self {
            transport: Transport::Loopback,
            pid,
            uid,
            gid: None,
        }
    }

    /// A TCP caller.
    pub fn tcp() -> Self {
        Self {
            transport: Transport::Tcp,
            pid: None,
            uid: None,
            gid: None,
        }
    }
}

/// The permission classes, resolved from config at start-up.
#[derive(Debug, Clone)]
pub struct Access {
    /// Group whose members are admins (root always is).
    pub admin_group: Option<(Gid, String)>,
    /// The agent user (may submit tool calls).
    pub agent_uid: Option<Uid>,
}

impl Access {
    /// Resolves group and user names; missing ones grant nothing.
    pub fn resolve(admin_group: &str, agent_user: &str) -> Self {
        let admin_group = Group::from_name(admin_group)
            .ok()
            .flatten()
            .map(|g| (g.gid, g.name));
        let agent_uid = User::from_name(agent_user).ok().flatten().map(|u| u.uid);
        if agent_uid.is_none() {
            tracing::warn!(
                agent_user,
                "agent user does not exist; only admins may submit tool calls"
            );
        }
        Self {
            admin_group,
            agent_uid,
        }
    }

    /// Root, or a member (primary or supplementary) of the admin group.
    pub fn is_admin(&self, peer: &Peer) -> bool {
        let (Transport::Unix, Some(uid)) = (peer.transport, peer.uid) else {
            return false;
        };
        if uid == 0 {
            return true;
        }
        let Some((gid, _)) = &self.admin_group else {
            return false;
        };
        if peer.gid == Some(gid.as_raw()) {
            return true;
        }
        // Supplementary membership: look the group up now, so changes apply without restart.
        let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
            return false;
        };
        match Group::from_gid(*gid) {
            Ok(Some(g)) => g.mem.contains(&user.name),
            _ => false,
        }
    }

    /// Admins and the agent user may submit tool calls. The agent uid is
    /// checked first: it is the hot path and needs no group lookup.
    pub fn may_call_tools(&self, peer: &Peer) -> bool {
        let is_agent = peer.transport == Transport::Unix
            && peer.uid.is_some()
            && peer.uid.map(Uid::from_raw) == self.agent_uid;
        is_agent || self.is_admin(peer)
    }
}
