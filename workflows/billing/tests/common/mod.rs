//! Builders shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use billing::{
    Aggregation, BillingTiming, Cadence, Currency, Interval, Meter, Period, PeriodSchedule, Phase,
    Price, PriceModel, SubscriptionTerms, Tier, UsageByMeter, UsageEvent,
};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

pub fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("valid instant")
}

pub fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

pub fn flat(id: &str, unit: Decimal, timing: BillingTiming) -> Price {
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

pub fn per_unit(id: &str, unit: Decimal) -> Price {
    Price {
        model: PriceModel::PerUnit,
        meter_code: Some("calls".into()),
        ..flat(id, unit, BillingTiming::InArrears)
    }
}

/// 0–1,000 @0.10, –10,000 @0.05, ∞ @0.01 on meter "calls".
pub fn graduated(id: &str) -> Price {
    Price {
        id: id.into(),
        model: PriceModel::Graduated,
        timing: BillingTiming::InArrears,
        meter_code: Some("calls".into()),
        unit_amount: None,
        package_size: None,
        tiers: vec![
            Tier {
                up_to: Some(dec!(1000)),
                unit_amount: dec!(0.10),
                flat_amount: dec!(0),
            },
            Tier {
                up_to: Some(dec!(10000)),
                unit_amount: dec!(0.05),
                flat_amount: dec!(0),
            },
            Tier {
                up_to: None,
                unit_amount: dec!(0.01),
                flat_amount: dec!(0),
            },
        ],
        description: Some("API calls".into()),
    }
}

pub fn monthly(start: DateTime<Utc>) -> PeriodSchedule {
    PeriodSchedule::anniversary(start, Cadence::new(Interval::Month, 1), Tz::UTC)
}

pub fn terms(
    schedule: PeriodSchedule,
    phases: Vec<(DateTime<Utc>, Vec<Price>, u32)>,
) -> SubscriptionTerms {
    SubscriptionTerms {
        schedule,
        phases: phases
            .into_iter()
            .map(|(from, prices, quantity)| Phase {
                from,
                prices,
                quantity,
            })
            .collect(),
        ends_at: None,
    }
}

pub fn event(key: &str, timestamp: DateTime<Utc>, value: Decimal) -> UsageEvent {
    UsageEvent {
        idempotency_key: key.into(),
        timestamp,
        value,
        properties: serde_json::Value::Null,
    }
}

/// Usage on the SUM meter "calls", complete from `complete_from`.
pub fn calls(events: Vec<UsageEvent>, complete_from: DateTime<Utc>) -> UsageByMeter {
    UsageByMeter {
        meters: BTreeMap::from([(
            "calls".to_string(),
            Meter {
                code: "calls".into(),
                aggregation: Aggregation::Sum,
                unique_property: None,
            },
        )]),
        events: BTreeMap::from([("calls".to_string(), events)]),
        complete_from,
    }
}

pub fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> Period {
    Period::new(start, end)
}
