//! Valora's runtime: configuration, database access, and the durable job
//! machinery that both the worker binary and the embedded API process run.
//!
//! # Job machinery in one page
//!
//! - **Queues** ([`queues`]): one apalis queue per [`workflows::jobs::JobKind`],
//!   named `{queue_prefix}:{kind}`; apalis-redis with `REDIS_URL`, else
//!   apalis-sqlite in the SQLite data file. Messages carry the `Job`; queues
//!   are transport only.
//! - **Ledger** ([`job_runs`]): `job_runs.job_key` is UNIQUE; every transition
//!   is a compare-and-set. Enqueue = insert QUEUED (conflict = already known),
//!   then push when due. A delivery runs only if it wins the claim CAS
//!   (QUEUED / due FAILED / RUNNING with an expired lease → RUNNING,
//!   `attempts + 1`, lease = timeout + `lease_margin` (30 s) in `next_attempt_at`).
//! - **Steps** ([`workflows::steps`]): run under a per-kind timeout; a step marks
//!   the row SUCCEEDED inside its own transaction, so commit-then-crash is
//!   seen as done on redelivery. Errors → FAILED with backoff ([`retry`]),
//!   or DEAD at `max_attempts` (Valora counts attempts; apalis-redis cannot).
//! - **Relay** ([`relay`]): outbox rows → ledger + queue, in id order,
//!   `FOR UPDATE SKIP LOCKED` on PostgreSQL.
//! - **Sweeper** ([`sweeper`]): each tick derives due work from the database by
//!   each organization's clock and repairs the ledger (retries due, stale
//!   pushes, expired leases), so losing Redis loses nothing.
//! - **Pool** ([`pool`]): starts workers + relay + sweeper; graceful shutdown.
//! - **Ops** ([`ops`]): list / retry / discard jobs from the ledger.
//! - **Metrics** ([`metrics`]): every name in one place.

pub mod config;
pub mod database;
pub mod http;
pub mod job_runs;
pub mod metrics;
pub mod ops;
pub mod org_clocks;
pub mod poll;
pub mod pool;
pub mod queue_health;
pub mod queues;
pub mod relay;
pub mod retry;
pub mod runtime;
pub mod sweep_turn;
pub mod sweeper;
pub mod telemetry;
pub mod test_clocks;

pub use config::{Config, ConfigError, JobSettings, LogFormat, QueueBackend};
