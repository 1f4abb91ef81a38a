//! An OPEN invoice past its due date makes its subscription PAST_DUE.
//!
//! Paying it (`markInvoicePaid`) returns the subscription to ACTIVE; that
//! transition lives with the invoice actions. When the organization sets
//! `cancelAfterPastDueDays`, going PAST_DUE also schedules a cancellation
//! job for that many days later (same queue, key `…:cancel`): if the invoice
//! is still unpaid then, the subscription is canceled as of that instant,
//! and its final invoice (usage so far, no credit for unused days) follows
//! through the normal cancel step.

use chrono::{DateTime, Duration, Utc};
use entity::{
    ChangeTiming, InvoiceStatus, ProrationBehavior, SubscriptionChangeKind, SubscriptionStatus,
    organization, subscription, subscription_change,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    Set,
};

use crate::audit::{self, AuditEntry, snapshot};
use crate::clock::{Clock, org_now};
use crate::error::WorkflowError;
use crate::ids::new_id;
use crate::jobs::{Job, record_in_outbox};
use crate::lifecycle::{actor, commit_step, lock, not_due};
use crate::steps::{StepError, StepOutcome};
use crate::tenancy::load_org;

/// The step of `invoice_overdue` jobs.
pub async fn run(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    job: &Job,
) -> Result<StepOutcome, StepError> {
    let txn = crate::txn::begin_write(db).await?;
    let inv = lock::invoice(&txn, &job.subject_id).await?;
    let org = load_org(&txn, &inv.organization_id).await?;
    let now = org_now(&org, clock);
    if inv.status != InvoiceStatus::Open {
        let why = format!("invoice is {}", inv.status);
        return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
    }
    let Some(due_at) = inv.due_at else {
        let why = "invoice has no due date".to_string();
        return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
    };
    if now < due_at {
        return Err(not_due("invoice", due_at, now));
    }
    let Some(sub_id) = &inv.subscription_id else {
        let why = "invoice has no subscription".to_string();
        return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
    };
    let sub = lock::subscription(&txn, sub_id).await?;
    if job.is_past_due_cancellation() {
        if sub.status != SubscriptionStatus::PastDue {
            let why = format!("subscription is {}", sub.status);
            return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
        }
        if now < job.run_at {
            return Err(not_due("past-due cancellation", job.run_at, now));
        }
        cancel_unpaid(&txn, &org, &sub, job.run_at, &actor(job)).await?;
        return commit_step(txn, job, clock, StepOutcome::Done).await;
    }
    if sub.status != SubscriptionStatus::Active {
        let why = format!("subscription is {}", sub.status);
        return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
    }
    subscription::Entity::update_many()
        .col_expr(
            subscription::Column::Status,
            Expr::value(SubscriptionStatus::PastDue),
        )
        .col_expr(
            subscription::Column::PastDueSince,
            Expr::value(Some(due_at)),
        )
        .col_expr(subscription::Column::UpdatedAt, Expr::value(now))
        .filter(subscription::Column::Id.eq(&sub.id))
        .filter(subscription::Column::Status.eq(SubscriptionStatus::Active))
        .exec(&txn)
        .await?;
    let after = subscription::Entity::find_by_id(sub.id.clone())
        .one(&txn)
        .await?
        .ok_or(WorkflowError::NotFound("subscription"))?;
    if let Some(days) = org.cancel_after_past_due_days {
        let at = due_at + Duration::days(i64::from(days));
        let cancellation = Job::past_due_cancellation(&org.id, &inv.id, at);
        record_in_outbox(&txn, &cancellation, now).await?;
    }
    audit::append(
        &txn,
        &org.id,
        &actor(job),
        AuditEntry {
            action: "subscription.past_due",
            entity_type: "subscription",
            entity_id: &sub.id,
            before: snapshot(&sub),
            after: snapshot(&after),
        },
        now,
    )
    .await?;
    commit_step(txn, job, clock, StepOutcome::Done).await
}

/// PAST_DUE → CANCELED at `at`, recorded as an immediate cancel without
/// prorations, whose job writes the final invoice.
async fn cancel_unpaid<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    sub: &subscription::Model,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<(), StepError> {
    let changed = subscription::Entity::update_many()
        .col_expr(
            subscription::Column::Status,
            Expr::value(SubscriptionStatus::Canceled),
        )
        .col_expr(subscription::Column::CanceledAt, Expr::value(Some(at)))
        .col_expr(subscription::Column::UpdatedAt, Expr::value(at))
        .filter(subscription::Column::Id.eq(&sub.id))
        .filter(subscription::Column::Status.eq(SubscriptionStatus::PastDue))
        .exec(txn)
        .await?;
    if changed.rows_affected != 1 {
        return Err(StepError::Transient(
            "subscription changed concurrently".into(),
        ));
    }
    let change = subscription_change::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(org.id.clone()),
        subscription_id: Set(sub.id.clone()),
        kind: Set(SubscriptionChangeKind::Cancel),
        plan_id: Set(sub.plan_id.clone()),
        quantity: Set(sub.quantity),
        effective_at: Set(at),
        proration_behavior: Set(Some(ProrationBehavior::None)),
        timing: Set(Some(ChangeTiming::Immediately)),
        applied_at: Set(Some(at)),
        created_at: Set(at),
    }
    .insert(txn)
    .await?;
    record_in_outbox(txn, &Job::proration(&org.id, &sub.id, &change.id, at), at).await?;
    let after = subscription::Entity::find_by_id(sub.id.clone())
        .one(txn)
        .await?
        .ok_or(WorkflowError::NotFound("subscription"))?;
    let entry = AuditEntry {
        action: "subscription.canceled_unpaid",
        entity_type: "subscription",
        entity_id: &sub.id,
        before: snapshot(sub),
        after: snapshot(&after),
    };
    audit::append(txn, &org.id, actor, entry, at).await?;
    Ok(())
}
