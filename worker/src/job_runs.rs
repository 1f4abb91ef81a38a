//! The job-runs ledger (`job_runs`): Valora's own record of every job key, its
//! state, attempts and last error. apalis only transports messages; this table
//! decides whether a delivered message does anything.
//!
//! ```text
//!            enqueue (insert, key UNIQUE)
//!                  │
//!                  ▼           claim (CAS)             step commits SUCCEEDED
//!   ┌────────► QUEUED ─────────────────► RUNNING ─────────────────────► SUCCEEDED
//!   │              ▲                      │  │ error, attempts < max
//!   │ ops retry    │ retry scan (due)     │  └──────────────► FAILED ──┘(claim when due)
//!   │              └──────────────────────┼── FAILED
//!   │                                     │ error, attempts ≥ max / permanent
//! DEAD ◄──────────────────────────────────┘
//!   (any non-terminal) ── ops discard ──► DISCARDED
//! ```
//!
//! `next_attempt_at` means, by state:
//! - QUEUED: when the job was last pushed to its queue; `NULL` = not pushed
//!   yet because it is not due (its `run_at` is after its organization's now).
//!   A QUEUED row pushed longer than `requeue_after` ago is pushed again (the
//!   push or the whole Redis may have been lost), unless its queue still holds
//!   waiting messages (then it is likely behind them: see
//!   `Runtime::lost_push_cutoffs`).
//! - RUNNING: the lease deadline. A worker killed mid-job leaves RUNNING with
//!   an expired lease, which the claim CAS and the sweeper both accept.
//! - FAILED: when the next attempt is due (backoff).
//!
//! Every transition is a compare-and-set `UPDATE … WHERE state = …`, so racing
//! workers and sweepers agree on one winner.

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use entity::{JobState, job_run};
use sea_orm::ExprTrait;
use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, UpdateMany,
};
use workflows::jobs::{Job, JobKind};

/// Longest `last_error` kept.
const MAX_ERROR_LEN: usize = 4000;

pub fn chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

/// Inserts `jobs` as QUEUED, in one statement, except those whose key is
/// known. `pushed_at(job)` is `Some(now)` when the caller is about to push
/// it, `None` when it is not due yet. Returns the keys this call inserted.
pub async fn insert_all_queued<C: ConnectionTrait>(
    db: &C,
    jobs: &[&Job],
    pushed_at: impl Fn(&Job) -> Option<DateTime<Utc>>,
    max_attempts: i32,
    now: DateTime<Utc>,
) -> Result<std::collections::HashSet<String>, DbErr> {
    let mut key_by_id = std::collections::HashMap::with_capacity(jobs.len());
    let mut rows = Vec::with_capacity(jobs.len());
    for job in jobs {
        let id = workflows::ids::new_id();
        key_by_id.insert(id.clone(), job.key.clone());
        rows.push(job_run::ActiveModel {
            id: Set(id),
            job_key: Set(job.key.clone()),
            kind: Set(job.kind.as_str().to_string()),
            organization_id: Set(Some(job.organization_id.clone())),
            subject_id: Set(job.subject_id.clone()),
            state: Set(JobState::Queued),
            attempts: Set(0),
            max_attempts: Set(max_attempts),
            last_error: Set(None),
            run_at: Set(job.run_at),
            next_attempt_at: Set(pushed_at(job)),
            created_at: Set(now),
            started_at: Set(None),
            finished_at: Set(None),
            updated_at: Set(now),
        });
    }
    let mut inserted = std::collections::HashSet::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        // 15 parameters a row: well under PostgreSQL's 65,535 per statement.
        let chunk: Vec<_> = rows.by_ref().take(INSERT_CHUNK).collect();
        let ids = job_run::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(job_run::Column::JobKey)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_with_returning_keys(db)
            .await?;
        inserted.extend(ids.into_iter().filter_map(|id| key_by_id.remove(&id)));
    }
    Ok(inserted)
}

/// Ledger rows per multi-row insert.
const INSERT_CHUNK: usize = 1_000;

/// [`take_push`] for several keys: one statement on PostgreSQL. Returns the
/// keys this caller won.
pub async fn take_pushes<C: ConnectionTrait>(
    db: &C,
    keys: &[&str],
    stale_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, DbErr> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    if !db.support_returning() {
        let mut won = Vec::new();
        for key in keys {
            if take_push(db, key, stale_before, now).await? {
                won.push(key.to_string());
            }
        }
        return Ok(won);
    }
    Ok(job_run::Entity::update_many()
        .col_expr(job_run::Column::NextAttemptAt, Expr::value(Some(now)))
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .filter(job_run::Column::JobKey.is_in(keys.iter().copied()))
        .filter(needs_push(stale_before))
        .exec_with_returning(db)
        .await?
        .into_iter()
        .map(|row| row.job_key)
        .collect())
}

