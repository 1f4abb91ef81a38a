//! What every request handler can reach: the database, the configuration, the metrics handle.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;
use worker::Config;
use workflows::clock::SharedClock;

/// Shared, cheaply cloned application state.
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    /// The process clock; organizations with a test clock use theirs instead.
    pub clock: SharedClock,
}
