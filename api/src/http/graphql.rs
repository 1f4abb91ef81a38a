//! GraphQL over HTTP: POST executes, GET serves GraphiQL.
//!
//! The `Authorization` header is resolved once per request (API key →
//! caller) and handed to the resolvers as request data, with a fresh
//! per-request batch-loading cache. Each request runs in a `graphql` span
//! (operation name, organization) and is counted in
//! `valora_graphql_requests_total{outcome}` and timed in
//! `valora_graphql_request_duration_seconds`. Secrets are never logged.

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::{Html, IntoResponse};
use tracing::Instrument;

use crate::graphql::loaders::Loaders;
use crate::graphql::{ValoraSchema, auth, error};
use crate::state::AppState;

pub const GRAPHQL_REQUESTS_TOTAL: &str = "valora_graphql_requests_total";
pub const GRAPHQL_REQUEST_DURATION_SECONDS: &str = "valora_graphql_request_duration_seconds";

pub async fn execute(
    State(schema): State<ValoraSchema>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let started = std::time::Instant::now();
    let header = headers
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    let mut request = request.into_inner();
    let span = tracing::info_span!(
        "graphql",
        operation = request.operation_name.as_deref().unwrap_or(""),
        org = tracing::field::Empty,
    );
    let mut response = async {
        let Some(state) = schema.data::<AppState>() else {
            return schema.execute(request).await;
        };
        match auth::resolve(&state.db, header).await {
            Ok(found) => {
                if let auth::Auth::Bearer {
                    caller: Some(caller),
                    ..
                } = &found
                {
                    tracing::Span::current().record("org", caller.organization_id.as_str());
                }
                request = request.data(found).data(Loaders::default());
                schema.execute(request).await
            }
            Err(err) => {
                let err: async_graphql::Error = err.into();
                async_graphql::Response::from_errors(vec![
                    err.into_server_error(Default::default()),
                ])
            }
        }
    }
    .instrument(span)
    .await;
    error::tag_uncoded(&mut response);
    let outcome = if response.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!(GRAPHQL_REQUESTS_TOTAL, "outcome" => outcome).increment(1);
    metrics::histogram!(GRAPHQL_REQUEST_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    response.into()
}

pub async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}
