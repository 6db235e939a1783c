//! `cargo xtask`: the project's automation. Every command bootstraps what it
//! needs first (`setup` is idempotent and says what it does).
use clap::{Parser, Subcommand};

mod demo;
mod fd_store;
mod fuzz;
mod install_test;
mod leftovers;
mod package;
mod setup;
mod shell;
mod tally;
mod test;

#[derive(Parser)]
#[command(name = "xtask", about = "agentd project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh machine lacks (toolchain parts, bpf-linker, cargo-fuzz, Debian packages, VM kernel).
    Setup,
    /// The one test command: unit, privileged host, VM, install and demo tests.
    Test(test::Args),
    /// The end-to-end demo (the main job).
    Demo(demo::Args),
    /// Only the VM tests (builds the binaries first).
    Vm,
    /// Build the .deb and .rpm (release binaries, cargo-deb, cargo-generate-rpm).
    Package,
    /// Only the install test: package, inspect the .rpm, install/remove/purge the .deb.
    InstallTest,
    /// Run the fuzz targets (fuzz/) for a while each, growing fuzz/corpus/.
    Fuzz(fuzz::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test(args) => test::run(args),
        Command::Vm => {
            setup::run()?;
            shell::run_cmd(&mut vm_build())?;
            let t = test::vm_tests();
            println!(
                "{} passed, {} failed, {} skipped",
                t.passed, t.failed, t.skipped
            );
            if t.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Demo(args) => {
            setup::run()?;
            demo::run(&args)
        }
        Command::Package => package::run(),
        Command::InstallTest => test::install_only(),
        Command::Fuzz(args) => fuzz::run(&args),
    }
}

/// The build before `cargo xtask vm`: every binary, or with `AGENTD_VM_ONLY`
/// (see `xtask::vm::vm_test_binaries`) only agentd, agentctl and the named
/// suites that are built from tests/src/bin (a name without a source there,
/// such as a copy of an older build kept for comparison, is run as it is).
fn vm_build() -> std::process::Command {
    let root = shell::workspace_root();
    let mut cmd = std::process::Command::new("cargo");
    cmd.current_dir(&root).arg("build");
    match std::env::var("AGENTD_VM_ONLY") {
        Ok(only) => {
            cmd.args(["-p", "agentd", "--bin", "agentd", "--bin", "agentctl"]);
            cmd.args(["-p", "agentd-tests"]);
            let bins = root.join("tests/src/bin");
            for name in only.split(',').map(str::trim) {
                if bins.join(format!("{name}.rs")).is_file() || bins.join(name).is_dir() {
                    cmd.args(["--bin", name]);
                }
            }
        }
        Err(_) => {
            cmd.args(["--workspace", "--bins"]);
        }
    }
    cmd
}
