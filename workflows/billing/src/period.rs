//! Billing periods: half-open `[start, end)` intervals whose boundaries are
//! local midnights in the organization's IANA timezone.
//!
//! Boundary *k* is computed directly from the anchor (never by adding to the
//! previous end), so a schedule cannot drift. Period 0 starts at the
//! schedule's `start` instant (subscription start or trial end) and ends at
//! the first boundary after it; period *n* ≥ 1 runs between consecutive
//! boundaries.
//!
//! Decisions the SPEC leaves open:
//! - **DST**: a local midnight is resolved to the earliest instant whose local
//!   date is the boundary date. An ambiguous midnight (clocks fall back over
//!   it) takes the first occurrence; a midnight skipped by a DST gap takes the
//!   instant of the jump (e.g. 01:00 local when 00:00–00:59 do not exist).
//! - **ANNIVERSARY**: month and year cadences keep the anchor's day, clamped to
//!   the month's last day (Jan 31 → Feb 28 → Mar 31; Feb 29 in leap years).
//!   Week and day cadences step whole days from the anchor date.
//! - **CALENDAR**: MONTH×k starts on the 1st of months whose index since year 0
//!   is a multiple of k (MONTH×3 = calendar quarters Jan/Apr/Jul/Oct, MONTH×6
//!   = halves); YEAR×k on Jan 1 of years divisible by k; WEEK×k on Mondays
//!   (ISO weeks), k-week blocks counted from Monday 1970-01-05; DAY×k on
//!   local midnights, k-day blocks counted from 1970-01-01. The anchor date
//!   is ignored. The first period is partial; its *nominal* period is the
//!   full calendar period containing it, whose day count prorates it.

use chrono::{DateTime, Datelike, Days, LocalResult, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A half-open interval of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Period {
        Period { start, end }
    }

    /// `start <= t < end`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The overlap of two periods, if any.
    pub fn intersect(&self, other: &Period) -> Option<Period> {
        let overlap = Period::new(self.start.max(other.start), self.end.min(other.end));
        (!overlap.is_empty()).then_some(overlap)
    }
}

/// The unit of a billing cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

/// A plan's billing cadence: `count` × `interval` (quarterly = MONTH×3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cadence {
    pub interval: Interval,
    pub count: u32,
}

impl Cadence {
    pub fn new(interval: Interval, count: u32) -> Cadence {
        Cadence { interval, count }
    }
}

/// Where period boundaries fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingAnchor {
    /// On the anchor date's day (clamped for short months).
    Anniversary,
    /// On calendar boundaries (1st of the month, Jan 1, Monday, each day).
    Calendar,
}

/// Why a period could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeriodError {
    #[error("cadence count must be at least 1")]
    ZeroCount,
    #[error("period {0} lies outside the supported date range")]
    OutOfRange(i64),
}

/// The periods of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodSchedule {
    /// Local date the ANNIVERSARY cadence counts from (ignored for CALENDAR).
    pub anchor_local_date: NaiveDate,
    pub cadence: Cadence,
    pub anchor_kind: BillingAnchor,
    pub tz: Tz,
    /// First instant of service: subscription start, or trial end.
    pub start: DateTime<Utc>,
}

const MAX_SEARCH_STEPS: usize = 16;

impl PeriodSchedule {
    /// An ANNIVERSARY schedule anchored on the local date of `start`.
    pub fn anniversary(start: DateTime<Utc>, cadence: Cadence, tz: Tz) -> PeriodSchedule {
        PeriodSchedule {
            anchor_local_date: local_date(start, tz),
            cadence,
            anchor_kind: BillingAnchor::Anniversary,
            tz,
            start,
        }
    }

    /// A CALENDAR schedule starting at `start`.
    pub fn calendar(start: DateTime<Utc>, cadence: Cadence, tz: Tz) -> PeriodSchedule {
        PeriodSchedule {
            anchor_kind: BillingAnchor::Calendar,
            ..PeriodSchedule::anniversary(start, cadence, tz)
        }
    }

