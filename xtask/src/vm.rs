//! VM tests: boot Debian's 6.1 cloud kernel with `bpf` among the active LSMs
//! under QEMU/TCG, run `agentd doctor --json` and the kernel-enforcement test
//! binaries inside, and count what they report on the serial console.
//!
//! Entry point: [`run_vm_tests`]. The caller builds the binaries first.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};

pub mod initramfs;
pub mod kernel;
pub mod qemu;
pub mod results;

pub use kernel::{ensure_kernel, Kernel};
pub use results::{Status, TestLine};

/// Console markers printed by the VM's `/init`; shared with the parser.
pub mod markers {
    /// `/init` started.
    pub const BEGIN: &str = "AGENTD-VM-BEGIN";
    /// Followed by `uname -r` and the active LSM list.
    pub const KERNEL: &str = "AGENTD-VM-KERNEL";
    /// `agentd doctor --json` output follows.
    pub const DOCTOR_BEGIN: &str = "AGENTD-VM-DOCTOR-BEGIN";
    /// Followed by doctor's exit status.
    pub const DOCTOR_END: &str = "AGENTD-VM-DOCTOR-END";
    /// Followed by the test binary's name.
    pub const TEST_BEGIN: &str = "AGENTD-VM-TEST-BEGIN";
    /// Followed by the test binary's name and exit status.
    pub const TEST_END: &str = "AGENTD-VM-TEST-END";
    /// Every test binary ran.
    pub const DONE: &str = "AGENTD-VM-DONE";
}

/// One test binary to run inside the VM (as root, cwd `/`).
#[derive(Debug, Clone)]
pub struct VmTest {
    /// Name inside the VM (`/agentd/bin/<name>`, on PATH) and in results.
    pub name: String,
    /// Host path of the built binary.
    pub binary: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
}

impl VmTest {
    /// A test binary named after its file name, without arguments.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        let binary = binary.into();
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "test".into());
        Self {
            name,
            binary,
            args: Vec::new(),
        }
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// The VM test binaries under a cargo profile directory (`target/debug`),
/// in the order they run: every `agentd-vm-*` binary there (the BPF LSM
/// hook suite, the enforcer end-to-end suite, the overhead benchmark), then
/// the shared scenario suite `agentd-scenarios --backend lsm` if built.
///
/// For focused runs while developing, `AGENTD_VM_ONLY` (comma-separated
/// binary names) keeps only those binaries and `AGENTD_VM_SCENARIOS` passes a
/// name filter to the scenario suite.
pub fn vm_test_binaries(profile_dir: &Path) -> Vec<VmTest> {
    let mut tests = all_vm_test_binaries(profile_dir);
    if let Ok(only) = std::env::var("AGENTD_VM_ONLY") {
        let keep: Vec<&str> = only.split(',').map(str::trim).collect();
        tests.retain(|t| keep.contains(&t.name.as_str()));
    }
    if let Ok(filter) = std::env::var("AGENTD_VM_SCENARIOS") {
        for t in tests.iter_mut().filter(|t| t.name == "agentd-scenarios") {
            t.args.push(filter.clone());
        }
    }
    tests
}

fn all_vm_test_binaries(profile_dir: &Path) -> Vec<VmTest> {
    let mut names: Vec<String> = std::fs::read_dir(profile_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("agentd-vm-") && !n.contains('.'))
        .collect();
    // The benchmark last: its figures are cleaner without the suites' churn.
    names.sort_by_key(|n| (n.contains("bench"), n.clone()));
    let mut tests: Vec<VmTest> = names
        .iter()
        .map(|n| VmTest::new(profile_dir.join(n)))
        .collect();
    let scenarios = profile_dir.join("agentd-scenarios");
    if scenarios.is_file() {
        tests.push(VmTest::new(scenarios).args(["--backend", "lsm"]));
    }
    tests
}

/// Where and how the VM runs.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Kernel download cache (kept across runs).
    pub cache_dir: PathBuf,
    /// Scratch directory: initramfs and `console.log`.
    pub work_dir: PathBuf,
    /// Whole-VM timeout.
    pub timeout: Duration,
    /// Per-binary timeout inside the VM (busybox `timeout -s KILL`).
    pub per_test_timeout: Duration,
    /// Guest memory.
    pub memory_mib: u32,
    /// Guest vCPUs (1 matches the verified recipe and keeps timings stable).
    pub cpus: u32,
    /// Echo result lines to stderr as they arrive.
    pub echo: bool,
}

