//! Writing a computed invoice as a DRAFT, with its lines and the job that
//! will finalize it once the grace period is over, or, when that moment has
//! passed already (a grace period of 0, the usual case, or a step catching
//! up), finalizing it in the writing step's own transaction
//! ([`finalize_due`]): the same invoice the finalization job would make
//! (the draft's lines were computed a moment ago in this transaction, with
//! every event stored so far), without a second job and transaction.

use chrono::{DateTime, Duration, Utc};
use entity::{Dec, InvoiceKind, InvoiceStatus, invoice, invoice_line, organization, subscription};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::audit::{self, Actor, AuditEntry, snapshot};
use crate::error::{WorkflowError, WorkflowResult};
use crate::ids::new_id;
use crate::invoice_actions::{Finalized, entity_line_kind, freeze_unnumbered, lines_of, number};
use crate::jobs::{Job, record_all_in_outbox, record_in_outbox};
use crate::lifecycle::inputs::currency;

/// Identity of an invoice: at most one per key and organization (a unique
/// constraint), so the same billing work can never produce two invoices.
pub fn first_key(subscription_id: &str) -> String {
    format!("first:{subscription_id}")
}

pub fn periodic_key(subscription_id: &str, period_start: DateTime<Utc>) -> String {
    format!(
        "periodic:{subscription_id}:{}",
        period_start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

pub fn change_key(change_id: &str) -> String {
    format!("change:{change_id}")
}

/// What to write.
pub struct Draft<'a> {
    pub org: &'a organization::Model,
    pub sub: &'a subscription::Model,
    pub kind: InvoiceKind,
    pub billing_key: String,
    pub lines: Vec<billing::InvoiceLine>,
    /// The billing instant the draft belongs to (period end, trial end, change);
    /// the grace period runs from here.
    pub boundary: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Writes the draft and, unless it is due already, its finalization job;
/// `None` (and nothing written) when it has no lines. The step ends with
/// [`finish`].
pub async fn write<C: ConnectionTrait>(
    txn: &C,
    draft: Draft<'_>,
) -> WorkflowResult<Option<invoice::Model>> {
    if draft.lines.is_empty() {
        return Ok(None);
    }
    let currency = currency(draft.org)?;
    let computed = billing::Invoice::from_lines(draft.lines, currency)
        .map_err(|e| WorkflowError::Internal(format!("billing: {e}")))?;
    let finalize_at = draft.boundary + Duration::hours(i64::from(draft.org.grace_period_hours));
    let inv = invoice::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(draft.org.id.clone()),
        customer_id: Set(draft.sub.customer_id.clone()),
        subscription_id: Set(Some(draft.sub.id.clone())),
        kind: Set(draft.kind),
        status: Set(InvoiceStatus::Draft),
        currency: Set(draft.org.currency.clone()),
        billing_key: Set(draft.billing_key),
        period_start: Set(Some(computed.period_start)),
        period_end: Set(Some(computed.period_end)),
        subtotal_minor: Set(currency.to_minor_units(computed.subtotal)?),
        total_minor: Set(currency.to_minor_units(computed.total)?),
        number: Set(None),
        number_year: Set(None),
        number_seq: Set(None),
        finalize_at: Set(Some(finalize_at)),
        created_at: Set(draft.now),
        finalized_at: Set(None),
        due_at: Set(None),
        paid_at: Set(None),
        voided_at: Set(None),
        content_hash: Set(None),
    }
    .insert(txn)
    .await?;
    insert_lines(txn, &inv, &computed.lines, currency).await?;
    if finalize_at > draft.now {
        record_in_outbox(
            txn,
            &Job::invoice_finalize(&draft.org.id, &inv.id, finalize_at),
            draft.now,
        )
        .await?;
    }
    Ok(Some(inv))
}

/// Finalizes the drafts this step wrote whose grace period is over already
/// (no finalization job was queued for them), each as of its due instant
/// like the job would. Call it at the end of the step, right before the
/// audit entries: an invoice number locks the organization's sequence row
/// until commit, so the shorter the rest of the transaction the better.
async fn finalize_due<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    drafts: &[&invoice::Model],
    now: DateTime<Utc>,
) -> WorkflowResult<Vec<Finalized>> {
    let due: Vec<(&invoice::Model, DateTime<Utc>)> = drafts
        .iter()
        .filter_map(|inv| inv.finalize_at.filter(|at| *at <= now).map(|at| (*inv, at)))
        .collect();
    // The drafts are the rows this step wrote; their lines are read in one go.
    let ids = due.iter().map(|(inv, _)| inv.id.clone()).collect();
    let mut lines = lines_of(txn, &org.id, ids).await?;
    let mut finalized = Vec::with_capacity(due.len());
    for (inv, at) in due {
        let lines = lines.remove(&inv.id).unwrap_or_default();
        finalized.push(freeze_unnumbered(txn, org, inv.clone(), &lines, at).await?);
    }
    let overdue: Vec<(Job, DateTime<Utc>)> = finalized
        .iter()
        .filter_map(|f| f.overdue_job().map(|job| (job, f.at())))
        .collect();
    record_all_in_outbox(txn, overdue.iter().map(|(job, at)| (job, *at))).await?;
    // All of a batch's numbers at once, at the end: the sequence row they
    // lock serializes the organization's closes until commit.
    number(txn, org, &mut finalized).await?;
    Ok(finalized)
}

