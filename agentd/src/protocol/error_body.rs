//! The JSON body of every refusal agentd answers with, on the API and on
//! the enforcement socket alike.
use serde::{Deserialize, Serialize};

/// `{"reason_code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable reason code (see [`super::reason`]).
    pub reason_code: String,
    /// Human explanation.
    pub message: String,
}
