//! Stable snake_case reason codes carried by refusals and decisions.
//! Clients match on these strings; never rename one, only add.

/// The decision was allow (or the message was accepted).
pub const OK: &str = "ok";

// Message ingest.
/// No signature on the message.
pub const UNSIGNED_MESSAGE: &str = "unsigned_message";
/// The claimed operator is not enrolled.
pub const UNKNOWN_OPERATOR: &str = "unknown_operator";
/// The operator was revoked.
pub const OPERATOR_REVOKED: &str = "operator_revoked";
/// The HMAC does not match (or the key changed since).
pub const SIGNATURE_MISMATCH: &str = "signature_mismatch";
/// Timestamp older than the window.
pub const STALE_TIMESTAMP: &str = "stale_timestamp";
/// Timestamp further in the future than the window.
pub const FUTURE_TIMESTAMP: &str = "future_timestamp";
/// The nonce was already used within its TTL.
pub const REPLAYED_NONCE: &str = "replayed_nonce";
/// Fleet mode: the fleet-wide replay check could not be made (PostgreSQL
/// unreachable past `[fleet] lease_secs`), so the message is refused.
pub const FLEET_UNAVAILABLE: &str = "fleet_unavailable";
/// Fleet mode: the host's policy is the fleet's central one (`agentctl
/// fleet policy push`); a local load is refused (HTTP 409).
pub const POLICY_MANAGED_CENTRALLY: &str = "policy_managed_centrally";
/// The session is bound to another operator.
pub const SESSION_OPERATOR_MISMATCH: &str = "session_operator_mismatch";
/// A v2 message's scope is malformed or too large (its entries, argument
/// names, pattern syntax or lengths; HTTP 400).
pub const INVALID_SCOPE: &str = "invalid_scope";
/// A v2 message addressed to one host (`for_host`) reached another
/// (`gateway.host_id`).
pub const MESSAGE_WRONG_HOST: &str = "message_wrong_host";
/// A v1 message, where the policy's `[messages] v1 = "refuse"` accepts
/// only v2.
pub const MESSAGE_VERSION_REFUSED: &str = "message_version_refused";
/// A v2 message addressed to one agent (`for_agent`) was posted to another
/// agent's inbox, or used by another agent's tool call.
pub const MESSAGE_OTHER_AUDIENCE: &str = "message_other_audience";
/// A session binding lapsed (no message from its operator within the
/// session lifetime) and another operator bound it (audit rows).
pub const SESSION_LAPSED: &str = "session_lapsed";

// Tool-call decision, in check order.
/// No such active-message id.
pub const UNKNOWN_ACTIVE_MESSAGE: &str = "unknown_active_message";
/// The active-message id has expired.
pub const ACTIVE_MESSAGE_EXPIRED: &str = "active_message_expired";
/// The active message is held by another agent (the first to use it).
pub const ACTIVE_MESSAGE_OTHER_AGENT: &str = "active_message_other_agent";
/// The call is outside the signed scope of its v2 message (step 7b), even
/// though the operator's role would allow it.
pub const OUTSIDE_MESSAGE_SCOPE: &str = "outside_message_scope";
/// No policy is loaded: everything is denied.
pub const NO_POLICY: &str = "no_policy_loaded";
/// The action is not defined by the policy.
pub const UNKNOWN_ACTION: &str = "unknown_action";
/// No role of the operator allows the action.
pub const ROLE_NOT_IN_ALLOWLIST: &str = "role_not_in_allowlist";
/// An argument the rule does not know.
pub const UNKNOWN_ARGUMENT: &str = "unknown_argument";
/// A required argument is absent.
pub const MISSING_ARGUMENT: &str = "missing_argument";
/// An argument has the wrong type or shape.
pub const INVALID_ARGUMENT: &str = "invalid_argument";
/// A path argument is not a clean absolute path.
pub const INVALID_PATH: &str = "invalid_path";
/// A destructive call by a role that may not make one.
pub const DESTRUCTIVE_OP_OWNER_ONLY: &str = "destructive_op_owner_only";
/// A path lies outside every allowed scope.
pub const PATH_OUTSIDE_SCOPE: &str = "path_outside_scope";
/// A path argument could not be resolved to a real object safely (a
/// dangling symlink, a magic link, a directory the caller cannot traverse).
pub const PATH_UNRESOLVABLE: &str = "path_unresolvable";
/// The program is not on the command allow-list.
pub const COMMAND_NOT_ALLOWED: &str = "command_not_allowed";
/// A recipient is not on the allow-list.
pub const RECIPIENT_NOT_ALLOWED: &str = "recipient_not_allowed";
/// A domain is not on the allow-list.
pub const DOMAIN_NOT_ALLOWED: &str = "domain_not_allowed";
/// A value is not among the allowed values.
pub const VALUE_NOT_ALLOWED: &str = "value_not_allowed";
/// An integer is out of range.
pub const VALUE_OUT_OF_RANGE: &str = "value_out_of_range";
/// A size or count limit was exceeded.
pub const SIZE_LIMIT_EXCEEDED: &str = "size_limit_exceeded";
/// The per-role rate limit was exceeded.
pub const RATE_LIMITED: &str = "rate_limited";
/// The audit record could not be made durable, so nothing is allowed.
pub const AUDIT_UNAVAILABLE: &str = "audit_unavailable";
/// Free space on the audit log's filesystem is below its threshold
/// (`audit.min_free_mb`): what would be allowed is denied, and recorded.
pub const AUDIT_STORAGE_LOW: &str = "audit_storage_low";
/// Any other failure in the decision path (fail closed).
pub const INTERNAL_ERROR: &str = "internal_error";

