//! Invoices, their lines, per-year invoice number sequences, and pending
//! (proration) items waiting for the next periodic invoice.
//!
//! Money is `i64` minor units (BIGINT), quantities and unit prices `Dec` text.
//! The unique indexes are the idempotency guards of the billing steps: one
//! invoice per `(organization_id, billing_key)` (one periodic invoice per
//! subscription and period), one number per organization and sequence, one
//! pending item per `(organization_id, source_key)`.

use sea_orm_migration::{prelude::*, schema::*};

use crate::helpers::{drop_tables, foreign_key, id, index, unique_index};
use crate::m20261124_000001_tenancy::Organizations;
use crate::m20261124_000002_customers::Customers;
use crate::m20261124_000003_catalog::Prices;
use crate::m20261124_000004_subscriptions::Subscriptions;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Invoices {
    Table,
    Id,
    OrganizationId,
    CustomerId,
    SubscriptionId,
    Kind,
    Status,
    Currency,
    BillingKey,
    PeriodStart,
    PeriodEnd,
    SubtotalMinor,
    TotalMinor,
    Number,
    NumberYear,
    NumberSeq,
    FinalizeAt,
    CreatedAt,
    FinalizedAt,
    DueAt,
    PaidAt,
    VoidedAt,
    ContentHash,
}

#[derive(DeriveIden)]
enum InvoiceLines {
    Table,
    Id,
    OrganizationId,
    InvoiceId,
    Position,
    Kind,
    Description,
    PriceId,
    Quantity,
    UnitAmount,
    AmountMinor,
    PeriodStart,
    PeriodEnd,
}

#[derive(DeriveIden)]
enum InvoiceSequences {
    Table,
    OrganizationId,
    Year,
    LastSeq,
}

