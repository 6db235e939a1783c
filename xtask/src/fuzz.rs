//! The fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): the smoke stage of
//! `cargo xtask test` and `cargo xtask fuzz` for long runs. Both build the
//! targets the same way and run the binaries directly, so a reproducer
//! printed by one reruns with the other.
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _};

use crate::{setup, shell::workspace_root, tally::Tally};

/// One fuzz target and the libFuzzer options it runs under.
pub struct Target {
    /// The `[[bin]]` name in fuzz/Cargo.toml.
    pub name: &'static str,
    /// Options beyond the common ones.
    pub options: &'static [&'static str],
}

const fn t(name: &'static str, options: &'static [&'static str]) -> Target {
    Target { name, options }
}

/// Every target (a test checks this list against fuzz/Cargo.toml).
pub const TARGETS: &[Target] = &[
    t("message", &[]),
    t("delegation_request", &[]),
    t("tool_call", &[]),
    t("hook_claude_code", &[]),
    t("hook_codex", &[]),
    t("hook_gemini", &[]),
    t("hook_cursor", &[]),
    t("shell_words", &[]),
    t("policy_toml", &["-max_len=8192"]),
    t("policy_reference", &[]),
    t("runtime_call", &[]),
    t("agent_def", &[]),
    t("enforce_request", &["-max_len=70000"]),
    t("audit_export", &[]),
    t("mcp_framing", &[]),
    t("mcp_headers", &[]),
    t("forward_stream", &[]),
    t("forward_request", &[]),
    t("console_request", &["-max_len=4096"]),
    t("approval_callback", &["-max_len=4096"]),
    t("oap_passport", &["-max_len=16384"]),
    t("agentgate_policy", &["-max_len=8192"]),
    t("sockaddr", &["-max_len=128"]),
    // Decoding is bounded by the image-size limits checked before any
    // pixel buffer exists; a bomb that got past them would cross this line.
    // Verifying a genuine 256×256 card takes a while: a longer timeout.
    t(
        "receipt_image",
        &["-rss_limit_mb=384", "-timeout=60", "-max_len=200000"],
    ),
];

/// Options every run gets: memory and time bounds per input.
const COMMON: &[&str] = &["-rss_limit_mb=1024", "-timeout=20", "-print_final_stats=1"];

/// Seconds each target runs in the smoke stage (after its seeds: every
/// seed always runs, however long that takes).
pub const SMOKE_SECS: u64 = 8;

/// Targets run side by side (the machines this runs on have 2 CPUs).
const PARALLEL: usize = 2;

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// How the targets are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The smoke stage: cargo's dev profile as `fuzz/Cargo.toml` sets it
    /// (opt-level 1, no debug info, every codegen unit in parallel). About
    /// half the compile work of a release build, and within 1.5x of its
    /// speed per input on these parsers.
    Smoke,
    /// Long runs: release, one codegen unit (cargo-fuzz's default, so
    /// ThinLTO can inline across the instrumented code).
    Long,
}

impl Build {
    /// Where cargo-fuzz puts the binaries (fuzz/ is its own workspace).
    fn bin_dir(self) -> PathBuf {
        let profile = match self {
            Build::Smoke => "debug",
            Build::Long => "release",
        };
        fuzz_dir()
            .join("target/x86_64-unknown-linux-gnu")
            .join(profile)
    }
}

/// Builds every target with libFuzzer coverage instrumentation and debug
/// assertions (overflow checks included), without a sanitizer: the code
/// under test is safe Rust, and AddressSanitizer would double the build
/// time of all of agentd's dependencies for nothing it could find there.
pub fn build(how: Build) -> anyhow::Result<()> {
    let status = build_command(how).status().with_context(|| {
        format!(
            "cannot run cargo +{} fuzz (run `cargo xtask setup`)",
            setup::ebpf_toolchain()
        )
    })?;
    if !status.success() {
        bail!(
            "cargo +{} fuzz build failed: {status}",
            setup::ebpf_toolchain()
        );
    }
    Ok(())
}

