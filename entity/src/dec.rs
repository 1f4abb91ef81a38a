//! `Dec`: an exact decimal (unit prices, quantities, tier bounds, usage values)
//! stored as TEXT on every backend.
//!
//! Why TEXT: sea-orm decodes `Decimal` on SQLite through `f64`, which loses
//! digits (`12345678901234.5678` comes back as `12345678901234.57`). A string
//! column keeps every digit on SQLite and PostgreSQL alike. Money that has been
//! rounded to the currency is stored as `i64` minor units instead, not as `Dec`.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use rust_decimal::Decimal;
use sea_orm::DeriveValueType;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An exact decimal persisted as its normalized text (`1.50` is stored `1.5`).
///
/// Equality, ordering and hashing are numeric (`1.5 == 1.50`). Parsing is exact:
/// text with more digits than `Decimal` can hold is an error, never rounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, DeriveValueType)]
#[sea_orm(value_type = "String", column_type = "Text")]
pub struct Dec(pub Decimal);

impl Dec {
    /// Zero.
    pub const ZERO: Dec = Dec(Decimal::ZERO);
    /// One.
    pub const ONE: Dec = Dec(Decimal::ONE);

    /// Wraps a decimal.
    pub const fn new(value: Decimal) -> Self {
        Dec(value)
    }

    /// The wrapped decimal.
    pub const fn get(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.normalize(), f)
    }
}

impl FromStr for Dec {
    type Err = rust_decimal::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Decimal::from_str_exact(text).map(Dec)
    }
}

impl From<Decimal> for Dec {
    fn from(value: Decimal) -> Self {
        Dec(value)
    }
}

impl From<Dec> for Decimal {
    fn from(value: Dec) -> Self {
        value.0
    }
}

impl Deref for Dec {
    type Target = Decimal;

    fn deref(&self) -> &Decimal {
        &self.0
    }
}

impl Serialize for Dec {
    /// Serializes as the normalized decimal string, like the column.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dec {
    /// Accepts a decimal string (exact parse).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_normalized() {
        let d: Dec = "1.50".parse().unwrap();
        assert_eq!(d.to_string(), "1.5");
        assert_eq!("-0.000".parse::<Dec>().unwrap().to_string(), "0");
        assert_eq!("100".parse::<Dec>().unwrap().to_string(), "100");
        assert_eq!(
            "0.000000000001".parse::<Dec>().unwrap().to_string(),
            "0.000000000001"
        );
    }

    #[test]
    fn parse_is_exact() {
        let d: Dec = "12345678901234.5678".parse().unwrap();
        assert_eq!(d.to_string(), "12345678901234.5678");
        assert!("1.2.3".parse::<Dec>().is_err());
        assert!("abc".parse::<Dec>().is_err());
        // More digits than a Decimal holds: rejected, not rounded.
        assert!("0.12345678901234567890123456789012".parse::<Dec>().is_err());
    }

    #[test]
    fn equality_is_numeric() {
        assert_eq!(
            "1.5".parse::<Dec>().unwrap(),
            "1.500".parse::<Dec>().unwrap()
        );
    }

    #[test]
    fn serde_uses_strings() {
        let d: Dec = "-51.610".parse().unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"-51.61\"");
        let back: Dec = serde_json::from_str("\"-51.61\"").unwrap();
        assert_eq!(back, d);
    }
}
