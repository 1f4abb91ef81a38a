//! Scalars of the contract: `Decimal` (exact, a string both ways), and
//! `DateTime` (RFC 3339, answered in UTC with `Z`). `JSON` is async-graphql's
//! `Json<serde_json::Value>`.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use workflows::text::quoted;

/// An exact decimal. Input must be a string of digits with an optional sign
/// and decimal point ("0.0004", "-51.61"): numbers, exponents, NaN,
/// Infinity and more than 28 significant digits are refused, never rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dec(pub Decimal);

/// Parses the text of a `Decimal` exactly.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let well_formed = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|c| *c == '.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit());
    if !well_formed {
        return Err(format!(
            "{} is not a decimal: use digits with an optional '-' and '.', e.g. \"12.50\"",
            quoted(text)
        ));
    }
    Decimal::from_str_exact(text).map_err(|_| {
        format!(
            "{} does not fit an exact decimal (at most 28 significant digits)",
            quoted(text)
        )
    })
}

#[Scalar(name = "Decimal")]
impl ScalarType for Dec {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => parse_decimal(text)
                .map(Dec)
                .map_err(InputValueError::custom),
            _ => Err(InputValueError::custom(
                "a Decimal is a string, e.g. \"12.50\", never a number",
            )),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.normalize().to_string())
    }
}

impl From<Decimal> for Dec {
    fn from(value: Decimal) -> Self {
        Dec(value)
    }
}

/// An instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instant(pub DateTime<Utc>);

#[Scalar(name = "DateTime")]
impl ScalarType for Instant {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => DateTime::parse_from_rfc3339(text)
                .map(|t| Instant(t.with_timezone(&Utc)))
                .map_err(|_| {
                    InputValueError::custom(format!(
                        "{} is not an RFC 3339 instant, e.g. \"2026-01-16T00:00:00Z\"",
                        quoted(text)
                    ))
                }),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl From<DateTime<Utc>> for Instant {
    fn from(value: DateTime<Utc>) -> Self {
        Instant(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_strings() {
        assert_eq!(parse_decimal("0.0004").unwrap().to_string(), "0.0004");
        assert_eq!(parse_decimal("-51.61").unwrap().to_string(), "-51.61");
        for bad in [
            "1e5", "NaN", "Infinity", "abc", "", "-", ".", "1.2.3", "+1", " 1",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad}");
        }
        assert!(parse_decimal("1234567890123456789012345678901").is_err());
        assert!(Dec::parse(Value::Number(5.into())).is_err());
    }

    #[test]
    fn messages_quote_at_most_forty_characters() {
        let huge = "9".repeat(1 << 20);
        let message = parse_decimal(&huge).unwrap_err();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("1048576 bytes"), "{message}");
    }
}
