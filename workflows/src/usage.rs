//! Usage ingestion in batches.
//!
//! The `usage_events` table itself is the append-only record of usage: each
//! accepted event is one row keyed by `(organization, idempotencyKey)`, so no
//! audit event is written per event (one `usage.ingested` audit event per
//! batch that accepted anything records who sent it).
//!
//! Batch I/O, all in one transaction, never one round trip per event:
//! customers and meters of the batch are loaded with `IN (…)` queries, then
//! the events that pass validation are inserted with one
//! `INSERT … ON CONFLICT (organization, key) DO NOTHING RETURNING key`. The
//! unique index decides what is new, so the common case (new keys) needs no
//! lookup of stored keys at all; stored payload hashes are read only for the
//! keys the insert skipped and for rejected events (a stored key answers
//! DUPLICATE or CONFLICT whatever else is wrong with a resent event). Two
//! concurrent batches carrying the same new key: the second waits for the
//! first and reports DUPLICATE (rows are inserted in key order, so two such
//! batches cannot deadlock); an event is never stored twice.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, SecondsFormat, SubsecRound, Utc};
use entity::{Aggregation, Dec, customer, meter, organization, usage_event};
use rust_decimal::Decimal;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, IntoActiveModel,
    QueryFilter, QuerySelect,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit::{self, AuditEntry, canonical_json, push_json_string};
