//! Runtime configuration, read from the environment.
//!
//! Every setting has a default that needs nothing installed: without
//! `DATABASE_URL` Valora keeps a SQLite file in its data directory, and without
//! `REDIS_URL` jobs go through the embedded apalis-sqlite queue in that same file.

use std::net::SocketAddr;
use std::path::PathBuf;

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
