//! Seals every allowed tool call: the gateway's allow hook enqueues a receipt
//! (durably, in the persisted queue) and a worker renders it off the decision
//! path. The daemon calls [`start`].
use std::{path::Path, sync::Arc};

use crate::audit::Companion;
use crate::gateway::{AllowCompanion, AllowHook, AllowedCall, Gateway, HookError};
use crate::protocol::reason::RECEIPT_UNAVAILABLE;

use super::queue::{KeyLookup, ReceiptSeal, ReceiptVoid};
use super::{ReceiptError, ReceiptQueue};

/// Opens the queue under `state_dir`, starts the render worker (keys come
/// from the gateway's operator store) and returns the hook plus the queue.
pub fn start(
    state_dir: &Path,
    gateway: Arc<Gateway>,
) -> Result<(Arc<ReceiptHook>, ReceiptQueue), ReceiptError> {
    let queue = ReceiptQueue::open(state_dir)?;
    let key_of: KeyLookup = Arc::new(move |operator: &str| gateway.key_of(operator));
    queue.spawn_worker(key_of.clone());
    Ok((
        Arc::new(ReceiptHook {
            queue: queue.clone(),
            key_of,
        }),
        queue,
    ))
}

/// Seals a receipt for each allowed call in its audit row's transaction,
/// and wakes the render worker once the call stands.
pub struct ReceiptHook {
    queue: ReceiptQueue,
    key_of: KeyLookup,
}

impl AllowHook for ReceiptHook {
    fn name(&self) -> &str {
        "receipt"
    }

    fn companion(&self, call: &AllowedCall<'_>) -> Result<Option<AllowCompanion>, HookError> {
        let fail = |message: String| HookError {
            hook: "receipt".into(),
            reason_code: RECEIPT_UNAVAILABLE.into(),
            message,
        };
        let key = (self.key_of)(call.operator)
            .ok_or_else(|| fail(format!("no key for operator {}", call.operator)))?;
        let seal = ReceiptSeal::new(
            &key,
            call.operator,
            call.call_id,
            call.action,
            call.receipt_redact,
        )
        .map_err(|e| fail(e.to_string()))?;
        Ok(Some(AllowCompanion {
            reason_code: RECEIPT_UNAVAILABLE,
            companion: Box::new(seal),
        }))
    }

    fn after_allow(&self, call: &AllowedCall<'_>) -> Result<(), HookError> {
        // A receipt binds the audit row; without one there is nothing to seal.
        if call.audit.is_none() {
            return Err(HookError {
                hook: "receipt".into(),
                reason_code: RECEIPT_UNAVAILABLE.into(),
                message: "no audit row to seal".into(),
            });
        }
        // Sealed with the row (the gateway denies the call otherwise); the
        // worker renders it off the decision path.
        self.queue.notify();
        Ok(())
    }

    fn void_companion(
        &self,
        call: &AllowedCall<'_>,
        reason_code: &str,
    ) -> Option<Box<dyn Companion>> {
        Some(Box::new(ReceiptVoid {
            call_id: call.call_id.to_owned(),
            reason: reason_code.to_owned(),
        }))
    }
}
