//! Runtime configuration, read from the environment.
//!
//! Every setting has a default that needs nothing installed: without
//! `DATABASE_URL` Valora keeps a SQLite file in its data directory, and without
//! `REDIS_URL` jobs go through the embedded apalis-sqlite queue in that same file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the durable jobs travel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueBackend {
    /// apalis-sqlite in the same SQLite file as the data (zero-setup mode).
    Embedded,
    /// apalis-redis at this URL (production).
    Redis { url: String },
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration value that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// Everything a Valora process needs to know about its surroundings.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub queue: QueueBackend,
    /// Prefix of every queue name, so several deployments (or tests) can share one Redis.
    pub queue_prefix: String,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Server-level token that may create organizations. `None` disables bootstrap.
    pub admin_token: Option<String>,
    /// Run a worker pool inside the API process (the embedded default).
    pub embedded_workers: bool,
    pub log_format: LogFormat,
    /// Job machinery settings (worker pools, sweeper, retries).
    pub jobs: JobSettings,
}

/// Settings of the job machinery; every one has a default that needs nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSettings {
    /// `/metrics` and `/healthz` of the worker binary (`VALORA_WORKER_BIND`, default 127.0.0.1:9090).
    pub worker_bind: SocketAddr,
    /// Jobs run at once per queue and process (`VALORA_WORKER_CONCURRENCY`, default 4).
    pub concurrency: usize,
    /// How often a worker polls its queues (`VALORA_QUEUE_POLL_MS`, default 200).
    pub poll_interval: Duration,
    /// Jobs fetched per poll and queue (`VALORA_QUEUE_BATCH`, default 64): with
    /// the poll interval it caps a process's dequeue rate per queue
    /// (64 / 200 ms = 320 jobs/s); apalis' own default of 10 capped it at 50.
    pub queue_batch: usize,
    /// Sweeper tick (`VALORA_SWEEP_INTERVAL_MS`, default 1000).
    pub sweep_interval: Duration,
    /// Rows per scan and tick (`VALORA_SWEEP_BATCH`, default 500).
    pub sweep_batch: u64,
    /// Outbox rows per relay round (`VALORA_RELAY_BATCH`, default 500).
    pub relay_batch: u64,
    /// Most period closes of one organization a worker runs in one
    /// transaction (`VALORA_CLOSE_BATCH`, default 128; 1 = one by one): the
    /// delivered job plus due ones claimed beside it.
    pub close_batch: u64,
    /// Per-job timeout (`VALORA_JOB_TIMEOUT_SECS`, default 60).
    pub job_timeout: Duration,
    /// Attempts before a job is DEAD (`VALORA_JOB_MAX_ATTEMPTS`, default 8).
    pub max_attempts: i32,
    /// First retry delay (`VALORA_RETRY_BASE_MS`, default 1000); doubles per attempt.
    pub retry_base: Duration,
    /// Longest retry delay (`VALORA_RETRY_CAP_SECS`, default 3600).
    pub retry_cap: Duration,
    /// A QUEUED job pushed longer ago than this is pushed again (lost push,
    /// Redis flushed); ten times longer while its queue still holds waiting
    /// messages (`Runtime::lost_push_cutoffs`) (`VALORA_REQUEUE_AFTER_SECS`,
    /// default 60).
    pub requeue_after: Duration,
    /// Graceful-shutdown deadline for in-flight jobs (`VALORA_SHUTDOWN_SECS`, default 30).
    pub shutdown_deadline: Duration,
    /// Run the sweeper in this process (`VALORA_SWEEPER`, default true).
    pub sweeper: bool,
    /// A RUNNING job's lease is its timeout plus this margin; past it the job
    /// counts as abandoned (worker killed) (`VALORA_LEASE_MARGIN_SECS`, default 30).
    pub lease_margin: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            worker_bind: SocketAddr::from(([127, 0, 0, 1], 9090)),
            concurrency: 4,
            poll_interval: Duration::from_millis(200),
            queue_batch: 64,
            sweep_interval: Duration::from_millis(1000),
            sweep_batch: 500,
            relay_batch: 500,
            close_batch: 128,
            job_timeout: Duration::from_secs(60),
            max_attempts: 8,
            retry_base: Duration::from_millis(1000),
            retry_cap: Duration::from_secs(3600),
            requeue_after: Duration::from_secs(60),
            shutdown_deadline: Duration::from_secs(30),
            sweeper: true,
            lease_margin: Duration::from_secs(30),
        }
    }
}

