//! Writing a computed invoice as a DRAFT, with its lines and the job that
//! will finalize it once the grace period is over, or, when that moment has
//! passed already (a grace period of 0, the usual case, or a step catching
//! up), finalized in the writing step's own transaction: the same invoice
//! the finalization job would make (the draft's lines were computed a moment
//! ago in this transaction, with every event stored so far), without a
//! second job and transaction. Such an invoice is composed in memory and
//! stored once, already finalized ([`compose`], [`insert_all`]); a step
//! writing many (a close batch) stores them all with one insert per table.

use chrono::{DateTime, Duration, Utc};
use entity::{Dec, InvoiceKind, InvoiceStatus, invoice, invoice_line, organization, subscription};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
};

use crate::audit::{self, Actor, AuditEntry, snapshot};
use crate::clock::stored;
use crate::error::{WorkflowError, WorkflowResult};
use crate::ids::new_id;
use crate::invoice_actions::{Finalized, entity_line_kind, finalized_unnumbered, number};
use crate::jobs::{Job, record_all_in_outbox};
use crate::lifecycle::inputs::currency;
use crate::txn::with_cached_plans;

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

/// A draft computed in memory: the invoice and its lines as rows, and, when
/// its grace period is over already, the invoice as it is finalized (all but
/// its number, which [`finish`] gives it).
#[derive(Clone, Debug)]
pub struct Composed {
    pub draft: invoice::Model,
    pub lines: Vec<invoice_line::Model>,
    pub finalized: Option<Finalized>,
}

impl Composed {
    /// The invoice as it is stored: finalized when due, else the draft.
    fn stored(&self) -> &invoice::Model {
        self.finalized.as_ref().map_or(&self.draft, |f| &f.after)
    }

    /// The job that finalizes it later, when its grace period is not over.
    fn finalization_job(&self) -> Option<Job> {
        match (&self.finalized, self.draft.finalize_at) {
            (None, Some(at)) => Some(Job::invoice_finalize(
                &self.draft.organization_id,
                &self.draft.id,
                at,
            )),
            _ => None,
        }
    }
}

/// The draft's rows, without writing them; `None` when it has no lines.
/// When its grace period is over already it is finalized as of its due
/// instant, like the finalization job would, from the same lines.
pub fn compose(draft: Draft<'_>) -> WorkflowResult<Option<Composed>> {
    if draft.lines.is_empty() {
        return Ok(None);
    }
    let currency = currency(draft.org)?;
    let computed = billing::Invoice::from_lines(draft.lines, currency)
        .map_err(|e| WorkflowError::Internal(format!("billing: {e}")))?;
    let finalize_at =
        stored(draft.boundary + Duration::hours(i64::from(draft.org.grace_period_hours)));
    let inv = invoice::Model {
        id: new_id(),
        organization_id: draft.org.id.clone(),
        customer_id: draft.sub.customer_id.clone(),
        subscription_id: Some(draft.sub.id.clone()),
        kind: draft.kind,
        status: InvoiceStatus::Draft,
        currency: draft.org.currency.clone(),
        billing_key: draft.billing_key,
        period_start: Some(computed.period_start),
        period_end: Some(computed.period_end),
        subtotal_minor: currency.to_minor_units(computed.subtotal)?,
        total_minor: currency.to_minor_units(computed.total)?,
        number: None,
        number_year: None,
        number_seq: None,
        finalize_at: Some(finalize_at),
        created_at: stored(draft.now),
        finalized_at: None,
        due_at: None,
        paid_at: None,
        voided_at: None,
        content_hash: None,
    };
    let lines = line_rows(&inv, &computed.lines, currency)?;
    let finalized = if finalize_at <= draft.now {
        Some(finalized_unnumbered(
            draft.org,
            inv.clone(),
            &lines,
            finalize_at,
        )?)
    } else {
        None
    };
    Ok(Some(Composed {
        draft: inv,
        lines,
        finalized,
    }))
}

