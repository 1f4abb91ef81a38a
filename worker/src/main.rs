//! The worker binary: migrates, starts a worker pool (queues, relay,
//! sweeper), serves `/metrics` and `/healthz` on `VALORA_WORKER_BIND`, and on
//! SIGTERM/ctrl-c stops fetching, finishes in-flight jobs within
//! `VALORA_SHUTDOWN_SECS` and exits 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sea_orm::DatabaseConnection;
use worker::Config;
use worker::pool::PoolOptions;
use workflows::clock::{Clock, SystemClock};
use workflows::jobs::{Job, JobKind};
use workflows::steps::{Step, StepFuture, StepRegistry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    worker::telemetry::init_logging(config.log_format);
    let metrics = worker::telemetry::init_metrics();
    let db = worker::database::connect(&config)
        .await
        .context("connecting to the database")?;
    worker::database::migrate(&db)
        .await
        .context("migrating the database")?;
    let pool = worker::pool::start_with(&config, db, Arc::new(SystemClock), pool_options())
        .await
        .context("starting the worker pool")?;
    let (stop_http, stop_rx) = tokio::sync::oneshot::channel();
    let (addr, http) = worker::http::serve(config.jobs.worker_bind, metrics, stop_rx)
        .await
        .context("binding the worker HTTP endpoint")?;
    tracing::info!(%addr, database = %worker::config::redact(&config.database_url), "valora worker running");
    println!("valora worker: metrics on http://{addr}/metrics");
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight jobs");
    pool.shutdown().await.context("draining the worker pool")?;
    let _ = stop_http.send(());
    let _ = http.await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Production options; `VALORA_WORKER_TEST_STEP_DELAY_MS` (test-only) makes
/// every step sleep first, so shutdown tests can catch a job in flight.
fn pool_options() -> PoolOptions {
    let mut options = PoolOptions::default();
    if let Some(ms) = std::env::var("VALORA_WORKER_TEST_STEP_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!(ms, "test hook: every step is delayed");
        let mut steps = StepRegistry::new();
        for kind in JobKind::ALL {
            steps = steps.with(kind, Delayed(Duration::from_millis(ms)));
        }
        options.steps = steps;
    }
    options
}

struct Delayed(Duration);

impl Step for Delayed {
    fn run<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        clock: &'a dyn Clock,
        job: &'a Job,
    ) -> StepFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            workflows::steps::run(db, clock, job).await
        })
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
