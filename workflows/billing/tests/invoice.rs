//! Invoice scenarios from SPEC §3, driven through the public API.

mod common;

use billing::{
    BilledLine, BillingTiming, Invoice, InvoiceError, InvoiceLine, LineKind, PeriodSchedule, Phase,
    cancel_immediately, change_plan, close_period, content_hash, first_invoice,
};
use billing::{Cadence, Interval};
use chrono_tz::Tz;
use common::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn billed(lines: &[InvoiceLine]) -> Vec<BilledLine> {
    lines.iter().map(BilledLine::from).collect()
}

fn amounts(lines: &[InvoiceLine]) -> Vec<(LineKind, Decimal)> {
    lines.iter().map(|line| (line.kind, line.amount)).collect()
}

#[test]
fn first_invoice_charges_the_first_period_in_advance() {
    let terms = terms(
        monthly(utc(2026, 1, 1, 0)),
        vec![(
            utc(2026, 1, 1, 0),
            vec![flat("basic", dec!(100.00), BillingTiming::InAdvance)],
            2,
        )],
    );
    let lines = first_invoice(&terms, &[], usd()).expect("lines");
    assert_eq!(
        amounts(&lines),
        vec![(LineKind::Subscription, dec!(200.00))]
    );
    assert_eq!(
        lines[0].period,
        period(utc(2026, 1, 1, 0), utc(2026, 2, 1, 0))
    );
    assert_eq!(lines[0].description, "2 × basic");
    // Already billed: nothing new.
    assert!(
        first_invoice(&terms, &billed(&lines), usd())
            .expect("lines")
            .is_empty()
    );
}

#[test]
fn calendar_partial_first_period_is_prorated() {
    let schedule = PeriodSchedule::calendar(
        utc(2026, 1, 16, 0),
        Cadence::new(Interval::Month, 1),
        Tz::UTC,
    );
    let terms = terms(
        schedule,
        vec![(
            utc(2026, 1, 16, 0),
            vec![flat("basic", dec!(100.00), BillingTiming::InAdvance)],
            1,
        )],
    );
    let lines = first_invoice(&terms, &[], usd()).expect("lines");
    assert_eq!(amounts(&lines), vec![(LineKind::Subscription, dec!(51.61))]);
    assert_eq!(lines[0].description, "1 × basic (16/31 days)");
    assert_eq!(
        lines[0].period,
        period(utc(2026, 1, 16, 0), utc(2026, 2, 1, 0))
    );
}

#[test]
fn period_close_bills_usage_arrears_and_next_advance_once() {
    let terms = terms(
        monthly(utc(2026, 1, 1, 0)),
        vec![(
            utc(2026, 1, 1, 0),
            vec![
                flat("base", dec!(20), BillingTiming::InAdvance),
                flat("support", dec!(5), BillingTiming::InArrears),
                graduated("api"),
            ],
            1,
        )],
    );
    let usage = calls(
        vec![
            event("a", utc(2026, 1, 3, 0), dec!(10000)),
            event("b", utc(2026, 1, 20, 0), dec!(5000)),
            event("next", utc(2026, 2, 1, 0), dec!(99)),
        ],
        utc(2026, 1, 1, 0),
    );
    let lines = close_period(&terms, 0, &usage, &[], usd()).expect("lines");
    assert_eq!(
        amounts(&lines),
        vec![
            (LineKind::Usage, dec!(600.00)),
            (LineKind::Subscription, dec!(5)),
            (LineKind::Subscription, dec!(20)),
        ]
    );
    assert_eq!(lines[0].quantity, dec!(15000));
    assert_eq!(
        lines[2].period,
        period(utc(2026, 2, 1, 0), utc(2026, 3, 1, 0))
    );
    assert!(
        close_period(&terms, 0, &usage, &billed(&lines), usd())
            .expect("lines")
            .is_empty()
    );

    let invoice = Invoice::from_lines(lines, usd()).expect("invoice");
    assert_eq!(invoice.total, dec!(625.00));
    assert_eq!(invoice.period_start, utc(2026, 1, 1, 0));
    assert_eq!(invoice.period_end, utc(2026, 3, 1, 0));
    assert_eq!(content_hash(&invoice).len(), 64);
}