use crate::clock::{Clock, org_now};
use crate::error::{WorkflowError, WorkflowResult};
use crate::ids::new_id;
use crate::json_rows;
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
///
/// The first part is the canonical JSON of the object `{customer, meter,
/// timestamp, value}`, written straight out in its sorted key order rather
/// than built as a map and sorted for every event (it is on the ingestion
/// path); a test holds it equal to [`canonical_json`] of that object.
pub fn payload_hash(
    customer_external_id: &str,
    meter_code: &str,
    value: Decimal,
    timestamp: DateTime<Utc>,
    properties: Option<&Value>,
) -> String {
    let mut text = String::with_capacity(192);
    text.push_str("{\"customer\":");
    push_json_string(customer_external_id, &mut text);
    text.push_str(",\"meter\":");
    push_json_string(meter_code, &mut text);
    text.push_str(",\"timestamp\":");
    push_json_string(
        &timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        &mut text,
    );
    text.push_str(",\"value\":");
    push_json_string(&value.normalize().to_string(), &mut text);
    text.push_str("}|");
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
    // Key → payload hash of an event accepted earlier in this batch.
    let mut known: HashMap<String, String> = HashMap::new();
    let mut hashes: Vec<String> = Vec::with_capacity(events.len());
    let mut keys: Vec<String> = Vec::with_capacity(events.len());

    let mut outcomes: Vec<Outcome> = Vec::with_capacity(events.len());
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
        let outcome = if let Some(earlier) = known.get(&event.idempotency_key) {
            resent(&event.idempotency_key, earlier, &hash)
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
                rows.push(usage_event::Model {
                    id: new_id(),
                    organization_id: org.id.clone(),
                    customer_id: customer_id.clone(),
                    meter_id: meter.id.clone(),
                    idempotency_key: event.idempotency_key.clone(),
                    value: Dec(value),
                    timestamp,
                    properties: event.properties.filter(|p| !p.is_null()),
                    payload_hash: hash.clone(),
                    created_at: now,
                });
            }
            Outcome::Accepted
        };
        outcomes.push(outcome);
        hashes.push(hash);
        keys.push(event.idempotency_key);
    }

    let inserted = insert_new(&txn, rows).await?;
    // Keys stored before this batch: those the insert skipped, and those of
    // rejected events (minus keys this batch itself just stored).
    let mut ask: Vec<&str> = Vec::new();
    for (key, outcome) in keys.iter().zip(&outcomes) {
        if *outcome != Outcome::Duplicate && !inserted.contains(key) {
            ask.push(key);
        }
    }
    let stored = stored_hashes(&txn, &org.id, ask).await?;

    let mut report = IngestReport::default();
    for ((key, outcome), hash) in keys.iter().zip(outcomes).zip(&hashes) {
        let outcome = match stored.get(key) {
            Some(stored) => resent(key, stored, hash),
            // Skipped by the insert, yet not there: a writer we cannot see.
            None if outcome == Outcome::Accepted && !inserted.contains(key) => {
                return Err(WorkflowError::conflict("concurrent update, retry"));
            }
            None => outcome,
        };
        match &outcome {
            Outcome::Accepted => report.accepted += 1,
            Outcome::Duplicate => report.duplicates += 1,
            Outcome::Rejected { .. } => report.rejected += 1,
        }
        report.outcomes.push(outcome);
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

/// The outcome of an event whose key was seen before (stored, or accepted
/// earlier in the batch) with payload hash `earlier`.
fn resent(key: &str, earlier: &str, hash: &str) -> Outcome {
    if earlier == hash {
        Outcome::Duplicate
    } else {
        Outcome::Rejected {
            code: RejectCode::Conflict,
            message: format!(
                "idempotencyKey {} was already used with a different payload",
                quoted(key)
            ),
        }
    }
}

/// Inserts the rows whose key is new to the organization; returns the keys
/// it stored. Rows go in key order, so concurrent batches sharing keys take
/// the unique index's locks in the same order and cannot deadlock. On
/// PostgreSQL the whole batch is one statement with the rows as one JSON
/// document ([`crate::json_rows`]); SQLite takes multi-row INSERTs of
/// [`INSERT_CHUNK`] rows.
async fn insert_new<C: ConnectionTrait>(
    db: &C,
    mut rows: Vec<usage_event::Model>,
) -> WorkflowResult<HashSet<String>> {
    const COLUMNS: json_rows::Columns = &[
        ("id", "text"),
        ("organization_id", "text"),
        ("customer_id", "text"),
        ("meter_id", "text"),
        ("idempotency_key", "text"),
        ("value", "text"),
        ("timestamp", "timestamptz"),
        ("properties", "json"),
        ("payload_hash", "text"),
        ("created_at", "timestamptz"),
    ];
    rows.sort_unstable_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    if db.get_database_backend() == DbBackend::Postgres {
        let sql = format!(
            "{} ON CONFLICT (organization_id, idempotency_key) DO NOTHING RETURNING idempotency_key",
            json_rows::insert_sql("usage_events", COLUMNS)
        );
        let stored = json_rows::insert(db, sql, &rows)
            .await?
            .iter()
            .map(|row| row.try_get::<String>("", "idempotency_key"))
            .collect::<Result<_, _>>()?;
        return Ok(stored);
    }
    let mut stored = HashSet::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(INSERT_CHUNK).collect();
        let mut key_by_id: HashMap<String, String> = chunk
            .iter()
            .map(|row| (row.id.clone(), row.idempotency_key.clone()))
            .collect();
        let ids = usage_event::Entity::insert_many(
            chunk.into_iter().map(IntoActiveModel::into_active_model),
        )
        .on_conflict(
            OnConflict::columns([
                usage_event::Column::OrganizationId,
                usage_event::Column::IdempotencyKey,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_with_returning_keys(db)
        .await?;
        stored.extend(ids.into_iter().filter_map(|id| key_by_id.remove(&id)));
    }
    Ok(stored)
}

/// Payload hashes stored under `keys` in `org`.
async fn stored_hashes<C: ConnectionTrait>(
    db: &C,
    org: &str,
    mut keys: Vec<&str>,
) -> WorkflowResult<HashMap<String, String>> {
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut stored = HashMap::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let found: Vec<(String, String)> = usage_event::Entity::find()
            .select_only()
            .column(usage_event::Column::IdempotencyKey)
            .column(usage_event::Column::PayloadHash)
            .filter(usage_event::Column::OrganizationId.eq(org))
            .filter(usage_event::Column::IdempotencyKey.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        stored.extend(found);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The hash as first defined: the canonical JSON of a built object.
    fn payload_hash_from_object(
        customer: &str,
        meter: &str,
        value: Decimal,
        timestamp: DateTime<Utc>,
        properties: Option<&Value>,
    ) -> String {
        let mut text = String::new();
        canonical_json(
            &json!({
                "customer": customer,
                "meter": meter,
                "value": value.normalize().to_string(),
                "timestamp": timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            }),
            &mut text,
        );
        text.push('|');
        canonical_json(properties.unwrap_or(&Value::Null), &mut text);
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    proptest::proptest! {
        /// Stored hashes stay valid: the direct form equals the object form
        /// for any text (quotes, backslashes, control characters, non-ASCII),
        /// value and instant.
        #[test]
        fn payload_hash_equals_the_canonical_object_form(
            customer in "\\PC{0,24}|[\"\\\\\u{0}-\u{1f}a\u{e9}\u{1f600}]{0,8}",
            meter in "\\PC{0,16}",
            units in proptest::num::i64::ANY,
            scale in 0_u32..12,
            micros in 0_i64..4_102_444_800_000_000,
            property in proptest::option::of("\\PC{0,12}"),
        ) {
            let value = Decimal::new(units, scale);
            let timestamp = DateTime::from_timestamp_micros(micros).unwrap_or_default();
            let properties = property.map(|p| json!({"p": p, "n": 1}));
            proptest::prop_assert_eq!(
                payload_hash(&customer, &meter, value, timestamp, properties.as_ref()),
                payload_hash_from_object(&customer, &meter, value, timestamp, properties.as_ref())
            );
        }
    }

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