fn build_command(how: Build) -> Command {
    let toolchain = setup::ebpf_toolchain();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir())
        .arg(format!("+{toolchain}"))
        .args(["fuzz", "build", "--sanitizer", "none", "--debug-assertions"]);
    if how == Build::Smoke {
        cmd.arg("--dev");
    }
    cmd
}

/// The smoke build, started early at idle priority so it uses the CPU the
/// test stages before it leave idle (they mostly wait on daemons, kernels
/// and browsers); the smoke stage then waits for whatever is left.
pub struct BackgroundBuild {
    child: std::io::Result<Child>,
    log: PathBuf,
    started: Instant,
}

/// Starts the smoke build in the background under SCHED_IDLE (nice 19
/// where that is refused); its output goes to target/fuzz-build.log.
pub fn start_smoke_build() -> BackgroundBuild {
    let log = crate::shell::target_dir().join("fuzz-build.log");
    let started = Instant::now();
    let child = std::fs::File::create(&log).and_then(|out| {
        let err = out.try_clone()?;
        let mut cmd = build_command(Build::Smoke);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let param = libc::sched_param { sched_priority: 0 };
                // Inherited by cargo, every rustc and the linker.
                if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
                    libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                }
                Ok(())
            });
        }
        cmd.spawn()
    });
    BackgroundBuild {
        child,
        log,
        started,
    }
}

impl BackgroundBuild {
    /// Waits for the build; the log's tail is printed when it failed.
    fn finish(self) -> anyhow::Result<()> {
        let toolchain = setup::ebpf_toolchain();
        let status = self.child.and_then(|mut c| c.wait()).with_context(|| {
            format!("cannot run cargo +{toolchain} fuzz (run `cargo xtask setup`)")
        })?;
        if !status.success() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            for l in tail.into_iter().rev() {
                println!("    | {l}");
            }
            bail!(
                "cargo +{toolchain} fuzz build failed: {status} (log: {})",
                self.log.display()
            );
        }
        Ok(())
    }
}

/// What one run found.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Inputs executed.
    pub runs: u64,
    /// Coverage (libFuzzer's `cov:` of the last status line).
    pub cov: u64,
    /// Features (`ft:`).
    pub features: u64,
    /// Corpus size at the end.
    pub corpus: u64,
    /// Wall time, seconds.
    pub secs: f64,
    /// The reproducer libFuzzer wrote, if the target failed.
    pub reproducer: Option<PathBuf>,
    /// The failure as libFuzzer named it (`deadly signal`, `out-of-memory` …).
    pub failure: Option<String>,
}

/// Reads libFuzzer's output.
fn parse_output(stderr: &str, report: &mut RunReport) {
    for line in stderr.lines() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            report.runs = n.trim().parse().unwrap_or(report.runs);
        }
        // "#123456\tDONE   cov: 812 ft: 2310 corp: 140/9812b ..." and the
        // periodic "#N\tpulse  cov: ..." lines: keep the last figures.
        let field = |key: &str| -> Option<u64> {
            let rest = line.split(key).nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        if line.starts_with('#') {
            if let Some(c) = field(" cov: ") {
                report.cov = c;
            }
            if let Some(f) = field(" ft: ") {
                report.features = f;
            }
            if let Some(c) = field(" corp: ") {
                report.corpus = c;
            }
        }
        if let Some(rest) = line.split("Test unit written to ").nth(1) {
            report.reproducer = Some(PathBuf::from(rest.trim()));
        }
        if let Some(rest) = line.split("ERROR: libFuzzer: ").nth(1) {
            report
                .failure
                .get_or_insert_with(|| rest.trim().to_string());
        }
        if line.contains("panicked at") {
            report.failure = Some(line.trim().to_string());
        }
    }
}

