//! The relay's index: outbox rows not yet relayed, oldest first.
//!
//! The relay asks for the oldest unrelayed rows (`relayed_at IS NULL ORDER
//! BY id LIMIT n`). Relayed rows stay in the table, and on PostgreSQL the
//! planner walked the primary key past all of them on every poll: 26 ms a
//! poll at 10,000 subscriptions, growing with the table. A partial index
//! holds only the pending rows, so a poll costs what is pending.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

// Partial indexes: the same statement on PostgreSQL and SQLite.
const UP: &str = "CREATE INDEX idx_outbox_pending ON outbox (id) WHERE relayed_at IS NULL";
const DOWN: &str = "DROP INDEX idx_outbox_pending";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
