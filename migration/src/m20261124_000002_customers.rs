//! Customers, identified per organization by their external id.

use sea_orm_migration::{prelude::*, schema::*};

use crate::helpers::{drop_tables, foreign_key, id, unique_index};
use crate::m20261124_000001_tenancy::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum Customers {
    Table,
    Id,
    OrganizationId,
    ExternalId,
    Name,
    Email,
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
                    .table(Customers::Table)
                    .if_not_exists()
                    .col(id(Customers::Id))
                    .col(string(Customers::OrganizationId))
                    .col(string(Customers::ExternalId))
                    .col(string(Customers::Name))
                    .col(string_null(Customers::Email))
                    .col(timestamp_with_time_zone(Customers::CreatedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_customers_organization_id",
                        (Customers::Table, Customers::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        // Also serves as the tenant index.
        manager
            .create_index(unique_index(
                "idx_customers_organization_id_external_id",
                Customers::Table,
                [Customers::OrganizationId, Customers::ExternalId],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(manager, [Customers::Table]).await
    }
}
