//! Kernel rows: an exec, open, connect or path change of an agent's
//! process, decided by a tool call's grant or by the agent's baseline.
use super::render;
use super::{Context, Explanation, Fix, Outcome};
use crate::audit::kernel_row::{access_summary, connect_entry, origin, KernelOrigin};
use crate::audit::{AuditEvent, Record};
use crate::policy::schema::PolicyFile;
use crate::protocol::reason as rc;

/// What the profile list and entry of a kernel row would be.
pub fn profile_entry(
    action: &str,
    target: &str,
    access: Option<&str>,
) -> Option<(&'static str, String)> {
    match action {
        "exec" | "exec_verify" => Some(("exec", target.to_owned())),
        "file_open" => Some((
            if access == Some("write") {
                "write"
            } else {
                "read"
            },
            target.to_owned(),
        )),
        "connect" | "sendmsg" => connect_entry(target).map(|c| ("connect", c)),
        a if a.starts_with("path_") => Some(("write", target.to_owned())),
        _ => None,
    }
}

fn verb(action: &str, access: Option<&str>) -> String {
    match action {
        "exec" => "ran the program".into(),
        "exec_verify" => "executed (verified at sched_process_exec)".into(),
        "file_open" => match access {
            Some(a) => format!("opened for {a}"),
            None => "opened".into(),
        },
        "connect" => "connected to".into(),
        "sendmsg" => "sent a datagram to".into(),
        a => format!("did `{a}` on"),
    }
}

/// Explains a kernel row.
pub fn explain(r: &Record, ctx: &Context<'_>, policy: Option<&PolicyFile>) -> Explanation {
    let ev = &r.event;
    let o = origin(ev);
    let code = ev.reason_code.as_str();
    let call = if ev.call_id.is_empty() {
        None
    } else {
        Some(ev.call_id.as_str())
    };
    let check = match call {
        Some(c) => format!("kernel ({}): the grant of tool call {c}", ev.action),
        None => format!(
            "kernel ({}): the agent's pending grants and its baseline",
            ev.action
        ),
    };
    let why = match access_summary(&ev.target).filter(|_| code == rc::ACCESS_SUMMARY) {
        Some(counted) => summary_why(ev, &o, call, counted),
        None => why(code, &did(ev, &o), call, ctx),
    };
    let mut e = Explanation::new(r, check, why);
    if e.outcome == Outcome::Allowed || e.outcome == Outcome::Info {
        return e;
    }
    let call_action = ctx
        .call_row
        .filter(|c| c.event.call_id == ev.call_id)
        .map(|c| c.event.action.clone());
    if call.is_some() && call_action.is_none() {
        e.notes.push(format!(
            "the gateway row of call {} was not found; the action it was allowed as is unknown",
            ev.call_id
        ));
    }
    match code {
        "no_grant" => {
            add_baseline_fix(&mut e, ev, &o, ctx);
            if let Some(p) = policy {
                add_per_call_fix(&mut e, ev, &o, p);
            }
        }
        "path_outside_scope" | "grant_expired" | "grant_used_up" => {
            if let (Some(a), Some(p)) = (call_action.as_deref(), policy) {
                add_grant_template_fix(&mut e, ev, &o, a, p);
            }
        }
        rc::PROTECTED_FILE => e.fixes.push(Fix {
            summary: "no profile or grant template should: the agent's owner signs for the write — a signed message whose scope names the file, or an owner-signed approval of the call (`agentctl approvals approve ID --operator OWNER --key-file K`)".into(),
            toml: None,
            command: None,
            verified: false,
        }),
        "exec_args_unverifiable" => e.fixes.push(Fix {
            summary: "grant the program the script runs (or a native binary) rather than the script, keep the named arguments under 256 bytes, or drop `args` from the action's grant template".into(),
            toml: None,
            command: None,
            verified: false,
        }),
        _ => {}
    }
    e
}

/// Who did what to which target, the subject of every sentence of `why`.
fn did(ev: &AuditEvent, o: &KernelOrigin) -> String {
    let pid = o
        .pid
        .map(|p| format!("process {p}"))
        .unwrap_or_else(|| "a process".into());
    format!(
        "{pid} of agent `{}` {} `{}`",
        o.agent,
        verb(&ev.action, o.access.as_deref()),
        ev.target
    )
}

