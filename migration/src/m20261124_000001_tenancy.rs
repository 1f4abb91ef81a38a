//! Tenancy: organizations, their API keys, and the idempotency keys of mutations.

use sea_orm_migration::{prelude::*, schema::*};

use crate::helpers::{drop_tables, foreign_key, id, index};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum Organizations {
    Table,
    Id,
    Name,
    Currency,
    Timezone,
    NetTermsDays,
    GracePeriodHours,
    LateUsageWindowDays,
    CancelAfterPastDueDays,
    InvoicePrefix,
    TestClockTime,
    TestClockStatus,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrganizationId,
    Role,
    KeyHash,
    KeyPrefix,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    OrganizationId,
    Key,
    Operation,
    RequestHash,
    EntityId,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .if_not_exists()
                    .col(id(Organizations::Id))
                    .col(string(Organizations::Name))
                    .col(string(Organizations::Currency))
                    .col(string(Organizations::Timezone))
                    .col(integer(Organizations::NetTermsDays))
                    .col(integer(Organizations::GracePeriodHours))
                    .col(integer(Organizations::LateUsageWindowDays))
                    .col(integer_null(Organizations::CancelAfterPastDueDays))
                    .col(string(Organizations::InvoicePrefix))
                    .col(timestamp_with_time_zone_null(Organizations::TestClockTime))
                    .col(string_null(Organizations::TestClockStatus))
                    .col(timestamp_with_time_zone(Organizations::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(id(ApiKeys::Id))
                    .col(string(ApiKeys::OrganizationId))
                    .col(string(ApiKeys::Role))
                    .col(string_uniq(ApiKeys::KeyHash))
                    .col(string(ApiKeys::KeyPrefix))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_api_keys_organization_id",
                        (ApiKeys::Table, ApiKeys::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_api_keys_organization_id",
                ApiKeys::Table,
                [ApiKeys::OrganizationId],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(string(IdempotencyKeys::OrganizationId))
                    .col(string(IdempotencyKeys::Key))
                    .col(string(IdempotencyKeys::Operation))
                    .col(string(IdempotencyKeys::RequestHash))
                    .col(string(IdempotencyKeys::EntityId))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::OrganizationId)
                            .col(IdempotencyKeys::Key),
                    )
                    .foreign_key(&mut foreign_key(
                        "fk_idempotency_keys_organization_id",
                        (IdempotencyKeys::Table, IdempotencyKeys::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(
            manager,
            [
                IdempotencyKeys::Table.into_iden(),
                ApiKeys::Table.into_iden(),
                Organizations::Table.into_iden(),
            ],
        )
        .await
    }
}
