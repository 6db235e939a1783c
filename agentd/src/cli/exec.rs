//! `agentctl exec`.

/// Arguments of `agentctl exec`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `agentctl exec`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("agentctl exec is not built yet")
}
