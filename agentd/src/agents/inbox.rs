//! Inbox entries: an operator's message queued for one agent, its run by
//! the driver, and the runtime's reply.
use serde::{Deserialize, Serialize};

/// Largest reply kept per run (the driver's capture bound), bytes.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Waiting for the driver.
    Queued,
    /// Taken by the driver; the runtime is running.
    Running,
    /// Finished; outcome and reply recorded.
    Done,
}

impl EntryState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Queued => "queued",
            EntryState::Running => "running",
            EntryState::Done => "done",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(EntryState::Queued),
            "running" => Some(EntryState::Running),
            "done" => Some(EntryState::Done),
            _ => None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The runtime exited 0.
    Ok,
    /// The runtime exited non-zero or was killed by a signal.
    Failed,
    /// The time limit passed; the run's cgroup was killed.
    TimedOut,
    /// The runtime could not be started.
    LaunchFailed,
}

/// One message in an agent's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// Entry id (increasing: the driver takes entries in this order).
    pub id: i64,
    /// Agent addressed.
    pub agent: String,
    /// Session of the message.
    pub session: String,
    /// Operator (claimed, for untrusted messages).
    pub operator: String,
    /// `verified` or `untrusted`.
    pub trust: String,
    /// The active-message id the runtime's tool calls echo.
    pub active_message_id: String,
    /// The message text.
    pub text: String,
    /// queued, running or done.
    pub state: EntryState,
    /// Unix seconds.
    pub submitted_at: i64,
    /// Unix seconds the driver took it.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// Unix seconds it finished.
    #[serde(default)]
    pub finished_at: Option<i64>,
    /// How the run ended.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Exit code (128 + signal when killed).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The runtime's reply (its stdout, bounded).
    #[serde(default)]
    pub reply: Option<String>,
    /// The reply was cut at [`MAX_REPLY_BYTES`].
    #[serde(default)]
    pub reply_truncated: bool,
    /// The run cgroup used.
    #[serde(default)]
    pub run: Option<String>,
}

/// What the driver reports when a run ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    /// How it ended.
    pub outcome: Outcome,
    /// Exit code, when it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The reply (bounded by the driver; longer is refused).
    #[serde(default)]
    pub reply: String,
    /// The runtime wrote more than was kept.
    #[serde(default)]
    pub reply_truncated: bool,
}
