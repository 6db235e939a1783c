//! `agentctl audit`.

/// Arguments of `agentctl audit`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `agentctl audit`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("agentctl audit is not built yet")
}
