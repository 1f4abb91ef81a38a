//! Loading what the billing core needs, for steps and for `upcomingInvoice`
//! alike, so the invoice a step writes is exactly the one that was previewed.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use entity::{Dec, invoice, invoice_line, organization, pending_invoice_item, subscription};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::error::{WorkflowError, WorkflowResult};
use crate::invoice_actions::{
    billing_line, invoices_of_subscriptions, line_kind, lines_of, load_usage,
};

/// The organization's currency.
pub fn currency(org: &organization::Model) -> WorkflowResult<billing::Currency> {
    billing::Currency::parse(&org.currency).map_err(|e| WorkflowError::Internal(e.to_string()))
}

/// Lines already billed to the subscription, on every invoice that stands
/// (VOID included, so voiding never re-bills by itself), except `excluding`
/// (a draft being recomputed).
pub async fn billed_lines<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    subscription_id: &str,
    excluding: Option<&str>,
) -> WorkflowResult<Vec<billing::BilledLine>> {
    let currency = currency(org)?;
    let mut query = invoice::Entity::find()
        .filter(invoice::Column::OrganizationId.eq(&org.id))
        .filter(invoice::Column::SubscriptionId.eq(subscription_id));
    if let Some(id) = excluding {
        query = query.filter(invoice::Column::Id.ne(id));
    }
    let ids = query.all(db).await?.into_iter().map(|i| i.id).collect();
    Ok(lines_of(db, &org.id, ids)
        .await?
        .into_values()
        .flatten()
        .map(|line| billed(currency, &line))
        .collect())
}

/// [`billed_lines`] of several subscriptions (nothing excluded), read in
/// two queries, by subscription.
pub async fn billed_lines_of<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    subscription_ids: Vec<String>,
) -> WorkflowResult<HashMap<String, Vec<billing::BilledLine>>> {
    let currency = currency(org)?;
    let invoices = invoices_of_subscriptions(db, &org.id, subscription_ids).await?;
    let subscription_of: HashMap<String, String> = invoices
        .iter()
        .flat_map(|(sub, invoices)| invoices.iter().map(move |i| (i.id.clone(), sub.clone())))
        .collect();
    let ids = subscription_of.keys().cloned().collect();
    let mut out: HashMap<String, Vec<billing::BilledLine>> = HashMap::new();
    for (invoice_id, lines) in lines_of(db, &org.id, ids).await? {
        if let Some(sub) = subscription_of.get(&invoice_id) {
            out.entry(sub.clone())
                .or_default()
                .extend(lines.iter().map(|line| billed(currency, line)));
        }
    }
    Ok(out)
}

fn billed(currency: billing::Currency, line: &invoice_line::Model) -> billing::BilledLine {
    billing::BilledLine::from(&billing_line(currency, line))
}

/// Usage events that can still change what period `n` (or an earlier period
/// inside the late-usage window) bills.
pub async fn usage_for_period<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    sub: &subscription::Model,
    terms: &billing::SubscriptionTerms,
    meters: BTreeMap<String, billing::Meter>,
    n: u32,
) -> WorkflowResult<billing::UsageByMeter> {
    let period = terms.schedule.period(n).map_err(internal)?;
    let cutoff = period.end - Duration::days(i64::from(org.late_usage_window_days));
    // Recompute only whole periods whose every event is loaded.
    let complete_from = match terms.schedule.period_containing(cutoff).map_err(internal)? {
        Some((_, containing)) => containing.start,
        None => terms.schedule.start,
    };
    load_usage(db, &org.id, &sub.customer_id, meters, complete_from).await
}

/// Proration lines waiting for the subscription's next periodic invoice.
pub async fn pending_items<C: ConnectionTrait>(
    db: &C,
    subscription_id: &str,
) -> WorkflowResult<Vec<pending_invoice_item::Model>> {
    Ok(pending_items_of(db, vec![subscription_id.to_string()])
        .await?
        .remove(subscription_id)
        .unwrap_or_default())
}

/// [`pending_items`] of several subscriptions in one query, by subscription.
pub async fn pending_items_of<C: ConnectionTrait>(
    db: &C,
    subscription_ids: Vec<String>,
) -> WorkflowResult<HashMap<String, Vec<pending_invoice_item::Model>>> {
    let items = pending_invoice_item::Entity::find()
        .filter(pending_invoice_item::Column::SubscriptionId.is_in(subscription_ids))
        .filter(pending_invoice_item::Column::InvoiceId.is_null())
        .order_by_asc(pending_invoice_item::Column::Id)
        .all(db)
        .await?;
    Ok(crate::pagination::group_by_parent(items, |i| {
        Some(i.subscription_id.as_str())
    }))
}

/// A stored pending item as an invoice line.
pub fn pending_line(
    currency: billing::Currency,
    item: &pending_invoice_item::Model,
) -> billing::InvoiceLine {
    billing::InvoiceLine {
        kind: line_kind(item.kind),
        description: item.description.clone(),
        price_id: item.price_id.clone(),
        quantity: item.quantity.get(),
        unit_amount: item.unit_amount.map(Dec::get),
        amount: currency.from_minor_units(item.amount_minor),
        period: billing::Period::new(item.period_start, item.period_end),
    }
}

/// The lines of the invoice closing period `n`, from the core, before
/// pending prorations are added. `excluding` leaves a draft's own lines out
/// of "already billed" when that draft is being recomputed.
/// `terms` are the subscription's ([`crate::subscriptions::terms`]).
pub async fn period_close_lines<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    sub: &subscription::Model,
    (terms, meters): (
        &billing::SubscriptionTerms,
        BTreeMap<String, billing::Meter>,
    ),
    n: u32,
    excluding: Option<&str>,
) -> WorkflowResult<Vec<billing::InvoiceLine>> {
    let billed = billed_lines(db, org, &sub.id, excluding).await?;
    period_close_lines_given(db, org, sub, (terms, meters), n, &billed).await
}

/// [`period_close_lines`] against lines already billed that the caller read
/// ([`billed_lines_of`]).
pub async fn period_close_lines_given<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    sub: &subscription::Model,
    (terms, meters): (
        &billing::SubscriptionTerms,
        BTreeMap<String, billing::Meter>,
    ),
    n: u32,
    billed: &[billing::BilledLine],
) -> WorkflowResult<Vec<billing::InvoiceLine>> {
    let currency = currency(org)?;
    let usage = usage_for_period(db, org, sub, terms, meters, n).await?;
    Ok(billing::close_period(terms, n, &usage, billed, currency)?)
}

/// The number of the period that starts at `start`.
pub fn period_number(
    terms: &billing::SubscriptionTerms,
    start: DateTime<Utc>,
) -> WorkflowResult<u32> {
    match terms.schedule.period_containing(start).map_err(internal)? {
        Some((n, period)) if period.start == start => Ok(n),
        _ => Err(WorkflowError::Internal(format!(
            "no period of the subscription starts at {start}"
        ))),
    }
}

fn internal(e: billing::PeriodError) -> WorkflowError {
    WorkflowError::Internal(e.to_string())
}
