//! Gateway rows: tool-call decisions and message ingest. A policy refusal
//! is re-decided against a copy of the policy in force, patched one rule at
//! a time until the call is allowed (or no patch applies), so the proposal
//! is exactly what this call needs.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::render;
use super::{Context, Explanation, Fix, Outcome};
use crate::audit::Record;
use crate::policy::schema::{ActionDef, ArgKind, ArgRule, PolicyFile};
use crate::policy::{compile, path};
use crate::protocol::reason as rc;

/// Which step of the tool-call decision a reason code belongs to
/// (`policies/demo.toml` lists them in order).
fn step_of(code: &str) -> &'static str {
    match code {
        rc::UNKNOWN_ACTIVE_MESSAGE
        | rc::ACTIVE_MESSAGE_EXPIRED
        | rc::ACTIVE_MESSAGE_OTHER_AGENT
        | rc::MESSAGE_OTHER_AUDIENCE
        | rc::NO_ACTIVE_MESSAGE => "gateway: the active message (step 1)",
        rc::UNSIGNED_MESSAGE
        | rc::SIGNATURE_MISMATCH
        | rc::UNKNOWN_OPERATOR
        | rc::OPERATOR_REVOKED => "gateway: the originating message's signature (step 2)",
        rc::SESSION_OPERATOR_MISMATCH => "gateway: the session's operator (step 3)",
        rc::NO_POLICY | rc::UNKNOWN_ACTION | rc::ROLE_NOT_IN_ALLOWLIST => {
            "gateway: the role allow-list (step 4)"
        }
        rc::UNKNOWN_ARGUMENT | rc::MISSING_ARGUMENT | rc::INVALID_ARGUMENT | rc::INVALID_PATH => {
            "gateway: the arguments' names and types (step 5)"
        }
        rc::DESTRUCTIVE_OP_OWNER_ONLY => "gateway: the destructive class (step 6)",
        rc::PATH_OUTSIDE_SCOPE
        | rc::PATH_UNRESOLVABLE
        | rc::COMMAND_NOT_ALLOWED
        | rc::RECIPIENT_NOT_ALLOWED
        | rc::DOMAIN_NOT_ALLOWED
        | rc::VALUE_NOT_ALLOWED
        | rc::VALUE_OUT_OF_RANGE
        | rc::SIZE_LIMIT_EXCEEDED => "gateway: the argument constraints (step 7)",
        rc::OUTSIDE_MESSAGE_SCOPE => "gateway: the message's signed scope (step 7b)",
        rc::ADMIN_NOT_ELEVATABLE | rc::ELEVATION_REQUIRED => {
            "gateway: the session's mode and the call's effect class (step 7c)"
        }
        rc::ANOMALY_DENIED | rc::ANOMALY_ESCALATED => {
            "gateway: the session's anomaly check (step 7d)"
        }
        rc::PROTECTED_FILE | rc::PROTECTED_FILE_NEEDS_OWNER => "gateway: protected files (step 7e)",
        rc::RATE_LIMITED => "gateway: the role's rate limit (step 8)",
        rc::USAGE_THRESHOLD => "gateway: the role's usage threshold (step 9)",
        rc::OPERATOR_SUSPENDED | rc::AGENT_SUSPENDED | rc::ALL_SUSPENDED => {
            "gateway: the kill switch (a suspension, checked after step 1)"
        }
        rc::UNKNOWN_TOOL | rc::INVALID_TOOL_INPUT | rc::SHELL_SYNTAX_NOT_ALLOWED => {
            "gateway: the runtime's tool mapping (before step 1)"
        }
        rc::TOOL_USE_ID_REUSED | rc::TOO_MANY_TOOL_CALLS => {
            "gateway: one decision per runtime tool call"
        }
        rc::AUDIT_UNAVAILABLE | rc::INTERNAL_ERROR | rc::STORE_ERROR => {
            "gateway: failing closed on an internal error"
        }
        c if super::delegation::is_delegation_code(c) => {
            "gateway: the delegation token's chain and scope (step 3a)"
        }
        rc::OK => "gateway: every check passed",
        rc::APPROVAL_REQUIRED
        | rc::APPROVAL_DENIED
        | rc::APPROVAL_TIMEOUT
        | rc::APPROVAL_EXPIRED
        | rc::APPROVAL_QUEUE_FULL
        | rc::APPROVAL_UNAVAILABLE => "gateway: human approval (after step 8)",
        _ => "gateway: an allow hook or another check (see the reason code)",
    }
}

/// The operator named by a row, and whether the message was verified.
fn operator_of(r: &Record) -> (String, bool) {
    let op = &r.event.operator;
    match op.strip_prefix("claimed:") {
        Some(c) => (c.to_owned(), false),
        None => (op.clone(), !op.is_empty()),
    }
}

/// Explains a tool-call row.
pub fn tool_call(r: &Record, ctx: &Context<'_>, policy: Option<&PolicyFile>) -> Explanation {
    let ev = &r.event;
    let code = ev.reason_code.as_str();
    let (operator, verified) = operator_of(r);
    // An escalation row's target leads with what was asked of whom.
    let (asked, arguments) = escalation_of(&ev.target);
    let args: Option<Map<String, Value>> = serde_json::from_str(arguments).ok();
    let who = if operator.is_empty() {
        "no operator".to_owned()
    } else if verified {
        format!("operator `{operator}`")
    } else {
        format!("a message claiming to be from `{operator}` (not verified)")
    };
    let mut e = Explanation::new(r, step_of(code), "");
    if let Some(a) = &asked {
        e.notes.push(a.note());
    }
    if args.is_none() && !arguments.is_empty() {
        e.notes.push(
            "the arguments in the row are clipped or not JSON; the proposal cannot be checked"
                .into(),
        );
    }
    e.why = why(r, ctx, &who, &operator);
    if let Some(note) = effect_note(&ev.action, policy) {
        e.notes.push(note);
    }
    if e.outcome == Outcome::Allowed {
        return e;
    }
    let call = CallFacts {
        args: args.as_ref(),
        operator: &operator,
        verified,
    };
    add_fixes(&mut e, r, ctx, policy, &call);
    if let Some(a) = &asked {
        // The generic "approve ID" of the standing fix, with this row's id.
        for f in &mut e.fixes {
            if let Some(c) = &mut f.command {
                *c = c.replace("approve ID", &format!("approve {}", a.approval));
            }
        }
    }
    e
}

