//! `agentctl agent learn`: a profile proposed from an agent's audit-only run.
//! The kernel rows the agent would have been denied (`would_deny`, and
//! `deny` rows of an enforcing run) become profile entries — executables
//! one by one, files grouped into read and write scopes by directory,
//! destinations one by one — minus what the agent's baseline already
//! grants. A write scope never covers a start-up script or a protected
//! file: such writes are listed as not proposed, and a directory holding
//! one is narrowed to the files written. Pure: rows and baseline in, TOML out.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::audit::kernel_row::{connect_entry, origin};
use crate::audit::{Record, RecordKind};
use crate::grant_spec::GrantSpec;

/// Start-up scripts and hook settings under the agent's home: whoever
/// writes them runs code as the agent (or switches its hooks off) next time.
pub const HOME_STARTUP_FILES: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".config/fish",
    ".config/autostart",
    ".config/systemd",
    ".ssh",
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".claude/hooks",
    ".codex/config.toml",
    ".codex/hooks.json",
    ".gemini/settings.json",
];

/// System trees no learned profile writes.
pub const SYSTEM_PROTECTED: &[&str] = &[
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/boot",
    "/var/lib/agentd",
];

/// What `learn` needs besides the rows.
#[derive(Debug, Clone, Default)]
pub struct LearnInput<'a> {
    /// Agent name (rows of other agents are ignored).
    pub agent: &'a str,
    /// Only rows with a greater seq.
    pub since: u64,
    /// The agent's baseline as composed now (what it already has).
    pub baseline: Option<&'a GrantSpec>,
    /// The agent user's home (for [`HOME_STARTUP_FILES`]).
    pub home: Option<&'a Path>,
    /// More paths no write scope may cover: the agent's start-up scripts,
    /// its install directory, protected files (`write_exceptions`).
    pub protected: &'a [PathBuf],
}

/// One proposed entry and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `exec`, `read`, `write` or `connect`.
    pub list: &'static str,
    /// The entry as it goes in the profile.
    pub value: String,
    /// The comment beside it: what the agent did (first rows' targets, count).
    pub comment: String,
}

/// A learned profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proposal {
    /// Entries, by list then value.
    pub entries: Vec<Entry>,
    /// Writes not proposed, with the reason.
    pub refused: Vec<(String, String)>,
    /// Rows read (of this agent, after `since`, refused or would-be).
    pub rows: usize,
    /// Seq of the last row read.
    pub last_seq: u64,
}

/// What the rows showed, before grouping.
#[derive(Default)]
struct Seen {
    exec: BTreeMap<String, usize>,
    read: BTreeMap<PathBuf, usize>,
    write: BTreeMap<PathBuf, usize>,
    connect: BTreeMap<String, (String, usize)>,
}

fn within(p: &Path, scope: &Path) -> bool {
    p.starts_with(scope)
}

fn covered(p: &Path, scopes: &[PathBuf]) -> bool {
    scopes.iter().any(|s| within(p, s))
}

/// Whether the baseline's connect entries cover `entry` (`IP/len:PORT`).
fn connect_covered(entry: &str, baseline: &[String]) -> bool {
    let parse = |e: &str| -> Option<(IpAddr, u8, u16)> {
        let (net, port) = if let Some(rest) = e.strip_prefix('[') {
            let (n, p) = rest.split_once("]:")?;
            (n, p)
        } else {
            e.rsplit_once(':')?
        };
        let (ip, len) = net.split_once('/').unwrap_or((net, ""));
        let ip: IpAddr = ip.parse().ok()?;
        let len = if len.is_empty() {
            if ip.is_ipv4() {
                32
            } else {
                128
            }
        } else {
            len.parse().ok()?
        };
        Some((ip, len, port.parse().ok()?))
    };
    let Some((ip, _, port)) = parse(entry) else {
        return false;
    };
    baseline.iter().any(|b| {
        let Some((net, len, bport)) = parse(b) else {
            return false;
        };
        if bport != 0 && bport != port {
            return false;
        }
        match (ip, net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - len.min(32))
                };
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len.min(128))
                };
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    })
}

/// The paths no write scope may cover, for this input.
pub fn protected_paths(input: &LearnInput<'_>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = SYSTEM_PROTECTED.iter().map(PathBuf::from).collect();
    if let Some(h) = input.home {
        out.extend(HOME_STARTUP_FILES.iter().map(|f| h.join(f)));
    }
    out.extend(input.protected.iter().cloned());
    out
}

