//! The enforcement control plane: one request type, one auth rule, one
//! refusal shape, decided by one function ([`dispatch`]) whichever
//! transport carries the request — the HTTP routes on the API socket
//! (`api::enforce_routes`: bodies with the API's size limit and timeouts)
//! or the enforcement socket ([`super::launch`]: one JSON frame per
//! connection, kept because the seccomp listener hand-over rides
//! SCM_RIGHTS, which HTTP cannot carry, and because the launcher must hand
//! it over from a process about to become the agent).
use std::{os::fd::OwnedFd, path::PathBuf, sync::Arc};

use serde::{Deserialize, Serialize};

use super::{registry::Creds, AgentOptions, Backend, Counters, EnforceError, Enforcer, Mode};
use crate::{grant_spec::GrantSpec, protocol::reason};

/// One enforcement request (the enforcement socket's frame is this, as
/// JSON; the HTTP routes build it from their bodies and paths).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create (or refresh) an agent; `command` joins its baseline exec
    /// list. With a `baseline`, it replaces the agent's. Admin only.
    CreateAgent {
        /// Agent name.
        agent: String,
        /// Mode; `None` keeps an existing agent's mode (new agents enforce).
        #[serde(default)]
        mode: Option<Mode>,
        /// The agent's own executable.
        command: Option<PathBuf>,
        /// A baseline for unbound processes (`None` keeps the agent's, or
        /// gives a new one the default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        baseline: Option<GrantSpec>,
    },
    /// Move the caller into the agent's cgroup. Admin only.
    Join {
        /// Agent name.
        agent: String,
    },
    /// Hand over a seccomp listener (attached as SCM_RIGHTS; enforcement
    /// socket only). Admin, in the agent's cgroup.
    Listener {
        /// Agent name.
        agent: String,
        /// Credentials the agent will run under.
        creds: Creds,
    },
    /// Bind `pid` (default: the caller) to a call. Caller and pid must be in the call's agent.
    Bind {
        /// Tool-call id.
        call_id: String,
        /// Process to bind.
        pid: Option<u32>,
    },
    /// Change an agent's mode. Admin only.
    SetMode {
        /// Agent name.
        agent: String,
        /// New mode.
        mode: Mode,
    },
    /// List agents. Admin only.
    List,
    /// The backend and decision counters. Admin only.
    Status,
}

/// `Request::Status`'s answer (`GET /v1/enforcement`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Backend in use.
    pub backend: Backend,
    /// Instance (pin directory and slice name).
    pub instance: String,
    /// Counters.
    pub counters: Counters,
}

/// Who asks, from the transport's peer credentials (never from the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Process id (SO_PEERCRED), if known.
    pub pid: Option<u32>,
    /// User id, if known.
    pub uid: Option<u32>,
    /// Whether the auth rule ([`AdminRule`]) makes the caller an admin.
    pub admin: bool,
}

/// Who is an admin, given a caller's uid and primary gid: one rule for
/// both transports (the daemon passes the API's: root or the admin group).
pub type AdminRule = Arc<dyn Fn(u32, u32) -> bool + Send + Sync>;

/// The rule when nothing else is configured: root only.
pub fn root_only() -> AdminRule {
    Arc::new(|uid, _| uid == 0)
}

/// What kind of refusal, for the HTTP status the routes answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The caller may not (403).
    Forbidden,
    /// No such agent (404).
    NotFound,
    /// The request is malformed or names something invalid (400).
    BadRequest,
    /// It conflicts with what is installed (409).
    Conflict,
    /// The enforcer failed or cannot serve it (503).
    Unavailable,
}

/// A refused request: the same reason code and message on either transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason_code}: {message}")]
pub struct Refusal {
    /// For the HTTP status.
    pub kind: RefusalKind,
    /// Stable reason code.
    pub reason_code: String,
    /// Human explanation.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(kind: RefusalKind, reason_code: &str, message: impl Into<String>) -> Self {
        Refusal {
            kind,
            reason_code: reason_code.into(),
            message: message.into(),
        }
    }
}

