//! Starts everything one process runs: an apalis worker per queue (one per
//! [`JobKind`]), the outbox relay and the sweeper. Used by the worker binary
//! and, in embedded mode, by the API process.
//!
//! Shutdown ([`WorkerPool::shutdown`]): the relay and sweeper stop after their
//! current round, the apalis monitor stops fetching and waits for in-flight
//! jobs up to `shutdown_deadline`. A job cut off by the deadline stays
//! RUNNING in the ledger and is recovered when its lease expires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use sea_orm::DatabaseConnection;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use workflows::clock::SharedClock;
use workflows::jobs::{Job, JobKind};
use workflows::steps::StepRegistry;

use crate::config::Config;
use crate::poll::Ticker;
use crate::queues::{Backends, QueueError, Queues, queue_name};
use crate::relay;
use crate::runtime::{Runtime, Stats};
use crate::sweep_turn::SweepTurn;
use crate::sweeper;

/// What a pool runs; [`PoolOptions::default`] runs everything with the production steps.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    pub steps: StepRegistry,
    /// Per-kind job timeouts (default: `settings.job_timeout`).
    pub timeouts: HashMap<JobKind, Duration>,
    pub workers: bool,
    pub relay: bool,
    /// `None`: `config.jobs.sweeper`.
    pub sweeper: Option<bool>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            steps: StepRegistry::new(),
            timeouts: HashMap::new(),
            workers: true,
            relay: true,
            sweeper: None,
        }
    }
}

/// Why a pool could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("worker monitor: {0}")]
    Monitor(String),
}

