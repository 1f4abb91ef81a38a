//! `outbox`: jobs written in the same transaction as the state change, relayed to the queues.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Auto-increment: relay order.
    #[sea_orm(primary_key)]
    pub id: i64,
    pub organization_id: String,
    pub job_kind: String,
    /// What the job does, e.g. `period_close:{subscription}:{period_start}`.
    pub job_key: String,
    pub subject_id: String,
    pub payload: Json,
    pub run_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    /// `None` until pushed to the queue.
    pub relayed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::organization::Entity",
        from = "Column::OrganizationId",
        to = "super::organization::Column::Id"
    )]
    Organization,
}

impl Related<super::organization::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Organization.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
