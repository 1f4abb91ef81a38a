//! Outbox relay: forwards outbox rows (written in the business transaction)
//! to the ledger and the queues, in id order, in batches.
//!
//! One round: select unrelayed rows (`relayed_at IS NULL`) in id order, enqueue
//! each job ([`Runtime::enqueue`]: ledger insert by key + push when due), then
//! set `relayed_at` on the rows enqueued.
//!
//! - A crash between push and mark leaves the rows unrelayed; the next round
//!   enqueues them again, which the ledger's unique key turns into a no-op.
//! - Several relays at once: on PostgreSQL the selection takes
//!   `FOR UPDATE SKIP LOCKED` inside a transaction that also marks the rows,
//!   so concurrent relays split the rows; the ledger insert and the push run
//!   outside that transaction (a worker must see the ledger row the moment the
//!   message arrives). On SQLite (one writer, usually one process) the
//!   selection is plain; overlap is again harmless by key.
//! - A push failure stops the round at that row (order is kept); the next
//!   round retries it.

use entity::outbox;
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, DatabaseBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use workflows::jobs::{Job, JobKind};

use crate::metrics;
use crate::org_clocks::OrgClocks;
use crate::runtime::{EnqueueError, Runtime};

/// Relays up to `batch` outbox rows; returns how many were marked relayed.
pub async fn relay_once(rt: &Runtime, batch: u64) -> Result<u64, EnqueueError> {
    let txn = rt.db.begin().await?;
    let mut select = outbox::Entity::find()
        .filter(outbox::Column::RelayedAt.is_null())
        .order_by_asc(outbox::Column::Id)
        .limit(batch);
    if rt.db.get_database_backend() == DatabaseBackend::Postgres {
        select = select.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let rows = if rt.db.get_database_backend() == DatabaseBackend::Postgres {
        select.all(&txn).await?
    } else {
        // SQLite: read outside the (write-)transaction so pushes do not wait on it.
        select.all(&rt.db).await?
    };
    if rows.is_empty() {
        txn.commit().await?;
        return Ok(0);
    }
    let clocks = OrgClocks::load(&rt.db, rt.clock.as_ref()).await?;
    let mut done = Vec::with_capacity(rows.len());
    let mut jobs = Vec::with_capacity(rows.len());
    for row in &rows {
        match job_of_outbox(row) {
            Ok(job) => jobs.push((row.id, job)),
            Err(e) => {
                // A row that cannot be understood would block the relay forever:
                // mark it relayed and say so loudly.
                tracing::error!(outbox_id = row.id, error = %e, "unreadable outbox row skipped");
                done.push(row.id);
            }
        }
    }
    let due: Vec<(&Job, _)> = jobs
        .iter()
        .map(|(_, job)| (job, clocks.now_of(&job.organization_id)))
        .collect();
    let mut failure = None;
    for (result, (id, _)) in rt.enqueue_all(&due, "relay").await?.into_iter().zip(&jobs) {
        match result {
            Ok(_) => done.push(*id),
            // Left unrelayed: the next round enqueues it again (a known key, pushed again).
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let now = rt.now();
    if !done.is_empty() {
        let marked = outbox::Entity::update_many()
            .col_expr(outbox::Column::RelayedAt, Expr::value(Some(now)))
            .filter(outbox::Column::Id.is_in(done.clone()))
            .filter(outbox::Column::RelayedAt.is_null())
            .exec(&txn)
            .await?;
        metrics::outbox_relayed(marked.rows_affected);
    }
    txn.commit().await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(done.len() as u64),
    }
}

/// The job an outbox row carries (its payload, else its columns).
pub fn job_of_outbox(row: &outbox::Model) -> Result<Job, DbErr> {
    if let Ok(job) = serde_json::from_value::<Job>(row.payload.clone()) {
        return Ok(job);
    }
    let kind = JobKind::parse(&row.job_kind)
        .ok_or_else(|| DbErr::Custom(format!("unknown job kind {:?}", row.job_kind)))?;
    Ok(Job {
        kind,
        key: row.job_key.clone(),
        organization_id: row.organization_id.clone(),
        subject_id: row.subject_id.clone(),
        run_at: row.run_at,
    })
}