// API.
/// The caller's Unix credentials do not permit the route.
pub const PERMISSION_DENIED: &str = "permission_denied";
/// The body is not valid JSON for the route.
pub const INVALID_JSON: &str = "invalid_json";
/// The body has a field the route does not know.
pub const UNKNOWN_FIELD: &str = "unknown_field";
/// The body is larger than the limit.
pub const BODY_TOO_LARGE: &str = "body_too_large";
/// The body is not UTF-8.
pub const INVALID_UTF8: &str = "invalid_utf8";
/// The request body did not arrive in time.
pub const REQUEST_TIMEOUT: &str = "request_timeout";
/// Route does not exist.
pub const NOT_FOUND: &str = "not_found";

// The web console.
/// The web console's one-time login link is unknown (forged, mistyped).
pub const CONSOLE_LOGIN_INVALID: &str = "console_login_invalid";
/// The web console's one-time login link has expired.
pub const CONSOLE_LOGIN_EXPIRED: &str = "console_login_expired";
/// The web console's one-time login link was already used (replayed).
pub const CONSOLE_LOGIN_USED: &str = "console_login_used";
/// A console request without a valid session cookie (missing, expired, ended).
pub const CONSOLE_SESSION_REQUIRED: &str = "console_session_required";
/// A state-changing console request without the session's CSRF token.
pub const CONSOLE_CSRF_INVALID: &str = "console_csrf_invalid";
/// A console request from another origin, or naming a host the console does not serve.
pub const CONSOLE_ORIGIN_REFUSED: &str = "console_origin_refused";
/// A console change that needs re-authentication came without a valid
/// confirmation token (unknown, expired or used).
pub const CONSOLE_CONFIRMATION_INVALID: &str = "console_confirmation_invalid";
/// The web console is not configured (`[console] listen`).
pub const CONSOLE_DISABLED: &str = "console_disabled";
/// A tool-call id that is not letters, digits, `-` and `_` (or too long).
pub const INVALID_CALL_ID: &str = "invalid_call_id";

/// The policy text was refused.
pub const INVALID_POLICY: &str = "invalid_policy";
/// Operator id already enrolled.
pub const OPERATOR_EXISTS: &str = "operator_exists";
/// No such session binding.
pub const UNKNOWN_SESSION: &str = "unknown_session";
/// The store failed.
pub const STORE_ERROR: &str = "store_error";
/// An allowed call's receipt could not be sealed with its audit row.
pub const RECEIPT_UNAVAILABLE: &str = "receipt_unavailable";
/// The enforcement socket holds as many connections as it serves at once
/// (or as many as callers other than root may hold); retry later.
pub const ENFORCE_SOCKET_BUSY: &str = "enforce_socket_busy";

