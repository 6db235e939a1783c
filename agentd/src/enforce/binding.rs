//! Binding a process to a tool call: who may bind what, and the use count.
//! The kernel side (BINDINGS map, inheritance at fork, cleanup at exit) is
//! in agentd-ebpf `process_tree.rs`.
use super::{agent_cgroup, pending::Spend, registry::CallEntry};

/// Why a bind request is refused (each maps to a stable reason code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// No grant is installed under this call id.
    #[error("no grant for call {call_id}")]
    NoGrant {
        /// The call id asked for.
        call_id: String,
    },
    /// The grant has expired.
    #[error("the grant for call {call_id} has expired")]
    Expired {
        /// The call id.
        call_id: String,
    },
    /// The grant's use count is spent.
    #[error("the grant for call {call_id} has no uses left")]
    UsedUp {
        /// The call id.
        call_id: String,
    },
    /// The kernel's use-ticket map is full: the use cannot be counted.
    #[error("no use of call {call_id} can be counted: the kernel's USE_TICKETS map is full")]
    TicketsFull {
        /// The call id.
        call_id: String,
    },
    /// The asking (or named) process is not in the call's agent cgroup.
    #[error("process {pid} is not in agent {agent}'s cgroup")]
    NotInAgent {
        /// The process.
        pid: u32,
        /// The call's agent.
        agent: String,
    },
}

impl BindError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            BindError::NoGrant { .. } => crate::protocol::reason::NO_GRANT,
            BindError::Expired { .. } => crate::protocol::reason::GRANT_EXPIRED,
            BindError::UsedUp { .. } => crate::protocol::reason::GRANT_USED_UP,
            BindError::TicketsFull { .. } => crate::protocol::reason::USE_TICKETS_FULL,
            BindError::NotInAgent { .. } => crate::protocol::reason::PEER_NOT_IN_AGENT,
        }
    }
}

/// Checks that both the peer (from SO_PEERCRED) and the process to bind
/// belong to the call's agent, then spends one use of the grant through
/// `spend` (given the uses believed left, it returns the uses left after
/// the spend, or why none was spent).
pub fn authorize(
    call: &mut CallEntry,
    peer_pid: u32,
    pid: u32,
    now_boot_ns: u64,
    agent_of: impl Fn(u32) -> Option<String>,
    spend: impl FnOnce(u32) -> Result<u32, Spend>,
) -> Result<(), BindError> {
    for p in [peer_pid, pid] {
        if agent_of(p).as_deref() != Some(call.agent.as_str()) {
            return Err(BindError::NotInAgent {
                pid: p,
                agent: call.agent.clone(),
            });
        }
    }
    if call.grant.expired(now_boot_ns) {
        return Err(BindError::Expired {
            call_id: call.call_id.clone(),
        });
    }
    match &mut call.uses_left {
        Some(n) => match spend(*n) {
            Ok(left) => {
                *n = left;
                Ok(())
            }
            Err(Spend::TicketsFull) => Err(BindError::TicketsFull {
                call_id: call.call_id.clone(),
            }),
            Err(_) => {
                *n = 0;
                Err(BindError::UsedUp {
                    call_id: call.call_id.clone(),
                })
            }
        },
        None => Ok(()),
    }
}

/// The agent of a live process, from its cgroup under `slice_name`.
pub fn agent_of_pid(slice_name: &str, pid: u32) -> Option<String> {
    agent_cgroup::agent_name_of_pid(slice_name, pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::grant::KernelGrant;

    fn call(uses: Option<u32>, expires: u64) -> CallEntry {
        CallEntry {
            call_id: "c1".into(),
            active_message_id: "m1".into(),
            agent: "mail".into(),
            grant: KernelGrant {
                handle: 1,
                exec: vec![],
                exec_paths: vec![],
                read: vec![],
                write: vec![],
                connect: vec![],
                unix_files: vec![],
                expires_at_ns: expires,
                spec: Default::default(),
                protected: Default::default(),
                protected_write: vec![],
            },
            uses_left: uses,
            pending: None,
        }
    }

    fn agent_of(pid: u32) -> Option<String> {
        match pid {
            1..=9 => Some("mail".into()),
            10..=19 => Some("other".into()),
            _ => None,
        }
    }

    /// A stand-in for the kernel's ticket map: one use per call.
    fn countdown(left: u32) -> Result<u32, Spend> {
        left.checked_sub(1).ok_or(Spend::UsedUp)
    }

    #[test]
    fn uses_are_spent_and_then_refused() {
        let mut c = call(Some(2), 0);
        assert!(authorize(&mut c, 1, 2, 5, agent_of, countdown).is_ok());
        assert!(authorize(&mut c, 1, 1, 5, agent_of, countdown).is_ok());
        let e = authorize(&mut c, 1, 1, 5, agent_of, countdown).unwrap_err();
        assert_eq!(e.reason_code(), "grant_used_up");
    }

    #[test]
    fn a_full_ticket_map_is_its_own_refusal_and_spends_nothing() {
        let mut c = call(Some(2), 0);
        let full = |_| Err(Spend::TicketsFull);
        let e = authorize(&mut c, 1, 1, 5, agent_of, full).unwrap_err();
        assert_eq!(e.reason_code(), "use_tickets_full");
        // The grant's uses are as they were: the next bind, with room, spends one.
        assert_eq!(c.uses_left, Some(2));
        assert!(authorize(&mut c, 1, 1, 5, agent_of, countdown).is_ok());
        assert_eq!(c.uses_left, Some(1));
    }

    #[test]
    fn peers_outside_the_agent_are_refused() {
        let mut c = call(None, 0);
        assert_eq!(
            authorize(&mut c, 11, 1, 5, agent_of, countdown)
                .unwrap_err()
                .reason_code(),
            "peer_not_in_agent"
        );
        assert_eq!(
            authorize(&mut c, 1, 42, 5, agent_of, countdown)
                .unwrap_err()
                .reason_code(),
            "peer_not_in_agent"
        );
    }

    #[test]
    fn expired_grants_do_not_bind() {
        let mut c = call(None, 10);
        assert_eq!(
            authorize(&mut c, 1, 1, 10, agent_of, countdown)
                .unwrap_err()
                .reason_code(),
            "grant_expired"
        );
        assert!(authorize(&mut c, 1, 1, 9, agent_of, countdown).is_ok());
    }
}
