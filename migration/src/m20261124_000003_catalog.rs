//! Catalog: meters, plans, plan versions, prices and price tiers.
//!
//! Unit prices, package sizes and tier bounds are `Dec` values stored as TEXT:
//! exact on SQLite too, where a NUMERIC column would round-trip through `f64`.

use sea_orm_migration::{prelude::*, schema::*};

use crate::helpers::{drop_tables, foreign_key, id, index, unique_index};
use crate::m20261124_000001_tenancy::Organizations;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum Meters {
    Table,
    Id,
    OrganizationId,
    Code,
    Name,
    Aggregation,
    UniqueProperty,
    CreatedAt,
}

#[derive(DeriveIden)]
pub(crate) enum Plans {
    Table,
    Id,
    OrganizationId,
    Code,
    Name,
    Interval,
    IntervalCount,
    TrialDays,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PlanVersions {
    Table,
    Id,
    OrganizationId,
    PlanId,
    Version,
    EffectiveFrom,
    CreatedAt,
}

#[derive(DeriveIden)]
pub(crate) enum Prices {
    Table,
    Id,
    OrganizationId,
    PlanVersionId,
    Position,
    Model,
    Timing,
    MeterId,
    UnitAmount,
    PackageSize,
    Description,
}

#[derive(DeriveIden)]
enum PriceTiers {
    Table,
    Id,
    OrganizationId,
    PriceId,
    Position,
    UpTo,
    UnitAmount,
    FlatAmount,
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
                    .table(Meters::Table)
                    .if_not_exists()
                    .col(id(Meters::Id))
                    .col(string(Meters::OrganizationId))
                    .col(string(Meters::Code))
                    .col(string(Meters::Name))
                    .col(string(Meters::Aggregation))
                    .col(string_null(Meters::UniqueProperty))
                    .col(timestamp_with_time_zone(Meters::CreatedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_meters_organization_id",
                        (Meters::Table, Meters::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "idx_meters_organization_id_code",
                Meters::Table,
                [Meters::OrganizationId, Meters::Code],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Plans::Table)
                    .if_not_exists()
                    .col(id(Plans::Id))
                    .col(string(Plans::OrganizationId))
                    .col(string(Plans::Code))
                    .col(string(Plans::Name))
                    .col(string(Plans::Interval))
                    .col(integer(Plans::IntervalCount))
                    .col(integer(Plans::TrialDays))
                    .col(timestamp_with_time_zone(Plans::CreatedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_plans_organization_id",
                        (Plans::Table, Plans::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "idx_plans_organization_id_code",
                Plans::Table,
                [Plans::OrganizationId, Plans::Code],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PlanVersions::Table)
                    .if_not_exists()
                    .col(id(PlanVersions::Id))
                    .col(string(PlanVersions::OrganizationId))
                    .col(string(PlanVersions::PlanId))
                    .col(integer(PlanVersions::Version))
                    .col(timestamp_with_time_zone(PlanVersions::EffectiveFrom))
                    .col(timestamp_with_time_zone(PlanVersions::CreatedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_plan_versions_organization_id",
                        (PlanVersions::Table, PlanVersions::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_plan_versions_plan_id",
                        (PlanVersions::Table, PlanVersions::PlanId),
                        (Plans::Table, Plans::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "idx_plan_versions_plan_id_version",
                PlanVersions::Table,
                [PlanVersions::PlanId, PlanVersions::Version],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_plan_versions_plan_id_effective_from",
                PlanVersions::Table,
                [PlanVersions::PlanId, PlanVersions::EffectiveFrom],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_plan_versions_organization_id",
                PlanVersions::Table,
                [PlanVersions::OrganizationId],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Prices::Table)
                    .if_not_exists()
                    .col(id(Prices::Id))
                    .col(string(Prices::OrganizationId))
                    .col(string(Prices::PlanVersionId))
                    .col(integer(Prices::Position))
                    .col(string(Prices::Model))
                    .col(string(Prices::Timing))
                    .col(string_null(Prices::MeterId))
                    .col(text_null(Prices::UnitAmount))
                    .col(text_null(Prices::PackageSize))
                    .col(string_null(Prices::Description))
                    .foreign_key(&mut foreign_key(
                        "fk_prices_organization_id",
                        (Prices::Table, Prices::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_prices_plan_version_id",
                        (Prices::Table, Prices::PlanVersionId),
                        (PlanVersions::Table, PlanVersions::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_prices_meter_id",
                        (Prices::Table, Prices::MeterId),
                        (Meters::Table, Meters::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_prices_plan_version_id",
                Prices::Table,
                [Prices::PlanVersionId],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_prices_organization_id",
                Prices::Table,
                [Prices::OrganizationId],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PriceTiers::Table)
                    .if_not_exists()
                    .col(id(PriceTiers::Id))
                    .col(string(PriceTiers::OrganizationId))
                    .col(string(PriceTiers::PriceId))
                    .col(integer(PriceTiers::Position))
                    .col(text_null(PriceTiers::UpTo))
                    .col(text(PriceTiers::UnitAmount))
                    .col(text(PriceTiers::FlatAmount))
                    .foreign_key(&mut foreign_key(
                        "fk_price_tiers_organization_id",
                        (PriceTiers::Table, PriceTiers::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_price_tiers_price_id",
                        (PriceTiers::Table, PriceTiers::PriceId),
                        (Prices::Table, Prices::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "idx_price_tiers_price_id_position",
                PriceTiers::Table,
                [PriceTiers::PriceId, PriceTiers::Position],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_price_tiers_organization_id",
                PriceTiers::Table,
                [PriceTiers::OrganizationId],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(
            manager,
            [
                PriceTiers::Table.into_iden(),
                Prices::Table.into_iden(),
                PlanVersions::Table.into_iden(),
                Plans::Table.into_iden(),
                Meters::Table.into_iden(),
            ],
        )
        .await
    }
}
