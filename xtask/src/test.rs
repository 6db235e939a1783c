//! `cargo xtask test`: the one test command. Stages run in order; every
//! stage reports passed/failed/skipped, and the run ends with one closing
//! `N passed, N failed, N skipped` line. A skipped test always says why.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::{
    setup,
    shell::{step, workspace_root},
    tally::Tally,
};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the VM stage (it is reported as skipped, with this reason).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip the install test (it builds release packages; reported as skipped).
    #[arg(long)]
    pub no_install: bool,
}

/// Runs every stage and prints the closing line.
pub fn run(args: Args) -> anyhow::Result<()> {
    setup::run()?;
    // A test run builds once: incremental caches would only double the
    // workspace's artifacts on disk (CI machines' disks vary in size).
    // SAFETY: single-threaded here; every cargo this run starts inherits it.
    unsafe { std::env::set_var("CARGO_INCREMENTAL", "0") };
    let mut tally = Tally::default();

    prepare(&mut tally);

    // The fuzz targets build at idle priority beside the unit tests, which
    // spend most of their time waiting on daemons and kernels.
    println!(
        "  fuzz targets: building in the background at idle priority (log: target/fuzz-build.log)"
    );
    let fuzz_build = crate::fuzz::start_smoke_build();
    step("unit and host tests: cargo test --workspace (privileged tests run as root)");
    tally.absorb(cargo_test()?);

    step("fuzz smoke: every fuzz target built and run from its committed seeds (cargo-fuzz, pinned nightly)");
    tally.absorb(crate::fuzz::smoke(Some(fuzz_build)));

    suites(&mut tally);

    if args.no_install {
        tally.skip("install: --no-install given");
    } else {
        step("install test: .rpm inspected; .deb installed, checked, removed and purged here");
        tally.absorb(install_tests()?);
    }

    if args.no_vm {
        tally.skip("vm: --no-vm given");
    } else {
        step("VM tests: Debian cloud kernel with BPF LSM under QEMU (TCG)");
        tally.absorb(vm_tests());
    }

    step("demo: cargo xtask demo as a test (every outcome must be as listed)");
    match crate::demo::run(&crate::demo::Args::default()) {
        Ok(()) => tally.pass(),
        Err(e) => tally.fail(format!("demo: {e:#}")),
    }

    step("cleanup check: the run left no BPF pins or cgroups behind");
    tally.absorb(cleanup_check());

    print_summary(&tally);
    if tally.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Leftovers of earlier runs removed, lint, the workspace build, and the
/// opening doctor run whose backend later tests must also find.
fn prepare(tally: &mut Tally) {
    step("leftovers: stale BPF pins and cgroups of earlier runs are removed first");
    for l in crate::leftovers::find() {
        match crate::leftovers::remove(&l) {
            Ok(()) => println!("  removed {} ({})", l.path.display(), l.why),
            Err(e) => println!("  cannot remove {} ({}): {e}", l.path.display(), l.why),
        }
    }

    step("lint: cargo fmt --check, cargo clippy -D warnings");
    tally.absorb(lint());

    step("build: workspace binaries (debug)");
    let built = crate::shell::run_cmd(Command::new("cargo").current_dir(workspace_root()).args([
        "build",
        "--workspace",
        "--bins",
    ]));
    if let Err(e) = &built {
        tally.fail(format!("build: {e}"));
    }

    // The opening doctor run: once it has found a backend, a test whose own
    // probe finds none is a failure (probes colliding, stale pins), not a skip.
    if let Some(backend) = opening_doctor() {
        println!("  opening doctor run: backend {backend}");
        // SAFETY: single-threaded here; children inherit it.
        unsafe { std::env::set_var(EXPECT_BACKEND_ENV, &backend) };
    }
}

/// The suites that run agentd as users do: scenarios, the real runtimes,
/// MCP, forward mode and the console in a browser.
fn suites(tally: &mut Tally) {
    step("host scenarios: agentd-scenarios against the backend doctor picks here");
    tally.absorb(host_scenarios());

    step("real runtimes: Claude Code, Codex and Gemini CLI under agentd (agentd-runtimes, scripted model server)");
    tally.absorb(runtimes());
    step("MCP gateway: the official MCP Python SDK through agentd (agentd-mcp)");
    tally.absorb(mcp());
    step("Forward mode: the official openai and anthropic Python SDKs through agentd's model proxy (agentd-forward)");
    tally.absorb(forward());
    step("Web console: headless Chromium (DevTools protocol) against agentd's console (agentd-console)");
    tally.absorb(console());
    step("soak smoke: the soak benchmark for 5 s on the debug build (cargo test -p agentd --bench soak)");
    tally.absorb(soak_smoke());
}

/// The soak benchmark, 5 s: every answered allow has its row, every tool
/// run its kernel row, no refusal, fds flat, the chain verifies. It ends
/// with `soak: passed`, `soak: SKIPPED: why` or a non-zero exit.
fn soak_smoke() -> Tally {
    let mut t = Tally::default();
    let out = Command::new("cargo")
        .current_dir(workspace_root())
        .args(["test", "-p", "agentd", "--bench", "soak"])
        .env("AGENTD_SOAK_SECS", "5")
        .stderr(Stdio::inherit())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            t.fail(format!("soak: cannot run cargo: {e}"));
            return t;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        println!("  {line}");
    }
    if let Some(why) = text.lines().find_map(|l| l.strip_prefix("soak: SKIPPED: ")) {
        t.skip(format!("soak: {why}"));
    } else if out.status.success() && text.lines().any(|l| l == "soak: passed") {
        t.pass();
    } else {
        t.fail(format!(
            "soak: exited with {} (its reasons above)",
            out.status
        ));
    }
    t
}

