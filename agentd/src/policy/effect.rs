//! Effect classes: what a call of an action does to the world — `read`,
//! `mutating`, `destructive` or `admin`. The policy says it
//! (`[actions.X] effect = "read"`); where it is silent, the class is
//! guessed from the action's name by the keyword table below (documented
//! in docs/effects.md). A class guessed from the name changes no check of
//! the allow-list, nor the owner-only check of destructive calls.
use serde::{Deserialize, Serialize};

/// The effect class of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Looks, changes nothing (get, list, read, search…).
    Read,
    /// Changes something that can be changed back (write, send, create…);
    /// also the class of a name no keyword matches.
    Mutating,
    /// Destroys or cannot be undone (delete, drop, wipe, reset…).
    Destructive,
    /// Changes who may do what (grant, revoke, roles, users, policy,
    /// config): never elevated for an agent.
    Admin,
}

impl Effect {
    /// The name used in policies, audit rows and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Read => "read",
            Effect::Mutating => "mutating",
            Effect::Destructive => "destructive",
            Effect::Admin => "admin",
        }
    }

    /// Parses a policy's `effect = "…"` (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "read" => Effect::Read,
            "mutating" => Effect::Mutating,
            "destructive" => Effect::Destructive,
            "admin" => Effect::Admin,
            _ => return None,
        })
    }

    /// True for every class but `read` (the anomaly check's "writes").
    pub fn is_write(self) -> bool {
        self != Effect::Read
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an action's class comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `effect = "…"` in the policy.
    Declared,
    /// `destructive = true` in the policy (and no `effect`).
    DestructiveFlag,
    /// The name's keyword (e.g. `delete`).
    Keyword(&'static str),
    /// No keyword matched: `mutating`, the safe default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Declared => f.write_str("declared"),
            Source::DestructiveFlag => f.write_str("destructive = true"),
            Source::Keyword(k) => write!(f, "name keyword `{k}`"),
            Source::Default => f.write_str("no keyword: default"),
        }
    }
}

/// Verbs that change who may do what: always `admin`.
pub const ADMIN_VERBS: &[&str] = &[
    "grant",
    "revoke",
    "sudo",
    "elevate",
    "impersonate",
    "chmod",
    "chown",
    "promote",
    "demote",
];

/// Verbs that destroy: `destructive`.
pub const DESTRUCTIVE_VERBS: &[&str] = &[
    "delete",
    "remove",
    "rm",
    "rmdir",
    "unlink",
    "drop",
    "destroy",
    "wipe",
    "purge",
    "reset",
    "truncate",
    "erase",
    "shred",
    "kill",
    "terminate",
    "nuke",
    "clear",
    "overwrite",
];

/// Things whose change is administration: `admin`, unless every verb in
/// the name is a read verb (`list_users` reads).
pub const ADMIN_NOUNS: &[&str] = &[
    "admin",
    "admins",
    "policy",
    "policies",
    "role",
    "roles",
    "user",
    "users",
    "permission",
    "permissions",
    "acl",
    "acls",
    "iam",
    "config",
    "configuration",
    "settings",
    "credential",
    "credentials",
    "secret",
    "secrets",
    "token",
    "tokens",
    "operator",
    "operators",
];

/// Verbs that change things: `mutating`.
pub const MUTATING_VERBS: &[&str] = &[
    "write", "create", "add", "update", "set", "put", "post", "patch", "edit", "modify", "send",
    "upload", "insert", "append", "move", "mv", "rename", "copy", "cp", "exec", "execute", "run",
    "shell", "bash", "deploy", "install", "apply", "commit", "push", "merge", "publish", "save",
    "store", "submit", "pay", "transfer", "invite", "schedule", "book", "reply", "forward",
    "start", "stop", "restart", "enable", "disable", "mkdir", "touch", "call", "invoke",
];

/// Verbs that only look: `read`.
pub const READ_VERBS: &[&str] = &[
    "get", "list", "ls", "read", "search", "show", "fetch", "view", "query", "describe", "find",
    "stat", "cat", "head", "tail", "count", "lookup", "inspect", "browse", "status", "check",
    "preview", "grep", "glob", "diff", "log", "logs", "whoami", "ping",
];

