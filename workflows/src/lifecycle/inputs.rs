//! Loading what the billing core needs, for steps and for `upcomingInvoice`
//! alike, so the invoice a step writes is exactly the one that was previewed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use entity::{
    Dec, invoice, invoice_line, meter, organization, pending_invoice_item, subscription,
    usage_event,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::error::{WorkflowError, WorkflowResult};
use crate::invoice_actions::{billing_line, line_kind, lines_of};

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

/// [`billed_lines`] of several subscriptions (nothing excluded), given their
/// invoices ([`crate::invoice_actions::invoices_of_subscriptions`]): their lines in one query, by
/// subscription.
pub async fn billed_lines_of<C: ConnectionTrait>(
    db: &C,
    org: &organization::Model,
    invoices: &HashMap<String, Vec<invoice::Model>>,
) -> WorkflowResult<HashMap<String, Vec<billing::BilledLine>>> {
    let currency = currency(org)?;
    let subscription_of: HashMap<&str, &str> = invoices
        .iter()
        .flat_map(|(sub, invoices)| invoices.iter().map(move |i| (i.id.as_str(), sub.as_str())))
        .collect();
    let ids = subscription_of.keys().map(|id| id.to_string()).collect();
    let mut out: HashMap<String, Vec<billing::BilledLine>> = HashMap::new();
    for (invoice_id, lines) in lines_of(db, &org.id, ids).await? {
        if let Some(sub) = subscription_of.get(invoice_id.as_str()) {
            out.entry(sub.to_string())
                .or_default()
                .extend(lines.iter().map(|line| billed(currency, line)));
        }
    }
    Ok(out)
}

/// A stored line as a line already billed.
pub fn billed(currency: billing::Currency, line: &invoice_line::Model) -> billing::BilledLine {
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
    let mut wanted = usage_wanted(org, sub, terms, meters, n)?;
    load_usage(db, &org.id, &mut [&mut wanted]).await?;
    Ok(wanted.usage)
}

/// The usage a close needs, before its events are read ([`load_usage`]).
pub struct UsageWanted {
    pub customer_id: String,
    /// Its meters and the instant from which every event must be loaded;
    /// `events` are empty until [`load_usage`] fills them.
    pub usage: billing::UsageByMeter,
}

/// What [`usage_for_period`] reads, without reading it: the meters of
/// `terms` from the start of the oldest period the late-usage window still
/// reaches (only whole periods whose every event is loaded are recomputed).
pub fn usage_wanted(
    org: &organization::Model,
    sub: &subscription::Model,
    terms: &billing::SubscriptionTerms,
    meters: BTreeMap<String, billing::Meter>,
    n: u32,
) -> WorkflowResult<UsageWanted> {
    let period = terms.schedule.period(n).map_err(internal)?;
    let cutoff = period.end - Duration::days(i64::from(org.late_usage_window_days));
    let complete_from = match terms.schedule.period_containing(cutoff).map_err(internal)? {
        Some((_, containing)) => containing.start,
        None => terms.schedule.start,
    };
    Ok(UsageWanted {
        customer_id: sub.customer_id.clone(),
        usage: billing::UsageByMeter {
            meters,
            events: Default::default(),
            complete_from,
        },
    })
}

/// Fills each wanted usage with its customer's accepted events of its
/// meters from its `complete_from` on: one query for the meters and one for
/// the events, however many customers (a close batch asks for all of its).
pub async fn load_usage<C: ConnectionTrait>(
    db: &C,
    org: &str,
    wanted: &mut [&mut UsageWanted],
) -> WorkflowResult<()> {
    let metered = || wanted.iter().filter(|w| !w.usage.meters.is_empty());
    let codes: BTreeSet<String> = metered()
        .flat_map(|w| w.usage.meters.keys().cloned())
        .collect();
    let Some(from) = metered().map(|w| w.usage.complete_from).min() else {
        return Ok(());
    };
    let customers: BTreeSet<String> = metered().map(|w| w.customer_id.clone()).collect();
    let code_of: HashMap<String, String> = meter::Entity::find()
        .filter(meter::Column::OrganizationId.eq(org))
        .filter(meter::Column::Code.is_in(codes))
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.id, m.code))
        .collect();
    let events = usage_event::Entity::find()
        .filter(usage_event::Column::OrganizationId.eq(org))
        .filter(usage_event::Column::CustomerId.is_in(customers))
        .filter(usage_event::Column::MeterId.is_in(code_of.keys().cloned()))
        .filter(usage_event::Column::Timestamp.gte(from))
        .all(db)
        .await?;
    let by_customer = crate::pagination::group_by_parent(events, |e| Some(e.customer_id.as_str()));
    for w in wanted.iter_mut() {
        for event in by_customer.get(&w.customer_id).into_iter().flatten() {
            let Some(code) = code_of.get(&event.meter_id) else {
                continue;
            };
            if event.timestamp < w.usage.complete_from || !w.usage.meters.contains_key(code) {
                continue;
            }
            w.usage
                .events
                .entry(code.clone())
                .or_default()
                .push(billing::UsageEvent {
                    idempotency_key: event.idempotency_key.clone(),
                    timestamp: event.timestamp,
                    value: event.value.get(),
                    properties: event.properties.clone().unwrap_or(serde_json::Value::Null),
                });
        }
    }
    Ok(())
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
    let usage = usage_for_period(db, org, sub, terms, meters, n).await?;
    Ok(billing::close_period(
        terms,
        n,
        &usage,
        &billed,
        currency(org)?,
    )?)
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
