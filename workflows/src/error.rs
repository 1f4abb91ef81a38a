//! The one error type of the workflow functions the API calls.
//!
//! Callers map each variant to a response once (the GraphQL layer turns them
//! into `extensions.code`); a database error keeps its detail for the logs and
//! is never shown to a client.

use sea_orm::{DbErr, SqlErr};

/// Why a workflow did not happen. Every variant means nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The request is malformed or not allowed in the current state.
    #[error("{0}")]
    BadInput(String),
    /// The entity does not exist in the caller's organization.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule or a concurrent writer got there first.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this.
    #[error("forbidden")]
    Forbidden,
    /// The database failed; the detail goes to the logs only.
    #[error("database error: {0}")]
    Database(DbErr),
    /// Stored prices and usage give amounts too large to bill (past
    /// `Decimal`'s range or 64-bit minor units); retrying cannot help.
    #[error("cannot be invoiced: {0}")]
    Unbillable(String),
    /// An invariant that should hold did not (e.g. a corrupt stored value).
    #[error("internal error: {0}")]
    Internal(String),
}

impl WorkflowError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        WorkflowError::BadInput(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        WorkflowError::Conflict(message.into())
    }
}

impl From<DbErr> for WorkflowError {
    /// A unique-constraint violation that was not checked for beforehand is a
    /// concurrent writer (two appends of the same audit `seq`, the same
    /// idempotency key twice at once): the transaction rolled back, so the
    /// caller may simply retry.
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                tracing::warn!(error = %err, "unique constraint violated by a concurrent write");
                WorkflowError::Conflict("concurrent update, retry".into())
            }
            _ => WorkflowError::Database(err),
        }
    }
}

impl From<billing::MoneyError> for WorkflowError {
    fn from(err: billing::MoneyError) -> Self {
        WorkflowError::BadInput(err.to_string())
    }
}

impl From<billing::InvoiceError> for WorkflowError {
    /// Amounts out of range are the data's fault ([`Unbillable`]); any other
    /// billing-core error means inconsistent inputs, an internal fault.
    ///
    /// [`Unbillable`]: WorkflowError::Unbillable
    fn from(err: billing::InvoiceError) -> Self {
        if err.is_out_of_range() {
            WorkflowError::Unbillable(err.to_string())
        } else {
            WorkflowError::Internal(format!("billing: {err}"))
        }
    }
}

pub type WorkflowResult<T> = Result<T, WorkflowError>;
