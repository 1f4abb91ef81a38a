//! The apalis queues: one per [`JobKind`], named `{queue_prefix}:{kind}`.
//!
//! - Production: apalis-redis (`REDIS_URL`).
//! - Embedded: apalis-sqlite in the same SQLite file as the data, sharing the
//!   sea-orm connection pool.
//!
//! A message carries the whole [`Job`] (JSON). Queues are transport only:
//! whether a delivered message does anything is decided by the `job_runs`
//! ledger (see [`crate::job_runs`]), so a duplicate push is harmless and a lost
//! push is repaired by the sweeper.

use std::collections::HashMap;
use std::sync::Arc;

use apalis::prelude::TaskSink;
use apalis_core::backend::Vacuum;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use workflows::jobs::{Job, JobKind};

use crate::config::{Config, QueueBackend};

/// apalis worker heartbeat. apalis defaults to 30 s; a parked worker was seen
/// to pick up a fresh message only at its next heartbeat under load, so a
/// short heartbeat bounds that latency (and speeds up orphan recovery).
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a queue could not be opened or pushed to.
#[derive(Debug, thiserror::Error)]
#[error("queue: {0}")]
pub struct QueueError(pub String);

/// Push handles to every queue of one process.
#[derive(Clone)]
pub struct Queues {
    pub prefix: String,
    pub backend: Backends,
}

/// The per-kind storages of the configured backend.
#[derive(Clone)]
pub enum Backends {
    Redis(Arc<HashMap<JobKind, RedisStorage<Job>>>),
    Sqlite(Arc<HashMap<JobKind, SqliteStorage<Job>>>),
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backends::Redis(_) => "redis",
            Backends::Sqlite(_) => "sqlite",
        };
        write!(f, "Queues({kind}, {})", self.prefix)
    }
}

/// The queue name of `kind`.
pub fn queue_name(prefix: &str, kind: JobKind) -> String {
    format!("{prefix}:{}", kind.as_str())
}

impl Queues {
    /// Opens (and, for SQLite, sets up) the queues of `config`.
    pub async fn open(config: &Config, db: &DatabaseConnection) -> Result<Queues, QueueError> {
        let prefix = config.queue_prefix.clone();
        let backend = match &config.queue {
            QueueBackend::Redis { url } => {
                let conn = apalis_redis::connect(url.as_str())
                    .await
                    .map_err(|e| QueueError(format!("redis connect: {e}")))?;
                let map = JobKind::ALL
                    .into_iter()
                    .map(|kind| {
                        let cfg = apalis_redis::Config::default()
                            .queue(queue_name(&prefix, kind))
                            .batch_size(config.jobs.queue_batch)
                            .heartbeat_interval(HEARTBEAT);
                        (kind, RedisStorage::new(conn.clone()).with_config(cfg))
                    })
                    .collect();
                Backends::Redis(Arc::new(map))
            }
            QueueBackend::Embedded => {
                let pool = db.get_sqlite_connection_pool().clone();
                SqliteStorage::setup(&pool)
                    .await
                    .map_err(|e| QueueError(format!("apalis-sqlite setup: {e}")))?;
                let map = JobKind::ALL
                    .into_iter()
                    .map(|kind| {
                        let cfg = apalis_sqlite::Config::default()
                            .queue(queue_name(&prefix, kind))
                            .batch_size(config.jobs.queue_batch)
                            .heartbeat_interval(HEARTBEAT);
                        (kind, SqliteStorage::new(&pool).with_config(cfg))
                    })
                    .collect();
                Backends::Sqlite(Arc::new(map))
            }
        };
        Ok(Queues { prefix, backend })
    }

    /// Pushes `job` to its kind's queue, for immediate delivery.
    pub async fn push(&self, job: &Job) -> Result<(), QueueError> {
        match &self.backend {
            Backends::Redis(map) => {
                let mut storage = map[&job.kind].clone();
                storage
                    .push(job.clone())
                    .await
                    .map_err(|e| QueueError(format!("push {}: {e}", job.key)))
            }
            Backends::Sqlite(map) => {
                let mut storage = map[&job.kind].clone();
                storage
                    .push(job.clone())
                    .await
                    .map_err(|e| QueueError(format!("push {}: {e}", job.key)))
            }
        }
    }

    /// How many messages of `kind` wait in its queue for a worker to fetch
    /// them (fetched ones, running or not, are not counted).
    pub async fn waiting(&self, db: &DatabaseConnection, kind: JobKind) -> Result<u64, QueueError> {
        let failed = |e: &dyn std::fmt::Display| QueueError(format!("queue length of {kind}: {e}"));
        match &self.backend {
            Backends::Redis(map) => {
                let mut storage = map[&kind].clone();
                // apalis-redis pushes to the scheduled set; a fetch moves the
                // due ones to the active list, then takes from its head.
                let (active, scheduled) = (
                    storage.get_config().active_jobs_list(),
                    storage.get_config().scheduled_jobs_set(),
                );
                let (active, scheduled): (u64, u64) = redis::pipe()
                    .llen(active)
                    .zcard(scheduled)
                    .query_async(storage.get_connection())
                    .await
                    .map_err(|e| failed(&e))?;
                Ok(active + scheduled)
            }
            Backends::Sqlite(_) => {
                let row = db
                    .query_one_raw(Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        "SELECT count(*) AS n FROM Jobs WHERE job_type = ? AND status = 'Pending'",
                        [queue_name(&self.prefix, kind).into()],
                    ))
                    .await
                    .map_err(|e| failed(&e))?;
                let n: i64 = match row {
                    Some(row) => row.try_get("", "n").map_err(|e| failed(&e))?,
                    None => 0,
                };
                Ok(n.max(0) as u64)
            }
        }
    }

    /// Deletes finished messages older than `older_than` from the queues
    /// (apalis keeps them; the ledger is the history). Returns how many.
    pub async fn vacuum(
        &self,
        db: &DatabaseConnection,
        older_than: std::time::Duration,
    ) -> Result<u64, QueueError> {
        match &self.backend {
            Backends::Redis(map) => {
                let mut total = 0u64;
                for storage in map.values() {
                    let mut storage = storage.clone();
                    total += storage
                        .vacuum_before(older_than)
                        .await
                        .map_err(|e| QueueError(format!("vacuum: {e}")))?
                        as u64;
                }
                Ok(total)
            }
            Backends::Sqlite(_) => {
                let cutoff = chrono::Utc::now().timestamp() - older_than.as_secs() as i64;
                let result = db
                    .execute_raw(Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        "DELETE FROM Jobs WHERE job_type LIKE ? AND status IN ('Done', 'Killed') \
                         AND done_at IS NOT NULL AND done_at < ?",
                        [format!("{}:%", self.prefix).into(), cutoff.into()],
                    ))
                    .await
                    .map_err(|e| QueueError(format!("vacuum: {e}")))?;
                Ok(result.rows_affected())
            }
        }
    }
}
