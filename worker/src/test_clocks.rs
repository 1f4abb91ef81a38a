//! Settling test clocks: ADVANCING → READY once every piece of work due by
//! the organization's frozen clock has run.
//!
//! Checked at the end of each sweeper tick, after the scans have enqueued
//! whatever was due, so "nothing left" is judged from the database alone:
//!
//! - no scan deferred rows this tick (a full batch may hide due work);
//! - no unrelayed outbox rows of the organization (follow-up work such as the
//!   next period close of a catch-up);
//! - no QUEUED, RUNNING or FAILED job runs of the organization due by its clock.
//!
//! Due domain rows (a period that ended, a draft past its grace period) are
//! either in the ledger by then — non-terminal, so the clock stays ADVANCING —
//! or their job reached a terminal state (succeeded, or dead: an operator's
//! turn). The switch is a compare-and-set on the frozen instant, so an
//! `advanceTestClock` landing mid-check is never marked READY by mistake.

use chrono::{DateTime, Utc};
use entity::{JobState, TestClockStatus, job_run, organization, outbox};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    IsolationLevel, PaginatorTrait, QueryFilter, TransactionTrait,
};

/// Marks READY every ADVANCING test clock whose due work is done; returns how many.
///
/// `scanned` is the test-clock snapshot this tick's scans used: an
/// organization whose clock moved since (an `advanceTestClock` landing
/// mid-tick) is left for the next tick, whose scans see the new instant.
pub async fn settle(
    db: &DatabaseConnection,
    scans_deferred: bool,
    scanned: &[(String, DateTime<Utc>)],
) -> Result<u64, DbErr> {
    if scans_deferred {
        return Ok(0);
    }
    let advancing = organization::Entity::find()
        .filter(organization::Column::TestClockStatus.eq(TestClockStatus::Advancing))
        .all(db)
        .await?;
    let mut settled = 0;
    for org in advancing {
        let Some(frozen) = org.test_clock_time else {
            continue;
        };
        if !scanned
            .iter()
            .any(|(id, at)| *id == org.id && *at == frozen)
        {
            continue;
        }
        // Both counts from one snapshot: read one after the other, a job (or
        // the relay) committing in between could hide work from both. A SQLite
        // read transaction is one snapshot already; PostgreSQL needs REPEATABLE READ.
        let level = (db.get_database_backend() == DbBackend::Postgres)
            .then_some(IsolationLevel::RepeatableRead);
        let snapshot = db.begin_with_config(level, None).await?;
        let pending = has_pending_work(&snapshot, &org.id, frozen).await?;
        snapshot.commit().await?;
        if pending {
            continue;
        }
        let result = organization::Entity::update_many()
            .col_expr(
                organization::Column::TestClockStatus,
                Expr::value(Some(TestClockStatus::Ready)),
            )
            .filter(organization::Column::Id.eq(&org.id))
            .filter(organization::Column::TestClockStatus.eq(TestClockStatus::Advancing))
            .filter(organization::Column::TestClockTime.eq(frozen))
            .exec(db)
            .await?;
        settled += result.rows_affected;
    }
    Ok(settled)
}

async fn has_pending_work<C: ConnectionTrait>(
    db: &C,
    org: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let unrelayed = outbox::Entity::find()
        .filter(outbox::Column::OrganizationId.eq(org))
        .filter(outbox::Column::RelayedAt.is_null())
        .count(db)
        .await?;
    if unrelayed > 0 {
        return Ok(true);
    }
    let unfinished = job_run::Entity::find()
        .filter(job_run::Column::OrganizationId.eq(org))
        .filter(job_run::Column::State.is_in([
            JobState::Queued,
            JobState::Running,
            JobState::Failed,
        ]))
        .filter(job_run::Column::RunAt.lte(now))
        .count(db)
        .await?;
    Ok(unfinished > 0)
}
