//! `agentd-console [--bin DIR]`: the web console in headless Chromium (see
//! `agentd_tests::console`), one `PASS`/`FAIL`/`SKIP` line per check.
//! Screenshots of each view go to `target/console-screenshots/`.
use std::path::PathBuf;

use agentd_tests::sdk_suite::Report;

fn main() {
    let mut args = std::env::args().skip(1);
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut bin = exe_dir.clone();
    let mut shots = exe_dir
        .parent()
        .map(|t| t.join("console-screenshots"))
        .unwrap_or_else(|| PathBuf::from("console-screenshots"));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bin" => bin = args.next().map(PathBuf::from).unwrap_or(bin),
            "--shots" => shots = args.next().map(PathBuf::from).unwrap_or(shots),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP console: needs root (starts agentd and an agent)");
        return;
    }
    let mut r = Report::default();
    agentd_tests::console::run(&bin, &shots, &mut r);
    if r.failed() > 0 {
        std::process::exit(1);
    }
}
