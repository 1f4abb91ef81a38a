//! `subscriptions`: subscriptions of a customer to a plan, with their current period.

use crate::{BillingAnchor, SubscriptionStatus};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub customer_id: String,
    pub plan_id: String,
    /// Seats; multiplies FLAT prices.
    pub quantity: i32,
    pub status: SubscriptionStatus,
    pub billing_anchor: BillingAnchor,
    pub started_at: DateTimeUtc,
    pub trial_end: Option<DateTimeUtc>,
    /// Instant periods are counted from (period n is computed from it, never from the previous end).
    pub period_anchor: DateTimeUtc,
    /// n of the current period.
    pub period_index: i32,
    pub current_period_start: Option<DateTimeUtc>,
    pub current_period_end: Option<DateTimeUtc>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTimeUtc>,
    pub past_due_since: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
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
        belongs_to = "super::plan::Entity",
        from = "Column::PlanId",
        to = "super::plan::Column::Id"
    )]
    Plan,
    #[sea_orm(has_many = "super::subscription_change::Entity")]
    SubscriptionChange,
    #[sea_orm(has_many = "super::invoice::Entity")]
    Invoice,
    #[sea_orm(has_many = "super::pending_invoice_item::Entity")]
    PendingInvoiceItem,
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

impl Related<super::plan::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Plan.def()
    }
}

impl Related<super::subscription_change::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::SubscriptionChange.def()
    }
}

impl Related<super::invoice::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Invoice.def()
    }
}

impl Related<super::pending_invoice_item::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PendingInvoiceItem.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
