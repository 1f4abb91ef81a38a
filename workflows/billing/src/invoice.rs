//! Invoice computation by recompute-and-diff.
//!
//! Every function here computes the lines that *should* exist for some
//! service window from the subscription's full history, then subtracts what
//! earlier invoices already hold. Computing again after billing therefore
//! yields nothing new, and usage that arrived late yields exactly the
//! difference (`price(billed + late) − price(billed)`, correct for tiers).
//!
//! # What the caller provides
//!
//! - [`SubscriptionTerms`]: the period schedule (its `start` is the
//!   subscription start, or the trial end: nothing before it is billed),
//!   every [`Phase`] (prices and seat quantity in force from an instant —
//!   one per plan version, plan change or quantity change, sorted, as
//!   persisted; never rewrite past phases), and `ends_at`, the cancellation
//!   instant if any (period end for cancel-at-period-end).
//! - [`BilledLine`]s: the lines of every earlier invoice of the subscription
//!   that still stands (DRAFT, OPEN, PAID, UNCOLLECTIBLE; VOID too, so that
//!   voiding never re-bills automatically). When *re*computing a DRAFT at
//!   finalization, leave that draft's own lines out and replace them with
//!   the result.
//! - [`UsageByMeter`]: the meters and the customer's accepted events, with
//!   `complete_from`: every event at or after it is included. Periods
//!   starting at or after `complete_from` are recomputed for late usage; set
//!   it to the start of the oldest period that can still receive late
//!   events (lateUsageWindowDays back from the period end).
//! - Pending proration lines (from [`change_plan`] under
//!   CREATE_PRORATIONS) are stored by the caller and appended to the next
//!   periodic invoice; nothing here stores anything.
//!
//! # Which function when
//!
//! - subscription becomes ACTIVE (start or trial end): [`first_invoice`];
//! - period close at `period(n).end` (and `upcomingInvoice`): [`close_period`]
//!   with `n`; with `ends_at == period(n).end` it is the final invoice
//!   (arrears only);
//! - plan or quantity change IMMEDIATELY: [`change_plan`] with the terms
//!   before and after; PERIOD_END changes just add a phase at the next
//!   period start and need no lines;
//! - immediate cancellation: [`cancel_immediately`].
//!
//! Flat fees are day-prorated per phase segment (a period spanning a plan
//! version change is split by day); usage is split at the exact instant of a
//! change, and a metered price that stays identical across a change (e.g. a
//! seat change) keeps one segment so tiers are not reset.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregation::{AggregationError, Meter, UsageEvent};
use crate::money::{Currency, Overflow};
use crate::period::{Period, PeriodError, PeriodSchedule, local_midnight};
use crate::price::{BillingTiming, Price, PriceError, PriceModel};
use crate::proration::{ProrationLine, ProrationSide, ProrationWindow, prorate};

/// What an invoice line bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineKind {
    /// A flat fee (in advance or in arrears) for a service window.
    Subscription,
    /// Metered usage of the closing period.
    Usage,
    /// Credit or charge from a mid-period change.
    Proration,
    /// Usage that reached an already-invoiced period.
    LateUsage,
}

impl LineKind {
    /// The GraphQL / SPEC spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Subscription => "SUBSCRIPTION",
            LineKind::Usage => "USAGE",
            LineKind::Proration => "PRORATION",
            LineKind::LateUsage => "LATE_USAGE",
        }
    }

    fn is_usage(self) -> bool {
        matches!(self, LineKind::Usage | LineKind::LateUsage)
    }
}

/// One computed invoice line. `amount` is already rounded to the currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceLine {
    pub kind: LineKind,
    pub description: String,
    pub price_id: Option<String>,
    pub quantity: Decimal,
    pub unit_amount: Option<Decimal>,
    pub amount: Decimal,
    /// The service period this line bills.
    pub period: Period,
}

impl From<ProrationLine> for InvoiceLine {
    fn from(line: ProrationLine) -> InvoiceLine {
        InvoiceLine {
            kind: LineKind::Proration,
            description: line.description,
            price_id: Some(line.price_id),
            quantity: line.quantity,
            unit_amount: line.unit_amount,
            amount: line.amount,
            period: line.period,
        }
    }
}

/// A line already on an earlier invoice, as the diff needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BilledLine {
    pub kind: LineKind,
    pub price_id: Option<String>,
    pub period: Period,
    pub quantity: Decimal,
    pub amount: Decimal,
}