/// Set for the test stages to the backend the opening `agentd doctor` run
/// chose (`seccomp`, `lsm`); tests that find no backend then fail.
pub const EXPECT_BACKEND_ENV: &str = "AGENTD_EXPECT_BACKEND";

/// `agentd doctor --json`'s backend, lower-case, when it found one.
fn opening_doctor() -> Option<String> {
    let bin = crate::shell::target_dir().join("debug/agentd");
    let out = Command::new(bin).args(["doctor", "--json"]).output().ok()?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let backend = report.get("backend")?.as_str()?.to_lowercase();
    (backend != "none").then_some(backend)
}

/// Fails for every stale pin or cgroup the run left, then removes it.
fn cleanup_check() -> Tally {
    let mut t = Tally::default();
    let left = crate::leftovers::find();
    if left.is_empty() {
        t.pass();
    }
    for l in left {
        t.fail(format!("left behind: {} ({})", l.path.display(), l.why));
        let _ = crate::leftovers::remove(&l);
    }
    t
}

/// Runs the shared scenario suite natively; one PASS/FAIL/SKIP line each.
fn host_scenarios() -> Tally {
    let mut t = Tally::default();
    let bin = crate::shell::target_dir().join("debug/agentd-scenarios");
    let out = match Command::new(&bin).stderr(Stdio::inherit()).output() {
        Ok(o) => o,
        Err(e) => {
            t.fail(format!("host scenarios: cannot run {}: {e}", bin.display()));
            return t;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        println!("  {line}");
        if line.starts_with("PASS ") {
            t.pass();
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            t.fail(format!("host scenario {rest}"));
        } else if let Some(rest) = line.strip_prefix("SKIP ") {
            t.skip(format!("host scenario {rest}"));
        }
    }
    if t.passed + t.failed + t.skipped == 0 {
        t.fail(format!(
            "host scenarios: no scenario reported ({})",
            out.status
        ));
    } else if !out.status.success() && t.failed == 0 {
        t.fail(format!(
            "host scenarios: the suite exited with {}",
            out.status
        ));
    }
    t
}

/// Runs the MCP gateway suite (the official Python SDK as client and
/// server, agentd between them); one PASS/FAIL/SKIP line each.
fn mcp() -> Tally {
    let target = crate::shell::target_dir();
    let mut cmd = Command::new(target.join("debug/agentd-mcp"));
    cmd.arg("--bin")
        .arg(target.join("debug"))
        .arg("--venv")
        .arg(target.join("mcp-venv"));
    count_lines("mcp", &mut cmd)
}

/// Runs the forward-mode suite (the official openai and anthropic Python
/// SDKs through agentd's model proxy to a scripted upstream); one
/// PASS/FAIL/SKIP line each.
fn forward() -> Tally {
    let target = crate::shell::target_dir();
    let mut cmd = Command::new(target.join("debug/agentd-forward"));
    cmd.arg("--bin")
        .arg(target.join("debug"))
        .arg("--venv")
        .arg(target.join("mcp-venv"));
    count_lines("forward", &mut cmd)
}

/// Runs the web console's browser test (Debian's Chromium, headless);
/// one PASS/FAIL/SKIP line each; screenshots land in
/// target/console-screenshots.
fn console() -> Tally {
    let target = crate::shell::target_dir();
    let mut cmd = Command::new(target.join("debug/agentd-console"));
    cmd.arg("--bin")
        .arg(target.join("debug"))
        .arg("--shots")
        .arg(target.join("console-screenshots"));
    count_lines("console", &mut cmd)
}

/// Runs the real agent runtimes under agentd; one PASS/FAIL/SKIP line each.
fn runtimes() -> Tally {
    let target = crate::shell::target_dir();
    let bin = target.join("debug/agentd-runtimes");
    let mut cmd = Command::new(&bin);
    cmd.arg("--bin")
        .arg(target.join("debug"))
        .arg("--install")
        .arg(target.join("runtimes"));
    count_lines("runtimes", &mut cmd)
}

/// Runs a suite binary and counts its `PASS`/`FAIL`/`SKIP` lines.
fn count_lines(stage: &str, cmd: &mut Command) -> Tally {
    let mut t = Tally::default();
    let out = match cmd.stderr(Stdio::inherit()).output() {
        Ok(o) => o,
        Err(e) => {
            t.fail(format!("{stage}: cannot run {cmd:?}: {e}"));
            return t;
        }
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  {line}");
        if line.starts_with("PASS ") {
            t.pass();
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            t.fail(format!("{stage}: {rest}"));
        } else if let Some(rest) = line.strip_prefix("SKIP ") {
            t.skip(format!("{stage}: {rest}"));
        }
    }
    if t.passed + t.failed + t.skipped == 0 {
        t.fail(format!("{stage}: nothing reported ({})", out.status));
    } else if !out.status.success() && t.failed == 0 {
        t.fail(format!("{stage}: exited with {}", out.status));
    }
    t
}

/// Boots the VM once and counts what its tests report.
pub fn vm_tests() -> Tally {
    let mut t = Tally::default();
    let target = crate::shell::target_dir();
    let opts = xtask::vm::VmOptions::under_target(&target);
    match xtask::vm::run_vm_tests(
        &target.join("debug/agentd"),
        &xtask::vm::vm_test_binaries(&target.join("debug")),
        &opts,
    ) {
        Ok(outcome) => {
            print!("{}", outcome.report());
            for line in &outcome.tests {
                match line.status {
                    xtask::vm::Status::Pass => t.pass(),
                    xtask::vm::Status::Fail => t.fail(format!("vm: {line}")),
                    xtask::vm::Status::Skip => t.skip(format!("vm: {line}")),
                }
            }
            if outcome.tests.is_empty() && !outcome.success() {
                t.fail("vm: no test reported (see the console log)");
            }
        }
        Err(e) => t.fail(format!("vm: cannot run the VM: {e:#}")),
    }
    t
}

/// `cargo xtask install-test`: the install test alone.
pub fn install_only() -> anyhow::Result<()> {
    let tally = install_tests()?;
    print_summary(&tally);
    if tally.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn install_tests() -> anyhow::Result<Tally> {
    use crate::install_test::Outcome;
    let mut t = Tally::default();
    for c in crate::install_test::run()? {
        match c.outcome {
            Outcome::Pass => t.pass(),
            Outcome::Fail(why) => t.fail(format!("install: {}: {why}", c.name)),
            Outcome::Skip(why) => t.skip(format!("install: {}: {why}", c.name)),
        }
    }
    Ok(t)
}

fn lint() -> Tally {
    let mut t = Tally::default();
    let root = workspace_root();
    let fmt = Command::new("cargo")
        .current_dir(&root)
        .args(["fmt", "--all", "--check"])
        .status();
    match fmt {
        Ok(s) if s.success() => t.pass(),
        _ => t.fail("cargo fmt --check: formatting differs (run `cargo fmt --all`)"),
    }
    let clippy = Command::new("cargo")
        .current_dir(&root)
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ])
        .status();
    match clippy {
        Ok(s) if s.success() => t.pass(),
        _ => t.fail("cargo clippy -D warnings: see the warnings above"),
    }
    t
}