/// What an escalation row asked (its target, as the gateway writes it:
/// `approval:ID deadline:UNIX [elevation:A,B effect:CLASS ]ARGUMENTS`).
struct Asked<'a> {
    approval: &'a str,
    deadline: &'a str,
    /// (actions, effect class) when the session asked to be elevated.
    elevation: Option<(&'a str, &'a str)>,
}

impl Asked<'_> {
    fn note(&self) -> String {
        let what = match self.elevation {
            Some((actions, effect)) => {
                format!("to elevate the read-only session for `{actions}` (effect class {effect})")
            }
            None => "to approve the call".into(),
        };
        format!(
            "agentd asked a person {what}: approval {} (deadline {} UNIX time); the later rows with this call id say who answered and how the call ended",
            self.approval, self.deadline
        )
    }
}

/// Splits an escalation row's target into what was asked and the call's
/// arguments; any other target is all arguments.
fn escalation_of(target: &str) -> (Option<Asked<'_>>, &str) {
    let parsed = (|| {
        let rest = target.strip_prefix("approval:")?;
        let (approval, rest) = rest.split_once(' ')?;
        let rest = rest.strip_prefix("deadline:")?;
        let (deadline, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut elevation = None;
        if let Some(e) = rest.strip_prefix("elevation:") {
            let (actions, e) = e.split_once(' ')?;
            let e = e.strip_prefix("effect:")?;
            let (effect, r) = e.split_once(' ').unwrap_or((e, ""));
            elevation = Some((actions, effect));
            rest = r;
        }
        let asked = Asked {
            approval,
            deadline,
            elevation,
        };
        Some((asked, rest))
    })();
    match parsed {
        Some((asked, args)) => (Some(asked), args),
        None => (None, target),
    }
}

/// The action's effect class and where it comes from, when the policy is
/// known (docs/effects.md).
fn effect_note(action: &str, policy: Option<&PolicyFile>) -> Option<String> {
    let def = policy?.actions.get(action);
    let declared = def
        .and_then(|d| d.effect.as_deref())
        .and_then(crate::policy::effect::Effect::parse);
    let (class, source) =
        crate::policy::effect::classify(action, declared, def.is_some_and(|d| d.destructive));
    Some(format!("`{action}` is of effect class {class} ({source})"))
}

/// What the row's caller and arguments were, as [`tool_call`] read them.
struct CallFacts<'a> {
    args: Option<&'a Map<String, Value>>,
    operator: &'a str,
    verified: bool,
}

