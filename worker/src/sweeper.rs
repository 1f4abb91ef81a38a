//! The sweeper: worker processes scan the database for due work on each
//! tick, so nothing depends on a message surviving in Redis (SPEC §2.2). On
//! PostgreSQL one worker of the fleet sweeps every tick and the others every
//! tenth, as standbys ([`crate::sweep_turn`]).
//!
//! Per tick, in bounded batches (`sweep_batch` rows per scan and clock group):
//!
//! | scan (`job` label) | resource     | due when (organization time)                    |
//! |--------------------|--------------|-------------------------------------------------|
//! | `trial_expiry`     | subscription | TRIALING and `trial_end ≤ now`                  |
//! | `period_close`     | subscription | ACTIVE/PAST_DUE and `current_period_end ≤ now`  |
//! | `invoice_finalize` | invoice      | DRAFT and `finalize_at ≤ now`                   |
//! | `invoice_overdue`  | invoice      | OPEN and `due_at ≤ now`                         |
//! | `scheduled`        | job_run      | QUEUED, never pushed, `run_at ≤ now`            |
//! | `retry`            | job_run      | FAILED and `next_attempt_at ≤ now`              |
//! | `requeue`          | job_run      | QUEUED, push lost (`Runtime::lost_push_cutoffs`)|
//! | `lease`            | job_run      | RUNNING with an expired lease (worker died)     |
//!
//! "now" is each organization's now: the process clock, or its test clock
//! (see [`crate::org_clocks`]).
//!
//! **Several sweepers never multiply work.** Domain scans enqueue through the
//! ledger: the job key is UNIQUE, so the first sweeper inserts the row and
//! pushes, the others hit the conflict and do nothing. Ledger scans move a row
//! with a compare-and-set (`WHERE state = … AND next_attempt_at …`); exactly
//! one sweeper wins each row and only the winner pushes. Even a duplicate push
//! is harmless: the handler's claim CAS lets one delivery run. Pushes are
//! counted in `valora_jobs_enqueued_total{kind,source}`.
//!
//! **Bounded batches.** Domain scans walk their rows in `(due instant, id)`
//! order with a keyset cursor kept between ticks: a full batch advances the
//! cursor and the next batch follows in the same tick, up to
//! [`SCAN_ROUNDS`] batches (a billing instant with many subscriptions due
//! would otherwise be enqueued at one batch a second); the rest (counted in
//! `valora_scheduler_batch_deferred_total{job,reason="batch_full"}`) is
//! processed on the next tick. A short batch ends the pass: every row due by
//! then has been looked at, so later ticks look only at rows due after that
//! instant, and a new pass from the earliest due row begins once
//! `requeue_after` has gone by since the last one began. The rows still due
//! from the last pass are, but for a failed enqueue, in the ledger already,
//! and a row that becomes due behind the floor (the close of a period
//! already over, a back-dated start) is enqueued through the outbox by the
//! step that makes it; the next pass is the safety net. Looking at them all
//! again on every tick asked the ledger about every subscription of a
//! billing day still waiting for its close, once a tick and per worker.
//! Ledger scans take the oldest rows first; rows they move leave the scan,
//! so the backlog drains tick by tick.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use entity::{InvoiceStatus, JobState, SubscriptionStatus, invoice, job_run, subscription};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use workflows::jobs::{Job, JobKind};

use crate::job_runs;
use crate::metrics;
use crate::org_clocks::{ClockGroup, OrgClocks};
use crate::runtime::{Enqueued, Runtime, job_of};
use crate::sweep_turn::SweepTurn;
use crate::test_clocks;

