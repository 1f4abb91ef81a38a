//! `audit_events`: the append-only audit trail with a per-organization hash chain
//! (triggers in the migration refuse UPDATE and DELETE).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub organization_id: String,
    /// 1, 2, 3… per organization; unique, which serializes the chain.
    pub seq: i64,
    pub at: DateTimeUtc,
    /// API key id or job.
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub before: Option<Json>,
    pub after: Option<Json>,
    pub prev_hash: String,
    /// SHA-256(prev_hash ‖ canonical event), hex.
    pub hash: String,
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