// Kernel enforcement: refusals of the seccomp supervisor.
/// The agent tried to install a seccomp filter with its own listener.
pub const SECCOMP_LISTENER_REFUSED: &str = "seccomp_listener_refused";
/// TIOCSTI/TIOCLINUX: injecting input into a terminal.
pub const TTY_INJECTION_REFUSED: &str = "tty_injection_refused";
/// Reading another process's memory (process_vm_readv).
pub const PROCESS_ACCESS_REFUSED: &str = "process_access_refused";
/// Restart found an agent cgroup the state file does not name: stopped.
pub const AGENT_UNKNOWN_ON_RESTART: &str = "agent_unknown_on_restart";
/// Restart: a running seccomp agent's supervision could not be restored in
/// full (a listener did not come back from the fd store, or a process runs
/// without a filter): stopped.
pub const SUPERVISOR_LOST_ON_RESTART: &str = "supervisor_lost_on_restart";
/// Restart: the service manager handed back an agent's listeners and agentd
/// supervises them again; the agent kept running.
pub const SUPERVISOR_READOPTED: &str = "supervisor_readopted";
/// Restart: the service manager handed back an fd that is not a listener
/// agentd stored: closed and removed from the store.
pub const STORED_FD_UNKNOWN: &str = "stored_fd_unknown";
/// Restart: a stored listener belongs to an agent the state file does not
/// name (or no longer has a cgroup): closed and removed from the store.
pub const STORED_LISTENER_UNKNOWN_AGENT: &str = "stored_listener_unknown_agent";
/// A signal or pidfd aimed at a process outside the agent (another agent, agentd).
pub const SIGNAL_OUTSIDE_AGENT: &str = "signal_outside_agent";
/// A socket family, type or protocol agents may not open (ICMP, raw, packet, vsock, …).
pub const SOCKET_FAMILY_REFUSED: &str = "socket_family_refused";
/// The agent called a syscall agents may never use (io_uring, ptrace, bpf,
/// process_vm_writev, open_by_handle_at, pidfd_getfd, userfaultfd, uselib).
pub const SYSCALL_REFUSED: &str = "syscall_refused";
/// The agent tried to create a user namespace (clone/unshare CLONE_NEWUSER).
pub const USER_NAMESPACE_REFUSED: &str = "user_namespace_refused";

// Agents, profiles, inboxes.
/// An agent setting is invalid.
pub const INVALID_AGENT: &str = "invalid_agent";
/// No such agent.
pub const UNKNOWN_AGENT: &str = "unknown_agent";
/// The agent user does not exist.
pub const UNKNOWN_USER: &str = "unknown_user";
/// Another configured agent already runs as that uid (no `share_user`).
pub const AGENT_USER_SHARED: &str = "agent_user_shared";
/// A profile file or policy section is invalid.
pub const INVALID_PROFILE: &str = "invalid_profile";
/// An agent names a profile that does not exist.
pub const UNKNOWN_PROFILE: &str = "unknown_profile";
/// A profile placeholder has no value for the agent.
pub const PROFILE_PLACEHOLDER_UNSET: &str = "profile_placeholder_unset";
/// The agent's model API route is not available (no forward proxy).
pub const MODEL_API_UNAVAILABLE: &str = "model_api_unavailable";
/// The agent's direct model upstream did not resolve.
pub const MODEL_API_UNRESOLVED: &str = "model_api_unresolved";
/// The agent's model spend limit (requests or tokens per window) is reached.
pub const SPEND_LIMIT_REACHED: &str = "spend_limit_reached";
/// The agent still has processes.
pub const AGENT_RUNNING: &str = "agent_running";
/// No such inbox entry.
pub const UNKNOWN_INBOX_ENTRY: &str = "unknown_inbox_entry";
/// The inbox entry is not running.
pub const INBOX_ENTRY_NOT_RUNNING: &str = "inbox_entry_not_running";
/// A driver run hit its time limit; its cgroup was killed.
pub const TIME_LIMIT_EXCEEDED: &str = "time_limit_exceeded";

