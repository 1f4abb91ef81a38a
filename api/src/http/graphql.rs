//! GraphQL over HTTP: POST executes, GET serves GraphiQL.
//!
//! The `Authorization` header is resolved once per request (API key →
//! caller) and handed to the resolvers as request data, with a fresh
//! per-request batch-loading cache. Each request runs in a `graphql` span
//! (operation name, organization) and is counted in
//! `valora_graphql_requests_total{operation, outcome}` and timed in
//! `valora_graphql_request_duration_seconds{operation}`, where `operation` is
//! the root field called (see [`super::operation`]). Secrets are never logged:
//! the span carries the organization, never the key.

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::GraphQLResponse;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::{Html, IntoResponse};
use tracing::Instrument;

use crate::graphql::loaders::Loaders;
use crate::graphql::{ValoraSchema, auth, error};
use crate::http::operation::RootFields;
use crate::state::AppState;

pub const GRAPHQL_REQUESTS_TOTAL: &str = "valora_graphql_requests_total";
pub const GRAPHQL_REQUEST_DURATION_SECONDS: &str = "valora_graphql_request_duration_seconds";

/// The GraphQL request, its body read through axum's `Bytes` extractor so
/// `DefaultBodyLimit` (`MAX_BODY_BYTES`) applies: an oversized body, with a
/// Content-Length or chunked, is answered 413 before any of it is parsed.
/// (async-graphql-axum's `GraphQLRequest` streams the body itself and never
/// checks the limit.)
pub struct LimitedGraphQLRequest(pub async_graphql::Request);

impl<S: Send + Sync> axum::extract::FromRequest<S> for LimitedGraphQLRequest {
    type Rejection = axum::response::Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        async_graphql::http::receive_body(
            content_type,
            body.as_ref(),
            async_graphql::http::MultipartOptions::default(),
        )
        .await
        .map(LimitedGraphQLRequest)
        .map_err(|e| async_graphql_axum::rejection::GraphQLRejection(e).into_response())
    }
}

pub async fn execute(
    State(schema): State<ValoraSchema>,
    headers: HeaderMap,
    request: LimitedGraphQLRequest,
) -> GraphQLResponse {
    let started = std::time::Instant::now();
    let header = headers
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    let mut request = request.0;
    let operation = RootFields::valora().label(&request.query, request.operation_name.as_deref());
    let span = tracing::info_span!(
        "graphql",
        operation = operation.as_str(),
        operation_name = request.operation_name.as_deref().unwrap_or(""),
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
    .instrument(span.clone())
    .await;
    error::tag_uncoded(&mut response);
    let outcome = if response.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    let elapsed = started.elapsed();
    span.in_scope(|| {
        // One access-log line per request: what was called and how it ended,
        // never the variables or the Authorization header.
        let code = response
            .errors
            .first()
            .and_then(|e| e.extensions.as_ref())
            .and_then(|x| x.get("code"))
            .map(|c| c.to_string());
        tracing::info!(
            outcome,
            code = code.as_deref().unwrap_or(""),
            ms = elapsed.as_millis() as u64,
            "graphql request"
        );
    });
    metrics::histogram!(GRAPHQL_REQUEST_DURATION_SECONDS, "operation" => operation.clone())
        .record(elapsed.as_secs_f64());
    metrics::counter!(GRAPHQL_REQUESTS_TOTAL, "operation" => operation, "outcome" => outcome)
        .increment(1);
    response.into()
}

pub async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}
