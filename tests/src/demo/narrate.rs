//! The demo's story on stdout: one line per event of the scripted agent.
use serde_json::Value;

/// Prints one agent event under the current step.
pub(super) fn event(e: &Value) {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    match e["event"].as_str().unwrap_or("") {
        "ingested" => println!(
            "    agent runtime hands the inbox message to agentd: trust {} ({})",
            s("trust"),
            s("reason_code")
        ),
        "thought" => println!("    agent thinks: {}", s("text")),
        "decision" => println!(
            "    agentd decides {} {} → {} ({}) in {} µs",
            s("action"),
            s("target"),
            s("decision").to_uppercase(),
            s("reason_code"),
            e["latency_us"]
        ),
        "tool_result" => println!(
            "    tool {} {}: {}",
            s("action"),
            match (
                e["ok"] == true,
                s("output").contains("Operation not permitted")
            ) {
                (true, _) => "ran",
                (false, true) => "refused by the kernel",
                (false, false) => "FAILED",
            },
            s("output")
        ),
        "direct_attempt" => println!(
            "    runtime runs {:?} directly → {}{}",
            e["argv"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default(),
            s("outcome"),
            if e["blocked"] == true {
                " (stopped by the kernel)"
            } else {
                ""
            }
        ),
        "escalated" => {
            let id = s("approval_id");
            let short = &id[..12.min(id.len())];
            let elevation = match e["elevation"]["actions"].as_array() {
                Some(a) => format!(
                    " — to elevate the read-only session for {}",
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            };
            println!(
                "    agentd escalates {} ({}): approval {short} waits for a person{elevation}",
                s("action"),
                s("reason_code")
            );
            println!(
                "    an administrator approves it: agentctl approvals approve {short}… --reason {:?}",
                s("why")
            );
        }
        "error" => println!("    agent error: {}", s("message")),
        _ => {}
    }
}