// Runtime hooks and the runtime-call route.
/// The runtime's tool has no mapping to a policy action.
pub const UNKNOWN_TOOL: &str = "unknown_tool";
/// A runtime tool input field has the wrong type or shape for its mapping.
pub const INVALID_TOOL_INPUT: &str = "invalid_tool_input";
/// A shell command does more than run one program (operators, expansions).
pub const SHELL_SYNTAX_NOT_ALLOWED: &str = "shell_syntax_not_allowed";
/// The hook's stdin is not the runtime's JSON (malformed or truncated).
pub const MALFORMED_HOOK_INPUT: &str = "malformed_hook_input";
/// The hook's stdin exceeds the size limit.
pub const HOOK_INPUT_TOO_LARGE: &str = "hook_input_too_large";
/// The hook was run for an event it does not decide.
pub const UNSUPPORTED_HOOK_EVENT: &str = "unsupported_hook_event";
/// The runtime's tool-call id is malformed.
pub const INVALID_TOOL_USE_ID: &str = "invalid_tool_use_id";
/// An agent's tool call carries no active-message id.
pub const NO_ACTIVE_MESSAGE: &str = "no_active_message";
/// The hook could not reach agentd (or got no usable answer).
pub const AGENTD_UNREACHABLE: &str = "agentd_unreachable";
/// The hook ran out of time before agentd answered.
pub const HOOK_TIMEOUT: &str = "hook_timeout";
/// A runtime tool-call id already decided for another action or arguments.
pub const TOOL_USE_ID_REUSED: &str = "tool_use_id_reused";
/// The per-agent memory of decided runtime tool-call ids is full.
pub const TOO_MANY_TOOL_CALLS: &str = "too_many_tool_calls";

// The MCP gateway (`mcp::decide::reason` holds the same strings).
/// A method the MCP gateway does not forward.
pub const MCP_METHOD_NOT_ALLOWED: &str = "mcp_method_not_allowed";
/// `tools/call` parameters are not `{name, arguments?}`.
pub const MCP_INVALID_PARAMS: &str = "mcp_invalid_params";
/// An MCP tool name cannot be mapped to an action.
pub const MCP_BAD_TOOL_NAME: &str = "mcp_bad_tool_name";
/// Not a JSON-RPC message (parse error, batch, bad id, ...).
pub const MCP_INVALID_MESSAGE: &str = "mcp_invalid_message";
/// An MCP message exceeds the size limit.
pub const MCP_MESSAGE_TOO_LARGE: &str = "mcp_message_too_large";
/// An MCP request reused an id still in flight.
pub const MCP_DUPLICATE_ID: &str = "mcp_duplicate_id";
/// The MCP server exited (or never started).
pub const MCP_SERVER_EXITED: &str = "mcp_server_exited";
/// The MCP server did not answer in time.
pub const MCP_SERVER_TIMEOUT: &str = "mcp_server_timeout";
/// Two tools of one MCP server map to the same action.
pub const MCP_TOOL_NAME_COLLISION: &str = "mcp_tool_name_collision";
/// Too many requests in flight on one MCP session.
pub const MCP_TOO_MANY_IN_FLIGHT: &str = "mcp_too_many_in_flight";
/// An MCP server started by agentd asked agentd for a tool call itself.
pub const MCP_SERVER_MAY_NOT_CALL: &str = "mcp_server_may_not_call";
/// The MCP server could not be started.
pub const MCP_SERVER_START_FAILED: &str = "mcp_server_start_failed";
/// agentd's launcher (`agentctl` beside `agentd`) is missing.
pub const MCP_LAUNCHER_MISSING: &str = "mcp_launcher_missing";
/// Too many MCP sessions are open.
pub const MCP_TOO_MANY_SESSIONS: &str = "mcp_too_many_sessions";
/// An MCP tool's definition differs from the one pinned (approval needed).
pub const MCP_TOOL_DEFINITION_CHANGED: &str = "mcp_tool_definition_changed";
/// An MCP tool called before the session's `tools/list` showed it.
pub const MCP_TOOL_NOT_LISTED: &str = "mcp_tool_not_listed";
/// No changed MCP tool definition awaits approval.
pub const MCP_NOTHING_TO_APPROVE: &str = "mcp_nothing_to_approve";
/// A Streamable HTTP request whose `Mcp-Method`, `Mcp-Name` or
/// `MCP-Protocol-Version` header disagrees with its body (or lacks one the
/// 2026-07-28 revision requires).
pub const MCP_HEADER_MISMATCH: &str = "mcp_header_mismatch";
/// A Streamable HTTP request naming a session agentd does not know (or
/// one of another agent or server).
pub const MCP_UNKNOWN_SESSION: &str = "mcp_unknown_session";
/// The upstream MCP server could not be reached or answered badly.
pub const MCP_UPSTREAM_FAILED: &str = "mcp_upstream_failed";
/// No upstream MCP server of that name is configured.
pub const MCP_UNKNOWN_SERVER: &str = "mcp_unknown_server";

