//! The worker's own HTTP endpoints: `/metrics` (Prometheus) and `/healthz`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Serves `/metrics` and `/healthz` on `bind` until `stop` fires; returns the bound address.
pub async fn serve(
    bind: SocketAddr,
    metrics: PrometheusHandle,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route("/healthz", get(|| async { r#"{"status":"ok"}"# }));
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await
    });
    Ok((addr, task))
}
