//! The tool side of the demo agent: small programs the runner executes bound
//! to an allowed call, so the kernel checks what they really touch.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use anyhow::Context as _;
use clap::Subcommand;

/// Where the demo's fixtures listen (see the demo policy's grant templates).
const SMTP_RELAY: &str = "127.0.0.1:25";
const MCP_SERVER: &str = "127.0.0.1:8765";

/// One tool.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Print a file.
    ReadFile { path: String },
    /// Write a file.
    WriteFile { path: String, content: String },
    /// Hand a message to the local mail relay.
    SendEmail {
        #[arg(long)]
        to: String,
        #[arg(long)]
        subject: String,
    },
    /// Call a tool on the MCP server.
    Mcp {
        #[arg(long)]
        server: String,
        #[arg(long)]
        tool: String,
    },
}

/// Runs one tool; errors exit non-zero with the reason.
pub fn run(tool: Tool) -> anyhow::Result<()> {
    match tool {
        Tool::ReadFile { path } => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("open {path}"))?;
            let first = text.lines().next().unwrap_or("");
            println!("read {} bytes from {path}: {first}", text.len());
        }
        Tool::WriteFile { path, content } => {
            std::fs::write(&path, content).with_context(|| format!("write {path}"))?;
            println!("wrote {path}");
        }
        Tool::SendEmail { to, subject } => {
            let reply = exchange(SMTP_RELAY, &format!("MAIL TO:<{to}> SUBJECT:{subject}\n"))?;
            println!("relay: {reply}");
        }
        Tool::Mcp { server, tool } => {
            let req = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                          "params": { "server": server, "name": tool } });
            let reply = exchange(MCP_SERVER, &format!("{req}\n"))?;
            println!("mcp: {reply}");
        }
    }
    Ok(())
}

fn exchange(addr: &str, line: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(line.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply.trim().to_string())
}
