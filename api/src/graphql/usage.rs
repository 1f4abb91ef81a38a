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

/// Query complexity of one `ingestUsage` field: a full batch costs most of
/// [`super::MAX_COMPLEXITY`], so aliases (`a: ingestUsage(events: $e)
/// b: ingestUsage(events: $e) …`) cannot multiply the batch limit: one
/// request carries about [`MAX_BATCH`] events in all, however it is written.
pub fn ingest_cost(events: usize, child_complexity: usize) -> usize {
    let share = super::MAX_COMPLEXITY - 100;
    events.saturating_mul(share) / MAX_BATCH + child_complexity + 1
}

#[derive(Default)]
pub struct UsageMutation;

#[Object]
impl UsageMutation {
    #[graphql(complexity = "ingest_cost(events.len(), child_complexity)")]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_fits_the_complexity_limit_once() {
        let full = ingest_cost(MAX_BATCH, 8);
        assert!(full <= super::super::MAX_COMPLEXITY, "{full}");
        assert!(2 * ingest_cost(MAX_BATCH / 2 + 100, 1) > super::super::MAX_COMPLEXITY);
        assert_eq!(ingest_cost(0, 3), 4);
    }
}
