//! The audit trail: listing events and re-checking the hash chain.

use async_graphql::{Context, ID, Object, SimpleObject};
use entity::audit_event;

use super::auth::{require, roles, state};
use super::error::{ApiError, ApiResult};
use super::pagination::{PageInfo, count, encode_cursor, page_args};
use super::scalars::Instant;

pub struct AuditEvent(audit_event::Model);

#[Object]
impl AuditEvent {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn seq(&self) -> i64 {
        self.0.seq
    }
    async fn at(&self) -> Instant {
        Instant(self.0.at)
    }
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn action(&self) -> &str {
        &self.0.action
    }
    async fn entity_type(&self) -> &str {
        &self.0.entity_type
    }
    async fn entity_id(&self) -> ID {
        ID(self.0.entity_id.clone())
    }
    async fn prev_hash(&self) -> &str {
        &self.0.prev_hash
    }
    async fn hash(&self) -> &str {
        &self.0.hash
    }
}

pub struct AuditEventConnection {
    nodes: Vec<AuditEvent>,
    has_next_page: bool,
    total: u64,
}

#[Object]
impl AuditEventConnection {
    async fn nodes(&self) -> &[AuditEvent] {
        &self.nodes
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            end_cursor: self
                .nodes
                .last()
                .map(|n| encode_cursor(&n.0.id.to_string())),
        }
    }
    async fn total_count(&self) -> i32 {
        count(self.total)
    }
}

#[derive(SimpleObject)]
pub struct AuditChainCheck {
    pub valid: bool,
    pub checked: i32,
    pub first_broken_id: Option<ID>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    #[graphql(complexity = "super::pagination::page_cost(first, child_complexity)")]
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        entity_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<AuditEventConnection> {
        let caller = require(ctx, roles::READ)?;
        let (first, after) = page_args(first, after)?;
        let after = after
            .map(|a| {
                a.parse::<i64>()
                    .map_err(|_| ApiError::bad_input("invalid cursor"))
            })
            .transpose()?;
        let page = workflows::audit::list(
            &state(ctx).db,
            &caller.organization_id,
            entity_id.as_ref().map(|id| id.as_str()),
            first,
            after,
        )
        .await?;
        Ok(AuditEventConnection {
            nodes: page.nodes.into_iter().map(AuditEvent).collect(),
            has_next_page: page.has_next_page,
            total: page.total,
        })
    }

    async fn verify_audit_chain(&self, ctx: &Context<'_>) -> ApiResult<AuditChainCheck> {
        let caller = require(ctx, roles::READ)?;
        let check = workflows::audit::verify(&state(ctx).db, &caller.organization_id).await?;
        Ok(AuditChainCheck {
            valid: check.valid,
            checked: count(check.checked),
            first_broken_id: check.first_broken_id.map(|id| ID(id.to_string())),
        })
    }
}
