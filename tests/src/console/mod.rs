//! The web console in a real browser: a real agentd with `[console]` on,
//! Debian's headless Chromium driven over the DevTools protocol (`cdp`),
//! real tool calls (outside and inside an agent, so the kernel decides
//! too), real receipts. One `PASS`/`FAIL`/`SKIP` line per check;
//! screenshots of every view go to `target/console-screenshots/`.
//!
//! First the demo's scenario, played against its own agentd with the
//! console on (`demo_calls`): its calls, a kernel denial tied to its call
//! and a receipt, asserted in the page and screenshot.
//!
//! Then checks: the one-time link signs in (HttpOnly, SameSite=Strict cookie
//! the page cannot read) and works once; a live row appears after a tool
//! call; a denied call's page names its reason; an allowed call's page
//! shows its message, checks, grant, the kernel events tied to it (one of
//! them a denial) and its receipt, verified; HTML in audited fields (an
//! operator name, a session, tool arguments, a path the kernel refused)
//! stays text; the stream filters; a mode switch needs a confirmation token and
//! a CSRF token; a tampered database shows the break in the chain view;
//! requests without the cookie, without the CSRF token, from another
//! origin or naming another host are refused; each of these is audited; a
//! session cookie past its lifetime is refused.
pub mod cdp;
pub mod demo_calls;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agentd::enforce::Mode;
use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::sdk_suite::{in_agent, Daemon, Report};

/// The agent the in-agent call runs in.
pub const AGENT: &str = "con";

/// The browser's viewport.
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 900;

/// What an onerror payload would set if it ever ran.
const PAYLOAD: &str = "<img src=x onerror=\"window.__pwned=1\">";

/// The suite's policy: the owner may run `ls` on the scratch root and on
/// /root (so a bound `ls /root` is allowed by the gateway, and its open of
/// /root refused by the kernel: the grant execs ls and reads nothing).
pub fn policy(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"id = "console-suite"
description = "Console suite."

[messages]
unsigned = "untrusted"
invalid = "untrusted"

[actions.shell]
description = "Run one program with arguments."
grant = {{ exec = ["{{arg.command}}"], ttl_secs = 120, uses = 4 }}

[roles.owner]
description = "May list files."
rate_per_minute = 6000

[roles.owner.allow.shell]
command = {{ type = "command", programs = ["/usr/bin/ls"], scopes = ["{r}", "/root"], max_items = 8 }}

[actions.deploy]
description = "Deploy a service (a person approves each call)."
approval = "required"

[roles.owner.allow.deploy.target]
type = "string"
values = ["prod"]
"#
    )
}

