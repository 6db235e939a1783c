//! `agentctl policy`.

/// Arguments of `agentctl policy`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `agentctl policy`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("agentctl policy is not built yet")
}
