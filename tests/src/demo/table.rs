//! The final audit table.
use serde_json::Value;

/// Prints time, principal, action, target, latency, decision, hash prefix, reason.
pub fn print(rows: &[Value]) {
    println!(
        "  {:>4} {:<15} {:<10} {:<22} {:<34} {:>8} {:<10} {:<12} reason",
        "seq", "time", "principal", "action", "target", "µs", "decision", "hash"
    );
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let time = s("timestamp");
        let time = time.get(11..26).unwrap_or(&time).to_string();
        let principal = match s("operator") {
            p if p.is_empty() => s("kind"),
            p => p,
        };
        println!(
            "  {:>4} {:<15} {:<10} {:<22} {:<34} {:>8} {:<10} {:<12} {}",
            r["seq"].as_u64().unwrap_or(0),
            time,
            clip(&principal, 10),
            clip(&s("action"), 22),
            clip(&concise(&s("target")), 34),
            r["latency_us"].as_u64().unwrap_or(0),
            s("decision"),
            clip(&s("hash"), 12),
            s("reason_code")
        );
    }
}

/// Tool-call targets are the arguments as JSON (after `approval:ID
/// deadline:T …` on an escalation's row); show the part that matters.
fn concise(target: &str) -> String {
    let json = match target.find('{') {
        Some(i) if target.starts_with("approval:") => &target[i..],
        _ => target,
    };
    let Ok(Value::Object(args)) = serde_json::from_str::<Value>(json) else {
        return target.to_string();
    };
    for key in [
        "command", "path", "to", "mailbox", "server", "format", "invoice",
    ] {
        match args.get(key) {
            Some(Value::Array(items)) => {
                return items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            Some(Value::String(v)) => return v.clone(),
            _ => {}
        }
    }
    target.to_string()
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