/// Reads the rows and proposes the entries.
pub fn learn(rows: &[Record], input: &LearnInput<'_>) -> Proposal {
    let mut p = Proposal::default();
    let empty = GrantSpec::default();
    let base = input.baseline.unwrap_or(&empty);
    let seen = collect(rows, input, &mut p);
    propose_execs(&seen, base, &mut p);
    let writes = propose_writes(&seen, base, input, &mut p);
    propose_reads(&seen, base, &writes, &mut p);
    propose_connects(&seen, base, &mut p);
    p
}

/// The agent's refused (or would-be refused) kernel rows after `since`
/// that a profile could lift, counted by what they touched; `p` counts
/// the rows and keeps the last seq.
fn collect(rows: &[Record], input: &LearnInput<'_>, p: &mut Proposal) -> Seen {
    let mut seen = Seen::default();
    for r in rows {
        if r.seq <= input.since || r.event.kind != RecordKind::Kernel {
            continue;
        }
        if !matches!(r.event.decision.as_str(), "would_deny" | "deny") {
            continue;
        }
        let o = origin(&r.event);
        if o.agent != input.agent {
            continue;
        }
        // Refusals no profile can lift (tamper, signals, claims of another
        // tree, bypass techniques) are not the runtime's needs.
        if !matches!(
            r.event.reason_code.as_str(),
            "no_grant" | "path_outside_scope"
        ) {
            continue;
        }
        p.rows += 1;
        p.last_seq = p.last_seq.max(r.seq);
        let t = r.event.target.clone();
        match r.event.action.as_str() {
            "exec" | "exec_verify" => *seen.exec.entry(t).or_default() += 1,
            "file_open" if o.access.as_deref() == Some("write") => {
                *seen.write.entry(PathBuf::from(t)).or_default() += 1
            }
            "file_open" => *seen.read.entry(PathBuf::from(t)).or_default() += 1,
            "connect" | "sendmsg" => {
                if let Some(c) = connect_entry(&t) {
                    seen.connect.entry(c).or_insert((t, 0)).1 += 1;
                }
            }
            a if a.starts_with("path_") => *seen.write.entry(PathBuf::from(t)).or_default() += 1,
            _ => {}
        }
    }
    seen
}

/// Executables run that the baseline does not name.
fn propose_execs(seen: &Seen, base: &GrantSpec, p: &mut Proposal) {
    for (e, n) in &seen.exec {
        if base.exec.iter().any(|b| b.as_os_str() == e.as_str()) {
            continue;
        }
        p.entries.push(Entry {
            list: "exec",
            value: e.clone(),
            comment: format!("executed {n}×"),
        });
    }
}

/// Write scopes; returns them, as reads they cover need no entry.
fn propose_writes(
    seen: &Seen,
    base: &GrantSpec,
    input: &LearnInput<'_>,
    p: &mut Proposal,
) -> Vec<PathBuf> {
    let protected = protected_paths(input);
    // Writes: by directory, unless the directory holds (or is inside) a
    // protected path; then only the files written, never a protected one.
    let mut write_scopes: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in seen.write.keys() {
        if covered(f, &base.write) {
            continue;
        }
        if let Some(prot) = protected.iter().find(|x| within(f, x)) {
            p.refused.push((
                f.display().to_string(),
                format!(
                    "a start-up script or protected path ({}): an agent that writes it runs code or changes its hooks on the next start",
                    prot.display()
                ),
            ));
            continue;
        }
        let dir = f
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| f.clone());
        let dir_unsafe =
            dir == Path::new("/") || protected.iter().any(|x| within(x, &dir) || within(&dir, x));
        let scope = if dir_unsafe { f.clone() } else { dir };
        write_scopes.entry(scope).or_default().push(f.clone());
    }
    let writes: Vec<PathBuf> = write_scopes.keys().cloned().collect();
    for (scope, files) in &write_scopes {
        p.entries.push(Entry {
            list: "write",
            value: scope.display().to_string(),
            comment: describe("wrote", files),
        });
    }
    writes
}