// Enforcement (the Enforcer, the enforcement socket and routes, lifecycle rows).
/// The chosen enforcement backend cannot run here.
pub const BACKEND_UNAVAILABLE: &str = "backend_unavailable";
/// A privileged operation of the enforcer failed (BPF maps, supervisor,
/// state file): whatever it was for is refused.
pub const ENFORCER_ERROR: &str = "enforcer_error";
/// Enforcement has not started (yet, or at all): allows carrying a grant are denied.
pub const ENFORCEMENT_UNAVAILABLE: &str = "enforcement_unavailable";
/// An agent name that cannot be a cgroup name.
pub const AGENT_NAME_INVALID: &str = "agent_name_invalid";
/// A cgroup operation failed.
pub const CGROUP_ERROR: &str = "cgroup_error";
/// A grant for this call id is already installed.
pub const DUPLICATE_CALL: &str = "duplicate_call";
/// Every pending slot of the agent holds a live grant.
pub const TOO_MANY_PENDING_CALLS: &str = "too_many_pending_calls";
/// No grant covers the operation (kernel rows) or no grant has that call id (binds).
pub const NO_GRANT: &str = "no_grant";
/// The grant has expired.
pub const GRANT_EXPIRED: &str = "grant_expired";
/// The grant's uses are spent.
pub const GRANT_USED_UP: &str = "grant_used_up";
/// A grant whose uses were all spent was dropped before its TTL: no
/// process that claimed it still ran (audit row `grant_dropped`, info).
pub const GRANT_SPENT: &str = "grant_spent";
/// A claim or bind could not take its use ticket because the kernel's
/// `USE_TICKETS` map was full (refused, fail closed; not a spent grant).
pub const USE_TICKETS_FULL: &str = "use_tickets_full";
/// The caller (or the process named) is not in the call's agent cgroup.
pub const PEER_NOT_IN_AGENT: &str = "peer_not_in_agent";
/// The caller's credentials could not be read.
pub const PEER_UNKNOWN: &str = "peer_unknown";
/// A malformed request on the enforcement socket.
pub const BAD_REQUEST: &str = "bad_request";
/// An administrator's request from someone else (kept where it was
/// already returned; new refusals say [`PERMISSION_DENIED`]).
pub const NOT_ADMIN: &str = "not_admin";
/// Agents run as an unprivileged user; a root listener hand-over is refused.
pub const AGENT_USER_PRIVILEGED: &str = "agent_user_privileged";
/// A grant's exec target cannot be resolved to a file.
pub const EXEC_TARGET_UNRESOLVABLE: &str = "exec_target_unresolvable";
/// A grant's path scope is not a clean absolute path.
pub const PATH_SCOPE_INVALID: &str = "path_scope_invalid";
/// A grant's connect destination cannot be parsed.
pub const DESTINATION_INVALID: &str = "destination_invalid";
/// A kernel feature agentd would use is missing (lifecycle rows).
pub const KERNEL_FEATURE_MISSING: &str = "kernel_feature_missing";
/// agentd restarted over live enforcement state (lifecycle rows).
pub const DAEMON_RESTART: &str = "daemon_restart";
/// Enforcement started fresh (lifecycle rows).
pub const STARTED: &str = "started";
/// Pinned enforcement state was found without the state file that names
/// its entries: its agents were stopped and the state dropped.
pub const ENFORCER_STATE_UNKNOWN: &str = "enforcer_state_unknown";
/// A kernel event a grant covered (kernel rows).
pub const GRANT_MATCHED: &str = "grant_matched";
/// Allowed accesses of one object under a grant, counted in the kernel
/// instead of audited one by one: the row gives the count and the first and
/// last access (kernel rows; the first access also has its own row).
pub const ACCESS_SUMMARY: &str = "access_summary";
/// A kernel event the agent's baseline covered (kernel rows).
pub const BASELINE: &str = "baseline";
/// A path through a /proc magic link, refused (kernel rows).
pub const MAGIC_LINK_REFUSED: &str = "magic_link_refused";
/// A pending grant covered the operation, but the process is not of the requester's tree.
pub const CLAIM_NOT_REQUESTER_TREE: &str = "claim_not_requester_tree";
/// A pending grant covered the exec, but its arguments differ from the granted ones.
pub const EXEC_ARGS_MISMATCH: &str = "exec_args_mismatch";
/// A grant's unix socket destination does not exist (lsm scopes skipped).
pub const UNIX_SOCKET_MISSING: &str = "unix_socket_missing";
/// A grant's path scope does not exist (lsm scopes skipped).
pub const SCOPE_PATH_MISSING: &str = "scope_path_missing";

