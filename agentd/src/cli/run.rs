//! `agentctl run`.

/// Arguments of `agentctl run`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `agentctl run`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("agentctl run is not built yet")
}
