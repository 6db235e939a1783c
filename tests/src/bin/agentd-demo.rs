//! `agentd-demo`: the ownership scenario end to end (see `agentd_tests::demo`).
//! Uses the agentd, agentctl and demo-agent binaries next to itself.
//!
//! `agentd-demo [--work-dir DIR] [--result-line]`; `--result-line` ends with
//! one `PASS demo: …` or `FAIL demo: …` line for the VM runner.
use std::path::PathBuf;

fn main() {
    let mut work_dir = std::env::temp_dir().join("agentd-demo");
    let mut result_line = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--work-dir" => work_dir = args.next().map(PathBuf::from).unwrap_or(work_dir),
            "--result-line" => result_line = true,
            other => {
                eprintln!("agentd-demo: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    match agentd_tests::demo::run(bin, work_dir) {
        Ok(summary) => {
            if result_line {
                println!("PASS demo: {summary}");
            }
        }
        Err(e) => {
            if result_line {
                println!("FAIL demo: {e:#}");
            } else {
                eprintln!("demo failed: {e:#}");
            }
            std::process::exit(1);
        }
    }
}
