//! What every part of a worker process shares: the database, the clock, the
//! queues, the settings and the steps; plus the two operations everything is
//! built from — [`Runtime::enqueue`] (ledger + push) and [`Runtime::execute`]
//! (claim + step + record).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use entity::{JobState, job_run, organization};
use futures::FutureExt;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use tracing::Instrument;
use workflows::clock::{SharedClock, org_now};
use workflows::jobs::{Job, JobKind};
use workflows::steps::{StepError, StepOutcome, StepRegistry};

use crate::config::JobSettings;
use crate::job_runs::{self, chrono};
use crate::metrics;
use crate::queues::{QueueError, Queues};
use crate::retry::backoff;

/// How many times `requeue_after` a push may wait, while its queue still
/// holds waiting messages, before it counts as lost (see
/// [`Runtime::lost_push_cutoffs`]).
pub const BUSY_QUEUE_PATIENCE: u32 = 10;

/// Why enqueueing failed.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Database(#[from] DbErr),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What [`Runtime::enqueue`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// New key; pushed (due) or left for the scheduled scan (not due yet).
    New { pushed: bool },
    /// Known key whose push may have been lost (or was never made): pushed again.
    Repushed,
    /// Known key, nothing to do (running, done, recently pushed, dead…).
    Known,
}

/// Counters tests and health checks can read.
#[derive(Debug, Default)]
pub struct Stats {
    pub pushes: AtomicU64,
    pub claims: AtomicU64,
    pub duplicates: AtomicU64,
}

/// The shared state of one worker process.
pub struct Runtime {
    pub db: DatabaseConnection,
    pub clock: SharedClock,
    pub queues: Queues,
    pub settings: JobSettings,
    pub steps: StepRegistry,
    pub timeouts: HashMap<JobKind, Duration>,
    pub stats: Stats,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("queues", &self.queues)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The timeout of one attempt of `kind`.
    pub fn timeout_for(&self, kind: JobKind) -> Duration {
        self.timeouts
            .get(&kind)
            .copied()
            .unwrap_or(self.settings.job_timeout)
    }