    /// Period `n` (0-based). Period 0 starts at `start`.
    pub fn period(&self, n: u32) -> Result<Period, PeriodError> {
        let first = self.first_index()?;
        let k = first + i64::from(n);
        let end = self.boundary(k)?;
        let start = if n == 0 {
            self.start
        } else {
            self.boundary(k - 1)?
        };
        Ok(Period::new(start, end))
    }

    /// The full nominal period that period `n` belongs to: for a partial
    /// first period (CALENDAR, or a start later than the anchor date) the
    /// whole cadence period containing it; otherwise the period itself.
    pub fn nominal_period(&self, n: u32) -> Result<Period, PeriodError> {
        let k = self.first_index()? + i64::from(n);
        Ok(Period::new(self.boundary(k - 1)?, self.boundary(k)?))
    }

    /// The period containing `t` and its number, or `None` when `t` is
    /// before `start` (or so far ahead that `n` overflows `u32`).
    pub fn period_containing(
        &self,
        t: DateTime<Utc>,
    ) -> Result<Option<(u32, Period)>, PeriodError> {
        if t < self.start {
            return Ok(None);
        }
        let n = self.index_after(t)? - self.first_index()?;
        match u32::try_from(n) {
            Ok(n) => Ok(Some((n, self.period(n)?))),
            Err(_) => Ok(None),
        }
    }

    /// Calendar days of `period` in this schedule's timezone: the local date
    /// of `end` minus the local date of `start` (a start during a day counts
    /// that whole day).
    pub fn days(&self, period: &Period) -> i64 {
        calendar_days(period, self.tz)
    }

    /// The local calendar date of `t` in this schedule's timezone.
    pub fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        local_date(t, self.tz)
    }

    /// Index of the first boundary strictly after `start`.
    fn first_index(&self) -> Result<i64, PeriodError> {
        self.index_after(self.start)
    }

    /// Smallest k with `boundary(k) > t`.
    fn index_after(&self, t: DateTime<Utc>) -> Result<i64, PeriodError> {
        if self.cadence.count == 0 {
            return Err(PeriodError::ZeroCount);
        }
        // The estimate is within a step or two; walk to the exact index.
        let mut k = self.estimate_index(local_date(t, self.tz));
        for _ in 0..MAX_SEARCH_STEPS {
            if self.boundary(k)? <= t {
                k += 1;
            } else if self.boundary(k - 1)? > t {
                k -= 1;
            } else {
                return Ok(k);
            }
        }
        Err(PeriodError::OutOfRange(k))
    }

    /// Boundary k as an instant.
    fn boundary(&self, k: i64) -> Result<DateTime<Utc>, PeriodError> {
        self.boundary_date(k)
            .and_then(|date| local_midnight(date, self.tz))
            .ok_or(PeriodError::OutOfRange(k))
    }

    /// Boundary k as a local date, straight from the anchor.
    fn boundary_date(&self, k: i64) -> Option<NaiveDate> {
        let count = i64::from(self.cadence.count);
        let anchor = self.anchor_local_date;
        match (self.anchor_kind, self.cadence.interval) {
            (BillingAnchor::Anniversary, Interval::Month) => {
                let month = month_index(anchor).checked_add(k.checked_mul(count)?)?;
                clamped_date(month, anchor.day())
            }
            (BillingAnchor::Anniversary, Interval::Year) => {
                let month =
                    month_index(anchor).checked_add(k.checked_mul(count)?.checked_mul(12)?)?;
                clamped_date(month, anchor.day())
            }
            (BillingAnchor::Anniversary, Interval::Week) => {
                add_days(anchor, k.checked_mul(count)?.checked_mul(7)?)
            }
            (BillingAnchor::Anniversary, Interval::Day) => add_days(anchor, k.checked_mul(count)?),
            (BillingAnchor::Calendar, Interval::Month) => clamped_date(k.checked_mul(count)?, 1),
            (BillingAnchor::Calendar, Interval::Year) => {
                clamped_date(k.checked_mul(count)?.checked_mul(12)?, 1)
            }
            (BillingAnchor::Calendar, Interval::Week) => {
                add_days(week_epoch(), k.checked_mul(count)?.checked_mul(7)?)
            }
            (BillingAnchor::Calendar, Interval::Day) => {
                add_days(day_epoch(), k.checked_mul(count)?)
            }
        }
    }

    /// A k whose boundary date is close to `date` (floor of the distance).
    fn estimate_index(&self, date: NaiveDate) -> i64 {
        let count = i64::from(self.cadence.count.max(1));
        let anchor = self.anchor_local_date;
        let days_between = |from: NaiveDate| date.signed_duration_since(from).num_days();
        match (self.anchor_kind, self.cadence.interval) {
            (BillingAnchor::Anniversary, Interval::Month) => {
                (month_index(date) - month_index(anchor)).div_euclid(count)
            }
            (BillingAnchor::Anniversary, Interval::Year) => {
                (i64::from(date.year()) - i64::from(anchor.year())).div_euclid(count)
            }
            (BillingAnchor::Anniversary, Interval::Week) => {
                days_between(anchor).div_euclid(7 * count)
            }
            (BillingAnchor::Anniversary, Interval::Day) => days_between(anchor).div_euclid(count),
            (BillingAnchor::Calendar, Interval::Month) => month_index(date).div_euclid(count),
            (BillingAnchor::Calendar, Interval::Year) => i64::from(date.year()).div_euclid(count),
            (BillingAnchor::Calendar, Interval::Week) => {
                days_between(week_epoch()).div_euclid(7 * count)
            }
            (BillingAnchor::Calendar, Interval::Day) => days_between(day_epoch()).div_euclid(count),
        }
    }
}

