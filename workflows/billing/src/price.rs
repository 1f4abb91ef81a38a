//! Prices: the five price models and what a quantity costs under each.
//!
//! [`Price::amount_for`] returns the *unrounded* amount; rounding happens only
//! when the amount becomes an invoice line (see [`crate::Currency::round`]).

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a price turns a quantity into an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PriceModel {
    /// `unitAmount` × subscription quantity (seats), once per period.
    Flat,
    /// Metered: `unitAmount` × aggregated usage.
    PerUnit,
    /// Metered: each unit priced by the tier it falls in.
    Graduated,
    /// Metered: all units priced at the tier the total falls in.
    Volume,
    /// Metered: `unitAmount` per started package of `packageSize` units.
    Package,
}

impl PriceModel {
    /// The GraphQL / SPEC spelling, used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceModel::Flat => "FLAT",
            PriceModel::PerUnit => "PER_UNIT",
            PriceModel::Graduated => "GRADUATED",
            PriceModel::Volume => "VOLUME",
            PriceModel::Package => "PACKAGE",
        }
    }

    /// Everything but FLAT is priced from a meter's aggregated usage.
    pub fn is_metered(self) -> bool {
        self != PriceModel::Flat
    }

    fn is_tiered(self) -> bool {
        matches!(self, PriceModel::Graduated | PriceModel::Volume)
    }
}

impl fmt::Display for PriceModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a fee is invoiced relative to the period it pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingTiming {
    /// At the start of the period (the default for FLAT).
    InAdvance,
    /// At the end of the period (always the case for metered prices).
    InArrears,
}

/// One tier of a GRADUATED or VOLUME price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tier {
    /// Inclusive upper bound; `None` means unbounded (only the last tier).
    pub up_to: Option<Decimal>,
    pub unit_amount: Decimal,
    #[serde(default)]
    pub flat_amount: Decimal,
}

/// A price of a plan version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    pub id: String,
    pub model: PriceModel,
    pub timing: BillingTiming,
    #[serde(default)]
    pub meter_code: Option<String>,
    #[serde(default)]
    pub unit_amount: Option<Decimal>,
    #[serde(default)]
    pub package_size: Option<Decimal>,
    #[serde(default)]
    pub tiers: Vec<Tier>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Why a price is invalid or could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PriceError {
    #[error("price {price_id}: a {model} price needs a unitAmount")]
    MissingUnitAmount { price_id: String, model: PriceModel },
    #[error("price {price_id}: a {model} price must not have {field}")]
    UnexpectedField {
        price_id: String,
        model: PriceModel,
        field: &'static str,
    },
    #[error(
        "price {price_id}: a FLAT price is not metered and must not name a meter (got {meter_code:?})"
    )]
    FlatWithMeter {
        price_id: String,
        meter_code: String,
    },
    #[error("price {price_id}: a {model} price is metered and needs a meterCode")]
    MissingMeter { price_id: String, model: PriceModel },
    #[error(
        "price {price_id}: a {model} price is metered and always billed IN_ARREARS, not IN_ADVANCE"
    )]
    MeteredInAdvance { price_id: String, model: PriceModel },
    #[error("price {price_id}: a PACKAGE price needs a packageSize")]
    MissingPackageSize { price_id: String },
    #[error("price {price_id}: packageSize {package_size} must be greater than 0")]
    NonPositivePackageSize {
        price_id: String,
        package_size: Decimal,
    },
    #[error("price {price_id}: a {model} price needs at least one tier")]
    NoTiers { price_id: String, model: PriceModel },
    #[error("price {price_id}: tier 1: upTo {up_to} must be greater than 0")]
    NonPositiveFirstUpTo { price_id: String, up_to: Decimal },
    #[error(
        "price {price_id}: tier {tier}: upTo {up_to} must be greater than the previous tier's upTo {previous}"
    )]
    TiersNotAscending {
        price_id: String,
        tier: usize,
        up_to: Decimal,
        previous: Decimal,
    },
    #[error("price {price_id}: tier {tier}: only the last tier may be unbounded (upTo null)")]
    UnboundedTierNotLast { price_id: String, tier: usize },
    #[error(
        "price {price_id}: tier {tier}: the last tier must be unbounded (upTo null), got upTo {up_to}"
    )]
    LastTierBounded {
        price_id: String,
        tier: usize,
        up_to: Decimal,
    },
    #[error("price {price_id}: {field} {amount} must not be negative")]
    NegativeAmount {
        price_id: String,
        field: String,
        amount: Decimal,
    },
    #[error("price {price_id}: arithmetic overflow pricing quantity {quantity}")]
    Overflow { price_id: String, quantity: Decimal },
}

