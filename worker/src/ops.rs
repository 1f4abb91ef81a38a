//! Operator actions on jobs, for the ops dashboard and its GraphQL API.
//! All read and write the `job_runs` ledger (apalis-redis cannot list jobs).

use chrono::{DateTime, Utc};
use entity::{JobState, job_run};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use workflows::jobs::JobKind;

use crate::runtime::EnqueueError;

/// Largest page [`list_jobs`] returns.
pub const MAX_PAGE: u64 = 100;

/// One page of jobs, newest first.
#[derive(Clone, Debug)]
pub struct JobPage {
    pub jobs: Vec<job_run::Model>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

/// Why an operator action failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("job not found")]
    NotFound,
    #[error("job is {0}; the action needs another state")]
    WrongState(JobState),
    #[error("invalid cursor")]
    BadCursor,
    #[error(transparent)]
    Database(#[from] DbErr),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
}

/// Cursor: `{created_at rfc3339}|{id}` (newest first, then id descending).
fn cursor_of(row: &job_run::Model) -> String {
    format!("{}|{}", row.created_at.to_rfc3339(), row.id)
}

fn parse_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), OpsError> {
    let (at, id) = cursor.split_once('|').ok_or(OpsError::BadCursor)?;
    let at = DateTime::parse_from_rfc3339(at)
        .map_err(|_| OpsError::BadCursor)?
        .with_timezone(&Utc);
    Ok((at, id.to_string()))
}

/// Lists jobs, optionally of one kind and/or state, newest first.
/// `organization_id` scopes the list to one tenant (`None`: all, for server admins).
pub async fn list_jobs(
    db: &DatabaseConnection,
    organization_id: Option<&str>,
    kind: Option<JobKind>,
    state: Option<JobState>,
    first: u64,
    after: Option<&str>,
) -> Result<JobPage, OpsError> {
    let first = first.clamp(1, MAX_PAGE);
    let mut select = job_run::Entity::find();
    if let Some(org) = organization_id {
        select = select.filter(job_run::Column::OrganizationId.eq(org));
    }
    if let Some(kind) = kind {
        select = select.filter(job_run::Column::Kind.eq(kind.as_str()));
    }
    if let Some(state) = state {
        select = select.filter(job_run::Column::State.eq(state));
    }
    if let Some(after) = after {
        let (at, id) = parse_cursor(after)?;
        select = select.filter(
            Condition::any().add(job_run::Column::CreatedAt.lt(at)).add(
                Condition::all()
                    .add(job_run::Column::CreatedAt.eq(at))
                    .add(job_run::Column::Id.lt(id)),
            ),
        );
    }
    let mut jobs = select
        .order_by_desc(job_run::Column::CreatedAt)
        .order_by_desc(job_run::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    let has_next_page = jobs.len() as u64 > first;
    jobs.truncate(first as usize);
    Ok(JobPage {
        end_cursor: jobs.last().map(cursor_of),
        jobs,
        has_next_page,
    })
}

/// Loads one job (scoped to `organization_id` when given).
pub async fn get_job(
    db: &DatabaseConnection,
    organization_id: Option<&str>,
    id: &str,
) -> Result<job_run::Model, OpsError> {
    let mut select = job_run::Entity::find_by_id(id);
    if let Some(org) = organization_id {
        select = select.filter(job_run::Column::OrganizationId.eq(org));
    }
    select.one(db).await?.ok_or(OpsError::NotFound)
}

/// DEAD/FAILED/DISCARDED → QUEUED with attempts reset; the next sweeper tick pushes it.
pub async fn retry_job(
    db: &DatabaseConnection,
    organization_id: Option<&str>,
    id: &str,
    now: DateTime<Utc>,
) -> Result<job_run::Model, OpsError> {
    let row = get_job(db, organization_id, id).await?;
    let result = job_run::Entity::update_many()
        .col_expr(job_run::Column::State, Expr::value(JobState::Queued))
        .col_expr(job_run::Column::Attempts, Expr::value(0))
        // "Never pushed": the next sweeper tick (any worker) pushes it.
        .col_expr(
            job_run::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            job_run::Column::FinishedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .filter(job_run::Column::Id.eq(row.id.as_str()))
        .filter(job_run::Column::State.is_in([
            JobState::Dead,
            JobState::Failed,
            JobState::Discarded,
        ]))
        .exec(db)
        .await?;
    if result.rows_affected != 1 {
        return Err(OpsError::WrongState(row.state));
    }
    get_job(db, None, id).await
}

/// QUEUED/FAILED/DEAD → DISCARDED (never runs again unless retried).
pub async fn discard_job(
    db: &DatabaseConnection,
    organization_id: Option<&str>,
    id: &str,
    now: DateTime<Utc>,
) -> Result<job_run::Model, OpsError> {
    let row = get_job(db, organization_id, id).await?;
    let result = job_run::Entity::update_many()
        .col_expr(job_run::Column::State, Expr::value(JobState::Discarded))
        .col_expr(job_run::Column::FinishedAt, Expr::value(Some(now)))
        .col_expr(
            job_run::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(job_run::Column::UpdatedAt, Expr::value(now))
        .filter(job_run::Column::Id.eq(row.id.as_str()))
        .filter(job_run::Column::State.is_in([JobState::Queued, JobState::Failed, JobState::Dead]))
        .exec(db)
        .await?;
    if result.rows_affected != 1 {
        return Err(OpsError::WrongState(row.state));
    }
    get_job(db, None, id).await
}
