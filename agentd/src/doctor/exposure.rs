//! Host exposure `agentd doctor` reports: root-equivalent sockets the agent
//! user can reach (a container engine's API socket runs anything as root,
//! whatever agentd grants), and DNS in the agents' baseline (every query is
//! a message to whoever runs the resolver, so a baseline with port 53 is a
//! channel out that no grant shows).
use std::{
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use crate::grant_spec::GrantSpec;

/// Sockets whose peer acts as root for whoever connects.
pub const ROOT_EQUIVALENT_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/var/run/crio/crio.sock",
    "/run/buildkit/buildkitd.sock",
    "/var/run/libvirt/libvirt-sock",
    "/run/snapd.socket",
];

/// Who the agents run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// uid.
    pub uid: u32,
    /// Primary and supplementary gids.
    pub gids: Vec<u32>,
}

/// Owner, group and mode of one path component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// Whether `who` holds the `want` bits (4 read, 2 write, 1 execute) on a
/// file with `perm`, by the classic owner/group/other rule (root holds all).
pub fn allows(perm: Perm, who: &Identity, want: u32) -> bool {
    if who.uid == 0 {
        return true;
    }
    let bits = if perm.uid == who.uid {
        perm.mode >> 6
    } else if who.gids.contains(&perm.gid) {
        perm.mode >> 3
    } else {
        perm.mode
    } & 7;
    bits & want == want
}

/// Whether `who` can connect to a socket: search on every directory above
/// it (`dirs`, outermost first) and write on the socket itself.
pub fn can_connect(dirs: &[Perm], socket: Perm, who: &Identity) -> bool {
    dirs.iter().all(|d| allows(*d, who, 1)) && allows(socket, who, 2)
}

fn perm_of(path: &Path) -> Option<Perm> {
    let m = std::fs::metadata(path).ok()?;
    Some(Perm {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
    })
}

/// The root-equivalent sockets on this host the agent user could connect
/// to (ACLs and LSM policies aside: this is the permission-bit view).
pub fn reachable_root_sockets(who: &Identity) -> Vec<PathBuf> {
    ROOT_EQUIVALENT_SOCKETS
        .iter()
        .map(PathBuf::from)
        .filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
                && perm_of(p).is_some_and(|sock| {
                    let dirs: Vec<Perm> = p
                        .ancestors()
                        .skip(1)
                        .filter_map(perm_of)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    can_connect(&dirs, sock, who)
                })
        })
        .collect()
}

/// The baseline's DNS destinations (anything on port 53), as written.
pub fn dns_destinations(baseline: &GrantSpec) -> Vec<String> {
    baseline
        .connect
        .iter()
        .filter(|d| d.rsplit_once(':').is_some_and(|(_, port)| port == "53"))
        .cloned()
        .collect()
}

/// The agent user's identity, if the user exists.
pub fn identity_of(user: &str) -> Option<Identity> {
    let u = nix::unistd::User::from_name(user).ok().flatten()?;
    let name = std::ffi::CString::new(user).ok()?;
    let gids = nix::unistd::getgrouplist(&name, u.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![u.gid.as_raw()]);
    Some(Identity {
        uid: u.uid.as_raw(),
        gids,
    })
}

/// One line per finding, for `agentd doctor` (empty when nothing is exposed).
pub fn findings(agent_user: &str, baseline: &GrantSpec) -> Vec<String> {
    let mut out = Vec::new();
    match identity_of(agent_user) {
        Some(who) => {
            for p in reachable_root_sockets(&who) {
                out.push(format!(
                    "agent user `{agent_user}` can connect to {} (root-equivalent: whoever reaches it runs anything as root, outside agentd's enforcement); remove the user from the socket's group or tighten its mode",
                    p.display()
                ));
            }
        }
        None => out.push(format!(
            "agent user `{agent_user}` does not exist; host exposure not checked"
        )),
    }
    for d in dns_destinations(baseline) {
        out.push(format!(
            "the agents' baseline allows DNS ({d}): every lookup is a message to the resolver's operator, a channel out that no grant shows; runtimes behind forward mode need none"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32, gids: &[u32]) -> Identity {
        Identity {
            uid,
            gids: gids.to_vec(),
        }
    }

    const DIR: Perm = Perm {
        uid: 0,
        gid: 0,
        mode: 0o755,
    };

    #[test]
    fn docker_group_member_reaches_the_socket() {
        let sock = Perm {
            uid: 0,
            gid: 998,
            mode: 0o660,
        };
        assert!(can_connect(&[DIR, DIR], sock, &who(1001, &[1001, 998])));
        assert!(!can_connect(&[DIR, DIR], sock, &who(1001, &[1001])));
    }

    #[test]
    fn closed_directory_hides_an_open_socket() {
        let sock = Perm {
            uid: 0,
            gid: 0,
            mode: 0o777,
        };
        let closed = Perm {
            uid: 0,
            gid: 0,
            mode: 0o700,
        };
        assert!(can_connect(&[DIR], sock, &who(1001, &[1001])));
        assert!(!can_connect(&[DIR, closed], sock, &who(1001, &[1001])));
    }

    #[test]
    fn owner_bits_apply_to_the_owner_only() {
        let sock = Perm {
            uid: 1001,
            gid: 0,
            mode: 0o600,
        };
        assert!(allows(sock, &who(1001, &[5]), 2));
        assert!(!allows(sock, &who(1002, &[0]), 2));
    }

    #[test]
    fn dns_in_a_baseline_is_reported() {
        let spec = GrantSpec {
            connect: vec![
                "10.0.0.1:53".into(),
                "0.0.0.0/0:443".into(),
                "unix:/run/x.sock".into(),
            ],
            ..Default::default()
        };
        assert_eq!(dns_destinations(&spec), vec!["10.0.0.1:53".to_string()]);
        assert!(findings("agentd-no-such-user-xyz", &spec)
            .iter()
            .any(|f| f.contains("allows DNS (10.0.0.1:53)")));
    }
}