/// Runs one target for `secs` seconds over `corpus` (new inputs go there)
/// and the committed seeds; crashes are written under `artifacts`.
pub fn run_target(how: Build, t: &Target, secs: u64, corpus: &Path, artifacts: &Path) -> RunReport {
    let mut report = RunReport::default();
    let bin = how.bin_dir().join(t.name);
    let _ = std::fs::create_dir_all(corpus);
    let _ = std::fs::create_dir_all(artifacts);
    let seeds = fuzz_dir().join("seeds").join(t.name);
    let mut cmd = Command::new(&bin);
    cmd.args(COMMON)
        .args(t.options)
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    let start = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output();
    report.secs = start.elapsed().as_secs_f64();
    match out {
        Err(e) => report.failure = Some(format!("cannot run {}: {e}", bin.display())),
        Ok(out) => {
            parse_output(&String::from_utf8_lossy(&out.stderr), &mut report);
            if !out.status.success() {
                report
                    .failure
                    .get_or_insert_with(|| format!("exited with {}", out.status));
                // Keep the tail of libFuzzer's output for the log.
                let text = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                for l in tail.into_iter().rev() {
                    println!("    | {l}");
                }
            }
        }
    }
    report
}

/// Runs `targets` two at a time; returns each report in order.
fn run_all(
    how: Build,
    targets: &[&'static Target],
    secs: u64,
    corpus_root: &Path,
    artifacts: &Path,
) -> Vec<RunReport> {
    let mut reports = Vec::new();
    for pair in targets.chunks(PARALLEL) {
        let handles: Vec<_> = pair
            .iter()
            .map(|&t| {
                let corpus = corpus_root.join(t.name);
                let artifacts = artifacts.join(t.name);
                std::thread::spawn(move || run_target(how, t, secs, &corpus, &artifacts))
            })
            .collect();
        for h in handles {
            reports.push(h.join().unwrap_or_default());
        }
    }
    reports
}

fn line(t: &Target, r: &RunReport) -> String {
    format!(
        "{}: {} runs in {:.0} s, cov {} ft {} corpus {}",
        t.name, r.runs, r.secs, r.cov, r.features, r.corpus
    )
}

/// The smoke stage: the build (started in the background earlier, or
/// here), then every target for [`SMOKE_SECS`] from the committed seeds.
/// A missing toolchain or cargo-fuzz fails the stage.
pub fn smoke(background: Option<BackgroundBuild>) -> Tally {
    let mut t = Tally::default();
    let start = Instant::now();
    let built = match background {
        Some(b) => {
            let since = b.started;
            b.finish().map(|()| {
                println!(
                    "  fuzz targets built in the background at idle priority, {:.0} s after it started; this stage waited {:.0} s for it",
                    since.elapsed().as_secs_f64(),
                    start.elapsed().as_secs_f64()
                )
            })
        }
        None => build(Build::Smoke).map(|()| {
            println!(
                "  built the fuzz targets in {:.0} s",
                start.elapsed().as_secs_f64()
            )
        }),
    };
    if let Err(e) = built {
        println!("FAIL fuzz build: {e:#}");
        t.fail(format!("fuzz: build: {e:#}"));
        return t;
    }
    let work = crate::shell::target_dir().join("fuzz-smoke");
    let _ = std::fs::remove_dir_all(&work);
    let all: Vec<&'static Target> = TARGETS.iter().collect();
    let reports = run_all(
        Build::Smoke,
        &all,
        SMOKE_SECS,
        &work.join("corpus"),
        &work.join("artifacts"),
    );
    for (target, r) in TARGETS.iter().zip(&reports) {
        match (&r.failure, &r.reproducer) {
            (None, _) if r.runs > 0 => {
                println!("PASS fuzz {}", line(target, r));
                t.pass();
            }
            (None, _) => {
                println!("FAIL fuzz {}: no input ran", target.name);
                t.fail(format!("fuzz {}: no input ran", target.name));
            }
            (Some(why), repro) => {
                let repro = repro
                    .as_ref()
                    .map(|p| {
                        format!(
                            "; reproducer {} (rerun: {} {})",
                            p.display(),
                            Build::Smoke.bin_dir().join(target.name).display(),
                            p.display()
                        )
                    })
                    .unwrap_or_default();
                println!("FAIL fuzz {}: {why}{repro}", target.name);
                t.fail(format!("fuzz {}: {why}{repro}", target.name));
            }
        }
    }
    println!(
        "  fuzz smoke stage took {:.0} s",
        start.elapsed().as_secs_f64()
    );
    t
}

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Target to run (default: every target, one after another in pairs).
    pub target: Option<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Run the smoke stage of `cargo xtask test` alone (dev build, every
    /// target for a few seconds from its seeds).
    #[arg(long, conflicts_with_all = ["target", "time"])]
    pub smoke: bool,
}

/// `cargo xtask fuzz`: long runs over the growing corpus in fuzz/corpus/.
pub fn run(args: &Args) -> anyhow::Result<()> {
    setup::run()?;
    if args.smoke {
        let t = smoke(None);
        println!("{} passed, {} failed", t.passed, t.failed);
        if t.failed > 0 {
            bail!("{} fuzz target(s) failed", t.failed);
        }
        return Ok(());
    }
    let targets: Vec<&'static Target> = match &args.target {
        Some(name) => vec![TARGETS.iter().find(|t| t.name == name).with_context(|| {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            format!("no fuzz target `{name}` (targets: {})", names.join(", "))
        })?],
        None => TARGETS.iter().collect(),
    };
    build(Build::Long)?;
    let reports = run_all(
        Build::Long,
        &targets,
        args.time,
        &fuzz_dir().join("corpus"),
        &fuzz_dir().join("artifacts"),
    );
    let mut failed = 0;
    for (t, r) in targets.iter().zip(&reports) {
        match &r.failure {
            None => println!("PASS fuzz {}", line(t, r)),
            Some(why) => {
                failed += 1;
                println!(
                    "FAIL fuzz {}: {why}; reproducer {}",
                    line(t, r),
                    r.reproducer
                        .as_ref()
                        .map_or("none".into(), |p| p.display().to_string())
                );
            }
        }
    }
    if failed > 0 {
        bail!("{failed} fuzz target(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `[[bin]]` of fuzz/Cargo.toml is run by the stage, and nothing else.
    #[test]
    fn targets_match_the_fuzz_crate() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        let mut bins: Vec<String> = Vec::new();
        let mut in_bin = false;
        for l in manifest.lines().map(str::trim) {
            if l.starts_with('[') {
                in_bin = l == "[[bin]]";
            } else if let Some(v) = l.strip_prefix("name = ").filter(|_| in_bin) {
                bins.push(v.trim_matches('"').to_string());
            }
        }
        let mut listed: Vec<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
        bins.sort();
        listed.sort();
        assert_eq!(bins, listed);
    }

    #[test]
    fn reads_libfuzzer_output() {
        let mut r = RunReport::default();
        parse_output(
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
             #4096\tpulse  cov: 812 ft: 2310 corp: 140/9812b lim: 43 exec/s: 2048 rss: 41Mb\n\
             thread '<unnamed>' panicked at fuzz_targets/x.rs:3:5:\n\
             ==1== ERROR: libFuzzer: deadly signal\n\
             artifact_prefix='a/'; Test unit written to a/crash-0123\n\
             stat::number_of_executed_units: 4100\n",
            &mut r,
        );
        assert_eq!(
            (r.runs, r.cov, r.features, r.corpus),
            (4100, 812, 2310, 140)
        );
        assert_eq!(r.reproducer, Some(PathBuf::from("a/crash-0123")));
        assert!(r.failure.unwrap().contains("panicked at"));
    }
}