/// An `access_summary` row in words: how many accesses of which object the
/// kernel counted under the call's grant, and when.
fn summary_why(
    ev: &AuditEvent,
    o: &KernelOrigin,
    call: Option<&str>,
    (object, count, first_ns, last_ns): (&str, u64, u64, u64),
) -> String {
    let at = |ns: u64| crate::audit::timefmt::format_micros((ns / 1_000) as i64);
    let first_pid = o
        .pid
        .map(|p| format!(", the first by process {p}"))
        .unwrap_or_default();
    format!(
        "agent `{}` {} `{object}` {count} time(s) under the grant of tool call {} (allowed), from {} to {}{first_pid}. The kernel counted these accesses instead of auditing each one: the first has its own `grant_matched` row, this row is the running total (the grant's last such row is its complete count); denials are always audited one by one",
        o.agent,
        verb(&ev.action, o.access.as_deref()),
        call.unwrap_or("?"),
        at(first_ns),
        at(last_ns),
    )
}

/// The reason code in words.
fn why(code: &str, did: &str, call: Option<&str>, ctx: &Context<'_>) -> String {
    match code {
        "baseline" => format!("{did}: allowed by the agent's baseline (what its profiles let the runtime do to live)"),
        "grant_matched" => format!("{did}: allowed by the grant of tool call {}", call.unwrap_or("?")),
        "no_grant" => format!(
            "{did}: no approved tool call's grant (pending or bound) covers it, and the agent's baseline{} does not either",
            ctx.agent_profiles.map(|p| format!(" (profiles: {})", p.join(", "))).unwrap_or_default()
        ),
        "path_outside_scope" => format!("{did}: the process acts for tool call {}, whose grant does not cover this path", call.unwrap_or("?")),
        "grant_expired" => format!("{did}: the grant of tool call {} had expired (its ttl_secs passed)", call.unwrap_or("?")),
        "grant_used_up" => format!("{did}: the grant of tool call {} was used up (its `uses`)", call.unwrap_or("?")),
        rc::GRANT_SPENT => format!("the grant of tool call {} was dropped before its ttl_secs: every one of its `uses` was spent and no process that claimed it still ran, so it could grant nothing more (an attempt under it from now on is refused `no_grant`)", call.unwrap_or("?")),
        rc::USE_TICKETS_FULL => format!("{did}: refused because agentd's kernel map of spent uses (USE_TICKETS) was full, so this use could not be counted — not because the grant of tool call {} was used up; fail closed. Too many use-counted grants are live at once: agentd's log says so too", call.unwrap_or("?")),
        "claim_not_requester_tree" => format!("{did}: a pending grant covers it, but only the process tree that asked for the call may claim it, and this process is not in it (a sibling left from an earlier tool, an MCP server, a background job)"),
        "exec_target_mismatch" => format!("{did}: the file executed is not the one approved (its device and inode changed since the decision: replaced or swapped)"),
        "exec_args_unverifiable" => format!("{did}: the grant names exact arguments, which the kernel could not check for this exec (a script run through its interpreter, or arguments over 256 bytes, on the lsm backend)"),
        "exec_args_mismatch" => format!("{did}: the grant of tool call {} names exact arguments, and this exec carried others", call.unwrap_or("?")),
        "enforcer_tamper" => format!("{did}: an attempt on agentd itself (ptrace, bpf, signals, its files) — never allowed"),
        rc::SIGNAL_OUTSIDE_AGENT => format!("{did}: a signal or pidfd aimed outside the agent — never allowed"),
        rc::SOCKET_FAMILY_REFUSED => format!("{did}: a socket family agents may not open (raw, packet, ICMP, vsock…) — never allowed"),
        rc::SECCOMP_LISTENER_REFUSED | rc::TTY_INJECTION_REFUSED | rc::PROCESS_ACCESS_REFUSED | "magic_link_refused" => format!("{did}: a bypass technique refused outright ({code}) — never allowed"),
        "enforcer_error" => format!("{did}: agentd failed to decide and denied (fail closed); its log says why"),
        rc::PROTECTED_FILE => format!("{did}: the file is protected (the policy's [protected] paths); no baseline or write scope covers a write to it — only a tool call whose grant names it as a protected write (given by an owner's signed scope or an owner-signed approval)"),
        _ => format!("{did}: {code}"),
    }
}

