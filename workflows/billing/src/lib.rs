//! Valora's pure billing core.
//!
//! Everything here is a pure function of its arguments: no clock, no I/O, no
//! database, no floating point. [`money`] holds currencies and the one
//! rounding rule (each invoice line rounded once, half away from zero);
//! [`price`] turns a quantity into an amount under the five price models;
//! [`aggregation`] folds usage events into a quantity; [`period`] lays out
//! billing periods as local midnights in the organization's timezone,
//! computed from the anchor so they never drift; [`proration`] prorates flat
//! fees by calendar days; [`invoice`] computes invoice lines by
//! recompute-and-diff against what was already billed, so every step is
//! idempotent; and [`content_hash`](mod@content_hash) gives each invoice a stable SHA-256 of
//! its canonical form. The workers' database steps feed persisted inputs in
//! and store what comes out.

pub mod aggregation;
pub mod content_hash;
pub mod invoice;
pub mod money;
pub mod period;
pub mod price;
pub mod proration;

pub use aggregation::{Aggregation, AggregationError, Meter, UsageEvent, aggregate};
pub use content_hash::{canonical_form, content_hash};
pub use invoice::{
    BilledLine, Invoice, InvoiceError, InvoiceLine, LineKind, Phase, SubscriptionTerms,
    UsageByMeter, cancel_immediately, change_plan, close_period, first_invoice,
};
pub use money::{Currency, MoneyError, Overflow};
pub use period::{
    BillingAnchor, Cadence, Interval, Period, PeriodError, PeriodSchedule, calendar_days,
    local_date, local_midnight,
};
pub use price::{BillingTiming, Price, PriceError, PriceModel, Tier};
pub use proration::{ProrationLine, ProrationSide, ProrationWindow, prorate};
