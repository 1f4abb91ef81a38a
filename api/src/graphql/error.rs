//! THE place where failures become GraphQL errors with `extensions.code`
//! (BAD_USER_INPUT, NOT_FOUND, CONFLICT, UNAUTHENTICATED, FORBIDDEN,
//! INTERNAL). Database errors are logged here and answered as INTERNAL,
//! never with SQL text.

use async_graphql::{ErrorExtensions, Response};
use workflows::error::WorkflowError;

/// A resolver failure: a code of the contract and a client-safe message.
/// Deliberately not `Display`, so it only becomes a GraphQL error through
/// the mapping below (never through async-graphql's blanket `Display`
/// conversion, which would pass any message through as is).
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
}

pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";

impl ApiError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        ApiError {
            code: BAD_USER_INPUT,
            message: message.into(),
        }
    }

    pub fn unauthenticated(message: &str) -> Self {
        ApiError {
            code: "UNAUTHENTICATED",
            message: message.into(),
        }
    }

    pub fn forbidden(message: String) -> Self {
        ApiError {
            code: "FORBIDDEN",
            message,
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError {
            code: "NOT_FOUND",
            message: format!("{what} not found"),
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(err: WorkflowError) -> Self {
        let (code, message) = match err {
            WorkflowError::BadInput(message) => (BAD_USER_INPUT, message),
            WorkflowError::NotFound(what) => ("NOT_FOUND", format!("{what} not found")),
            WorkflowError::Conflict(message) => ("CONFLICT", message),
            // The stored state, not this request, is at fault: CONFLICT,
            // with the reason (no internals in it, only amounts and ids).
            WorkflowError::Unbillable(reason) => {
                ("CONFLICT", format!("cannot be invoiced: {reason}"))
            }
            WorkflowError::Forbidden => ("FORBIDDEN", "forbidden".into()),
            WorkflowError::Database(db) => {
                tracing::error!(error = %db, "database error");
                ("INTERNAL", "internal error".into())
            }
            WorkflowError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ("INTERNAL", "internal error".into())
            }
        };
        ApiError { code, message }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        ApiError::from(WorkflowError::from(err))
    }
}

impl From<worker::ops::OpsError> for ApiError {
    fn from(err: worker::ops::OpsError) -> Self {
        use worker::ops::OpsError;
        match err {
            OpsError::NotFound => ApiError::not_found("job"),
            OpsError::WrongState(state) => ApiError::bad_input(format!(
                "the job is {state}; retry takes DEAD, FAILED or DISCARDED jobs, discard takes QUEUED, FAILED or DEAD ones"
            )),
            OpsError::BadCursor => ApiError::bad_input("invalid cursor"),
            OpsError::Database(db) => ApiError::from(db),
            OpsError::Enqueue(e) => {
                tracing::error!(error = %e, "enqueue failed");
                ApiError {
                    code: "INTERNAL",
                    message: "internal error".into(),
                }
            }
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        let code = err.code;
        async_graphql::Error::new(err.message).extend_with(|_, e| e.set("code", code))
    }
}

/// Errors raised before any resolver runs (syntax, validation, unknown enum
/// values, malformed scalars, depth/complexity limits) carry no code: they
/// are all the client's input, so they get BAD_USER_INPUT.
pub fn tag_uncoded(response: &mut Response) {
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|ext| ext.get("code").is_some());
        if !has_code {
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", BAD_USER_INPUT);
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
