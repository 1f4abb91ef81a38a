//! Usage ingestion in batches.
//!
//! The `usage_events` table itself is the append-only record of usage: each
//! accepted event is one row keyed by `(organization, idempotencyKey)`, so no
//! audit event is written per event (one `usage.ingested` audit event per
//! batch that accepted anything records who sent it).
//!
//! Batch I/O: customers, meters and existing keys of the whole batch are
//! loaded with `IN (…)` queries, and accepted events are inserted with
//! multi-row inserts in chunks, all in one transaction — never one round trip
//! per event. Two concurrent batches carrying the same new key: the second to
//! commit fails on the unique index as a whole (CONFLICT, retry), so an event
//! is never stored twice.

use std::collections::HashMap;

use chrono::{DateTime, Duration, SecondsFormat, SubsecRound, Utc};
use entity::{Aggregation, Dec, customer, meter, organization, usage_event};
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit::{self, AuditEntry, canonical_json};
use crate::clock::{Clock, org_now};
use crate::error::{WorkflowError, WorkflowResult};
use crate::ids::new_id;
use crate::text::quoted;

/// Most events in one batch.
pub const MAX_BATCH: usize = 10_000;
/// How far ahead of the organization's now an event may be.
pub const MAX_FUTURE: Duration = Duration::minutes(5);
const INSERT_CHUNK: usize = 500;
const LOOKUP_CHUNK: usize = 1000;

/// One event as sent.
#[derive(Clone, Debug)]
pub struct EventInput {
    pub idempotency_key: String,
    pub customer_external_id: String,
    pub meter_code: String,
    pub value: Decimal,
    pub timestamp: DateTime<Utc>,
    pub properties: Option<Value>,
}

/// Why an event was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectCode {
    Conflict,
    UnknownCustomer,
    UnknownMeter,
    OutOfWindow,
    InvalidValue,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Conflict => "CONFLICT",
            RejectCode::UnknownCustomer => "UNKNOWN_CUSTOMER",
            RejectCode::UnknownMeter => "UNKNOWN_METER",
            RejectCode::OutOfWindow => "OUT_OF_WINDOW",
            RejectCode::InvalidValue => "INVALID_VALUE",
        }
    }
}

/// What happened to one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Rejected { code: RejectCode, message: String },
}

/// Per-event outcomes, in input order.
#[derive(Clone, Debug, Default)]
pub struct IngestReport {
    pub outcomes: Vec<Outcome>,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
}

