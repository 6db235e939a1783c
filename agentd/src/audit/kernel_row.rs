//! Reading kernel rows back: `enforce::events` writes the agent, the pid
//! and (for file opens, where the backend knows it) the access mode into a
//! kernel row's `policy_id` as `agent:NAME pid:PID [access:read|write]`.

/// What a kernel row's `policy_id` says: `agent:NAME pid:PID [access:MODE]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelOrigin {
    /// Agent name.
    pub agent: String,
    /// Process that asked.
    pub pid: Option<u32>,
    /// `read` / `write` for file opens, where the backend records it.
    pub access: Option<String>,
}

/// Parses a kernel row's `policy_id`.
pub fn origin(policy_id: &str) -> KernelOrigin {
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