impl From<EnforceError> for Refusal {
    fn from(e: EnforceError) -> Self {
        let kind = match &e {
            EnforceError::UnknownAgent { .. } => RefusalKind::NotFound,
            EnforceError::Bind(_) | EnforceError::Suspended { .. } => RefusalKind::Forbidden,
            EnforceError::Grant { .. }
            | EnforceError::Cgroup(super::agent_cgroup::CgroupError::BadName { .. }) => {
                RefusalKind::BadRequest
            }
            EnforceError::DuplicateCall { .. } | EnforceError::AgentBusy { .. } => {
                RefusalKind::Conflict
            }
            _ => RefusalKind::Unavailable,
        };
        Refusal::new(kind, e.reason_code(), e.to_string())
    }
}

/// The auth rule: binding is open to every caller (the Enforcer checks
/// that caller and process are in the call's agent); everything else is
/// for admins (`not_admin`, the code these requests always answered with).
pub fn authorize(req: &Request, caller: &Caller) -> Result<(), Refusal> {
    if matches!(req, Request::Bind { .. }) || caller.admin {
        return Ok(());
    }
    Err(Refusal::new(
        RefusalKind::Forbidden,
        reason::NOT_ADMIN,
        match caller.uid {
            Some(uid) => format!("uid {uid} may not do this"),
            None => "this request is for administrators".into(),
        },
    ))
}

/// Decides one request: the auth rule, then the Enforcer. `fd` is the
/// listener a `Listener` request carries (SCM_RIGHTS). Returns the answer's
/// data, if any.
pub fn dispatch(
    enforcer: &Enforcer,
    caller: &Caller,
    req: Request,
    fd: Option<OwnedFd>,
) -> Result<Option<serde_json::Value>, Refusal> {
    authorize(&req, caller)?;
    let value = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map(Some).map_err(|e| {
            Refusal::new(
                RefusalKind::Unavailable,
                reason::INTERNAL_ERROR,
                e.to_string(),
            )
        })
    };
    let need_pid = || {
        caller.pid.ok_or_else(|| {
            Refusal::new(
                RefusalKind::Forbidden,
                reason::PEER_UNKNOWN,
                "this request needs the caller's pid (Unix socket, SO_PEERCRED)",
            )
        })
    };
    match req {
        Request::CreateAgent {
            agent,
            mode,
            command,
            baseline,
        } => {
            // A launch (the launcher names its command) of a suspended
            // agent fails here, before the launcher forks; an admin's
            // create over HTTP only configures, and stays possible.
            if command.is_some() {
                enforcer.check_launch(&agent)?;
            }
            let handle = enforcer.create_agent(&agent, AgentOptions { mode, baseline })?;
            if let Some(c) = command {
                allow_command(enforcer, caller, &agent, c)?;
            }
            value(serde_json::to_value(handle))
        }
        Request::Join { agent } => {
            enforcer.check_launch(&agent)?;
            enforcer.join(&agent, need_pid()?)?;
            Ok(None)
        }
        Request::Listener { agent, creds } => {
            hand_over(enforcer, need_pid()?, &agent, creds, fd)?;
            Ok(None)
        }
        Request::Bind { call_id, pid } => {
            let peer = need_pid()?;
            enforcer.bind_verified(peer, pid.unwrap_or(peer), &call_id)?;
            Ok(None)
        }
        Request::SetMode { agent, mode } => {
            enforcer.set_mode(&agent, mode)?;
            Ok(None)
        }
        Request::List => value(serde_json::to_value(enforcer.list_agents())),
        Request::Status => value(serde_json::to_value(Status {
            backend: enforcer.backend(),
            instance: enforcer.instance().to_string(),
            counters: enforcer.counters(),
        })),
    }
}

