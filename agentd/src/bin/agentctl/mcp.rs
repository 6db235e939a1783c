//! `agentctl mcp proxy --agent NAME [--server NAME] -- SERVER-CMD…`: what a
//! runtime configures in place of an MCP server's command. It asks agentd
//! (`POST /v1/mcp/stdio`, upgraded) to start the server and then only
//! relays bytes: stdin to agentd, agentd to stdout. agentd starts the
//! server, decides every call and holds the server to it; nothing this
//! process does can reach the server except through those decisions.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;

use crate::SocketArg;
use agentd::api::client::blocking;
use agentd::mcp::{self, OpenRequest};
use anyhow::{bail, Context as _};
use axum::http::Method;

/// `agentctl mcp`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Relay an MCP server's stdio through agentd, which starts the server.
    Proxy(ProxyArgs),
    /// List the pinned MCP tool definitions (admin).
    Pins {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Approve a tool's changed definition (admin).
    Approve {
        #[command(flatten)]
        socket: SocketArg,
        /// Agent.
        #[arg(long)]
        agent: String,
        /// Server name.
        #[arg(long)]
        server: String,
        /// MCP tool name.
        #[arg(long)]
        tool: String,
    },
}

/// `agentctl mcp proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// The agent the server works for.
    #[arg(long)]
    agent: String,
    /// The server's name in policy actions (`mcp.<server>.<tool>`);
    /// default: the command's file name, lowercased.
    #[arg(long)]
    server: Option<String>,
    /// How long one request may wait for the server, in milliseconds.
    #[arg(long)]
    call_timeout_ms: Option<u64>,
    /// The MCP server command.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs `agentctl mcp`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        Cmd::Proxy(a) => proxy(a),
        Cmd::Pins { socket } => {
            let list: agentd::api::mcp_routes::PinList =
                blocking(&socket.path(), |mut c| async move {
                    c.get("/v1/mcp/pins").await
                })?;
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(())
        }
        Cmd::Approve {
            socket,
            agent,
            server,
            tool,
        } => {
            let body = agentd::api::mcp_routes::ApprovePin {
                agent,
                server,
                tool,
            };
            let pin: agentd::mcp::pins::Pin = blocking(&socket.path(), |mut c| async move {
                c.call(Method::POST, "/v1/mcp/pins/approve", Some(&body))
                    .await
            })?;
            println!(
                "approved {}/{}/{}: sha256 {}",
                pin.agent, pin.server, pin.tool, pin.sha256
            );
            Ok(())
        }
    }
}

/// The default server name: the command's file name, lowercased, with
/// other characters as `_`, cut to fit.
fn default_server(command: &str) -> String {
    let base = command.rsplit('/').next().unwrap_or(command);
    let s: String = base
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(mcp::naming::MAX_SERVER)
        .collect();
    if s.is_empty() {
        "server".into()
    } else {
        s
    }
}

fn proxy(a: ProxyArgs) -> anyhow::Result<()> {
    let server = a.server.unwrap_or_else(|| default_server(&a.command[0]));
    let open = OpenRequest {
        agent: a.agent,
        server,
        command: a.command,
        active_message_id: std::env::var("AGENTD_ACTIVE_MESSAGE")
            .ok()
            .filter(|s| !s.is_empty()),
        call_timeout_ms: a.call_timeout_ms,
    };
    let (conn, buffered) = open_session(&a.socket.path(), &open)?;
    // stdin → agentd on a thread; agentd → stdout here. When the runtime
    // closes stdin, agentd hears EOF and ends the session.
    let up = conn.try_clone()?;
    std::thread::spawn(move || stdin_to(up));
    to_stdout(&buffered, conn)
}

/// Asks agentd to open the session and reads its answer's head; returns
/// the upgraded connection and the relay's bytes already read past the head.
fn open_session(
    path: &std::path::Path,
    open: &OpenRequest,
) -> anyhow::Result<(UnixStream, Vec<u8>)> {
    let mut conn = UnixStream::connect(path).with_context(|| {
        format!(
            "connecting to agentd at {} (agentd_unreachable)",
            path.display()
        )
    })?;
    let body = serde_json::to_vec(open)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: agentd\r\nConnection: Upgrade\r\nUpgrade: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        mcp::STDIO_ROUTE,
        mcp::UPGRADE_PROTOCOL,
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(&body)?;
    // The answer's head, byte by byte up to the blank line: whatever follows
    // it is already the relay's.
    let mut reader = BufReader::new(conn.try_clone()?);
    let (status, length) = read_head(&mut reader)?;
    if status.split_whitespace().nth(1) != Some("101") {
        let mut body = vec![0u8; length.min(64 * 1024)];
        let _ = reader.read_exact(&mut body);
        bail!(
            "agentd refused the MCP session: {} {}",
            status.trim_end(),
            String::from_utf8_lossy(&body)
        );
    }
    let buffered = reader.buffer().to_vec();
    Ok((conn, buffered))
}

/// An HTTP answer's status line and Content-Length (0 if absent).
fn read_head(reader: &mut BufReader<UnixStream>) -> anyhow::Result<(String, usize)> {
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("agentd closed the connection (agentd_unreachable)");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    Ok((status, length))
}

/// Copies stdin to agentd until either ends, then shuts the write side
/// (agentd's EOF).
fn stdin_to(mut up: UnixStream) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if up.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = up.shutdown(std::net::Shutdown::Write);
}

/// Copies agentd's side to stdout (flushed as it comes) until agentd ends
/// the session; `buffered`, read past the head, comes first.
fn to_stdout(buffered: &[u8], mut down: UnixStream) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    if !buffered.is_empty() {
        stdout.write_all(buffered)?;
        stdout.flush()?;
    }
    loop {
        match down.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                stdout.write_all(&buf[..n])?;
                stdout.flush()?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading from agentd"),
        }
    }
    Ok(())
}
