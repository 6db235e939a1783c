//! The runtime suite's policy, generated for the suite's scratch root: an
//! owner who may run `mailctl` (destructive) and write in one directory,
//! a member who may read workspace files and run `ls`/`cat` but not `curl`;
//! the owner may also call the demo MCP server's `echo`, and its `read_file`
//! in one directory.
use std::path::Path;

/// Operators enrolled for the suite: (id, role).
pub const OPERATORS: &[(&str, &str)] = &[("olivia", "owner"), ("mel", "member")];

/// The policy text for a suite rooted at `root` (`mailctl` in `root/bin`,
/// workspaces and the write-test directories below `root`).
pub fn text(root: &Path) -> String {
    let root = root.display();
    format!(
        r#"# Runtime suite policy (generated for {root}).
id = "runtimes"
description = "Real runtimes under agentd: owner and member."

[messages]
unsigned = "untrusted"
invalid = "untrusted"

[actions.shell]
description = "Run one program with arguments."
destructive_commands = ["mailctl reset"]
grant = {{ exec = ["{{arg.command}}"], ttl_secs = 60, uses = 1 }}

[actions.read_file]
description = "Read one file."
grant = {{ read = ["{{arg.path}}"], ttl_secs = 60, uses = 1 }}

[actions.write_file]
description = "Write one file."
# The directory, not the file: Claude Code's Write writes a sibling temp file
# (<path>.tmp.<pid>.<hex>) and renames it over the path. One use: the runtime
# process's mkdir, temp file and rename are one claim.
grant = {{ write = ["{root}/shared/allowed"], ttl_secs = 60, uses = 1 }}

[actions."mcp.demo.echo"]
description = "Echo text (the demo MCP server, through agentctl mcp proxy)."

[actions."mcp.demo.read_file"]
description = "Read one file through the demo MCP server."
grant = {{ read = ["{{arg.path}}"], ttl_secs = 60, uses = 1 }}

[roles.owner]
description = "Owns the mail system."
rate_per_minute = 600
destructive = true

[roles.owner.allow.shell]
command = {{ type = "command", programs = ["{root}/bin/mailctl"], scopes = ["{root}"], max_items = 8 }}

[roles.owner.allow.read_file]
path = {{ type = "path", scopes = ["{root}"] }}

[roles.owner.allow.write_file]
path = {{ type = "path", scopes = ["{root}/shared/allowed"] }}
content = {{ type = "text", max_bytes = 65536 }}

[roles.owner.allow."mcp.demo.echo"]
text = {{ type = "text", max_bytes = 1000 }}

[roles.owner.allow."mcp.demo.read_file"]
path = {{ type = "path", scopes = ["{root}/shared/allowed"] }}

[roles.member]
description = "Reads workspace files; harmless commands only."
rate_per_minute = 600

[roles.member.allow.read_file]
path = {{ type = "path", scopes = ["{root}"] }}

[roles.member.allow.shell]
command = {{ type = "command", programs = ["/usr/bin/ls", "/usr/bin/cat"], scopes = ["{root}"], max_items = 8 }}
"#
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_policy_validates() {
        let text = super::text(std::path::Path::new("/tmp/agentd-runtimes-test"));
        agentd::policy::compile(&text, "runtimes").expect("the generated policy compiles");
    }
}
