//! `job_runs`: one row per job key (attempts, state, last error) for retries and the ops dashboard.

use crate::JobState;
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "job_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(unique)]
    pub job_key: String,
    pub kind: String,
    pub organization_id: Option<String>,
    pub subject_id: String,
    pub state: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    /// Error of the latest failed attempt (TEXT: may be long).
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub run_at: DateTimeUtc,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
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
}

impl Related<super::organization::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Organization.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
