//! `cargo xtask setup`: idempotent bootstrap. Each step checks first, says
//! what it found, and only then installs.
use std::{path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::shell::{output, run_cmd, step, workspace_root};

/// bpf-linker release that builds against the nightly toolchain's LLVM here.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-fuzz release the fuzz stage runs (`fuzz/`), on the eBPF nightly.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Debian packages the tests need: QEMU for the VM tests, busybox and cpio for
/// its initramfs, systemd for `systemd-analyze verify`, rpm to inspect the .rpm,
/// chromium for the web console's browser test (driven headless over the
/// DevTools protocol on a pipe: no driver, nothing fetched by the test),
/// prometheus for `promtool check metrics` on the metrics endpoint's output,
/// postgresql for the fleet tests (each starts its own throwaway cluster
/// with the server binaries under /usr/lib/postgresql/*/bin).
const DEBIAN_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "systemd",
    "rpm",
    "chromium",
    "prometheus",
    "postgresql",
];

/// The dated nightly the eBPF crate builds with (`agentd-ebpf/toolchain`).
pub fn ebpf_toolchain() -> String {
    let path = workspace_root().join("agentd-ebpf/toolchain");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs every setup step.
pub fn run() -> anyhow::Result<()> {
    step("setup: checking what this machine lacks");
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    debian_packages()?;
    vm_kernel()?;
    agent_runtimes()?;
    mcp_sdk()?;
    println!("==> setup: done");
    Ok(())
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let toolchain = ebpf_toolchain();
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        &toolchain,
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("    {toolchain} toolchain with rust-src: present");
        return Ok(());
    }
    println!(
        "    installing the pinned {toolchain} toolchain with rust-src (eBPF builds use -Z build-std=core)"
    );
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        &toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    // bpf-linker links the nightly toolchain's libLLVM, so ask it through rustup.
    let toolchain = ebpf_toolchain();
    let have = output(Command::new("rustup").args(["run", &toolchain, "bpf-linker", "--version"]))
        .unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        println!("    bpf-linker {BPF_LINKER_VERSION}: present");
        return Ok(());
    }
    println!("    building bpf-linker {BPF_LINKER_VERSION} against {toolchain}'s own LLVM (about a minute)");
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .args(["--print", "sysroot"]),
    )?;
    let libdir = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    let major = llvm
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libLLVM.so."))
        .and_then(|v| v.split('.').next())
        .context("cannot read the LLVM version")?
        .to_string();
    let prefix = workspace_root().join("target/xtask/llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)?;
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
}

/// cargo-fuzz drives the fuzz targets in `fuzz/` (libFuzzer needs a nightly:
/// the same pinned one as the eBPF build, so no second toolchain).
fn cargo_fuzz() -> anyhow::Result<()> {
    let have = output(Command::new("cargo").args(["fuzz", "--version"])).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION) {
        println!("    cargo-fuzz {CARGO_FUZZ_VERSION}: present");
        return Ok(());
    }
    println!(
        "    installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install --locked; the fuzz stage runs it on {})",
        ebpf_toolchain()
    );
    run_cmd(Command::new("cargo").args([
        "install",
        "--locked",
        "--force",
        "--version",
        CARGO_FUZZ_VERSION,
        "cargo-fuzz",
    ]))
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .unwrap_or_default()
                .contains("install ok installed")
        })
        .collect();
    if missing.is_empty() {
        println!(
            "    Debian packages {}: present",
            DEBIAN_PACKAGES.join(", ")
        );
        return Ok(());
    }
    println!("    installing Debian packages: {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn vm_kernel() -> anyhow::Result<()> {
    let opts = xtask::vm::VmOptions::under_target(&crate::shell::target_dir());
    let kernel = xtask::vm::ensure_kernel(&opts.cache_dir)?;
    println!("    VM kernel: {}", kernel.vmlinuz.display());
    Ok(())
}

