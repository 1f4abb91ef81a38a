//! Writing a computed invoice as a DRAFT, with its lines and the job that
//! will finalize it once the grace period is over, or, when that moment has
//! passed already (a grace period of 0, the usual case, or a step catching
//! up), finalizing it in the writing step's own transaction
//! ([`finalize_if_due`]): the same invoice the finalization job would make
//! (the draft's lines were computed a moment ago in this transaction, with
//! every event stored so far), without a second job and transaction.

use chrono::{DateTime, Duration, Utc};
use entity::{Dec, InvoiceKind, InvoiceStatus, invoice, invoice_line, organization, subscription};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::audit::{self, Actor, AuditEntry, snapshot};
use crate::error::{WorkflowError, WorkflowResult};
use crate::ids::new_id;
use crate::invoice_actions::{Finalized, entity_line_kind, freeze};
use crate::jobs::{Job, record_in_outbox};
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

/// Writes the draft and either its finalization job or, when it is due
/// already, its finalization ([`finalize_if_due`]); `None` (and nothing
/// written) when it has no lines. The audit entries are left to the step
/// ([`audit_written`]), to append last.
pub async fn write<C: ConnectionTrait>(
    txn: &C,
    draft: Draft<'_>,
) -> WorkflowResult<Option<Written>> {
    let (org, now) = (draft.org, draft.now);
    let Some(inv) = insert_draft(txn, draft).await? else {
        return Ok(None);
    };
    let finalized = finalize_if_due(txn, org, &inv, now).await?;
    Ok(Some(Written {
        draft: inv,
        finalized,
    }))
}

async fn insert_draft<C: ConnectionTrait>(
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
    replace_lines(txn, &inv, &computed.lines, currency).await?;
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

/// Finalizes a draft just written whose grace period is already over
/// (no finalization job was queued for it), as of its due instant like the
/// job would. Its audit entry is left to the step, to append after the
/// draft's. A draft still in its grace period is left to its job (`None`).
async fn finalize_if_due<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    inv: &invoice::Model,
    now: DateTime<Utc>,
) -> WorkflowResult<Option<Finalized>> {
    match inv.finalize_at {
        Some(at) if at <= now => Ok(Some(freeze(txn, org, &inv.id, at).await?)),
        _ => Ok(None),
    }
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

/// A draft this step wrote, and its finalization when it was due at once.
pub struct Written {
    pub draft: invoice::Model,
    pub finalized: Option<Finalized>,
}

/// Appends the audit entries of what [`write`] wrote:
/// the draft, then its finalization.
pub async fn audit_written<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    actor: Actor<'_>,
    written: &Written,
    now: DateTime<Utc>,
) -> WorkflowResult<()> {
    audit::append(txn, &org.id, actor, audited(&written.draft), now).await?;
    if let Some(finalized) = &written.finalized {
        audit::append(txn, &org.id, actor, finalized.audited(), now).await?;
    }
    Ok(())
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
