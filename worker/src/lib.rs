//! Valora's runtime: configuration, database access, and (as the job
//! machinery lands) the queues, outbox relay, sweeper and worker pool that
//! both the worker binary and the embedded API process run.

pub mod config;
pub mod database;
pub mod queue_health;
pub mod telemetry;

pub use config::{Config, ConfigError, LogFormat, QueueBackend};
