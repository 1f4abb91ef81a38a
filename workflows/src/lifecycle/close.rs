//! Period close: one invoice for the closing period, then the period advances.
//!
//! The invoice (key `periodic:{subscription}:{period_start}`) holds the
//! closing period's usage and IN_ARREARS fees, the next period's IN_ADVANCE
//! fees, pending proration lines and LATE_USAGE adjustments. A subscription
//! set to cancel at period end gets its final invoice (arrears only) and is
//! CANCELED instead. The period index moves with a compare-and-set, so a
//! second delivery for the same period finds it closed and does nothing.
//! When the next period is already over (a worker was down, a test clock
//! jumped ahead), its close is queued at once: missed periods close one by
//! one, in order.

use chrono::{DateTime, Utc};
use entity::{
    InvoiceKind, SubscriptionChangeKind, SubscriptionStatus, pending_invoice_item, subscription,
    subscription_change,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
};

use crate::audit::{AuditEntry, snapshot};
use crate::clock::{Clock, org_now};
use crate::error::WorkflowError;
use crate::jobs::{Job, record_in_outbox};
use crate::lifecycle::start::ensure_first_invoice;
use crate::lifecycle::{actor, commit_step, draft, inputs, lock, not_due};
use crate::steps::{StepError, StepOutcome};
use crate::tenancy::load_org;

/// The step of `period_close` jobs.
pub async fn run(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    job: &Job,
) -> Result<StepOutcome, StepError> {
    let txn = crate::txn::begin_write(db).await?;
    let sub = lock::subscription(&txn, &job.subject_id).await?;
    let org = load_org(&txn, &sub.organization_id).await?;
    let now = org_now(&org, clock);
    let (Some(start), Some(end)) = (sub.current_period_start, sub.current_period_end) else {
        let why = format!("subscription is {} with no open period", sub.status);
        return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
    };
    let open = matches!(
        sub.status,
        SubscriptionStatus::Active | SubscriptionStatus::PastDue
    );
    if !open || job.key != Job::period_close(&org.id, &sub.id, start, end).key {
        let why = format!("period already closed (subscription is {})", sub.status);
        return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
    }
    if now < end {
        return Err(not_due("period end", end, now));
    }
    let n = u32::try_from(sub.period_index)
        .map_err(|_| WorkflowError::Internal("negative period index".into()))?;
    let actor = actor(job);
    let currency = inputs::currency(&org)?;

    // Period 0 may close before the start step ran (a back-dated start, a
    // catch-up race): the first invoice is written here then, identically.
    let first = match n {
        0 => ensure_first_invoice(&txn, &org, &sub, now).await?,
        _ => None,
    };
    let (terms, meters) = crate::subscriptions::terms(&txn, &org, &sub).await?;
    let mut lines = inputs::period_close_lines(&txn, &org, &sub, (&terms, meters), n, None).await?;
    let pending = inputs::pending_items(&txn, &sub.id).await?;
    lines.extend(
        pending
            .iter()
            .map(|item| inputs::pending_line(currency, item)),
    );
    let ends_here = sub.cancel_at_period_end;
    let invoice = draft::write(
        &txn,
        draft::Draft {
            org: &org,
            sub: &sub,
            kind: if ends_here {
                InvoiceKind::Final
            } else {
                InvoiceKind::Periodic
            },
            billing_key: draft::periodic_key(&sub.id, start),
            lines,
            boundary: end,
            now,
        },
    )
    .await?;
    if let Some(invoice) = &invoice
        && !pending.is_empty()
    {
        pending_invoice_item::Entity::update_many()
            .col_expr(
                pending_invoice_item::Column::InvoiceId,
                Expr::value(Some(invoice.id.clone())),
            )
            .filter(pending_invoice_item::Column::Id.is_in(pending.iter().map(|p| p.id.clone())))
            .exec(&txn)
            .await?;
    }

    let after = if ends_here {
        end_subscription(&txn, &sub, end, now).await?
    } else {
        advance(&txn, &sub, &terms, n, end, now).await?
    };
    if let (false, Some(next_start), Some(next_end)) = (
        ends_here,
        after.current_period_start,
        after.current_period_end,
    ) && next_end <= now
    {
        let next = Job::period_close(&org.id, &sub.id, next_start, next_end);
        record_in_outbox(&txn, &next, now).await?;
    }
    let entry = AuditEntry {
        action: if ends_here {
            "subscription.ended"
        } else {
            "subscription.period_closed"
        },
        entity_type: "subscription",
        entity_id: &sub.id,
        before: snapshot(&sub),
        after: snapshot(&after),
    };
    draft::finish(
        &txn,
        &org,
        &actor,
        first.iter().chain(&invoice),
        vec![entry],
        now,
    )
    .await?;
    commit_step(txn, job, clock, StepOutcome::Done).await
}