/// Why the call was decided as it was, in words, by its reason code.
fn why(r: &Record, ctx: &Context<'_>, who: &str, operator: &str) -> String {
    let ev = &r.event;
    let code = ev.reason_code.as_str();
    match code {
        rc::OK => format!(
            "`{}` for {who}: the message was verified, its session belongs to the same operator, a role of the operator lists the action and every argument met its rule{}",
            ev.action,
            roles_text(ctx)
        ),
        rc::UNKNOWN_ACTIVE_MESSAGE => "the call echoed an active-message id agentd never issued (or forgot at a restart past its lifetime): every call must carry the id of the operator message it acts on".into(),
        rc::ACTIVE_MESSAGE_EXPIRED => "the active message the call echoed had expired: a call may act on a message only within its lifetime".into(),
        rc::ACTIVE_MESSAGE_OTHER_AGENT => "the active message is held by another agent (the first to use it); one message's rights cannot move between agents".into(),
        rc::MESSAGE_OTHER_AUDIENCE => "the operator signed the message for another agent (v2 `for_agent`): no other agent may use it, whoever learns its id".into(),
        rc::OUTSIDE_MESSAGE_SCOPE => format!("`{}` with these arguments lies outside the scope {who} signed into the message (v2 `scope`): the role would allow the call, the message does not — this is what keeps an injected follow-up from borrowing the message", ev.action),
        rc::NO_ACTIVE_MESSAGE => "the runtime ran with no active message (AGENTD_ACTIVE_MESSAGE unset): a tool call that acts on no operator message has no rights".into(),
        rc::UNSIGNED_MESSAGE => format!("the message this call acts on carried no signature ({who}); such a message is delivered untrusted and none of its tool calls is allowed, whatever it asks"),
        rc::SIGNATURE_MISMATCH => format!("the message this call acts on had a signature that did not verify with the key of `{operator}`: delivered untrusted, no tool rights"),
        rc::UNKNOWN_OPERATOR => format!("the message this call acts on claimed operator `{operator}`, who is not enrolled: delivered untrusted, no tool rights"),
        rc::OPERATOR_REVOKED => format!("the message this call acts on came from `{operator}`, whose key is revoked: delivered untrusted, no tool rights"),
        rc::SESSION_OPERATOR_MISMATCH => format!("the session `{}` is bound to another operator than {who}", ev.session),
        rc::NO_POLICY => "no policy was loaded: everything is denied".into(),
        rc::UNKNOWN_TOOL => format!("the runtime's tool `{}` has no mapping to a policy action", ev.action),
        rc::SHELL_SYNTAX_NOT_ALLOWED => "the shell command does more than run one program (pipes, ;, &&, $(), redirections…): it cannot be decided as one program with its arguments".into(),
        rc::INVALID_TOOL_INPUT => "a field of the runtime's tool input has the wrong type or shape for its mapping".into(),
        rc::INVALID_ARGUMENT | rc::INVALID_PATH => format!("an argument of `{}` has the wrong type or is not a clean absolute path: the caller must send it well-formed", ev.action),
        rc::PATH_UNRESOLVABLE => "a path argument could not be resolved safely as the caller (dangling or magic symlink, or a directory the agent user cannot traverse)".into(),
        rc::RATE_LIMITED => format!("{who} exceeded the rate limit of the role that allows `{}`", ev.action),
        rc::USAGE_THRESHOLD => format!("{who} reached the usage threshold (max_uses per window_secs) of the role that allows `{}`; it is denied until the window slides", ev.action),
        rc::OPERATOR_SUSPENDED => format!("operator `{operator}` is suspended (kill switch): its messages and the calls on them are refused until resumed"),
        rc::AGENT_SUSPENDED => "the calling agent, or the agent holding the message, is suspended (kill switch): its calls are refused until resumed".into(),
        rc::ALL_SUSPENDED => "everything is suspended (kill switch): every message and call is refused until resumed".into(),
        rc::TOOL_USE_ID_REUSED => "the runtime's tool-call id was already decided for another action or other arguments".into(),
        rc::TOO_MANY_TOOL_CALLS => "agentd remembers too many runtime tool-call ids for this agent's active messages".into(),
        rc::AUDIT_UNAVAILABLE => "the audit log could not record the decision durably, so nothing was allowed".into(),
        rc::INTERNAL_ERROR | rc::STORE_ERROR => "the decision failed inside agentd and was denied (fail closed); the daemon's log says why".into(),
        rc::APPROVAL_REQUIRED => format!("`{}` for {who} passed every check, and the action needs a person's approval: the call waited (the rows with the same call id say who answered and how it ended)", ev.action),
        rc::APPROVAL_DENIED => format!("an approver denied `{}` for {who} (the approver's row under the same call id says who and why)", ev.action),
        rc::APPROVAL_TIMEOUT => format!("nobody approved `{}` for {who} before its deadline ([approvals] timeout_secs)", ev.action),
        rc::APPROVAL_EXPIRED => "agentd stopped while the call waited for approval; a waiting call is never resumed".into(),
        rc::APPROVAL_QUEUE_FULL => "too many calls already waited for approval ([approvals] max_pending)".into(),
        rc::APPROVAL_UNAVAILABLE => "the action needs approval and the daemon had no approval queue".into(),
        rc::ELEVATION_REQUIRED => format!("the session is read-only ([sessions] start, or the allowing role's session_start, = \"read_only\") and `{}` is not a read: the call waited for an approver to elevate the session for it (the rows with the same call id say who answered; an approval lets the action proceed in the session for [sessions] elevation_secs)", ev.action),
        rc::ADMIN_NOT_ELEVATABLE => format!("the session is read-only and `{}` is class admin (it changes who may do what): a read-only session never elevates an admin action, so nobody was asked", ev.action),
        rc::ANOMALY_ESCALATED => format!("the session's calls tripped the anomaly check ([anomaly]: too many denials or too many writes; its session_anomaly row has the figures), so `{}` for {who} needed a person's approval", ev.action),
        rc::ANOMALY_DENIED => "the session's calls tripped the anomaly check ([anomaly] then = \"deny\"; its session_anomaly row has the figures): its calls are denied until an administrator releases the session".into(),
        rc::PROTECTED_FILE => format!("`{}` for {who} would write a protected file (the policy's [protected] paths: identity files, start-up scripts); only a message whose operator holds an owner role and whose signed scope names the file, or an approval signed with an owner's key, lets a call write it", ev.action),
        rc::PROTECTED_FILE_NEEDS_OWNER => format!("`{}` for {who} was approved, but it writes a protected file and the approval was not signed with an owner's key (an admin's or a console click approves a call, never a protected write)", ev.action),
        _ => super::delegation::why(code, who)
            .unwrap_or_else(|| format!("`{}` for {who} was refused: {code}", ev.action)),
    }
}

/// What would let a refused call through (or why no policy line can).
fn add_fixes(
    e: &mut Explanation,
    r: &Record,
    ctx: &Context<'_>,
    policy: Option<&PolicyFile>,
    call: &CallFacts<'_>,
) {
    let ev = &r.event;
    let code = ev.reason_code.as_str();
    let (args, operator, verified) = (call.args, call.operator, call.verified);
    if let Some(fix) = standing_fix(r, operator).or_else(|| super::delegation::fix(code, operator))
    {
        e.fixes.push(fix);
        return;
    }
    match code {
        rc::UNKNOWN_TOOL => e.fixes.extend(tool_mapping_fix(r, args)),
        rc::USAGE_THRESHOLD => e.fixes.extend(usage_fix(ctx, policy, &ev.action)),
        rc::RATE_LIMITED => e.fixes.extend(rate_fix(ctx, policy, &ev.action)),
        _ => {
            if let Some(fix) = policy_fix(r, ctx, policy, args, operator, verified) {
                e.fixes.push(fix);
            } else if is_policy_code(code) && policy.is_none() {
                e.notes.push("the policy in force is not known here; pass --policy FILE or run with agentd up".into());
            }
        }
    }
}

