//! A subscription starts billing: at its start (no trial) or at its trial end.
//!
//! TRIALING → ACTIVE with period 0 opened (compare-and-set on the status), and
//! the IN_ADVANCE fees of period 0 invoiced (prorated for a partial CALENDAR
//! first period). The invoice's key `first:{subscription}` makes a second
//! delivery unable to bill twice.

use entity::{InvoiceKind, SubscriptionStatus, organization, subscription};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use crate::audit::{AuditEntry, snapshot};
use crate::clock::{Clock, org_now};
use crate::error::WorkflowError;
use crate::jobs::{Job, JobKind, record_in_outbox};
use crate::lifecycle::{actor, commit_step, draft, inputs, lock, not_due};
use crate::steps::{StepError, StepOutcome};
use crate::tenancy::load_org;

/// The step of `subscription_start` and `trial_expiry` jobs.
pub async fn run(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    job: &Job,
) -> Result<StepOutcome, StepError> {
    let txn = crate::txn::begin_write(db).await?;
    let sub = lock::subscription(&txn, &job.subject_id).await?;
    let org = load_org(&txn, &sub.organization_id).await?;
    let now = org_now(&org, clock);
    let actor = actor(job);

    let before = sub.clone();
    let (sub, activated) = match (job.kind, sub.status) {
        (JobKind::TrialExpiry, SubscriptionStatus::Trialing) => {
            let trial_end = sub.trial_end.unwrap_or(sub.period_anchor);
            if now < trial_end {
                return Err(not_due("trial end", trial_end, now));
            }
            (activate(&txn, &org, &sub, now).await?, true)
        }
        (JobKind::SubscriptionStart, SubscriptionStatus::Active) if sub.period_index == 0 => {
            if now < sub.started_at {
                return Err(not_due("subscription start", sub.started_at, now));
            }
            (sub, false)
        }
        // Canceled, already past its first period, or activated by an earlier delivery.
        (_, status) => {
            return commit_step(
                txn,
                job,
                clock,
                StepOutcome::Skipped(format!("subscription is {status}")),
            )
            .await;
        }
    };

    let (terms, _) = crate::subscriptions::terms(&txn, &org, &sub).await?;
    let invoice = ensure_first_invoice(&txn, &org, &sub, &terms, now).await?;
    let first_period = terms
        .schedule
        .period(0)
        .map_err(|e| WorkflowError::Internal(e.to_string()))?;
    // Catching up (worker down, test clock jumped): the next step is due already.
    if first_period.end <= now {
        let close = Job::period_close(&org.id, &sub.id, first_period.start, first_period.end);
        record_in_outbox(&txn, &close, now).await?;
    }
    let mut entries = Vec::new();
    if activated {
        entries.push(AuditEntry {
            action: "subscription.trial_ended",
            entity_type: "subscription",
            entity_id: &sub.id,
            before: snapshot(&before),
            after: snapshot(&sub),
        });
    }
    let wrote = invoice.is_some();
    draft::finish(&txn, &org, &actor, invoice, entries, now).await?;
    let outcome = if !wrote && !activated {
        StepOutcome::Skipped("first invoice already written, or nothing to bill".into())
    } else {
        StepOutcome::Done
    };
    commit_step(txn, job, clock, outcome).await
}

/// Writes the subscription's first invoice (period 0's IN_ADVANCE fees) unless
/// it exists. The start step and the close of period 0 both call it, so the
/// same invoice appears whichever runs first (a back-dated start, or a catch-up
/// where the close won the race). It bills the terms in force at the start:
/// later changes are prorated by their own step. `terms` are the
/// subscription's ([`crate::subscriptions::terms`]).
pub(crate) async fn ensure_first_invoice<C: sea_orm::ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    sub: &subscription::Model,
    terms: &billing::SubscriptionTerms,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<draft::Composed>, StepError> {
    use sea_orm::PaginatorTrait;
    let written = entity::invoice::Entity::find()
        .filter(entity::invoice::Column::OrganizationId.eq(&org.id))
        .filter(entity::invoice::Column::BillingKey.eq(draft::first_key(&sub.id)))
        .count(txn)
        .await?;
    if written > 0 {
        return Ok(None);
    }
    let billed = inputs::billed_lines(txn, org, &sub.id, None).await?;
    let first = first_invoice(org, sub, terms, &billed, now)?;
    draft::insert_all(txn, first.as_slice(), now).await?;
    Ok(first)
}

/// The subscription's first invoice, composed but not written, for a
/// subscription that has none: the IN_ADVANCE fees of period 0 under the
/// terms in force at the start, against the lines `billed` already. `None`
/// when there is nothing to bill.
pub(crate) fn first_invoice(
    org: &organization::Model,
    sub: &subscription::Model,
    terms: &billing::SubscriptionTerms,
    billed: &[billing::BilledLine],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<draft::Composed>, StepError> {
    let at_start = billing::SubscriptionTerms {
        phases: terms.phases.iter().take(1).cloned().collect(),
        ..terms.clone()
    };
    let lines = billing::first_invoice(&at_start, billed, inputs::currency(org)?)?;
    let first_period = terms
        .schedule
        .period(0)
        .map_err(|e| WorkflowError::Internal(e.to_string()))?;
    Ok(draft::compose(draft::Draft {
        org,
        sub,
        kind: InvoiceKind::First,
        billing_key: draft::first_key(&sub.id),
        lines,
        boundary: first_period.start,
        now,
    })?)
}

/// TRIALING → ACTIVE with period 0 as the current period.
async fn activate<C: sea_orm::ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    sub: &subscription::Model,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<subscription::Model, StepError> {
    let plan = entity::plan::Entity::find_by_id(sub.plan_id.clone())
        .one(txn)
        .await?
        .ok_or(WorkflowError::NotFound("plan"))?;
    let schedule =
        crate::subscriptions::schedule(org, &plan, sub.billing_anchor, sub.period_anchor)?;
    let period = schedule
        .period(0)
        .map_err(|e| WorkflowError::Internal(e.to_string()))?;
    let updated = subscription::Entity::update_many()
        .col_expr(
            subscription::Column::Status,
            Expr::value(SubscriptionStatus::Active),
        )
        .col_expr(subscription::Column::PeriodIndex, Expr::value(0))
        .col_expr(
            subscription::Column::CurrentPeriodStart,
            Expr::value(Some(period.start)),
        )
        .col_expr(
            subscription::Column::CurrentPeriodEnd,
            Expr::value(Some(period.end)),
        )
        .col_expr(subscription::Column::UpdatedAt, Expr::value(now))
        .filter(subscription::Column::Id.eq(&sub.id))
        .filter(subscription::Column::Status.eq(SubscriptionStatus::Trialing))
        .exec(txn)
        .await?;
    if updated.rows_affected != 1 {
        return Err(StepError::Transient(
            "subscription changed concurrently".into(),
        ));
    }
    Ok(subscription::Entity::find_by_id(sub.id.clone())
        .one(txn)
        .await?
        .ok_or(WorkflowError::NotFound("subscription"))?)
}