/// Read scopes, by directory, minus what the baseline or a proposed write covers.
fn propose_reads(seen: &Seen, base: &GrantSpec, writes: &[PathBuf], p: &mut Proposal) {
    let mut read_scopes: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in seen.read.keys() {
        if covered(f, &base.read) || covered(f, &base.write) || covered(f, writes) {
            continue;
        }
        let dir = match f.parent() {
            Some(d) if d != Path::new("/") => d.to_path_buf(),
            _ => f.clone(),
        };
        read_scopes.entry(dir).or_default().push(f.clone());
    }
    // A scope inside another proposed scope adds nothing.
    let keys: Vec<PathBuf> = read_scopes.keys().cloned().collect();
    for k in &keys {
        if let Some(outer) = keys.iter().find(|o| *o != k && within(k, o)) {
            let files = read_scopes.remove(k).unwrap_or_default();
            if let Some(v) = read_scopes.get_mut(outer) {
                v.extend(files);
            }
        }
    }
    for (scope, files) in &read_scopes {
        p.entries.push(Entry {
            list: "read",
            value: scope.display().to_string(),
            comment: describe("read", files),
        });
    }
}

/// Destinations connected to that the baseline does not cover.
fn propose_connects(seen: &Seen, base: &GrantSpec, p: &mut Proposal) {
    for (c, (target, n)) in &seen.connect {
        if connect_covered(c, &base.connect) {
            continue;
        }
        let what = if c.ends_with(":53") { " (DNS)" } else { "" };
        p.entries.push(Entry {
            list: "connect",
            value: c.clone(),
            comment: format!("connected to {target}{what} {n}×"),
        });
    }
}

