//! Seals every allowed tool call: the gateway's allow hook enqueues a receipt
//! (durably, in the persisted queue) and a worker renders it off the decision
//! path. The daemon calls [`start`].
use std::collections::HashMap;
use std::sync::Mutex;
use std::{path::Path, sync::Arc};

use crate::audit::Companion;
use crate::gateway::{AllowCompanion, AllowHook, AllowedCall, Gateway, HookError};
use crate::protocol::reason::RECEIPT_UNAVAILABLE;

use super::keys::ReceiptKeys;
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
            derived: Mutex::default(),
        }),
        queue,
    ))
}

/// Seals a receipt for each allowed call in its audit row's transaction,
/// and wakes the render worker once the call stands.
pub struct ReceiptHook {
    queue: ReceiptQueue,
    key_of: KeyLookup,
    /// Receipt keys per operator, with the operator key they were derived
    /// from: HKDF per allow was a dozen SHA-256 blocks on the call's path.
    derived: Mutex<HashMap<String, (Vec<u8>, ReceiptKeys)>>,
}

/// Operators whose derived keys are kept (there are a handful).
const MAX_DERIVED: usize = 256;

impl ReceiptHook {
    /// The receipt keys of `operator_key`, derived once per key: a
    /// rotated key no longer matches its entry and is derived anew.
    fn keys_of(&self, operator: &str, operator_key: &[u8]) -> Result<ReceiptKeys, ReceiptError> {
        let mut derived = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((key, keys)) = derived.get(operator) {
            if key.as_slice() == operator_key {
                return Ok(keys.clone());
            }
        }
        let keys = ReceiptKeys::derive(operator_key)?;
        if derived.len() >= MAX_DERIVED {
            derived.clear();
        }
        derived.insert(operator.to_owned(), (operator_key.to_vec(), keys.clone()));
        Ok(keys)
    }
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
        let keys = self
            .keys_of(call.operator, &key)
            .map_err(|e| fail(e.to_string()))?;
        let seal = ReceiptSeal::new(
            keys,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_keys_are_derived_once_per_operator_key_and_again_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let hook = ReceiptHook {
            queue: ReceiptQueue::open(dir.path()).unwrap(),
            key_of: Arc::new(|_: &str| None),
            derived: Mutex::default(),
        };
        let (k1, k2) = (
            b"first-operator-key-0123456789ab",
            b"rotated-operator-key-0123456789",
        );
        let first = hook.keys_of("carol", k1).unwrap();
        assert_eq!(first.tag_key, ReceiptKeys::derive(k1).unwrap().tag_key);
        assert_eq!(hook.keys_of("carol", k1).unwrap().tag_key, first.tag_key);
        // A rotated key must never be served the old key's derivation.
        let rotated = hook.keys_of("carol", k2).unwrap();
        assert_eq!(rotated.tag_key, ReceiptKeys::derive(k2).unwrap().tag_key);
        assert_ne!(rotated.tag_key, first.tag_key);
        // A short key is refused as derive refuses it, cached or not.
        assert!(hook.keys_of("dave", b"short").is_err());
    }
}
