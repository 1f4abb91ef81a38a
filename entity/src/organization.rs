//! `organizations`: the tenants, with their currency, timezone and billing settings.

use crate::TestClockStatus;
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    /// IANA name; period boundaries are midnights in this zone.
    pub timezone: String,
    /// `due_at = finalized_at + net_terms_days`.
    pub net_terms_days: i32,
    /// Delay between a draft's creation and its finalization.
    pub grace_period_hours: i32,
    /// Oldest accepted usage event, in days before now.
    pub late_usage_window_days: i32,
    /// Cancel a subscription after this many days PAST_DUE.
    pub cancel_after_past_due_days: Option<i32>,
    /// Invoice numbers read `{prefix}-{YYYY}-{seq:06}`.
    pub invoice_prefix: String,
    /// Frozen clock instant; `None` for a real-clock organization.
    pub test_clock_time: Option<DateTimeUtc>,
    pub test_clock_status: Option<TestClockStatus>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::api_key::Entity")]
    ApiKey,
    #[sea_orm(has_many = "super::customer::Entity")]
    Customer,
    #[sea_orm(has_many = "super::meter::Entity")]
    Meter,
    #[sea_orm(has_many = "super::plan::Entity")]
    Plan,
    #[sea_orm(has_many = "super::subscription::Entity")]
    Subscription,
    #[sea_orm(has_many = "super::invoice::Entity")]
    Invoice,
}

impl Related<super::api_key::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ApiKey.def()
    }
}

impl Related<super::customer::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl Related<super::meter::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Meter.def()
    }
}

impl Related<super::plan::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Plan.def()
    }
}

impl Related<super::subscription::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Subscription.def()
    }
}

impl Related<super::invoice::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Invoice.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
