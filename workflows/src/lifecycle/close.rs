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
//!
//! Closes of one organization due together run in batches ([`run_batch`]):
//! one transaction, the batch's reads done once for all of it, one number
//! range and one audit append; each close in it is the one [`run`] makes.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use entity::{
    InvoiceKind, SubscriptionChangeKind, SubscriptionStatus, invoice, organization,
    pending_invoice_item, subscription, subscription_change,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::audit::{AuditEntry, snapshot};
use crate::clock::{Clock, org_now};
use crate::error::WorkflowError;
use crate::jobs::{Job, JobKind, record_in_outbox};
use crate::lifecycle::start::ensure_first_invoice;
use crate::lifecycle::{abandon, actor, draft, inputs, mark_steps, not_due};
use crate::pagination::group_by_parent;
use crate::steps::{StepError, StepOutcome};
use crate::subscriptions::{Plans, terms_with};
use crate::tenancy::load_org;

/// The step of `period_close` jobs: a batch of one.
pub async fn run(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    job: &Job,
) -> Result<StepOutcome, StepError> {
    let mut outcomes = run_batch(db, clock, std::slice::from_ref(job)).await?;
    Ok(outcomes.pop().unwrap_or(StepOutcome::AlreadyDone))
}

/// Closes the periods of several `period_close` jobs of one organization in
/// one transaction, with one invoice-number range, one audit append and one
/// commit, which is what makes the first of the month fast. Each close is
/// the one [`run`] makes; the batch takes effect as a whole or not at all,
/// so any error leaves every job as it was (the worker then runs them one by
/// one). Returns the outcomes in the order of `jobs`.
pub async fn run_batch(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    jobs: &[Job],
) -> Result<Vec<StepOutcome>, StepError> {
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    if jobs
        .iter()
        .any(|j| j.kind != JobKind::PeriodClose || j.organization_id != first.organization_id)
    {
        return Err(StepError::Permanent(
            "a close batch holds period_close jobs of one organization".into(),
        ));
    }
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|a, b| jobs[*a].subject_id.cmp(&jobs[*b].subject_id));
    if order
        .windows(2)
        .any(|w| jobs[w[0]].subject_id == jobs[w[1]].subject_id)
    {
        // What one close writes would be unseen by the other's reads below.
        return Err(StepError::Transient(
            "two jobs of the batch close the same subscription".into(),
        ));
    }
    let txn = crate::txn::begin_write(db).await?;
    let org = load_org(&txn, &first.organization_id).await?;
    let now = org_now(&org, clock);
    let mut read = Reads::load(&txn, &org, jobs).await?;
    let mut outcomes = vec![StepOutcome::AlreadyDone; jobs.len()];
    let mut drafts = Vec::new();
    let mut moved = Vec::new();
    for i in order {
        let closed = close(&txn, &org, now, &jobs[i], &mut read).await?;
        outcomes[i] = closed.outcome;
        drafts.extend(closed.drafts);
        moved.extend(closed.moved);
    }
    // The ledger before the invoice numbers and the audit chain: those lock
    // the organization until commit, so the less after them the better.
    if !mark_steps(&txn, jobs, clock).await? {
        return abandon(txn, jobs).await;
    }
    let entries = moved.iter().map(Moved::audited).collect();
    draft::finish(&txn, &org, &actor(first), &drafts, entries, now).await?;
    txn.commit().await?;
    Ok(outcomes)
}

/// What the closes of a batch read, read for all of them at once: their
/// subscriptions (locked, in id order so two batches never wait on each
/// other in a cycle), pending proration items, changes scheduled for a
/// period end and lines already billed; plans as they are first needed.
struct Reads {
    subscriptions: HashMap<String, subscription::Model>,
    pending: HashMap<String, Vec<pending_invoice_item::Model>>,
    scheduled: HashMap<String, Vec<subscription_change::Model>>,
    billed: HashMap<String, Vec<billing::BilledLine>>,
    plans: Plans,
}

