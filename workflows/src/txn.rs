//! Write transactions, and the bind placeholders of raw SQL run in them.
//!
//! On SQLite a write transaction starts `BEGIN IMMEDIATE`: it takes the
//! single writer lock up front (waiting up to the busy timeout) instead of
//! upgrading a read snapshot later, which under concurrency fails at once
//! with "database is locked" (a stale WAL snapshot cannot be upgraded).
//! PostgreSQL ignores the option and uses its default READ COMMITTED.

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

/// Begins a transaction that will write.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// The `n`th (1-based) bind placeholder of raw SQL: `$n` on PostgreSQL,
/// `?n` on SQLite (numbered, so one value can be used twice).
pub fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => format!("?{n}"),
    }
}
