//! Idempotency keys for mutations: the first request with a key does the
//! work and records `(organization, key) → (operation, request hash, entity)`
//! in the same transaction; a replay with the same request gets the same
//! entity back and writes nothing; the same key with a different request
//! (or another operation) is a CONFLICT.

use chrono::{DateTime, Utc};
use entity::idempotency_key;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, Set};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::audit::canonical_json;
use crate::error::{WorkflowError, WorkflowResult};

/// SHA-256 of the canonical JSON of a request.
pub fn request_hash(request: &Value) -> String {
    let mut text = String::new();
    canonical_json(request, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The entity a previous identical request produced, if any; CONFLICT when
/// the key was used for something else.
pub async fn replayed<C: ConnectionTrait>(
    txn: &C,
    org: &str,
    key: &str,
    operation: &str,
    hash: &str,
) -> WorkflowResult<Option<String>> {
    if key.is_empty() || key.len() > 255 {
        return Err(WorkflowError::bad_input(
            "idempotencyKey must be 1 to 255 characters",
        ));
    }
    let found = idempotency_key::Entity::find_by_id((org.to_string(), key.to_string()))
        .one(txn)
        .await?;
    match found {
        None => Ok(None),
        Some(row) if row.operation == operation && row.request_hash == hash => {
            Ok(Some(row.entity_id))
        }
        Some(row) => Err(WorkflowError::conflict(format!(
            "idempotencyKey {key:?} was already used for a different {} request",
            row.operation
        ))),
    }
}

/// Records the key inside the transaction that did the work.
pub async fn record<C: ConnectionTrait>(
    txn: &C,
    org: &str,
    key: &str,
    operation: &str,
    hash: &str,
    entity_id: &str,
    now: DateTime<Utc>,
) -> WorkflowResult<()> {
    idempotency_key::ActiveModel {
        organization_id: Set(org.to_string()),
        key: Set(key.to_string()),
        operation: Set(operation.to_string()),
        request_hash: Set(hash.to_string()),
        entity_id: Set(entity_id.to_string()),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_hash_ignores_key_order_only() {
        let a = request_hash(&json!({"planId": "p", "quantity": 1}));
        let b = request_hash(&json!({"quantity": 1, "planId": "p"}));
        let c = request_hash(&json!({"quantity": 2, "planId": "p"}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 64);
    }
}
