//! `agentctl receipt`.

/// Arguments of `agentctl receipt`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `agentctl receipt`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("agentctl receipt is not built yet")
}