/// QUEUED and not pushed (`NULL`) or pushed before `stale_before` (the
/// push may have been lost).
fn needs_push(stale_before: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(job_run::Column::State.eq(JobState::Queued))
        .add(
            Condition::any()
                .add(job_run::Column::NextAttemptAt.is_null())
                .add(job_run::Column::NextAttemptAt.lt(stale_before)),
        )
}

/// Takes the right to push a QUEUED row again: not pushed yet (`NULL`) or
/// pushed before `stale_before`. Returns whether this caller won.
pub async fn take_push<C: ConnectionTrait>(
    db: &C,
    key: &str,
    stale_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = job_run::Entity::update_many()
        .col_expr(job_run::Column::NextAttemptAt, Expr::value(Some(now)))
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .filter(job_run::Column::JobKey.eq(key))
        .filter(needs_push(stale_before))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Of `keys`, those whose job is known and needs no push: not QUEUED, or
/// QUEUED with a push newer than `stale_before` — exactly the keys on which
/// [`crate::runtime::Runtime::enqueue`] would do nothing. One query for a
/// whole sweep batch, so a backlog does not cost a round trip per due row.
pub async fn keys_needing_no_push<C: ConnectionTrait>(
    db: &C,
    keys: &[String],
    stale_before: DateTime<Utc>,
) -> Result<std::collections::HashSet<String>, DbErr> {
    if keys.is_empty() {
        return Ok(Default::default());
    }
    let found: Vec<String> = job_run::Entity::find()
        .select_only()
        .column(job_run::Column::JobKey)
        .filter(job_run::Column::JobKey.is_in(keys.iter().cloned()))
        .filter(needs_push(stale_before).not())
        .into_tuple()
        .all(db)
        .await?;
    Ok(found.into_iter().collect())
}

/// FAILED and due → QUEUED (pushed now). Returns whether this caller won.
pub async fn take_retry<C: ConnectionTrait>(
    db: &C,
    key: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = job_run::Entity::update_many()
        .col_expr(job_run::Column::State, Expr::value(JobState::Queued))
        .col_expr(job_run::Column::NextAttemptAt, Expr::value(Some(now)))
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .filter(job_run::Column::JobKey.eq(key))
        .filter(job_run::Column::State.eq(JobState::Failed))
        .filter(job_run::Column::NextAttemptAt.lte(now))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// RUNNING with an expired lease → QUEUED (pushed now), or DEAD when it has
/// used all its attempts. Returns the new state when this caller won.
pub async fn take_expired_lease<C: ConnectionTrait>(
    db: &C,
    row: &job_run::Model,
    now: DateTime<Utc>,
) -> Result<Option<JobState>, DbErr> {
    let dead = row.attempts >= row.max_attempts;
    let mut update = job_run::Entity::update_many()
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .filter(job_run::Column::Id.eq(row.id.as_str()))
        .filter(job_run::Column::State.eq(JobState::Running))
        .filter(job_run::Column::Attempts.eq(row.attempts))
        .filter(job_run::Column::NextAttemptAt.lt(now));
    if dead {
        update = update
            .col_expr(job_run::Column::State, Expr::value(JobState::Dead))
            .col_expr(job_run::Column::FinishedAt, Expr::value(Some(now)))
            .col_expr(
                job_run::Column::LastError,
                Expr::value(Some(
                    "lease expired: the worker stopped mid-job".to_string(),
                )),
            );
    } else {
        update = update
            .col_expr(job_run::Column::State, Expr::value(JobState::Queued))
            .col_expr(job_run::Column::NextAttemptAt, Expr::value(Some(now)));
    }
    let result = update.exec(db).await?;
    Ok((result.rows_affected == 1).then_some(if dead {
        JobState::Dead
    } else {
        JobState::Queued
    }))
}

/// Claims `key` for one attempt: QUEUED, due FAILED, or RUNNING with an
/// expired lease → RUNNING with a new lease, `attempts + 1`. `None` means the
/// job is done, running elsewhere, dead, discarded or unknown: ack, no effect.
pub async fn claim<C: ConnectionTrait>(
    db: &C,
    key: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<job_run::Model>, DbErr> {
    let claimable = Condition::any()
        .add(job_run::Column::State.eq(JobState::Queued))
        .add(
            Condition::all()
                .add(job_run::Column::State.eq(JobState::Failed))
                .add(job_run::Column::NextAttemptAt.lte(now)),
        )
        .add(
            Condition::all()
                .add(job_run::Column::State.eq(JobState::Running))
                .add(job_run::Column::NextAttemptAt.lt(now)),
        );
    let update = to_running(now, lease_until)
        .filter(job_run::Column::JobKey.eq(key))
        .filter(claimable)
        .filter(Expr::col(job_run::Column::Attempts).lt(Expr::col(job_run::Column::MaxAttempts)));
    if db.support_returning() {
        return Ok(update.exec_with_returning(db).await?.pop());
    }
    if update.exec(db).await?.rows_affected != 1 {
        return Ok(None);
    }
    find(db, key).await
}

/// Claims, beside `job`, up to `limit` more QUEUED jobs of its kind and
/// organization that are due at `org_now`, oldest first, for one batch
/// (see `workflows::lifecycle::close::run_batch`). Rows another worker is
/// claiming are skipped, not waited for. Returns the claimed rows.
pub async fn claim_companions(
    db: &DatabaseConnection,
    job: &Job,
    org_now: DateTime<Utc>,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<job_run::Model>, DbErr> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let txn = workflows::txn::begin_write(db).await?;
    let mut pick = job_run::Entity::find()
        .filter(job_run::Column::Kind.eq(job.kind.as_str()))
        .filter(job_run::Column::OrganizationId.eq(job.organization_id.as_str()))
        .filter(job_run::Column::State.eq(JobState::Queued))
        .filter(job_run::Column::RunAt.lte(org_now))
        .filter(job_run::Column::JobKey.ne(job.key.as_str()))
        .filter(Expr::col(job_run::Column::Attempts).lt(Expr::col(job_run::Column::MaxAttempts)))
        .order_by_asc(job_run::Column::RunAt)
        .limit(limit);
    if db.get_database_backend() == DatabaseBackend::Postgres {
        pick = pick.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let picked = pick.all(&txn).await?;
    if picked.is_empty() {
        txn.commit().await?;
        return Ok(picked);
    }
    // The rows are locked (PostgreSQL) or the database is (SQLite): the
    // update moves exactly them.
    to_running(now, lease_until)
        .filter(job_run::Column::Id.is_in(picked.iter().map(|r| r.id.clone())))
        .filter(job_run::Column::State.eq(JobState::Queued))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(picked
        .into_iter()
        .map(|row| job_run::Model {
            state: JobState::Running,
            attempts: row.attempts + 1,
            started_at: Some(now),
            finished_at: None,
            next_attempt_at: Some(lease_until),
            updated_at: now,
            ..row
        })
        .collect())
}

/// The update of a claim: RUNNING under a new lease, one more attempt.
fn to_running(now: DateTime<Utc>, lease_until: DateTime<Utc>) -> UpdateMany<job_run::Entity> {
    job_run::Entity::update_many()
        .col_expr(job_run::Column::State, Expr::value(JobState::Running))
        .col_expr(
            job_run::Column::Attempts,
            Expr::col(job_run::Column::Attempts).add(1),
        )
        .col_expr(job_run::Column::StartedAt, Expr::value(Some(now)))
        .col_expr(
            job_run::Column::FinishedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            job_run::Column::NextAttemptAt,
            Expr::value(Some(lease_until)),
        )
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
}

/// Gives a claimed job back without counting the attempt (it was not due yet):
/// QUEUED, not pushed, so the scheduled scan pushes it when due.
pub async fn release<C: ConnectionTrait>(
    db: &C,
    claimed: &job_run::Model,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = job_run::Entity::update_many()
        .col_expr(job_run::Column::State, Expr::value(JobState::Queued))
        .col_expr(
            job_run::Column::Attempts,
            Expr::col(job_run::Column::Attempts).sub(1),
        )
        .col_expr(
            job_run::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .filter(job_run::Column::Id.eq(claimed.id.as_str()))
        .filter(job_run::Column::State.eq(JobState::Running))
        .filter(job_run::Column::Attempts.eq(claimed.attempts))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Records a failed attempt of a job this worker claimed: FAILED with
/// `next_attempt_at = now + backoff`, or DEAD when the attempts are used up or
/// the error is permanent. Returns the new state, or `None` when the row was no
/// longer ours (lease expired and reclaimed, discarded…).
pub async fn fail<C: ConnectionTrait>(
    db: &C,
    claimed: &job_run::Model,
    error: &str,
    permanent: bool,
    backoff: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Option<JobState>, DbErr> {
    let dead = permanent || claimed.attempts >= claimed.max_attempts;
    let error: String = error.chars().take(MAX_ERROR_LEN).collect();
    let mut update = job_run::Entity::update_many()
        .col_expr(job_run::Column::LastError, Expr::value(Some(error)))
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .filter(job_run::Column::Id.eq(claimed.id.as_str()))
        .filter(job_run::Column::State.eq(JobState::Running))
        .filter(job_run::Column::Attempts.eq(claimed.attempts));
    let state = if dead {
        update = update
            .col_expr(job_run::Column::State, Expr::value(JobState::Dead))
            .col_expr(job_run::Column::FinishedAt, Expr::value(Some(now)))
            .col_expr(
                job_run::Column::NextAttemptAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            );
        JobState::Dead
    } else {
        update = update
            .col_expr(job_run::Column::State, Expr::value(JobState::Failed))
            .col_expr(
                job_run::Column::NextAttemptAt,
                Expr::value(Some(now + chrono(backoff))),
            );
        JobState::Failed
    };
    let result = update.exec(db).await?;
    Ok((result.rows_affected == 1).then_some(state))
}

pub async fn find<C: ConnectionTrait>(db: &C, key: &str) -> Result<Option<job_run::Model>, DbErr> {
    job_run::Entity::find()
        .filter(job_run::Column::JobKey.eq(key))
        .one(db)
        .await
}

/// FAILED rows whose next attempt is due, oldest first.
pub async fn due_retries<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<job_run::Model>, DbErr> {
    job_run::Entity::find()
        .filter(job_run::Column::State.eq(JobState::Failed))
        .filter(job_run::Column::NextAttemptAt.lte(now))
        .order_by_asc(job_run::Column::NextAttemptAt)
        .limit(limit)
        .all(db)
        .await
}

/// QUEUED rows of the kinds of `stale_before` pushed before their kind's
/// instant (their push may be lost).
pub async fn stale_queued<C: ConnectionTrait>(
    db: &C,
    stale_before: &HashMap<JobKind, DateTime<Utc>>,
    limit: u64,
) -> Result<Vec<job_run::Model>, DbErr> {
    let stale = stale_before
        .iter()
        .fold(Condition::any(), |any, (kind, before)| {
            any.add(
                Condition::all()
                    .add(job_run::Column::Kind.eq(kind.as_str()))
                    .add(job_run::Column::NextAttemptAt.lt(*before)),
            )
        });
    job_run::Entity::find()
        .filter(job_run::Column::State.eq(JobState::Queued))
        .filter(stale)
        .order_by_asc(job_run::Column::NextAttemptAt)
        .limit(limit)
        .all(db)
        .await
}

/// RUNNING rows whose lease expired (their worker died).
pub async fn expired_leases<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<job_run::Model>, DbErr> {
    job_run::Entity::find()
        .filter(job_run::Column::State.eq(JobState::Running))
        .filter(job_run::Column::NextAttemptAt.lt(now))
        .order_by_asc(job_run::Column::NextAttemptAt)
        .limit(limit)
        .all(db)
        .await
}

/// QUEUED rows never pushed (not due when enqueued) whose `run_at` is at or
/// before `at`, restricted by `scope` (an organization clock group).
pub async fn due_unpushed<C: ConnectionTrait>(
    db: &C,
    scope: Condition,
    at: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<job_run::Model>, DbErr> {
    job_run::Entity::find()
        .filter(job_run::Column::State.eq(JobState::Queued))
        .filter(job_run::Column::NextAttemptAt.is_null())
        .filter(job_run::Column::RunAt.lte(at))
        .filter(scope)
        .order_by_asc(job_run::Column::RunAt)
        .limit(limit)
        .all(db)
        .await
}

/// Rows per (kind, label) for `valora_queue_depth`, for the `labels` asked:
/// a state, where QUEUED counts pushed rows only, or SCHEDULED, the QUEUED
/// rows not pushed yet (due later, or due and waiting for the next sweep).
pub async fn depth<C: ConnectionTrait>(
    db: &C,
    labels: &[&str],
) -> Result<Vec<(String, String, i64)>, DbErr> {
    let mut which = Condition::any();
    for label in labels {
        which = match *label {
            "QUEUED" => which.add(
                Condition::all()
                    .add(job_run::Column::State.eq(JobState::Queued))
                    .add(job_run::Column::NextAttemptAt.is_not_null()),
            ),
            "SCHEDULED" => which.add(
                Condition::all()
                    .add(job_run::Column::State.eq(JobState::Queued))
                    .add(job_run::Column::NextAttemptAt.is_null()),
            ),
            state => which.add(job_run::Column::State.eq(state)),
        };
    }
    let label = Expr::cust(
        "CASE WHEN state = 'QUEUED' AND next_attempt_at IS NULL THEN 'SCHEDULED' ELSE state END",
    );
    job_run::Entity::find()
        .filter(which)
        .select_only()
        .column(job_run::Column::Kind)
        .column_as(label.clone(), "label")
        .column_as(job_run::Column::Id.count(), "n")
        .group_by(job_run::Column::Kind)
        .group_by(label)
        .into_tuple::<(String, String, i64)>()
        .all(db)
        .await
}

/// Number of rows in `state` (tests, health).
pub async fn count_in_state<C: ConnectionTrait>(db: &C, state: JobState) -> Result<u64, DbErr> {
    job_run::Entity::find()
        .filter(job_run::Column::State.eq(state))
        .count(db)
        .await
}