impl VmOptions {
    /// Defaults under a cargo target directory: `target/vm/cache`, `target/vm/run`.
    /// `AGENTD_VM_CACHE` overrides the cache directory.
    pub fn under_target(target_dir: &Path) -> Self {
        let cache_dir = std::env::var_os("AGENTD_VM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir.join("vm/cache"));
        Self {
            cache_dir,
            work_dir: target_dir.join("vm/run"),
            // The lsm suite and the scenario suite each take a few minutes
            // under TCG on a loaded 2-CPU host.
            timeout: Duration::from_secs(1200),
            per_test_timeout: Duration::from_secs(600),
            memory_mib: 1024,
            cpus: 1,
            echo: true,
        }
    }
}

/// What the VM run found.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed (including binaries that crashed, hung or never ran).
    pub failed: usize,
    /// Tests skipped because the kernel lacks a feature (each says why).
    pub skipped: usize,
    /// Every test line in console order.
    pub tests: Vec<TestLine>,
    /// `BENCH` lines (overhead figures) printed inside the VM.
    pub bench: Vec<String>,
    /// Kernel package booted, `uname -r` and active LSMs inside.
    pub kernel: String,
    /// Full serial console of the run.
    pub console_log: PathBuf,
    /// Wall time of the boot, tests and power-off.
    pub elapsed: Duration,
}

impl VmOutcome {
    /// True when nothing failed.
    pub fn success(&self) -> bool {
        self.failed == 0
    }

    /// `N passed, N failed, N skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }

    /// Per-test lines, bench figures and the summary, ready to print.
    pub fn report(&self) -> String {
        let mut s = format!(
            "VM: {} ({:.1} s)\n",
            self.kernel,
            self.elapsed.as_secs_f64()
        );
        for t in &self.tests {
            s += &format!("  {t}\n");
        }
        for b in &self.bench {
            s += &format!("  BENCH {b}\n");
        }
        if !self.success() {
            s += &format!("  console: {}\n", self.console_log.display());
        }
        s += &format!("VM tests: {}\n", self.summary());
        s
    }
}

/// Boots the VM once with `agentd` (for `agentd doctor --json`) and `tests`
/// inside, and returns the counted results.
///
/// Returns `Err` only when the VM cannot be prepared (no kernel, no qemu,
/// missing binaries). A VM that boots but crashes, hangs or whose tests fail
/// is `Ok` with `failed > 0`: check [`VmOutcome::success`].
pub fn run_vm_tests(agentd: &Path, tests: &[VmTest], opts: &VmOptions) -> Result<VmOutcome> {
    let kernel = ensure_kernel(&opts.cache_dir)?;
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("creating {}", opts.work_dir.display()))?;
    let initrd = initramfs::build(
        &opts.work_dir,
        agentd,
        tests,
        opts.per_test_timeout.as_secs(),
    )
    .context("building the initramfs")?;
    let console_log = opts.work_dir.join("console.log");
    let boot = qemu::boot(&qemu::BootSpec {
        kernel: &kernel.vmlinuz,
        initrd: &initrd,
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        timeout: opts.timeout,
        log: console_log.clone(),
        echo: opts.echo,
    })?;
    let names: Vec<String> = tests.iter().map(|t| t.name.clone()).collect();
    let mut parsed = results::parse(&boot.console, &names);
    if boot.timed_out {
        parsed.tests.push(TestLine {
            status: Status::Fail,
            binary: "vm".into(),
            name: "timeout".into(),
            detail: format!("killed after {} s", opts.timeout.as_secs()),
        });
    }
    let count = |s: Status| parsed.tests.iter().filter(|t| t.status == s).count();
    Ok(VmOutcome {
        passed: count(Status::Pass),
        failed: count(Status::Fail),
        skipped: count(Status::Skip),
        kernel: format!("{} [{}]", kernel.package, parsed.kernel),
        tests: parsed.tests,
        bench: parsed.bench,
        console_log,
        elapsed: boot.elapsed,
    })
}