impl Price {
    /// Is this price priced from a meter (everything but FLAT)?
    pub fn is_metered(&self) -> bool {
        self.model.is_metered()
    }

    /// The label invoice lines use: the description, else the price id.
    pub fn label(&self) -> &str {
        self.description.as_deref().unwrap_or(&self.id)
    }

    /// Checks the price is well-formed for its model.
    ///
    /// Metered prices (PER_UNIT, GRADUATED, VOLUME, PACKAGE) must be
    /// IN_ARREARS: usage is only known once the period is over, so asking
    /// for IN_ADVANCE is an error rather than being silently changed.
    /// Fields that a model does not use are refused rather than ignored, so
    /// a catalog never stores a price that looks different from what it bills.
    pub fn validate(&self) -> Result<(), PriceError> {
        let id = || self.id.clone();
        let model = self.model;
        let unexpected = |field| PriceError::UnexpectedField {
            price_id: id(),
            model,
            field,
        };

        if model.is_metered() {
            if self.meter_code.is_none() {
                return Err(PriceError::MissingMeter {
                    price_id: id(),
                    model,
                });
            }
            if self.timing == BillingTiming::InAdvance {
                return Err(PriceError::MeteredInAdvance {
                    price_id: id(),
                    model,
                });
            }
        } else if let Some(meter_code) = &self.meter_code {
            return Err(PriceError::FlatWithMeter {
                price_id: id(),
                meter_code: meter_code.clone(),
            });
        }

        if model.is_tiered() {
            if self.unit_amount.is_some() {
                return Err(unexpected("a unitAmount (tiers carry the amounts)"));
            }
        } else {
            let unit = self
                .unit_amount
                .ok_or_else(|| PriceError::MissingUnitAmount {
                    price_id: id(),
                    model,
                })?;
            self.non_negative("unitAmount", unit)?;
            if !self.tiers.is_empty() {
                return Err(unexpected("tiers"));
            }
        }

        match (model, self.package_size) {
            (PriceModel::Package, None) => {
                return Err(PriceError::MissingPackageSize { price_id: id() });
            }
            (PriceModel::Package, Some(size)) if size <= Decimal::ZERO => {
                return Err(PriceError::NonPositivePackageSize {
                    price_id: id(),
                    package_size: size,
                });
            }
            (PriceModel::Package, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(unexpected("a packageSize")),
        }

        if model.is_tiered() {
            self.validate_tiers()?;
        }
        Ok(())
    }

    fn validate_tiers(&self) -> Result<(), PriceError> {
        let id = || self.id.clone();
        if self.tiers.is_empty() {
            return Err(PriceError::NoTiers {
                price_id: id(),
                model: self.model,
            });
        }
        let last = self.tiers.len();
        let mut previous: Option<Decimal> = None;
        for (index, tier) in self.tiers.iter().enumerate() {
            let number = index + 1;
            self.non_negative(&format!("tier {number}: unitAmount"), tier.unit_amount)?;
            self.non_negative(&format!("tier {number}: flatAmount"), tier.flat_amount)?;
            match (tier.up_to, number == last) {
                (None, true) => {}
                (None, false) => {
                    return Err(PriceError::UnboundedTierNotLast {
                        price_id: id(),
                        tier: number,
                    });
                }
                (Some(up_to), true) => {
                    return Err(PriceError::LastTierBounded {
                        price_id: id(),
                        tier: number,
                        up_to,
                    });
                }
                (Some(up_to), false) => {
                    match previous {
                        None if up_to <= Decimal::ZERO => {
                            return Err(PriceError::NonPositiveFirstUpTo {
                                price_id: id(),
                                up_to,
                            });
                        }
                        Some(previous) if up_to <= previous => {
                            return Err(PriceError::TiersNotAscending {
                                price_id: id(),
                                tier: number,
                                up_to,
                                previous,
                            });
                        }
                        _ => {}
                    }
                    previous = Some(up_to);
                }
            }
        }
        Ok(())
    }

    fn non_negative(&self, field: &str, amount: Decimal) -> Result<(), PriceError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(PriceError::NegativeAmount {
                price_id: self.id.clone(),
                field: field.to_string(),
                amount,
            });
        }
        Ok(())
    }

    /// The unrounded amount for `quantity` (seats for FLAT, aggregated usage
    /// otherwise). Validates the price first.
    ///
    /// Tiered and package prices treat a quantity at or below zero as zero
    /// units (no unit falls in any tier); FLAT and PER_UNIT are linear and
    /// simply multiply, so a negative SUM gives a negative amount.
    pub fn amount_for(&self, quantity: Decimal) -> Result<Decimal, PriceError> {
        self.validate()?;
        let overflow = || PriceError::Overflow {
            price_id: self.id.clone(),
            quantity,
        };
        match self.model {
            PriceModel::Flat | PriceModel::PerUnit => {
                let unit = self.unit_amount.unwrap_or_default();
                unit.checked_mul(quantity).ok_or_else(overflow)
            }
            PriceModel::Graduated => self
                .graduated_parts(quantity)?
                .into_iter()
                .try_fold(Decimal::ZERO, |sum, part| sum.checked_add(part))
                .ok_or_else(overflow),
            PriceModel::Volume => {
                if quantity <= Decimal::ZERO {
                    return Ok(Decimal::ZERO);
                }
                // The tier the total falls in: the first whose inclusive
                // bound holds it (validation guarantees an unbounded last).
                let tier = self
                    .tiers
                    .iter()
                    .find(|tier| tier.up_to.is_none_or(|up_to| quantity <= up_to))
                    .ok_or_else(overflow)?;
                tier.unit_amount
                    .checked_mul(quantity)
                    .and_then(|units| units.checked_add(tier.flat_amount))
                    .ok_or_else(overflow)
            }
            PriceModel::Package => {
                if quantity <= Decimal::ZERO {
                    return Ok(Decimal::ZERO);
                }
                let size = self.package_size.unwrap_or(Decimal::ONE);
                let unit = self.unit_amount.unwrap_or_default();
                quantity
                    .checked_div(size)
                    .map(|packages| packages.ceil())
                    .and_then(|packages| packages.checked_mul(unit))
                    .ok_or_else(overflow)
            }
        }
    }

    /// For a GRADUATED price, the amount contributed by each tier for
    /// `quantity` (same order as `tiers`; zero for tiers no unit reaches).
    /// Fractional quantities are priced continuously: 0.5 units in a tier
    /// cost half its unit amount, plus the tier's flat amount.
    pub fn graduated_parts(&self, quantity: Decimal) -> Result<Vec<Decimal>, PriceError> {
        let overflow = || PriceError::Overflow {
            price_id: self.id.clone(),
            quantity,
        };
        let mut parts = Vec::with_capacity(self.tiers.len());
        let mut lower = Decimal::ZERO;
        for tier in &self.tiers {
            if quantity <= lower {
                parts.push(Decimal::ZERO);
                continue;
            }
            let upper = tier.up_to.map_or(quantity, |up_to| up_to.min(quantity));
            let part = (upper - lower)
                .checked_mul(tier.unit_amount)
                .and_then(|units| units.checked_add(tier.flat_amount))
                .ok_or_else(overflow)?;
            parts.push(part);
            lower = tier.up_to.unwrap_or(quantity);
        }
        Ok(parts)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    pub(crate) fn flat(id: &str, unit: Decimal, timing: BillingTiming) -> Price {
        Price {
            id: id.into(),
            model: PriceModel::Flat,
            timing,
            meter_code: None,
            unit_amount: Some(unit),
            package_size: None,
            tiers: vec![],
            description: None,
        }
    }

    pub(crate) fn tiered(
        id: &str,
        model: PriceModel,
        tiers: &[(Option<i64>, Decimal, Decimal)],
    ) -> Price {
        Price {
            id: id.into(),
            model,
            timing: BillingTiming::InArrears,
            meter_code: Some("calls".into()),
            unit_amount: None,
            package_size: None,
            tiers: tiers
                .iter()
                .map(|&(up_to, unit_amount, flat_amount)| Tier {
                    up_to: up_to.map(Decimal::from),
                    unit_amount,
                    flat_amount,
                })
                .collect(),
            description: None,
        }
    }

    pub(crate) fn graduated_doc_tiers(model: PriceModel) -> Price {
        tiered(
            "api",
            model,
            &[
                (Some(1_000), dec!(0.10), dec!(0)),
                (Some(10_000), dec!(0.05), dec!(0)),
                (None, dec!(0.01), dec!(0)),
            ],
        )
    }

    fn package(size: Decimal, unit: Decimal) -> Price {
        Price {
            id: "pkg".into(),
            model: PriceModel::Package,
            timing: BillingTiming::InArrears,
            meter_code: Some("calls".into()),
            unit_amount: Some(unit),
            package_size: Some(size),
            tiers: vec![],
            description: None,
        }
    }

    #[test]
    fn volume_example_from_pricing_docs() {
        let price = tiered(
            "vol",
            PriceModel::Volume,
            &[
                (Some(10_000), dec!(0.0010), dec!(10)),
                (Some(50_000), dec!(0.0008), dec!(10)),
                (Some(100_000), dec!(0.0006), dec!(10)),
                (None, dec!(0.0004), dec!(10)),
            ],
        );
        assert_eq!(price.amount_for(dec!(65000)), Ok(dec!(49.00)));
        assert_eq!(price.amount_for(dec!(0)), Ok(dec!(0)));
        // The bound is inclusive: 10,000 units stay in tier 1.
        assert_eq!(price.amount_for(dec!(10000)), Ok(dec!(20)));
    }

    #[test]
    fn graduated_and_volume_examples_from_pricing_docs() {
        let graduated = graduated_doc_tiers(PriceModel::Graduated);
        assert_eq!(graduated.amount_for(dec!(15000)), Ok(dec!(600.00)));
        let volume = graduated_doc_tiers(PriceModel::Volume);
        assert_eq!(volume.amount_for(dec!(15000)), Ok(dec!(150.00)));
    }

    #[test]
    fn graduated_flat_amount_is_added_once_per_reached_tier() {
        let price = tiered(
            "g",
            PriceModel::Graduated,
            &[(Some(10), dec!(1), dec!(5)), (None, dec!(0.5), dec!(7))],
        );
        assert_eq!(price.amount_for(dec!(0)), Ok(dec!(0)));
        assert_eq!(price.amount_for(dec!(0.5)), Ok(dec!(5.5)));
        assert_eq!(price.amount_for(dec!(10)), Ok(dec!(15)));
        assert_eq!(price.amount_for(dec!(10.5)), Ok(dec!(22.25)));
        assert_eq!(price.amount_for(dec!(-3)), Ok(dec!(0)));
    }

    #[test]
    fn flat_per_unit_and_package() {
        assert_eq!(
            flat("seat", dec!(12.5), BillingTiming::InAdvance).amount_for(dec!(3)),
            Ok(dec!(37.5))
        );
        let per_unit = Price {
            model: PriceModel::PerUnit,
            timing: BillingTiming::InArrears,
            meter_code: Some("gb".into()),
            ..flat("gb", dec!(0.0004), BillingTiming::InArrears)
        };
        assert_eq!(per_unit.amount_for(dec!(1234.5)), Ok(dec!(0.4938)));
        let package = package(dec!(100), dec!(5));
        assert_eq!(package.amount_for(dec!(0)), Ok(dec!(0)));
        assert_eq!(package.amount_for(dec!(1)), Ok(dec!(5)));
        assert_eq!(package.amount_for(dec!(100)), Ok(dec!(5)));
        assert_eq!(package.amount_for(dec!(100.000001)), Ok(dec!(10)));
    }

    #[test]
    fn tier_validation_messages_are_precise() {
        let price = tiered(
            "p1",
            PriceModel::Graduated,
            &[
                (Some(1000), dec!(1), dec!(0)),
                (Some(500), dec!(1), dec!(0)),
                (None, dec!(1), dec!(0)),
            ],
        );
        assert_eq!(
            price.validate().unwrap_err().to_string(),
            "price p1: tier 2: upTo 500 must be greater than the previous tier's upTo 1000"
        );
        let bounded_last = tiered("p1", PriceModel::Volume, &[(Some(10), dec!(1), dec!(0))]);
        assert_eq!(
            bounded_last.validate().unwrap_err().to_string(),
            "price p1: tier 1: the last tier must be unbounded (upTo null), got upTo 10"
        );
        let early_unbounded = tiered(
            "p1",
            PriceModel::Volume,
            &[(None, dec!(1), dec!(0)), (None, dec!(1), dec!(0))],
        );
        assert_eq!(
            early_unbounded.validate().unwrap_err().to_string(),
            "price p1: tier 1: only the last tier may be unbounded (upTo null)"
        );
        let empty = tiered("p1", PriceModel::Graduated, &[]);
        assert!(matches!(empty.validate(), Err(PriceError::NoTiers { .. })));
        let negative = tiered("p1", PriceModel::Graduated, &[(None, dec!(-1), dec!(0))]);
        assert_eq!(
            negative.validate().unwrap_err().to_string(),
            "price p1: tier 1: unitAmount -1 must not be negative"
        );
        let zero_first = tiered(
            "p1",
            PriceModel::Graduated,
            &[(Some(0), dec!(1), dec!(0)), (None, dec!(1), dec!(0))],
        );
        assert!(matches!(
            zero_first.validate(),
            Err(PriceError::NonPositiveFirstUpTo { .. })
        ));
    }

    #[test]
    fn model_rules_are_enforced() {
        let mut price = flat("f", dec!(10), BillingTiming::InAdvance);
        assert_eq!(price.validate(), Ok(()));
        price.meter_code = Some("calls".into());
        assert!(matches!(
            price.validate(),
            Err(PriceError::FlatWithMeter { .. })
        ));
        price.meter_code = None;
        price.unit_amount = None;
        assert!(matches!(
            price.validate(),
            Err(PriceError::MissingUnitAmount { .. })
        ));

        let mut metered = graduated_doc_tiers(PriceModel::Graduated);
        metered.timing = BillingTiming::InAdvance;
        assert_eq!(
            metered.validate().unwrap_err().to_string(),
            "price api: a GRADUATED price is metered and always billed IN_ARREARS, not IN_ADVANCE"
        );
        metered.timing = BillingTiming::InArrears;
        metered.meter_code = None;
        assert!(matches!(
            metered.validate(),
            Err(PriceError::MissingMeter { .. })
        ));

        assert!(matches!(
            package(dec!(0), dec!(1)).validate(),
            Err(PriceError::NonPositivePackageSize { .. })
        ));
        let mut no_size = package(dec!(1), dec!(1));
        no_size.package_size = None;
        assert!(matches!(
            no_size.validate(),
            Err(PriceError::MissingPackageSize { .. })
        ));
        assert!(matches!(
            flat("f", dec!(-1), BillingTiming::InArrears).validate(),
            Err(PriceError::NegativeAmount { .. })
        ));
    }

    #[test]
    fn deserializes_spec_shaped_json() {
        let price: Price = serde_json::from_str(
            r#"{"id":"p","model":"GRADUATED","timing":"IN_ARREARS","meterCode":"calls",
                "tiers":[{"upTo":"1000","unitAmount":"0.10"},{"upTo":null,"unitAmount":"0.05","flatAmount":"2"}]}"#,
        )
        .expect("price json");
        assert_eq!(price.tiers.len(), 2);
        assert_eq!(price.amount_for(dec!(1001)), Ok(dec!(102.05)));
    }
}