/// Per-scan passes over the due rows, kept across ticks.
#[derive(Debug, Default)]
pub struct Sweeper {
    passes: HashMap<(&'static str, String), Pass>,
    last_vacuum: Option<Instant>,
    last_invoice_count: Option<Instant>,
    last_queue_depth: Option<Instant>,
    last_slow_depth: Option<Instant>,
}

/// Where a domain scan is in its pass over the due rows, in `(due instant,
/// id)` order.
#[derive(Debug)]
struct Pass {
    /// The last row looked at.
    cursor: Option<(DateTime<Utc>, String)>,
    /// Once the pass reached the last due row: the now it was due by. Until
    /// the next pass, a tick looks only at rows due after it.
    floor: Option<DateTime<Utc>>,
    /// When the pass began at the earliest due row.
    started: Instant,
}

impl Pass {
    fn new() -> Pass {
        Pass {
            cursor: None,
            floor: None,
            started: Instant::now(),
        }
    }
}

/// Batches a domain scan may take in one tick while they come back full (a
/// billing instant with many subscriptions due), before the rest waits for
/// the next tick.
const SCAN_ROUNDS: u32 = 8;

/// How often finished queue messages are deleted, and how old they must be.
const VACUUM_EVERY: Duration = Duration::from_secs(600);
const VACUUM_OLDER_THAN: Duration = Duration::from_secs(3600);
/// How often `valora_invoices{status}` is recounted: a count over every
/// invoice is not free, and a scrape every 15 s needs nothing fresher.
const INVOICE_COUNT_EVERY: Duration = Duration::from_secs(5);
/// Upper bound on how often `valora_queue_depth` of the work in flight is
/// recounted (a short `VALORA_SWEEP_INTERVAL_MS` would otherwise count the
/// ledger many times a second).
const QUEUE_DEPTH_EVERY: Duration = Duration::from_millis(500);
/// How often the depths that grow with the ledger ([`SLOW_DEPTH`]) are recounted.
const SLOW_DEPTH_EVERY: Duration = Duration::from_secs(60);

/// What one tick did (tests and logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Rows looked at, per scan.
    pub processed: HashMap<&'static str, u64>,
    /// Rows left for a later tick, per scan.
    pub deferred: HashMap<&'static str, u64>,
    /// Jobs pushed (new, re-pushed, retried, recovered).
    pub pushed: u64,
}

const DOMAIN_SCANS: [(&str, &str); 4] = [
    ("trial_expiry", "subscription"),
    ("period_close", "subscription"),
    ("invoice_finalize", "invoice"),
    ("invoice_overdue", "invoice"),
];
const LEDGER_SCANS: [&str; 4] = ["scheduled", "retry", "requeue", "lease"];

impl Sweeper {
    pub fn new() -> Sweeper {
        Sweeper::default()
    }

