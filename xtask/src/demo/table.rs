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
            r["seq"],
            time,
            clip(&principal, 10),
            clip(&s("action"), 22),
            clip(&s("target"), 34),
            r["latency_us"],
            s("decision"),
            clip(&s("hash"), 12),
            s("reason_code")
        );
    }
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
