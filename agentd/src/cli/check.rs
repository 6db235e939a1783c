//! `agentctl check`.

/// Arguments of `agentctl check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `agentctl check`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("agentctl check is not built yet")
}
