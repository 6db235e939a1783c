//! One line of an audit export: a record or a checkpoint, tagged by `"type"`.
//! Its own module because both export formats (JSON Lines, and OCSF's
//! `unmapped.agentd`) carry records in this shape.
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::record::Record;

/// One exported line, tagged by `"type"`.
// Lines are built and dropped one at a time; boxing records would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    /// An audit record (all its fields at top level).
    Record(Record),
    /// A signed checkpoint.
    Checkpoint(Checkpoint),
}
