//! The job-runs ledger, as seen from inside a step's transaction.
//!
//! The worker machinery owns the rest of the state machine (`worker::job_runs`);
//! steps only ever need [`mark_succeeded`] (or, for a batch, [`mark_all_succeeded`]).

use chrono::{DateTime, Utc};
use entity::{JobState, job_run};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

/// RUNNING → SUCCEEDED for `job_key`, inside the caller's transaction.
///
/// Returns `false` when the row was not RUNNING (another delivery already
/// finished it, or an operator discarded it): the caller must roll back and
/// report the work as already done.
pub async fn mark_succeeded<C: ConnectionTrait>(
    txn: &C,
    job_key: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    Ok(mark_all_succeeded(txn, [job_key], now).await? == 1)
}

/// [`mark_succeeded`] for several keys in one statement; returns how many
/// rows moved (fewer than the keys when some were not RUNNING).
pub async fn mark_all_succeeded<'k, C: ConnectionTrait>(
    txn: &C,
    job_keys: impl IntoIterator<Item = &'k str>,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let result = job_run::Entity::update_many()
        .col_expr(job_run::Column::State, Expr::value(JobState::Succeeded))
        .col_expr(job_run::Column::FinishedAt, Expr::value(Some(now)))
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            job_run::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(job_run::Column::JobKey.is_in(job_keys))
        .filter(job_run::Column::State.eq(JobState::Running))
        .exec(txn)
        .await?;
    Ok(result.rows_affected)
}
