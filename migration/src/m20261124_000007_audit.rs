//! The audit trail, made append-only by the database itself: triggers refuse
//! every UPDATE and DELETE of `audit_events` (a plpgsql trigger function on
//! PostgreSQL, `RAISE(ABORT, …)` triggers on SQLite), so not even a buggy
//! step can rewrite history. `UNIQUE(organization_id, seq)` serializes the
//! per-organization hash chain: two writers cannot both append `seq = n`.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::helpers::{drop_tables, foreign_key, unique_index};
use crate::m20261124_000001_tenancy::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OrganizationId,
    Seq,
    At,
    Actor,
    Action,
    EntityType,
    EntityId,
    Before,
    After,
    PrevHash,
    Hash,
}

/// The message both backends raise; tests and callers may match on it.
pub const APPEND_ONLY_MESSAGE: &str = "audit_events is append-only";

const POSTGRES_UP: &[&str] = &[
    "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger \
     LANGUAGE plpgsql AS $$ \
     BEGIN \
       RAISE EXCEPTION 'audit_events is append-only' USING ERRCODE = 'restrict_violation'; \
     END; \
     $$",
    "DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events",
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events \
     FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events",
    "DROP FUNCTION IF EXISTS audit_events_append_only()",
];

const SQLITE_UP: &[&str] = &[
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS audit_events_no_update",
    "DROP TRIGGER IF EXISTS audit_events_no_delete",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .if_not_exists()
                    // Auto-increment: global insertion order.
                    .col(big_pk_auto(AuditEvents::Id))
                    .col(string(AuditEvents::OrganizationId))
                    .col(big_integer(AuditEvents::Seq))
                    .col(timestamp_with_time_zone(AuditEvents::At))
                    .col(string(AuditEvents::Actor))
                    .col(string(AuditEvents::Action))
                    .col(string(AuditEvents::EntityType))
                    .col(string(AuditEvents::EntityId))
                    .col(json_null(AuditEvents::Before))
                    .col(json_null(AuditEvents::After))
                    .col(string(AuditEvents::PrevHash))
                    .col(string(AuditEvents::Hash))
                    .foreign_key(&mut foreign_key(
                        "fk_audit_events_organization_id",
                        (AuditEvents::Table, AuditEvents::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        // Also serves as the tenant index.
        manager
            .create_index(unique_index(
                "idx_audit_events_organization_id_seq",
                AuditEvents::Table,
                [AuditEvents::OrganizationId, AuditEvents::Seq],
            ))
            .await?;

        execute_all(
            manager,
            guard_statements(manager.get_database_backend(), true)?,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        execute_all(
            manager,
            guard_statements(manager.get_database_backend(), false)?,
        )
        .await?;
        drop_tables(manager, [AuditEvents::Table]).await
    }
}

/// The statements that install (`up`) or remove the append-only guard.
fn guard_statements(backend: DbBackend, up: bool) -> Result<&'static [&'static str], DbErr> {
    match (backend, up) {
        (DbBackend::Postgres, true) => Ok(POSTGRES_UP),
        (DbBackend::Postgres, false) => Ok(POSTGRES_DOWN),
        (DbBackend::Sqlite, true) => Ok(SQLITE_UP),
        (DbBackend::Sqlite, false) => Ok(SQLITE_DOWN),
        (other, _) => Err(DbErr::Migration(format!(
            "audit_events append-only guard: unsupported backend {other:?}"
        ))),
    }
}

async fn execute_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let connection = manager.get_connection();
    for statement in statements {
        connection.execute_unprepared(statement).await?;
    }
    Ok(())
}
