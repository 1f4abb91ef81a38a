//! The time-driven life of a subscription, one idempotent step per job kind.
//!
//! Each step runs in one transaction: lock the subject row, check its state
//! (compare-and-set), compute with the pure billing core, write the result,
//! append audit events, record follow-up jobs in the outbox, and mark the job
//! SUCCEEDED in the same transaction. A redelivered job finds the state moved
//! on (or the ledger row already SUCCEEDED) and changes nothing; unique
//! constraints (`invoices(organization_id, billing_key)`, …) are the last guard.
//!
//! - [`start`]: a subscription starts billing (no trial, or trial ended);
//! - [`close`]: period close, including the final invoice of a
//!   cancel-at-period-end and catching up several missed periods in order;
//! - [`change`]: prorations of a plan/quantity change or an immediate cancel;
//! - [`finalize`]: a draft past its grace period is recomputed and finalized;
//! - [`overdue`]: an unpaid invoice past due makes its subscription PAST_DUE.
//!
//! Steps take effect at their **due instant** (the period end, the trial end,
//! the end of the grace period, the due date), not at the moment a worker got
//! to them: a worker outage or a test clock jumping months ahead yields the
//! same invoices, dates and states as workers that ran on time.

pub mod change;
pub mod close;
pub mod draft;
pub mod finalize;
pub mod inputs;
pub mod lock;
pub mod overdue;
pub mod start;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;

use crate::clock::Clock;
use crate::error::WorkflowError;
use crate::job_runs::mark_all_succeeded;
use crate::jobs::Job;
use crate::steps::{StepError, StepOutcome};

/// The audit actor of a job.
pub fn actor(job: &Job) -> String {
    format!("job:{}", job.kind)
}

/// Commits a step's effect together with its SUCCEEDED ledger row, or rolls
/// everything back when another delivery already finished the job.
///
/// The ledger row records when the job really finished (the worker's clock),
/// not the instant the step acted as of: operators read it.
pub(crate) async fn commit_step(
    txn: DatabaseTransaction,
    job: &Job,
    clock: &dyn Clock,
    outcome: StepOutcome,
) -> Result<StepOutcome, StepError> {
    let jobs = std::slice::from_ref(job);
    if !mark_steps(&txn, jobs, clock).await? {
        let mut outcomes = abandon(txn, jobs).await?;
        return Ok(outcomes.pop().unwrap_or(StepOutcome::AlreadyDone));
    }
    txn.commit().await?;
    Ok(outcome)
}

/// Marks `jobs` SUCCEEDED inside `txn`; `false` when another delivery
/// finished one of them meanwhile, and the caller must [`abandon`].
pub(crate) async fn mark_steps(
    txn: &DatabaseTransaction,
    jobs: &[Job],
    clock: &dyn Clock,
) -> Result<bool, StepError> {
    let marked = mark_all_succeeded(txn, jobs.iter().map(|j| j.key.as_str()), clock.now()).await?;
    Ok(usize::try_from(marked).is_ok_and(|n| n == jobs.len()))
}

/// Rolls back the work of jobs another delivery finished: one job is
/// already done; a batch is reported as a transient error, and the worker
/// runs each of its jobs on its own.
pub(crate) async fn abandon(
    txn: DatabaseTransaction,
    jobs: &[Job],
) -> Result<Vec<StepOutcome>, StepError> {
    txn.rollback().await?;
    match jobs {
        [_] => Ok(vec![StepOutcome::AlreadyDone]),
        _ => Err(StepError::Transient(
            "another delivery finished some of the batch's jobs".into(),
        )),
    }
}

impl From<WorkflowError> for StepError {
    /// Database trouble and write races are worth retrying; anything else
    /// (a missing row, corrupt data) will not fix itself.
    fn from(err: WorkflowError) -> StepError {
        match err {
            WorkflowError::Database(db) => StepError::Database(db),
            WorkflowError::Conflict(message) => StepError::Transient(message),
            other => StepError::Permanent(other.to_string()),
        }
    }
}

impl From<billing::InvoiceError> for StepError {
    fn from(err: billing::InvoiceError) -> StepError {
        StepError::Permanent(format!("billing: {err}"))
    }
}

/// The work is not due yet by the organization's clock: retry later.
pub(crate) fn not_due(what: &str, due: DateTime<Utc>, now: DateTime<Utc>) -> StepError {
    StepError::Transient(format!("{what} is due at {due}, it is {now}"))
}