#[test]
fn late_usage_with_tiers_bills_the_difference() {
    let terms = terms(
        monthly(utc(2026, 1, 1, 0)),
        vec![(utc(2026, 1, 1, 0), vec![graduated("api")], 1)],
    );
    let on_time = vec![event("a", utc(2026, 1, 10, 0), dec!(900))];
    let january = close_period(
        &terms,
        0,
        &calls(on_time.clone(), utc(2026, 1, 1, 0)),
        &[],
        usd(),
    )
    .expect("jan");
    assert_eq!(amounts(&january), vec![(LineKind::Usage, dec!(90.00))]);

    // 200 more January units arrive after January was invoiced: 900 → 1,100
    // crosses into tier 2, so the delta is 105.00 − 90.00, not 200 × 0.10.
    let mut all = on_time;
    all.push(event("late", utc(2026, 1, 31, 23), dec!(200)));
    all.push(event("feb", utc(2026, 2, 2, 0), dec!(10)));
    let usage = calls(all, utc(2026, 1, 1, 0));
    let february = close_period(&terms, 1, &usage, &billed(&january), usd()).expect("feb");
    assert_eq!(
        amounts(&february),
        vec![
            (LineKind::Usage, dec!(1.00)),
            (LineKind::LateUsage, dec!(15.00))
        ]
    );
    let late = &february[1];
    assert_eq!(late.quantity, dec!(200));
    assert_eq!(late.period, period(utc(2026, 1, 1, 0), utc(2026, 2, 1, 0)));
    assert_eq!(late.description, "Late usage: API calls");

    let mut everything = billed(&january);
    everything.extend(billed(&february));
    assert!(
        close_period(&terms, 1, &usage, &everything, usd())
            .expect("again")
            .is_empty()
    );

    // Periods before `complete_from` are never recomputed from partial data.
    let partial = calls(
        vec![event("feb", utc(2026, 2, 2, 0), dec!(10))],
        utc(2026, 1, 15, 0),
    );
    let lines = close_period(&terms, 1, &partial, &billed(&january), usd()).expect("partial");
    assert_eq!(amounts(&lines), vec![(LineKind::Usage, dec!(1.00))]);
}

#[test]
fn plan_change_prorates_and_splits_the_period() {
    let start = utc(2026, 1, 1, 0);
    let change = utc(2026, 1, 16, 12);
    let before = terms(
        monthly(start),
        vec![(
            start,
            vec![
                flat("basic", dec!(100.00), BillingTiming::InAdvance),
                per_unit("calls-basic", dec!(0.01)),
            ],
            1,
        )],
    );
    let after = before.with_phase(Phase {
        from: change,
        prices: vec![
            flat("pro", dec!(150.00), BillingTiming::InAdvance),
            per_unit("calls-pro", dec!(0.002)),
        ],
        quantity: 1,
    });
    let prorations = change_plan(&before, &after, change, usd()).expect("prorations");
    assert_eq!(
        amounts(&prorations),
        vec![
            (LineKind::Proration, dec!(-51.61)),
            (LineKind::Proration, dec!(77.42))
        ]
    );
    assert!(
        prorations
            .iter()
            .all(|line| line.period == period(utc(2026, 1, 16, 0), utc(2026, 2, 1, 0)))
    );

    // Usage before the change is priced by the old plan, after by the new.
    let usage = calls(
        vec![
            event("before", utc(2026, 1, 16, 11), dec!(1000)),
            event("after", utc(2026, 1, 16, 12), dec!(1000)),
        ],
        start,
    );
    let lines = close_period(&after, 0, &usage, &[], usd()).expect("close");
    assert_eq!(
        amounts(&lines),
        vec![
            (LineKind::Usage, dec!(10.00)),
            (LineKind::Usage, dec!(2.00)),
            (LineKind::Subscription, dec!(150.00)),
        ]
    );
    assert_eq!(lines[0].period, period(start, change));
    assert_eq!(lines[1].period, period(change, utc(2026, 2, 1, 0)));
}

