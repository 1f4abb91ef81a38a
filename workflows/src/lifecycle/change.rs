//! Prorations of a recorded subscription change, effective immediately.
//!
//! - Plan or quantity change: credit the old IN_ADVANCE fees and charge the
//!   new ones for the rest of the period. CREATE_PRORATIONS keeps the lines
//!   as pending items for the next periodic invoice; ALWAYS_INVOICE puts them
//!   on a proration invoice now; NONE writes nothing.
//! - Immediate cancel: the final invoice, with usage so far and (unless NONE)
//!   credits for the unused IN_ADVANCE days, plus any pending prorations.
//!
//! Idempotency: the pending items' `source_key` and the invoice's
//! `change:{change_id}` key are unique, and the step checks them first.

use entity::{
    Dec, InvoiceKind, ProrationBehavior, SubscriptionChangeKind, organization,
    pending_invoice_item, subscription, subscription_change,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, Set,
};

use crate::clock::{Clock, org_now};
use crate::error::WorkflowError;
use crate::ids::new_id;
use crate::invoice_actions::entity_line_kind;
use crate::jobs::Job;
use crate::lifecycle::{actor, commit_step, draft, inputs, lock};
use crate::steps::{StepError, StepOutcome};
use crate::tenancy::load_org;

/// The step of `proration` jobs.
pub async fn run(
    db: &DatabaseConnection,
    clock: &dyn Clock,
    job: &Job,
) -> Result<StepOutcome, StepError> {
    let txn = crate::txn::begin_write(db).await?;
    let sub = lock::subscription(&txn, &job.subject_id).await?;
    let org = load_org(&txn, &sub.organization_id).await?;
    let now = org_now(&org, clock);
    let change_id = job
        .key
        .strip_prefix(&format!("proration:{}:", sub.id))
        .ok_or_else(|| StepError::Permanent(format!("malformed proration key {}", job.key)))?;
    let change = subscription_change::Entity::find_by_id(change_id.to_string())
        .filter(subscription_change::Column::SubscriptionId.eq(&sub.id))
        .one(&txn)
        .await?
        .ok_or(WorkflowError::NotFound("subscription change"))?;
    if already_prorated(&txn, &org, &change).await? {
        let why = "change already prorated".to_string();
        return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
    }
    let behavior = change
        .proration_behavior
        .unwrap_or(ProrationBehavior::CreateProrations);
    let actor = actor(job);
    let currency = inputs::currency(&org)?;
    let (terms, meters) = crate::subscriptions::terms(&txn, &org, &sub).await?;

    if change.kind == SubscriptionChangeKind::Cancel {
        let before = billing::SubscriptionTerms {
            ends_at: None,
            ..terms.clone()
        };
        let n = match before.schedule.period_containing(change.effective_at) {
            Ok(Some((n, _))) => n,
            _ => 0,
        };
        let usage = inputs::usage_for_period(&txn, &org, &sub, &before, meters, n).await?;
        let billed = inputs::billed_lines(&txn, &org, &sub.id, None).await?;
        let mut lines =
            billing::cancel_immediately(&before, change.effective_at, &usage, &billed, currency)?;
        if behavior == ProrationBehavior::None {
            lines.retain(|l| l.kind != billing::LineKind::Proration);
        }
        let pending = inputs::pending_items(&txn, &sub.id).await?;
        lines.extend(
            pending
                .iter()
                .map(|item| inputs::pending_line(currency, item)),
        );
        let invoice = draft::write(
            &txn,
            draft::Draft {
                org: &org,
                sub: &sub,
                kind: InvoiceKind::Final,
                billing_key: draft::change_key(&change.id),
                lines,
                boundary: change.effective_at,
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
                    Expr::value(Some(invoice.draft.id.clone())),
                )
                .filter(
                    pending_invoice_item::Column::Id.is_in(pending.iter().map(|p| p.id.clone())),
                )
                .exec(&txn)
                .await?;
        }
        draft::finish(&txn, &org, &actor, invoice, Vec::new(), now).await?;
        return commit_step(txn, job, clock, StepOutcome::Done).await;
    }

    // The terms before the change: the phase in force just before it, carried on.
    let Some(previous) = terms
        .phases
        .iter()
        .rev()
        .find(|p| p.from < change.effective_at)
    else {
        let why = "change effective before billing started".to_string();
        return commit_step(txn, job, clock, StepOutcome::Skipped(why)).await;
    };
    let before = terms.with_phase(billing::Phase {
        from: change.effective_at,
        ..previous.clone()
    });
    let lines = billing::change_plan(&before, &terms, change.effective_at, currency)?;
    match behavior {
        ProrationBehavior::None => {}
        ProrationBehavior::CreateProrations => {
            keep_for_next_invoice(&txn, &org, &sub, &change, &lines, currency, now).await?;
        }
        ProrationBehavior::AlwaysInvoice => {
            let invoice = draft::write(
                &txn,
                draft::Draft {
                    org: &org,
                    sub: &sub,
                    kind: InvoiceKind::Proration,
                    billing_key: draft::change_key(&change.id),
                    lines,
                    boundary: change.effective_at,
                    now,
                },
            )
            .await?;
            draft::finish(&txn, &org, &actor, invoice, Vec::new(), now).await?;
        }
    }
    commit_step(txn, job, clock, StepOutcome::Done).await
}

/// Lines of `change` already written, as pending items or on an invoice.
async fn already_prorated<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    change: &subscription_change::Model,
) -> Result<bool, StepError> {
    let pending = pending_invoice_item::Entity::find()
        .filter(pending_invoice_item::Column::OrganizationId.eq(&org.id))
        .filter(pending_invoice_item::Column::SourceKey.starts_with(format!("{}:", change.id)))
        .count(txn)
        .await?;
    let invoiced = entity::invoice::Entity::find()
        .filter(entity::invoice::Column::OrganizationId.eq(&org.id))
        .filter(entity::invoice::Column::BillingKey.eq(draft::change_key(&change.id)))
        .count(txn)
        .await?;
    Ok(pending + invoiced > 0)
}

async fn keep_for_next_invoice<C: ConnectionTrait>(
    txn: &C,
    org: &organization::Model,
    sub: &subscription::Model,
    change: &subscription_change::Model,
    lines: &[billing::InvoiceLine],
    currency: billing::Currency,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StepError> {
    let rows = lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            Ok(pending_invoice_item::ActiveModel {
                id: Set(new_id()),
                organization_id: Set(org.id.clone()),
                subscription_id: Set(sub.id.clone()),
                source_key: Set(format!("{}:{index}", change.id)),
                kind: Set(entity_line_kind(line.kind)),
                description: Set(line.description.clone()),
                price_id: Set(line.price_id.clone()),
                quantity: Set(Dec(line.quantity)),
                unit_amount: Set(line.unit_amount.map(Dec)),
                amount_minor: Set(currency
                    .to_minor_units(line.amount)
                    .map_err(WorkflowError::from)?),
                period_start: Set(line.period.start),
                period_end: Set(line.period.end),
                invoice_id: Set(None),
                created_at: Set(now),
            })
        })
        .collect::<Result<Vec<_>, StepError>>()?;
    if !rows.is_empty() {
        pending_invoice_item::Entity::insert_many(rows)
            .exec(txn)
            .await?;
    }
    Ok(())
}