impl Reads {
    async fn load<C: ConnectionTrait>(
        txn: &C,
        org: &organization::Model,
        jobs: &[Job],
    ) -> Result<Reads, StepError> {
        let ids: Vec<String> = jobs.iter().map(|j| j.subject_id.clone()).collect();
        let subscriptions = subscription::Entity::find()
            .filter(subscription::Column::Id.is_in(ids.iter().cloned()))
            .filter(subscription::Column::OrganizationId.eq(&org.id))
            .order_by_asc(subscription::Column::Id)
            .lock_exclusive()
            .all(txn)
            .await?;
        let scheduled = subscription_change::Entity::find()
            .filter(subscription_change::Column::SubscriptionId.is_in(ids.iter().cloned()))
            .filter(subscription_change::Column::AppliedAt.is_null())
            .filter(subscription_change::Column::Kind.is_in([
                SubscriptionChangeKind::PlanChange,
                SubscriptionChangeKind::QuantityChange,
            ]))
            .order_by_asc(subscription_change::Column::CreatedAt)
            .order_by_asc(subscription_change::Column::Id)
            .all(txn)
            .await?;
        Ok(Reads {
            subscriptions: subscriptions
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect(),
            pending: inputs::pending_items_of(txn, ids.clone()).await?,
            scheduled: group_by_parent(scheduled, |c| Some(c.subscription_id.as_str())),
            billed: inputs::billed_lines_of(txn, org, ids).await?,
            plans: Plans::default(),
        })
    }
}

/// What closing one period wrote, for the batch's shared ending.
struct Closed {
    outcome: StepOutcome,
    drafts: Vec<invoice::Model>,
    moved: Option<Moved>,
}

impl Closed {
    fn skipped(why: String) -> Closed {
        Closed {
            outcome: StepOutcome::Skipped(why),
            drafts: Vec::new(),
            moved: None,
        }
    }
}

/// A subscription the close moved on: to its next period, or to its end.
struct Moved {
    action: &'static str,
    before: subscription::Model,
    after: subscription::Model,
}

impl Moved {
    fn audited(&self) -> AuditEntry<'_> {
        AuditEntry {
            action: self.action,
            entity_type: "subscription",
            entity_id: &self.after.id,
            before: snapshot(&self.before),
            after: snapshot(&self.after),
        }
    }
}

