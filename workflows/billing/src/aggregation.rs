//! Usage aggregation: turning a meter's events in a window into one quantity.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::period::Period;

/// How a meter folds its events into a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Aggregation {
    /// Number of events (values are ignored).
    Count,
    /// Sum of values.
    Sum,
    /// Largest value.
    Max,
    /// Value of the latest event by timestamp; ties go to the greatest
    /// idempotency key, so the result never depends on input order.
    Last,
    /// Number of distinct values of `properties[uniqueProperty]`.
    UniqueCount,
}

/// A meter of the catalog, as the aggregation needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meter {
    pub code: String,
    pub aggregation: Aggregation,
    #[serde(default)]
    pub unique_property: Option<String>,
}

/// One accepted usage event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageEvent {
    pub idempotency_key: String,
    pub timestamp: DateTime<Utc>,
    pub value: Decimal,
    #[serde(default)]
    pub properties: Value,
}

/// Why events could not be aggregated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AggregationError {
    #[error("UNIQUE_COUNT needs a uniqueProperty")]
    MissingUniqueProperty,
    #[error("arithmetic overflow aggregating usage ({0})")]
    Overflow(&'static str),
}

impl Meter {
    /// Aggregates `events` over `window` with this meter's rule.
    pub fn aggregate(
        &self,
        events: &[UsageEvent],
        window: Period,
    ) -> Result<Decimal, AggregationError> {
        aggregate(
            events,
            self.aggregation,
            self.unique_property.as_deref(),
            window,
        )
    }
}

/// Aggregates the events whose timestamp lies in `[window.start, window.end)`.
/// No event in the window gives 0 for every aggregation.
pub fn aggregate(
    events: &[UsageEvent],
    aggregation: Aggregation,
    unique_property: Option<&str>,
    window: Period,
) -> Result<Decimal, AggregationError> {
    let mut in_window = events
        .iter()
        .filter(|event| window.contains(event.timestamp));
    match aggregation {
        Aggregation::Count => Ok(Decimal::from(in_window.count())),
        Aggregation::Sum => in_window
            .try_fold(Decimal::ZERO, |sum, event| sum.checked_add(event.value))
            .ok_or(AggregationError::Overflow("SUM")),
        Aggregation::Max => Ok(in_window.map(|event| event.value).max().unwrap_or_default()),
        Aggregation::Last => Ok(in_window
            .max_by(|a, b| {
                (a.timestamp, &a.idempotency_key).cmp(&(b.timestamp, &b.idempotency_key))
            })
            .map(|event| event.value)
            .unwrap_or_default()),
        Aggregation::UniqueCount => {
            let property = unique_property.ok_or(AggregationError::MissingUniqueProperty)?;
            let distinct: BTreeSet<String> = in_window
                .filter_map(|event| event.properties.get(property))
                // A JSON null is "no value", the same as a missing property.
                .filter(|value| !value.is_null())
                .map(canonical_json)
                .collect();
            Ok(Decimal::from(distinct.len()))
        }
    }
}

