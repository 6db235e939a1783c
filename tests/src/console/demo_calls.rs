//! The demo's calls in the console: the ownership scenario ([`crate::demo`],
//! the same steps, fixtures and scripted agent `cargo xtask demo` plays)
//! played against an agentd with the console on, then looked at in the
//! browser — the audit stream with the demo's allowed and denied calls and
//! their reasons, the call whose bound tool the kernel refused (the denial
//! tied to the call), and a receipt card with its verification. What each
//! screenshot must show is asserted in the page (DOM text) before it is taken.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use super::{cdp, js_str, HEIGHT, WIDTH};
use crate::demo::{Expect, Played, World, STEPS};
use crate::sdk_suite::Report;

/// Plays the demo under `root` and checks what the console shows of it.
pub fn run(bin: &Path, chromium: &Path, root: &Path, shots: &Path, r: &mut Report) {
    if let Err(e) = play_and_look(bin, chromium, root, shots, r) {
        r.check(
            "console (demo): the demo's calls in the browser",
            false,
            || format!("{e:#}"),
        );
    }
}

fn play_and_look(
    bin: &Path,
    chromium: &Path,
    root: &Path,
    shots: &Path,
    r: &mut Report,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let extra = format!("\n[console]\nlisten = \"127.0.0.1:{port}\"\n");
    let world = World::start(bin.to_path_buf(), root.join("demo"), &extra, false)?;
    let played = world.play()?;
    let rows = world.audit_rows()?;
    let untied = played.untied_denials(&rows);
    r.check(
        &format!(
            "console (demo): the demo's {} steps play as scripted against the console's agentd, \
             the kernel's refusal of the bound tool tied to its call",
            STEPS.len()
        ),
        played.deviations.is_empty() && untied.is_empty(),
        || format!("{:?} {untied:?}", played.deviations),
    );
    let link: Value = serde_json::from_slice(
        &world
            .agentctl()
            .args(["console", "--json"])
            .output()?
            .stdout,
    )
    .context("agentctl console --json")?;
    let link = link["url"].as_str().context("no login link")?;
    let mut b = cdp::Browser::launch(chromium, root, WIDTH, HEIGHT)?;
    b.navigate(link)?;
    b.wait_for(
        "location.pathname === '/' && document.getElementById('stream-state')?.textContent === 'live'",
        Duration::from_secs(20),
    )?;
    stream(&mut b, &played, shots, r);
    kernel_denial(&mut b, &played, shots, r);
    receipt(&mut b, &played, shots, r);
    Ok(())
}

/// The stream lists every tool call the demo makes, with its decision and
/// reason, and the kernel's denials.
fn stream(b: &mut cdp::Browser, played: &Played, shots: &Path, r: &mut Report) {
    let want: Vec<String> = STEPS
        .iter()
        .flat_map(|s| s.expect)
        .filter_map(|e| match *e {
            Expect::Decision {
                action,
                decision,
                reason,
            } => Some(format!("{action} {decision} {reason}")),
            // The escalation's own row, before the call's decision.
            Expect::Escalated { action, reason } => Some(format!("{action} escalate {reason}")),
            _ => None,
        })
        .collect();
    let kernel_denials = STEPS
        .iter()
        .flat_map(|s| s.expect)
        .filter(|e| matches!(e, Expect::DirectBlocked | Expect::BoundBlocked { .. }))
        .count();
    let tied: Vec<Value> = played
        .bound_blocked_calls()
        .into_iter()
        .map(|(id, target)| json!([id, target]))
        .collect();
    // Columns: seq, time, kind, operator, agent, action, target, decision, reason, hash, call.
    let expr = format!(
        "(() => {{ const want = {want}; const tied = {tied}; \
           const rows = [...document.querySelectorAll('#rows tbody tr')].map(tr => \
             ({{ cells: [...tr.children].map(td => td.textContent), call: tr.dataset.call, title: tr.querySelector('td.target')?.title }})); \
           const calls = rows.filter(x => x.cells[2] === 'tool_call').map(x => [x.cells[5], x.cells[7], x.cells[8]].join(' ')); \
           const missing = want.filter(w => {{ const i = calls.indexOf(w); if (i < 0) return true; calls.splice(i, 1); return false; }}); \
           const denied = rows.filter(x => x.cells[2] === 'kernel' && x.cells[7] === 'deny'); \
           const linked = tied.every(([id, target]) => denied.some(x => x.call === id \
             && (x.title === target || x.title === target.split('/').pop()))); \
           return missing.length === 0 && calls.length === 0 && denied.length >= {kernel_denials} && linked \
             && {{ calls: want.length, kernel_denied: denied.length }}; }})()",
        want = serde_json::to_string(&want).unwrap_or_default(),
        tied = Value::Array(tied),
    );
    let seen = b.wait_for(&expr, Duration::from_secs(20));
    r.check(
        &format!(
            "console (demo): the stream lists the demo's {} tool calls with their decisions and reasons, \
             and the kernel's denials (the bound tool's linked to its call)",
            want.len()
        ),
        seen.is_ok(),
        || format!("{seen:?}; wanted {want:?}"),
    );
    shot_full(b, shots, "demo-stream");
}

