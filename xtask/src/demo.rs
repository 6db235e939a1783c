//! `cargo xtask demo [--vm | --runtime claude-code]`: builds the workspace
//! and runs `agentd-demo`, the ownership scenario end to end — on this host
//! (the backend `agentd doctor` picks), or inside the VM where the BPF LSM
//! backend runs; with `--runtime claude-code`, the same scenario played by
//! the real Claude Code against the scripted model server.
use std::process::Command;

use anyhow::bail;

use crate::shell::{run_cmd, step, target_dir, workspace_root};

/// Options of `cargo xtask demo`.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Run the demo inside the QEMU VM with the BPF LSM backend.
    #[arg(long)]
    pub vm: bool,
    /// Play the ownership scenario with a real agent runtime instead of the
    /// scripted agent (on this host; `claude-code`).
    #[arg(long, value_parser = ["claude-code"], conflicts_with = "vm")]
    pub runtime: Option<String>,
}

/// Builds, then runs the demo; fails if any outcome deviates.
pub fn run(args: &Args) -> anyhow::Result<()> {
    step("demo: building agentd, agentctl, the scripted agent and the demo driver");
    run_cmd(Command::new("cargo").current_dir(workspace_root()).args([
        "build",
        "--quiet",
        "--workspace",
        "--bins",
    ]))?;
    let bin = target_dir().join("debug");
    if args.runtime.is_some() {
        step("demo: the ownership scenario with the real Claude Code (agentd-runtimes demo)");
        return run_cmd(
            Command::new(bin.join("agentd-runtimes"))
                .arg("--bin")
                .arg(&bin)
                .arg("--install")
                .arg(target_dir().join("runtimes"))
                .arg("demo"),
        );
    }
    if args.vm {
        return run_in_vm(&bin);
    }
    run_cmd(
        Command::new(bin.join("agentd-demo"))
            .arg("--work-dir")
            .arg(target_dir().join("demo")),
    )
}

fn run_in_vm(bin: &std::path::Path) -> anyhow::Result<()> {
    step("demo: booting the VM (BPF LSM backend); the demo runs inside under TCG, so it is slower");
    let mut opts = xtask::vm::VmOptions::under_target(&target_dir());
    opts.work_dir = target_dir().join("vm/demo");
    let test = xtask::vm::VmTest::new(bin.join("agentd-demo")).args([
        "--work-dir",
        "/tmp/agentd-demo",
        "--result-line",
    ]);
    let outcome = xtask::vm::run_vm_tests(&bin.join("agentd"), &[test], &opts)?;
    print!("{}", outcome.report());
    if !outcome.success() {
        bail!(
            "the demo failed inside the VM (console: {})",
            outcome.console_log.display()
        );
    }
    Ok(())
}