/// The real agent CLIs the runtime stage runs, pinned in
/// tests/runtimes/package-lock.json and installed with `npm ci` into
/// target/runtimes (the agent user must be able to read and run them).
fn agent_runtimes() -> anyhow::Result<()> {
    let src = workspace_root().join("tests/runtimes");
    let dir = crate::shell::target_dir().join("runtimes");
    let lock =
        std::fs::read(src.join("package-lock.json")).context("reading the runtimes' lock")?;
    let bins = ["claude", "codex", "gemini"];
    // Each CLI must answer --version (Claude Code's bin is a stub until its
    // postinstall copies the native binary in).
    let installed = std::fs::read(dir.join("package-lock.json")).is_ok_and(|l| l == lock)
        && bins.iter().all(|b| {
            output(Command::new(dir.join("node_modules/.bin").join(b)).arg("--version")).is_ok()
        });
    if installed {
        println!(
            "    agent runtimes (Claude Code, Codex, Gemini CLI) as pinned in tests/runtimes: present in {}",
            dir.display()
        );
        return Ok(());
    }
    if output(Command::new("npm").arg("--version")).is_err() {
        println!("    installing Debian packages nodejs npm (the agent runtimes install with npm)");
        run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        run_cmd(
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "nodejs",
                    "npm",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    println!(
        "    installing the pinned agent runtimes (tests/runtimes/package-lock.json) with npm ci into {} (about 20 s)",
        dir.display()
    );
    std::fs::create_dir_all(&dir)?;
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(src.join(f), dir.join(f))?;
    }
    // Install scripts are not needed (each CLI ships its binary in the
    // package) and would run code at install time.
    run_cmd(Command::new("npm").current_dir(&dir).args([
        "ci",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
    ]))?;
    // The one install script the suite needs: Claude Code's, which copies
    // its platform binary (a pinned optional dependency, already installed
    // by npm ci) over the bin stub. It runs offline.
    println!("    running Claude Code's install.cjs (copies its native binary into place)");
    run_cmd(
        Command::new("node")
            .current_dir(&dir)
            .arg("node_modules/@anthropic-ai/claude-code/install.cjs"),
    )?;
    // The agent user runs them: every directory on the way must be traversable.
    use std::os::unix::fs::PermissionsExt as _;
    let mut d = Some(dir.as_path());
    while let Some(p) = d {
        let mode = std::fs::metadata(p)?.permissions().mode();
        if mode & 0o005 != 0o005 {
            println!(
                "    note: {} is not world-readable; the agent user cannot run the runtimes",
                p.display()
            );
        }
        d = p.parent().filter(|p| p.as_os_str().len() > 1);
    }
    Ok(())
}

/// The official Python SDKs the suites run — MCP (the MCP suite's client
/// and server), openai and anthropic (the forward suite's clients), and
/// AgentGate (agent-gatekeeper: the policies the AgentGate import test
/// converts are written by its own `to_yaml`) — pinned
/// with their dependencies in tests/mcp/requirements.txt, installed with pip
/// into one venv at target/mcp-venv made from the system's python3 (the
/// agent user must be able to run it: not a python under /root).
fn mcp_sdk() -> anyhow::Result<()> {
    let req = workspace_root().join("tests/mcp/requirements.txt");
    let dir = crate::shell::target_dir().join("mcp-venv");
    let want = std::fs::read(&req).context("reading tests/mcp/requirements.txt")?;
    let python = dir.join("bin/python");
    let installed = std::fs::read(dir.join("agentd-requirements.txt")).is_ok_and(|l| l == want)
        && output(Command::new(&python).args(["-c", "import mcp, openai, anthropic, agentgate"]))
            .is_ok();
    if installed {
        println!(
            "    MCP, openai, anthropic and AgentGate Python packages as pinned in tests/mcp/requirements.txt: present in {}",
            dir.display()
        );
        return Ok(());
    }
    let system_python = PathBuf::from("/usr/bin/python3");
    if !system_python.exists()
        || output(Command::new(&system_python).args(["-c", "import venv, ensurepip"])).is_err()
    {
        println!("    installing Debian packages python3 python3-venv (the MCP suite's SDK runs in a venv)");
        run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        run_cmd(
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "python3",
                    "python3-venv",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    println!(
        "    installing the MCP, openai, anthropic and AgentGate Python packages (tests/mcp/requirements.txt, every version pinned) with pip into {}",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    run_cmd(Command::new(&system_python).arg("-m").arg("venv").arg(&dir))?;
    run_cmd(
        Command::new(dir.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&req),
    )?;
    std::fs::write(dir.join("agentd-requirements.txt"), &want)?;
    Ok(())
}