/// The fix of a refusal that depends on no rule of the policy (the
/// message, the operator's enrolment, the session, a suspension, an
/// approval): always the same step, whatever the policy says.
fn standing_fix(r: &Record, operator: &str) -> Option<Fix> {
    let ev = &r.event;
    let code = ev.reason_code.as_str();
    Some(match code {
        rc::UNKNOWN_ACTIVE_MESSAGE
        | rc::ACTIVE_MESSAGE_EXPIRED
        | rc::ACTIVE_MESSAGE_OTHER_AGENT
        | rc::NO_ACTIVE_MESSAGE => Fix {
            summary: "no policy line can: have the operator send the request as a signed message and run the runtime with its id (the driver does both)".into(),
            toml: None,
            command: Some("agentctl send --operator ID --key-file KEY --session S --agent AGENT -- \"TEXT\"; agentctl agent serve AGENT -- RUNTIME…".into()),
            verified: false,
        },
        rc::MESSAGE_OTHER_AUDIENCE => Fix {
            summary: "no policy line can: the operator sends a message addressed to this agent".into(),
            toml: None,
            command: Some("agentctl send --operator ID --key-file KEY --session S --for-agent AGENT -- \"TEXT\"".into()),
            verified: false,
        },
        rc::OUTSIDE_MESSAGE_SCOPE => Fix {
            summary: format!("no policy line can: `{}` must be in the scope of the operator's message; if it was meant, the operator sends a new message whose scope names it", ev.action),
            toml: None,
            command: Some(format!("agentctl send --operator {} --key-file KEY --session S --scope '{}:ARG=PATTERN' -- \"TEXT\"", if operator.is_empty() { "ID" } else { operator }, ev.action)),
            verified: false,
        },
        rc::UNSIGNED_MESSAGE | rc::SIGNATURE_MISMATCH | rc::OPERATOR_REVOKED => Fix {
            summary: format!("no policy line can (untrusted messages never carry tool rights): `{operator}` must send the request signed with their current key"),
            toml: None,
            command: Some(format!("agentctl send --operator {} --key-file KEY --session S --agent AGENT -- \"TEXT\"", if operator.is_empty() { "ID" } else { operator })),
            verified: false,
        },
        rc::UNKNOWN_OPERATOR => Fix {
            summary: format!("enrol `{operator}` with a role (then they sign their messages with the key printed)"),
            toml: None,
            command: Some(format!("agentctl operator add {operator} --role ROLE")),
            verified: false,
        },
        rc::SESSION_OPERATOR_MISMATCH => Fix {
            summary: "no policy line can: use another session, or release this one's binding".into(),
            toml: None,
            command: Some(format!("agentctl session release {}", ev.session)),
            verified: false,
        },
        rc::PROTECTED_FILE | rc::PROTECTED_FILE_NEEDS_OWNER => Fix {
            summary: "no policy line should: an owner signs for the write — a signed message whose scope names the file, or, for an action with approval = \"required\", an approval signed with the owner's key".into(),
            toml: None,
            command: Some("agentctl approvals approve CALL_ID --operator OWNER --key-file OWNER.key".into()),
            verified: false,
        },
        rc::NO_POLICY => Fix {
            summary: "load a policy".into(),
            toml: None,
            command: Some("agentctl policy load POLICY.toml".into()),
            verified: false,
        },
        rc::OPERATOR_SUSPENDED | rc::AGENT_SUSPENDED | rc::ALL_SUSPENDED => Fix {
            summary: "no policy line can: an administrator lifts the suspension (see `agentctl suspend list`)".into(),
            toml: None,
            command: Some(match code {
                rc::OPERATOR_SUSPENDED => format!("agentctl resume operator {operator}"),
                rc::AGENT_SUSPENDED => "agentctl resume agent NAME".into(),
                _ => "agentctl resume all".into(),
            }),
            verified: false,
        },
        rc::APPROVAL_REQUIRED
        | rc::APPROVAL_DENIED
        | rc::APPROVAL_TIMEOUT
        | rc::APPROVAL_EXPIRED
        | rc::APPROVAL_QUEUE_FULL
        | rc::APPROVAL_UNAVAILABLE => Fix {
            summary: "no policy line is at fault: the policy asks a person; answer in time (or drop `approval = \"required\"` from the action)".into(),
            toml: None,
            command: Some("agentctl approvals list; agentctl approvals approve ID".into()),
            verified: false,
        },
        rc::ELEVATION_REQUIRED | rc::ANOMALY_ESCALATED => Fix {
            summary: "no policy line is at fault: the session's mode or its anomaly check asks a person; answer in time (approving an elevation lets the action proceed in the session for a while; approving a tripped session's call resets its counts)".into(),
            toml: None,
            command: Some("agentctl approvals list; agentctl approvals approve ID".into()),
            verified: false,
        },
        rc::ADMIN_NOT_ELEVATABLE => Fix {
            summary: format!("if `{}` does not change who may do what, say its class in the policy (the name's keywords classed it admin); admin actions need a session that starts full", ev.action),
            toml: Some(format!("[actions.{}]\neffect = \"mutating\"", toml_key(&ev.action))),
            command: None,
            verified: false,
        },
        rc::ANOMALY_DENIED => Fix {
            summary: "no policy line is at fault: an administrator looks at the session's calls, then releases it (its counts start afresh)".into(),
            toml: None,
            command: Some(format!("agentctl audit tail -n 50; agentctl session release {}", ev.session)),
            verified: false,
        },
        _ => return None,
    })
}

/// An action name as a TOML table key (quoted when it has a dot).
fn toml_key(action: &str) -> String {
    if action
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        action.to_owned()
    } else {
        format!("\"{action}\"")
    }
}

/// For a runtime tool with no mapping: the `[runtime.…tools.…]` table to
/// add, naming the tool input's fields as arguments.
fn tool_mapping_fix(r: &Record, args: Option<&Map<String, Value>>) -> Option<Fix> {
    let ev = &r.event;
    let (rt, tool) = ev.action.split_once(':')?;
    let mut snippet = format!(
        "[runtime.{}.tools.{}]\naction = \"ACTION\"\n",
        render::key(rt),
        render::key(tool)
    );
    if let Some(a) = &args {
        let pairs: Vec<String> = a
            .keys()
            .map(|k| format!("{} = {}", render::key(k), render::quote(k)))
            .collect();
        snippet.push_str(&format!("args = {{ {} }}\n", pairs.join(", ")));
    }
    Some(Fix {
        summary: format!("map `{tool}` to a policy action (ACTION must be defined in [actions] and allowed to the role; args name the tool input fields)"),
        toml: Some(snippet),
        command: None,
        verified: false,
    })
}

