//! `invoices`: invoices; amounts in minor units of the organization's currency.

use crate::{InvoiceKind, InvoiceStatus};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "invoices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub customer_id: String,
    pub subscription_id: Option<String>,
    pub kind: InvoiceKind,
    pub status: InvoiceStatus,
    pub currency: String,
    /// Deterministic identity, e.g. `periodic:{subscription}:{period_start}`; unique per organization.
    pub billing_key: String,
    /// Earliest line start.
    pub period_start: Option<DateTimeUtc>,
    /// Latest line end.
    pub period_end: Option<DateTimeUtc>,
    pub subtotal_minor: i64,
    pub total_minor: i64,
    /// Assigned at finalization: `{prefix}-{YYYY}-{seq:06}`.
    pub number: Option<String>,
    pub number_year: Option<i32>,
    pub number_seq: Option<i64>,
    /// When the finalization job is due (drafts only).
    pub finalize_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub finalized_at: Option<DateTimeUtc>,
    pub due_at: Option<DateTimeUtc>,
    pub paid_at: Option<DateTimeUtc>,
    pub voided_at: Option<DateTimeUtc>,
    /// SHA-256 of the canonical lines and totals, set at finalization.
    pub content_hash: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::organization::Entity",
        from = "Column::OrganizationId",
        to = "super::organization::Column::Id"
    )]
    Organization,
    #[sea_orm(
        belongs_to = "super::customer::Entity",
        from = "Column::CustomerId",
        to = "super::customer::Column::Id"
    )]
    Customer,
    #[sea_orm(
        belongs_to = "super::subscription::Entity",
        from = "Column::SubscriptionId",
        to = "super::subscription::Column::Id"
    )]
    Subscription,
    #[sea_orm(has_many = "super::invoice_line::Entity")]
    InvoiceLine,
}

impl Related<super::organization::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Organization.def()
    }
}

impl Related<super::customer::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl Related<super::subscription::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Subscription.def()
    }
}

impl Related<super::invoice_line::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::InvoiceLine.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
