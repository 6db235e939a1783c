//! MCP tool names → policy action names, and the prefixes of every MCP
//! action. Below the policy, the config and the MCP gateway, which all
//! check these names (`mcp::naming` is this module).
//!
//! MCP tool names are mixed-case and up to 128 characters; policy action
//! names are 1–64 characters of `[a-z0-9_.-]`. A tool `T` of server `S`
//! becomes the action `mcp.S.T'`, where `S` is a server name (1–20
//! characters of `[a-z0-9_-]`, no dot, so the first dot after `mcp.` always
//! ends it) and `T'` is:
//!
//! - `T` itself, when `T` is already all `[a-z0-9_.-]`, fits the length
//!   left (`64 - 5 - len(S)`), and does not end in the hashed form's suffix
//!   (`--` and 12 lowercase hex digits);
//! - otherwise `P--H`: `P` is `T` lowercased with every other character
//!   replaced by `_`, cut to leave room for the suffix, and `H` is the first
//!   12 hex digits of SHA-256(`T`).
//!
//! Two distinct tools of one server therefore never share an action: kept
//! names are distinct by themselves; a kept name never ends in the suffix
//! every hashed name ends in; two hashed names collide only if their
//! SHA-256 prefixes do (48 bits) — and the gateway refuses a `tools/list`
//! in which that happens (`mcp_tool_name_collision`) instead of trusting the
//! odds.
use sha2::{Digest, Sha256};

/// Prefix of every MCP action.
pub const ACTION_PREFIX: &str = "mcp.";
/// Prefix of resource-read actions (`mcp_resource.<server>.read`).
pub const RESOURCE_PREFIX: &str = "mcp_resource.";
/// Prefix of prompt-get actions (`mcp_prompt.<server>.get`).
pub const PROMPT_PREFIX: &str = "mcp_prompt.";
/// Prefix of the actions of server-initiated requests (apart from tools:
/// no tool name can produce it).
pub const SERVER_REQUEST_PREFIX: &str = "mcp_request.";
/// Longest action name (as the policy compiler allows).
pub const MAX_ACTION: usize = 64;
/// Longest server name.
pub const MAX_SERVER: usize = 20;
/// Longest MCP tool name accepted (the MCP specification's limit).
pub const MAX_TOOL: usize = 128;
/// Hex digits of the hash suffix.
const HASH_HEX: usize = 12;
/// `--` + the hex digits.
const SUFFIX_LEN: usize = 2 + HASH_HEX;

/// Why a name cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamingError {
    /// The server name is not 1–20 characters of `[a-z0-9_-]`.
    #[error("MCP server name `{server}` must be 1-{MAX_SERVER} characters of [a-z0-9_-]")]
    BadServer {
        /// The name given.
        server: String,
    },
    /// The tool name is empty or longer than 128 bytes.
    #[error("MCP tool name of {len} bytes (1-{MAX_TOOL} allowed)")]
    BadTool {
        /// Its length.
        len: usize,
    },
}

/// Checks a server name (`agentctl mcp proxy --server NAME`).
pub fn check_server(server: &str) -> Result<(), NamingError> {
    let ok = !server.is_empty()
        && server.len() <= MAX_SERVER
        && server
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NamingError::BadServer {
            server: server.chars().take(64).collect(),
        })
    }
}

fn action_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
}

