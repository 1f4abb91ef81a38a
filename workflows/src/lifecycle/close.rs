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
//! one transaction that reads each table once for the whole batch, computes
//! every close in memory with the billing core, then writes each table once
//! (one number range, one audit append); each close in it is the one [`run`]
//! makes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{
    InvoiceKind, SubscriptionChangeKind, SubscriptionStatus, invoice, organization,
    pending_invoice_item, subscription, subscription_change,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use crate::audit::{AuditEntry, snapshot};
use crate::clock::{Clock, org_now, stored};
use crate::error::WorkflowError;
use crate::invoice_actions::invoices_of_subscriptions;
use crate::jobs::{Job, JobKind, record_all_in_outbox};
use crate::lifecycle::inputs::{self, UsageWanted};
use crate::lifecycle::start::first_invoice;
use crate::lifecycle::{abandon, actor, draft, mark_steps, not_due};
use crate::steps::{StepError, StepOutcome};
use crate::subscriptions::{Plans, changes_of, terms_given};
use crate::tenancy::load_org;
use crate::txn::placeholder;

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
/// one transaction, which is what makes the first of the month fast: each
/// table is read once and written once for the whole batch (invoices, lines
/// and outbox rows in multi-row inserts, subscriptions in one update), with
/// one invoice-number range, one audit append and one commit. Each close is
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
    let mut outcomes = vec![StepOutcome::Done; jobs.len()];
    let mut due = Vec::new();
    for i in order {
        match due_close(&txn, &org, now, &jobs[i], &mut read).await? {
            Ok(close) => due.push(close),
            Err(why) => outcomes[i] = StepOutcome::Skipped(why),
        }
    }
    let mut wanted: Vec<&mut UsageWanted> = due.iter_mut().map(|c| &mut c.usage).collect();
    inputs::load_usage(&txn, &org.id, &mut wanted).await?;
    let mut closing = Closing::default();
    for close in due {
        closing.add(&org, now, close, &mut read)?;
    }
    closing.write(&txn, now).await?;
    // The ledger before the invoice numbers and the audit chain: those lock
    // the organization until commit, so the less after them the better.
    if !mark_steps(&txn, jobs, clock).await? {
        return abandon(txn, jobs).await;
    }
    let entries = closing.moved.iter().map(Moved::audited).collect();
    draft::finish(&txn, &org, &actor(first), closing.drafts, entries, now).await?;
    txn.commit().await?;
    Ok(outcomes)
}

/// What the closes of a batch read, read for all of them at once: their
/// subscriptions (locked, in id order so two batches never wait on each
/// other in a cycle), their invoices and the lines already billed on them,
/// pending proration items and plan or quantity changes; plans as they are
/// first needed.
struct Reads {
    subscriptions: HashMap<String, subscription::Model>,
    invoices: HashMap<String, Vec<invoice::Model>>,
    billed: HashMap<String, Vec<billing::BilledLine>>,
    pending: HashMap<String, Vec<pending_invoice_item::Model>>,
    changes: HashMap<String, Vec<subscription_change::Model>>,
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
        let invoices = invoices_of_subscriptions(txn, &org.id, ids.clone()).await?;
        Ok(Reads {
            subscriptions: subscriptions
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect(),
            billed: inputs::billed_lines_of(txn, org, &invoices).await?,
            invoices,
            pending: inputs::pending_items_of(txn, ids.clone()).await?,
            changes: changes_of(txn, ids).await?,
            plans: Plans::default(),
        })
    }

    /// Whether the subscription's first invoice is written.
    fn has_first_invoice(&self, subscription_id: &str) -> bool {
        let key = draft::first_key(subscription_id);
        self.invoices
            .get(subscription_id)
            .is_some_and(|invoices| invoices.iter().any(|i| i.billing_key == key))
    }
}

/// A close that is due, with what it bills from (its usage is read for the
/// whole batch before any close is computed).
struct DueClose {
    sub: subscription::Model,
    terms: billing::SubscriptionTerms,
    n: u32,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    usage: UsageWanted,
}

/// The close `job` asks for, or why there is nothing to close (the period
/// is closed already, the subscription has ended).
async fn due_close<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    now: DateTime<Utc>,
    job: &Job,
    read: &mut Reads,
) -> Result<Result<DueClose, String>, StepError> {
    let sub = read
        .subscriptions
        .remove(&job.subject_id)
        .ok_or(WorkflowError::NotFound("subscription"))?;
    let (Some(start), Some(end)) = (sub.current_period_start, sub.current_period_end) else {
        return Ok(Err(format!(
            "subscription is {} with no open period",
            sub.status
        )));
    };
    let open = matches!(
        sub.status,
        SubscriptionStatus::Active | SubscriptionStatus::PastDue
    );
    if !open || job.key != Job::period_close(&org.id, &sub.id, start, end).key {
        return Ok(Err(format!(
            "period already closed (subscription is {})",
            sub.status
        )));
    }
    if now < end {
        return Err(not_due("period end", end, now));
    }
    let n = u32::try_from(sub.period_index)
        .map_err(|_| WorkflowError::Internal("negative period index".into()))?;
    let changes = read.changes.get(&sub.id).map_or(&[][..], Vec::as_slice);
    let (terms, meters) = terms_given(txn, org, &sub, changes, &mut read.plans).await?;
    let usage = inputs::usage_wanted(org, &sub, &terms, meters, n)?;
    Ok(Ok(DueClose {
        sub,
        terms,
        n,
        start,
        end,
        usage,
    }))
}