#[test]
fn seat_change_keeps_one_usage_stretch_and_prorates_seats() {
    let start = utc(2026, 1, 1, 0);
    let change = utc(2026, 1, 16, 0);
    let prices = vec![
        flat("seat", dec!(10.00), BillingTiming::InAdvance),
        graduated("api"),
    ];
    let before = terms(monthly(start), vec![(start, prices.clone(), 3)]);
    let after = before.with_phase(Phase {
        from: change,
        prices,
        quantity: 5,
    });
    let prorations = change_plan(&before, &after, change, usd()).expect("prorations");
    // 30 × 16/31 = 15.48 credited, 50 × 16/31 = 25.81 charged.
    assert_eq!(
        amounts(&prorations),
        vec![
            (LineKind::Proration, dec!(-15.48)),
            (LineKind::Proration, dec!(25.81))
        ]
    );
    let usage = calls(
        vec![
            event("a", utc(2026, 1, 10, 0), dec!(800)),
            event("b", utc(2026, 1, 20, 0), dec!(400)),
        ],
        start,
    );
    let lines = close_period(&after, 0, &usage, &[], usd()).expect("close");
    // One stretch of 1,200 units: 100 + 10 = 110, not 80 + 40.
    assert_eq!(lines[0].kind, LineKind::Usage);
    assert_eq!(
        (lines[0].quantity, lines[0].amount),
        (dec!(1200), dec!(110.00))
    );
    assert_eq!(lines[0].period, period(start, utc(2026, 2, 1, 0)));
    // An unchanged fee gives no proration lines at all.
    let same = before.with_phase(Phase {
        from: change,
        prices: before.phases[0].prices.clone(),
        quantity: 3,
    });
    assert!(
        change_plan(&before, &same, change, usd())
            .expect("none")
            .is_empty()
    );
}

#[test]
fn a_period_spanning_a_version_change_is_split_by_day() {
    let start = utc(2026, 1, 1, 0);
    let terms = terms(
        monthly(start),
        vec![
            (
                start,
                vec![flat("basic-v1", dec!(100.00), BillingTiming::InAdvance)],
                1,
            ),
            (
                utc(2026, 1, 11, 0),
                vec![flat("basic-v2", dec!(200.00), BillingTiming::InAdvance)],
                1,
            ),
        ],
    );
    let lines = first_invoice(&terms, &[], usd()).expect("lines");
    // 100 × 10/31 = 32.26 and 200 × 21/31 = 135.48.
    assert_eq!(
        amounts(&lines),
        vec![
            (LineKind::Subscription, dec!(32.26)),
            (LineKind::Subscription, dec!(135.48))
        ]
    );
    assert_eq!(lines[1].description, "1 × basic-v2 (21/31 days)");
}

#[test]
fn cancel_at_period_end_bills_arrears_only() {
    let start = utc(2026, 1, 1, 0);
    let mut terms = terms(
        monthly(start),
        vec![(
            start,
            vec![
                flat("base", dec!(20), BillingTiming::InAdvance),
                per_unit("calls", dec!(0.5)),
            ],
            1,
        )],
    );
    terms.ends_at = Some(utc(2026, 2, 1, 0));
    let usage = calls(vec![event("a", utc(2026, 1, 5, 0), dec!(3))], start);
    let lines = close_period(&terms, 0, &usage, &[], usd()).expect("final");
    assert_eq!(amounts(&lines), vec![(LineKind::Usage, dec!(1.50))]);
}