/// Cancel-at-period-end reached: CANCELED at the period end.
async fn end_subscription<C: ConnectionTrait>(
    txn: &C,
    sub: &subscription::Model,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<subscription::Model, StepError> {
    let changed = subscription::Entity::update_many()
        .col_expr(
            subscription::Column::Status,
            Expr::value(SubscriptionStatus::Canceled),
        )
        .col_expr(subscription::Column::CanceledAt, Expr::value(Some(end)))
        .col_expr(subscription::Column::UpdatedAt, Expr::value(now))
        .filter(subscription::Column::Id.eq(&sub.id))
        .filter(subscription::Column::PeriodIndex.eq(sub.period_index))
        .filter(subscription::Column::Status.ne(SubscriptionStatus::Canceled))
        .exec(txn)
        .await?;
    reload_if_changed(txn, &sub.id, changed.rows_affected).await
}

/// Opens period `n + 1`, applying plan or quantity changes scheduled for the
/// period end (PERIOD_END timing).
async fn advance<C: ConnectionTrait>(
    txn: &C,
    sub: &subscription::Model,
    terms: &billing::SubscriptionTerms,
    n: u32,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<subscription::Model, StepError> {
    let scheduled = subscription_change::Entity::find()
        .filter(subscription_change::Column::SubscriptionId.eq(&sub.id))
        .filter(subscription_change::Column::EffectiveAt.eq(end))
        .filter(subscription_change::Column::AppliedAt.is_null())
        .filter(subscription_change::Column::Kind.is_in([
            SubscriptionChangeKind::PlanChange,
            SubscriptionChangeKind::QuantityChange,
        ]))
        .order_by_asc(subscription_change::Column::CreatedAt)
        .order_by_asc(subscription_change::Column::Id)
        .all(txn)
        .await?;
    let (plan_id, quantity) = scheduled
        .last()
        .map_or((sub.plan_id.clone(), sub.quantity), |c| {
            (c.plan_id.clone(), c.quantity)
        });
    if !scheduled.is_empty() {
        subscription_change::Entity::update_many()
            .col_expr(
                subscription_change::Column::AppliedAt,
                Expr::value(Some(now)),
            )
            .filter(subscription_change::Column::Id.is_in(scheduled.iter().map(|c| c.id.clone())))
            .exec(txn)
            .await?;
    }
    let next = terms
        .schedule
        .period(n + 1)
        .map_err(|e| WorkflowError::Internal(e.to_string()))?;
    let changed = subscription::Entity::update_many()
        .col_expr(
            subscription::Column::PeriodIndex,
            Expr::value(sub.period_index + 1),
        )
        .col_expr(
            subscription::Column::CurrentPeriodStart,
            Expr::value(Some(next.start)),
        )
        .col_expr(
            subscription::Column::CurrentPeriodEnd,
            Expr::value(Some(next.end)),
        )
        .col_expr(subscription::Column::PlanId, Expr::value(plan_id))
        .col_expr(subscription::Column::Quantity, Expr::value(quantity))
        .col_expr(subscription::Column::UpdatedAt, Expr::value(now))
        .filter(subscription::Column::Id.eq(&sub.id))
        .filter(subscription::Column::PeriodIndex.eq(sub.period_index))
        .exec(txn)
        .await?;
    reload_if_changed(txn, &sub.id, changed.rows_affected).await
}

async fn reload_if_changed<C: ConnectionTrait>(
    txn: &C,
    id: &str,
    rows_affected: u64,
) -> Result<subscription::Model, StepError> {
    if rows_affected != 1 {
        return Err(StepError::Transient(
            "subscription changed concurrently".into(),
        ));
    }
    Ok(subscription::Entity::find_by_id(id.to_string())
        .one(txn)
        .await?
        .ok_or(WorkflowError::NotFound("subscription"))?)
}