/// Replaces a draft's lines (drafts only: a finalized invoice never changes).
pub async fn replace_lines<C: ConnectionTrait>(
    txn: &C,
    inv: &invoice::Model,
    lines: &[billing::InvoiceLine],
    currency: billing::Currency,
) -> WorkflowResult<()> {
    if inv.status != InvoiceStatus::Draft {
        return Err(WorkflowError::Internal(format!(
            "invoice {} is {}, its lines are frozen",
            inv.id, inv.status
        )));
    }
    invoice_line::Entity::delete_many()
        .filter(invoice_line::Column::InvoiceId.eq(&inv.id))
        .exec(txn)
        .await?;
    insert_lines(txn, inv, lines, currency).await
}

/// Writes the lines of a draft that has none.
async fn insert_lines<C: ConnectionTrait>(
    txn: &C,
    inv: &invoice::Model,
    lines: &[billing::InvoiceLine],
    currency: billing::Currency,
) -> WorkflowResult<()> {
    let rows = lines
        .iter()
        .enumerate()
        .map(|(position, line)| {
            Ok(invoice_line::ActiveModel {
                id: Set(new_id()),
                organization_id: Set(inv.organization_id.clone()),
                invoice_id: Set(inv.id.clone()),
                position: Set(i32::try_from(position)
                    .map_err(|_| WorkflowError::Internal("too many lines".into()))?),
                kind: Set(entity_line_kind(line.kind)),
                description: Set(line.description.clone()),
                price_id: Set(line.price_id.clone()),
                quantity: Set(Dec(line.quantity)),
                unit_amount: Set(line.unit_amount.map(Dec)),
                amount_minor: Set(currency.to_minor_units(line.amount)?),
                period_start: Set(line.period.start),
                period_end: Set(line.period.end),
            })
        })
        .collect::<WorkflowResult<Vec<_>>>()?;
    if !rows.is_empty() {
        invoice_line::Entity::insert_many(rows).exec(txn).await?;
    }
    Ok(())
}

/// How a step that wrote drafts ends, before its commit: [`finalize_due`],
/// then one audit append of each draft, each finalization and the step's
/// own `entries`. Both serialize the organization's writers until commit,
/// which is why they come last.
pub async fn finish<'a, C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    actor: Actor<'_>,
    drafts: impl IntoIterator<Item = &'a invoice::Model>,
    entries: Vec<AuditEntry<'_>>,
    now: DateTime<Utc>,
) -> WorkflowResult<()> {
    let drafts: Vec<&invoice::Model> = drafts.into_iter().collect();
    let finalized = finalize_due(txn, org, &drafts, now).await?;
    let mut all = audit_entries(&drafts, &finalized);
    all.extend(entries);
    audit::append_all(txn, &org.id, actor, all, now).await
}

/// The audit entries of what [`write`] and [`finalize_due`] did: each
/// draft, then each finalization.
fn audit_entries<'a>(
    drafts: &[&'a invoice::Model],
    finalized: &'a [Finalized],
) -> Vec<AuditEntry<'a>> {
    drafts
        .iter()
        .map(|inv| audited(inv))
        .chain(finalized.iter().map(Finalized::audited))
        .collect()
}

/// The audit entry of a new draft.
pub fn audited(inv: &invoice::Model) -> AuditEntry<'_> {
    AuditEntry {
        action: "invoice.drafted",
        entity_type: "invoice",
        entity_id: &inv.id,
        before: None,
        after: snapshot(inv),
    }
}
