//! `agentd-scenarios [--backend auto|seccomp|lsm] [FILTER]`: runs the
//! enforcement scenarios against an in-process enforcer and prints one line
//! per scenario. Exit 0 when nothing failed.
//!
//! Internal subcommands: `launch --socket S --agent A -- CMD…` (the
//! launcher, as `agentctl run`) and `probe …` (runs inside agents).
use std::{ffi::OsString, path::PathBuf};

use agentd::{
    doctor::{self, Backend},
    enforce::launch,
};
use agentd_tests::{
    harness::{ensure_user, Harness, AGENT_USER},
    probe,
    scenarios::{run_each, Outcome},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("probe") => std::process::exit(probe::main(&args[1..])),
        Some("launch") => std::process::exit(launcher(&args[1..])),
        _ => std::process::exit(suite(&args)),
    }
}

fn launcher(args: &[String]) -> i32 {
    let mut socket = PathBuf::from(launch::DEFAULT_SOCKET);
    let mut agent = String::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--socket" => {
                socket = PathBuf::from(&args[i + 1]);
                i += 2;
            }
            "--agent" => {
                agent = args[i + 1].clone();
                i += 2;
            }
            "--" => {
                i += 1;
                break;
            }
            _ => break,
        }
    }
    let argv: Vec<OsString> = args[i..].iter().map(OsString::from).collect();
    let creds = match launch::creds_of_user(AGENT_USER) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("launch: {e}");
            return 125;
        }
    };
    let spec = launch::LaunchSpec {
        socket,
        agent,
        mode: None,
        creds,
        argv,
    };
    match launch::run_agent(&spec) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("launch: {e}");
            125
        }
    }
}

fn suite(args: &[String]) -> i32 {
    let mut backend = None;
    let mut filter = String::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--backend" {
            backend = args.get(i + 1).cloned();
            i += 2;
        } else {
            filter = args[i].clone();
            i += 1;
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP all: the scenarios need root (they load BPF and create cgroups)");
        return 0;
    }
    let report = doctor::run();
    let backend = match backend.as_deref() {
        Some("seccomp") => Backend::Seccomp,
        Some("lsm") => Backend::Lsm,
        _ => report.backend,
    };
    if backend == Backend::None {
        if let Ok(expected) = std::env::var("AGENTD_EXPECT_BACKEND") {
            println!(
                "FAIL doctor: the suite's opening doctor run chose {expected}, this run found none: {}",
                report.reason
            );
            return 1;
        }
        println!(
            "SKIP all: no enforcement backend on this kernel: {}",
            report.reason
        );
        return 0;
    }
    if let Err(e) = ensure_user() {
        println!("FAIL setup: {e}");
        return 1;
    }
    let h = match Harness::start(backend) {
        Ok(h) => h,
        Err(e) => {
            println!("FAIL setup: enforcer did not start: {e}");
            return 1;
        }
    };
    println!("# backend {backend:?}, instance {}", h.enforcer.instance());
    let mut failed = 0;
    run_each(&h, &filter, |name, outcome| match outcome {
        Outcome::Pass => println!("PASS {name}"),
        Outcome::Skip(why) => println!("SKIP {name}: {why}"),
        Outcome::Fail(why) => {
            failed += 1;
            println!("FAIL {name}: {}", why.replace('\n', "\n    "));
        }
    });
    h.finish();
    i32::from(failed > 0)
}
