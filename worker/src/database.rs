//! Opening the SQL database (the only source of truth) and bringing its schema up to date.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

use crate::config::Config;

/// Connects to `config.database_url`, creating the SQLite data directory when needed.
///
/// SQLite runs in WAL mode with a busy timeout so the API and the in-process
/// workers can write to the same file without `database is locked` errors.
pub async fn connect(config: &Config) -> Result<DatabaseConnection, DbErr> {
    if config.is_sqlite() {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            DbErr::Custom(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
    }
    connect_url(&config.database_url, pool_size(config)).await
}

/// Prepared statements kept per PostgreSQL connection.
const STATEMENT_CACHE: usize = 1_000;

/// Connects to a database URL with Valora's connection settings.
pub async fn connect_url(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        // Statements are prepared once per connection and PostgreSQL may then
        // switch to a generic plan, chosen without the parameter values and
        // often while the tables were still small: an index lookup of one
        // subscription's invoices became a scan of the organization's (10 ms
        // at 10,000 subscriptions, growing). Valora's statements are small,
        // so planning each execution (tens of microseconds) is the safe trade.
        //
        // Batched statements (IN lists, multi-row inserts) have one text per
        // size, several hundred in all: a cache of sqlx's default 100 per
        // connection evicted the hot statements and prepared them again.
        .map_sqlx_postgres_opts(|opts| {
            opts.options([("plan_cache_mode", "force_custom_plan")])
                .statement_cache_capacity(STATEMENT_CACHE)
        })
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    Database::connect(options).await
}

/// Applies every pending migration; a no-op when the schema is current.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Checks that the database answers a trivial query (used by `/readyz`).
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("SELECT 1").await.map(|_| ())
}

fn pool_size(config: &Config) -> u32 {
    // SQLite serializes writers anyway; a few connections serve readers.
    if config.is_sqlite() { 8 } else { 20 }
}
