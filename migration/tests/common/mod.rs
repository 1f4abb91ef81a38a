//! Test databases: a fresh SQLite file, or a fresh PostgreSQL database created
//! on the local server and dropped afterwards.
//!
//! PostgreSQL tests skip (with a printed line) when the server is unreachable,
//! unless `VALORA_REQUIRE_SERVERS=1`, in which case they fail.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use migration::sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

pub mod fixtures;

/// Admin URL of the local PostgreSQL server (`VALORA_TEST_POSTGRES_URL` overrides).
pub fn postgres_admin_url() -> String {
    std::env::var("VALORA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn servers_required() -> bool {
    std::env::var("VALORA_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A fresh, empty SQLite database file in the temp directory.
pub struct SqliteDb {
    pub db: DatabaseConnection,
    path: PathBuf,
}

impl SqliteDb {
    pub async fn new() -> SqliteDb {
        let path = std::env::temp_dir().join(format!("valora_mig_{}.sqlite", random_suffix()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let db = Database::connect(&url).await.expect("open sqlite");
        // sqlx enables foreign keys by default; the app does too. Make sure.
        db.execute_unprepared("PRAGMA foreign_keys = ON")
            .await
            .unwrap();
        SqliteDb { db, path }
    }

    /// Another connection (pool) to the same file.
    pub async fn connect_again(&self) -> DatabaseConnection {
        let url = format!("sqlite://{}?mode=rwc", self.path.display());
        Database::connect(&url).await.expect("open sqlite")
    }

    pub async fn remove(self) {
        let _ = self.db.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// A fresh PostgreSQL database, created for one test.
pub struct PostgresDb {
    pub db: DatabaseConnection,
    pub url: String,
    admin: DatabaseConnection,
    name: String,
}

impl PostgresDb {
    /// Creates the database, or returns `None` (after printing why) when the
    /// server is unreachable and servers are not required.
    pub async fn new(test: &str) -> Option<PostgresDb> {
        let admin_url = postgres_admin_url();
        let mut options = ConnectOptions::new(admin_url.clone());
        options
            .connect_timeout(Duration::from_secs(3))
            .acquire_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        let admin = match Database::connect(options).await {
            Ok(admin) => admin,
            Err(error) => {
                if servers_required() {
                    panic!(
                        "PostgreSQL unreachable at {admin_url} and VALORA_REQUIRE_SERVERS=1: {error}"
                    );
                }
                println!("{test}: skipped: PostgreSQL unreachable at {admin_url} ({error})");
                return None;
            }
        };
        let name = format!("valora_mig_{}", random_suffix());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        let url = database_url(&admin_url, &name);
        let db = Database::connect(&url)
            .await
            .expect("connect to new database");
        Some(PostgresDb {
            db,
            url,
            admin,
            name,
        })
    }

    /// Runs `checks` against the database, drops the database, then reports
    /// the outcome (re-raising a panic from `checks` after cleaning up).
    pub async fn run<F, Fut>(self, checks: F)
    where
        F: FnOnce(DatabaseConnection, String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(checks(self.db.clone(), self.url.clone())).await;
        let _ = self.db.close().await;
        self.admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop database");
        let _ = self.admin.close().await;
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// `admin_url` with its database name replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let (without_query, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let base = match without_query.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &without_query[..slash],
        _ => without_query,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Every table the migrations create.
pub const TABLES: &[&str] = &[
    "organizations",
    "api_keys",
    "idempotency_keys",
    "customers",
    "meters",
    "plans",
    "plan_versions",
    "prices",
    "price_tiers",
    "subscriptions",
    "subscription_changes",
    "usage_events",
    "invoices",
    "invoice_lines",
    "invoice_sequences",
    "pending_invoice_items",
    "outbox",
    "job_runs",
    "audit_events",
];
