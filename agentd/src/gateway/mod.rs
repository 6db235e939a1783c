//! The gateway: operators and their keys, message ingest (signature, window,
//! nonce, session binding), active messages, and the tool-call decision.
//!
//! Everything the decision reads lives in memory (`Gateway` fields); the
//! SQLite store (`store`) is written through on ingest and administration and
//! read back at start, so restarts keep nonces, sessions and active messages.
pub mod approval_webhook;
pub mod approvals;
pub mod call_ids;
pub mod decide;
pub mod delegation;
mod escalation;
pub mod flood;
pub mod hooks;
pub mod ingest;
pub mod kill_switch;
pub mod pipeline;
pub mod protected;
pub mod rate;
pub mod resolve;
pub mod runtime_call;
pub mod session_gate;
pub mod session_state;
pub mod shared_nonces;
pub mod store;
pub mod suspend;
pub mod usage;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::audit::AuditLog;
use crate::config::GatewayConfig;
use crate::policy::{self, CompiledPolicy, PolicyError};
use crate::protocol::message::check_operator_id;
use crate::protocol::MessageError;

pub use decide::{Decision, ToolCallRequest};
pub use hooks::{AgentResolver, AllowCompanion, AllowHook, AllowedCall, HookError};
pub use ingest::{IngestOutcome, Refusal, RefusalClass, Trust};
pub use kill_switch::{GrantTarget, KillSwitch, SuspendError, SuspendOutcome};
pub use pipeline::Caller;
pub use runtime_call::RuntimeCallAnswer;
pub use store::{SessionRow, Store, StoreError};
pub use suspend::{Scope, Suspension};

/// Errors of gateway administration (operators, policy, store).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policy text was refused; the old policy stays in force.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The operator id is malformed.
    #[error("invalid operator id: {source}")]
    OperatorId { source: MessageError },
    /// The operator id is taken.
    #[error("operator `{id}` already exists")]
    OperatorExists { id: String },
    /// No such operator.
    #[error("no operator `{id}`")]
    UnknownOperator { id: String },
    /// A role the loaded policy does not define.
    #[error("role `{role}` is not defined by policy {policy_id} (roles: {known})")]
    UnknownRole {
        role: String,
        policy_id: String,
        known: String,
    },
    /// No roles given.
    #[error("an operator needs at least one role")]
    NoRoles,
    /// A stored policy no longer compiles (edited by hand?).
    #[error("stored policy #{seq} does not compile: {source}")]
    StoredPolicy { seq: i64, source: PolicyError },
    /// The operator signs with Ed25519; its key is changed where it was
    /// enrolled (centrally), never rotated into an HMAC key here.
    #[error("operator `{id}` signs with an Ed25519 key; change it where it is managed (agentctl fleet operator)")]
    PublicKeyOperator { id: String },
    /// The policy in force is the fleet's central one; local loads are refused.
    #[error("the policy in force is the fleet's central one ({origin}); change it with agentctl fleet policy push")]
    CentralPolicy { origin: String },
    /// An imported operator key is not 32 bytes.
    #[error("an imported operator key must be 32 bytes (64 hex digits), not {len} bytes")]
    ImportedKey { len: usize },
}

impl GatewayError {
    /// Stable reason code.
    pub fn reason_code(&self) -> &'static str {
        use crate::protocol::reason;
        match self {
            Self::Store(_) | Self::StoredPolicy { .. } => reason::STORE_ERROR,
            Self::Policy(_) => reason::INVALID_POLICY,
            Self::OperatorId { source } => source.reason_code(),
            Self::OperatorExists { .. } => reason::OPERATOR_EXISTS,
            Self::UnknownOperator { .. } => reason::UNKNOWN_OPERATOR,
            Self::UnknownRole { .. } => "unknown_role",
            Self::NoRoles => "no_roles",
            Self::ImportedKey { .. } => "invalid_key",
            Self::PublicKeyOperator { .. } => "public_key_operator",
            Self::CentralPolicy { .. } => reason::POLICY_MANAGED_CENTRALLY,
        }
    }
}

