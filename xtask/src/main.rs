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
            shell::run_cmd(
                std::process::Command::new("cargo")
                    .current_dir(shell::workspace_root())
                    .args(["build", "--workspace", "--bins"]),
            )?;
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
