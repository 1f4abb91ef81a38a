//! Day-based proration of flat fees over `[start, end)` periods.
//!
//! For a period of `D` calendar days and a change effective on local day
//! `c`, `R` = days in `[c, end)`; the old price is credited
//! `-round(old × R / D)` and the new one charged `+round(new × R / D)`, each
//! rounded on its own with the one rounding rule. `D` is always the day count
//! of the *nominal* period, so a partial first period is charged and credited
//! at the same daily rate as a full one.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, Overflow};
use crate::period::{Period, PeriodError, PeriodSchedule, local_midnight};
use crate::price::{Price, PriceError};

/// Whether a proration line gives back or charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProrationSide {
    /// Unused time on the old price (negative amount).
    Credit,
    /// Remaining time on the new price (positive amount).
    Charge,
}

/// The days a proration covers: `days` of `nominal_days`, served in `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProrationWindow {
    /// The service days prorated, `[local midnight of c, end)`.
    pub period: Period,
    /// `R`: calendar days in `period`.
    pub days: i64,
    /// `D`: calendar days of the nominal period.
    pub nominal_days: i64,
}

impl ProrationWindow {
    /// The window left in `current` (period number `n` of `schedule`) when a
    /// change takes effect at `effective`: from the local midnight of the
    /// effective day to the period end. The day of the change belongs to the
    /// new terms. `None` if `effective` is not inside the period.
    pub fn remaining(
        schedule: &PeriodSchedule,
        n: u32,
        effective: DateTime<Utc>,
    ) -> Result<Option<ProrationWindow>, PeriodError> {
        let current = schedule.period(n)?;
        if !current.contains(effective) {
            return Ok(None);
        }
        let nominal = schedule.nominal_period(n)?;
        // The local midnight of the change day, but never before the period.
        let day_start = local_midnight(schedule.local_date(effective), schedule.tz)
            .map_or(current.start, |midnight| midnight.max(current.start));
        let period = Period::new(day_start, current.end);
        Ok(Some(ProrationWindow {
            period,
            days: schedule.days(&period),
            nominal_days: schedule.days(&nominal),
        }))
    }
}

/// `round(amount × days / nominal_days)`; the whole amount when the window
/// is the whole period, zero when the nominal period has no days (a day
/// removed from the calendar, as in Samoa 2011).
pub fn prorate(
    amount: Decimal,
    days: i64,
    nominal_days: i64,
    currency: Currency,
) -> Result<Decimal, Overflow> {
    if nominal_days <= 0 || days <= 0 {
        return Ok(Decimal::ZERO);
    }
    if days == nominal_days {
        return Ok(currency.round(amount));
    }
    let share = amount
        .checked_mul(Decimal::from(days))
        .and_then(|scaled| scaled.checked_div(Decimal::from(nominal_days)))
        .ok_or(Overflow("proration"))?;
    Ok(currency.round(share))
}

/// One prorated fee: a credit for unused time or a charge for remaining time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProrationLine {
    pub side: ProrationSide,
    pub price_id: String,
    pub description: String,
    pub quantity: Decimal,
    pub unit_amount: Option<Decimal>,
    /// Rounded; negative for a credit.
    pub amount: Decimal,
    pub period: Period,
    pub days: i64,
    pub nominal_days: i64,
}

impl ProrationLine {
    /// Prorates `price` × `quantity` over `window` on the given side.
    pub fn new(
        side: ProrationSide,
        price: &Price,
        quantity: u32,
        window: &ProrationWindow,
        currency: Currency,
    ) -> Result<ProrationLine, PriceError> {
        let quantity = Decimal::from(quantity);
        let full = price.amount_for(quantity)?;
        let amount = prorate(full, window.days, window.nominal_days, currency).map_err(|_| {
            PriceError::Overflow {
                price_id: price.id.clone(),
                quantity,
            }
        })?;
        let (amount, wording) = match side {
            ProrationSide::Credit => (-amount, "Unused time on"),
            ProrationSide::Charge => (amount, "Remaining time on"),
        };
        Ok(ProrationLine {
            side,
            price_id: price.id.clone(),
            description: format!(
                "{wording} {} × {} ({}/{} days)",
                quantity,
                price.label(),
                window.days,
                window.nominal_days
            ),
            quantity,
            unit_amount: price.unit_amount,
            // Normalize -0 so a zero credit looks like a zero charge.
            amount: if amount.is_zero() {
                Decimal::ZERO
            } else {
                amount
            },
            period: window.period,
            days: window.days,
            nominal_days: window.nominal_days,
        })
    }

