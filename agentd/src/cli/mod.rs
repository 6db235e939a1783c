//! `agentctl` subcommands, one module each. The binary only dispatches.

pub mod audit;
pub mod check;
pub mod exec;
pub mod operator;
pub mod policy;
pub mod receipt;
pub mod run;
pub mod send;
