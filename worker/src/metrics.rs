//! Every metric the job machinery emits, named in one place.
//!
//! Scheduler series (`valora_scheduler_*`, SPEC §5) are emitted at least once
//! per sweeper tick — a zero increment registers a counter — so they show on
//! `/metrics` after the first tick.

use workflows::jobs::JobKind;

pub const SCHEDULER_JOB_RUNS_TOTAL: &str = "valora_scheduler_job_runs_total";
pub const SCHEDULER_JOB_DURATION_SECONDS: &str = "valora_scheduler_job_duration_seconds";
pub const SCHEDULER_JOB_TIMEOUTS_TOTAL: &str = "valora_scheduler_job_timeouts_total";
pub const SCHEDULER_JOB_ERRORS_TOTAL: &str = "valora_scheduler_job_errors_total";
pub const SCHEDULER_BATCH_PROCESSED_TOTAL: &str = "valora_scheduler_batch_processed_total";
pub const SCHEDULER_BATCH_DEFERRED_TOTAL: &str = "valora_scheduler_batch_deferred_total";
pub const SCHEDULER_RUNLOOP_LAG_SECONDS: &str = "valora_scheduler_runloop_lag_seconds";
pub const JOBS_TOTAL: &str = "valora_jobs_total";
pub const JOB_DURATION_SECONDS: &str = "valora_job_duration_seconds";
pub const QUEUE_DEPTH: &str = "valora_queue_depth";
/// Invoices by status, across organizations (a gauge, recounted by the sweeper).
pub const INVOICES: &str = "valora_invoices";
pub const OUTBOX_RELAYED_TOTAL: &str = "valora_outbox_relayed_total";
/// Jobs pushed to a queue, by source (`relay`, `sweep`, `retry`, `requeue`, `ops`).
pub const JOBS_ENQUEUED_TOTAL: &str = "valora_jobs_enqueued_total";

/// The scheduler series the SPEC names exactly.
pub const SCHEDULER_METRICS: [&str; 7] = [
    SCHEDULER_JOB_RUNS_TOTAL,
    SCHEDULER_JOB_DURATION_SECONDS,
    SCHEDULER_JOB_TIMEOUTS_TOTAL,
    SCHEDULER_JOB_ERRORS_TOTAL,
    SCHEDULER_BATCH_PROCESSED_TOTAL,
    SCHEDULER_BATCH_DEFERRED_TOTAL,
    SCHEDULER_RUNLOOP_LAG_SECONDS,
];

/// Every series the job machinery emits.
pub const ALL_METRICS: [&str; 13] = [
    SCHEDULER_JOB_RUNS_TOTAL,
    SCHEDULER_JOB_DURATION_SECONDS,
    SCHEDULER_JOB_TIMEOUTS_TOTAL,
    SCHEDULER_JOB_ERRORS_TOTAL,
    SCHEDULER_BATCH_PROCESSED_TOTAL,
    SCHEDULER_BATCH_DEFERRED_TOTAL,
    SCHEDULER_RUNLOOP_LAG_SECONDS,
    JOBS_TOTAL,
    JOB_DURATION_SECONDS,
    QUEUE_DEPTH,
    INVOICES,
    OUTBOX_RELAYED_TOTAL,
    JOBS_ENQUEUED_TOTAL,
];

/// One finished job run (`outcome`: succeeded, already_done, skipped, failed, dead, timeout).
pub fn job_finished(kind: JobKind, outcome: &'static str, seconds: f64) {
    let job = kind.as_str();
    metrics::counter!(SCHEDULER_JOB_RUNS_TOTAL, "job" => job).increment(1);
    metrics::histogram!(SCHEDULER_JOB_DURATION_SECONDS, "job" => job).record(seconds);
    metrics::counter!(JOBS_TOTAL, "kind" => job, "outcome" => outcome).increment(1);
    metrics::histogram!(JOB_DURATION_SECONDS, "kind" => job).record(seconds);
}

pub fn job_error(kind: JobKind, reason: &'static str) {
    metrics::counter!(SCHEDULER_JOB_ERRORS_TOTAL, "job" => kind.as_str(), "reason" => reason)
        .increment(1);
}

pub fn job_timeout(kind: JobKind) {
    metrics::counter!(SCHEDULER_JOB_TIMEOUTS_TOTAL, "job" => kind.as_str()).increment(1);
}

pub fn batch_processed(job: &'static str, resource: &'static str, rows: u64) {
    metrics::counter!(SCHEDULER_BATCH_PROCESSED_TOTAL, "job" => job, "resource" => resource)
        .increment(rows);
}

pub fn batch_deferred(job: &'static str, reason: &'static str, rows: u64) {
    metrics::counter!(SCHEDULER_BATCH_DEFERRED_TOTAL, "job" => job, "reason" => reason)
        .increment(rows);
}

pub fn runloop_lag(seconds: f64) {
    metrics::histogram!(SCHEDULER_RUNLOOP_LAG_SECONDS).record(seconds);
}

pub fn enqueued(kind: JobKind, source: &'static str) {
    metrics::counter!(JOBS_ENQUEUED_TOTAL, "kind" => kind.as_str(), "source" => source)
        .increment(1);
}

pub fn outbox_relayed(rows: u64) {
    metrics::counter!(OUTBOX_RELAYED_TOTAL).increment(rows);
}

pub fn queue_depth(kind: &str, state: &str, count: u64) {
    metrics::gauge!(QUEUE_DEPTH, "kind" => kind.to_string(), "state" => state.to_string())
        .set(count as f64);
}

pub fn invoices(status: &str, count: u64) {
    metrics::gauge!(INVOICES, "status" => status.to_string()).set(count as f64);
}

/// Registers every per-job scheduler series with zero, so all exist after one tick.
pub fn touch_scheduler_series() {
    for kind in JobKind::ALL {
        let job = kind.as_str();
        metrics::counter!(SCHEDULER_JOB_RUNS_TOTAL, "job" => job).increment(0);
        metrics::counter!(SCHEDULER_JOB_TIMEOUTS_TOTAL, "job" => job).increment(0);
        metrics::counter!(SCHEDULER_JOB_ERRORS_TOTAL, "job" => job, "reason" => "none")
            .increment(0);
        metrics::counter!(JOBS_TOTAL, "kind" => job, "outcome" => "succeeded").increment(0);
        // Obtaining a histogram handle registers the series (rendered with count 0).
        let _ = metrics::histogram!(SCHEDULER_JOB_DURATION_SECONDS, "job" => job);
        let _ = metrics::histogram!(JOB_DURATION_SECONDS, "kind" => job);
    }
    metrics::counter!(OUTBOX_RELAYED_TOTAL).increment(0);
}

/// A delivery whose key was already done, running or dead (acked without effect).
pub fn duplicate(kind: JobKind) {
    metrics::counter!(JOBS_TOTAL, "kind" => kind.as_str(), "outcome" => "duplicate").increment(1);
}