/// Raising the usage threshold of the operator's role that limits `action`.
fn usage_fix(ctx: &Context<'_>, policy: Option<&PolicyFile>, action: &str) -> Option<Fix> {
    if let (Some(p), Some(roles)) = (policy, ctx.operator_roles) {
        if let Some((name, limit)) = roles.iter().find_map(|n| {
            p.roles
                .get(n)
                .and_then(|r| r.limits.get(action))
                .map(|l| (n, *l))
        }) {
            return Some(Fix {
                summary: format!(
                    "raise role `{name}`'s threshold for `{}` (now {} per {} s)",
                    action, limit.max_uses, limit.window_secs
                ),
                toml: Some(format!(
                    "[roles.{}.limits.{}]\nmax_uses = {}\nwindow_secs = {}\n",
                    render::key(name),
                    render::key(action),
                    limit.max_uses.saturating_mul(2),
                    limit.window_secs
                )),
                command: None,
                verified: false,
            });
        }
    }
    None
}

/// Raising the rate of the operator's role that allows `action`.
fn rate_fix(ctx: &Context<'_>, policy: Option<&PolicyFile>, action: &str) -> Option<Fix> {
    if let (Some(p), Some(roles)) = (policy, ctx.operator_roles) {
        if let Some((name, role)) = roles.iter().find_map(|n| {
            p.roles
                .get(n)
                .filter(|r| r.allow.contains_key(action))
                .map(|r| (n, r))
        }) {
            return Some(Fix {
                summary: format!(
                    "raise role `{name}`'s rate (now {} a minute)",
                    role.rate_per_minute
                ),
                toml: Some(format!(
                    "[roles.{}]\nrate_per_minute = {}\n",
                    render::key(name),
                    role.rate_per_minute.saturating_mul(2).max(1)
                )),
                command: None,
                verified: false,
            });
        }
    }
    None
}

fn roles_text(ctx: &Context<'_>) -> String {
    match ctx.operator_roles {
        Some(r) if !r.is_empty() => format!(" (roles: {})", r.join(", ")),
        _ => String::new(),
    }
}

fn is_policy_code(code: &str) -> bool {
    matches!(
        code,
        rc::UNKNOWN_ACTION
            | rc::ROLE_NOT_IN_ALLOWLIST
            | rc::UNKNOWN_ARGUMENT
            | rc::MISSING_ARGUMENT
            | rc::DESTRUCTIVE_OP_OWNER_ONLY
            | rc::PATH_OUTSIDE_SCOPE
            | rc::COMMAND_NOT_ALLOWED
            | rc::RECIPIENT_NOT_ALLOWED
            | rc::DOMAIN_NOT_ALLOWED
            | rc::VALUE_NOT_ALLOWED
            | rc::VALUE_OUT_OF_RANGE
            | rc::SIZE_LIMIT_EXCEEDED
    )
}

/// A part of the policy a patch touched (rendered in this order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Touched {
    Action(String),
    Role(String),
    Allow(String, String),
}

/// Patches a copy of the policy until it allows the call; the changed
/// tables are the proposal.
fn policy_fix(
    r: &Record,
    ctx: &Context<'_>,
    policy: Option<&PolicyFile>,
    args: Option<&Map<String, Value>>,
    operator: &str,
    verified: bool,
) -> Option<Fix> {
    let code = r.event.reason_code.as_str();
    if !is_policy_code(code) || !verified {
        return None;
    }
    let policy = policy?;
    let args = args?;
    let action = r.event.action.as_str();
    let roles: Vec<String> = ctx.operator_roles?.to_vec();
    let role = role_to_change(policy, &roles, action)?;
    let mut p = policy.clone();
    let call = Refused {
        operator,
        roles: &roles,
        role: &role,
        action,
        args,
    };
    let Patched {
        touched,
        allowed,
        last,
    } = patch_until_allowed(&mut p, &call);
    if touched.is_empty() {
        return Some(Fix {
            summary: format!("no rule change found for this refusal ({last})"),
            toml: None,
            command: None,
            verified: false,
        });
    }
    let snippet = changed_tables(&p, &touched);
    let what: Vec<&str> = touched
        .iter()
        .map(|t| match t {
            Touched::Action(_) => "define the action",
            Touched::Role(_) => "let the role make destructive calls",
            Touched::Allow(..) => "change the role's allow-list entry",
        })
        .collect();
    Some(Fix {
        summary: format!(
            "in the policy, {} (replace the table of that name){}",
            what.join(", then "),
            if allowed {
                String::new()
            } else {
                format!("; still refused after that: {last}")
            }
        ),
        toml: Some(snippet),
        command: Some(
            "agentctl policy validate POLICY.toml && agentctl policy load POLICY.toml".into(),
        ),
        verified: allowed,
    })
}

/// The role to change: the first of the operator's roles that lists the
/// action (its rule is what refused), else the first the policy defines.
fn role_to_change(policy: &PolicyFile, roles: &[String], action: &str) -> Option<String> {
    roles
        .iter()
        .find(|n| {
            policy
                .roles
                .get(*n)
                .is_some_and(|ro| ro.allow.contains_key(action))
        })
        .or_else(|| roles.iter().find(|n| policy.roles.contains_key(*n)))
        .cloned()
}

/// The refused call, as the patch loop re-decides it.
struct Refused<'a> {
    operator: &'a str,
    roles: &'a [String],
    /// The operator's role the patches change.
    role: &'a str,
    action: &'a str,
    args: &'a Map<String, Value>,
}

/// What patching the policy came to.
struct Patched {
    /// The tables changed.
    touched: BTreeSet<Touched>,
    /// Whether the patched policy allows the call.
    allowed: bool,
    /// The last refusal, as `reason: detail`.
    last: String,
}