/// Runs `cargo test` showing passed tests' output, so tests that skipped
/// (they print `SKIPPED: reason`) are counted as skipped, not passed.
fn cargo_test() -> anyhow::Result<Tally> {
    let mut child = Command::new("cargo")
        .current_dir(workspace_root())
        .args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "--show-output",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut parser = LibtestParser::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        parser.line(&line);
    }
    let status = child.wait()?;
    let mut t = parser.finish();
    if !status.success() && t.failed == 0 {
        t.fail(format!(
            "cargo test exited with {status} (a test binary failed to build or crashed)"
        ));
    }
    Ok(t)
}

/// Reads libtest's human output.
#[derive(Default)]
struct LibtestParser {
    current_test: Option<String>,
    tally: Tally,
    skipped_in_output: usize,
}

impl LibtestParser {
    fn line(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            self.current_test = Some(name.to_string());
        } else if let Some(reason) = line.trim_start().strip_prefix("SKIPPED:") {
            let name = self.current_test.clone().unwrap_or_else(|| "?".into());
            self.tally.skip(format!("{name}: {}", reason.trim()));
            self.skipped_in_output += 1;
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            // "ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s"
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: usize = n
                    .trim_start_matches("ok.")
                    .trim_start_matches("FAILED.")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                match kind {
                    "passed" => self.tally.passed += n,
                    "failed" => self.tally.failed += n,
                    "ignored" => {
                        self.tally.skipped += n;
                        if n > 0 {
                            self.tally.skips.push(format!(
                                "{n} test(s) marked #[ignore] (reasons in the output above)"
                            ));
                        }
                    }
                    _ => {}
                }
            }
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            self.tally.failures.push(format!("cargo test: {name}"));
        }
    }

    fn finish(mut self) -> Tally {
        // Tests that printed SKIPPED were counted as passed by libtest.
        self.tally.passed = self.tally.passed.saturating_sub(self.skipped_in_output);
        self.tally
    }
}