/// For an operation no grant covered: the agent's baseline could allow it,
/// in a profile of its own (when the row maps to a profile entry).
fn add_baseline_fix(e: &mut Explanation, ev: &AuditEvent, o: &KernelOrigin, ctx: &Context<'_>) {
    if let Some((list, entry)) = profile_entry(&ev.action, &ev.target, o.access.as_deref()) {
        let name = format!("{}-extra", o.agent);
        let mut profiles: Vec<String> = ctx.agent_profiles.map(|p| p.to_vec()).unwrap_or_default();
        if profiles.is_empty() {
            profiles.push("generic".into());
        }
        if !profiles.contains(&name) {
            profiles.push(name.clone());
        }
        let flags: String = profiles.iter().map(|p| format!(" --profile {p}")).collect();
        e.fixes.push(Fix {
            summary: format!(
                "if the runtime needs this to live (not a tool acting for an operator): add it to the agent's baseline with a profile of its own in the policy{}",
                if list == "write" { " (never a write scope over start-up scripts or protected files)" } else { "" }
            ),
            toml: Some(render::profile(&name, &[(list, vec![entry])])),
            command: Some(format!(
                "agentctl policy load POLICY.toml && agentctl agent add {} --replace{flags} …(its other settings)",
                o.agent
            )),
            verified: false,
        });
        e.notes.push(format!(
            "`agentctl agent learn {}` proposes the whole profile from an audit-only run",
            o.agent
        ));
    }
}

/// For an operation no grant covered: the policy's actions whose grant
/// template takes the target from a call argument could ask for it.
fn add_per_call_fix(e: &mut Explanation, ev: &AuditEvent, o: &KernelOrigin, p: &PolicyFile) {
    let field = match ev.action.as_str() {
        "exec" | "exec_verify" => Some("exec"),
        "file_open" => Some(if o.access.as_deref() == Some("write") {
            "write"
        } else {
            "read"
        }),
        "connect" | "sendmsg" => Some("connect"),
        _ => None,
    };
    let per_call: Vec<String> = p
        .actions
        .iter()
        .filter(|(_, a)| {
            a.grant.as_ref().is_some_and(|g| {
                let l = match field {
                    Some("exec") => &g.exec,
                    Some("write") => &g.write,
                    Some("read") => &g.read,
                    Some(_) => &g.connect,
                    None => return false,
                };
                l.iter().any(|x| x.contains("{arg."))
            })
        })
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    if !per_call.is_empty() {
        e.fixes.push(Fix {
            summary: format!(
                "if it is a tool acting for an operator: have the runtime ask for it as a call to {} (the argument rules of the operator's role must allow `{}`); the kernel then lets exactly that call's process do it",
                per_call.join(" or "),
                ev.target
            ),
            toml: None,
            command: None,
            verified: false,
        });
    }
}

/// For a grant that did not stretch far enough (scope, life, uses): the
/// action's grant template changed to cover this operation.
fn add_grant_template_fix(
    e: &mut Explanation,
    ev: &AuditEvent,
    o: &KernelOrigin,
    a: &str,
    p: &PolicyFile,
) {
    let code = ev.reason_code.as_str();
    let Some(mut g) = p.actions.get(a).and_then(|x| x.grant.clone()) else {
        return;
    };
    let summary = match code {
        "path_outside_scope" => {
            let write = o.access.as_deref() == Some("write");
            match ev.action.as_str() {
                "file_open" if !write => g.read.push(ev.target.clone()),
                "connect" | "sendmsg" => g
                    .connect
                    .push(connect_entry(&ev.target).unwrap_or_else(|| ev.target.clone())),
                "exec" | "exec_verify" => g.exec.push(ev.target.clone()),
                _ => g.write.push(ev.target.clone()),
            }
            format!("widen action `{a}`'s grant template (every call of `{a}` gets it)")
        }
        "grant_expired" => {
            g.ttl_secs = g.ttl_secs.saturating_mul(2).max(1);
            format!("give action `{a}`'s grant a longer life")
        }
        _ => {
            if g.uses == 0 {
                return;
            }
            g.uses += 1;
            format!("let one call of `{a}` be used once more (processes bound and claims alike)")
        }
    };
    e.fixes.push(Fix {
        summary,
        toml: Some(format!(
            "[actions.{}]\ngrant = {}\n",
            render::key(a),
            render::grant(&g)
        )),
        command: Some(
            "agentctl policy validate POLICY.toml && agentctl policy load POLICY.toml".into(),
        ),
        verified: false,
    });
}
