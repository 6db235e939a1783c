//! `agentd doctor`: what this kernel really supports for enforcement, found
//! by probing (loading programs, installing filters), never from config alone.
use serde::Serialize;

pub mod exposure;
mod probes;

pub use probes::ProbeError;

/// Outcome of one probe.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Probe {
    /// Stable probe name.
    pub name: &'static str,
    /// Whether the feature works.
    pub ok: bool,
    /// What was found: a version, an errno, a reason.
    pub detail: String,
}

pub use crate::enforce::Backend;

/// The full report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Running kernel release.
    pub kernel: String,
    /// Every probe, in order.
    pub probes: Vec<Probe>,
    /// The backend agentd would choose.
    pub backend: Backend,
    /// Why that backend was chosen.
    pub reason: String,
    /// What the chosen backend cannot cover.
    pub limitations: Vec<String>,
    /// What the host exposes to agents beyond any grant: root-equivalent
    /// sockets the agent user can reach, DNS in the agents' baseline.
    pub exposure: Vec<String>,
}

impl Report {
    /// The probe with this name.
    pub fn probe(&self, name: &str) -> Option<&Probe> {
        self.probes.iter().find(|p| p.name == name)
    }

    /// Human-readable rendering.
    pub fn render(&self) -> String {
        let mut out = format!("agentd doctor — kernel {}\n\n", self.kernel);
        for p in &self.probes {
            let mark = if p.ok { "ok  " } else { "FAIL" };
            out += &format!("  [{mark}] {:<22} {}\n", p.name, p.detail);
        }
        out += &format!("\nbackend: {:?} — {}\n", self.backend, self.reason);
        if !self.limitations.is_empty() {
            out += "this backend cannot cover:\n";
            for l in &self.limitations {
                out += &format!("  - {l}\n");
            }
        }
        if !self.exposure.is_empty() {
            out += "host exposure (WARNING):\n";
            for e in &self.exposure {
                out += &format!("  - {e}\n");
            }
        }
        out
    }
}

/// Runs every probe and picks a backend.
pub fn run() -> Report {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let mut probes = Vec::new();
    probes.push(probes::btf());
    probes.push(probes::active_lsms());
    probes.extend(probes::bpf_programs());
    probes.push(probes::seccomp_user_notif());
    probes.push(probes::seccomp_sync_wakeup());
    probes.push(probes::landlock());
    probes.push(probes::io_uring());
    let Choice {
        backend,
        reason,
        limitations,
    } = choose(&probes);
    Report {
        kernel,
        probes,
        backend,
        reason,
        limitations,
        exposure: exposure::findings(&agent_user(), &crate::enforce::default_baseline()),
    }
}

/// The configured agent user (the system config if present, else the default).
fn agent_user() -> String {
    let path = std::path::Path::new(crate::config::DEFAULT_CONFIG_PATH);
    path.exists()
        .then(|| crate::config::Config::load(path).ok())
        .flatten()
        .unwrap_or_default()
        .agent_user
}

/// The backend the probes allow, why, and what it cannot cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The backend agentd would run.
    pub backend: Backend,
    /// Why that one.
    pub reason: String,
    /// What it cannot cover on this kernel.
    pub limitations: Vec<String>,
}

/// Picks the backend from probe results (pure, so it is unit-tested).
pub fn choose(probes: &[Probe]) -> Choice {
    let ok = |name: &str| probes.iter().any(|p| p.name == name && p.ok);
    if ok("bpf_lsm_active") && ok("lsm_program") && ok("tp_btf_program") {
        let mut limits = vec![];
        if !ok("cgroup_sock_addr") {
            limits.push("connect destinations are checked by socket_connect only".into());
        }
        return Choice {
            backend: Backend::Lsm,
            reason: "BPF LSM programs load and attach on this kernel".into(),
            limitations: limits,
        };
    }
    if ok("seccomp_user_notif") && ok("tp_btf_program") && ok("cgroup_sock_addr") {
        let why = if !ok("bpf_lsm_active") {
            "`bpf` is not an active LSM".to_string()
        } else {
            let errno = probes
                .iter()
                .find(|p| p.name == "lsm_program")
                .map(|p| p.detail.clone())
                .unwrap_or_default();
            format!("BPF LSM programs do not load ({errno})")
        };
        return Choice {
            backend: Backend::Seccomp,
            reason: format!("{why}; seccomp user notification, tp_btf and cgroup sock_addr work"),
            limitations: vec![
                "file access through fds the agent already holds before a call (read/write on an open fd is not re-checked)".into(),
                "destructive path operations (unlink, rename, link, symlink, truncate) are not notified; write scopes gate the opens that precede them".into(),
                "signals to agentd are prevented by running agents as another user, not by a hook".into(),
                "io_uring is refused outright rather than checked per operation".into(),
            ],
        };
    }
    Choice {
        backend: Backend::None,
        reason: "neither BPF LSM nor seccomp user notification with tp_btf and cgroup sock_addr is usable"
            .into(),
        limitations: vec!["agentd cannot enforce on this kernel".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &'static str, ok: bool) -> Probe {
        Probe {
            name,
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn lsm_chosen_only_when_programs_really_load() {
        let mut probes = vec![
            p("bpf_lsm_active", true),
            p("lsm_program", false),
            p("tp_btf_program", true),
            p("cgroup_sock_addr", true),
            p("seccomp_user_notif", true),
        ];
        assert_eq!(choose(&probes).backend, Backend::Seccomp);
        probes[1].ok = true;
        assert_eq!(choose(&probes).backend, Backend::Lsm);
    }

    #[test]
    fn nothing_usable_means_none() {
        assert_eq!(
            choose(&[p("seccomp_user_notif", false)]).backend,
            Backend::None
        );
    }
}