/// What a batch's closes write, gathered in memory and written together.
#[derive(Default)]
struct Closing {
    drafts: Vec<draft::Composed>,
    /// Pending items billed on an invoice of the batch: (invoice, items).
    pending_billed: Vec<(String, Vec<String>)>,
    /// Changes scheduled for the period end, applied by this close.
    applied_changes: Vec<String>,
    /// Closes already due of the periods just opened (catching up).
    next_closes: Vec<Job>,
    /// Each subscription closed, as it was and as it is written.
    moved: Vec<Moved>,
}

impl Closing {
    /// Computes one close: its invoice (and the first invoice, when period 0
    /// closes before the start step wrote it) and the subscription after it.
    fn add(
        &mut self,
        org: &organization::Model,
        now: DateTime<Utc>,
        close: DueClose,
        read: &mut Reads,
    ) -> Result<(), StepError> {
        let DueClose {
            sub,
            terms,
            n,
            start,
            end,
            usage,
        } = close;
        let currency = inputs::currency(org)?;
        let mut billed = read.billed.remove(&sub.id).unwrap_or_default();
        // Period 0 may close before the start step ran (a back-dated start, a
        // catch-up race): the first invoice is written here then, identically.
        if n == 0 && !read.has_first_invoice(&sub.id) {
            let first = first_invoice(org, &sub, &terms, &billed, now)?;
            if let Some(first) = first {
                billed.extend(first.lines.iter().map(|l| inputs::billed(currency, l)));
                self.drafts.push(first);
            }
        }
        let mut lines = billing::close_period(&terms, n, &usage.usage, &billed, currency)?;
        let pending = read.pending.remove(&sub.id).unwrap_or_default();
        lines.extend(
            pending
                .iter()
                .map(|item| inputs::pending_line(currency, item)),
        );
        let ends_here = sub.cancel_at_period_end;
        let invoice = draft::compose(draft::Draft {
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
        })?;
        if let Some(invoice) = invoice {
            if !pending.is_empty() {
                let items = pending.into_iter().map(|p| p.id).collect();
                self.pending_billed.push((invoice.draft.id.clone(), items));
            }
            self.drafts.push(invoice);
        }

        let after = if ends_here {
            ended(&sub, end, now)
        } else {
            let changes = read.changes.get(&sub.id).map_or(&[][..], Vec::as_slice);
            let (after, applied) = advanced(&sub, &terms, n, (end, changes), now)?;
            self.applied_changes.extend(applied);
            after
        };
        if let (false, Some(next_start), Some(next_end)) = (
            ends_here,
            after.current_period_start,
            after.current_period_end,
        ) && next_end <= now
        {
            self.next_closes
                .push(Job::period_close(&org.id, &sub.id, next_start, next_end));
        }
        self.moved.push(Moved {
            ended: ends_here,
            before: sub,
            after,
        });
        Ok(())
    }

    /// Writes everything but the numbers and the audit entries
    /// ([`draft::finish`]).
    async fn write<C: ConnectionTrait>(
        &self,
        txn: &C,
        now: DateTime<Utc>,
    ) -> Result<(), StepError> {
        draft::insert_all(txn, &self.drafts, now).await?;
        for (invoice_id, items) in &self.pending_billed {
            pending_invoice_item::Entity::update_many()
                .col_expr(
                    pending_invoice_item::Column::InvoiceId,
                    Expr::value(Some(invoice_id.clone())),
                )
                .filter(pending_invoice_item::Column::Id.is_in(items.iter().cloned()))
                .exec(txn)
                .await?;
        }
        if !self.applied_changes.is_empty() {
            subscription_change::Entity::update_many()
                .col_expr(
                    subscription_change::Column::AppliedAt,
                    Expr::value(Some(now)),
                )
                .filter(subscription_change::Column::Id.is_in(self.applied_changes.iter().cloned()))
                .exec(txn)
                .await?;
        }
        let (ended, advanced): (Vec<&Moved>, Vec<&Moved>) =
            self.moved.iter().partition(|m| m.ended);
        for chunk in advanced.chunks(1_000) {
            write_advanced(txn, chunk).await?;
        }
        for m in ended {
            write_ended(txn, &m.after).await?;
        }
        record_all_in_outbox(txn, self.next_closes.iter().map(|job| (job, now))).await?;
        Ok(())
    }
}