/// Timing settings (from `[gateway]` in agentd.toml).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Accepted clock skew either way, seconds.
    pub timestamp_window_secs: i64,
    /// Nonce memory, seconds.
    pub nonce_ttl_secs: i64,
    /// Active-message lifetime, seconds.
    pub active_message_ttl_secs: i64,
    /// A session binding lapses this long after its operator's latest
    /// verified message in it (0 = never).
    pub session_ttl_secs: i64,
    /// Unverified messages accepted per minute per peer and per claimed
    /// operator (bursts of as many); 0 = no limit.
    pub unverified_per_minute: u32,
}

impl From<&GatewayConfig> for Settings {
    fn from(c: &GatewayConfig) -> Self {
        let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            timestamp_window_secs: secs(c.timestamp_window_secs),
            nonce_ttl_secs: secs(c.nonce_ttl_secs),
            active_message_ttl_secs: secs(c.active_message_ttl_secs),
            session_ttl_secs: secs(c.session_ttl_secs),
            unverified_per_minute: c.unverified_per_minute,
        }
    }
}

/// How an operator signs its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// HMAC-SHA256 under a key the operator and every host share.
    #[default]
    Hmac,
    /// Ed25519: hosts hold only the public key (fleet mode's central
    /// operators), so nothing a host or the fleet database holds can sign.
    Ed25519,
}

impl KeyKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hmac => "hmac",
            Self::Ed25519 => "ed25519",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hmac" => Some(Self::Hmac),
            "ed25519" => Some(Self::Ed25519),
            _ => None,
        }
    }
}

/// An operator as the decision path sees it.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    /// HMAC key, or Ed25519 public key (`key_kind`).
    pub key: Vec<u8>,
    pub key_kind: KeyKind,
    /// What receipts are sealed with: `key` for HMAC operators, a
    /// host-held secret for Ed25519 ones (a public key seals nothing).
    pub receipt_key: Vec<u8>,
    pub key_gen: u32,
    pub roles: Vec<String>,
    pub revoked: bool,
    pub created_at: i64,
}

/// Public view of an operator (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorInfo {
    /// Operator id.
    pub id: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Key generation (1 at enrolment, +1 per rotation).
    pub key_gen: u32,
    /// Revoked?
    pub revoked: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// How the operator signs (`hmac` unless enrolled with a public key).
    #[serde(default)]
    pub key_kind: KeyKind,
    /// An Ed25519 operator's public key, hex (never an HMAC key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// The loaded policy, as reported by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInfo {
    /// Compiled id (`name@sha12`).
    pub policy_id: String,
    /// SHA-256 of the source, hex.
    pub sha256: String,
    /// Roles defined.
    pub roles: Vec<String>,
    /// Where it was loaded from.
    pub origin: String,
    /// Unix seconds.
    pub loaded_at: i64,
    /// Source text.
    pub source: String,
}

struct LoadedPolicy {
    compiled: Arc<CompiledPolicy>,
    origin: String,
    loaded_at: i64,
}