/// A running set of workers, relay and sweeper.
pub struct WorkerPool {
    runtime: Arc<Runtime>,
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
    monitor_stop: Option<oneshot::Sender<()>>,
    monitor: Option<JoinHandle<Result<(), String>>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

/// Starts a pool with the production steps.
pub async fn start(
    config: &Config,
    db: DatabaseConnection,
    clock: SharedClock,
) -> Result<WorkerPool, PoolError> {
    start_with(config, db, clock, PoolOptions::default()).await
}

/// Starts a pool with `options`.
pub async fn start_with(
    config: &Config,
    db: DatabaseConnection,
    clock: SharedClock,
    options: PoolOptions,
) -> Result<WorkerPool, PoolError> {
    let queues = Queues::open(config, &db).await?;
    let settings = config.jobs.clone();
    let runtime = Arc::new(Runtime {
        db,
        clock,
        queues,
        settings: settings.clone(),
        steps: options.steps,
        timeouts: options.timeouts,
        stats: Stats::default(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    if options.relay {
        loops.push(tokio::spawn(relay_loop(
            runtime.clone(),
            settings.poll_interval,
            stop_rx.clone(),
        )));
    }
    if options.sweeper.unwrap_or(settings.sweeper) {
        loops.push(tokio::spawn(sweeper::run(
            runtime.clone(),
            settings.sweep_interval,
            SweepTurn::open(config).await,
            stop_rx.clone(),
        )));
    }
    let (monitor_stop, monitor) = if options.workers {
        let (tx, rx) = oneshot::channel::<()>();
        let monitor = build_monitor(&runtime);
        let handle = tokio::spawn(async move {
            monitor
                .run_with_signal(async move {
                    let _ = rx.await;
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())
        });
        (Some(tx), Some(handle))
    } else {
        (None, None)
    };
    Ok(WorkerPool {
        runtime,
        stop,
        loops,
        monitor_stop,
        monitor,
    })
}

/// The apalis handler. The job runs in its own task: if apalis drops the
/// handler future (its backend failed, e.g. Redis flushed under it), the
/// attempt still finishes and records its outcome instead of leaving the row
/// RUNNING until its lease expires.
async fn handle(job: Job, rt: Data<Arc<Runtime>>) -> Result<(), BoxDynError> {
    let rt: Arc<Runtime> = Arc::clone(&rt);
    tokio::spawn(async move { rt.execute(job).await }).await?;
    Ok(())
}

fn build_monitor(rt: &Arc<Runtime>) -> Monitor {
    let settings = &rt.settings;
    // A worker whose backend fails (Redis restarted or flushed: apalis-redis
    // then reports "worker not registered") is restarted, which registers it
    // again; `restart_delay` keeps a down Redis from turning this into a spin.
    let mut monitor = Monitor::new()
        .shutdown_timeout(settings.shutdown_deadline)
        .should_restart(|worker, error| {
            if worker.is_shutting_down() {
                return false;
            }
            tracing::warn!(worker = worker.name(), %error, restarts = worker.restarts(), "queue worker failed; restarting");
            true
        });
    let instance = workflows::ids::new_id();
    for kind in JobKind::ALL {
        let name = format!("{}-{}", queue_name(&rt.queues.prefix, kind), instance);
        let concurrency = settings.concurrency;
        let poll = settings.poll_interval;
        let rt = rt.clone();
        monitor = match &rt.queues.backend {
            Backends::Redis(map) => {
                let storage = map[&kind].clone();
                monitor.register(move |restarts| {
                    let delay = restart_delay(restarts);
                    WorkerBuilder::new(worker_name(&name, restarts))
                        .backend(
                            storage
                                .clone()
                                .before_start(move |_| async move {
                                    tokio::time::sleep(delay).await;
                                    Ok(())
                                })
                                .poll_with_strategy(Ticker::new(poll)),
                        )
                        .concurrency(concurrency)
                        .data(rt.clone())
                        .build(handle)
                })
            }
            Backends::Sqlite(map) => {
                let storage = map[&kind].clone();
                monitor.register(move |restarts| {
                    let delay = restart_delay(restarts);
                    WorkerBuilder::new(worker_name(&name, restarts))
                        .backend(
                            storage
                                .clone()
                                .before_start(move |_| async move {
                                    tokio::time::sleep(delay).await;
                                    Ok(())
                                })
                                .poll_with_strategy(Ticker::new(poll)),
                        )
                        .concurrency(concurrency)
                        .data(rt.clone())
                        .build(handle)
                })
            }
        };
    }
    monitor
}

/// A queue worker's name; a restart takes a new one. apalis-redis refuses to
/// register a name seen within ten heartbeats (50 s), so a worker restarted
/// under its old name after one failed fetch stayed down that long while its
/// queue backed up (a 100,000-subscription billing day). The old name's
/// in-flight tasks are re-enqueued as orphans once it stops beating.
fn worker_name(base: &str, restarts: usize) -> String {
    if restarts == 0 {
        base.to_string()
    } else {
        format!("{base}-r{restarts}")
    }
}

/// Pause before a restarted queue worker polls again (none on first start).
fn restart_delay(restarts: usize) -> Duration {
    if restarts == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(500)
    }
}

async fn relay_loop(rt: Arc<Runtime>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let batch = rt.settings.relay_batch;
    loop {
        let full = match relay::relay_once(&rt, batch).await {
            Ok(n) => n >= batch,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay round failed");
                false
            }
        };
        if *stop.borrow() {
            return;
        }
        if !full {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

impl WorkerPool {
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Stops fetching, finishes in-flight jobs within the deadline, stops the loops.
    pub async fn shutdown(mut self) -> Result<(), PoolError> {
        let _ = self.stop.send(true);
        if let Some(tx) = self.monitor_stop.take() {
            let _ = tx.send(());
        }
        let mut result = Ok(());
        if let Some(monitor) = self.monitor.take() {
            let deadline = self.runtime.settings.shutdown_deadline + Duration::from_secs(5);
            match tokio::time::timeout(deadline, monitor).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => result = Err(PoolError::Monitor(e)),
                Ok(Err(e)) => result = Err(PoolError::Monitor(e.to_string())),
                Err(_) => result = Err(PoolError::Monitor("shutdown deadline passed".into())),
            }
        }
        for handle in self.loops.drain(..) {
            let _ = handle.await;
        }
        result
    }
}