fn print_summary(t: &Tally) {
    println!();
    if !t.skips.is_empty() {
        println!("skipped:");
        for s in &t.skips {
            println!("  - {s}");
        }
    }
    if !t.failures.is_empty() {
        println!("failed:");
        for f in &t.failures {
            println!("  - {f}");
        }
    }
    println!(
        "{} passed, {} failed, {} skipped",
        t.passed, t.failed, t.skipped
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_tests_are_not_counted_as_passed() {
        let mut p = LibtestParser::default();
        for l in [
            "---- a::needs_lsm stdout ----",
            "SKIPPED: BPF LSM does not load here",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        ] {
            p.line(l);
        }
        let t = p.finish();
        assert_eq!((t.passed, t.failed, t.skipped), (3, 2, 2));
        assert!(t.skips[0].starts_with("a::needs_lsm: BPF LSM"));
    }

    /// The output of `enforce_restart` run as an unprivileged user (captured
    /// with `setpriv --reuid=65534 … --show-output`): libtest says "1
    /// passed", the tally must say skipped.
    #[test]
    fn unprivileged_enforce_restart_counts_as_skipped() {
        let mut p = LibtestParser::default();
        for l in [
            "running 1 test",
            "test daemon_death_fails_closed_and_restart_stops_the_agent ... ok",
            "",
            "successes:",
            "",
            "---- daemon_death_fails_closed_and_restart_stops_the_agent stdout ----",
            "SKIPPED: needs root",
            "",
            "",
            "successes:",
            "    daemon_death_fails_closed_and_restart_stops_the_agent",
            "",
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.04s",
        ] {
            p.line(l);
        }
        let t = p.finish();
        assert_eq!((t.passed, t.failed, t.skipped), (0, 0, 1));
        assert_eq!(
            t.skips,
            vec!["daemon_death_fails_closed_and_restart_stops_the_agent: needs root".to_string()]
        );
    }
}
