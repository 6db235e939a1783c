//! The proxy's loopback TCP listener: the caller is the agent whose cgroup
//! created the connecting socket (the kernel says, via sock_diag), never a
//! token. Outside every agent the listener refuses, in the provider's
//! shape, and forwards nothing; inside one, the same SDK loop as on the
//! Unix socket is decided, recorded under the agent, and its allowed call's
//! grant is claimed in the kernel by the loop's own child.
use std::io::{Read as _, Write as _};
use std::time::Duration;

use serde_json::{json, Value};

use super::{step, Suite, AGENT};

/// One check: name, outcome, and what was seen when it failed.
pub type Check = (String, bool, String);

/// One raw HTTP/1.1 request to the loopback listener: (status, body).
fn raw_tcp(port: u16, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1).to_owned();
    Ok((status, body))
}

/// The checks (rewrite mode).
pub fn checks(s: &Suite) -> Vec<Check> {
    let mut out = Vec::new();
    // Outside every agent (this root process): refused, nothing forwarded.
    let before = s.upstream.requests().len();
    let chat = raw_tcp(
        s.tcp_port,
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let msgs = raw_tcp(
        s.tcp_port,
        "/v1/messages",
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let after = s.upstream.requests().len();
    out.push((
        "forward tcp: outside every agent the loopback listener refuses (403, the provider's shape) and forwards nothing".into(),
        matches!(&chat, Ok((403, b)) if b.contains("permission_denied"))
            && matches!(&msgs, Ok((403, b)) if b.contains("permission_error"))
            && before == after,
        format!("{chat:?} {msgs:?}; upstream {before}->{after}"),
    ));
    // Inside the agent: the loop over TCP, an allowed Responses call it runs.
    let mut allow = step(
        "tcp-allow",
        "responses",
        true,
        &json!({ "text": "checking over tcp",
            "calls": [{ "name": "exec_command", "input": { "cmd": format!("ls {}", s.root.display()) } }] }),
    );
    allow["run"] = json!(true);
    let (lines, output) = match s.client_in_agent_tcp(&json!([allow])) {
        Ok(x) => x,
        Err(e) => {
            out.push((
                "forward tcp in agent: SDK client".into(),
                false,
                format!("{e:#}"),
            ));
            return out;
        }
    };
    let l = lines
        .iter()
        .find(|l| l["name"] == "tcp-allow")
        .cloned()
        .unwrap_or(Value::Null);
    let calls = s.call_rows().unwrap_or_default();
    let allow_row = calls
        .iter()
        .rev()
        .find(|c| c["decision"] == "allow" && c["action"] == "shell");
    let kernel = s.agentd.kernel_rows(AGENT).unwrap_or_default();
    let claimed = allow_row.is_some_and(|a| {
        kernel.iter().any(|k| {
            k["decision"] == "allow"
                && k["call_id"] == a["call_id"]
                && k["target"].as_str().is_some_and(|t| t.ends_with("/ls"))
        })
    });
    let named = s.exchange_rows().unwrap_or_default().iter().any(|x| {
        x["target"]
            .as_str()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .is_some_and(|t| t["agent"] == AGENT && t["provider"] == "openai_responses")
    });
    out.push((
        "forward tcp in agent: the caller is named by its socket's cgroup; the allowed call runs and its exec claims the grant".into(),
        l["ok"] == true && l["ran"][0]["rc"] == 0 && claimed && named,
        format!("{l}; decision {allow_row:?}; claimed {claimed}; exchange names the agent {named}; {output}"),
    ));
    out
}
