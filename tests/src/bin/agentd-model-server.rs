//! `agentd-model-server`: the scripted model server on loopback (see
//! `agentd_tests::model_server`), for trying a runtime by hand or as a fake
//! upstream. Prints `listening http://127.0.0.1:PORT`, then one JSON line per
//! request it receives.
//!
//! `agentd-model-server [--port N] [--shell CMD | --tool NAME JSON | --text T]…`
//! (the turns in order; after the last it answers "done.").
use agentd_tests::model_server::{ModelServer, Script, Turn};

fn main() -> anyhow::Result<()> {
    let mut port = 0u16;
    let mut turns = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs {what}"))
        };
        match a.as_str() {
            "--port" => port = value("a port")?.parse()?,
            "--shell" => turns.push(Turn::Shell(value("a command")?)),
            "--text" => turns.push(Turn::Text(value("a text")?)),
            "--tool" => {
                let name = value("a tool name")?;
                let input = serde_json::from_str(&value("a JSON input")?)?;
                turns.push(Turn::Tool { name, input });
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let server = ModelServer::start(Script(turns), port)?;
    println!("listening {}", server.url());
    let mut seen = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let reqs = server.requests();
        for r in &reqs[seen..] {
            let line = serde_json::json!({
                "provider": format!("{:?}", r.provider), "method": r.method, "uri": r.uri,
                "tool_results": r.tool_results().iter().map(|t| &t.text).collect::<Vec<_>>(),
            });
            println!("{line}");
        }
        seen = reqs.len();
    }
}
