//! The GraphQL schema: how admin tooling talks to Valora.

use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

use crate::state::AppState;

pub type ValoraSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Root of every read.
pub struct Query;

#[Object]
impl Query {
    /// The running Valora version.
    async fn api_version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
}

/// Limits that keep one request from exhausting the server.
pub const MAX_DEPTH: usize = 12;
pub const MAX_COMPLEXITY: usize = 5_000;

pub fn build(state: AppState) -> ValoraSchema {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .data(state)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The schema's SDL, as exported to `api/schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .finish()
        .sdl()
}
