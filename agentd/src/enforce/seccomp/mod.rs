//! The seccomp backend's user-space half: the filter the launcher installs
//! and the supervisor that answers its notifications.

pub mod caps;
pub mod filter;
pub mod notif;
pub mod resolve;
pub mod supervisor;
pub mod sys;
pub mod tracee;