/// Re-decides the call against `p`, patching it for each refusal, until it
/// is allowed, a refusal has no patch, or 12 rounds (a bound, so patches
/// that do not take cannot loop).
fn patch_until_allowed(p: &mut PolicyFile, call: &Refused<'_>) -> Patched {
    let mut out = Patched {
        touched: BTreeSet::new(),
        allowed: false,
        last: String::new(),
    };
    for _ in 0..12 {
        let Ok(text) = toml::to_string(&*p) else {
            break;
        };
        let Ok(compiled) = compile(&text, "explain") else {
            break;
        };
        match compiled.evaluate(call.operator, call.roles, call.action, call.args) {
            Ok(_) => {
                out.allowed = true;
                break;
            }
            Err(d) => {
                out.last = format!("{}: {}", d.reason, d.detail);
                if !patch(
                    p,
                    call.role,
                    call.action,
                    call.args,
                    d.reason,
                    &d.detail,
                    &mut out.touched,
                ) {
                    break;
                }
            }
        }
    }
    out
}

/// The TOML of the tables the patches changed, as they read in `p`.
fn changed_tables(p: &PolicyFile, touched: &BTreeSet<Touched>) -> String {
    let mut snippet = String::new();
    for t in touched {
        if !snippet.is_empty() {
            snippet.push('\n');
        }
        match t {
            Touched::Action(a) => {
                snippet.push_str(&format!(
                    "[actions.{}]\ndescription = \"…\"\n# add grant = {{ exec/read/write/connect, ttl_secs, uses }} if the tool needs the kernel to let it act\n",
                    render::key(a)
                ));
            }
            Touched::Role(ro) => {
                snippet.push_str(&format!(
                    "[roles.{}]\ndestructive = true   # every operator with this role may now make destructive calls\n",
                    render::key(ro)
                ));
            }
            Touched::Allow(ro, a) => {
                let rules = p
                    .roles
                    .get(ro)
                    .and_then(|x| x.allow.get(a))
                    .cloned()
                    .unwrap_or_default();
                snippet.push_str(&render::allow_table(ro, a, &rules));
            }
        }
    }
    snippet
}

/// The first backticked name in a denial detail (`argument `path`: …`).
fn arg_named(detail: &str) -> Option<&str> {
    let rest = detail.split_once('`')?.1;
    Some(rest.split_once('`')?.0)
}

/// Applies one patch for one denial; false when none applies.
fn patch(
    p: &mut PolicyFile,
    role: &str,
    action: &str,
    args: &Map<String, Value>,
    code: &str,
    detail: &str,
    touched: &mut BTreeSet<Touched>,
) -> bool {
    if code == rc::UNKNOWN_ACTION {
        p.actions.insert(
            action.to_owned(),
            ActionDef {
                description: "added by agentctl explain".into(),
                ..Default::default()
            },
        );
        touched.insert(Touched::Action(action.to_owned()));
        return true;
    }
    if code == rc::DESTRUCTIVE_OP_OWNER_ONLY {
        let Some(ro) = p.roles.get_mut(role) else {
            return false;
        };
        if ro.destructive == Some(true) {
            return false;
        }
        ro.destructive = Some(true);
        touched.insert(Touched::Role(role.to_owned()));
        return true;
    }
    let Some(ro) = p.roles.get_mut(role) else {
        return false;
    };
    if code == rc::ROLE_NOT_IN_ALLOWLIST {
        if ro.allow.contains_key(action) {
            return false;
        }
        let rules: BTreeMap<String, ArgRule> =
            args.iter().map(|(n, v)| (n.clone(), infer(n, v))).collect();
        ro.allow.insert(action.to_owned(), rules);
        touched.insert(Touched::Allow(role.to_owned(), action.to_owned()));
        return true;
    }
    let Some(rules) = ro.allow.get_mut(action) else {
        return false;
    };
    let Some(name) = arg_named(detail) else {
        return false;
    };
    let value = args.get(name);
    let changed = match code {
        rc::UNKNOWN_ARGUMENT => match value {
            Some(v) if !rules.contains_key(name) => {
                rules.insert(name.to_owned(), infer(name, v));
                true
            }
            _ => false,
        },
        rc::MISSING_ARGUMENT => match rules.get_mut(name) {
            Some(rule) if !rule.optional => {
                rule.optional = true;
                true
            }
            _ => false,
        },
        _ => match (rules.get_mut(name), value) {
            (Some(rule), Some(v)) => widen(rule, code, v),
            _ => false,
        },
    };
    if changed {
        touched.insert(Touched::Allow(role.to_owned(), action.to_owned()));
    }
    changed
}

fn push_new(list: &mut Option<Vec<String>>, item: String) -> bool {
    let l = list.get_or_insert_with(Vec::new);
    if l.contains(&item) {
        return false;
    }
    l.push(item);
    true
}

/// The directory to scope a path to: its parent, unless that is `/`.
fn scope_for(p: &str) -> Option<String> {
    let n = path::normalize(p).ok()?;
    match n.rsplit_once('/') {
        Some(("", _)) | None => Some(n),
        Some((parent, _)) => Some(parent.to_owned()),
    }
}

