//! Open Agent Passport (OAP 1.0): passports checked against the spec's
//! schema (`passport`, `limits`), turned into agentd policies (`import`,
//! with the known policy packs in `packs`), and agentd's decisions as
//! signed OAP decision objects (`decision`).
pub(crate) mod capability;
pub mod decision;
pub mod import;
mod limits;
pub mod packs;
pub mod passport;
mod schema;

pub use import::{import, ImportError};
pub use passport::{parse, Passport, PassportError};
