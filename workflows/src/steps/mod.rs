//! The step interface: what a job *does*, in one idempotent database transaction.
//!
//! The worker machinery (`worker` crate) delivers a [`Job`] at least once; a
//! step turns at-least-once delivery into an exactly-once effect:
//!
//! 1. open a transaction on `db`;
//! 2. lock/load its subject, check state with compare-and-set updates, write
//!    its effect (backed by unique constraints);
//! 3. call [`mark_succeeded`] **inside the same transaction** and commit.
//!    If `mark_succeeded` returns `false` another delivery already finished the
//!    job: roll back and return [`StepOutcome::AlreadyDone`].
//!
//! Because success is committed together with the effect, a worker that
//! commits and then crashes leaves a SUCCEEDED ledger row, and the redelivered
//! job is acknowledged without effect.
//!
//! Billing steps implement one function of this shape
//!
//! ```ignore
//! pub async fn run(db: &DatabaseConnection, clock: &dyn Clock, job: &Job)
//!     -> Result<StepOutcome, StepError>;
//! ```
//!
//! and are wired into [`run`] (the per-[`JobKind`] dispatch). Tests and
//! embedders can swap a kind's step through a [`StepRegistry`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::clock::Clock;
use crate::jobs::{Job, JobKind};

pub use crate::job_runs::mark_succeeded;

/// What a step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The effect was written and the job marked SUCCEEDED in the same transaction.
    Done,
    /// The work had already been done (by an earlier delivery); nothing written.
    AlreadyDone,
    /// Nothing to do (e.g. the subject was canceled meanwhile); the job is complete.
    Skipped(String),
}

/// Why a step failed. The machinery retries [`StepError::Transient`] and
/// [`StepError::Database`] with backoff up to the attempt limit; a
/// [`StepError::Permanent`] error makes the job DEAD at once.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("{0}")]
    Transient(String),
    #[error("permanent: {0}")]
    Permanent(String),
}

impl StepError {
    /// A short, stable label for metrics (`reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            StepError::Database(_) => "database",
            StepError::Transient(_) => "transient",
            StepError::Permanent(_) => "permanent",
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, StepError::Permanent(_))
    }
}

/// The future a step returns.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<StepOutcome, StepError>> + Send + 'a>>;

/// A step, as a value (so a registry can hold one per kind).
pub trait Step: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        clock: &'a dyn Clock,
        job: &'a Job,
    ) -> StepFuture<'a>;
}

/// Any `Fn(db, clock, job) -> future` is a step.
impl<F> Step for F
where
    F: for<'a> Fn(&'a DatabaseConnection, &'a dyn Clock, &'a Job) -> StepFuture<'a>
        + Send
        + Sync
        + 'static,
{
    fn run<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        clock: &'a dyn Clock,
        job: &'a Job,
    ) -> StepFuture<'a> {
        self(db, clock, job)
    }
}

/// The production dispatch: one step per job kind (see [`crate::lifecycle`]).
pub async fn run(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    job: &Job,
) -> Result<StepOutcome, StepError> {
    use crate::lifecycle::{change, close, finalize, overdue, start};
    match job.kind {
        JobKind::SubscriptionStart | JobKind::TrialExpiry => start::run(db, clock, job).await,
        JobKind::PeriodClose => close::run(db, clock, job).await,
        JobKind::Proration => change::run(db, clock, job).await,
        JobKind::InvoiceFinalize => finalize::run(db, clock, job).await,
        JobKind::InvoiceOverdue => overdue::run(db, clock, job).await,
    }
}

fn default_step<'a>(
    db: &'a DatabaseConnection,
    clock: &'a dyn Clock,
    job: &'a Job,
) -> StepFuture<'a> {
    Box::pin(run(db, clock, job))
}

/// Which step runs for each kind: [`run`] unless overridden.
#[derive(Clone, Default)]
pub struct StepRegistry {
    overrides: HashMap<JobKind, Arc<dyn Step>>,
}

impl StepRegistry {
    /// The production steps.
    pub fn new() -> StepRegistry {
        StepRegistry::default()
    }

    /// Replaces the step of `kind` (tests, embedders).
    pub fn with(mut self, kind: JobKind, step: impl Step) -> StepRegistry {
        self.overrides.insert(kind, Arc::new(step));
        self
    }

    /// Whether jobs of `kind` can run several to a transaction
    /// ([`StepRegistry::run_batch`]): period closes, unless their step was replaced.
    pub fn batches(&self, kind: JobKind) -> bool {
        kind == JobKind::PeriodClose && !self.overrides.contains_key(&kind)
    }

    /// Runs jobs of one organization and a batching kind in one transaction
    /// (see [`crate::lifecycle::close::run_batch`]); their outcomes, in order.
    pub async fn run_batch(
        &self,
        db: &DatabaseConnection,
        clock: &dyn Clock,
        jobs: &[Job],
    ) -> Result<Vec<StepOutcome>, StepError> {
        match jobs.first() {
            Some(job) if self.batches(job.kind) => {
                crate::lifecycle::close::run_batch(db, clock, jobs).await
            }
            Some(job) => Err(StepError::Permanent(format!(
                "{} jobs do not run in batches",
                job.kind
            ))),
            None => Ok(Vec::new()),
        }
    }

    /// Runs the step registered for `job.kind`.
    pub fn run<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        clock: &'a dyn Clock,
        job: &'a Job,
    ) -> StepFuture<'a> {
        match self.overrides.get(&job.kind) {
            Some(step) => step.run(db, clock, job),
            None => default_step(db, clock, job),
        }
    }
}

impl std::fmt::Debug for StepRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepRegistry")
            .field("overrides", &self.overrides.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Convenience for steps: marks success in `txn` at `now`, mapping "someone
/// else finished first" to `Ok(false)`.
pub async fn finish<C: ConnectionTrait>(
    txn: &C,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    mark_succeeded(txn, &job.key, now).await
}