/// The gateway. Share it behind an `Arc`.
pub struct Gateway {
    store: Store,
    settings: Settings,
    policy: RwLock<Option<LoadedPolicy>>,
    operators: RwLock<HashMap<String, Arc<Operator>>>,
    sessions: RwLock<HashMap<String, String>>,
    active: RwLock<HashMap<u128, Arc<ingest::ActiveMessage>>>,
    rates: rate::RateLimiter,
    usage: usage::UsageCounter,
    flood: flood::FloodLimiter,
    audit: Option<AuditLog>,
    hooks: RwLock<Vec<Arc<dyn AllowHook>>>,
    policy_listeners: RwLock<Vec<PolicyListener>>,
    resolver: RwLock<Option<Arc<dyn AgentResolver>>>,
    call_ids: call_ids::CallIds,
    /// The kill switch's suspensions in force (stored in gateway.db).
    suspensions: suspend::Suspensions,
    kill_switch: RwLock<Option<Arc<dyn KillSwitch>>>,
    approvals: RwLock<Option<Arc<approvals::Approvals>>>,
    /// The fleet-wide nonce register, in fleet mode.
    shared_nonces: RwLock<Option<Arc<dyn shared_nonces::SharedNonces>>>,
    /// This host's name for v2 messages' `for_host` (`gateway.host_id`,
    /// by default the machine's host name read at start).
    host_id: RwLock<String>,
    /// Delegation tokens (stored in gateway.db).
    delegations: delegation::Delegations,
    /// Elevations and anomaly counts per session (memory only).
    session_states: session_state::SessionStates,
    /// Every configured agent's protected files (see `protected`).
    agent_protected: RwLock<Vec<std::path::PathBuf>>,
}

/// The machine's host name (the kernel's nodename), the default
/// `gateway.host_id`; empty if it cannot be read (then no message naming a
/// host is accepted).
pub fn machine_host_id() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How a policy applied from the fleet's central state names its origin
/// (`fleet rev N`).
pub const CENTRAL_POLICY_ORIGIN: &str = "fleet rev ";

/// Called after every successful policy load (agents re-apply their baselines).
pub type PolicyListener = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("store", &self.store.path())
            .finish_non_exhaustive()
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn new_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

impl Gateway {
    /// Opens `state_dir/gateway.db` and loads operators, sessions, unexpired
    /// active messages and the current policy into memory. `audit` is None
    /// only in benches and unit tests; the daemon always passes one.
    pub fn open(
        state_dir: &Path,
        settings: Settings,
        audit: Option<AuditLog>,
    ) -> Result<Self, GatewayError> {
        let store = Store::open(state_dir)?;
        let now = unix_now();
        let operators = store
            .operators()?
            .into_iter()
            .map(|o| {
                (
                    o.id,
                    Arc::new(Operator {
                        receipt_key: o.receipt_key.unwrap_or_else(|| o.key.clone()),
                        key: o.key,
                        key_kind: o.key_kind,
                        key_gen: o.key_gen,
                        roles: o.roles,
                        revoked: o.revoked,
                        created_at: o.created_at,
                    }),
                )
            })
            .collect();
        let sessions = store
            .sessions()?
            .into_iter()
            .map(|s| (s.session, s.operator))
            .collect();
        let mut active = HashMap::new();
        for row in store.active_messages(now)? {
            if let Some((k, v)) = ingest::ActiveMessage::from_row(row) {
                active.insert(k, Arc::new(v));
            }
        }
        let suspensions = suspend::Suspensions::from_rows(store.suspensions()?);
        let delegations = Self::load_delegations(&store)?;
        let policy = match store.current_policy()? {
            None => None,
            Some(row) => {
                let compiled = policy::compile(&row.source, &row.origin).map_err(|source| {
                    GatewayError::StoredPolicy {
                        seq: row.seq,
                        source,
                    }
                })?;
                Some(LoadedPolicy {
                    compiled: Arc::new(compiled),
                    origin: row.origin,
                    loaded_at: row.loaded_at,
                })
            }
        };
        tracing::info!(
            path = %store.path().display(),
            policy = policy.as_ref().map(|p| p.compiled.id.as_str()).unwrap_or("none"),
            active = active.len(),
            "gateway store loaded"
        );
        Ok(Self {
            store,
            settings,
            policy: RwLock::new(policy),
            operators: RwLock::new(operators),
            sessions: RwLock::new(sessions),
            active: RwLock::new(active),
            rates: rate::RateLimiter::default(),
            usage: usage::UsageCounter::default(),
            flood: flood::FloodLimiter::new(
                settings.unverified_per_minute,
                settings.unverified_per_minute,
            ),
            audit,
            hooks: RwLock::new(Vec::new()),
            policy_listeners: RwLock::new(Vec::new()),
            resolver: RwLock::new(None),
            call_ids: call_ids::CallIds::default(),
            suspensions,
            kill_switch: RwLock::new(None),
            approvals: RwLock::new(None),
            host_id: RwLock::new(machine_host_id()),
            delegations,
            session_states: session_state::SessionStates::default(),
            shared_nonces: RwLock::new(None),
            agent_protected: RwLock::new(Vec::new()),
        })
    }