/// A canonical text form of a JSON value, so equal values compare equal:
/// object keys sorted, numbers compared by decimal value (`1`, `1.0` and
/// `1e0` are the same), strings escaped by serde_json. Type tags keep `"1"`
/// and `1` apart.
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => {
            let text = number.to_string();
            // Decimal parsing normalizes equal numbers to one spelling;
            // numbers outside Decimal's range keep serde_json's spelling.
            let normalized = text
                .parse::<Decimal>()
                .or_else(|_| Decimal::from_scientific(&text))
                .map(|decimal| decimal.normalize().to_string())
                .unwrap_or(text);
            out.push('n');
            out.push_str(&normalized);
        }
        Value::String(text) => out.push_str(&Value::String(text.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rust_decimal_macros::dec;
    use serde_json::json;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, hour, 0, 0)
            .single()
            .expect("valid")
    }

    fn event(key: &str, timestamp: DateTime<Utc>, value: Decimal, properties: Value) -> UsageEvent {
        UsageEvent {
            idempotency_key: key.into(),
            timestamp,
            value,
            properties,
        }
    }

    fn january() -> Period {
        Period::new(
            at(1, 0),
            Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0)
                .single()
                .expect("valid"),
        )
    }

    #[test]
    fn window_is_half_open_and_empty_is_zero() {
        let events = vec![
            event("a", at(1, 0), dec!(2), Value::Null),
            event("b", january().end, dec!(5), Value::Null),
            event("c", at(31, 23), dec!(3), Value::Null),
        ];
        assert_eq!(
            aggregate(&events, Aggregation::Count, None, january()),
            Ok(dec!(2))
        );
        assert_eq!(
            aggregate(&events, Aggregation::Sum, None, january()),
            Ok(dec!(5))
        );
        assert_eq!(
            aggregate(&events, Aggregation::Max, None, january()),
            Ok(dec!(3))
        );
        for aggregation in [
            Aggregation::Count,
            Aggregation::Sum,
            Aggregation::Max,
            Aggregation::Last,
        ] {
            assert_eq!(aggregate(&[], aggregation, None, january()), Ok(dec!(0)));
        }
        assert_eq!(
            aggregate(&[], Aggregation::UniqueCount, Some("user"), january()),
            Ok(dec!(0))
        );
    }

    #[test]
    fn last_breaks_timestamp_ties_by_greatest_key() {
        let events = vec![
            event("k-2", at(10, 12), dec!(20), Value::Null),
            event("k-9", at(10, 12), dec!(90), Value::Null),
            event("k-5", at(10, 12), dec!(50), Value::Null),
            event("k-1", at(9, 12), dec!(10), Value::Null),
        ];
        assert_eq!(
            aggregate(&events, Aggregation::Last, None, january()),
            Ok(dec!(90))
        );
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(
            aggregate(&reversed, Aggregation::Last, None, january()),
            Ok(dec!(90))
        );
        // A later timestamp beats any key.
        let mut later = events;
        later.push(event("a", at(11, 0), dec!(1), Value::Null));
        assert_eq!(
            aggregate(&later, Aggregation::Last, None, january()),
            Ok(dec!(1))
        );
    }

    #[test]
    fn unique_count_compares_json_canonically() {
        let events = vec![
            event("1", at(2, 0), dec!(1), json!({"user": "alice"})),
            event("2", at(3, 0), dec!(1), json!({"user": "alice"})),
            event("3", at(4, 0), dec!(1), json!({"user": "bob"})),
            event("4", at(5, 0), dec!(1), json!({"user": 1})),
            event("5", at(5, 0), dec!(1), json!({"user": 1.0})),
            event("6", at(5, 0), dec!(1), json!({"user": "1"})),
            event("7", at(6, 0), dec!(1), json!({"user": {"a": 1, "b": 2}})),
            event("8", at(6, 0), dec!(1), json!({"user": {"b": 2, "a": 1}})),
            event("9", at(7, 0), dec!(1), json!({"other": "carol"})),
            event("10", at(7, 0), dec!(1), json!({"user": null})),
            event("11", at(7, 0), dec!(1), Value::Null),
        ];
        // alice, bob, 1, "1", {a:1,b:2}
        assert_eq!(
            aggregate(&events, Aggregation::UniqueCount, Some("user"), january()),
            Ok(dec!(5))
        );
        assert_eq!(
            aggregate(&events, Aggregation::UniqueCount, None, january()),
            Err(AggregationError::MissingUniqueProperty)
        );
    }

    #[test]
    fn sum_overflow_is_an_error() {
        let events = vec![
            event("a", at(2, 0), Decimal::MAX, Value::Null),
            event("b", at(3, 0), Decimal::MAX, Value::Null),
        ];
        assert_eq!(
            aggregate(&events, Aggregation::Sum, None, january()),
            Err(AggregationError::Overflow("SUM"))
        );
    }
}
