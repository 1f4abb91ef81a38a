//! `plans`: billing interval and trial of a plan; its prices live in plan versions.

use crate::Interval;
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "plans")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organization_id: String,
    /// Unique per organization.
    pub code: String,
    pub name: String,
    pub interval: Interval,
    /// Quarterly is MONTH × 3.
    pub interval_count: i32,
    pub trial_days: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::organization::Entity",
        from = "Column::OrganizationId",
        to = "super::organization::Column::Id"
    )]
    Organization,
    #[sea_orm(has_many = "super::plan_version::Entity")]
    PlanVersion,
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

impl ActiveModelBehavior for ActiveModel {}
