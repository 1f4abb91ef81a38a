//! Locking the row a step works on, for the rest of its transaction.
//!
//! PostgreSQL: `SELECT … FOR UPDATE`. SQLite ignores lock clauses, but every
//! step transaction starts with [`crate::txn::begin_write`] (`BEGIN
//! IMMEDIATE`), which holds the database's single write lock throughout.

use entity::{invoice, subscription};
use sea_orm::{ConnectionTrait, EntityTrait, QuerySelect};

use crate::error::{WorkflowError, WorkflowResult};

pub async fn subscription<C: ConnectionTrait>(
    txn: &C,
    id: &str,
) -> WorkflowResult<subscription::Model> {
    subscription::Entity::find_by_id(id.to_string())
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(WorkflowError::NotFound("subscription"))
}

pub async fn invoice<C: ConnectionTrait>(txn: &C, id: &str) -> WorkflowResult<invoice::Model> {
    invoice::Entity::find_by_id(id.to_string())
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(WorkflowError::NotFound("invoice"))
}