/// Writes composed drafts: each invoice as it is stored (finalized when
/// due), all lines, and the jobs that follow (finalization, or overdue for
/// an OPEN invoice), with one insert per table.
pub async fn insert_all<C: ConnectionTrait>(
    txn: &C,
    composed: &[Composed],
    now: DateTime<Utc>,
) -> WorkflowResult<()> {
    if composed.is_empty() {
        return Ok(());
    }
    let invoices = composed
        .iter()
        .map(|c| c.stored().clone().into_active_model())
        .collect();
    let lines = composed
        .iter()
        .flat_map(|c| {
            c.lines
                .iter()
                .cloned()
                .map(IntoActiveModel::into_active_model)
        })
        .collect();
    let jobs: Vec<(Job, DateTime<Utc>)> = composed
        .iter()
        .filter_map(|c| match &c.finalized {
            Some(f) => f.overdue_job().map(|job| (job, f.at())),
            None => c.finalization_job().map(|job| (job, now)),
        })
        .collect();
    with_cached_plans(txn, async || {
        insert_in_chunks(txn, invoices).await?;
        insert_in_chunks(txn, lines).await?;
        record_all_in_outbox(txn, jobs.iter().map(|(job, at)| (job, *at))).await?;
        WorkflowResult::Ok(())
    })
    .await
}

/// Inserts rows with as few multi-row statements as the backends' bind
/// limits allow (1,000 rows of up to 22 columns stay under SQLite's 32,766
/// parameters and PostgreSQL's 65,535).
async fn insert_in_chunks<C: ConnectionTrait, A: ActiveModelTrait + Clone>(
    txn: &C,
    rows: Vec<A>,
) -> WorkflowResult<()> {
    for chunk in rows.chunks(1_000) {
        <A::Entity as EntityTrait>::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// [`compose`] and [`insert_all`] for one draft. The step ends with
/// [`finish`].
pub async fn write<C: ConnectionTrait>(
    txn: &C,
    draft: Draft<'_>,
) -> WorkflowResult<Option<Composed>> {
    let now = draft.now;
    let composed = compose(draft)?;
    insert_all(txn, composed.as_slice(), now).await?;
    Ok(composed)
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
    let rows = line_rows(inv, lines, currency)?;
    insert_in_chunks(
        txn,
        rows.into_iter()
            .map(IntoActiveModel::into_active_model)
            .collect(),
    )
    .await
}

/// The rows of an invoice's lines, in order.
fn line_rows(
    inv: &invoice::Model,
    lines: &[billing::InvoiceLine],
    currency: billing::Currency,
) -> WorkflowResult<Vec<invoice_line::Model>> {
    lines
        .iter()
        .enumerate()
        .map(|(position, line)| {
            Ok(invoice_line::Model {
                id: new_id(),
                organization_id: inv.organization_id.clone(),
                invoice_id: inv.id.clone(),
                position: i32::try_from(position)
                    .map_err(|_| WorkflowError::Internal("too many lines".into()))?,
                kind: entity_line_kind(line.kind),
                description: line.description.clone(),
                price_id: line.price_id.clone(),
                quantity: Dec(line.quantity),
                unit_amount: line.unit_amount.map(Dec),
                amount_minor: currency.to_minor_units(line.amount)?,
                period_start: line.period.start,
                period_end: line.period.end,
            })
        })
        .collect()
}

/// How a step that wrote drafts ends, before its commit: the drafts it
/// finalized get their numbers, then one audit append of each draft left a
/// DRAFT (`invoice.drafted`), each invoice stored finalized
/// (`invoice.finalized` with no `before`: it was never a DRAFT outside this
/// transaction) and the step's own `entries`. Both serialize the
/// organization's writers until commit, which is why they come last.
pub async fn finish<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    actor: Actor<'_>,
    written: impl IntoIterator<Item = Composed>,
    entries: Vec<AuditEntry<'_>>,
    now: DateTime<Utc>,
) -> WorkflowResult<()> {
    let mut drafts = Vec::new();
    let mut finalized = Vec::new();
    for c in written {
        match c.finalized {
            Some(f) => finalized.push(f),
            None => drafts.push(c.draft),
        }
    }
    // The audit events are ready before the sequence lock but for the
    // numbers, so that little more than hashing is left under it.
    let drafted = audit::prepare(&org.id, actor, drafts.iter().map(audited).collect(), now);
    let own = audit::prepare(&org.id, actor, entries, now);
    // All of a step's numbers at once, at the end: the sequence row they
    // lock serializes the organization's closes until commit.
    number(txn, org, &mut finalized).await?;
    let issued = finalized.iter().map(Finalized::audited_as_issued).collect();
    drafted
        .then(audit::prepare(&org.id, actor, issued, now))
        .then(own)
        .append(txn)
        .await
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
