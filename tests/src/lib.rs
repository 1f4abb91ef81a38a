//! Test harness: each test gets its own database and queue namespace.
//!
//! - SQLite + embedded queue: a fresh file in a fresh temporary directory.
//! - PostgreSQL + Redis: a fresh database `valora_t_<random>` on the server at
//!   `VALORA_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//!   and a fresh queue prefix on `VALORA_TEST_REDIS` (default
//!   `redis://127.0.0.1:6379`), so tests run in parallel without seeing
//!   each other's rows or jobs.
//!
//! When the servers are unreachable a server-backed test prints why and
//! returns, unless `VALORA_REQUIRE_SERVERS=1` (set by the test script and CI),
//! in which case it fails.

pub mod http;
pub mod scenario;

use std::path::PathBuf;

use sea_orm::{ConnectionTrait, Database};
use worker::{Config, LogFormat, QueueBackend};

/// Which storage and queue a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file + embedded apalis-sqlite queue.
    Sqlite,
    /// PostgreSQL + Redis.
    Postgres,
}

/// One test's private environment.
pub struct TestEnv {
    pub backend: Backend,
    /// Configuration pointing at this environment, bound to a free port.
    pub config: Config,
    /// The PostgreSQL database made for it (dropped by [`TestEnv::cleanup`]).
    pub pg_database: Option<String>,
    dir: PathBuf,
}

pub fn pg_admin_url() -> String {
    std::env::var("VALORA_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("VALORA_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn servers_required() -> bool {
    matches!(
        std::env::var("VALORA_REQUIRE_SERVERS").as_deref(),
        Ok("1") | Ok("true")
    )
}

/// A short random name part.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

impl TestEnv {
    /// Every backend this machine can offer: SQLite always, PostgreSQL + Redis when reachable.
    pub async fn all() -> Vec<TestEnv> {
        let mut envs = vec![TestEnv::sqlite()];
        if let Some(pg) = TestEnv::postgres().await {
            envs.push(pg);
        }
        envs
    }

    pub fn sqlite() -> TestEnv {
        let dir = std::env::temp_dir().join(format!("valora-test-{}", unique_suffix()));
        let data_dir = dir.display().to_string();
        let config = base_config(&[("VALORA_DATA_DIR", data_dir.as_str())]);
        TestEnv {
            backend: Backend::Sqlite,
            config,
            pg_database: None,
            dir,
        }
    }

    /// A fresh PostgreSQL database and Redis namespace, or `None` (with a printed
    /// reason) when the servers are unreachable and not required.
    pub async fn postgres() -> Option<TestEnv> {
        let name = format!("valora_t_{}", unique_suffix());
        let admin_url = pg_admin_url();
        let created = async {
            let admin = Database::connect(admin_url.as_str()).await?;
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await?;
            admin.close().await
        }
        .await;
        let redis = worker::queue_health::ping(&QueueBackend::Redis { url: redis_url() }).await;
        match (created, redis) {
            (Ok(()), Ok(())) => {}
            (pg, redis) => {
                let why = format!(
                    "PostgreSQL at {}: {}; Redis at {}: {}",
                    worker::config::redact(&admin_url),
                    pg.err().map_or("ok".into(), |e| e.to_string()),
                    redis_url(),
                    redis.err().map_or("ok".into(), |e| e.to_string()),
                );
                if servers_required() {
                    panic!("server-backed test cannot reach its servers: {why}");
                }
                eprintln!("skipped PostgreSQL + Redis variant: {why}");
                return None;
            }
        }
        let database_url = database_url_for(&admin_url, &name);
        let dir = std::env::temp_dir().join(format!("valora-test-{}", unique_suffix()));
        let data_dir = dir.display().to_string();
        let prefix = format!("t{}", unique_suffix());
        let redis = redis_url();
        let config = base_config(&[
            ("DATABASE_URL", database_url.as_str()),
            ("REDIS_URL", redis.as_str()),
            ("VALORA_QUEUE_PREFIX", prefix.as_str()),
            ("VALORA_DATA_DIR", data_dir.as_str()),
        ]);
        Some(TestEnv {
            backend: Backend::Postgres,
            config,
            pg_database: Some(name),
            dir,
        })
    }

    /// Drops the test's database and files. Call at the end of a test; a test
    /// that panics leaves them behind for inspection (the test script sweeps
    /// old `valora_t_*` databases).
    pub async fn cleanup(self) {
        if let Some(name) = &self.pg_database
            && let Ok(admin) = Database::connect(pg_admin_url().as_str()).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
            let _ = admin.close().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn base_config(vars: &[(&str, &str)]) -> Config {
    let lookup = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .or_else(|| match name {
                "BIND" => Some("127.0.0.1:0".into()),
                "VALORA_ADMIN_TOKEN" => Some(format!("test-admin-{}", unique_suffix())),
                _ => None,
            })
    };
    let mut config = Config::from_lookup(lookup).expect("test configuration is valid");
    config.log_format = LogFormat::Text;
    config
}

/// Replaces the database name at the end of a PostgreSQL URL.
fn database_url_for(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let without_db = match base.rfind('/') {
        Some(slash) if slash > base.find("://").map_or(0, |i| i + 2) => &base[..slash],
        _ => base,
    };
    match query {
        Some(q) => format!("{without_db}/{name}?{q}"),
        None => format!("{without_db}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_the_name() {
        assert_eq!(
            database_url_for("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            database_url_for("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(database_url_for("postgres://h", "x"), "postgres://h/x");
    }
}