/// Whether `s` ends in `--` and [`HASH_HEX`] lowercase hex digits.
fn has_hash_suffix(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= SUFFIX_LEN
        && &b[b.len() - SUFFIX_LEN..b.len() - HASH_HEX] == b"--"
        && b[b.len() - HASH_HEX..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// The action of `tool` on `server` (see the module doc for the rule).
pub fn action_of(server: &str, tool: &str) -> Result<String, NamingError> {
    check_server(server)?;
    if tool.is_empty() || tool.len() > MAX_TOOL {
        return Err(NamingError::BadTool { len: tool.len() });
    }
    let room = MAX_ACTION - ACTION_PREFIX.len() - server.len() - 1;
    let kept = tool.len() <= room && tool.bytes().all(action_char) && !has_hash_suffix(tool);
    let part = if kept {
        tool.to_owned()
    } else {
        let mut p: String = tool
            .chars()
            .map(|c| {
                let l = c.to_ascii_lowercase();
                if l.is_ascii() && action_char(l as u8) {
                    l
                } else {
                    '_'
                }
            })
            .collect();
        p.truncate(room - SUFFIX_LEN);
        let h = hex::encode(Sha256::digest(tool.as_bytes()));
        format!("{p}--{}", &h[..HASH_HEX])
    };
    Ok(format!("{ACTION_PREFIX}{server}.{part}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_action(a: &str) -> bool {
        !a.is_empty() && a.len() <= MAX_ACTION && a.bytes().all(action_char)
    }

    #[test]
    fn plain_names_are_kept() {
        assert_eq!(
            action_of("crm", "find_contact").unwrap(),
            "mcp.crm.find_contact"
        );
        assert_eq!(
            action_of("fs", "read.file-2").unwrap(),
            "mcp.fs.read.file-2"
        );
    }

    #[test]
    fn mixed_case_long_and_odd_names_are_hashed() {
        let a = action_of("crm", "FindContact").unwrap();
        assert!(a.starts_with("mcp.crm.findcontact--"), "{a}");
        assert!(valid_action(&a));
        let long = "x".repeat(128);
        let a = action_of("crm", &long).unwrap();
        assert_eq!(a.len(), MAX_ACTION);
        assert!(valid_action(&a));
        let a = action_of("s", "héllo wörld/√").unwrap();
        assert!(valid_action(&a), "{a}");
    }

    #[test]
    fn a_name_that_looks_hashed_is_hashed_again() {
        let hashed = action_of("crm", "FindContact").unwrap();
        let tool = hashed.strip_prefix("mcp.crm.").unwrap();
        // The lowercase look-alike maps elsewhere.
        let again = action_of("crm", tool).unwrap();
        assert_ne!(again, hashed);
        assert!(valid_action(&again));
    }

    #[test]
    fn distinct_tools_never_share_an_action() {
        // Names built to collide on every lossy step: case, replaced
        // characters, truncation, and kept names shaped like hashed ones.
        let mut tools: Vec<String> = vec![
            "find".into(),
            "Find".into(),
            "FIND".into(),
            "fInd".into(),
            "find!".into(),
            "find?".into(),
            "find_".into(),
            "find ".into(),
            "fïnd".into(),
        ];
        let base = "a".repeat(60);
        for tail in ["", "b", "B", "c", "bb", "bB"] {
            tools.push(format!("{base}{tail}"));
            tools.push(format!("{}{tail}", base.to_uppercase()));
        }
        for t in tools.clone() {
            let a = action_of("srv", &t).unwrap();
            tools.push(a.strip_prefix("mcp.srv.").unwrap().to_owned());
        }
        for i in 0..2000 {
            tools.push(format!("Tool{i}"));
            tools.push(format!("tool{i}"));
        }
        tools.sort();
        tools.dedup();
        let mut seen = std::collections::HashMap::new();
        for t in &tools {
            let a = action_of("srv", t).unwrap();
            assert!(valid_action(&a), "{a}");
            if let Some(prev) = seen.insert(a.clone(), t.clone()) {
                panic!("`{prev}` and `{t}` both map to `{a}`");
            }
        }
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(action_of("CRM", "x").is_err());
        assert!(action_of("a.b", "x").is_err());
        assert!(action_of("", "x").is_err());
        assert!(action_of(&"s".repeat(21), "x").is_err());
        assert!(action_of("s", "").is_err());
        assert!(action_of("s", &"x".repeat(129)).is_err());
        // The longest server still leaves room for a hashed tool.
        let a = action_of(&"s".repeat(20), &"T".repeat(128)).unwrap();
        assert!(valid_action(&a));
    }
}