/// SHA-256 of an event's canonical form: customer, meter, normalized value,
/// timestamp (RFC 3339 UTC), properties with sorted keys.
pub fn payload_hash(
    customer_external_id: &str,
    meter_code: &str,
    value: Decimal,
    timestamp: DateTime<Utc>,
    properties: Option<&Value>,
) -> String {
    let mut text = String::new();
    canonical_json(
        &json!({
            "customer": customer_external_id,
            "meter": meter_code,
            "value": value.normalize().to_string(),
            "timestamp": timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }),
        &mut text,
    );
    text.push('|');
    canonical_json(properties.unwrap_or(&Value::Null), &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Ingests a batch: every event gets an outcome; accepted ones land in one
/// transaction, rejected ones write nothing.
pub async fn ingest(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    org: &organization::Model,
    actor: &str,
    events: Vec<EventInput>,
) -> WorkflowResult<IngestReport> {
    if events.len() > MAX_BATCH {
        return Err(WorkflowError::bad_input(format!(
            "a batch holds at most {MAX_BATCH} events, got {}",
            events.len()
        )));
    }
    let now = org_now(org, clock);
    let oldest = now - Duration::days(i64::from(org.late_usage_window_days));
    let newest = now + MAX_FUTURE;

    let txn = crate::txn::begin_write(db).await?;
    let mut customer_codes: Vec<String> = events
        .iter()
        .map(|e| e.customer_external_id.clone())
        .collect();
    customer_codes.sort();
    customer_codes.dedup();
    let mut customers: HashMap<String, String> = HashMap::new();
    for chunk in customer_codes.chunks(LOOKUP_CHUNK) {
        for c in customer::Entity::find()
            .filter(customer::Column::OrganizationId.eq(&org.id))
            .filter(customer::Column::ExternalId.is_in(chunk.iter().cloned()))
            .all(&txn)
            .await?
        {
            customers.insert(c.external_id, c.id);
        }
    }
    let meters: HashMap<String, meter::Model> = meter::Entity::find()
        .filter(meter::Column::OrganizationId.eq(&org.id))
        .all(&txn)
        .await?
        .into_iter()
        .map(|m| (m.code.clone(), m))
        .collect();
    let mut keys: Vec<String> = events.iter().map(|e| e.idempotency_key.clone()).collect();
    keys.sort();
    keys.dedup();
    // Key → payload hash of what is stored (or accepted earlier in this batch).
    let mut known: HashMap<String, String> = HashMap::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        for e in usage_event::Entity::find()
            .filter(usage_event::Column::OrganizationId.eq(&org.id))
            .filter(usage_event::Column::IdempotencyKey.is_in(chunk.iter().cloned()))
            .all(&txn)
            .await?
        {
            known.insert(e.idempotency_key, e.payload_hash);
        }
    }

    let mut report = IngestReport::default();
    let mut rows = Vec::new();
    for event in events {
        let meter = meters.get(&event.meter_code);
        // Both backends keep microseconds: hash and store the same instant.
        let timestamp = event.timestamp.trunc_subsecs(6);
        let value = match meter {
            Some(m) if m.aggregation == Aggregation::Count => Decimal::ONE,
            _ => event.value,
        };
        let hash = payload_hash(
            &event.customer_external_id,
            &event.meter_code,
            value,
            timestamp,
            event.properties.as_ref(),
        );
        let reject = |code: RejectCode, message: String| Outcome::Rejected { code, message };
        let outcome = if let Some(stored) = known.get(&event.idempotency_key) {
            if *stored == hash {
                Outcome::Duplicate
            } else {
                reject(
                    RejectCode::Conflict,
                    format!(
                        "idempotencyKey {} was already used with a different payload",
                        quoted(&event.idempotency_key)
                    ),
                )
            }
        } else if event.idempotency_key.is_empty() || event.idempotency_key.len() > 255 {
            reject(
                RejectCode::InvalidValue,
                "idempotencyKey must be 1 to 255 characters".into(),
            )
        } else if let (None, _) | (_, None) = (customers.get(&event.customer_external_id), meter) {
            if customers.contains_key(&event.customer_external_id) {
                reject(
                    RejectCode::UnknownMeter,
                    format!("no meter with code {}", quoted(&event.meter_code)),
                )
            } else {
                reject(
                    RejectCode::UnknownCustomer,
                    format!(
                        "no customer with externalId {}",
                        quoted(&event.customer_external_id)
                    ),
                )
            }
        } else if value.is_sign_negative() && !value.is_zero() {
            reject(
                RejectCode::InvalidValue,
                format!("value {value} must not be negative"),
            )
        } else if event
            .properties
            .as_ref()
            .is_some_and(|p| !p.is_object() && !p.is_null())
        {
            reject(
                RejectCode::InvalidValue,
                "properties must be a JSON object".into(),
            )
        } else if let Some(property) = meter
            .filter(|m| m.aggregation == Aggregation::UniqueCount)
            .and_then(|m| m.unique_property.as_deref())
            .filter(|p| {
                event
                    .properties
                    .as_ref()
                    .and_then(|props| props.get(*p))
                    .is_none_or(Value::is_null)
            })
        {
            reject(
                RejectCode::InvalidValue,
                format!(
                    "properties.{property} is required by meter {}",
                    event.meter_code
                ),
            )
        } else if timestamp > newest {
            reject(
                RejectCode::OutOfWindow,
                format!("timestamp {timestamp} is more than 5 minutes after now ({now})"),
            )
        } else if timestamp < oldest {
            reject(
                RejectCode::OutOfWindow,
                format!(
                    "timestamp {timestamp} is older than the late-usage window of {} days",
                    org.late_usage_window_days
                ),
            )
        } else {
            known.insert(event.idempotency_key.clone(), hash.clone());
            if let (Some(customer_id), Some(meter)) =
                (customers.get(&event.customer_external_id), meter)
            {
                rows.push(usage_event::ActiveModel {
                    id: Set(new_id()),
                    organization_id: Set(org.id.clone()),
                    customer_id: Set(customer_id.clone()),
                    meter_id: Set(meter.id.clone()),
                    idempotency_key: Set(event.idempotency_key),
                    value: Set(Dec(value)),
                    timestamp: Set(timestamp),
                    properties: Set(event.properties.filter(|p| !p.is_null())),
                    payload_hash: Set(hash),
                    created_at: Set(now),
                });
            }
            Outcome::Accepted
        };
        match &outcome {
            Outcome::Accepted => report.accepted += 1,
            Outcome::Duplicate => report.duplicates += 1,
            Outcome::Rejected { .. } => report.rejected += 1,
        }
        report.outcomes.push(outcome);
    }
    let mut chunks = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        chunks.push(rows.by_ref().take(INSERT_CHUNK).collect::<Vec<_>>());
    }
    for chunk in chunks {
        usage_event::Entity::insert_many(chunk)
            .exec_without_returning(&txn)
            .await?;
    }
    if report.accepted > 0 {
        audit::append(
            &txn,
            &org.id,
            actor,
            AuditEntry {
                action: "usage.ingested",
                entity_type: "usage_batch",
                entity_id: &new_id(),
                before: None,
                after: Some(json!({
                    "accepted": report.accepted,
                    "duplicates": report.duplicates,
                    "rejected": report.rejected,
                })),
            },
            now,
        )
        .await?;
    }
    txn.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn payload_hash_ignores_key_order_and_trailing_zeros() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let a = payload_hash(
            "c",
            "m",
            "1.50".parse().unwrap(),
            t,
            Some(&json!({"a":1,"b":2})),
        );
        let b = payload_hash(
            "c",
            "m",
            "1.5".parse().unwrap(),
            t,
            Some(&json!({"b":2,"a":1})),
        );
        assert_eq!(a, b);
        let c = payload_hash(
            "c",
            "m",
            "1.6".parse().unwrap(),
            t,
            Some(&json!({"b":2,"a":1})),
        );
        assert_ne!(a, c);
    }
}