impl JobSettings {
    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut s = JobSettings::default();
        if let Some(text) = lookup("VALORA_WORKER_BIND") {
            s.worker_bind = text.parse().map_err(|e| ConfigError::Invalid {
                name: "VALORA_WORKER_BIND",
                value: text.clone(),
                reason: format!("{e}"),
            })?;
        }
        fn num<T: std::str::FromStr>(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &'static str,
        ) -> Result<Option<T>, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match lookup(name) {
                None => Ok(None),
                Some(text) => text
                    .parse()
                    .map(Some)
                    .map_err(|e: T::Err| ConfigError::Invalid {
                        name,
                        value: text.clone(),
                        reason: e.to_string(),
                    }),
            }
        }
        if let Some(v) = num::<usize>(lookup, "VALORA_WORKER_CONCURRENCY")? {
            s.concurrency = v.max(1);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_QUEUE_POLL_MS")? {
            s.poll_interval = Duration::from_millis(v.max(10));
        }
        if let Some(v) = num::<usize>(lookup, "VALORA_QUEUE_BATCH")? {
            s.queue_batch = v.clamp(1, 10_000);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_SWEEP_INTERVAL_MS")? {
            s.sweep_interval = Duration::from_millis(v.max(10));
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_SWEEP_BATCH")? {
            s.sweep_batch = v.max(1);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_RELAY_BATCH")? {
            s.relay_batch = v.max(1);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_CLOSE_BATCH")? {
            s.close_batch = v.clamp(1, 1_000);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_JOB_TIMEOUT_SECS")? {
            s.job_timeout = Duration::from_secs(v.max(1));
        }
        if let Some(v) = num::<i32>(lookup, "VALORA_JOB_MAX_ATTEMPTS")? {
            s.max_attempts = v.max(1);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_RETRY_BASE_MS")? {
            s.retry_base = Duration::from_millis(v);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_RETRY_CAP_SECS")? {
            s.retry_cap = Duration::from_secs(v);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_REQUEUE_AFTER_SECS")? {
            s.requeue_after = Duration::from_secs(v);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_SHUTDOWN_SECS")? {
            s.shutdown_deadline = Duration::from_secs(v);
        }
        if let Some(v) = num::<u64>(lookup, "VALORA_LEASE_MARGIN_SECS")? {
            s.lease_margin = Duration::from_secs(v);
        }
        if let Some(v) = num::<bool>(lookup, "VALORA_SWEEPER")? {
            s.sweeper = v;
        }
        Ok(s)
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads configuration through `lookup`, so tests can pass their own values.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(lookup("VALORA_DATA_DIR").unwrap_or_else(|| "data".into()));
        let database_url = lookup("DATABASE_URL").unwrap_or_else(|| {
            format!("sqlite://{}?mode=rwc", data_dir.join("valora.db").display())
        });
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL",
                value: redact(&database_url),
                reason: "expected a postgres:// or sqlite: URL".into(),
            });
        }
        let queue = match lookup("REDIS_URL") {
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                QueueBackend::Redis { url }
            }
            Some(url) => {
                return Err(ConfigError::Invalid {
                    name: "REDIS_URL",
                    value: redact(&url),
                    reason: "expected a redis:// or rediss:// URL".into(),
                });
            }
            None => QueueBackend::Embedded,
        };
        if queue == QueueBackend::Embedded && !database_url.starts_with("sqlite:") {
            return Err(ConfigError::Invalid {
                name: "REDIS_URL",
                value: String::new(),
                reason: "the embedded queue lives in the SQLite file; with a PostgreSQL DATABASE_URL set REDIS_URL too".into(),
            });
        }
        let bind_text = lookup("BIND").unwrap_or_else(|| "127.0.0.1:8080".into());
        let bind = bind_text.parse().map_err(|e| ConfigError::Invalid {
            name: "BIND",
            value: bind_text.clone(),
            reason: format!("{e}"),
        })?;
        let embedded_workers = match lookup("VALORA_EMBEDDED_WORKERS").as_deref() {
            None => queue == QueueBackend::Embedded,
            Some("1" | "true") => true,
            Some("0" | "false") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "VALORA_EMBEDDED_WORKERS",
                    value: other.into(),
                    reason: "expected true/false or 1/0".into(),
                });
            }
        };
        let log_format = match lookup("VALORA_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "VALORA_LOG_FORMAT",
                    value: other.into(),
                    reason: "expected text or json".into(),
                });
            }
        };
        Ok(Config {
            database_url,
            queue,
            queue_prefix: lookup("VALORA_QUEUE_PREFIX").unwrap_or_else(|| "valora".into()),
            bind,
            data_dir,
            admin_token: lookup("VALORA_ADMIN_TOKEN"),
            embedded_workers,
            log_format,
            jobs: JobSettings::from_lookup(&lookup)?,
        })
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

/// Hides the password of a URL so it can be shown in errors and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_need_nothing() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.database_url, "sqlite://data/valora.db?mode=rwc");
        assert_eq!(c.queue, QueueBackend::Embedded);
        assert!(c.embedded_workers);
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert!(c.admin_token.is_none());
        assert_eq!(c.jobs, JobSettings::default());
        assert_eq!(c.jobs.worker_bind.to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn job_settings_from_env() {
        let c = config(&[
            ("VALORA_WORKER_CONCURRENCY", "2"),
            ("VALORA_SWEEP_INTERVAL_MS", "250"),
        ])
        .expect("job settings");
        assert_eq!(c.jobs.concurrency, 2);
        assert_eq!(c.jobs.sweep_interval, Duration::from_millis(250));
        let err = config(&[("VALORA_SWEEP_BATCH", "many")]).expect_err("bad number");
        assert!(err.to_string().starts_with("VALORA_SWEEP_BATCH"), "{err}");
    }

    #[test]
    fn production_settings() {
        let c = config(&[
            ("DATABASE_URL", "postgres://postgres@db/valora"),
            ("REDIS_URL", "redis://cache:6379"),
            ("BIND", "0.0.0.0:9000"),
        ])
        .expect("production");
        assert_eq!(
            c.queue,
            QueueBackend::Redis {
                url: "redis://cache:6379".into()
            }
        );
        assert!(!c.embedded_workers, "production runs separate workers");
        assert_eq!(c.bind.port(), 9000);
    }

    #[test]
    fn bad_values_are_named() {
        let err = config(&[("BIND", "nowhere")]).expect_err("bad bind");
        assert!(err.to_string().starts_with("BIND=\"nowhere\""), "{err}");
        let err = config(&[("DATABASE_URL", "mysql://x")]).expect_err("bad db");
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
        let err = config(&[("DATABASE_URL", "postgres://db/x")]).expect_err("pg needs redis");
        assert!(err.to_string().contains("REDIS_URL"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://valora:s3cret@db:5432/valora"),
            "postgres://valora:***@db:5432/valora"
        );
        assert_eq!(redact("redis://cache:6379"), "redis://cache:6379");
    }
}
