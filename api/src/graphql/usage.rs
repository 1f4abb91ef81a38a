//! `ingestUsage`: batches of up to 10,000 events, one outcome each.

use async_graphql::{Context, InputObject, Json, Object, SimpleObject};
use rust_decimal::Decimal;
use workflows::usage::{EventInput, MAX_BATCH, Outcome};

use super::auth::{require_org, roles, state};
use super::enums::UsageEventOutcome;
use super::error::{ApiError, ApiResult};
use super::scalars::{Dec, Instant};

/// Ingested usage events by outcome (accepted, duplicate, rejected).
pub const USAGE_EVENTS_TOTAL: &str = "valora_usage_events_total";

#[derive(InputObject)]
pub struct UsageEventInput {
    pub idempotency_key: String,
    pub customer_external_id: String,
    pub meter_code: String,
    #[graphql(default_with = "Some(Dec(Decimal::ONE))")]
    pub value: Option<Dec>,
    pub timestamp: Instant,
    pub properties: Option<Json<serde_json::Value>>,
}

#[derive(SimpleObject)]
pub struct UsageEventResult {
    pub index: i32,
    pub outcome: UsageEventOutcome,
    pub code: Option<String>,
    pub message: Option<String>,
}

#[derive(SimpleObject)]
pub struct IngestUsagePayload {
    pub accepted: i32,
    pub duplicates: i32,
    pub rejected: i32,
    pub results: Vec<UsageEventResult>,
}

/// Query complexity of one `ingestUsage` field, whatever its batch: at most
/// about a hundred such fields fit in one request. The events of all of them
/// together are limited apart, before validation ([`super::batch_limit`]),
/// so a field's cost is not computed from its (parsed) batch.
pub const INGEST_COST: usize = super::MAX_COMPLEXITY / 100;

#[derive(Default)]
pub struct UsageMutation;

#[Object]
impl UsageMutation {
    #[graphql(complexity = "INGEST_COST + child_complexity")]
    async fn ingest_usage(
        &self,
        ctx: &Context<'_>,
        events: Vec<UsageEventInput>,
    ) -> ApiResult<IngestUsagePayload> {
        let (caller, org) = require_org(ctx, roles::INGEST).await?;
        if events.len() > MAX_BATCH {
            return Err(ApiError::bad_input(format!(
                "a batch holds at most {MAX_BATCH} events, got {}",
                events.len()
            )));
        }
        let events = events
            .into_iter()
            .map(|e| EventInput {
                idempotency_key: e.idempotency_key,
                customer_external_id: e.customer_external_id,
                meter_code: e.meter_code,
                value: e.value.map_or(Decimal::ONE, |v| v.0),
                timestamp: e.timestamp.0,
                properties: e.properties.map(|p| p.0),
            })
            .collect();
        let st = state(ctx);
        let report =
            workflows::usage::ingest(&st.db, st.clock.as_ref(), &org, &caller.actor(), events)
                .await?;
        for (outcome, n) in [
            ("accepted", report.accepted),
            ("duplicate", report.duplicates),
            ("rejected", report.rejected),
        ] {
            metrics::counter!(USAGE_EVENTS_TOTAL, "outcome" => outcome).increment(n as u64);
        }
        let results = report
            .outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| {
                let index = index as i32;
                match outcome {
                    Outcome::Accepted => UsageEventResult {
                        index,
                        outcome: UsageEventOutcome::Accepted,
                        code: None,
                        message: None,
                    },
                    Outcome::Duplicate => UsageEventResult {
                        index,
                        outcome: UsageEventOutcome::Duplicate,
                        code: None,
                        message: None,
                    },
                    Outcome::Rejected { code, message } => UsageEventResult {
                        index,
                        outcome: UsageEventOutcome::Rejected,
                        code: Some(code.as_str().to_string()),
                        message: Some(message),
                    },
                }
            })
            .collect();
        Ok(IngestUsagePayload {
            accepted: report.accepted as i32,
            duplicates: report.duplicates as i32,
            rejected: report.rejected as i32,
            results,
        })
    }
}