#[derive(DeriveIden)]
enum PendingInvoiceItems {
    Table,
    Id,
    OrganizationId,
    SubscriptionId,
    SourceKey,
    Kind,
    Description,
    PriceId,
    Quantity,
    UnitAmount,
    AmountMinor,
    PeriodStart,
    PeriodEnd,
    InvoiceId,
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
                    .table(Invoices::Table)
                    .if_not_exists()
                    .col(id(Invoices::Id))
                    .col(string(Invoices::OrganizationId))
                    .col(string(Invoices::CustomerId))
                    .col(string_null(Invoices::SubscriptionId))
                    .col(string(Invoices::Kind))
                    .col(string(Invoices::Status))
                    .col(string(Invoices::Currency))
                    .col(string(Invoices::BillingKey))
                    .col(timestamp_with_time_zone_null(Invoices::PeriodStart))
                    .col(timestamp_with_time_zone_null(Invoices::PeriodEnd))
                    .col(big_integer(Invoices::SubtotalMinor))
                    .col(big_integer(Invoices::TotalMinor))
                    .col(string_null(Invoices::Number))
                    .col(integer_null(Invoices::NumberYear))
                    .col(big_integer_null(Invoices::NumberSeq))
                    .col(timestamp_with_time_zone_null(Invoices::FinalizeAt))
                    .col(timestamp_with_time_zone(Invoices::CreatedAt))
                    .col(timestamp_with_time_zone_null(Invoices::FinalizedAt))
                    .col(timestamp_with_time_zone_null(Invoices::DueAt))
                    .col(timestamp_with_time_zone_null(Invoices::PaidAt))
                    .col(timestamp_with_time_zone_null(Invoices::VoidedAt))
                    .col(string_null(Invoices::ContentHash))
                    .foreign_key(&mut foreign_key(
                        "fk_invoices_organization_id",
                        (Invoices::Table, Invoices::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_invoices_customer_id",
                        (Invoices::Table, Invoices::CustomerId),
                        (Customers::Table, Customers::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_invoices_subscription_id",
                        (Invoices::Table, Invoices::SubscriptionId),
                        (Subscriptions::Table, Subscriptions::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "idx_invoices_organization_id_billing_key",
                Invoices::Table,
                [Invoices::OrganizationId, Invoices::BillingKey],
            ))
            .await?;
        // NULLs are distinct in unique indexes on both backends, so drafts
        // (no number yet) never collide.
        manager
            .create_index(unique_index(
                "idx_invoices_organization_id_number_year_number_seq",
                Invoices::Table,
                [
                    Invoices::OrganizationId,
                    Invoices::NumberYear,
                    Invoices::NumberSeq,
                ],
            ))
            .await?;
        manager
            .create_index(unique_index(
                "idx_invoices_organization_id_number",
                Invoices::Table,
                [Invoices::OrganizationId, Invoices::Number],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_invoices_status_finalize_at",
                Invoices::Table,
                [Invoices::Status, Invoices::FinalizeAt],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_invoices_status_due_at",
                Invoices::Table,
                [Invoices::Status, Invoices::DueAt],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_invoices_organization_id_subscription_id",
                Invoices::Table,
                [Invoices::OrganizationId, Invoices::SubscriptionId],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_invoices_organization_id_customer_id",
                Invoices::Table,
                [Invoices::OrganizationId, Invoices::CustomerId],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(InvoiceLines::Table)
                    .if_not_exists()
                    .col(id(InvoiceLines::Id))
                    .col(string(InvoiceLines::OrganizationId))
                    .col(string(InvoiceLines::InvoiceId))
                    .col(integer(InvoiceLines::Position))
                    .col(string(InvoiceLines::Kind))
                    .col(string(InvoiceLines::Description))
                    .col(string_null(InvoiceLines::PriceId))
                    .col(text(InvoiceLines::Quantity))
                    .col(text_null(InvoiceLines::UnitAmount))
                    .col(big_integer(InvoiceLines::AmountMinor))
                    .col(timestamp_with_time_zone(InvoiceLines::PeriodStart))
                    .col(timestamp_with_time_zone(InvoiceLines::PeriodEnd))
                    .foreign_key(&mut foreign_key(
                        "fk_invoice_lines_organization_id",
                        (InvoiceLines::Table, InvoiceLines::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_invoice_lines_invoice_id",
                        (InvoiceLines::Table, InvoiceLines::InvoiceId),
                        (Invoices::Table, Invoices::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_invoice_lines_price_id",
                        (InvoiceLines::Table, InvoiceLines::PriceId),
                        (Prices::Table, Prices::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "idx_invoice_lines_invoice_id_position",
                InvoiceLines::Table,
                [InvoiceLines::InvoiceId, InvoiceLines::Position],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_invoice_lines_organization_id",
                InvoiceLines::Table,
                [InvoiceLines::OrganizationId],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(InvoiceSequences::Table)
                    .if_not_exists()
                    .col(string(InvoiceSequences::OrganizationId))
                    .col(integer(InvoiceSequences::Year))
                    .col(big_integer(InvoiceSequences::LastSeq))
                    .primary_key(
                        Index::create()
                            .col(InvoiceSequences::OrganizationId)
                            .col(InvoiceSequences::Year),
                    )
                    .foreign_key(&mut foreign_key(
                        "fk_invoice_sequences_organization_id",
                        (InvoiceSequences::Table, InvoiceSequences::OrganizationId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PendingInvoiceItems::Table)
                    .if_not_exists()
                    .col(id(PendingInvoiceItems::Id))
                    .col(string(PendingInvoiceItems::OrganizationId))
                    .col(string(PendingInvoiceItems::SubscriptionId))
                    .col(string(PendingInvoiceItems::SourceKey))
                    .col(string(PendingInvoiceItems::Kind))
                    .col(string(PendingInvoiceItems::Description))
                    .col(string_null(PendingInvoiceItems::PriceId))
                    .col(text(PendingInvoiceItems::Quantity))
                    .col(text_null(PendingInvoiceItems::UnitAmount))
                    .col(big_integer(PendingInvoiceItems::AmountMinor))
                    .col(timestamp_with_time_zone(PendingInvoiceItems::PeriodStart))
                    .col(timestamp_with_time_zone(PendingInvoiceItems::PeriodEnd))
                    .col(string_null(PendingInvoiceItems::InvoiceId))
                    .col(timestamp_with_time_zone(PendingInvoiceItems::CreatedAt))
                    .foreign_key(&mut foreign_key(
                        "fk_pending_invoice_items_organization_id",
                        (
                            PendingInvoiceItems::Table,
                            PendingInvoiceItems::OrganizationId,
                        ),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_pending_invoice_items_subscription_id",
                        (
                            PendingInvoiceItems::Table,
                            PendingInvoiceItems::SubscriptionId,
                        ),
                        (Subscriptions::Table, Subscriptions::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_pending_invoice_items_price_id",
                        (PendingInvoiceItems::Table, PendingInvoiceItems::PriceId),
                        (Prices::Table, Prices::Id),
                    ))
                    .foreign_key(&mut foreign_key(
                        "fk_pending_invoice_items_invoice_id",
                        (PendingInvoiceItems::Table, PendingInvoiceItems::InvoiceId),
                        (Invoices::Table, Invoices::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(unique_index(
                "idx_pending_invoice_items_organization_id_source_key",
                PendingInvoiceItems::Table,
                [
                    PendingInvoiceItems::OrganizationId,
                    PendingInvoiceItems::SourceKey,
                ],
            ))
            .await?;
        manager
            .create_index(index(
                "idx_pending_invoice_items_subscription_id_invoice_id",
                PendingInvoiceItems::Table,
                [
                    PendingInvoiceItems::SubscriptionId,
                    PendingInvoiceItems::InvoiceId,
                ],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_tables(
            manager,
            [
                PendingInvoiceItems::Table.into_iden(),
                InvoiceSequences::Table.into_iden(),
                InvoiceLines::Table.into_iden(),
                Invoices::Table.into_iden(),
            ],
        )
        .await
    }
}
