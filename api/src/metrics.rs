//! Every metric the API process itself records, named in one place.
//!
//! The job machinery's series (`valora_scheduler_*`, `valora_jobs_total`,
//! queue depth…) are listed in [`worker::metrics::ALL_METRICS`]; an API with
//! embedded workers emits both lists. The Grafana dashboards may only query
//! names from these two lists (checked by `tests/tests/ops_assets.rs`).

use crate::graphql::usage::USAGE_EVENTS_TOTAL;
use crate::http::{GRAPHQL_REQUEST_DURATION_SECONDS, GRAPHQL_REQUESTS_TOTAL};

/// The API's own series: GraphQL requests and latency, ingested usage events.
pub const ALL: &[&str] = &[
    GRAPHQL_REQUESTS_TOTAL,
    GRAPHQL_REQUEST_DURATION_SECONDS,
    USAGE_EVENTS_TOTAL,
];

/// Every series a Valora process can emit (API and workers).
pub fn everything() -> Vec<&'static str> {
    ALL.iter()
        .copied()
        .chain(worker::metrics::ALL_METRICS)
        .collect()
}
