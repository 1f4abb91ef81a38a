//! Liveness and readiness probes.
//!
//! `/healthz` says the process is up; `/readyz` says it can do its job: the
//! database answers and the queue backend is reachable.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = worker::database::ping(&state.db).await;
    let queue = worker::queue_health::ping(&state.config.queue).await;
    let ready = database.is_ok() && queue.is_ok();
    // Errors are summarized, never echoed: they may carry connection details.
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": if database.is_ok() { "ok" } else { "unreachable" },
        "queue": if queue.is_ok() { "ok" } else { "unreachable" },
    });
    if let Err(e) = &database {
        tracing::warn!(error = %e, "readiness: database check failed");
    }
    if let Err(e) = &queue {
        tracing::warn!(error = %e, "readiness: queue check failed");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