// The kill switch (suspensions).
/// The message's operator is suspended (`agentctl suspend operator`).
pub const OPERATOR_SUSPENDED: &str = "operator_suspended";
/// The calling agent, or the agent the message is addressed to, is suspended.
pub const AGENT_SUSPENDED: &str = "agent_suspended";
/// Everything is suspended (`agentctl suspend all`).
pub const ALL_SUSPENDED: &str = "all_suspended";
/// A resume named a scope that is not suspended.
pub const NOT_SUSPENDED: &str = "not_suspended";
/// A suspension's scope is malformed (kind, name, reason text).
pub const INVALID_SUSPENSION: &str = "invalid_suspension";
// Human approval (docs/approvals.md).
/// The call passed every check and waits for a human (decision `escalate`).
pub const APPROVAL_REQUIRED: &str = "approval_required";
/// An approver approved the call (the approver's audit row).
pub const APPROVAL_GRANTED: &str = "approval_granted";
/// An approver denied the call.
pub const APPROVAL_DENIED: &str = "approval_denied";
/// No approver answered before the deadline.
pub const APPROVAL_TIMEOUT: &str = "approval_timeout";
/// The daemon restarted while the call waited (denied).
pub const APPROVAL_EXPIRED: &str = "approval_expired";
/// The caller went away before an answer (denied).
pub const APPROVAL_ABANDONED: &str = "approval_abandoned";
/// Too many calls wait for approval already.
pub const APPROVAL_QUEUE_FULL: &str = "approval_queue_full";
/// The action needs approval, but this daemon has no approval queue.
pub const APPROVAL_UNAVAILABLE: &str = "approval_unavailable";
/// No pending or decided approval has this id.
pub const UNKNOWN_APPROVAL: &str = "unknown_approval";
/// The approval was already answered (or timed out, expired, abandoned).
pub const APPROVAL_ALREADY_DECIDED: &str = "approval_already_decided";
/// A webhook callback's signature does not match.
pub const CALLBACK_BAD_SIGNATURE: &str = "callback_bad_signature";
/// A webhook callback's nonce was already used.
pub const CALLBACK_REPLAYED: &str = "callback_replayed";
/// A webhook callback was signed outside the accepted window.
pub const CALLBACK_STALE: &str = "callback_stale";
/// A webhook callback is malformed (headers, body, id).
pub const CALLBACK_MALFORMED: &str = "callback_malformed";
/// No webhook is configured, so callbacks are refused.
pub const WEBHOOK_NOT_CONFIGURED: &str = "webhook_not_configured";
/// The webhook was delivered (audit rows, info).
pub const WEBHOOK_DELIVERED: &str = "webhook_delivered";
/// The webhook could not be delivered (audit rows; nothing is approved).
pub const WEBHOOK_FAILED: &str = "webhook_failed";