    /// Credit for the unused part of the old price.
    pub fn credit(
        price: &Price,
        quantity: u32,
        window: &ProrationWindow,
        currency: Currency,
    ) -> Result<ProrationLine, PriceError> {
        ProrationLine::new(ProrationSide::Credit, price, quantity, window, currency)
    }

    /// Charge for the remaining part under the new price.
    pub fn charge(
        price: &Price,
        quantity: u32,
        window: &ProrationWindow,
        currency: Currency,
    ) -> Result<ProrationLine, PriceError> {
        ProrationLine::new(ProrationSide::Charge, price, quantity, window, currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::{Cadence, Interval};
    use crate::price::BillingTiming;
    use crate::price::tests::flat;
    use chrono::TimeZone;
    use chrono_tz::Tz;
    use rust_decimal_macros::dec;

    fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("valid")
    }

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD")
    }

    #[test]
    fn january_2026_example() {
        let schedule = PeriodSchedule::anniversary(
            utc(2026, 1, 1, 0),
            Cadence::new(Interval::Month, 1),
            Tz::UTC,
        );
        // Effective during Jan 16: the whole of Jan 16 counts as remaining.
        let window = ProrationWindow::remaining(&schedule, 0, utc(2026, 1, 16, 15))
            .expect("ok")
            .expect("inside");
        assert_eq!((window.days, window.nominal_days), (16, 31));
        assert_eq!(window.period.start, utc(2026, 1, 16, 0));
        let old = flat("basic", dec!(100.00), BillingTiming::InAdvance);
        let new = flat("pro", dec!(150.00), BillingTiming::InAdvance);
        let credit = ProrationLine::credit(&old, 1, &window, usd()).expect("credit");
        let charge = ProrationLine::charge(&new, 1, &window, usd()).expect("charge");
        assert_eq!(credit.amount, dec!(-51.61));
        assert_eq!(charge.amount, dec!(77.42));
        assert_eq!(credit.description, "Unused time on 1 × basic (16/31 days)");
    }

    #[test]
    fn partial_calendar_first_period_uses_the_nominal_days() {
        let schedule = PeriodSchedule::calendar(
            utc(2026, 1, 16, 0),
            Cadence::new(Interval::Month, 1),
            Tz::UTC,
        );
        let first = schedule.period(0).expect("period");
        let nominal = schedule.nominal_period(0).expect("nominal");
        let charged = prorate(
            dec!(100.00),
            schedule.days(&first),
            schedule.days(&nominal),
            usd(),
        )
        .expect("prorate");
        assert_eq!(charged, dec!(51.61));
        // A change on Jan 20 of that partial period credits 12 of 31 days.
        let window = ProrationWindow::remaining(&schedule, 0, utc(2026, 1, 20, 9))
            .expect("ok")
            .expect("inside");
        assert_eq!((window.days, window.nominal_days), (12, 31));
    }

    #[test]
    fn outside_the_period_there_is_nothing_to_prorate() {
        let schedule = PeriodSchedule::anniversary(
            utc(2026, 1, 1, 0),
            Cadence::new(Interval::Month, 1),
            Tz::UTC,
        );
        assert_eq!(
            ProrationWindow::remaining(&schedule, 0, utc(2026, 2, 1, 0)),
            Ok(None)
        );
        assert_eq!(prorate(dec!(10), 3, 0, usd()), Ok(dec!(0)));
        assert_eq!(prorate(dec!(10), 31, 31, usd()), Ok(dec!(10)));
    }
}
