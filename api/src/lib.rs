//! Valora's API server: GraphQL (with GraphiQL), health probes and metrics over axum.
//!
//! Handlers are thin: the schema resolves through the entities and the billing
//! core in `workflows`; time-driven work belongs to the workers.

pub mod demo;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod secret;
pub mod server;
pub mod state;
