//! The GraphQL schema: how admin tooling talks to Valora.
//!
//! One module per concept, each with its `…Query` / `…Mutation` root merged
//! here. Resolvers are thin: authorize, parse input into domain types, call
//! `workflows`, map the result. Errors get their `extensions.code` in
//! [`error`] only.

pub mod audit;
pub mod auth;
pub mod batch_limit;
pub mod catalog;
pub mod customers;
pub mod enums;
pub mod error;
pub mod invoices;
pub mod jobs;
pub mod loaders;
pub mod organization;
pub mod pagination;
pub mod scalars;
pub mod subscriptions;
pub mod text_guard;
pub mod usage;

use async_graphql::{EmptySubscription, MergedObject, Schema, SchemaBuilder};

use crate::state::AppState;

/// Root of every read.
#[derive(MergedObject, Default)]
pub struct Query(
    organization::OrganizationQuery,
    customers::CustomerQuery,
    catalog::CatalogQuery,
    subscriptions::SubscriptionQuery,
    invoices::InvoiceQuery,
    audit::AuditQuery,
    jobs::JobsQuery,
);

/// Root of every write.
#[derive(MergedObject, Default)]
pub struct Mutation(
    organization::OrganizationMutation,
    customers::CustomerMutation,
    catalog::CatalogMutation,
    subscriptions::SubscriptionMutation,
    usage::UsageMutation,
    invoices::InvoiceMutation,
    jobs::JobsMutation,
);

pub type ValoraSchema = Schema<Query, Mutation, EmptySubscription>;

/// Limits that keep one request from exhausting the server.
pub const MAX_DEPTH: usize = 12;
pub const MAX_COMPLEXITY: usize = 5_000;
/// Most root fields/aliases a client may send in one request document.
pub const MAX_RECURSIVE_DEPTH: usize = 32;

fn builder() -> SchemaBuilder<Query, Mutation, EmptySubscription> {
    Schema::build(Query::default(), Mutation::default(), EmptySubscription)
}

pub fn build(state: AppState) -> ValoraSchema {
    builder()
        .data(state)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(MAX_RECURSIVE_DEPTH)
        .extension(text_guard::TextGuard)
        .extension(batch_limit::BatchLimit)
        .finish()
}

/// The schema's SDL, as exported to `api/schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}