#[test]
fn cancel_immediately_bills_usage_so_far_and_credits_unused_days() {
    let start = utc(2026, 1, 1, 0);
    let terms = terms(
        monthly(start),
        vec![(
            start,
            vec![
                flat("basic", dec!(100.00), BillingTiming::InAdvance),
                flat("support", dec!(31.00), BillingTiming::InArrears),
                per_unit("calls", dec!(1)),
            ],
            1,
        )],
    );
    let at = utc(2026, 1, 16, 9);
    let usage = calls(
        vec![
            event("a", utc(2026, 1, 10, 0), dec!(4)),
            event("after", utc(2026, 1, 20, 0), dec!(50)),
        ],
        start,
    );
    let lines = cancel_immediately(&terms, at, &usage, &[], usd()).expect("final");
    assert_eq!(
        amounts(&lines),
        vec![
            (LineKind::Usage, dec!(4)),
            (LineKind::Subscription, dec!(15.00)),
            (LineKind::Proration, dec!(-51.61)),
        ]
    );
    assert_eq!(lines[0].period, period(start, at));
    assert!(matches!(
        cancel_immediately(&terms.with_end(at), at, &usage, &[], usd()),
        Err(InvoiceError::AlreadyEnded { .. })
    ));
}

#[test]
fn nothing_is_charged_during_a_trial() {
    let trial_end = utc(2026, 1, 15, 0);
    let terms = terms(
        monthly(trial_end),
        vec![(
            utc(2026, 1, 1, 0),
            vec![flat("basic", dec!(100), BillingTiming::InAdvance)],
            1,
        )],
    );
    let usage = calls(vec![], utc(2026, 1, 1, 0));
    assert!(
        cancel_immediately(&terms, utc(2026, 1, 10, 0), &usage, &[], usd())
            .expect("trial")
            .is_empty()
    );
    let after = terms.with_phase(Phase {
        from: utc(2026, 1, 10, 0),
        prices: vec![flat("pro", dec!(150), BillingTiming::InAdvance)],
        quantity: 1,
    });
    assert!(
        change_plan(&terms, &after, utc(2026, 1, 10, 0), usd())
            .expect("trial")
            .is_empty()
    );
    // The first period starts at the trial end, under the phase then in force.
    let lines = first_invoice(&after, &[], usd()).expect("first");
    assert_eq!(amounts(&lines), vec![(LineKind::Subscription, dec!(150))]);
    assert_eq!(lines[0].period, period(trial_end, utc(2026, 2, 15, 0)));
}

#[test]
fn bad_inputs_are_precise_errors() {
    let start = utc(2026, 1, 1, 0);
    let unsorted = terms(
        monthly(start),
        vec![(start, vec![], 1), (utc(2025, 12, 1, 0), vec![], 1)],
    );
    assert_eq!(
        first_invoice(&unsorted, &[], usd())
            .unwrap_err()
            .to_string(),
        "phase 1: starts at 2025-12-01 00:00:00 UTC, not after the previous phase"
    );
    let mut unknown = per_unit("x", dec!(1));
    unknown.meter_code = Some("storage".into());
    let terms = terms(monthly(start), vec![(start, vec![unknown], 1)]);
    assert_eq!(
        close_period(&terms, 0, &calls(vec![], start), &[], usd())
            .unwrap_err()
            .to_string(),
        "price x: meter storage is not among the meters provided"
    );
    assert!(matches!(
        Invoice::from_lines(vec![], usd()),
        Err(InvoiceError::NoLines)
    ));
    let unrounded = InvoiceLine {
        kind: LineKind::Usage,
        description: "x".into(),
        price_id: None,
        quantity: dec!(1),
        unit_amount: None,
        amount: dec!(0.001),
        period: period(start, utc(2026, 2, 1, 0)),
    };
    assert!(matches!(
        Invoice::from_lines(vec![unrounded], usd()),
        Err(InvoiceError::UnroundedLine { index: 0, .. })
    ));
}