    async fn unmark_push(&self, key: &str) -> Result<(), DbErr> {
        job_run::Entity::update_many()
            .col_expr(
                job_run::Column::NextAttemptAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(job_run::Column::JobKey.eq(key))
            .filter(job_run::Column::State.eq(JobState::Queued))
            .exec(&self.db)
            .await
            .map(|_| ())
    }

    /// Records `job` in the ledger and pushes it when due at `org_now`.
    ///
    /// Dedup by key: a known key is pushed again only when it is QUEUED and its
    /// push is missing or counts as lost ([`Runtime::lost_push_cutoffs`]).
    pub async fn enqueue(
        &self,
        job: &Job,
        org_now: DateTime<Utc>,
        source: &'static str,
    ) -> Result<Enqueued, EnqueueError> {
        let mut results = self.enqueue_all(&[(job, org_now)], source).await?;
        results.pop().unwrap_or(Ok(Enqueued::Known))
    }

    /// [`Runtime::enqueue`] for several jobs (each with its organization's
    /// now): one ledger insert for all, one statement to take the pushes of
    /// known keys, then the pushes. The outer error is the database's (then
    /// nothing changed); the inner ones are pushes that failed (those rows
    /// are left unpushed, for the sweeper). Results in the order of `jobs`.
    pub async fn enqueue_all(
        &self,
        jobs: &[(&Job, DateTime<Utc>)],
        source: &'static str,
    ) -> Result<Vec<Result<Enqueued, EnqueueError>>, DbErr> {
        let now = self.now();
        let due: HashMap<&str, bool> = jobs
            .iter()
            .map(|(job, org_now)| (job.key.as_str(), job.run_at <= *org_now))
            .collect();
        let is_due = |job: &Job| due.get(job.key.as_str()).copied().unwrap_or(false);
        let mut seen = std::collections::HashSet::with_capacity(jobs.len());
        let unique: Vec<&Job> = jobs
            .iter()
            .map(|(job, _)| *job)
            .filter(|job| seen.insert(job.key.as_str()))
            .collect();
        let inserted = job_runs::insert_all_queued(
            &self.db,
            &unique,
            |job| is_due(job).then_some(now),
            self.settings.max_attempts,
            now,
        )
        .await?;
        let known_due: Vec<&Job> = unique
            .iter()
            .copied()
            .filter(|job| !inserted.contains(&job.key) && is_due(job))
            .collect();
        let mut repush = Vec::new();
        let kinds: Vec<JobKind> = known_due.iter().map(|job| job.kind).collect();
        for (kind, stale_before) in self.lost_push_cutoffs(&kinds, now).await {
            let keys: Vec<&str> = known_due
                .iter()
                .filter(|job| job.kind == kind)
                .map(|job| job.key.as_str())
                .collect();
            repush.extend(job_runs::take_pushes(&self.db, &keys, stale_before, now).await?);
        }
        // What each job comes to, and the pushes it needs.
        let mut outcomes: HashMap<&str, Enqueued> = HashMap::with_capacity(unique.len());
        let mut to_push: Vec<(&Job, &'static str)> = Vec::new();
        for job in &unique {
            let outcome = if inserted.contains(&job.key) {
                let pushed = is_due(job);
                if pushed {
                    to_push.push((job, source));
                }
                Enqueued::New { pushed }
            } else if repush.contains(&job.key) {
                to_push.push((job, "requeue"));
                Enqueued::Repushed
            } else {
                Enqueued::Known
            };
            outcomes.insert(job.key.as_str(), outcome);
        }
        let mut failed = self.push_all(&to_push).await;
        let mut results = Vec::with_capacity(jobs.len());
        let mut handled = std::collections::HashSet::with_capacity(jobs.len());
        for (job, _) in jobs {
            // A key listed twice is enqueued once.
            let result = match handled.insert(job.key.as_str()) {
                true => match failed.remove(job.key.as_str()) {
                    Some(e) => Err(e),
                    None => Ok(outcomes
                        .get(job.key.as_str())
                        .copied()
                        .unwrap_or(Enqueued::Known)),
                },
                false => Ok(Enqueued::Known),
            };
            results.push(result);
        }
        Ok(results)
    }

    /// Pushes jobs this caller took the right to push (recorded as pushed in
    /// the ledger), each with its push source; returns the failed ones, by
    /// key, which are marked unpushed again so that the next sweep pushes
    /// them.
    ///
    /// Jobs of a batching kind ([`StepRegistry::batches`]) go one message per
    /// `close_batch` jobs of an organization: the worker a message reaches
    /// claims that many due jobs of its kind and organization, whichever
    /// they are ([`Runtime::execute`]), so one message per job would leave
    /// all but one in `close_batch` to be delivered, found taken and acked.
    /// The jobs a message covers are pushed, and fail, together.
    async fn push_all<'j>(
        &self,
        jobs: &[(&'j Job, &'static str)],
    ) -> HashMap<&'j str, EnqueueError> {
        let per_message = self.settings.close_batch.max(1) as usize;
        let mut messages: Vec<Vec<(&Job, &'static str)>> = Vec::new();
        let mut open: HashMap<(JobKind, &str), usize> = HashMap::new();
        for &(job, source) in jobs {
            if !self.steps.batches(job.kind) {
                messages.push(vec![(job, source)]);
                continue;
            }
            let group = (job.kind, job.organization_id.as_str());
            match open.get(&group) {
                Some(&m) if messages[m].len() < per_message => messages[m].push((job, source)),
                _ => {
                    open.insert(group, messages.len());
                    messages.push(vec![(job, source)]);
                }
            }
        }
        let mut failed = HashMap::new();
        for covered in messages {
            let (carrier, _) = covered[0];
            match self.queues.push(carrier).await {
                Ok(()) => {
                    self.stats.pushes.fetch_add(1, Ordering::Relaxed);
                    for (job, source) in &covered {
                        metrics::enqueued(job.kind, source);
                    }
                }
                Err(e) => {
                    for (job, _) in &covered {
                        let _ = self.unmark_push(&job.key).await;
                        let error = match job.key == carrier.key {
                            true => QueueError(e.0.clone()),
                            false => QueueError(format!("{} (carried by {})", e.0, carrier.key)),
                        };
                        failed.insert(job.key.as_str(), error.into());
                    }
                }
            }
        }
        failed
    }

    /// For each of `kinds`, the instant before which a QUEUED row's push
    /// counts as lost (flushed Redis, lost push), so the row is pushed again.
    ///
    /// That is `requeue_after` ago while the kind's queue is empty. While it
    /// still holds waiting messages, a row pushed that long ago is most
    /// likely behind them, late rather than lost, and pushing it again only
    /// lengthens the backlog (a 100,000-subscription billing day once held
    /// 130,555 close messages): such a row counts as lost only after
    /// [`BUSY_QUEUE_PATIENCE`] times `requeue_after`. If the queue cannot be
    /// asked, the short rule holds.
    pub async fn lost_push_cutoffs(
        &self,
        kinds: &[JobKind],
        now: DateTime<Utc>,
    ) -> HashMap<JobKind, DateTime<Utc>> {
        let mut cutoffs = HashMap::new();
        for &kind in kinds {
            if cutoffs.contains_key(&kind) {
                continue;
            }
            let after = match self.queues.waiting(&self.db, kind).await {
                Ok(0) => self.settings.requeue_after,
                Ok(_) => self.settings.requeue_after * BUSY_QUEUE_PATIENCE,
                Err(e) => {
                    tracing::debug!(%kind, error = %e, "queue length unknown; short requeue rule");
                    self.settings.requeue_after
                }
            };
            cutoffs.insert(kind, now - chrono(after));
        }
        cutoffs
    }

    /// Pushes a ledger row this caller already moved to QUEUED (retry scan,
    /// lease recovery, ops retry).
    pub async fn push_row(
        &self,
        row: &job_run::Model,
        source: &'static str,
    ) -> Result<(), EnqueueError> {
        let job = job_of(row)?;
        match self
            .push_all(&[(&job, source)])
            .await
            .remove(job.key.as_str())
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs one delivered job: claim in the ledger, run its step with a
    /// timeout, record the outcome. Never fails: every failure is recorded
    /// in the ledger (and retried from there), so apalis always acks.
    pub async fn execute(&self, job: Job) {
        if let Err(e) = self.try_execute(&job).await {
            // The database itself failed: the row stays QUEUED/RUNNING and the
            // sweeper (stale push / expired lease) brings the job back.
            metrics::job_error(job.kind, "ledger");
            tracing::warn!(job = %job.key, error = %e, "job ledger unavailable; left for the sweeper");
        }
    }

    async fn try_execute(&self, job: &Job) -> Result<(), DbErr> {
        let now = self.now();
        let timeout = self.timeout_for(job.kind);
        let lease_until = now + chrono(timeout + self.settings.lease_margin);
        let claimed = retry_db(|| job_runs::claim(&self.db, &job.key, now, lease_until)).await?;
        let batching = self.steps.batches(job.kind) && self.settings.close_batch > 1;
        if claimed.is_none() && !batching {
            self.duplicate(job);
            return Ok(());
        }
        let org = retry_db(|| {
            organization::Entity::find_by_id(job.organization_id.as_str()).one(&self.db)
        })
        .await?;
        let org_now = org
            .as_ref()
            .map_or(now, |o| org_now(o, self.clock.as_ref()));
        if let Some(claimed) = &claimed
            && job.run_at > org_now
        {
            // Delivered early (a stale duplicate): give it back for the scheduled scan.
            retry_db(|| job_runs::release(&self.db, claimed, now)).await?;
            return Ok(());
        }
        // A batching kind's message stands for up to `close_batch` due jobs of
        // its organization (`push_all`): with its own job, or, when that one
        // is taken already (a batch claimed it), instead of it.
        let companions = match batching {
            true => {
                let limit = self.settings.close_batch - u64::from(claimed.is_some());
                retry_db(|| {
                    job_runs::claim_companions(&self.db, job, org_now, now, lease_until, limit)
                })
                .await?
            }
            false => Vec::new(),
        };
        let mut batch = Vec::with_capacity(companions.len() + 1);
        batch.extend(claimed.map(|claimed| (job.clone(), claimed)));
        for row in companions {
            batch.push((job_of(&row)?, row));
        }
        match batch.len() {
            0 => {
                self.duplicate(job);
                Ok(())
            }
            1 => {
                let (job, claimed) = &batch[0];
                self.run_claimed(job, claimed).await
            }
            _ => self.run_batch(batch).await,
        }
    }

    /// A delivered job with nothing to claim (done, running or dead): acked.
    fn duplicate(&self, job: &Job) {
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        metrics::duplicate(job.kind);
        tracing::debug!(job = %job.key, "delivered job is not claimable (done, running or dead): acked");
    }

    /// Runs the step of one claimed job and records its outcome.
    async fn run_claimed(&self, job: &Job, claimed: &job_run::Model) -> Result<(), DbErr> {
        self.stats.claims.fetch_add(1, Ordering::Relaxed);
        let timeout = self.timeout_for(job.kind);
        let span = tracing::info_span!("job", key = %job.key, kind = %job.kind, org = %job.organization_id, subject = %job.subject_id, attempt = claimed.attempts);
        let started = Instant::now();
        let step = self
            .steps
            .run(&self.db, self.clock.as_ref(), job)
            .instrument(span.clone());
        let result = tokio::time::timeout(timeout, caught(step)).await;
        let seconds = started.elapsed().as_secs_f64();
        let failure = match result {
            Ok(Ok(outcome)) => {
                // A step records its own success; this is the fallback for one
                // that did not (harmless when it did).
                retry_db(|| workflows::job_runs::mark_succeeded(&self.db, &job.key, self.now()))
                    .await?;
                finished(job, &outcome, seconds, &span);
                return Ok(());
            }
            Ok(Err(e)) => {
                metrics::job_error(job.kind, e.reason());
                e
            }
            Err(_) => {
                metrics::job_timeout(job.kind);
                metrics::job_error(job.kind, "timeout");
                StepError::Transient(format!("timed out after {timeout:?}"))
            }
        };
        let delay = backoff(
            claimed.attempts,
            self.settings.retry_base,
            self.settings.retry_cap,
        );
        let error = failure.to_string();
        let state = retry_db(|| {
            job_runs::fail(
                &self.db,
                claimed,
                &error,
                failure.is_permanent(),
                delay,
                self.now(),
            )
        })
        .await?;
        let label = match state {
            Some(JobState::Dead) => "dead",
            Some(_) => "failed",
            None => "lost_lease",
        };
        metrics::job_finished(job.kind, label, seconds);
        let retry_in = (state == Some(JobState::Failed)).then_some(delay);
        tracing::warn!(parent: &span, error = %failure, attempt = claimed.attempts, outcome = label, ?retry_in, "job failed");
        Ok(())
    }

    /// Runs claimed jobs of one organization in one transaction (a batching
    /// step). The batch commits as a whole or not at all; when it fails,
    /// each job runs on its own, so one bad job costs the others nothing
    /// but a second try and gets its own error and retries.
    async fn run_batch(&self, batch: Vec<(Job, job_run::Model)>) -> Result<(), DbErr> {
        let jobs: Vec<Job> = batch.iter().map(|(job, _)| job.clone()).collect();
        let kind = jobs[0].kind;
        let timeout = self.timeout_for(kind);
        let span = tracing::info_span!("job_batch", kind = %kind, org = %jobs[0].organization_id, jobs = jobs.len());
        let started = Instant::now();
        let step = self
            .steps
            .run_batch(&self.db, self.clock.as_ref(), &jobs)
            .instrument(span.clone());
        let failure = match tokio::time::timeout(timeout, caught(step)).await {
            Ok(Ok(outcomes)) if outcomes.len() == jobs.len() => {
                self.stats
                    .claims
                    .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                let seconds = started.elapsed().as_secs_f64();
                for (job, outcome) in jobs.iter().zip(&outcomes) {
                    finished(job, outcome, seconds, &span);
                }
                return Ok(());
            }
            Ok(Ok(outcomes)) => format!("{} outcomes for {} jobs", outcomes.len(), jobs.len()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("timed out after {timeout:?}"),
        };
        metrics::job_error(kind, "batch");
        tracing::warn!(parent: &span, error = %failure, "batch failed; running its jobs one by one");
        // Each run counts its own claim.
        for (job, claimed) in &batch {
            self.run_claimed(job, claimed).await?;
        }
        Ok(())
    }
}

/// A step's future with a panic turned into a failed attempt like any other
/// (retried, then DEAD).
async fn caught<T>(
    step: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    AssertUnwindSafe(step)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(StepError::Transient(format!("step panicked: {message}")))
        })
}

/// Metrics and log line of a job whose step succeeded.
fn finished(job: &Job, outcome: &StepOutcome, seconds: f64, span: &tracing::Span) {
    let label = match outcome {
        StepOutcome::Done => "succeeded",
        StepOutcome::AlreadyDone => "already_done",
        StepOutcome::Skipped(_) => "skipped",
    };
    metrics::job_finished(job.kind, label, seconds);
    tracing::info!(parent: span, job = %job.key, seconds, outcome = label, "job finished");
}

/// Delays between tries of a ledger statement (connection loss, pool
/// exhaustion, `database is locked`): about 4 s in all, then the job is left
/// to the sweeper (stale push or expired lease).
const DB_RETRY_DELAYS_MS: [u64; 5] = [50, 200, 500, 1000, 2000];

/// Runs a ledger statement, trying again on database errors.
pub async fn retry_db<T, F, Fut>(mut statement: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    let mut delays = DB_RETRY_DELAYS_MS.iter();
    loop {
        match statement().await {
            Ok(value) => return Ok(value),
            Err(e) => match delays.next() {
                Some(ms) => {
                    tracing::debug!(error = %e, retry_in_ms = ms, "ledger statement failed; trying again");
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                }
                None => return Err(e),
            },
        }
    }
}

/// The job a ledger row stands for.
pub fn job_of(row: &job_run::Model) -> Result<Job, DbErr> {
    let kind = JobKind::parse(&row.kind)
        .ok_or_else(|| DbErr::Custom(format!("unknown job kind {:?}", row.kind)))?;
    Ok(Job {
        kind,
        key: row.job_key.clone(),
        organization_id: row.organization_id.clone().unwrap_or_default(),
        subject_id: row.subject_id.clone(),
        run_at: row.run_at,
    })
}

/// Shared handle.
pub type SharedRuntime = Arc<Runtime>;