impl From<&InvoiceLine> for BilledLine {
    fn from(line: &InvoiceLine) -> BilledLine {
        BilledLine {
            kind: line.kind,
            price_id: line.price_id.clone(),
            period: line.period,
            quantity: line.quantity,
            amount: line.amount,
        }
    }
}

/// Prices and seat quantity in force from `from` until the next phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    pub from: DateTime<Utc>,
    pub prices: Vec<Price>,
    pub quantity: u32,
}

/// Everything about a subscription that billing depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionTerms {
    pub schedule: PeriodSchedule,
    /// Sorted by `from`, strictly ascending.
    pub phases: Vec<Phase>,
    /// Service ends here (cancellation); nothing at or after it is billed.
    pub ends_at: Option<DateTime<Utc>>,
}

/// The usage inputs of a computation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageByMeter {
    /// Meters by code; every metered price's meter must be here.
    pub meters: BTreeMap<String, Meter>,
    /// The customer's accepted events by meter code (missing = none).
    pub events: BTreeMap<String, Vec<UsageEvent>>,
    /// Every event at or after this instant is in `events`.
    pub complete_from: DateTime<Utc>,
}

/// Why lines could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvoiceError {
    #[error(transparent)]
    Price(#[from] PriceError),
    #[error(transparent)]
    Period(#[from] PeriodError),
    #[error("meter {meter_code}: {source}")]
    Aggregation {
        meter_code: String,
        source: AggregationError,
    },
    #[error("price {price_id}: meter {meter_code} is not among the meters provided")]
    UnknownMeter {
        price_id: String,
        meter_code: String,
    },
    #[error("phase {index}: starts at {from}, not after the previous phase")]
    PhasesNotAscending { index: usize, from: DateTime<Utc> },
    #[error("phase {index}: price {price_id} appears more than once")]
    DuplicatePrice { index: usize, price_id: String },
    #[error("the period schedule changed between the terms before and after the change")]
    ScheduleChanged,
    #[error("cancellation at {at} is not before the current end of service {ends_at}")]
    AlreadyEnded {
        at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    },
    #[error(transparent)]
    Overflow(#[from] Overflow),
    #[error("an invoice needs at least one line")]
    NoLines,
    #[error("line {index}: amount {amount} is not rounded to {currency}")]
    UnroundedLine {
        index: usize,
        amount: Decimal,
        currency: Currency,
    },
}

impl InvoiceError {
    /// The inputs are consistent but their amounts leave the representable
    /// range (a product or sum past `Decimal`'s ~7.9e28): no fix in the
    /// code, the prices or usage themselves cannot be billed.
    pub fn is_out_of_range(&self) -> bool {
        matches!(
            self,
            InvoiceError::Overflow(_)
                | InvoiceError::Price(PriceError::Overflow { .. })
                | InvoiceError::Aggregation {
                    source: AggregationError::Overflow(_),
                    ..
                }
        )
    }
}

impl SubscriptionTerms {
    /// These terms with `phase` taking effect at `phase.from`; phases from
    /// that instant on are replaced.
    pub fn with_phase(&self, phase: Phase) -> SubscriptionTerms {
        let mut phases: Vec<Phase> = self
            .phases
            .iter()
            .filter(|p| p.from < phase.from)
            .cloned()
            .collect();
        phases.push(phase);
        SubscriptionTerms {
            phases,
            ..self.clone()
        }
    }

    /// These terms with service ending at `at`.
    pub fn with_end(&self, at: DateTime<Utc>) -> SubscriptionTerms {
        SubscriptionTerms {
            ends_at: Some(at),
            ..self.clone()
        }
    }

    /// Checks phases are ascending and their prices valid and distinct.
    pub fn validate(&self) -> Result<(), InvoiceError> {
        for (index, phase) in self.phases.iter().enumerate() {
            if index > 0 && phase.from <= self.phases[index - 1].from {
                return Err(InvoiceError::PhasesNotAscending {
                    index,
                    from: phase.from,
                });
            }
            for (position, price) in phase.prices.iter().enumerate() {
                price.validate()?;
                if phase.prices[..position]
                    .iter()
                    .any(|other| other.id == price.id)
                {
                    return Err(InvoiceError::DuplicatePrice {
                        index,
                        price_id: price.id.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// When service is provided: `[schedule.start, ends_at)`.
    fn service(&self) -> Period {
        Period::new(
            self.schedule.start,
            self.ends_at.unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    /// The parts of `window` in service, each with the phase in force.
    fn segments(&self, window: Period) -> Vec<(&Phase, Period)> {
        let Some(window) = window.intersect(&self.service()) else {
            return Vec::new();
        };
        self.phases
            .iter()
            .enumerate()
            .filter_map(|(index, phase)| {
                let until = self
                    .phases
                    .get(index + 1)
                    .map_or(DateTime::<Utc>::MAX_UTC, |next| next.from);
                Period::new(phase.from, until)
                    .intersect(&window)
                    .map(|segment| (phase, segment))
            })
            .collect()
    }
}

/// Lines for subscription becoming ACTIVE: IN_ADVANCE fees of period 0,
/// prorated when it is partial (CALENDAR anchor).
pub fn first_invoice(
    terms: &SubscriptionTerms,
    billed: &[BilledLine],
    currency: Currency,
) -> Result<Vec<InvoiceLine>, InvoiceError> {
    terms.validate()?;
    let expected = flat_lines(terms, 0, BillingTiming::InAdvance, currency)?;
    diff(expected, billed)
}

/// Lines of the invoice that closes period `closing`: its usage, its
/// IN_ARREARS fees, the IN_ADVANCE fees of the next period (unless service
/// ends by then), and LATE_USAGE for earlier periods whose usage grew.
/// Pending proration lines are appended by the caller.
pub fn close_period(
    terms: &SubscriptionTerms,
    closing: u32,
    usage: &UsageByMeter,
    billed: &[BilledLine],
    currency: Currency,
) -> Result<Vec<InvoiceLine>, InvoiceError> {
    terms.validate()?;
    let mut expected = usage_lines(terms, closing, LineKind::Usage, usage, currency)?;
    expected.extend(flat_lines(
        terms,
        closing,
        BillingTiming::InArrears,
        currency,
    )?);
    if let Some(next) = closing.checked_add(1) {
        expected.extend(flat_lines(terms, next, BillingTiming::InAdvance, currency)?);
    }
    for earlier in late_usage_periods(terms, closing, usage)? {
        expected.extend(usage_lines(
            terms,
            earlier,
            LineKind::LateUsage,
            usage,
            currency,
        )?);
    }
    diff(expected, billed)
}

/// Proration lines for a change effective at `effective` (IMMEDIATELY):
/// credits for the IN_ADVANCE fees of `before` and charges for those of
/// `after` over the rest of the current period. Identical credit/charge
/// pairs (a fee the change did not touch) cancel out and are left out.
/// IN_ARREARS fees and usage need no proration: period close splits them.
pub fn change_plan(
    before: &SubscriptionTerms,
    after: &SubscriptionTerms,
    effective: DateTime<Utc>,
    currency: Currency,
) -> Result<Vec<InvoiceLine>, InvoiceError> {
    before.validate()?;
    after.validate()?;
    if before.schedule != after.schedule {
        return Err(InvoiceError::ScheduleChanged);
    }
    let Some((n, _)) = before.schedule.period_containing(effective)? else {
        // Still in trial: nothing was charged, so nothing to prorate.
        return Ok(Vec::new());
    };
    let Some(window) = ProrationWindow::remaining(&before.schedule, n, effective)? else {
        return Ok(Vec::new());
    };
    let credits = proration_lines(before, &window, ProrationSide::Credit, currency)?;
    let mut charges = proration_lines(after, &window, ProrationSide::Charge, currency)?;
    let mut lines = Vec::new();
    for (credit_price, credit) in credits {
        let same = charges.iter().position(|(charge_price, charge)| {
            charge_price == &credit_price
                && charge.period == credit.period
                && charge.quantity == credit.quantity
                && charge.amount == -credit.amount
        });
        match same {
            Some(index) => {
                charges.remove(index);
            }
            None => lines.push(InvoiceLine::from(credit)),
        }
    }
    lines.extend(
        charges
            .into_iter()
            .map(|(_, charge)| InvoiceLine::from(charge)),
    );
    Ok(lines)
}

/// Lines of the final invoice when `terms` are canceled at `at`: usage so
/// far, IN_ARREARS fees for the days used, LATE_USAGE for earlier periods,
/// and credits for the unused IN_ADVANCE days (PRORATION lines; drop them
/// for prorationBehavior NONE). Call it once the previous period has been
/// closed; a cancellation exactly at a period end is cancel-at-period-end.
pub fn cancel_immediately(
    terms: &SubscriptionTerms,
    at: DateTime<Utc>,
    usage: &UsageByMeter,
    billed: &[BilledLine],
    currency: Currency,
) -> Result<Vec<InvoiceLine>, InvoiceError> {
    terms.validate()?;
    if let Some(ends_at) = terms.ends_at
        && at >= ends_at
    {
        return Err(InvoiceError::AlreadyEnded { at, ends_at });
    }
    let Some((n, _)) = terms.schedule.period_containing(at)? else {
        // Canceled during the trial: nothing is charged.
        return Ok(Vec::new());
    };
    let ended = terms.with_end(at);
    let mut expected = usage_lines(&ended, n, LineKind::Usage, usage, currency)?;
    expected.extend(flat_lines(&ended, n, BillingTiming::InArrears, currency)?);
    for earlier in late_usage_periods(&ended, n, usage)? {
        expected.extend(usage_lines(
            &ended,
            earlier,
            LineKind::LateUsage,
            usage,
            currency,
        )?);
    }
    let mut lines = diff(expected, billed)?;
    lines.extend(change_plan(terms, &ended, at, currency)?);
    Ok(lines)
}

/// The flat fees with `timing` that period `n` should carry, one line per
/// phase segment, each prorated by its days over the nominal period's.
fn flat_lines(
    terms: &SubscriptionTerms,
    n: u32,
    timing: BillingTiming,
    currency: Currency,
) -> Result<Vec<InvoiceLine>, InvoiceError> {
    let schedule = &terms.schedule;
    let period = schedule.period(n)?;
    let nominal_days = schedule.days(&schedule.nominal_period(n)?);
    let mut lines = Vec::new();
    for (phase, segment) in terms.segments(period) {
        let days = schedule.days(&segment);
        for price in phase
            .prices
            .iter()
            .filter(|p| p.model == PriceModel::Flat && p.timing == timing)
        {
            let quantity = Decimal::from(phase.quantity);
            let amount = prorate(price.amount_for(quantity)?, days, nominal_days, currency)?;
            let description = if days == nominal_days {
                format!("{quantity} × {}", price.label())
            } else {
                format!(
                    "{quantity} × {} ({days}/{nominal_days} days)",
                    price.label()
                )
            };
            lines.push(InvoiceLine {
                kind: LineKind::Subscription,
                description,
                price_id: Some(price.id.clone()),
                quantity,
                unit_amount: price.unit_amount,
                amount,
                period: segment,
            });
        }
    }
    Ok(lines)
}

/// The usage lines period `n` should carry: one per metered price and
/// stretch of time it was in force, aggregated over that stretch.
fn usage_lines(
    terms: &SubscriptionTerms,
    n: u32,
    kind: LineKind,
    usage: &UsageByMeter,
    currency: Currency,
) -> Result<Vec<InvoiceLine>, InvoiceError> {
    let period = terms.schedule.period(n)?;
    let mut stretches: Vec<(&Price, Period)> = Vec::new();
    for (phase, segment) in terms.segments(period) {
        for price in phase.prices.iter().filter(|p| p.is_metered()) {
            // Extend the price's previous stretch if it is unchanged and
            // contiguous, so a seat change does not reset its tiers.
            let previous = stretches
                .iter_mut()
                .rev()
                .find(|(other, _)| other.id == price.id)
                .filter(|(other, stretch)| *other == price && stretch.end == segment.start);
            match previous {
                Some((_, stretch)) => stretch.end = segment.end,
                None => stretches.push((price, segment)),
            }
        }
    }
    let mut lines = Vec::new();
    for (price, stretch) in stretches {
        let meter_code = price.meter_code.clone().unwrap_or_default();
        let meter = usage
            .meters
            .get(&meter_code)
            .ok_or_else(|| InvoiceError::UnknownMeter {
                price_id: price.id.clone(),
                meter_code: meter_code.clone(),
            })?;
        let events = usage.events.get(&meter_code).map_or(&[][..], Vec::as_slice);
        let quantity =
            meter
                .aggregate(events, stretch)
                .map_err(|source| InvoiceError::Aggregation {
                    meter_code: meter_code.clone(),
                    source,
                })?;
        let amount = currency.round(price.amount_for(quantity)?);
        let description = match kind {
            LineKind::LateUsage => format!("Late usage: {}", price.label()),
            _ => price.label().to_string(),
        };
        lines.push(InvoiceLine {
            kind,
            description,
            price_id: Some(price.id.clone()),
            quantity,
            unit_amount: (price.model == PriceModel::PerUnit)
                .then_some(price.unit_amount)
                .flatten(),
            amount,
            period: stretch,
        });
    }
    Ok(lines)
}

/// Earlier periods (before `closing`) whose events are all provided.
fn late_usage_periods(
    terms: &SubscriptionTerms,
    closing: u32,
    usage: &UsageByMeter,
) -> Result<std::ops::Range<u32>, InvoiceError> {
    let first = match terms.schedule.period_containing(usage.complete_from)? {
        None => 0,
        Some((n, period)) if period.start == usage.complete_from => n,
        Some((n, _)) => n.saturating_add(1),
    };
    Ok(first.min(closing)..closing)
}

/// Proration lines for the IN_ADVANCE fees of `terms` over `window`, one per
/// phase segment, each with the price it prorates.
fn proration_lines<'t>(
    terms: &'t SubscriptionTerms,
    window: &ProrationWindow,
    side: ProrationSide,
    currency: Currency,
) -> Result<Vec<(&'t Price, ProrationLine)>, InvoiceError> {
    let mut lines = Vec::new();
    let schedule = &terms.schedule;
    // Prorations are by whole days: show each part from the local midnight
    // of the day it starts, as its day count already assumes.
    let day_start = |t| {
        local_midnight(schedule.local_date(t), schedule.tz)
            .map_or(t, |midnight| midnight.max(window.period.start))
    };
    for (phase, segment) in terms.segments(window.period) {
        let segment = Period::new(day_start(segment.start), day_start(segment.end));
        let part = ProrationWindow {
            period: segment,
            days: schedule.days(&segment),
            nominal_days: window.nominal_days,
        };
        if part.days <= 0 {
            continue;
        }
        for price in phase
            .prices
            .iter()
            .filter(|p| p.model == PriceModel::Flat && p.timing == BillingTiming::InAdvance)
        {
            lines.push((
                price,
                ProrationLine::new(side, price, phase.quantity, &part, currency)?,
            ));
        }
    }
    Ok(lines)
}

/// Expected lines minus what is billed, per (usage-or-not, price, period):
/// a key with nothing billed yields the expected line; a key billed with a
/// different quantity or amount yields the difference; a matching key
/// yields nothing.
fn diff(
    expected: Vec<InvoiceLine>,
    billed: &[BilledLine],
) -> Result<Vec<InvoiceLine>, InvoiceError> {
    let overflow = || InvoiceError::Overflow(Overflow("billed totals"));
    let mut out = Vec::new();
    for line in expected {
        let mut quantity = Decimal::ZERO;
        let mut amount = Decimal::ZERO;
        for b in billed.iter().filter(|b| {
            b.kind != LineKind::Proration
                && b.kind.is_usage() == line.kind.is_usage()
                && b.price_id == line.price_id
                && b.period == line.period
        }) {
            quantity = quantity.checked_add(b.quantity).ok_or_else(overflow)?;
            amount = amount.checked_add(b.amount).ok_or_else(overflow)?;
        }
        if quantity == line.quantity && amount == line.amount {
            continue;
        }
        let already_billed = !(quantity.is_zero() && amount.is_zero());
        let description = if already_billed && line.kind == LineKind::Subscription {
            format!("Adjustment: {}", line.description)
        } else {
            line.description
        };
        out.push(InvoiceLine {
            description,
            quantity: line.quantity.checked_sub(quantity).ok_or_else(overflow)?,
            amount: line.amount.checked_sub(amount).ok_or_else(overflow)?,
            ..line
        });
    }
    Ok(out)
}

/// A computed invoice: its lines, totals and the span of their periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub currency: Currency,
    pub lines: Vec<InvoiceLine>,
    /// Sum of the (already rounded) line amounts.
    pub subtotal: Decimal,
    /// Equal to `subtotal`: the core knows no taxes or discounts.
    pub total: Decimal,
    /// Earliest line period start.
    pub period_start: DateTime<Utc>,
    /// Latest line period end.
    pub period_end: DateTime<Utc>,
}

impl Invoice {
    /// Builds an invoice from lines; fails on no lines or an amount that is
    /// not rounded to the currency (lines are rounded once, when computed).
    pub fn from_lines(
        lines: Vec<InvoiceLine>,
        currency: Currency,
    ) -> Result<Invoice, InvoiceError> {
        let (Some(period_start), Some(period_end)) = (
            lines.iter().map(|line| line.period.start).min(),
            lines.iter().map(|line| line.period.end).max(),
        ) else {
            return Err(InvoiceError::NoLines);
        };
        let mut subtotal = Decimal::ZERO;
        for (index, line) in lines.iter().enumerate() {
            if currency.round(line.amount) != line.amount {
                return Err(InvoiceError::UnroundedLine {
                    index,
                    amount: line.amount,
                    currency,
                });
            }
            subtotal = subtotal
                .checked_add(line.amount)
                .ok_or(Overflow("invoice subtotal"))?;
        }
        Ok(Invoice {
            currency,
            lines,
            subtotal,
            total: subtotal,
            period_start,
            period_end,
        })
    }
}
