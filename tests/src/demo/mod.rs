//! The ownership scenario end to end on embedded defaults — a temporary
//! state directory, the demo policy, the backend `agentd doctor` picks —
//! ending with the audit chain and receipts verified. The `agentd-demo`
//! binary runs it (`cargo xtask demo` builds and starts that binary, on the
//! host or, with `--vm`, inside the BPF LSM VM); the console's browser suite
//! plays the same scenario ([`World`]) and shows its calls.
use std::{path::PathBuf, sync::atomic::Ordering, time::Instant};

use anyhow::bail;

mod fixtures;
mod narrate;
mod processes;
mod scenario;
mod table;
mod world;

pub use scenario::{Expect, Sender, Step, OPERATORS, STEPS};
pub use world::{tied_denial, Played, World};

use world::output;

/// The scripted agent's name (`agentctl run --agent`).
pub const DEMO_AGENT: &str = "demo";

/// The demo policy, embedded so the demo runs anywhere its binaries do.
pub const DEMO_POLICY: &str = include_str!("../../../policies/demo.toml");

/// Runs the demo with the binaries in `bin` (agentd, agentctl, demo-agent)
/// and its state under `work_dir`. Returns the summary; an error or any
/// deviation from the scenario is `Err`.
pub fn run(bin: PathBuf, work_dir: PathBuf) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut w = World::start(bin, work_dir, "", true)?;
    let played = w.play()?;
    let mut deviations = played.deviations.clone();

    println!();
    w.l.step("demo: the owner's export of the audit log (agentctl audit export --format jsonl)");
    let rows = w.audit_rows()?;
    table::print(&rows);
    for (id, target) in played.bound_blocked_calls() {
        if let Some(row) = world::tied_denial(&rows, &id, target) {
            w.l.line(&format!(
                "call {id}: allowed by the gateway; its tool's open of {target} refused by the kernel (row {}, {}, carries the call's id)",
                row["seq"], row["reason_code"].as_str().unwrap_or("")
            ));
        }
    }
    deviations.extend(played.untied_denials(&rows));
    for want in STEPS.iter().flat_map(|s| s.expect) {
        if let Expect::KernelRefused { target, reason } = *want {
            if let Some(row) = world::kernel_refusal(&rows, target, reason) {
                w.l.line(&format!(
                    "the runtime's direct write of {target}: refused by the kernel (row {}, {})",
                    row["seq"],
                    row["reason_code"].as_str().unwrap_or("")
                ));
            }
        }
    }
    deviations.extend(played.kernel_refusals(&rows));
    deviations.extend(played.untied_escalations(&rows));

    w.l.step("demo: waiting for the receipt worker (receipts render off the decision path)");
    let receipts = w.daemon.wait_for_receipts(&w.l, &rows)?;
    w.l.line(&format!("{} receipts rendered", receipts.len()));
    w.daemon.stop()?;
    deviations.extend(verify_offline(&w, &receipts)?);
    deviations.extend(relay_traffic(&w));
    drop(w);

    let count = |kind: &str, decision: &str| {
        rows.iter()
            .filter(|r| r["kind"] == kind && r["decision"] == decision)
            .count()
    };
    println!();
    let summary = format!(
        "demo summary: {} steps in {:.1} s; {} audit records — tool calls {} allowed / {} denied \
         ({} escalated to a person), messages {} verified / {} refused or untrusted, kernel {} denied; \
         {} receipts verified",
        STEPS.len(),
        started.elapsed().as_secs_f64(),
        rows.len(),
        count("tool_call", "allow"),
        count("tool_call", "deny"),
        count("tool_call", "escalate"),
        count("message", "allow"),
        count("message", "deny"),
        count("kernel", "deny"),
        receipts.len(),
    );
    println!("{summary}");
    if !deviations.is_empty() {
        println!("DEVIATIONS:");
        for d in &deviations {
            println!("  - {d}");
        }
        bail!("{} outcome(s) deviated from the scenario", deviations.len());
    }
    println!("every outcome is as expected; the audit chain and all receipts verify");
    Ok(summary)
}

/// `agentctl audit verify` on the database file with the exported public
/// key, and `agentctl receipt verify` on every receipt (agentd stopped).
fn verify_offline(w: &World, receipts: &[(PathBuf, String)]) -> anyhow::Result<Vec<String>> {
    let l = &w.l;
    let mut deviations = Vec::new();
    l.step("demo: agentctl audit verify (offline: the database file and the exported public key)");
    let pem = output(
        l.agentctl()
            .args(["audit", "public-key", "--state-dir"])
            .arg(&l.state),
    )?;
    std::fs::write(l.dir.join("audit-public.pem"), pem)?;
    let verified = l
        .agentctl()
        .args(["audit", "verify", "--db"])
        .arg(l.state.join("audit.db"))
        .arg("--public-key")
        .arg(l.dir.join("audit-public.pem"))
        .status()?;
    if !verified.success() {
        deviations.push("audit verify failed".into());
    }

    l.step("demo: agentctl receipt verify, for every receipt");
    for (path, operator) in receipts {
        let ok = l
            .agentctl()
            .args(["receipt", "verify"])
            .arg(path)
            .arg("--key-file")
            .arg(l.keys.join(format!("{operator}.key")))
            .status()?
            .success();
        if !ok {
            deviations.push(format!("receipt {} did not verify", path.display()));
        }
    }
    Ok(deviations)
}

/// What really left the agent: only allowed, bound tools reach the relays.
fn relay_traffic(w: &World) -> Vec<String> {
    let want_mail = count_expected(|e| {
        matches!(
            e,
            Expect::ToolOk {
                action: "send_email"
            }
        )
    });
    let want_mcp = count_expected(|e| {
        matches!(
            e,
            Expect::ToolOk {
                action: "mcp.tool_call"
            }
        )
    });
    let mail = w.fixtures.relayed.load(Ordering::Relaxed);
    let mcp = w.fixtures.mcp_calls.load(Ordering::Relaxed);
    w.l.line(&format!("the mail relay accepted {mail} message(s) (expected {want_mail}); the MCP server answered {mcp} call(s) (expected {want_mcp})"));
    if mail != want_mail || mcp != want_mcp {
        vec![format!(
            "relay traffic {mail}/{mcp}, expected {want_mail}/{want_mcp}"
        )]
    } else {
        Vec::new()
    }
}

fn count_expected(pred: impl Fn(&Expect) -> bool) -> usize {
    STEPS
        .iter()
        .flat_map(|s| s.expect.iter())
        .filter(|e| pred(e))
        .count()
}
