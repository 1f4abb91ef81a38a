//! `prices`: prices of a plan version.

use crate::{BillingTiming, Dec, PriceModel};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "prices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    pub plan_version_id: String,
    /// Order within the plan version.
    pub position: i32,
    pub model: PriceModel,
    pub timing: BillingTiming,
    /// Set for metered models.
    pub meter_id: Option<String>,
    /// FLAT, PER_UNIT, PACKAGE; tiered models use tiers.
    pub unit_amount: Option<Dec>,
    /// PACKAGE only.
    pub package_size: Option<Dec>,
    pub description: Option<String>,
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
        belongs_to = "super::plan_version::Entity",
        from = "Column::PlanVersionId",
        to = "super::plan_version::Column::Id"
    )]
    PlanVersion,
    #[sea_orm(
        belongs_to = "super::meter::Entity",
        from = "Column::MeterId",
        to = "super::meter::Column::Id"
    )]
    Meter,
    #[sea_orm(has_many = "super::price_tier::Entity")]
    PriceTier,
}

impl Related<super::organization::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Organization.def()
    }
}

impl Related<super::plan_version::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PlanVersion.def()
    }
}

impl Related<super::meter::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Meter.def()
    }
}

impl Related<super::price_tier::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PriceTier.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
