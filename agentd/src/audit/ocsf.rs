//! Audit records as OCSF 1.8 events, for SIEMs that ingest OCSF: tool-call
//! decisions and administration calls as API Activity (6003), message
//! ingest as Authorize Session (3003), kernel events as Process Activity
//! (1007), File System Activity (1001) or Network Activity (4001), daemon
//! lifecycle as Application Lifecycle (6002). Every event carries the
//! security-control fields (action, disposition) of its decision and the
//! whole original record under `unmapped.agentd`, so the hash chain can be
//! verified from an OCSF export alone ([`record_of`]).
//!
//! Pure: a record in, a JSON value out. docs/ocsf.md has the mapping table.
use serde_json::{json, Map, Value};

use super::kernel_row;
use super::line::ExportLine;
use super::record::{Record, RecordKind};
use super::timefmt;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.8.0";

/// The OCSF profiles every event uses (listed in `metadata.profiles`).
pub const PROFILES: &[&str] = &["security_control", "host"];

/// What an event needs beyond its record.
#[derive(Debug, Clone)]
pub struct Context {
    /// This host's name (the `device` of kernel events, the endpoint of calls).
    pub hostname: String,
    /// agentd's version (`metadata.product.version`).
    pub product_version: String,
}

impl Context {
    /// This host (its kernel host name) and this build's version.
    pub fn local() -> Self {
        Context {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into()),
            product_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// An OCSF class: uid, name, category uid and name.
struct Class(u32, &'static str, u32, &'static str);

const API_ACTIVITY: Class = Class(6003, "API Activity", 6, "Application Activity");
const APP_LIFECYCLE: Class = Class(6002, "Application Lifecycle", 6, "Application Activity");
const AUTHORIZE_SESSION: Class =
    Class(3003, "Authorize Session", 3, "Identity & Access Management");
const PROCESS_ACTIVITY: Class = Class(1007, "Process Activity", 1, "System Activity");
const FILE_ACTIVITY: Class = Class(1001, "File System Activity", 1, "System Activity");
const NETWORK_ACTIVITY: Class = Class(4001, "Network Activity", 4, "Network Activity");

/// The record as one OCSF event.
pub fn event(r: &Record, ctx: &Context) -> Value {
    let ev = &r.event;
    let (class, (activity_id, activity), fields) = match ev.kind {
        RecordKind::ToolCall | RecordKind::Admin | RecordKind::Model => {
            (API_ACTIVITY, (99, "Other"), api_fields(r, ctx))
        }
        RecordKind::Message => (
            AUTHORIZE_SESSION,
            (1, "Assign Privileges"),
            session_fields(r),
        ),
        RecordKind::Lifecycle => (
            APP_LIFECYCLE,
            lifecycle_activity(&ev.action),
            lifecycle_fields(),
        ),
        RecordKind::Kernel => kernel_event(r, ctx),
    };
    let mut out = Map::new();
    out.insert("class_uid".into(), json!(class.0));
    out.insert("class_name".into(), json!(class.1));
    out.insert("category_uid".into(), json!(class.2));
    out.insert("category_name".into(), json!(class.3));
    out.insert("activity_id".into(), json!(activity_id));
    out.insert("activity_name".into(), json!(activity));
    out.insert(
        "type_uid".into(),
        json!(u64::from(class.0) * 100 + u64::from(activity_id)),
    );
    out.insert(
        "type_name".into(),
        json!(format!("{}: {activity}", class.1)),
    );
    out.insert("time".into(), json!(millis(&r.timestamp)));
    out.insert("metadata".into(), metadata(r, ctx));
    out.extend(outcome(&ev.decision, &ev.reason_code));
    if !ev.policy_id.is_empty() && ev.kind != RecordKind::Kernel {
        out.insert(
            "policy".into(),
            json!({ "uid": ev.policy_id, "name": ev.policy_id }),
        );
    }
    out.extend(fields);
    out.insert(
        "unmapped".into(),
        json!({ "agentd": ExportLine::Record(r.clone()) }),
    );
    Value::Object(out)
}

/// The audit record an OCSF event carries (`unmapped.agentd`), if any.
pub fn record_of(event: &Value) -> Option<Record> {
    match serde_json::from_value(event.pointer("/unmapped/agentd")?.clone()).ok()? {
        ExportLine::Record(r) => Some(r),
        ExportLine::Checkpoint(_) => None,
    }
}

/// Milliseconds since the epoch (OCSF `time`); 0 for an unparsable stamp.
fn millis(timestamp: &str) -> i64 {
    timefmt::parse_micros(timestamp).map_or(0, |us| us.div_euclid(1000))
}

fn metadata(r: &Record, ctx: &Context) -> Value {
    let mut m = json!({
        "version": OCSF_VERSION,
        "profiles": PROFILES,
        "product": { "name": "agentd", "vendor_name": "agentd", "version": ctx.product_version },
        "log_name": "audit",
        "uid": r.hash,
        "sequence": r.seq,
        "original_time": r.timestamp,
        "event_code": r.event.action,
    });
    if !r.event.call_id.is_empty() {
        // Ties a decision to the kernel events of its tool's processes.
        m["correlation_uid"] = json!(r.event.call_id);
    }
    m
}

/// Severity, status and the security-control fields of a decision.
fn outcome(decision: &str, reason: &str) -> Map<String, Value> {
    // (severity, status, action, disposition), each (id, label).
    let (sev, status, action, disp) = match decision {
        "allow" => (
            (1, "Informational"),
            (1, "Success"),
            (1, "Allowed"),
            (1, "Allowed"),
        ),
        "deny" => ((3, "Medium"), (2, "Failure"), (2, "Denied"), (2, "Blocked")),
        "would_deny" => (
            (3, "Medium"),
            (1, "Success"),
            (3, "Observed"),
            (15, "Detected"),
        ),
        "escalate" => ((2, "Low"), (99, "Other"), (99, "Other"), (14, "Delayed")),
        _ => (
            (1, "Informational"),
            (1, "Success"),
            (3, "Observed"),
            (17, "Logged"),
        ),
    };
    let mut m = Map::new();
    for (key, (id, label)) in [
        ("severity", sev),
        ("status", status),
        ("action", action),
        ("disposition", disp),
    ] {
        m.insert(format!("{key}_id"), json!(id));
        m.insert(key.into(), json!(label));
    }
    m.insert("status_code".into(), json!(reason));
    m
}

/// The host the events come from (OCSF `device`, type Server).
fn device(ctx: &Context) -> Value {
    json!({ "type_id": 1, "type": "Server", "hostname": ctx.hostname })
}

/// Who made a tool call or administration call: the operator, its session,
/// the agent and its process where known.
fn actor(r: &Record) -> Value {
    let ev = &r.event;
    let origin = kernel_row::origin(ev);
    let mut a = Map::new();
    if !ev.operator.is_empty() {
        a.insert(
            "user".into(),
            json!({ "name": ev.operator, "uid": ev.operator }),
        );
    }
    if !ev.session.is_empty() {
        a.insert("session".into(), json!({ "uid": ev.session }));
    }
    if !origin.agent.is_empty() {
        a.insert("app_name".into(), json!(origin.agent));
    }
    if let Some(pid) = origin.pid {
        a.insert("process".into(), json!({ "pid": pid }));
    }
    if a.is_empty() {
        // OCSF needs one actor attribute; an unattributed row is agentd's own.
        a.insert("app_name".into(), json!("agentd"));
    }
    Value::Object(a)
}

fn api_fields(r: &Record, ctx: &Context) -> Vec<(String, Value)> {
    let ev = &r.event;
    let mut request =
        json!({ "uid": if ev.call_id.is_empty() { r.hash.clone() } else { ev.call_id.clone() } });
    if !ev.target.is_empty() {
        // Tool-call targets are the call's JSON arguments; others are text.
        request["data"] = serde_json::from_str::<Value>(&ev.target)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({ "target": ev.target }));
    }
    let service = match ev.kind {
        RecordKind::ToolCall => "tool_call",
        RecordKind::Model => "model",
        _ => "admin",
    };
    vec![
        ("actor".into(), actor(r)),
        (
            "api".into(),
            json!({ "operation": ev.action, "service": { "name": service }, "request": request }),
        ),
        ("src_endpoint".into(), json!({ "hostname": ctx.hostname })),
        ("device".into(), device(ctx)),
        (
            "message".into(),
            json!(format!("{} {} {}", ev.action, ev.decision, ev.reason_code)),
        ),
    ]
}

fn session_fields(r: &Record) -> Vec<(String, Value)> {
    let ev = &r.event;
    // An unsigned message names no operator; OCSF needs a user.
    let user = if ev.operator.is_empty() {
        "unsigned"
    } else {
        &ev.operator
    };
    let mut out = vec![
        ("user".to_owned(), json!({ "name": user, "uid": user })),
        ("session".to_owned(), json!({ "uid": ev.session })),
        ("privileges".to_owned(), json!(["active_message"])),
    ];
    let origin = kernel_row::origin(ev);
    if !origin.agent.is_empty() {
        out.push(("actor".into(), json!({ "app_name": origin.agent })));
    }
    out
}

fn lifecycle_activity(action: &str) -> (u32, &'static str) {
    match action {
        "audit_open" | "enforcer_start" | "daemon_start" => (3, "Start"),
        "audit_close" | "enforcer_stop" | "daemon_stop" => (4, "Stop"),
        _ => (99, "Other"),
    }
}

fn lifecycle_fields() -> Vec<(String, Value)> {
    vec![(
        "app".into(),
        json!({ "name": "agentd", "vendor_name": "agentd" }),
    )]
}

/// Which class a kernel row's hook or syscall belongs to.
fn kernel_event(r: &Record, ctx: &Context) -> (Class, (u32, &'static str), Vec<(String, Value)>) {
    let ev = &r.event;
    let origin = kernel_row::origin(ev);
    let mut process = json!({ "pid": origin.pid.unwrap_or(0) });
    let mut actor = json!({ "process": process.clone() });
    if !origin.agent.is_empty() {
        actor["app_name"] = json!(origin.agent);
    }
    let common = vec![
        ("actor".to_owned(), actor),
        ("device".to_owned(), device(ctx)),
    ];
    if let Some(activity) = file_activity(&ev.action) {
        let mut f = common;
        f.push(("file".into(), file(&ev.target)));
        return (FILE_ACTIVITY, activity, f);
    }
    if let Some(activity) = network_activity(&ev.action, &ev.decision) {
        let mut f = common;
        f.push(("dst_endpoint".into(), endpoint(&ev.target)));
        f.push(("src_endpoint".into(), json!({ "hostname": ctx.hostname })));
        return (NETWORK_ACTIVITY, activity, f);
    }
    let launch = matches!(
        ev.action.as_str(),
        "exec" | "execve" | "execveat" | "bprm_check_security"
    );
    if launch && !ev.target.is_empty() {
        process["file"] = file(&ev.target);
    }
    let mut f = common;
    f.push(("process".into(), process));
    if !launch && !ev.target.is_empty() {
        f.push((
            "message".into(),
            json!(format!("{} {}", ev.action, ev.target)),
        ));
    }
    let activity = if launch { (1, "Launch") } else { (99, "Other") };
    (PROCESS_ACTIVITY, activity, f)
}

/// File System Activity's activity for a kernel file hook or syscall.
fn file_activity(action: &str) -> Option<(u32, &'static str)> {
    Some(match action {
        "file_open" | "open" | "openat" | "openat2" | "creat" => (14, "Open"),
        "unlink" | "unlinkat" | "rmdir" | "path_unlink" | "path_rmdir" | "inode_unlink"
        | "inode_rmdir" => (4, "Delete"),
        "rename" | "renameat" | "renameat2" | "path_rename" | "inode_rename" => (5, "Rename"),
        "mkdir" | "mkdirat" | "mknod" | "mknodat" | "symlink" | "symlinkat" | "link" | "linkat"
        | "path_mkdir" | "path_mknod" | "path_symlink" | "path_link" | "inode_create" => {
            (1, "Create")
        }
        "truncate" | "ftruncate" | "path_truncate" => (3, "Update"),
        "chmod" | "fchmod" | "fchmodat" | "fchmodat2" | "chown" | "lchown" | "fchown"
        | "fchownat" | "path_chmod" | "path_chown" => (7, "Set Security"),
        "utime" | "utimes" | "utimensat" | "futimesat" | "setxattr" | "lsetxattr" | "fsetxattr"
        | "removexattr" | "lremovexattr" | "fremovexattr" | "inode_setattr" | "inode_setxattr"
        | "inode_removexattr" => (6, "Set Attributes"),
        _ => return None,
    })
}

/// Network Activity's activity for a kernel socket hook or syscall.
fn network_activity(action: &str, decision: &str) -> Option<(u32, &'static str)> {
    match action {
        "connect"
        | "socket_connect"
        | "sendto"
        | "sendmsg"
        | "socket_sendmsg"
        | "connect4"
        | "connect6"
        | "sendmsg4"
        | "sendmsg6"
        | "unix_stream_connect"
        | "unix_may_send" => Some(if decision == "deny" {
            (5, "Refuse")
        } else {
            (1, "Open")
        }),
        "bind" | "socket_bind" | "listen" | "socket_listen" => Some((7, "Listen")),
        _ => None,
    }
}

/// A file object from a path (type Regular File unless it ends in `/`).
fn file(path: &str) -> Value {
    let name = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    json!({ "name": if name.is_empty() { path } else { name }, "path": path, "type_id": 1, "type": "Regular File" })
}

/// A network endpoint from a kernel row's target: `IP:PORT`, `[v6]:PORT`,
/// `unix:/path` or anything else (kept as its name).
fn endpoint(target: &str) -> Value {
    let ip_port = target
        .strip_prefix('[')
        .and_then(|r| r.split_once("]:"))
        .or_else(|| target.rsplit_once(':').filter(|(ip, _)| !ip.contains(':')));
    match ip_port {
        Some((ip, port)) if ip.parse::<std::net::IpAddr>().is_ok() => match port.parse::<u16>() {
            Ok(p) => json!({ "ip": ip, "port": p }),
            Err(_) => json!({ "ip": ip }),
        },
        _ => json!({ "name": target }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditEvent, GENESIS_HASH};

    fn ctx() -> Context {
        Context {
            hostname: "h1".into(),
            product_version: "0.1.0".into(),
        }
    }

    fn row(kind: RecordKind, action: &str, target: &str, decision: &str) -> Record {
        let mut ev = AuditEvent::new(kind, action);
        ev.target = target.into();
        ev.decision = decision.into();
        ev.reason_code = if decision == "allow" {
            "ok".into()
        } else {
            "no_grant".into()
        };
        Record::seal(
            7,
            "2026-12-02T14:50:11.745899Z".into(),
            ev,
            GENESIS_HASH.into(),
        )
    }

    #[test]
    fn classes_follow_the_record() {
        let cases = [
            (
                RecordKind::ToolCall,
                "read_chart",
                "{\"path\":\"/a\"}",
                6003,
                99,
            ),
            (
                RecordKind::Admin,
                "operator_add",
                "olivia roles=owner",
                6003,
                99,
            ),
            (RecordKind::Message, "message", "body_sha256:ab", 3003, 1),
            (RecordKind::Lifecycle, "audit_open", "", 6002, 3),
            (RecordKind::Kernel, "exec", "/usr/bin/ls", 1007, 1),
            (
                RecordKind::Kernel,
                "file_open",
                "/srv/charts/p.txt",
                1001,
                14,
            ),
            (RecordKind::Kernel, "unlinkat", "/workspace/x", 1001, 4),
            (RecordKind::Kernel, "connect", "127.0.0.1:25", 4001, 1),
            (RecordKind::Kernel, "kill", "pid:1", 1007, 99),
        ];
        for (kind, action, target, class, activity) in cases {
            let e = event(&row(kind, action, target, "allow"), &ctx());
            assert_eq!(e["class_uid"], class, "{action}");
            assert_eq!(e["activity_id"], activity, "{action}");
            assert_eq!(e["type_uid"], class * 100 + activity, "{action}");
            assert_eq!(e["time"], 1_796_223_011_745i64, "{action}");
            assert_eq!(e["metadata"]["sequence"], 7);
        }
    }

    #[test]
    fn decisions_become_security_control_fields() {
        let allow = event(&row(RecordKind::ToolCall, "shell", "{}", "allow"), &ctx());
        assert_eq!(
            (allow["action_id"].clone(), allow["disposition_id"].clone()),
            (json!(1), json!(1))
        );
        let deny = event(
            &row(RecordKind::Kernel, "connect", "10.0.0.1:443", "deny"),
            &ctx(),
        );
        assert_eq!(
            (deny["action_id"].clone(), deny["disposition_id"].clone()),
            (json!(2), json!(2))
        );
        assert_eq!(deny["activity_id"], 5, "a refused connect is Refuse");
        assert_eq!(
            deny["dst_endpoint"],
            json!({ "ip": "10.0.0.1", "port": 443 })
        );
        assert_eq!(deny["status_code"], "no_grant");
        let audit_only = event(
            &row(RecordKind::Kernel, "exec", "/bin/sh", "would_deny"),
            &ctx(),
        );
        assert_eq!(audit_only["disposition"], "Detected");
    }

    #[test]
    fn the_record_rides_along_and_still_verifies() {
        let r = row(RecordKind::Kernel, "file_open", "/srv/x", "deny");
        let e = event(&r, &ctx());
        let back = record_of(&e).unwrap();
        assert_eq!(back, r);
        assert!(back.hash_is_valid());
        assert_eq!(record_of(&json!({ "unmapped": {} })), None);
    }

    #[test]
    fn endpoints_parse_or_stay_names() {
        assert_eq!(endpoint("[::1]:80"), json!({ "ip": "::1", "port": 80 }));
        assert_eq!(
            endpoint("unix:/run/x.sock"),
            json!({ "name": "unix:/run/x.sock" })
        );
        assert_eq!(endpoint("::1"), json!({ "name": "::1" }));
    }
}
