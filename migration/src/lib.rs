//! Valora's schema migrations, for PostgreSQL and SQLite alike.
//!
//! Column types mirror the `entity` crate: `Dec` values are TEXT, money is
//! BIGINT minor units, instants are `timestamp with time zone` (RFC 3339 text
//! on SQLite), enumerations are strings, JSON is `json`. No floating point and
//! no NUMERIC anywhere (sea-orm reads NUMERIC through `f64` on SQLite).
//!
//! [`Migrator::up`] is safe to call from many processes at once on
//! PostgreSQL: it holds a transaction-scoped advisory lock while it applies
//! the pending migrations, so concurrent starters wait instead of racing on
//! `CREATE TABLE`, and find nothing left to do.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DbBackend, TransactionTrait};

mod helpers;
mod m20261124_000001_tenancy;
mod m20261124_000002_customers;
mod m20261124_000003_catalog;
mod m20261124_000004_subscriptions;
mod m20261124_000005_invoices;
mod m20261124_000006_jobs;
mod m20261124_000007_audit;
mod m20261124_000008_outbox_pending;
mod m20261207_000009_scan_indexes;

pub use m20261124_000007_audit::APPEND_ONLY_MESSAGE;
pub use sea_orm_migration::{MigratorTrait, sea_orm};

/// Key of the PostgreSQL advisory lock held while migrating.
const MIGRATION_LOCK_KEY: i64 = 0x7661_6c6f_7261; // "valora"

/// Every migration, oldest first.
fn all_migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(m20261124_000001_tenancy::Migration),
        Box::new(m20261124_000002_customers::Migration),
        Box::new(m20261124_000003_catalog::Migration),
        Box::new(m20261124_000004_subscriptions::Migration),
        Box::new(m20261124_000005_invoices::Migration),
        Box::new(m20261124_000006_jobs::Migration),
        Box::new(m20261124_000007_audit::Migration),
        Box::new(m20261124_000008_outbox_pending::Migration),
        Box::new(m20261207_000009_scan_indexes::Migration),
    ]
}

/// Valora's migrator. `Migrator::up(&db, None)` brings any database current.
pub struct Migrator;

/// The stock migrator over the same list; [`Migrator::up`] wraps it in the lock.
struct Unlocked;

#[async_trait::async_trait]
impl MigratorTrait for Unlocked {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        all_migrations()
    }
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        all_migrations()
    }

    /// Applies pending migrations. On PostgreSQL everything runs in one
    /// transaction holding an advisory lock (each migration in a savepoint),
    /// so concurrent callers serialize and the schema changes all-or-nothing.
    async fn up<'c, C>(db: C, steps: Option<u32>) -> Result<(), DbErr>
    where
        C: IntoSchemaManagerConnection<'c>,
    {
        let db = db.into_database_executor();
        if db.get_database_backend() != DbBackend::Postgres {
            return Unlocked::up(db, steps).await;
        }
        let transaction = db.begin().await?;
        transaction
            .execute_unprepared(&format!(
                "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
            ))
            .await?;
        Unlocked::up(&transaction, steps).await?;
        transaction.commit().await
    }
}
