//! `agentctl operator`.

/// Arguments of `agentctl operator`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `agentctl operator`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("agentctl operator is not built yet")
}
