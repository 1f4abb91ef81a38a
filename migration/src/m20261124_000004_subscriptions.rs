//! Subscriptions, their change history, and usage events.
//!
//! The `(status, trial_end)` and `(status, current_period_end)` indexes serve
//! the sweeper's "what is due" queries; usage values are `Dec` text.

use sea_orm_migration::{prelude::*, schema::*};

use crate::helpers::{drop_tables, foreign_key, id, index, unique_index};
use crate::m20261124_000001_tenancy::Organizations;
use crate::m20261124_000002_customers::Customers;
use crate::m20261124_000003_catalog::{Meters, Plans};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub(crate) enum Subscriptions {
    Table,
    Id,
    OrganizationId,
    CustomerId,
    PlanId,
    Quantity,
    Status,
    BillingAnchor,
    StartedAt,
    TrialEnd,
    PeriodAnchor,
    PeriodIndex,
    CurrentPeriodStart,
    CurrentPeriodEnd,
    CancelAtPeriodEnd,
    CanceledAt,
    PastDueSince,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SubscriptionChanges {
    Table,
    Id,
    OrganizationId,
    SubscriptionId,
    Kind,
    PlanId,
    Quantity,
    EffectiveAt,
    ProrationBehavior,
    Timing,
    AppliedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UsageEvents {
    Table,
    Id,
    OrganizationId,
    CustomerId,
    MeterId,
    IdempotencyKey,
    Value,
    Timestamp,
    Properties,
    PayloadHash,
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
                    .table(Subscriptions::Table)
                    .if_not_exists()
                    .col(id(Subscriptions::Id))
                    .col(string(Subscriptions::OrganizationId))
                    .col(string(Subscriptions::CustomerId))
                    .col(string(Subscriptions::PlanId))
                    .col(integer(Subscriptions::Quantity))
                    .col(string(Subscriptions::Status))
                    .col(string(Subscriptions::BillingAnchor))
                    .col(timestamp_with_time_zone(Subscriptions::StartedAt))
                    .col(timestamp_with_time_zone_null(Subscriptions::TrialEnd))
                    .col(timestamp_with_time_zone(Subscriptions::PeriodAnchor))
                    .col(integer(Subscriptions::PeriodIndex))
                    .col(timestamp_with_time_zone_null(
                        Subscriptions::CurrentPeriodStart,
                    ))
                    .col(timestamp_with_time_zone_null(
                        Subscriptions::CurrentPeriodEnd,
                    ))
                    .col(boolean(Subscriptions::CancelAtPeriodEnd))
                    .col(timestamp_with_time_zone_null(Subscriptions::CanceledAt))
                    .col(timestamp_with_time_zone_null(Subscriptions::PastDueSince))
                    .col(timestamp_with_time_zone(Subscriptions::CreatedAt))
                    .col(timestamp_with_time_zone(Subscriptions::UpdatedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_subscriptions_organization_id",
                        (Subscriptions::Table, Subscriptions::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_subscriptions_customer_id",
                        (Subscriptions::Table, Subscriptions::CustomerId),
                        (Customers::Table, Customers::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_subscriptions_plan_id",
                        (Subscriptions::Table, Subscriptions::PlanId),
                        (Plans::Table, Plans::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_subscriptions_status_trial_end",
                Subscriptions::Table,
                [Subscriptions::Status, Subscriptions::TrialEnd],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_subscriptions_status_current_period_end",
                Subscriptions::Table,
                [Subscriptions::Status, Subscriptions::CurrentPeriodEnd],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_subscriptions_organization_id_customer_id",
                Subscriptions::Table,
                [Subscriptions::OrganizationId, Subscriptions::CustomerId],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(SubscriptionChanges::Table)
                    .if_not_exists()
                    .col(id(SubscriptionChanges::Id))
                    .col(string(SubscriptionChanges::OrganizationId))
                    .col(string(SubscriptionChanges::SubscriptionId))
                    .col(string(SubscriptionChanges::Kind))
                    .col(string(SubscriptionChanges::PlanId))
                    .col(integer(SubscriptionChanges::Quantity))
                    .col(timestamp_with_time_zone(SubscriptionChanges::EffectiveAt))
                    .col(string_null(SubscriptionChanges::ProrationBehavior))
                    .col(string_null(SubscriptionChanges::Timing))
                    .col(timestamp_with_time_zone_null(
                        SubscriptionChanges::AppliedAt,
                    ))
                    .col(timestamp_with_time_zone(SubscriptionChanges::CreatedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_subscription_changes_organization_id",
                        (
                            SubscriptionChanges::Table,
                            SubscriptionChanges::OrganizationId,
                        ),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_subscription_changes_subscription_id",
                        (
                            SubscriptionChanges::Table,
                            SubscriptionChanges::SubscriptionId,
                        ),
                        (Subscriptions::Table, Subscriptions::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_subscription_changes_plan_id",
                        (SubscriptionChanges::Table, SubscriptionChanges::PlanId),
                        (Plans::Table, Plans::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_subscription_changes_subscription_id_effective_at",
                SubscriptionChanges::Table,
                [
                    SubscriptionChanges::SubscriptionId,
                    SubscriptionChanges::EffectiveAt,
                ],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_subscription_changes_organization_id",
                SubscriptionChanges::Table,
                [SubscriptionChanges::OrganizationId],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(UsageEvents::Table)
                    .if_not_exists()
                    .col(id(UsageEvents::Id))
                    .col(string(UsageEvents::OrganizationId))
                    .col(string(UsageEvents::CustomerId))
                    .col(string(UsageEvents::MeterId))
                    .col(string(UsageEvents::IdempotencyKey))
                    .col(text(UsageEvents::Value))
                    .col(timestamp_with_time_zone(UsageEvents::Timestamp))
                    .col(json_null(UsageEvents::Properties))
                    .col(string(UsageEvents::PayloadHash))
                    .col(timestamp_with_time_zone(UsageEvents::CreatedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_usage_events_organization_id",
                        (UsageEvents::Table, UsageEvents::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_usage_events_customer_id",
                        (UsageEvents::Table, UsageEvents::CustomerId),
                        (Customers::Table, Customers::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_usage_events_meter_id",
                        (UsageEvents::Table, UsageEvents::MeterId),
                        (Meters::Table, Meters::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "idx_usage_events_organization_id_idempotency_key",
                UsageEvents::Table,
                [UsageEvents::OrganizationId, UsageEvents::IdempotencyKey],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_usage_events_org_customer_meter_timestamp",
                UsageEvents::Table,
                [
                    UsageEvents::OrganizationId,
                    UsageEvents::CustomerId,
                    UsageEvents::MeterId,
                    UsageEvents::Timestamp,
                ],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(
            manager,
            [
                UsageEvents::Table.into_iden(),
                SubscriptionChanges::Table.into_iden(),
                Subscriptions::Table.into_iden(),
            ],
        )
        .await
    }
}
