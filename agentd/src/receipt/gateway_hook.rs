//! Seals every allowed tool call: the gateway's allow hook enqueues a receipt
//! (durably, in the persisted queue) and a worker renders it off the decision
//! path. The daemon calls [`start`].
use std::{path::Path, sync::Arc};

use crate::gateway::{AllowHook, AllowedCall, Gateway, HookError};

use super::{queue::KeyLookup, ReceiptClaims, ReceiptError, ReceiptQueue};

/// Opens the queue under `state_dir`, starts the render worker (keys come
/// from the gateway's operator store) and returns the hook plus the queue.
pub fn start(
    state_dir: &Path,
    gateway: Arc<Gateway>,
) -> Result<(Arc<ReceiptHook>, ReceiptQueue), ReceiptError> {
    let queue = ReceiptQueue::open(state_dir)?;
    let key_of: KeyLookup = Arc::new(move |operator: &str| gateway.key_of(operator));
    queue.spawn_worker(key_of);
    Ok((
        Arc::new(ReceiptHook {
            queue: queue.clone(),
        }),
        queue,
    ))
}

/// Enqueues a receipt for each allowed, audited call.
pub struct ReceiptHook {
    queue: ReceiptQueue,
}

impl AllowHook for ReceiptHook {
    fn name(&self) -> &str {
        "receipt"
    }

    fn after_allow(&self, call: &AllowedCall<'_>) -> Result<(), HookError> {
        let fail = |reason_code: &str, message: String| HookError {
            hook: "receipt".into(),
            reason_code: reason_code.into(),
            message,
        };
        // A receipt binds the audit row; without one there is nothing to seal.
        let Some(row) = call.audit else {
            return Err(fail("receipt_unavailable", "no audit row to seal".into()));
        };
        let claims = ReceiptClaims {
            seq: row.seq,
            row_hash: row.hash.clone(),
            operator: call.operator.to_string(),
            call_id: call.call_id.to_string(),
            action: call.action.to_string(),
            timestamp: row.timestamp.clone(),
        };
        self.queue
            .enqueue(&claims)
            .map_err(|e| fail("receipt_unavailable", e.to_string()))
    }
}