    /// Sets this host's id (`gateway.host_id`): a v2 message naming
    /// another host is refused `message_wrong_host`.
    pub fn set_host_id(&self, host_id: &str) {
        *self.host_id.write().unwrap_or_else(|p| p.into_inner()) = host_id.to_owned();
    }

    /// This host's id, as v2 messages' `for_host` must name it.
    pub fn host_id(&self) -> String {
        self.host_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Attaches the approval queue: calls the policy escalates wait in it
    /// (without one they are denied `approval_unavailable`).
    pub fn attach_approvals(&self, queue: Arc<approvals::Approvals>) {
        *self.approvals.write().unwrap_or_else(|p| p.into_inner()) = Some(queue);
    }

    /// The approval queue, if attached.
    pub fn approvals(&self) -> Option<Arc<approvals::Approvals>> {
        self.approvals
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The audit log, if attached.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Registers a hook run after every durably audited allow (enforcement
    /// grant install, receipt enqueue). Hooks run in registration order.
    pub fn add_allow_hook(&self, hook: Arc<dyn AllowHook>) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    /// Registers a function called after every successful policy load.
    pub fn add_policy_listener(&self, listener: PolicyListener) {
        self.policy_listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
    }

    /// Makes every verified message claim its nonce in `register` too
    /// (fleet mode: a replay to another host is refused).
    pub fn set_shared_nonces(&self, register: Arc<dyn shared_nonces::SharedNonces>) {
        *self
            .shared_nonces
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(register);
    }

    /// Sets how callers are told apart by agent (the daemon wires the
    /// enforcement layer's cgroup lookup here).
    pub fn set_agent_resolver(&self, resolver: Arc<dyn AgentResolver>) {
        *self.resolver.write().unwrap_or_else(|p| p.into_inner()) = Some(resolver);
    }

    /// The agent the caller's process belongs to; None outside every agent
    /// (or when no resolver is set).
    pub fn caller_agent(&self, caller: Caller) -> Option<String> {
        let pid = caller.pid?;
        let r = self
            .resolver
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        r.agent_of_pid(pid)
    }

    /// The compiled policy in force, if any.
    pub fn current_policy(&self) -> Option<Arc<CompiledPolicy>> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| p.compiled.clone())
    }

    /// The policy in force, for display.
    pub fn policy_info(&self) -> Option<PolicyInfo> {
        let guard = self.policy.read().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .map(|p| info_of(&p.compiled, &p.origin, p.loaded_at))
    }

    /// Checks policy text without loading it.
    pub fn validate_policy(source: &str, origin: &str) -> Result<PolicyInfo, GatewayError> {
        let c = policy::compile(source, origin)?;
        Ok(info_of(&c, origin, unix_now()))
    }

    /// Whether the policy in force came from the fleet's central state
    /// (its origin starts with [`CENTRAL_POLICY_ORIGIN`]).
    pub fn policy_is_central(&self) -> bool {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|p| p.origin.starts_with(CENTRAL_POLICY_ORIGIN))
    }

    /// [`Self::load_policy`] for a local administrator: refused while the
    /// fleet's central policy is in force (it would be undone at the next
    /// re-read anyway).
    pub fn load_local_policy(
        &self,
        source: &str,
        origin: &str,
    ) -> Result<PolicyInfo, GatewayError> {
        if self.policy_is_central() {
            let origin = self.policy_info().map(|i| i.origin).unwrap_or_default();
            return Err(GatewayError::CentralPolicy { origin });
        }
        self.load_policy(source, origin)
    }