    /// One tick: every scan once, every scheduler series emitted.
    pub async fn tick(&mut self, rt: &Runtime) -> Result<TickReport, DbErr> {
        metrics::touch_scheduler_series();
        let mut report = TickReport::default();
        let clocks = OrgClocks::load(&rt.db, rt.clock.as_ref()).await?;
        let batch = rt.settings.sweep_batch;

        for group in clocks.groups(subscription::Column::OrganizationId) {
            let base = subscription::Entity::find()
                .filter(subscription::Column::Status.eq(SubscriptionStatus::Trialing))
                .filter(subscription::Column::TrialEnd.lte(group.now))
                .filter(group.scope.clone());
            self.scan(
                rt,
                &mut report,
                "trial_expiry",
                &group,
                base,
                subscription::Column::TrialEnd,
                subscription::Column::Id,
                batch,
                |s: &subscription::Model| {
                    s.trial_end.map(|end| {
                        (
                            Job::trial_expiry(&s.organization_id, &s.id, end),
                            end,
                            s.id.clone(),
                        )
                    })
                },
            )
            .await?;
            let base = subscription::Entity::find()
                .filter(
                    subscription::Column::Status
                        .is_in([SubscriptionStatus::Active, SubscriptionStatus::PastDue]),
                )
                .filter(subscription::Column::CurrentPeriodEnd.lte(group.now))
                .filter(subscription::Column::CurrentPeriodStart.is_not_null())
                .filter(group.scope.clone());
            self.scan(
                rt,
                &mut report,
                "period_close",
                &group,
                base,
                subscription::Column::CurrentPeriodEnd,
                subscription::Column::Id,
                batch,
                |s: &subscription::Model| match (s.current_period_start, s.current_period_end) {
                    (Some(start), Some(end)) => Some((
                        Job::period_close(&s.organization_id, &s.id, start, end),
                        end,
                        s.id.clone(),
                    )),
                    _ => None,
                },
            )
            .await?;
        }
        for group in clocks.groups(invoice::Column::OrganizationId) {
            let base = invoice::Entity::find()
                .filter(invoice::Column::Status.eq(InvoiceStatus::Draft))
                .filter(invoice::Column::FinalizeAt.lte(group.now))
                .filter(group.scope.clone());
            self.scan(
                rt,
                &mut report,
                "invoice_finalize",
                &group,
                base,
                invoice::Column::FinalizeAt,
                invoice::Column::Id,
                batch,
                |i: &invoice::Model| {
                    i.finalize_at.map(|at| {
                        (
                            Job::invoice_finalize(&i.organization_id, &i.id, at),
                            at,
                            i.id.clone(),
                        )
                    })
                },
            )
            .await?;
            let base = invoice::Entity::find()
                .filter(invoice::Column::Status.eq(InvoiceStatus::Open))
                .filter(invoice::Column::DueAt.lte(group.now))
                .filter(group.scope.clone());
            self.scan(
                rt,
                &mut report,
                "invoice_overdue",
                &group,
                base,
                invoice::Column::DueAt,
                invoice::Column::Id,
                batch,
                |i: &invoice::Model| {
                    i.due_at.map(|at| {
                        (
                            Job::invoice_overdue(&i.organization_id, &i.id, at),
                            at,
                            i.id.clone(),
                        )
                    })
                },
            )
            .await?;
        }
        self.ledger_scans(rt, &clocks, &mut report).await?;
        for (job, resource) in DOMAIN_SCANS
            .iter()
            .copied()
            .chain(LEDGER_SCANS.iter().map(|s| (*s, "job_run")))
        {
            let processed = report.processed.get(job).copied().unwrap_or(0);
            let deferred = report.deferred.get(job).copied().unwrap_or(0);
            metrics::batch_processed(job, resource, processed);
            metrics::batch_deferred(job, "batch_full", deferred);
        }
        if once_every(&mut self.last_queue_depth, QUEUE_DEPTH_EVERY) {
            update_queue_depth(rt, &LIVE_DEPTH).await?;
        }
        if once_every(&mut self.last_slow_depth, SLOW_DEPTH_EVERY) {
            update_queue_depth(rt, &SLOW_DEPTH).await?;
        }
        if once_every(&mut self.last_invoice_count, INVOICE_COUNT_EVERY) {
            update_invoice_counts(rt).await?;
        }
        let deferred = report.deferred.values().any(|n| *n > 0);
        let settled = test_clocks::settle(&rt.db, deferred, &clocks.test_clocks).await?;
        if settled > 0 {
            tracing::info!(settled, "test clocks settled (READY)");
        }
        if once_every(&mut self.last_vacuum, VACUUM_EVERY) {
            match rt.queues.vacuum(&rt.db, VACUUM_OLDER_THAN).await {
                Ok(n) => tracing::debug!(deleted = n, "queue vacuum"),
                Err(e) => tracing::warn!(error = %e, "queue vacuum failed"),
            }
        }
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    async fn scan<E, F>(
        &mut self,
        rt: &Runtime,
        report: &mut TickReport,
        name: &'static str,
        group: &ClockGroup,
        base: Select<E>,
        at_column: E::Column,
        id_column: E::Column,
        batch: u64,
        to_job: F,
    ) -> Result<(), DbErr>
    where
        E: EntityTrait,
        E::Model: Sync,
        F: Fn(&E::Model) -> Option<(Job, DateTime<Utc>, String)>,
    {
        let key = (name, group.label.clone());
        let mut pass = self.passes.remove(&key).unwrap_or_else(Pass::new);
        if pass.floor.is_some() && pass.started.elapsed() >= rt.settings.requeue_after {
            pass = Pass::new();
        }
        // The rows of `base` the pass has not looked at yet; keyset paging
        // as one row comparison, which an index on `(due instant, id)`
        // answers in order.
        let ahead = |pass: &Pass| {
            let mut select = base.clone();
            if let Some(floor) = pass.floor {
                select = select.filter(at_column.gt(floor));
            }
            if let Some((at, id)) = &pass.cursor {
                select = select.filter(sea_orm::ExprTrait::gt(
                    Expr::tuple([Expr::col(at_column), Expr::col(id_column)]),
                    Expr::tuple([Expr::value(*at), Expr::value(id.clone())]),
                ));
            }
            select
        };
        for round in 1..=SCAN_ROUNDS {
            let rows = ahead(&pass)
                .order_by_asc(at_column)
                .order_by_asc(id_column)
                .limit(batch)
                .all(&rt.db)
                .await?;
            *report.processed.entry(name).or_default() += rows.len() as u64;
            let jobs: Vec<_> = rows.iter().filter_map(&to_job).collect();
            let keys: Vec<String> = jobs.iter().map(|(job, _, _)| job.key.clone()).collect();
            let now = rt.now();
            // One scan, one kind.
            let kind: Vec<JobKind> = jobs
                .first()
                .map(|(job, _, _)| job.kind)
                .into_iter()
                .collect();
            let cutoffs = rt.lost_push_cutoffs(&kind, now).await;
            let stale_before = cutoffs.values().next().copied().unwrap_or(now);
            let settled = job_runs::keys_needing_no_push(&rt.db, &keys, stale_before).await?;
            let todo: Vec<_> = jobs
                .iter()
                .filter(|(job, _, _)| !settled.contains(&job.key))
                .map(|(job, _, _)| (job, group.now))
                .collect();
            for (result, (job, _)) in rt.enqueue_all(&todo, "sweep").await?.into_iter().zip(&todo) {
                match result {
                    Ok(Enqueued::New { pushed: true } | Enqueued::Repushed) => report.pushed += 1,
                    Ok(_) => {}
                    Err(e) => {
                        metrics::job_error(job.kind, "enqueue");
                        tracing::warn!(job = %job.key, error = %e, "sweeper could not enqueue; next tick retries");
                    }
                }
            }
            if let Some((_, at, id)) = jobs.last() {
                pass.cursor = Some((*at, id.clone()));
            }
            if (rows.len() as u64) < batch {
                // Every row due by `group.now` has been looked at.
                pass.floor = Some(group.now);
                pass.cursor = None;
                break;
            }
            if round == SCAN_ROUNDS {
                let rest = ahead(&pass).count(&rt.db).await?;
                *report.deferred.entry(name).or_default() += rest;
            }
        }
        self.passes.insert(key, pass);
        Ok(())
    }

    async fn ledger_scans(
        &mut self,
        rt: &Runtime,
        clocks: &OrgClocks,
        report: &mut TickReport,
    ) -> Result<(), DbErr> {
        let batch = rt.settings.sweep_batch;
        let now = rt.now();
        // Jobs enqueued before they were due, now due by their organization's clock.
        for group in clocks.groups(job_run::Column::OrganizationId) {
            let rows =
                job_runs::due_unpushed(&rt.db, group.scope.clone(), group.now, batch + 1).await?;
            self.count(report, "scheduled", &rows, batch);
            for row in rows.iter().take(batch as usize) {
                if job_runs::take_push(&rt.db, &row.job_key, now, now).await? {
                    self.push(rt, report, row, "scheduled").await;
                }
            }
        }
        let rows = job_runs::due_retries(&rt.db, now, batch + 1).await?;
        self.count(report, "retry", &rows, batch);
        for row in rows.iter().take(batch as usize) {
            if job_runs::take_retry(&rt.db, &row.job_key, now).await? {
                self.push(rt, report, row, "retry").await;
            }
        }
        let cutoffs = rt.lost_push_cutoffs(&JobKind::ALL, now).await;
        let rows = job_runs::stale_queued(&rt.db, &cutoffs, batch + 1).await?;
        self.count(report, "requeue", &rows, batch);
        for row in rows.iter().take(batch as usize) {
            let Some(stale_before) = JobKind::parse(&row.kind).and_then(|k| cutoffs.get(&k)) else {
                continue;
            };
            if job_runs::take_push(&rt.db, &row.job_key, *stale_before, now).await? {
                self.push(rt, report, row, "requeue").await;
            }
        }
        let rows = job_runs::expired_leases(&rt.db, now, batch + 1).await?;
        self.count(report, "lease", &rows, batch);
        for row in rows.iter().take(batch as usize) {
            if job_runs::take_expired_lease(&rt.db, row, now).await? == Some(JobState::Queued) {
                self.push(rt, report, row, "lease").await;
            }
        }
        Ok(())
    }

    fn count(
        &self,
        report: &mut TickReport,
        name: &'static str,
        rows: &[job_run::Model],
        batch: u64,
    ) {
        let n = rows.len() as u64;
        *report.processed.entry(name).or_default() += n.min(batch);
        if n > batch {
            // At least one more row waits; the exact backlog is not worth a count query here.
            *report.deferred.entry(name).or_default() += n - batch;
        }
    }

    async fn push(
        &self,
        rt: &Runtime,
        report: &mut TickReport,
        row: &job_run::Model,
        source: &'static str,
    ) {
        match rt.push_row(row, source).await {
            Ok(()) => report.pushed += 1,
            Err(e) => {
                if let Ok(job) = job_of(row) {
                    metrics::job_error(job.kind, "enqueue");
                }
                tracing::warn!(job = %row.job_key, error = %e, "sweeper push failed; next tick retries");
            }
        }
    }
}

/// The `state` labels of `valora_queue_depth` counted on every tick: jobs
/// in the queues (QUEUED and pushed), running, failing or waiting for an
/// operator. These sets are as large as the work in flight.
const LIVE_DEPTH: [&str; 4] = ["QUEUED", "RUNNING", "FAILED", "DEAD"];

/// The labels counted once a minute ([`SLOW_DEPTH_EVERY`]): jobs recorded
/// for later (QUEUED, not pushed: an overdue check due in a month), and
/// finished ones. These sets grow with the ledger (one overdue check per
/// open invoice, every job ever run); counting them on every tick of every
/// worker took more than the billing at 100,000 subscriptions.
const SLOW_DEPTH: [&str; 3] = ["SCHEDULED", "SUCCEEDED", "DISCARDED"];

/// Sets `valora_queue_depth{kind,state}` for the `labels` (zero for absent
/// pairs): a job's state, or SCHEDULED for a QUEUED job not pushed yet
/// (then QUEUED counts the pushed ones).
pub async fn update_queue_depth(rt: &Runtime, labels: &[&str]) -> Result<(), DbErr> {
    let counts = job_runs::depth(&rt.db, labels).await?;
    for kind in JobKind::ALL {
        for label in labels {
            let n = counts
                .iter()
                .find(|(k, l, _)| k == kind.as_str() && l == label)
                .map_or(0, |(_, _, n)| *n);
            metrics::queue_depth(kind.as_str(), label, n.max(0) as u64);
        }
    }
    Ok(())
}

/// Sets `valora_invoices{status}`: invoices of every organization by status
/// (zero for statuses with none, so a panel never shows a gap).
pub async fn update_invoice_counts(rt: &Runtime) -> Result<(), DbErr> {
    let counts: Vec<(InvoiceStatus, i64)> = invoice::Entity::find()
        .select_only()
        .column(invoice::Column::Status)
        .column_as(invoice::Column::Id.count(), "n")
        .group_by(invoice::Column::Status)
        .into_tuple()
        .all(&rt.db)
        .await?;
    for status in <InvoiceStatus as sea_orm::Iterable>::iter() {
        let n = counts
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n);
        metrics::invoices(&status.to_string(), n.max(0) as u64);
    }
    Ok(())
}