/// A subscription the close moved on: to its next period, or to its end.
struct Moved {
    /// Ended (cancel at period end) rather than advanced to its next period.
    ended: bool,
    before: subscription::Model,
    after: subscription::Model,
}

impl Moved {
    fn audited(&self) -> AuditEntry<'_> {
        AuditEntry {
            action: if self.ended {
                "subscription.ended"
            } else {
                "subscription.period_closed"
            },
            entity_type: "subscription",
            entity_id: &self.after.id,
            before: snapshot(&self.before),
            after: snapshot(&self.after),
        }
    }
}

/// Cancel-at-period-end reached: CANCELED at the period end.
fn ended(sub: &subscription::Model, end: DateTime<Utc>, now: DateTime<Utc>) -> subscription::Model {
    subscription::Model {
        status: SubscriptionStatus::Canceled,
        canceled_at: Some(end),
        updated_at: stored(now),
        ..sub.clone()
    }
}

/// Writes an [`ended`] subscription (compare-and-set on its period).
async fn write_ended<C: ConnectionTrait>(
    txn: &C,
    after: &subscription::Model,
) -> Result<(), StepError> {
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
        .filter(subscription::Column::Id.eq(&after.id))
        .filter(subscription::Column::PeriodIndex.eq(after.period_index))
        .filter(subscription::Column::Status.ne(SubscriptionStatus::Canceled))
        .exec(txn)
        .await?;
    changed_as_expected(changed.rows_affected, 1)
}

/// The subscription in period `n + 1`, with the plan or quantity changes
/// scheduled for the period end (PERIOD_END timing) applied: those of
/// `changes` (the subscription's, [`changes_of`]) not applied yet and
/// effective at `end`, the last recorded winning.
fn advanced(
    sub: &subscription::Model,
    terms: &billing::SubscriptionTerms,
    n: u32,
    (end, changes): (DateTime<Utc>, &[subscription_change::Model]),
    now: DateTime<Utc>,
) -> Result<(subscription::Model, Vec<String>), StepError> {
    let mut scheduled: Vec<&subscription_change::Model> = changes
        .iter()
        .filter(|c| {
            c.applied_at.is_none()
                && c.effective_at == end
                && matches!(
                    c.kind,
                    SubscriptionChangeKind::PlanChange | SubscriptionChangeKind::QuantityChange
                )
        })
        .collect();
    scheduled.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let (plan_id, quantity) = scheduled
        .last()
        .map_or((sub.plan_id.clone(), sub.quantity), |c| {
            (c.plan_id.clone(), c.quantity)
        });
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
    Ok((after, scheduled.into_iter().map(|c| c.id.clone()).collect()))
}

/// Writes [`advanced`] subscriptions, each a compare-and-set on the period
/// index it had, all in one statement.
async fn write_advanced<C: ConnectionTrait>(txn: &C, advanced: &[&Moved]) -> Result<(), StepError> {
    if advanced.is_empty() {
        return Ok(());
    }
    const COLUMNS: usize = 8;
    let backend = txn.get_database_backend();
    let mut rows = Vec::with_capacity(advanced.len());
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(advanced.len() * COLUMNS);
    for Moved { before, after, .. } in advanced.iter().copied() {
        let first = values.len() + 1;
        let params: Vec<String> = (first..first + COLUMNS)
            .map(|n| placeholder(backend, n))
            .collect();
        rows.push(format!("({})", params.join(", ")));
        values.extend([
            after.id.clone().into(),
            before.period_index.into(),
            after.period_index.into(),
            after.current_period_start.into(),
            after.current_period_end.into(),
            after.plan_id.clone().into(),
            after.quantity.into(),
            after.updated_at.into(),
        ]);
    }
    // VALUES columns are named column1, column2, … on both backends.
    let sql = format!(
        "UPDATE subscriptions SET period_index = v.column3, \
         current_period_start = v.column4, current_period_end = v.column5, \
         plan_id = v.column6, quantity = v.column7, updated_at = v.column8 \
         FROM (VALUES {}) AS v \
         WHERE subscriptions.id = v.column1 AND subscriptions.period_index = v.column2",
        rows.join(", ")
    );
    let changed = txn
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    changed_as_expected(changed.rows_affected(), advanced.len())
}

/// Whether each compare-and-set update hit its row.
fn changed_as_expected(rows_affected: u64, expected: usize) -> Result<(), StepError> {
    if rows_affected != expected as u64 {
        return Err(StepError::Transient(
            "subscription changed concurrently".into(),
        ));
    }
    Ok(())
}