    /// Compiles and atomically installs a policy: stored first, then swapped
    /// in; on any error the old policy stays in force.
    pub fn load_policy(&self, source: &str, origin: &str) -> Result<PolicyInfo, GatewayError> {
        let compiled = policy::compile(source, origin)?;
        let now = unix_now();
        self.store
            .insert_policy(&compiled.id, source, origin, now)?;
        let info = info_of(&compiled, origin, now);
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Some(LoadedPolicy {
            compiled: Arc::new(compiled),
            origin: origin.to_owned(),
            loaded_at: now,
        });
        self.rates.clear();
        tracing::info!(policy_id = %info.policy_id, origin, "policy loaded");
        let listeners = self
            .policy_listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for l in listeners {
            l();
        }
        Ok(info)
    }

    fn check_roles(&self, roles: &[String]) -> Result<(), GatewayError> {
        if roles.is_empty() {
            return Err(GatewayError::NoRoles);
        }
        if let Some(p) = self.current_policy() {
            let known = p.role_names();
            if let Some(r) = roles.iter().find(|r| !known.contains(r)) {
                return Err(GatewayError::UnknownRole {
                    role: r.clone(),
                    policy_id: p.id.clone(),
                    known: known.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Enrolls an operator with a fresh 256-bit key; returns the key (shown once).
    pub fn add_operator(
        &self,
        id: &str,
        roles: &[String],
    ) -> Result<(OperatorInfo, Vec<u8>), GatewayError> {
        self.add_operator_with_key(id, roles, None)
    }

    /// [`Self::add_operator`] with the key the operator already holds on
    /// other hosts of a fleet (`imported`, 32 bytes), or a fresh one.
    pub fn add_operator_with_key(
        &self,
        id: &str,
        roles: &[String],
        imported: Option<Vec<u8>>,
    ) -> Result<(OperatorInfo, Vec<u8>), GatewayError> {
        check_operator_id(id).map_err(|source| GatewayError::OperatorId { source })?;
        self.check_roles(roles)?;
        let key = match imported {
            Some(k) if k.len() == 32 => k,
            Some(k) => {
                return Err(GatewayError::ImportedKey { len: k.len() });
            }
            None => new_key(),
        };
        let row = store::OperatorRow {
            id: id.to_owned(),
            key: key.clone(),
            key_kind: KeyKind::Hmac,
            receipt_key: None,
            key_gen: 1,
            roles: roles.to_vec(),
            revoked: false,
            created_at: unix_now(),
        };
        let info = self.enrol(row)?;
        Ok((info, key))
    }

    /// Enrolls an operator that signs with Ed25519 under `public_key`
    /// (fleet mode's central operators): this host holds no secret of it
    /// beyond a fresh key its receipts are sealed with.
    pub fn add_operator_public(
        &self,
        id: &str,
        roles: &[String],
        public_key: &[u8; 32],
    ) -> Result<OperatorInfo, GatewayError> {
        check_operator_id(id).map_err(|source| GatewayError::OperatorId { source })?;
        self.check_roles(roles)?;
        if ed25519_dalek::VerifyingKey::from_bytes(public_key).is_err() {
            return Err(GatewayError::ImportedKey { len: 0 });
        }
        self.enrol(store::OperatorRow {
            id: id.to_owned(),
            key: public_key.to_vec(),
            key_kind: KeyKind::Ed25519,
            receipt_key: Some(new_key()),
            key_gen: 1,
            roles: roles.to_vec(),
            revoked: false,
            created_at: unix_now(),
        })
    }

    /// Stores and installs a new operator.
    fn enrol(&self, row: store::OperatorRow) -> Result<OperatorInfo, GatewayError> {
        if !self.store.insert_operator(&row)? {
            return Err(GatewayError::OperatorExists { id: row.id });
        }
        let op = Operator {
            receipt_key: row.receipt_key.unwrap_or_else(|| row.key.clone()),
            key: row.key,
            key_kind: row.key_kind,
            key_gen: 1,
            roles: row.roles,
            revoked: false,
            created_at: row.created_at,
        };
        let info = operator_info(&row.id, &op);
        tracing::info!(operator = %row.id, roles = ?op.roles, key_kind = op.key_kind.as_str(), "operator enrolled");
        self.operators
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(row.id, Arc::new(op));
        Ok(info)
    }

    /// Puts `op` in force for `id` (replacing what was there); its public view.
    fn install_operator(&self, id: &str, op: Operator) -> OperatorInfo {
        let info = operator_info(id, &op);
        self.operators
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Arc::new(op));
        info
    }

    /// All operators, without keys.
    pub fn list_operators(&self) -> Vec<OperatorInfo> {
        let map = self.operators.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<OperatorInfo> = map.iter().map(|(id, op)| operator_info(id, op)).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn existing(&self, id: &str) -> Result<Arc<Operator>, GatewayError> {
        self.operators
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| GatewayError::UnknownOperator { id: id.to_owned() })
    }

    /// Replaces an operator's key; messages signed with the old key stop
    /// verifying and their active messages lose their tool rights.
    pub fn rotate_operator(&self, id: &str) -> Result<(OperatorInfo, Vec<u8>), GatewayError> {
        let old = self.existing(id)?;
        if old.key_kind != KeyKind::Hmac {
            return Err(GatewayError::PublicKeyOperator { id: id.to_owned() });
        }
        let key = new_key();
        let key_gen = old.key_gen + 1;
        if !self.store.rotate_key(id, &key, key_gen, unix_now())? {
            return Err(GatewayError::UnknownOperator { id: id.to_owned() });
        }
        let op = Operator {
            key: key.clone(),
            key_kind: KeyKind::Hmac,
            receipt_key: key.clone(),
            key_gen,
            ..(*old).clone()
        };
        let info = self.install_operator(id, op);
        tracing::info!(operator = id, key_gen, "operator key rotated");
        Ok((info, key))
    }

    /// Ends what the allowed calls of `operator`'s messages still hold in
    /// the kernel (each hook's `revoke_messages`); returns calls ended.
    /// Failures are logged: the operator's change has already happened.
    fn revoke_grants_of(&self, operator: &str) -> usize {
        let ids = match self.store.active_ids_of(operator) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, operator, "cannot list the operator's messages; its grants live until their TTL");
                return 0;
            }
        };
        let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut ended = 0;
        for hook in hooks {
            match hook.revoke_messages(&ids) {
                Ok(n) => ended += n,
                Err(e) => {
                    tracing::error!(hook = hook.name(), error = %e, operator, "revoking the operator's grants failed")
                }
            }
        }
        ended
    }

    /// Revokes an operator: no more messages, no more tool calls on its
    /// messages, and the grants its earlier calls installed end at once.
    /// Returns the operator and how many calls' grants were ended.
    pub fn revoke_operator_and_grants(
        &self,
        id: &str,
    ) -> Result<(OperatorInfo, usize), GatewayError> {
        let info = self.revoke_operator(id)?;
        Ok((info, self.revoke_grants_of(id)))
    }

    /// Rotates an operator's key and ends its earlier calls' grants (they
    /// were allowed on messages the new key no longer vouches for).
    pub fn rotate_operator_and_grants(
        &self,
        id: &str,
    ) -> Result<(OperatorInfo, Vec<u8>, usize), GatewayError> {
        let (info, key) = self.rotate_operator(id)?;
        Ok((info, key, self.revoke_grants_of(id)))
    }

    /// Replaces an operator's roles (each defined by the policy in force)
    /// and ends the grants its earlier calls hold (allowed under the old
    /// roles). Returns the operator and how many calls' grants were ended.
    pub fn set_operator_roles(
        &self,
        id: &str,
        roles: &[String],
    ) -> Result<(OperatorInfo, usize), GatewayError> {
        self.check_roles(roles)?;
        let old = self.existing(id)?;
        if !self.store.set_roles(id, roles, unix_now())? {
            return Err(GatewayError::UnknownOperator { id: id.to_owned() });
        }
        let op = Operator {
            roles: roles.to_vec(),
            ..(*old).clone()
        };
        let info = self.install_operator(id, op);
        tracing::info!(operator = id, roles = ?roles, "operator roles changed");
        Ok((info, self.revoke_grants_of(id)))
    }

    /// Revokes an operator: no more messages, no more tool calls on its messages.
    pub fn revoke_operator(&self, id: &str) -> Result<OperatorInfo, GatewayError> {
        let old = self.existing(id)?;
        if !self.store.revoke(id, unix_now())? {
            return Err(GatewayError::UnknownOperator { id: id.to_owned() });
        }
        let op = Operator {
            revoked: true,
            ..(*old).clone()
        };
        let info = self.install_operator(id, op);
        tracing::info!(operator = id, "operator revoked");
        Ok(info)
    }

    /// Session bindings, as stored.
    pub fn list_sessions(&self) -> Result<Vec<store::SessionRow>, GatewayError> {
        let mut rows = self.store.sessions()?;
        let now = unix_now();
        let mode = match self.current_policy() {
            Some(p) if p.any_read_only && p.all_read_only => "read_only",
            // Roles' own `session_start` differ: each decides for the calls it allows.
            Some(p) if p.any_read_only => "by_role",
            _ => "full",
        };
        let mut views = self.session_states.views(now);
        for r in &mut rows {
            r.mode = mode.into();
            r.state = views.remove(&r.session).unwrap_or_default();
        }
        Ok(rows)
    }

    /// Releases a session's binding (an admin's decision): the next verified
    /// message binds it afresh, and tool calls on messages from the old
    /// binding are refused (`session_operator_mismatch`). Returns the
    /// operator it was bound to, or None if it was not bound.
    pub fn release_session(&self, session: &str) -> Result<Option<String>, GatewayError> {
        let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        let released = self.store.release_session(session)?;
        let previous = sessions.remove(session);
        // A released session starts afresh: no elevation, no anomaly count.
        let ended = self.session_states.end_session(session);
        if ended > 0 {
            tracing::info!(session, elevations_ended = ended, "session released");
        }
        Ok(if released {
            previous.or_else(|| Some(String::new()))
        } else {
            None
        })
    }

    /// An operator's current key (for receipts); None if unknown or revoked.
    /// A token's calls are sealed with its root operator's key.
    pub fn key_of(&self, id: &str) -> Option<Vec<u8>> {
        let id = crate::protocol::delegation::token_root(id).unwrap_or(id);
        let map = self.operators.read().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .filter(|o| !o.revoked)
            .map(|o| o.receipt_key.clone())
    }

    /// Drops expired nonces and active messages from memory and store.
    pub fn prune(&self, now: i64) -> Result<usize, GatewayError> {
        self.active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, m| m.expires_at > now);
        self.call_ids.prune(now);
        let tokens = self.prune_delegations(now)?;
        Ok(self.store.prune(now)? + tokens)
    }
}

fn operator_info(id: &str, op: &Operator) -> OperatorInfo {
    OperatorInfo {
        id: id.to_owned(),
        roles: op.roles.clone(),
        key_gen: op.key_gen,
        revoked: op.revoked,
        created_at: op.created_at,
        key_kind: op.key_kind,
        public_key: (op.key_kind == KeyKind::Ed25519).then(|| hex::encode(&op.key)),
    }
}

fn info_of(c: &CompiledPolicy, origin: &str, loaded_at: i64) -> PolicyInfo {
    PolicyInfo {
        policy_id: c.id.clone(),
        sha256: c.sha256.clone(),
        roles: c.role_names(),
        origin: origin.to_owned(),
        loaded_at,
        source: c.source.clone(),
    }
}

#[cfg(test)]
mod protected_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod v2_tests;
