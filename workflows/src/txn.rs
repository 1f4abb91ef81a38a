//! Write transactions, the bind placeholders of raw SQL run in them, and
//! the plan cache setting of their bulk inserts.
//!
//! On SQLite a write transaction starts `BEGIN IMMEDIATE`: it takes the
//! single writer lock up front (waiting up to the busy timeout) instead of
//! upgrading a read snapshot later, which under concurrency fails at once
//! with "database is locked" (a stale WAL snapshot cannot be upgraded).
//! PostgreSQL ignores the option and uses its default READ COMMITTED.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
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

/// Runs `inserts` (bulk INSERTs, inside a transaction) with PostgreSQL's
/// foreign-key checks on cached plans.
///
/// Connections plan every statement with its parameters (`plan_cache_mode =
/// force_custom_plan`, see `worker::database`). The setting also reaches the
/// foreign-key triggers, which then plan their primary-key lookup again for
/// every inserted row: 35–50% of a 20,000-row INSERT with three foreign
/// keys. Such a lookup has one plan whatever the key, so the inserts run
/// with the plan cache's own choice, and the connection's setting comes back
/// for the statements after them (`SET LOCAL … DEFAULT`). If `inserts`
/// fails, the transaction is lost anyway, and the setting with it.
pub async fn with_cached_plans<C, T, E>(
    txn: &C,
    inserts: impl AsyncFnOnce() -> Result<T, E>,
) -> Result<T, E>
where
    C: ConnectionTrait,
    E: From<DbErr>,
{
    let postgres = txn.get_database_backend() == DbBackend::Postgres;
    if postgres {
        txn.execute_unprepared("SET LOCAL plan_cache_mode = auto")
            .await?;
    }
    let done = inserts().await?;
    if postgres {
        txn.execute_unprepared("SET LOCAL plan_cache_mode = DEFAULT")
            .await?;
    }
    Ok(done)
}
