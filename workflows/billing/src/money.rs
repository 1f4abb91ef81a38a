//! Money: ISO 4217 currencies and the one rounding rule.
//!
//! Amounts are `rust_decimal::Decimal` everywhere. Unit prices may carry more
//! precision than the currency; only an invoice line amount is rounded, once,
//! by [`Currency::round`], half away from zero (symmetric for credits).

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A checked decimal operation went out of `Decimal`'s range (about 7.9e28).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("arithmetic overflow while computing {0}")]
pub struct Overflow(pub &'static str);

/// Errors about currencies and minor units.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoneyError {
    #[error("unknown ISO 4217 currency code {0:?}")]
    UnknownCurrency(String),
    #[error("currency {0} has no minor unit in ISO 4217 and cannot be billed")]
    NoMinorUnit(String),
    #[error("amount {amount} is not a whole number of {currency} minor units")]
    NotWholeMinorUnits { amount: Decimal, currency: String },
    #[error("amount {amount} {currency} does not fit in 64-bit minor units")]
    MinorUnitsOutOfRange { amount: Decimal, currency: String },
}

/// An ISO 4217 currency with its minor-unit exponent (USD 2, JPY 0, KWD 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

impl Currency {
    /// Looks the code up in the ISO 4217 table (case-sensitive, e.g. "USD").
    /// Codes without a minor unit (XAU, XXX, ...) are refused: they cannot
    /// carry invoice amounts.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        let iso = iso_currency::Currency::from_code(code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))?;
        let exponent = iso
            .exponent()
            .ok_or_else(|| MoneyError::NoMinorUnit(code.to_string()))?;
        Ok(Currency {
            code: iso.code(),
            exponent: u32::from(exponent),
        })
    }

    /// The three-letter ISO code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Number of decimal places of the minor unit.
    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    /// The one rounding rule of the crate: to the minor unit, half away from
    /// zero. `round(-x) == -round(x)`, so credits mirror charges exactly.
    pub fn round(&self, amount: Decimal) -> Decimal {
        amount.round_dp_with_strategy(self.exponent, RoundingStrategy::MidpointAwayFromZero)
    }

    /// Exact conversion to integer minor units (cents); fails if `amount`
    /// has more precision than the currency or does not fit in an `i64`.
    pub fn to_minor_units(&self, amount: Decimal) -> Result<i64, MoneyError> {
        if self.round(amount) != amount {
            return Err(MoneyError::NotWholeMinorUnits {
                amount,
                currency: self.code.to_string(),
            });
        }
        let out_of_range = || MoneyError::MinorUnitsOutOfRange {
            amount,
            currency: self.code.to_string(),
        };
        // ISO exponents are at most 4, so the factor always fits.
        let factor = 10_i64
            .checked_pow(self.exponent)
            .map(Decimal::from)
            .ok_or_else(out_of_range)?;
        let minor = amount.checked_mul(factor).ok_or_else(out_of_range)?;
        i64::try_from(minor).map_err(|_| out_of_range())
    }

    /// Exact conversion from integer minor units.
    pub fn from_minor_units(&self, minor: i64) -> Decimal {
        Decimal::new(minor, self.exponent)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({}, exponent {})", self.code, self.exponent)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD")
    }

    #[test]
    fn exponents_come_from_iso_data() {
        assert_eq!(usd().exponent(), 2);
        assert_eq!(Currency::parse("JPY").expect("JPY").exponent(), 0);
        assert_eq!(Currency::parse("KWD").expect("KWD").exponent(), 3);
        assert_eq!(Currency::parse("EUR").expect("EUR").code(), "EUR");
    }

    #[test]
    fn unknown_and_unitless_codes_are_refused() {
        assert_eq!(
            Currency::parse("ABC"),
            Err(MoneyError::UnknownCurrency("ABC".into()))
        );
        assert_eq!(
            Currency::parse("XAU"),
            Err(MoneyError::NoMinorUnit("XAU".into()))
        );
        assert_eq!(
            Currency::parse("ABC").unwrap_err().to_string(),
            "unknown ISO 4217 currency code \"ABC\""
        );
    }

    #[test]
    fn rounds_half_away_from_zero_symmetrically() {
        let usd = usd();
        assert_eq!(usd.round(dec!(0.005)), dec!(0.01));
        assert_eq!(usd.round(dec!(-0.005)), dec!(-0.01));
        assert_eq!(usd.round(dec!(0.0049999)), dec!(0.00));
        assert_eq!(usd.round(dec!(2.675)), dec!(2.68));
        assert_eq!(usd.round(dec!(-2.675)), dec!(-2.68));
        assert_eq!(usd.round(dec!(51.6129)), dec!(51.61));
        let jpy = Currency::parse("JPY").expect("JPY");
        assert_eq!(jpy.round(dec!(0.5)), dec!(1));
        assert_eq!(jpy.round(dec!(-0.5)), dec!(-1));
        assert_eq!(jpy.round(dec!(1.49)), dec!(1));
        let kwd = Currency::parse("KWD").expect("KWD");
        assert_eq!(kwd.round(dec!(0.0005)), dec!(0.001));
        assert_eq!(kwd.round(dec!(-1.2345)), dec!(-1.235));
    }

    #[test]
    fn minor_units_are_exact() {
        let usd = usd();
        assert_eq!(usd.to_minor_units(dec!(51.61)), Ok(5161));
        assert_eq!(usd.to_minor_units(dec!(-0.01)), Ok(-1));
        assert_eq!(usd.to_minor_units(dec!(3)), Ok(300));
        assert_eq!(usd.from_minor_units(-5161), dec!(-51.61));
        assert!(matches!(
            usd.to_minor_units(dec!(0.001)),
            Err(MoneyError::NotWholeMinorUnits { .. })
        ));
        assert!(matches!(
            usd.to_minor_units(dec!(1e25)),
            Err(MoneyError::MinorUnitsOutOfRange { .. })
        ));
        let kwd = Currency::parse("KWD").expect("KWD");
        assert_eq!(kwd.to_minor_units(dec!(1.235)), Ok(1235));
        assert_eq!(kwd.from_minor_units(1235), dec!(1.235));
    }

    #[test]
    fn serializes_as_code() {
        let json = serde_json::to_string(&usd()).expect("serialize");
        assert_eq!(json, "\"USD\"");
        let back: Currency = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, usd());
        assert!(serde_json::from_str::<Currency>("\"NOPE\"").is_err());
    }
}