/// Months since January of year 0.
fn month_index(date: NaiveDate) -> i64 {
    i64::from(date.year()) * 12 + i64::from(date.month0())
}

/// Day `day` of month `month_index`, clamped to the month's last day.
fn clamped_date(month_index: i64, day: u32) -> Option<NaiveDate> {
    let year = i32::try_from(month_index.div_euclid(12)).ok()?;
    let month0 = u32::try_from(month_index.rem_euclid(12)).ok()?;
    let first = NaiveDate::from_ymd_opt(year, month0 + 1, 1)?;
    let last_day = first.checked_add_months(Months::new(1))?.pred_opt()?.day();
    NaiveDate::from_ymd_opt(year, month0 + 1, day.min(last_day))
}

fn add_days(date: NaiveDate, days: i64) -> Option<NaiveDate> {
    let magnitude = Days::new(days.unsigned_abs());
    if days >= 0 {
        date.checked_add_days(magnitude)
    } else {
        date.checked_sub_days(magnitude)
    }
}

/// The Monday CALENDAR weeks are counted from.
fn week_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 5).unwrap_or_default()
}

/// The day CALENDAR day blocks are counted from.
fn day_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

/// The local calendar date of `t` in `tz`.
pub fn local_date(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// Calendar days of `period` in `tz` (local date of end − local date of start).
pub fn calendar_days(period: &Period, tz: Tz) -> i64 {
    local_date(period.end, tz)
        .signed_duration_since(local_date(period.start, tz))
        .num_days()
}

/// The instant local `date` begins in `tz`: the earliest instant whose local
/// date is `date` or later. `None` only outside chrono's range.
pub fn local_midnight(date: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    let naive = date.and_hms_opt(0, 0, 0)?;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Some(first.min(second).with_timezone(&Utc)),
        LocalResult::None => {
            // Midnight falls in a DST gap: find the jump by bisection. Offsets
            // are within ±26h, so the answer lies within ±36h of naive UTC.
            let centre = naive.and_utc().timestamp();
            let (mut lo, mut hi) = (centre - 36 * 3600, centre + 36 * 3600);
            let reached = |seconds: i64| {
                DateTime::from_timestamp(seconds, 0).map(|t| local_date(t, tz) >= date)
            };
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if reached(mid)? {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            DateTime::from_timestamp(hi, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("valid")
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid")
    }

    fn monthly() -> Cadence {
        Cadence::new(Interval::Month, 1)
    }

    fn starts(schedule: &PeriodSchedule, count: u32) -> Vec<NaiveDate> {
        (0..count)
            .map(|n| schedule.local_date(schedule.period(n).expect("period").start))
            .collect()
    }

    #[test]
    fn anniversary_clamps_and_returns_to_the_anchor_day() {
        let schedule = PeriodSchedule::anniversary(utc(2026, 1, 31, 0, 0), monthly(), Tz::UTC);
        assert_eq!(
            starts(&schedule, 4),
            vec![
                date(2026, 1, 31),
                date(2026, 2, 28),
                date(2026, 3, 31),
                date(2026, 4, 30)
            ]
        );
        let leap = PeriodSchedule::anniversary(utc(2028, 1, 31, 0, 0), monthly(), Tz::UTC);
        assert_eq!(
            starts(&leap, 3),
            vec![date(2028, 1, 31), date(2028, 2, 29), date(2028, 3, 31)]
        );
        let yearly = PeriodSchedule::anniversary(
            utc(2028, 2, 29, 0, 0),
            Cadence::new(Interval::Year, 1),
            Tz::UTC,
        );
        assert_eq!(
            starts(&yearly, 5),
            vec![
                date(2028, 2, 29),
                date(2029, 2, 28),
                date(2030, 2, 28),
                date(2031, 2, 28),
                date(2032, 2, 29)
            ]
        );
    }

    #[test]
    fn calendar_first_period_is_partial_with_a_full_nominal_period() {
        let schedule = PeriodSchedule::calendar(utc(2026, 1, 16, 0, 0), monthly(), Tz::UTC);
        let first = schedule.period(0).expect("period");
        assert_eq!(
            first,
            Period::new(utc(2026, 1, 16, 0, 0), utc(2026, 2, 1, 0, 0))
        );
        assert_eq!(schedule.days(&first), 16);
        let nominal = schedule.nominal_period(0).expect("nominal");
        assert_eq!(
            nominal,
            Period::new(utc(2026, 1, 1, 0, 0), utc(2026, 2, 1, 0, 0))
        );
        assert_eq!(schedule.days(&nominal), 31);
        assert_eq!(
            schedule.period(1).expect("period"),
            Period::new(utc(2026, 2, 1, 0, 0), utc(2026, 3, 1, 0, 0))
        );
        // Starting exactly on the 1st gives a full first period.
        let aligned = PeriodSchedule::calendar(utc(2026, 2, 1, 0, 0), monthly(), Tz::UTC);
        assert_eq!(aligned.period(0), aligned.nominal_period(0));
    }

    #[test]
    fn calendar_quarters_years_and_weeks() {
        let quarterly = PeriodSchedule::calendar(
            utc(2026, 2, 10, 0, 0),
            Cadence::new(Interval::Month, 3),
            Tz::UTC,
        );
        assert_eq!(
            quarterly.period(0).expect("period"),
            Period::new(utc(2026, 2, 10, 0, 0), utc(2026, 4, 1, 0, 0))
        );
        assert_eq!(
            quarterly.nominal_period(0).expect("nominal").start,
            utc(2026, 1, 1, 0, 0)
        );
        let yearly = PeriodSchedule::calendar(
            utc(2026, 6, 1, 0, 0),
            Cadence::new(Interval::Year, 1),
            Tz::UTC,
        );
        assert_eq!(
            yearly.period(1).expect("period").start,
            utc(2027, 1, 1, 0, 0)
        );
        // 2026-01-16 is a Friday; the next week starts Monday 2026-01-19.
        let weekly = PeriodSchedule::calendar(
            utc(2026, 1, 16, 0, 0),
            Cadence::new(Interval::Week, 1),
            Tz::UTC,
        );
        assert_eq!(
            weekly.period(0).expect("period").end,
            utc(2026, 1, 19, 0, 0)
        );
        assert_eq!(weekly.days(&weekly.nominal_period(0).expect("nominal")), 7);
    }

    #[test]
    fn boundaries_are_local_midnights() {
        let tz: Tz = "America/New_York".parse().expect("tz");
        // 2026-03-01 00:00 EST = 05:00Z; 2026-04-01 00:00 EDT = 04:00Z.
        let schedule = PeriodSchedule::anniversary(utc(2026, 3, 1, 5, 0), monthly(), tz);
        assert_eq!(
            schedule.period(0).expect("period"),
            Period::new(utc(2026, 3, 1, 5, 0), utc(2026, 4, 1, 4, 0))
        );
        assert_eq!(schedule.days(&schedule.period(0).expect("period")), 31);
    }

    #[test]
    fn midnight_in_a_dst_gap_is_the_instant_of_the_jump() {
        // São Paulo skipped 2018-11-04 00:00–00:59; the day began at 01:00 -02.
        let tz: Tz = "America/Sao_Paulo".parse().expect("tz");
        assert_eq!(
            local_midnight(date(2018, 11, 4), tz),
            Some(utc(2018, 11, 4, 3, 0))
        );
    }

    #[test]
    fn ambiguous_midnight_is_its_first_occurrence() {
        // Havana fell back from 01:00 CDT to 00:00 CST on 2023-11-05.
        let tz: Tz = "America/Havana".parse().expect("tz");
        assert_eq!(
            local_midnight(date(2023, 11, 5), tz),
            Some(utc(2023, 11, 5, 4, 0))
        );
    }

    #[test]
    fn schedules_cross_dst_gaps_without_drift() {
        let tz: Tz = "America/Sao_Paulo".parse().expect("tz");
        let start = local_midnight(date(2018, 10, 4), tz).expect("midnight");
        let schedule = PeriodSchedule::anniversary(start, monthly(), tz);
        let october = schedule.period(0).expect("period");
        let november = schedule.period(1).expect("period");
        assert_eq!(october.end, utc(2018, 11, 4, 3, 0));
        assert_eq!(november.start, october.end);
        assert_eq!(
            (schedule.days(&october), schedule.days(&november)),
            (31, 30)
        );
        assert_eq!(
            schedule
                .period_containing(utc(2018, 11, 4, 2, 59))
                .expect("ok")
                .map(|(n, _)| n),
            Some(0)
        );
    }

    #[test]
    fn period_containing_finds_the_tile() {
        let schedule = PeriodSchedule::calendar(utc(2026, 1, 16, 10, 30), monthly(), Tz::UTC);
        assert_eq!(
            schedule.period_containing(utc(2026, 1, 16, 10, 29)),
            Ok(None)
        );
        let (n, period) = schedule
            .period_containing(utc(2026, 1, 16, 10, 30))
            .expect("ok")
            .expect("some");
        assert_eq!((n, period.start), (0, utc(2026, 1, 16, 10, 30)));
        let (n, period) = schedule
            .period_containing(utc(2026, 3, 1, 0, 0))
            .expect("ok")
            .expect("some");
        assert_eq!((n, period.start), (2, utc(2026, 3, 1, 0, 0)));
        // A start during the day still counts the whole day.
        assert_eq!(schedule.days(&schedule.period(0).expect("period")), 16);
    }

    #[test]
    fn zero_count_is_an_error() {
        let schedule = PeriodSchedule::anniversary(
            utc(2026, 1, 1, 0, 0),
            Cadence::new(Interval::Month, 0),
            Tz::UTC,
        );
        assert_eq!(schedule.period(0), Err(PeriodError::ZeroCount));
    }
}
