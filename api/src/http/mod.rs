//! The HTTP surface: routes only; handlers stay thin and call into the schema or the runtime.

mod graphql;
mod health;
mod metrics;
pub mod operation;
pub mod ops;

pub use graphql::{GRAPHQL_REQUEST_DURATION_SECONDS, GRAPHQL_REQUESTS_TOTAL};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

use crate::graphql::ValoraSchema;
use crate::state::AppState;

/// Largest request body accepted (a 10,000-event usage batch fits comfortably).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

pub fn router(state: AppState, schema: ValoraSchema) -> Router {
    Router::new()
        .route(
            "/graphql",
            get(graphql::graphiql)
                .post(graphql::execute)
                .with_state(schema),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/ops", get(ops::page))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
