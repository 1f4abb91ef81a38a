//! An OPEN invoice past its due date makes its subscription PAST_DUE.
//!
//! Paying it (`markInvoicePaid`) returns the subscription to ACTIVE; that
//! transition lives with the invoice actions.

use entity::{InvoiceStatus, SubscriptionStatus, organization, subscription};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use crate::audit::{self, AuditEntry, snapshot};
use crate::clock::{Clock, org_now};
use crate::error::WorkflowError;
use crate::jobs::Job;
use crate::lifecycle::{actor, commit_step, lock, not_due};
use crate::steps::{StepError, StepOutcome};

/// The step of `invoice_overdue` jobs.
pub async fn run(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    job: &Job,
) -> Result<StepOutcome, StepError> {
    let txn = crate::txn::begin_write(db).await?;
    let inv = lock::invoice(&txn, &job.subject_id).await?;
    let org = organization::Entity::find_by_id(inv.organization_id.clone())
        .one(&txn)
        .await?
        .ok_or(WorkflowError::NotFound("organization"))?;
    let now = org_now(&org, clock);
    if inv.status != InvoiceStatus::Open {
        let why = format!("invoice is {}", inv.status);
        return commit_step(txn, job, now, StepOutcome::Skipped(why)).await;
    }
    let Some(due_at) = inv.due_at else {
        let why = "invoice has no due date".to_string();
        return commit_step(txn, job, now, StepOutcome::Skipped(why)).await;
    };
    if now < due_at {
        return Err(not_due("invoice", due_at, now));
    }
    let Some(sub_id) = &inv.subscription_id else {
        let why = "invoice has no subscription".to_string();
        return commit_step(txn, job, now, StepOutcome::Skipped(why)).await;
    };
    let sub = lock::subscription(&txn, sub_id).await?;
    if sub.status != SubscriptionStatus::Active {
        let why = format!("subscription is {}", sub.status);
        return commit_step(txn, job, now, StepOutcome::Skipped(why)).await;
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
    commit_step(txn, job, now, StepOutcome::Done).await
}