fn describe(verb: &str, files: &[PathBuf]) -> String {
    let set: BTreeSet<String> = files.iter().map(|f| f.display().to_string()).collect();
    let shown: Vec<&String> = set.iter().take(3).collect();
    let more = set.len().saturating_sub(shown.len());
    format!(
        "{verb} {}{}",
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

impl Proposal {
    /// The proposal as a policy section `[profiles.NAME]`, every line commented.
    pub fn render(&self, name: &str, agent: &str) -> String {
        let mut out = format!(
            "# Learned by `agentctl agent learn {agent}` from {} refused or would-be-refused kernel rows (through seq {}).\n\
             # Review every line: each grants the agent's processes this outside any tool call.\n\
             # Apply: append to the policy, `agentctl policy load POLICY.toml`, then add `--profile {name}` to the agent.\n",
            self.rows, self.last_seq
        );
        let key = if !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            name.to_owned()
        } else {
            toml::Value::String(name.to_owned()).to_string()
        };
        out.push_str(&format!("[profiles.{key}]\n"));
        out.push_str(&format!(
            "description = \"learned from agent {agent}'s audit-only run\"\n"
        ));
        for list in ["exec", "read", "write", "connect"] {
            let items: Vec<&Entry> = self.entries.iter().filter(|e| e.list == list).collect();
            if items.is_empty() {
                continue;
            }
            out.push_str(&format!("{list} = [\n"));
            for e in items {
                out.push_str(&format!(
                    "  {},  # {}\n",
                    toml::Value::String(e.value.clone()),
                    e.comment.replace('\n', " ")
                ));
            }
            out.push_str("]\n");
        }
        for (path, why) in &self.refused {
            out.push_str(&format!("# not proposed: write {path}: {why}\n"));
        }
        if self.entries.is_empty() {
            out.push_str("# nothing to add: the agent's baseline already covers every row read\n");
        }
        out
    }

    /// The proposal as a profile definition.
    pub fn def(&self, agent: &str) -> super::ProfileDef {
        let pick = |l: &str| -> Vec<String> {
            self.entries
                .iter()
                .filter(|e| e.list == l)
                .map(|e| e.value.clone())
                .collect()
        };
        super::ProfileDef {
            description: format!("learned from agent {agent}'s audit-only run"),
            exec: pick("exec"),
            read: pick("read"),
            write: pick("write"),
            connect: pick("connect"),
            model_api: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;

    fn row(seq: u64, action: &str, target: &str, decision: &str, access: Option<&str>) -> Record {
        let mut ev = AuditEvent::new(RecordKind::Kernel, action);
        ev.target = target.into();
        ev.decision = decision.into();
        ev.reason_code = "no_grant".into();
        (ev.agent, ev.pid) = ("rt".into(), 7);
        ev.access = access.unwrap_or_default().into();
        Record::seal(seq, "t".into(), ev, crate::audit::GENESIS_HASH.into())
    }

    /// The same row as written before record format v2 (the subject in
    /// `policy_id`): a migrated log holds both.
    fn legacy(mut r: Record) -> Record {
        let e = &mut r.event;
        e.policy_id = format!("agent:{} pid:{}", e.agent, e.pid);
        if !e.access.is_empty() {
            e.policy_id += &format!(" access:{}", e.access);
        }
        (e.agent, e.pid, e.access) = (String::new(), 0, String::new());
        r
    }

    #[test]
    fn groups_by_directory_minus_the_baseline_and_never_writes_startup_files() {
        let rows = vec![
            row(1, "exec", "/opt/rt/bin/rt", "would_deny", None),
            row(2, "exec", "/opt/rt/bin/rt", "would_deny", None),
            row(3, "exec", "/usr/bin/git", "would_deny", None),
            row(
                4,
                "file_open",
                "/srv/data/a.txt",
                "would_deny",
                Some("read"),
            ),
            row(
                5,
                "file_open",
                "/srv/data/b.txt",
                "would_deny",
                Some("read"),
            ),
            row(
                6,
                "file_open",
                "/srv/data/sub/c.txt",
                "would_deny",
                Some("read"),
            ),
            row(
                7,
                "file_open",
                "/srv/out/r.txt",
                "would_deny",
                Some("write"),
            ),
            legacy(row(
                8,
                "file_open",
                "/srv/out/r.txt",
                "would_deny",
                Some("read"),
            )),
            row(
                9,
                "file_open",
                "/home/rt/.bashrc",
                "would_deny",
                Some("write"),
            ),
            row(
                10,
                "file_open",
                "/home/rt/notes.md",
                "would_deny",
                Some("write"),
            ),
            row(
                11,
                "file_open",
                "/opt/rt/start.sh",
                "would_deny",
                Some("write"),
            ),
            legacy(row(12, "connect", "10.0.0.53:53", "would_deny", None)),
            row(13, "connect", "127.0.0.1:8080", "would_deny", None),
            row(14, "file_open", "/etc/hosts", "would_deny", Some("read")),
            row(15, "path_unlink", "/etc/passwd", "would_deny", None),
            row(16, "file_open", "/srv/other/x", "allow", Some("read")),
            // Another agent's row, and one before --since.
            {
                let mut r = row(17, "exec", "/usr/bin/nc", "would_deny", None);
                r.event.agent = "other".into();
                r
            },
        ];
        let baseline = GrantSpec {
            exec: vec![PathBuf::from("/usr/bin/git")],
            read: vec![PathBuf::from("/etc/hosts")],
            connect: vec!["127.0.0.0/8:8080".into()],
            ..Default::default()
        };
        let input = LearnInput {
            agent: "rt",
            since: 0,
            baseline: Some(&baseline),
            home: Some(Path::new("/home/rt")),
            protected: &[PathBuf::from("/opt/rt/start.sh")],
        };
        let p = learn(&rows, &input);
        let got: Vec<(&str, &str)> = p
            .entries
            .iter()
            .map(|e| (e.list, e.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("exec", "/opt/rt/bin/rt"),
                // The home holds start-up scripts: only the file written.
                ("write", "/home/rt/notes.md"),
                ("write", "/srv/out"),
                ("read", "/srv/data"),
                ("connect", "10.0.0.53/32:53"),
            ]
        );
        let refused: Vec<&str> = p.refused.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            refused,
            ["/etc/passwd", "/home/rt/.bashrc", "/opt/rt/start.sh"]
        );
        assert_eq!(p.rows, 15);
        let text = p.render("rt-learned", "rt");
        assert!(
            text.contains(
                "\"/srv/data\",  # read /srv/data/a.txt, /srv/data/b.txt, /srv/data/sub/c.txt"
            ),
            "{text}"
        );
        assert!(
            text.contains("# not proposed: write /home/rt/.bashrc"),
            "{text}"
        );
        assert!(text.contains("(DNS)"), "{text}");
        // The rendered section is a valid policy profile.
        let v: toml::Table = toml::from_str(&text).unwrap();
        let def: super::super::ProfileDef = v["profiles"]["rt-learned"].clone().try_into().unwrap();
        def.validate("profiles.rt-learned").unwrap();
        assert_eq!(def, p.def("rt"));
        // --since skips what came before.
        let later = learn(
            &rows,
            &LearnInput {
                since: 12,
                ..input.clone()
            },
        );
        assert!(later.entries.is_empty(), "{:?}", later.entries);
    }
}