/// Closes the period of one job, inside the batch's transaction.
async fn close<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    now: DateTime<Utc>,
    job: &Job,
    read: &mut Reads,
) -> Result<Closed, StepError> {
    let sub = read
        .subscriptions
        .remove(&job.subject_id)
        .ok_or(WorkflowError::NotFound("subscription"))?;
    let (Some(start), Some(end)) = (sub.current_period_start, sub.current_period_end) else {
        let why = format!("subscription is {} with no open period", sub.status);
        return Ok(Closed::skipped(why));
    };
    let open = matches!(
        sub.status,
        SubscriptionStatus::Active | SubscriptionStatus::PastDue
    );
    if !open || job.key != Job::period_close(&org.id, &sub.id, start, end).key {
        let why = format!("period already closed (subscription is {})", sub.status);
        return Ok(Closed::skipped(why));
    }
    if now < end {
        return Err(not_due("period end", end, now));
    }
    let n = u32::try_from(sub.period_index)
        .map_err(|_| WorkflowError::Internal("negative period index".into()))?;
    let currency = inputs::currency(org)?;

    // Period 0 may close before the start step ran (a back-dated start, a
    // catch-up race): the first invoice is written here then, identically.
    let (terms, meters) = terms_with(txn, org, &sub, &mut read.plans).await?;
    let first = match n {
        0 => ensure_first_invoice(txn, org, &sub, &terms, now).await?,
        _ => None,
    };
    let billed = match first {
        // Written a moment ago, so not among what the batch read.
        Some(_) => inputs::billed_lines(txn, org, &sub.id, None).await?,
        None => read.billed.remove(&sub.id).unwrap_or_default(),
    };
    let mut lines =
        inputs::period_close_lines_given(txn, org, &sub, (&terms, meters), n, &billed).await?;
    let pending = read.pending.remove(&sub.id).unwrap_or_default();
    lines.extend(
        pending
            .iter()
            .map(|item| inputs::pending_line(currency, item)),
    );
    let ends_here = sub.cancel_at_period_end;
    let invoice = draft::write(
        txn,
        draft::Draft {
            org,
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
            .exec(txn)
            .await?;
    }

    let after = if ends_here {
        end_subscription(txn, &sub, end, now).await?
    } else {
        let scheduled = read.scheduled.remove(&sub.id).unwrap_or_default();
        advance(txn, &sub, &terms, n, (end, scheduled), now).await?
    };
    if let (false, Some(next_start), Some(next_end)) = (
        ends_here,
        after.current_period_start,
        after.current_period_end,
    ) && next_end <= now
    {
        let next = Job::period_close(&org.id, &sub.id, next_start, next_end);
        record_in_outbox(txn, &next, now).await?;
    }
    Ok(Closed {
        outcome: StepOutcome::Done,
        drafts: first.into_iter().chain(invoice).collect(),
        moved: Some(Moved {
            action: if ends_here {
                "subscription.ended"
            } else {
                "subscription.period_closed"
            },
            before: sub,
            after,
        }),
    })
}

/// Cancel-at-period-end reached: CANCELED at the period end.
async fn end_subscription<C: ConnectionTrait>(
    txn: &C,
    sub: &subscription::Model,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<subscription::Model, StepError> {
    let after = subscription::Model {
        status: SubscriptionStatus::Canceled,
        canceled_at: Some(end),
        updated_at: stored(now),
        ..sub.clone()
    };
    let changed = subscription::Entity::update_many()
        .col_expr(
            subscription::Column::Status,
            Expr::value(SubscriptionStatus::Canceled),
        )
        .col_expr(
            subscription::Column::CanceledAt,
            Expr::value(after.canceled_at),
        )
        .col_expr(
            subscription::Column::UpdatedAt,
            Expr::value(after.updated_at),
        )
        .filter(subscription::Column::Id.eq(&sub.id))
        .filter(subscription::Column::PeriodIndex.eq(sub.period_index))
        .filter(subscription::Column::Status.ne(SubscriptionStatus::Canceled))
        .exec(txn)
        .await?;
    changed_once(changed.rows_affected, after)
}

/// Opens period `n + 1`, applying plan or quantity changes scheduled for the
/// period end (PERIOD_END timing): those of `unapplied` (the subscription's
/// unapplied plan and quantity changes, oldest first) effective at `end`.
async fn advance<C: ConnectionTrait>(
    txn: &C,
    sub: &subscription::Model,
    terms: &billing::SubscriptionTerms,
    n: u32,
    (end, unapplied): (DateTime<Utc>, Vec<subscription_change::Model>),
    now: DateTime<Utc>,
) -> Result<subscription::Model, StepError> {
    let scheduled: Vec<subscription_change::Model> = unapplied
        .into_iter()
        .filter(|c| c.effective_at == end)
        .collect();
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
    let after = subscription::Model {
        period_index: sub.period_index + 1,
        current_period_start: Some(next.start),
        current_period_end: Some(next.end),
        plan_id,
        quantity,
        updated_at: stored(now),
        ..sub.clone()
    };
    let changed = subscription::Entity::update_many()
        .col_expr(
            subscription::Column::PeriodIndex,
            Expr::value(after.period_index),
        )
        .col_expr(
            subscription::Column::CurrentPeriodStart,
            Expr::value(after.current_period_start),
        )
        .col_expr(
            subscription::Column::CurrentPeriodEnd,
            Expr::value(after.current_period_end),
        )
        .col_expr(
            subscription::Column::PlanId,
            Expr::value(after.plan_id.clone()),
        )
        .col_expr(subscription::Column::Quantity, Expr::value(after.quantity))
        .col_expr(
            subscription::Column::UpdatedAt,
            Expr::value(after.updated_at),
        )
        .filter(subscription::Column::Id.eq(&sub.id))
        .filter(subscription::Column::PeriodIndex.eq(sub.period_index))
        .exec(txn)
        .await?;
    changed_once(changed.rows_affected, after)
}

/// An instant as both backends store it (microseconds), so the model built
/// in memory is exactly the row written and need not be read back.
fn stored(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// The subscription as written, when the compare-and-set update hit its row.
fn changed_once(
    rows_affected: u64,
    after: subscription::Model,
) -> Result<subscription::Model, StepError> {
    if rows_affected != 1 {
        return Err(StepError::Transient(
            "subscription changed concurrently".into(),
        ));
    }
    Ok(after)
}
