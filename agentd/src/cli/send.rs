//! `agentctl send`.

/// Arguments of `agentctl send`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `agentctl send`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("agentctl send is not built yet")
}
