//! xtask's reusable parts. `main.rs` dispatches subcommands; modules here do
//! the work so they can be called from more than one subcommand.

pub mod vm;