// Usage thresholds.
/// A role's usage threshold for the action is reached (`max_uses` per
/// `window_secs`, per operator): hard-denied until the window slides.
pub const USAGE_THRESHOLD: &str = "usage_threshold";

// Delegation (docs/delegation.md).
/// A delegation request is malformed (scope, TTL, use count, fields).
pub const INVALID_DELEGATION: &str = "invalid_delegation";
/// No such delegation token.
pub const UNKNOWN_DELEGATION: &str = "unknown_delegation";
/// The token, or a token up its chain, was revoked.
pub const DELEGATION_REVOKED: &str = "delegation_revoked";
/// The token, or a token up its chain, has expired.
pub const DELEGATION_EXPIRED: &str = "delegation_expired";
/// The token, or a token up its chain, has no uses left.
pub const DELEGATION_USED_UP: &str = "delegation_used_up";
/// The call's action or arguments lie outside a token's scope (its own or an ancestor's).
pub const OUTSIDE_DELEGATION: &str = "outside_delegation";
/// A token's scope would reach beyond what its issuer holds (the parent
/// token's scope, or the root operator's current roles).
pub const DELEGATION_SCOPE_TOO_WIDE: &str = "delegation_scope_too_wide";
/// A sub-token would outlive its parent.
pub const DELEGATION_TTL_TOO_LONG: &str = "delegation_ttl_too_long";
/// A sub-token would allow more uses than its parent has left.
pub const DELEGATION_USES_TOO_MANY: &str = "delegation_uses_too_many";
/// A sub-token would make the chain deeper than 5 links.
pub const DELEGATION_CHAIN_TOO_DEEP: &str = "delegation_chain_too_deep";
/// A token issued to its own issuer or to anyone up its chain.
pub const DELEGATION_LOOP: &str = "delegation_loop";
/// A signed revocation by someone who is neither the token nor up its chain.
pub const DELEGATION_NOT_ISSUER: &str = "delegation_not_issuer";
// Session modes and anomaly escalation (docs/effects.md).
/// A non-`read` call in a read-only session waits for an approver to
/// elevate the session for its action (decision `escalate`).
pub const ELEVATION_REQUIRED: &str = "elevation_required";
/// An approver elevated a read-only session for an action (admin row).
pub const ELEVATION_GRANTED: &str = "elevation_granted";
/// An `admin`-class call in a read-only session: never elevated, refused
/// without asking.
pub const ADMIN_NOT_ELEVATABLE: &str = "admin_not_elevatable";
/// The session tripped the anomaly check (denial rate or write ratio):
/// its calls wait for an approver (the trip's admin row; the escalated
/// calls' `escalate` rows).
pub const ANOMALY_ESCALATED: &str = "anomaly_escalated";
/// The session tripped the anomaly check and the policy says `then =
/// "deny"`: its calls are denied until it is released.
pub const ANOMALY_DENIED: &str = "anomaly_denied";

// Protected files (docs/agents.md "Protected files").
/// A write to a protected file (a policy `[protected]` path) without a
/// grant that names it as a protected write: refused in the kernel, or at
/// the gateway for a call whose path argument names one.
pub const PROTECTED_FILE: &str = "protected_file";
/// An approved call writes a protected file, but its approval was not
/// signed with an owner's key (an admin's or console click).
pub const PROTECTED_FILE_NEEDS_OWNER: &str = "protected_file_needs_owner";
/// A signed approval does not verify (unknown or revoked operator, wrong
/// key, stale timestamp, replayed nonce, malformed signature).
pub const APPROVAL_SIGNATURE_INVALID: &str = "approval_signature_invalid";
/// A signed approval's operator holds no owner role.
pub const APPROVAL_SIGNER_NOT_OWNER: &str = "approval_signer_not_owner";
