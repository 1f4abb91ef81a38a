//! The kinds of durable job, their deterministic keys, and recording them in
//! the outbox inside the business transaction that calls for them.
//!
//! A job key names *what* the job does (`period_close:{subscription}:{period_start}`),
//! so enqueueing the same work twice — from the outbox relay, from the sweeper,
//! from two workers — is harmless: the key is the unit of deduplication.

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Set};
use serde::{Deserialize, Serialize};

/// One kind of job, one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A subscription without trial starts: open its first period, invoice IN_ADVANCE fees.
    SubscriptionStart,
    /// TRIALING → ACTIVE at `trialEnd`, first period opened and invoiced.
    TrialExpiry,
    /// Close the current period of a subscription and open the next.
    PeriodClose,
    /// Proration lines (or invoice) for a plan/quantity change or an immediate cancel.
    Proration,
    /// Finalize a DRAFT invoice after the grace period.
    InvoiceFinalize,
    /// An OPEN invoice past `dueAt` makes its subscription PAST_DUE.
    InvoiceOverdue,
}

impl JobKind {
    pub const ALL: [JobKind; 6] = [
        JobKind::SubscriptionStart,
        JobKind::TrialExpiry,
        JobKind::PeriodClose,
        JobKind::Proration,
        JobKind::InvoiceFinalize,
        JobKind::InvoiceOverdue,
    ];

    /// The queue (and metric label) name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SubscriptionStart => "subscription_start",
            JobKind::TrialExpiry => "trial_expiry",
            JobKind::PeriodClose => "period_close",
            JobKind::Proration => "proration",
            JobKind::InvoiceFinalize => "invoice_finalize",
            JobKind::InvoiceOverdue => "invoice_overdue",
        }
    }

    pub fn parse(text: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit of work: its kind, key, subject and when it is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub kind: JobKind,
    /// Deterministic: the same work always has the same key.
    pub key: String,
    pub organization_id: String,
    /// The row the job acts on (a subscription, an invoice…).
    pub subject_id: String,
    /// Not to run before this instant (organization time).
    pub run_at: DateTime<Utc>,
}

impl Job {
    fn new(
        kind: JobKind,
        organization_id: &str,
        subject_id: &str,
        discriminator: &str,
        run_at: DateTime<Utc>,
    ) -> Job {
        Job {
            kind,
            key: format!("{}:{subject_id}:{discriminator}", kind.as_str()),
            organization_id: organization_id.to_string(),
            subject_id: subject_id.to_string(),
            run_at,
        }
    }

    pub fn subscription_start(org: &str, subscription: &str, start: DateTime<Utc>) -> Job {
        Job::new(
            JobKind::SubscriptionStart,
            org,
            subscription,
            &instant(start),
            start,
        )
    }

    pub fn trial_expiry(org: &str, subscription: &str, trial_end: DateTime<Utc>) -> Job {
        Job::new(
            JobKind::TrialExpiry,
            org,
            subscription,
            &instant(trial_end),
            trial_end,
        )
    }

    /// Closing the period that started at `period_start` and ends at `period_end`.
    pub fn period_close(
        org: &str,
        subscription: &str,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
    ) -> Job {
        Job::new(
            JobKind::PeriodClose,
            org,
            subscription,
            &instant(period_start),
            period_end,
        )
    }

    /// Prorating one recorded subscription change.
    pub fn proration(org: &str, subscription: &str, change_id: &str, at: DateTime<Utc>) -> Job {
        Job::new(JobKind::Proration, org, subscription, change_id, at)
    }

    pub fn invoice_finalize(org: &str, invoice: &str, at: DateTime<Utc>) -> Job {
        Job::new(JobKind::InvoiceFinalize, org, invoice, "finalize", at)
    }

    pub fn invoice_overdue(org: &str, invoice: &str, due_at: DateTime<Utc>) -> Job {
        Job::new(JobKind::InvoiceOverdue, org, invoice, "overdue", due_at)
    }

    /// Cancelling the subscription of an invoice still unpaid at `at`
    /// (the organization's `cancelAfterPastDueDays` after it went overdue).
    pub fn past_due_cancellation(org: &str, invoice: &str, at: DateTime<Utc>) -> Job {
        Job::new(JobKind::InvoiceOverdue, org, invoice, "cancel", at)
    }

    /// Whether this overdue-queue job is the cancellation one.
    pub fn is_past_due_cancellation(&self) -> bool {
        self.kind == JobKind::InvoiceOverdue && self.key.ends_with(":cancel")
    }
}

/// Keys carry instants in one fixed spelling so the same period always yields the same key.
fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Records `job` in the outbox, inside the caller's transaction, so the job
/// exists exactly when the state change that needs it commits.
pub async fn record_in_outbox<C: ConnectionTrait>(
    db: &C,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    record_all_in_outbox(db, [(job, now)]).await
}

/// [`record_in_outbox`] for several jobs (each with its recording instant),
/// in one statement.
pub async fn record_all_in_outbox<'j, C: ConnectionTrait>(
    db: &C,
    jobs: impl IntoIterator<Item = (&'j Job, DateTime<Utc>)>,
) -> Result<(), DbErr> {
    let rows = jobs
        .into_iter()
        .map(|(job, now)| {
            Ok(entity::outbox::ActiveModel {
                organization_id: Set(job.organization_id.clone()),
                job_kind: Set(job.kind.as_str().to_string()),
                job_key: Set(job.key.clone()),
                subject_id: Set(job.subject_id.clone()),
                payload: Set(serde_json::to_value(job).map_err(|e| DbErr::Custom(e.to_string()))?),
                run_at: Set(job.run_at),
                created_at: Set(now),
                relayed_at: Set(None),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, DbErr>>()?;
    if rows.is_empty() {
        return Ok(());
    }
    entity::outbox::Entity::insert_many(rows)
        .exec_without_returning(db)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn keys_name_the_work() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let job = Job::period_close("org1", "sub1", start, end);
        assert_eq!(job.key, "period_close:sub1:2026-01-01T00:00:00Z");
        assert_eq!(job.run_at, end);
        assert_eq!(
            job,
            Job::period_close("org1", "sub1", start, end),
            "deterministic"
        );
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in JobKind::ALL {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(JobKind::parse("nope"), None);
    }
}