/// A plain HTTP/1.1 exchange with the console (for what a browser would
/// not send): the status code and the whole answer.
pub fn http(port: u16, request: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    Ok((status, text))
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The running suite.
pub struct Suite {
    daemon: Daemon,
    root: PathBuf,
    port: u16,
    shots: PathBuf,
}

impl Suite {
    /// Starts agentd with the console on a free loopback port.
    pub fn start(bin: &Path, root: &Path, shots: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(root.join("notes.txt"), "hello\n")?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        // Checkpoints every 2 s: the chain view has a signed one to show.
        let extra = format!(
            "\n[audit]\ncheckpoint_interval_secs = 2\n[console]\nlisten = \"127.0.0.1:{port}\"\nlogin_ttl_secs = 60\n"
        );
        let daemon = Daemon::start(
            bin,
            root,
            &extra,
            &policy(root),
            "console-s",
            "list the files",
        )?;
        let mut baseline = agentd::enforce::default_baseline();
        baseline.exec.push(bin.join("agentctl"));
        baseline.read.push(bin.to_path_buf());
        baseline.read.push(root.to_path_buf());
        daemon
            .agentd
            .create_agent(AGENT, Mode::Enforce, &baseline)?;
        Ok(Suite {
            daemon,
            root: root.to_path_buf(),
            port,
            shots: shots.to_path_buf(),
        })
    }

    fn agentctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .daemon
            .agentd
            .agentctl()
            .args(args)
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            bail!(
                "agentctl {args:?}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A tool call from outside every agent (as an admin would test one);
    /// returns its decision.
    fn check(&self, command: &str) -> anyhow::Result<Value> {
        let out = self
            .daemon
            .agentd
            .agentctl()
            .args(["check", "--json", "--message", &self.daemon.active, "shell"])
            .arg(format!("command={command}"))
            .output()?;
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "agentctl check gave no decision: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn login_link(&self) -> anyhow::Result<String> {
        let v: Value = serde_json::from_str(&self.agentctl(&["console", "--json"])?)?;
        v["url"].as_str().map(String::from).context("no url")
    }

    fn confirmation(&self) -> anyhow::Result<String> {
        let v: Value =
            serde_json::from_str(&self.agentctl(&["console", "--confirm", "--json"])?)?;
        v["token"].as_str().map(String::from).context("no token")
    }

    fn audit(&self) -> Vec<Value> {
        self.daemon.agentd.audit().unwrap_or_default()
    }

    fn shot(&self, b: &mut cdp::Browser, name: &str) {
        let p = self.shots.join(format!("{name}.png"));
        match b.screenshot(&p) {
            Ok(()) => println!("  screenshot {}", p.display()),
            Err(e) => println!("  (screenshot {name} failed: {e:#})"),
        }
    }

    fn shot_full(&self, b: &mut cdp::Browser, name: &str) {
        let p = self.shots.join(format!("{name}.png"));
        match b.screenshot_full(&p, WIDTH, HEIGHT) {
            Ok(()) => println!("  screenshot {}", p.display()),
            Err(e) => println!("  (screenshot {name} failed: {e:#})"),
        }
    }

    fn mode_of(&self, agent: &str) -> Option<String> {
        let (status, body) =
            agentd::api::client::blocking(&self.daemon.agentd.socket, |mut c| async move {
                c.raw(axum::http::Method::GET, "/v1/agents", Vec::new())
                    .await
            })
            .ok()?;
        if !status.is_success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&body).ok()?;
        v.as_array()?
            .iter()
            .find(|a| a["name"] == agent)
            .and_then(|a| a["mode"].as_str().map(String::from))
    }
}

/// Runs every check.
pub fn run(bin: &Path, shots: &Path, r: &mut Report) {
    let chromium = Path::new(cdp::CHROMIUM);
    if !chromium.exists() {
        println!(
            "SKIP console: Debian's chromium is not installed at {} (run `cargo xtask setup`)",
            chromium.display()
        );
        return;
    }
    let root = std::env::temp_dir().join(format!("agentd-console-{}", std::process::id()));
    let demo_root =
        std::env::temp_dir().join(format!("agentd-console-demo-{}", std::process::id()));
    let short_root =
        std::env::temp_dir().join(format!("agentd-console-short-{}", std::process::id()));
    let started = Instant::now();
    // Three agentds, each with its own state directory (so its own kernel
    // instance): the short-session one runs its check (mostly a 3 s wait)
    // and the suite's own one starts while the demo plays on the third.
    let expiring = {
        let (bin, short_root) = (bin.to_path_buf(), short_root.clone());
        std::thread::spawn(move || expired_session(&bin, &short_root))
    };
    let starting = {
        let (bin, root, shots) = (bin.to_path_buf(), root.clone(), shots.to_path_buf());
        std::thread::spawn(move || {
            let t = Instant::now();
            Suite::start(&bin, &root, &shots).map(|s| (s, t.elapsed()))
        })
    };
    demo_calls::run(bin, chromium, &demo_root, shots, r);
    println!(
        "  the demo's calls took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let suite = starting
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("starting the suite's agentd panicked")))
        .map(|(s, took)| {
            println!(
                "  (the suite's agentd started in {:.1} s)",
                took.as_secs_f64()
            );
            s
        });
    match suite {
        Ok(s) => {
            if let Err(e) = checks(&s, chromium, r) {
                r.check("console: browser session", false, || format!("{e:#}"));
            }
        }
        Err(e) => r.check("console: setting up", false, || format!("{e:#}")),
    }
    let expiry = expiring
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the expired-session check panicked")));
    r.check(
        "console: a session cookie works for its lifetime (Max-Age = session_ttl_secs) and is refused after it (401 console_session_required)",
        expiry.as_ref().is_ok_and(|(ok, _)| *ok),
        || match &expiry {
            Ok((_, why)) => why.clone(),
            Err(e) => format!("{e:#}"),
        },
    );
    crate::sdk_suite::clean_up(&[&root, &demo_root, &short_root]);
    println!(
        "  console suite took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn checks(s: &Suite, chromium: &Path, r: &mut Report) -> anyhow::Result<()> {
    let port = s.port;
    let base = format!("http://127.0.0.1:{port}");
    let link = s.login_link()?;
    r.check(
        "console: agentctl console prints a one-time link on the loopback address",
        link.starts_with(&format!("{base}/login?token=")) && link.len() == base.len() + 13 + 64,
        || link.clone(),
    );
    let mut b = cdp::Browser::launch(chromium, &s.root, WIDTH, HEIGHT)?;

    // --- sign in ---------------------------------------------------------
    b.navigate(&link)?;
    let live = b.wait_for(
        "location.pathname === '/' && document.getElementById('stream-state')?.textContent === 'live'",
        Duration::from_secs(20),
    );
    r.check(
        "console: the one-time link signs the browser in and the audit stream goes live",
        live.is_ok(),
        || format!("{live:?}"),
    );
    let page_cookie = b.eval("document.cookie").unwrap_or(Value::Null);
    let cookies = b.cookies().unwrap_or_default();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "agentd_console")
        .cloned();
    r.check(
        "console: the session cookie is HttpOnly and SameSite=Strict (the page's script cannot read it)",
        session.as_ref().is_some_and(|c| c["httpOnly"] == true && c["sameSite"] == "Strict")
            && !page_cookie.as_str().unwrap_or("").contains("agentd_console"),
        || format!("{session:?}; document.cookie = {page_cookie}"),
    );
    let cookie = session
        .as_ref()
        .and_then(|c| c["value"].as_str())
        .unwrap_or("")
        .to_owned();
    let csrf = b
        .eval("document.querySelector('meta[name=\"csrf-token\"]').content")
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();

    // --- a live row after a real tool call --------------------------------
    let t0 = Instant::now();
    let allowed = s.check(&format!("/usr/bin/ls {}", s.root.display()))?;
    let allowed_id = allowed["call_id"].as_str().unwrap_or("").to_owned();
    let seen = b.wait_for(
        &format!(
            "!!document.querySelector('#rows tbody tr[data-call=' + {} + ']')",
            js_str(&format!("\"{allowed_id}\""))
        ),
        Duration::from_secs(20),
    );
    let after = t0.elapsed();
    r.check(
        &format!(
            "console: a live row appears after a real tool call ({} ms from the call to the row in the page, bound 20 s)",
            after.as_millis()
        ),
        allowed["decision"] == "allow" && seen.is_ok(),
        || format!("{allowed}; {seen:?}"),
    );

    // --- HTML in audited fields stays text --------------------------------
    let unsigned = json!({ "operator": PAYLOAD, "session": PAYLOAD, "body": PAYLOAD });
    let _ = agentd::api::client::blocking(&s.daemon.agentd.socket, |mut c| async move {
        c.raw(
            axum::http::Method::POST,
            "/v1/messages",
            serde_json::to_vec(&unsigned).unwrap_or_default(),
        )
        .await
    });
    let payload_call = s.check(PAYLOAD)?;
    let payload_id = payload_call["call_id"].as_str().unwrap_or("").to_owned();
    let shown = b.wait_for(
        "(() => { const t = [...document.querySelectorAll('#rows td.operator')].map(td => td.textContent); \
          const a = [...document.querySelectorAll('#rows td.target')].map(td => td.textContent); \
          return t.some(x => x.includes('<img src=x onerror')) && a.some(x => x.includes('<img src=x onerror')); })()",
        Duration::from_secs(20),
    );
    let clean = b
        .eval("window.__pwned === undefined && document.querySelectorAll('#rows img, #rows script').length === 0")
        .unwrap_or(Value::Null);
    r.check(
        "console: HTML in an operator name, a session and tool arguments is shown as text and never runs",
        shown.is_ok() && clean == true,
        || format!("{shown:?}; clean {clean}"),
    );
    s.shot(&mut b, "stream");

    // --- a denied call: its reason ------------------------------------------
    let denied = s.check("/usr/bin/rm -rf /srv")?;
    let denied_id = denied["call_id"].as_str().unwrap_or("").to_owned();
    b.eval(&format!(
        "location.hash = '#call/' + {}",
        js_str(&denied_id)
    ))?;
    let reason = b.wait_for(
        "document.getElementById('call-reason')?.textContent",
        Duration::from_secs(15),
    );
    let why = b
        .eval("document.getElementById('call-why')?.textContent || ''")
        .unwrap_or(Value::Null);
    r.check(
        &format!(
            "console: a denied call's page names its reason ({}) and the check that decided",
            denied["reason_code"].as_str().unwrap_or("?")
        ),
        denied["decision"] == "deny"
            && reason.as_ref().ok() == Some(&denied["reason_code"])
            && why.as_str().is_some_and(|w| !w.is_empty()),
        || format!("{denied}; page {reason:?}; why {why}"),
    );
    s.shot_full(&mut b, "call-denied");
    b.eval(&format!(
        "location.hash = '#call/' + {}",
        js_str(&payload_id)
    ))?;
    let target_text = b.wait_for(
        "document.getElementById('call-target')?.textContent",
        Duration::from_secs(15),
    );
    let clean = b
        .eval("window.__pwned === undefined && document.querySelectorAll('#call-body img').length === 0")
        .unwrap_or(Value::Null);
    r.check(
        "console: the call page shows the payload's arguments as text",
        target_text
            .as_ref()
            .ok()
            .and_then(|v| v.as_str())
            .is_some_and(|t| t.contains("<img src=x onerror="))
            && clean == true,
        || format!("{target_text:?}; clean {clean}"),
    );

    // --- an allowed call inside the agent: kernel events and receipt --------
    let script = format!(
        "{agentctl} check --socket {sock} --message {m} shell 'command=/usr/bin/ls /root' >/dev/null; /usr/bin/ls /root; \
         echo x > '{hostile}' 2>/dev/null; exit 0",
        agentctl = s.daemon.agentd.bin.join("agentctl").display(),
        sock = s.daemon.agentd.socket.display(),
        m = s.daemon.active,
        hostile = s.root.join(PAYLOAD).display(),
    );
    let out = in_agent(
        &s.daemon.agentd,
        AGENT,
        &s.daemon.active,
        &["/bin/sh".into(), "-c".into(), script],
    )
    .output()?;
    let ran = String::from_utf8_lossy(&out.stderr).into_owned();
    let rows = s.audit();
    let call = rows
        .iter()
        .rev()
        .find(|x| {
            x["kind"] == "tool_call"
                && x["decision"] == "allow"
                && x["target"].as_str().is_some_and(|t| t.contains("/root"))
        })
        .cloned();
    let kernel_id = call
        .as_ref()
        .and_then(|c| c["call_id"].as_str())
        .unwrap_or("")
        .to_owned();
    let tied: Vec<&Value> = rows
        .iter()
        .filter(|x| {
            x["kind"] == "kernel" && x["call_id"] == kernel_id.as_str() && !kernel_id.is_empty()
        })
        .collect();
    let tied_deny = tied.iter().any(|x| x["decision"] == "deny");
    r.check(
        "console: in the agent, the allowed call's ls claims its grant and the kernel refuses its open of /root (rows tied to the call)",
        call.is_some() && tied.iter().any(|x| x["decision"] == "allow") && tied_deny,
        || format!("call {call:?}; kernel rows {tied:?}; agentctl run said: {ran}"),
    );
    let mut receipt = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !kernel_id.is_empty() {
        receipt = b
            .eval(&format!(
                "showCall({}).then(() => document.getElementById('receipt-state')?.textContent)",
                js_str(&kernel_id)
            ))
            .unwrap_or(Value::Null);
        if receipt == "verified" || receipt == "failed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = b.eval(&format!(
        "location.hash = '#call/' + {}",
        js_str(&kernel_id)
    ));
    let _ = b.wait_for(
        "document.getElementById('receipt-state')?.textContent === 'verified'",
        Duration::from_secs(10),
    );
    let page = b
        .eval(
            "(() => { const t = document.getElementById('call-body'); const k = t.querySelectorAll('table.rows tbody tr'); \
              return { signature: document.getElementById('call-signature')?.textContent, grant: document.getElementById('call-grant')?.textContent, \
              kernel: k.length, kernel_deny: t.querySelectorAll('table.rows tbody tr.d-deny').length, \
              img: document.getElementById('receipt-image')?.naturalWidth || 0 }; })()",
        )
        .unwrap_or(Value::Null);
    r.check(
        "console: the call page shows the message (signature verified), the grant, the kernel events tied to it and its receipt, verified",
        receipt == "verified"
            && page["signature"] == "verified"
            && page["grant"].as_str().is_some_and(|g| !g.is_empty())
            && page["kernel"].as_u64().unwrap_or(0) as usize == tied.len()
            && page["kernel_deny"].as_u64().unwrap_or(0) >= 1
            && page["img"] == 256,
        || format!("receipt {receipt}; page {page}; kernel rows in the log {}", tied.len()),
    );
    s.shot_full(&mut b, "call-allowed");

    // --- HTML in a path the kernel refused stays text -------------------------
    let deadline = Instant::now() + Duration::from_secs(10);
    let hostile_row = loop {
        let found = s.audit().iter().any(|x| {
            x["kind"] == "kernel"
                && x["decision"] == "deny"
                && x["target"].as_str().is_some_and(|t| t.contains(PAYLOAD))
        });
        if found || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    b.eval("location.hash = '#stream'")?;
    let shown = b.wait_for(
        "[...document.querySelectorAll('#rows tbody tr')].some(tr => tr.children[2].textContent === 'kernel' \
           && tr.querySelector('td.target')?.textContent.includes('<img src=x onerror'))",
        Duration::from_secs(15),
    );
    let clean = b
        .eval("window.__pwned === undefined && document.querySelectorAll('#rows img, #rows script').length === 0")
        .unwrap_or(Value::Null);
    r.check(
        "console: HTML in a file name the kernel refused to create is shown as text in the stream and never runs",
        hostile_row && shown.is_ok() && clean == true,
        || format!("audit row with the payload path: {hostile_row}; {shown:?}; clean {clean}"),
    );

    // --- the stream's filters ---------------------------------------------
    b.eval("location.hash = '#stream'")?;
    b.eval(
        "(() => { const f = document.getElementById('filters'); f.decision.value = 'deny'; f.kind.value = 'tool_call'; f.requestSubmit(); return true; })()",
    )?;
    let filtered = b.wait_for(
        "document.getElementById('stream-state').textContent === 'live' && (() => { const rows = [...document.querySelectorAll('#rows tbody tr')]; \
          return rows.length >= 2 && rows.every(tr => tr.classList.contains('d-deny') && tr.children[2].textContent === 'tool_call'); })()",
        Duration::from_secs(15),
    );
    r.check(
        "console: the stream filters by decision and kind (only denied tool calls listed)",
        filtered.is_ok(),
        || format!("{filtered:?}"),
    );
    s.shot(&mut b, "stream-filtered");

    // --- the agent filter finds tool-call rows (they name their caller) -----
    let by_agent = |b: &mut cdp::Browser, agent: &str| -> anyhow::Result<Value> {
        b.eval(&format!(
            "(() => {{ const f = document.getElementById('filters'); f.reset(); f.agent.value = {a}; \
               f.kind.value = 'tool_call'; f.requestSubmit(); return true; }})()",
            a = js_str(agent)
        ))?;
        b.wait_for(
            "document.getElementById('stream-state').textContent === 'live'",
            Duration::from_secs(15),
        )?;
        b.eval(
            "[...document.querySelectorAll('#rows tbody tr')].map(tr => [tr.dataset.call, tr.querySelector('td.agent').textContent])",
        )
    };
    let listed = |v: &Value, call: &str| {
        v.as_array()
            .is_some_and(|rows| rows.iter().any(|r| r[0] == call))
    };
    let mine = by_agent(&mut b, AGENT)?;
    let all_mine = mine
        .as_array()
        .is_some_and(|rows| rows.iter().all(|r| r[1] == AGENT));
    let other = by_agent(&mut b, &format!("{AGENT}-other"))?;
    r.check(
        "console: the agent filter lists the agent's tool-call rows (its allowed call, not a call from outside every agent); another agent's filter lists none of them",
        !kernel_id.is_empty()
            && listed(&mine, &kernel_id)
            && all_mine
            && !listed(&mine, &allowed_id)
            && !listed(&other, &kernel_id)
            && other.as_array().is_some_and(|rows| rows.is_empty()),
        || format!("call {kernel_id}; filter {AGENT}: {mine}; other agent: {other}"),
    );

    // --- agents: a mode switch needs a confirmation token --------------------
    b.eval("location.hash = '#agents'")?;
    b.wait_for(
        &format!(
            "!!document.querySelector('#agents tr[data-agent={}]')",
            js_str(AGENT)
        ),
        Duration::from_secs(15),
    )?;
    let submit = |b: &mut cdp::Browser, token: &str| -> anyhow::Result<Value> {
        b.eval(&format!(
            "(() => {{ document.getElementById('agents-result').textContent = ''; \
               const f = document.querySelector('form.mode-form[data-agent={a}]'); f.mode.value = 'audit-only'; \
               f.confirm.value = {t}; f.requestSubmit(); return true; }})()",
            a = js_str(AGENT),
            t = js_str(token)
        ))?;
        b.wait_for(
            "document.getElementById('agents-result').textContent",
            Duration::from_secs(15),
        )
    };
    let without = submit(&mut b, "")?;
    let mode_before = s.mode_of(AGENT);
    r.check(
        "console: switching an agent to audit-only without a confirmation token is refused (mode unchanged)",
        without.as_str().is_some_and(|t| t.contains("console_confirmation_invalid"))
            && mode_before.as_deref() == Some("enforce"),
        || format!("{without}; mode {mode_before:?}"),
    );
    let token = s.confirmation()?;
    let with = submit(&mut b, &token)?;
    let mode_after = s.mode_of(AGENT);
    r.check(
        "console: with a fresh confirmation token (agentctl console --confirm) the switch happens in the enforcer",
        with.as_str().is_some_and(|t| t.contains("now audit-only")) && mode_after.as_deref() == Some("audit-only"),
        || format!("{with}; mode {mode_after:?}"),
    );
    s.shot(&mut b, "agents");
    let replay = submit(&mut b, &token)?;
    r.check(
        "console: a confirmation token works once",
        replay
            .as_str()
            .is_some_and(|t| t.contains("console_confirmation_invalid")),
        || format!("{replay}"),
    );

    // --- charts -------------------------------------------------------------
    b.eval("location.hash = '#charts'")?;
    let bars = b.wait_for(
        "document.querySelectorAll('#chart-minutes svg rect').length > 1 && document.querySelectorAll('#chart-reasons svg rect').length",
        Duration::from_secs(15),
    );
    r.check(
        "console: charts of decisions per minute and denials by reason are drawn (SVG)",
        bars.is_ok(),
        || format!("{bars:?}"),
    );
    s.shot(&mut b, "charts");

    // --- the chain, before and after tampering ------------------------------
    b.eval("location.hash = '#chain'")?;
    let intact = b.wait_for(
        "(document.getElementById('chain-state')?.textContent || '').startsWith('INTACT')",
        Duration::from_secs(20),
    );
    // Checkpoints come every 2 s here: the view names the last signed one.
    let signed = b.wait_for(
        "showChain().then(() => (document.getElementById('chain-state')?.textContent || '').startsWith('INTACT') \
           && !document.getElementById('chain-body').innerText.includes('none yet'))",
        Duration::from_secs(10),
    );
    r.check(
        "console: the chain view shows the log intact, verified through its last row, and the last signed checkpoint",
        intact.is_ok() && signed.is_ok(),
        || format!("{intact:?} {signed:?}"),
    );
    s.shot(&mut b, "chain");
    let victim = rows
        .iter()
        .find(|x| x["call_id"] == denied_id.as_str() && x["kind"] == "tool_call")
        .and_then(|x| x["seq"].as_u64())
        .unwrap_or(0);
    let db = s.daemon.agentd.state.join("audit.db");
    let tamper = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect({db:?}); c.executescript(\"DROP TRIGGER IF EXISTS audit_records_no_update; UPDATE audit_records SET decision = 'allow', reason_code = 'ok' WHERE seq = {victim};\"); c.commit()"
        ))
        .status();
    b.eval("showChain().then(() => true)")?;
    let broken = b.wait_for(
        "document.getElementById('chain-state')?.textContent",
        Duration::from_secs(20),
    );
    let want = format!("BROKEN at row {victim}: row_hash_mismatch");
    r.check(
        &format!("console: after the audit database is edited (row {victim} turned into an allow), the chain view shows the break at that row"),
        tamper.is_ok_and(|t| t.success()) && victim > 0 && broken.as_ref().ok().and_then(|v| v.as_str()) == Some(want.as_str()),
        || format!("{broken:?} (wanted {want})"),
    );
    s.shot(&mut b, "chain-broken");

    approvals(s, &mut b, r)?;

    // --- refusals -----------------------------------------------------------
    let host = format!("127.0.0.1:{port}");
    let no_cookie = http(
        port,
        &format!("GET /api/chain HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    );
    r.check(
        "console: a request without the session cookie is refused (401 console_session_required)",
        matches!(&no_cookie, Ok((401, t)) if t.contains("console_session_required")),
        || format!("{no_cookie:?}"),
    );
    let body = r#"{"mode":"enforce","confirm":"x"}"#;
    let post = |extra: &str| {
        http(
            port,
            &format!(
                "POST /api/agents/{AGENT}/mode HTTP/1.1\r\nHost: {host}\r\nCookie: agentd_console={cookie}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let no_csrf = post(&format!("Origin: {base}\r\n"));
    let in_page = b
        .eval(&format!(
            "fetch('/api/agents/{AGENT}/mode', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: {}}}).then(r => r.status)",
            js_str(body)
        ))
        .unwrap_or(Value::Null);
    r.check(
        "console: a state-changing request with the cookie but without the CSRF token is refused (403 console_csrf_invalid), from the page too",
        matches!(&no_csrf, Ok((403, t)) if t.contains("console_csrf_invalid")) && in_page == 403,
        || format!("{no_csrf:?}; in page {in_page}"),
    );
    let cross = post(&format!(
        "Origin: http://evil.example\r\nX-CSRF-Token: {csrf}\r\n"
    ));
    let no_origin = post(&format!("X-CSRF-Token: {csrf}\r\n"));
    r.check(
        "console: a POST from another origin, or without an Origin, is refused even with cookie and CSRF token",
        matches!(&cross, Ok((403, t)) if t.contains("console_origin_refused"))
            && matches!(&no_origin, Ok((403, t)) if t.contains("console_origin_refused")),
        || format!("{cross:?}; {no_origin:?}"),
    );
    let rebound = http(
        port,
        &format!("GET / HTTP/1.1\r\nHost: evil.example:{port}\r\nCookie: agentd_console={cookie}\r\nConnection: close\r\n\r\n"),
    );
    r.check(
        "console: a request naming another host (DNS rebinding) is refused (421)",
        matches!(&rebound, Ok((421, _))),
        || format!("{rebound:?}"),
    );
    b.navigate(&link)?;
    let reused = b
        .wait_for(
            "document.getElementById('reason')?.textContent",
            Duration::from_secs(10),
        )
        .unwrap_or(Value::Null);
    b.navigate(&format!("{base}/login?token={}", "0".repeat(64)))?;
    let forged = b
        .wait_for(
            "document.getElementById('reason')?.textContent",
            Duration::from_secs(10),
        )
        .unwrap_or(Value::Null);
    r.check(
        "console: a reused login link is refused (console_login_used), a forged one too (console_login_invalid)",
        reused == "console_login_used" && forged == "console_login_invalid",
        || format!("reused {reused}; forged {forged}"),
    );
    s.shot(&mut b, "login-refused");
    // The session from before still works; signing out ends it.
    b.navigate(&format!("{base}/#stream"))?;
    b.wait_for(
        "document.getElementById('stream-state')?.textContent === 'live'",
        Duration::from_secs(15),
    )?;
    b.eval("document.getElementById('logout').click(), true")?;
    let out = b
        .wait_for(
            "document.getElementById('reason')?.textContent",
            Duration::from_secs(10),
        )
        .unwrap_or(Value::Null);
    let after_out = http(
        port,
        &format!("GET /api/chain HTTP/1.1\r\nHost: {host}\r\nCookie: agentd_console={cookie}\r\nConnection: close\r\n\r\n"),
    );
    r.check(
        "console: signing out ends the session (its cookie is refused afterwards)",
        out == "console_session_required" && matches!(&after_out, Ok((401, _))),
        || format!("page {out}; {after_out:?}"),
    );

    // --- audited ------------------------------------------------------------
    let rows = s.audit();
    let has = |action: &str, decision: &str, reason: &str| {
        rows.iter().any(|x| {
            x["kind"] == "admin"
                && x["action"] == action
                && x["decision"] == decision
                && x["reason_code"] == reason
        })
    };
    r.check(
        "console: links, logins (and the refused ones), mode switches (and the refused ones) and sign-out are audit rows",
        has("console_login_link", "allow", "ok")
            && has("console_login", "allow", "ok")
            && has("console_login", "deny", "console_login_used")
            && has("console_login", "deny", "console_login_invalid")
            && has("agent_mode", "deny", "console_confirmation_invalid")
            && has("agent_mode", "allow", "ok")
            && has("console_logout", "allow", "ok"),
        || {
            let admin: Vec<String> = rows
                .iter()
                .filter(|x| x["kind"] == "admin")
                .map(|x| format!("{} {} {}", x["action"], x["decision"], x["reason_code"]))
                .collect();
            format!("{admin:?}")
        },
    );
    Ok(())
}

/// The Approvals view: a call of an action that needs approval waits; the
/// page lists it and its Approve button (a CSRF-protected POST from the
/// page's own script) lets it through, recorded as the console admin's.
fn approvals(s: &Suite, b: &mut cdp::Browser, r: &mut Report) -> anyhow::Result<()> {
    let mut cmd = s.daemon.agentd.agentctl();
    cmd.args([
        "check",
        "--json",
        "--message",
        &s.daemon.active,
        "deploy",
        "target=prod",
    ]);
    let waiting = std::thread::spawn(move || cmd.output());
    b.eval("location.hash = '#approvals'; true")?;
    let listed = b.wait_for(
        "document.querySelector('#approvals tr[data-approval] td:nth-child(5)')?.textContent === 'deploy' && document.querySelector('#approvals tr[data-approval]').dataset.approval",
        Duration::from_secs(20),
    );
    s.shot(b, "approvals");
    let id = listed
        .as_ref()
        .ok()
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_owned();
    r.check(
        "console: the Approvals view lists a call waiting for a person (operator, action, arguments, seconds left)",
        id.len() == 32,
        || format!("{listed:?}"),
    );
    b.eval("document.querySelector('#approvals tr[data-approval] input[name=reason]').value = 'ok from the console'; document.querySelector('#approvals tr[data-approval] button.approve').click(); true")?;
    let said = b.wait_for(
        "(document.getElementById('approvals-result')?.textContent || '').includes('approved') && document.getElementById('approvals-result').textContent",
        Duration::from_secs(20),
    );
    let out = waiting
        .join()
        .map_err(|_| anyhow::anyhow!("the waiting check panicked"))??;
    let d: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let rows = s.audit();
    let approve = rows
        .iter()
        .find(|x| x["call_id"] == id.as_str() && x["action"] == "approval_approve");
    r.check(
        "console: Approve lets the waiting call through (allow ok), recorded as the console admin's approval (channel console), not an operator's",
        said.is_ok()
            && d["decision"] == "allow"
            && d["call_id"] == id.as_str()
            && approve.is_some_and(|a| {
                a["operator"].as_str().is_some_and(|o| o.starts_with("console:uid:"))
                    && a["target"].as_str().is_some_and(|t| t.contains("channel:console") && t.contains("ok from the console"))
            }),
        || format!("{said:?}; decision {d}; approver row {approve:?}"),
    );
    Ok(())
}

/// A second agentd whose console sessions last 2 s: the cookie works, then
/// after its lifetime the server refuses it (the browser would also drop it:
/// its Max-Age is that lifetime).
fn expired_session(bin: &Path, root: &Path) -> anyhow::Result<(bool, String)> {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let extra = format!("\n[console]\nlisten = \"127.0.0.1:{port}\"\nsession_ttl_secs = 2\n");
    let agentd =
        crate::runtimes::daemon::Agentd::start_with(bin, &root.join("short-sessions"), &extra)?;
    let out = agentd.agentctl().args(["console", "--json"]).output()?;
    let v: Value = serde_json::from_slice(&out.stdout).context("agentctl console --json")?;
    let url = v["url"].as_str().context("no url")?;
    let path = url
        .split_once(&format!("127.0.0.1:{port}"))
        .map(|(_, p)| p)
        .context("link names another address")?;
    let host = format!("127.0.0.1:{port}");
    let (status, login) = http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )?;
    let set_cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or("")
        .to_owned();
    let cookie = set_cookie
        .split_once("agentd_console=")
        .and_then(|(_, rest)| rest.split(';').next())
        .unwrap_or("")
        .to_owned();
    let chain = || {
        http(
            port,
            &format!("GET /api/chain HTTP/1.1\r\nHost: {host}\r\nCookie: agentd_console={cookie}\r\nConnection: close\r\n\r\n"),
        )
    };
    let fresh = chain();
    std::thread::sleep(Duration::from_millis(3100));
    let stale = chain();
    Ok((
        status == 303
            && set_cookie.contains("Max-Age=2")
            && !cookie.is_empty()
            && matches!(&fresh, Ok((200, _)))
            && matches!(&stale, Ok((401, t)) if t.contains("console_session_required")),
        format!("login {status} {set_cookie:?}; fresh {fresh:?}; after 3.1 s {stale:?}"),
    ))
}