/// Adds the launched command to the agent's baseline exec list, with the
/// tool runner that launched it (agentctl): `agentctl exec` only binds to
/// calls agentd approved, so every agent may run it.
fn allow_command(
    enforcer: &Enforcer,
    caller: &Caller,
    agent: &str,
    command: PathBuf,
) -> Result<(), EnforceError> {
    let mut execs = vec![command];
    if let Some(runner) = caller
        .pid
        .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
    {
        execs.push(runner);
    }
    enforcer.allow_baseline_exec(agent, &execs)
}

/// Takes over a launcher's seccomp listener: the launcher must already be
/// in the agent's cgroup, and the agent must not run as root.
fn hand_over(
    enforcer: &Enforcer,
    pid: u32,
    agent: &str,
    creds: Creds,
    fd: Option<OwnedFd>,
) -> Result<(), Refusal> {
    let Some(fd) = fd else {
        return Err(Refusal::new(
            RefusalKind::BadRequest,
            reason::BAD_REQUEST,
            "no listener fd attached",
        ));
    };
    if enforcer.agent_of_pid(pid).as_deref() != Some(agent) {
        return Err(Refusal::new(
            RefusalKind::Forbidden,
            reason::PEER_NOT_IN_AGENT,
            format!("process {pid} is not in agent {agent}'s cgroup"),
        ));
    }
    if creds.uid == 0 {
        return Err(Refusal::new(
            RefusalKind::Forbidden,
            reason::AGENT_USER_PRIVILEGED,
            "agents run as an unprivileged user",
        ));
    }
    Ok(enforcer.adopt_listener(agent, fd, creds)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_binding_is_open_to_non_admins() {
        let user = Caller {
            pid: Some(5),
            uid: Some(1000),
            admin: false,
        };
        let admin = Caller {
            admin: true,
            ..user
        };
        let bind = Request::Bind {
            call_id: "c".into(),
            pid: None,
        };
        assert!(authorize(&bind, &user).is_ok());
        for req in [
            Request::List,
            Request::Status,
            Request::Join { agent: "a".into() },
            Request::SetMode {
                agent: "a".into(),
                mode: Mode::AuditOnly,
            },
            Request::CreateAgent {
                agent: "a".into(),
                mode: None,
                command: None,
                baseline: None,
            },
            Request::Listener {
                agent: "a".into(),
                creds: Creds {
                    uid: 1000,
                    gid: 1000,
                    groups: vec![],
                },
            },
        ] {
            let r = authorize(&req, &user).unwrap_err();
            assert_eq!(r.reason_code, "not_admin", "{req:?}");
            assert_eq!(r.kind, RefusalKind::Forbidden);
            assert!(r.message.contains("uid 1000"));
            assert!(authorize(&req, &admin).is_ok(), "{req:?}");
        }
    }

    #[test]
    fn enforcer_errors_keep_their_reason_and_get_a_status() {
        let r = Refusal::from(EnforceError::UnknownAgent { agent: "x".into() });
        assert_eq!(
            (r.kind, r.reason_code.as_str()),
            (RefusalKind::NotFound, "unknown_agent")
        );
        let r = Refusal::from(EnforceError::Bind(
            super::super::binding::BindError::NoGrant {
                call_id: "c".into(),
            },
        ));
        assert_eq!(
            (r.kind, r.reason_code.as_str()),
            (RefusalKind::Forbidden, "no_grant")
        );
        let r = Refusal::from(EnforceError::DuplicateCall {
            call_id: "c".into(),
        });
        assert_eq!(r.kind, RefusalKind::Conflict);
    }

    #[test]
    fn the_socket_frame_keeps_its_wire_format() {
        // What agentctl of this version sends; `baseline` is optional.
        let old = r#"{"op":"create_agent","agent":"a","mode":"audit-only","command":"/bin/sh"}"#;
        let req: Request = serde_json::from_str(old).unwrap();
        assert_eq!(
            req,
            Request::CreateAgent {
                agent: "a".into(),
                mode: Some(Mode::AuditOnly),
                command: Some("/bin/sh".into()),
                baseline: None,
            }
        );
        assert_eq!(serde_json::to_string(&req).unwrap(), old);
        let list: Request = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(list, Request::List);
    }
}
