//! Reading a row's subject back: the agent, the pid and (for file opens,
//! where the backend knows it) the access mode. Rows of record format v2
//! carry them in their own fields; kernel rows written before it carried
//! them in `policy_id` as `agent:NAME pid:PID [access:read|write]`, which is
//! still read so old logs explain, learn and filter as before.
use super::record::{AuditEvent, RecordKind};

/// Who a row is about: its agent, the process that asked, the access mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelOrigin {
    /// Agent name (empty if none).
    pub agent: String,
    /// Process that asked.
    pub pid: Option<u32>,
    /// `read` / `write` for file opens, where the backend records it.
    pub access: Option<String>,
}

/// The subject of a row: its own fields, or for a kernel row written before
/// record format v2, what its `policy_id` says.
pub fn origin(ev: &AuditEvent) -> KernelOrigin {
    if ev.has_subject() {
        return KernelOrigin {
            agent: ev.agent.clone(),
            pid: (ev.pid != 0).then_some(ev.pid),
            access: (!ev.access.is_empty()).then(|| ev.access.clone()),
        };
    }
    if ev.kind == RecordKind::Kernel {
        return legacy_origin(&ev.policy_id);
    }
    KernelOrigin::default()
}

/// Parses the `policy_id` of a kernel row written before record format v2:
/// `agent:NAME pid:PID [access:MODE]`.
pub fn legacy_origin(policy_id: &str) -> KernelOrigin {
    let mut o = KernelOrigin::default();
    for part in policy_id.split(' ') {
        if let Some(a) = part.strip_prefix("agent:") {
            o.agent = a.to_owned();
        } else if let Some(p) = part.strip_prefix("pid:") {
            o.pid = p.parse().ok();
        } else if let Some(m) = part.strip_prefix("access:") {
            o.access = Some(m.to_owned());
        }
    }
    o
}

/// `1.2.3.4:53` → `1.2.3.4/32:53`; `[::1]:80` → `[::1/128]:80`.
pub fn connect_entry(target: &str) -> Option<String> {
    if let Some(rest) = target.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:")?;
        return Some(format!("[{ip}/128]:{port}"));
    }
    let (ip, port) = target.rsplit_once(':')?;
    Some(format!("{ip}/32:{port}"))
}

/// An `access_summary` row's target read back: the object, the count and
/// the first and last access (Unix-epoch ns), from
/// `OBJECT [count=N first_ns=F last_ns=L]`; `None` for any other target.
pub fn access_summary(target: &str) -> Option<(&str, u64, u64, u64)> {
    let (object, rest) = target.rsplit_once(" [count=")?;
    let rest = rest.strip_suffix(']')?;
    let (count, rest) = rest.split_once(" first_ns=")?;
    let (first, last) = rest.split_once(" last_ns=")?;
    Some((
        object,
        count.parse().ok()?,
        first.parse().ok()?,
        last.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rows_use_their_fields_old_kernel_rows_their_policy_id() {
        let mut new = AuditEvent::new(RecordKind::Kernel, "file_open");
        (new.agent, new.pid, new.access) = ("rt".into(), 7, "write".into());
        let want = KernelOrigin {
            agent: "rt".into(),
            pid: Some(7),
            access: Some("write".into()),
        };
        assert_eq!(origin(&new), want);
        let mut old = AuditEvent::new(RecordKind::Kernel, "file_open");
        old.policy_id = "agent:rt pid:7 access:write".into();
        assert_eq!(origin(&old), want);
        // Only kernel rows ever carried it there: a policy id is a policy id.
        let mut call = AuditEvent::new(RecordKind::ToolCall, "shell");
        call.policy_id = "agent:rt pid:7".into();
        assert_eq!(origin(&call), KernelOrigin::default());
        call.agent = "claude".into();
        assert_eq!(origin(&call).agent, "claude");
        assert_eq!(origin(&call).pid, None);
    }
}
