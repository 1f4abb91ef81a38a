//! Property tests of the billing core's invariants.

mod common;

use billing::{
    BilledLine, BillingAnchor, BillingTiming, Cadence, Currency, Interval, LineKind,
    PeriodSchedule, Price, PriceModel, ProrationLine, ProrationWindow, Tier, close_period,
    local_date, local_midnight,
};
use chrono::{Datelike, Months, NaiveDate, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use common::*;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

/// A non-negative decimal with up to `scale` fractional digits.
fn decimal(max_mantissa: i64, scale: u32) -> impl Strategy<Value = Decimal> {
    (0..=max_mantissa, 0..=scale).prop_map(|(mantissa, scale)| Decimal::new(mantissa, scale))
}

/// 1–4 tiers with strictly ascending bounds and an unbounded last tier.
fn tiers() -> impl Strategy<Value = Vec<Tier>> {
    prop::collection::vec((1..5_000_i64, decimal(10_000, 4), decimal(5_000, 2)), 1..=4).prop_map(
        |raw| {
            let mut bound = Decimal::ZERO;
            let last = raw.len() - 1;
            raw.into_iter()
                .enumerate()
                .map(|(index, (step, unit_amount, flat_amount))| {
                    bound += Decimal::from(step);
                    Tier {
                        up_to: (index < last).then_some(bound),
                        unit_amount,
                        flat_amount,
                    }
                })
                .collect()
        },
    )
}

fn tiered(model: PriceModel, tiers: Vec<Tier>) -> Price {
    Price {
        id: "p".into(),
        model,
        timing: BillingTiming::InArrears,
        meter_code: Some("calls".into()),
        unit_amount: None,
        package_size: None,
        tiers,
        description: None,
    }
}

fn quantity() -> impl Strategy<Value = Decimal> {
    decimal(50_000_000, 4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn graduated_never_decreases(tiers in tiers(), a in quantity(), b in quantity()) {
        let price = tiered(PriceModel::Graduated, tiers);
        let (low, high) = (a.min(b), a.max(b));
        prop_assert!(price.amount_for(low).expect("amount") <= price.amount_for(high).expect("amount"));
    }

    #[test]
    fn package_never_decreases(size in decimal(10_000, 2), unit in decimal(100_000, 4), a in quantity(), b in quantity()) {
        prop_assume!(size > Decimal::ZERO);
        let price = Price {
            model: PriceModel::Package,
            unit_amount: Some(unit),
            package_size: Some(size),
            ..tiered(PriceModel::Package, vec![])
        };
        let (low, high) = (a.min(b), a.max(b));
        prop_assert!(price.amount_for(low).expect("amount") <= price.amount_for(high).expect("amount"));
    }

    #[test]
    fn graduated_is_the_sum_of_its_tier_parts(tiers in tiers(), q in quantity()) {
        let price = tiered(PriceModel::Graduated, tiers.clone());
        // Each tier priced on its own: units in (lower, upper] at its unit
        // amount, plus its flat amount when any unit reaches it.
        let mut lower = Decimal::ZERO;
        let mut expected = Decimal::ZERO;
        for tier in &tiers {
            let upper = tier.up_to.unwrap_or(Decimal::MAX);
            if q > lower {
                expected += (q.min(upper) - lower) * tier.unit_amount + tier.flat_amount;
            }
            lower = upper;
        }
        prop_assert_eq!(price.amount_for(q).expect("amount"), expected);
        let parts = price.graduated_parts(q).expect("parts");
        prop_assert_eq!(parts.len(), tiers.len());
        prop_assert_eq!(parts.into_iter().sum::<Decimal>(), expected);
    }

    #[test]
    fn credit_and_charge_for_the_same_price_cancel(
        unit in decimal(10_000_000, 4),
        seats in 0..500_u32,
        nominal_days in 1..=366_i64,
        remaining in 0..=366_i64,
        code in prop::sample::select(vec!["USD", "JPY", "KWD"]),
    ) {
        let currency = Currency::parse(code).expect("currency");
        let days = remaining.min(nominal_days);
        let window = ProrationWindow {
            period: period(utc(2026, 1, 1, 0), utc(2026, 2, 1, 0)),
            days,
            nominal_days,
        };
        let price = flat("seat", unit, BillingTiming::InAdvance);
        let credit = ProrationLine::credit(&price, seats, &window, currency).expect("credit");
        let charge = ProrationLine::charge(&price, seats, &window, currency).expect("charge");
        prop_assert_eq!(credit.amount + charge.amount, Decimal::ZERO);
        prop_assert!(credit.amount <= Decimal::ZERO);
    }

    #[test]
    fn rounding_is_symmetric_and_to_the_nearest_unit(
        mantissa in any::<i64>(),
        scale in 0..=12_u32,
        code in prop::sample::select(vec!["USD", "JPY", "KWD", "BHD", "CLF"]),
    ) {
        let currency = Currency::parse(code).expect("currency");
        let x = Decimal::new(mantissa, scale);
        let rounded = currency.round(x);
        prop_assert_eq!(currency.round(-x), -rounded);
        prop_assert!(rounded.scale() <= currency.exponent());
        let half_unit = Decimal::new(5, currency.exponent() + 1);
        prop_assert!((rounded - x).abs() <= half_unit);
        // Rounded amounts are whole minor units (huge ones may not fit i64).
        let whole = !matches!(
            currency.to_minor_units(rounded),
            Err(billing::MoneyError::NotWholeMinorUnits { .. })
        );
        prop_assert!(whole);
    }
}

const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

fn cadences() -> [Cadence; 4] {
    [
        Cadence::new(Interval::Month, 1),
        Cadence::new(Interval::Month, 3),
        Cadence::new(Interval::Year, 1),
        Cadence::new(Interval::Week, 1),
    ]
}

fn last_day_of_month(date: NaiveDate) -> u32 {
    let first = date.with_day(1).expect("first");
    (first + Months::new(1)).pred_opt().expect("last").day()
}

/// Periods 0..count tile time, start at local midnights, and each instant
/// maps back to its own period.
fn assert_tiles(schedule: &PeriodSchedule, years: i32) {
    let horizon = schedule.start + TimeDelta::days(i64::from(years) * 366);
    let mut previous_end = schedule.start;
    let mut n = 0;
    loop {
        let period = schedule.period(n).expect("period");
        assert_eq!(
            period.start, previous_end,
            "gap or overlap before period {n} of {schedule:?}"
        );
        assert!(
            period.start < period.end,
            "empty period {n} of {schedule:?}"
        );
        let end_date = local_date(period.end, schedule.tz);
        assert_eq!(
            local_midnight(end_date, schedule.tz),
            Some(period.end),
            "end not a local midnight"
        );
        let local_end = period.end.with_timezone(&schedule.tz);
        // None of these zones has a gap at midnight, so it is 00:00 local.
        assert_eq!(
            (local_end.hour(), local_end.minute()),
            (0, 0),
            "{schedule:?} period {n}"
        );
        if schedule.anchor_kind == BillingAnchor::Anniversary
            && schedule.cadence.interval == Interval::Month
        {
            let anchor_day = schedule.anchor_local_date.day();
            assert_eq!(
                end_date.day(),
                anchor_day.min(last_day_of_month(end_date)),
                "{schedule:?} period {n}"
            );
        }
        if schedule.anchor_kind == BillingAnchor::Calendar {
            match schedule.cadence.interval {
                Interval::Month => assert_eq!(end_date.day(), 1),
                Interval::Year => assert_eq!((end_date.month(), end_date.day()), (1, 1)),
                Interval::Week => assert_eq!(end_date.weekday(), chrono::Weekday::Mon),
                Interval::Day => {}
            }
        }
        for probe in [period.start, period.end - TimeDelta::seconds(1)] {
            let (found, containing) = schedule
                .period_containing(probe)
                .expect("ok")
                .expect("some");
            assert_eq!((found, containing), (n, period), "{schedule:?} at {probe}");
        }
        let days = schedule.days(&period);
        assert!(days >= 1 && days <= schedule.days(&schedule.nominal_period(n).expect("nominal")));
        if period.end > horizon {
            break;
        }
        previous_end = period.end;
        n += 1;
    }
}

#[test]
fn periods_tile_ten_years_for_every_anchor_day_zone_and_cadence() {
    for zone in ZONES {
        let tz: Tz = zone.parse().expect("zone");
        for day in 1..=31 {
            // A 31-day month, so every anchor day exists.
            let anchor = NaiveDate::from_ymd_opt(2024, 1, day).expect("date");
            let start = local_midnight(anchor, tz).expect("midnight");
            for cadence in cadences() {
                assert_tiles(&PeriodSchedule::anniversary(start, cadence, tz), 10);
                assert_tiles(&PeriodSchedule::calendar(start, cadence, tz), 10);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any start instant, not only midnights: period 0 starts at it.
    #[test]
    fn periods_tile_from_any_start(
        seconds in 0..(40 * 365 * 86_400_i64),
        zone in prop::sample::select(ZONES.to_vec()),
        cadence in prop::sample::select(cadences().to_vec()),
        calendar in any::<bool>(),
    ) {
        let tz: Tz = zone.parse().expect("zone");
        let start = Utc.timestamp_opt(1_000_000_000 + seconds, 0).single().expect("instant");
        let schedule = if calendar {
            PeriodSchedule::calendar(start, cadence, tz)
        } else {
            PeriodSchedule::anniversary(start, cadence, tz)
        };
        assert_tiles(&schedule, 3);
    }

    /// After billing what was computed, recomputing yields nothing; late
    /// usage yields exactly `round(price(billed + late)) − billed`.
    #[test]
    fn recompute_and_diff_is_idempotent(
        on_time in prop::collection::vec((0..31 * 24_u32, 0..3_000_i64), 0..12),
        late in prop::collection::vec((0..31 * 24_u32, 0..3_000_i64), 1..6),
        february in prop::collection::vec((0..28 * 24_u32, 0..3_000_i64), 0..6),
    ) {
        let start = utc(2026, 1, 1, 0);
        let terms = terms(
            monthly(start),
            vec![(start, vec![flat("base", dec!(9.99), BillingTiming::InAdvance), graduated("api")], 2)],
        );
        let at = |base: chrono::DateTime<Utc>, hours: u32| base + TimeDelta::hours(i64::from(hours));
        let events = |raw: &[(u32, i64)], base, prefix: &str| {
            raw.iter()
                .enumerate()
                .map(|(i, &(hours, value))| event(&format!("{prefix}{i}"), at(base, hours), Decimal::from(value)))
                .collect::<Vec<_>>()
        };
        let mut known = events(&on_time, start, "a");
        known.extend(events(&february, utc(2026, 2, 1, 0), "f"));
        let usage = calls(known.clone(), start);
        let first = close_period(&terms, 0, &usage, &[], usd()).expect("close");
        let billed: Vec<BilledLine> = first.iter().map(BilledLine::from).collect();
        prop_assert!(close_period(&terms, 0, &usage, &billed, usd()).expect("again").is_empty());

        let on_time_total: i64 = on_time.iter().map(|&(_, v)| v).sum();
        let late_total: i64 = late.iter().map(|&(_, v)| v).sum();
        let price = graduated("api");
        let billed_amount = usd().round(price.amount_for(Decimal::from(on_time_total)).expect("amount"));
        let full_amount = usd().round(price.amount_for(Decimal::from(on_time_total + late_total)).expect("amount"));

        known.extend(events(&late, start, "late"));
        let usage = calls(known, start);
        let second = close_period(&terms, 1, &usage, &billed, usd()).expect("close");
        let late_lines: Vec<_> = second.iter().filter(|line| line.kind == LineKind::LateUsage).collect();
        if late_total == 0 {
            prop_assert!(late_lines.is_empty());
        } else {
            prop_assert_eq!(late_lines.len(), 1);
            prop_assert_eq!(late_lines[0].quantity, Decimal::from(late_total));
            prop_assert_eq!(late_lines[0].amount, full_amount - billed_amount);
            prop_assert_eq!(late_lines[0].period, period(start, utc(2026, 2, 1, 0)));
        }
        let mut all = billed;
        all.extend(second.iter().map(BilledLine::from));
        prop_assert!(close_period(&terms, 1, &usage, &all, usd()).expect("again").is_empty());
    }
}
