//! Time, as billing sees it.
//!
//! Billing logic never reads the wall clock: it is handed a [`Clock`], and an
//! organization's "now" is its frozen test-clock instant when it has one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use entity::organization;

/// A source of the current instant.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock, for production processes.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always says the same instant (tests, replays).
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Shared handle to the process clock.
pub type SharedClock = Arc<dyn Clock>;

/// An instant as both backends store it (microseconds), so a row built in
/// memory is exactly the row written and need not be read back.
pub fn stored(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    at.trunc_subsecs(6)
}

/// The organization's current time: its test clock when it has one, else `clock`.
pub fn org_now(org: &organization::Model, clock: &dyn Clock) -> DateTime<Utc> {
    org.test_clock_time.unwrap_or_else(|| clock.now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn org(test_clock: Option<DateTime<Utc>>) -> organization::Model {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        organization::Model {
            id: "org".into(),
            name: "Org".into(),
            currency: "USD".into(),
            timezone: "UTC".into(),
            net_terms_days: 30,
            grace_period_hours: 0,
            late_usage_window_days: 35,
            cancel_after_past_due_days: None,
            invoice_prefix: "INV".into(),
            test_clock_time: test_clock,
            test_clock_status: None,
            created_at: at,
        }
    }

    #[test]
    fn a_test_clock_wins_over_the_process_clock() {
        let frozen = Utc.with_ymd_and_hms(2026, 1, 16, 0, 0, 0).unwrap();
        let real = FixedClock(Utc.with_ymd_and_hms(2030, 5, 5, 5, 5, 5).unwrap());
        assert_eq!(org_now(&org(Some(frozen)), &real), frozen);
        assert_eq!(org_now(&org(None), &real), real.0);
    }
}
