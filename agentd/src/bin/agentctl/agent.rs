//! `agentctl agent add|list|show|mode|remove|profiles|replies|serve|learn`:
//! agents' settings and baselines (composed from profiles), their inboxes,
//! and the driver that runs the runtime for each message.
mod serve;

use std::path::PathBuf;

use hyper::Method;

use crate::SocketArg;
use agentd::agents::manager::ProfileView;
use agentd::agents::{AgentDef, AgentView, InboxEntry};
use agentd::api::client::{blocking, ClientError};
use agentd::enforce::Mode;

/// Arguments of `agentctl agent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    socket: SocketArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Configure an agent: user, mode, profiles, extra paths, model API.
    Add(Box<AddArgs>),
    /// List configured agents.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an agent's settings, composed baseline and processes.
    Show {
        /// Agent name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Switch an agent between enforce and audit-only (at once, and stored).
    Mode {
        /// Agent name.
        name: String,
        /// enforce or audit-only.
        mode: String,
    },
    /// Remove an agent (refused while it has processes).
    Remove {
        /// Agent name.
        name: String,
    },
    /// List the profiles (built-in and the policy's).
    Profiles {
        /// Print JSON (with every entry).
        #[arg(long)]
        json: bool,
    },
    /// Show an agent's inbox: messages, outcomes and the runtime's replies.
    Replies {
        /// Agent name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the runtime for each queued message, in order (the driver).
    Serve(serve::Args),
    /// Propose a profile from the agent's audit-only run (what it would have
    /// been denied, minus what its baseline grants).
    Learn(LearnArgs),
}

#[derive(Debug, clap::Args)]
struct LearnArgs {
    /// Agent name.
    name: String,
    /// Only audit rows after this seq (e.g. the last row before the run).
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Write the proposal to this file instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Name of the proposed profile (default NAME-learned).
    #[arg(long)]
    profile_name: Option<String>,
    /// Another start-up script or protected path no write scope may cover (repeat).
    #[arg(long)]
    protect: Vec<PathBuf>,
    #[command(flatten)]
    loc: crate::audit::Location,
    /// Audit database file (default: STATE_DIR/audit.db).
    #[arg(long)]
    db: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// Agent name.
    name: String,
    /// Unprivileged user the agent runs as (each agent its own, unless
    /// --share-user).
    #[arg(long, default_value = "agentd-agent")]
    user: String,
    /// Allow a user another configured agent already runs as (the agents
    /// are then not isolated from each other by uid).
    #[arg(long)]
    share_user: bool,
    /// enforce or audit-only.
    #[arg(long, default_value = "enforce")]
    mode: String,
    /// Profile to build the baseline from (repeat; default generic).
    #[arg(long = "profile")]
    profiles: Vec<String>,
    /// The runtime's install directory ({install_dir}).
    #[arg(long)]
    install_dir: Option<PathBuf>,
    /// Temp directory ({tmp}; default /tmp).
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// The runtime's working directory ({workspace}).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Where the runtime reaches its model API: HOST:PORT (direct) or proxy.
    #[arg(long)]
    model_api: Option<String>,
    /// Extra executable (repeat).
    #[arg(long)]
    exec: Vec<String>,
    /// Extra read scope (repeat).
    #[arg(long)]
    read: Vec<String>,
    /// Extra write scope (repeat).
    #[arg(long)]
    write: Vec<String>,
    /// Extra connect destination CIDR:PORT (repeat).
    #[arg(long)]
    connect: Vec<String>,
    /// The driver's time limit per message, seconds.
    #[arg(long)]
    time_limit: Option<u64>,
    /// Replace an existing agent's settings.
    #[arg(long)]
    replace: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn parse_mode(s: &str) -> anyhow::Result<Mode> {
    Mode::parse(s).ok_or_else(|| anyhow::anyhow!("mode must be enforce or audit-only, not `{s}`"))
}

fn path_of(name: &str) -> String {
    format!("/v1/agent-settings/{name}")
}

/// Runs `agentctl agent`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let sock = args.socket.path();
    match args.command {
        Command::Add(a) => add(&sock, *a),
        Command::List { json } => list(&sock, json),
        Command::Show { name, json } => show(&sock, name, json),
        Command::Mode { name, mode } => set_mode(&sock, name, &mode),
        Command::Remove { name } => remove(&sock, name),
        Command::Profiles { json } => profiles(&sock, json),
        Command::Replies { name, json } => replies(&sock, name, json),
        Command::Serve(a) => serve::run(&sock, a),
        Command::Learn(a) => learn(&sock, a),
    }
}

/// `agentctl agent add`: stores the agent's settings (refused for an
/// existing agent unless --replace).
fn add(sock: &std::path::Path, a: AddArgs) -> anyhow::Result<()> {
    let def = AgentDef {
        name: a.name.clone(),
        user: a.user,
        mode: parse_mode(&a.mode)?,
        profiles: a.profiles,
        install_dir: a.install_dir,
        tmp: a.tmp,
        workspace: a.workspace,
        model_api: a.model_api,
        exec: a.exec,
        read: a.read,
        write: a.write,
        connect: a.connect,
        time_limit_secs: a.time_limit,
        share_user: a.share_user,
    };
    let name = a.name.clone();
    let replace = a.replace;
    let v: AgentView = blocking(sock, |mut c| async move {
        if !replace {
            match c.get::<AgentView>(&path_of(&name)).await {
                Ok(_) => {
                    return Err(ClientError::Request(format!(
                        "agent `{name}` exists; use --replace to change its settings"
                    )))
                }
                Err(ClientError::Api { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        c.call(Method::PUT, &path_of(&name), Some(&def)).await
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_view(&v);
    }
    Ok(())
}

/// `agentctl agent list`.
fn list(sock: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let list: Vec<AgentView> = blocking(
        sock,
        |mut c| async move { c.get("/v1/agent-settings").await },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<12} {:<14} {:<28} PIDS",
        "AGENT", "MODE", "USER", "PROFILES"
    );
    for v in list {
        println!(
            "{:<20} {:<12} {:<14} {:<28} {}",
            v.def.name,
            mode_name(v.running.as_ref().map_or(v.def.mode, |r| r.mode)),
            v.def.user,
            v.def.profile_names().join(","),
            v.running.map(|r| r.pids.len()).unwrap_or(0)
        );
    }
    Ok(())
}

/// `agentctl agent show`.
fn show(sock: &std::path::Path, name: String, json: bool) -> anyhow::Result<()> {
    let v: AgentView = blocking(sock, |mut c| async move { c.get(&path_of(&name)).await })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_view(&v);
    }
    Ok(())
}

/// `agentctl agent mode`.
fn set_mode(sock: &std::path::Path, name: String, mode: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "mode": parse_mode(mode)? });
    let v: AgentView = blocking(sock, |mut c| async move {
        c.call(
            Method::POST,
            &format!("{}/mode", path_of(&name)),
            Some(&body),
        )
        .await
    })?;
    println!("agent {}: mode {}", v.def.name, mode_name(v.def.mode));
    Ok(())
}

/// `agentctl agent remove`.
fn remove(sock: &std::path::Path, name: String) -> anyhow::Result<()> {
    let n = name.clone();
    blocking(sock, |mut c| async move {
        let (status, body) = c.raw(Method::DELETE, &path_of(&n), vec![]).await?;
        if status.is_success() {
            return Ok(());
        }
        let e: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Err(ClientError::Api {
            status: status.as_u16(),
            reason_code: e["reason_code"].as_str().unwrap_or("").into(),
            message: e["message"].as_str().unwrap_or("").into(),
        })
    })?;
    println!("agent {name} removed");
    Ok(())
}

/// `agentctl agent profiles`.
fn profiles(sock: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let all: std::collections::BTreeMap<String, ProfileView> =
        blocking(sock, |mut c| async move { c.get("/v1/profiles").await })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    for (n, p) in all {
        println!("{n:<14} {:<8} {}", p.source, p.def.description);
    }
    Ok(())
}

/// `agentctl agent replies`: the inbox, each entry with its reply.
fn replies(sock: &std::path::Path, name: String, json: bool) -> anyhow::Result<()> {
    let entries: Vec<InboxEntry> = blocking(sock, |mut c| async move {
        c.get(&format!("/v1/inbox/{name}")).await
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    for e in entries {
        print_entry(&e);
    }
    Ok(())
}

/// One inbox entry: its line, then the reply indented.
fn print_entry(e: &InboxEntry) {
    let outcome = e
        .outcome
        .map(|o| serde_json::to_value(o).unwrap_or_default())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".into());
    println!(
        "#{} {} session={} operator={} ({}) outcome={} exit={}",
        e.id,
        serde_json::to_value(e.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        e.session,
        e.operator,
        e.trust,
        outcome,
        e.exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into())
    );
    if let Some(r) = &e.reply {
        for l in r.lines() {
            println!("    {l}");
        }
        if e.reply_truncated {
            println!("    [reply truncated]");
        }
    }
}

fn learn(sock: &std::path::Path, a: LearnArgs) -> anyhow::Result<()> {
    use agentd::audit::store;
    use agentd::profile::learn::{learn, LearnInput};
    let name = a.name.clone();
    let v: AgentView = blocking(sock, |mut c| async move { c.get(&path_of(&name)).await })?;
    let home = nix::unistd::User::from_name(&v.def.user)
        .ok()
        .flatten()
        .map(|u| u.dir);
    // The runtime's own code and the protected files are never write scopes.
    let mut protected = v.write_exceptions.clone();
    protected.extend(v.def.install_dir.iter().cloned());
    protected.extend(a.protect.iter().cloned());
    let db = a.loc.db(&a.db)?;
    let conn = store::open_ro(&db)?;
    let mut rows = Vec::new();
    let mut after = a.since;
    loop {
        let batch = store::records_after(&conn, &db, after, 10_000)?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        rows.extend(batch.into_iter().filter(|r| {
            r.event.kind == agentd::audit::RecordKind::Kernel
                && agentd::audit::kernel_row::origin(&r.event).agent == a.name
        }));
    }
    let input = LearnInput {
        agent: &a.name,
        since: a.since,
        baseline: v.baseline.as_ref(),
        home: home.as_deref(),
        protected: &protected,
    };
    let p = learn(&rows, &input);
    let profile = a
        .profile_name
        .clone()
        .unwrap_or_else(|| format!("{}-learned", a.name));
    let text = p.render(&profile, &a.name);
    match &a.out {
        Some(f) => {
            std::fs::write(f, &text)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", f.display()))?;
            eprintln!(
                "{} entries ({} writes not proposed) from {} rows written to {}",
                p.entries.len(),
                p.refused.len(),
                p.rows,
                f.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn mode_name(m: Mode) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn print_view(v: &AgentView) {
    let d = &v.def;
    println!("agent {}", d.name);
    println!("  user        {}", d.user);
    println!("  mode        {}", mode_name(d.mode));
    println!("  profiles    {}", d.profile_names().join(", "));
    if let Some(i) = &d.install_dir {
        println!("  install_dir {}", i.display());
    }
    println!(
        "  model API   {}",
        d.model_api
            .as_deref()
            .unwrap_or("(none: the runtime cannot reach a model API)")
    );
    for (p, m) in &v.model_api_env {
        println!("    {p}: set {} (vendor upstream {})", m.env, m.upstream);
    }
    println!("  time limit  {} s per message", d.time_limit());
    match (&v.baseline, &v.baseline_error) {
        (Some(b), _) => {
            println!("  baseline");
            for (list, items) in [
                (
                    "exec",
                    b.exec
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>(),
                ),
                (
                    "read",
                    b.read.iter().map(|p| p.display().to_string()).collect(),
                ),
                (
                    "write",
                    b.write.iter().map(|p| p.display().to_string()).collect(),
                ),
                ("connect", b.connect.clone()),
            ] {
                println!(
                    "    {list:<8}{}",
                    if items.is_empty() {
                        "-".into()
                    } else {
                        items.join(" ")
                    }
                );
            }
        }
        (None, Some(e)) => println!("  baseline    CANNOT BE COMPOSED: {e}"),
        (None, None) => {}
    }
    if !v.missing_exec.is_empty() {
        println!(
            "  not on this host (left out): {}",
            v.missing_exec
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    match &v.running {
        Some(r) => println!(
            "  enforcement mode {} pids {:?} grants {:?}",
            mode_name(r.mode),
            r.pids,
            r.calls
        ),
        None => println!("  enforcement (not applied: enforcement unavailable)"),
    }
}