/// Classifies an action by its name. The name is split into words at
/// every character that is not a letter or digit (`mcp.fs.list_dir` →
/// `mcp fs list dir`; camelCase is split too), then the first rule that
/// matches decides:
///
/// 1. an admin verb (`grant`, `revoke`, `sudo`…) → admin
/// 2. a destructive verb (`delete`, `drop`, `wipe`, `reset`…) → destructive
/// 3. an admin noun (`user`, `role`, `policy`, `config`…) → admin, unless
///    the name has a read verb and no mutating verb (`list_users` → read)
/// 4. a mutating verb (`write`, `send`, `create`…) → mutating
/// 5. a read verb (`get`, `list`, `read`, `search`…) → read
/// 6. nothing matched → mutating
///
/// So a name that both reads and writes is classed by its strongest
/// effect (`read_and_delete` → destructive).
pub fn classify_name(action: &str) -> (Effect, Source) {
    let words = words(action);
    let has = |table: &[&'static str]| -> Option<&'static str> {
        words
            .iter()
            .find_map(|w| table.iter().find(|k| **k == w.as_str()).copied())
    };
    if let Some(k) = has(ADMIN_VERBS) {
        return (Effect::Admin, Source::Keyword(k));
    }
    if let Some(k) = has(DESTRUCTIVE_VERBS) {
        return (Effect::Destructive, Source::Keyword(k));
    }
    let mutating = has(MUTATING_VERBS);
    let read = has(READ_VERBS);
    if let Some(k) = has(ADMIN_NOUNS) {
        match (read, mutating) {
            (Some(r), None) => return (Effect::Read, Source::Keyword(r)),
            _ => return (Effect::Admin, Source::Keyword(k)),
        }
    }
    if let Some(k) = mutating {
        return (Effect::Mutating, Source::Keyword(k));
    }
    if let Some(k) = read {
        return (Effect::Read, Source::Keyword(k));
    }
    (Effect::Mutating, Source::Default)
}

/// The class of an action from what its policy table says: `effect`
/// first, then `destructive = true`, then the name.
pub fn classify(action: &str, declared: Option<Effect>, destructive: bool) -> (Effect, Source) {
    match declared {
        Some(e) => (e, Source::Declared),
        None if destructive => (Effect::Destructive, Source::DestructiveFlag),
        None => classify_name(action),
    }
}

/// Whether a declared `effect` contradicts `destructive = true`: an action
/// that is always destructive cannot be read-only or merely mutating.
pub fn contradicts_destructive(declared: Effect) -> bool {
    matches!(declared, Effect::Read | Effect::Mutating)
}

/// The name's words, lowercase: split at non-alphanumerics and at a
/// lowercase-to-uppercase step (`listDir` → `list dir`).
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str) -> Effect {
        classify_name(name).0
    }

    #[test]
    fn the_keyword_table_on_plain_names() {
        for (name, want) in [
            ("read_chart", Effect::Read),
            ("get", Effect::Read),
            ("search_docs", Effect::Read),
            ("mcp.fs.list_dir", Effect::Read),
            ("send_email", Effect::Mutating),
            ("write_file", Effect::Mutating),
            ("shell", Effect::Mutating),
            ("delete_file", Effect::Destructive),
            ("db.drop_table", Effect::Destructive),
            ("grant_access", Effect::Admin),
            ("sudo", Effect::Admin),
            ("add_user", Effect::Admin),
            ("update_config", Effect::Admin),
            ("mcp.iam.set_role", Effect::Admin),
        ] {
            assert_eq!(class(name), want, "{name}");
        }
    }

    #[test]
    fn tricky_names_take_their_strongest_effect() {
        // Reads and deletes: destructive beats read.
        assert_eq!(
            classify_name("read_and_delete"),
            (Effect::Destructive, Source::Keyword("delete"))
        );
        // Reads and writes: mutating beats read.
        assert_eq!(class("read_then_write"), Effect::Mutating);
        // Admin verbs beat everything.
        assert_eq!(class("list_and_revoke_tokens"), Effect::Admin);
        // Reading an admin thing is a read; changing it is admin.
        assert_eq!(class("list_users"), Effect::Read);
        assert_eq!(class("show_policy"), Effect::Read);
        assert_eq!(class("get_and_set_config"), Effect::Admin);
        assert_eq!(
            classify_name("user_profile"),
            (Effect::Admin, Source::Keyword("user"))
        );
        // Deleting a user is destructive (verb rules come first).
        assert_eq!(class("delete_user"), Effect::Destructive);
    }

    #[test]
    fn words_split_at_punctuation_and_camel_case() {
        assert_eq!(words("mcp.fs.list_dir"), ["mcp", "fs", "list", "dir"]);
        assert_eq!(
            words("mcp.github.listIssues"),
            ["mcp", "github", "list", "issues"]
        );
        assert_eq!(words("claude-code:Bash"), ["claude", "code", "bash"]);
        assert_eq!(words("HTTPGet"), ["httpget"]);
        // Keywords match whole words only: `reader`, `getaway`, `settle` are not verbs.
        assert_eq!(class("reader"), Effect::Mutating);
        assert_eq!(class("getaway"), Effect::Mutating);
        assert_eq!(classify_name("settle"), (Effect::Mutating, Source::Default));
        assert_eq!(class("mcp.fs.readFile"), Effect::Read);
    }

    #[test]
    fn unknown_names_are_mutating() {
        assert_eq!(
            classify_name("frobnicate"),
            (Effect::Mutating, Source::Default)
        );
        assert_eq!(classify_name(""), (Effect::Mutating, Source::Default));
    }

    #[test]
    fn the_policy_overrides_the_name() {
        assert_eq!(
            classify("send_email", Some(Effect::Read), false),
            (Effect::Read, Source::Declared)
        );
        // `destructive = true` makes an action destructive whatever its name.
        assert_eq!(
            classify("read_chart", None, true),
            (Effect::Destructive, Source::DestructiveFlag)
        );
        // A declared class wins over the flag (compile refuses the contradictions).
        assert_eq!(
            classify("x", Some(Effect::Admin), true),
            (Effect::Admin, Source::Declared)
        );
        assert!(contradicts_destructive(Effect::Read));
        assert!(contradicts_destructive(Effect::Mutating));
        assert!(!contradicts_destructive(Effect::Destructive));
        assert!(!contradicts_destructive(Effect::Admin));
    }

    #[test]
    fn names_round_trip() {
        for e in [
            Effect::Read,
            Effect::Mutating,
            Effect::Destructive,
            Effect::Admin,
        ] {
            assert_eq!(Effect::parse(e.as_str()), Some(e));
        }
        assert_eq!(Effect::parse("Read"), None);
        assert_eq!(Effect::parse("write"), None);
    }
}