fn words(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

fn program_path(argv0: &str) -> String {
    if argv0.starts_with('/') {
        path::normalize(argv0).unwrap_or_else(|_| argv0.to_owned())
    } else {
        // The policy names programs by absolute path; `command -v NAME` says which.
        format!("/usr/bin/{argv0}")
    }
}

fn domain_of(addr: &str) -> Option<String> {
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
}

/// Widens one rule so that `v` passes the check named by `code`.
fn widen(rule: &mut ArgRule, code: &str, v: &Value) -> bool {
    match code {
        rc::PATH_OUTSIDE_SCOPE => widen_scopes(rule, v),
        rc::COMMAND_NOT_ALLOWED => match words(v).first() {
            Some(a0) => push_new(&mut rule.programs, program_path(a0)),
            None => false,
        },
        rc::RECIPIENT_NOT_ALLOWED => {
            let mut changed = false;
            for a in words(v) {
                if let Some(d) = domain_of(&a) {
                    changed |= push_new(&mut rule.domains, d);
                }
            }
            changed
        }
        rc::DOMAIN_NOT_ALLOWED => match v.as_str() {
            Some(h) => push_new(
                &mut rule.domains,
                h.trim_end_matches('.').to_ascii_lowercase(),
            ),
            None => false,
        },
        rc::VALUE_NOT_ALLOWED => match v.as_str() {
            Some(s) => push_new(&mut rule.values, s.to_owned()),
            None => false,
        },
        rc::VALUE_OUT_OF_RANGE => match v.as_i64() {
            Some(i) => widen_range(rule, i),
            None => false,
        },
        rc::SIZE_LIMIT_EXCEEDED => widen_size(rule, v),
        _ => false,
    }
}

/// Adds a scope for each path of the argument (a command's absolute
/// words) that no scope of the rule covers yet.
fn widen_scopes(rule: &mut ArgRule, v: &Value) -> bool {
    let candidates: Vec<String> = match rule.kind {
        ArgKind::Path => v.as_str().into_iter().map(str::to_owned).collect(),
        ArgKind::Command => words(v)
            .into_iter()
            .skip(1)
            .filter(|w| w.starts_with('/'))
            .collect(),
        _ => vec![],
    };
    let mut changed = false;
    for c in candidates {
        let inside = rule.scopes.as_ref().is_some_and(|s| {
            path::normalize(&c).is_ok_and(|n| s.iter().any(|sc| path::within(&n, sc)))
        });
        if !inside {
            if let Some(s) = scope_for(&c) {
                changed |= push_new(&mut rule.scopes, s);
            }
        }
    }
    changed
}

/// Moves a bound the rule sets (min, max) out to take in `i`.
fn widen_range(rule: &mut ArgRule, i: i64) -> bool {
    let mut changed = false;
    if rule.min.is_some_and(|m| i < m) {
        rule.min = Some(i);
        changed = true;
    }
    if rule.max.is_some_and(|m| i > m) {
        rule.max = Some(i);
        changed = true;
    }
    changed
}

/// Raises the rule's size limits (bytes, items) to the argument's size.
fn widen_size(rule: &mut ArgRule, v: &Value) -> bool {
    let bytes = match v {
        Value::String(s) => s.len(),
        other => other.to_string().len(),
    };
    let items = match v {
        Value::Array(a) => a.len(),
        Value::String(s) if rule.kind == ArgKind::Command => s.split_ascii_whitespace().count(),
        _ => 1,
    };
    let mut changed = false;
    if rule.max_bytes.is_some_and(|m| bytes > m) {
        rule.max_bytes = Some(bytes);
        changed = true;
    }
    if rule.max_items.is_some_and(|m| items > m) {
        rule.max_items = Some(items);
        changed = true;
    }
    changed
}

/// A rule that accepts exactly this kind of value, as narrow as is useful.
fn infer(name: &str, v: &Value) -> ArgRule {
    let commandish = ["command", "cmd", "argv", "program"]
        .iter()
        .any(|k| name.contains(k));
    match v {
        Value::String(_) | Value::Array(_) if commandish && !words(v).is_empty() => {
            let w = words(v);
            let mut r = ArgRule::of(ArgKind::Command);
            r.programs = Some(vec![program_path(&w[0])]);
            let scopes: BTreeSet<String> = w[1..]
                .iter()
                .filter(|a| a.starts_with('/'))
                .filter_map(|a| scope_for(a))
                .collect();
            if !scopes.is_empty() {
                r.scopes = Some(scopes.into_iter().collect());
            }
            r.max_items = Some(w.len().max(8));
            r
        }
        Value::String(s) if s.starts_with('/') && path::normalize(s).is_ok() => {
            let mut r = ArgRule::of(ArgKind::Path);
            r.scopes = scope_for(s).map(|x| vec![x]);
            r
        }
        Value::String(s) if !s.contains(char::is_whitespace) && domain_of(s).is_some() => {
            let mut r = ArgRule::of(ArgKind::Recipients);
            r.domains = domain_of(s).map(|d| vec![d]);
            r.max_items = Some(1);
            r
        }
        Value::Array(a)
            if !a.is_empty()
                && a.iter()
                    .all(|x| x.as_str().is_some_and(|s| s.contains('@'))) =>
        {
            let mut r = ArgRule::of(ArgKind::Recipients);
            let d: BTreeSet<String> = a
                .iter()
                .filter_map(|x| x.as_str().and_then(domain_of))
                .collect();
            r.domains = Some(d.into_iter().collect());
            r.max_items = Some(a.len());
            r
        }
        Value::String(s) if s.len() <= 64 && crate::policy::compile::is_identifier_value(s) => {
            let mut r = ArgRule::of(ArgKind::String);
            r.values = Some(vec![s.clone()]);
            r
        }
        Value::String(s) => {
            let mut r = ArgRule::of(ArgKind::Text);
            r.max_bytes = Some(s.len().max(256).next_power_of_two());
            r
        }
        Value::Number(n) if n.as_i64().is_some() => {
            let i = n.as_i64().unwrap_or(0);
            let mut r = ArgRule::of(ArgKind::Integer);
            r.min = Some(i.min(0));
            r.max = Some(i.max(0));
            r
        }
        other => {
            let mut r = ArgRule::of(ArgKind::Json);
            r.max_bytes = Some(other.to_string().len().max(256).next_power_of_two());
            r
        }
    }
}

/// Explains a message row (ingest).
pub fn message(r: &Record) -> Explanation {
    let ev = &r.event;
    let (operator, _) = operator_of(r);
    let code = ev.reason_code.as_str();
    let why = match code {
        rc::OK => format!("the message from `{operator}` was verified (signature, time window, fresh nonce, session binding) and got active-message id {}", ev.active_message_id),
        rc::UNSIGNED_MESSAGE => "the message carried no signature; the policy's [messages] unsigned rule decided whether it was refused or delivered untrusted (no tool rights either way)".into(),
        rc::SIGNATURE_MISMATCH => format!("the signature did not verify with `{operator}`'s key (wrong key, edited text, or a rotated key)"),
        rc::UNKNOWN_OPERATOR => format!("`{operator}` is not enrolled"),
        rc::OPERATOR_REVOKED => format!("`{operator}`'s key is revoked"),
        rc::STALE_TIMESTAMP | rc::FUTURE_TIMESTAMP => "the message's timestamp was outside the accepted window (check the sender's clock)".into(),
        rc::REPLAYED_NONCE => "the nonce was already used: this is a replay of an earlier message (in fleet mode, possibly one accepted on another host)".into(),
        rc::FLEET_UNAVAILABLE => "fleet mode: PostgreSQL could not be reached for the fleet-wide replay check for longer than [fleet] lease_secs, so new messages are refused; calls on messages already accepted still work".into(),
        rc::POLICY_MANAGED_CENTRALLY => "fleet mode: the policy in force is the fleet's central one, so a local policy load was refused (change it with agentctl fleet policy push)".into(),
        rc::SESSION_OPERATOR_MISMATCH => format!("session `{}` is bound to another operator", ev.session),
        rc::RATE_LIMITED => "too many unverified messages from this sender or claimed operator".into(),
        rc::OPERATOR_SUSPENDED | rc::AGENT_SUSPENDED | rc::ALL_SUSPENDED => "the message was in the scope of a suspension (kill switch): refused before verification, nothing of it stored".into(),
        rc::MESSAGE_WRONG_HOST => "the operator signed the message for another host (v2 `for_host` differs from this daemon's gateway.host_id): it cannot be replayed here".into(),
        rc::MESSAGE_OTHER_AUDIENCE => "the operator signed the message for another agent (v2 `for_agent`) than the inbox it was posted to".into(),
        rc::MESSAGE_VERSION_REFUSED => "the message was a v1 message and the policy accepts only v2 ([messages] v1 = \"refuse\"): v2 names its agent, host and scope".into(),
        rc::INVALID_SCOPE => "the message's v2 scope was malformed or too large (entries, names, a `*` before a pattern's end, lengths); nothing of it stored".into(),
        _ => super::delegation::why(code, &format!("`{operator}`"))
            .unwrap_or_else(|| format!("message refused: {code}")),
    };
    let mut e = Explanation::new(r, "gateway: message ingest", why);
    if ev.decision == "deny" {
        let fix = match code {
            rc::UNKNOWN_OPERATOR => Some((
                format!("enrol `{operator}`"),
                format!("agentctl operator add {operator} --role ROLE"),
            )),
            rc::SESSION_OPERATOR_MISMATCH => Some((
                "release the session's binding, or use another session".to_owned(),
                format!("agentctl session release {}", ev.session),
            )),
            rc::UNSIGNED_MESSAGE
            | rc::SIGNATURE_MISMATCH
            | rc::OPERATOR_REVOKED
            | rc::STALE_TIMESTAMP
            | rc::FUTURE_TIMESTAMP
            | rc::REPLAYED_NONCE => Some((
                "no policy line can: send a fresh message signed with the operator's current key"
                    .to_owned(),
                "agentctl send --operator ID --key-file KEY --session S -- \"TEXT\"".to_owned(),
            )),
            rc::MESSAGE_WRONG_HOST | rc::MESSAGE_OTHER_AUDIENCE | rc::MESSAGE_VERSION_REFUSED => Some((
                "no policy line should: the operator signs a v2 message for this host and agent".to_owned(),
                "agentctl send --operator ID --key-file KEY --session S --for-host HOST --for-agent AGENT -- \"TEXT\"".to_owned(),
            )),
            rc::INVALID_SCOPE => Some((
                "send the scope well-formed: ACTION or ACTION:ARG=PATTERN, a `*` only at a pattern's end (docs/protocol.md §1.5)".to_owned(),
                "agentctl send --operator ID --key-file KEY --session S --scope 'ACTION:ARG=PATTERN' -- \"TEXT\"".to_owned(),
            )),
            rc::FLEET_UNAVAILABLE => Some((
                "bring PostgreSQL back (agentd reconnects by itself), then send the message again"
                    .to_owned(),
                "journalctl -u agentd | grep fleet".to_owned(),
            )),
            _ => super::delegation::fix(code, &operator)
                .and_then(|f| f.command.map(|c| (f.summary, c))),
        };
        if let Some((summary, command)) = fix {
            e.fixes.push(Fix {
                summary,
                toml: None,
                command: Some(command),
                verified: false,
            });
        }
    }
    e
}

/// Explains a `delegation_issue` or `delegation_revoke` row.
pub fn delegation_row(r: &Record) -> Explanation {
    let ev = &r.event;
    let code = ev.reason_code.as_str();
    let (by, _) = operator_of(r);
    let why = if code == rc::OK {
        format!(
            "`{by}` {}: {}",
            if ev.action == "delegation_issue" {
                "issued a delegation token"
            } else {
                "revoked a delegation token (and every token below it)"
            },
            ev.target
        )
    } else {
        super::delegation::why(code, &format!("`{by}`"))
            .unwrap_or_else(|| format!("`{}` by `{by}` was refused: {code}", ev.action))
    };
    let mut e = Explanation::new(r, "gateway: delegation", why);
    if code != rc::OK {
        e.fixes.extend(super::delegation::fix(code, &by));
    }
    e
}