/// The call whose bound tool the kernel refused: allowed by the gateway,
/// the kernel's denial of what the tool really opened listed on its page.
fn kernel_denial(b: &mut cdp::Browser, played: &Played, shots: &Path, r: &mut Report) {
    let Some((id, target)) = played.bound_blocked_calls().into_iter().next() else {
        r.check(
            "console (demo): the call the kernel refused is on the page",
            false,
            || "the demo produced no bound tool refused by the kernel".into(),
        );
        return;
    };
    let receipt = open_call(b, &id);
    let page = b.wait_for(
        &format!(
            "(() => {{ const body = document.getElementById('call-body'); \
               const denied = [...body.querySelectorAll('table.rows tbody tr.d-deny td.target')].map(td => td.textContent); \
               return (document.getElementById('call-verdict')?.textContent || '').startsWith('ALLOW') \
                 && document.getElementById('call-signature')?.textContent === 'verified' \
                 && (denied.includes({target}) || denied.includes({name})) \
                 && {{ target: document.getElementById('call-target').textContent, denied }}; }})()",
            target = js_str(target),
            name = js_str(target.rsplit('/').next().unwrap_or(target))
        ),
        Duration::from_secs(15),
    );
    r.check(
        &format!(
            "console (demo): the member's call is allowed by the gateway, and its page lists the kernel's denial of {target} (tied by the call's id) and its receipt ({receipt})"
        ),
        page.is_ok() && receipt == "verified",
        || format!("{page:?}; receipt {receipt}"),
    );
    shot_full(b, shots, "demo-call-kernel-denial");
}

/// A receipt card: the owner's invoice forward, verified against its row.
fn receipt(b: &mut cdp::Browser, played: &Played, shots: &Path, r: &mut Report) {
    let Some(id) = first_tool_ok_call(played) else {
        r.check("console (demo): a receipt card", false, || {
            "no allowed call ran its tool".into()
        });
        return;
    };
    let state = open_call(b, &id);
    let card = b
        .eval(
            "(() => { const box = document.querySelector('#call-body .receipt'); if (!box) return null; \
               box.previousElementSibling.id = 'receipt-heading'; \
               const dd = [...box.querySelectorAll('dd')].map(d => d.textContent); \
               return { img: document.getElementById('receipt-image')?.naturalWidth || 0, dd }; })()",
        )
        .unwrap_or(Value::Null);
    let dd: Vec<&str> = card["dd"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    r.check(
        "console (demo): the owner's invoice forward shows its receipt card, verified (exact check pass, watermark pass, names this row)",
        state == "verified"
            && card["img"] == 256
            && dd.first() == Some(&"verified")
            && dd.get(1) == Some(&"pass")
            && dd.get(2).is_some_and(|w| w.starts_with("pass"))
            && dd.get(3) == Some(&"yes"),
        || format!("state {state}; card {card}"),
    );
    let p = shots.join("demo-receipt.png");
    match b.screenshot_of("#receipt-heading, #call-body .receipt", &p) {
        Ok(()) => println!("  screenshot {}", p.display()),
        Err(e) => println!("  (screenshot demo-receipt failed: {e:#})"),
    }
}

/// The first allowed call of the scenario whose tool ran (the owner's
/// invoice forward).
fn first_tool_ok_call(played: &Played) -> Option<String> {
    let (n, s) = STEPS
        .iter()
        .enumerate()
        .find(|(_, s)| s.expect.iter().any(|e| matches!(e, Expect::ToolOk { .. })))?;
    let Expect::ToolOk { action } = s
        .expect
        .iter()
        .find(|e| matches!(e, Expect::ToolOk { .. }))?
    else {
        return None;
    };
    played.events.get(n)?.iter().find_map(|e| {
        (e["event"] == "decision" && e["action"] == *action && e["decision"] == "allow")
            .then(|| e["call_id"].as_str().unwrap_or("").to_string())
    })
}

/// Opens a call's page and waits until its receipt is rendered and
/// checked; returns the receipt's state (`verified` when it is).
fn open_call(b: &mut cdp::Browser, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut state = Value::Null;
    while Instant::now() < deadline {
        state = b
            .eval(&format!(
                "showCall({}).then(() => document.getElementById('receipt-state')?.textContent)",
                js_str(id)
            ))
            .unwrap_or(Value::Null);
        if state == "verified" || state == "failed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = b.eval(&format!("location.hash = '#call/' + {}", js_str(id)));
    let _ = b.wait_for(
        "document.getElementById('receipt-state')?.textContent === 'verified'",
        Duration::from_secs(10),
    );
    state.as_str().unwrap_or("").to_string()
}

fn shot_full(b: &mut cdp::Browser, shots: &Path, name: &str) {
    let p = shots.join(format!("{name}.png"));
    match b.screenshot_full(&p, WIDTH, HEIGHT) {
        Ok(()) => println!("  screenshot {}", p.display()),
        Err(e) => println!("  (screenshot {name} failed: {e:#})"),
    }
}