/// True (and restarts the period) when `every` has passed since `last`, or
/// on the first call: for the sweeper's periodic side jobs.
fn once_every(last: &mut Option<Instant>, every: Duration) -> bool {
    if last.is_some_and(|at| at.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// Runs ticks every `interval` until `stop` fires, on the ticks that are
/// this process's ([`SweepTurn`]); records the run-loop lag (how late each
/// tick started against its schedule). Ticks keep their interval even with
/// a backlog: every sweeper that runs re-enqueues the due rows it sees, so
/// back-to-back ticks flood the queues with duplicates (measured: 4 workers
/// billed 1,000 subscriptions 5× slower).
pub async fn run(
    rt: std::sync::Arc<Runtime>,
    interval: Duration,
    mut turn: SweepTurn,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut sweeper = Sweeper::new();
    let mut next = Instant::now();
    loop {
        let lag = Instant::now().saturating_duration_since(next);
        metrics::runloop_lag(lag.as_secs_f64());
        if turn.sweeps_now().await
            && let Err(e) = sweeper.tick(&rt).await
        {
            tracing::warn!(error = %e, "sweeper tick failed");
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    turn.close().await;
}

/// Work still due for one organization at its instant `at`: due domain rows
/// (the sweeper's scans) plus its jobs not yet finished (QUEUED, RUNNING,
/// FAILED) whose `run_at ≤ at`. Zero means everything due up to `at` is done —
/// what a test clock waits for before it turns READY. A DEAD job whose
/// subject is still due keeps this above zero until an operator acts.
pub async fn pending_for_org<C: sea_orm::ConnectionTrait>(
    db: &C,
    organization_id: &str,
    at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let trials = subscription::Entity::find()
        .filter(subscription::Column::OrganizationId.eq(organization_id))
        .filter(subscription::Column::Status.eq(SubscriptionStatus::Trialing))
        .filter(subscription::Column::TrialEnd.lte(at))
        .count(db)
        .await?;
    let periods = subscription::Entity::find()
        .filter(subscription::Column::OrganizationId.eq(organization_id))
        .filter(
            subscription::Column::Status
                .is_in([SubscriptionStatus::Active, SubscriptionStatus::PastDue]),
        )
        .filter(subscription::Column::CurrentPeriodEnd.lte(at))
        .filter(subscription::Column::CurrentPeriodStart.is_not_null())
        .count(db)
        .await?;
    let drafts = invoice::Entity::find()
        .filter(invoice::Column::OrganizationId.eq(organization_id))
        .filter(invoice::Column::Status.eq(InvoiceStatus::Draft))
        .filter(invoice::Column::FinalizeAt.lte(at))
        .count(db)
        .await?;
    let overdue = invoice::Entity::find()
        .filter(invoice::Column::OrganizationId.eq(organization_id))
        .filter(invoice::Column::Status.eq(InvoiceStatus::Open))
        .filter(invoice::Column::DueAt.lte(at))
        .count(db)
        .await?;
    let jobs = job_run::Entity::find()
        .filter(job_run::Column::OrganizationId.eq(organization_id))
        .filter(job_run::Column::State.is_in([
            JobState::Queued,
            JobState::Running,
            JobState::Failed,
        ]))
        .filter(job_run::Column::RunAt.lte(at))
        .count(db)
        .await?;
    Ok(trials + periods + drafts + overdue + jobs)
}
